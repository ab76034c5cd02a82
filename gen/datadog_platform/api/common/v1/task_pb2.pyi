from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class TaskMetrics(_message.Message):
    __slots__ = ("rows_read", "bytes_read", "rows_written", "bytes_written")
    ROWS_READ_FIELD_NUMBER: _ClassVar[int]
    BYTES_READ_FIELD_NUMBER: _ClassVar[int]
    ROWS_WRITTEN_FIELD_NUMBER: _ClassVar[int]
    BYTES_WRITTEN_FIELD_NUMBER: _ClassVar[int]
    rows_read: int
    bytes_read: int
    rows_written: int
    bytes_written: int
    def __init__(self, rows_read: _Optional[int] = ..., bytes_read: _Optional[int] = ..., rows_written: _Optional[int] = ..., bytes_written: _Optional[int] = ...) -> None: ...

class StageOutput(_message.Message):
    __slots__ = ("step", "location", "rows_written")
    STEP_FIELD_NUMBER: _ClassVar[int]
    LOCATION_FIELD_NUMBER: _ClassVar[int]
    ROWS_WRITTEN_FIELD_NUMBER: _ClassVar[int]
    step: str
    location: str
    rows_written: int
    def __init__(self, step: _Optional[str] = ..., location: _Optional[str] = ..., rows_written: _Optional[int] = ...) -> None: ...
