import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FileFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FILE_FORMAT_UNSPECIFIED: _ClassVar[FileFormat]
    FILE_FORMAT_CSV: _ClassVar[FileFormat]
    FILE_FORMAT_PARQUET: _ClassVar[FileFormat]
    FILE_FORMAT_JSON: _ClassVar[FileFormat]
    FILE_FORMAT_NDJSON: _ClassVar[FileFormat]

class FileCompression(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FILE_COMPRESSION_UNSPECIFIED: _ClassVar[FileCompression]
    FILE_COMPRESSION_NONE: _ClassVar[FileCompression]
    FILE_COMPRESSION_GZIP: _ClassVar[FileCompression]
    FILE_COMPRESSION_ZSTD: _ClassVar[FileCompression]
    FILE_COMPRESSION_SNAPPY: _ClassVar[FileCompression]

class HttpMethod(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    HTTP_METHOD_UNSPECIFIED: _ClassVar[HttpMethod]
    HTTP_METHOD_GET: _ClassVar[HttpMethod]
    HTTP_METHOD_POST: _ClassVar[HttpMethod]
    HTTP_METHOD_PUT: _ClassVar[HttpMethod]
    HTTP_METHOD_DELETE: _ClassVar[HttpMethod]

class WriteMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    WRITE_MODE_UNSPECIFIED: _ClassVar[WriteMode]
    WRITE_MODE_OVERWRITE: _ClassVar[WriteMode]
    WRITE_MODE_APPEND: _ClassVar[WriteMode]
    WRITE_MODE_UPSERT: _ClassVar[WriteMode]
FILE_FORMAT_UNSPECIFIED: FileFormat
FILE_FORMAT_CSV: FileFormat
FILE_FORMAT_PARQUET: FileFormat
FILE_FORMAT_JSON: FileFormat
FILE_FORMAT_NDJSON: FileFormat
FILE_COMPRESSION_UNSPECIFIED: FileCompression
FILE_COMPRESSION_NONE: FileCompression
FILE_COMPRESSION_GZIP: FileCompression
FILE_COMPRESSION_ZSTD: FileCompression
FILE_COMPRESSION_SNAPPY: FileCompression
HTTP_METHOD_UNSPECIFIED: HttpMethod
HTTP_METHOD_GET: HttpMethod
HTTP_METHOD_POST: HttpMethod
HTTP_METHOD_PUT: HttpMethod
HTTP_METHOD_DELETE: HttpMethod
WRITE_MODE_UNSPECIFIED: WriteMode
WRITE_MODE_OVERWRITE: WriteMode
WRITE_MODE_APPEND: WriteMode
WRITE_MODE_UPSERT: WriteMode

class FileSource(_message.Message):
    __slots__ = ("connection", "path", "format")
    CONNECTION_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    connection: str
    path: str
    format: FileFormat
    def __init__(self, connection: _Optional[str] = ..., path: _Optional[str] = ..., format: _Optional[_Union[FileFormat, str]] = ...) -> None: ...

class DatabaseSource(_message.Message):
    __slots__ = ("connection", "table", "query")
    CONNECTION_FIELD_NUMBER: _ClassVar[int]
    TABLE_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    connection: str
    table: str
    query: str
    def __init__(self, connection: _Optional[str] = ..., table: _Optional[str] = ..., query: _Optional[str] = ...) -> None: ...

class PageNumberPagination(_message.Message):
    __slots__ = ("page_param", "first_page", "size_param", "page_size")
    PAGE_PARAM_FIELD_NUMBER: _ClassVar[int]
    FIRST_PAGE_FIELD_NUMBER: _ClassVar[int]
    SIZE_PARAM_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    page_param: str
    first_page: int
    size_param: str
    page_size: int
    def __init__(self, page_param: _Optional[str] = ..., first_page: _Optional[int] = ..., size_param: _Optional[str] = ..., page_size: _Optional[int] = ...) -> None: ...

class OffsetPagination(_message.Message):
    __slots__ = ("offset_param", "limit_param", "limit")
    OFFSET_PARAM_FIELD_NUMBER: _ClassVar[int]
    LIMIT_PARAM_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    offset_param: str
    limit_param: str
    limit: int
    def __init__(self, offset_param: _Optional[str] = ..., limit_param: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class CursorPagination(_message.Message):
    __slots__ = ("cursor_param", "cursor_path")
    CURSOR_PARAM_FIELD_NUMBER: _ClassVar[int]
    CURSOR_PATH_FIELD_NUMBER: _ClassVar[int]
    cursor_param: str
    cursor_path: str
    def __init__(self, cursor_param: _Optional[str] = ..., cursor_path: _Optional[str] = ...) -> None: ...

class LinkHeaderPagination(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RestPagination(_message.Message):
    __slots__ = ("max_pages", "page_number", "offset", "cursor", "link_header")
    MAX_PAGES_FIELD_NUMBER: _ClassVar[int]
    PAGE_NUMBER_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    LINK_HEADER_FIELD_NUMBER: _ClassVar[int]
    max_pages: int
    page_number: PageNumberPagination
    offset: OffsetPagination
    cursor: CursorPagination
    link_header: LinkHeaderPagination
    def __init__(self, max_pages: _Optional[int] = ..., page_number: _Optional[_Union[PageNumberPagination, _Mapping]] = ..., offset: _Optional[_Union[OffsetPagination, _Mapping]] = ..., cursor: _Optional[_Union[CursorPagination, _Mapping]] = ..., link_header: _Optional[_Union[LinkHeaderPagination, _Mapping]] = ...) -> None: ...

class RestSource(_message.Message):
    __slots__ = ("connection", "path", "method", "query", "headers", "body", "records_path", "pagination")
    class QueryEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class HeadersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    CONNECTION_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    RECORDS_PATH_FIELD_NUMBER: _ClassVar[int]
    PAGINATION_FIELD_NUMBER: _ClassVar[int]
    connection: str
    path: str
    method: HttpMethod
    query: _containers.ScalarMap[str, str]
    headers: _containers.ScalarMap[str, str]
    body: str
    records_path: str
    pagination: RestPagination
    def __init__(self, connection: _Optional[str] = ..., path: _Optional[str] = ..., method: _Optional[_Union[HttpMethod, str]] = ..., query: _Optional[_Mapping[str, str]] = ..., headers: _Optional[_Mapping[str, str]] = ..., body: _Optional[str] = ..., records_path: _Optional[str] = ..., pagination: _Optional[_Union[RestPagination, _Mapping]] = ...) -> None: ...

class ArtifactSource(_message.Message):
    __slots__ = ("key",)
    KEY_FIELD_NUMBER: _ClassVar[int]
    key: str
    def __init__(self, key: _Optional[str] = ...) -> None: ...

class InlineSource(_message.Message):
    __slots__ = ("rows",)
    ROWS_FIELD_NUMBER: _ClassVar[int]
    rows: _containers.RepeatedCompositeFieldContainer[_struct_pb2.Struct]
    def __init__(self, rows: _Optional[_Iterable[_Union[_struct_pb2.Struct, _Mapping]]] = ...) -> None: ...

class SourceSpec(_message.Message):
    __slots__ = ("file", "database", "rest", "artifact", "inline")
    FILE_FIELD_NUMBER: _ClassVar[int]
    DATABASE_FIELD_NUMBER: _ClassVar[int]
    REST_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_FIELD_NUMBER: _ClassVar[int]
    INLINE_FIELD_NUMBER: _ClassVar[int]
    file: FileSource
    database: DatabaseSource
    rest: RestSource
    artifact: ArtifactSource
    inline: InlineSource
    def __init__(self, file: _Optional[_Union[FileSource, _Mapping]] = ..., database: _Optional[_Union[DatabaseSource, _Mapping]] = ..., rest: _Optional[_Union[RestSource, _Mapping]] = ..., artifact: _Optional[_Union[ArtifactSource, _Mapping]] = ..., inline: _Optional[_Union[InlineSource, _Mapping]] = ...) -> None: ...

class FilterTransform(_message.Message):
    __slots__ = ("predicate",)
    PREDICATE_FIELD_NUMBER: _ClassVar[int]
    predicate: str
    def __init__(self, predicate: _Optional[str] = ...) -> None: ...

class TransformSpec(_message.Message):
    __slots__ = ("filter",)
    FILTER_FIELD_NUMBER: _ClassVar[int]
    filter: FilterTransform
    def __init__(self, filter: _Optional[_Union[FilterTransform, _Mapping]] = ...) -> None: ...

class FileSink(_message.Message):
    __slots__ = ("connection", "path", "format", "mode", "partition_by", "compression")
    CONNECTION_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    PARTITION_BY_FIELD_NUMBER: _ClassVar[int]
    COMPRESSION_FIELD_NUMBER: _ClassVar[int]
    connection: str
    path: str
    format: FileFormat
    mode: WriteMode
    partition_by: _containers.RepeatedScalarFieldContainer[str]
    compression: FileCompression
    def __init__(self, connection: _Optional[str] = ..., path: _Optional[str] = ..., format: _Optional[_Union[FileFormat, str]] = ..., mode: _Optional[_Union[WriteMode, str]] = ..., partition_by: _Optional[_Iterable[str]] = ..., compression: _Optional[_Union[FileCompression, str]] = ...) -> None: ...

class DatabaseSink(_message.Message):
    __slots__ = ("connection", "table", "mode", "key_columns")
    CONNECTION_FIELD_NUMBER: _ClassVar[int]
    TABLE_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    KEY_COLUMNS_FIELD_NUMBER: _ClassVar[int]
    connection: str
    table: str
    mode: WriteMode
    key_columns: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, connection: _Optional[str] = ..., table: _Optional[str] = ..., mode: _Optional[_Union[WriteMode, str]] = ..., key_columns: _Optional[_Iterable[str]] = ...) -> None: ...

class RestSink(_message.Message):
    __slots__ = ("connection", "path", "method", "batch_size", "headers")
    class HeadersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    CONNECTION_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    connection: str
    path: str
    method: HttpMethod
    batch_size: int
    headers: _containers.ScalarMap[str, str]
    def __init__(self, connection: _Optional[str] = ..., path: _Optional[str] = ..., method: _Optional[_Union[HttpMethod, str]] = ..., batch_size: _Optional[int] = ..., headers: _Optional[_Mapping[str, str]] = ...) -> None: ...

class ArtifactSink(_message.Message):
    __slots__ = ("key",)
    KEY_FIELD_NUMBER: _ClassVar[int]
    key: str
    def __init__(self, key: _Optional[str] = ...) -> None: ...

class DiscardSink(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SinkSpec(_message.Message):
    __slots__ = ("file", "database", "rest", "artifact", "discard")
    FILE_FIELD_NUMBER: _ClassVar[int]
    DATABASE_FIELD_NUMBER: _ClassVar[int]
    REST_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_FIELD_NUMBER: _ClassVar[int]
    DISCARD_FIELD_NUMBER: _ClassVar[int]
    file: FileSink
    database: DatabaseSink
    rest: RestSink
    artifact: ArtifactSink
    discard: DiscardSink
    def __init__(self, file: _Optional[_Union[FileSink, _Mapping]] = ..., database: _Optional[_Union[DatabaseSink, _Mapping]] = ..., rest: _Optional[_Union[RestSink, _Mapping]] = ..., artifact: _Optional[_Union[ArtifactSink, _Mapping]] = ..., discard: _Optional[_Union[DiscardSink, _Mapping]] = ...) -> None: ...

class Step(_message.Message):
    __slots__ = ("name", "inputs", "source", "transform", "sink", "retry", "after", "timeout", "watermark")
    NAME_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    TRANSFORM_FIELD_NUMBER: _ClassVar[int]
    SINK_FIELD_NUMBER: _ClassVar[int]
    RETRY_FIELD_NUMBER: _ClassVar[int]
    AFTER_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    WATERMARK_FIELD_NUMBER: _ClassVar[int]
    name: str
    inputs: _containers.RepeatedScalarFieldContainer[str]
    source: SourceSpec
    transform: TransformSpec
    sink: SinkSpec
    retry: RetryPolicy
    after: _containers.RepeatedScalarFieldContainer[str]
    timeout: _duration_pb2.Duration
    watermark: Watermark
    def __init__(self, name: _Optional[str] = ..., inputs: _Optional[_Iterable[str]] = ..., source: _Optional[_Union[SourceSpec, _Mapping]] = ..., transform: _Optional[_Union[TransformSpec, _Mapping]] = ..., sink: _Optional[_Union[SinkSpec, _Mapping]] = ..., retry: _Optional[_Union[RetryPolicy, _Mapping]] = ..., after: _Optional[_Iterable[str]] = ..., timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., watermark: _Optional[_Union[Watermark, _Mapping]] = ...) -> None: ...

class Watermark(_message.Message):
    __slots__ = ("column", "initial")
    COLUMN_FIELD_NUMBER: _ClassVar[int]
    INITIAL_FIELD_NUMBER: _ClassVar[int]
    column: str
    initial: str
    def __init__(self, column: _Optional[str] = ..., initial: _Optional[str] = ...) -> None: ...

class RetryPolicy(_message.Message):
    __slots__ = ("max_attempts", "initial_backoff", "backoff_multiplier", "max_backoff", "retry_all_failures")
    MAX_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    INITIAL_BACKOFF_FIELD_NUMBER: _ClassVar[int]
    BACKOFF_MULTIPLIER_FIELD_NUMBER: _ClassVar[int]
    MAX_BACKOFF_FIELD_NUMBER: _ClassVar[int]
    RETRY_ALL_FAILURES_FIELD_NUMBER: _ClassVar[int]
    max_attempts: int
    initial_backoff: _duration_pb2.Duration
    backoff_multiplier: float
    max_backoff: _duration_pb2.Duration
    retry_all_failures: bool
    def __init__(self, max_attempts: _Optional[int] = ..., initial_backoff: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., backoff_multiplier: _Optional[float] = ..., max_backoff: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., retry_all_failures: _Optional[bool] = ...) -> None: ...
