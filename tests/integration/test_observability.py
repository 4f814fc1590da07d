"""The chart's alerting rules under promtool (built from Go modules like the control plane):
they parse, and each fires, or stays quiet, on the input series of tests/prometheus."""

from __future__ import annotations

import subprocess

import pytest

from svcreg.devtools.controlplane import build, progress
from svcreg.devtools.kubectl import REPO_ROOT

ALERTS = REPO_ROOT / "deploy" / "helm" / "svcreg" / "files" / "svcreg-alerts.yaml"
RULE_TESTS = REPO_ROOT / "tests" / "prometheus" / "alerts-test.yaml"


@pytest.fixture(scope="module")
def promtool() -> str:
    try:
        return str(build.ensure_promtool(progress.stderr_reporter))
    except build.BuildError as error:
        pytest.fail(f"promtool could not be built: {error}", pytrace=False)


def test_the_alerting_rules_are_valid(promtool: str) -> None:
    checked = subprocess.run(
        [promtool, "check", "rules", str(ALERTS)], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 6 rules found" in checked.stdout, checked.stdout


def test_each_alert_fires_on_its_symptom_and_not_otherwise(promtool: str) -> None:
    tested = subprocess.run(
        [promtool, "test", "rules", str(RULE_TESTS)],
        capture_output=True,
        text=True,
        cwd=RULE_TESTS.parent,
        check=False,
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout, tested.stdout
