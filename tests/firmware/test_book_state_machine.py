"""AccountBook driven by random puts/deletes/mail runs/resets against a reference model."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from firmware_sim.accounts import AccountBook, AccountError, PutRequest, Settings
from protocol.digest import list_digest
from protocol.errors import ErrorCode

TODAY = dt.date(2024, 6, 1)
CAPACITY = 25


@dataclass
class Ref:
    """The simplest model of the rules: a tree, and counters that live on leaves."""

    parent: dict[str, str] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)
    active: dict[str, bool] = field(default_factory=dict)
    pieces: dict[str, int] = field(default_factory=dict)
    mills: dict[str, int] = field(default_factory=dict)
    ever: dict[str, bool] = field(default_factory=dict)
    pw: dict[str, str | None] = field(default_factory=dict)  # own password (None: off)

    def kids(self, code: str) -> list[str]:
        return [c for c in self.order if self.parent[c] == code]

    def leaf(self, code: str) -> bool:
        return not self.kids(code)

    def depth(self, code: str) -> int:
        return 0 if code == "" else 1 + self.depth(self.parent[code])

    def usable(self, code: str) -> bool:
        while code:
            if not self.active[code]:
                return False
            code = self.parent[code]
        return True

    def leaves(self) -> list[str]:
        return [c for c in self.order if self.leaf(c)]


class BookMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.book = AccountBook(Settings(capacity=CAPACITY))
        self.ref = Ref()
        self.serial = 0
        self.charged = [0, 0]
        self.cleared = [0, 0]

    # ------------------------------------------------------------------ helpers

    def pick(self, data: st.DataObject, leaves_only: bool = False) -> str | None:
        pool = self.ref.leaves() if leaves_only else self.ref.order
        return data.draw(st.sampled_from(pool)) if pool else None

    def expect(self, code: ErrorCode, fn: object, *args: object) -> None:
        assert callable(fn)
        event(f"refused {code.name}")
        before = self.book.to_state()
        try:
            fn(*args)
        except AccountError as exc:
            assert exc.code == code, (exc.code, code)
        else:
            raise AssertionError(f"expected {code.name}")
        assert self.book.to_state() == before  # a refusal changes nothing

    # -------------------------------------------------------------------- rules

    @rule(data=st.data(), top=st.booleans(), pw=st.sampled_from([None, "Pw01", "pw01", "abcdef"]))
    def create(self, data: st.DataObject, top: bool, pw: str | None) -> None:
        parent = "" if top or not self.ref.order else self.pick(data) or ""
        self.serial += 1
        code = f"c{self.serial}"
        enabled = None if pw is None else True
        roll = parent != "" and self.ref.leaf(parent)
        if self.ref.depth(parent) >= 3:
            self.expect(ErrorCode.TOO_DEEP, self.book.put, code, parent, f"N{self.serial}",
                        True, enabled, pw)
            return
        if not roll and len(self.ref.leaves()) >= CAPACITY:
            self.expect(ErrorCode.CAPACITY, self.book.put, code, parent, f"N{self.serial}",
                        True, enabled, pw)
            return
        self.book.put(code, parent, f"N{self.serial}", True, enabled, pw)
        r = self.ref
        r.parent[code], r.active[code] = parent, True
        r.order.append(code)
        if roll:
            r.pieces[code], r.mills[code] = r.pieces.pop(parent), r.mills.pop(parent)
            r.ever[code] = r.ever.pop(parent)
            # The parent keeps its own password settings, dormant (see delete).
            r.pw[code] = pw if pw is not None else r.pw[parent]
        else:
            r.pieces[code] = r.mills[code] = 0
            r.ever[code] = False
            r.pw[code] = pw

    @rule(data=st.data(), count=st.integers(1, 8))
    def create_many(self, data: st.DataObject, count: int) -> None:
        for _ in range(count):
            self.create(data, top=data.draw(st.booleans()), pw=None)

    @rule(data=st.data())
    def delete(self, data: st.DataObject) -> None:
        code = self.pick(data)
        if code is None:
            return
        r = self.ref
        if not r.leaf(code):
            self.expect(ErrorCode.HAS_CHILDREN, self.book.delete, code)
            return
        if r.ever[code]:
            self.expect(ErrorCode.HAS_HISTORY, self.book.delete, code)
            return
        self.book.delete(code)
        parent = r.parent.pop(code)
        r.order.remove(code)
        del r.active[code], r.pieces[code], r.mills[code], r.ever[code], r.pw[code]
        if parent and r.leaf(parent):
            r.pieces[parent] = r.mills[parent] = 0
            r.ever[parent] = False  # its dormant password settings apply again

    @rule(data=st.data(), pieces=st.integers(0, 50), mills=st.integers(0, 10**7),
          right=st.booleans())
    def mail_run(self, data: st.DataObject, pieces: int, mills: int, right: bool) -> None:
        code = self.pick(data)
        if code is None:
            return
        r = self.ref
        password = r.pw.get(code) if right else "nope"
        if not r.leaf(code):
            self.expect(ErrorCode.NOT_CHARGEABLE, self.book.charge, code, password, pieces,
                        mills, TODAY)
            return
        number = self.book.get(code).number
        if not r.usable(code):
            self.expect(ErrorCode.INACTIVE, self.book.charge, number, password, pieces, mills,
                        TODAY)
            return
        if r.pw[code] is not None and not right:
            self.expect(ErrorCode.BAD_ACCOUNT_PASSWORD, self.book.charge, number, password,
                        pieces, mills, TODAY)
            return
        self.book.charge(number, password, pieces, mills, TODAY)
        r.pieces[code] += pieces
        r.mills[code] += mills
        r.ever[code] = True
        self.charged[0] += pieces
        self.charged[1] += mills

    @rule(data=st.data(), active=st.booleans())
    def set_active(self, data: st.DataObject, active: bool) -> None:
        code = self.pick(data)
        if code is None:
            return
        rec = self.book.get(code)
        self.book.put(code, rec.parent_code, rec.name, active)
        self.ref.active[code] = active

    @rule(data=st.data(), enabled=st.booleans())
    def reset_one(self, data: st.DataObject, enabled: bool) -> None:
        code = self.pick(data)
        if code is None:
            return
        self.book.configure(reset_individual_enabled=enabled)
        if not self.ref.leaf(code):
            self.expect(ErrorCode.NOT_CHARGEABLE, self.book.reset, code)
        elif not enabled:
            self.expect(ErrorCode.RESET_DISABLED, self.book.reset, code)
        else:
            got = self.book.reset(code)
            assert (got.pieces, got.postage_mills) == (self.ref.pieces[code],
                                                       self.ref.mills[code])
            self.cleared[0] += got.pieces
            self.cleared[1] += got.postage_mills
            self.ref.pieces[code] = self.ref.mills[code] = 0

    @rule()
    def reset_all(self) -> None:
        got = self.book.reset_all(TODAY)
        assert got.pieces == sum(self.ref.pieces.values())
        assert got.postage_mills == sum(self.ref.mills.values())
        self.cleared[0] += got.pieces
        self.cleared[1] += got.postage_mills
        for code in self.ref.pieces:
            self.ref.pieces[code] = self.ref.mills[code] = 0

    @rule(data=st.data())
    def failing_batch(self, data: st.DataObject) -> None:
        """A batch whose last put is bad changes nothing at all."""
        self.serial += 1
        puts = [PutRequest(f"b{self.serial}", "", f"B{self.serial}"),
                PutRequest(f"x{self.serial}", "no-such-parent", "X")]
        deletes = [c for c in self.ref.leaves() if not self.ref.ever[c]][:1]
        self.expect(ErrorCode.UNKNOWN_PARENT, self.book.apply_batch, puts, deletes)

    # --------------------------------------------------------------- invariants

    @invariant()
    def matches_reference(self) -> None:
        recs = {r.code: r for r in self.book.records()}
        assert list(recs) == self.book.codes()
        assert set(recs) == set(self.ref.order)
        for code in self.ref.order:
            rec = recs[code]
            assert rec.chargeable == self.ref.leaf(code)
            if rec.chargeable:
                assert (rec.pieces, rec.postage_mills, rec.ever_charged) == (
                    self.ref.pieces[code], self.ref.mills[code], self.ref.ever[code])
                assert rec.number > 0
                assert rec.password_enabled == (self.ref.pw[code] is not None)
            else:
                assert rec.number == 0 and not rec.password_enabled
                kids = [recs[c] for c in self.ref.kids(code)]
                assert rec.pieces == sum(k.pieces for k in kids)
                assert rec.postage_mills == sum(k.postage_mills for k in kids)

    @invariant()
    def nothing_lost(self) -> None:
        total = self.book.totals()
        assert total.pieces + self.cleared[0] == self.charged[0]
        assert total.postage_mills + self.cleared[1] == self.charged[1]

    @invariant()
    def numbers_and_capacity(self) -> None:
        recs = self.book.records()
        nums = [r.number for r in recs if r.chargeable]
        assert len(nums) == len(set(nums))
        assert self.book.chargeable_count() == len(nums) == len(self.ref.leaves()) <= CAPACITY
        for n in nums:
            assert self.book.code_of(n) in self.ref.order

    @invariant()
    def digest_cache_and_snapshot(self) -> None:
        assert self.book.digest() == list_digest(self.book.records(include_passwords=True))
        again = AccountBook.from_state(self.book.to_state())
        assert again.records(True) == self.book.records(True)


BookMachine.TestCase.settings = settings(
    max_examples=100,
    stateful_step_count=50,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
TestBookMachine = BookMachine.TestCase
