from datadog_platform.api.common.v1 import arrow_pb2 as _arrow_pb2
from datadog_platform.api.common.v1 import connection_pb2 as _connection_pb2
from datadog_platform.api.common.v1 import step_pb2 as _step_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

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

class ReadRequest(_message.Message):
    __slots__ = ("source",)
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    source: _step_pb2.SourceSpec
    def __init__(self, source: _Optional[_Union[_step_pb2.SourceSpec, _Mapping]] = ...) -> None: ...

class ReadResponse(_message.Message):
    __slots__ = ("schema", "record_batch", "complete")
    SCHEMA_FIELD_NUMBER: _ClassVar[int]
    RECORD_BATCH_FIELD_NUMBER: _ClassVar[int]
    COMPLETE_FIELD_NUMBER: _ClassVar[int]
    schema: _arrow_pb2.ArrowSchema
    record_batch: _arrow_pb2.ArrowRecordBatch
    complete: _arrow_pb2.StreamComplete
    def __init__(self, schema: _Optional[_Union[_arrow_pb2.ArrowSchema, _Mapping]] = ..., record_batch: _Optional[_Union[_arrow_pb2.ArrowRecordBatch, _Mapping]] = ..., complete: _Optional[_Union[_arrow_pb2.StreamComplete, _Mapping]] = ...) -> None: ...

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
    __slots__ = ("rows_written", "location")
    ROWS_WRITTEN_FIELD_NUMBER: _ClassVar[int]
    LOCATION_FIELD_NUMBER: _ClassVar[int]
    rows_written: int
    location: str
    def __init__(self, rows_written: _Optional[int] = ..., location: _Optional[str] = ...) -> None: ...
