"""Keyset page tokens and lookup-string checks shared by the read services.

A page token is base64url(JSON [filter digest, *cursor]). It is not secret and not
signed: anyone can build one, so the digest only catches a token reused with other
filters, and each service must check the decoded cursor as strictly as any input
before it reaches SQL.
"""

from __future__ import annotations

import base64
import json

from gateway.domain.errors import FieldViolation, InvalidArgument


def has_control_chars(text: str) -> bool:
    """Control characters in a lookup string (PostgreSQL refuses NUL in text)."""
    return any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in text)


def encode_token(digest: str, *cursor: int | str) -> str:
    raw = json.dumps([digest, *cursor], ensure_ascii=False).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def bad_token() -> InvalidArgument:
    return InvalidArgument(
        "page_token is not a token this query returned",
        violations=[FieldViolation("page_token", "not a token returned for these filters")],
        reason="BAD_PAGE_TOKEN",
    )


# Tokens this gateway issues are a digest and a short cursor: far below this. Bounding
# the size first also bounds how deeply a forged token can nest before JSON sees it.
MAX_TOKEN_LENGTH = 1024


def decode_token(token: str, digest: str, size: int) -> list[object]:
    """The cursor of ``size`` values, or BAD_PAGE_TOKEN; values are unchecked."""
    if len(token) > MAX_TOKEN_LENGTH:
        raise bad_token()
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        if raw.count(b"[") + raw.count(b"{") > 2:  # a cursor is one flat list
            raise bad_token()
        data = json.loads(raw)
    except (ValueError, RecursionError):
        raise bad_token() from None
    if not isinstance(data, list) or len(data) != size + 1 or data[0] != digest:
        raise bad_token()
    return data[1:]
