"""API tokens: made, hashed and checked here; stored as hashes by :mod:`sinks.tokens`. Pure.

A token reads ``sp_<id>_<secret>``: the 16-hex-digit id finds the stored record without a table
scan, the secret is 32 random bytes (256 bits). Only ``sha256(token)`` is stored, and a presented
token is compared with it in constant time (:func:`hmac.compare_digest`). With that much entropy a
slow password hash would add latency and no protection.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime

from schemas.ingest import TokenRecord, TokenScope

TOKEN_PATTERN = re.compile(r"^sp_(?P<id>[0-9a-f]{16})_(?P<secret>[A-Za-z0-9_-]{43})$")


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def parse_scopes(text: str) -> tuple[TokenScope, ...]:
    """``events:write,checkin`` -> scopes; ValueError naming the allowed ones."""
    scopes: list[TokenScope] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            scope = TokenScope(part)
        except ValueError:
            allowed = ", ".join(s.value for s in TokenScope)
            raise ValueError(f"unknown scope {part!r}; use one or more of {allowed}") from None
        if scope not in scopes:
            scopes.append(scope)
    if not scopes:
        raise ValueError("give at least one scope (events:write, checkin)")
    return tuple(scopes)


def new_token(
    name: str,
    scopes: Sequence[TokenScope],
    *,
    rep_id: str | None,
    now: datetime,
    random_bytes: Callable[[int], bytes] = secrets.token_bytes,
) -> tuple[str, TokenRecord]:
    """A new token (shown once) and the record to store. A ``checkin`` token needs ``rep_id``: it
    checks in as that rep and no other."""
    if TokenScope.CHECKIN in scopes and rep_id is None:
        raise ValueError("a checkin token belongs to one rep: give --rep REP")
    token_id = random_bytes(8).hex()
    secret = base64.urlsafe_b64encode(random_bytes(32)).decode("ascii").rstrip("=")
    token = f"sp_{token_id}_{secret}"
    record = TokenRecord(
        token_id=token_id,
        name=name,
        token_hash=token_hash(token),
        scopes=tuple(scopes),
        rep_id=rep_id,
        created_at=now,
    )
    return token, record


def token_id_of(token: str) -> str | None:
    match = TOKEN_PATTERN.fullmatch(token)
    return match["id"] if match else None


class TokenBook:
    """The known tokens by id, for checking presented ones."""

    def __init__(self, records: Iterable[TokenRecord] = ()) -> None:
        self._by_id = {record.token_id: record for record in records}

    def __contains__(self, token_id: str) -> bool:
        return token_id in self._by_id

    def __len__(self) -> int:
        return len(self._by_id)

    def authenticate(self, token: str) -> TokenRecord | None:
        """The active record of ``token``, or None (unknown, malformed, wrong secret or revoked)."""
        token_id = token_id_of(token)
        record = self._by_id.get(token_id) if token_id is not None else None
        if record is None:
            # Same work as a known id, so timing does not tell which ids exist.
            hmac.compare_digest(token_hash(token), "0" * 64)
            return None
        if not hmac.compare_digest(token_hash(token), record.token_hash):
            return None
        return record if record.active else None
