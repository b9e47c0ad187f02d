"""DICOM found by content, whatever the file names (PACS and DICOMDIR exports write files without an extension):
files grouped by SeriesInstanceUID, each series put in slice order along its normal, localizers and series with
missing slices told apart from volumes. Headers are read with pydicom, without the pixel data."""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .formats import METAIMAGE_DATA, library_errors, volume_suffix

# what places a slice in its series; read without the pixel data
_PLACING_TAGS = (
    "SeriesInstanceUID",
    "Rows",
    "Columns",
    "ImageOrientationPatient",
    "ImagePositionPatient",
    "InstanceNumber",
)


@dataclass(frozen=True)
class DicomSlice:
    """One DICOM image file and the header values that place it in its series."""

    file: Path
    series: str  # SeriesInstanceUID
    orientation: tuple[float, ...] | None  # ImageOrientationPatient: row then column direction cosines
    position: tuple[float, ...] | None  # ImagePositionPatient of the first voxel, mm
    instance: int  # InstanceNumber: the order when positions are missing


@dataclass
class DicomScan:
    """DICOM files sorted out: image series (each in slice order) and files that could not be parsed."""

    series: dict[str, list[DicomSlice]]
    unreadable: list[Path]

    def volumes(self) -> dict[str, list[DicomSlice]]:
        """The series that stack into a volume; a localizer's slices lie in several planes."""
        return {uid: slices for uid, slices in self.series.items() if localizer_problem(slices) is None}


def is_dicom_file(path: Path) -> bool:
    """A .dcm name, the Part 10 'DICM' marker after the 128-byte preamble, or a bare data set (no preamble,
    as older exports write) that pydicom parses into an image."""
    name = path.name.lower()
    if name.endswith(".dcm"):
        return True
    if name.startswith(".") or volume_suffix(path) or path.suffix.lower() in METAIMAGE_DATA:
        return False
    try:
        with path.open("rb") as file:
            head = file.read(132)
    except OSError:
        return False
    if head[128:132] == b"DICM":
        return True
    # a bare data set starts with an element of group 0002 or 0008 (little endian)
    return head[:2] in (b"\x02\x00", b"\x08\x00") and _parses_as_image(path)


def _parses_as_image(path: Path) -> bool:
    try:
        return dicom_header(path) is not None
    except library_errors():
        return False


def dicom_files_in(folder: Path) -> list[Path]:
    """The DICOM files directly in ``folder`` (not below it), by name or by content; hidden files skipped."""
    return sorted(child for child in folder.iterdir() if child.is_file() and is_dicom_file(child))


def dicom_header(path: Path) -> DicomSlice | None:
    """The placing values of a DICOM image file; None for a DICOM file without an image (a DICOMDIR index,
    a report). Raises ``DicomUnreadable`` when nothing DICOM can be parsed from it."""
    import pydicom

    # files are probed by content: pydicom's complaints about files that are not DICOM are noise
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dataset = pydicom.dcmread(
            path, stop_before_pixels=True, force=True, specific_tags=list(_PLACING_TAGS)
        )
    if "SeriesInstanceUID" not in dataset and not getattr(dataset, "file_meta", None):
        # force=True parses anything; nothing of a data set came out, so this is not DICOM (or is damaged)
        raise DicomUnreadable("no DICOM data set could be parsed from it")
    if not all(keyword in dataset for keyword in ("SeriesInstanceUID", "Rows", "Columns")):
        return None
    instance = _numbers(dataset, "InstanceNumber", 1)
    return DicomSlice(
        file=path,
        series=str(dataset.SeriesInstanceUID),
        orientation=_numbers(dataset, "ImageOrientationPatient", 6),
        position=_numbers(dataset, "ImagePositionPatient", 3),
        instance=int(instance[0]) if instance else 0,
    )


class DicomUnreadable(ValueError):
    """A file named or marked as DICOM from which no data set can be parsed."""


def _numbers(dataset: Any, keyword: str, count: int) -> tuple[float, ...] | None:
    """A numeric header value as floats, or None when absent or malformed (some exports write junk)."""
    try:
        value = dataset.get(keyword)
        items = [value] if isinstance(value, int | float | str) else list(value or [])
        numbers = tuple(float(item) for item in items)
    except (TypeError, ValueError):
        return None
    return numbers if len(numbers) == count and bool(np.all(np.isfinite(numbers))) else None


def scan_dicom(files: Iterable[Path]) -> DicomScan:
    """DICOM image files grouped by SeriesInstanceUID, each series sorted along its slice normal."""
    series: dict[str, list[DicomSlice]] = {}
    unreadable = []
    for file in files:
        try:
            header = dicom_header(file)
        except library_errors():
            unreadable.append(file)
            continue
        if header is not None:
            series.setdefault(header.series, []).append(header)
    return DicomScan({uid: _in_slice_order(series[uid]) for uid in sorted(series)}, unreadable)


def _in_slice_order(slices: list[DicomSlice]) -> list[DicomSlice]:
    """Ascending along the normal (row x column cosines), as GDCM sorts; InstanceNumber where positions lack."""
    normal = _normal(slices[0])
    if normal is None or any(item.position is None for item in slices):
        return sorted(slices, key=lambda item: (item.instance, item.file.name))
    return sorted(slices, key=lambda item: (float(np.dot(item.position, normal)), item.file.name))


def _normal(item: DicomSlice) -> np.ndarray | None:
    if item.orientation is None:
        return None
    return np.cross(item.orientation[:3], item.orientation[3:])


def localizer_problem(slices: list[DicomSlice]) -> str | None:
    """Why a series is no volume at all: slices in several planes make a localizer (scout), or None."""
    planes: list[tuple[float, ...]] = []
    for item in slices:
        if item.orientation and not any(np.allclose(item.orientation, plane, atol=1e-3) for plane in planes):
            planes.append(item.orientation)
    if len(planes) > 1:
        return (
            f"its {len(slices)} slices lie in {len(planes)} orientations - a localizer (scout), not a volume"
        )
    return None


def stack_problem(slices: list[DicomSlice]) -> str | None:
    """Why the sorted slices of one series do not stack into an evenly spaced volume, or None."""
    problem = localizer_problem(slices)
    normal = _normal(slices[0])
    if problem or normal is None or any(item.position is None for item in slices):
        return problem
    gaps = np.diff([float(np.dot(item.position, normal)) for item in slices])
    if gaps.min() < 1e-3:
        return (
            "two slices lie at one position - the series holds several acquisitions (phases, echoes); "
            "export them as separate series"
        )
    step = float(np.median(gaps))
    if np.abs(gaps - step).max() > 0.1 * step:  # 10%: rounding in the headers, never a whole missing slice
        return (
            f"its slices are unevenly spaced ({gaps.min():.3g} to {gaps.max():.3g} mm apart) - slices are missing "
            "or two scans share the series; export the complete series, or leave it out"
        )
    return None
