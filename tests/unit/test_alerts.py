"""The alert rules load in Prometheus, and every alert fires when it should and
stays quiet when it should not (promtool's rule unit tests, from Debian's
`prometheus` package, unpacked into .tools/ by scripts/setup)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.harness import REPO

RULES = sorted((REPO / "deploy/prometheus").glob("*.yml"))
RULE_TESTS = sorted((REPO / "deploy/prometheus/tests").glob("*.test.yml"))


def promtool() -> str:
    found = REPO / ".tools/bin/promtool"
    if found.exists():
        return str(found)
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is missing: run scripts/setup")
    return path


def run(*argv: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool(), *map(str, argv)], capture_output=True, text=True,
                          timeout=60, check=False)


def test_rules_load() -> None:
    assert RULES
    done = run("check", "rules", *RULES)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_alert_fires_and_stays_quiet_in_the_unit_tests() -> None:
    done = run("test", "rules", *RULE_TESTS)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    alerts = {r["alert"] for path in RULES for g in yaml.safe_load(path.read_text())["groups"]
              for r in g["rules"] if "alert" in r}
    fires: set[str] = set()
    quiet: set[str] = set()
    for path in RULE_TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                (fires if check.get("exp_alerts") else quiet).add(check["alertname"])
    assert alerts - fires == set(), "alerts never seen firing"
    assert alerts - quiet == set(), "alerts never seen quiet"


def test_a_broken_rule_is_refused(tmp_path: Path) -> None:
    """The check can fail: the precedence mistake the heartbeat rule once had."""
    bad = tmp_path / "bad.yml"
    bad.write_text(re.sub(
        r"> on\(instance, job\) group_left\n\s*3 \*",
        "> 3 * on(instance, job) group_left",
        (REPO / "deploy/prometheus/cygnet-alerts.yml").read_text()))
    done = run("check", "rules", bad)
    assert done.returncode != 0
    assert "vector matching only allowed between instant vectors" in done.stdout + done.stderr


def test_dashboard_queries_parse_and_use_its_variables(tmp_path: Path) -> None:
    """Every panel's PromQL parses (as a recording rule), and agent panels filter by host."""
    dashboard = json.loads((REPO / "deploy/grafana/cygnet.json").read_text())
    names = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"instance", "pool"} <= names
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    for expr in exprs:
        if "cygnet_pool_" in expr or "cygnet_branch_" in expr:
            assert '$pool' in expr, expr
        if "coordinator" not in expr:
            assert '$instance' in expr, expr
    rules = [{"record": f"dashboard:query_{i}",
              "expr": e.replace("$instance", ".*").replace("$pool", ".*")}
             for i, e in enumerate(exprs)]
    path = tmp_path / "dashboard.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    done = run("check", "rules", path)
    assert done.returncode == 0, done.stdout + done.stderr
