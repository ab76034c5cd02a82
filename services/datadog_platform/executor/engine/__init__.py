"""The executor's engine: a stage's DAG run as DuckDB queries over Arrow streams.

- ``graph``: steps → validated DAG, split into segments (one DuckDB query each);
- ``bridge``: bounded thread-safe hand-over between async streams and DuckDB;
- ``query``: the shared sandboxed DuckDB database, binding and running queries;
- ``operators``: Python batch operators (cast, check) between queries.
"""
