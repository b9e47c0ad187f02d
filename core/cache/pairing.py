"""Finding the (image, mask) pairs a cache is built from: by the pairing rule the user names, or by the layout
a data folder follows.

Rules: a mask file-name suffix (``case1_seg.nii.gz`` masks ``case1.nii.gz``), a parallel mask folder
(LUNA16: ``subset0/1.2.3.mhd`` -> ``seg-lungs-LUNA16/1.2.3.mhd``), or a CSV manifest. With no rule, each
folder's layout is recognised (``LAYOUTS``, :func:`find_layout`); an ``.npz`` holding a ``mask`` array is its
own mask. DICOM files are found by content, whatever their names: one volume per series.
"""

from __future__ import annotations

import csv
import os
import re
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

import numpy as np

from ..errors import UsageError
from .dicom import is_dicom_file, localizer_problem, scan_dicom
from .formats import SUPPORTED, VOLUME_SUFFIXES, volume_suffix
from .readers import is_dicom_folder, is_volume_file, raw_data_hint, volume_name

LUNA16 = "LUNA16"
LUNA16_MASKS = "seg-lungs-LUNA16"
IMAGES_AND_MASKS = "images + masks"
NNUNET = "nnU-Net"
SEG_SUFFIX = "<name>_seg masks"
VOLUMES = "volumes"
# (layout, image folder, its mask folders): a mask has its image's file name, less nnU-Net's channel suffix
PARALLEL_FOLDERS = ((IMAGES_AND_MASKS, "images", ("masks", "labels")), (NNUNET, "imagesTr", ("labelsTr",)))
CHANNEL = re.compile(r"_\d{4}$")  # nnU-Net names channel c of a case <case>_000c; its label is <case>
LAYOUTS = {  # what each layout looks like on disk, in the order they are tried
    LUNA16: f"subset0/ .. subset9/ holding .mhd scans (with .raw or .zraw data) and {LUNA16_MASKS}/ holding "
    "masks of the same file names - give the root, or one subset folder beside the masks",
    IMAGES_AND_MASKS: "images/ with masks/ or labels/ holding the same file names - give the folder holding "
    "them, or images/",
    NNUNET: "nnU-Net or Medical Segmentation Decathlon: imagesTr/ with labelsTr/; case_0000.nii.gz pairs with "
    "case.nii.gz (further channels _0001... are not read)",
    SEG_SUFFIX: "masks beside their images, named <name>_seg (case1.nii.gz with case1_seg.nii.gz)",
    VOLUMES: "volumes alone: files in the formats above (an .npz holding image and mask arrays carries its "
    "mask), or DICOM series with any file names, one volume per series; without masks they serve cache build "
    "and predict, not training",
}


def layouts_text(names: Sequence[str] = tuple(LAYOUTS)) -> str:
    """The named layouts as an indented list, one per line, for messages."""
    return "\n".join(f"  - {name}: {LAYOUTS[name]}" for name in names)


LeftOut = Callable[[str], None]


def _ignore(_note: str) -> None:
    """Where notes go when nobody asked for them."""


@dataclass(frozen=True)
class Pair:
    """One volume to convert: its id in the cache, its image and its mask (None: no mask)."""

    id: str
    image: Path
    mask: Path | None


@dataclass(frozen=True)
class Layout:
    """What a data folder was recognised as (one of ``LAYOUTS``) and the pairs found in it."""

    name: str
    pairs: list[Pair]


@dataclass(frozen=True)
class _Found:
    """A volume found under ``root`` (the source folder named by the user, or a file's own folder) and its
    name: the file name less its suffix, a DICOM folder's name, or the SeriesInstanceUID of a series that
    shares its folder with others."""

    image: Path
    root: Path
    name: str


def find_pairs(
    sources: Sequence[Path],
    *,
    mask_suffix: str | None = None,
    mask_dir: Path | str | None = None,
    manifest: Path | None = None,
    on_left_out: LeftOut | None = None,
) -> list[Pair]:
    """The pairs to convert, sorted by id; ids are unique. Raises UsageError for anything missing.

    With no rule, each folder's layout is recognised (:func:`find_layout`). ``on_left_out`` hears of each DICOM
    series left out because it is no volume (a localizer).
    """
    given = _given_rules({"mask-suffix": mask_suffix, "mask-dir": mask_dir, "manifest": manifest})
    note = on_left_out or _ignore
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
    elif given:
        found = _find_images(sources, mask_suffix, mask_dir, note)
        pairs, fixed = [_pair(item, mask_suffix, mask_dir) for item in found], set()
    else:
        pairs, fixed = _recognised(sources, note), set()
    return _finished(pairs, fixed)


def _finished(pairs: list[Pair], fixed: set[int]) -> list[Pair]:
    """Sorted by id, ids made unique (but for the ``fixed`` ones, given in a manifest)."""
    return sorted(_unique_ids(pairs, fixed), key=lambda pair: pair.id)


def _given_rules(rules: dict[str, object]) -> list[str]:
    """The options given, as the user typed them; an empty value is a mistake, not an absent rule."""
    for name, value in rules.items():
        if value is not None and not str(value).strip():
            raise UsageError(f"--{name} is empty; give a value or leave the option out")
    return [f"--{name}" for name, value in rules.items() if value is not None]


# -- layouts ---------------------------------------------------------------------------------------------


def find_layout(folder: Path, *, on_left_out: LeftOut | None = None) -> Layout:
    """The first of ``LAYOUTS`` that ``folder`` follows, with its pairs sorted by id (ids unique).

    Raises UsageError naming the folder and listing the layouts when no volume is found in it.
    """
    layout = _layout(Path(folder), on_left_out or _ignore)
    return replace(layout, pairs=_finished(layout.pairs, set()))


def _layout(folder: Path, note: LeftOut) -> Layout:
    if not folder.exists():
        raise UsageError(f"{folder} does not exist; check the path")
    if not folder.is_dir():
        raise UsageError(f"{folder} is not a folder; give the folder holding the data set")
    masks = luna16_masks(folder)
    if masks is not None:
        found = _find_images([folder], None, masks, note)
        return Layout(LUNA16, [_pair(item, None, masks) for item in found])
    parallel = _parallel_layout(folder, note)
    if parallel is not None:
        return parallel
    found = [_Found(image, folder.absolute(), name) for image, name in _walk(folder.absolute(), note)]
    if not found:
        raise UsageError(_no_layout_message(folder))
    if _has_seg_masks(found):
        images = [item for item in found if not _is_mask(item, "_seg", None)]
        return Layout(SEG_SUFFIX, [_pair(item, "_seg", None) for item in images])
    return Layout(VOLUMES, [_pair(item, None, None) for item in found])


def _no_layout_message(folder: Path) -> str:
    return (
        f"no volumes found in {folder} (formats: {SUPPORTED}); a data folder follows one of these layouts:\n"
        + layouts_text()
    )


def luna16_masks(folder: Path) -> Path | None:
    """LUNA16's mask folder inside ``folder`` (the root) or beside it (``folder`` is one subset), or None."""
    for masks in (folder / LUNA16_MASKS, folder.parent / LUNA16_MASKS):
        if masks.is_dir() and masks.resolve() != Path(folder).resolve():
            return masks.absolute()
    return None


def _parallel_layout(folder: Path, note: LeftOut) -> Layout | None:
    """images/ beside masks/ (or labels/, or nnU-Net's imagesTr/ beside labelsTr/), given either folder above."""
    for name, images_name, mask_names in PARALLEL_FOLDERS:
        base = (folder.parent if folder.name == images_name else folder).absolute()
        masks = next((base / mask for mask in mask_names if (base / mask).is_dir()), None)
        if masks is None or not (base / images_name).is_dir():
            continue
        found = _find_images([base / images_name], None, masks, note)
        return Layout(name, [_pair(_channel_zero(item), None, masks) for item in found])
    return None


def _another_channel(item: _Found, masks: Path | str) -> bool:
    """nnU-Net's case_0001 (channel 1): no mask of its own, and channel 0 of its case is there to be read."""
    if not CHANNEL.search(item.name) or item.name.endswith("_0000"):
        return False
    channel_zero = item.image.with_name(item.image.name.replace(item.name, f"{item.name[:-5]}_0000", 1))
    return channel_zero.exists() and not any(
        candidate.exists() for candidate in _parallel_candidates(item, masks)[:2]
    )


def _channel_zero(item: _Found) -> _Found:
    """nnU-Net's case_0000 is the case itself: its id drops the channel suffix, as its label's name does."""
    return replace(item, name=item.name[:-5]) if item.name.endswith("_0000") else item


def _has_seg_masks(found: list[_Found]) -> bool:
    names = {item.name for item in found}
    return any(name.endswith("_seg") and name[: -len("_seg")] in names for name in names)


def _recognised(sources: Sequence[Path], note: LeftOut) -> list[Pair]:
    """Each folder by its layout, each file as itself; a volume found twice (overlapping sources) counts once."""
    _require_sources(sources)
    pairs: list[Pair] = []
    for source in map(Path, sources):
        if source.is_dir():
            pairs.extend(_layout(source, note).pairs)
        else:
            pairs.extend(_pair(item, None, None) for item in _find_images([source], None, None, note))
    return _without_repeats(pairs)


def _require_sources(sources: Sequence[Path]) -> None:
    if not sources:
        raise UsageError(f"no sources given; name files or folders holding volumes. Supported: {SUPPORTED}")


# -- searching the sources -------------------------------------------------------------------------------


def _find_images(
    sources: Sequence[Path], mask_suffix: str | None, mask_dir: Path | str | None, note: LeftOut
) -> list[_Found]:
    _require_sources(sources)
    found: list[_Found] = []
    for source in map(Path, sources):
        root = source.absolute() if source.is_dir() else source.absolute().parent
        volumes = [_Found(image, root, name) for image, name in _volumes_in(source, note)]
        images = [item for item in volumes if not _is_mask(item, mask_suffix, mask_dir)]
        if mask_dir is not None:
            images = [item for item in images if not _another_channel(item, mask_dir)]
        if not images:
            raise UsageError(
                f"no volumes found in {source}{_masks_only_note(mask_suffix, mask_dir)}; "
                f"check the path. Supported: {SUPPORTED}"
            )
        found.extend(images)
    return _without_repeats(found)


def _volumes_in(source: Path, note: LeftOut) -> list[tuple[Path, str]]:
    if not source.exists():
        raise UsageError(f"source {source} does not exist; check the path")
    if source.is_file():
        if not is_volume_file(source):
            raise UsageError(
                f"{source}: unsupported file type{raw_data_hint(source)}. Supported: {SUPPORTED}"
            )
        return [(source.absolute(), volume_name(source))]
    return sorted(_walk(source.absolute(), note))


def _walk(folder: Path, note: LeftOut) -> Iterator[tuple[Path, str]]:
    """Volumes below ``folder`` and their names: volume files, and the DICOM series in each folder."""
    for current, folders, files in os.walk(folder):
        folders[:] = sorted(name for name in folders if not name.startswith("."))
        here = Path(current)
        visible = sorted(name for name in files if not name.startswith("."))  # ._x.nii.gz: macOS metadata
        for name in visible:
            if volume_suffix(Path(name)) not in (None, ".dcm"):
                yield here / name, volume_name(here / name)
        yield from _dicom_volumes(here, [here / name for name in visible if is_dicom_file(here / name)], note)


def _dicom_volumes(folder: Path, files: list[Path], note: LeftOut) -> Iterator[tuple[Path, str]]:
    """One volume per DICOM series in ``folder``: the folder itself when it holds one (or only damaged files,
    which the reader then names), else the first file of each series, which stands for its series."""
    if not files:
        return
    scan = scan_dicom(files)
    for uid, slices in scan.series.items():
        problem = localizer_problem(slices)
        if problem:
            note(f"{folder}: DICOM series {uid} left out: {problem}")
    volumes = scan.volumes()
    if len(volumes) > 1:
        yield from ((slices[0].file, uid) for uid, slices in volumes.items())
    elif volumes or (scan.unreadable and not scan.series):
        yield folder, folder.name


_Located = TypeVar("_Located", Pair, _Found)


def _without_repeats(found: list[_Located]) -> list[_Located]:
    """Overlapping sources (``data`` and ``data/subset0``) find a file twice; keep its first finding."""
    seen: set[Path] = set()
    unique = []
    for item in found:
        key = item.image.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(item)
    return unique


def _is_mask(item: _Found, mask_suffix: str | None, mask_dir: Path | str | None) -> bool:
    if mask_suffix is not None:
        return item.name.endswith(mask_suffix)
    if mask_dir is not None:
        # a source holding the mask folder itself (LUNA16/ with seg-lungs-LUNA16/ inside) must not read masks as images
        return item.image.resolve().is_relative_to(_resolve_mask_dir(mask_dir, item.root).resolve())
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
        mask = _existing(_suffix_candidates(found, mask_suffix), image, f"mask suffix '{mask_suffix}'")
    elif mask_dir is not None:
        mask = _existing(_parallel_candidates(found, mask_dir), image, f"mask folder '{mask_dir}'")
    else:
        mask = image if _npz_has_mask(image) else None
    pair = Pair(id=found.name, image=image, mask=mask)
    _check_id(pair.id, str(image), "rename the file, or list it in a --manifest with an id")
    return pair


def _suffix_candidates(found: _Found, mask_suffix: str) -> list[Path]:
    """Same folder, name + suffix; the image's own format first, then any other (an .mhd image, .nii.gz mask)."""
    image = found.image
    own = image.name[len(volume_name(image)) :] if volume_suffix(image) else ""
    suffixes = [own, *(suffix for suffix in VOLUME_SUFFIXES if suffix != own.lower())]
    return [image.with_name(f"{found.name}{mask_suffix}{suffix}") for suffix in suffixes]


def _parallel_candidates(found: _Found, mask_dir: Path | str) -> list[Path]:
    """Same relative path under the mask folder, then the same file name directly in it (LUNA16 is flat); then
    both without nnU-Net's channel suffix (imagesTr/case_0000.nii.gz -> labelsTr/case.nii.gz)."""
    masks = _resolve_mask_dir(mask_dir, found.root)
    relative = found.image.relative_to(found.root)
    candidates = [masks / relative, masks / found.image.name]
    name = volume_name(found.image)
    if name.endswith("_0000"):
        file_name = found.image.name.replace(name, name[:-5], 1)
        candidates += [masks / relative.with_name(file_name), masks / file_name]
    return list(dict.fromkeys(candidates))


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
    if not (is_dicom_folder(image) if image.is_dir() else is_volume_file(image)):
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
