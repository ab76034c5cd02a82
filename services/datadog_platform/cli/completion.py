"""``datadog completion bash|zsh|fish``: shell completion scripts generated from the parser.

The argparse tree is flattened into one entry per command path (``""``, ``"pipeline"``,
``"pipeline run"``, ...) with its subcommands, its options and, per option, the values it
takes (its choices, or files). Each shell gets a small static script over that table, so
completing never starts Python.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass, field

SHELLS = ("bash", "zsh", "fish")
# Options whose value is a path: complete file names.
_FILE_DESTS = {"file", "tls_ca", "tls_cert", "tls_key", "set_tls_ca", "set_tls_cert"}
_FILE_DESTS |= {"set_tls_key", "store", "run", "root", "data_dir"}


@dataclass
class Option:
    """One option of a command."""

    flags: tuple[str, ...]
    help: str
    takes_value: bool
    choices: tuple[str, ...] = ()
    files: bool = False


@dataclass
class Command:
    """One node of the command tree."""

    path: str
    help: str = ""
    subcommands: dict[str, str] = field(default_factory=dict)  # name → help
    options: list[Option] = field(default_factory=list)
    values: list[str] = field(default_factory=list)  # choices of its positional arguments


def command_tree(parser: argparse.ArgumentParser) -> list[Command]:
    """Every command path of ``parser``, depth first, the root (``""``) first."""
    commands: list[Command] = []
    _walk(parser, "", "", commands)
    return commands


def _walk(parser: argparse.ArgumentParser, path: str, text: str, out: list[Command]) -> None:
    node = Command(path, text)
    out.append(node)
    children: list[tuple[str, argparse.ArgumentParser]] = []
    for action in parser._actions:  # argparse has no public walk
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            seen: dict[int, str] = {}
            for name, child in action.choices.items():
                # Aliases map to the same parser: complete them, but walk it once.
                first = seen.setdefault(id(child), name)
                node.subcommands[name] = helps.get(first, "") or f"alias of {first}"
                if first == name:
                    children.append((name, child))
        elif not action.option_strings:
            node.values.extend(str(c) for c in action.choices or ())
        else:
            node.options.append(
                Option(
                    flags=tuple(action.option_strings),
                    help=_plain(action.help),
                    takes_value=action.nargs != 0,
                    choices=tuple(str(c) for c in action.choices or ()),
                    files=action.dest in _FILE_DESTS,
                )
            )
    for name, child in children:
        _walk(child, f"{path} {name}".strip(), node.subcommands[name], out)


def _plain(text: str | None) -> str:
    if not text or text == argparse.SUPPRESS:
        return ""
    return " ".join(text.split()).replace("%%", "%")


def script(parser: argparse.ArgumentParser, shell: str) -> str:
    """The completion script for ``shell`` (bash, zsh or fish)."""
    tree = command_tree(parser)
    prog = parser.prog
    if shell == "bash":
        return _bash(prog, tree)
    if shell == "zsh":
        return _zsh(prog, tree)
    if shell == "fish":
        return _fish(prog, tree)
    raise ValueError(f"unknown shell {shell!r}")


def _func(prog: str) -> str:
    return "_" + re.sub(r"\W", "_", prog)


def _value_flags(tree: list[Command]) -> list[str]:
    return sorted({f for c in tree for o in c.options if o.takes_value for f in o.flags})


def _sh_quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def _path_finder(func: str, tree: list[Command]) -> str:
    """Shell code (bash and zsh) setting ``path`` from the words before the cursor;
    expects ``words`` (an array) and ``cword`` (the cursor's index)."""
    subs = "\n".join(
        f"      {_sh_quote(c.path)}) subs={_sh_quote(' '.join(c.subcommands))} ;;"
        for c in tree
        if c.subcommands
    )
    return f"""\
{func}_path() {{
  local i w skip=0 subs
  path=""
  for ((i = {func}_first; i < cword; i++)); do
    w="${{words[i]}}"
    if ((skip)); then skip=0; continue; fi
    case "$w" in
      --*=*) continue ;;
      -*) case " ${func}_value_flags " in *" $w "*) skip=1 ;; esac; continue ;;
    esac
    subs=""
    case "$path" in
{subs}
    esac
    case " $subs " in *" $w "*) path="${{path:+$path }}$w" ;; esac
  done
}}
"""


def _bash(prog: str, tree: list[Command]) -> str:
    func = _func(prog)
    value_cases = []
    for c in tree:
        for o in c.options:
            if not o.takes_value:
                continue
            pattern = "|".join(_sh_quote(f"{c.path}|{flag}") for flag in o.flags)
            if o.choices:
                action = f'COMPREPLY=($(compgen -W {_sh_quote(" ".join(o.choices))} -- "$cur"))'
            elif o.files:
                action = 'COMPREPLY=($(compgen -f -- "$cur"))'
            else:
                action = "COMPREPLY=()"
            value_cases.append(f"    {pattern}) {action}; return ;;")
    word_cases = "\n".join(
        f"    {_sh_quote(c.path)}) subs={_sh_quote(' '.join([*c.subcommands, *c.values]))}; "
        f"opts={_sh_quote(' '.join(_flags(c)))} ;;"
        for c in tree
    )
    return f"""\
# bash completion for {prog}; generated by `{prog} completion bash`.
# Install: {prog} completion bash > ~/.local/share/bash-completion/completions/{prog}
{func}_value_flags="{" ".join(_value_flags(tree))}"
{func}_first=1
{_path_finder(func, tree)}
{func}() {{
  local cur="${{COMP_WORDS[COMP_CWORD]}}" prev="${{COMP_WORDS[COMP_CWORD-1]}}"
  local -a words=("${{COMP_WORDS[@]}}")
  local cword=$COMP_CWORD path subs opts
  {func}_path
  case "$path|$prev" in
{chr(10).join(value_cases)}
  esac
  case "$path" in
{word_cases}
  esac
  if [[ "$cur" == -* ]]; then
    COMPREPLY=($(compgen -W "$opts" -- "$cur"))
  else
    COMPREPLY=($(compgen -W "$subs" -- "$cur"))
  fi
}}
complete -o default -F {func} {prog}
"""


def _flags(command: Command) -> list[str]:
    return [flag for o in command.options for flag in o.flags]


def _zsh(prog: str, tree: list[Command]) -> str:
    func = _func(prog)

    def described(pairs: list[tuple[str, str]]) -> str:
        return " ".join(_sh_quote(f"{w.replace(':', chr(92) + ':')}:{h}") for w, h in pairs)

    value_cases = []
    for c in tree:
        for o in c.options:
            if not o.takes_value:
                continue
            pattern = "|".join(_sh_quote(f"{c.path}|{flag}") for flag in o.flags)
            if o.choices:
                action = f"compadd -- {' '.join(_sh_quote(x) for x in o.choices)}"
            elif o.files:
                action = "_files"
            else:
                action = "_message value"
            value_cases.append(f"    {pattern}) {action}; return ;;")
    word_cases = []
    for c in tree:
        subs = described([*c.subcommands.items(), *((v, "") for v in c.values)])
        opts = described([(f, o.help) for o in c.options for f in o.flags])
        word_cases.append(f"    {_sh_quote(c.path)}) subs=({subs}); opts=({opts}) ;;")
    return f"""\
#compdef {prog}
# zsh completion for {prog}; generated by `{prog} completion zsh`.
# Install: {prog} completion zsh > "${{fpath[1]}}/_{prog}" (or: source <({prog} completion zsh))
{func}_value_flags="{" ".join(_value_flags(tree))}"
{func}_first=2
{_path_finder(func, tree)}
{func}() {{
  local cword=$CURRENT path prev="${{words[CURRENT-1]}}"
  local -a subs opts
  {func}_path
  case "$path|$prev" in
{chr(10).join(value_cases)}
  esac
  case "$path" in
{chr(10).join(word_cases)}
  esac
  if [[ "${{words[CURRENT]}}" == -* ]]; then
    _describe -t options option opts
  else
    _describe -t commands command subs || _files
  fi
}}
if [[ "$funcstack[1]" == "{func}" ]]; then
  {func} "$@"
else
  compdef {func} {prog}
fi
"""


def _fish_quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _fish(prog: str, tree: list[Command]) -> str:
    func = "_" + _func(prog)
    all_subs = {c.path: list(c.subcommands) for c in tree if c.subcommands}
    value_flags = " ".join(_value_flags(tree))
    table = "\n".join(
        f"        case {_fish_quote(path)}\n            set subs {' '.join(map(_fish_quote, subs))}"
        for path, subs in all_subs.items()
    )
    lines = [
        f"# fish completion for {prog}; generated by `{prog} completion fish`.",
        f"# Install: {prog} completion fish > ~/.config/fish/completions/{prog}.fish",
        f"function {func}_at --description 'whether the command line is at command path argv[1]'",
        "    set -l words (commandline -opc)",
        "    set -e words[1]",
        '    set -l path ""',
        "    set -l skip 0",
        "    for w in $words",
        "        if test $skip = 1",
        "            set skip 0",
        "            continue",
        "        end",
        "        switch $w",
        "            case '--*=*'",
        "                continue",
        "            case '-*'",
        f"                if contains -- $w {value_flags}",
        "                    set skip 1",
        "                end",
        "                continue",
        "        end",
        "        set -l subs",
        "        switch $path",
        table,
        "        end",
        "        if contains -- $w $subs",
        '            set path (string trim -- "$path $w")',
        "        end",
        "    end",
        '    test "$path" = "$argv[1]"',
        "end",
        f"complete -c {prog} -f",
    ]
    for c in tree:
        cond = f"-n {_fish_quote(f'{func}_at {_fish_quote(c.path)}')}"
        for name, text in [*c.subcommands.items(), *((v, "") for v in c.values)]:
            lines.append(f"complete -c {prog} {cond} -a {_fish_quote(name)} -d {_fish_quote(text)}")
        for o in c.options:
            spec = []
            for flag in o.flags:
                if flag.startswith("--"):
                    spec.append(f"-l {flag[2:]}")
                elif len(flag) == 2:
                    spec.append(f"-s {flag[1]}")
                else:
                    spec.append(f"-o {flag[1:]}")
            extra = ""
            if o.takes_value:
                if o.choices:
                    extra = f" -x -a {_fish_quote(' '.join(o.choices))}"
                else:
                    extra = " -r -F" if o.files else " -x"
            help_text = f" -d {_fish_quote(o.help)}" if o.help else ""
            lines.append(f"complete -c {prog} {cond} {' '.join(spec)}{extra}{help_text}")
    return "\n".join(lines) + "\n"


def add_completion_parser(areas: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """The ``completion`` command."""
    parser = areas.add_parser(
        "completion",
        help="print a shell completion script (bash, zsh, fish)",
        description="Print a completion script, e.g. `source <(datadog completion bash)`.",
    )
    parser.add_argument("shell", choices=SHELLS)
    parser.set_defaults(handler=_cmd_completion, needs_server=False)


def _cmd_completion(args: argparse.Namespace) -> int:
    from datadog_platform.cli.commands import emit
    from datadog_platform.cli.main import build_parser

    emit(script(build_parser(), args.shell).splitlines())
    return 0
