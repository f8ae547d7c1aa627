"""The meter's power-safe memory: one SQLite file (format: docs/NVM.md).

Every ``commit_*`` call is one SQLite transaction (rollback journal, ``synchronous=
FULL``): when it returns, the change is on disk; if the process dies at any instant
before that, the next :meth:`Nvm.open` finds the previous state.  A change and the
protocol layer's ``session`` blob (its dedup/response cache) are written in the SAME
transaction, so a request retransmitted after a power cut is recognised exactly when
its effect is present.

``session=None`` in a commit keeps the stored session blob unchanged.

If a commit raises :class:`NvmError`, nothing was written: the caller's in-memory
state is then ahead of the NVM and must be discarded (reload with :meth:`Nvm.load`)
and the request answered with ErrorCode.INTERNAL.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple

from firmware_sim.accounts import STATE_VERSION, AccountBook, Settings, Supervisor

__all__ = ["FORMAT_VERSION", "Loaded", "Nvm", "NvmError"]

#: PRAGMA user_version of a meterlink NVM file.  Bump on any schema change.
FORMAT_VERSION = 1
#: PRAGMA application_id: "MLNV".
APPLICATION_ID = 0x4D4C4E56
#: The largest session blob the NVM accepts.
SESSION_MAX = 1 << 20

_SCHEMA = """
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE account (
    code             TEXT PRIMARY KEY,
    seq              INTEGER NOT NULL UNIQUE,
    parent_code      TEXT NOT NULL,
    name             TEXT NOT NULL,
    active           INTEGER NOT NULL CHECK (active IN (0, 1)),
    password_enabled INTEGER NOT NULL CHECK (password_enabled IN (0, 1)),
    password         TEXT NOT NULL,
    number           INTEGER NOT NULL CHECK (number >= 0),
    pieces           INTEGER NOT NULL CHECK (pieces >= 0),
    postage_mills    INTEGER NOT NULL CHECK (postage_mills >= 0),
    ever_charged     INTEGER NOT NULL CHECK (ever_charged IN (0, 1))
) WITHOUT ROWID;
CREATE TABLE blob (
    key   TEXT PRIMARY KEY,
    value BLOB NOT NULL
) WITHOUT ROWID;
"""

_COLUMNS = (
    "code", "seq", "parent_code", "name", "active", "password_enabled", "password",
    "number", "pieces", "postage_mills", "ever_charged",
)


class NvmError(Exception):
    """The NVM file cannot be opened/read, or a commit failed (nothing was written)."""


class Loaded(NamedTuple):
    book: AccountBook
    settings: Settings  # the same object as book.settings
    supervisor: Supervisor
    session: bytes


def _json(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Nvm:
    """One open NVM file.  Not thread-safe; one process at a time."""

    def __init__(self, path: Path, db: sqlite3.Connection) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = db

    # ------------------------------------------------------------- open/close

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        factory: Callable[[], tuple[AccountBook, Supervisor]] | None = None,
    ) -> Nvm:
        """Open the NVM file, creating it (mode 0600) when missing or empty.

        A new file is initialised, in one transaction, with ``factory()`` (default: an
        empty 25-account book and an unset supervisor password) and an empty session.
        """
        p = Path(path)
        created = False
        try:
            fd = os.open(p, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            os.close(fd)
            _fsync_dir(p)
            created = True
        if not created and (os.stat(p).st_mode & 0o077):
            os.chmod(p, 0o600)
        try:
            db = sqlite3.connect(p, isolation_level=None, check_same_thread=True)
        except sqlite3.Error as exc:
            raise NvmError(f"cannot open NVM file {p}: {exc}") from exc
        nvm = cls(p, db)
        try:
            nvm._setup(factory)
        except BaseException:
            db.close()
            nvm._db = None
            raise
        return nvm

    def _setup(self, factory: Callable[[], tuple[AccountBook, Supervisor]] | None) -> None:
        db = self._conn
        try:
            mode = db.execute("PRAGMA journal_mode=DELETE").fetchone()[0]
            if str(mode).lower() != "delete":
                raise NvmError(f"cannot set rollback journal mode (got {mode})")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA secure_delete=ON")
            db.execute("PRAGMA foreign_keys=OFF")
            app_id = db.execute("PRAGMA application_id").fetchone()[0]
            version = db.execute("PRAGMA user_version").fetchone()[0]
            tables = db.execute("SELECT count(*) FROM sqlite_schema").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            raise NvmError(f"{self.path} is not a readable NVM file: {exc}") from exc
        if app_id == 0 and version == 0 and tables == 0:
            book, sup = factory() if factory else (AccountBook(), Supervisor())
            with self._tx() as tx:
                tx.executescript_safe(_SCHEMA)
                tx.execute(f"PRAGMA application_id={APPLICATION_ID}")
                tx.execute(f"PRAGMA user_version={FORMAT_VERSION}")
                tx.execute("INSERT INTO meta VALUES ('format', ?)", (str(FORMAT_VERSION),))
                tx.execute("INSERT INTO meta VALUES ('state_version', ?)", (str(STATE_VERSION),))
                self._write_book(tx, book)
                self._write_supervisor(tx, sup)
                self._write_session(tx, b"")
            return
        if app_id != APPLICATION_ID:
            raise NvmError(f"{self.path} is not a meterlink NVM file")
        if version != FORMAT_VERSION:
            raise NvmError(f"{self.path}: unsupported NVM format {version}")
        check = db.execute("PRAGMA quick_check").fetchone()[0]
        if check != "ok":
            raise NvmError(f"{self.path}: integrity check failed: {check}")

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def __enter__(self) -> Nvm:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise NvmError("NVM is closed")
        return self._db

    @contextmanager
    def _tx(self) -> Iterator[_Tx]:
        db = self._conn
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise NvmError(f"cannot start an NVM transaction: {exc}") from exc
        try:
            yield _Tx(db)
            db.execute("COMMIT")
        except BaseException as exc:
            try:
                if db.in_transaction:
                    db.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            if isinstance(exc, sqlite3.Error):
                raise NvmError(f"NVM commit failed: {exc}") from exc
            raise

    # ---------------------------------------------------------------- reading

    def load(self) -> Loaded:
        """The whole stored state: book (with settings), supervisor, session blob."""
        db = self._conn
        try:
            db.execute("BEGIN")
            try:
                rows = db.execute(
                    f"SELECT {', '.join(_COLUMNS)} FROM account ORDER BY seq"  # noqa: S608
                ).fetchall()
                blobs = dict(db.execute("SELECT key, value FROM blob").fetchall())
            finally:
                db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise NvmError(f"cannot read the NVM: {exc}") from exc
        try:
            accounts = [
                {k: v for k, v in zip(_COLUMNS, row, strict=True) if k != "seq"} for row in rows
            ]
            state = {
                "version": STATE_VERSION,
                "settings": json.loads(blobs["settings"]),
                "retired": json.loads(blobs["retired"]),
                "accounts": accounts,
            }
            book = AccountBook.from_state(state)
            supervisor = Supervisor.from_state(json.loads(blobs["supervisor"]))
            session = bytes(blobs["session"])
        except (KeyError, ValueError, TypeError) as exc:
            raise NvmError(f"the NVM holds inconsistent data: {exc}") from exc
        return Loaded(book, book.settings, supervisor, session)

    # ---------------------------------------------------------------- commits

    def commit_book(self, book: AccountBook, session: bytes | None = None) -> None:
        """A committed list transaction: the whole book (accounts, settings)."""
        with self._tx() as tx:
            self._write_book(tx, book)
            self._write_session(tx, session)

    def commit_mail(self, book: AccountBook, code: str, session: bytes | None = None) -> None:
        """A mail run: one account's counters (one row update)."""
        self.commit_counters(book, [code], session)

    def commit_counters(
        self, book: AccountBook, codes: Iterable[str], session: bytes | None = None
    ) -> None:
        """The counters of the given chargeable accounts (mail run, single reset)."""
        records = [book.get(code) for code in codes]
        with self._tx() as tx:
            for rec in records:
                cur = tx.execute(
                    "UPDATE account SET pieces=?, postage_mills=?, ever_charged=? "
                    "WHERE code=? AND number=?",
                    (rec.pieces, rec.postage_mills, int(rec.ever_charged), rec.code, rec.number),
                )
                if cur.rowcount != 1:
                    raise NvmError(f"account {rec.code!r} is not stored as in memory")
            self._write_session(tx, session)

    def commit_reset_all(self, book: AccountBook, session: bytes | None = None) -> None:
        """Reset-all: every counter and the settings (the cutoff moved)."""
        with self._tx() as tx:
            tx.execute("UPDATE account SET pieces=0, postage_mills=0")
            tx.execute(
                "INSERT OR REPLACE INTO blob VALUES ('settings', ?)",
                (_json(book.settings.to_state()).encode(),),
            )
            self._write_session(tx, session)

    def commit_settings(self, book: AccountBook, session: bytes | None = None) -> None:
        with self._tx() as tx:
            tx.execute(
                "INSERT OR REPLACE INTO blob VALUES ('settings', ?)",
                (_json(book.settings.to_state()).encode(),),
            )
            self._write_session(tx, session)

    def commit_supervisor(self, supervisor: Supervisor, session: bytes | None = None) -> None:
        """The supervisor hash and lockout counter (after every verify)."""
        with self._tx() as tx:
            self._write_supervisor(tx, supervisor)
            self._write_session(tx, session)

    def commit_session(self, session: bytes) -> None:
        with self._tx() as tx:
            self._write_session(tx, session)

    # ---------------------------------------------------------------- writers

    @staticmethod
    def _write_book(tx: _Tx, book: AccountBook) -> None:
        state = book.to_state()
        tx.execute("DELETE FROM account")
        tx.executemany(
            f"INSERT INTO account ({', '.join(_COLUMNS)}) "  # noqa: S608
            f"VALUES ({', '.join('?' * len(_COLUMNS))})",
            (
                (
                    a["code"], seq, a["parent_code"], a["name"], int(a["active"]),
                    int(a["password_enabled"]), a["password"], a["number"], a["pieces"],
                    a["postage_mills"], int(a["ever_charged"]),
                )
                for seq, a in enumerate(state["accounts"])
            ),
        )
        tx.execute(
            "INSERT OR REPLACE INTO blob VALUES ('settings', ?)",
            (_json(state["settings"]).encode(),),
        )
        tx.execute(
            "INSERT OR REPLACE INTO blob VALUES ('retired', ?)", (_json(state["retired"]).encode(),)
        )

    @staticmethod
    def _write_supervisor(tx: _Tx, supervisor: Supervisor) -> None:
        tx.execute(
            "INSERT OR REPLACE INTO blob VALUES ('supervisor', ?)",
            (_json(supervisor.to_state()).encode(),),
        )

    @staticmethod
    def _write_session(tx: _Tx, session: bytes | None) -> None:
        if session is None:
            return
        if not isinstance(session, bytes | bytearray | memoryview):
            raise NvmError("session must be bytes")
        if len(session) > SESSION_MAX:
            raise NvmError("session blob too large")
        tx.execute("INSERT OR REPLACE INTO blob VALUES ('session', ?)", (bytes(session),))


class _Tx:
    """The statements allowed inside one NVM transaction."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> sqlite3.Cursor:
        return self._db.execute(sql, params)

    def executemany(self, sql: str, rows: Iterable[tuple[Any, ...]]) -> sqlite3.Cursor:
        return self._db.executemany(sql, rows)

    def executescript_safe(self, script: str) -> None:
        """Run DDL statements one by one (executescript would COMMIT first)."""
        for statement in script.split(";"):
            if statement.strip():
                self._db.execute(statement)
