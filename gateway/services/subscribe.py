"""ExchangeService.Subscribe: checks the request and the caller's scope, then streams the
change feed (gateway/ledger/feed.py) as SubscribeEvents."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, date, datetime
from typing import Any

from gateway.convert import KIND_FIELDS, KIND_NUMBERS, us_to_datetime
from gateway.domain.certificates import Scheme
from gateway.domain.errors import FieldViolation, InvalidArgument, OutOfRange, PermissionDenied
from gateway.ledger.feed import ChangeFeed, ChangeFilter, FeedCaughtUp, FeedChange, FeedEvent
from gateway.pb import exchange_pb2, records_pb2
from gateway.registry.federation import Federation
from gateway.services.auth import Principal, ReadAuthenticator
from gateway.services.paging import has_control_chars

METHOD = "/mrx.v1.ExchangeService/Subscribe"
ASSESSOR = KIND_FIELDS[records_pb2.RECORD_KIND_ASSESSOR]
MAX_FILTER_ENTRIES = 100
MAX_FILTER_LEN = 64


class Subscriptions:
    def __init__(
        self,
        *,
        feed: ChangeFeed,
        auth: ReadAuthenticator,
        federation: Federation,
        today: Callable[[], date],
    ):
        self.feed = feed
        self._auth = auth
        self._federation = federation
        self._today = today

    async def subscribe(
        self, request: exchange_pb2.SubscribeRequest, context: Any
    ) -> AsyncIterator[exchange_pb2.SubscribeEvent]:
        principal = self._auth.authenticate(context, METHOD, request)
        flt = self._filter(request, principal)
        size = await self.feed.log_size()
        if request.start_index > size:
            raise OutOfRange(
                f"start_index {request.start_index} is beyond the end of the log (size {size}): resume "
                "from the last index received + 1, which is never beyond it",
                reason="START_BEYOND_LOG",
                metadata={"log_size": str(size), "start_index": str(request.start_index)[:20]},
            )
        sub = self.feed.open(principal.code)
        checked = time.monotonic()
        try:
            async for event in sub.events(request.start_index, flt):
                # Heartbeats keep this loop turning on a quiet feed, so the check runs.
                if time.monotonic() - checked >= self.feed.limits.key_check:
                    self._auth.key_still_valid(principal)
                    checked = time.monotonic()
                yield _event(event)
        finally:
            sub.close()

    def _filter(self, request: exchange_pb2.SubscribeRequest, principal: Principal) -> ChangeFilter:
        violations: list[FieldViolation] = []
        for name in ("kinds", "issuers", "schemes", "certificate_numbers", "holder_credit_codes"):
            if len(getattr(request, name)) > MAX_FILTER_ENTRIES:
                violations.append(FieldViolation(name, f"at most {MAX_FILTER_ENTRIES} entries"))
        for name in ("kinds", "issuers", "certificate_numbers", "holder_credit_codes"):
            for i, value in enumerate(getattr(request, name)[:MAX_FILTER_ENTRIES]):
                if not value:
                    violations.append(FieldViolation(f"{name}[{i}]", "must not be empty"))
                elif len(value) > MAX_FILTER_LEN:
                    violations.append(FieldViolation(f"{name}[{i}]", f"at most {MAX_FILTER_LEN} characters"))
                elif has_control_chars(value):
                    violations.append(FieldViolation(f"{name}[{i}]", "must not contain control characters"))
                elif name == "kinds" and value not in KIND_NUMBERS:
                    known = ", ".join(sorted(KIND_NUMBERS))
                    why = f"unknown kind {value!r}; one of {known}"
                    violations.append(FieldViolation(f"kinds[{i}]", why))
                elif name == "issuers" and value not in self._federation.participants:
                    violations.append(FieldViolation(f"issuers[{i}]", "not a participant of the federation"))
        for i, scheme in enumerate(request.schemes[:MAX_FILTER_ENTRIES]):
            if scheme == 0 or scheme not in Scheme._value2member_map_:
                violations.append(FieldViolation(f"schemes[{i}]", f"unknown scheme {scheme}"))
        if violations:
            raise InvalidArgument(
                f"{violations[0].field}: {violations[0].description}", violations=violations
            )
        kinds = frozenset(request.kinds)
        issuers = frozenset(request.issuers)
        today = self._today()
        for issuer in sorted(issuers):
            wanted = kinds or frozenset(KIND_NUMBERS)
            if any(self._auth.may_see(principal, issuer=issuer, kind=k, today=today) for k in wanted):
                continue
            personal = wanted == {ASSESSOR} and any(
                self._auth.may_see(principal, issuer=issuer, kind=k, today=today) for k in KIND_NUMBERS
            )
            raise PermissionDenied(
                f"{principal.code} may not follow {issuer}'s "
                + (
                    "assessor records: they hold personal data, visible only under an agreement covering them"
                    if personal
                    else "records: no agreement in force binds them to it"
                ),
                reason="PERSONAL_DATA" if personal else "OUTSIDE_SCOPE",
                metadata={"principal": principal.code, "issuer": issuer},
            )
        return ChangeFilter(
            kinds=frozenset(KIND_NUMBERS[k] for k in kinds),
            issuers=issuers,
            schemes=frozenset(Scheme(s).name for s in request.schemes),
            certificate_numbers=frozenset(request.certificate_numbers),
            holder_credit_codes=frozenset(request.holder_credit_codes),
            visible=self._visibility(principal),
            candidate_issuers=self._auth.reachable_issuers(principal),
        )

    def _visibility(self, principal: Principal) -> Callable[[int, str], bool]:
        """``may_see`` per row, remembered per (kind, issuer) for the day."""
        seen: dict[tuple[int, str], bool] = {}
        day: list[date] = [self._today()]

        def visible(kind: int, issuer: str) -> bool:
            today = self._today()
            if today != day[0]:
                seen.clear()
                day[0] = today
            key = (kind, issuer)
            if key not in seen:
                seen[key] = self._auth.may_see(principal, issuer=issuer, kind=KIND_FIELDS[kind], today=today)  # type: ignore[index]
            return seen[key]

        return visible


def _event(event: FeedEvent) -> exchange_pb2.SubscribeEvent:
    if isinstance(event, FeedChange):
        row = event.row
        change = exchange_pb2.RecordChange(
            log_index=row.log_index,
            record_key=row.record_key,
            envelope=row.envelope,
            kind=row.kind,  # type: ignore[arg-type]
            issuer=row.issuer,
            record_version=row.record_version,
        )
        change.received_at.FromDatetime(us_to_datetime(row.received_at_us))
        return exchange_pb2.SubscribeEvent(change=change)
    if isinstance(event, FeedCaughtUp):
        return exchange_pb2.SubscribeEvent(caught_up=exchange_pb2.CaughtUp(next_index=event.next_index))
    beat = exchange_pb2.Heartbeat(next_index=event.next_index)
    beat.sent_at.FromDatetime(datetime.now(UTC))
    return exchange_pb2.SubscribeEvent(heartbeat=beat)
