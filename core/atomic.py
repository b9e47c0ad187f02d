"""Atomic file writes: write a temporary file beside the target, flush it to disk, then rename over the target.

A process killed at any moment leaves either the old file or the new one, never a torn one; after the rename
the folder itself is flushed, so a power cut cannot lose the new name either. The file gets the permissions
any new file gets under the process's umask (``mkstemp`` alone would make it 0600, unreadable by a group that
shares the runs folder).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process's umask (reading it means setting it, so briefly, under a lock)."""
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def fsync_directory(folder: Path) -> None:
    """Flush ``folder``'s entries (a rename into it) to disk; a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path in ``target``'s folder; on success it replaces ``target`` atomically."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, target)
        fsync_directory(target.parent)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write(target: Path, write: Callable[[IO[bytes]], object]) -> None:
    """Call ``write(binary_file)`` into a temporary file and move it onto ``target``."""
    with atomic_path(target) as tmp, open(tmp, "wb") as handle:
        write(handle)


def atomic_write_text(target: Path, text: str) -> None:
    atomic_write(target, lambda handle: handle.write(text.encode("utf-8")))
