"""Rater pseudonyms: the one stand-in for a rater id that leaves the platform.

A pseudonym is HMAC-SHA256(key, str(rater id)), its first PSEUDONYM_HEX hex digits. Snapshots
compute it in PostgreSQL with a random key each, or with the installation's stable key
(`stable_salt`), which the research API uses too, so a researcher can join API rows to a
stable-id snapshot. Nobody without SECRET_KEY can rebuild the table from the ids.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from django.conf import settings

from ratings.models import Rater

PSEUDONYM_HEX = 16


def stable_salt() -> str:
    """The same salt for every stable-id snapshot of this installation (and the research API),
    derived from the SECRET_KEY so that it cannot be recomputed without it."""
    key = settings.SECRET_KEY.encode()
    return hmac.new(key, b"musicpref dataset snapshot rater ids", hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Pseudonyms:
    """HMAC-SHA256(salt, str(rater id)) in SQL. PostgreSQL has sha256() but no hmac() without
    pgcrypto, so the HMAC is spelled out: H((K ^ opad) || H((K ^ ipad) || message))."""

    salt: str

    def params(self) -> tuple[bytes, bytes]:
        key = bytes.fromhex(self.salt).ljust(64, b"\0")  # keys up to the block size are padded
        return bytes(b ^ 0x5C for b in key), bytes(b ^ 0x36 for b in key)

    def sql(self) -> str:
        inner = "sha256(%s || convert_to(r.id::text, 'UTF8'))"
        return (
            f"SELECT r.id, left(encode(sha256(%s || {inner}), 'hex'), {PSEUDONYM_HEX}) "
            # OFFSET 0 keeps the subquery whole: flattened, the hash would run once per row
            # instead of once per rater.
            f'AS pseudonym FROM "{Rater._meta.db_table}" r OFFSET 0'
        )

    def of(self, rater_id: int) -> str:
        """The same pseudonym computed in Python."""
        digest = hmac.new(bytes.fromhex(self.salt), str(rater_id).encode(), hashlib.sha256)
        return digest.hexdigest()[:PSEUDONYM_HEX]


def rater_pseudonym(rater_id: int, *, salt: str | None = None) -> str:
    """The research API's pseudonym of a rater: under the stable salt unless one is given."""
    return Pseudonyms(salt or stable_salt()).of(rater_id)


def rater_ids_with_pseudonym(pseudonym: str) -> list[int]:
    """The rater ids behind a stable pseudonym (one, or none). A keyed hash cannot be
    inverted, so this hashes every rater id: microseconds each, fine for the platform's rater
    counts."""
    pseudonym, pseudonyms = pseudonym.strip().lower(), Pseudonyms(stable_salt())
    return [
        rater_id
        for rater_id in Rater.objects.values_list("id", flat=True).iterator()
        if pseudonyms.of(rater_id) == pseudonym
    ]
