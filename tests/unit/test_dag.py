"""The stage state machine (scheduler.dag): transitions, readiness, UPSTREAM_FAILED
propagation and the run's outcome, without any I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from datadog_platform.scheduler import dag
from datadog_platform.scheduler.domain import (
    RunState,
    StageOutput,
    StageRun,
    StageState,
    TaskMetrics,
)

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
METRICS = TaskMetrics(rows_read=3, rows_written=3)


def stage(stage_id: str, *upstream: str, state: StageState = StageState.PENDING) -> StageRun:
    return StageRun(stage_id, (stage_id,), state=state, upstream=upstream)


def diamond() -> list[StageRun]:
    """a → (b, c) → d, and e independent."""
    return [stage("a"), stage("b", "a"), stage("c", "a"), stage("d", "b", "c"), stage("e")]


# --- transitions ------------------------------------------------------------------------


def test_an_attempt_goes_queued_running_succeeded() -> None:
    s = stage("a")
    dag.queue_attempt(s, NOW)
    assert (s.state, s.attempt, s.start_time) == (StageState.QUEUED, 1, None)
    assert dag.start_attempt(s, NOW)
    assert (s.state, s.start_time) == (StageState.RUNNING, NOW)
    assert not dag.start_attempt(s, NOW + timedelta(seconds=1))  # started once
    later = NOW + timedelta(seconds=2)
    dag.succeed(s, later, METRICS, [StageOutput("a", "file:///a", 3)])
    assert (s.state, s.metrics, s.end_time) == (StageState.SUCCEEDED, METRICS, later)
    assert s.outputs == (StageOutput("a", "file:///a", 3),)


def test_success_without_a_started_event_still_records_a_start() -> None:
    s = stage("a")
    dag.queue_attempt(s, NOW)
    dag.succeed(s, NOW, METRICS, ())
    assert (s.state, s.start_time, s.end_time) == (StageState.SUCCEEDED, NOW, NOW)


def test_a_retry_keeps_the_error_until_the_next_attempt_is_queued() -> None:
    s = stage("a")
    dag.queue_attempt(s, NOW)
    dag.start_attempt(s, NOW)
    due = NOW + timedelta(seconds=5)
    dag.schedule_retry(s, NOW, "SOURCE_UNAVAILABLE", "refused", due, METRICS)
    assert (s.state, s.attempt, s.error_reason, s.error_message) == (
        StageState.QUEUED,
        1,
        "SOURCE_UNAVAILABLE",
        "refused",
    )
    assert (s.next_attempt_time, s.metrics, s.end_time) == (due, METRICS, NOW)
    dag.queue_attempt(s, due)
    assert (s.state, s.attempt, s.error_reason, s.error_message) == (StageState.QUEUED, 2, "", "")
    assert (s.next_attempt_time, s.metrics, s.end_time) == (None, TaskMetrics(), None)


def test_failures_without_reason_or_message_get_defaults() -> None:
    s = stage("a")
    dag.fail(s, NOW, "", "")
    assert (s.state, s.error_reason) == (StageState.FAILED, "UNKNOWN")
    assert s.error_message


def test_upstream_failed_and_cancelled_stages() -> None:
    s = stage("b", "a")
    dag.upstream_failed(s, NOW, "a")
    assert (s.state, s.error_reason, s.end_time) == (
        StageState.UPSTREAM_FAILED,
        "UPSTREAM_FAILED",
        NOW,
    )
    assert '"a"' in s.error_message
    c = stage("c")
    dag.cancel(c, NOW)
    assert (c.state, c.error_reason, c.end_time) == (StageState.CANCELLED, "", NOW)
    t = stage("t")
    dag.cancel(t, NOW, "RUN_TIMEOUT", dag.run_timeout_message(30))
    assert (t.error_reason, t.error_message) == (
        "RUN_TIMEOUT",
        "the run exceeded its run_timeout of 30s",
    )


# --- the graph ----------------------------------------------------------------------------


def test_roots_are_ready_and_a_join_waits_for_all_its_upstream() -> None:
    stages = diamond()
    graph = dag.RunGraph(stages)
    assert graph.initially_ready() == ["a", "e"]
    assert graph.initially_blocked() == {}
    stages[0].state = StageState.SUCCEEDED
    assert graph.succeeded("a") == ["b", "c"]
    stages[1].state = StageState.SUCCEEDED
    assert graph.succeeded("b") == []  # d still waits for c
    stages[2].state = StageState.SUCCEEDED
    assert graph.succeeded("c") == ["d"]
    assert graph.succeeded("e") == []


def test_a_failure_blocks_everything_downstream_transitively() -> None:
    stages = diamond()
    graph = dag.RunGraph(stages)
    assert graph.failed("a") == ["b", "c", "d"]
    # A stage blocked once is not reported again.
    assert graph.failed("b") == []


def test_a_failure_spares_stages_already_running_or_independent() -> None:
    stages = diamond()
    graph = dag.RunGraph(stages)
    stages[0].state = StageState.SUCCEEDED
    graph.succeeded("a")
    stages[1].state = StageState.FAILED
    stages[2].state = StageState.RUNNING
    assert graph.failed("b") == ["d"]
    # d can no longer become ready when c succeeds.
    stages[2].state = StageState.SUCCEEDED
    assert graph.succeeded("c") == []


def test_a_resumed_run_is_indexed_from_its_states() -> None:
    stages = [
        stage("a", state=StageState.SUCCEEDED),
        stage("b", "a"),
        stage("c", "a", state=StageState.RUNNING),
        stage("d", "b", "c"),
        stage("x", state=StageState.FAILED),
        stage("y", "x"),
        stage("z", "y"),
    ]
    graph = dag.RunGraph(stages)
    assert graph.initially_ready() == ["b"]
    assert graph.initially_blocked() == {"y": "x", "z": "x"}
    assert graph.initially_ready() == ["b"]  # the blocked ones are no longer waiting
    stages[1].state = StageState.SUCCEEDED
    assert graph.succeeded("b") == []
    stages[2].state = StageState.SUCCEEDED
    assert graph.succeeded("c") == ["d"]


def test_an_upstream_listed_twice_is_waited_for_once() -> None:
    stages = [stage("a"), stage("b", "a", "a")]
    graph = dag.RunGraph(stages)
    stages[0].state = StageState.SUCCEEDED
    assert graph.succeeded("a") == ["b"]


def test_an_unknown_upstream_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown stage"):
        dag.RunGraph([stage("b", "nope")])


def test_a_wide_fan_in_costs_linear_time() -> None:
    # One join behind 5,000 stages: each success is O(its downstream).
    width = 5000
    stages = [stage("root")] + [stage(f"s{i}", "root") for i in range(width)]
    stages.append(stage("join", *(f"s{i}" for i in range(width))))
    graph = dag.RunGraph(stages)
    assert graph.succeeded("root") == [f"s{i}" for i in range(width)]
    ready: list[str] = []
    for i in range(width):
        ready += graph.succeeded(f"s{i}")
    assert ready == ["join"]


# --- the outcome ---------------------------------------------------------------------------


def test_no_outcome_while_a_stage_is_unfinished() -> None:
    stages = [stage("a", state=StageState.SUCCEEDED), stage("b", state=StageState.QUEUED)]
    assert dag.run_outcome(stages) is None


def test_all_succeeded_is_success() -> None:
    stages = [stage("a", state=StageState.SUCCEEDED)] * 2
    assert dag.run_outcome(stages) == dag.Outcome(RunState.SUCCEEDED)


def test_failure_names_the_failed_stages_and_counts_the_skipped_ones() -> None:
    failed = stage("b", state=StageState.FAILED)
    failed.error_message = "b.csv does not exist"
    stages = [
        stage("a", state=StageState.SUCCEEDED),
        failed,
        stage("c", state=StageState.UPSTREAM_FAILED),
        stage("d", state=StageState.UPSTREAM_FAILED),
    ]
    outcome = dag.run_outcome(stages)
    assert outcome == dag.Outcome(
        RunState.FAILED, 'stage "b" failed: b.csv does not exist; 2 downstream stages not run'
    )
    assert dag.run_outcome(stages[:2]) == dag.Outcome(
        RunState.FAILED, 'stage "b" failed: b.csv does not exist'
    )


def test_many_failures_are_summarised() -> None:
    stages = []
    for i in range(8):
        s = stage(f"s{i}", state=StageState.FAILED)
        s.error_message = f"boom {i}"
        stages.append(s)
    outcome = dag.run_outcome(stages)
    assert outcome is not None
    assert outcome.error_message.count("failed:") == dag.MAX_STAGES_IN_MESSAGE
    assert outcome.error_message.endswith("3 more stages failed")
