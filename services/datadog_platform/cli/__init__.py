"""The ``datadog`` command-line interface: a thin client of the scheduler's public gRPC API.

It has no business logic of its own: it loads pipeline files, calls
``SchedulerService`` and prints the answers. ``datadog dev`` starts the three
services locally as separate processes.

Exit codes (also shown by ``datadog --help``):

- 0: success
- 1: the run or backfill failed (or was cancelled), or a connection test failed
- 2: usage error (bad command line)
- 3: not found (pipeline, run, backfill, ...)
- 4: invalid argument (unreadable or invalid pipeline file, or INVALID_ARGUMENT)
- 5: the scheduler cannot be reached, or did not answer in time
- 6: any other error
- 130: interrupted (Ctrl-C)
"""
