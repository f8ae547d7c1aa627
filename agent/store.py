"""The shared cost-account list: one SQLite file (stdlib ``sqlite3``).

The database holds account passwords, so it is created with mode 0600 before
SQLite opens it, and it runs with ``journal_mode=DELETE`` (SQLite gives the
rollback journal the database file's permissions).

Every import, merge and edit goes through :meth:`SharedList.apply`, which runs
in ONE transaction: it lands whole or not at all.  Each change is recorded in
the ``history`` table (who, when, from where, which fields); password values
are never written there, only the words "password changed".

Postage and piece counters do not live here: meters hold them.
"""

from __future__ import annotations

import dataclasses
import getpass
import json
import os
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from protocol.records import AccountRecord

#: Fields an import, a merge or an edit may change (``code`` and ``parent_code`` are fixed).
MUTABLE_FIELDS: tuple[str, ...] = (
    "name",
    "description",
    "active",
    "password_enabled",
    "password",
    "billable",
    "access_level",
    "access_level_value",
    "division",
    "archived",
)

#: Fields whose values never reach the history table, a log line or an error message.
SECRET_FIELDS = frozenset({"password"})


@dataclass(frozen=True, slots=True)
class SharedAccount:
    """One account of the shared list.

    ``parent_code`` is ``""`` at the top level.  ``password`` is a secret and is
    excluded from ``repr``; it is ``""`` unless ``password_enabled``.
    """

    code: str
    name: str
    parent_code: str = ""
    description: str = ""
    active: bool = True
    password_enabled: bool = False
    password: str = field(default="", repr=False)
    billable: bool = False
    access_level: str = ""
    access_level_value: str = ""
    division: str = ""
    archived: bool = False

    def to_record(self) -> AccountRecord:
        """The account as the meter protocol sees it (full name, not yet shortened)."""
        return AccountRecord(
            code=self.code,
            parent_code=self.parent_code,
            name=self.name,
            active=self.active,
            password_enabled=self.password_enabled,
            password=self.password if self.password_enabled else "",
        )

    def changed_fields(self, other: SharedAccount) -> tuple[str, ...]:
        """Names of the mutable fields whose values differ between ``self`` and ``other``."""
        return tuple(f for f in MUTABLE_FIELDS if getattr(self, f) != getattr(other, f))


@dataclass(frozen=True, slots=True)
class Change:
    """One account added (``before is None``) or updated, and where the change came from.

    ``source`` is a human label such as ``"import shared.csv:12"`` or
    ``"attach DM800i 0401234"``.
    """

    after: SharedAccount
    source: str
    before: SharedAccount | None = None

    @property
    def is_add(self) -> bool:
        return self.before is None

    @property
    def fields(self) -> tuple[str, ...]:
        return () if self.before is None else self.before.changed_fields(self.after)


@dataclass(frozen=True, slots=True)
class Product:
    """A meter attached to the shared list."""

    serial: str
    model: str
    choice: str
    attached_at: datetime
    last_sync_at: datetime | None
    last_digest: bytes | None
    in_sync: bool


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    code: str
    at: datetime
    actor: str
    source: str
    action: str  # "add" or "update"
    changes: dict[str, Any]


class StoreError(Exception):
    """The store cannot be opened or a change was refused by its constraints."""


# --------------------------------------------------------------------------- schema


def _run_script(conn: sqlite3.Connection, script: str) -> None:
    """Run ``;``-separated DDL inside the caller's transaction (``executescript`` would commit)."""
    for statement in script.split(";"):
        if statement.strip():
            conn.execute(statement)


def _migration_1(conn: sqlite3.Connection) -> None:
    _run_script(
        conn,
        """
        CREATE TABLE accounts (
            id                 INTEGER PRIMARY KEY,
            code               TEXT NOT NULL UNIQUE CHECK (length(code) BETWEEN 1 AND 75),
            name               TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 75),
            parent_code        TEXT REFERENCES accounts(code) DEFERRABLE INITIALLY DEFERRED,
            description        TEXT NOT NULL DEFAULT '' CHECK (length(description) <= 150),
            active             INTEGER NOT NULL DEFAULT 1,
            password_enabled   INTEGER NOT NULL DEFAULT 0,
            password           TEXT NOT NULL DEFAULT '' CHECK (length(password) IN (0, 4)),
            billable           INTEGER NOT NULL DEFAULT 0,
            access_level       TEXT NOT NULL DEFAULT '' CHECK (access_level IN ('', 'E', 'D', 'L')),
            access_level_value TEXT NOT NULL DEFAULT '',
            division           TEXT NOT NULL DEFAULT '',
            archived           INTEGER NOT NULL DEFAULT 0,
            created_at         TEXT NOT NULL,
            updated_at         TEXT NOT NULL
        );
        CREATE UNIQUE INDEX accounts_sibling_name ON accounts (ifnull(parent_code, ''), name);
        CREATE TABLE history (
            id      INTEGER PRIMARY KEY,
            code    TEXT NOT NULL,
            at      TEXT NOT NULL,
            actor   TEXT NOT NULL,
            source  TEXT NOT NULL,
            action  TEXT NOT NULL,
            changes TEXT NOT NULL
        );
        CREATE INDEX history_code ON history (code);
        CREATE TABLE products (
            serial       TEXT PRIMARY KEY,
            model        TEXT NOT NULL,
            choice       TEXT NOT NULL,
            attached_at  TEXT NOT NULL,
            last_sync_at TEXT,
            last_digest  TEXT,
            in_sync      INTEGER NOT NULL DEFAULT 0
        );
        """
    )


def _migration_2(conn: sqlite3.Connection) -> None:
    """Meter snapshots: the list each meter held after its last sync (for delta syncs)."""
    _run_script(
        conn,
        """
        CREATE TABLE meter_snapshots (
            serial   TEXT PRIMARY KEY,
            digest   TEXT NOT NULL,
            records  TEXT NOT NULL,
            saved_at TEXT NOT NULL
        );
        """,
    )


#: Ordered migrations; the database's ``PRAGMA user_version`` is how many have run.
MIGRATIONS: tuple[Callable[[sqlite3.Connection], None], ...] = (_migration_1, _migration_2)

_SELECT_ACCOUNTS = (
    "SELECT code, name, parent_code, description, active, password_enabled, password, "
    "billable, access_level, access_level_value, division, archived FROM accounts"
)
_INSERT_ACCOUNT = (
    "INSERT INTO accounts (code, name, parent_code, description, active, password_enabled, "
    "password, billable, access_level, access_level_value, division, archived, created_at, "
    "updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
)


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(when: datetime) -> str:
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.isoformat(timespec="seconds")


def _parse_time(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def _row_to_account(row: Sequence[Any]) -> SharedAccount:
    # Positional, in field order (this runs 100,000 times for a big list).
    return SharedAccount(
        row[0],
        row[1],
        row[2] or "",
        row[3],
        bool(row[4]),
        bool(row[5]),
        row[6],
        bool(row[7]),
        row[8],
        row[9],
        row[10],
        bool(row[11]),
    )


_ADD_HISTORY_FIELDS = ("name", "parent_code", "active", "password_enabled")
_JSON = json.JSONEncoder(ensure_ascii=False)
_NOTE_SET, _NOTE_CHANGED = "password set", "password changed"


def _history_changes(change: Change, changed: tuple[str, ...]) -> str:
    """What changed, as JSON, with password values replaced by words."""
    out: dict[str, Any] = {}
    after = change.after
    if change.before is None:
        for name in _ADD_HISTORY_FIELDS:
            out[name] = getattr(after, name)
        if after.password:
            out["password"] = _NOTE_SET
        return _JSON.encode(out)
    for name in changed:
        if name in SECRET_FIELDS:
            out[name] = _NOTE_CHANGED
        else:
            out[name] = [getattr(change.before, name), getattr(after, name)]
    return _JSON.encode(out)


_RECORD_FIELDS = tuple(f.name for f in dataclasses.fields(AccountRecord))


def tree_order(accounts: Iterable[SharedAccount]) -> list[SharedAccount]:
    """Pre-order (parents before children), siblings in their given order.

    Accounts whose parent is missing from ``accounts`` are treated as roots.
    """
    items = list(accounts)
    codes = {a.code for a in items}
    children: dict[str, list[SharedAccount]] = {}
    roots: list[SharedAccount] = []
    for acc in items:
        if acc.parent_code and acc.parent_code in codes:
            children.setdefault(acc.parent_code, []).append(acc)
        else:
            roots.append(acc)
    out: list[SharedAccount] = []
    stack = list(reversed(roots))
    seen: set[str] = set()
    while stack:
        acc = stack.pop()
        if acc.code in seen:  # defensive: a cycle cannot be stored, but never loop
            continue
        seen.add(acc.code)
        out.append(acc)
        stack.extend(reversed(children.get(acc.code, ())))
    return out


def create_private_file(path: Path) -> None:
    """Create ``path`` empty with mode 0600 if it does not exist; tighten it if it does."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        os.chmod(path, 0o600)
    else:
        os.close(fd)


class SharedList:
    """The shared cost-account list and the products attached to it."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self._conn = conn
        self.path = path

    # ------------------------------------------------------------------ lifecycle

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> SharedList:
        """Open (creating and migrating if needed) the shared list at ``path``."""
        db = Path(path)
        try:
            db.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            create_private_file(db)
        except OSError as exc:
            raise StoreError(f"cannot create {db}: {exc.strerror}") from None
        try:
            conn = sqlite3.connect(db, isolation_level=None)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open {db}: {exc}") from None
        try:
            conn.execute("PRAGMA journal_mode=DELETE")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA synchronous=FULL")
            cls._migrate(conn)
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise StoreError(f"{db} is not a meterlink shared list: {exc}") from None
        except BaseException:
            conn.close()
            raise
        return cls(conn, db)

    @staticmethod
    def _migrate(conn: sqlite3.Connection) -> None:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > len(MIGRATIONS):
            raise StoreError(
                f"database schema version {version} is newer than this meterlink "
                f"({len(MIGRATIONS)}); upgrade meterlink"
            )
        for number in range(version, len(MIGRATIONS)):
            conn.execute("BEGIN IMMEDIATE")
            try:
                MIGRATIONS[number](conn)
                conn.execute(f"PRAGMA user_version = {number + 1}")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    @property
    def schema_version(self) -> int:
        return int(self._conn.execute("PRAGMA user_version").fetchone()[0])

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> SharedList:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ transactions

    def _transaction(self) -> _Tx:
        return _Tx(self._conn)

    # ------------------------------------------------------------------ accounts

    def accounts(self) -> list[SharedAccount]:
        """Every account, parents before children (siblings in creation order)."""
        rows = self._conn.execute(_SELECT_ACCOUNTS + " ORDER BY id")
        return tree_order(_row_to_account(r) for r in rows)

    def get(self, code: str) -> SharedAccount | None:
        row = self._conn.execute(
            _SELECT_ACCOUNTS + " WHERE code = ?", (code,)
        ).fetchone()
        return None if row is None else _row_to_account(row)

    def count(self) -> int:
        return int(self._conn.execute("SELECT count(*) FROM accounts").fetchone()[0])

    def apply(
        self,
        changes: Sequence[Change],
        *,
        actor: str | None = None,
        attach: tuple[str, str, str] | None = None,
        when: datetime | None = None,
    ) -> None:
        """Apply ``changes`` (and, for an attach, record the product) in ONE transaction.

        ``attach`` is ``(serial, model, choice)``.  Any account change marks every
        attached product out of sync: it catches up the next time it is used.
        """
        who = actor or _current_user()
        stamp = _iso(when or _now())
        adds = [(c, ()) for c in changes if c.is_add]
        updates = [(c, f) for c in changes if not c.is_add and (f := c.fields)]
        try:
            with self._transaction() as conn:
                renamed = [c for c, f in updates if "name" in f]
                if renamed:
                    # Park renamed accounts on a unique temporary name so that two
                    # siblings may swap names within one import.
                    conn.executemany(
                        "UPDATE accounts SET name = char(1) || code WHERE code = ?",
                        [(c.after.code,) for c in renamed],
                    )
                if updates:
                    conn.executemany(
                        "UPDATE accounts SET name=?, description=?, active=?, password_enabled=?, "
                        "password=?, billable=?, access_level=?, access_level_value=?, "
                        "division=?, archived=?, updated_at=? WHERE code=?",
                        [_update_params(c.after, stamp) for c, _ in updates],
                    )
                if adds:
                    conn.executemany(
                        _INSERT_ACCOUNT,
                        [_insert_params(c.after, stamp) for c, _ in adds],
                    )
                conn.executemany(
                    "INSERT INTO history (code, at, actor, source, action, changes) "
                    "VALUES (?,?,?,?,?,?)",
                    [
                        (
                            c.after.code,
                            stamp,
                            who,
                            c.source,
                            "add" if c.is_add else "update",
                            _history_changes(c, f),
                        )
                        for c, f in (*adds, *updates)
                    ],
                )
                if adds or updates:
                    conn.execute("UPDATE products SET in_sync = 0")
                if attach is not None:
                    self._upsert_product(conn, *attach, stamp)
        except sqlite3.IntegrityError as exc:
            raise StoreError(f"the shared list refused the change: {exc}") from None

    # ------------------------------------------------------------------ products

    @staticmethod
    def _upsert_product(
        conn: sqlite3.Connection, serial: str, model: str, choice: str, stamp: str
    ) -> None:
        conn.execute(
            "INSERT INTO products (serial, model, choice, attached_at, in_sync) "
            "VALUES (?,?,?,?,0) ON CONFLICT(serial) DO UPDATE SET model=excluded.model, "
            "choice=excluded.choice, attached_at=excluded.attached_at, in_sync=0",
            (serial, model, choice, stamp),
        )

    def record_product(
        self, serial: str, model: str, choice: str, when: datetime | None = None
    ) -> None:
        """Record ``serial`` as attached (out of sync until its first sync)."""
        with self._transaction() as conn:
            self._upsert_product(conn, serial, model, choice, _iso(when or _now()))

    def mark_synced(self, serial: str, digest: bytes, when: datetime) -> None:
        """The meter ``serial`` now holds the shared list whose digest is ``digest``."""
        with self._transaction() as conn:
            cur = conn.execute(
                "UPDATE products SET last_sync_at=?, last_digest=?, in_sync=1 WHERE serial=?",
                (_iso(when), digest.hex(), serial),
            )
            if cur.rowcount == 0:
                raise StoreError(f"product {serial} is not attached")

    def mark_out_of_sync(self, serial: str) -> None:
        with self._transaction() as conn:
            cur = conn.execute("UPDATE products SET in_sync=0 WHERE serial=?", (serial,))
            if cur.rowcount == 0:
                raise StoreError(f"product {serial} is not attached")

    def products(self) -> list[Product]:
        rows = self._conn.execute(
            "SELECT serial, model, choice, attached_at, last_sync_at, last_digest, in_sync "
            "FROM products ORDER BY serial"
        )
        return [_row_to_product(r) for r in rows]

    def product(self, serial: str) -> Product | None:
        row = self._conn.execute(
            "SELECT serial, model, choice, attached_at, last_sync_at, last_digest, in_sync "
            "FROM products WHERE serial=?",
            (serial,),
        ).fetchone()
        return None if row is None else _row_to_product(row)

    # ------------------------------------------------------------ meter snapshots

    def meter_snapshots(self) -> dict[str, tuple[bytes, tuple[AccountRecord, ...]]]:
        """Per meter serial: the digest and list it held after its last sync.

        A sync trusts a snapshot only while the meter still reports that digest, so
        a stale one costs a full read, never a wrong change.
        """
        out: dict[str, tuple[bytes, tuple[AccountRecord, ...]]] = {}
        for serial, digest, records in self._conn.execute(
            "SELECT serial, digest, records FROM meter_snapshots"
        ):
            try:
                recs = tuple(AccountRecord(**r) for r in json.loads(records))
                out[serial] = (bytes.fromhex(digest), recs)
            except (ValueError, TypeError):
                continue  # unreadable snapshot: the next sync reads the meter instead
        return out

    def save_meter_snapshot(
        self, serial: str, digest: bytes, records: Iterable[AccountRecord]
    ) -> None:
        # Flat field dicts, as dataclasses.asdict gives, without its per-field deepcopy
        # (asdict was 95% of a no-change sync of 3,000 accounts).
        names = _RECORD_FIELDS
        data = json.dumps(
            [{n: getattr(r, n) for n in names} for r in records], ensure_ascii=False
        )
        with self._transaction() as conn:
            conn.execute(
                "INSERT INTO meter_snapshots VALUES (?,?,?,?) ON CONFLICT(serial) DO UPDATE "
                "SET digest=excluded.digest, records=excluded.records, saved_at=excluded.saved_at",
                (serial, digest.hex(), data, _iso(_now())),
            )

    # ------------------------------------------------------------------ history

    def history(self, code: str | None = None) -> list[HistoryEntry]:
        if code is None:
            rows = self._conn.execute(
                "SELECT code, at, actor, source, action, changes FROM history ORDER BY id"
            )
        else:
            rows = self._conn.execute(
                "SELECT code, at, actor, source, action, changes FROM history "
                "WHERE code=? ORDER BY id",
                (code,),
            )
        return [
            HistoryEntry(r[0], datetime.fromisoformat(r[1]), r[2], r[3], r[4], json.loads(r[5]))
            for r in rows
        ]


class _Tx:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``, or ``ROLLBACK`` on any exception."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self._conn.execute("BEGIN IMMEDIATE")
        return self._conn

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            try:
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
        else:
            self._conn.execute("ROLLBACK")


def _update_params(acc: SharedAccount, stamp: str) -> tuple[Any, ...]:
    return (
        acc.name,
        acc.description,
        int(acc.active),
        int(acc.password_enabled),
        acc.password,
        int(acc.billable),
        acc.access_level,
        acc.access_level_value,
        acc.division,
        int(acc.archived),
        stamp,
        acc.code,
    )


def _insert_params(acc: SharedAccount, stamp: str) -> tuple[Any, ...]:
    return (
        acc.code,
        acc.name,
        acc.parent_code or None,
        acc.description,
        int(acc.active),
        int(acc.password_enabled),
        acc.password,
        int(acc.billable),
        acc.access_level,
        acc.access_level_value,
        acc.division,
        int(acc.archived),
        stamp,
        stamp,
    )


def _row_to_product(r: Sequence[Any]) -> Product:
    attached = _parse_time(r[3])
    assert attached is not None
    return Product(
        serial=r[0],
        model=r[1],
        choice=r[2],
        attached_at=attached,
        last_sync_at=_parse_time(r[4]),
        last_digest=None if r[5] is None else bytes.fromhex(r[5]),
        in_sync=bool(r[6]),
    )


def _current_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers)
        return f"uid {os.getuid()}"


def apply_in_memory(
    accounts: Iterable[SharedAccount], changes: Iterable[Change]
) -> list[SharedAccount]:
    """What :meth:`SharedList.apply` would leave, without touching a database."""
    by_code = {a.code: a for a in accounts}
    for change in changes:
        by_code[change.after.code] = change.after
    return tree_order(by_code.values())


#: The name the brief also uses for the shared list.
Store = SharedList


__all__ = [
    "MIGRATIONS",
    "MUTABLE_FIELDS",
    "Change",
    "HistoryEntry",
    "Product",
    "SharedAccount",
    "SharedList",
    "Store",
    "StoreError",
    "apply_in_memory",
    "create_private_file",
    "tree_order",
]
