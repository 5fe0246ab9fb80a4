"""The federation: who takes part, in which alliances, which keys they sign with, and
which mutual-recognition agreements bind them.

Read once at start-up from ``<dir>/federation.toml`` (format: keys/README.md) and then
immutable. Loading checks everything it can, and reports every problem at once, so an
operator fixes the file in one pass instead of one error per restart.
"""

from __future__ import annotations

import enum
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Any

from gateway.crypto.suites import PublicKey, Suite
from gateway.domain.certificates import Scheme
from gateway.domain.errors import Unauthenticated
from gateway.domain.jurisdiction import NATIONAL_CMA_AUTHORITY, CertificateBlock, Jurisdiction, Jurisdictions
from gateway.domain.kinds import ASSESSOR, CERTIFICATE_STATUS
from gateway.domain.recognition import RECORD_KINDS, Agreement

FEDERATION_FILE = "federation.toml"
DEFAULT_FRESHNESS_WINDOW_SECONDS = 300

PARTICIPANT_CODE = re.compile(r"^[A-Z0-9]+(?:-[A-Z0-9]+)*$")
ALLIANCE_CODE = re.compile(r"^[A-Z0-9]+(?:-[A-Z0-9]+)*$")
AGREEMENT_ID = re.compile(r"^[A-Z0-9]+(?:-[A-Z0-9]+)*$")
# In an agreement's parties, "alliance:YRD" stands for every member of YRD.
ALLIANCE_PARTY_PREFIX = "alliance:"
# "<owner>/<label>": the owner prefix makes a key id say whose it is, in logs and receipts.
KEYID = re.compile(r"^[A-Z0-9]+(?:-[A-Z0-9]+)*/[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class FederationError(ValueError):
    """The federation directory is unusable. ``problems`` lists each as "entry: problem"."""

    def __init__(self, path: Path, problems: list[str] | tuple[str, ...]):
        self.path = path
        self.problems = tuple(problems)
        if len(self.problems) == 1:
            message = f"{path}: {self.problems[0]}"
        else:
            listed = "\n".join(f"  - {p}" for p in self.problems)
            message = f"{path}: {len(self.problems)} problems:\n{listed}"
        super().__init__(message)


class Role(enum.Enum):
    MEMBER = "member"
    SECRETARIAT = "secretariat"
    GATEWAY = "gateway"

    @property
    def proto(self) -> int:
        """The ``mrx.v1.ParticipantRole`` number."""
        return {Role.MEMBER: 1, Role.SECRETARIAT: 2, Role.GATEWAY: 3}[self]


@dataclass(frozen=True, kw_only=True, slots=True)
class Participant:
    code: str
    name: str
    name_en: str
    role: Role
    # Derived from [[alliances]]: the alliances it is a member or the secretariat of.
    alliances: tuple[str, ...]
    # From [[jurisdictions]]: what it declares as its own; None when it declares nothing.
    jurisdiction: Jurisdiction | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class Alliance:
    code: str
    name: str
    name_en: str
    secretariat: str
    members: tuple[str, ...]


@dataclass(frozen=True, kw_only=True, slots=True)
class KeyRecord:
    keyid: str
    owner: str
    suite: Suite
    public_key: PublicKey
    not_before: datetime
    # None: no end date; such a key lives until it is revoked.
    not_after: datetime | None
    revoked: bool
    revoked_at: datetime | None

    def usable_at(self, at: datetime) -> bool:
        """Not revoked and ``at`` within the half-open window [not_before, not_after)."""
        return not self.revoked and self.not_before <= at and (self.not_after is None or at < self.not_after)


def format_time(at: datetime) -> str:
    """RFC 3339 in UTC, shortened to the date when the time is midnight."""
    utc = at.astimezone(UTC)
    if utc.time() == datetime.min.time():
        return f"{utc:%Y-%m-%d}"
    return utc.isoformat(timespec="seconds").replace("+00:00", "Z")


def _show(keyid: str) -> str:
    # The key id comes from the caller's envelope: keep what we echo short and inert.
    return repr(keyid if len(keyid) <= 80 else keyid[:80] + "...")


_NO_AGREEMENTS: Mapping[str, Agreement] = MappingProxyType({})


class Federation:
    """The loaded, validated federation. Immutable; safe to share between threads."""

    def __init__(
        self,
        *,
        name: str,
        freshness_window: timedelta,
        gateway_code: str,
        participants: Mapping[str, Participant],
        alliances: Mapping[str, Alliance],
        keys: Mapping[str, KeyRecord],
        source: Path | None = None,
        agreements: Mapping[str, Agreement] = _NO_AGREEMENTS,
    ):
        self.name = name
        self.freshness_window = freshness_window
        self.gateway_code = gateway_code
        self.participants: Mapping[str, Participant] = MappingProxyType(dict(participants))
        self.alliances: Mapping[str, Alliance] = MappingProxyType(dict(alliances))
        self.keys: Mapping[str, KeyRecord] = MappingProxyType(dict(keys))
        # By id, in file order; in force or not (callers decide by date).
        self.agreements: Mapping[str, Agreement] = MappingProxyType(dict(agreements))
        self.source = source
        # Built from the participants, so a Federation rebuilt from another's participants keeps them.
        self.jurisdictions = Jurisdictions(
            {c: p.jurisdiction for c, p in self.participants.items() if p.jurisdiction is not None}
        )
        by_owner: dict[str, list[KeyRecord]] = {}
        for record in sorted(self.keys.values(), key=lambda r: (r.not_before, r.keyid)):
            by_owner.setdefault(record.owner, []).append(record)
        self._by_owner = {owner: tuple(records) for owner, records in by_owner.items()}

    def participant(self, code: str) -> Participant | None:
        return self.participants.get(code)

    def members_of(self, alliance: str) -> list[Participant]:
        """The member participants of an alliance, in file order; [] if the alliance is unknown."""
        found = self.alliances.get(alliance)
        if found is None:
            return []
        return [self.participants[code] for code in found.members]

    def agreements_between(self, a: str, b: str) -> list[Agreement]:
        """Every agreement binding both ``a`` and ``b``, in force or not, sorted by id."""
        return sorted((x for x in self.agreements.values() if x.binds(a, b)), key=lambda x: x.id)

    def keys_of(self, owner: str) -> list[KeyRecord]:
        """Every key of ``owner``, revoked and expired included, oldest first; [] if unknown."""
        return list(self._by_owner.get(owner, ()))

    def current_key(self, owner: str, *, at: datetime) -> KeyRecord | None:
        """The key ``owner`` should sign with at ``at``: the newest usable one.

        During a rotation both keys are usable; the newer wins so that signers move to it
        as soon as it is valid, and the old one only has to keep verifying.
        """
        _require_aware(at)
        usable = [r for r in self._by_owner.get(owner, ()) if r.usable_at(at)]
        return usable[-1] if usable else None

    def key_for_signature(self, keyid: str, *, at: datetime) -> KeyRecord:
        """The key to verify a new signature with, claimed to be made at ``at``.

        Raises Unauthenticated with reason UNKNOWN_KEY, KEY_REVOKED, KEY_NOT_YET_VALID or
        KEY_EXPIRED: ``known_key`` followed by ``check_validity``.
        """
        return self.check_validity(self.known_key(keyid), at=at)

    def known_key(self, keyid: str) -> KeyRecord:
        """The registered, unrevoked key ``keyid`` (UNKNOWN_KEY, KEY_REVOKED otherwise).

        A revoked key is refused whatever time a message claims: after a revocation --
        typically a suspected compromise -- whoever holds the key can claim any time, so a
        backdated message would otherwise pass. Receipts already issued stay checkable
        through ``keys``; this method is only for accepting new messages.
        """
        record = self.keys.get(keyid)
        if record is None:
            raise Unauthenticated(
                f"key {_show(keyid)} is not in the federation",
                reason="UNKNOWN_KEY",
                metadata={"keyid": keyid},
            )
        if record.revoked:
            when = f" on {format_time(record.revoked_at)}" if record.revoked_at is not None else ""
            metadata = {"keyid": keyid}
            if record.revoked_at is not None:
                metadata["revoked_at"] = format_time(record.revoked_at)
            raise Unauthenticated(f"key {keyid} was revoked{when}", reason="KEY_REVOKED", metadata=metadata)
        return record

    @staticmethod
    def check_validity(record: KeyRecord, *, at: datetime) -> KeyRecord:
        """Refuse a signature made (by its own signed claim) outside the key's validity."""
        _require_aware(at)
        keyid = record.keyid
        if at < record.not_before:
            raise Unauthenticated(
                f"key {keyid} is not valid before {format_time(record.not_before)}"
                f" (signed at {format_time(at)})",
                reason="KEY_NOT_YET_VALID",
                metadata={"keyid": keyid, "not_before": format_time(record.not_before)},
            )
        if record.not_after is not None and at >= record.not_after:
            raise Unauthenticated(
                f"key {keyid} expired on {format_time(record.not_after)} (signed at {format_time(at)})",
                reason="KEY_EXPIRED",
                metadata={"keyid": keyid, "not_after": format_time(record.not_after)},
            )
        return record

    def __repr__(self) -> str:
        return (
            f"Federation({self.name!r}, {len(self.participants)} participants, "
            f"{len(self.alliances)} alliances, {len(self.keys)} keys, {len(self.agreements)} agreements)"
        )


def _require_aware(at: datetime) -> None:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError("time must be timezone-aware")


# --- loading ---------------------------------------------------------------------------

_TOP_LEVEL = {"federation", "alliances", "participants", "keys", "agreements", "jurisdictions"}
_FEDERATION_FIELDS = {"name", "gateway", "freshness_window_seconds"}
_ALLIANCE_FIELDS = {"code", "name", "name_en", "secretariat", "members"}
_PARTICIPANT_FIELDS = {"code", "name", "name_en", "role"}
_AGREEMENT_FIELDS = {
    "id",
    "name",
    "alliance",
    "parties",
    "kinds",
    "schemes",
    "fields",
    "effective_from",
    "effective_until",
}
_SCHEME_NAMES = tuple(s.name for s in Scheme)
_KEY_FIELDS = {"keyid", "owner", "suite", "public_key", "not_before", "not_after", "revoked", "revoked_at"}


class _Problems:
    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, entry: str, problem: str) -> None:
        self.items.append(f"{entry}: {problem}")


def _table_list(data: dict[str, Any], name: str, problems: _Problems) -> list[dict[str, Any]]:
    value = data.get(name, [])
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        problems.add(name, f"must be an array of tables, written [[{name}]]")
        return []
    return value


def _unknown_fields(table: dict[str, Any], allowed: set[str], entry: str, problems: _Problems) -> None:
    for field in sorted(set(table) - allowed):
        problems.add(entry, f"unknown field {field!r} (allowed: {', '.join(sorted(allowed))})")


def _text(table: dict[str, Any], field: str, entry: str, problems: _Problems) -> str | None:
    value = table.get(field)
    if value is None:
        problems.add(entry, f"missing {field}")
        return None
    if not isinstance(value, str) or not value.strip():
        problems.add(entry, f"{field} must be a non-empty string")
        return None
    return value


def _time(
    table: dict[str, Any], field: str, entry: str, problems: _Problems, *, required: bool
) -> datetime | None:
    value = table.get(field)
    if value is None:
        if required:
            problems.add(entry, f"missing {field}")
        return None
    if not isinstance(value, datetime) or value.tzinfo is None:
        problems.add(
            entry,
            f"{field} must be a date-time with a UTC offset, e.g. 2026-01-01T00:00:00Z (got {value!r})",
        )
        return None
    return value


def _date(
    table: dict[str, Any], field: str, entry: str, problems: _Problems, *, required: bool
) -> date | None:
    value = table.get(field)
    if value is None:
        if required:
            problems.add(entry, f"missing {field}")
        return None
    # datetime is a date too; an agreement runs in whole days, so a time of day means
    # the author expected a precision the gateway does not apply.
    if not isinstance(value, date) or isinstance(value, datetime):
        problems.add(entry, f"{field} must be a date, e.g. 2026-01-01 (got {value!r})")
        return None
    return value


def _names(
    table: dict[str, Any], field: str, entry: str, problems: _Problems, *, required: bool
) -> list[str]:
    """An array of non-empty strings, duplicates reported and dropped; [] if absent or wrong."""
    value = table.get(field)
    if value is None:
        if required:
            problems.add(entry, f"missing {field}")
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        problems.add(entry, f"{field} must be an array of non-empty strings")
        return []
    if required and not value:
        problems.add(entry, f"{field} must not be empty")
    names: list[str] = []
    for name in value:
        if name in names:
            problems.add(entry, f"{field}: {name} listed twice")
        else:
            names.append(name)
    return names


def _entry(kind: str, index: int, ident: object) -> str:
    label = f" {ident!r}" if isinstance(ident, str) and ident else ""
    return f"[[{kind}]] #{index + 1}{label}"


def load_federation(directory: Path) -> Federation:
    """Load and validate ``directory/federation.toml`` and the public keys it names.

    Raises FederationError listing every problem found, each naming its entry.
    """
    directory = Path(directory)
    path = directory / FEDERATION_FILE
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise FederationError(path, ["file not found"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise FederationError(path, [f"not valid TOML: {exc}"]) from None
    except OSError as exc:
        raise FederationError(path, [f"cannot read: {exc.strerror}"]) from None

    problems = _Problems()
    for section in sorted(set(data) - _TOP_LEVEL):
        problems.add(section, f"unknown section (allowed: {', '.join(sorted(_TOP_LEVEL))})")

    # [federation]
    settings = data.get("federation")
    fed_name = gateway_code = None
    window = DEFAULT_FRESHNESS_WINDOW_SECONDS
    if not isinstance(settings, dict):
        problems.add("[federation]", "missing section")
    else:
        _unknown_fields(settings, _FEDERATION_FIELDS, "[federation]", problems)
        fed_name = _text(settings, "name", "[federation]", problems)
        gateway_code = _text(settings, "gateway", "[federation]", problems)
        raw_window = settings.get("freshness_window_seconds", DEFAULT_FRESHNESS_WINDOW_SECONDS)
        if isinstance(raw_window, bool) or not isinstance(raw_window, int) or not 0 < raw_window <= 86400:
            problems.add("[federation]", "freshness_window_seconds must be an integer from 1 to 86400")
        else:
            window = raw_window

    # [[participants]]
    raw_participants: dict[str, tuple[str, str, Role]] = {}
    for i, table in enumerate(_table_list(data, "participants", problems)):
        entry = _entry("participants", i, table.get("code"))
        _unknown_fields(table, _PARTICIPANT_FIELDS, entry, problems)
        code = _text(table, "code", entry, problems)
        name = _text(table, "name", entry, problems)
        name_en = _text(table, "name_en", entry, problems)
        role_text = _text(table, "role", entry, problems)
        role = None
        if role_text is not None:
            try:
                role = Role(role_text)
            except ValueError:
                problems.add(
                    entry, f"role must be one of {', '.join(r.value for r in Role)}, not {role_text!r}"
                )
        if code is not None and not PARTICIPANT_CODE.match(code):
            problems.add(
                entry, "code must be upper-case letters and digits in dash-separated groups, e.g. CN-SH"
            )
            code = None
        if code is not None and code in raw_participants:
            problems.add(entry, f"duplicate participant code {code}")
            continue
        if code is not None and name is not None and name_en is not None and role is not None:
            raw_participants[code] = (name, name_en, role)

    gateways = [code for code, (_, _, role) in raw_participants.items() if role is Role.GATEWAY]
    if len(gateways) != 1:
        problems.add(
            "[[participants]]", f'exactly one participant must have role = "gateway", found {len(gateways)}'
        )
    if gateway_code is not None and gateways and gateway_code not in gateways:
        problems.add("[federation]", f'gateway = {gateway_code!r} is not the participant with role "gateway"')

    # [[alliances]]
    alliances: dict[str, Alliance] = {}
    for i, table in enumerate(_table_list(data, "alliances", problems)):
        entry = _entry("alliances", i, table.get("code"))
        _unknown_fields(table, _ALLIANCE_FIELDS, entry, problems)
        code = _text(table, "code", entry, problems)
        name = _text(table, "name", entry, problems)
        name_en = _text(table, "name_en", entry, problems)
        secretariat = _text(table, "secretariat", entry, problems)
        if code is not None and not ALLIANCE_CODE.match(code):
            problems.add(entry, "code must be upper-case letters and digits, e.g. YRD")
            code = None
        if code is not None and code in alliances:
            problems.add(entry, f"duplicate alliance code {code}")
            continue
        if secretariat is not None:
            found = raw_participants.get(secretariat)
            if found is None:
                problems.add(entry, f"secretariat {secretariat} is not a participant")
            elif found[2] is not Role.SECRETARIAT:
                problems.add(
                    entry, f"secretariat {secretariat} has role {found[2].value!r}, not 'secretariat'"
                )
        members = table.get("members")
        if not isinstance(members, list) or not members or not all(isinstance(m, str) for m in members):
            problems.add(entry, "members must be a non-empty array of participant codes")
            members = []
        seen: set[str] = set()
        for member in members:
            if member in seen:
                problems.add(entry, f"member {member} listed twice")
            seen.add(member)
            found = raw_participants.get(member)
            if found is None:
                problems.add(entry, f"member {member} is not a participant")
            elif found[2] is not Role.MEMBER:
                problems.add(
                    entry, f"member {member} has role {found[2].value!r}; only role 'member' can be a member"
                )
        if code is not None and name is not None and name_en is not None and secretariat is not None:
            alliances[code] = Alliance(
                code=code,
                name=name,
                name_en=name_en,
                secretariat=secretariat,
                members=tuple(dict.fromkeys(members)),
            )

    jurisdictions = _load_jurisdictions(data, raw_participants, problems)

    participants: dict[str, Participant] = {}
    for code, (name, name_en, role) in raw_participants.items():
        joined = tuple(a.code for a in alliances.values() if code in a.members or code == a.secretariat)
        participants[code] = Participant(
            code=code,
            name=name,
            name_en=name_en,
            role=role,
            alliances=joined,
            jurisdiction=jurisdictions.get(code),
        )

    # [[keys]]
    keys: dict[str, KeyRecord] = {}
    fingerprints: dict[str, str] = {}
    for i, table in enumerate(_table_list(data, "keys", problems)):
        entry = _entry("keys", i, table.get("keyid"))
        _unknown_fields(table, _KEY_FIELDS, entry, problems)
        record = _load_key(table, entry, directory, participants, problems)
        if record is None:
            continue
        if record.keyid in keys:
            problems.add(entry, f"duplicate keyid {record.keyid}")
            continue
        fingerprint = record.public_key.fingerprint()
        if fingerprint in fingerprints:
            # One key under two ids would let a signature count as two identities.
            problems.add(entry, f"same public key as {fingerprints[fingerprint]}")
            continue
        fingerprints[fingerprint] = record.keyid
        keys[record.keyid] = record

    # [[agreements]]
    agreements: dict[str, Agreement] = {}
    for i, table in enumerate(_table_list(data, "agreements", problems)):
        entry = _entry("agreements", i, table.get("id"))
        _unknown_fields(table, _AGREEMENT_FIELDS, entry, problems)
        agreement = _load_agreement(table, entry, participants, alliances, problems)
        if agreement is None:
            continue
        if agreement.id in agreements:
            problems.add(entry, f"duplicate agreement id {agreement.id}")
            continue
        agreements[agreement.id] = agreement

    if problems.items or fed_name is None or gateway_code is None:
        raise FederationError(path, problems.items or ["incomplete [federation] section"])
    return Federation(
        name=fed_name,
        freshness_window=timedelta(seconds=window),
        gateway_code=gateway_code,
        participants=participants,
        alliances=alliances,
        keys=keys,
        source=directory,
        agreements=agreements,
    )


def _load_agreement(
    table: dict[str, Any],
    entry: str,
    participants: Mapping[str, Participant],
    alliances: Mapping[str, Alliance],
    problems: _Problems,
) -> Agreement | None:
    before = len(problems.items)
    ident = _text(table, "id", entry, problems)
    if ident is not None and not AGREEMENT_ID.match(ident):
        problems.add(
            entry, "id must be upper-case letters and digits in dash-separated groups, e.g. YRD-2026-RESULTS"
        )
    name = _text(table, "name", entry, problems)
    parties, alliance = _agreement_parties(table, entry, participants, alliances, problems)
    kinds = _names(table, "kinds", entry, problems, required=True)
    for kind in kinds:
        if kind not in RECORD_KINDS:
            problems.add(entry, f"unknown kind {kind!r} (known: {', '.join(sorted(RECORD_KINDS))})")
    schemes = _names(table, "schemes", entry, problems, required=False)
    for scheme in schemes:
        if scheme not in _SCHEME_NAMES:
            problems.add(entry, f"unknown scheme {scheme!r} (known: {', '.join(_SCHEME_NAMES)})")
    fields = _names(table, "fields", entry, problems, required=False)
    # Only certificate_status records carry a scheme and only assessor records a
    # technical field: elsewhere the restriction would silently restrict nothing.
    if schemes and kinds and CERTIFICATE_STATUS not in kinds:
        problems.add(entry, "schemes restrict certificate_status records, but kinds does not include it")
    if fields and kinds and ASSESSOR not in kinds:
        problems.add(entry, "fields restrict assessor records, but kinds does not include assessor")
    effective_from = _date(table, "effective_from", entry, problems, required=True)
    effective_until = _date(table, "effective_until", entry, problems, required=False)
    if effective_from is not None and effective_until is not None and effective_until < effective_from:
        problems.add(
            entry,
            f"effective_until {effective_until} is before effective_from {effective_from}",
        )
    if len(problems.items) > before:
        return None
    assert ident and name and effective_from
    return Agreement(
        id=ident,
        name=name,
        parties=parties,
        kinds=frozenset(kinds),
        schemes=frozenset(schemes),
        fields=frozenset(fields),
        effective_from=effective_from,
        effective_until=effective_until,
        alliance=alliance,
    )


def _agreement_parties(
    table: dict[str, Any],
    entry: str,
    participants: Mapping[str, Participant],
    alliances: Mapping[str, Alliance],
    problems: _Problems,
) -> tuple[frozenset[str], str | None]:
    """(the member codes bound, the alliance when alliance-wide); problems added on error."""
    before = len(problems.items)
    alliance = table.get("alliance")
    if alliance is not None and "parties" in table:
        problems.add(entry, "give either alliance or parties, not both")
        return frozenset(), None
    if alliance is not None:
        if not isinstance(alliance, str) or alliance not in alliances:
            problems.add(entry, f"alliance {alliance!r} is not an alliance")
            return frozenset(), None
        # Its members were checked with the alliance itself; checking them again here
        # would only repeat those problems under this entry.
        parties = frozenset(alliances[alliance].members)
    else:
        if "parties" not in table:
            problems.add(entry, 'missing parties (or alliance = "<code>" for an alliance-wide agreement)')
            return frozenset(), None
        # code -> how the file named it, to say where a duplicate came from.
        named: dict[str, str] = {}
        for party in _names(table, "parties", entry, problems, required=True):
            if party.startswith(ALLIANCE_PARTY_PREFIX):
                code = party.removeprefix(ALLIANCE_PARTY_PREFIX)
                if code not in alliances:
                    problems.add(entry, f"party {party}: {code} is not an alliance")
                    continue
                codes: tuple[str, ...] = alliances[code].members
            else:
                codes = (party,)
            for code in codes:
                found = participants.get(code)
                if found is None:
                    problems.add(entry, f"party {code} is not a participant")
                elif found.role is not Role.MEMBER:
                    problems.add(
                        entry, f"party {code} has role {found.role.value!r}; only members can be parties"
                    )
                elif code in named:
                    also = "" if named[code] == party else f" (as {named[code]} and as {party})"
                    problems.add(entry, f"party {code} listed twice{also}")
                else:
                    named[code] = party
        parties = frozenset(named)
    if len(problems.items) == before and len(parties) < 2:
        problems.add(entry, f"an agreement needs at least 2 parties, found {len(parties)}")
    return parties, alliance


def _load_key(
    table: dict[str, Any],
    entry: str,
    directory: Path,
    participants: Mapping[str, Participant],
    problems: _Problems,
) -> KeyRecord | None:
    before = len(problems.items)
    keyid = _text(table, "keyid", entry, problems)
    owner = _text(table, "owner", entry, problems)
    suite_text = _text(table, "suite", entry, problems)
    key_path = _text(table, "public_key", entry, problems)
    not_before = _time(table, "not_before", entry, problems, required=True)
    not_after = _time(table, "not_after", entry, problems, required=False)
    revoked_at = _time(table, "revoked_at", entry, problems, required=False)
    revoked = table.get("revoked", False)
    if not isinstance(revoked, bool):
        problems.add(entry, "revoked must be true or false")
        revoked = False
    if revoked_at is not None and not revoked:
        problems.add(entry, "revoked_at is set but revoked is not true")
    if not_before is not None and not_after is not None and not_after <= not_before:
        problems.add(entry, "not_after must be later than not_before")
    if owner is not None and owner not in participants:
        problems.add(entry, f"owner {owner} is not a participant")
    if keyid is not None:
        if not KEYID.match(keyid):
            problems.add(entry, "keyid must look like <owner>/<label>, e.g. CN-SH/2026-01")
        elif owner is not None and not keyid.startswith(owner + "/"):
            problems.add(entry, f"keyid must start with its owner, {owner}/")
    suite = None
    if suite_text is not None:
        try:
            suite = Suite(suite_text)
        except ValueError:
            problems.add(
                entry, f"suite must be one of {', '.join(s.value for s in Suite)}, not {suite_text!r}"
            )
    public_key = None
    if key_path is not None:
        relative = Path(key_path)
        if relative.is_absolute():
            problems.add(entry, f"public_key must be relative to the federation directory, not {key_path}")
        else:
            try:
                pem = (directory / relative).read_bytes()
            except FileNotFoundError:
                problems.add(entry, f"public key file {key_path} not found in {directory}")
            except OSError as exc:
                problems.add(entry, f"cannot read public key file {key_path}: {exc.strerror}")
            else:
                if suite is not None:
                    try:
                        public_key = PublicKey.from_pem(pem, suite)
                    except ValueError as exc:
                        problems.add(entry, f"public key file {key_path}: {exc}")
    if len(problems.items) > before:
        return None
    assert keyid and owner and suite and public_key and not_before
    return KeyRecord(
        keyid=keyid,
        owner=owner,
        suite=suite,
        public_key=public_key,
        not_before=not_before,
        not_after=not_after,
        revoked=revoked,
        revoked_at=revoked_at,
    )


# --- jurisdictions ---------------------------------------------------------------------

_JURISDICTION_FIELDS = {
    "participant",
    "certification_bodies",
    "cma_authorities",
    "labs",
    "assessor_prefixes",
    "certificate_blocks",
}
_BLOCK_FIELDS = {"schemes", "serial_at", "serial_digits", "first", "last", "length"}
_LAB_TEXT = re.compile(r"^[A-Za-z0-9?][A-Za-z0-9? ./()-]{0,63}$")
_PREFIX_TEXT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9./-]{0,31}$")
_CMA_AUTHORITY = re.compile(r"^[0-9]{2}$")


def _int(table: dict[str, Any], name: str, entry: str, problems: _Problems, *, required: bool) -> int | None:
    value = table.get(name)
    if value is None:
        if required:
            problems.add(entry, f"missing {name}")
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        problems.add(entry, f"{name} must be a non-negative integer (got {value!r})")
        return None
    return value


def _load_block(raw: object, entry: str, problems: _Problems) -> CertificateBlock | None:
    before = len(problems.items)
    if not isinstance(raw, dict):
        problems.add(entry, 'must be a table, e.g. { schemes = ["CCC"], serial_at = 11, ... }')
        return None
    _unknown_fields(raw, _BLOCK_FIELDS, entry, problems)
    schemes = _names(raw, "schemes", entry, problems, required=True)
    for scheme in schemes:
        if scheme not in _SCHEME_NAMES:
            problems.add(entry, f"unknown scheme {scheme!r} (known: {', '.join(_SCHEME_NAMES)})")
        elif scheme == "CMA":
            problems.add(
                entry, "CMA numbers are labs' qualifications: declare them under labs, not in a block"
            )
    serial_at = _int(raw, "serial_at", entry, problems, required=True)
    digits = _int(raw, "serial_digits", entry, problems, required=True)
    first = _int(raw, "first", entry, problems, required=True)
    last = _int(raw, "last", entry, problems, required=True)
    length = _int(raw, "length", entry, problems, required=False)
    if serial_at is not None and serial_at < 1:
        problems.add(entry, "serial_at is a 1-based character position, at least 1")
    if digits is not None and not 1 <= digits <= 18:
        problems.add(entry, "serial_digits must be from 1 to 18")
    elif digits is not None and last is not None and last >= 10**digits:
        problems.add(entry, f"last {last} has more than serial_digits = {digits} digits")
    if first is not None and last is not None and first > last:
        problems.add(entry, f"first {first} is greater than last {last}")
    if (
        length is not None
        and serial_at is not None
        and digits is not None
        and serial_at + digits - 1 > length
    ):
        problems.add(
            entry, f"the serial (characters {serial_at}-{serial_at + digits - 1}) ends after length {length}"
        )
    if len(problems.items) > before:
        return None
    assert serial_at is not None and digits is not None and first is not None and last is not None
    return CertificateBlock(
        schemes=frozenset(schemes),
        serial_at=serial_at,
        serial_digits=digits,
        first=first,
        last=last,
        length=length,
    )


def _checked_names(
    table: dict[str, Any], name: str, entry: str, problems: _Problems, shape: re.Pattern[str], example: str
) -> tuple[str, ...]:
    names = _names(table, name, entry, problems, required=False)
    good = []
    for value in names:
        if shape.match(value):
            good.append(value)
        else:
            problems.add(entry, f"{name}: {value!r} does not look like {example}")
    return tuple(good)


def _load_jurisdictions(
    data: dict[str, Any], raw_participants: Mapping[str, tuple[str, str, Role]], problems: _Problems
) -> dict[str, Jurisdiction]:
    """[[jurisdictions]], one per member at most; identifiers two members declare are errors."""
    found: dict[str, Jurisdiction] = {}
    entries: dict[str, str] = {}
    for i, table in enumerate(_table_list(data, "jurisdictions", problems)):
        entry = _entry("jurisdictions", i, table.get("participant"))
        before = len(problems.items)
        _unknown_fields(table, _JURISDICTION_FIELDS, entry, problems)
        code = _text(table, "participant", entry, problems)
        if code is not None:
            role = raw_participants[code][2] if code in raw_participants else None
            if role is None:
                problems.add(entry, f"participant {code} is not a participant")
            elif role is not Role.MEMBER:
                problems.add(
                    entry, f"participant {code} has role {role.value!r}; only members publish records"
                )
            elif code in found or code in entries:
                problems.add(entry, f"second [[jurisdictions]] entry for {code} (give one per participant)")
        bodies = _checked_names(
            table, "certification_bodies", entry, problems, re.compile(r"^\S.{0,63}$"), "an approval number"
        )
        authorities = _checked_names(
            table, "cma_authorities", entry, problems, _CMA_AUTHORITY, 'a two-digit code such as "10"'
        )
        if NATIONAL_CMA_AUTHORITY in authorities:
            problems.add(entry, 'cma_authorities: "00" is national (CNCA) and belongs to no participant')
        labs = _checked_names(
            table, "labs", entry, problems, _LAB_TEXT, 'a CMA number ("????10000102") or "CNAS L0326"'
        )
        prefixes = _checked_names(
            table,
            "assessor_prefixes",
            entry,
            problems,
            _PREFIX_TEXT,
            'a registration prefix such as "CMA-JS-"',
        )
        blocks: list[CertificateBlock] = []
        raw_blocks = table.get("certificate_blocks", [])
        if not isinstance(raw_blocks, list):
            problems.add(entry, "certificate_blocks must be an array of tables")
            raw_blocks = []
        for n, raw in enumerate(raw_blocks):
            block = _load_block(raw, f"{entry} certificate_blocks #{n + 1}", problems)
            if block is not None:
                if any(block.overlaps(b) for b in blocks):
                    problems.add(entry, f"certificate_blocks #{n + 1} overlaps another block of {code}")
                blocks.append(block)
        if code is not None:
            entries.setdefault(code, entry)
        if len(problems.items) > before or code is None:
            continue
        found[code] = Jurisdiction(
            certification_bodies=bodies,
            cma_authorities=authorities,
            labs=labs,
            assessor_prefixes=prefixes,
            certificate_blocks=tuple(blocks),
        )
    for code, problem in Jurisdictions(found).conflicts():
        problems.add(entries[code], problem)
    return found


def _toml_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def jurisdiction_tables(participants: Mapping[str, Participant]) -> list[str]:
    """The [[jurisdictions]] tables of ``participants``, as TOML that ``load_federation`` reads back.

    For writers of derived federation files (``keygen.write_demo_federation``), so that a
    copy keeps the jurisdictions of its template.
    """

    def names(values: tuple[str, ...]) -> str:
        return "[" + ", ".join(_toml_string(v) for v in values) + "]"

    parts = []
    for code, p in participants.items():
        j = p.jurisdiction
        if j is None:
            continue
        lines = [
            "[[jurisdictions]]",
            f"participant = {_toml_string(code)}",
            f"certification_bodies = {names(j.certification_bodies)}",
            f"cma_authorities = {names(j.cma_authorities)}",
            f"labs = {names(j.labs)}",
            f"assessor_prefixes = {names(j.assessor_prefixes)}",
            "certificate_blocks = [",
        ]
        for b in j.certificate_blocks:
            length = f", length = {b.length}" if b.length is not None else ""
            lines.append(
                f"  {{ schemes = {names(tuple(sorted(b.schemes)))}, serial_at = {b.serial_at}, "
                f"serial_digits = {b.serial_digits}, first = {b.first}, last = {b.last}{length} }},"
            )
        lines.append("]")
        parts.append("\n".join(lines) + "\n")
    return parts
