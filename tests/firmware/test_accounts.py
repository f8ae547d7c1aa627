"""The accounting model against the DOMAIN.md rules (items 1-13)."""

from __future__ import annotations

import datetime as dt

import pytest

from firmware_sim.accounts import (
    CAPACITY_TIERS,
    AccountBook,
    AccountError,
    Cleared,
    Period,
    PutRequest,
    Settings,
    Supervisor,
)
from protocol.digest import list_digest
from protocol.errors import ErrorCode
from protocol.records import AccountRecord
from tests.firmware.conftest import TODAY, manual_book, refused

# ----------------------------------------------------------------- roll-down (3)


def numbers(book: AccountBook) -> dict[str, int]:
    return {r.code: r.number for r in book.records()}


def test_manual_example_numbers_exactly() -> None:
    book = AccountBook()
    book.put("eng", "", "Engineering")
    assert numbers(book) == {"eng": 1}
    book.put("sw", "eng", "Software")
    assert numbers(book) == {"eng": 0, "sw": 1}
    # The manual's "Industrial Design" is 17 characters: over the 16-character sub limit.
    refused(ErrorCode.NAME_TOO_LONG, book.put, "id", "eng", "Industrial Design")
    book.put("id", "eng", "Industrial Desig")
    assert numbers(book) == {"eng": 0, "sw": 1, "id": 2}
    book.put("swt", "sw", "Software Testing")
    book.put("swd", "sw", "Software Design")
    assert numbers(book) == {"eng": 0, "sw": 0, "swt": 1, "swd": 3, "id": 2}
    assert [r.code for r in book.records()] == ["eng", "sw", "swt", "swd", "id"]
    assert [r.chargeable for r in book.records()] == [False, False, True, True, True]
    assert book.chargeable_count() == 3


def test_roll_down_moves_password_counters_and_history_both_levels() -> None:
    book = AccountBook()
    book.put("eng", "", "Engineering", password_enabled=True, password="Eng1")
    book.charge(1, "Eng1", 4, 2_120, TODAY)
    book.put("sw", "eng", "Software")
    sw = book.get("sw")
    assert (sw.number, sw.password_enabled, sw.pieces, sw.postage_mills, sw.ever_charged) == (
        1, True, 4, 2_120, True)
    eng = book.get("eng")
    assert (eng.number, eng.chargeable, eng.pieces, eng.postage_mills) == (0, False, 4, 2_120)
    # The rolled-down password works on the child; the parent cannot be charged.
    book.charge(1, "Eng1", 1, 530, TODAY)
    refused(ErrorCode.NOT_CHARGEABLE, book.charge, "eng", "Eng1", 1, 1, TODAY)
    # Second child: new linked set, next free number, its own password (none).
    book.put("id", "eng", "Industrial")
    assert book.get("id").number == 2
    assert not book.get("id").password_enabled
    book.charge(2, None, 2, 100, TODAY)
    # One level lower.
    book.put("swt", "sw", "Software Testing")
    swt = book.get("swt")
    assert (swt.number, swt.password_enabled, swt.pieces, swt.postage_mills) == (1, True, 5, 2_650)
    book.charge(1, "Eng1", 1, 1, TODAY)
    assert book.get("sw").pieces == 6
    assert book.totals("eng") == Cleared(8, 2_751)
    assert book.get("eng").pieces == 8


def test_explicit_password_on_create_replaces_the_rolled_down_one() -> None:
    book = AccountBook()
    book.put("eng", "", "Engineering", password_enabled=True, password="Eng1")
    book.put("sw", "eng", "Software", password="Soft")
    refused(ErrorCode.BAD_ACCOUNT_PASSWORD, book.charge, 1, "Eng1", 1, 1, TODAY)
    book.charge(1, "Soft", 1, 1, TODAY)
    book.put("hw", "eng", "Hardware", password_enabled=False)
    book.charge(2, None, 1, 1, TODAY)


def test_second_child_with_password_enabled_needs_a_password() -> None:
    book = AccountBook()
    book.put("eng", "", "Engineering", password_enabled=True, password="Eng1")
    book.put("sw", "eng", "Software")
    refused(ErrorCode.BAD_PASSWORD_FORMAT, book.put, "hw", "eng", "Hardware", True, True)
    assert "hw" not in book


# --------------------------------------------------------------- capacity (4)


@pytest.mark.parametrize("tier", CAPACITY_TIERS)
def test_capacity_tiers_count_chargeable_accounts_only(tier: int) -> None:
    book = AccountBook(Settings(capacity=tier))
    for i in range(tier):
        book.put(f"a{i}", "", f"Account {i}")
    assert book.chargeable_count() == tier
    before = book.to_state()
    digest = book.digest()
    err = refused(ErrorCode.CAPACITY, book.put, "extra", "", "Extra")
    assert err.message == "Cannot create any more accounts"
    # A second child under a parent adds a chargeable account: refused too.
    book.put("a0sub", "a0", "First")  # the first child does not add one
    refused(ErrorCode.CAPACITY, book.put, "a0sub2", "a0", "Second")
    book.delete("a0sub")
    assert book.to_state() == before
    assert book.digest() == digest


def test_capacity_refusal_in_a_batch_changes_nothing() -> None:
    book = AccountBook()
    for i in range(24):
        book.put(f"a{i}", "", f"Account {i}")
    before = book.to_state()
    with pytest.raises(AccountError) as info:
        book.apply_batch([PutRequest("x1", "", "X1"), PutRequest("x2", "", "X2")])
    assert info.value.code == ErrorCode.CAPACITY
    assert book.to_state() == before


def test_capacity_setting_must_be_a_tier_and_fit() -> None:
    book = AccountBook(Settings(capacity=100))
    for i in range(30):
        book.put(f"a{i}", "", f"A{i}")
    refused(ErrorCode.INVALID_FIELD, book.configure, capacity=50)
    refused(ErrorCode.CAPACITY, book.configure, capacity=25)
    assert book.configure(capacity=500).capacity == 500
    with pytest.raises(AccountError):
        AccountBook(Settings(capacity=26))


# ------------------------------------------------------- names, limits, structure


def test_name_limits_and_sibling_uniqueness() -> None:
    book = AccountBook()
    book.put("t", "", "T" * 32)
    refused(ErrorCode.NAME_TOO_LONG, book.put, "t2", "", "T" * 33)
    book.put("s", "t", "S" * 16)
    refused(ErrorCode.NAME_TOO_LONG, book.put, "s2", "t", "S" * 17)
    book.put("ss", "s", "Z" * 16)
    refused(ErrorCode.NAME_TOO_LONG, book.put, "ss2", "s", "Z" * 17)
    refused(ErrorCode.INVALID_FIELD, book.put, "e", "", "")
    refused(ErrorCode.INVALID_FIELD, book.put, "e", "", "   ")
    refused(ErrorCode.INVALID_FIELD, book.put, "e", "", "tab\there")
    refused(ErrorCode.DUPLICATE_NAME, book.put, "t3", "", "T" * 32)
    book.put("s3", "t", "T" * 16)  # same name as an uncle's prefix: fine
    book.put("x", "", "Other")
    refused(ErrorCode.DUPLICATE_NAME, book.put, "x", "", "T" * 32)  # rename onto a sibling
    book.put("x", "", "Other")  # renaming to itself is fine
    book.put("y", "x", "S" * 16)  # same name under another parent is fine


def test_codes_structure_and_moves() -> None:
    book = AccountBook()
    book.put("c" * 75, "", "Long code")
    refused(ErrorCode.INVALID_FIELD, book.put, "c" * 76, "", "Too long code")
    refused(ErrorCode.INVALID_FIELD, book.put, "", "", "Empty code")
    refused(ErrorCode.UNKNOWN_PARENT, book.put, "k", "nope", "Kid")
    book.put("a", "", "A")
    book.put("b", "a", "B")
    book.put("c", "b", "C")
    refused(ErrorCode.TOO_DEEP, book.put, "d", "c", "D")
    refused(ErrorCode.MOVE_NOT_SUPPORTED, book.put, "c", "a", "C")
    refused(ErrorCode.MOVE_NOT_SUPPORTED, book.put, "b", "", "B")
    refused(ErrorCode.UNKNOWN_ACCOUNT, book.delete, "zzz")
    refused(ErrorCode.UNKNOWN_ACCOUNT, book.charge, 99, None, 1, 1, TODAY)
    refused(ErrorCode.UNKNOWN_ACCOUNT, book.charge, 0, None, 1, 1, TODAY)
    assert book.depth("c") == 3 and book.path("c") == ["A", "B", "C"]


def test_explicit_numbers_are_supervisor_edits() -> None:
    book = manual_book()
    refused(ErrorCode.NUMBER_IN_USE, book.put, "id", "eng", "Industrial Desig", number=1)
    refused(ErrorCode.INVALID_FIELD, book.put, "sw", "eng", "Software", number=7)
    refused(ErrorCode.INVALID_FIELD, book.put, "id", "eng", "Industrial Desig", number=-1)
    book.put("id", "eng", "Industrial Desig", number=42)
    assert book.by_number(42).code == "id"
    refused(ErrorCode.UNKNOWN_ACCOUNT, book.by_number, 2)
    book.put("new", "", "New")
    assert book.get("new").number == 2  # number 2 was freed (no history)
    book.put("n2", "", "Numbered", number=9)
    assert book.get("n2").number == 9


def test_number_of_an_account_with_history_is_never_reused() -> None:
    book = AccountBook()
    book.put("a", "", "A")
    book.charge(1, None, 1, 10, TODAY)
    book.put("a", "", "A", number=5)
    book.put("b", "", "B")
    assert book.get("b").number == 2  # 1 is retired with a's history
    refused(ErrorCode.NUMBER_IN_USE, book.put, "c", "", "C", number=1)


# ----------------------------------------------------------------- passwords (8)


def test_passwords_are_case_sensitive_and_four_plus() -> None:
    book = AccountBook()
    refused(ErrorCode.BAD_PASSWORD_FORMAT, book.put, "a", "", "A", True, True, "abc")
    refused(ErrorCode.BAD_PASSWORD_FORMAT, book.put, "a", "", "A", True, True, "")
    refused(ErrorCode.BAD_PASSWORD_FORMAT, book.put, "a", "", "A", True, True, None)
    book.put("a", "", "A", True, True, "AbCd")
    refused(ErrorCode.BAD_ACCOUNT_PASSWORD, book.charge, 1, "abcd", 1, 1, TODAY)
    refused(ErrorCode.BAD_ACCOUNT_PASSWORD, book.charge, 1, None, 1, 1, TODAY)
    book.charge(1, "AbCd", 1, 1, TODAY)
    book.put("a", "", "A", True, False)  # protection off, password kept
    book.charge(1, None, 1, 1, TODAY)
    book.put("a", "", "A", True, True)  # back on with the kept password
    refused(ErrorCode.BAD_ACCOUNT_PASSWORD, book.charge, 1, None, 1, 1, TODAY)
    book.put("a", "", "A", True, True, "longer password!")
    book.charge(1, "longer password!", 1, 1, TODAY)


def test_passwords_never_appear_in_repr_str_or_errors() -> None:
    secret = "Sekr3tPw"
    book = AccountBook()
    book.put("a", "", "A", True, True, secret)
    texts = [repr(book), str(book), repr(book.get("a")), repr(book.records(True)),
             repr(book.to_state()["accounts"][0]["code"])]
    for bad in ("xy", "x" * 40):
        with pytest.raises(AccountError) as info:
            book.put("a", "", "A", True, True, bad)
        texts += [str(info.value), repr(info.value), info.value.message]
        assert bad not in str(info.value)
    with pytest.raises(AccountError) as info2:
        book.charge(1, secret.lower(), 1, 1, TODAY)
    texts += [str(info2.value), repr(PutRequest("a", password=secret))]
    sup = Supervisor(n=2**4)
    sup.set_password("SupSecret")
    texts.append(repr(sup))
    assert not [t for t in texts if secret in t or secret.lower() in t or "SupSecret" in t]
    assert book.get("a").password == ""
    assert book.records(include_passwords=True)[0].password == secret


# ------------------------------------------------------ delete vs history (12)


def test_delete_refused_with_history_or_children() -> None:
    book = manual_book()
    book.charge(3, "SdPw", 1, 450, TODAY)
    refused(ErrorCode.HAS_HISTORY, book.delete, "swd")
    refused(ErrorCode.HAS_CHILDREN, book.delete, "sw")
    book.put("swd", "sw", "Software Design", active=False)
    refused(ErrorCode.INACTIVE, book.charge, 3, "SdPw", 1, 1, TODAY)
    assert book.get("swd").pieces == 1  # inactive keeps its totals
    assert book.totals("eng").pieces == 1
    # History survives a reset: still not deletable, number still held.
    book.configure(reset_individual_enabled=True)
    book.reset(3)
    refused(ErrorCode.HAS_HISTORY, book.delete, "swd")
    book.delete("id")
    assert "id" not in book


def test_inactive_ancestor_blocks_mail() -> None:
    book = manual_book()
    book.put("sw", "eng", "Software", active=False)
    refused(ErrorCode.INACTIVE, book.charge, 1, "Eng1", 1, 1, TODAY)
    book.charge(2, "IdPw", 1, 1, TODAY)
    book.put("sw", "eng", "Software", active=True)
    book.charge(1, "Eng1", 1, 1, TODAY)


def test_deleting_last_child_makes_parent_chargeable_again() -> None:
    book = AccountBook()
    book.put("eng", "", "Engineering", password_enabled=True, password="Eng1")
    book.put("other", "", "Other")
    book.put("sw", "eng", "Software")
    assert book.get("sw").number == 1
    book.delete("sw")
    eng = book.get("eng")
    assert eng.chargeable and eng.number == 1 and eng.pieces == 0 and not eng.ever_charged
    # The parent's own password settings were dormant and apply again.
    refused(ErrorCode.BAD_ACCOUNT_PASSWORD, book.charge, 1, None, 1, 1, TODAY)
    book.charge(1, "Eng1", 1, 1, TODAY)
    assert book.chargeable_count() == 2


def test_put_then_delete_of_a_first_child_restores_the_digest() -> None:
    book = manual_book()
    before = book.digest()
    book.put("idx", "id", "Graphics", password="Gr4f")
    assert book.digest() != before
    book.delete("idx")
    assert book.digest() == before


# -------------------------------------------------------------- resets (10, 11)


def test_single_reset_rules() -> None:
    book = manual_book()
    book.charge(2, "IdPw", 3, 999, TODAY)
    refused(ErrorCode.RESET_DISABLED, book.reset, 2)
    assert book.get("id").pieces == 3
    book.configure(reset_individual_enabled=True)
    refused(ErrorCode.NOT_CHARGEABLE, book.reset, "sw")
    refused(ErrorCode.UNKNOWN_ACCOUNT, book.reset, 77)
    assert book.reset(2) == Cleared(3, 999)
    assert book.get("id").pieces == 0 and book.get("id").ever_charged


def test_reset_all_clears_everything_even_when_individual_is_off() -> None:
    book = manual_book()
    book.charge(1, "Eng1", 1, 100, TODAY)
    book.charge(2, "IdPw", 2, 200, TODAY)
    book.charge(3, "SdPw", 3, 300, TODAY)
    assert book.reset_all(TODAY) == Cleared(6, 600)
    assert book.totals() == Cleared(0, 0)


def test_period_blocks_mail_after_cutoff_until_reset_all() -> None:
    book = manual_book()
    refused(ErrorCode.INVALID_FIELD, book.configure, period="monthly")
    refused(ErrorCode.INVALID_FIELD, book.configure, period="fortnightly",
            cutoff=dt.date(2024, 1, 31))
    book.configure(period=Period.MONTHLY, cutoff=dt.date(2024, 1, 31))
    book.charge(1, "Eng1", 1, 1, dt.date(2024, 1, 31))  # the cutoff day itself is fine
    refused(ErrorCode.PERIOD_EXPIRED, book.charge, 1, "Eng1", 1, 1, dt.date(2024, 2, 1))
    book.configure(reset_individual_enabled=True)
    book.reset(1)  # a single reset does not reopen the period
    refused(ErrorCode.PERIOD_EXPIRED, book.charge, 1, "Eng1", 1, 1, dt.date(2024, 2, 1))
    book.reset_all(dt.date(2024, 4, 10))
    assert book.settings.cutoff == dt.date(2024, 4, 30)  # whole periods, day 31 clamped
    book.charge(1, "Eng1", 1, 1, dt.date(2024, 4, 30))
    refused(ErrorCode.PERIOD_EXPIRED, book.charge, 1, "Eng1", 1, 1, dt.date(2024, 5, 1))
    book.reset_all(dt.date(2024, 5, 1))
    assert book.settings.cutoff == dt.date(2024, 5, 31)  # no drift after a short month


@pytest.mark.parametrize(
    ("period", "cutoff", "today", "expected"),
    [
        (Period.WEEKLY, dt.date(2024, 3, 1), dt.date(2024, 3, 1), dt.date(2024, 3, 8)),
        (Period.WEEKLY, dt.date(2024, 3, 1), dt.date(2024, 3, 20), dt.date(2024, 3, 22)),
        (Period.MONTHLY, dt.date(2024, 1, 31), dt.date(2024, 2, 5), dt.date(2024, 2, 29)),
        (Period.QUARTERLY, dt.date(2024, 3, 31), dt.date(2024, 4, 2), dt.date(2024, 6, 30)),
        (Period.HALF_YEARLY, dt.date(2024, 6, 30), dt.date(2025, 1, 1), dt.date(2025, 6, 30)),
        (Period.YEARLY, dt.date(2024, 2, 29), dt.date(2024, 3, 1), dt.date(2025, 2, 28)),
        (Period.MONTHLY, dt.date(2024, 5, 31), dt.date(2024, 5, 10), dt.date(2024, 5, 31)),
    ],
)
def test_cutoff_moves_by_whole_periods_past_today(
    period: Period, cutoff: dt.date, today: dt.date, expected: dt.date
) -> None:
    book = AccountBook()
    book.configure(period=period, cutoff=cutoff)
    book.reset_all(today)
    assert book.settings.cutoff == expected
    assert not book.settings.expired(today)


def test_no_period_never_expires() -> None:
    book = AccountBook()
    book.put("a", "", "A")
    book.charge(1, None, 1, 1, dt.date(2999, 1, 1))


# ----------------------------------------------------------------- mail amounts (7)


def test_amounts_are_integers_never_floats() -> None:
    book = AccountBook()
    book.put("a", "", "A")
    refused(ErrorCode.INVALID_FIELD, book.charge, 1, None, 1, 0.5, TODAY)
    refused(ErrorCode.INVALID_FIELD, book.charge, 1, None, -1, 5, TODAY)
    refused(ErrorCode.INVALID_FIELD, book.charge, 1, None, True, 5, TODAY)
    book.charge(1, None, 2, 1_234, TODAY)
    assert book.get("a").postage_mills == 1_234
    assert isinstance(book.get("a").postage_mills, int)


# --------------------------------------------------------- batches and staging


def test_batch_is_atomic_and_orders_parents_first() -> None:
    book = AccountBook()
    book.apply_batch([
        PutRequest("swt", "sw", "Software Testing"),
        PutRequest("sw", "eng", "Software"),
        PutRequest("eng", "", "Engineering", password_enabled=True, password="Eng1"),
    ])
    assert numbers(book) == {"eng": 0, "sw": 0, "swt": 1}
    before = book.to_state()
    with pytest.raises(AccountError) as info:
        book.apply_batch(
            [PutRequest("x", "", "X"), PutRequest("y", "nope", "Y")], deletes=["swt"]
        )
    assert info.value.code == ErrorCode.UNKNOWN_PARENT
    assert book.to_state() == before
    # Deletes go deepest first, then puts.
    book.apply_batch([PutRequest("new", "", "Engineering 2")], deletes=["eng", "sw", "swt"])
    assert book.codes() == ["new"]


def test_batch_accepts_wire_records() -> None:
    book = AccountBook()
    book.apply_batch([AccountRecord("a", "", "A", password_enabled=True, password="pw12")])
    refused(ErrorCode.BAD_ACCOUNT_PASSWORD, book.charge, 1, "PW12", 1, 1, TODAY)
    # An empty password in a record keeps the current one.
    book.apply_batch([AccountRecord("a", "", "A2", password_enabled=True)])
    book.charge(1, "pw12", 1, 1, TODAY)


def test_copy_is_independent() -> None:
    book = manual_book()
    staged = book.copy()
    staged.put("new", "", "New")
    staged.charge(1, "Eng1", 1, 1, TODAY)
    assert "new" not in book and book.get("swt").pieces == 0
    assert staged.digest() != book.digest()


def test_digest_matches_protocol_and_ignores_counters() -> None:
    book = manual_book()
    d = book.digest()
    assert d == list_digest(book.records(include_passwords=True))
    assert d != list_digest(book.records(include_passwords=False))  # passwords count
    book.charge(1, "Eng1", 5, 5, TODAY)
    book.put("id", "eng", "Industrial Desig", number=50)
    assert book.digest() == d  # counters and numbers do not count
    book.put("id", "eng", "Industrial Desig", password="NewP")
    assert book.digest() != d
    assert book.digest() == list_digest(book.records(include_passwords=True))


def test_state_round_trip() -> None:
    book = manual_book(capacity=300)
    book.charge(1, "Eng1", 2, 20, TODAY)
    book.configure(period=Period.QUARTERLY, cutoff=dt.date(2024, 3, 31),
                   reset_individual_enabled=True)
    book.put("id", "eng", "Industrial Desig", number=8)
    again = AccountBook.from_state(book.to_state())
    assert again.records(True) == book.records(True)
    assert again.settings == book.settings
    assert again.digest() == book.digest()
    again.put("n", "", "N")
    book.put("n", "", "N")
    assert again.get("n").number == book.get("n").number == 2
    bad = book.to_state()
    bad["accounts"][2]["number"] = bad["accounts"][3]["number"]
    with pytest.raises(ValueError):
        AccountBook.from_state(bad)


# ---------------------------------------------------------------- supervisor (9)


def test_supervisor_hash_and_lockout() -> None:
    sup = Supervisor(n=2**4, max_failures=5, lockout_seconds=60)
    assert not sup.is_set
    sup.verify("anything", 0.0)  # unset: setup unprotected
    refused(ErrorCode.BAD_PASSWORD_FORMAT, sup.set_password, "abc")
    sup.set_password("Super1")
    state = sup.to_state()
    assert "Super1" not in repr(state) and len(bytes.fromhex(state["salt"])) == 16
    assert state["kdf"] == "scrypt" and state["n"] == 2**4
    sup.verify("Super1", 1.0)
    for i in range(4):
        refused(ErrorCode.BAD_SUPERVISOR_PASSWORD, sup.verify, "super1", 2.0 + i)
    sup.verify("Super1", 10.0)  # success clears the counter
    for i in range(4):
        refused(ErrorCode.BAD_SUPERVISOR_PASSWORD, sup.verify, "nope", 20.0 + i)
    refused(ErrorCode.LOCKED_OUT, sup.verify, "nope", 24.0)
    refused(ErrorCode.LOCKED_OUT, sup.verify, "Super1", 30.0)  # even the right one
    refused(ErrorCode.LOCKED_OUT, sup.verify, "Super1", 83.9)
    # The lockout survives a power cycle (state round trip).
    again = Supervisor.from_state(sup.to_state())
    refused(ErrorCode.LOCKED_OUT, again.verify, "Super1", 83.9)
    again.verify("Super1", 84.0)
    # A clock that jumps backwards never extends the lockout beyond one period.
    for _ in range(5):
        with pytest.raises(AccountError):
            again.verify("x" * 4, 100.0)
    refused(ErrorCode.LOCKED_OUT, again.verify, "Super1", -1000.0)
    again.verify("Super1", -939.0)


def test_supervisor_salt_differs_and_default_cost_is_modest() -> None:
    a, b = Supervisor(n=2**4), Supervisor(n=2**4)
    a.set_password("same-password")
    b.set_password("same-password")
    assert a.to_state()["salt"] != b.to_state()["salt"]
    assert a.to_state()["hash"] != b.to_state()["hash"]
    default = Supervisor()
    assert (default.n, default.r, default.p) == (2**14, 8, 1)
