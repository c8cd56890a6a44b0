"""Every value the chart declares has a comment in values.yaml and an entry in the schema."""

from __future__ import annotations

import json
import re

from chart_support import CHART_DIR

KEY_LINE = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z][A-Za-z0-9]*):")


def _schema_paths(schema: dict, prefix: str = "") -> set[str]:
    """Return the dotted path of every property that values.schema.json declares."""
    paths = set()
    for key, child in schema.get("properties", {}).items():
        path = f"{prefix}{key}"
        paths.add(path)
        paths |= _schema_paths(child, f"{path}.")
    return paths


def _documented_keys() -> dict[str, bool]:
    """Map the dotted path of each key in values.yaml to whether a comment precedes it."""
    documented = {}
    stack: list[tuple[int, str]] = []
    previous = ""
    for line in (CHART_DIR / "values.yaml").read_text().splitlines():
        match = KEY_LINE.match(line)
        if match:
            indent = len(match["indent"])
            while stack and stack[-1][0] >= indent:
                stack.pop()
            stack.append((indent, match["key"]))
            path = ".".join(key for _, key in stack)
            documented[path] = previous.lstrip().startswith("#")
        if line.strip():
            previous = line
    return documented


def test_every_schema_key_in_values():
    schema = json.loads((CHART_DIR / "values.schema.json").read_text())
    assert _schema_paths(schema) - set(_documented_keys()) == set()


def test_every_schema_key_commented():
    schema = json.loads((CHART_DIR / "values.schema.json").read_text())
    keys = _documented_keys()
    undocumented = sorted(path for path in _schema_paths(schema) if not keys.get(path))
    assert undocumented == []


def test_schema_describes_every_key():
    schema = json.loads((CHART_DIR / "values.schema.json").read_text())

    def missing(node: dict, prefix: str = "") -> list[str]:
        found = []
        for key, child in node.get("properties", {}).items():
            if "description" not in child:
                found.append(f"{prefix}{key}")
            found += missing(child, f"{prefix}{key}.")
        return found

    assert missing(schema) == []
