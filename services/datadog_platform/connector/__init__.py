"""The connector service: the platform's only door to data outside it.

Connections are named and configured on this service (``config``: YAML with
``${env:…}``/``${file:…}`` secrets, reloaded on SIGHUP or when the file changes) and
named by pipelines. Every connector type implements the interface in ``base``; the
``registry`` knows the built-in types (``files``: file and artifact; ``postgres``;
``mysql``; ``rest``) and plugins from the entry point group
``datadog_platform.connectors``. ``servicer`` translates the gRPC frames;
``app.build_server`` assembles the server and ``main`` runs it.

Secrets never leave the process: ``core.redaction`` masks them in every error status
and log line.

``docs/connectors.md`` is the reference: config format, each type's options, plugins,
and the error reasons (``ErrorInfo.reason``), which are stable across releases. Each
module's docstring lists the reasons it raises. A write that fails for any reason
leaves its target as it was.
"""
