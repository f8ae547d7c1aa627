"""The list digest: one 16-byte fingerprint of an account list, the same on both sides.

A meter reports it in IDENTIFY; the agent computes it from the shared list
projected onto the meter (names already shortened).  Equal digests mean the
meter's list is the shared list, so a sync that finds them equal sends nothing.

Definition (docs/PROTOCOL.md, "List digest"):

* Only structure and settings count: code, parent code, name, active, and the
  password of *chargeable* accounts.  Numbers and counters do not (the meter
  assigns numbers and mail runs change counters).
* An account is chargeable when no other account names it as parent.
* Entries are sorted by the UTF-8 bytes of their code.  Each entry is encoded as
  ``str8(code) str8(parent_code) str8(name) u8(flags) str8(password)`` where
  ``str8`` is a one-byte length followed by UTF-8 bytes, ``flags`` bit 0 is
  *active* and bit 1 is *password enabled* (chargeable accounts only), and the
  password is empty unless bit 1 is set.
* The digest is the first 16 bytes of SHA-256 over the concatenated entries.
  The empty list has the digest of zero bytes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Protocol

DIGEST_SIZE = 16


class DigestFields(Protocol):
    """What the digest reads from an account: an AccountRecord, or the meter's own
    account objects (``AccountBook.digest`` hashes those without building records)."""

    @property
    def code(self) -> str: ...
    @property
    def parent_code(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def active(self) -> bool: ...
    @property
    def password_enabled(self) -> bool: ...
    @property
    def password(self) -> str: ...


def _str8(text: str) -> bytes:
    raw = text.encode("utf-8")
    if len(raw) > 255:
        raise ValueError("digest field longer than 255 bytes")
    return bytes((len(raw),)) + raw


def _code_key(rec: DigestFields) -> bytes:
    return rec.code.encode("utf-8")


_NO_PASSWORD = _str8("")


def list_digest(records: Iterable[DigestFields]) -> bytes:
    """Return the 16-byte digest of an account list (see the module docstring)."""
    items = list(records)
    parents = {r.parent_code for r in items if r.parent_code}
    chunks: list[bytes] = []
    add = chunks.extend
    for rec in sorted(items, key=_code_key):
        with_password = rec.password_enabled and rec.code not in parents
        flags = (1 if rec.active else 0) | (2 if with_password else 0)
        add(
            (
                _str8(rec.code),
                _str8(rec.parent_code),
                _str8(rec.name),
                bytes((flags,)),
                _str8(rec.password) if with_password else _NO_PASSWORD,
            )
        )
    # one update over the whole encoding: the same bytes as updating field by field
    return hashlib.sha256(b"".join(chunks)).digest()[:DIGEST_SIZE]
