"""Reading one medical volume (or its mask) from disk into one form: a (Z, Y, X) array in LPS orientation.

LPS is the DICOM/ITK patient frame: x increases towards the patient's Left, y towards Posterior, z towards
Superior. nibabel works in RAS, so NIfTI data is flipped in x and y; ITK images are reoriented with
``DICOMOrient``. Orientation codes name the direction each axis points *towards* (DICOM/nibabel convention).
"""

from __future__ import annotations

import struct
import zipfile
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import UsageError

if TYPE_CHECKING:
    import SimpleITK as sitk

VOLUME_SUFFIXES = (".nii.gz", ".nii", ".mhd", ".mha", ".npy", ".npz", ".dcm")
SUPPORTED = "NIfTI (.nii, .nii.gz), MetaImage (.mhd with its .raw, .mha), DICOM (a folder of .dcm files = one series, or one .dcm file), NumPy (.npy, .npz)"

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
    """A folder holding .dcm files directly is one DICOM series."""
    return path.is_dir() and any(
        child.suffix.lower() == ".dcm" and child.is_file() for child in path.iterdir()
    )


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
        if is_dicom_folder(path):
            return _read_dicom_series
        raise VolumeError(
            f"{path} is a folder without .dcm files; a folder is read as one DICOM series. Supported: {SUPPORTED}"
        )
    suffix = volume_suffix(path)
    readers: dict[str | None, Reader] = {
        ".nii.gz": _read_nifti,
        ".nii": _read_nifti,
        ".mhd": _read_itk_file,
        ".mha": _read_itk_file,
        ".dcm": _read_itk_file,
        ".npy": _read_npy,
        ".npz": _read_npz,
    }
    if suffix not in readers:
        hint = " (give the .mhd header, not its .raw data)" if path.suffix.lower() == ".raw" else ""
        raise VolumeError(f"{path}: unsupported file type{hint}. Supported: {SUPPORTED}")
    return readers[suffix]


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


def _read_dicom_series(folder: Path, _npz_key: str) -> tuple[np.ndarray, Spacing, str]:
    import SimpleITK as sitk

    series = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    if not series:
        raise VolumeError(
            f"{folder}: no readable DICOM series in this folder; the .dcm files may be truncated or corrupt"
        )
    if len(series) > 1:
        raise VolumeError(
            f"{folder} holds {len(series)} DICOM series ({', '.join(series)}); give one folder per series - "
            "move each series' files into a folder of its own"
        )
    reader = sitk.ImageSeriesReader()
    # GDCM orders the files by ImagePositionPatient along the slice normal, not by file name
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series[0]))
    return _from_itk(folder, reader.Execute())


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
