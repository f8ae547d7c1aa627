"""Numbered error codes carried by the ERROR reply (see docs/PROTOCOL.md, "Error codes").

The numbers are part of the wire protocol: never renumber, only append.
"""

from __future__ import annotations

from enum import IntEnum


class ErrorCode(IntEnum):
    """Why a request was refused.  A refused request changes nothing on the meter."""

    MALFORMED = 1  #: payload does not parse as the message its type names
    UNKNOWN_MESSAGE = 2  #: message type not in the catalogue
    UNSUPPORTED_VERSION = 3  #: frame version byte the meter does not speak
    NOT_AUTHENTICATED = 4  #: accounting change without a prior AUTH
    BAD_SUPERVISOR_PASSWORD = 5  #: AUTH with the wrong supervisor password
    LOCKED_OUT = 6  #: too many wrong supervisor passwords; wait and retry
    NO_TRANSACTION = 7  #: PUT/DELETE/COMMIT/ABORT with no open list transaction
    UNKNOWN_PARENT = 8  #: PUT names a parent code the (staged) list does not hold
    CAPACITY = 9  #: "Cannot create any more accounts"
    BATCH_TOO_LARGE = 10  #: more records in one batch than the meter accepts
    NAME_TOO_LONG = 11  #: name over 32 (top level) or 16 (sub, subsub) characters
    DUPLICATE_NAME = 12  #: sibling already has that name
    UNKNOWN_ACCOUNT = 13  #: code or number the meter does not hold
    HAS_HISTORY = 14  #: delete refused: the account has been charged (deactivate it)
    TOO_DEEP = 15  #: a fourth level was asked for
    BAD_ACCOUNT_PASSWORD = 16  #: mail run with a wrong account password
    INACTIVE = 17  #: mail run on an inactive account
    NOT_CHARGEABLE = 18  #: mail run on an administrative (parent) account
    PERIOD_EXPIRED = 19  #: accounting period cutoff passed; reset accounts first
    RESET_DISABLED = 20  #: single-account reset while "reset individual accounts" is off
    DIGEST_MISMATCH = 21  #: COMMIT's expected digest differs from the staged list
    SEQUENCE = 22  #: sequence number outside the receive window
    BAD_PASSWORD_FORMAT = 23  #: account password shorter than 4 characters
    HAS_CHILDREN = 24  #: delete refused: delete the children first
    MOVE_NOT_SUPPORTED = 25  #: PUT would move an existing account to another parent
    INVALID_FIELD = 26  #: a field value is out of range (empty name, bad number, ...)
    NUMBER_IN_USE = 27  #: an explicit account number another account already holds
    SETUP_IN_PROGRESS = 28  #: mail run while a list transaction is open (accounting setup)
    INTERNAL = 99  #: the meter failed; the request was not applied
