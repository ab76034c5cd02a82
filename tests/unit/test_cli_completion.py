"""``datadog completion bash|zsh|fish``: scripts generated from the argparse tree."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from datadog_platform.cli.completion import command_tree, script
from datadog_platform.cli.main import build_parser, main

BASH = shutil.which("bash")


def all_paths() -> list[str]:
    return [c.path for c in command_tree(build_parser())]


def test_the_tree_has_every_command_with_aliases_and_options() -> None:
    tree = {c.path: c for c in command_tree(build_parser())}
    for path in (
        "pipeline status",
        "run get",
        "run watch",
        "connector test",
        "connector describe",
        "transform list",
        "schedule list",
        "config set-context",
        "completion",
    ):
        assert path in tree or path.split()[-1] in tree[" ".join(path.split()[:-1])].subcommands
    assert tree["run"].subcommands["get"] == tree["run"].subcommands["status"]  # an alias
    output = next(o for o in tree["pipeline list"].options if "--output" in o.flags)
    assert output.choices == ("table", "json", "yaml")
    assert next(o for o in tree["pipeline create"].options if "-f" in o.flags).files
    assert tree["completion"].values == ["bash", "zsh", "fish"]


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_each_script_mentions_every_subcommand(
    shell: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["completion", shell]) == 0
    text = capsys.readouterr().out
    for command in command_tree(build_parser()):
        for name in command.subcommands:
            assert name in text, (shell, command.path, name)
        for option in command.options:
            assert option.flags[-1].lstrip("-") in text, (shell, command.path, option.flags)


def complete_in_bash(words: list[str]) -> list[str]:
    """What the generated bash function offers for ``words`` (the last one being typed)."""
    assert BASH is not None, "bash is needed to test the bash completion script"
    quoted = " ".join("'" + w + "'" for w in words)
    program = (
        f"{script(build_parser(), 'bash')}\n"
        f"COMP_WORDS=({quoted}); COMP_CWORD={len(words) - 1}; _datadog\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    done = subprocess.run([BASH, "-c", program], capture_output=True, text=True, check=True)
    assert done.stderr == ""
    return done.stdout.split()


def test_bash_completes_commands_options_and_their_values() -> None:
    assert "pipeline" in complete_in_bash(["datadog", ""])
    assert complete_in_bash(["datadog", "--server", "h:1", "run", "w"]) == ["watch"]
    assert complete_in_bash(["datadog", "pipeline", "st"]) == ["status"]
    assert complete_in_bash(["datadog", "run", "list", "-o", ""]) == ["table", "json", "yaml"]
    assert complete_in_bash(["datadog", "run", "list", "--state", "S"]) == ["SUCCEEDED"]
    assert complete_in_bash(["datadog", "completion", ""]) == ["bash", "zsh", "fish"]
    assert "--output" in complete_in_bash(["datadog", "schedule", "list", "--"])


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_scripts_parse_in_their_shell_where_it_is_installed(shell: str) -> None:
    # bash is everywhere the tests run; zsh and fish are checked when present.
    binary = shutil.which(shell)
    if binary is None:
        assert shell != "bash"
        return
    text = script(build_parser(), shell)
    done = subprocess.run([binary, "-n"], input=text, capture_output=True, text=True)
    assert (done.returncode, done.stderr) == (0, "")


def test_a_closed_pipe_ends_the_cli_quietly() -> None:
    # `datadog completion bash | head -1`: the reader goes away before the CLI is done.
    process = subprocess.Popen(
        [sys.executable, "-m", "datadog_platform.cli.main", "completion", "bash"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None
    process.stdout.close()
    _, err = process.communicate(timeout=60)
    assert b"Traceback" not in err
    assert process.returncode == 141
