"""Where the CLI connects: flag > DATADOG_* variable > config context > default, and the
``datadog config`` commands that edit the config file."""

from __future__ import annotations

import argparse
import json
import stat
from pathlib import Path

import pytest
import yaml

from datadog_platform.cli.errors import CliError, ExitCode
from datadog_platform.cli.main import build_parser, main
from datadog_platform.cli.settings import Settings, load_config, resolve

CONFIG = """\
current_context: prod
contexts:
  prod: {server: "prod:443", tls_ca: certs/ca.pem, token: "prod-token", timeout: 30}
  local: {server: "127.0.0.1:50051", tls: false}
"""


@pytest.fixture
def config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A config file named by DATADOG_CONFIG; no other DATADOG_* variable is set."""
    path = tmp_path / "conf" / "config.yaml"
    path.parent.mkdir()
    path.write_text(CONFIG)
    for name in (
        "SERVER",
        "TIMEOUT",
        "TLS",
        "TLS_CA",
        "TLS_CERT",
        "TLS_KEY",
        "TOKEN",
        "CONTEXT",
    ):
        monkeypatch.delenv(f"DATADOG_{name}", raising=False)
    monkeypatch.setenv("DATADOG_CONFIG", str(path))
    return path


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args([*argv, "pipeline", "list"])


def test_the_current_context_applies_with_tls_paths_relative_to_the_file(
    config_file: Path,
) -> None:
    settings = resolve(parse())
    assert settings == Settings(
        server="prod:443",
        timeout=30.0,
        tls_ca=str(config_file.parent / "certs" / "ca.pem"),
        token="prod-token",
        context="prod",
    )
    assert settings.secure  # a CA file implies TLS


def test_an_environment_variable_beats_the_context_and_a_flag_beats_both(
    config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATADOG_SERVER", "env:1")
    monkeypatch.setenv("DATADOG_TOKEN", "env-token")
    settings = resolve(parse())
    assert (settings.server, settings.token, settings.timeout) == ("env:1", "env-token", 30.0)
    settings = resolve(parse("--server", "flag:2", "--timeout", "3"))
    assert (settings.server, settings.token, settings.timeout) == ("flag:2", "env-token", 3.0)


def test_context_flag_and_variable_pick_another_context(
    config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert resolve(parse("--context", "local")).server == "127.0.0.1:50051"
    assert not resolve(parse("--context", "local")).secure
    monkeypatch.setenv("DATADOG_CONTEXT", "local")
    assert resolve(parse()).context == "local"
    assert resolve(parse("--context", "prod")).context == "prod"  # the flag wins


def test_without_a_config_file_the_defaults_apply(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATADOG_CONFIG", str(tmp_path / "missing.yaml"))
    for name in ("SERVER", "TIMEOUT", "TOKEN", "CONTEXT", "TLS", "TLS_CA"):
        monkeypatch.delenv(f"DATADOG_{name}", raising=False)
    assert resolve(parse()) == Settings()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("contexts: [a, b]", "contexts must be a mapping"),
        ("contexts: {a: {server: x, colour: blue}}", "unknown key 'colour'"),
        ("contexts: {a: {server: x}}\ncurrent_context: b", "no context 'b'"),
        ("contexts: {a: {server: x", "not valid YAML"),
        ("contexts: {a: {timeout: soon}}\ncurrent_context: a", "timeout not a number"),
    ],
)
def test_a_bad_config_file_is_one_readable_error(
    config_file: Path, text: str, message: str
) -> None:
    config_file.write_text(text)
    with pytest.raises(CliError) as caught:
        resolve(parse())
    assert message in caught.value.lines[0]
    assert len(caught.value.lines) == 1
    assert caught.value.exit_code in (ExitCode.USAGE, ExitCode.INVALID_ARGUMENT)


def test_unknown_context_exits_2_and_names_the_known_ones(
    config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["--context", "staging", "pipeline", "list"])
    _, err = capsys.readouterr()
    assert code == ExitCode.USAGE
    assert err.strip().splitlines() == [
        f"error: no context 'staging' in {config_file} (contexts: local, prod)"
    ]


def test_a_bad_timeout_variable_is_a_usage_error(
    config_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATADOG_TIMEOUT", "soon")
    assert main(["pipeline", "list"]) == ExitCode.USAGE
    assert "environment variable DATADOG_TIMEOUT" in capsys.readouterr().err


def test_set_use_and_delete_context_edit_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "new" / "config.yaml"
    monkeypatch.setenv("DATADOG_CONFIG", str(path))
    monkeypatch.delenv("DATADOG_CONTEXT", raising=False)

    assert main(["config", "set-context", "dev", "--server", "dev:1", "--token", "t0"]) == 0
    assert "created context dev (current)" in capsys.readouterr().out
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # it may hold tokens
    assert main(["config", "set-context", "prod", "--server", "prod:443", "--tls", "true"]) == 0
    assert load_config(path)["current_context"] == "dev"  # a new context is not current
    assert main(["config", "use-context", "prod"]) == 0
    assert main(["config", "set-context", "dev", "--unset", "token", "--timeout", "5"]) == 0
    capsys.readouterr()
    assert load_config(path) == {
        "current_context": "prod",
        "contexts": {
            "dev": {"server": "dev:1", "timeout": 5.0},
            "prod": {"server": "prod:443", "tls": True},
        },
    }
    assert main(["config", "use-context", "nope"]) == ExitCode.NOT_FOUND
    assert "no context 'nope'" in capsys.readouterr().err
    assert main(["config", "delete-context", "prod"]) == 0
    assert "current_context" not in load_config(path)


def test_config_view_masks_tokens_and_shows_the_effective_settings(
    config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--server", "other:1", "config", "view"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["contexts"]["prod"]["token"] == "***"
    assert shown["current_context"] == "prod"
    assert shown["effective"]["server"] == "other:1"
    assert shown["effective"]["token"] == "***"
    assert shown["effective"]["tls"] is True
    assert main(["config", "view", "--raw", "-o", "json"]) == 0
    raw = json.loads(capsys.readouterr().out)
    assert raw["contexts"]["prod"]["token"] == "prod-token"
