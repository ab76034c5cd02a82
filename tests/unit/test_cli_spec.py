"""Loading pipeline files (YAML and JSON) and the messages for bad ones."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from datadog_platform.api.common.v1 import step_pb2
from datadog_platform.cli.main import main
from datadog_platform.cli.spec import SpecError, load_pipeline

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "csv_to_parquet.yaml"


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_example_yaml_loads_as_pipeline() -> None:
    pipeline = load_pipeline(EXAMPLE)
    assert pipeline.name == "csv_to_parquet"
    assert list(pipeline.tags) == ["example"]
    assert dict(pipeline.labels) == {"team": "data-platform"}
    assert [s.name for s in pipeline.steps] == ["orders", "big_orders", "out"]
    orders, big, out = pipeline.steps
    assert orders.source.file.path == "examples/data/orders.csv"
    assert orders.source.file.format == step_pb2.FILE_FORMAT_CSV
    assert list(big.inputs) == ["orders"]
    assert big.transform.filter.predicate == "amount > 100"
    assert out.sink.file.format == step_pb2.FILE_FORMAT_PARQUET
    assert out.sink.file.mode == step_pb2.WRITE_MODE_OVERWRITE


def test_json_file_gives_the_same_pipeline(tmp_path: Path) -> None:
    document = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    path = write(tmp_path, "p.json", json.dumps(document))
    assert load_pipeline(path) == load_pipeline(EXAMPLE)


def test_yaml_dates_stay_strings(tmp_path: Path) -> None:
    path = write(tmp_path, "p.yaml", "name: p\ndescription: 2026-01-01\n")
    assert load_pipeline(path).description == "2026-01-01"


def test_yaml_on_and_yes_are_strings_and_only_true_false_are_booleans(tmp_path: Path) -> None:
    # YAML 1.1 (PyYAML's default) reads a join's "on:" key as the boolean True.
    path = tmp_path / "p.yaml"
    path.write_text(
        "name: j\nsteps:\n"
        "  - {name: a, source: {inline: {rows: [{k: 1, flag: yes, ok: true}]}}}\n"
        "  - {name: b, source: {inline: {rows: [{k: 1}]}}}\n"
        "  - {name: j, inputs: [a, b], transform: {join: {on: [{left: k, right: k}]}}}\n"
        "  - {name: o, inputs: [j], sink: {discard: {}}}\n"
    )
    pipeline = load_pipeline(path)
    assert [(k.left, k.right) for k in pipeline.steps[2].transform.join.on] == [("k", "k")]
    row = pipeline.steps[0].source.inline.rows[0]
    assert row["flag"] == "yes"
    assert row["ok"] is True


def test_bad_yaml_names_line_and_problem(tmp_path: Path) -> None:
    path = write(tmp_path, "p.yaml", "name: p\nsteps: [\n  {name: a,\n")
    with pytest.raises(SpecError) as info:
        load_pipeline(path)
    message = str(info.value)
    assert message.startswith(f"{path}:")
    assert "invalid YAML" in message
    assert ":4:" in message  # the line where the flow sequence is left unclosed


def test_bad_json_names_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, "p.json", '{"name": "p",\n "steps": [}\n')
    with pytest.raises(SpecError, match=r"p\.json:2:\d+: invalid JSON"):
        load_pipeline(path)


def test_unknown_field_is_named_with_its_place_and_the_known_fields(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "p.yaml",
        "name: p\nsteps:\n  - name: a\n    source: {file: {path: x.csv, formt: FILE_FORMAT_CSV}}\n",
    )
    with pytest.raises(SpecError) as info:
        load_pipeline(path)
    message = str(info.value)
    assert 'unknown field "formt"' in message
    assert "Pipeline.steps[0].source.file" in message
    assert "connection, path, format" in message
    assert "\n" not in message


def test_unknown_top_level_field(tmp_path: Path) -> None:
    path = write(tmp_path, "p.yaml", "name: p\nstep: []\n")
    with pytest.raises(SpecError, match=r'unknown field "step" at Pipeline; expected one of: name'):
        load_pipeline(path)


def test_bad_enum_value_lists_the_allowed_values(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "p.yaml",
        "name: p\nsteps:\n  - name: a\n"
        "    source: {file: {path: x.csv, format: FILE_FORMAT_XLS}}\n",
    )
    with pytest.raises(SpecError) as info:
        load_pipeline(path)
    message = str(info.value)
    assert 'invalid value "FILE_FORMAT_XLS" at Pipeline.steps[0].source.file.format' in message
    assert "FILE_FORMAT_CSV, FILE_FORMAT_PARQUET" in message
    assert "UNSPECIFIED" not in message


def test_two_kinds_in_one_step(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "p.yaml",
        "name: p\nsteps:\n  - name: a\n    source: {file: {path: x.csv}}\n"
        "    sink: {file: {path: y.parquet}}\n",
    )
    with pytest.raises(SpecError, match=r"Pipeline\.steps\[0\] sets more than one kind"):
        load_pipeline(path)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "the file is empty"),
        ("- a\n- b\n", "expected a mapping of Pipeline fields"),
        ("name: p\nsteps: a\n", 'field "steps" at Pipeline must be a list'),
        ("name: [1]\n", "field name:"),
    ],
)
def test_wrong_shapes(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(SpecError, match=expected):
        load_pipeline(write(tmp_path, "p.yaml", text))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="no such file"):
        load_pipeline(tmp_path / "absent.yaml")


@pytest.fixture
def dead_address() -> Iterator[str]:
    """An address where nothing listens: a bound socket that never accepts."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"127.0.0.1:{sock.getsockname()[1]}"


def test_cli_rejects_a_bad_file_with_exit_4_before_any_call(
    tmp_path: Path, dead_address: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Were a call sent to this dead address, the exit code would be 5, not 4.
    path = write(tmp_path, "p.yaml", "name: p\nstepz: []\n")
    code = main(["--server", dead_address, "pipeline", "create", "-f", str(path)])
    out, err = capsys.readouterr()
    assert code == 4
    assert out == ""
    assert err.splitlines() == [
        f'error: {path}: unknown field "stepz" at Pipeline; expected one of: name, '
        "description, tags, labels, steps, default_retry, params, schedule, max_active_runs, "
        "max_active_tasks, run_timeout"
    ]
