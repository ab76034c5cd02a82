from datadog_platform.api.common.v1 import step_pb2 as _step_pb2
from datadog_platform.api.common.v1 import task_pb2 as _task_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ListTransformTypesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class TransformParameter(_message.Message):
    __slots__ = ("name", "type", "description", "required")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    REQUIRED_FIELD_NUMBER: _ClassVar[int]
    name: str
    type: str
    description: str
    required: bool
    def __init__(self, name: _Optional[str] = ..., type: _Optional[str] = ..., description: _Optional[str] = ..., required: _Optional[bool] = ...) -> None: ...

class TransformType(_message.Message):
    __slots__ = ("name", "description", "parameters", "min_inputs", "max_inputs", "streaming")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    MIN_INPUTS_FIELD_NUMBER: _ClassVar[int]
    MAX_INPUTS_FIELD_NUMBER: _ClassVar[int]
    STREAMING_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    parameters: _containers.RepeatedCompositeFieldContainer[TransformParameter]
    min_inputs: int
    max_inputs: int
    streaming: bool
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., parameters: _Optional[_Iterable[_Union[TransformParameter, _Mapping]]] = ..., min_inputs: _Optional[int] = ..., max_inputs: _Optional[int] = ..., streaming: _Optional[bool] = ...) -> None: ...

class ListTransformTypesResponse(_message.Message):
    __slots__ = ("transform_types",)
    TRANSFORM_TYPES_FIELD_NUMBER: _ClassVar[int]
    transform_types: _containers.RepeatedCompositeFieldContainer[TransformType]
    def __init__(self, transform_types: _Optional[_Iterable[_Union[TransformType, _Mapping]]] = ...) -> None: ...

class ExecuteTaskRequest(_message.Message):
    __slots__ = ("run_id", "stage_id", "attempt", "steps")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    STAGE_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    stage_id: str
    attempt: int
    steps: _containers.RepeatedCompositeFieldContainer[_step_pb2.Step]
    def __init__(self, run_id: _Optional[str] = ..., stage_id: _Optional[str] = ..., attempt: _Optional[int] = ..., steps: _Optional[_Iterable[_Union[_step_pb2.Step, _Mapping]]] = ...) -> None: ...

class ExecuteTaskResponse(_message.Message):
    __slots__ = ("started", "progress", "succeeded", "failed", "log")
    STARTED_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    SUCCEEDED_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    LOG_FIELD_NUMBER: _ClassVar[int]
    started: TaskStarted
    progress: TaskProgress
    succeeded: TaskSucceeded
    failed: TaskFailed
    log: TaskLog
    def __init__(self, started: _Optional[_Union[TaskStarted, _Mapping]] = ..., progress: _Optional[_Union[TaskProgress, _Mapping]] = ..., succeeded: _Optional[_Union[TaskSucceeded, _Mapping]] = ..., failed: _Optional[_Union[TaskFailed, _Mapping]] = ..., log: _Optional[_Union[TaskLog, _Mapping]] = ...) -> None: ...

class TaskStarted(_message.Message):
    __slots__ = ("executor_id",)
    EXECUTOR_ID_FIELD_NUMBER: _ClassVar[int]
    executor_id: str
    def __init__(self, executor_id: _Optional[str] = ...) -> None: ...

class TaskProgress(_message.Message):
    __slots__ = ("metrics", "steps")
    METRICS_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    metrics: _task_pb2.TaskMetrics
    steps: _containers.RepeatedCompositeFieldContainer[_task_pb2.StepMetrics]
    def __init__(self, metrics: _Optional[_Union[_task_pb2.TaskMetrics, _Mapping]] = ..., steps: _Optional[_Iterable[_Union[_task_pb2.StepMetrics, _Mapping]]] = ...) -> None: ...

class TaskSucceeded(_message.Message):
    __slots__ = ("metrics", "outputs", "watermarks", "checks", "steps")
    class WatermarksEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    METRICS_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    WATERMARKS_FIELD_NUMBER: _ClassVar[int]
    CHECKS_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    metrics: _task_pb2.TaskMetrics
    outputs: _containers.RepeatedCompositeFieldContainer[_task_pb2.StageOutput]
    watermarks: _containers.ScalarMap[str, str]
    checks: _containers.RepeatedCompositeFieldContainer[_task_pb2.CheckResult]
    steps: _containers.RepeatedCompositeFieldContainer[_task_pb2.StepMetrics]
    def __init__(self, metrics: _Optional[_Union[_task_pb2.TaskMetrics, _Mapping]] = ..., outputs: _Optional[_Iterable[_Union[_task_pb2.StageOutput, _Mapping]]] = ..., watermarks: _Optional[_Mapping[str, str]] = ..., checks: _Optional[_Iterable[_Union[_task_pb2.CheckResult, _Mapping]]] = ..., steps: _Optional[_Iterable[_Union[_task_pb2.StepMetrics, _Mapping]]] = ...) -> None: ...

class TaskLog(_message.Message):
    __slots__ = ("lines",)
    LINES_FIELD_NUMBER: _ClassVar[int]
    lines: _containers.RepeatedCompositeFieldContainer[_task_pb2.LogLine]
    def __init__(self, lines: _Optional[_Iterable[_Union[_task_pb2.LogLine, _Mapping]]] = ...) -> None: ...

class TaskFailed(_message.Message):
    __slots__ = ("reason", "message", "step", "retryable", "metrics", "checks")
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    RETRYABLE_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    CHECKS_FIELD_NUMBER: _ClassVar[int]
    reason: str
    message: str
    step: str
    retryable: bool
    metrics: _task_pb2.TaskMetrics
    checks: _containers.RepeatedCompositeFieldContainer[_task_pb2.CheckResult]
    def __init__(self, reason: _Optional[str] = ..., message: _Optional[str] = ..., step: _Optional[str] = ..., retryable: _Optional[bool] = ..., metrics: _Optional[_Union[_task_pb2.TaskMetrics, _Mapping]] = ..., checks: _Optional[_Iterable[_Union[_task_pb2.CheckResult, _Mapping]]] = ...) -> None: ...
