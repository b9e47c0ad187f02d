"""What medkit reads as a volume: the file suffixes, the spacing type, and the errors a damaged file raises."""

from __future__ import annotations

import struct
import zipfile
import zlib
from pathlib import Path

VOLUME_SUFFIXES = (".nii.gz", ".nii", ".mhd", ".mha", ".npy", ".npz", ".dcm")
METAIMAGE_DATA = (".raw", ".zraw")  # what a .mhd header points to; never a volume on its own
SUPPORTED = (
    "NIfTI (.nii, .nii.gz), MetaImage (.mhd with its .raw or .zraw, .mha), DICOM (any file names: a folder "
    "holding one series, or one file of a series), NumPy (.npy, .npz)"
)

Spacing = tuple[float, float, float]


def volume_suffix(path: Path) -> str | None:
    """The supported suffix ``path`` ends with (case-insensitive), or None."""
    name = path.name.lower()
    return next((suffix for suffix in VOLUME_SUFFIXES if name.endswith(suffix)), None)


def library_errors() -> tuple[type[BaseException], ...]:
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
