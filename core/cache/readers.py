"""Reading one medical volume (or its mask) from disk into one form: a (Z, Y, X) array in LPS orientation.

LPS is the DICOM/ITK patient frame: x increases towards the patient's Left, y towards Posterior, z towards
Superior. nibabel works in RAS, so NIfTI data is flipped in x and y; ITK images are reoriented with
``DICOMOrient``. Orientation codes name the direction each axis points *towards* (DICOM/nibabel convention).

DICOM files are recognised by content, whatever their names (PACS and DICOMDIR exports write files without
an extension): a folder holding one series is that series, and one file stands for the whole series it belongs
to, as in 3D Slicer and ITK-SNAP. Slices are ordered along the slice normal, not by file name.
"""

from __future__ import annotations

import struct
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import UsageError

if TYPE_CHECKING:
    import SimpleITK as sitk

VOLUME_SUFFIXES = (".nii.gz", ".nii", ".mhd", ".mha", ".npy", ".npz", ".dcm")
METAIMAGE_DATA = (".raw", ".zraw")  # what a .mhd header points to; never a volume on its own
SUPPORTED = (
    "NIfTI (.nii, .nii.gz), MetaImage (.mhd with its .raw or .zraw, .mha), DICOM (any file names: a folder "
    "holding one series, or one file of a series), NumPy (.npy, .npz)"
)

Spacing = tuple[float, float, float]


@dataclass(frozen=True, eq=False)  # eq=False: comparing ndarrays field by field has no single truth value
class Volume:
    """One image in medkit's common form."""

    array: np.ndarray  # (Z, Y, X), LPS
    spacing: Spacing  # (z, y, x) in mm
    source_orientation: str  # axis codes of the file as stored, e.g. "RAS", "LPS"; "unknown" for NumPy
    source: Path


class VolumeError(UsageError):
    """A volume or mask file cannot be used; the message names the file, the problem and what to do."""


def volume_suffix(path: Path) -> str | None:
    """The supported suffix ``path`` ends with (case-insensitive), or None."""
    name = path.name.lower()
    return next((suffix for suffix in VOLUME_SUFFIXES if name.endswith(suffix)), None)


def volume_name(path: Path) -> str:
    """The volume's name: the file name without its volume suffix; a DICOM folder's own name."""
    suffix = volume_suffix(path) if not path.is_dir() else None
    return path.name[: -len(suffix)] if suffix else path.name


def is_dicom_folder(path: Path) -> bool:
    """A folder holding DICOM files directly (by name or by content) is read as one DICOM series."""
    return path.is_dir() and bool(dicom_files_in(path))


def is_volume_file(path: Path) -> bool:
    """A file medkit reads: one with a volume suffix, or a DICOM file of any name."""
    return volume_suffix(path) is not None or is_dicom_file(path)


def read_volume(path: Path) -> Volume:
    """Read an image; raises VolumeError for anything that would poison training (NaN, constant, not 3-D...)."""
    path = Path(path)
    array, spacing, orientation = _read(path, npz_key="image")
    _check_image(path, array)
    return Volume(array=array, spacing=spacing, source_orientation=orientation, source=path)


def read_mask(path: Path, like: Volume) -> np.ndarray:
    """Read the label mask of ``like`` as uint8 (Z, Y, X) in LPS, the same grid as the image."""
    path = Path(path)
    array, _, _ = _read(path, npz_key="mask")
    if array.shape != like.array.shape:
        raise VolumeError(
            f"{path}: mask shape {array.shape} differs from image shape {like.array.shape} of {like.source} "
            "(both as (Z, Y, X) in LPS); pair each image with the mask drawn on it"
        )
    return _as_labels(path, array)


# -- dispatch and library errors -------------------------------------------------------------------------

Reader = Callable[[Path, str], tuple[np.ndarray, Spacing, str]]


def _library_errors() -> tuple[type[BaseException], ...]:
    """What the readers raise for a damaged file; anything else is a bug and keeps its traceback."""
    from nibabel.filebasedimages import ImageFileError
    from nibabel.spatialimages import HeaderDataError

    return (
        OSError,
        EOFError,
        ValueError,
        RuntimeError,
        zlib.error,
        zipfile.BadZipFile,
        struct.error,
        ImageFileError,
        HeaderDataError,
    )


def _read(path: Path, npz_key: str) -> tuple[np.ndarray, Spacing, str]:
    reader = _reader_for(path)
    try:
        array, spacing, orientation = reader(path, npz_key)
    except VolumeError:
        raise
    except _library_errors() as error:
        raise VolumeError(
            f"{path} cannot be read: {_reason(error)}; the file may be truncated or corrupt - "
            "re-download or re-export it, or leave it out"
        ) from error
    return np.ascontiguousarray(array), spacing, orientation


def _reader_for(path: Path) -> Reader:
    if not path.exists():
        raise VolumeError(f"{path} does not exist; check the path (relative paths start at {Path.cwd()})")
    if path.is_dir():
        return _read_dicom_folder
    suffix = volume_suffix(path)
    readers: dict[str | None, Reader] = {
        ".nii.gz": _read_nifti,
        ".nii": _read_nifti,
        ".mhd": _read_itk_file,
        ".mha": _read_itk_file,
        ".dcm": _read_dicom_file,
        ".npy": _read_npy,
        ".npz": _read_npz,
    }
    if suffix is None and is_dicom_file(path):
        return _read_dicom_file
    if suffix not in readers:
        raise VolumeError(f"{path}: unsupported file type{raw_data_hint(path)}. Supported: {SUPPORTED}")
    return readers[suffix]


def raw_data_hint(path: Path) -> str:
    """Pointing at a MetaImage data file is a common slip; say which file to give instead."""
    if path.suffix.lower() in METAIMAGE_DATA:
        return f" (give the .mhd header, not its {path.suffix.lower()} data)"
    return ""


def _reason(error: BaseException) -> str:
    """One readable line; ITK's messages carry C++ source paths and a stale 'No such file' errno."""
    text = str(error).strip() or type(error).__name__
    lines = [line for line in text.splitlines() if "ITK ERROR" in line]
    if lines:
        text = lines[0].split("): ", 1)[-1]
    return text.splitlines()[0].rstrip(". ")


def _require_3d(path: Path, shape: tuple[int, ...]) -> None:
    if len(shape) != 3:
        raise VolumeError(
            f"{path}: expected a 3-D volume, got {len(shape)}-D shape {tuple(shape)}; "
            "save one 3-D volume per file (a 2-D slice as shape (1, Y, X))"
        )


# -- the formats -----------------------------------------------------------------------------------------


def _read_nifti(path: Path, _npz_key: str) -> tuple[np.ndarray, Spacing, str]:
    import nibabel as nib

    # squeeze: some tools write (X, Y, Z, 1); mmap=False: no open file handle kept by the returned array
    image = nib.squeeze_image(nib.load(path, mmap=False))
    _require_3d(path, image.shape)
    orientation = "".join(code or "?" for code in nib.aff2axcodes(image.affine))
    canonical = nib.as_closest_canonical(image)  # axes now point R, A, S
    # dataobj applies scl_slope/inter only when set, so unscaled data keeps its dtype on disk
    ras = np.asanyarray(canonical.dataobj)
    lps = ras[::-1, ::-1, :]  # R->L and A->P: reverse x and y
    zooms = canonical.header.get_zooms()[:3]
    return lps.transpose(2, 1, 0), _spacing(reversed(zooms)), orientation


def _read_itk_file(path: Path, _npz_key: str) -> tuple[np.ndarray, Spacing, str]:
    import SimpleITK as sitk

    if volume_suffix(path) == ".mhd":
        _require_mhd_data(path)
    return _from_itk(path, sitk.ReadImage(str(path)))


def _read_dicom_folder(folder: Path, _npz_key: str) -> tuple[np.ndarray, Spacing, str]:
    files = dicom_files_in(folder)
    if not files:
        raise VolumeError(
            f"{folder} is a folder without DICOM files; a folder is read as one DICOM series. Supported: {SUPPORTED}"
        )
    scan = scan_dicom(files)
    _refuse_unreadable(folder, scan)
    volumes = scan.volumes()
    if not volumes:
        problems = "; ".join(f"series {uid}: {localizer_problem(scan.series[uid])}" for uid in scan.series)
        raise VolumeError(f"{folder}: no DICOM series in this folder is a volume ({problems or 'no images'})")
    if len(volumes) > 1:
        raise VolumeError(
            f"{folder} holds {len(volumes)} DICOM series ({', '.join(volumes)}); give one file of a series to "
            "read that series, or give one folder per series (move each series' files into a folder of its own)"
        )
    [slices] = volumes.values()
    return _read_series(folder, slices)


def _read_dicom_file(path: Path, _npz_key: str) -> tuple[np.ndarray, Spacing, str]:
    """One file stands for its series: the images beside it that share its SeriesInstanceUID."""
    header = dicom_header(path)
    if header is None:
        raise VolumeError(
            f"{path} is a DICOM file without an image (a DICOMDIR index, a report or a presentation state); "
            "give the image files, or the folder holding them"
        )
    scan = scan_dicom(dicom_files_in(path.parent))
    _refuse_unreadable(path.parent, scan)
    return _read_series(path, scan.series.get(header.series, [header]))  # a hidden file is not in the scan


def _refuse_unreadable(folder: Path, scan: DicomScan) -> None:
    """A damaged file could be any series' missing slice; name it rather than read a series without it."""
    if not scan.unreadable:
        return
    first = scan.unreadable[0]
    what = (
        "no readable DICOM series in this folder" if not scan.series else "a DICOM file here cannot be read"
    )
    raise VolumeError(
        f"{folder}: {what} - {len(scan.unreadable)} file(s) cannot be read as DICOM (e.g. {first.name}); "
        "they may be truncated or corrupt - re-export them, or remove them"
    )


def _read_series(path: Path, slices: list[DicomSlice]) -> tuple[np.ndarray, Spacing, str]:
    import SimpleITK as sitk

    if len(slices) == 1:  # one slice, or one multi-frame file that is a volume in itself
        return _from_itk(path, sitk.ReadImage(str(slices[0].file)))
    problem = stack_problem(slices)
    if problem:
        raise VolumeError(f"{path}: DICOM series {slices[0].series}: {problem}")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(item.file) for item in slices])  # in slice order: ITK stacks them as given
    return _from_itk(path, reader.Execute())


def _from_itk(path: Path, image: sitk.Image) -> tuple[np.ndarray, Spacing, str]:
    import SimpleITK as sitk

    _require_3d(path, image.GetSize()[::-1])
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise VolumeError(
            f"{path}: {image.GetNumberOfComponentsPerPixel()} values per voxel (colour or vector image); "
            "medkit reads scalar volumes - save one channel"
        )
    orientation = sitk.DICOMOrientImageFilter_GetOrientationFromDirectionCosines(image.GetDirection())
    lps = sitk.DICOMOrient(image, "LPS")  # permutes/flips to the identity direction; GetArray is (z, y, x)
    return sitk.GetArrayFromImage(lps), _spacing(reversed(lps.GetSpacing())), orientation


def _require_mhd_data(path: Path) -> None:
    """ITK reports a missing .raw as 'cannot read <the .mhd>'; say which file is really missing."""
    for line in path.read_text(errors="replace").splitlines():
        key, _, value = line.partition("=")
        if key.strip() != "ElementDataFile":
            continue
        value = value.strip()
        # LOCAL: data inside the header file; LIST or a %d pattern: several files, left to ITK to check
        if value.upper() in ("LOCAL", "") or value.upper().startswith("LIST") or "%" in value:
            return
        data = path.parent / value
        if not data.is_file():
            raise VolumeError(
                f"{path}: its data file {data} is missing; keep the .raw next to its .mhd header"
            )
        return


def _read_npy(path: Path, _npz_key: str) -> tuple[np.ndarray, Spacing, str]:
    array = np.load(path, allow_pickle=False)
    _require_3d(path, array.shape)
    return array, (1.0, 1.0, 1.0), "unknown"


def _read_npz(path: Path, npz_key: str) -> tuple[np.ndarray, Spacing, str]:
    with np.load(path, allow_pickle=False) as arrays:
        if npz_key not in arrays.files:
            raise VolumeError(
                f"{path} has no array named '{npz_key}' (it has: {', '.join(arrays.files) or 'none'}); "
                "save it with np.savez(path, image=..., mask=..., spacing=(z, y, x))"
            )
        array = arrays[npz_key]
        spacing = arrays["spacing"] if "spacing" in arrays.files else np.ones(3)
    _require_3d(path, array.shape)
    if spacing.shape != (3,) or not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
        raise VolumeError(
            f"{path}: 'spacing' must be 3 positive numbers (z, y, x) in mm, got {spacing.tolist()}"
        )
    return array, _spacing(spacing), "unknown"


def _spacing(values: Iterable[float]) -> Spacing:
    z, y, x = (float(value) for value in values)
    return (z, y, x)


# -- DICOM by content -------------------------------------------------------------------------------------

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
    except _library_errors():
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
        except _library_errors():
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


# -- content checks --------------------------------------------------------------------------------------


def _check_image(path: Path, array: np.ndarray) -> None:
    if array.size == 0:
        raise VolumeError(f"{path}: the volume has no voxels (shape {array.shape}); re-export it")
    if np.issubdtype(array.dtype, np.floating):
        bad = int(np.count_nonzero(~np.isfinite(array)))
        if bad:
            raise VolumeError(
                f"{path}: {bad} voxels are NaN or infinite; replace them (e.g. with the background value) "
                "and save the volume again"
            )
    low, high = array.min(), array.max()
    if low == high:
        raise VolumeError(
            f"{path}: constant volume (every voxel is {low}); min-max scaling would divide by zero - "
            "check that the file holds the image and not an empty export, or leave it out"
        )


def _as_labels(path: Path, array: np.ndarray) -> np.ndarray:
    """Masks hold class labels 0..255; float masks are accepted when every value is a whole number."""
    if array.dtype == np.bool_:
        return array.astype(np.uint8)
    if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
        raise VolumeError(f"{path}: mask has dtype {array.dtype}; save class labels as integers 0..255")
    if np.issubdtype(array.dtype, np.floating) and not np.all(
        np.isfinite(array) & (array == np.round(array))
    ):
        raise VolumeError(
            f"{path}: mask has non-integer values (a probability map?); save class labels as integers 0..255, "
            "e.g. threshold or argmax it first"
        )
    low, high = array.min(), array.max()
    if low < 0 or high > 255:
        raise VolumeError(
            f"{path}: mask values range from {low} to {high}; class labels must lie in 0..255 - "
            "relabel the classes (medkit stores masks as uint8)"
        )
    return array.astype(np.uint8)
