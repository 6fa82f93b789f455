"""The docker deployment, checked without Docker: compose services, mounts, Dockerfile, provisioning, secrets."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from headrace.dashboards import DATASOURCE_TYPE, DATASOURCE_UID, iter_panels, load_dashboards

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
COMPOSE = yaml.safe_load((DOCKER / "compose.yaml").read_text())
DATASOURCES = yaml.safe_load((DOCKER / "grafana/provisioning/datasources/clickhouse.yaml").read_text())
DASHBOARD_PROVIDERS = yaml.safe_load((DOCKER / "grafana/provisioning/dashboards/headrace.yaml").read_text())
SECRET_KEY = re.compile(r"password|secret|token|api_?key", re.IGNORECASE)
# an environment reference, resolved when the file is used: ${VAR}, ${VAR:?msg}, ${VAR:-default}, $VAR
ENV_REF = re.compile(r"^\$\{[A-Za-z_]\w*(?::?[-?][^}]*)?\}$|^\$[A-Za-z_]\w*$")


def _substitute_defaults(text: str) -> str:
    # what compose makes of `${VAR:-default}` when VAR is unset (the checks use the defaults)
    return re.sub(r"\$\{([A-Za-z_]\w*):?-([^}]*)\}", lambda m: os.environ.get(m.group(1)) or m.group(2), text)


def _mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    # (host source, container target) of every bind mount, short or long syntax; named volumes left out
    out = []
    for v in service.get("volumes", []):
        if isinstance(v, dict):
            if v.get("type") == "bind":
                out.append((v["source"], v["target"]))
            continue
        source, target = _substitute_defaults(v).split(":")[:2]
        if source.startswith((".", "/", "~")):
            out.append((source, target))
    return out


def test_compose_has_clickhouse_grafana_and_a_worker_built_from_the_dockerfile() -> None:
    services = COMPOSE["services"]
    assert {"clickhouse", "grafana", "worker"} <= set(services)
    assert services["clickhouse"]["image"].startswith("clickhouse/clickhouse-server:")
    assert services["clickhouse"]["healthcheck"]["test"]
    assert any(not s.startswith((".", "/")) and s.split(":")[1] == "/var/lib/clickhouse"
               for s in services["clickhouse"]["volumes"] if isinstance(s, str))
    assert services["grafana"]["image"].startswith("grafana/grafana:")
    assert "grafana-clickhouse-datasource" in services["grafana"]["environment"]["GF_INSTALL_PLUGINS"]
    build = services["worker"]["build"]
    assert (DOCKER / build["context"]).resolve() == ROOT
    assert (ROOT / build["dockerfile"]).resolve() == DOCKER / "Dockerfile"
    for name in ("grafana", "worker"):
        assert services[name]["depends_on"]["clickhouse"]["condition"] == "service_healthy"


@pytest.mark.parametrize("service", ["clickhouse", "grafana", "worker"])
def test_every_bind_mounted_host_path_exists_in_the_repo(service: str) -> None:
    for source, target in _mounts(COMPOSE["services"][service]):
        host = (DOCKER / source).resolve()
        assert host.exists(), f"{service}: {source!r} (for {target!r}) does not exist at {host}"
        assert host.is_relative_to(ROOT), f"{service}: {source!r} is outside the repository"


def test_grafana_mounts_the_provisioning_and_the_dashboards_the_provider_loads() -> None:
    mounts = {target: (DOCKER / source).resolve() for source, target in _mounts(COMPOSE["services"]["grafana"])}
    assert mounts["/etc/grafana/provisioning"] == DOCKER / "grafana" / "provisioning"
    [provider] = DASHBOARD_PROVIDERS["providers"]
    assert provider["type"] == "file"
    assert mounts[provider["options"]["path"]] == ROOT / "dashboards"
    home = COMPOSE["services"]["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (ROOT / "dashboards" / Path(home).relative_to(provider["options"]["path"])).is_file()


def test_the_datasource_uid_is_the_one_every_dashboard_panel_uses() -> None:
    [ds] = DATASOURCES["datasources"]
    assert (ds["uid"], ds["type"]) == (DATASOURCE_UID, DATASOURCE_TYPE)
    assert ds["jsonData"]["host"] == "clickhouse"  # the compose service name
    used = {(t["datasource"]["uid"], t["datasource"]["type"])
            for d in load_dashboards() for p in iter_panels(d) for t in p.get("targets", [])}
    used |= {(v["datasource"]["uid"], v["datasource"]["type"])
             for d in load_dashboards() for v in d["templating"]["list"] if "datasource" in v}
    assert used == {(ds["uid"], ds["type"])}


def _dockerfile_instructions() -> list[tuple[str, str]]:
    text = (DOCKER / "Dockerfile").read_text()
    text = re.sub(r"\\\n", " ", text)  # line continuations
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            op, _, rest = line.partition(" ")
            out.append((op.upper(), rest.strip()))
    return out


def test_dockerfile_copies_only_paths_that_exist_and_installs_the_project() -> None:
    instructions = _dockerfile_instructions()
    assert instructions[0] == ("FROM", "python:3.11-slim")
    copies = [shlex.split(rest) for op, rest in instructions if op == "COPY"]
    assert copies
    sources = [s for args in copies for s in [a for a in args if not a.startswith("--")][:-1]]
    for s in sources:
        assert (ROOT / s).exists(), f"Dockerfile copies {s!r}, which is not in the repository"
    for needed in ("pyproject.toml", "headrace/", "flows/", "operators/", "sources/", "sinks/", "sql/"):
        assert needed in sources, needed
    assert any(op == "RUN" and "pip install" in rest for op, rest in instructions)
    assert ("ENTRYPOINT", '["headrace"]') in instructions


def test_worker_command_is_one_the_headrace_cli_accepts() -> None:
    worker = COMPOSE["services"]["worker"]
    command = [_substitute_defaults(c) for c in worker["command"]]
    assert command[0] == "replay"
    options = {c.split("=", 1)[0] for c in command if c.startswith("--")}
    assert {"--data", "--db"} <= options
    headrace = Path(sys.executable).with_name("headrace")
    help_text = subprocess.run([str(headrace), *command[:1], "--help"], capture_output=True, text=True, check=True,
                               env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}).stdout
    for option in options:
        assert re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", help_text), f"`headrace replay` has no {option}"
    data = command[command.index("--data") + 1]
    assert data in {target for _, target in _mounts(worker)}, "--data is not a mounted folder"
    db = command[command.index("--db") + 1]
    assert re.fullmatch(r"http://[\w.-]+@clickhouse:8123/headrace", db), db  # user only: the password is env
    assert re.fullmatch(r"\$\{CLICKHOUSE_PASSWORD(:\?[^}]*)?\}", worker["environment"]["HEADRACE_CLICKHOUSE_PASSWORD"])


def _leaves(node: Any, path: str = "") -> list[tuple[str, Any]]:
    if isinstance(node, dict):
        return [leaf for k, v in node.items() for leaf in _leaves(v, f"{path}.{k}")]
    if isinstance(node, list):
        return [leaf for i, v in enumerate(node) for leaf in _leaves(v, f"{path}[{i}]")]
    return [(path, node)]


@pytest.mark.parametrize("name", ["compose.yaml", "grafana/provisioning/datasources/clickhouse.yaml"])
def test_no_secret_is_written_in_the_yaml_files(name: str) -> None:
    doc = yaml.safe_load((DOCKER / name).read_text())
    secrets = [(path, value) for path, value in _leaves(doc) if SECRET_KEY.search(path.rsplit(".", 1)[-1])]
    assert secrets, f"{name}: expected password settings to check"
    for path, value in secrets:
        assert isinstance(value, str) and ENV_REF.match(value), f"{name}{path} holds a value, not ${{...}}: {value!r}"


def test_env_example_holds_placeholders_only_and_the_real_env_is_ignored() -> None:
    pairs = [line.split("=", 1) for line in (DOCKER / ".env.example").read_text().splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    secrets = {k: v for k, v in pairs if SECRET_KEY.search(k)}
    assert secrets and all(v.startswith("change-me") for v in secrets.values()), secrets
    # every variable the compose file requires is documented in the example
    required = set(re.findall(r"\$\{(\w+):\?", (DOCKER / "compose.yaml").read_text()))
    assert required <= {k for k, _ in pairs}
    assert ".env" in (DOCKER / ".gitignore").read_text().split()


def test_no_placeholder_or_literal_password_leaks_into_other_files() -> None:
    placeholders = [v for k, v in (line.split("=", 1) for line in (DOCKER / ".env.example").read_text().splitlines()
                                   if "=" in line and not line.startswith("#")) if SECRET_KEY.search(k)]
    files = [DOCKER / "compose.yaml", DOCKER / "Dockerfile", *(DOCKER / "grafana").rglob("*.yaml"),
             *(ROOT / "dashboards").glob("*.json")]
    for f in files:
        text = f.read_text()
        assert not any(p in text for p in placeholders), f
        literal = re.search(r"(?<![{\w])\w*password\w*\s*[:=]\s*['\"]?(?![$'\"\s])", text, flags=re.IGNORECASE)
        assert not literal, f"{f} sets a literal password: {literal.group(0)!r}" if literal else ""
