"""docs/crd-reference.md: generated from the CRD, current, and listing every field."""

from __future__ import annotations

from crd_support import CRD_PATH, ROOT, iter_properties, load_crd, root_schema
from disagg_operator.crd_reference import main, render

SOURCE = "crds/disagg.dev_disaggregateddeployments.yaml"
REFERENCE = ROOT / "docs" / "crd-reference.md"


def test_reference_is_current():
    # Regenerate with `make docs` after editing the CRD.
    assert REFERENCE.read_text() == render(load_crd(), SOURCE)


def test_reference_lists_every_field():
    text = REFERENCE.read_text()
    for path, _ in iter_properties(root_schema()):
        if path.startswith(("spec.", "status.")):
            *parent, leaf = path.split(".")
            assert f"## `{'.'.join(parent)}`" in text, path
            assert f"| `{leaf}` |" in text, path


def test_reference_shows_defaults_and_bounds():
    text = REFERENCE.read_text()
    assert "| `maxMessageBytes` | integer | `67108864` | 1048576 to 2147483647 |" in text
    assert '| `mode` | string | `"builtin"` | one of `builtin`, `external`, `off` |' in text
    assert "| `targetInFlight` | number |  | > 0 |" in text


def test_reference_cli_prints_page(capsys):
    assert main([str(CRD_PATH)]) == 0
    assert capsys.readouterr().out == render(load_crd(), CRD_PATH.as_posix())
