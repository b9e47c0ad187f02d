"""Writing a label volume in the geometry of the image it was predicted from, so that it overlays that image.

The core reader (``medkit.cache.readers``) hands every volume over as a (Z, Y, X) array in LPS with the axes
permuted and flipped to the closest of the file's orientation; here that step is undone and the source's own
origin, direction and spacing are copied. NIfTI sources go back through nibabel, as they were read, keeping the
source header's qform and sform; ITK sources (MetaImage, DICOM) through SimpleITK's ``DICOMOrient``, the
reverse of the reader's. A NumPy source has only a spacing: its mask gets that spacing, origin 0 and LPS axes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from medkit.cache.dicom import dicom_files_in, dicom_header, scan_dicom
from medkit.cache.formats import Spacing, volume_suffix


def write_labels_like(labels: np.ndarray, source: Path | None, spacing: Spacing, target: Path) -> None:
    """``labels`` (Z, Y, X) in LPS, as the core reader returned ``source`` -> a NIfTI mask at ``target`` with the
    source's origin, direction, spacing and voxel order. ``source=None`` (a generated phantom): ``spacing``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    labels = np.ascontiguousarray(labels, dtype=np.uint8)
    suffix = None if source is None or source.is_dir() else volume_suffix(source)
    if source is None or suffix in (".npy", ".npz"):
        _write_lps(labels, spacing, target)
    elif suffix in (".nii", ".nii.gz"):
        _write_like_nifti(labels, source, target)
    elif suffix in (".mhd", ".mha"):
        _write_like_itk(labels, _itk_file_geometry(source), target)
    else:  # a DICOM folder, or one DICOM file standing for its series
        _write_like_itk(labels, _dicom_geometry(source), target)


def _write_like_nifti(labels: np.ndarray, source: Path, target: Path) -> None:
    import nibabel as nib
    from nibabel.orientations import apply_orientation, axcodes2ornt, io_orientation, ornt_transform

    image = nib.squeeze_image(nib.load(source))  # as the reader did: (X, Y, Z, 1) counts as 3-D
    # (Z, Y, X) LPS -> (x, y, z) RAS, the reader's canonical form, then back to the file's own axes
    ras = labels.transpose(2, 1, 0)[::-1, ::-1, :]
    stored = apply_orientation(ras, ornt_transform(axcodes2ornt("RAS"), io_orientation(image.affine)))
    header = image.header.copy()
    header.set_data_dtype(np.uint8)
    header.set_slope_inter(1.0, 0.0)
    header["cal_min"] = header["cal_max"] = 0  # the CT's display window would hide the labels in a viewer
    # affine None: the source header's qform and sform are kept as they are, codes included
    nib.save(nib.Nifti1Image(np.ascontiguousarray(stored), None, header), target)


def _write_like_itk(labels: np.ndarray, reference: Any, target: Path) -> None:
    """``reference``: a SimpleITK image or an image file reader that has read the source's information."""
    import SimpleITK as sitk

    code = sitk.DICOMOrientImageFilter_GetOrientationFromDirectionCosines(reference.GetDirection())
    # the reader turned the source's axes to LPS by this code alone; turning LPS back to the code undoes it
    image = sitk.DICOMOrient(sitk.GetImageFromArray(labels), code)
    if image.GetSize() != tuple(reference.GetSize()):
        raise ValueError(
            f"labels of shape {labels.shape} do not fit a source of size {reference.GetSize()} (x, y, z)"
        )
    image.SetOrigin(reference.GetOrigin())
    image.SetSpacing(reference.GetSpacing())
    image.SetDirection(reference.GetDirection())
    sitk.WriteImage(image, str(target), useCompression=True)


def _itk_file_geometry(source: Path) -> Any:
    """Size, origin, spacing and direction of a MetaImage (or of one DICOM file), from its header alone."""
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(source))
    reader.ReadImageInformation()
    return reader


def _dicom_geometry(source: Path) -> Any:
    """The series the core reader read for ``source`` (a folder holding one series, or one file standing for
    the series beside it), stacked in the reader's slice order. ITK places a series from every file's position,
    so it is read whole."""
    import SimpleITK as sitk

    if source.is_dir():
        [slices] = scan_dicom(dicom_files_in(source)).volumes().values()
    else:
        series = dicom_header(source).series
        slices = scan_dicom(dicom_files_in(source.parent)).series[series]
    if len(slices) == 1:  # one slice, or a multi-frame file that is a volume in itself
        return _itk_file_geometry(slices[0].file)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(item.file) for item in slices])
    return reader.Execute()


def _write_lps(labels: np.ndarray, spacing: Spacing, target: Path) -> None:
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(labels)  # identity direction: the array's axes are L, P, S
    image.SetSpacing(tuple(float(s) for s in reversed(spacing)))
    sitk.WriteImage(image, str(target), useCompression=True)
