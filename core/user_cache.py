"""The user's medkit cache folder, where plugins keep what they generate once (embedded data sets, caches).

``MEDKIT_CACHE_DIR`` (tests point it at a temporary folder) or ``XDG_CACHE_HOME`` or ``~/.cache``, then
``medkit/<plugin>``. :func:`build_once` fills a path there exactly once: built under a temporary name beside
it and renamed into place, so an interrupted build never leaves a half-written file or folder behind.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path


def cache_folder(*parts: str) -> Path:
    """``<cache base>/medkit/<parts...>``; nothing is created."""
    base = os.environ.get("MEDKIT_CACHE_DIR") or os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base, "medkit", *parts)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def build_once(target: Path, build: Callable[[Path], object]) -> Path:
    """Return ``target``, first calling ``build(path)`` to create it if it does not exist yet.

    ``build`` writes a file or a folder at the path it is given (a temporary sibling of ``target`` with the
    same ending); on success it is renamed onto ``target``. Under torchrun only rank 0 builds; the other
    ranks wait at a barrier and then read it. Two processes racing keep the first finished build.
    """
    from . import distributed as dist  # torch: only when something is built

    target = Path(target)
    if dist.current().is_main and not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".building-{uuid.uuid4().hex[:8]}-{target.name}")
        try:
            build(partial)
            if not target.exists():
                os.replace(partial, target)
        except OSError:
            if not target.exists():  # the rename lost a race only if someone else's build is there now
                raise
        finally:
            _remove(partial)
    dist.barrier()
    return target
