"""The account record both sides of the link talk about.

A meter account is keyed on the wire by its *code* (an opaque tag of up to 75
characters that the agent sets from the shared list).  The meter assigns the
*number* itself: chargeable (lowest-level) accounts carry one, administrative
parents carry 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class AccountRecord:
    """One account as the meter reports it (and as the agent projects it).

    ``password`` is a secret: it is excluded from ``repr`` so it never reaches a
    log line or an exception message.
    """

    code: str
    parent_code: str = ""  # "" at the top level
    name: str = ""
    active: bool = True
    password_enabled: bool = False
    password: str = field(default="", repr=False)
    number: int = 0  # 0 = administrative or not yet assigned
    chargeable: bool = False
    ever_charged: bool = False
    pieces: int = 0
    postage_mills: int = 0
