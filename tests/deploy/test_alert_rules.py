"""The chart's alerts, unit-tested with promtool (Debian's prometheus package): each alert
fires on its condition and stays quiet otherwise (tests/deploy/alerts/vte-proxy.test.yaml)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.rendered import rule_groups

ALERT_TESTS = Path(__file__).resolve().parent / "alerts" / "vte-proxy.test.yaml"
PROMTOOL = shutil.which("promtool")

pytestmark = pytest.mark.skipif(PROMTOOL is None, reason="promtool (Debian's prometheus package) is not installed: "
                                                         "the alert rules are not unit-tested (`.ci/run` installs it)")


def without_descriptions(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rule groups with only the `summary` annotation (the long descriptions would have to
    be repeated word for word in every expected alert)."""
    for group in groups:
        for rule in group["rules"]:
            rule.get("annotations", {}).pop("description", None)
    return groups


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(PROMTOOL), *args], capture_output=True, text=True, timeout=60)


def test_rules_pass_promtool_check(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump({"groups": rule_groups()}))
    done = promtool("check", "rules", str(rules))
    assert done.returncode == 0, done.stdout + done.stderr


def test_alerts_fire_on_their_condition_only(tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": without_descriptions(rule_groups())}))
    shutil.copy(ALERT_TESTS, tmp_path / ALERT_TESTS.name)
    done = promtool("test", "rules", str(tmp_path / ALERT_TESTS.name))
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    cases = yaml.safe_load(ALERT_TESTS.read_text())["tests"]
    alerts = {rule["alert"] for group in rule_groups() for rule in group["rules"]}
    firing = {t["alertname"] for case in cases for t in case["alert_rule_test"] if t["exp_alerts"]}
    quiet = {t["alertname"] for case in cases for t in case["alert_rule_test"] if not t["exp_alerts"]}
    assert firing == alerts and quiet == alerts, (alerts, firing, quiet)
