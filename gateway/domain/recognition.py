"""Mutual-recognition agreements and the rules that decide recognition.

Pure: no I/O. The gateway gathers the facts (the record's state history, the issuer's
key, the lab's CMA qualification) and this module decides.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date


@dataclass(frozen=True, slots=True, kw_only=True)
class Agreement:
    """A mutual-recognition agreement as written in the federation file."""

    id: str
    name: str
    # Participants bound by it, alliances already expanded to their members.
    parties: frozenset[str]
    # Record kinds covered: "certificate_status", "assessor", "test_report",
    # "pt_result", "spot_check".
    kinds: frozenset[str]
    # Certificate schemes covered by name ("CCC", "QMS", ...); empty: every scheme.
    schemes: frozenset[str]
    # Assessor technical fields covered; empty: every field.
    fields: frozenset[str]
    effective_from: date
    effective_until: date | None  # inclusive; None: open-ended
    alliance: str | None = None  # set when the agreement is alliance-wide

    def in_force(self, on: date) -> bool:
        return self.effective_from <= on and (self.effective_until is None or on <= self.effective_until)

    def binds(self, a: str, b: str) -> bool:
        return a in self.parties and b in self.parties


RECORD_KINDS = frozenset({"certificate_status", "assessor", "test_report", "pt_result", "spot_check"})
