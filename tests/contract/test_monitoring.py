"""The shipped alert rules and dashboard: promtool accepts and unit-tests the rules, and every metric the
dashboard or the rules name is one the platform exports (rendered by its own code, or written by its jobs)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from mlflow_ext.auth.metrics import readiness_metrics
from mlflow_ext.bridge import metrics as bridge_metrics

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "monitoring"
# The jobs writing textfiles under /var/lib/mlflow-platform/metrics.
TEXTFILE_WRITERS = [ROOT / "ansible/roles/backup", ROOT / "ansible/roles/retention"]
# Names in an expression that are PromQL, not metrics.
PROMQL_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool", "offset",
    "sum", "min", "max", "avg", "count", "rate", "irate", "delta", "deriv", "increase", "time",
    "histogram_quantile", "le", "abs", "absent", "clamp_min", "clamp_max", "min_over_time", "max_over_time",
}  # fmt: skip
NAME = re.compile(r"(?<![\w\"'.])([a-zA-Z_:][a-zA-Z0-9_:]*)(?![\w\"'])")


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("promtool is missing: install Debian's prometheus package (make /usr/bin/promtool)")
    return found


def test_promtool_accepts_the_rules():
    result = subprocess.run(
        [promtool(), "check", "rules", str(MONITORING / "alerts.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_rules_unit_tests_pass():
    result = subprocess.run(
        [promtool(), "test", "rules", "alerts.test.yml"],
        cwd=MONITORING,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def metric_names(expr: str) -> set[str]:
    """Metric names of a PromQL expression: identifiers that are not PromQL words, label names or values."""
    without_matchers = re.sub(r"\{[^}]*\}", "", expr)
    without_grouping = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", without_matchers)
    without_ranges = re.sub(r"\[[^\]]*\]", "", without_grouping)
    return {
        name for name in NAME.findall(without_ranges) if name not in PROMQL_WORDS and not name[0].isdigit()
    }


def sample_names(text: str) -> set[str]:
    return {
        line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")
    }


def server_exporter_names(tmp_path: Path) -> set[str]:
    """MLflow's own exporter, configured as ``mlflow server --expose-prometheus`` configures it, after one
    request: the names it really writes."""
    script = textwrap.dedent(
        """
        import sys
        from flask import Flask
        from mlflow.server.prometheus_exporter import activate_prometheus_exporter
        from prometheus_client import CollectorRegistry, generate_latest
        from prometheus_client.multiprocess import MultiProcessCollector

        app = Flask("probe")
        app.add_url_rule("/probe", "probe", lambda: "ok")
        activate_prometheus_exporter(app)
        app.test_client().get("/probe")
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=sys.argv[1])
        sys.stdout.write(generate_latest(registry).decode())
        """
    )
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "MLFLOW_DISABLE_TELEMETRY": "true"}
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return sample_names(result.stdout)


def textfile_names() -> set[str]:
    names: set[str] = set()
    for role in TEXTFILE_WRITERS:
        for path in role.rglob("*"):
            if path.is_file() and path.suffix in (".py", ".j2", ".sh", ".md"):
                names |= set(re.findall(r"\bmlflow_(?:backup|gc)_[a-z_]+\b", path.read_text()))
    return names


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> set[str]:
    names = sample_names(bridge_metrics.render(lambda: {"pending": 0}).decode())
    names |= sample_names(readiness_metrics({"tracking_database": "ok"}).decode())
    names |= server_exporter_names(tmp_path_factory.mktemp("prometheus"))
    names |= textfile_names()
    names.add("up")  # Prometheus' own, per scrape target
    return names


def test_metric_names_are_parsed_from_expressions():
    assert metric_names('histogram_quantile(0.95, sum by (le) (rate(a_bucket{x="y"}[5m]))) * 60 + b') == {
        "a_bucket",
        "b",
    }


def test_every_dashboard_panel_queries_metrics_the_platform_exports(exported):
    dashboard = json.loads((MONITORING / "dashboard.json").read_text())
    assert dashboard["panels"], "the dashboard has no panels"
    for panel in dashboard["panels"]:
        exprs = [target["expr"] for target in panel.get("targets", [])]
        assert exprs, f"panel {panel['title']!r} has no query"
        for expr in exprs:
            unknown = metric_names(expr) - exported
            assert not unknown, f"panel {panel['title']!r} queries {sorted(unknown)}, which nothing exports"


def test_every_alert_rule_names_metrics_the_platform_exports(exported):
    rules = yaml.safe_load((MONITORING / "alerts.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            unknown = metric_names(rule["expr"]) - exported
            assert not unknown, f"alert {rule['alert']} uses {sorted(unknown)}, which nothing exports"
