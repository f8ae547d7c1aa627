"""Shared-list CSV import and export (PitneyShip and Cost Accounting formats).

Reading is in three steps, each collecting every problem it finds:

1. :func:`read_table` decodes the bytes (UTF-8, with or without BOM), finds the
   header, detects the format and splits rows, remembering each record's first
   physical line (the header is line 1, comment lines count).
2. :func:`parse_entries` turns rows into :class:`Entry` objects and runs the
   value rules of :mod:`agent.rules`.
3. :func:`plan_import` resolves the hierarchy against the file *and* the
   shared list (parents may come in any order or already be stored), runs the
   list rules, and computes the changes.

A file with any problem imports nothing.  :func:`import_file` applies a clean
plan in one transaction.

Export writes the list so that importing it again changes nothing.  Files that
may contain passwords are written 0600 and atomically.
"""

from __future__ import annotations

import csv
import gc
import io
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from agent.rules import Issue, Policy, check_value, issue
from agent.store import Change, SharedAccount, SharedList, tree_order


class Format(StrEnum):
    PITNEYSHIP = "pitneyship"
    COST_ACCOUNTING = "cost-accounting"


class Mode(StrEnum):
    UPDATE = "update"
    REPLACE = "replace"


PITNEYSHIP_COLUMNS: tuple[str, ...] = (
    "Name",
    "Code",
    "Status",
    "Description",
    "PasswordEnabled",
    "PasswordCode",
    "ParentName",
    "NextParentName",
    "Billable",
    "AccessLevel",
    "AccessLevelValue",
    "Division Name",
    "Archive",
)
COST_ACCOUNTING_COLUMNS: tuple[str, ...] = (
    "AccountName",
    "SubAccountName",
    "SubSubAccountName",
    "AccountCode",
    "SubAccountCode",
    "SubSubAccountCode",
    "Description",
    "Status",
    "Password",
    "Delete",
)
COLUMNS: dict[Format, tuple[str, ...]] = {
    Format.PITNEYSHIP: PITNEYSHIP_COLUMNS,
    Format.COST_ACCOUNTING: COST_ACCOUNTING_COLUMNS,
}
REQUIRED: dict[Format, tuple[str, ...]] = {
    Format.PITNEYSHIP: ("Name", "Status"),
    Format.COST_ACCOUNTING: ("AccountName", "Status"),
}
#: Flag-like columns whose surrounding spaces are ignored (names and passwords keep theirs).
_STRIPPED = frozenset(
    {"Status", "PasswordEnabled", "Billable", "Archive", "AccessLevel", "Delete"}
)
_LEVEL_NAMES = ("AccountName", "SubAccountName", "SubSubAccountName")
_LEVEL_CODES = ("AccountCode", "SubAccountCode", "SubSubAccountCode")

_PAREN = re.compile(r"\([^)]*\)")
_NOT_ALNUM = re.compile(r"[^0-9a-z]")


def normalize_header(cell: str) -> str:
    """``" Division name "`` -> ``"divisionname"``; ``"Status (Y/N)"`` -> ``"status"``."""
    return _NOT_ALNUM.sub("", _PAREN.sub("", cell.lower()))


_CANONICAL: dict[Format, dict[str, str]] = {
    fmt: {normalize_header(c): c for c in cols} for fmt, cols in COLUMNS.items()
}

#: Marker: "PasswordEnabled=TRUE with no PasswordCode" -- keep the stored password.
KEEP_STORED = object()


# --------------------------------------------------------------------------- step 1


@dataclass(slots=True)
class Row:
    line: int
    values: dict[str, str]


@dataclass(slots=True)
class Table:
    fmt: Format | None
    columns: tuple[str, ...]
    rows: list[Row]
    issues: list[Issue]
    physical_lines: int = 0


class _Lines:
    """Feeds the csv reader physical lines, skipping comments between records."""

    def __init__(self, text: str) -> None:
        self._it = iter(io.StringIO(text, newline=""))
        self.physical = 0
        self.record_start = 0
        self.at_boundary = True
        self.comments = True

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        while True:
            line = next(self._it)
            self.physical += 1
            if self.at_boundary:
                if self.comments and line.startswith("#"):
                    continue
                self.record_start = self.physical
                self.at_boundary = False
            return line


def decode(data: bytes) -> tuple[str | None, Issue | None]:
    try:
        return data.decode("utf-8-sig"), None
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        return None, issue(line, "-", "file-utf8", f"byte {exc.start} is not UTF-8; save as UTF-8")


def read_table(data: bytes, progress: Callable[[int], None] | None = None) -> Table:
    """Decode, find the header, detect the format, split rows."""
    text, bad = decode(data)
    if text is None:
        assert bad is not None
        return Table(None, (), [], [bad])
    lines = _Lines(text)
    reader = csv.reader(lines, strict=False)
    header: list[str] | None = None
    header_line = 1
    try:
        for cells in reader:
            lines.at_boundary = True
            if any(c.strip() for c in cells):
                header, header_line = cells, lines.record_start
                break
    except csv.Error as exc:
        return Table(None, (), [], [issue(lines.record_start, "-", "header-format", str(exc))])
    if header is None:
        return Table(None, (), [], [issue(1, "-", "header-format", "the file has no header")])
    norms = [normalize_header(h) for h in header]
    if "accountname" in norms:
        fmt = Format.COST_ACCOUNTING
    elif "name" in norms:
        fmt = Format.PITNEYSHIP
    else:
        return Table(
            None,
            (),
            [],
            [
                issue(
                    header_line,
                    "-",
                    "header-format",
                    "header has neither Name (PitneyShip) nor AccountName (Cost Accounting)",
                )
            ],
        )
    lines.comments = fmt is Format.COST_ACCOUNTING
    canon = _CANONICAL[fmt]
    issues: list[Issue] = []
    index: dict[int, str] = {}
    seen: set[str] = set()
    for i, (raw, norm) in enumerate(zip(header, norms, strict=True)):
        if not norm:
            continue  # trailing empty columns of a spreadsheet
        col = canon.get(norm)
        if col is None:
            issues.append(
                issue(header_line, raw.strip(), "header-unknown-column",
                      f"unknown column for the {fmt} format")
            )
        elif col in seen:
            issues.append(issue(header_line, col, "header-duplicate-column", "column repeated"))
        else:
            seen.add(col)
            index[i] = col
    for col in REQUIRED[fmt]:
        if col not in seen:
            issues.append(issue(header_line, col, "header-required-column", "column missing"))
    columns = tuple(c for c in COLUMNS[fmt] if c in seen)
    if issues:
        return Table(fmt, columns, [], issues)
    rows: list[Row] = []
    width = len(header)
    try:
        for cells in reader:
            lines.at_boundary = True
            line = lines.record_start
            if progress is not None and len(rows) % 1000 == 0:
                progress(len(rows))
            if not any(cells):
                continue
            values = {}
            for i, cell in enumerate(cells):
                col = index.get(i)
                if col is not None:
                    values[col] = cell.strip() if col in _STRIPPED else cell
                elif cell.strip():
                    named = header[i].strip() if i < width else ""
                    where = named or f"column {i + 1}"
                    issues.append(
                        issue(line, where, "row-extra-cells",
                              "value in a column the header does not name")
                    )
            if any(values.values()):
                rows.append(Row(line, values))
    except csv.Error as exc:
        issues.append(issue(lines.record_start, "-", "header-format", f"unreadable CSV: {exc}"))
    return Table(fmt, columns, rows, issues, lines.physical)


# --------------------------------------------------------------------------- step 2


@dataclass(slots=True)
class Entry:
    """One row as one account, before its place in the list is resolved."""

    line: int
    name: str
    code: str  # "" = not given (defaults to the stored code for this place, else Name)
    path: tuple[str, ...]  # ancestor names from the top
    path_codes: tuple[str, ...]  # ancestor codes given on the row ("" = not given)
    values: dict[str, Any] = field(default_factory=dict)  # fields this row sets
    name_col: str = "Name"
    code_col: str = "Code"
    path_cols: tuple[str, ...] = ()
    path_code_cols: tuple[str, ...] = ()
    passcode_col: str = "PasswordCode"
    ok: bool = True  # False: a problem was found; skip the list rules that need this row

    @property
    def level(self) -> int:
        return len(self.path)


def _status(
    row: Row, v: dict[str, str], kind: str, yes: str, policy: Policy, out: list[Issue]
) -> bool:
    """The required Status column of either format (``kind`` names its value rule)."""
    status = v.get("Status", "")
    if not status:
        hint = "TRUE or FALSE" if yes == "TRUE" else "Y or N"
        out.append(issue(row.line, "Status", "status-required", f"Status is {hint}"))
    else:
        out.extend(check_value(kind, status, "Status", row.line, policy))
    return status == yes


def _flag(row: Row, col: str, kind: str, policy: Policy, out: list[Issue]) -> str:
    value = row.values.get(col, "")
    out.extend(check_value(kind, value, col, row.line, policy))
    return value


def parse_entries(table: Table, policy: Policy) -> tuple[list[Entry], list[Issue]]:
    issues: list[Issue] = []
    entries: list[Entry] = []
    if table.fmt is None:
        return entries, issues
    parse = _parse_pitneyship if table.fmt is Format.PITNEYSHIP else _parse_cost_accounting
    cols = set(table.columns)
    rows = table.rows
    while rows:  # consume the rows as we go: a big file is not held twice
        row = rows.pop()
        before = len(issues)
        entry = parse(row, cols, policy, issues)
        if entry is not None:
            entry.ok = len(issues) == before
            entries.append(entry)
    entries.reverse()
    return entries, issues


def _label_checks(entry: Entry, row: Row, policy: Policy, out: list[Issue]) -> None:
    if not entry.name.strip():
        out.append(issue(row.line, entry.name_col, "name-required", "every account needs a name"))
    else:
        out.extend(check_value("name", entry.name, entry.name_col, row.line, policy))
    out.extend(check_value("code", entry.code, entry.code_col, row.line, policy))


def _parse_pitneyship(
    row: Row, cols: set[str], policy: Policy, out: list[Issue]
) -> Entry | None:
    v = row.values
    parent, grand = v.get("ParentName", ""), v.get("NextParentName", "")
    if grand and not parent:
        out.append(
            issue(row.line, "NextParentName", "next-parent-consistent",
                  "NextParentName given without ParentName")
        )
    path: tuple[str, ...] = (grand, parent) if grand and parent else (parent,) if parent else ()
    path_cols = ("NextParentName", "ParentName") if len(path) == 2 else ("ParentName",)
    entry = Entry(
        line=row.line,
        name=v.get("Name", ""),
        code=v.get("Code", ""),
        path=path,
        path_codes=("",) * len(path),
        path_cols=path_cols[: len(path)],
    )
    _label_checks(entry, row, policy, out)
    values = entry.values
    values["active"] = _status(row, v, "status", "TRUE", policy, out)
    if "Description" in cols:
        values["description"] = _flag(row, "Description", "description", policy, out)
    for col, name in (("Billable", "billable"), ("Archive", "archived")):
        if col in cols:
            values[name] = _flag(row, col, "bool", policy, out) == "TRUE"
    if "AccessLevel" in cols:
        values["access_level"] = _flag(row, "AccessLevel", "access-level", policy, out)
    if "AccessLevelValue" in cols:
        values["access_level_value"] = v.get("AccessLevelValue", "")
    if "Division Name" in cols:
        values["division"] = v.get("Division Name", "")
    if "PasswordEnabled" in cols or "PasswordCode" in cols:
        code = v.get("PasswordCode", "")
        out.extend(check_value("password", code, "PasswordCode", row.line, policy))
        if "PasswordEnabled" in cols:
            enabled = _flag(row, "PasswordEnabled", "bool", policy, out) == "TRUE"
        else:
            enabled = bool(code)
        if enabled:
            values["password_enabled"] = True
            values["password"] = code or KEEP_STORED
        else:
            if code:
                out.append(
                    issue(row.line, "PasswordCode", "password-needs-enabled",
                          "a PasswordCode is given but PasswordEnabled is not TRUE")
                )
            values["password_enabled"] = False
            values["password"] = ""
    return entry


def _parse_cost_accounting(
    row: Row, cols: set[str], policy: Policy, out: list[Issue]
) -> Entry | None:
    v = row.values
    names = [v.get(c, "") for c in _LEVEL_NAMES]
    codes = [v.get(c, "") for c in _LEVEL_CODES]
    deepest = max((i for i in range(3) if names[i] or codes[i]), default=0)
    for i in range(deepest):
        if not names[i]:
            rule = "name-required" if i == 0 else "next-parent-consistent"
            out.append(
                issue(row.line, _LEVEL_NAMES[i], rule,
                      f"{_LEVEL_NAMES[deepest]} needs {_LEVEL_NAMES[i]}")
            )
    entry = Entry(
        line=row.line,
        name=names[deepest],
        code=codes[deepest],
        path=tuple(names[:deepest]),
        path_codes=tuple(codes[:deepest]),
        name_col=_LEVEL_NAMES[deepest],
        code_col=_LEVEL_CODES[deepest],
        path_cols=_LEVEL_NAMES[:deepest],
        path_code_cols=_LEVEL_CODES[:deepest],
        passcode_col="Password",
    )
    _label_checks(entry, row, policy, out)
    values = entry.values
    values["active"] = _status(row, v, "yn", "Y", policy, out)
    if "Description" in cols:
        values["description"] = _flag(row, "Description", "description", policy, out)
    if "Delete" in cols:
        values["archived"] = _flag(row, "Delete", "yn", policy, out) == "Y"
    if "Password" in cols:
        password = v.get("Password", "")
        out.extend(check_value("password", password, "Password", row.line, policy))
        values["password_enabled"] = bool(password)
        values["password"] = password
    return entry


# --------------------------------------------------------------------------- step 3


@dataclass(slots=True)
class ImportPlan:
    """What an import would do (or, after :func:`import_file`, did)."""

    source: str
    fmt: Format | None
    issues: list[Issue] = field(default_factory=list)
    changes: list[Change] = field(default_factory=list)
    rows: int = 0
    unchanged: int = 0
    left_alone: int = 0

    @property
    def ok(self) -> bool:
        return not self.issues

    @property
    def added(self) -> list[SharedAccount]:
        return [c.after for c in self.changes if c.is_add]

    @property
    def deactivated(self) -> list[Change]:
        return [c for c in self.changes if not c.is_add and _deactivates(c)]

    @property
    def changed(self) -> list[Change]:
        return [c for c in self.changes if not c.is_add and not _deactivates(c)]

    def error_lines(self) -> list[str]:
        ordered = sorted(self.issues, key=lambda i: (i.line, i.column, i.rule))
        return [i.format(self.source) for i in ordered]

    def summary(self) -> str:
        if self.issues:
            n = len(self.issues)
            return f"{self.source}: {n} error{'s' if n != 1 else ''}; nothing imported"
        return (
            f"{self.source}: {len(self.added)} added, {len(self.changed)} changed, "
            f"{len(self.deactivated)} deactivated, {self.unchanged} unchanged, "
            f"{self.left_alone} left alone"
        )


def _deactivates(change: Change) -> bool:
    return change.before is not None and change.before.active and not change.after.active


def _depths(accounts: Iterable[SharedAccount]) -> dict[str, int]:
    out: dict[str, int] = {}
    for acc in tree_order(accounts):  # parents first
        out[acc.code] = 0 if not acc.parent_code else out.get(acc.parent_code, -1) + 1
    return out


def normalize_account(acc: SharedAccount) -> SharedAccount:
    """Invariants: archived implies inactive; no password unless enabled."""
    if acc.archived and acc.active:
        acc = replace(acc, active=False)
    if not acc.password_enabled and acc.password:
        acc = replace(acc, password="")
    return acc


def plan_import(
    entries: Sequence[Entry],
    existing: Sequence[SharedAccount],
    *,
    source: str,
    fmt: Format | None,
    mode: Mode = Mode.UPDATE,
    issues: Sequence[Issue] = (),
) -> ImportPlan:
    """Resolve ``entries`` against ``existing`` and compute the changes (no I/O)."""
    plan = ImportPlan(source=source, fmt=fmt, issues=list(issues), rows=len(entries))
    by_code = {a.code: a for a in existing}
    depth = _depths(existing)
    stored_at: dict[tuple[str, str], str] = {(a.parent_code, a.name): a.code for a in existing}
    explicit = {e.code for e in entries if e.code}
    levels: list[list[Entry]] = [[], [], []]
    for e in entries:
        levels[min(e.level, 2)].append(e)
    names_at: list[set[str]] = [set(), set(), set()]
    for a in existing:
        names_at[min(depth[a.code], 2)].add(a.name)
    for e in entries:
        names_at[min(e.level, 2)].add(e.name)

    final_index: list[dict[tuple[str, str], str]] = [{}, {}, {}]
    seen_codes: dict[str, int] = {}
    results: dict[str, tuple[Entry, SharedAccount]] = {}
    source_name = Path(source).name

    for level in range(3):
        resolved: list[tuple[Entry, str, str]] = []  # entry, parent code, code
        for e in levels[level]:
            parent_code = _resolve_parent(e, final_index, names_at, plan.issues)
            if parent_code is None:
                continue
            code, defaulted = e.code, False
            if not code:
                stored = stored_at.get((parent_code, e.name))
                if stored is not None and stored not in explicit:
                    code = stored
                else:
                    code, defaulted = e.name, True
            if not code:
                continue  # name-required already reported
            first = seen_codes.get(code)
            if first is not None:
                plan.issues.append(
                    issue(e.line, e.code_col if not defaulted else e.name_col, "code-unique",
                          f"code {code!r} already used on line {first}")
                )
                continue
            seen_codes[code] = e.line
            old = by_code.get(code)
            if old is not None and old.parent_code != parent_code:
                if defaulted:
                    plan.issues.append(
                        issue(e.line, e.name_col, "code-unique",
                              f"Code defaults to the name {code!r}, which is the code of "
                              "another account; give this row its own Code")
                    )
                else:
                    where = repr(by_code[old.parent_code].name) if old.parent_code else "the top"
                    plan.issues.append(
                        issue(e.line, e.code_col, "parent-immutable",
                              f"account {code!r} is stored under {where}; accounts cannot move")
                    )
                continue
            resolved.append((e, parent_code, code))

        # Sibling names at this level, after the file is applied.
        claimed = {code for _, _, code in resolved}
        groups: dict[tuple[str, str], list[tuple[str, Entry | None]]] = {}
        for a in existing:
            if depth[a.code] == level and a.code not in claimed:
                groups.setdefault((a.parent_code, a.name), []).append((a.code, None))
        for e, parent_code, code in resolved:
            groups.setdefault((parent_code, e.name), []).append((code, e))
        index = final_index[level]
        for key, members in groups.items():
            if len(members) == 1:
                index[key] = members[0][0]
                continue
            stored_member = next((c for c, m in members if m is None), None)
            file_members = [m for _, m in members if m is not None]
            if stored_member is None:
                index[key] = members[0][0]
                file_members = file_members[1:]
            else:
                index[key] = stored_member
            for m in file_members:
                if stored_member is not None and m.code and m.code not in by_code:
                    plan.issues.append(
                        issue(m.line, m.code_col, "code-immutable",
                              f"{key[1]!r} already exists here with code {stored_member!r}; "
                              "codes cannot change after import")
                    )
                else:
                    plan.issues.append(
                        issue(m.line, m.name_col, "sibling-name-unique",
                              f"another account under the same parent is already "
                              f"named {key[1]!r}")
                    )
                m.ok = False

        for e, parent_code, code in resolved:
            old = by_code.get(code)
            values = dict(e.values)
            if values.get("password") is KEEP_STORED:
                if old is not None and old.password:
                    values["password"] = old.password
                else:
                    plan.issues.append(
                        issue(e.line, e.passcode_col, "password-required-when-enabled",
                              "PasswordEnabled is TRUE but no password is given or stored")
                    )
                    continue
            if values.get("active") and "archived" not in values:
                values["archived"] = False
            if old is None:
                after = SharedAccount(code=code, name=e.name, parent_code=parent_code, **values)
            else:
                after = replace(old, name=e.name, **values)
            after = normalize_account(after)
            results[code] = (e, after)

    if plan.issues:
        return plan

    for code, (e, after) in results.items():
        old = by_code.get(code)
        label = f"import {source_name}:{e.line}"
        if old is None:
            plan.changes.append(Change(after=after, source=label))
        elif old.changed_fields(after):
            plan.changes.append(Change(after=after, source=label, before=old))
        else:
            plan.unchanged += 1
    absent = [a for a in existing if a.code not in results]
    if mode is Mode.REPLACE:
        for a in absent:
            if a.active:
                plan.changes.append(
                    Change(
                        after=replace(a, active=False),
                        source=f"import {source_name} (replace: not in the file)",
                        before=a,
                    )
                )
            else:
                plan.left_alone += 1
    else:
        plan.left_alone = len(absent)
    return plan


def _resolve_parent(
    e: Entry,
    final_index: list[dict[tuple[str, str], str]],
    names_at: list[set[str]],
    out: list[Issue],
) -> str | None:
    """The code of ``e``'s parent in the final list; None (and an issue) when unresolvable."""
    if e.level == 0:
        return ""
    if any(not n for n in e.path):
        return None  # reported while parsing
    top = e.path[0]
    top_code = final_index[0].get(("", top))
    col = e.path_cols[0]
    if top_code is None:
        if e.level == 1 and top in names_at[1]:
            out.append(
                issue(e.line, col, "next-parent-consistent",
                      f"{top!r} is a subaccount; to go under it, name its parent in "
                      "NextParentName")
            )
        elif top in names_at[1] or top in names_at[2]:
            out.append(
                issue(e.line, col, "max-depth-3",
                      f"{top!r} is not a top-level account; accounts nest at most 3 levels")
            )
        else:
            out.append(issue(e.line, col, "parent-exists", f"no top-level account named {top!r}"))
        return None
    if e.path_codes and e.path_codes[0] and e.path_codes[0] != top_code:
        out.append(
            issue(e.line, e.path_code_cols[0], "parent-code-matches",
                  f"{top!r} has code {top_code!r}, not {e.path_codes[0]!r}")
        )
        return None
    if e.level == 1:
        return top_code
    sub = e.path[1]
    sub_code = final_index[1].get((top_code, sub))
    if sub_code is None:
        out.append(
            issue(e.line, e.path_cols[1], "parent-exists", f"no subaccount {sub!r} under {top!r}")
        )
        return None
    if e.path_codes[1] and e.path_codes[1] != sub_code:
        out.append(
            issue(e.line, e.path_code_cols[1], "parent-code-matches",
                  f"{sub!r} has code {sub_code!r}, not {e.path_codes[1]!r}")
        )
        return None
    return sub_code


# --------------------------------------------------------------------------- import


def plan_file(
    data: bytes,
    existing: Sequence[SharedAccount],
    *,
    source: str,
    policy: Policy | None = None,
    mode: Mode = Mode.UPDATE,
    progress: Callable[[int], None] | None = None,
) -> ImportPlan:
    """Read, check and plan an import of ``data`` (the file's bytes) against ``existing``."""
    table = read_table(data, progress)
    if table.fmt is None or (table.issues and not table.rows):
        return ImportPlan(source=source, fmt=table.fmt, issues=table.issues)
    entries, issues = parse_entries(table, policy or Policy())
    return plan_import(
        entries,
        existing,
        source=source,
        fmt=table.fmt,
        mode=mode,
        issues=[*table.issues, *issues],
    )


def import_file(
    store: SharedList,
    path: str | os.PathLike[str],
    *,
    policy: Policy | None = None,
    mode: Mode = Mode.UPDATE,
    dry_run: bool = False,
    progress: Callable[[int], None] | None = None,
) -> ImportPlan:
    """Import ``path`` into ``store``: all of it in one transaction, or nothing."""
    data = Path(path).read_bytes()
    with _no_gc():
        plan = plan_file(
            data, store.accounts(), source=str(path), policy=policy, mode=mode, progress=progress
        )
        if plan.ok and not dry_run and plan.changes:
            store.apply(plan.changes)
    return plan


@contextmanager
def _no_gc() -> Iterator[None]:
    """Pause the cyclic GC: an import makes ~10 objects a row and no cycles (2x faster)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


# --------------------------------------------------------------------------- export


def _bool(value: bool) -> str:
    return "TRUE" if value else "FALSE"


def export_rows(accounts: Sequence[SharedAccount], fmt: Format) -> list[list[str]]:
    """The file's rows (header first) for ``accounts``."""
    ordered = tree_order(accounts)
    by_code = {a.code: a for a in ordered}
    rows: list[list[str]] = [list(COLUMNS[fmt])]
    for a in ordered:
        chain: list[SharedAccount] = []
        parent = by_code.get(a.parent_code)
        while parent is not None:
            chain.insert(0, parent)
            parent = by_code.get(parent.parent_code)
        password = a.password if a.password_enabled else ""
        if fmt is Format.PITNEYSHIP:
            rows.append(
                [
                    a.name,
                    a.code,
                    _bool(a.active),
                    a.description,
                    _bool(a.password_enabled),
                    password,
                    chain[-1].name if chain else "",
                    chain[-2].name if len(chain) >= 2 else "",
                    _bool(a.billable),
                    a.access_level,
                    a.access_level_value,
                    a.division,
                    _bool(a.archived),
                ]
            )
        else:
            path = [*chain, a]
            names = [p.name for p in path] + [""] * (3 - len(path))
            codes = [p.code for p in path] + [""] * (3 - len(path))
            rows.append(
                [
                    *names,
                    *codes,
                    a.description,
                    "Y" if a.active else "N",
                    password,
                    "Y" if a.archived else "N",
                ]
            )
    return rows


def render_csv(rows: Sequence[Sequence[str]]) -> str:
    """CSV text (CRLF), quoting a first cell that starts with ``#`` so it is not a comment."""
    buf = io.StringIO()
    plain = csv.writer(buf, lineterminator="\r\n")
    quoted = csv.writer(buf, lineterminator="\r\n", quoting=csv.QUOTE_ALL)
    for row in rows:
        (quoted if row and row[0].startswith("#") else plain).writerow(row)
    return buf.getvalue()


def export_text(accounts: Sequence[SharedAccount], fmt: Format = Format.PITNEYSHIP) -> str:
    return render_csv(export_rows(accounts, fmt))


def template_text(fmt: Format = Format.PITNEYSHIP) -> str:
    return render_csv([list(COLUMNS[fmt])])


def write_private(path: str | os.PathLike[str], text: str | bytes) -> None:
    """Write ``path`` atomically with mode 0600 (temp file in the same dir, fsync, replace)."""
    target = Path(path)
    directory = target.parent if str(target.parent) else Path(".")
    data = text.encode("utf-8") if isinstance(text, str) else text
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{target.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:
        dir_fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def export_file(
    accounts: Sequence[SharedAccount],
    path: str | os.PathLike[str],
    fmt: Format = Format.PITNEYSHIP,
) -> None:
    write_private(path, export_text(accounts, fmt))
