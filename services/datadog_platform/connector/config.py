"""The connector service's connections: loaded from YAML, looked up and listed by name.

Config file format (relative roots resolve against the config file's directory)::

    connections:
      local: {type: file, root: ., description: "Project directory"}
      exports: {type: file, root: /srv/exports}

Without a config file there is one file connection, ``local``, rooted at ``--root``.

Error reasons raised by this module:

- ``CONFIG_INVALID`` (INVALID_ARGUMENT): the config file is missing, unreadable or
  malformed (a startup error).
- ``CONNECTION_NOT_FOUND`` (NOT_FOUND): no connection has the requested name.
- ``INVALID_PAGE_SIZE`` / ``INVALID_PAGE_TOKEN`` (INVALID_ARGUMENT): bad paging input.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from datadog_platform.connector.files import CONNECTION_TYPE as FILE_TYPE
from datadog_platform.connector.files import FileConnection
from datadog_platform.core.errors import DomainError, FieldViolation, invalid_argument, not_found

DEFAULT_CONNECTION = "local"
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
CONNECTION_TYPES = (FILE_TYPE,)

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")
_FILE_KEYS = {"type", "root", "description"}
# Tokens carry a prefix so that random base64 is rejected rather than taken for a name.
_TOKEN_PREFIX = "after:"


@dataclass(frozen=True)
class ConnectionPage:
    """One page of connections, ordered by name."""

    connections: list[FileConnection]
    next_page_token: str


@dataclass(frozen=True)
class ConnectorConfig:
    """The named connections this connector service serves."""

    connections: Mapping[str, FileConnection]

    @classmethod
    def local(cls, root: Path) -> ConnectorConfig:
        """One file connection, ``local``, rooted at ``root``."""
        resolved = _check_root(Path(root).expanduser().resolve(), DEFAULT_CONNECTION)
        return cls({DEFAULT_CONNECTION: FileConnection(DEFAULT_CONNECTION, resolved)})

    def file_connection(self, name: str) -> FileConnection:
        """The connection called ``name`` (empty means ``local``)."""
        name = name or DEFAULT_CONNECTION
        connection = self.connections.get(name)
        if connection is None:
            known = ", ".join(sorted(self.connections)) or "none"
            raise not_found(
                "CONNECTION_NOT_FOUND",
                f"no connection named {name!r} is configured (configured: {known})",
                connection=name,
            )
        return connection

    def list_page(self, page_size: int, page_token: str) -> ConnectionPage:
        """A page of connections ordered by name, continuing after ``page_token``."""
        if page_size < 0:
            raise invalid_argument(
                "INVALID_PAGE_SIZE",
                f"page_size must not be negative, got {page_size}",
                [FieldViolation("page_size", "must not be negative")],
            )
        size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        names = sorted(self.connections)
        if page_token:
            after = decode_page_token(page_token)
            names = [n for n in names if n > after]
        page = names[:size]
        more = len(names) > size
        return ConnectionPage(
            [self.connections[n] for n in page],
            encode_page_token(page[-1]) if more else "",
        )


def encode_page_token(last_name: str) -> str:
    """An opaque token that continues a listing after ``last_name``."""
    return base64.urlsafe_b64encode(f"{_TOKEN_PREFIX}{last_name}".encode()).decode("ascii")


def decode_page_token(token: str) -> str:
    """The name a token continues after; INVALID_PAGE_TOKEN if it is not one of ours."""
    try:
        text = base64.b64decode(token.encode("ascii"), altchars=b"-_", validate=True).decode()
    except (ValueError, binascii.Error, UnicodeError):
        text = ""
    if not text.startswith(_TOKEN_PREFIX) or len(text) == len(_TOKEN_PREFIX):
        raise invalid_argument(
            "INVALID_PAGE_TOKEN",
            "page_token is not a token returned by ListConnections",
            [FieldViolation("page_token", "not a next_page_token from a previous response")],
        )
    return text[len(_TOKEN_PREFIX) :]


def load_config(path: Path | None, default_root: Path) -> ConnectorConfig:
    """The connections of ``path`` (YAML), or one ``local`` connection at ``default_root``."""
    if path is None:
        return ConnectorConfig.local(default_root)
    path = Path(path).expanduser()
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise _config_error(str(path), f"cannot read it: {exc.strerror or exc}") from None
    except (yaml.YAMLError, UnicodeError) as exc:
        raise _config_error(str(path), f"it is not valid YAML: {exc}") from None
    return parse_config(document, base_dir=path.resolve().parent, source=str(path))


def parse_config(document: Any, base_dir: Path, source: str = "config") -> ConnectorConfig:
    """Connections from a parsed YAML document; relative roots resolve against ``base_dir``."""
    if not isinstance(document, dict) or not isinstance(document.get("connections"), dict):
        raise _config_error(source, "it must be a mapping with a 'connections' mapping")
    unknown_top = sorted(set(document) - {"connections"})
    if unknown_top:
        raise _config_error(source, f"unknown top-level keys: {', '.join(unknown_top)}")
    entries: dict[Any, Any] = document["connections"]
    if not entries:
        raise _config_error(source, "'connections' is empty; configure at least one")
    connections: dict[str, FileConnection] = {}
    for name, entry in entries.items():
        connections[str(name)] = _parse_connection(name, entry, base_dir, source)
    return ConnectorConfig(dict(sorted(connections.items())))


def _parse_connection(name: Any, entry: Any, base_dir: Path, source: str) -> FileConnection:
    if not isinstance(name, str) or not _NAME.match(name):
        raise _config_error(
            source,
            f"connection name {name!r} must start with a letter and contain only "
            "letters, digits, '_' and '-'",
        )
    where = f"connection {name!r}"
    if not isinstance(entry, dict):
        raise _config_error(source, f"{where} must be a mapping with 'type' and 'root'")
    kind = entry.get("type")
    if kind not in CONNECTION_TYPES:
        raise _config_error(
            source,
            f"{where} has unknown type {kind!r}; supported types: {', '.join(CONNECTION_TYPES)}",
        )
    unknown = sorted(str(k) for k in set(entry) - _FILE_KEYS)
    if unknown:
        raise _config_error(source, f"{where} has unknown keys: {', '.join(unknown)}")
    root = entry.get("root")
    if not isinstance(root, str) or not root:
        raise _config_error(source, f"{where} needs a 'root' directory")
    description = entry.get("description", "")
    if not isinstance(description, str):
        raise _config_error(source, f"{where}: 'description' must be a string")
    resolved = _check_root((base_dir / Path(root).expanduser()).resolve(), name, source)
    return FileConnection(name, resolved, description)


def _check_root(root: Path, name: str, source: str | None = None) -> Path:
    """``root`` if it is an existing directory; a connection's root is never created."""
    if not root.is_dir():
        problem = "is not a directory" if root.exists() else "does not exist"
        message = f"root {root} of connection {name!r} {problem}"
        if source is None:
            raise invalid_argument("CONFIG_INVALID", message)
        raise _config_error(source, message)
    return root


def _config_error(source: str, problem: str) -> DomainError:
    return invalid_argument("CONFIG_INVALID", f"connector config {source}: {problem}")
