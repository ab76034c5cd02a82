import datetime

from datadog_platform.api.common.v1 import task_pb2 as _task_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RunState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RUN_STATE_UNSPECIFIED: _ClassVar[RunState]
    RUN_STATE_QUEUED: _ClassVar[RunState]
    RUN_STATE_RUNNING: _ClassVar[RunState]
    RUN_STATE_SUCCEEDED: _ClassVar[RunState]
    RUN_STATE_FAILED: _ClassVar[RunState]
    RUN_STATE_CANCELLED: _ClassVar[RunState]

class StageState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STAGE_STATE_UNSPECIFIED: _ClassVar[StageState]
    STAGE_STATE_PENDING: _ClassVar[StageState]
    STAGE_STATE_QUEUED: _ClassVar[StageState]
    STAGE_STATE_RUNNING: _ClassVar[StageState]
    STAGE_STATE_SUCCEEDED: _ClassVar[StageState]
    STAGE_STATE_FAILED: _ClassVar[StageState]
    STAGE_STATE_CANCELLED: _ClassVar[StageState]
    STAGE_STATE_UPSTREAM_FAILED: _ClassVar[StageState]
RUN_STATE_UNSPECIFIED: RunState
RUN_STATE_QUEUED: RunState
RUN_STATE_RUNNING: RunState
RUN_STATE_SUCCEEDED: RunState
RUN_STATE_FAILED: RunState
RUN_STATE_CANCELLED: RunState
STAGE_STATE_UNSPECIFIED: StageState
STAGE_STATE_PENDING: StageState
STAGE_STATE_QUEUED: StageState
STAGE_STATE_RUNNING: StageState
STAGE_STATE_SUCCEEDED: StageState
STAGE_STATE_FAILED: StageState
STAGE_STATE_CANCELLED: StageState
STAGE_STATE_UPSTREAM_FAILED: StageState

class StageRun(_message.Message):
    __slots__ = ("stage_id", "steps", "state", "attempt", "start_time", "end_time", "metrics", "outputs", "error_reason", "error_message")
    STAGE_ID_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    ERROR_REASON_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    stage_id: str
    steps: _containers.RepeatedScalarFieldContainer[str]
    state: StageState
    attempt: int
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    metrics: _task_pb2.TaskMetrics
    outputs: _containers.RepeatedCompositeFieldContainer[_task_pb2.StageOutput]
    error_reason: str
    error_message: str
    def __init__(self, stage_id: _Optional[str] = ..., steps: _Optional[_Iterable[str]] = ..., state: _Optional[_Union[StageState, str]] = ..., attempt: _Optional[int] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., metrics: _Optional[_Union[_task_pb2.TaskMetrics, _Mapping]] = ..., outputs: _Optional[_Iterable[_Union[_task_pb2.StageOutput, _Mapping]]] = ..., error_reason: _Optional[str] = ..., error_message: _Optional[str] = ...) -> None: ...

class Run(_message.Message):
    __slots__ = ("run_id", "pipeline", "pipeline_version", "state", "create_time", "start_time", "end_time", "stages", "error_message", "request_id")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    PIPELINE_FIELD_NUMBER: _ClassVar[int]
    PIPELINE_VERSION_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    STAGES_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    pipeline: str
    pipeline_version: int
    state: RunState
    create_time: _timestamp_pb2.Timestamp
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    stages: _containers.RepeatedCompositeFieldContainer[StageRun]
    error_message: str
    request_id: str
    def __init__(self, run_id: _Optional[str] = ..., pipeline: _Optional[str] = ..., pipeline_version: _Optional[int] = ..., state: _Optional[_Union[RunState, str]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., stages: _Optional[_Iterable[_Union[StageRun, _Mapping]]] = ..., error_message: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...
