from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
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
