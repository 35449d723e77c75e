"""The alert rules of docs/monitoring/ are valid Prometheus rules, and their tests (which fire
the payment-success, error-rate, downtime and sign-in alerts on the runbook's thresholds and
keep them quiet below) pass: promtool, from Debian's `prometheus` package (.ci/run installs it).
That they read only names the portal exports: tests/web/test_metrics.py."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from portal.config import PROJECT_ROOT
from tests.conftest import CI

MONITORING = PROJECT_ROOT / "docs" / "monitoring"


def _promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        message = "promtool not found (apt-get install prometheus): the alert rules are unchecked"
        if CI:
            pytest.fail(message)
        pytest.skip(message)
    return found


@pytest.mark.parametrize(
    "command",
    [("check", "rules", "alerts.yml"), ("test", "rules", "alerts_test.yml")],
    ids=["check", "test"],
)
def test_promtool_accepts_the_rules(command: tuple[str, ...]) -> None:
    done = subprocess.run(
        [_promtool(), *command],
        cwd=MONITORING,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout
