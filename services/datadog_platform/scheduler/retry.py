"""Stage retry policies: which policy applies to a stage, which failures are retried,
and how long to wait before the next attempt.

Everything here is pure (the random source is injected), so retry timing is unit
tested without sleeping.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from google.protobuf import duration_pb2

from datadog_platform.api.common.v1 import step_pb2
from datadog_platform.scheduler.domain import (
    EXECUTOR_UNAVAILABLE,
    STAGE_INCOMPLETE,
    STAGE_TIMEOUT,
)

#: Defaults of the unset fields of a RetryPolicy (see step.proto).
DEFAULT_INITIAL_BACKOFF = 1.0
DEFAULT_MULTIPLIER = 2.0
DEFAULT_MAX_BACKOFF = 300.0
#: Bounds of ``max_attempts`` the validation enforces.
MAX_ATTEMPTS_LIMIT = 100

#: Failures the scheduler itself observes that are worth another attempt: the
#: executor unreachable, a deadline exceeded, or an executor lost mid-attempt (its
#: stream broke or ended without a result). Executor-reported failures say
#: themselves whether they are retryable.
RETRYABLE_DISPATCH_REASONS = frozenset({EXECUTOR_UNAVAILABLE, STAGE_TIMEOUT, STAGE_INCOMPLETE})


@dataclass(frozen=True)
class RetryPolicy:
    """An effective retry policy, defaults applied."""

    max_attempts: int = 1
    initial_backoff: float = DEFAULT_INITIAL_BACKOFF
    multiplier: float = DEFAULT_MULTIPLIER
    max_backoff: float = DEFAULT_MAX_BACKOFF
    retry_all_failures: bool = False

    def should_retry(self, attempt: int, reason: str, retryable: bool) -> bool:
        """Whether a failed ``attempt`` (1-based) is followed by another one."""
        if attempt >= self.max_attempts:
            return False
        return self.retry_all_failures or retryable or reason in RETRYABLE_DISPATCH_REASONS


#: The policy of a stage nothing configures: a single attempt.
NO_RETRY = RetryPolicy()


def _seconds(duration: duration_pb2.Duration) -> float:
    return duration.seconds + duration.nanos / 1e9


def policy_of(message: step_pb2.RetryPolicy) -> RetryPolicy:
    """The effective policy of a RetryPolicy message (unset fields take their defaults)."""
    initial = (
        _seconds(message.initial_backoff)
        if message.HasField("initial_backoff")
        else DEFAULT_INITIAL_BACKOFF
    )
    # An unset cap never cuts an explicit initial backoff (validation only compares
    # the two when both are set).
    cap = (
        _seconds(message.max_backoff)
        if message.HasField("max_backoff")
        else max(DEFAULT_MAX_BACKOFF, initial)
    )
    return RetryPolicy(
        max_attempts=max(1, message.max_attempts),
        initial_backoff=initial,
        multiplier=message.backoff_multiplier or DEFAULT_MULTIPLIER,
        max_backoff=cap,
        retry_all_failures=message.retry_all_failures,
    )


def stage_policy(
    stage_steps: Sequence[str],
    steps: Mapping[str, step_pb2.Step],
    default: step_pb2.RetryPolicy | None,
) -> RetryPolicy:
    """The policy of the stage made of ``stage_steps`` (source first, sink last).

    Its sink step's policy if set, else the last other step of the stage that sets
    one, else the pipeline default, else a single attempt. A policy is "set" when
    its ``max_attempts`` is positive.
    """
    chosen = [steps[name].retry for name in stage_steps if steps[name].retry.max_attempts > 0]
    if chosen:
        # The sink is last, so the last set policy is the sink's whenever it has one.
        return policy_of(chosen[-1])
    if default is not None and default.max_attempts > 0:
        return policy_of(default)
    return NO_RETRY


def backoff_delay(
    policy: RetryPolicy, attempt: int, uniform: Callable[[float, float], float]
) -> float:
    """Seconds to wait after failed ``attempt`` (1-based) before the next one.

    Full jitter: uniform in [0, min(max_backoff, initial * multiplier^(attempt-1))],
    which spreads retries of many stages failing together (e.g. an executor restart).
    """
    try:
        bound = policy.initial_backoff * policy.multiplier ** max(0, attempt - 1)
    except OverflowError:
        bound = math.inf
    bound = min(policy.max_backoff, bound)
    if bound <= 0:
        return 0.0
    return min(bound, max(0.0, uniform(0.0, bound)))
