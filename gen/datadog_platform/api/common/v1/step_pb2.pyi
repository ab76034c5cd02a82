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

class WriteMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    WRITE_MODE_UNSPECIFIED: _ClassVar[WriteMode]
    WRITE_MODE_OVERWRITE: _ClassVar[WriteMode]
FILE_FORMAT_UNSPECIFIED: FileFormat
FILE_FORMAT_CSV: FileFormat
FILE_FORMAT_PARQUET: FileFormat
WRITE_MODE_UNSPECIFIED: WriteMode
WRITE_MODE_OVERWRITE: WriteMode

class FileSource(_message.Message):
    __slots__ = ("connection", "path", "format")
    CONNECTION_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    connection: str
    path: str
    format: FileFormat
    def __init__(self, connection: _Optional[str] = ..., path: _Optional[str] = ..., format: _Optional[_Union[FileFormat, str]] = ...) -> None: ...

class SourceSpec(_message.Message):
    __slots__ = ("file",)
    FILE_FIELD_NUMBER: _ClassVar[int]
    file: FileSource
    def __init__(self, file: _Optional[_Union[FileSource, _Mapping]] = ...) -> None: ...

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
    __slots__ = ("connection", "path", "format", "mode")
    CONNECTION_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    connection: str
    path: str
    format: FileFormat
    mode: WriteMode
    def __init__(self, connection: _Optional[str] = ..., path: _Optional[str] = ..., format: _Optional[_Union[FileFormat, str]] = ..., mode: _Optional[_Union[WriteMode, str]] = ...) -> None: ...

class SinkSpec(_message.Message):
    __slots__ = ("file",)
    FILE_FIELD_NUMBER: _ClassVar[int]
    file: FileSink
    def __init__(self, file: _Optional[_Union[FileSink, _Mapping]] = ...) -> None: ...

class Step(_message.Message):
    __slots__ = ("name", "inputs", "source", "transform", "sink")
    NAME_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    TRANSFORM_FIELD_NUMBER: _ClassVar[int]
    SINK_FIELD_NUMBER: _ClassVar[int]
    name: str
    inputs: _containers.RepeatedScalarFieldContainer[str]
    source: SourceSpec
    transform: TransformSpec
    sink: SinkSpec
    def __init__(self, name: _Optional[str] = ..., inputs: _Optional[_Iterable[str]] = ..., source: _Optional[_Union[SourceSpec, _Mapping]] = ..., transform: _Optional[_Union[TransformSpec, _Mapping]] = ..., sink: _Optional[_Union[SinkSpec, _Mapping]] = ...) -> None: ...
