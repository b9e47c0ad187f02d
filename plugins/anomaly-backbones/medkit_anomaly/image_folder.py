"""A plain folder of images to score, without ground truth: its image files, checked readable, each named.

The folder is searched recursively (new images often arrive sorted into sub-folders by line, day or camera),
skipping hidden files and folders: macOS leaves ``._name.png`` companions that are not images, and notebook
checkpoints live in ``.ipynb_checkpoints``. A file counts as an image by its suffix (PNG, JPEG, TIFF, BMP).
Every file's header is read before any is scored, so a bad file stops the run at once, named with the others.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from medkit import UsageError

from .data import IMAGE_SUFFIXES

LISTED_BAD_FILES = 5  # unreadable files named in the message; the rest are counted


def folder_images(folder: Path) -> list[Path]:
    """The image files under ``folder`` (recursive, hidden entries skipped), sorted; a UsageError when none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UsageError(f"--data {folder}: no such folder; give a folder of images or one image file")
    found = [p for p in folder.rglob("*") if p.is_file() and not hidden(p, folder)]
    images = sorted(p for p in found if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        held = f"it holds {len(found)} other file(s)" if found else "it is empty"
        raise UsageError(
            f"--data {folder} holds no images ({', '.join(IMAGE_SUFFIXES)}, sub-folders included): {held}; "
            "put the images to score there"
        )
    return images


def hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def common_root(files: Sequence[Path]) -> Path:
    """The deepest folder holding every file: output names are paths below it."""
    return Path(os.path.commonpath([str(Path(f).resolve().parent) for f in files]))


def check_readable(files: Sequence[Path]) -> None:
    """Read every file's header; a UsageError naming the files that are not images PIL can open."""
    from PIL import Image

    bad = []
    for path in files:
        try:
            with Image.open(path):  # parses the header only: cheap, and enough to tell an image
                pass
        except (OSError, ValueError, Image.DecompressionBombError) as err:
            bad.append(f"{path} ({err})")
    if bad:
        named = "; ".join(bad[:LISTED_BAD_FILES])
        more = f" and {len(bad) - LISTED_BAD_FILES} more" if len(bad) > LISTED_BAD_FILES else ""
        raise UsageError(
            f"{len(bad)} of {len(files)} image file(s) cannot be read: {named}{more}; "
            "replace or remove them, or pass the good ones with --set images=[...]"
        )


def output_names(files: Sequence[Path], root: Path) -> list[str]:
    """Each file's path below ``root`` without its suffix (``line2/img_07``), unique: files that would share one
    (``a.png`` and ``a.jpg``) keep their suffix in it (``a_png``, ``a_jpg``)."""
    plain = [Path(f).resolve().relative_to(root).with_suffix("").as_posix() for f in files]
    counts = Counter(plain)
    return [
        name if counts[name] == 1 else f"{name}_{Path(f).suffix.lstrip('.')}"
        for name, f in zip(plain, files, strict=True)
    ]
