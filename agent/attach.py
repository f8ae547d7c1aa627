"""Attach a product (meter) to the shared list (seed 000, DOMAIN item 15).

Three choices:

* ``add-update`` -- add the meter's accounts to the shared list; an account that
  duplicates a shared one (same code, or same name under the same parent) is not
  added, but the shared account's Description, Status and Password are
  overwritten from the meter.  Meters have no description, so "overwrite
  Description" leaves the shared description as it is (overwriting it with
  nothing would destroy data the meter never had).
* ``add-keep`` -- add only the meter's accounts that are new; duplicates are
  ignored and the shared list is not changed.
* ``discard`` -- add nothing.

Afterwards the product is recorded as attached and out of sync: the next sync
replaces the meter's list with the shared list.  ``backup`` saves the meter's
list (with counters) first; ``preview`` exports what the shared list would
become and changes nothing.

The meter is reached through a :class:`MeterListSource`; :class:`FileListSource`
reads a backup file, and the sync engine provides one that talks to a meter.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from agent.csvio import Format, export_file, normalize_account, write_private
from agent.rules import Issue, Policy, check_value, issue
from agent.store import Change, SharedAccount, SharedList, apply_in_memory, tree_order
from protocol.records import AccountRecord

BACKUP_FORMAT = "meterlink-meter-list"
Report = Callable[[str, "list[Issue]"], None]
BACKUP_VERSION = 1


class Choice(StrEnum):
    ADD_UPDATE = "add-update"
    ADD_KEEP = "add-keep"
    DISCARD = "discard"


class MeterListSource(Protocol):
    """Where attach reads a meter's identity and account list from."""

    def identify(self) -> tuple[str, str]:
        """``(serial, model)``."""
        ...

    def read_accounts(self) -> list[AccountRecord]: ...


class AttachError(Exception):
    """Attach refused; nothing changed.  ``problems`` are formatted lines (no passwords)."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or []


# --------------------------------------------------------------------------- backup files


def backup_document(
    serial: str, model: str, records: list[AccountRecord], when: datetime | None = None
) -> dict[str, Any]:
    return {
        "format": BACKUP_FORMAT,
        "version": BACKUP_VERSION,
        "serial": serial,
        "model": model,
        "saved_at": (when or datetime.now(UTC)).isoformat(timespec="seconds"),
        "accounts": [asdict(r) for r in records],
    }


def write_backup(
    path: str | os.PathLike[str], serial: str, model: str, records: list[AccountRecord]
) -> None:
    """Save a meter's list, counters and passwords included (0600, atomic)."""
    doc = backup_document(serial, model, records)
    write_private(path, json.dumps(doc, indent=2, ensure_ascii=False) + "\n")


_RECORD_TYPES: dict[str, type] = {
    "code": str,
    "parent_code": str,
    "name": str,
    "active": bool,
    "password_enabled": bool,
    "password": str,
    "number": int,
    "chargeable": bool,
    "ever_charged": bool,
    "pieces": int,
    "postage_mills": int,
}


class FileListSource:
    """A meter list saved by ``--backup`` (JSON, format ``meterlink-meter-list``)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._doc: dict[str, Any] | None = None

    def _load(self) -> dict[str, Any]:
        if self._doc is not None:
            return self._doc
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise AttachError(f"{self.path}: cannot read: {exc.strerror}") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise AttachError(f"{self.path}: not a meter list backup: {exc}") from None
        if not isinstance(doc, dict) or doc.get("format") != BACKUP_FORMAT:
            raise AttachError(f"{self.path}: not a meter list backup (format {BACKUP_FORMAT!r})")
        if doc.get("version") != BACKUP_VERSION:
            raise AttachError(f"{self.path}: unsupported backup version {doc.get('version')!r}")
        for key in ("serial", "model"):
            if not isinstance(doc.get(key), str) or not doc[key]:
                raise AttachError(f"{self.path}: {key} missing")
        if not isinstance(doc.get("accounts"), list):
            raise AttachError(f"{self.path}: accounts missing")
        self._doc = doc
        return doc

    def identify(self) -> tuple[str, str]:
        doc = self._load()
        return doc["serial"], doc["model"]

    def read_accounts(self) -> list[AccountRecord]:
        out: list[AccountRecord] = []
        for i, item in enumerate(self._load()["accounts"]):
            if not isinstance(item, dict):
                raise AttachError(f"{self.path}: account {i + 1} is not an object")
            values: dict[str, Any] = {}
            for key, value in item.items():
                want = _RECORD_TYPES.get(key)
                if want is None:
                    raise AttachError(f"{self.path}: account {i + 1}: unknown field {key!r}")
                if type(value) is not want:
                    raise AttachError(
                        f"{self.path}: account {i + 1}: {key} must be {want.__name__}"
                    )
                values[key] = value
            if "code" not in values:
                raise AttachError(f"{self.path}: account {i + 1}: code missing")
            out.append(AccountRecord(**values))
        return out


# --------------------------------------------------------------------------- merge


@dataclass(slots=True)
class AttachResult:
    serial: str
    model: str
    choice: Choice
    changes: list[Change] = field(default_factory=list)
    duplicates: list[tuple[str, str, str]] = field(default_factory=list)  # meter code, shared, why
    previewed: bool = False
    backup: Path | None = None

    @property
    def added(self) -> list[SharedAccount]:
        return [c.after for c in self.changes if c.is_add]

    @property
    def updated(self) -> list[Change]:
        return [c for c in self.changes if not c.is_add]


def _record_order(records: list[AccountRecord]) -> list[AccountRecord]:
    """Parents before children (meter records may come in any order)."""
    codes = {r.code for r in records}
    children: dict[str, list[AccountRecord]] = {}
    roots: list[AccountRecord] = []
    for r in records:
        if r.parent_code and r.parent_code in codes:
            children.setdefault(r.parent_code, []).append(r)
        else:
            roots.append(r)
    out: list[AccountRecord] = []
    stack = list(reversed(roots))
    while stack:
        r = stack.pop()
        out.append(r)
        stack.extend(reversed(children.get(r.code, ())))
    return out


def plan_attach(
    existing: list[SharedAccount],
    records: list[AccountRecord],
    choice: Choice,
    *,
    serial: str,
    model: str,
    policy: Policy | None = None,
) -> AttachResult:
    """Compute the merge (no I/O).  Raises :class:`AttachError` listing every problem."""
    result = AttachResult(serial=serial, model=model, choice=choice)
    if choice is Choice.DISCARD:
        return result
    policy = policy or Policy()
    label = f"attach {model} {serial}"
    current: dict[str, SharedAccount] = {a.code: a for a in existing}
    originals = dict(current)
    depth: dict[str, int] = {}
    for a in tree_order(existing):
        depth[a.code] = 0 if not a.parent_code else depth[a.parent_code] + 1
    siblings: dict[tuple[str, str], str] = {(a.parent_code, a.name): a.code for a in existing}
    mapping: dict[str, str] = {}  # meter code -> shared code
    problems: list[str] = []
    added: list[str] = []

    def problem(rec_code: str, found: list[Issue]) -> None:
        problems.extend(f"{serial}: account {rec_code!r}: {i.column}: {i.message} [{i.rule}]"
                        for i in found)

    for rec in _record_order(records):
        code = rec.code or rec.name
        if rec.parent_code:
            parent = mapping.get(rec.parent_code)
            if parent is None:
                problem(code, [issue(0, "parent", "parent-exists",
                                     f"parent {rec.parent_code!r} is not on the meter")])
                continue
        else:
            parent = ""
        match = current.get(code)
        why = "same code"
        if match is None:
            by_name = siblings.get((parent, rec.name))
            match = None if by_name is None else current[by_name]
            why = "same name"
        if match is not None:
            mapping[rec.code] = match.code
            result.duplicates.append((rec.code, match.code, why))
            if choice is Choice.ADD_UPDATE:
                updated = _overwrite(match, rec, code, problem)
                if updated is not None:
                    current[match.code] = updated
            continue
        level = 0 if not parent else depth[parent] + 1
        found = check_value("name", rec.name, "name", 0, policy)
        found += check_value("code", code, "code", 0, policy)
        if not rec.name.strip():
            found.append(issue(0, "name", "name-required", "the meter account has no name"))
        if level > 2:
            found.append(issue(0, "parent", "max-depth-3",
                               "under this parent the account would be a fourth level"))
        password = _meter_password(rec, code, problem)
        if found:
            problem(code, found)
            continue
        if password is None:
            continue
        new = normalize_account(
            SharedAccount(
                code=code,
                name=rec.name,
                parent_code=parent,
                active=rec.active,
                password_enabled=bool(password),
                password=password,
            )
        )
        current[code] = new
        depth[code] = level
        siblings[(parent, rec.name)] = code
        mapping[rec.code] = code
        added.append(code)
    if problems:
        raise AttachError(f"cannot attach {model} {serial}: {len(problems)} problem(s)", problems)
    for code in added:
        result.changes.append(Change(after=current[code], source=label))
    for code, before in originals.items():
        after = current[code]
        if after is not before and before.changed_fields(after):
            result.changes.append(Change(after=after, source=label, before=before))
    return result


def _meter_password(
    rec: AccountRecord, code: str, problem: Report
) -> str | None:
    """The 4-character password to carry, ``""`` for none, None (and a problem) if unusable."""
    if not rec.password_enabled or not rec.password:
        return ""
    if len(rec.password) != 4:
        problem(code, [issue(0, "password", "meter-password-exactly-4",
                             "the meter's password is not 4 characters; change it on the meter "
                             "or choose discard")])
        return None
    return rec.password


def _overwrite(
    match: SharedAccount, rec: AccountRecord, code: str, problem: Report
) -> SharedAccount | None:
    """``add-update`` on a duplicate: Status and Password from the meter (Description kept)."""
    password = _meter_password(rec, code, problem)
    if password is None:
        return None
    updated = replace(
        match,
        active=rec.active,
        archived=match.archived and not rec.active,
        password_enabled=bool(password),
        password=password,
    )
    return normalize_account(updated)


def attach(
    store: SharedList,
    source: MeterListSource,
    choice: Choice | str,
    backup: str | os.PathLike[str] | None = None,
    preview: str | os.PathLike[str] | None = None,
    *,
    policy: Policy | None = None,
    preview_format: Format = Format.PITNEYSHIP,
) -> AttachResult:
    """Attach the product behind ``source`` to ``store`` (see the module docstring).

    With ``preview`` nothing changes: the would-be shared list is exported there.
    Otherwise the merge and the product record land in one transaction.
    """
    choice = Choice(choice)
    serial, model = source.identify()
    records = source.read_accounts()
    backup_path = None
    if backup is not None:
        write_backup(backup, serial, model, records)
        backup_path = Path(backup)
    existing = store.accounts()
    result = plan_attach(existing, records, choice, serial=serial, model=model, policy=policy)
    result.backup = backup_path
    if preview is not None:
        export_file(apply_in_memory(existing, result.changes), preview, preview_format)
        result.previewed = True
        return result
    store.apply(result.changes, attach=(serial, model, choice.value))
    return result
