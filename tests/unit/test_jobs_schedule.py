"""Schedules of the gateway's jobs: cron in Asia/Shanghai, the latest due time, settings."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from gateway.jobs.scheduler import (
    CHINA,
    DEFAULT_SCHEDULES,
    SELF_AUDIT,
    JobSettings,
    ScheduleError,
    at_time,
    latest_fire_time,
    parse_schedule,
)

HOUR = timedelta(hours=1)


def china(*args: int) -> datetime:
    return datetime(*args, tzinfo=CHINA)  # type: ignore[misc]


def test_the_self_audit_runs_at_three_in_china_by_default():
    trigger = parse_schedule(DEFAULT_SCHEDULES[SELF_AUDIT])
    assert latest_fire_time(trigger, china(2026, 11, 24, 3, 0, 30), HOUR) == china(2026, 11, 24, 3, 0)
    # 03:00 in Shanghai is 19:00 UTC the day before.
    assert latest_fire_time(trigger, datetime(2026, 11, 23, 19, 30, tzinfo=UTC), HOUR) == datetime(
        2026, 11, 23, 19, 0, tzinfo=UTC
    )


def test_nothing_is_due_outside_the_grace_period():
    trigger = parse_schedule("0 3 * * *")
    assert latest_fire_time(trigger, china(2026, 11, 24, 2, 59), HOUR) is None
    assert latest_fire_time(trigger, china(2026, 11, 24, 4, 0, 1), HOUR) is None
    assert latest_fire_time(trigger, china(2026, 11, 24, 4, 0, 1), 2 * HOUR) == china(2026, 11, 24, 3, 0)


def test_the_latest_of_several_missed_times_is_the_one_due():
    every_ten_minutes = parse_schedule("*/10 * * * *")
    assert latest_fire_time(every_ten_minutes, china(2026, 11, 24, 3, 5), HOUR) == china(2026, 11, 24, 3, 0)
    assert latest_fire_time(every_ten_minutes, china(2026, 11, 24, 3, 0), HOUR) == china(2026, 11, 24, 3, 0)
    every_two_seconds = parse_schedule("*/2 * * * * *")
    now = china(2026, 11, 24, 3, 0, 7, 400_000)
    assert latest_fire_time(every_two_seconds, now, timedelta(days=1)) == china(2026, 11, 24, 3, 0, 6)


def test_hh_mm_is_a_daily_schedule():
    assert at_time("03:00") == "0 3 * * *"
    assert at_time("23:45") == "45 23 * * *"
    for bad in ("3", "24:00", "12:60", "noon", "1:2:3"):
        with pytest.raises(ScheduleError, match="expected HH:MM"):
            at_time(bad, what="--self-audit-at")


def test_bad_schedules_name_the_setting():
    with pytest.raises(ScheduleError, match=r"schedule of self-audit '0 3 \* \*': expected 5 cron fields"):
        JobSettings().with_schedule(SELF_AUDIT, "0 3 * *")
    with pytest.raises(ScheduleError, match=r"schedule of self-audit '0 25 \* \* \*'"):
        JobSettings().with_schedule(SELF_AUDIT, "0 25 * * *")
    with pytest.raises(ScheduleError, match="unknown job 'selfaudit'; the jobs are self-audit"):
        JobSettings().with_schedule("selfaudit", "0 3 * * *")
    with pytest.raises(ScheduleError, match="job lease must be positive"):
        JobSettings(lease=timedelta(0)).validate()
