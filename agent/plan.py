"""Plan a sync: what must change on one meter so its list becomes the shared list.

Pure functions, no I/O.  ``project`` turns the shared list into the list the meter
should hold (names shortened to the meter's 32/16 limits); ``make_plan`` compares
that with the meter's current list, matching accounts by code, and returns a
``SyncPlan``: the PUT and DELETE records to send, a human account of every change,
what cannot be done, and the digest the meter must report after COMMIT.

Decisions (DOMAIN.md 5, 12):

* Shortening is deterministic: a name that fits is kept; a long one is cut to the
  limit (trailing spaces trimmed); if that collides with a sibling, ``~2``, ``~3``...
  replaces its tail.  Siblings are processed in code order.
* A meter account the shared list no longer has is deleted only if neither it nor
  anything below it was ever charged; otherwise it stays on the meter, inactive,
  with its counters ("retained").  Retained accounts are part of the target list,
  so ``verify`` and the digest agree with what the meter must hold.
* Moving an existing account to another parent is not done (the meter refuses it:
  counters would change linked sets); it is listed under ``problems``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

from protocol.digest import list_digest
from protocol.messages import AccountEntry, PutRecord
from protocol.records import AccountRecord

TOP_NAME_MAX = 32
SUB_NAME_MAX = 16
MIN_PASSWORD = 4


@dataclass(frozen=True)
class Shortening:
    code: str
    old: str
    new: str


@dataclass(frozen=True)
class Projection:
    """The shared list as the meter should hold it."""

    records: tuple[AccountRecord, ...]
    shortenings: tuple[Shortening, ...]


def _depths(records: Sequence[AccountRecord]) -> dict[str, int]:
    parent = {r.code: r.parent_code for r in records}
    depth: dict[str, int] = {}
    for code in parent:
        d, c, seen = 1, code, set()
        while parent.get(c) and c not in seen:
            seen.add(c)
            c = parent[c]
            d += 1
        depth[code] = d
    return depth


def project(records: Iterable[AccountRecord]) -> Projection:
    """Shorten names to the meter's limits, deterministically, siblings distinct."""
    items = list(records)
    depth = _depths(items)
    siblings: dict[str, list[AccountRecord]] = defaultdict(list)
    for r in items:
        siblings[r.parent_code].append(r)
    new_name: dict[str, str] = {}
    shortenings: list[Shortening] = []
    for group in siblings.values():
        group = sorted(group, key=lambda r: r.code)
        taken = set()
        long_ones = []
        for r in group:
            limit = TOP_NAME_MAX if depth[r.code] == 1 else SUB_NAME_MAX
            if len(r.name) <= limit:
                taken.add(r.name)
                new_name[r.code] = r.name
            else:
                long_ones.append((r, limit))
        for r, limit in long_ones:
            candidate = distinct_name(r.name, limit, taken)
            taken.add(candidate)
            new_name[r.code] = candidate
            shortenings.append(Shortening(r.code, r.name, candidate))
    # A linked set has one password, held by its chargeable (lowest) account: a
    # parent's password is dormant on the meter, so it is not part of the target.
    parents = {r.parent_code for r in items if r.parent_code}
    projected = tuple(
        replace(r, name=new_name[r.code], password_enabled=False, password="")
        if r.code in parents and (r.password_enabled or r.password)
        else r
        if new_name[r.code] == r.name
        else replace(r, name=new_name[r.code])
        for r in items
    )
    return Projection(projected, tuple(sorted(shortenings, key=lambda s: s.code)))


def distinct_name(name: str, limit: int, taken: set[str]) -> str:
    """``name`` cut to ``limit`` (trailing spaces trimmed); if that is taken,
    ``~2``, ``~3``... replaces its tail until it is free."""
    candidate = name[:limit].rstrip()
    n = 1
    while candidate in taken or not candidate:
        n += 1
        suffix = f"~{n}"
        candidate = name[: limit - len(suffix)].rstrip() + suffix
    return candidate


def _limit(depth: int) -> int:
    return TOP_NAME_MAX if depth == 1 else SUB_NAME_MAX


def entry_record(e: AccountEntry | AccountRecord) -> AccountRecord:
    """A meter account (wire entry) as an AccountRecord."""
    if isinstance(e, AccountRecord):
        return e
    return AccountRecord(
        code=e.code,
        parent_code=e.parent_code,
        name=e.name,
        active=e.active,
        password_enabled=e.password_enabled,
        password=e.password,
        number=e.number,
        chargeable=e.chargeable,
        ever_charged=e.ever_charged,
        pieces=e.pieces,
        postage_mills=e.postage_mills,
    )


@dataclass(frozen=True)
class Change:
    """One line of the plan, for people (``kind`` is the verb)."""

    kind: str  # add, rename, re-password, activate, deactivate, delete, roll-down, retain
    code: str
    detail: str = ""


@dataclass
class SyncPlan:
    """Everything a sync will do to one meter, decided before anything is sent."""

    puts: list[PutRecord] = field(default_factory=list)
    deletes: list[str] = field(default_factory=list)
    changes: list[Change] = field(default_factory=list)
    shortenings: tuple[Shortening, ...] = ()
    problems: list[str] = field(default_factory=list)
    target: tuple[AccountRecord, ...] = ()
    target_digest: bytes = b""
    chargeable_needed: int = 0
    capacity: int = 0
    passwords_compared: bool = True

    @property
    def over_capacity(self) -> bool:
        return self.chargeable_needed > self.capacity

    @property
    def empty(self) -> bool:
        return not self.puts and not self.deletes

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = defaultdict(int)
        for c in self.changes:
            out[c.kind] += 1
        return dict(out)

    def to_json(self) -> dict[str, object]:
        return {
            "changes": [{"kind": c.kind, "code": c.code, "detail": c.detail} for c in self.changes],
            "shortenings": [{"code": s.code, "old": s.old, "new": s.new} for s in self.shortenings],
            "problems": list(self.problems),
            "counts": self.counts(),
            "puts": len(self.puts),
            "deletes": len(self.deletes),
            "chargeable_needed": self.chargeable_needed,
            "capacity": self.capacity,
            "over_capacity": self.over_capacity,
            "target_digest": self.target_digest.hex(),
            "passwords_compared": self.passwords_compared,
        }


def _chargeable(records: Sequence[AccountRecord]) -> int:
    parents = {r.parent_code for r in records if r.parent_code}
    return sum(1 for r in records if r.code not in parents)


def _put(r: AccountRecord) -> PutRecord:
    return PutRecord(
        code=r.code,
        parent_code=r.parent_code,
        name=r.name,
        active=r.active,
        password_enabled=r.password_enabled,
        password=r.password if r.password_enabled and r.password else None,  # None: keep
    )


def make_plan(
    projection: Projection,
    meter: Iterable[AccountEntry | AccountRecord],
    capacity: int,
    passwords_known: bool = True,
) -> SyncPlan:
    """Compare the projected shared list with the meter's list (matched by code)."""
    want = {r.code: r for r in projection.records}
    have = {e.code: entry_record(e) for e in meter}
    plan = SyncPlan(
        shortenings=projection.shortenings, capacity=capacity, passwords_compared=passwords_known
    )

    # What the meter keeps although the shared list dropped it: charged history.
    children: dict[str, list[str]] = defaultdict(list)
    for r in have.values():
        children[r.parent_code].append(r.code)

    def charged_below(code: str) -> bool:
        r = have[code]
        return r.ever_charged or any(charged_below(c) for c in children.get(code, ()))

    retained: dict[str, AccountRecord] = {}
    deletes: list[str] = []
    for code, r in have.items():
        if code in want:
            continue
        if charged_below(code):
            retained[code] = replace(r, active=False)
        else:
            deletes.append(code)
    depth_have = _depths(list(have.values()))
    plan.deletes = sorted(deletes, key=lambda c: (-depth_have[c], c))  # children first
    for code in plan.deletes:
        plan.changes.append(Change("delete", code, f"{have[code].name!r}"))

    want_names = {(r.parent_code, r.name) for r in want.values()}
    for code, r in sorted(retained.items()):
        renamed = (r.parent_code, r.name) in want_names
        if renamed:  # a shared-list account now uses its name: the history account gives way
            taken = {n for p, n in want_names if p == r.parent_code}
            taken |= {x.name for x in retained.values() if x.parent_code == r.parent_code}
            new = distinct_name(r.name, _limit(depth_have[code]), taken)
            plan.changes.append(
                Change("rename", code, f"{r.name!r} -> {new!r}: the shared list uses its name")
            )
            retained[code] = r = replace(r, name=new)
        if renamed or have[code].active:
            plan.puts.append(_put(r))
        if have[code].active:
            plan.changes.append(
                Change("deactivate", code, "charged before: kept inactive with its counters")
            )
        else:
            plan.changes.append(
                Change("retain", code, "charged before: stays inactive with its counters")
            )

    # Adds and updates, parents before children (projection order is tree order).
    adds: list[AccountRecord] = []
    updates: list[AccountRecord] = []
    target_parents = {r.parent_code for r in (*projection.records, *retained.values())}
    rolled: set[str] = set()
    live_children = {c for c, kids in children.items() if any(k not in plan.deletes for k in kids)}
    for r in _tree_order(projection.records):
        old = have.get(r.code)
        if old is None:
            parent = have.get(r.parent_code)
            if (
                parent is not None
                and r.parent_code not in live_children
                and r.parent_code not in rolled
            ):
                rolled.add(r.parent_code)
                known = (
                    f"number #{parent.number}, its password and counters "
                    f"({parent.pieces} pieces, {parent.postage_mills} mills)"
                    if parent.number  # a list read from the meter; a snapshot has no counters
                    else "its number, password and counters"
                )
                plan.changes.append(
                    Change("roll-down", r.code, f"{known} move from {parent.name!r} to {r.name!r}")
                )
            if r.password_enabled and len(r.password) < MIN_PASSWORD:
                plan.problems.append(
                    f"{r.code}: password shorter than {MIN_PASSWORD} characters; sent without one"
                )
                r = replace(r, password_enabled=False, password="")
            adds.append(r)
            plan.changes.append(Change("add", r.code, repr(r.name)))
            continue
        if old.parent_code != r.parent_code:
            plan.problems.append(
                f"{r.code}: moving from parent {old.parent_code!r} to {r.parent_code!r} "
                "is not supported; left where it is"
            )
            continue
        what = []
        if r.code in children and r.code not in live_children:
            # its children all go: it is chargeable again, so its settings are sent
            what.append(Change("revive", r.code, "its last child goes: chargeable again"))
        if old.name != r.name:
            what.append(Change("rename", r.code, f"{old.name!r} -> {r.name!r}"))
        pw_differs = r.code not in target_parents and (
            old.password_enabled != r.password_enabled
            or (passwords_known and r.password_enabled and old.password != r.password)
        )
        if pw_differs:
            if r.password_enabled and len(r.password) < MIN_PASSWORD:
                plan.problems.append(
                    f"{r.code}: password shorter than {MIN_PASSWORD} characters; not changed"
                )
                r = replace(r, password_enabled=old.password_enabled, password=old.password)
            else:
                what.append(
                    Change("re-password", r.code, "enabled" if r.password_enabled else "disabled")
                )
        if old.active != r.active:
            what.append(Change("activate" if r.active else "deactivate", r.code))
        if what:
            updates.append(r)
            plan.changes.extend(what)
    plan.puts += _order_puts(have, set(plan.deletes), retained, updates, adds)

    moved = {p.split(":", 1)[0] for p in plan.problems if "moving from parent" in p}
    target = [have[c] if c in moved else want[c] for c in want] + list(retained.values())
    plan.target = tuple(target)
    plan.target_digest = list_digest(target)
    plan.chargeable_needed = _chargeable(target)
    if plan.over_capacity:
        plan.problems.append(
            f"the list needs {plan.chargeable_needed} chargeable accounts but the meter holds "
            f"{capacity}: Cannot create any more accounts"
        )
    return plan


def _order_puts(
    have: dict[str, AccountRecord],
    deleted: set[str],
    retained: dict[str, AccountRecord],
    updates: list[AccountRecord],
    adds: list[AccountRecord],
) -> list[PutRecord]:
    """Updates, then adds, so that sibling names stay unique after every put.

    The meter checks sibling names put by put.  Where a put wants a name another
    sibling still holds (two siblings swap names, a new account takes a name a
    renamed one gives up), every renamed sibling of that group first takes a
    temporary name; the staged list is only visible at COMMIT, so the temporary
    names never reach the live list.
    """
    held: dict[tuple[str, str], str] = {}
    for code, r in have.items():
        if code not in deleted:
            name = retained[code].name if code in retained else r.name
            held[(r.parent_code, name)] = code
    conflicted = {
        r.parent_code
        for r in (*updates, *adds)
        if held.get((r.parent_code, r.name), r.code) != r.code
    }
    temporary: list[PutRecord] = []
    if conflicted:
        depth = _depths(list(have.values()))
        for r in updates:
            old = have[r.code]
            if r.parent_code in conflicted and old.name != r.name:
                taken = {n for p, n in held if p == r.parent_code}
                taken |= {x.name for x in (*updates, *adds) if x.parent_code == r.parent_code}
                temp = distinct_name("~", _limit(depth[r.code]), taken)
                held[(r.parent_code, temp)] = r.code
                temporary.append(_put(replace(r, name=temp)))
    return [*temporary, *(_put(r) for r in updates), *(_put(r) for r in adds)]


def _tree_order(records: Sequence[AccountRecord]) -> list[AccountRecord]:
    by_parent: dict[str, list[AccountRecord]] = defaultdict(list)
    for r in records:
        by_parent[r.parent_code].append(r)
    out: list[AccountRecord] = []
    stack = list(reversed(by_parent.get("", [])))
    seen: set[str] = set()
    while stack:
        r = stack.pop()
        if r.code in seen:
            continue
        seen.add(r.code)
        out.append(r)
        stack.extend(reversed(by_parent.get(r.code, [])))
    out.extend(r for r in records if r.code not in seen)  # orphans last: the meter will say why
    return out


def target_of(
    projection: Projection, meter: Iterable[AccountEntry | AccountRecord]
) -> tuple[AccountRecord, ...]:
    """The list the meter must hold after a sync (projection plus retained history)."""
    return make_plan(projection, meter, capacity=1 << 30).target
