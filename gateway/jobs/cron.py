"""Cron schedules in Asia/Shanghai, shared by the gateway's jobs and a participant's nightly run.

Client-safe: the standard library and APScheduler only (gateway/jobs/participant.py
runs beside a province's adapter and imports nothing of the server).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from apscheduler.triggers.cron import CronTrigger

CHINA = ZoneInfo("Asia/Shanghai")


class ScheduleError(ValueError):
    """A schedule setting is not valid; the message names it."""


def parse_schedule(spec: str, *, what: str = "schedule", jitter: int | None = None) -> CronTrigger:
    """A cron schedule in Asia/Shanghai: 5 fields (minute hour day month day-of-week) or 6
    with seconds first (``*/2 * * * * *``, for tests). Day-of-week is APScheduler's: names
    (mon-sun) are unambiguous; numbers count from Monday = 0."""
    fields = spec.split()
    if len(fields) == 5:
        fields = ["0", *fields]
    if len(fields) != 6:
        raise ScheduleError(
            f"{what} {spec!r}: expected 5 cron fields (minute hour day month day-of-week) "
            f"or 6 with seconds first"
        )
    second, minute, hour, day, month, day_of_week = fields
    try:
        return CronTrigger(
            second=second,
            minute=minute,
            hour=hour,
            day=day,
            month=month,
            day_of_week=day_of_week,
            timezone=CHINA,
            jitter=jitter or None,
        )
    except ValueError as exc:
        raise ScheduleError(f"{what} {spec!r}: {exc}") from None


def at_time(text: str, *, what: str = "time") -> str:
    """``HH:MM`` (Asia/Shanghai) as a daily cron schedule."""
    try:
        hour, minute = (int(part) for part in text.split(":"))
    except ValueError:
        raise ScheduleError(f"{what} {text!r}: expected HH:MM (24-hour, Asia/Shanghai)") from None
    if not (0 <= hour < 24 and 0 <= minute < 60):
        raise ScheduleError(f"{what} {text!r}: expected HH:MM (24-hour, Asia/Shanghai)")
    return f"{minute} {hour} * * *"


def latest_fire_time(trigger: CronTrigger, now: datetime, grace: timedelta) -> datetime | None:
    """The latest time ``trigger`` fires at in [now - grace, now], or None.

    ``get_next_fire_time(None, s)`` is the first fire time at or after ``s`` and never
    decreases as ``s`` grows, so a binary search over whole seconds (cron's resolution)
    finds the last ``s`` whose next fire time is still not after ``now``: ~17 probes for a
    day of grace, whatever the schedule's frequency.
    """
    earliest = (now - grace).replace(microsecond=0)
    first = trigger.get_next_fire_time(None, earliest)
    if first is None or first > now:
        return None
    lo, hi = 0, int((now - earliest).total_seconds())
    while lo < hi:
        mid = (lo + hi + 1) // 2
        probe = trigger.get_next_fire_time(None, earliest + timedelta(seconds=mid))
        if probe is not None and probe <= now:
            lo = mid
        else:
            hi = mid - 1
    found: datetime | None = trigger.get_next_fire_time(None, earliest + timedelta(seconds=lo))
    assert found is not None
    return found.astimezone(UTC)
