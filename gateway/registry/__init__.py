"""The federation: participants, alliances and their keys, loaded from keys/."""

from gateway.registry.federation import (
    Alliance,
    Federation,
    FederationError,
    KeyRecord,
    Participant,
    Role,
    load_federation,
)

__all__ = [
    "Alliance",
    "Federation",
    "FederationError",
    "KeyRecord",
    "Participant",
    "Role",
    "load_federation",
]
