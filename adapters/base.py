"""What every adapter hands the runner, reconciliation and the conformance suite.

The agreed interface (docs/adapters.md, "The contract"): an adapter turns rows of a local
system into ``Mapped`` values, each either a gateway.domain record or the reasons it could
not be one, with the source cursor after the row.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from gateway.domain.records import Record


class AdapterError(Exception):
    """Configuration or source trouble that stops a pass before anything is sent.

    ``str(err)`` names the file, column or page and what to do; it never carries a secret.
    """


class SourceError(AdapterError):
    """The local source could not be read (wrong encoding, refused XML, HTTP failure, lock)."""


@dataclass(frozen=True)
class RowProblem:
    """Why one field of one row could not be mapped: the local column (or element) and why."""

    field: str
    why: str


@dataclass(frozen=True)
class Mapped:
    """One source row: a record, or the problems that kept it from being one."""

    where: str  # e.g. "line 17", "page 2 item 5", "row 序号=42"
    record: Record | None
    problems: tuple[RowProblem, ...]
    cursor: str | None  # the source cursor after this row (changes only)
    # Accepted deviations from weak rules (e.g. a legacy credit code): sent, but said.
    warnings: tuple[str, ...] = field(default=())


@dataclass(frozen=True)
class SourceRow:
    """A row as a reader sees it: text values by local column name, and where it was."""

    where: str
    values: Mapping[str, str | None]


class Reader(Protocol):
    """How rows come out of one style of local system (CSV file, HTTP API, XML, SQL table).

    ``rows(since)`` yields rows whose cursor column is after ``since`` (every row when it
    is None). A reader that cannot filter may yield every row: the adapter filters again.
    ``ordered`` says the rows come in cursor order already (else the adapter sorts them).
    """

    ordered: bool

    def rows(self, since: str | None) -> Iterator[SourceRow]: ...


class Sink(Protocol):
    """Applies inbound canonical records (other provinces') to the local system.

    ``apply`` must be idempotent and must not go backwards: a record whose version is not
    newer than the stored one is skipped. It returns True when it changed something.
    """

    def apply(self, record: Record) -> bool: ...
