"""``datadog config view|use-context|set-context|delete-context``: edit the CLI's config file."""

from __future__ import annotations

import argparse

from datadog_platform.cli import formats
from datadog_platform.cli.commands import emit
from datadog_platform.cli.errors import CliError, ExitCode
from datadog_platform.cli.settings import (
    CONTEXT_KEYS,
    config_path,
    load_config,
    masked,
    positive_float,
    resolve,
    save_config,
)


def add_config_parser(areas: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """The ``config`` command and its subcommands."""
    config = areas.add_parser(
        "config",
        help="show and edit the config file's contexts (server, TLS files, token)",
        description="The config file is $DATADOG_CONFIG or ~/.config/datadog/config.yaml.",
    )
    cmds = config.add_subparsers(dest="command", metavar="SUBCOMMAND", required=True)
    view = cmds.add_parser("view", help="print the config file (tokens masked) and the context")
    view.add_argument("--raw", action="store_true", help="show tokens as they are")
    view.add_argument(
        "-o",
        "--output",
        choices=(formats.YAML, formats.JSON),
        default=formats.YAML,
        help="output format (default yaml)",
    )
    view.set_defaults(handler=cmd_config_view, needs_server=False)
    use = cmds.add_parser("use-context", help="make a context the current one")
    use.add_argument("name", metavar="NAME")
    use.set_defaults(handler=cmd_config_use_context, needs_server=False)
    set_context = cmds.add_parser(
        "set-context", help="create a context or change some of its settings"
    )
    set_context.add_argument("name", metavar="NAME")
    # Own option names, as the global --server etc. apply to the command itself.
    set_context.add_argument("--server", dest="set_server", metavar="HOST:PORT")
    set_context.add_argument(
        "--timeout", dest="set_timeout", type=positive_float, metavar="SECONDS"
    )
    set_context.add_argument(
        "--tls",
        dest="set_tls",
        choices=("true", "false"),
        help="use TLS with the system's CA certificates",
    )
    set_context.add_argument("--tls-ca", dest="set_tls_ca", metavar="FILE")
    set_context.add_argument("--tls-cert", dest="set_tls_cert", metavar="FILE")
    set_context.add_argument("--tls-key", dest="set_tls_key", metavar="FILE")
    set_context.add_argument("--token", dest="set_token", metavar="TOKEN")
    set_context.add_argument(
        "--unset",
        action="append",
        choices=tuple(CONTEXT_KEYS),
        metavar="KEY",
        help=f"remove a setting (repeatable; {', '.join(CONTEXT_KEYS)})",
    )
    set_context.add_argument("--use", action="store_true", help="also make it the current one")
    set_context.set_defaults(handler=cmd_config_set_context, needs_server=False)
    delete = cmds.add_parser("delete-context", help="remove a context")
    delete.add_argument("name", metavar="NAME")
    delete.set_defaults(handler=cmd_config_delete_context, needs_server=False)


def cmd_config_view(args: argparse.Namespace) -> ExitCode:
    """``config view``: the file's contents (tokens masked unless ``--raw``) and the settings
    this command line would use."""
    path = config_path()
    document = load_config(path)
    settings = resolve(args)
    effective = {
        "context": settings.context,
        "server": settings.server,
        "timeout": settings.timeout,
        "tls": settings.secure,
        "tls_ca": settings.tls_ca,
        "tls_cert": settings.tls_cert,
        "tls_key": settings.tls_key,
        "token": settings.token if args.raw or not settings.token else "***",
    }
    shown = document if args.raw else masked(document)
    emit(formats.render({"file": str(path), **shown, "effective": effective}, args.output))
    return ExitCode.OK


def cmd_config_use_context(args: argparse.Namespace) -> ExitCode:
    """``config use-context NAME``: an unknown context is an error (3)."""
    path = config_path()
    document = load_config(path)
    if args.name not in document["contexts"]:
        known = ", ".join(sorted(document["contexts"])) or "none"
        raise CliError(
            f"error: no context {args.name!r} in {path} (contexts: {known})", ExitCode.NOT_FOUND
        )
    document["current_context"] = args.name
    save_config(path, document)
    emit([f"switched to context {args.name}"])
    return ExitCode.OK


def cmd_config_set_context(args: argparse.Namespace) -> ExitCode:
    """``config set-context NAME --server ... [--use]``: creates or updates it."""
    path = config_path()
    document = load_config(path)
    created = args.name not in document["contexts"]
    context = dict(document["contexts"].get(args.name) or {})
    for key in CONTEXT_KEYS:
        value = getattr(args, f"set_{key}")
        if value is not None:
            context[key] = value == "true" if key == "tls" else value
    for key in args.unset or ():
        context.pop(key, None)
    document["contexts"][args.name] = context
    if args.use or not document.get("current_context"):
        document["current_context"] = args.name
    save_config(path, document)
    verb = "created" if created else "updated"
    current = " (current)" if document["current_context"] == args.name else ""
    emit([f"{verb} context {args.name}{current} in {path}"])
    return ExitCode.OK


def cmd_config_delete_context(args: argparse.Namespace) -> ExitCode:
    """``config delete-context NAME``."""
    path = config_path()
    document = load_config(path)
    if document["contexts"].pop(args.name, None) is None:
        raise CliError(f"error: no context {args.name!r} in {path}", ExitCode.NOT_FOUND)
    if document.get("current_context") == args.name:
        document.pop("current_context")
    save_config(path, document)
    emit([f"deleted context {args.name}"])
    return ExitCode.OK
