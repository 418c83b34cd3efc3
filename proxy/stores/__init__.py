"""Session stores: the interfaces, three implementations, ``open_store`` and ``open_engine``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from proxy.stores.asynchronous import DEFAULT_DEADLINE, DEFAULT_MAX_QUEUE
from proxy.stores.interface import IBlockingStore, ISessionStore, LimitReached, SessionRecord, StoreError
from proxy.stores.memory import MemoryEngine, MemoryStore

if TYPE_CHECKING:  # pragma: no cover
    from proxy.clock import Clock, ThreadingClock
    from proxy.config import SessionsSection

__all__ = ["IBlockingStore", "ISessionStore", "LimitReached", "SessionRecord", "StoreError", "MemoryStore",
           "StoreOptions", "open_store", "open_engine", "options_from"]

_SCHEMES = ("redis://", "rediss://", "redis+sentinel://")


@dataclass(frozen=True)
class StoreOptions:
    """How to reach and bound a store (``[sessions] store_deadline`` ... ``redis_ca``)."""

    deadline: float = DEFAULT_DEADLINE
    max_queue: int = DEFAULT_MAX_QUEUE
    redis_pool_size: int = 4
    redis_password_file: str | None = None
    redis_ca: str | None = None


def options_from(sessions: SessionsSection, base_dir: str | Path) -> StoreOptions:
    """StoreOptions from a ``[sessions]`` config section (paths relative to ``base_dir``)."""
    def path(v: Any) -> str | None:
        if not v:
            return None
        p = Path(v)
        return str(p if p.is_absolute() else Path(base_dir) / p)
    return StoreOptions(deadline=sessions.store_deadline, max_queue=sessions.store_max_queue,
                        redis_pool_size=sessions.redis_pool_size,
                        redis_password_file=path(sessions.redis_password_file), redis_ca=path(sessions.redis_ca))


def _check(spec: str) -> None:
    if spec == "memory" or spec.startswith(_SCHEMES):
        return
    if spec.startswith("sqlite:"):
        if not spec[len("sqlite:"):]:
            raise StoreError("[sessions] store: sqlite: needs a file path, e.g. sqlite:sessions.db")
        return
    raise StoreError(f"[sessions] store: {spec!r} is not memory, sqlite:PATH, redis://HOST:PORT/DB, "
                     "rediss://HOST:PORT/DB or redis+sentinel://HOST:PORT,.../SERVICE/DB")


def _sqlite_path(spec: str, base_dir: str | Path) -> Path:
    p = Path(spec[len("sqlite:"):])
    return p if p.is_absolute() else Path(base_dir) / p


def open_store(spec: str, base_dir: str | Path, options: StoreOptions | None = None, *,
               reactor: ThreadingClock | None = None, clock: Clock | None = None) -> ISessionStore:
    """Open the store named by ``[sessions] store`` for the gateway (the asynchronous face):
    ``memory``, ``sqlite:PATH`` (relative to ``base_dir``), ``redis://``, ``rediss://`` or
    ``redis+sentinel://``. Raises StoreError saying what and why. A Redis store connects in
    the background (its operations fail fast until a connection is up)."""
    _check(spec)
    opts = options or StoreOptions()
    if spec == "memory":
        return MemoryStore()
    if spec.startswith("sqlite:"):
        from proxy.stores.sqlite import SQLiteStore

        return SQLiteStore(_sqlite_path(spec, base_dir), reactor=reactor, clock=clock, deadline=opts.deadline,
                           max_queue=opts.max_queue)
    from proxy.stores.redis import RedisStore

    return RedisStore(spec, clock=clock or reactor, deadline=opts.deadline, max_queue=opts.max_queue,
                      pool_size=opts.redis_pool_size, password_file=opts.redis_password_file, ca_file=opts.redis_ca)


def open_engine(spec: str, base_dir: str | Path, options: StoreOptions | None = None) -> IBlockingStore:
    """Open the blocking face of the store (command line tools, never the reactor thread)."""
    _check(spec)
    opts = options or StoreOptions()
    if spec == "memory":
        return MemoryEngine()
    if spec.startswith("sqlite:"):
        from proxy.stores.sqlite import SQLiteEngine

        return SQLiteEngine(_sqlite_path(spec, base_dir))
    from proxy.stores.redis import RedisEngine

    return RedisEngine(spec, password_file=opts.redis_password_file, ca_file=opts.redis_ca)
