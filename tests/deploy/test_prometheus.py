"""deploy/prometheus and deploy/alertmanager, checked by the tools that will load them.

``promtool`` and ``amtool`` come from Debian's ``prometheus`` and ``prometheus-alertmanager``
packages; each check is skipped, saying so, where its tool is missing. The metric names the rules
use are checked against ``streams.metrics`` here, with or without the tools.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry

from schemas.settings import Settings
from streams.metrics import PipelineMetrics

REPO_ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = REPO_ROOT / "deploy" / "prometheus"
ALERTMANAGER_CONFIG = REPO_ROOT / "deploy" / "alertmanager" / "alertmanager.yml"

needs_promtool = pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool not installed (apt-get install prometheus)"
)
needs_amtool = pytest.mark.skipif(
    shutil.which("amtool") is None, reason="amtool not installed (apt-get install prometheus-alertmanager)"
)


def run(*argv: str, cwd: Path) -> None:
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"{' '.join(argv)} failed:\n{done.stdout}\n{done.stderr}"


@needs_promtool
def test_promtool_check_config() -> None:
    run("promtool", "check", "config", "prometheus.yml", cwd=PROMETHEUS_DIR)


@needs_promtool
def test_promtool_check_rules() -> None:
    run("promtool", "check", "rules", "rules.yml", cwd=PROMETHEUS_DIR)


@needs_promtool
def test_promtool_rule_unit_tests() -> None:
    run("promtool", "test", "rules", "rules_test.yml", cwd=PROMETHEUS_DIR)


@needs_amtool
def test_amtool_check_config() -> None:
    run("amtool", "check-config", str(ALERTMANAGER_CONFIG), cwd=REPO_ROOT)


SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "info": ("_info",)}


def exposed_names() -> set[str]:
    """Every sample name a worker's metrics can expose (``_total``, ``_bucket``, ... included)."""
    names = {"up"}  # Prometheus' own, per target
    for family in PipelineMetrics(CollectorRegistry()).registry.collect():
        names.update(family.name + suffix for suffix in SUFFIXES.get(family.type, ("",)))
    return names


def test_every_metric_the_rules_use_is_declared() -> None:
    rules = yaml.safe_load((PROMETHEUS_DIR / "rules.yml").read_text(encoding="utf-8"))
    recorded = {rule["record"] for group in rules["groups"] for rule in group["rules"] if "record" in rule}
    used = {
        name
        for group in rules["groups"]
        for rule in group["rules"]
        for name in re.findall(r"\b(?:salespulse_[a-z_]+|up)\b", rule["expr"])
    }
    assert used, "no rule uses a salespulse metric"
    assert used - recorded <= exposed_names(), f"not declared in streams/metrics.py: {used - exposed_names()}"
    alerts = {rule["alert"] for group in rules["groups"] for rule in group["rules"] if "alert" in rule}
    tested = set(
        re.findall(r"alertname: (\w+)", (PROMETHEUS_DIR / "rules_test.yml").read_text(encoding="utf-8"))
    )
    assert alerts == tested, f"alerts without a unit test: {alerts - tested}"


def test_every_alert_has_a_severity_and_a_summary() -> None:
    rules = yaml.safe_load((PROMETHEUS_DIR / "rules.yml").read_text(encoding="utf-8"))
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "alert" in rule:
                assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
                assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]


def test_the_worker_scrape_port_is_the_default_metrics_port() -> None:
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text(encoding="utf-8"))
    job = next(job for job in config["scrape_configs"] if job["job_name"] == "salespulse-worker")
    assert job["dns_sd_configs"][0]["port"] == Settings.model_fields["metrics_port"].default
