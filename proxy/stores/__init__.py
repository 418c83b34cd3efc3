"""Session stores: the interface, three implementations, and ``open_store(spec, base_dir)``."""

from __future__ import annotations

from pathlib import Path

from proxy.stores.interface import ISessionStore, SessionRecord, StoreError
from proxy.stores.memory import MemoryStore

__all__ = ["ISessionStore", "SessionRecord", "StoreError", "MemoryStore", "open_store"]


def open_store(spec: str, base_dir: str | Path) -> ISessionStore:
    """Open the store named by ``[sessions] store``: ``memory``, ``sqlite:PATH`` (relative to
    ``base_dir``) or ``redis://HOST:PORT/DB``. Raises StoreError saying what and why."""
    if spec == "memory":
        return MemoryStore()
    if spec.startswith("sqlite:"):
        from proxy.stores.sqlite import SQLiteStore

        raw = spec[len("sqlite:"):]
        if not raw:
            raise StoreError("[sessions] store: sqlite: needs a file path, e.g. sqlite:sessions.db")
        p = Path(raw)
        return SQLiteStore(p if p.is_absolute() else Path(base_dir) / p)
    if spec.startswith(("redis://", "rediss://")):
        from proxy.stores.redis import RedisStore

        return RedisStore(spec)
    raise StoreError(f"[sessions] store: {spec!r} is not memory, sqlite:PATH or redis://HOST:PORT/DB")
