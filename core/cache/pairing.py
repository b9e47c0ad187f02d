"""Finding the (image, mask) pairs a cache is built from, by the one pairing rule the user names.

Rules: a mask file-name suffix (``case1_seg.nii.gz`` masks ``case1.nii.gz``), a parallel mask folder
(LUNA16: ``subset0/1.2.3.mhd`` -> ``seg-lungs-LUNA16/1.2.3.mhd``), or a CSV manifest. With no rule, an
``.npz`` holding a ``mask`` array is its own mask and every other image has none.
"""

from __future__ import annotations

import csv
import os
import zipfile
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..errors import UsageError
from .readers import SUPPORTED, VOLUME_SUFFIXES, is_dicom_folder, volume_name, volume_suffix


@dataclass(frozen=True)
class Pair:
    """One volume to convert: its id in the cache, its image and its mask (None: no mask)."""

    id: str
    image: Path
    mask: Path | None


@dataclass(frozen=True)
class _Found:
    """An image found under ``root``: the source folder named by the user (a file's own folder)."""

    image: Path
    root: Path


def find_pairs(
    sources: Sequence[Path],
    *,
    mask_suffix: str | None = None,
    mask_dir: Path | str | None = None,
    manifest: Path | None = None,
) -> list[Pair]:
    """The pairs to convert, sorted by id; ids are unique. Raises UsageError for anything missing."""
    given = _given_rules({"mask-suffix": mask_suffix, "mask-dir": mask_dir, "manifest": manifest})
    if len(given) > 1:
        raise UsageError(
            f"give one pairing rule, not {' and '.join(given)}: choose the one your data follows"
        )
    if manifest is not None:
        if sources:
            raise UsageError(
                f"the manifest {manifest} lists every image; give either source folders or --manifest, not both"
            )
        pairs, fixed = _pairs_from_manifest(Path(manifest))
    else:
        pairs = [
            _pair(found, mask_suffix, mask_dir) for found in _find_images(sources, mask_suffix, mask_dir)
        ]
        fixed = set()
    return sorted(_unique_ids(pairs, fixed), key=lambda pair: pair.id)


def _given_rules(rules: dict[str, object]) -> list[str]:
    """The options given, as the user typed them; an empty value is a mistake, not an absent rule."""
    for name, value in rules.items():
        if value is not None and not str(value).strip():
            raise UsageError(f"--{name} is empty; give a value or leave the option out")
    return [f"--{name}" for name, value in rules.items() if value is not None]


# -- searching the sources -------------------------------------------------------------------------------


def _find_images(
    sources: Sequence[Path], mask_suffix: str | None, mask_dir: Path | str | None
) -> list[_Found]:
    if not sources:
        raise UsageError(f"no sources given; name files or folders holding volumes. Supported: {SUPPORTED}")
    found: list[_Found] = []
    for source in map(Path, sources):
        root = source.absolute() if source.is_dir() else source.absolute().parent
        images = [image for image in _volumes_in(source) if not _is_mask(image, root, mask_suffix, mask_dir)]
        if not images:
            raise UsageError(
                f"no volumes found in {source}{_masks_only_note(mask_suffix, mask_dir)}; "
                f"check the path. Supported: {SUPPORTED}"
            )
        found.extend(_Found(image, root) for image in images)
    return _without_repeats(found)


def _volumes_in(source: Path) -> list[Path]:
    if not source.exists():
        raise UsageError(f"source {source} does not exist; check the path")
    if source.is_file():
        if volume_suffix(source) is None:
            hint = " (give the .mhd header, not its .raw data)" if source.suffix.lower() == ".raw" else ""
            raise UsageError(f"{source}: unsupported file type{hint}. Supported: {SUPPORTED}")
        return [source.absolute()]
    return sorted(_walk(source.absolute()))


def _walk(folder: Path) -> Iterator[Path]:
    """Volume files below ``folder``; a folder holding .dcm files directly is one volume (a DICOM series)."""
    for current, folders, files in os.walk(folder):
        folders[:] = sorted(name for name in folders if not name.startswith("."))
        here = Path(current)
        visible = [name for name in files if not name.startswith(".")]  # ._x.nii.gz: macOS metadata, not data
        if any(name.lower().endswith(".dcm") for name in visible):
            yield here
        yield from (here / name for name in visible if volume_suffix(Path(name)) not in (None, ".dcm"))


def _without_repeats(found: list[_Found]) -> list[_Found]:
    """Overlapping sources (``data`` and ``data/subset0``) find a file twice; keep its first finding."""
    seen: set[Path] = set()
    unique = []
    for item in found:
        key = item.image.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(item)
    return unique


def _is_mask(image: Path, root: Path, mask_suffix: str | None, mask_dir: Path | str | None) -> bool:
    if mask_suffix is not None:
        return volume_name(image).endswith(mask_suffix)
    if mask_dir is not None:
        # a source holding the mask folder itself (LUNA16/ with seg-lungs-LUNA16/ inside) must not read masks as images
        return image.resolve().is_relative_to(_resolve_mask_dir(mask_dir, root).resolve())
    return False


def _masks_only_note(mask_suffix: str | None, mask_dir: Path | str | None) -> str:
    if mask_suffix is not None:
        return f" (masks ending in '{mask_suffix}' do not count as images)"
    if mask_dir is not None:
        return f" (the mask folder '{mask_dir}' does not count)"
    return ""


# -- the rules -------------------------------------------------------------------------------------------


def _pair(found: _Found, mask_suffix: str | None, mask_dir: Path | str | None) -> Pair:
    image = found.image
    if mask_suffix is not None:
        mask = _existing(_suffix_candidates(image, mask_suffix), image, f"mask suffix '{mask_suffix}'")
    elif mask_dir is not None:
        mask = _existing(_parallel_candidates(found, mask_dir), image, f"mask folder '{mask_dir}'")
    else:
        mask = image if _npz_has_mask(image) else None
    pair = Pair(id=volume_name(image), image=image, mask=mask)
    _check_id(pair.id, str(image), "rename the file, or list it in a --manifest with an id")
    return pair


def _suffix_candidates(image: Path, mask_suffix: str) -> list[Path]:
    """Same folder, name + suffix; the image's own format first, then any other (an .mhd image, .nii.gz mask)."""
    name = volume_name(image)
    own = image.name[len(name) :]
    suffixes = [own, *(suffix for suffix in VOLUME_SUFFIXES if suffix != own.lower())]
    return [image.with_name(f"{name}{mask_suffix}{suffix}") for suffix in suffixes]


def _parallel_candidates(found: _Found, mask_dir: Path | str) -> list[Path]:
    """Same relative path under the mask folder, then the same file name directly in it (LUNA16 is flat)."""
    masks = _resolve_mask_dir(mask_dir, found.root)
    return list(dict.fromkeys([masks / found.image.relative_to(found.root), masks / found.image.name]))


def _resolve_mask_dir(mask_dir: Path | str, root: Path) -> Path:
    """Absolute: as is. Relative: next to the source folder first (LUNA16/subset0 -> LUNA16/<mask_dir>), then cwd."""
    mask_dir = Path(mask_dir)
    bases = [Path("/")] if mask_dir.is_absolute() else [root.parent, Path.cwd()]
    candidates = [(base / mask_dir).absolute() for base in bases]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    raise UsageError(
        f"mask folder '{mask_dir}' not found (looked for {' and '.join(map(str, candidates))}); "
        "give its absolute path or a path relative to the current directory"
    )


def _existing(candidates: list[Path], image: Path, rule: str) -> Path:
    for candidate in candidates:
        if candidate.exists():
            return candidate
    raise UsageError(
        f"no mask for {image}: expected {candidates[0]} ({rule}); add the mask or leave the image out of the sources"
    )


def _npz_has_mask(image: Path) -> bool:
    if volume_suffix(image) != ".npz":
        return False
    try:
        with np.load(image, allow_pickle=False) as arrays:
            return "mask" in arrays.files
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        return False  # the reader reports the damaged file when it converts it


# -- the manifest ----------------------------------------------------------------------------------------


def _pairs_from_manifest(manifest: Path) -> tuple[list[Pair], set[int]]:
    """Pairs from a CSV (header ``image,mask[,id]``) and the indices of those whose id the user gave."""
    if not manifest.is_file():
        raise UsageError(f"manifest {manifest} does not exist; check the path")
    pairs: list[Pair] = []
    given_ids: dict[str, int] = {}
    fixed: set[int] = set()
    with manifest.open(newline="", encoding="utf-8-sig") as file:  # utf-8-sig: Excel starts a CSV with a BOM
        rows = csv.DictReader(file)
        _check_header(manifest, rows.fieldnames)
        for row in rows:
            # a None key holds cells beyond the header (an unquoted comma); the path checks report those rows
            row = {key.strip(): (value or "").strip() for key, value in row.items() if key is not None}
            line = rows.line_num
            pair = _manifest_pair(manifest, line, row)
            _check_id(pair.id, f"{manifest} line {line}", _id_fix(bool(row.get("id"))))
            if row.get("id"):
                if row["id"] in given_ids:
                    raise UsageError(
                        f"{manifest} line {line}: id '{row['id']}' is already used on line {given_ids[row['id']]}; "
                        "ids must be unique"
                    )
                given_ids[row["id"]] = line
                fixed.add(len(pairs))
            pairs.append(pair)
    if not pairs:
        raise UsageError(f"manifest {manifest} lists no images; add one line per image: image,mask")
    return pairs, fixed


def _check_header(manifest: Path, columns: Sequence[str] | None) -> None:
    names = {column.strip() for column in columns or []}
    if not {"image", "mask"} <= names:
        raise UsageError(
            f"manifest {manifest} needs a header line with columns image,mask (and optionally id); "
            f"found: {','.join(columns or []) or 'an empty file'}"
        )


def _manifest_pair(manifest: Path, line: int, row: dict[str, str]) -> Pair:
    image = _manifest_path(manifest, line, row["image"], "image")
    if image is None:
        raise UsageError(f"{manifest} line {line}: the image column is empty; name an image file or folder")
    if not (is_dicom_folder(image) if image.is_dir() else volume_suffix(image)):
        raise UsageError(f"{manifest} line {line}: {image} is not a supported volume. Supported: {SUPPORTED}")
    mask = _manifest_path(manifest, line, row["mask"], "mask")
    return Pair(id=row.get("id") or volume_name(image), image=image, mask=mask)


def _manifest_path(manifest: Path, line: int, text: str, column: str) -> Path | None:
    """An empty cell is None (an image without a mask); relative paths start at the manifest's folder."""
    if not text:
        return None
    path = (manifest.parent / text).absolute()
    if not path.exists():
        raise UsageError(
            f"{manifest} line {line}: {column} {path} does not exist; fix the path in the manifest"
        )
    return path


# -- ids -------------------------------------------------------------------------------------------------

ID_RULE = "an id must not be empty, '.' or '..', and must not contain '/'"


def id_problem(id_: str) -> str | None:
    """Why ``id_`` cannot name a volume's HDF5 group, or None: '/' nests groups, '.' and '..' are path steps."""
    if not id_:
        return "it is empty"
    if "/" in id_:
        return "it contains '/', which would nest groups"
    if id_ in (".", ".."):
        return "it is a path step, not a name"
    return None


def _check_id(id_: str, where: str, fix: str) -> None:
    problem = id_problem(id_)
    if problem:
        raise UsageError(
            f"{where}: id '{id_}' cannot name a volume in the cache ({problem}); {ID_RULE}: {fix}"
        )


def _id_fix(given: bool) -> str:
    if given:
        return "fix it in the id column (e.g. '-' in place of '/')"
    return "this id comes from the file name; give one in the id column"


def _unique_ids(pairs: list[Pair], fixed: set[int]) -> list[Pair]:
    """Clashing ids get their parent folders as prefix (``subset0-1.2.3``), one level more until unique."""
    ids = [pair.id for pair in pairs]
    depth = 0
    while clashing := _clashing(ids, fixed):
        depth += 1
        if depth > max(len(pairs[index].image.parent.parts) for index in clashing):
            _refuse_twins(pairs, clashing)
        for index in clashing:
            ids[index] = _prefixed(pairs[index], depth)
    return [replace(pair, id=id_) for pair, id_ in zip(pairs, ids, strict=True)]


def _clashing(ids: list[str], fixed: set[int]) -> list[int]:
    counts = Counter(ids)
    return [index for index, id_ in enumerate(ids) if counts[id_] > 1 and index not in fixed]


def _prefixed(pair: Pair, depth: int) -> str:
    folders = [part.strip("/") for part in pair.image.parent.parts[-depth:]]
    return "-".join([*(folder for folder in folders if folder), pair.id])


def _refuse_twins(pairs: list[Pair], clashing: list[int]) -> None:
    """Prefixes cannot separate one name in one folder twice (case1.nii.gz and case1.mhd): ask the user."""
    images = ", ".join(str(pairs[index].image) for index in clashing)
    raise UsageError(
        f"these volumes would share an id: {images}; keep one file per volume name in a folder, "
        "or give ids in a --manifest"
    )
