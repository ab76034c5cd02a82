"""Which connector types this service knows: the built-ins plus installed plugins.

A plugin is any installed Python distribution that declares an entry point in the
group ``datadog_platform.connectors`` whose object is a
:class:`~datadog_platform.connector.base.ConnectorType` instance::

    [project.entry-points."datadog_platform.connectors"]
    sequence = "datadog_connector_example:SEQUENCE_CONNECTOR_TYPE"

A plugin that fails to import, is not a ``ConnectorType``, or claims the name of a
built-in (or of an earlier plugin) is logged and skipped: it never stops the
service and never shadows a built-in. See ``docs/connectors.md`` and
``examples/plugins/datadog-connector-example``.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points

from datadog_platform.connector.base import ConnectorType, TypeInfo
from datadog_platform.core.errors import invalid_argument
from datadog_platform.core.logging import get_logger

ENTRY_POINT_GROUP = "datadog_platform.connectors"

#: Built-in types: type name -> "module:attribute" of its ConnectorType instance.
BUILTIN_TYPES: Mapping[str, str] = {
    "artifact": "datadog_platform.connector.files:ARTIFACT_CONNECTOR_TYPE",
    "file": "datadog_platform.connector.files:FILE_CONNECTOR_TYPE",
    "mysql": "datadog_platform.connector.mysql:MYSQL_CONNECTOR_TYPE",
    "postgres": "datadog_platform.connector.postgres:POSTGRES_CONNECTOR_TYPE",
    "rest": "datadog_platform.connector.rest:REST_CONNECTOR_TYPE",
}

#: The SourceSpec/SinkSpec oneof fields a type may serve.
SPEC_KINDS = frozenset({"file", "database", "rest", "artifact"})

log = get_logger(__name__)


@dataclass(frozen=True)
class RegisteredType:
    """A usable connector type and its description (``plugin`` filled in for plugins)."""

    connector_type: ConnectorType
    info: TypeInfo

    @property
    def name(self) -> str:
        """The type name used in configs."""
        return self.info.type

    @property
    def spec_kind(self) -> str:
        """The SourceSpec/SinkSpec oneof field it serves."""
        return self.connector_type.spec_kind


class ConnectorRegistry:
    """Connector types by name; built once at startup."""

    def __init__(self, types: Iterable[RegisteredType] = ()) -> None:
        self._types: dict[str, RegisteredType] = {}
        for registered in types:
            self._types.setdefault(registered.name, registered)

    @classmethod
    def of(cls, *connector_types: ConnectorType) -> ConnectorRegistry:
        """A registry of exactly these types (tests, embedding)."""
        return cls(RegisteredType(t, t.info) for t in connector_types)

    def with_types(self, *connector_types: ConnectorType) -> ConnectorRegistry:
        """This registry plus ``connector_types`` (which do not replace existing names)."""
        extra = [RegisteredType(t, t.info) for t in connector_types]
        return ConnectorRegistry([*self._types.values(), *extra])

    def __contains__(self, name: object) -> bool:
        return name in self._types

    @property
    def names(self) -> list[str]:
        """Every type name, sorted."""
        return sorted(self._types)

    def get(self, name: str) -> RegisteredType | None:
        """The type called ``name``, if known."""
        return self._types.get(name)

    def require(self, name: str, where: str) -> RegisteredType:
        """The type called ``name``; CONFIG_INVALID (naming ``where``) when unknown."""
        registered = self._types.get(name) if isinstance(name, str) else None
        if registered is None:
            raise invalid_argument(
                "CONFIG_INVALID",
                f"{where} has unknown type {name!r}; known types: {', '.join(self.names)}",
            )
        return registered

    def infos(self) -> list[TypeInfo]:
        """Every type's description, sorted by type name."""
        return [self._types[n].info for n in self.names]


def load_registry(include_plugins: bool = True) -> ConnectorRegistry:
    """Every built-in type (all must import), then every plugin that loads and is valid."""
    types: list[RegisteredType] = []
    for name, target in BUILTIN_TYPES.items():
        # A built-in that cannot import is a packaging bug: fail at startup rather
        # than serve without it (only plugins are allowed to be broken).
        types.append(_check(_import_object(target), expected_name=name, plugin=""))
    registry = ConnectorRegistry(types)
    if include_plugins:
        registry = ConnectorRegistry([*types, *_load_plugins(set(registry.names))])
    return registry


_default: ConnectorRegistry | None = None


def default_registry() -> ConnectorRegistry:
    """The process-wide registry (built-ins + installed plugins), loaded on first use."""
    global _default
    if _default is None:
        _default = load_registry()
    return _default


def options_markdown(registry: ConnectorRegistry) -> str:
    """The connector-type reference of ``docs/connectors.md``: one section and table per type."""
    lines: list[str] = []
    for info in registry.infos():
        kind = registry.get(info.type).spec_kind  # type: ignore[union-attr]
        capabilities = ", ".join(sorted(c.value for c in info.capabilities))
        origin = f" Plugin `{info.plugin}`." if info.plugin else ""
        lines += [
            f"### `{info.type}`",
            "",
            f"{info.description.rstrip('.')}. Serves `{kind}` sources and sinks. "
            f"Capabilities: {capabilities}.{origin}",
            "",
            "| option | type | required | default | secret | description |",
            "|---|---|---|---|---|---|",
        ]
        for option in info.options:
            default = f"`{option.default}`" if option.default else ""
            description = option.description.replace("|", "\\|")
            lines.append(
                f"| `{option.name}` | {option.type} | {'yes' if option.required else ''} "
                f"| {default} | {'yes' if option.secret else ''} | {description} |"
            )
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    """Print the connector-type reference (``python -m datadog_platform.connector.registry``)."""
    print(options_markdown(load_registry(include_plugins=False)), end="")


def _load_plugins(taken: set[str]) -> list[RegisteredType]:
    plugins: list[RegisteredType] = []
    for entry_point in sorted(
        entry_points(group=ENTRY_POINT_GROUP), key=lambda e: (e.name, e.value)
    ):
        distribution = _distribution_name(entry_point)
        try:
            registered = _check(entry_point.load(), expected_name=None, plugin=distribution)
        except Exception as exc:
            log.error(
                "connector.plugin_skipped",
                entry_point=entry_point.name,
                plugin=distribution,
                error=repr(exc),
            )
            continue
        if registered.name in taken:
            log.error(
                "connector.plugin_skipped",
                entry_point=entry_point.name,
                plugin=distribution,
                error=f"type {registered.name!r} is already provided; a plugin cannot replace it",
            )
            continue
        taken.add(registered.name)
        plugins.append(registered)
        log.info("connector.plugin_loaded", type=registered.name, plugin=distribution)
    return plugins


def _distribution_name(entry_point: EntryPoint) -> str:
    dist = getattr(entry_point, "dist", None)
    name = getattr(dist, "name", None) if dist is not None else None
    return str(name) if name else entry_point.value.split(":", 1)[0]


def _import_object(target: str) -> object:
    module_name, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module_name), attribute)


def _check(candidate: object, expected_name: str | None, plugin: str) -> RegisteredType:
    """``candidate`` as a registered type, or TypeError saying what is wrong with it."""
    if not isinstance(candidate, ConnectorType):
        raise TypeError(f"{type(candidate).__name__} is not a ConnectorType instance")
    info = getattr(candidate, "info", None)
    if not isinstance(info, TypeInfo) or not info.type:
        raise TypeError("its 'info' is not a TypeInfo with a type name")
    if getattr(candidate, "spec_kind", None) not in SPEC_KINDS:
        raise TypeError(f"spec_kind must be one of {', '.join(sorted(SPEC_KINDS))}")
    if expected_name is not None and info.type != expected_name:
        raise TypeError(f"its type is {info.type!r}, expected {expected_name!r}")
    if plugin:
        info = dataclasses.replace(info, plugin=plugin)
    return RegisteredType(candidate, info)


__all__ = [
    "BUILTIN_TYPES",
    "ENTRY_POINT_GROUP",
    "ConnectorRegistry",
    "RegisteredType",
    "default_registry",
    "load_registry",
    "options_markdown",
]


if __name__ == "__main__":
    main()
