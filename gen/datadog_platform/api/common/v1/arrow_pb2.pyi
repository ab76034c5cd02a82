from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class ArrowSchema(_message.Message):
    __slots__ = ("ipc_message",)
    IPC_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ipc_message: bytes
    def __init__(self, ipc_message: _Optional[bytes] = ...) -> None: ...

class ArrowRecordBatch(_message.Message):
    __slots__ = ("num_rows", "ipc_message")
    NUM_ROWS_FIELD_NUMBER: _ClassVar[int]
    IPC_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    num_rows: int
    ipc_message: bytes
    def __init__(self, num_rows: _Optional[int] = ..., ipc_message: _Optional[bytes] = ...) -> None: ...

class StreamComplete(_message.Message):
    __slots__ = ("total_rows", "total_batches", "total_bytes")
    TOTAL_ROWS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BATCHES_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    total_rows: int
    total_batches: int
    total_bytes: int
    def __init__(self, total_rows: _Optional[int] = ..., total_batches: _Optional[int] = ..., total_bytes: _Optional[int] = ...) -> None: ...

class ParquetFile(_message.Message):
    __slots__ = ("size", "footer")
    SIZE_FIELD_NUMBER: _ClassVar[int]
    FOOTER_FIELD_NUMBER: _ClassVar[int]
    size: int
    footer: bytes
    def __init__(self, size: _Optional[int] = ..., footer: _Optional[bytes] = ...) -> None: ...

class ParquetRowGroup(_message.Message):
    __slots__ = ("index", "num_rows", "offsets", "lengths", "data")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    NUM_ROWS_FIELD_NUMBER: _ClassVar[int]
    OFFSETS_FIELD_NUMBER: _ClassVar[int]
    LENGTHS_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    index: int
    num_rows: int
    offsets: _containers.RepeatedScalarFieldContainer[int]
    lengths: _containers.RepeatedScalarFieldContainer[int]
    data: bytes
    def __init__(self, index: _Optional[int] = ..., num_rows: _Optional[int] = ..., offsets: _Optional[_Iterable[int]] = ..., lengths: _Optional[_Iterable[int]] = ..., data: _Optional[bytes] = ...) -> None: ...
