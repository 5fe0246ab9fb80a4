"""A participant's nightly job: a real APScheduler with its SQLite job store in a tmp dir.

Short schedules (three given seconds of every minute) stand in for "02:00": the runner
is stopped across all three, and what happens when it comes back is what happens the
morning after a night it was down. Waits are bounded and nothing asserts a duration.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta

import pytest
from apscheduler.events import EVENT_JOB_EXECUTED, EVENT_JOB_MISSED

from gateway.jobs.cron import CHINA, ScheduleError
from gateway.jobs.participant import NIGHTLY_JOB_ID, participant_scheduler, schedule_nightly


def three_coming_seconds() -> tuple[str, datetime]:
    """A 6-field cron firing at the next three whole seconds (every minute), and the last."""
    now = datetime.now(CHINA)
    times = [now.replace(microsecond=0) + timedelta(seconds=n) for n in (1, 2, 3)]
    return f"{','.join(str(t.second) for t in times)} * * * * *", times[-1]


class Events:
    def __init__(self, scheduler):
        self.executed: list[datetime] = []
        self.missed: list[datetime] = []
        self.seen = threading.Event()

        def on_event(event):
            kind = self.executed if event.code == EVENT_JOB_EXECUTED else self.missed
            kind.append(event.scheduled_run_time)
            self.seen.set()

        scheduler.add_listener(on_event, EVENT_JOB_EXECUTED | EVENT_JOB_MISSED)


def down_across_every_time(tmp_path, grace: timedelta) -> tuple[str, datetime]:
    spec, last = three_coming_seconds()
    first = participant_scheduler(tmp_path)
    first.start(paused=True)  # stored, never fired: the runner goes down at once
    schedule_nightly(first, time.sleep, schedule=spec, args=(0,), grace=grace)
    first.shutdown(wait=True)
    while datetime.now(CHINA) < last + timedelta(seconds=0.6):  # all three times pass while down
        time.sleep(0.1)
    return spec, last


def test_a_run_missed_while_down_runs_once_on_return(tmp_path):
    spec, last = down_across_every_time(tmp_path, grace=timedelta(minutes=5))
    back = participant_scheduler(tmp_path)
    events = Events(back)
    job = schedule_nightly(back, time.sleep, schedule=spec, args=(0,), grace=timedelta(minutes=5))
    try:
        assert events.seen.wait(20), "the missed run did not run"
        time.sleep(0.5)  # room for a second (wrong) run to show up
        assert events.executed == [last], "three missed times coalesce into one run, for the last"
        assert events.missed == []
        assert back.get_job(NIGHTLY_JOB_ID).next_run_time > last + timedelta(seconds=50)
    finally:
        back.shutdown(wait=True)
    assert job.id == NIGHTLY_JOB_ID
    assert (tmp_path / "schedule.db").exists()


def test_a_run_missed_beyond_the_grace_time_is_skipped(tmp_path):
    spec, last = down_across_every_time(tmp_path, grace=timedelta(seconds=1))
    time.sleep(0.6)  # now more than 1 s after the last time
    back = participant_scheduler(tmp_path)
    events = Events(back)
    schedule_nightly(back, time.sleep, schedule=spec, args=(0,), grace=timedelta(seconds=1))
    try:
        assert events.seen.wait(20)
        time.sleep(0.5)
        assert events.executed == []
        assert events.missed == [last]
    finally:
        back.shutdown(wait=True)


def test_the_default_is_two_in_the_morning_in_china_with_jitter(tmp_path):
    scheduler = participant_scheduler(tmp_path)
    try:
        job = schedule_nightly(scheduler, time.sleep, args=(0,), jitter=600)
        assert job.trigger.jitter == 600
        fire = job.trigger.get_next_fire_time(None, datetime(2026, 11, 24, 1, 0, tzinfo=CHINA))
        assert fire.tzinfo is not None
        two = datetime(2026, 11, 24, 2, 0, tzinfo=CHINA)
        assert two <= fire <= two + timedelta(minutes=10)
        assert job.misfire_grace_time == 6 * 3600 and job.coalesce
        # A restart with another time replaces the schedule (one job, not two).
        schedule_nightly(scheduler, time.sleep, args=(0,), at="01:30")
        assert [j.id for j in scheduler.get_jobs()] == [NIGHTLY_JOB_ID]
        assert scheduler.get_job(NIGHTLY_JOB_ID).trigger.fields[5].expressions[0].first == 1  # hour
    finally:
        scheduler.shutdown(wait=False)


def test_bad_settings_are_refused(tmp_path):
    scheduler = participant_scheduler(tmp_path)
    with pytest.raises(ScheduleError, match="nightly time '25:00': expected HH:MM"):
        schedule_nightly(scheduler, time.sleep, at="25:00")
    with pytest.raises(ScheduleError, match="jitter"):
        schedule_nightly(scheduler, time.sleep, jitter=-1)
    assert not scheduler.running
