"""The connector service: the platform's only door to data outside it.

Connections are configured on this service (``config``) and named by pipelines; the
file connector (``files``) reads and writes CSV and Parquet under each connection's
root. ``servicer`` translates the gRPC frames; ``app.build_server`` assembles the
server and ``main`` runs it.

Error reasons (``ErrorInfo.reason``), stable across releases:

======================== =================== =================================================
reason                   code                meaning
======================== =================== =================================================
CONFIG_INVALID           INVALID_ARGUMENT    bad connector config (a startup error)
CONNECTION_NOT_FOUND     NOT_FOUND           no connection has the requested name
INVALID_PAGE_SIZE        INVALID_ARGUMENT    negative ``page_size``
INVALID_PAGE_TOKEN       INVALID_ARGUMENT    ``page_token`` not from a previous response
REQUIRED_FIELD_MISSING   INVALID_ARGUMENT    an empty required field (named in a violation)
INVALID_PATH             INVALID_ARGUMENT    path cannot name a file (directory, NUL, loop)
PATH_OUTSIDE_ROOT        PERMISSION_DENIED   absolute path, ``..`` or symlink escaping the root
UNKNOWN_FILE_FORMAT      INVALID_ARGUMENT    format neither given nor inferable
UNSUPPORTED_WRITE_MODE   INVALID_ARGUMENT    a write mode this server does not know
SOURCE_NOT_FOUND         NOT_FOUND           the file to read does not exist
SOURCE_PARSE_ERROR       INVALID_ARGUMENT    the file does not parse as its format
SOURCE_ACCESS_DENIED     PERMISSION_DENIED   the OS refused to read the file
SOURCE_IO_ERROR          UNAVAILABLE         another I/O failure while reading
SINK_WRITE_ERROR         INVALID_ARGUMENT    the data cannot be encoded in the sink's format
SINK_ACCESS_DENIED       PERMISSION_DENIED   the OS refused to write the file
SINK_IO_ERROR            UNAVAILABLE         another I/O failure while writing (e.g. disk full)
ARROW_STREAM_PROTOCOL    INVALID_ARGUMENT    write frames out of order or undecodable
ARROW_STREAM_INCOMPLETE  UNAVAILABLE         write stream ended without its completion frame
ARROW_STREAM_MISMATCH    UNAVAILABLE         completion totals disagree with what arrived
======================== =================== =================================================

A write that fails for any of these reasons leaves its target as it was.
"""
