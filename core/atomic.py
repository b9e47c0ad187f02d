"""Atomic file writes: write a temporary file beside the target, flush it to disk, then rename over the target.

A process killed at any moment leaves either the old file or the new one, never a torn one.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO


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
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write(target: Path, write: Callable[[IO[bytes]], object]) -> None:
    """Call ``write(binary_file)`` into a temporary file and move it onto ``target``."""
    with atomic_path(target) as tmp, open(tmp, "wb") as handle:
        write(handle)


def atomic_write_text(target: Path, text: str) -> None:
    atomic_write(target, lambda handle: handle.write(text.encode("utf-8")))
