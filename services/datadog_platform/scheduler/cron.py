"""Cron schedules: a five-field cron parser and evaluator in an IANA time zone.

Syntax: ``minute hour day-of-month month day-of-week``, each field ``*``, a
number, a name (``JAN``-``DEC``, ``SUN``-``SAT``, any case), a range ``a-b``, a
step ``*/n``, ``a-b/n`` or ``a/n`` (from ``a`` to the field's maximum), or a comma
list of those. Day-of-week 0 and 7 are both Sunday. When day-of-month and
day-of-week are both restricted (neither is ``*``) a day matches if either does
(the classic cron rule); otherwise only the restricted one counts. Macros:
``@hourly``, ``@daily`` (``@midnight``), ``@weekly``, ``@monthly``, ``@yearly``
(``@annually``).

Fire times are local wall-clock times of the schedule's zone mapped to instants
with the daylight-saving rule of ``pipeline.proto``'s ``Schedule``: a local time
skipped by a spring-forward change fires once, shifted forward by the size of the
gap (02:30 becomes 03:30); a local time that happens twice fires once, at its first
occurrence. Both fall out of reading the wall time with ``fold=0`` (PEP 495). A
shifted time that lands on another fire time merges with it (fires once).

The evaluator skips by fields (month, then day, hour, minute), so finding the
next fire time costs a handful of steps whatever the gap between fire times.
"""

from __future__ import annotations

import calendar
import functools
from bisect import bisect_left, bisect_right
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from datadog_platform.api.scheduler.v1 import pipeline_pb2

MACROS: dict[str, str] = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}

_MONTH_NAMES = {
    name: number
    for number, name in enumerate(
        ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"),
        start=1,
    )
}
_DAY_NAMES = {
    name: number for number, name in enumerate(("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"))
}
_FIELD_LIST = "minute hour day-of-month month day-of-week"
_MINUTE = timedelta(minutes=1)
_DAY = timedelta(days=1)
# Looking back this far finds any DST gap that can still shift a fire time past t
# (the largest real gaps, e.g. Pacific/Apia in 2011, skipped a whole day).
_GAP_HORIZON = timedelta(hours=25)
# Bound on the field-skipping loop (a valid schedule fires at least every 8 years).
_MAX_STEPS = 100_000


class CronError(ValueError):
    """A schedule that cannot be parsed; ``field`` is "cron" or "timezone"."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    names: dict[str, int] | None = None
    hint: str = ""


_FIELDS = (
    _Field("minute", 0, 59),
    _Field("hour", 0, 23),
    _Field("day-of-month", 1, 31),
    _Field("month", 1, 12, _MONTH_NAMES, "1-12 or JAN-DEC"),
    _Field("day-of-week", 0, 7, _DAY_NAMES, "0-7 (0 and 7 are Sunday) or SUN-SAT"),
)


@dataclass(frozen=True, eq=False)
class CronSchedule:
    """A parsed cron expression in a time zone; see the module docstring.

    ``next_after`` and ``previous_before`` take and return aware datetimes
    (returned in UTC).
    """

    cron: str
    timezone: str
    tz: tzinfo
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: tuple[int, ...]
    months: tuple[int, ...]
    weekdays: tuple[int, ...]  # 0 = Sunday
    #: Which of day-of-month/day-of-week decide whether a day matches (OR of both).
    use_days: bool
    use_weekdays: bool

    # --- public API ---------------------------------------------------------------

    def next_after(self, t: datetime) -> datetime:
        """The first fire time strictly after ``t`` (aware UTC)."""
        t = _as_utc(t)
        if self.tz is UTC:
            naive = _floor_minute(t.replace(tzinfo=None)) + _MINUTE
            return self._first_at_or_after(naive).replace(tzinfo=UTC)
        local = t.astimezone(self.tz)
        start = local.replace(tzinfo=None, fold=0)
        best: datetime | None = None
        for naive in self._ascending(_floor_minute(start)):
            instant = self._instant(naive)
            if instant <= t:
                # The wall time at/just after t, or (t in the second pass of a
                # repeated hour) a time whose first occurrence is already past.
                continue
            best = instant
            shift = self._gap_shift(naive, instant)
            if shift:
                # Shifted out of a gap: a real wall time right after the gap may
                # come first.
                for later in self._ascending(naive + _MINUTE):
                    if later >= naive + shift:
                        break
                    if not self._gap_shift(later, later_instant := self._instant(later)):
                        best = min(best, later_instant)
                        break
            break
        assert best is not None
        # Times of a gap that ended shortly before t fire after the gap, maybe after t.
        lookback = _offset(t, self.tz) - _offset(t - _GAP_HORIZON, self.tz)
        if lookback > timedelta(0):
            for naive in self._ascending(_floor_minute(start - lookback)):
                if naive >= start:
                    break
                instant = self._instant(naive)
                if instant > t:
                    best = min(best, instant)
                    break
        return best

    def previous_before(self, t: datetime) -> datetime:
        """The last fire time strictly before ``t`` (aware UTC)."""
        t = _as_utc(t)
        if self.tz is UTC:
            naive = _ceil_minute(t.replace(tzinfo=None)) - _MINUTE
            return self._last_at_or_before(naive).replace(tzinfo=UTC)
        local = t.astimezone(self.tz)
        start = local.replace(tzinfo=None, fold=0)
        ahead = timedelta(0)
        if local.fold:
            # t is in the second pass of a repeated hour: later wall times of that
            # hour fired at their first pass, before t.
            ahead = _offset_of_wall(start, self.tz) - local.utcoffset()  # type: ignore[operator]
        best: datetime | None = None
        for naive in self._descending(_floor_minute(start + ahead)):
            instant = self._instant(naive)
            if instant >= t:
                continue
            best = instant
            if not self._gap_shift(naive, instant):
                # Times of a gap just before ``naive`` fire after the gap, maybe later.
                lookback = _offset(instant, self.tz) - _offset(instant - _GAP_HORIZON, self.tz)
                if lookback > timedelta(0):
                    for earlier in self._ascending(_ceil_minute(naive - lookback)):
                        if earlier >= naive:
                            break
                        other = self._instant(earlier)
                        if best < other < t:
                            best = other
            break
        assert best is not None
        return best

    # --- local wall times ---------------------------------------------------------

    def _instant(self, naive: datetime) -> datetime:
        # fold=0: the first occurrence of a repeated time; for a skipped time, the
        # offset before the change, i.e. shifted forward by the gap.
        return naive.replace(tzinfo=self.tz).astimezone(UTC)

    def _gap_shift(self, naive: datetime, instant: datetime) -> timedelta:
        """How far a skipped wall time was shifted (0 for a real wall time)."""
        return instant.astimezone(self.tz).replace(tzinfo=None) - naive

    def _ascending(self, naive: datetime) -> Iterator[datetime]:
        while True:
            naive = self._first_at_or_after(naive)
            yield naive
            naive += _MINUTE

    def _descending(self, naive: datetime) -> Iterator[datetime]:
        while True:
            naive = self._last_at_or_before(naive)
            yield naive
            naive -= _MINUTE

    def _day_matches(self, year: int, month: int, day: int) -> bool:
        if self.use_days and day in self.days:
            return True
        return self.use_weekdays and _cron_weekday(year, month, day) in self.weekdays

    def _next_day(self, year: int, month: int, day: int) -> int | None:
        """The first matching day ≥ ``day`` of the month, None if there is none."""
        last = calendar.monthrange(year, month)[1]
        found: list[int] = []
        if self.use_days:
            index = bisect_left(self.days, day)
            if index < len(self.days) and self.days[index] <= last:
                found.append(self.days[index])
        if self.use_weekdays:
            weekday = _cron_weekday(year, month, day)
            ahead = min((w - weekday) % 7 for w in self.weekdays)
            if day + ahead <= last:
                found.append(day + ahead)
        return min(found) if found else None

    def _previous_day(self, year: int, month: int, day: int) -> int | None:
        """The last matching day ≤ ``day`` of the month, None if there is none."""
        found: list[int] = []
        if self.use_days:
            index = bisect_right(self.days, day) - 1
            if index >= 0:
                found.append(self.days[index])
        if self.use_weekdays:
            weekday = _cron_weekday(year, month, day)
            back = min((weekday - w) % 7 for w in self.weekdays)
            if day - back >= 1:
                found.append(day - back)
        return max(found) if found else None

    def _first_at_or_after(self, naive: datetime) -> datetime:
        """The first matching wall time ≥ ``naive`` (whole minutes)."""
        year, month, day = naive.year, naive.month, naive.day
        hour, minute = naive.hour, naive.minute
        for _ in range(_MAX_STEPS):
            if month not in self.months:
                index = bisect_left(self.months, month)
                if index == len(self.months):
                    year, month = year + 1, self.months[0]
                else:
                    month = self.months[index]
                day, hour, minute = 1, 0, 0
                continue
            found = self._next_day(year, month, day)
            if found is None:
                year, month = (year + 1, 1) if month == 12 else (year, month + 1)
                day, hour, minute = 1, 0, 0
                continue
            if found != day:
                day, hour, minute = found, 0, 0
            index = bisect_left(self.hours, hour)
            if index == len(self.hours):
                year, month, day = _shift_day(year, month, day, _DAY)
                hour = minute = 0
                continue
            if self.hours[index] != hour:
                hour, minute = self.hours[index], 0
            index = bisect_left(self.minutes, minute)
            if index == len(self.minutes):
                hour, minute = hour + 1, 0
                if hour == 24:
                    year, month, day = _shift_day(year, month, day, _DAY)
                    hour = 0
                continue
            return datetime(year, month, day, hour, self.minutes[index])
        raise ValueError(f"cron {self.cron!r} has no fire time after {naive}")

    def _last_at_or_before(self, naive: datetime) -> datetime:
        """The last matching wall time ≤ ``naive`` (whole minutes)."""
        year, month, day = naive.year, naive.month, naive.day
        hour, minute = naive.hour, naive.minute
        for _ in range(_MAX_STEPS):
            if month not in self.months:
                index = bisect_right(self.months, month) - 1
                if index < 0:
                    year, month = year - 1, self.months[-1]
                else:
                    month = self.months[index]
                day, hour, minute = calendar.monthrange(year, month)[1], 23, 59
                continue
            found = self._previous_day(year, month, day)
            if found is None:
                year, month = (year - 1, 12) if month == 1 else (year, month - 1)
                day, hour, minute = calendar.monthrange(year, month)[1], 23, 59
                continue
            if found != day:
                day, hour, minute = found, 23, 59
            index = bisect_right(self.hours, hour) - 1
            if index < 0:
                year, month, day = _shift_day(year, month, day, -_DAY)
                hour, minute = 23, 59
                continue
            if self.hours[index] != hour:
                hour, minute = self.hours[index], 59
            index = bisect_right(self.minutes, minute) - 1
            if index < 0:
                hour, minute = hour - 1, 59
                if hour < 0:
                    year, month, day = _shift_day(year, month, day, -_DAY)
                    hour = 23
                continue
            return datetime(year, month, day, hour, self.minutes[index])
        raise ValueError(f"cron {self.cron!r} has no fire time before {naive}")


# --- parsing ---------------------------------------------------------------------


@functools.lru_cache(maxsize=1024)
def parse_schedule(cron: str, timezone: str) -> CronSchedule:
    """Parse a cron expression read in IANA ``timezone`` ("" = UTC).

    Raises :class:`CronError` naming the field ("cron" or "timezone") and, for a
    bad expression, which cron field, what value and the allowed values.
    """
    tz = _zone(timezone)
    text = cron.strip()
    if not text:
        raise CronError("cron", f"is empty; expected 5 fields ({_FIELD_LIST}) or a macro")
    if text.startswith("@"):
        expanded = MACROS.get(text.lower())
        if expanded is None:
            raise CronError(
                "cron",
                f'unknown macro "{text}"; use one of {", ".join(MACROS)}',
            )
        text = expanded
    parts = text.split()
    if len(parts) != 5:
        raise CronError(
            "cron",
            f'"{cron}" has {len(parts)} field{"" if len(parts) == 1 else "s"}; expected 5'
            f" ({_FIELD_LIST}) or a macro ({', '.join(MACROS)})",
        )
    values = [_parse_field(part, spec) for part, spec in zip(parts, _FIELDS, strict=True)]
    minutes, hours, days, months, weekdays = values
    weekdays = sorted({w % 7 for w in weekdays})
    days_restricted, weekdays_restricted = parts[2] != "*", parts[4] != "*"
    schedule = CronSchedule(
        cron=cron,
        timezone=timezone,
        tz=tz,
        minutes=tuple(minutes),
        hours=tuple(hours),
        days=tuple(days),
        months=tuple(months),
        weekdays=tuple(weekdays),
        use_days=days_restricted or not weekdays_restricted,
        use_weekdays=weekdays_restricted,
    )
    if schedule.use_days and not schedule.use_weekdays:
        # Only day-of-month decides: some chosen month must have some chosen day.
        longest = max(_longest_month(m) for m in months)
        if min(days) > longest:
            names = ", ".join(calendar.month_name[m] for m in months)
            raise CronError(
                "cron",
                f'"{cron}" never fires: no day {", ".join(map(str, days))} in {names}',
            )
    return schedule


def _zone(timezone: str) -> tzinfo:
    if timezone in ("", "UTC", "Etc/UTC"):
        return UTC  # the fast path: no daylight saving to handle
    try:
        return ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise CronError(
            "timezone",
            f'unknown time zone "{timezone}"; use an IANA name such as "Europe/Paris"'
            ' or "America/New_York" (empty means UTC)',
        ) from None


def _parse_field(text: str, spec: _Field) -> list[int]:
    def problem(message: str) -> CronError:
        return CronError("cron", f'{spec.name} field "{text}": {message}')

    def value(token: str) -> int:
        if token.isdigit():
            number = int(token)
            if not spec.low <= number <= spec.high:
                allowed = spec.hint or f"{spec.low}-{spec.high}"
                raise problem(f"{number} is out of range {allowed}")
            return number
        if spec.names is not None and token.upper() in spec.names:
            return spec.names[token.upper()]
        if spec.names is not None:
            raise problem(f'unknown value "{token}"; use {spec.hint}')
        raise problem(f'"{token}" is not a number ({spec.low}-{spec.high})')

    # '*' in day-of-week means 0-6 (7 would only repeat Sunday).
    full_high = 6 if spec.names is _DAY_NAMES else spec.high
    result: set[int] = set()
    for item in text.split(","):
        if not item:
            raise problem("empty list item")
        base, slash, step_text = item.partition("/")
        step = 1
        if slash:
            if not step_text.isdigit():
                raise problem(f'step "{step_text}" in "{item}" is not a number')
            step = int(step_text)
            if not 1 <= step <= full_high - spec.low:
                raise problem(
                    f'step {step} in "{item}" must be 1-{full_high - spec.low}'
                    f" (the field's range is {spec.low}-{full_high})"
                )
        if base == "*":
            low, high = spec.low, full_high
        elif "-" in base:
            first, _, last = base.partition("-")
            low, high = value(first), value(last)
            if low > high and spec.names is _DAY_NAMES and high == 0:
                high = 7  # e.g. FRI-SUN: Sunday as the end of a week
            if low > high:
                raise problem(f'range "{base}" is backwards ({low} is after {high})')
        else:
            low = value(base)
            # "a/n" steps from a to the field's maximum.
            high = full_high if slash else low
        result.update(range(low, high + 1, step))
    return sorted(result)


def _longest_month(month: int) -> int:
    return 29 if month == 2 else calendar.monthrange(2001, month)[1]


# --- schedules of pipelines ---------------------------------------------------------


def schedule_bounds(
    schedule: pipeline_pb2.Schedule,
) -> tuple[datetime | None, datetime | None]:
    """The schedule's ``start_time`` and ``end_time`` (None when unset)."""
    start = schedule.start_time.ToDatetime(UTC) if schedule.HasField("start_time") else None
    end = schedule.end_time.ToDatetime(UTC) if schedule.HasField("end_time") else None
    return start, end


def next_run_time(schedule: pipeline_pb2.Schedule | None, after: datetime) -> datetime | None:
    """The schedule's first fire time strictly after ``after``, not before its
    start_time; None without a schedule (or cron) or past its end_time.

    Raises :class:`CronError` for an invalid schedule (stored ones are valid).
    """
    if schedule is None or not schedule.cron:
        return None
    parsed = parse_schedule(schedule.cron, schedule.timezone)
    start, end = schedule_bounds(schedule)
    after = _as_utc(after)
    if start is not None and start > after:
        # Fire times are whole minutes, so this finds one at or after start.
        after = start - timedelta(microseconds=1)
    fire = parsed.next_after(after)
    if end is not None and fire > end:
        return None
    return fire


# --- helpers --------------------------------------------------------------------------


def _as_utc(t: datetime) -> datetime:
    if t.tzinfo is None:
        raise ValueError(f"naive datetime {t}: cron needs aware datetimes")
    return t.astimezone(UTC)


def _floor_minute(t: datetime) -> datetime:
    return t.replace(second=0, microsecond=0)


def _ceil_minute(t: datetime) -> datetime:
    floor = _floor_minute(t)
    return floor if floor == t else floor + _MINUTE


def _offset(t: datetime, tz: tzinfo) -> timedelta:
    offset = t.astimezone(tz).utcoffset()
    assert offset is not None
    return offset


def _offset_of_wall(naive: datetime, tz: tzinfo) -> timedelta:
    offset = naive.replace(tzinfo=tz, fold=0).utcoffset()
    assert offset is not None
    return offset


def _cron_weekday(year: int, month: int, day: int) -> int:
    """0 = Sunday … 6 = Saturday."""
    return (date(year, month, day).weekday() + 1) % 7


def _shift_day(year: int, month: int, day: int, delta: timedelta) -> tuple[int, int, int]:
    moved = date(year, month, day) + delta
    return moved.year, moved.month, moved.day
