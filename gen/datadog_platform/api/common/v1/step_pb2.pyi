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

class NullsOrder(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NULLS_ORDER_UNSPECIFIED: _ClassVar[NullsOrder]
    NULLS_ORDER_FIRST: _ClassVar[NullsOrder]
    NULLS_ORDER_LAST: _ClassVar[NullsOrder]

class DedupeKeep(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DEDUPE_KEEP_UNSPECIFIED: _ClassVar[DedupeKeep]
    DEDUPE_KEEP_FIRST: _ClassVar[DedupeKeep]
    DEDUPE_KEEP_LAST: _ClassVar[DedupeKeep]

class JoinType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOIN_TYPE_UNSPECIFIED: _ClassVar[JoinType]
    JOIN_TYPE_INNER: _ClassVar[JoinType]
    JOIN_TYPE_LEFT: _ClassVar[JoinType]
    JOIN_TYPE_RIGHT: _ClassVar[JoinType]
    JOIN_TYPE_FULL: _ClassVar[JoinType]
    JOIN_TYPE_SEMI: _ClassVar[JoinType]
    JOIN_TYPE_ANTI: _ClassVar[JoinType]

class MissingColumns(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MISSING_COLUMNS_UNSPECIFIED: _ClassVar[MissingColumns]
    MISSING_COLUMNS_FILL_NULL: _ClassVar[MissingColumns]
    MISSING_COLUMNS_ERROR: _ClassVar[MissingColumns]
    MISSING_COLUMNS_DROP: _ClassVar[MissingColumns]

class CheckAction(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CHECK_ACTION_UNSPECIFIED: _ClassVar[CheckAction]
    CHECK_ACTION_FAIL: _ClassVar[CheckAction]
    CHECK_ACTION_WARN: _ClassVar[CheckAction]
    CHECK_ACTION_QUARANTINE: _ClassVar[CheckAction]
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
NULLS_ORDER_UNSPECIFIED: NullsOrder
NULLS_ORDER_FIRST: NullsOrder
NULLS_ORDER_LAST: NullsOrder
DEDUPE_KEEP_UNSPECIFIED: DedupeKeep
DEDUPE_KEEP_FIRST: DedupeKeep
DEDUPE_KEEP_LAST: DedupeKeep
JOIN_TYPE_UNSPECIFIED: JoinType
JOIN_TYPE_INNER: JoinType
JOIN_TYPE_LEFT: JoinType
JOIN_TYPE_RIGHT: JoinType
JOIN_TYPE_FULL: JoinType
JOIN_TYPE_SEMI: JoinType
JOIN_TYPE_ANTI: JoinType
MISSING_COLUMNS_UNSPECIFIED: MissingColumns
MISSING_COLUMNS_FILL_NULL: MissingColumns
MISSING_COLUMNS_ERROR: MissingColumns
MISSING_COLUMNS_DROP: MissingColumns
CHECK_ACTION_UNSPECIFIED: CheckAction
CHECK_ACTION_FAIL: CheckAction
CHECK_ACTION_WARN: CheckAction
CHECK_ACTION_QUARANTINE: CheckAction

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

class SelectTransform(_message.Message):
    __slots__ = ("columns",)
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    columns: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, columns: _Optional[_Iterable[str]] = ...) -> None: ...

class DropTransform(_message.Message):
    __slots__ = ("columns", "ignore_missing")
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    IGNORE_MISSING_FIELD_NUMBER: _ClassVar[int]
    columns: _containers.RepeatedScalarFieldContainer[str]
    ignore_missing: bool
    def __init__(self, columns: _Optional[_Iterable[str]] = ..., ignore_missing: _Optional[bool] = ...) -> None: ...

class RenameTransform(_message.Message):
    __slots__ = ("columns",)
    class ColumnsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    columns: _containers.ScalarMap[str, str]
    def __init__(self, columns: _Optional[_Mapping[str, str]] = ...) -> None: ...

class ColumnCast(_message.Message):
    __slots__ = ("column", "type")
    COLUMN_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    column: str
    type: str
    def __init__(self, column: _Optional[str] = ..., type: _Optional[str] = ...) -> None: ...

class CastTransform(_message.Message):
    __slots__ = ("columns", "allow_unsafe")
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    ALLOW_UNSAFE_FIELD_NUMBER: _ClassVar[int]
    columns: _containers.RepeatedCompositeFieldContainer[ColumnCast]
    allow_unsafe: bool
    def __init__(self, columns: _Optional[_Iterable[_Union[ColumnCast, _Mapping]]] = ..., allow_unsafe: _Optional[bool] = ...) -> None: ...

class DerivedColumn(_message.Message):
    __slots__ = ("name", "expr")
    NAME_FIELD_NUMBER: _ClassVar[int]
    EXPR_FIELD_NUMBER: _ClassVar[int]
    name: str
    expr: str
    def __init__(self, name: _Optional[str] = ..., expr: _Optional[str] = ...) -> None: ...

class DeriveTransform(_message.Message):
    __slots__ = ("columns",)
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    columns: _containers.RepeatedCompositeFieldContainer[DerivedColumn]
    def __init__(self, columns: _Optional[_Iterable[_Union[DerivedColumn, _Mapping]]] = ...) -> None: ...

class FillNullTransform(_message.Message):
    __slots__ = ("values",)
    class ValuesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _struct_pb2.Value
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ...) -> None: ...
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.MessageMap[str, _struct_pb2.Value]
    def __init__(self, values: _Optional[_Mapping[str, _struct_pb2.Value]] = ...) -> None: ...

class DropNullTransform(_message.Message):
    __slots__ = ("columns", "all")
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    ALL_FIELD_NUMBER: _ClassVar[int]
    columns: _containers.RepeatedScalarFieldContainer[str]
    all: bool
    def __init__(self, columns: _Optional[_Iterable[str]] = ..., all: _Optional[bool] = ...) -> None: ...

class SortKey(_message.Message):
    __slots__ = ("column", "descending", "nulls")
    COLUMN_FIELD_NUMBER: _ClassVar[int]
    DESCENDING_FIELD_NUMBER: _ClassVar[int]
    NULLS_FIELD_NUMBER: _ClassVar[int]
    column: str
    descending: bool
    nulls: NullsOrder
    def __init__(self, column: _Optional[str] = ..., descending: _Optional[bool] = ..., nulls: _Optional[_Union[NullsOrder, str]] = ...) -> None: ...

class SortTransform(_message.Message):
    __slots__ = ("keys",)
    KEYS_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedCompositeFieldContainer[SortKey]
    def __init__(self, keys: _Optional[_Iterable[_Union[SortKey, _Mapping]]] = ...) -> None: ...

class LimitTransform(_message.Message):
    __slots__ = ("count", "offset")
    COUNT_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    count: int
    offset: int
    def __init__(self, count: _Optional[int] = ..., offset: _Optional[int] = ...) -> None: ...

class DedupeTransform(_message.Message):
    __slots__ = ("keys", "order_by", "keep")
    KEYS_FIELD_NUMBER: _ClassVar[int]
    ORDER_BY_FIELD_NUMBER: _ClassVar[int]
    KEEP_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedScalarFieldContainer[str]
    order_by: _containers.RepeatedCompositeFieldContainer[SortKey]
    keep: DedupeKeep
    def __init__(self, keys: _Optional[_Iterable[str]] = ..., order_by: _Optional[_Iterable[_Union[SortKey, _Mapping]]] = ..., keep: _Optional[_Union[DedupeKeep, str]] = ...) -> None: ...

class NamedAggregate(_message.Message):
    __slots__ = ("name", "expr")
    NAME_FIELD_NUMBER: _ClassVar[int]
    EXPR_FIELD_NUMBER: _ClassVar[int]
    name: str
    expr: str
    def __init__(self, name: _Optional[str] = ..., expr: _Optional[str] = ...) -> None: ...

class AggregateTransform(_message.Message):
    __slots__ = ("group_by", "aggregates")
    GROUP_BY_FIELD_NUMBER: _ClassVar[int]
    AGGREGATES_FIELD_NUMBER: _ClassVar[int]
    group_by: _containers.RepeatedScalarFieldContainer[str]
    aggregates: _containers.RepeatedCompositeFieldContainer[NamedAggregate]
    def __init__(self, group_by: _Optional[_Iterable[str]] = ..., aggregates: _Optional[_Iterable[_Union[NamedAggregate, _Mapping]]] = ...) -> None: ...

class JoinKey(_message.Message):
    __slots__ = ("left", "right")
    LEFT_FIELD_NUMBER: _ClassVar[int]
    RIGHT_FIELD_NUMBER: _ClassVar[int]
    left: str
    right: str
    def __init__(self, left: _Optional[str] = ..., right: _Optional[str] = ...) -> None: ...

class JoinTransform(_message.Message):
    __slots__ = ("type", "on", "left_suffix", "right_suffix")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    ON_FIELD_NUMBER: _ClassVar[int]
    LEFT_SUFFIX_FIELD_NUMBER: _ClassVar[int]
    RIGHT_SUFFIX_FIELD_NUMBER: _ClassVar[int]
    type: JoinType
    on: _containers.RepeatedCompositeFieldContainer[JoinKey]
    left_suffix: str
    right_suffix: str
    def __init__(self, type: _Optional[_Union[JoinType, str]] = ..., on: _Optional[_Iterable[_Union[JoinKey, _Mapping]]] = ..., left_suffix: _Optional[str] = ..., right_suffix: _Optional[str] = ...) -> None: ...

class UnionTransform(_message.Message):
    __slots__ = ("missing_columns", "distinct")
    MISSING_COLUMNS_FIELD_NUMBER: _ClassVar[int]
    DISTINCT_FIELD_NUMBER: _ClassVar[int]
    missing_columns: MissingColumns
    distinct: bool
    def __init__(self, missing_columns: _Optional[_Union[MissingColumns, str]] = ..., distinct: _Optional[bool] = ...) -> None: ...

class SqlTransform(_message.Message):
    __slots__ = ("query",)
    QUERY_FIELD_NUMBER: _ClassVar[int]
    query: str
    def __init__(self, query: _Optional[str] = ...) -> None: ...

class NotNullCheck(_message.Message):
    __slots__ = ("columns",)
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    columns: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, columns: _Optional[_Iterable[str]] = ...) -> None: ...

class UniqueCheck(_message.Message):
    __slots__ = ("columns",)
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    columns: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, columns: _Optional[_Iterable[str]] = ...) -> None: ...

class AcceptedValuesCheck(_message.Message):
    __slots__ = ("column", "values")
    COLUMN_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    column: str
    values: _containers.RepeatedCompositeFieldContainer[_struct_pb2.Value]
    def __init__(self, column: _Optional[str] = ..., values: _Optional[_Iterable[_Union[_struct_pb2.Value, _Mapping]]] = ...) -> None: ...

class RangeCheck(_message.Message):
    __slots__ = ("column", "min", "max")
    COLUMN_FIELD_NUMBER: _ClassVar[int]
    MIN_FIELD_NUMBER: _ClassVar[int]
    MAX_FIELD_NUMBER: _ClassVar[int]
    column: str
    min: _struct_pb2.Value
    max: _struct_pb2.Value
    def __init__(self, column: _Optional[str] = ..., min: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., max: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ...) -> None: ...

class RegexCheck(_message.Message):
    __slots__ = ("column", "pattern")
    COLUMN_FIELD_NUMBER: _ClassVar[int]
    PATTERN_FIELD_NUMBER: _ClassVar[int]
    column: str
    pattern: str
    def __init__(self, column: _Optional[str] = ..., pattern: _Optional[str] = ...) -> None: ...

class RowCountCheck(_message.Message):
    __slots__ = ("min", "max")
    MIN_FIELD_NUMBER: _ClassVar[int]
    MAX_FIELD_NUMBER: _ClassVar[int]
    min: int
    max: int
    def __init__(self, min: _Optional[int] = ..., max: _Optional[int] = ...) -> None: ...

class ExpressionCheck(_message.Message):
    __slots__ = ("predicate",)
    PREDICATE_FIELD_NUMBER: _ClassVar[int]
    predicate: str
    def __init__(self, predicate: _Optional[str] = ...) -> None: ...

class Check(_message.Message):
    __slots__ = ("name", "not_null", "unique", "accepted_values", "range", "regex", "row_count", "expression", "on_failure")
    NAME_FIELD_NUMBER: _ClassVar[int]
    NOT_NULL_FIELD_NUMBER: _ClassVar[int]
    UNIQUE_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_VALUES_FIELD_NUMBER: _ClassVar[int]
    RANGE_FIELD_NUMBER: _ClassVar[int]
    REGEX_FIELD_NUMBER: _ClassVar[int]
    ROW_COUNT_FIELD_NUMBER: _ClassVar[int]
    EXPRESSION_FIELD_NUMBER: _ClassVar[int]
    ON_FAILURE_FIELD_NUMBER: _ClassVar[int]
    name: str
    not_null: NotNullCheck
    unique: UniqueCheck
    accepted_values: AcceptedValuesCheck
    range: RangeCheck
    regex: RegexCheck
    row_count: RowCountCheck
    expression: ExpressionCheck
    on_failure: CheckAction
    def __init__(self, name: _Optional[str] = ..., not_null: _Optional[_Union[NotNullCheck, _Mapping]] = ..., unique: _Optional[_Union[UniqueCheck, _Mapping]] = ..., accepted_values: _Optional[_Union[AcceptedValuesCheck, _Mapping]] = ..., range: _Optional[_Union[RangeCheck, _Mapping]] = ..., regex: _Optional[_Union[RegexCheck, _Mapping]] = ..., row_count: _Optional[_Union[RowCountCheck, _Mapping]] = ..., expression: _Optional[_Union[ExpressionCheck, _Mapping]] = ..., on_failure: _Optional[_Union[CheckAction, str]] = ...) -> None: ...

class CheckTransform(_message.Message):
    __slots__ = ("checks", "on_failure", "quarantine")
    CHECKS_FIELD_NUMBER: _ClassVar[int]
    ON_FAILURE_FIELD_NUMBER: _ClassVar[int]
    QUARANTINE_FIELD_NUMBER: _ClassVar[int]
    checks: _containers.RepeatedCompositeFieldContainer[Check]
    on_failure: CheckAction
    quarantine: SinkSpec
    def __init__(self, checks: _Optional[_Iterable[_Union[Check, _Mapping]]] = ..., on_failure: _Optional[_Union[CheckAction, str]] = ..., quarantine: _Optional[_Union[SinkSpec, _Mapping]] = ...) -> None: ...

class TransformSpec(_message.Message):
    __slots__ = ("filter", "select", "drop", "rename", "cast", "derive", "fill_null", "drop_null", "dedupe", "sort", "limit", "aggregate", "join", "union", "sql", "check")
    FILTER_FIELD_NUMBER: _ClassVar[int]
    SELECT_FIELD_NUMBER: _ClassVar[int]
    DROP_FIELD_NUMBER: _ClassVar[int]
    RENAME_FIELD_NUMBER: _ClassVar[int]
    CAST_FIELD_NUMBER: _ClassVar[int]
    DERIVE_FIELD_NUMBER: _ClassVar[int]
    FILL_NULL_FIELD_NUMBER: _ClassVar[int]
    DROP_NULL_FIELD_NUMBER: _ClassVar[int]
    DEDUPE_FIELD_NUMBER: _ClassVar[int]
    SORT_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    AGGREGATE_FIELD_NUMBER: _ClassVar[int]
    JOIN_FIELD_NUMBER: _ClassVar[int]
    UNION_FIELD_NUMBER: _ClassVar[int]
    SQL_FIELD_NUMBER: _ClassVar[int]
    CHECK_FIELD_NUMBER: _ClassVar[int]
    filter: FilterTransform
    select: SelectTransform
    drop: DropTransform
    rename: RenameTransform
    cast: CastTransform
    derive: DeriveTransform
    fill_null: FillNullTransform
    drop_null: DropNullTransform
    dedupe: DedupeTransform
    sort: SortTransform
    limit: LimitTransform
    aggregate: AggregateTransform
    join: JoinTransform
    union: UnionTransform
    sql: SqlTransform
    check: CheckTransform
    def __init__(self, filter: _Optional[_Union[FilterTransform, _Mapping]] = ..., select: _Optional[_Union[SelectTransform, _Mapping]] = ..., drop: _Optional[_Union[DropTransform, _Mapping]] = ..., rename: _Optional[_Union[RenameTransform, _Mapping]] = ..., cast: _Optional[_Union[CastTransform, _Mapping]] = ..., derive: _Optional[_Union[DeriveTransform, _Mapping]] = ..., fill_null: _Optional[_Union[FillNullTransform, _Mapping]] = ..., drop_null: _Optional[_Union[DropNullTransform, _Mapping]] = ..., dedupe: _Optional[_Union[DedupeTransform, _Mapping]] = ..., sort: _Optional[_Union[SortTransform, _Mapping]] = ..., limit: _Optional[_Union[LimitTransform, _Mapping]] = ..., aggregate: _Optional[_Union[AggregateTransform, _Mapping]] = ..., join: _Optional[_Union[JoinTransform, _Mapping]] = ..., union: _Optional[_Union[UnionTransform, _Mapping]] = ..., sql: _Optional[_Union[SqlTransform, _Mapping]] = ..., check: _Optional[_Union[CheckTransform, _Mapping]] = ...) -> None: ...

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
