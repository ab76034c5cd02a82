"""The executor service: runs pipeline stages as pure compute on Arrow record batches.

It opens no file or database itself: every batch comes from and goes to the
connector service. Error reasons of its own (``TaskFailed.reason`` / ErrorInfo):

- ``INVALID_STAGE``: the ExecuteTask request is not source → transforms → sink
  (INVALID_ARGUMENT status with field violations).
- ``TRANSFORM_ERROR``: a transform failed on the data (e.g. an unknown column).
- ``CONNECTOR_UNAVAILABLE``: the connector service could not be reached (retryable).
- ``CONNECTOR_DEADLINE_EXCEEDED``: a connector call outlived the stage timeout (retryable).
- ``EXECUTOR_BUSY``: every slot (``--slots``) is running an attempt; ExecuteTask
  fails at once with RESOURCE_EXHAUSTED, before any event: back off and retry.
- ``INVALID_INLINE_ROWS``: an inline source's rows do not make a table (a column
  mixes kinds of values).
- ``INVALID_WATERMARK``: a step's watermark column is missing from its output or
  has no order (a stage failure naming the step and the column).
- ``INTERNAL``: a bug in the executor; details are in its log.

Failures reported by the connector keep the connector's reason (e.g. ``SOURCE_NOT_FOUND``,
``PATH_OUTSIDE_ROOT``), and those of the Arrow framing theirs (``ARROW_STREAM_*``).
"""
