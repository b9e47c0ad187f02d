"""Small data folders laid out the way real data sets ship: LUNA16, images/ + masks/, nnU-Net, PACS DICOM exports.

Every file is written by the tool that writes the real thing (SimpleITK for LUNA16's compressed MetaImage,
pydicom for DICOM, nibabel for NIfTI), so a reader that passes here reads the real layouts too.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom.data
import SimpleITK as sitk
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)  # rows along +x (L), columns along +y (P): the array is already LPS


def luna16_tree(root: Path, cases: dict[str, tuple[np.ndarray, np.ndarray]], subset_size: int = 2) -> Path:
    """``subsetN/<uid>.mhd`` + ``.zraw`` and ``seg-lungs-LUNA16/<uid>.mhd`` + ``.zraw``, as LUNA16 ships."""
    for index, (uid, (image, mask)) in enumerate(cases.items()):
        subset = root / f"subset{index // subset_size}"
        subset.mkdir(parents=True, exist_ok=True)
        (root / "seg-lungs-LUNA16").mkdir(parents=True, exist_ok=True)
        ct = sitk.GetImageFromArray(image)
        ct.SetSpacing((0.7, 0.7, 2.5))
        labels = sitk.GetImageFromArray(mask)
        labels.CopyInformation(ct)
        # useCompression: the .zraw data file and 'CompressedData = True' in the header
        sitk.WriteImage(ct, str(subset / f"{uid}.mhd"), useCompression=True)
        sitk.WriteImage(labels, str(root / "seg-lungs-LUNA16" / f"{uid}.mhd"), useCompression=True)
    return root


def nifti_lps(path: Path, lps: np.ndarray) -> Path:
    """An LPS (Z, Y, X) array as a RAS NIfTI with 0.7 x 0.7 x 2.5 mm voxels."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ras = np.ascontiguousarray(lps[:, ::-1, ::-1].transpose(2, 1, 0))
    nib.save(nib.Nifti1Image(ras, np.diag([0.7, 0.7, 2.5, 1.0])), path)
    return path


def dicom_series(
    folder: Path,
    volume: np.ndarray,
    series_uid: str,
    *,
    names: Sequence[str] | None = None,
    spacing: tuple[float, float, float] = (2.5, 0.8, 0.7),
    orientations: Sequence[Sequence[float]] | None = None,
    part10: bool = True,
) -> Path:
    """One CT slice per file, as a PACS export writes them: no extension, names unrelated to the slice order.

    ``part10=False`` writes a bare data set without the 128-byte preamble and 'DICM' marker (older exports);
    ``orientations`` gives each slice its own ImageOrientationPatient (a localizer's planes).
    """
    folder.mkdir(parents=True, exist_ok=True)
    depth = len(volume)
    names = names or [f"IM{(7 * k + 3) % depth:04d}" for k in range(depth)]  # a shuffle of 0..depth-1
    for k, plane in enumerate(volume):
        dataset = _ct_slice(plane, series_uid, k, spacing, (orientations or [IDENTITY] * depth)[k])
        path = folder / names[k]
        if part10:
            dataset.file_meta = FileMetaDataset()
            dataset.file_meta.MediaStorageSOPClassUID = CTImageStorage
            dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
            dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
            dataset.preamble = b"\0" * 128
            pydicom.dcmwrite(path, dataset, enforce_file_format=True)
        else:
            pydicom.dcmwrite(path, dataset, implicit_vr=True, little_endian=True)
    return folder


def _ct_slice(
    plane: np.ndarray,
    series_uid: str,
    k: int,
    spacing: tuple[float, float, float],
    orientation: Sequence[float],
) -> Dataset:
    dataset = Dataset()
    dataset.SOPClassUID = CTImageStorage
    dataset.SOPInstanceUID = generate_uid()
    dataset.Modality = "CT"
    dataset.StudyInstanceUID = "1.2.826.0.1.3680043.2.1125.9.1"
    dataset.SeriesInstanceUID = series_uid
    dataset.InstanceNumber = k + 1
    dataset.ImagePositionPatient = [-20.0, -30.0, 100.0 + spacing[0] * k]
    dataset.ImageOrientationPatient = list(orientation)
    dataset.PixelSpacing = [spacing[1], spacing[2]]  # row spacing (y), column spacing (x)
    dataset.SliceThickness = 3.0  # thicker than the step: spacing must come from the positions
    dataset.Rows, dataset.Columns = plane.shape
    dataset.SamplesPerPixel = 1
    dataset.PhotometricInterpretation = "MONOCHROME2"
    dataset.BitsAllocated = dataset.BitsStored = 16
    dataset.HighBit = 15
    dataset.PixelRepresentation = 1
    dataset.RescaleIntercept, dataset.RescaleSlope = 0, 1
    dataset.PixelData = plane.astype("<i2").tobytes()
    return dataset


def shipped_dicomdir_export(destination: Path) -> Path:
    """pydicom's own DICOMDIR test tree (installed with pydicom, nothing downloaded), copied to ``destination``.

    It holds, in extension-less files: single CR images, a 5-slice CT (CT5N), a CT whose 4 slices leave a
    200 mm gap (CT2), localizers whose slices lie in several planes (CT2N, two series of MR2, MR700),
    three one-slice MR series in one folder (MR1), image-less instances (TINY_ALPHA) and DICOMDIR indexes.
    """
    shipped = Path(pydicom.data.get_testdata_file("DICOMDIR", download=False)).parent
    return Path(shutil.copytree(shipped, destination))
