"""Where the CLI connects and how: flags, ``DATADOG_*`` variables and a config file of contexts.

The config file (``$DATADOG_CONFIG``, default ``~/.config/datadog/config.yaml``)::

    current_context: prod
    contexts:
      prod: {server: scheduler.example.com:443, tls_ca: ca.pem, token: ...}
      local: {server: 127.0.0.1:50051}

Each setting is taken from the first of: its flag, its environment variable, the
selected context (``--context``, ``DATADOG_CONTEXT`` or ``current_context``), the
built-in default. Relative TLS paths in the file are relative to the file.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from datadog_platform.cli.errors import CliError, ExitCode
from datadog_platform.core.config import DEFAULT_SCHEDULER_ADDRESS

DEFAULT_TIMEOUT = 10.0
DEFAULT_CONFIG = Path("~/.config/datadog/config.yaml")

#: Keys a context may hold, with the flag and the environment variable of each.
CONTEXT_KEYS: dict[str, tuple[str, str]] = {
    "server": ("--server", "DATADOG_SERVER"),
    "timeout": ("--timeout", "DATADOG_TIMEOUT"),
    "tls": ("--tls", "DATADOG_TLS"),
    "tls_ca": ("--tls-ca", "DATADOG_TLS_CA"),
    "tls_cert": ("--tls-cert", "DATADOG_TLS_CERT"),
    "tls_key": ("--tls-key", "DATADOG_TLS_KEY"),
    "token": ("--token", "DATADOG_TOKEN"),
}
_PATH_KEYS = ("tls_ca", "tls_cert", "tls_key")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


@dataclass(frozen=True)
class Settings:
    """The resolved connection settings of one command."""

    server: str = DEFAULT_SCHEDULER_ADDRESS
    timeout: float = DEFAULT_TIMEOUT
    tls: bool = False
    tls_ca: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    token: str = ""
    context: str = ""

    @property
    def secure(self) -> bool:
        """Whether the channel uses TLS (asked for, or implied by a TLS file)."""
        return self.tls or bool(self.tls_ca or self.tls_cert or self.tls_key)


def add_connection_flags(parser: argparse.ArgumentParser) -> None:
    """The global flags; their defaults are None so that an unset flag can fall through."""
    parser.add_argument(
        "--server",
        metavar="HOST:PORT",
        help=f"scheduler address (env DATADOG_SERVER; default {DEFAULT_SCHEDULER_ADDRESS})",
    )
    parser.add_argument(
        "--timeout",
        type=positive_float,
        metavar="SECONDS",
        help=f"deadline of each call (env DATADOG_TIMEOUT; default {DEFAULT_TIMEOUT:g})",
    )
    parser.add_argument(
        "--tls",
        action="store_const",
        const=True,
        help="use TLS with the system's CA certificates (env DATADOG_TLS; implied by --tls-*)",
    )
    parser.add_argument(
        "--tls-ca", metavar="FILE", help="CA certificate(s) to trust, PEM (env DATADOG_TLS_CA)"
    )
    parser.add_argument(
        "--tls-cert",
        metavar="FILE",
        help="client certificate for mutual TLS, PEM (env DATADOG_TLS_CERT)",
    )
    parser.add_argument(
        "--tls-key", metavar="FILE", help="key of --tls-cert, PEM (env DATADOG_TLS_KEY)"
    )
    parser.add_argument(
        "--token", metavar="TOKEN", help="bearer token sent with every call (env DATADOG_TOKEN)"
    )
    parser.add_argument(
        "--context",
        metavar="NAME",
        help="context of the config file to use (env DATADOG_CONTEXT; default: its "
        "current_context)",
    )


def positive_float(text: str) -> float:
    """An argparse type: a number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return value


def config_path(env: Mapping[str, str] | None = None) -> Path:
    """The config file's path: ``$DATADOG_CONFIG`` or ``~/.config/datadog/config.yaml``."""
    env = os.environ if env is None else env
    return Path(env.get("DATADOG_CONFIG") or DEFAULT_CONFIG).expanduser()


def load_config(path: Path) -> dict[str, Any]:
    """The config document (empty when the file does not exist); exit 4 if it is unreadable."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {"contexts": {}}
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(
            f"error: cannot read config file {path}: {exc}", ExitCode.INVALID_ARGUMENT
        ) from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" (line {where.line + 1})" if where is not None else ""
        raise CliError(
            f"error: config file {path} is not valid YAML{at}", ExitCode.INVALID_ARGUMENT
        ) from None
    document = {} if document is None else document
    problem = _config_problem(document)
    if problem:
        raise CliError(f"error: config file {path}: {problem}", ExitCode.INVALID_ARGUMENT)
    document.setdefault("contexts", {})
    return document


def _config_problem(document: Any) -> str:
    if not isinstance(document, dict):
        return "expected a mapping with contexts and current_context"
    unknown = set(document) - {"contexts", "current_context"}
    if unknown:
        return f"unknown key {sorted(unknown)[0]!r} (expected contexts, current_context)"
    contexts = document.get("contexts") or {}
    if not isinstance(contexts, dict):
        return "contexts must be a mapping of names to settings"
    for name, context in contexts.items():
        if not isinstance(context, dict):
            return f"context {name!r} must be a mapping"
        bad = set(context) - set(CONTEXT_KEYS)
        if bad:
            return (
                f"context {name!r}: unknown key {sorted(bad)[0]!r} "
                f"(expected {', '.join(CONTEXT_KEYS)})"
            )
    current = document.get("current_context")
    if current is not None and not isinstance(current, str):
        return "current_context must be a context name"
    return ""


def save_config(path: Path, document: Mapping[str, Any]) -> None:
    """Write the config file, readable by its owner only (it may hold tokens)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(dict(document), sort_keys=False, default_flow_style=False)
    # Create with 0600 before writing, so a token is never readable by others.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)


def resolve(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> Settings:
    """The settings of a command: flag > environment variable > context > default."""
    env = os.environ if env is None else env
    path = config_path(env)
    document = load_config(path)
    contexts: dict[str, Any] = document.get("contexts") or {}
    name = getattr(args, "context", None) or env.get("DATADOG_CONTEXT") or ""
    name = name or document.get("current_context") or ""
    if name and name not in contexts:
        known = ", ".join(sorted(contexts)) or "none"
        raise CliError(f"error: no context {name!r} in {path} (contexts: {known})", ExitCode.USAGE)
    context: dict[str, Any] = dict(contexts.get(name) or {}) if name else {}
    values: dict[str, Any] = {}
    for key, (_, variable) in CONTEXT_KEYS.items():
        flag = getattr(args, key, None)
        if flag is not None:
            values[key] = flag
        elif env.get(variable):
            values[key] = _parse(key, env[variable], f"environment variable {variable}")
        elif context.get(key) is not None:
            value = _parse(key, context[key], f"context {name!r} of {path}")
            if key in _PATH_KEYS:
                value = str((path.parent / Path(value).expanduser()).resolve())
            values[key] = value
    return Settings(**values, context=name)


def _parse(key: str, raw: Any, where: str) -> Any:
    """A setting's value from a variable or the file; a bad one is a usage error."""
    text = str(raw).strip()
    if key == "timeout":
        try:
            return positive_float(text)
        except argparse.ArgumentTypeError as exc:
            raise CliError(f"error: {where}: timeout {exc}", ExitCode.USAGE) from None
    if key == "tls":
        if isinstance(raw, bool):
            return raw
        if text.lower() in _TRUE | _FALSE:
            return text.lower() in _TRUE
        raise CliError(f"error: {where}: tls must be true or false, not {text!r}", ExitCode.USAGE)
    return text


def masked(document: Mapping[str, Any]) -> dict[str, Any]:
    """The config document with tokens replaced by ``***`` (for ``config view``)."""
    contexts = {
        name: {k: ("***" if k == "token" and v else v) for k, v in (context or {}).items()}
        for name, context in (document.get("contexts") or {}).items()
    }
    return {**document, "contexts": contexts}
