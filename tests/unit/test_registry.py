"""Connector type registry: the five built-ins and plugins from entry points."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from plugin_fakes import make_plugin_site

from datadog_platform.connector.base import Capability, ConnectorType
from datadog_platform.connector.registry import (
    BUILTIN_TYPES,
    ConnectorRegistry,
    load_registry,
    options_markdown,
)
from datadog_platform.core.errors import DomainError

BUILTINS = {
    "artifact": "artifact",
    "file": "file",
    "mysql": "database",
    "postgres": "database",
    "rest": "rest",
}


@pytest.fixture
def plugin_site(tmp_path: Path) -> Iterator[Path]:
    """Fake installed plugins on sys.path for the duration of a test."""
    site = make_plugin_site(tmp_path)
    sys.path.insert(0, str(site))
    try:
        yield site
    finally:
        sys.path.remove(str(site))
        for module in ("datadog_connector_example", "fake_leaky_plugins", "fake_broken_plugin"):
            sys.modules.pop(module, None)


def test_all_five_builtins_are_registered_with_their_spec_kinds() -> None:
    registry = load_registry(include_plugins=False)
    assert set(BUILTIN_TYPES) == set(BUILTINS)
    assert registry.names == sorted(BUILTINS)
    for name, kind in BUILTINS.items():
        registered = registry.get(name)
        assert registered is not None
        assert isinstance(registered.connector_type, ConnectorType)
        assert (registered.spec_kind, registered.info.type, registered.info.plugin) == (
            kind,
            name,
            "",
        )
        assert registered.info.description
        assert Capability.READ in registered.info.capabilities
        for option in registered.info.options:
            assert option.type in {"string", "integer", "boolean", "number", "list", "map"}
            assert option.description, f"{name}.{option.name} is undocumented"


def test_plugins_load_broken_ones_are_skipped_builtins_never_shadowed(
    plugin_site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    registry = load_registry()
    assert "sequence" in registry.names
    assert "leaky" in registry.names
    sequence = registry.get("sequence")
    assert sequence is not None
    assert sequence.info.plugin == "datadog-connector-example"
    assert sequence.spec_kind == "database"
    assert registry.get("leaky").info.plugin == "fake-bad-plugins"  # type: ignore[union-attr]
    # The shadowing plugin did not replace the built-in.
    rest = registry.get("rest")
    assert rest is not None
    assert rest.info.plugin == ""
    assert type(rest.connector_type).__module__ == "datadog_platform.connector.rest"
    for skipped in ("broken", "missing", "not_a_type", "pigeon"):
        assert skipped not in registry.names
    assert registry.names == sorted([*BUILTINS, "leaky", "memory", "sequence"])


def test_without_plugins_only_builtins(plugin_site: Path) -> None:
    assert "sequence" not in load_registry(include_plugins=False).names


def test_registry_lookup_errors_list_known_types() -> None:
    registry = load_registry(include_plugins=False)
    with pytest.raises(DomainError) as info:
        registry.require("s3", "connection 'x'")
    assert info.value.reason == "CONFIG_INVALID"
    assert "known types: artifact, file, mysql, postgres, rest" in info.value.message


def test_explicit_registry_keeps_the_first_of_a_name(plugin_site: Path) -> None:
    from datadog_connector_example import SEQUENCE_CONNECTOR_TYPE  # type: ignore[import-not-found]

    registry = ConnectorRegistry.of(SEQUENCE_CONNECTOR_TYPE)
    again = registry.with_types(SEQUENCE_CONNECTOR_TYPE)
    assert again.names == ["sequence"]
    assert [i.type for i in again.infos()] == ["sequence"]


def test_docs_list_every_type_and_option_as_list_connector_types_does() -> None:
    docs = (Path(__file__).resolve().parents[2] / "docs" / "connectors.md").read_text()
    begin = docs.index("<!-- BEGIN connector types")
    section = docs[docs.index("\n", begin) + 1 : docs.index("<!-- END connector types -->")]
    generated = options_markdown(load_registry(include_plugins=False))
    assert section.strip() == generated.strip(), (
        "docs/connectors.md is out of date: run `make docs` (scripts/gen-docs)"
    )
