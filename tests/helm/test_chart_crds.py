"""The chart's crds/ contains the operator's CRD byte for byte, and `make crds-sync` restores it."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from chart_support import CHART_DIR, REPO_ROOT

SOURCE_CRDS = REPO_ROOT / "crds"
CHART_CRDS = CHART_DIR / "crds"
# Belongs to the chart only: kopf's peering CRDs, not generated from crds/.
CHART_ONLY_FILES = {"kopf.dev_peerings.yaml"}


def test_source_crds_exist():
    assert sorted(SOURCE_CRDS.glob("*.yaml")), f"no CRD files in {SOURCE_CRDS}"


@pytest.mark.parametrize("path", sorted(SOURCE_CRDS.glob("*.yaml")), ids=lambda path: path.name)
def test_chart_crd_equals_source(path):
    copy = CHART_CRDS / path.name
    assert copy.is_file(), f"{copy} is missing: run `make crds-sync`"
    assert copy.read_bytes() == path.read_bytes(), (
        f"{copy} differs from {path}: run `make crds-sync`"
    )


def test_chart_has_no_stale_crds():
    expected = {path.name for path in SOURCE_CRDS.glob("*.yaml")} | CHART_ONLY_FILES
    actual = {path.name for path in CHART_CRDS.glob("*.yaml")}
    assert actual == expected


def test_chart_loads_every_crd(chart):
    loaded = {crd["filename"].rsplit("/", 1)[-1] for crd in chart.crds}
    assert loaded == {path.name for path in CHART_CRDS.glob("*.yaml")}


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_crds_sync_restores_copy(tmp_path):
    # A copy of the Makefile, crds/ and the chart's crds/ in a scratch folder,
    # so the working tree is never touched.
    shutil.copy(REPO_ROOT / "Makefile", tmp_path / "Makefile")
    shutil.copytree(SOURCE_CRDS, tmp_path / "crds")
    chart_crds = tmp_path / "helm" / "disagg-operator" / "crds"
    shutil.copytree(CHART_CRDS, chart_crds)
    source = sorted((tmp_path / "crds").glob("*.yaml"))[0]
    (chart_crds / source.name).write_text("# edited by hand\n")

    subprocess.run(
        ["make", "--no-print-directory", "crds-sync"], cwd=tmp_path, check=True, timeout=60
    )

    assert (chart_crds / source.name).read_bytes() == source.read_bytes()
    assert (chart_crds / "kopf.dev_peerings.yaml").is_file()
