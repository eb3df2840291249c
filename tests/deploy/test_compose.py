"""docker-compose.yml, checked without a Docker engine.

Compose itself would (1) load the YAML, (2) interpolate ``${VAR}`` expressions from the environment,
failing on a missing ``${VAR:?message}``, and (3) validate the result against the Compose
Specification's JSON Schema. This module does the same with a vendored copy of the schema
(``tests/fixtures/compose-spec.json``) and a small interpolator written to the specification's
interpolation rules, then checks what the schema cannot: every file mounted exists, every
``SALESPULSE_*`` variable set is a real setting with a valid value, images are pinned, only
Grafana is published, healthchecks gate the start order, and secrets have no defaults.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import jsonschema
import pytest
import yaml

from schemas.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
SCHEMA_FILE = REPO_ROOT / "tests" / "fixtures" / "compose-spec.json"

# What an operator must set; everything else has a default.
REQUIRED_VARIABLES = {"CLICKHOUSE_PASSWORD", "CLICKHOUSE_GRAFANA_PASSWORD", "GRAFANA_ADMIN_PASSWORD"}
TEST_ENVIRONMENT = {
    "CLICKHOUSE_PASSWORD": "s3cret-for-tests",
    "CLICKHOUSE_GRAFANA_PASSWORD": "read-only-s3cret",
    "GRAFANA_ADMIN_PASSWORD": "also-s3cret",
}
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|API_KEY|PRIVATE_KEY", re.IGNORECASE)
LONG_RUNNING = {"kafka", "clickhouse", "worker", "ingest", "prometheus", "alertmanager", "grafana"}


# --- interpolation, as the Compose Specification defines it (12-interpolation.md) ----------------

_EXPRESSION = re.compile(r"\$(?:(?P<escaped>\$)|\{(?P<braced>[^}]*)\}|(?P<bare>[_A-Za-z][_A-Za-z0-9]*))")
_BRACED = re.compile(r"^(?P<name>[_A-Za-z][_A-Za-z0-9]*)(?:(?P<op>:?[-?+])(?P<word>.*))?$", re.DOTALL)


class MissingVariableError(ValueError):
    def __init__(self, name: str, message: str) -> None:
        self.name = name
        super().__init__(f"required variable {name} is missing a value: {message}")


def interpolate_string(text: str, env: Mapping[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        if match["bare"]:
            return env.get(match["bare"], "")
        braced = _BRACED.match(match["braced"])
        if braced is None:
            raise ValueError(f"invalid interpolation format: ${{{match['braced']}}}")
        name, op, word = braced["name"], braced["op"], braced["word"] or ""
        value = env.get(name)
        unset_or_empty = not value  # the ':' forms treat an empty value as unset
        if op is None:
            return value or ""
        if op == ":-":
            return word if unset_or_empty else str(value)
        if op == "-":
            return word if value is None else value
        if op == ":?":
            if unset_or_empty:
                raise MissingVariableError(name, word)
            return str(value)
        if op == "?":
            if value is None:
                raise MissingVariableError(name, word)
            return value
        if op == ":+":
            return "" if unset_or_empty else word
        return "" if value is None else word  # "+"

    return _EXPRESSION.sub(replace, text)


def interpolate(node: Any, env: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate_string(node, env)
    if isinstance(node, dict):
        return {key: interpolate(value, env) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolate(value, env) for value in node]
    return node


def required_variables(text: str) -> set[str]:
    return {
        braced["name"]
        for match in _EXPRESSION.finditer(text)
        if match["braced"] and (braced := _BRACED.match(match["braced"])) and braced["op"] in (":?", "?")
    }


def test_the_interpolator_follows_the_specification() -> None:
    env = {"SET": "v", "EMPTY": ""}
    cases = {
        "${SET}": "v",
        "$SET/x": "v/x",
        "${UNSET}": "",
        "${UNSET:-d}": "d",
        "${EMPTY:-d}": "d",
        "${EMPTY-d}": "",
        "${UNSET-d}": "d",
        "${SET:+r}": "r",
        "${EMPTY:+r}": "",
        "${EMPTY+r}": "r",
        "$$SET": "$SET",
        '"$${A}"': '"${A}"',
    }
    assert {text: interpolate_string(text, env) for text in cases} == cases
    with pytest.raises(MissingVariableError, match=r"UNSET.*say why"):
        interpolate_string("${UNSET:?say why}", env)
    with pytest.raises(MissingVariableError):
        interpolate_string("${EMPTY:?}", env)
    assert interpolate_string("${EMPTY?}", env) == ""


# --- loading -----------------------------------------------------------------------------------


def raw_compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))  # resolves anchors and <<
    assert isinstance(loaded, dict)
    return loaded


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    resolved = interpolate(raw_compose(), TEST_ENVIRONMENT)
    assert isinstance(resolved, dict)
    return resolved


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found = compose["services"]
    assert isinstance(found, dict)
    return found


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft7Validator:
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def environment_of(service: Mapping[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # the "KEY=value" list form
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(key): "" if value is None else str(value) for key, value in env.items()}


# --- the schema --------------------------------------------------------------------------------


def test_the_file_validates_against_the_compose_specification(
    compose: dict[str, Any], validator: jsonschema.Draft7Validator
) -> None:
    errors = sorted(validator.iter_errors(compose), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)


def test_the_schema_check_catches_a_misspelt_key(
    compose: dict[str, Any], validator: jsonschema.Draft7Validator
) -> None:
    broken = json.loads(json.dumps(compose))
    broken["services"]["worker"]["healthchek"] = broken["services"]["worker"].pop("healthcheck")
    broken["services"]["kafka"]["depends_on"] = {"clickhouse": {"condition": "when_ready"}}
    messages = [e.message for e in validator.iter_errors(broken)]
    assert any("healthchek" in m for m in messages), messages
    assert len(messages) >= 2


# --- secrets and variables ---------------------------------------------------------------------


def test_secrets_are_required_and_have_no_default() -> None:
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    assert required_variables(text) == REQUIRED_VARIABLES
    with pytest.raises(MissingVariableError) as missing:
        interpolate(raw_compose(), {})
    assert missing.value.name in REQUIRED_VARIABLES
    for name in REQUIRED_VARIABLES:
        without_one = {key: value for key, value in TEST_ENVIRONMENT.items() if key != name}
        with pytest.raises(MissingVariableError, match=name):
            interpolate(raw_compose(), without_one)
    # No secret-looking setting holds a literal or a default value: it comes from a ${VAR:?}.
    for service_name, service in raw_compose()["services"].items():
        for key, value in environment_of(service).items():
            if SECRET_NAME.search(key):
                assert re.fullmatch(r"\$\{[A-Z_]+:\?[^}]*\}", value), f"{service_name}: {key}={value!r}"


def test_every_salespulse_variable_is_a_real_setting_with_a_valid_value(
    services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    known = {f"SALESPULSE_{name.upper()}" for name in Settings.model_fields}
    for name, service in services.items():
        env = environment_of(service)
        ours = {key: value for key, value in env.items() if key.startswith("SALESPULSE_")}
        assert set(ours) <= known, f"{name}: not settings: {sorted(set(ours) - known)}"
        if not ours:
            continue
        for key in [k for k in os.environ if k.startswith("SALESPULSE_")]:
            monkeypatch.delenv(key)
        for key, value in ours.items():
            monkeypatch.setenv(key, value)
        settings = Settings(_env_file=None)  # raises on an invalid value
        assert settings.kafka_bootstrap == "kafka:9092"
        assert settings.clickhouse_host == "clickhouse"
        assert settings.clickhouse_password.get_secret_value() == TEST_ENVIRONMENT["CLICKHOUSE_PASSWORD"]


def test_workers_write_and_grafana_reads_as_the_read_only_account(
    services: dict[str, dict[str, Any]],
) -> None:
    worker, grafana, clickhouse = (environment_of(services[n]) for n in ("worker", "grafana", "clickhouse"))
    assert worker["SALESPULSE_CLICKHOUSE_USER"] == clickhouse["CLICKHOUSE_USER"]
    assert worker["SALESPULSE_CLICKHOUSE_DATABASE"] == grafana["CLICKHOUSE_DATABASE"]
    # Grafana's account is the one deploy/clickhouse/users.d defines, with the password the server reads.
    reader = ElementTree.parse(REPO_ROOT / "deploy/clickhouse/users.d/grafana-reader.xml").getroot()
    user = reader.find(f"users/{grafana['CLICKHOUSE_USER']}")
    assert user is not None, f"no ClickHouse user {grafana['CLICKHOUSE_USER']} in users.d"
    password = user.find("password")
    assert password is not None and password.get("from_env") == "CLICKHOUSE_GRAFANA_PASSWORD"
    assert clickhouse["CLICKHOUSE_GRAFANA_PASSWORD"] == grafana["CLICKHOUSE_PASSWORD"]
    # Read-only: SELECT on the salespulse database and nothing else, in a readonly profile.
    grants = [query.text for query in user.iterfind("grants/query")]
    assert grants == [f"GRANT SELECT ON {grafana['CLICKHOUSE_DATABASE']}.*"]
    profile = reader.find(f"profiles/{user.findtext('profile')}")
    assert profile is not None and profile.findtext("readonly") in ("1", "2")
    assert worker["SALESPULSE_KAFKA_BOOTSTRAP"].split(":")[0] in services


def test_every_variable_grafana_provisioning_reads_is_set(services: dict[str, dict[str, Any]]) -> None:
    env = environment_of(services["grafana"])
    used = {
        match
        for path in (REPO_ROOT / "grafana" / "provisioning").rglob("*.y*ml")
        for match in re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", path.read_text(encoding="utf-8"))
    }
    assert used, "no provisioning file reads a variable"
    assert used <= set(env), f"unset in the grafana service: {sorted(used - set(env))}"


def test_every_variable_of_the_compose_file_is_documented_in_the_readme() -> None:
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    used = {
        (braced["name"] if (braced := _BRACED.match(m["braced"] or "")) else m["bare"])
        for m in _EXPRESSION.finditer(text)
        if not m["escaped"]
    }
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("### The production stack", 1)[1].split("\n### ", 1)[0]
    documented = {
        name
        for row in re.findall(r"^\| (`[^|]+`) \|", section, flags=re.MULTILINE)
        for name in re.findall(r"`([A-Z_]+)`", row)
    }
    assert used == documented, (
        f"undocumented: {sorted(used - documented)}; stale: {sorted(documented - used)}"
    )


# --- files, images, ports, start order ---------------------------------------------------------


def bind_sources(service: Mapping[str, Any]) -> list[str]:
    sources = []
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source = volume.split(":", 1)[0]
        elif volume.get("type") == "bind":
            source = volume["source"]
        else:
            continue
        if source.startswith((".", "/", "~")):
            sources.append(source)
    return sources


def test_every_mounted_file_and_the_build_exist(compose: dict[str, Any]) -> None:
    mounted = [source for service in compose["services"].values() for source in bind_sources(service)]
    assert mounted, "nothing is mounted"
    for source in mounted:
        assert not source.startswith(("/", "~")), f"{source}: mount files of the repository, not of a host"
        assert (COMPOSE_FILE.parent / source).exists(), f"mounted {source} does not exist"
    named = {
        volume.split(":", 1)[0] if isinstance(volume, str) else volume.get("source")
        for service in compose["services"].values()
        for volume in service.get("volumes", [])
        if not (isinstance(volume, str) and volume.startswith((".", "/", "~")))
    }
    assert named <= set(compose.get("volumes") or {}), (
        f"undeclared volumes: {named - set(compose['volumes'])}"
    )
    for name, service in compose["services"].items():
        if build := service.get("build"):
            context = COMPOSE_FILE.parent / build["context"]
            assert (context / build["dockerfile"]).is_file(), f"{name}: no Dockerfile"


def test_prometheus_gets_its_rules_and_alertmanager_its_config(services: dict[str, dict[str, Any]]) -> None:
    prometheus_dir = next(s for s in bind_sources(services["prometheus"]) if "prometheus" in s)
    config = yaml.safe_load((REPO_ROOT / prometheus_dir / "prometheus.yml").read_text(encoding="utf-8"))
    for rule_file in config["rule_files"]:
        assert (REPO_ROOT / prometheus_dir / rule_file).is_file()
    assert "--config.file=/etc/prometheus/prometheus.yml" in services["prometheus"]["command"]
    assert any(s.endswith("alertmanager.yml") for s in bind_sources(services["alertmanager"]))


def test_images_are_pinned(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        image = service.get("image", "")
        if "build" in service:
            continue  # built here from deploy/Dockerfile, whose base images are pinned
        repository, _, tag = image.rpartition(":")
        assert repository and tag, f"{name}: {image!r} has no tag"
        assert tag != "latest" and re.search(r"\d+\.\d+", tag), (
            f"{name}: {image!r} is not pinned to a version"
        )
    official = {
        "kafka": "apache/kafka:",
        "clickhouse": "clickhouse/clickhouse-server:",
        "grafana": "grafana/grafana:",
        "prometheus": "prom/prometheus:",
        "alertmanager": "prom/alertmanager:",
    }
    for name, prefix in official.items():
        assert services[name]["image"].startswith(prefix), name


def test_only_grafana_and_ingest_are_published_and_on_loopback_by_default(
    services: dict[str, dict[str, Any]],
) -> None:
    published = {name for name, service in services.items() if service.get("ports")}
    assert published == {"grafana", "ingest"}
    raw_ports = raw_compose()["services"]["grafana"]["ports"]
    assert interpolate(raw_ports, TEST_ENVIRONMENT) == ["127.0.0.1:3000:3000"]
    assert interpolate(raw_compose()["services"]["ingest"]["ports"], TEST_ENVIRONMENT) == [
        "127.0.0.1:8080:8080"
    ]
    for service in services.values():
        assert "network_mode" not in service and not service.get("privileged")


def test_healthchecks_gate_the_start_order(services: dict[str, dict[str, Any]]) -> None:
    for name in LONG_RUNNING:
        assert "test" in services[name].get("healthcheck", {}), f"{name} has no healthcheck"
    for name, service in services.items():
        for dependency, rule in (service.get("depends_on") or {}).items():
            condition = rule["condition"]
            if dependency == "migrate":
                assert condition == "service_completed_successfully", name
            else:
                assert condition == "service_healthy", f"{name} -> {dependency}"
                assert "healthcheck" in services[dependency], dependency
    assert services["worker"]["depends_on"].keys() == {"kafka", "clickhouse", "migrate"}
    assert services["migrate"]["command"] == ["db", "migrate"]
    assert services["migrate"]["restart"] == "no"


def test_workers_serve_metrics_where_prometheus_scrapes(services: dict[str, dict[str, Any]]) -> None:
    env = environment_of(services["worker"])
    port = env["SALESPULSE_METRICS_PORT"]
    assert env["SALESPULSE_METRICS_HOST"] == "0.0.0.0"  # the stack network; not published
    config = yaml.safe_load(
        (REPO_ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text(encoding="utf-8")
    )
    job = next(job for job in config["scrape_configs"] if job["job_name"] == "salespulse-worker")
    assert job["dns_sd_configs"][0]["names"] == ["worker"]
    assert str(job["dns_sd_configs"][0]["port"]) == port
    assert f"127.0.0.1:{port}/metrics" in " ".join(services["worker"]["healthcheck"]["test"])
    assert int(services["worker"]["deploy"]["replicas"]) >= 2


def test_ingest_serves_on_all_interfaces_of_the_stack_and_prometheus_scrapes_it(
    services: dict[str, dict[str, Any]],
) -> None:
    ingest = services["ingest"]
    assert ingest["command"] == ["serve", "--host", "0.0.0.0", "--port", "8080"]
    assert ingest["depends_on"].keys() == {"kafka", "clickhouse", "migrate"}
    assert "127.0.0.1:8080/readyz" in " ".join(ingest["healthcheck"]["test"])
    assert environment_of(ingest)["SALESPULSE_WEBHOOK_DIR"] == "/etc/salespulse/webhooks"
    config = yaml.safe_load(
        (REPO_ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text(encoding="utf-8")
    )
    job = next(job for job in config["scrape_configs"] if job["job_name"] == "salespulse-ingest")
    assert job["dns_sd_configs"][0]["names"] == ["ingest"] and job["dns_sd_configs"][0]["port"] == 8080
