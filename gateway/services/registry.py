"""RegistryService: participants, alliances, keys and agreements, straight from the federation file."""

from __future__ import annotations

import grpc

from gateway.domain.errors import NotFound
from gateway.domain.recognition import Agreement
from gateway.pb import registry_pb2, registry_pb2_grpc
from gateway.registry.federation import Federation, KeyRecord, Role

_ROLES = {
    Role.MEMBER: registry_pb2.PARTICIPANT_ROLE_MEMBER,
    Role.SECRETARIAT: registry_pb2.PARTICIPANT_ROLE_SECRETARIAT,
    Role.GATEWAY: registry_pb2.PARTICIPANT_ROLE_GATEWAY,
}


def key_to_proto(key: KeyRecord) -> registry_pb2.PublicKey:
    msg = registry_pb2.PublicKey(
        keyid=key.keyid,
        owner=key.owner,
        suite=key.suite.proto,  # type: ignore[arg-type]
        public_key_pem=key.public_key.pem(),
        revoked=key.revoked,
    )
    msg.not_before.FromDatetime(key.not_before)
    if key.not_after is not None:
        msg.not_after.FromDatetime(key.not_after)
    if key.revoked_at is not None:
        msg.revoked_at.FromDatetime(key.revoked_at)
    return msg


def agreement_to_proto(agreement: Agreement) -> registry_pb2.Agreement:
    # Sorted so that the same file always gives the same bytes: clients may cache or diff.
    return registry_pb2.Agreement(
        id=agreement.id,
        name=agreement.name,
        parties=sorted(agreement.parties),
        kinds=sorted(agreement.kinds),
        schemes=sorted(agreement.schemes),
        fields=sorted(agreement.fields),
        effective_from=agreement.effective_from.isoformat(),
        effective_until=agreement.effective_until.isoformat()
        if agreement.effective_until is not None
        else "",
        alliance=agreement.alliance or "",
    )


class RegistryServicer(registry_pb2_grpc.RegistryServiceServicer):
    def __init__(self, federation: Federation):
        self._federation = federation

    def ListParticipants(
        self, request: registry_pb2.ListParticipantsRequest, context: grpc.ServicerContext
    ) -> registry_pb2.ListParticipantsResponse:
        return registry_pb2.ListParticipantsResponse(
            participants=[
                registry_pb2.Participant(
                    code=p.code, name=p.name, name_en=p.name_en, role=_ROLES[p.role], alliances=p.alliances
                )
                for p in self._federation.participants.values()
            ]
        )

    def ListAlliances(
        self, request: registry_pb2.ListAlliancesRequest, context: grpc.ServicerContext
    ) -> registry_pb2.ListAlliancesResponse:
        return registry_pb2.ListAlliancesResponse(
            alliances=[
                registry_pb2.Alliance(
                    code=a.code, name=a.name, name_en=a.name_en, secretariat=a.secretariat, members=a.members
                )
                for a in self._federation.alliances.values()
            ]
        )

    def ListKeys(
        self, request: registry_pb2.ListKeysRequest, context: grpc.ServicerContext
    ) -> registry_pb2.ListKeysResponse:
        if request.owner and self._federation.participant(request.owner) is None:
            raise NotFound(
                f"no participant {request.owner!r} in the federation", reason="UNKNOWN_PARTICIPANT"
            )
        keys = [k for k in self._federation.keys.values() if not request.owner or k.owner == request.owner]
        return registry_pb2.ListKeysResponse(keys=[key_to_proto(k) for k in keys])

    def ListAgreements(
        self, request: registry_pb2.ListAgreementsRequest, context: grpc.ServicerContext
    ) -> registry_pb2.ListAgreementsResponse:
        return registry_pb2.ListAgreementsResponse(
            agreements=[
                agreement_to_proto(a)
                for a in sorted(self._federation.agreements.values(), key=lambda a: a.id)
            ]
        )
