"""The shapes shared by every transform kind: its description and its compile context."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa


@dataclass(frozen=True)
class SqlContext:
    """What a SQL transform compiles against.

    ``inputs`` are the already-quoted relation names of the step's inputs, in the
    order of ``Step.inputs``; ``schemas`` their Arrow schemas. ``spec`` is the typed
    message of the kind (``TransformSpec.join``...).
    """

    step: str
    spec: Any
    inputs: tuple[str, ...]
    schemas: tuple[pa.Schema, ...]


@dataclass(frozen=True)
class Param:
    """One parameter of a transform: a field of its message."""

    name: str
    type: str
    description: str
    required: bool


# compile_sql(ctx) -> a SELECT over ctx.inputs; make_operator(step, spec, schema) -> BatchOperator.
CompileSql = Callable[[SqlContext], str]
MakeOperator = Callable[[str, Any, pa.Schema], Any]


@dataclass(frozen=True)
class TransformKind:
    """One transform of the catalogue; exactly one of compile_sql and make_operator is set."""

    name: str
    description: str
    parameters: tuple[Param, ...]
    min_inputs: int
    # 0: no upper bound.
    max_inputs: int
    # True: evaluated batch by batch in bounded memory; False: blocking (may spill).
    streaming: bool
    compile_sql: CompileSql | None
    make_operator: MakeOperator | None
    # A YAML step using it, for the reference documentation.
    example: str = ""
