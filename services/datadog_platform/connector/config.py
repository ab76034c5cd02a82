"""The connector service's connections: loaded from YAML, resolved, looked up, reloaded.

Config file format (``docs/connectors.md`` documents every type's options)::

    connections:
      local: {type: file, root: ., description: "Project directory"}
      warehouse:
        type: postgres
        dsn: postgresql://postgres@127.0.0.1:5432/test
        password: ${env:PG_PASSWORD}
      api:
        type: rest
        base_url: https://api.example.com
        auth: {type: bearer, token: "${file:/run/secrets/api}"}

Each entry has a ``type`` (a built-in or plugin connector type), an optional
``description`` and the options that type documents (its ``OptionSpec``\\ s):
unknown options and missing required ones are refused, values are coerced to the
declared type (``"5432"`` -> ``5432``). Anywhere in an option value,
``${env:NAME}`` is replaced by an environment variable and ``${file:/path}`` by a
file's content without its trailing newline (relative paths resolve against the
config file's directory); ``$${`` writes a literal ``${``. Values of options the
type marks secret, and anything that looks like a password or token, are
registered with :mod:`datadog_platform.core.redaction` before anything can log
them. Relative paths in options resolve against the config file's directory.

Without a config file there is a file connection ``local`` rooted at ``--root``
and an artifact connection ``artifacts`` at ``<root>/.datadog/artifacts``.

:class:`LiveConfig` holds the current config of a running service: it re-reads the
file on request (SIGHUP) and when the file or a ``${file:}`` it references changes;
a bad new file is logged and the old config kept; connections that changed or
disappeared are closed once the calls using them have finished.

Error reasons raised by this module:

- ``CONFIG_INVALID`` (INVALID_ARGUMENT): the config file is missing, unreadable or
  malformed, names an unknown type or option, lacks a required option, or
  references an unset variable or unreadable file (a startup error).
- ``CONNECTION_NOT_FOUND`` (NOT_FOUND): no connection has the requested name.
- ``CONNECTION_TYPE_MISMATCH`` (INVALID_ARGUMENT): the named connection is of a type
  that does not serve that kind of source or sink (e.g. a database source naming a
  file connection); the violation names the field.
- ``REQUIRED_FIELD_MISSING`` (INVALID_ARGUMENT): no source/sink kind, or no connection name.
- ``INVALID_PAGE_SIZE`` / ``INVALID_PAGE_TOKEN`` (INVALID_ARGUMENT): bad paging input.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

import yaml

from datadog_platform.connector.base import Connection, OptionSpec
from datadog_platform.connector.registry import ConnectorRegistry, RegisteredType, default_registry
from datadog_platform.core.errors import DomainError, FieldViolation, invalid_argument, not_found
from datadog_platform.core.logging import get_logger
from datadog_platform.core.page_tokens import decode_page_token, encode_page_token
from datadog_platform.core.redaction import redact, register_secret

DEFAULT_CONNECTION = "local"
ARTIFACT_CONNECTION = "artifacts"
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
RELOAD_INTERVAL_SECONDS = 2.0
#: Keys of a connection entry that are not the type's options.
ENTRY_KEYS = ("type", "description")

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")
_REFERENCE = re.compile(r"\$\$\{|\$\{(?P<kind>[a-z]+):(?P<arg>[^}]*)\}")
# Nested keys whose values are secrets whatever the option (auth: {token: ...}).
_SECRET_KEY = re.compile(
    r"pass(word|wd|phrase)?|secret|token|api[-_]?key|credential|private|authorization|cookie",
    re.I,
)
# Keys inside a secret map option that describe it rather than hold it (auth: {type: ...},
# headers: {Accept: ...}); masking "bearer" or "application/json" everywhere helps nobody.
_DESCRIPTIVE_KEYS = frozenset(
    {"type", "kind", "header", "param", "in", "name", "user", "username"}
    | {"accept", "accept-encoding", "accept-language", "content-type", "user-agent"}
)
_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})

log = get_logger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class ConnectionEntry:
    """One validated config entry: options resolved and coerced, ready for ``create``."""

    name: str
    type: str
    description: str
    options: Mapping[str, Any]
    fingerprint: str


@dataclass(frozen=True)
class ConfigSource:
    """Where a config came from: the file, and every file its values reference."""

    path: Path
    files: tuple[Path, ...]


@dataclass(frozen=True)
class ParsedConfig:
    """A config document, validated but without connections created yet."""

    entries: Mapping[str, ConnectionEntry]
    base_dir: Path
    files: tuple[Path, ...] = ()


@dataclass(frozen=True)
class ConnectionPage:
    """One page of connections, ordered by name."""

    connections: list[Connection]
    next_page_token: str


class ConnectorConfig:
    """The named connections this connector service serves, and the types it knows."""

    def __init__(
        self,
        connections: Mapping[str, Connection],
        registry: ConnectorRegistry | None = None,
        *,
        base_dir: Path | None = None,
        fingerprints: Mapping[str, str] | None = None,
        source: ConfigSource | None = None,
    ) -> None:
        self.registry = registry if registry is not None else default_registry()
        self.connections: dict[str, Connection] = dict(sorted(connections.items()))
        self.base_dir = base_dir if base_dir is not None else Path.cwd()
        self.fingerprints: dict[str, str] = dict(fingerprints or {})
        self.source = source
        self._kinds: dict[str, str] = {}
        for name, connection in self.connections.items():
            registered = self.registry.get(connection.type)
            if registered is None:
                raise ValueError(f"connection {name!r} has unregistered type {connection.type!r}")
            self._kinds[name] = registered.spec_kind

    @classmethod
    def local(cls, root: Path, registry: ConnectorRegistry | None = None) -> ConnectorConfig:
        """File connection ``local`` at ``root``, artifact connection ``artifacts`` beneath it."""
        root = Path(root).expanduser().resolve()
        registry = registry if registry is not None else default_registry()
        connections: dict[str, Any] = {DEFAULT_CONNECTION: {"type": "file", "root": str(root)}}
        if "artifact" in registry:
            artifacts = root / ".datadog" / "artifacts"
            connections[ARTIFACT_CONNECTION] = {"type": "artifact", "root": str(artifacts)}
        document = {"connections": connections}
        return parse_config(document, root, source=f"--root {root}", registry=registry)

    # ----------------------------------------------------------------- lookups

    def connection(self, name: str, field: str = "connection") -> Connection:
        """The connection called ``name``; NOT_FOUND (reason CONNECTION_NOT_FOUND) if none."""
        connection = self.connections.get(name)
        if connection is None:
            known = ", ".join(self.connections) or "none"
            raise not_found(
                "CONNECTION_NOT_FOUND",
                f"{field}: no connection named {name!r} is configured (configured: {known})",
                connection=name,
            )
        return connection

    def spec_kind(self, connection: Connection) -> str:
        """The SourceSpec/SinkSpec kind ``connection`` serves."""
        return self._kinds[connection.name]

    def file_connection(self, name: str) -> Connection:
        """The file connection called ``name`` (empty means ``local``)."""
        return self._of_kind("file", name or DEFAULT_CONNECTION, "connection")

    def source_connection(self, source: Any, field: str = "source") -> tuple[Connection, Any]:
        """The connection a ``SourceSpec`` names and the spec's set kind (e.g. its FileSource)."""
        return self._for_spec(source, field)

    def sink_connection(self, sink: Any, field: str = "header.sink") -> tuple[Connection, Any]:
        """The connection a ``SinkSpec`` names and the spec's set kind (e.g. its DatabaseSink)."""
        return self._for_spec(sink, field)

    def _for_spec(self, spec: Any, field: str) -> tuple[Connection, Any]:
        kind = spec.WhichOneof("kind")
        if kind is None:
            raise required_field(field, "one of file, database, rest or artifact")
        message = getattr(spec, kind)
        if kind == "artifact":
            return self._artifact_connection(f"{field}.artifact"), message
        name = message.connection or (DEFAULT_CONNECTION if kind == "file" else "")
        where = f"{field}.{kind}.connection"
        if not name:
            raise required_field(where, f"the name of a {kind} connection")
        return self._of_kind(kind, name, where), message

    def _of_kind(self, kind: str, name: str, where: str) -> Connection:
        connection = self.connection(name, where)
        actual = self._kinds[name]
        if actual != kind:
            serving = [t for t in self.registry.names if self._serves(t, kind)]
            raise invalid_argument(
                "CONNECTION_TYPE_MISMATCH",
                f"{where}: connection {name!r} is a {connection.type} connection; a {kind} "
                f"source or sink needs a connection of type {' or '.join(serving) or kind}",
                [FieldViolation(where, f"{name!r} is a {connection.type} connection")],
                connection=name,
            )
        return connection

    def _serves(self, type_name: str, kind: str) -> bool:
        registered = self.registry.get(type_name)
        return registered is not None and registered.spec_kind == kind

    def _artifact_connection(self, where: str) -> Connection:
        """The artifact store: the connection ``artifacts``, else the only artifact connection."""
        candidates = [n for n, k in self._kinds.items() if k == "artifact"]
        if ARTIFACT_CONNECTION in candidates:
            return self.connections[ARTIFACT_CONNECTION]
        if len(candidates) == 1:
            return self.connections[candidates[0]]
        problem = "none is" if not candidates else f"several are ({', '.join(candidates)}) and none"
        raise not_found(
            "CONNECTION_NOT_FOUND",
            f"{where}: no artifact store: {problem} configured as {ARTIFACT_CONNECTION!r}",
            connection=ARTIFACT_CONNECTION,
        )

    # ----------------------------------------------------------------- listing

    def list_page(self, page_size: int, page_token: str) -> ConnectionPage:
        """A page of connections ordered by name, continuing after ``page_token``."""
        if page_size < 0:
            raise invalid_argument(
                "INVALID_PAGE_SIZE",
                f"page_size must not be negative, got {page_size}",
                [FieldViolation("page_size", "must not be negative")],
            )
        size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        names = list(self.connections)
        if page_token:
            after = decode_page_token(page_token, "ListConnections")
            names = [n for n in names if n > after]
        page = names[:size]
        more = len(names) > size
        return ConnectionPage(
            [self.connections[n] for n in page],
            encode_page_token("ListConnections", page[-1]) if more else "",
        )

    async def close(self) -> None:
        """Close every connection (errors are logged, not raised)."""
        for connection in self.connections.values():
            await close_quietly(connection)


def required_field(field: str, what: str) -> DomainError:
    """INVALID_ARGUMENT (REQUIRED_FIELD_MISSING) naming ``field``."""
    return invalid_argument(
        "REQUIRED_FIELD_MISSING",
        f"{field} is required: give {what}",
        [FieldViolation(field, "required")],
    )


async def close_quietly(connection: Connection) -> None:
    """``connection.close()``, logging rather than raising a failure."""
    try:
        await connection.close()
    except Exception as exc:
        log.warning("connection.close_failed", connection=connection.name, error=repr(exc))


# --------------------------------------------------------------------------- page tokens


# --------------------------------------------------------------------------- loading


def load_config(
    path: Path | None, default_root: Path, registry: ConnectorRegistry | None = None
) -> ConnectorConfig:
    """The connections of ``path`` (YAML), or the default ones at ``default_root``."""
    if path is None:
        return ConnectorConfig.local(default_root, registry)
    registry = registry if registry is not None else default_registry()
    source_path = Path(path).expanduser().absolute()
    parsed = read_config(source_path, registry)
    return materialize(parsed, registry, str(path), _source_of(source_path, parsed))


def read_config(path: Path, registry: ConnectorRegistry) -> ParsedConfig:
    """Read, parse and validate a config file (blocking: file I/O); nothing is created."""
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise config_error(str(path), f"cannot read it: {exc.strerror or exc}") from None
    except (yaml.YAMLError, UnicodeError) as exc:
        raise config_error(str(path), f"it is not valid YAML: {exc}") from None
    return parse_document(document, path.resolve().parent, str(path), registry)


def parse_config(
    document: Any,
    base_dir: Path,
    source: str = "config",
    registry: ConnectorRegistry | None = None,
) -> ConnectorConfig:
    """Connections from a parsed YAML document; relative paths resolve against ``base_dir``."""
    registry = registry if registry is not None else default_registry()
    parsed = parse_document(document, Path(base_dir), source, registry)
    return materialize(parsed, registry, source)


def parse_document(
    document: Any, base_dir: Path, source: str, registry: ConnectorRegistry
) -> ParsedConfig:
    """Validate a document and resolve its references; registers secrets; creates nothing."""
    if not isinstance(document, dict) or not isinstance(document.get("connections"), dict):
        raise config_error(source, "it must be a mapping with a 'connections' mapping")
    unknown_top = sorted(str(k) for k in set(document) - {"connections"})
    if unknown_top:
        raise config_error(source, f"unknown top-level keys: {', '.join(unknown_top)}")
    raw: dict[Any, Any] = document["connections"]
    if not raw:
        raise config_error(source, "'connections' is empty; configure at least one")
    files: list[Path] = []
    entries: dict[str, ConnectionEntry] = {}
    for name, entry in raw.items():
        parsed = parse_entry(name, entry, base_dir, registry, files, source)
        entries[parsed.name] = parsed
    return ParsedConfig(dict(sorted(entries.items())), base_dir, tuple(dict.fromkeys(files)))


def parse_entry(
    name: Any,
    entry: Any,
    base_dir: Path,
    registry: ConnectorRegistry,
    files: list[Path],
    source: str,
    *,
    allow_references: bool = True,
    register: Callable[[str], None] = register_secret,
) -> ConnectionEntry:
    """One connection entry validated against its type's options (see the module doc).

    Secret values are handed to ``register`` (by default registered for good).
    """
    if not isinstance(name, str) or not _NAME.match(name):
        raise config_error(
            source,
            f"connection name {name!r} must start with a letter and contain only "
            "letters, digits, '_' and '-'",
        )
    where = f"connection {name!r}"
    if not isinstance(entry, dict):
        raise config_error(source, f"{where} must be a mapping with a 'type' and its options")
    kind = entry.get("type")
    try:
        registered = registry.require(kind, where)
    except DomainError as exc:
        raise config_error(source, exc.message) from None
    description = entry.get("description", "")
    if not isinstance(description, str):
        raise config_error(source, f"{where}: 'description' must be a string")
    specs = {spec.name: spec for spec in registered.info.options}
    given = _fold_dotted({str(k): v for k, v in entry.items() if k not in ENTRY_KEYS}, specs)
    unknown = sorted(set(given) - set(specs))
    if unknown:
        allowed = ", ".join(sorted(specs)) or "none"
        raise config_error(
            source,
            f"{where} ({kind}) has unknown option(s) {', '.join(unknown)}; "
            f"allowed: {allowed} (plus type, description)",
        )
    missing = [s.name for s in registered.info.options if s.required and s.name not in given]
    if missing:
        raise config_error(source, f"{where} ({kind}) needs option(s) {', '.join(missing)}")
    options: dict[str, Any] = {}
    for option, value in given.items():
        spec = specs[option]
        context = f"{where} option {option!r}"
        if allow_references:
            value = _resolve(value, context, base_dir, files, source)
        elif _has_reference(value):
            raise config_error(
                source, f"{context}: ${{env:...}} and ${{file:...}} are only allowed in the file"
            )
        _register_secrets(spec, value, register)
        options[option] = _coerce(spec, value, context, source)
    fingerprint = _fingerprint(registered.name, description, options, base_dir)
    return ConnectionEntry(name, registered.name, description, options, fingerprint)


def _fold_dotted(given: dict[str, Any], specs: Mapping[str, OptionSpec]) -> dict[str, Any]:
    """``auth.token: x`` as ``auth: {token: x}`` for map options (inline options are flat)."""
    folded: dict[str, Any] = {}
    for key, value in given.items():
        head, dot, rest = key.partition(".")
        if dot and rest and key not in specs and getattr(specs.get(head), "type", "") == "map":
            target = folded.setdefault(head, {})
            if isinstance(target, dict):
                target[rest] = value
                continue
        folded[key] = value
    return folded


def materialize(
    parsed: ParsedConfig,
    registry: ConnectorRegistry,
    source: str,
    config_source: ConfigSource | None = None,
    reuse: ConnectorConfig | None = None,
) -> ConnectorConfig:
    """Create the connections of ``parsed``, reusing ``reuse``'s unchanged ones.

    On failure every connection created here is closed (in the background when a
    loop runs) and the error raised.
    """
    connections: dict[str, Connection] = {}
    created: list[Connection] = []
    try:
        for name, entry in parsed.entries.items():
            if reuse is not None and reuse.fingerprints.get(name) == entry.fingerprint:
                connections[name] = reuse.connections[name]
                continue
            connection = create_connection(
                registry.require(entry.type, name), entry, parsed.base_dir
            )
            created.append(connection)
            connections[name] = connection
    except DomainError as exc:
        _close_later(created)
        raise config_error(source, exc.message) from None
    return ConnectorConfig(
        connections,
        registry,
        base_dir=parsed.base_dir,
        fingerprints={n: e.fingerprint for n, e in parsed.entries.items()},
        source=config_source,
    )


def create_connection(
    registered: RegisteredType, entry: ConnectionEntry, base_dir: Path
) -> Connection:
    """``registered.create`` for ``entry``; any failure becomes CONFIG_INVALID naming it."""
    where = f"connection {entry.name!r} ({entry.type})"
    try:
        connection = registered.connector_type.create(entry.name, entry.options, base_dir)
    except DomainError as exc:
        raise invalid_argument("CONFIG_INVALID", f"{where}: {exc.message}") from None
    except Exception as exc:
        # A plugin bug must not take the service down with a traceback.
        log.error("connection.create_failed", connection=entry.name, error=repr(exc))
        raise invalid_argument("CONFIG_INVALID", f"{where}: cannot be created: {exc}") from None
    connection.description = connection.description or entry.description
    return connection


def config_error(source: str, problem: str) -> DomainError:
    """CONFIG_INVALID, with secrets masked (startup errors are printed as they are)."""
    return invalid_argument("CONFIG_INVALID", redact(f"connector config {source}: {problem}"))


def _source_of(path: Path, parsed: ParsedConfig) -> ConfigSource:
    return ConfigSource(path, (path, *parsed.files))


def _close_later(connections: Iterable[Connection]) -> None:
    pending = list(connections)
    if not pending:
        return
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return  # created outside a loop: nothing can be open yet

    async def close_all() -> None:
        for connection in pending:
            await close_quietly(connection)

    task = loop.create_task(close_all())
    _background.add(task)
    task.add_done_callback(_background.discard)


_background: set[asyncio.Task[None]] = set()


# --------------------------------------------------------------------------- values


def _resolve(value: Any, context: str, base_dir: Path, files: list[Path], source: str) -> Any:
    """``value`` with every ``${env:…}``/``${file:…}`` replaced (recursing into maps/lists)."""
    if isinstance(value, str):
        return _resolve_text(value, context, base_dir, files, source)
    if isinstance(value, dict):
        return {
            k: _resolve(v, f"{context[:-1]}.{k}'", base_dir, files, source)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [
            _resolve(v, f"{context[:-1]}[{i}]'", base_dir, files, source)
            for i, v in enumerate(value)
        ]
    return value


def _resolve_text(text: str, context: str, base_dir: Path, files: list[Path], source: str) -> str:
    if "${" not in text:
        return text

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$${":
            return "${"
        kind, arg = match["kind"], match["arg"].strip()
        if kind == "env":
            if arg not in os.environ:
                raise config_error(source, f"{context}: environment variable {arg} is not set")
            return os.environ[arg]
        if kind == "file":
            path = (base_dir / Path(arg).expanduser()).absolute()
            files.append(path)
            try:
                content = path.read_text(encoding="utf-8")
            except OSError as exc:
                problem = exc.strerror or type(exc).__name__
                message = f"{context}: cannot read file {path}: {problem}"
                raise config_error(source, message) from None
            except UnicodeError:
                raise config_error(source, f"{context}: file {path} is not UTF-8 text") from None
            return content.rstrip("\r\n")
        raise config_error(
            source,
            f"{context}: unknown reference ${{{kind}:...}}; use ${{env:NAME}} or ${{file:PATH}}",
        )

    return _REFERENCE.sub(replace, text)


def _has_reference(value: Any) -> bool:
    if isinstance(value, str):
        return any(m.group(0) != "$${" for m in _REFERENCE.finditer(value))
    if isinstance(value, dict):
        return any(_has_reference(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_reference(v) for v in value)
    return False


def _register_secrets(
    spec: OptionSpec, value: Any, register: Callable[[str], None], key: str | None = None
) -> None:
    """Hand the secret parts of an option value to ``register``."""
    if isinstance(value, dict):
        for k, v in value.items():
            _register_secrets(spec, v, register, str(k))
        return
    if isinstance(value, list):
        for v in value:
            _register_secrets(spec, v, register, key)
        return
    if value is None or isinstance(value, bool):
        return
    text = str(value)
    if key is None:
        secret = spec.secret
    else:
        descriptive = key.lower() in _DESCRIPTIVE_KEYS
        secret = bool(_SECRET_KEY.search(key)) or (spec.secret and not descriptive)
    if secret:
        register(text)
    if "://" in text:
        # A DSN or URL with an embedded password: its password is a secret whatever the option.
        with contextlib.suppress(ValueError):
            password = urlsplit(text).password
            if password:
                register(password)
                register(unquote(password))


def _coerce(spec: OptionSpec, value: Any, context: str, source: str) -> Any:
    """``value`` as the option's declared type; CONFIG_INVALID when it cannot be."""

    def bad(expected: str) -> DomainError:
        shown = "" if spec.secret else f", got {value!r}"
        return config_error(source, f"{context} must be {expected}{shown}")

    kind = spec.type
    if kind == "string":
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, str | int | float):
            return str(value)
        raise bad("a string")
    if kind == "integer":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and re.fullmatch(r"\s*[-+]?\d+\s*", value):
            return int(value)
        raise bad("an integer")
    if kind == "number":
        if isinstance(value, int | float) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                return float(value)
        raise bad("a number")
    if kind == "boolean":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise bad("a boolean (true or false)")
    if kind == "list":
        if isinstance(value, str):
            value = _parse_inline(value, list)
        if isinstance(value, list):
            return value
        raise bad("a list")
    if kind == "map":
        if isinstance(value, str):
            value = _parse_inline(value, dict)
        if isinstance(value, dict):
            return value
        raise bad("a map")
    return value  # a type this loader does not know: the connector checks it


def _parse_inline(text: str, expected: type) -> Any:
    """A list or map given as text (inline connections): YAML/JSON, or comma-separated."""
    try:
        parsed = yaml.safe_load(text)
    except yaml.YAMLError:
        parsed = None
    if isinstance(parsed, expected):
        return parsed
    if expected is list:
        return [part.strip() for part in text.split(",") if part.strip()]
    return text


def _fingerprint(type_name: str, description: str, options: Mapping[str, Any], base: Path) -> str:
    """A digest of everything that makes a connection; equal digests mean reusable."""
    payload = json.dumps(
        {"type": type_name, "description": description, "options": options, "base": str(base)},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(payload.encode()).hexdigest()


# --------------------------------------------------------------------------- live config


def file_signature(paths: Iterable[Path]) -> tuple[tuple[str, int, int, int] | None, ...]:
    """What changes when any of ``paths`` is edited, replaced or removed (blocking)."""
    signature: list[tuple[str, int, int, int] | None] = []
    for path in paths:
        try:
            st = path.stat()
        except OSError:
            signature.append(None)
            continue
        signature.append((str(path), st.st_mtime_ns, st.st_size, st.st_ino))
    return tuple(signature)


@dataclass
class _Usage:
    connection: Connection
    users: int = 0
    retired: bool = False


class LiveConfig:
    """The running service's config: swapped on reload, connections leased per call.

    Every RPC that uses a connection holds a lease on it for as long as it runs
    (a Read for its whole stream). A reload swaps the config at once; connections
    that changed or disappeared are retired and closed when their last lease ends.
    """

    def __init__(self, config: ConnectorConfig) -> None:
        self.config = config
        #: Reload outcomes so far ("ok", "failed"), for tests and diagnostics.
        self.reloads: Counter[str] = Counter()
        self._usage: dict[int, _Usage] = {}  # by id(connection): plugins may define __eq__
        self._signature: tuple[Any, ...] = ()
        self._lock: asyncio.Lock | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def current(self) -> ConnectorConfig:
        """The config new calls see."""
        return self.config

    @contextlib.asynccontextmanager
    async def lease(self, pick: Callable[[ConnectorConfig], T]) -> AsyncIterator[T]:
        """``pick(current config)``, with the connection(s) it returns kept open until exit.

        ``pick`` returns a Connection or a tuple whose first item is one.
        """
        picked = pick(self.config)
        connection = picked[0] if isinstance(picked, tuple) else picked
        usage = self._usage.setdefault(id(connection), _Usage(connection))
        usage.users += 1
        try:
            yield picked
        finally:
            usage.users -= 1
            if usage.users == 0:
                # close() may have dropped the table while this call still ran.
                self._usage.pop(id(connection), None)
                if usage.retired:
                    self._spawn(close_quietly(connection))

    def in_use(self, connection: Connection) -> int:
        """How many calls hold ``connection`` right now."""
        usage = self._usage.get(id(connection))
        return usage.users if usage is not None else 0

    async def reload(self, trigger: str = "request") -> bool:
        """Re-read the config file; on success swap it in. False (and logged) on failure."""
        source = self.config.source
        if source is None:
            log.info("config.reload_skipped", trigger=trigger, why="no config file")
            return False
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            old = self.config
            # Taken before reading: an edit landing meanwhile is seen by the next check.
            self._signature = await asyncio.to_thread(file_signature, source.files)
            try:
                parsed = await asyncio.to_thread(read_config, source.path, old.registry)
                new_source = _source_of(source.path, parsed)
                # Created on the loop: a connector may bind loop-affine objects in create().
                new = materialize(parsed, old.registry, str(source.path), new_source, old)
            except DomainError as exc:
                self.reloads["failed"] += 1
                log.error(
                    "config.reload_failed",
                    trigger=trigger,
                    path=str(source.path),
                    error=exc.message,
                    keeping=list(old.connections),
                )
                return False
            if new_source.files != source.files:  # ${file:} references came or went
                self._signature = await asyncio.to_thread(file_signature, new_source.files)
            self.config = new
            kept = {id(c) for c in new.connections.values()}
            retired = [c for c in old.connections.values() if id(c) not in kept]
            for connection in retired:
                self._retire(connection)
            self.reloads["ok"] += 1
            log.info(
                "config.reloaded",
                trigger=trigger,
                path=str(source.path),
                connections=list(new.connections),
                added=sorted(set(new.connections) - set(old.connections)),
                removed=sorted(set(old.connections) - set(new.connections)),
                changed=sorted(
                    n
                    for n in set(new.connections) & set(old.connections)
                    if new.fingerprints.get(n) != old.fingerprints.get(n)
                ),
            )
            return True

    def request_reload(self, trigger: str = "SIGHUP") -> None:
        """Schedule a reload from a signal handler or callback."""
        self._spawn(self.reload(trigger))

    def start_watching(self, interval: float = RELOAD_INTERVAL_SECONDS) -> None:
        """Reload whenever the config file (or a file it references) changes."""
        if self.config.source is None or self._watcher is not None:
            return
        self._watcher = asyncio.get_running_loop().create_task(self._watch(interval))

    async def _watch(self, interval: float) -> None:
        if not self._signature and self.config.source is not None:
            self._signature = await asyncio.to_thread(file_signature, self.config.source.files)
        while True:
            await asyncio.sleep(interval)
            source = self.config.source
            if source is None:
                continue
            try:
                signature = await asyncio.to_thread(file_signature, source.files)
                if signature != self._signature:
                    await self.reload("file changed")
            except Exception as exc:  # the watcher must survive anything
                log.error("config.watch_failed", error=repr(exc))

    async def close(self) -> None:
        """Stop watching; close every connection, current or retired (on shutdown)."""
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
            self._watcher = None
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        pending = {id(c): c for c in self.config.connections.values()}
        pending.update({key: usage.connection for key, usage in self._usage.items()})
        self._usage.clear()
        for connection in pending.values():
            await close_quietly(connection)

    def _retire(self, connection: Connection) -> None:
        usage = self._usage.get(id(connection))
        if usage is None:
            self._spawn(close_quietly(connection))
        else:
            usage.retired = True
            log.info("connection.retiring", connection=connection.name, in_use=usage.users)

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
