"""Reading one medical volume (or its mask) from disk into one form: a (Z, Y, X) array in LPS orientation.

LPS is the DICOM/ITK patient frame: x increases towards the patient's Left, y towards Posterior, z towards
Superior. nibabel works in RAS, so NIfTI data is flipped in x and y; ITK images are reoriented with
``DICOMOrient``. Orientation codes name the direction each axis points *towards* (DICOM/nibabel convention).

DICOM files are recognised by content, whatever their names (PACS and DICOMDIR exports write files without
an extension): a folder holding one series is that series, and one file stands for the whole series it belongs
to, as in 3D Slicer and ITK-SNAP. Slices are ordered along the slice normal, not by file name.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import UsageError
from .dicom import (
    DicomScan,
    DicomSlice,
    dicom_files_in,
    dicom_header,
    is_dicom_file,
    localizer_problem,
    scan_dicom,
    stack_problem,
)
from .formats import METAIMAGE_DATA, SUPPORTED, Spacing, library_errors, volume_suffix

if TYPE_CHECKING:
    import SimpleITK as sitk


@dataclass(frozen=True, eq=False)  # eq=False: comparing ndarrays field by field has no single truth value
class Volume:
    """One image in medkit's common form."""

    array: np.ndarray  # (Z, Y, X), LPS
    spacing: Spacing  # (z, y, x) in mm
    source_orientation: str  # axis codes of the file as stored, e.g. "RAS", "LPS"; "unknown" for NumPy
    source: Path


class VolumeError(UsageError):
    """A volume or mask file cannot be used; the message names the file, the problem and what to do."""


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


def _read(path: Path, npz_key: str) -> tuple[np.ndarray, Spacing, str]:
    reader = _reader_for(path)
    try:
        array, spacing, orientation = reader(path, npz_key)
    except VolumeError:
        raise
    except library_errors() as error:
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
