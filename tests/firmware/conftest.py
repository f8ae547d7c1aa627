"""Shared helpers for the firmware tests."""

from __future__ import annotations

import datetime as dt

import pytest

from firmware_sim.accounts import AccountBook, AccountError, Settings
from protocol.errors import ErrorCode

TODAY = dt.date(2024, 3, 15)


def refused(code: ErrorCode, fn: object, *args: object, **kwargs: object) -> AccountError:
    """Call fn and assert it raises AccountError with ``code``; return the error."""
    assert callable(fn)
    with pytest.raises(AccountError) as info:
        fn(*args, **kwargs)
    assert info.value.code == code, f"expected {code.name}, got {info.value.code.name}"
    return info.value


def snapshot(book: AccountBook) -> object:
    return book.to_state()


def manual_book(capacity: int = 25) -> AccountBook:
    """The DM800i manual's Engineering example, built the way the manual describes."""
    book = AccountBook(Settings(capacity=capacity))
    book.put("eng", "", "Engineering", password_enabled=True, password="Eng1")
    book.put("sw", "eng", "Software")
    book.put("id", "eng", "Industrial Desig", password_enabled=True, password="IdPw")
    book.put("swt", "sw", "Software Testing")
    book.put("swd", "sw", "Software Design", password_enabled=True, password="SdPw")
    return book
