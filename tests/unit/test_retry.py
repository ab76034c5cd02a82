"""Retry policies: which policy a stage gets, what is retried, and backoff timing."""

from __future__ import annotations

import random
from typing import Any

import pytest
from google.protobuf.json_format import ParseDict

from datadog_platform.api.common.v1 import step_pb2
from datadog_platform.scheduler.retry import (
    NO_RETRY,
    RetryPolicy,
    backoff_delay,
    policy_of,
    stage_policy,
)


def upper(low: float, high: float) -> float:
    return high


def lower(low: float, high: float) -> float:
    return low


def retry(**fields: Any) -> step_pb2.RetryPolicy:
    return ParseDict(fields, step_pb2.RetryPolicy())


def test_the_delay_bound_grows_exponentially_up_to_the_cap() -> None:
    policy = RetryPolicy(max_attempts=10, initial_backoff=1.0, multiplier=2.0, max_backoff=10.0)
    assert [backoff_delay(policy, n, upper) for n in range(1, 7)] == [1, 2, 4, 8, 10, 10]
    # A multiplier of 1 keeps the delay constant.
    flat = RetryPolicy(max_attempts=5, initial_backoff=0.5, multiplier=1.0, max_backoff=9)
    assert [backoff_delay(flat, n, upper) for n in (1, 2, 3)] == [0.5, 0.5, 0.5]


def test_full_jitter_stays_between_zero_and_the_bound() -> None:
    policy = RetryPolicy(max_attempts=10, initial_backoff=1.0, multiplier=3.0, max_backoff=5.0)
    calls: list[tuple[float, float]] = []

    def record(low: float, high: float) -> float:
        calls.append((low, high))
        return (low + high) / 2

    assert backoff_delay(policy, 2, record) == 1.5
    assert calls == [(0.0, 3.0)]
    assert backoff_delay(policy, 1, lower) == 0.0
    # A random source straying outside the bounds is clamped.
    assert backoff_delay(policy, 3, lambda low, high: high * 2) == 5.0
    assert backoff_delay(policy, 3, lambda low, high: -1.0) == 0.0
    source = random.Random(7)
    for attempt in range(1, 50):
        assert 0.0 <= backoff_delay(policy, attempt, source.uniform) <= 5.0


def test_huge_exponents_do_not_overflow() -> None:
    policy = RetryPolicy(max_attempts=100, initial_backoff=1e300, multiplier=1e300, max_backoff=60)
    assert backoff_delay(policy, 99, upper) == 60.0


def test_zero_backoff_means_no_delay() -> None:
    assert backoff_delay(RetryPolicy(3, 0.0, 2.0, 0.0), 2, upper) == 0.0


def test_defaults_of_an_unset_policy_fields() -> None:
    assert policy_of(retry(maxAttempts=3)) == RetryPolicy(3, 1.0, 2.0, 300.0, False)
    assert policy_of(
        retry(
            maxAttempts=4,
            initialBackoff="0.25s",
            backoffMultiplier=1.5,
            maxBackoff="2s",
            retryAllFailures=True,
        )
    ) == RetryPolicy(4, 0.25, 1.5, 2.0, True)
    # An initial backoff beyond the default cap is not cut by the (unset) cap.
    assert policy_of(retry(maxAttempts=2, initialBackoff="600s")).max_backoff == 600.0


def test_what_is_retried() -> None:
    policy = RetryPolicy(max_attempts=3)
    assert policy.should_retry(1, "SOURCE_UNAVAILABLE", retryable=True)
    assert not policy.should_retry(1, "SOURCE_NOT_FOUND", retryable=False)
    for reason in ("EXECUTOR_UNAVAILABLE", "STAGE_TIMEOUT", "STAGE_INCOMPLETE"):
        assert policy.should_retry(2, reason, retryable=False)
    assert not policy.should_retry(1, "STAGE_INTERNAL_ERROR", retryable=False)
    assert not policy.should_retry(3, "EXECUTOR_UNAVAILABLE", retryable=True)  # exhausted
    every = RetryPolicy(max_attempts=2, retry_all_failures=True)
    assert every.should_retry(1, "SOURCE_NOT_FOUND", retryable=False)
    assert not every.should_retry(2, "SOURCE_NOT_FOUND", retryable=False)
    assert not NO_RETRY.should_retry(1, "EXECUTOR_UNAVAILABLE", retryable=True)


def test_which_policy_a_stage_gets() -> None:
    def step(name: str, attempts: int = 0) -> step_pb2.Step:
        s = step_pb2.Step(name=name)
        if attempts:
            s.retry.max_attempts = attempts
        return s

    stage = ("src", "mid", "out")

    def policy(*steps: step_pb2.Step, default: int | None = None) -> int:
        by_name = {s.name: s for s in steps}
        fallback = retry(maxAttempts=default) if default is not None else None
        return stage_policy(stage, by_name, fallback).max_attempts

    assert policy(step("src", 2), step("mid", 3), step("out", 4), default=9) == 4  # the sink's
    assert policy(step("src", 2), step("mid", 3), step("out"), default=9) == 3  # the last set
    assert policy(step("src", 2), step("mid"), step("out"), default=9) == 2
    assert policy(step("src"), step("mid"), step("out"), default=9) == 9  # the default
    assert policy(step("src"), step("mid"), step("out"), default=0) == 1  # unset default
    assert policy(step("src"), step("mid"), step("out")) == 1


@pytest.mark.parametrize("attempt", [0, -3])
def test_attempt_numbers_below_one_use_the_initial_bound(attempt: int) -> None:
    assert backoff_delay(RetryPolicy(5, 2.0, 2.0, 100.0), attempt, upper) == 2.0
