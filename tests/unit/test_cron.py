"""Cron parsing and evaluation, time zones and the daylight-saving rule."""

from __future__ import annotations

import bisect
import random
import time
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from datadog_platform.api.scheduler.v1 import pipeline_pb2
from datadog_platform.scheduler.cron import (
    MACROS,
    CronError,
    CronSchedule,
    next_run_time,
    parse_schedule,
)
from datadog_platform.scheduler.domain import deterministic_run_id

PARIS = ZoneInfo("Europe/Paris")
NEW_YORK = ZoneInfo("America/New_York")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def local(tz: ZoneInfo, *args: int, fold: int = 0) -> datetime:
    return datetime(*args, tzinfo=tz, fold=fold)  # type: ignore[misc]


def fires(schedule: CronSchedule, after: datetime, count: int) -> list[datetime]:
    out = []
    for _ in range(count):
        after = schedule.next_after(after)
        out.append(after)
    return out


def walls(instants: list[datetime], tz: ZoneInfo) -> list[str]:
    """Instants as local wall times with their offset, e.g. "03:30+02:00"."""
    return [t.astimezone(tz).strftime("%m-%d %H:%M%z") for t in instants]


# --- parsing --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cron", "expected"),
    [
        ("", "is empty"),
        ("* * * *", "has 4 fields; expected 5 (minute hour day-of-month month day-of-week)"),
        ("* * * * * *", "has 6 fields"),
        ("61 * * * *", 'minute field "61": 61 is out of range 0-59'),
        ("* 24 * * *", 'hour field "24": 24 is out of range 0-23'),
        ("* * 0 * *", 'day-of-month field "0": 0 is out of range 1-31'),
        ("* * 32 * *", 'day-of-month field "32": 32 is out of range 1-31'),
        ("* * * 13 *", 'month field "13": 13 is out of range 1-12 or JAN-DEC'),
        ("* * * * 8", 'day-of-week field "8": 8 is out of range 0-7 (0 and 7 are Sunday)'),
        ("* * * JANUARY *", 'month field "JANUARY": unknown value "JANUARY"; use 1-12'),
        ("* * * * MONDAY", 'unknown value "MONDAY"; use 0-7'),
        ("x * * * *", 'minute field "x": "x" is not a number (0-59)'),
        ("MON * * * *", '"MON" is not a number'),
        ("5-1 * * * *", 'minute field "5-1": range "5-1" is backwards (5 is after 1)'),
        ("*/0 * * * *", 'step 0 in "*/0" must be 1-59'),
        ("*/60 * * * *", "step 60"),
        ("*/x * * * *", 'step "x" in "*/x" is not a number'),
        ("1,,2 * * * *", "empty list item"),
        ("-5 * * * *", '"" is not a number'),
        ("* * * * 1-", 'unknown value ""'),
        ("@every_5m", 'unknown macro "@every_5m"; use one of @hourly, @daily'),
        ("@reboot", "unknown macro"),
        ("0 0 30 2 *", "never fires: no day 30 in February"),
        ("0 0 31 4,6,9,11 *", "never fires"),
    ],
)
def test_parse_errors_name_the_field_value_and_range(cron: str, expected: str) -> None:
    with pytest.raises(CronError) as caught:
        parse_schedule(cron, "")
    assert caught.value.field == "cron"
    assert expected in caught.value.message, caught.value.message
    assert str(caught.value) == caught.value.message


@pytest.mark.parametrize("timezone", ["Europe/Pari", "Mars/Olympus", "../etc/passwd", "/etc/x"])
def test_unknown_time_zone(timezone: str) -> None:
    with pytest.raises(CronError) as caught:
        parse_schedule("0 * * * *", timezone)
    assert caught.value.field == "timezone"
    assert f'unknown time zone "{timezone}"' in caught.value.message
    assert "IANA" in caught.value.message


def test_day_31_of_some_months_and_leap_day_are_valid() -> None:
    parse_schedule("0 0 31 * *", "")
    parse_schedule("0 0 29 2 *", "")
    parse_schedule("0 0 30 2 MON", "")  # day-of-week ORs: Mondays in February


def test_fields_lists_ranges_steps_and_names() -> None:
    s = parse_schedule("0-10/5,30,*/20 */6 1,15-17 JAN,mar-May,11 MON-FRI", "")
    assert s.minutes == (0, 5, 10, 20, 30, 40)
    assert s.hours == (0, 6, 12, 18)
    assert s.days == (1, 15, 16, 17)
    assert s.months == (1, 3, 4, 5, 11)
    assert s.weekdays == (1, 2, 3, 4, 5)
    # "a/n" steps from a to the field's maximum.
    assert parse_schedule("50/3 22/1 * * *", "").minutes == (50, 53, 56, 59)
    assert parse_schedule("50/3 22/1 * * *", "").hours == (22, 23)


def test_day_of_week_0_and_7_are_sunday() -> None:
    assert parse_schedule("0 0 * * 7", "").weekdays == (0,)
    assert parse_schedule("0 0 * * 0,7", "").weekdays == (0,)
    assert parse_schedule("0 0 * * 5-7", "").weekdays == (0, 5, 6)
    assert parse_schedule("0 0 * * FRI-SUN", "").weekdays == (0, 5, 6)
    assert parse_schedule("0 0 * * sun", "").weekdays == (0,)
    assert parse_schedule("0 0 * * */2", "").weekdays == (0, 2, 4, 6)
    sundays = fires(parse_schedule("0 12 * * 7", ""), utc(2024, 1, 1), 3)
    assert sundays == [utc(2024, 1, 7, 12), utc(2024, 1, 14, 12), utc(2024, 1, 21, 12)]


@pytest.mark.parametrize(
    ("macro", "after", "expected"),
    [
        ("@hourly", utc(2024, 5, 5, 10, 30), [utc(2024, 5, 5, 11), utc(2024, 5, 5, 12)]),
        ("@daily", utc(2024, 5, 5, 10), [utc(2024, 5, 6), utc(2024, 5, 7)]),
        ("@midnight", utc(2024, 5, 5, 10), [utc(2024, 5, 6), utc(2024, 5, 7)]),
        ("@weekly", utc(2024, 5, 5, 10), [utc(2024, 5, 12), utc(2024, 5, 19)]),  # Sundays
        ("@monthly", utc(2024, 5, 5, 10), [utc(2024, 6, 1), utc(2024, 7, 1)]),
        ("@yearly", utc(2024, 5, 5, 10), [utc(2025, 1, 1), utc(2026, 1, 1)]),
        ("@annually", utc(2024, 5, 5, 10), [utc(2025, 1, 1), utc(2026, 1, 1)]),
        ("@DAILY", utc(2024, 5, 5, 10), [utc(2024, 5, 6), utc(2024, 5, 7)]),
    ],
)
def test_macros(macro: str, after: datetime, expected: list[datetime]) -> None:
    assert fires(parse_schedule(f"  {macro} ", ""), after, 2) == expected


def test_every_macro_is_covered() -> None:
    assert set(MACROS) == {
        "@hourly",
        "@daily",
        "@midnight",
        "@weekly",
        "@monthly",
        "@yearly",
        "@annually",
    }


# --- evaluation in UTC ---------------------------------------------------------------


def test_next_after_is_strictly_after() -> None:
    s = parse_schedule("*/15 * * * *", "")
    assert s.next_after(utc(2024, 1, 1, 10, 15)) == utc(2024, 1, 1, 10, 30)
    assert s.next_after(utc(2024, 1, 1, 10, 14, 59, 999999)) == utc(2024, 1, 1, 10, 15)
    assert s.next_after(utc(2024, 1, 1, 10, 15, 0, 1)) == utc(2024, 1, 1, 10, 30)
    assert s.previous_before(utc(2024, 1, 1, 10, 15)) == utc(2024, 1, 1, 10, 0)
    assert s.previous_before(utc(2024, 1, 1, 10, 15, 0, 1)) == utc(2024, 1, 1, 10, 15)


def test_results_are_utc_and_inputs_in_any_zone() -> None:
    s = parse_schedule("0 9 * * *", "")
    after = local(PARIS, 2024, 6, 1, 11, 0)  # 09:00 UTC
    result = s.next_after(after)
    assert result == utc(2024, 6, 2, 9)
    assert result.tzinfo is UTC
    with pytest.raises(ValueError, match="aware"):
        s.next_after(datetime(2024, 1, 1))


def test_month_and_year_ends() -> None:
    s = parse_schedule("30 23 31 * *", "")
    # Months without a 31st are skipped.
    assert fires(s, utc(2024, 1, 31, 23, 30), 3) == [
        utc(2024, 3, 31, 23, 30),
        utc(2024, 5, 31, 23, 30),
        utc(2024, 7, 31, 23, 30),
    ]
    daily = parse_schedule("0 0 * * *", "")
    assert daily.next_after(utc(2024, 12, 31, 0, 0)) == utc(2025, 1, 1)
    assert daily.previous_before(utc(2025, 1, 1)) == utc(2024, 12, 31)
    assert parse_schedule("59 23 31 12 *", "").next_after(utc(2024, 12, 31, 23, 59)) == utc(
        2025, 12, 31, 23, 59
    )


def test_leap_days() -> None:
    s = parse_schedule("0 12 29 2 *", "")
    assert fires(s, utc(2024, 3, 1), 3) == [
        utc(2028, 2, 29, 12),
        utc(2032, 2, 29, 12),
        utc(2036, 2, 29, 12),
    ]
    # 2100 is not a leap year: eight years between two 29ths of February.
    assert s.next_after(utc(2097, 1, 1)) == utc(2104, 2, 29, 12)
    assert s.previous_before(utc(2104, 2, 29, 12)) == utc(2096, 2, 29, 12)
    daily = parse_schedule("0 0 * * *", "")
    assert daily.next_after(utc(2024, 2, 28)) == utc(2024, 2, 29)
    assert daily.next_after(utc(2023, 2, 28)) == utc(2023, 3, 1)


def test_day_of_month_or_day_of_week_when_both_restricted() -> None:
    # The 13th of each month and every Friday.
    s = parse_schedule("0 0 13 * FRI", "")
    got = [t.date().isoformat() for t in fires(s, utc(2024, 9, 1), 6)]
    assert got == [
        "2024-09-06",
        "2024-09-13",
        "2024-09-20",
        "2024-09-27",
        "2024-10-04",
        "2024-10-11",
    ]
    assert s.next_after(utc(2024, 10, 11)) == utc(2024, 10, 13)
    # Only one of them restricted: that one alone decides.
    fridays = parse_schedule("0 0 * * FRI", "")
    assert fridays.next_after(utc(2024, 9, 7)) == utc(2024, 9, 13)
    thirteenth = parse_schedule("0 0 13 * *", "")
    assert thirteenth.next_after(utc(2024, 9, 14)) == utc(2024, 10, 13)
    # A step is a restriction too (only "*" is not).
    s = parse_schedule("0 0 */10 * MON", "")
    got = [t.date().isoformat() for t in fires(s, utc(2024, 9, 1), 5)]
    assert got == ["2024-09-02", "2024-09-09", "2024-09-11", "2024-09-16", "2024-09-21"]


def test_weekdays_in_a_month_range() -> None:
    s = parse_schedule("30 8 * JUN-AUG MON-FRI", "")
    assert s.next_after(utc(2024, 5, 31, 9)) == utc(2024, 6, 3, 8, 30)  # a Monday
    assert s.previous_before(utc(2024, 6, 3, 8, 30)) == utc(2023, 8, 31, 8, 30)  # a Thursday
    assert s.next_after(utc(2024, 8, 30, 8, 30)) == utc(2025, 6, 2, 8, 30)


def test_skipping_by_fields_is_fast() -> None:
    started = time.perf_counter()
    s = parse_schedule("0 0 29 2 MON", "Europe/Paris")  # 29 Feb or a Monday of February
    yearly = parse_schedule("@yearly", "America/New_York")
    t = utc(2024, 1, 1)
    for _ in range(500):
        t = yearly.next_after(t)
    assert t.astimezone(NEW_YORK) == local(NEW_YORK, 2523, 1, 1)  # 2024 is the first
    rare = parse_schedule("0 0 29 2 *", "")
    t = utc(2000, 1, 1)
    for _ in range(100):
        t = rare.next_after(t)
    s.next_after(utc(2024, 3, 1))
    assert time.perf_counter() - started < 1.0


# --- time zones and daylight saving ------------------------------------------------


def test_local_time_zone() -> None:
    s = parse_schedule("0 2 * * *", "Europe/Paris")
    assert s.next_after(utc(2024, 1, 10)) == utc(2024, 1, 10, 1)  # CET, +01:00
    assert s.next_after(utc(2024, 7, 10)) == utc(2024, 7, 11, 0)  # CEST, +02:00
    assert s.previous_before(utc(2024, 7, 11, 0)) == utc(2024, 7, 10, 0)


def test_paris_spring_forward_skipped_time_fires_once_shifted() -> None:
    # 2024-03-31 02:00 CET -> 03:00 CEST: 02:30 does not exist and fires at 03:30.
    daily = parse_schedule("30 2 * * *", "Europe/Paris")
    got = fires(daily, utc(2024, 3, 29, 12), 4)
    assert walls(got, PARIS) == [
        "03-30 02:30+0100",
        "03-31 03:30+0200",
        "04-01 02:30+0200",
        "04-02 02:30+0200",
    ]
    assert daily.previous_before(utc(2024, 4, 1, 0, 30)) == local(PARIS, 2024, 3, 31, 3, 30)


def test_paris_spring_forward_shifted_time_merges_with_a_real_one() -> None:
    # Hourly: 02:00 shifts to 03:00, which fires anyway: once.
    hourly = parse_schedule("0 * * * *", "Europe/Paris")
    got = fires(hourly, local(PARIS, 2024, 3, 31, 0, 30), 4)
    assert walls(got, PARIS) == [
        "03-31 01:00+0100",
        "03-31 03:00+0200",
        "03-31 04:00+0200",
        "03-31 05:00+0200",
    ]
    assert got[1] - got[0] == timedelta(hours=1)
    assert hourly.previous_before(got[2]) == got[1]
    assert hourly.previous_before(got[1]) == got[0]


def test_paris_fall_back_repeated_time_fires_once_first_occurrence() -> None:
    # 2024-10-27 03:00 CEST -> 02:00 CET: 02:00-02:59 happen twice.
    daily = parse_schedule("30 2 * * *", "Europe/Paris")
    got = fires(daily, utc(2024, 10, 25, 12), 3)
    assert walls(got, PARIS) == ["10-26 02:30+0200", "10-27 02:30+0200", "10-28 02:30+0100"]
    assert got[1] == utc(2024, 10, 27, 0, 30)
    # From inside the second pass, the fire time already passed.
    second_pass = local(PARIS, 2024, 10, 27, 2, 15, fold=1)
    assert daily.next_after(second_pass) == got[2]
    assert daily.previous_before(second_pass) == got[1]
    every_20 = parse_schedule("*/20 2 * * *", "Europe/Paris")
    got = fires(every_20, local(PARIS, 2024, 10, 27, 1, 59), 4)
    assert walls(got, PARIS) == [
        "10-27 02:00+0200",
        "10-27 02:20+0200",
        "10-27 02:40+0200",
        "10-28 02:00+0100",
    ]
    assert every_20.previous_before(local(PARIS, 2024, 10, 27, 2, 30, fold=1)) == got[2]


def test_new_york_spring_forward() -> None:
    # 2024-03-10 02:00 EST -> 03:00 EDT.
    half_hourly = parse_schedule("*/30 * * * *", "America/New_York")
    got = fires(half_hourly, local(NEW_YORK, 2024, 3, 10, 1, 0), 4)
    assert walls(got, NEW_YORK) == [
        "03-10 01:30-0500",
        "03-10 03:00-0400",  # 02:00 shifted, merged with 03:00
        "03-10 03:30-0400",  # 02:30 shifted, merged with 03:30
        "03-10 04:00-0400",
    ]
    daily = parse_schedule("15 2 * * *", "America/New_York")
    assert daily.next_after(utc(2024, 3, 9, 12)) == local(NEW_YORK, 2024, 3, 10, 3, 15)
    # Asked from between the change and the shifted time, it still comes.
    assert daily.next_after(local(NEW_YORK, 2024, 3, 10, 3, 5)) == local(
        NEW_YORK, 2024, 3, 10, 3, 15
    )
    assert daily.previous_before(local(NEW_YORK, 2024, 3, 10, 3, 20)) == local(
        NEW_YORK, 2024, 3, 10, 3, 15
    )
    assert daily.previous_before(local(NEW_YORK, 2024, 3, 10, 3, 10)) == local(
        NEW_YORK, 2024, 3, 9, 2, 15
    )


def test_new_york_fall_back() -> None:
    # 2024-11-03 02:00 EDT -> 01:00 EST: 01:00-01:59 happen twice.
    daily = parse_schedule("30 1 * * *", "America/New_York")
    got = fires(daily, utc(2024, 11, 2, 12), 2)
    assert got == [utc(2024, 11, 3, 5, 30), utc(2024, 11, 4, 6, 30)]
    hourly = parse_schedule("0 * * * *", "America/New_York")
    got = fires(hourly, local(NEW_YORK, 2024, 11, 3, 0, 30), 3)
    assert walls(got, NEW_YORK) == ["11-03 01:00-0400", "11-03 02:00-0500", "11-03 03:00-0500"]
    assert got[1] - got[0] == timedelta(hours=2)  # 01:00 EST is not a second fire time
    assert hourly.previous_before(got[1]) == got[0]
    assert hourly.next_after(local(NEW_YORK, 2024, 11, 3, 1, 0, fold=1)) == got[1]


def _reference(schedule: CronSchedule, start: datetime, end: datetime) -> list[datetime]:
    """Every fire instant from local wall times [start, end), minute by minute."""
    out = set()
    wall = start
    while wall < end:
        weekday = (wall.weekday() + 1) % 7
        day = (schedule.use_days and wall.day in schedule.days) or (
            schedule.use_weekdays and weekday in schedule.weekdays
        )
        if (
            day
            and wall.minute in schedule.minutes
            and wall.hour in schedule.hours
            and wall.month in schedule.months
        ):
            out.add(wall.replace(tzinfo=schedule.tz).astimezone(UTC))
        wall += timedelta(minutes=1)
    return sorted(out)


@pytest.mark.parametrize(
    ("cron", "timezone", "day"),
    [
        ("*/30 * * * *", "America/New_York", datetime(2024, 3, 10)),
        ("*/30 * * * *", "America/New_York", datetime(2024, 11, 3)),
        ("7,50 1-3 * * *", "Europe/Paris", datetime(2024, 3, 31)),
        ("7,50 1-3 * * *", "Europe/Paris", datetime(2024, 10, 27)),
        ("*/20 1,2 * * *", "Australia/Lord_Howe", datetime(2024, 4, 7)),  # 30-minute change
        ("*/20 1,2 * * *", "Australia/Lord_Howe", datetime(2024, 10, 6)),
        ("0 */3 * * *", "Pacific/Apia", datetime(2011, 12, 30)),  # a whole day skipped
        ("13 * * * *", "Europe/London", datetime(2024, 3, 31)),
    ],
)
def test_matches_a_minute_by_minute_reference_around_changes(
    cron: str, timezone: str, day: datetime
) -> None:
    schedule = parse_schedule(cron, timezone)
    expected = _reference(schedule, day - timedelta(days=2), day + timedelta(days=3))
    rng = random.Random(f"{cron}{timezone}")
    low = (day - timedelta(days=1)).replace(tzinfo=UTC)
    probes = [low + timedelta(seconds=rng.randrange(3 * 86400)) for _ in range(150)]
    probes += [f + d for f in expected for d in (timedelta(0), timedelta(seconds=1))]
    probes = [p for p in probes if expected[1] <= p <= expected[-2]]
    for t in probes:
        assert schedule.next_after(t) == expected[bisect.bisect_right(expected, t)], t
        assert schedule.previous_before(t) == expected[bisect.bisect_left(expected, t) - 1], t


# --- next_run_time and deterministic ids ----------------------------------------------


def _schedule(
    cron: str, start: datetime | None = None, end: datetime | None = None
) -> pipeline_pb2.Schedule:
    schedule = pipeline_pb2.Schedule(cron=cron, timezone="Europe/Paris")
    if start is not None:
        schedule.start_time.CopyFrom(Timestamp(seconds=int(start.timestamp())))
    if end is not None:
        schedule.end_time.CopyFrom(Timestamp(seconds=int(end.timestamp())))
    return schedule


def test_next_run_time_honours_start_and_end() -> None:
    after = utc(2024, 6, 1, 12)
    assert next_run_time(None, after) is None
    assert next_run_time(pipeline_pb2.Schedule(), after) is None
    assert next_run_time(_schedule("0 2 * * *"), after) == utc(2024, 6, 2, 0)
    # Start later: the first fire time at or after it.
    assert next_run_time(_schedule("0 2 * * *", start=utc(2024, 6, 10, 0)), after) == utc(
        2024, 6, 10, 0
    )
    assert next_run_time(_schedule("0 2 * * *", start=utc(2024, 6, 10, 0, 1)), after) == utc(
        2024, 6, 11, 0
    )
    # Start in the past changes nothing.
    assert next_run_time(_schedule("0 2 * * *", start=utc(2024, 1, 1)), after) == utc(2024, 6, 2)
    # End: a fire time at the end still counts, one after it does not.
    assert next_run_time(_schedule("0 2 * * *", end=utc(2024, 6, 2, 0)), after) == utc(2024, 6, 2)
    assert next_run_time(_schedule("0 2 * * *", end=utc(2024, 6, 1, 23, 59)), after) is None
    with pytest.raises(CronError):
        next_run_time(pipeline_pb2.Schedule(cron="0 2 * *"), after)


def test_deterministic_run_id() -> None:
    logical = utc(2024, 6, 1, 0, 0)
    run_id = deterministic_run_id("nightly", logical, "schedule")
    assert len(run_id) == 32
    assert int(run_id, 16) >= 0
    assert run_id[:12] == f"{int(logical.timestamp() * 1000):012x}"
    # The same inputs in any zone give the same id; any other input another one.
    assert deterministic_run_id("nightly", logical.astimezone(PARIS), "schedule") == run_id
    assert deterministic_run_id("nightly", logical, "0123") != run_id
    assert deterministic_run_id("other", logical, "schedule") != run_id
    later = deterministic_run_id("nightly", logical + timedelta(days=1), "schedule")
    assert later > run_id  # ids sort by logical time
