"""Fixtures of the chart tests: the loaded chart and a renderer that parses its output."""

from __future__ import annotations

from typing import Any

import helm_python
import pytest
from chart_support import CHART_DIR, RELEASE_NAME, RELEASE_NAMESPACE, RenderedChart


@pytest.fixture(scope="session")
def chart():
    with helm_python.Chart.load(CHART_DIR) as loaded:
        yield loaded


@pytest.fixture(scope="session")
def render(chart):
    """Render the chart with `values` merged over its defaults, as `helm install` would."""

    def render_chart(values: dict[str, Any] | None = None) -> RenderedChart:
        manifests = chart.render(
            values or {}, name=RELEASE_NAME, namespace=RELEASE_NAMESPACE, is_install=True
        )
        return RenderedChart(manifests)

    return render_chart
