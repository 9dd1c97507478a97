"""The chart's PrometheusRule as plain Prometheus rule groups (what Prometheus and promtool
read), rendered with Helm's own engine like tests/deploy/test_helm_chart.py does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import helm_python
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART_DIR = REPO / "helm" / "vte-proxy"
RELEASE = "gw"
NAMESPACE = "llm"
# The series labels the rules select on (`job="<fullname>", namespace="<namespace>"`).
JOB = "gw-vte-proxy"


def rule_groups(prometheus_rule: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """``spec.groups`` of the PrometheusRule rendered with ``prometheusRule`` values on top of
    ``enabled: true``."""
    values = {"prometheusRule": {"enabled": True, **(prometheus_rule or {})}}
    chart = helm_python.Chart.load(CHART_DIR)
    try:
        rendered = chart.render(values, name=RELEASE, namespace=NAMESPACE)
    finally:
        chart.close()
    for path, text in rendered.items():
        if path.endswith("prometheusrule.yaml"):
            doc = yaml.safe_load(text)
            groups: list[dict[str, Any]] = doc["spec"]["groups"]
            return groups
    raise AssertionError("the chart rendered no PrometheusRule")


def write_rules(path: Path, prometheus_rule: dict[str, Any] | None = None) -> Path:
    """A Prometheus rule file with the chart's alerts."""
    path.write_text(yaml.safe_dump({"groups": rule_groups(prometheus_rule)}, sort_keys=False))
    return path
