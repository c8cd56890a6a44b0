"""`helm lint --strict` finds no warning or error in the chart for any value case."""

from __future__ import annotations

import helm_python
import pytest
from chart_support import CHART_DIR, RELEASE_NAMESPACE, VALUE_CASES

# Severity levels of helm lint messages: 1 info, 2 warning, 3 error.
SEVERITY_WARNING = 2


@pytest.mark.parametrize("case", VALUE_CASES)
def test_lint_strict_is_clean(case):
    report = helm_python.lint(
        CHART_DIR, VALUE_CASES[case], strict=True, namespace=RELEASE_NAMESPACE
    )
    problems = [m for m in report["messages"] if m["severity"] >= SEVERITY_WARNING]
    assert report["errors"] == []
    assert problems == []


def test_lint_reports_schema_violation():
    # helm lint only logs a template's `fail` (lint mode), so the contradictions
    # are tested by rendering; schema violations are lint errors.
    report = helm_python.lint(CHART_DIR, {"replicas": -1}, strict=True)
    assert any("/replicas" in error for error in report["errors"]), report["errors"]
