"""The trust-store folder on disk: its cheap signature (what reload watches) and atomic edits.

:mod:`trust.store` reads a folder into a generation; this module never parses a certificate.
Writers (``certgate trust``) validate a change with ``load_store(..., changes=...)`` first, then
apply it here, so a reader sees the old or the new file, never a half.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Mapping

from .store import PINNED_DIR


def folder_signature(folder: Path | str) -> tuple[tuple[str, int, int, int], ...]:
    """A cheap fingerprint of the folder: names, sizes, mtime_ns and inodes.

    Covers the folder itself, its files and ``pinned/``. Any edit by the CLI (atomic
    rename) or by hand changes it. Reading it costs a few ``stat`` calls, no file reads.
    """
    folder = Path(folder)
    items: list[tuple[str, int, int, int]] = []
    for rel, d in (("", folder), (PINNED_DIR + "/", folder / PINNED_DIR)):
        try:
            st = os.stat(d)
        except OSError:
            items.append((rel or ".", -1, -1, -1))
            continue
        items.append((rel or ".", 0, st.st_mtime_ns, st.st_ino))
        try:
            with os.scandir(d) as it:
                for e in it:
                    try:
                        s = e.stat()
                        items.append((rel + e.name, s.st_size, s.st_mtime_ns, s.st_ino))
                    except OSError:
                        items.append((rel + e.name, -1, -1, -1))
        except OSError:
            continue
    return tuple(sorted(items))


def atomic_write(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` so that readers see the old or the new file, never a half.

    A hidden temporary in the same folder (ignored by the loader) is written, fsynced,
    renamed over ``path`` with ``os.replace``, and the folder is fsynced.
    """
    path = Path(path)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(path.parent)


def atomic_remove(path: Path) -> None:
    """Remove ``path`` (a rename-free unlink is atomic) and fsync its folder."""
    os.unlink(path)
    _fsync_dir(Path(path).parent)


def apply_changes(folder: Path | str, changes: Mapping[str, bytes | None]) -> None:
    """Apply ``changes`` (relative path -> bytes or None to delete) with atomic writes.

    Writes happen before deletions so that a replaced CA is never missing in between.
    Does not validate: call :func:`load_store` with ``changes`` first.
    """
    folder = Path(folder)
    for rel, data in sorted(changes.items()):
        if data is not None:
            target = folder / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(target, data)
    for rel, data in sorted(changes.items()):
        if data is None and (folder / rel).exists():
            atomic_remove(folder / rel)


def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
