"""The deployment files: deploy/Dockerfile, .dockerignore, docker-compose.yml, deploy/kubernetes.

No container engine or cluster runs here, so nothing is built, started or applied. What is
checked instead is everything that ties the files to the code: they parse; every command
names a console script of pyproject.toml and only flags (and ``DATADOG_*`` variables) its
service's argparse accepts; listen ports are the code's defaults; services are wired by
the right names and ports; every health check and probe names the service's real
``grpc.health.v1`` name from the generated descriptors (or, for Kubernetes startup and
liveness probes, the liveness name every server serves) and the health script works against
a real server; every service serves Prometheus metrics on the code's default metrics port,
which Kubernetes pods announce for scraping and the NetworkPolicies open to the monitoring
namespace only; the connector configs validate against the connector types; kustomize lists
exactly the manifests there are; each Deployment has its Service, PDB, probes, resources
and non-root security context; the NetworkPolicies let only the connector reach databases.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from datadog_platform.core import config as core_config
from datadog_platform.core.health import LIVENESS

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPOSE = ROOT / "docker-compose.yml"
K8S = ROOT / "deploy" / "kubernetes"
HEALTHCHECK_SCRIPT = ROOT / "deploy" / "healthcheck.py"
COMPONENTS = ("scheduler", "executor", "connector")
DATABASE_PORTS = {5432, 3306}
COMPONENT_LABEL = "app.kubernetes.io/component"


# ----------------------------------------------------------------------------- the code's side


def console_scripts() -> dict[str, str]:
    """``[project.scripts]`` of pyproject.toml: name -> ``module:function``."""
    with (ROOT / "pyproject.toml").open("rb") as f:
        return tomllib.load(f)["project"]["scripts"]


def component_of_script(script: str) -> str:
    """``scheduler`` for ``datadog_platform.scheduler.main:main``, and so on."""
    module = console_scripts()[script].split(":")[0]
    match = re.fullmatch(r"datadog_platform\.(\w+)\.main", module)
    assert match, f"{script} is not a service: {module}"
    assert match[1] in COMPONENTS, f"{script} is not a service: {module}"
    return match[1]


def health_name(component: str) -> str:
    """The service's full name from its generated descriptor (what health reports)."""
    module = importlib.import_module(f"datadog_platform.api.{component}.v1.{component}_service_pb2")
    (service,) = module.DESCRIPTOR.services_by_name.values()
    return service.full_name


def all_health_names() -> set[str]:
    return {health_name(c) for c in COMPONENTS}


def default_port(component: str) -> int:
    address = getattr(core_config, f"DEFAULT_{component.upper()}_ADDRESS")
    return int(address.rsplit(":", 1)[1])


def default_metrics_port(component: str) -> int:
    return getattr(core_config, f"DEFAULT_{component.upper()}_METRICS_PORT")


def env_variables_read_by_code() -> set[str]:
    """Every ``DATADOG_*`` variable the services read through ``env_default``."""
    names: set[str] = set()
    for path in (ROOT / "services").rglob("*.py"):
        names.update(re.findall(r'env_default\(\s*"([A-Z0-9_]+)"', path.read_text()))
    return {f"DATADOG_{name}" for name in names}


def parse_service_args(
    script: str, argv: list[str], env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> argparse.Namespace:
    """What the service's own argparse makes of ``argv`` with ``env`` as its environment."""
    for name in [n for n in os.environ if n.startswith("DATADOG_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    module_name, function = console_scripts()[script].split(":")
    module = importlib.import_module(module_name)
    try:
        if hasattr(module, "parse_args"):
            return module.parse_args(argv)
        if hasattr(module, "build_parser"):
            return module.build_parser().parse_args(argv)
        # No separate parser: run the entry point with the server start replaced.
        captured: list[argparse.Namespace] = []
        monkeypatch.setattr(
            module, "run_service", lambda _name, args, _build: captured.append(args)
        )
        getattr(module, function)(argv)
        assert captured, f"{module_name}.{function} did not reach run_service"
        return captured[0]
    except SystemExit as exc:
        pytest.fail(f"{script} refuses {shlex.join(argv)} (exit {exc.code}); see stderr")


# ------------------------------------------------------------------------- the files' side


def load_yaml_documents(path: Path) -> list[Any]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def k8s_documents() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for resource in kustomization()["resources"]:
        docs.extend(load_yaml_documents(K8S / resource))
    return docs


def kustomization() -> dict[str, Any]:
    (doc,) = load_yaml_documents(K8S / "kustomization.yaml")
    return doc


def k8s_of(kind: str) -> list[dict[str, Any]]:
    return [d for d in k8s_documents() if d["kind"] == kind]


def k8s_named(kind: str, name: str) -> dict[str, Any]:
    (doc,) = [d for d in k8s_of(kind) if d["metadata"]["name"] == name]
    return doc


def compose() -> dict[str, Any]:
    (doc,) = load_yaml_documents(COMPOSE)
    return doc


def compose_interpolate(value: str) -> str:
    """Compose's ``${VAR}``, ``${VAR:-default}``, ``${VAR:?error}`` with placeholder values."""
    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?[-?][^}]*)?\}", r"placeholder-\1", value)


@dataclass
class Instruction:
    keyword: str
    value: str


def dockerfile_instructions() -> list[Instruction]:
    """Instructions with continuation lines joined and comments dropped."""
    lines: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    assert not pending, "Dockerfile ends inside a continued line"
    return [Instruction(*[*line.split(None, 1), ""][:2]) for line in lines]


def dockerfile_exec_form(value: str) -> list[str]:
    form = json.loads(value)
    assert isinstance(form, list), f"not the exec (JSON) form: {value}"
    return form


def dockerfile_healthcheck() -> list[str]:
    (check,) = [i.value for i in dockerfile_instructions() if i.keyword.upper() == "HEALTHCHECK"]
    _options, cmd, command = check.partition(" CMD ")
    assert cmd, f"HEALTHCHECK without CMD: {check}"
    return dockerfile_exec_form(command.strip())


@dataclass
class Launch:
    """One way the files start a service: where, the command line, environment, health."""

    origin: str
    script: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    # (gRPC service name, port) of every health check / probe of this launch.
    health: list[tuple[str, int]] = field(default_factory=list)
    health_commands: list[list[str]] = field(default_factory=list)

    @property
    def component(self) -> str:
        return component_of_script(self.script)


def dockerfile_launches() -> list[Launch]:
    instructions = dockerfile_instructions()
    assert not [i for i in instructions if i.keyword.upper() == "ENTRYPOINT"], (
        "the command must be the console script itself (no ENTRYPOINT in front of it)"
    )
    (cmd,) = [i.value for i in instructions if i.keyword.upper() == "CMD"]
    script, *argv = dockerfile_exec_form(cmd)
    check = dockerfile_healthcheck()
    return [
        Launch(
            "Dockerfile CMD",
            script,
            argv,
            health=[health_target(check)],
            health_commands=[check],
        )
    ]


def health_target(command: list[str]) -> tuple[str, int]:
    """(service, port) of ``python /opt/datadog/healthcheck.py SERVICE PORT``."""
    assert len(command) == 4, f"expected python SCRIPT SERVICE PORT: {command}"
    return command[2], int(command[3])


def compose_datadog_services() -> dict[str, dict[str, Any]]:
    """Compose services that run one of the console scripts."""
    scripts = console_scripts()
    return {
        name: service
        for name, service in compose()["services"].items()
        if isinstance(service.get("command"), list) and service["command"][0] in scripts
    }


def compose_launches() -> list[Launch]:
    launches = []
    for name, service in compose_datadog_services().items():
        script, *argv = service["command"]
        env = {
            k: compose_interpolate(str(v)) for k, v in (service.get("environment") or {}).items()
        }
        test = service.get("healthcheck", {}).get("test", [])
        assert test[:1] == ["CMD"], f"compose {name}: healthcheck must be the exec form"
        launches.append(
            Launch(
                f"compose {name}",
                script,
                argv,
                env,
                health=[health_target(test[1:])],
                health_commands=[test[1:]],
            )
        )
    return launches


def secret_value(name: str, key: str) -> str:
    secret = k8s_named("Secret", name)
    values = {**secret.get("stringData", {}), **secret.get("data", {})}
    assert key in values, f"Secret {name} has no key {key}"
    return str(values[key])


def container_env(container: dict[str, Any], namespace: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = str(item["value"])
        elif "secretKeyRef" in item["valueFrom"]:
            ref = item["valueFrom"]["secretKeyRef"]
            env[item["name"]] = secret_value(ref["name"], ref["key"])
        elif item["valueFrom"].get("fieldRef", {}).get("fieldPath") == "metadata.namespace":
            env[item["name"]] = namespace
        else:
            env[item["name"]] = "placeholder"
    return env


def k8s_expand(arg: str, env: dict[str, str], where: str) -> str:
    """Kubernetes' ``$(VAR)`` expansion in command and args."""

    def replace(match: re.Match[str]) -> str:
        assert match[1] in env, f"{where}: $({match[1]}) is not defined in the container's env"
        return env[match[1]]

    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", replace, arg)


def deployment_containers() -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for deployment in k8s_of("Deployment"):
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            yield deployment, container


def k8s_launches() -> list[Launch]:
    namespace = kustomization()["namespace"]
    launches = []
    for deployment, container in deployment_containers():
        where = f"Deployment {deployment['metadata']['name']}"
        env = container_env(container, namespace)
        command = [k8s_expand(a, env, where) for a in container.get("command", [])]
        args = [k8s_expand(a, env, where) for a in container.get("args", [])]
        script, *argv = command + args
        probes = [
            container[p]["grpc"]
            for p in ("startupProbe", "readinessProbe", "livenessProbe")
            if p in container
        ]
        launches.append(
            Launch(
                where,
                script,
                argv,
                env,
                health=[(p.get("service", ""), int(p["port"])) for p in probes],
            )
        )
    return launches


def all_launches() -> list[Launch]:
    return dockerfile_launches() + compose_launches() + k8s_launches()


def launch_ids() -> list[str]:
    return [launch.origin for launch in all_launches()]


def split_target(target: str) -> tuple[str, str, int]:
    """(scheme, host, port) of a gRPC target such as ``dns:///host:port`` or ``host:port``."""
    scheme = ""
    if target.startswith("dns:///"):
        scheme, target = "dns", target.removeprefix("dns:///")
    host, _, port = target.rpartition(":")
    return scheme, host, int(port)


# ----------------------------------------------------------------------------- parsing


def yaml_files() -> list[Path]:
    return [COMPOSE, *sorted((ROOT / "deploy").rglob("*.yaml")), *(ROOT / "deploy").rglob("*.yml")]


@pytest.mark.parametrize("path", yaml_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_yaml_file_parses(path: Path) -> None:
    documents = load_yaml_documents(path)
    assert documents, f"{path} is empty"
    for document in documents:
        assert isinstance(document, dict), f"{path}: a document is not a mapping"


def test_dockerfile_parses_into_known_instructions() -> None:
    known = {"FROM", "ARG", "ENV", "WORKDIR", "COPY", "RUN", "USER", "EXPOSE", "HEALTHCHECK", "CMD"}
    assert {i.keyword.upper() for i in dockerfile_instructions()} <= known


# ----------------------------------------------------------------------------- commands


def test_there_is_a_launch_of_every_service_in_compose_and_kubernetes() -> None:
    for origin in ("compose", "Deployment"):
        components = {x.component for x in all_launches() if x.origin.startswith(origin)}
        assert components == set(COMPONENTS), origin


@pytest.mark.parametrize("launch", all_launches(), ids=launch_ids())
def test_command_is_a_console_script_with_flags_its_parser_accepts(
    launch: Launch, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert launch.script in console_scripts(), f"{launch.origin}: no console script {launch.script}"
    known = env_variables_read_by_code()
    unknown = sorted(n for n in launch.env if n.startswith("DATADOG_") and n not in known)
    assert not unknown, f"{launch.origin}: the services read no {unknown}"
    args = parse_service_args(launch.script, launch.argv, launch.env, monkeypatch)
    host, _, port = args.listen.rpartition(":")
    assert host == "0.0.0.0", f"{launch.origin}: a container must listen on all interfaces"
    assert int(port) == default_port(launch.component), f"{launch.origin}: not the default port"
    metrics = core_config.resolve_metrics_listen(
        args.metrics_listen, args.listen, default_metrics_port(launch.component)
    )
    assert metrics == f"0.0.0.0:{default_metrics_port(launch.component)}", (
        f"{launch.origin}: metrics must be on all interfaces and the default metrics port"
    )


@pytest.mark.parametrize("launch", all_launches(), ids=launch_ids())
def test_health_checks_name_the_real_health_service_and_port(launch: Launch) -> None:
    assert launch.health, f"{launch.origin}: no health check"
    for service, port in launch.health:
        if service == LIVENESS and launch.origin.startswith("Deployment"):
            continue  # startup and liveness probes: see the Kubernetes probe test
        assert service in all_health_names(), f"{launch.origin}: {service!r} is no service"
        assert service == health_name(launch.component), f"{launch.origin}: another service"
        assert port == default_port(launch.component), f"{launch.origin}: probe port {port}"
    for command in launch.health_commands:
        assert command[:2] == ["python", image_healthcheck_path()], launch.origin


def test_the_compose_scheduler_is_wired_to_postgres_and_the_other_services(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    services = compose()["services"]
    by_component = {
        component_of_script(s["command"][0]): name for name, s in compose_datadog_services().items()
    }
    (launch,) = [x for x in compose_launches() if x.component == "scheduler"]
    args = parse_service_args(launch.script, launch.argv, launch.env, monkeypatch)
    store = urlsplit(args.store)
    assert store.scheme == "postgresql"
    assert services[store.hostname]["image"].startswith("postgres:16")
    assert store.port == 5432
    for component, target in (("executor", args.executor), ("connector", args.connector)):
        scheme, host, port = split_target(target)
        assert host == by_component[component]
        assert port == default_port(component)
        replicas = services[host].get("deploy", {}).get("replicas", 1)
        if replicas > 1:
            assert scheme == "dns", f"{component}: dns:/// resolves all {replicas} replicas"
    (executor,) = [x for x in compose_launches() if x.component == "executor"]
    executor_args = parse_service_args(executor.script, executor.argv, executor.env, monkeypatch)
    assert split_target(executor_args.connector)[1:] == (by_component["connector"], 50053)


def test_compose_runs_two_executors_postgres_16_and_waits_for_health() -> None:
    doc = compose()
    services = doc["services"]
    executors = [n for n, s in compose_datadog_services().items() if "executor" in s["command"][0]]
    assert sum(services[n].get("deploy", {}).get("replicas", 1) for n in executors) == 2
    postgres = services["postgres"]
    assert postgres["image"] == "postgres:16"
    assert "healthcheck" in postgres
    assert any(v.endswith(":/var/lib/postgresql/data") for v in postgres["volumes"])
    assert "postgres-data" in doc["volumes"]
    for name, service in services.items():
        for dependency, condition in (service.get("depends_on") or {}).items():
            assert condition == {"condition": "service_healthy"}, f"{name} -> {dependency}"
            assert "healthcheck" in services[dependency], f"{dependency} has no healthcheck"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), f"compose {name} mounts missing {source}"
            else:
                assert source in doc["volumes"], f"compose {name}: undeclared volume {source}"
    assert set(services) - set(compose_datadog_services()) == {"postgres"}


def test_compose_connector_mounts_its_config_and_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    doc = compose()
    ((name, service),) = [
        (n, s) for n, s in compose_datadog_services().items() if "connector" in s["command"][0]
    ]
    (launch,) = [x for x in compose_launches() if x.origin == f"compose {name}"]
    args = parse_service_args(launch.script, launch.argv, launch.env, monkeypatch)
    mounts = {v.split(":")[1]: v.split(":")[0] for v in service["volumes"]}
    assert args.config in mounts, "the --config file is not mounted"
    config_file = ROOT / mounts[args.config]
    files = {f"/run/secrets/{s}" for s in service.get("secrets", [])}
    for secret in service.get("secrets", []):
        assert "environment" in doc["secrets"][secret], f"secret {secret} is not from env"
    check_connector_config(config_file.read_text(), files, launch.env)


# ----------------------------------------------------------------------------- connector configs


def check_connector_config(text: str, files: set[str], env: dict[str, str]) -> None:
    """Every entry validates against its type; every ``${file:}``/``${env:}`` is provided."""
    from datadog_platform.connector.config import ARTIFACT_CONNECTION, parse_entry
    from datadog_platform.connector.registry import default_registry

    def provided(match: re.Match[str]) -> str:
        kind, arg = match[1], match[2].strip()
        if kind == "file":
            assert arg in files, f"${{file:{arg}}} is not mounted"
        else:
            assert arg in env, f"${{env:{arg}}} is not set"
        return "placeholder"

    def resolve(value: Any) -> Any:
        if isinstance(value, str):
            return re.sub(r"\$\{(env|file):([^}]*)\}", provided, value)
        if isinstance(value, dict):
            return {k: resolve(v) for k, v in value.items()}
        if isinstance(value, list):
            return [resolve(v) for v in value]
        return value

    document = yaml.safe_load(text)
    registry = default_registry()
    assert ARTIFACT_CONNECTION in document["connections"], "no artifact store"
    for name, entry in document["connections"].items():
        # The real parser, told to refuse references (all resolved above) and keep no secret.
        parse_entry(
            name,
            resolve(entry),
            Path("/"),
            registry,
            [],
            "test",
            allow_references=False,
            register=lambda _value: None,
        )


def test_kubernetes_connector_config_validates() -> None:
    (deployment, container), *_ = [
        (d, c) for d, c in deployment_containers() if "datadog-connector" in c["command"]
    ]
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    files: set[str] = set()
    config_text = None
    args = [a for a in container["args"] if a.startswith("--config=")]
    (config_path,) = [a.split("=", 1)[1] for a in args]
    for mount in container["volumeMounts"]:
        volume = volumes[mount["name"]]
        if "secret" in volume:
            data = k8s_named("Secret", volume["secret"]["secretName"])
            files |= {f"{mount['mountPath']}/{key}" for key in data.get("stringData", {})}
        if "configMap" in volume:
            config_map = k8s_named("ConfigMap", volume["configMap"]["name"])
            for key, value in config_map["data"].items():
                if f"{mount['mountPath']}/{key}" == config_path:
                    config_text = value
    assert config_text is not None, f"{config_path} is not mounted from a ConfigMap"
    check_connector_config(config_text, files, container_env(container, "datadog"))


# ----------------------------------------------------------------------------- the image


def image_healthcheck_path() -> str:
    """Where the Dockerfile puts deploy/healthcheck.py in the image."""
    copies = [i.value.split() for i in dockerfile_instructions() if i.keyword.upper() == "COPY"]
    (target,) = [c[-1] for c in copies if c[:-1] == ["deploy/healthcheck.py"]]
    return target


def dockerignore_excludes(path: str) -> bool:
    """Docker's rule: the last matching pattern wins; a pattern also matches parent dirs."""
    excluded = False
    for line in DOCKERIGNORE.read_text().splitlines():
        pattern = line.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        regex = "".join(
            ".*" if part == "**" else re.escape(part).replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
            for part in re.split(r"(\*\*)", pattern)
        )
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(re.fullmatch(regex, prefix) for prefix in prefixes):
            excluded = not negate
    return excluded


def test_dockerfile_is_multistage_slim_nonroot_and_installs_the_wheel() -> None:
    instructions = dockerfile_instructions()
    arg_values = dict(
        i.value.split("=", 1) for i in instructions if i.keyword.upper() == "ARG" and "=" in i.value
    )
    stages = [i.value for i in instructions if i.keyword.upper() == "FROM"]
    assert len(stages) >= 2
    for stage in stages:
        image = re.sub(r"\$\{(\w+)\}", lambda m: arg_values[m[1]], stage.split()[0])
        assert image == "python:3.12-slim"
    runs = " ".join(i.value for i in instructions if i.keyword.upper() == "RUN")
    assert "pip wheel" in runs
    assert re.search(r"pip install \S*datadog_platform-\*\.whl", runs)
    users = [i.value for i in instructions if i.keyword.upper() == "USER"]
    assert users, "the image must not run as root"
    assert users[-1].split(":")[0] not in {"root", "0"}
    exposed = {
        int(p) for i in instructions if i.keyword.upper() == "EXPOSE" for p in i.value.split()
    }
    assert exposed == {default_port(c) for c in COMPONENTS} | {
        default_metrics_port(c) for c in COMPONENTS
    }


def test_dockerfile_copies_only_what_exists_and_is_not_dockerignored() -> None:
    for instruction in dockerfile_instructions():
        if instruction.keyword.upper() != "COPY" or "--from=" in instruction.value:
            continue
        *sources, _target = instruction.value.split()
        for source in sources:
            path = ROOT / source
            assert path.exists(), f"COPY {source}: no such file"
            files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
            for file in files:
                relative = str(file.relative_to(ROOT))
                if "__pycache__" in relative:
                    continue
                assert not dockerignore_excludes(relative), f".dockerignore drops {relative}"
    for heavy in (".venv/bin/python", "node_modules/x", ".git/HEAD", "tests/conftest.py"):
        assert dockerignore_excludes(heavy), f".dockerignore keeps {heavy}"


async def run_healthcheck(*args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(HEALTHCHECK_SCRIPT),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _out, err = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode is not None
    return process.returncode, err.decode()


async def test_healthcheck_script_asks_a_real_server(connector_address: str) -> None:
    port = connector_address.rsplit(":", 1)[1]
    assert await run_healthcheck(health_name("connector"), port) == (0, "")
    assert await run_healthcheck("", port) == (0, "")
    code, err = await run_healthcheck(health_name("scheduler"), port)
    assert code == 1
    assert "NOT_FOUND" in err
    code, err = await run_healthcheck(health_name("connector"), "1", "--timeout", "2")
    assert code == 1
    assert "UNAVAILABLE" in err or "DEADLINE_EXCEEDED" in err


# ----------------------------------------------------------------------------- kubernetes


def test_kustomization_lists_exactly_the_manifests_there_are() -> None:
    resources = kustomization()["resources"]
    assert len(resources) == len(set(resources))
    for resource in resources:
        assert (K8S / resource).is_file(), f"kustomization lists missing {resource}"
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(resources) == on_disk, "a manifest is not listed in kustomization.yaml"
    seen = set()
    for doc in k8s_documents():
        for key in ("apiVersion", "kind", "metadata"):
            assert doc.get(key), f"a document without {key}: {doc}"
        assert doc["metadata"].get("name"), doc
        key = (doc["kind"], doc["metadata"]["name"])
        assert key not in seen, f"duplicate {key}"
        seen.add(key)
        assert "namespace" not in doc["metadata"], "the namespace is kustomization's to set"
    (namespace,) = k8s_of("Namespace")
    assert namespace["metadata"]["name"] == kustomization()["namespace"]


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kustomize_renders_the_base() -> None:
    rendered = subprocess.run(
        ["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, timeout=60, check=False
    )
    assert rendered.returncode == 0, rendered.stderr
    objects = [d for d in yaml.safe_load_all(rendered.stdout) if d]
    assert len(objects) == len(k8s_documents())
    namespace = kustomization()["namespace"]
    tag = kustomization()["images"][0]["newTag"]
    for obj in objects:
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == namespace, obj["metadata"]["name"]
        if obj["kind"] == "Deployment":
            (container,) = obj["spec"]["template"]["spec"]["containers"]
            assert container["image"] == f"datadog-platform:{tag}"


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    match = selector.get("matchLabels", selector)
    return all(labels.get(k) == v for k, v in match.items())


def pod_labels(deployment: dict[str, Any]) -> dict[str, str]:
    return deployment["spec"]["template"]["metadata"]["labels"]


def component_of_deployment(deployment: dict[str, Any]) -> str:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return component_of_script(container["command"][0])


def service_for(deployment: dict[str, Any]) -> dict[str, Any]:
    (service,) = [
        s for s in k8s_of("Service") if selects(s["spec"]["selector"], pod_labels(deployment))
    ]
    return service


def test_each_deployment_has_its_service_pdb_resources_and_security() -> None:
    deployments = k8s_of("Deployment")
    assert sorted(component_of_deployment(d) for d in deployments) == sorted(COMPONENTS)
    for deployment in deployments:
        name = deployment["metadata"]["name"]
        spec = deployment["spec"]
        pod = spec["template"]["spec"]
        assert selects(spec["selector"], pod_labels(deployment)), name
        component = component_of_deployment(deployment)
        (container,) = pod["containers"]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports == {
            "grpc": default_port(component),
            "metrics": default_metrics_port(component),
        }, name
        service = service_for(deployment)
        for port in service["spec"]["ports"]:
            assert ports.get(port["targetPort"], port["targetPort"]) == default_port(component)
            assert port["port"] == default_port(component)
        if component in ("executor", "connector"):
            assert service["spec"].get("clusterIP") == "None", f"{name}: headless Service"
        (pdb,) = [
            p
            for p in k8s_of("PodDisruptionBudget")
            if selects(p["spec"]["selector"], pod_labels(deployment))
        ]
        assert pdb["spec"]["minAvailable"] < spec["replicas"], f"{name}: the PDB blocks drains"
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(container["resources"][kind]), f"{name} {kind}"
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["automountServiceAccountToken"] is False
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"]["drop"] == ["ALL"]
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for mount in container.get("volumeMounts", []):
            volume = volumes[mount["name"]]
            if "configMap" in volume:
                k8s_named("ConfigMap", volume["configMap"]["name"])
            if "secret" in volume:
                k8s_named("Secret", volume["secret"]["secretName"])
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert "grpc" in container[probe], f"{name}: {probe} is not a native gRPC probe"
            assert container[probe]["grpc"]["port"] == default_port(component), f"{name} {probe}"
        # Readiness follows the dependencies (NOT_SERVING while one is down); startup and
        # liveness only ask whether the process runs, so an outage elsewhere never
        # restarts pods in a loop.
        assert container["readinessProbe"]["grpc"]["service"] == health_name(component), name
        for probe in ("startupProbe", "livenessProbe"):
            assert container[probe]["grpc"]["service"] == LIVENESS, f"{name}: {probe}"
        annotations = spec["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true", name
        assert annotations["prometheus.io/port"] == str(default_metrics_port(component)), name
        assert annotations["prometheus.io/path"] == "/metrics", name
    scheduler = [d for d in deployments if component_of_deployment(d) == "scheduler"]
    assert scheduler[0]["spec"]["replicas"] == 2


def test_the_kubernetes_scheduler_uses_postgres_and_dns_targets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    namespace = kustomization()["namespace"]
    services = {component_of_deployment(d): service_for(d) for d in k8s_of("Deployment")}
    launches = {x.component: x for x in k8s_launches()}
    scheduler = launches["scheduler"]
    args = parse_service_args(scheduler.script, scheduler.argv, scheduler.env, monkeypatch)
    assert urlsplit(args.store).scheme == "postgresql", "HA needs the PostgreSQL store"
    assert "--store" not in " ".join(scheduler.argv), "the store URL holds a password: use env"
    executor = launches["executor"]
    executor_args = parse_service_args(executor.script, executor.argv, executor.env, monkeypatch)
    for component, target in (
        ("executor", args.executor),
        ("connector", args.connector),
        ("connector", executor_args.connector),
    ):
        scheme, host, port = split_target(target)
        service = services[component]
        assert host.split(".")[0] == service["metadata"]["name"]
        assert host.split(".")[1] == namespace
        assert port == service["spec"]["ports"][0]["port"]
        if service["spec"].get("clusterIP") == "None":
            assert scheme == "dns", f"{target}: a headless Service needs dns:///"


def test_secrets_hold_only_marked_placeholders() -> None:
    for secret in k8s_of("Secret"):
        assert "data" not in secret, "use stringData with visible placeholders"
        for key, value in secret["stringData"].items():
            assert "CHANGE-ME" in value, f"{secret['metadata']['name']}.{key} is not a placeholder"


# ----------------------------------------------------------------------------- network policies


def policies_for(component: str) -> list[dict[str, Any]]:
    (deployment,) = [d for d in k8s_of("Deployment") if component_of_deployment(d) == component]
    labels = pod_labels(deployment)
    return [p for p in k8s_of("NetworkPolicy") if selects(p["spec"]["podSelector"], labels)]


def peer_component(peer: dict[str, Any]) -> str | None:
    return peer.get("podSelector", {}).get("matchLabels", {}).get(COMPONENT_LABEL)


def is_dns(rule: dict[str, Any]) -> bool:
    ports = {p["port"] for p in rule.get("ports", [])}
    peers = rule.get("to", [])
    return (
        ports == {53}
        and bool(peers)
        and all(
            p.get("podSelector", {}).get("matchLabels", {}).get("k8s-app") == "kube-dns"
            for p in peers
        )
    )


def test_network_policies_deny_by_default() -> None:
    default = [
        p
        for p in k8s_of("NetworkPolicy")
        if p["spec"]["podSelector"] == {}
        and "ingress" not in p["spec"]
        and "egress" not in p["spec"]
    ]
    assert default, "no default-deny policy"
    assert set(default[0]["spec"]["policyTypes"]) == {"Ingress", "Egress"}


def egress_rules(component: str) -> list[dict[str, Any]]:
    return [r for p in policies_for(component) for r in p["spec"].get("egress", [])]


def test_only_the_connector_can_reach_databases() -> None:
    for component in ("scheduler", "executor"):
        for rule in egress_rules(component):
            if is_dns(rule):
                continue
            assert rule.get("to"), f"{component}: egress to anywhere {rule}"
            assert rule.get("ports"), f"{component}: egress on any port {rule}"
            ports = {p["port"] for p in rule["ports"]}
            for peer in rule["to"]:
                cidr = peer.get("ipBlock", {}).get("cidr", "")
                assert not cidr.endswith("/0"), f"{component} may reach anything: {rule}"
            if ports & DATABASE_PORTS:
                assert component == "scheduler", f"{component} may reach databases: {rule}"
                assert ports == {5432}, f"the scheduler reaches only its store: {rule}"
                assert all(peer_component(p) != "connector" for p in rule["to"])
    targets = {
        component: {
            peer_component(peer)
            for rule in egress_rules(component)
            if not is_dns(rule)
            for peer in rule["to"]
            if peer_component(peer) in COMPONENTS
        }
        for component in ("scheduler", "executor")
    }
    assert targets == {"scheduler": {"executor", "connector"}, "executor": {"connector"}}
    connector_rules = [r for r in egress_rules("connector") if not is_dns(r)]
    assert any(
        not r.get("ports") or {p["port"] for p in r["ports"]} & DATABASE_PORTS
        for r in connector_rules
    ), "the connector cannot reach databases"


def is_scrape(rule: dict[str, Any], component: str) -> bool:
    return {p["port"] for p in rule.get("ports", [])} == {default_metrics_port(component)}


def test_ingress_follows_the_call_graph() -> None:
    callers = {"executor": {"scheduler"}, "connector": {"scheduler", "executor"}}
    for component, expected in callers.items():
        rules = [r for p in policies_for(component) for r in p["spec"].get("ingress", [])]
        assert rules
        sources = set()
        for rule in rules:
            if is_scrape(rule, component):
                continue
            assert rule.get("from"), f"{component} accepts anyone: {rule}"
            assert {p["port"] for p in rule["ports"]} == {default_port(component)}
            sources |= {peer_component(p) for p in rule["from"]}
        assert sources == expected, component


def test_only_the_monitoring_namespace_may_scrape_metrics() -> None:
    for component in COMPONENTS:
        rules = [r for p in policies_for(component) for r in p["spec"].get("ingress", [])]
        scrapes = [r for r in rules if is_scrape(r, component)]
        assert len(scrapes) == 1, f"{component}: no ingress rule for scraping its metrics"
        (peer,) = scrapes[0]["from"]
        assert peer == {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}
        }, component
        for rule in rules:
            ports = {p["port"] for p in rule.get("ports", [])}
            if rule is not scrapes[0]:
                assert default_metrics_port(component) not in ports, f"{component}: {rule}"
