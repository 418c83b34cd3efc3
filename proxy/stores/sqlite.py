"""The default session store: one SQLite file in WAL mode, safe for several processes on one host.

Every read-modify-write runs in a ``BEGIN IMMEDIATE`` transaction (the database's write
lock), so concurrent gateway workers never interleave updates; ``busy_timeout`` makes a
writer wait (up to ``timeout`` seconds) instead of failing. ``synchronous=NORMAL`` with WAL
keeps every committed transaction across a process crash (a power loss may drop the last
few, never corrupt the file). The file is created with mode 0600.

:class:`SQLiteEngine` is the blocking face (command line tools); :class:`SQLiteStore` runs it
on one dedicated thread (:class:`proxy.stores.asynchronous.ThreadedStore`) for the gateway,
with ``busy_timeout`` equal to the operation deadline, so a database locked by another
process costs a 503 within the deadline, never a frozen reactor.
"""

from __future__ import annotations

import builtins
import json
import os
import sqlite3
import threading
from base64 import b64decode, b64encode
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, cast

from proxy.stores.asynchronous import DEFAULT_DEADLINE, DEFAULT_MAX_QUEUE, ThreadedStore
from proxy.stores.interface import (REPLACED, LimitReached, SessionRecord, StoreError, check_update_fields,
                                    pick_replaced, record_expiry, touched)

if TYPE_CHECKING:  # pragma: no cover
    from proxy.clock import Clock, ThreadingClock

SCHEMA_VERSION = 1
_FAILURE_KEEP = 31 * 86400.0
_COLUMNS = ("id", "account", "fingerprint", "cert_der", "chain_der", "created_at", "proved_at", "last_seen",
            "long_until", "methods", "client_ip", "ended")
_SELECT = "SELECT " + ", ".join(_COLUMNS) + " FROM sessions"
_DDL = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sessions (
  id TEXT PRIMARY KEY, account TEXT NOT NULL, fingerprint TEXT NOT NULL, cert_der BLOB NOT NULL,
  chain_der TEXT NOT NULL, created_at REAL NOT NULL, proved_at REAL NOT NULL, last_seen REAL NOT NULL,
  long_until REAL NOT NULL, methods TEXT NOT NULL, client_ip TEXT NOT NULL, ended TEXT,
  expire_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS sessions_account ON sessions(account);
CREATE INDEX IF NOT EXISTS sessions_fingerprint ON sessions(fingerprint);
CREATE INDEX IF NOT EXISTS sessions_expire ON sessions(expire_at);
CREATE TABLE IF NOT EXISTS failures (key TEXT NOT NULL, ts REAL NOT NULL);
CREATE INDEX IF NOT EXISTS failures_key ON failures(key, ts);
CREATE TABLE IF NOT EXISTS totp_steps (account TEXT PRIMARY KEY, step INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS once (ns TEXT NOT NULL, item TEXT NOT NULL, expires_at REAL NOT NULL,
  PRIMARY KEY (ns, item));
CREATE TABLE IF NOT EXISTS stash (ns TEXT NOT NULL, item TEXT NOT NULL, value TEXT NOT NULL,
  expires_at REAL NOT NULL, PRIMARY KEY (ns, item));
CREATE TABLE IF NOT EXISTS slots (ns TEXT NOT NULL, item TEXT NOT NULL, expires_at REAL NOT NULL,
  PRIMARY KEY (ns, item));
"""


def _row(r: tuple[Any, ...]) -> SessionRecord:
    return SessionRecord(id=r[0], account=r[1], fingerprint=r[2], cert_der=bytes(r[3]),
                         chain_der=tuple(b64decode(c) for c in json.loads(r[4])), created_at=r[5],
                         proved_at=r[6], last_seen=r[7], long_until=r[8], methods=tuple(json.loads(r[9])),
                         client_ip=r[10], ended=r[11])


def _values(rec: SessionRecord) -> tuple[Any, ...]:
    return (rec.id, rec.account, rec.fingerprint, rec.cert_der,
            json.dumps([b64encode(c).decode("ascii") for c in rec.chain_der]), rec.created_at, rec.proved_at,
            rec.last_seen, rec.long_until, json.dumps(list(rec.methods)), rec.client_ip, rec.ended,
            record_expiry(rec))


class SQLiteEngine:
    """:class:`proxy.stores.interface.IBlockingStore` in an SQLite file (``sqlite:PATH``)."""

    kind = "sqlite"

    def __init__(self, path: str | Path, *, timeout: float = 10.0) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            if not self.path.exists():
                self.path.parent.mkdir(parents=True, exist_ok=True)
                os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
            self._db = sqlite3.connect(str(self.path), timeout=timeout, isolation_level=None,
                                       check_same_thread=False)
            self._db.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
            mode = self._db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreError(f"sqlite store {self.path}: cannot switch to WAL mode (got {mode!r})")
            self._db.execute("PRAGMA synchronous = NORMAL")
            with self._tx():  # one writer creates the schema; others wait on the lock
                for stmt in _DDL.split(";"):
                    if stmt.strip():
                        self._db.execute(stmt)
                row = self._db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
                if row is None:
                    self._db.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
                elif row[0] != str(SCHEMA_VERSION):
                    raise StoreError(f"sqlite store {self.path}: schema version {row[0]}, this certgate "
                                     f"needs {SCHEMA_VERSION}; move the file away to start afresh")
        except sqlite3.Error as e:
            raise StoreError(f"sqlite store {self.path}: {e}") from None
        except OSError as e:
            raise StoreError(f"sqlite store {self.path}: {e.strerror}") from None

    def __repr__(self) -> str:
        return f"SQLiteEngine({str(self.path)!r})"

    # ------------------------------------------------------------------ plumbing
    class _Tx:
        def __init__(self, store: "SQLiteEngine") -> None:
            self.s = store

        def __enter__(self) -> sqlite3.Connection:
            self.s._lock.acquire()
            try:
                self.s._db.execute("BEGIN IMMEDIATE")
            except BaseException:
                self.s._lock.release()
                raise
            return self.s._db

        def __exit__(self, et: Any, ev: Any, tb: Any) -> None:
            try:
                self.s._db.execute("COMMIT" if et is None else "ROLLBACK")
            finally:
                self.s._lock.release()

    def _tx(self) -> "SQLiteEngine._Tx":
        return SQLiteEngine._Tx(self)

    def _run(self, fn: Any) -> Any:
        """Run ``fn(db)`` in a write transaction; sqlite errors become StoreError with the path."""
        try:
            with self._tx() as db:
                return fn(db)
        except sqlite3.Error as e:
            raise StoreError(f"sqlite store {self.path}: {e}") from None

    def _read(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        try:
            with self._lock:
                return self._db.execute(sql, args).fetchall()
        except sqlite3.Error as e:
            raise StoreError(f"sqlite store {self.path}: {e}") from None

    # ------------------------------------------------------------------ sessions
    def create(self, rec: SessionRecord, *, limit: int = 0, replace: bool = False) -> list[str]:
        def fn(db: sqlite3.Connection) -> list[str]:
            gone: list[str] = []
            if limit > 0:
                live = [_row(r) for r in db.execute(_SELECT + " WHERE account = ? AND ended IS NULL", (rec.account,))]
                old = pick_replaced(live, limit)
                if old and not replace:
                    raise LimitReached(rec.account, len(live))
                for r in old:
                    self._rewrite(db, r.id, lambda x: x.with_(ended=REPLACED, last_seen=max(x.last_seen, rec.created_at)))
                    gone.append(r.id)
            try:
                db.execute("INSERT INTO sessions VALUES (" + ",".join("?" * 13) + ")", _values(rec))
            except sqlite3.IntegrityError:
                raise StoreError(f"sqlite store {self.path}: session id {rec.id[:8]}... already exists") from None
            return gone
        return self._run(fn)

    def get_many(self, session_ids: list[str]) -> dict[str, SessionRecord | None]:
        out: dict[str, SessionRecord | None] = {i: None for i in session_ids}
        for i in range(0, len(session_ids), 500):
            part = session_ids[i:i + 500]
            for r in self._read(_SELECT + " WHERE id IN (" + ",".join("?" * len(part)) + ")", tuple(part)):
                out[r[0]] = _row(r)
        return out

    def get(self, session_id: str) -> SessionRecord | None:
        rows = self._read(_SELECT + " WHERE id = ?", (session_id,))
        return _row(rows[0]) if rows else None

    def _rewrite(self, db: sqlite3.Connection, session_id: str, change: Any) -> SessionRecord | None:
        row = db.execute(_SELECT + " WHERE id = ?", (session_id,)).fetchone()
        if row is None:
            return None
        rec = change(_row(row))
        v = _values(rec)
        db.execute("UPDATE sessions SET proved_at=?, last_seen=?, long_until=?, methods=?, client_ip=?, ended=?, "
                   "expire_at=? WHERE id=?", (v[6], v[7], v[8], v[9], v[10], v[11], v[12], session_id))
        return rec

    def update(self, session_id: str, **fields: Any) -> SessionRecord | None:
        check_update_fields(fields)
        if "methods" in fields:
            fields["methods"] = tuple(fields["methods"])
        return self._run(lambda db: self._rewrite(db, session_id, lambda r: r.with_(**fields)))

    def touch(self, session_id: str, *, proved_at: float, last_seen: float, client_ip: str,
              long_grace: float) -> SessionRecord | None:
        def change(rec: SessionRecord) -> SessionRecord:
            return touched(rec, proved_at=proved_at, last_seen=last_seen, client_ip=client_ip,
                           long_grace=long_grace)
        return self._run(lambda db: self._rewrite(db, session_id, change))

    def delete(self, session_id: str) -> bool:
        return self._run(lambda db: db.execute("DELETE FROM sessions WHERE id = ?", (session_id,)).rowcount > 0)

    def list(self) -> list[SessionRecord]:
        return [_row(r) for r in self._read(_SELECT)]

    def delete_where(self, *, account: str | None = None, fingerprint: str | None = None) -> builtins.list[str]:
        if account is None and fingerprint is None:
            raise ValueError("delete_where needs account and/or fingerprint")
        conds, args = [], []
        for col, val in (("account", account), ("fingerprint", fingerprint)):
            if val is not None:
                conds.append(f"{col} = ?")
                args.append(val)
        where = " AND ".join(conds)

        def fn(db: sqlite3.Connection) -> list[str]:
            ids = [r[0] for r in db.execute(f"SELECT id FROM sessions WHERE {where}", args)]
            db.execute(f"DELETE FROM sessions WHERE {where}", args)
            return ids
        return self._run(fn)

    # ------------------------------------------------------------------ login state
    def incr_failure(self, key: str, now: float, window: float) -> int:
        def fn(db: sqlite3.Connection) -> int:
            db.execute("DELETE FROM failures WHERE key = ? AND ts <= ?", (key, now - window))
            db.execute("INSERT INTO failures VALUES (?, ?)", (key, now))
            return db.execute("SELECT COUNT(*) FROM failures WHERE key = ? AND ts > ? AND ts <= ?",
                              (key, now - window, now)).fetchone()[0]
        return self._run(fn)

    def failures(self, key: str, now: float, window: float) -> int:
        return self._read("SELECT COUNT(*) FROM failures WHERE key = ? AND ts > ? AND ts <= ?",
                          (key, now - window, now))[0][0]

    def reset_failures(self, key: str) -> None:
        self._run(lambda db: db.execute("DELETE FROM failures WHERE key = ?", (key,)))

    def use_totp_step(self, account: str, step: int) -> bool:
        return self._run(lambda db: db.execute(
            "INSERT INTO totp_steps VALUES (?, ?) ON CONFLICT(account) DO UPDATE SET step = excluded.step "
            "WHERE excluded.step > totp_steps.step", (account, int(step))).rowcount == 1)

    def consume_once(self, namespace: str, item_id: str, expires_at: float) -> bool:
        return self._run(lambda db: db.execute("INSERT OR IGNORE INTO once VALUES (?, ?, ?)",
                                               (namespace, item_id, expires_at)).rowcount == 1)

    def stash(self, namespace: str, item_id: str, value: str, expires_at: float) -> None:
        self._run(lambda db: db.execute("INSERT OR REPLACE INTO stash VALUES (?, ?, ?, ?)",
                                        (namespace, item_id, value, expires_at)))

    def unstash(self, namespace: str, item_id: str, now: float) -> str | None:
        def fn(db: sqlite3.Connection) -> str | None:
            row = db.execute("SELECT value, expires_at FROM stash WHERE ns = ? AND item = ?",
                             (namespace, item_id)).fetchone()
            if row is None:
                return None
            db.execute("DELETE FROM stash WHERE ns = ? AND item = ?", (namespace, item_id))
            return row[0] if now < row[1] else None
        return self._run(fn)

    def take_slot(self, namespace: str, item_id: str, now: float, expires_at: float, cap: int) -> int:
        def fn(db: sqlite3.Connection) -> int:
            db.execute("DELETE FROM slots WHERE ns = ? AND expires_at <= ?", (namespace, now))
            n = db.execute("SELECT COUNT(*) FROM slots WHERE ns = ?", (namespace,)).fetchone()[0]
            if n >= cap:
                return -1
            db.execute("INSERT OR REPLACE INTO slots VALUES (?, ?, ?)", (namespace, item_id, expires_at))
            return int(n)
        return self._run(fn)

    def release_slot(self, namespace: str, item_id: str) -> None:
        self._run(lambda db: db.execute("DELETE FROM slots WHERE ns = ? AND item = ?", (namespace, item_id)))

    def ping(self) -> None:
        self._read("SELECT 1")

    def purge(self, now: float) -> int:
        def fn(db: sqlite3.Connection) -> int:
            n = db.execute("DELETE FROM sessions WHERE expire_at <= ?", (now,)).rowcount
            db.execute("DELETE FROM stash WHERE expires_at <= ?", (now,))
            db.execute("DELETE FROM once WHERE expires_at < ?", (now,))
            db.execute("DELETE FROM failures WHERE ts <= ?", (now - _FAILURE_KEEP,))
            return n
        return self._run(fn)

    def close(self) -> None:
        with self._lock:
            try:
                self._db.close()
            except sqlite3.Error:
                pass

    def iter_ids(self) -> Iterator[str]:
        """Every stored session id (for the CLI's prefix matching)."""
        return iter([r[0] for r in self._read("SELECT id FROM sessions")])


class SQLiteStore(ThreadedStore):
    """:class:`proxy.stores.interface.ISessionStore` on an :class:`SQLiteEngine` run by one dedicated
    thread. Opening the file happens here, on the calling thread (at startup, before serving)."""

    kind = "sqlite"

    def __init__(self, path: str | Path, *, reactor: ThreadingClock | None = None, clock: Clock | None = None,
                 deadline: float = DEFAULT_DEADLINE, max_queue: int = DEFAULT_MAX_QUEUE) -> None:
        if reactor is None:
            from twisted.internet import reactor as _reactor

            # Twisted types the global reactor as its common interfaces only; it runs threads too
            reactor = cast("ThreadingClock", _reactor)
        self.path = Path(path)
        super().__init__(SQLiteEngine(path, timeout=deadline), f"sqlite store {self.path}", reactor=reactor,
                         clock=clock, deadline=deadline, max_queue=max_queue)

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self.path)!r})"
