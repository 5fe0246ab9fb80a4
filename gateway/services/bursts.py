"""One log line per burst of the same failure, with a count, instead of one per request.

During a database outage every request fails the same way; 9,000 tracebacks in 20 s
help nobody. The first failure of a burst is logged at once, then at most one line per
``interval`` with the number since the last line, and one line when it stops.
"""

from __future__ import annotations

import logging
import threading
import time

log = logging.getLogger("gateway.faults")


class BurstLog:
    def __init__(self, what: str, *, interval: float = 30.0, quiet_after: float = 10.0):
        self._what = what
        self._interval = interval
        self._quiet_after = quiet_after
        self._lock = threading.Lock()
        self._count = 0
        self._since_line = 0
        self._first = 0.0
        self._last_line = 0.0
        self._last_event = 0.0

    def note(self, kind: str) -> None:
        now = time.monotonic()
        with self._lock:
            if self._count and now - self._last_event > self._quiet_after:
                self._end(now)
            self._last_event = now
            self._count += 1
            self._since_line += 1
            if self._count == 1:
                self._first = self._last_line = now
                self._since_line = 0
                log.error("%s (%s); requests are answered UNAVAILABLE until it recovers", self._what, kind)
            elif now - self._last_line >= self._interval:
                log.error(
                    "%s: %d more failures in the last %.0f s",
                    self._what,
                    self._since_line,
                    now - self._last_line,
                )
                self._last_line, self._since_line = now, 0

    def recovered(self) -> None:
        with self._lock:
            if self._count:
                self._end(time.monotonic())

    def _end(self, now: float) -> None:
        log.warning("%s: recovered after %d failures in %.0f s", self._what, self._count, now - self._first)
        self._count = self._since_line = 0

    @property
    def failing(self) -> bool:
        with self._lock:
            return self._count > 0


STORE_FAILURES = BurstLog("the database is unavailable")
