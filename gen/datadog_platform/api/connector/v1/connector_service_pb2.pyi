from datadog_platform.api.common.v1 import arrow_pb2 as _arrow_pb2
from datadog_platform.api.common.v1 import connection_pb2 as _connection_pb2
from datadog_platform.api.common.v1 import predicate_pb2 as _predicate_pb2
from datadog_platform.api.common.v1 import step_pb2 as _step_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Capability(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CAPABILITY_UNSPECIFIED: _ClassVar[Capability]
    CAPABILITY_READ: _ClassVar[Capability]
    CAPABILITY_WRITE: _ClassVar[Capability]
    CAPABILITY_DESCRIBE: _ClassVar[Capability]
    CAPABILITY_PROJECTION_PUSHDOWN: _ClassVar[Capability]
    CAPABILITY_PREDICATE_PUSHDOWN: _ClassVar[Capability]
    CAPABILITY_SPLITS: _ClassVar[Capability]
    CAPABILITY_UPSERT: _ClassVar[Capability]
CAPABILITY_UNSPECIFIED: Capability
CAPABILITY_READ: Capability
CAPABILITY_WRITE: Capability
CAPABILITY_DESCRIBE: Capability
CAPABILITY_PROJECTION_PUSHDOWN: Capability
CAPABILITY_PREDICATE_PUSHDOWN: Capability
CAPABILITY_SPLITS: Capability
CAPABILITY_UPSERT: Capability

class ListConnectionsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListConnectionsResponse(_message.Message):
    __slots__ = ("connections", "next_page_token")
    CONNECTIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    connections: _containers.RepeatedCompositeFieldContainer[_connection_pb2.Connection]
    next_page_token: str
    def __init__(self, connections: _Optional[_Iterable[_Union[_connection_pb2.Connection, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ConnectorOption(_message.Message):
    __slots__ = ("name", "type", "required", "default_value", "description", "secret")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    REQUIRED_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_VALUE_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    SECRET_FIELD_NUMBER: _ClassVar[int]
    name: str
    type: str
    required: bool
    default_value: str
    description: str
    secret: bool
    def __init__(self, name: _Optional[str] = ..., type: _Optional[str] = ..., required: _Optional[bool] = ..., default_value: _Optional[str] = ..., description: _Optional[str] = ..., secret: _Optional[bool] = ...) -> None: ...

class ConnectorType(_message.Message):
    __slots__ = ("type", "description", "capabilities", "options", "plugin")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    PLUGIN_FIELD_NUMBER: _ClassVar[int]
    type: str
    description: str
    capabilities: _containers.RepeatedScalarFieldContainer[Capability]
    options: _containers.RepeatedCompositeFieldContainer[ConnectorOption]
    plugin: str
    def __init__(self, type: _Optional[str] = ..., description: _Optional[str] = ..., capabilities: _Optional[_Iterable[_Union[Capability, str]]] = ..., options: _Optional[_Iterable[_Union[ConnectorOption, _Mapping]]] = ..., plugin: _Optional[str] = ...) -> None: ...

class ListConnectorTypesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListConnectorTypesResponse(_message.Message):
    __slots__ = ("types",)
    TYPES_FIELD_NUMBER: _ClassVar[int]
    types: _containers.RepeatedCompositeFieldContainer[ConnectorType]
    def __init__(self, types: _Optional[_Iterable[_Union[ConnectorType, _Mapping]]] = ...) -> None: ...

class InlineConnection(_message.Message):
    __slots__ = ("type", "options")
    class OptionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    TYPE_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    type: str
    options: _containers.ScalarMap[str, str]
    def __init__(self, type: _Optional[str] = ..., options: _Optional[_Mapping[str, str]] = ...) -> None: ...

class TestConnectionRequest(_message.Message):
    __slots__ = ("name", "inline")
    NAME_FIELD_NUMBER: _ClassVar[int]
    INLINE_FIELD_NUMBER: _ClassVar[int]
    name: str
    inline: InlineConnection
    def __init__(self, name: _Optional[str] = ..., inline: _Optional[_Union[InlineConnection, _Mapping]] = ...) -> None: ...

class TestConnectionResponse(_message.Message):
    __slots__ = ("ok", "message", "reason", "latency_ms")
    OK_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    ok: bool
    message: str
    reason: str
    latency_ms: float
    def __init__(self, ok: _Optional[bool] = ..., message: _Optional[str] = ..., reason: _Optional[str] = ..., latency_ms: _Optional[float] = ...) -> None: ...

class DescribeSourceRequest(_message.Message):
    __slots__ = ("source",)
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    source: _step_pb2.SourceSpec
    def __init__(self, source: _Optional[_Union[_step_pb2.SourceSpec, _Mapping]] = ...) -> None: ...

class DescribeSourceResponse(_message.Message):
    __slots__ = ("schema", "estimated_rows")
    SCHEMA_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_ROWS_FIELD_NUMBER: _ClassVar[int]
    schema: _arrow_pb2.ArrowSchema
    estimated_rows: int
    def __init__(self, schema: _Optional[_Union[_arrow_pb2.ArrowSchema, _Mapping]] = ..., estimated_rows: _Optional[int] = ...) -> None: ...

class PlanReadRequest(_message.Message):
    __slots__ = ("source", "max_splits", "columns", "predicate", "accept_parquet")
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    MAX_SPLITS_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    PREDICATE_FIELD_NUMBER: _ClassVar[int]
    ACCEPT_PARQUET_FIELD_NUMBER: _ClassVar[int]
    source: _step_pb2.SourceSpec
    max_splits: int
    columns: _containers.RepeatedScalarFieldContainer[str]
    predicate: _predicate_pb2.Predicate
    accept_parquet: bool
    def __init__(self, source: _Optional[_Union[_step_pb2.SourceSpec, _Mapping]] = ..., max_splits: _Optional[int] = ..., columns: _Optional[_Iterable[str]] = ..., predicate: _Optional[_Union[_predicate_pb2.Predicate, _Mapping]] = ..., accept_parquet: _Optional[bool] = ...) -> None: ...

class ReadTicket(_message.Message):
    __slots__ = ("ticket", "description", "estimated_rows")
    TICKET_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_ROWS_FIELD_NUMBER: _ClassVar[int]
    ticket: bytes
    description: str
    estimated_rows: int
    def __init__(self, ticket: _Optional[bytes] = ..., description: _Optional[str] = ..., estimated_rows: _Optional[int] = ...) -> None: ...

class PlanReadResponse(_message.Message):
    __slots__ = ("schema", "tickets")
    SCHEMA_FIELD_NUMBER: _ClassVar[int]
    TICKETS_FIELD_NUMBER: _ClassVar[int]
    schema: _arrow_pb2.ArrowSchema
    tickets: _containers.RepeatedCompositeFieldContainer[ReadTicket]
    def __init__(self, schema: _Optional[_Union[_arrow_pb2.ArrowSchema, _Mapping]] = ..., tickets: _Optional[_Iterable[_Union[ReadTicket, _Mapping]]] = ...) -> None: ...

class ReadRequest(_message.Message):
    __slots__ = ("source", "ticket", "columns", "predicate", "accept_parquet")
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    TICKET_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    PREDICATE_FIELD_NUMBER: _ClassVar[int]
    ACCEPT_PARQUET_FIELD_NUMBER: _ClassVar[int]
    source: _step_pb2.SourceSpec
    ticket: bytes
    columns: _containers.RepeatedScalarFieldContainer[str]
    predicate: _predicate_pb2.Predicate
    accept_parquet: bool
    def __init__(self, source: _Optional[_Union[_step_pb2.SourceSpec, _Mapping]] = ..., ticket: _Optional[bytes] = ..., columns: _Optional[_Iterable[str]] = ..., predicate: _Optional[_Union[_predicate_pb2.Predicate, _Mapping]] = ..., accept_parquet: _Optional[bool] = ...) -> None: ...

class ReadResponse(_message.Message):
    __slots__ = ("schema", "record_batch", "complete", "parquet_file", "parquet_row_group")
    SCHEMA_FIELD_NUMBER: _ClassVar[int]
    RECORD_BATCH_FIELD_NUMBER: _ClassVar[int]
    COMPLETE_FIELD_NUMBER: _ClassVar[int]
    PARQUET_FILE_FIELD_NUMBER: _ClassVar[int]
    PARQUET_ROW_GROUP_FIELD_NUMBER: _ClassVar[int]
    schema: _arrow_pb2.ArrowSchema
    record_batch: _arrow_pb2.ArrowRecordBatch
    complete: _arrow_pb2.StreamComplete
    parquet_file: _arrow_pb2.ParquetFile
    parquet_row_group: _arrow_pb2.ParquetRowGroup
    def __init__(self, schema: _Optional[_Union[_arrow_pb2.ArrowSchema, _Mapping]] = ..., record_batch: _Optional[_Union[_arrow_pb2.ArrowRecordBatch, _Mapping]] = ..., complete: _Optional[_Union[_arrow_pb2.StreamComplete, _Mapping]] = ..., parquet_file: _Optional[_Union[_arrow_pb2.ParquetFile, _Mapping]] = ..., parquet_row_group: _Optional[_Union[_arrow_pb2.ParquetRowGroup, _Mapping]] = ...) -> None: ...

class WriteHeader(_message.Message):
    __slots__ = ("sink", "idempotency_key")
    SINK_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    sink: _step_pb2.SinkSpec
    idempotency_key: str
    def __init__(self, sink: _Optional[_Union[_step_pb2.SinkSpec, _Mapping]] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class WriteRequest(_message.Message):
    __slots__ = ("header", "schema", "record_batch", "complete")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_FIELD_NUMBER: _ClassVar[int]
    RECORD_BATCH_FIELD_NUMBER: _ClassVar[int]
    COMPLETE_FIELD_NUMBER: _ClassVar[int]
    header: WriteHeader
    schema: _arrow_pb2.ArrowSchema
    record_batch: _arrow_pb2.ArrowRecordBatch
    complete: _arrow_pb2.StreamComplete
    def __init__(self, header: _Optional[_Union[WriteHeader, _Mapping]] = ..., schema: _Optional[_Union[_arrow_pb2.ArrowSchema, _Mapping]] = ..., record_batch: _Optional[_Union[_arrow_pb2.ArrowRecordBatch, _Mapping]] = ..., complete: _Optional[_Union[_arrow_pb2.StreamComplete, _Mapping]] = ...) -> None: ...

class WriteResponse(_message.Message):
    __slots__ = ("rows_written", "location", "replayed")
    ROWS_WRITTEN_FIELD_NUMBER: _ClassVar[int]
    LOCATION_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    rows_written: int
    location: str
    replayed: bool
    def __init__(self, rows_written: _Optional[int] = ..., location: _Optional[str] = ..., replayed: _Optional[bool] = ...) -> None: ...
