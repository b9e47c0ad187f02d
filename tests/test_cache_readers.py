"""Volumes read from every supported format come out as the same (Z, Y, X) LPS array; pairs are found by rule.

Each test writes its own small files under tmp_path. The reference is one LPS array ``LPS`` with all voxel values
distinct and unequal axis lengths and spacings, so a flipped, swapped or transposed axis cannot go unnoticed.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom.data
import pytest
import SimpleITK as sitk
import volume_layouts

from medkit.cache.pairing import Pair, find_pairs
from medkit.cache.readers import Volume, VolumeError, read_mask, read_volume
from medkit.errors import UsageError
from medkit.testing import process_locale_kept

Z, Y, X = 6, 10, 12
SPACING_ZYX = (2.5, 0.8, 0.7)
LPS = (np.arange(Z * Y * X, dtype=np.int16) - 300).reshape(Z, Y, X)  # index = (z, y, x) in LPS
MASK = (LPS % 3).astype(np.uint8)


# -- writers: the same LPS array stored the way each tool stores it --------------------------------------


def nifti(path: Path, lps: np.ndarray, layout: str = "RAS") -> Path:
    """Store ``lps`` in a NIfTI whose voxel axes point along ``layout`` (RAS world, nibabel's convention)."""
    xyz = lps.transpose(2, 1, 0)  # (x, y, z), x towards L, y towards P
    sz, sy, sx = SPACING_ZYX
    if layout == "RAS":  # reversing x and y makes them point R and A
        data, affine = xyz[::-1, ::-1, :], np.diag([sx, sy, sz, 1.0])
    elif layout == "LAS":  # radiological: x already points L, only y reversed
        data, affine = xyz[:, ::-1, :], np.diag([-sx, sy, sz, 1.0])
    elif layout == "ARS":  # first stored axis is anterior, second right: axes swapped as well
        data = xyz[::-1, ::-1, :].transpose(1, 0, 2)
        affine = np.array([[0, sx, 0, 0], [sy, 0, 0, 0], [0, 0, sz, 0], [0, 0, 0, 1.0]])
    else:
        raise ValueError(layout)
    nib.save(nib.Nifti1Image(np.ascontiguousarray(data), affine), path)
    return path


def itk_image(lps: np.ndarray, flip_xy: bool = True) -> sitk.Image:
    """An ITK image of ``lps``; flip_xy stores it with x and y reversed and a direction that says so."""
    image = sitk.GetImageFromArray(lps[:, ::-1, ::-1] if flip_xy else lps)
    image.SetSpacing(SPACING_ZYX[::-1])
    image.SetOrigin((12.0, -3.0, 40.0))
    if flip_xy:
        image.SetDirection((-1, 0, 0, 0, -1, 0, 0, 0, 1))
    return image


def metaimage(path: Path, lps: np.ndarray, flip_xy: bool = True) -> Path:
    sitk.WriteImage(itk_image(lps, flip_xy), str(path))
    return path


def dicom_series(folder: Path, lps: np.ndarray, series_uid: str = "1.2.826.0.1.3680043.2.1125.7.2") -> Path:
    """One CT slice per file, named in an order unrelated to z, positions in ImagePositionPatient."""
    folder.mkdir(parents=True, exist_ok=True)
    volume = sitk.GetImageFromArray(lps)
    volume.SetSpacing(SPACING_ZYX[::-1])
    volume.SetOrigin((-20.0, -30.0, 100.0))
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    file_order = [3, 0, 5, 1, 4, 2]
    for k in range(lps.shape[0]):
        plane = volume[:, :, k]
        position = volume.TransformIndexToPhysicalPoint((0, 0, k))
        tags = {
            "0008|0060": "CT",
            "0008|0016": "1.2.840.10008.5.1.4.1.1.2",  # CT Image Storage
            "0008|0018": f"{series_uid}.{k + 1}",
            "0020|000d": "1.2.826.0.1.3680043.2.1125.7.1",
            "0020|000e": series_uid,
            "0020|0037": "1\\0\\0\\0\\1\\0",
            "0020|0032": "\\".join(f"{value:g}" for value in position),
            "0020|0013": str(k + 1),
            "0028|0030": f"{SPACING_ZYX[1]:g}\\{SPACING_ZYX[2]:g}",  # row spacing (y), column spacing (x)
            "0018|0050": "3.0",  # thicker than the 2.5 mm step: spacing must come from the positions
        }
        for tag, value in tags.items():
            plane.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"IM{file_order[k]:04d}.dcm"))
        with process_locale_kept():
            writer.Execute(plane)
    return folder


def assert_reference(volume: Volume, orientation: str) -> None:
    np.testing.assert_array_equal(volume.array, LPS)
    assert volume.spacing == pytest.approx(SPACING_ZYX)
    assert volume.source_orientation == orientation


# -- round trips -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["RAS", "LAS", "ARS"])
@pytest.mark.parametrize("name", ["ct.nii.gz", "ct.nii"])
def test_nifti_in_any_orientation_reads_as_the_lps_array(tmp_path: Path, layout: str, name: str) -> None:
    volume = read_volume(nifti(tmp_path / name, LPS, layout))
    assert_reference(volume, layout)
    assert volume.array.dtype == np.int16  # unscaled data keeps its dtype on disk
    assert volume.array.flags.c_contiguous
    assert volume.source == tmp_path / name


def test_nifti_scaling_is_applied_only_when_set(tmp_path: Path) -> None:
    image = nib.Nifti1Image(np.ascontiguousarray(LPS.transpose(2, 1, 0)[::-1, ::-1]), np.eye(4))
    image.header.set_slope_inter(2.0, -1024.0)
    nib.save(image, tmp_path / "scaled.nii.gz")
    np.testing.assert_array_equal(read_volume(tmp_path / "scaled.nii.gz").array, LPS * 2.0 - 1024.0)


def test_nifti_with_a_trailing_length_one_axis_is_3d(tmp_path: Path) -> None:
    data = np.ascontiguousarray(LPS.transpose(2, 1, 0)[::-1, ::-1])[..., None]
    nib.save(nib.Nifti1Image(data, np.diag([0.7, 0.8, 2.5, 1.0])), tmp_path / "t.nii.gz")
    np.testing.assert_array_equal(read_volume(tmp_path / "t.nii.gz").array, LPS)


@pytest.mark.parametrize("name", ["ct.mhd", "ct.mha"])
@pytest.mark.parametrize(("flip_xy", "orientation"), [(True, "RAS"), (False, "LPS")])
def test_metaimage_reads_as_the_lps_array(tmp_path: Path, name: str, flip_xy: bool, orientation: str) -> None:
    assert_reference(read_volume(metaimage(tmp_path / name, LPS, flip_xy)), orientation)


def test_nifti_and_metaimage_of_one_image_agree_voxel_for_voxel(tmp_path: Path) -> None:
    """Three independent encodings of one physical image: ITK's, ITK's NIfTI writer, and an affine built here."""
    image = itk_image(LPS, flip_xy=True)
    sitk.WriteImage(image, str(tmp_path / "itk.mha"))
    sitk.WriteImage(image, str(tmp_path / "itk.nii.gz"))
    # ITK geometry is LPS: affine = [direction * spacing | origin]; nibabel's world is RAS: negate x and y rows
    lps_affine = np.eye(4)
    lps_affine[:3, :3] = np.reshape(image.GetDirection(), (3, 3)) * np.array(image.GetSpacing())
    lps_affine[:3, 3] = image.GetOrigin()
    ras_affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps_affine
    stored = sitk.GetArrayFromImage(image).transpose(2, 1, 0)  # ITK's voxel axes, as (i, j, k)
    nib.save(nib.Nifti1Image(np.ascontiguousarray(stored), ras_affine), tmp_path / "nibabel.nii")
    volumes = [read_volume(tmp_path / name) for name in ("itk.mha", "itk.nii.gz", "nibabel.nii")]
    for volume in volumes:
        assert_reference(volume, "RAS")


def test_dicom_series_is_ordered_by_position_with_spacing_from_the_positions(tmp_path: Path) -> None:
    volume = read_volume(dicom_series(tmp_path / "series", LPS))
    assert_reference(volume, "LPS")
    assert volume.source == tmp_path / "series"


def test_a_single_shipped_dicom_file_is_a_one_slice_volume(tmp_path: Path) -> None:
    shipped = Path(pydicom.data.get_testdata_file("CT_small.dcm", download=False))
    path = Path(shutil.copy(shipped, tmp_path / "CT_small.dcm"))
    volume = read_volume(path)
    assert volume.array.shape == (1, 128, 128)
    assert volume.spacing == pytest.approx((5.0, 0.661468, 0.661468))  # SliceThickness, PixelSpacing
    dataset = pydicom.dcmread(path)  # orientation 1\0\0\0\1\0: already LPS, so no flip
    hounsfield = dataset.pixel_array * float(dataset.RescaleSlope) + float(dataset.RescaleIntercept)
    np.testing.assert_array_equal(volume.array[0], hounsfield)


def test_npy_is_taken_as_zyx_with_unit_spacing(tmp_path: Path) -> None:
    np.save(tmp_path / "ct.npy", LPS)
    volume = read_volume(tmp_path / "ct.npy")
    np.testing.assert_array_equal(volume.array, LPS)
    assert (volume.spacing, volume.source_orientation) == ((1.0, 1.0, 1.0), "unknown")


def test_npz_holds_image_spacing_and_mask(tmp_path: Path) -> None:
    np.savez_compressed(tmp_path / "ct.npz", image=LPS, mask=MASK, spacing=np.array(SPACING_ZYX))
    volume = read_volume(tmp_path / "ct.npz")
    assert_reference(volume, "unknown")
    mask = read_mask(tmp_path / "ct.npz", like=volume)
    assert mask.dtype == np.uint8
    np.testing.assert_array_equal(mask, MASK)


def test_a_mask_stored_in_another_orientation_lands_on_its_image(tmp_path: Path) -> None:
    image = read_volume(nifti(tmp_path / "ct.nii.gz", LPS, "RAS"))
    mask = read_mask(nifti(tmp_path / "ct_seg.nii.gz", MASK.astype(np.float32), "ARS"), like=image)
    assert mask.dtype == np.uint8  # whole-number float labels are accepted
    np.testing.assert_array_equal(mask, MASK)


def test_a_metaimage_mask_of_a_dicom_series_lands_on_its_image(tmp_path: Path) -> None:
    image = read_volume(dicom_series(tmp_path / "series", LPS))
    mask = read_mask(metaimage(tmp_path / "seg.mha", MASK, flip_xy=True), like=image)
    np.testing.assert_array_equal(mask, MASK)


# -- bad input: each message names the file --------------------------------------------------------------


def raises_naming(path: Path, *fragments: str) -> pytest.RaisesContext[VolumeError]:
    pattern = "".join(f"(?=.*{re.escape(text)})" for text in (str(path), *fragments))
    return pytest.raises(VolumeError, match=re.compile(pattern, re.DOTALL))


def test_volume_error_is_a_usage_error() -> None:
    assert issubclass(VolumeError, UsageError)


def test_unknown_extension_lists_the_supported_ones(tmp_path: Path) -> None:
    (tmp_path / "scan.png").write_bytes(b"\x89PNG")
    with raises_naming(tmp_path / "scan.png", "unsupported", ".nii.gz", ".mhd", ".npz", "DICOM"):
        read_volume(tmp_path / "scan.png")


def test_a_raw_file_points_to_its_header(tmp_path: Path) -> None:
    metaimage(tmp_path / "ct.mhd", LPS)
    with raises_naming(tmp_path / "ct.raw", "give the .mhd header"):
        read_volume(tmp_path / "ct.raw")


def test_missing_file(tmp_path: Path) -> None:
    with raises_naming(tmp_path / "gone.nii.gz", "does not exist"):
        read_volume(tmp_path / "gone.nii.gz")


def test_a_folder_without_dicom_files(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with raises_naming(tmp_path / "empty", "without DICOM files"):
        read_volume(tmp_path / "empty")


def truncate(path: Path, keep: float = 0.5) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def damaged_raw(folder: Path) -> Path:
    truncate(metaimage(folder / "ct.mhd", LPS).with_suffix(".raw"))
    return folder / "ct.mhd"


def damaged_npy(folder: Path) -> Path:
    np.save(folder / "ct.npy", LPS)
    return truncate(folder / "ct.npy")


def damaged_npz(folder: Path) -> Path:
    np.savez(folder / "ct.npz", image=LPS)
    return truncate(folder / "ct.npz")


def not_dicom(folder: Path) -> Path:
    (folder / "ct.dcm").write_bytes(b"not a dicom file at all" * 20)
    return folder / "ct.dcm"


DAMAGED: dict[str, Callable[[Path], Path]] = {
    "nii.gz": lambda folder: truncate(nifti(folder / "ct.nii.gz", LPS)),
    "nii": lambda folder: truncate(nifti(folder / "ct.nii", LPS)),
    "nii-header": lambda folder: truncate(
        nifti(folder / "ct.nii", LPS), keep=0.1
    ),  # inside the 348-byte header
    "mha": lambda folder: truncate(metaimage(folder / "ct.mha", LPS)),
    "mhd-raw": damaged_raw,
    "npy": damaged_npy,
    "npz": damaged_npz,
    "dcm": not_dicom,
}


@pytest.mark.parametrize("kind", DAMAGED)
def test_truncated_or_corrupt_files(tmp_path: Path, kind: str) -> None:
    path = DAMAGED[kind](tmp_path)
    with raises_naming(path, "cannot be read", "truncated or corrupt"):
        read_volume(path)


def test_mhd_without_its_raw_names_the_missing_data_file(tmp_path: Path) -> None:
    metaimage(tmp_path / "ct.mhd", LPS).with_suffix(".raw").unlink()
    with raises_naming(tmp_path / "ct.mhd", str(tmp_path / "ct.raw"), "missing"):
        read_volume(tmp_path / "ct.mhd")


def test_a_folder_of_damaged_dicom_files(tmp_path: Path) -> None:
    (tmp_path / "series").mkdir()
    (tmp_path / "series" / "a.dcm").write_bytes(b"\0" * 300)
    with raises_naming(tmp_path / "series", "no readable DICOM series", "truncated or corrupt"):
        read_volume(tmp_path / "series")


def test_a_folder_with_two_series_asks_for_one_folder_per_series(tmp_path: Path) -> None:
    dicom_series(tmp_path / "mixed", LPS, series_uid="1.2.826.0.1.3680043.2.1125.7.2")
    other = dicom_series(tmp_path / "other", LPS + 1, series_uid="1.2.826.0.1.3680043.2.1125.7.3")
    for index, file in enumerate(sorted(other.iterdir())):
        file.rename(tmp_path / "mixed" / f"B{index}.dcm")
    with raises_naming(tmp_path / "mixed", "2 DICOM series", "one folder per series"):
        read_volume(tmp_path / "mixed")


@pytest.mark.parametrize("shape", [(Y, X), (2, Z, Y, X)])
def test_not_3d(tmp_path: Path, shape: tuple[int, ...]) -> None:
    np.save(tmp_path / "ct.npy", np.arange(np.prod(shape), dtype=np.int16).reshape(shape))
    with raises_naming(tmp_path / "ct.npy", "3-D", str(shape)):
        read_volume(tmp_path / "ct.npy")


def test_4d_nifti_is_not_3d(tmp_path: Path) -> None:
    nib.save(nib.Nifti1Image(np.ones((4, 4, 3, 2), np.int16), np.eye(4)), tmp_path / "fmri.nii.gz")
    with raises_naming(tmp_path / "fmri.nii.gz", "3-D"):
        read_volume(tmp_path / "fmri.nii.gz")


def test_npz_without_an_image_array(tmp_path: Path) -> None:
    np.savez(tmp_path / "ct.npz", volume=LPS)
    with raises_naming(tmp_path / "ct.npz", "no array named 'image'", "volume"):
        read_volume(tmp_path / "ct.npz")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_or_inf_in_the_image(tmp_path: Path, bad: float) -> None:
    image = LPS.astype(np.float32)
    image[2, 3, 4] = bad
    nifti(tmp_path / "ct.nii.gz", image)
    with raises_naming(tmp_path / "ct.nii.gz", "NaN or infinite"):
        read_volume(tmp_path / "ct.nii.gz")


def test_constant_volume(tmp_path: Path) -> None:
    metaimage(tmp_path / "ct.mha", np.full((Z, Y, X), -1000, np.int16))
    with raises_naming(tmp_path / "ct.mha", "constant volume", "divide by zero"):
        read_volume(tmp_path / "ct.mha")


def test_mask_shape_differs_from_image_shape(tmp_path: Path) -> None:
    image = read_volume(nifti(tmp_path / "ct.nii.gz", LPS))
    nifti(tmp_path / "seg.nii.gz", MASK[:-1])
    with raises_naming(tmp_path / "seg.nii.gz", str((Z - 1, Y, X)), str((Z, Y, X))):
        read_mask(tmp_path / "seg.nii.gz", like=image)


@pytest.mark.parametrize(
    ("value", "dtype", "complaint"),
    [(0.5, np.float32, "non-integer"), (300, np.int16, "0..255"), (-1, np.int16, "0..255")],
)
def test_mask_values_must_be_labels_0_to_255(
    tmp_path: Path, value: float, dtype: type, complaint: str
) -> None:
    image = read_volume(nifti(tmp_path / "ct.nii.gz", LPS))
    mask = MASK.astype(dtype)
    mask[1, 1, 1] = value
    nifti(tmp_path / "seg.nii.gz", mask)
    with raises_naming(tmp_path / "seg.nii.gz", complaint):
        read_mask(tmp_path / "seg.nii.gz", like=image)


# -- pairing ---------------------------------------------------------------------------------------------


def touch(*paths: Path) -> None:
    """Pairing looks at names only, so empty files will do."""
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()


def test_mask_suffix_pairs_and_keeps_masks_out_of_the_images(tmp_path: Path) -> None:
    touch(tmp_path / "case2.nii.gz", tmp_path / "case2_seg.nii.gz", tmp_path / "case1.mhd")
    touch(tmp_path / "case1_seg.nii.gz")  # a mask may be in another format than its image
    assert find_pairs([tmp_path], mask_suffix="_seg") == [
        Pair("case1", tmp_path / "case1.mhd", tmp_path / "case1_seg.nii.gz"),
        Pair("case2", tmp_path / "case2.nii.gz", tmp_path / "case2_seg.nii.gz"),
    ]


def test_mask_suffix_missing_mask_names_image_and_expected_path(tmp_path: Path) -> None:
    touch(tmp_path / "case1.nii.gz", tmp_path / "case1_seg.nii.gz", tmp_path / "case2.nii.gz")
    with pytest.raises(UsageError, match=re.escape(f"{tmp_path / 'case2.nii.gz'}: expected")):
        find_pairs([tmp_path], mask_suffix="_seg")


def luna16(root: Path) -> None:
    for subset, uid in (("subset0", "1.2.3"), ("subset1", "4.5.6")):
        touch(root / subset / f"{uid}.mhd", root / subset / f"{uid}.raw")
        touch(root / "seg-lungs-LUNA16" / f"{uid}.mhd", root / "seg-lungs-LUNA16" / f"{uid}.zraw")


def test_luna16_parallel_mask_folder_next_to_the_subsets(tmp_path: Path) -> None:
    luna16(tmp_path / "LUNA16")
    root, masks = tmp_path / "LUNA16", tmp_path / "LUNA16" / "seg-lungs-LUNA16"
    pairs = find_pairs([root / "subset1", root / "subset0"], mask_dir="seg-lungs-LUNA16")
    assert pairs == [
        Pair("1.2.3", root / "subset0" / "1.2.3.mhd", masks / "1.2.3.mhd"),
        Pair("4.5.6", root / "subset1" / "4.5.6.mhd", masks / "4.5.6.mhd"),
    ]


def test_mask_folder_inside_the_source_is_not_read_as_images(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    luna16(tmp_path / "LUNA16")
    monkeypatch.chdir(tmp_path)  # LUNA16/seg-lungs-LUNA16 is found from the current directory
    pairs = find_pairs([Path("LUNA16")], mask_dir="LUNA16/seg-lungs-LUNA16")
    assert [(pair.id, pair.mask) for pair in pairs] == [
        ("1.2.3", tmp_path / "LUNA16" / "seg-lungs-LUNA16" / "1.2.3.mhd"),
        ("4.5.6", tmp_path / "LUNA16" / "seg-lungs-LUNA16" / "4.5.6.mhd"),
    ]
    assert find_pairs([tmp_path / "LUNA16"], mask_dir=tmp_path / "LUNA16" / "seg-lungs-LUNA16") == pairs


def test_missing_mask_in_the_mask_folder(tmp_path: Path) -> None:
    luna16(tmp_path)
    (tmp_path / "seg-lungs-LUNA16" / "4.5.6.mhd").unlink()
    expected = tmp_path / "seg-lungs-LUNA16" / "4.5.6.mhd"
    with pytest.raises(UsageError, match=re.escape(f"4.5.6.mhd: expected {expected}")):
        find_pairs([tmp_path / "subset0", tmp_path / "subset1"], mask_dir="seg-lungs-LUNA16")


def test_mask_folder_that_does_not_exist(tmp_path: Path) -> None:
    luna16(tmp_path)
    with pytest.raises(UsageError, match="mask folder 'labels' not found"):
        find_pairs([tmp_path / "subset0"], mask_dir="labels")


def test_manifest_with_relative_paths_and_optional_ids(tmp_path: Path) -> None:
    touch(tmp_path / "img" / "a.nii.gz", tmp_path / "lbl" / "a.nii.gz", tmp_path / "img" / "b.mha")
    manifest = tmp_path / "pairs.csv"
    manifest.write_text("image,mask,id\nimg/a.nii.gz,lbl/a.nii.gz,patient-7\nimg/b.mha,,\n")
    assert find_pairs([], manifest=manifest) == [
        Pair("b", tmp_path / "img" / "b.mha", None),
        Pair("patient-7", tmp_path / "img" / "a.nii.gz", tmp_path / "lbl" / "a.nii.gz"),
    ]


def test_manifest_missing_file_is_named_with_its_line(tmp_path: Path) -> None:
    touch(tmp_path / "a.nii.gz", tmp_path / "a_seg.nii.gz", tmp_path / "b.nii.gz")
    manifest = tmp_path / "pairs.csv"
    manifest.write_text("image,mask\na.nii.gz,a_seg.nii.gz\nb.nii.gz,b_seg.nii.gz\n")
    with pytest.raises(UsageError, match=re.escape(f"{manifest} line 3: mask {tmp_path / 'b_seg.nii.gz'}")):
        find_pairs([], manifest=manifest)


def test_manifest_needs_its_header(tmp_path: Path) -> None:
    (tmp_path / "pairs.csv").write_text("a.nii.gz,a_seg.nii.gz\n")
    with pytest.raises(UsageError, match="columns image,mask"):
        find_pairs([], manifest=tmp_path / "pairs.csv")


def test_manifest_excludes_source_folders(tmp_path: Path) -> None:
    (tmp_path / "pairs.csv").write_text("image,mask\n")
    with pytest.raises(UsageError, match="not both"):
        find_pairs([tmp_path], manifest=tmp_path / "pairs.csv")


def test_without_a_rule_npz_with_a_mask_pairs_with_itself(tmp_path: Path) -> None:
    np.savez(tmp_path / "with.npz", image=LPS, mask=MASK)
    np.savez(tmp_path / "without.npz", image=LPS)
    touch(tmp_path / "plain.nii.gz")
    assert find_pairs([tmp_path]) == [
        Pair("plain", tmp_path / "plain.nii.gz", None),
        Pair("with", tmp_path / "with.npz", tmp_path / "with.npz"),
        Pair("without", tmp_path / "without.npz", None),
    ]


def test_a_dicom_folder_is_one_volume_named_after_the_folder(tmp_path: Path) -> None:
    touch(*(tmp_path / "patient" / "CT-1" / f"{index}.dcm" for index in range(3)))
    touch(tmp_path / "patient" / "CT-1" / "seg.nii.gz", tmp_path / "patient" / ".hidden" / "x.nii.gz")
    touch(tmp_path / "patient" / "._CT-2.nii.gz")  # macOS metadata beside real data
    assert find_pairs([tmp_path / "patient"]) == [
        Pair("CT-1", tmp_path / "patient" / "CT-1", None),
        Pair("seg", tmp_path / "patient" / "CT-1" / "seg.nii.gz", None),
    ]


def test_duplicate_ids_get_their_parent_folder_as_prefix(tmp_path: Path) -> None:
    touch(
        tmp_path / "subset0" / "1.2.3.mhd", tmp_path / "subset1" / "1.2.3.mhd", tmp_path / "subset1" / "9.mhd"
    )
    touch(tmp_path / "a" / "x" / "c.npy", tmp_path / "b" / "x" / "c.npy")  # same parent name: one level more
    sources = [tmp_path / "subset1", tmp_path / "subset0", tmp_path / "a", tmp_path / "b"]
    ids = [pair.id for pair in find_pairs(sources)]
    assert ids == ["9", "a-x-c", "b-x-c", "subset0-1.2.3", "subset1-1.2.3"]
    assert [pair.id for pair in find_pairs(sources[::-1])] == ids


def test_overlapping_sources_find_a_file_once(tmp_path: Path) -> None:
    touch(tmp_path / "subset0" / "1.2.3.mhd")
    assert [pair.id for pair in find_pairs([tmp_path, tmp_path / "subset0"])] == ["1.2.3"]


def test_one_name_twice_in_one_folder_is_refused(tmp_path: Path) -> None:
    touch(tmp_path / "case1.nii.gz", tmp_path / "case1.mha")
    with pytest.raises(UsageError, match="would share an id"):
        find_pairs([tmp_path])


def test_empty_folder_is_named_with_the_supported_formats(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    touch(tmp_path / "data" / "notes.txt")
    with pytest.raises(UsageError, match=re.escape(f"no volumes found in {tmp_path / 'data'}") + ".*.nii.gz"):
        find_pairs([tmp_path / "data"])


def test_a_folder_of_masks_only_has_no_images(tmp_path: Path) -> None:
    touch(tmp_path / "case1_seg.nii.gz")
    with pytest.raises(UsageError, match="masks ending in '_seg' do not count"):
        find_pairs([tmp_path], mask_suffix="_seg")


def test_missing_source(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=re.escape(f"source {tmp_path / 'nope'} does not exist")):
        find_pairs([tmp_path / "nope"])


def test_only_one_pairing_rule(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="--mask-suffix and --mask-dir"):
        find_pairs([tmp_path], mask_suffix="_seg", mask_dir="labels")


def test_pairs_found_by_suffix_read_back_as_image_and_mask(tmp_path: Path) -> None:
    dicom_series(tmp_path / "data" / "ct7", LPS)
    metaimage(tmp_path / "data" / "ct7_seg.mha", MASK)
    [pair] = find_pairs([tmp_path / "data"], mask_suffix="_seg")
    assert pair.mask is not None
    image = read_volume(pair.image)
    np.testing.assert_array_equal(read_mask(pair.mask, like=image), MASK)


# -- layouts recognised without a pairing rule -----------------------------------------------------------

LUNA_UIDS = ("1.3.6.1.4.1.14519.5.2.1.6279.6001.101", "1.3.6.1.4.1.14519.5.2.1.6279.6001.202")


def luna16_cases() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return {
        uid: (LPS + index, (MASK + 3 * (MASK > 0)).astype(np.uint8)) for index, uid in enumerate(LUNA_UIDS)
    }


@pytest.mark.parametrize("given", ["root", "subset0"])
def test_luna16_as_it_ships_pairs_each_scan_with_its_lung_mask_without_options(
    tmp_path: Path, given: str
) -> None:
    root = volume_layouts.luna16_tree(tmp_path / "LUNA16", luna16_cases(), subset_size=1)
    assert "CompressedData = True" in (root / "subset0" / f"{LUNA_UIDS[0]}.mhd").read_text()
    source = root if given == "root" else root / "subset0"
    pairs = find_pairs([source])
    expected = LUNA_UIDS if given == "root" else LUNA_UIDS[:1]
    assert [(pair.id, pair.mask) for pair in pairs] == [
        (uid, root / "seg-lungs-LUNA16" / f"{uid}.mhd") for uid in expected
    ]
    image = read_volume(pairs[0].image)
    np.testing.assert_array_equal(image.array, LPS)
    np.testing.assert_array_equal(read_mask(pairs[0].mask, like=image), luna16_cases()[LUNA_UIDS[0]][1])


@pytest.mark.parametrize("masks", ["masks", "labels"])
@pytest.mark.parametrize("given", ["parent", "images"])
def test_images_and_masks_folders_pair_by_file_name(tmp_path: Path, masks: str, given: str) -> None:
    for name in ("case1", "case2"):
        volume_layouts.nifti_lps(tmp_path / "data" / "images" / f"{name}.nii.gz", LPS)
        volume_layouts.nifti_lps(tmp_path / "data" / masks / f"{name}.nii.gz", MASK)
    source = tmp_path / "data" if given == "parent" else tmp_path / "data" / "images"
    assert find_pairs([source]) == [
        Pair(
            name,
            tmp_path / "data" / "images" / f"{name}.nii.gz",
            tmp_path / "data" / masks / f"{name}.nii.gz",
        )
        for name in ("case1", "case2")
    ]


def test_nnunet_images_carry_a_channel_suffix_that_labels_do_not(tmp_path: Path) -> None:
    dataset = tmp_path / "Dataset001_Lung"
    for case in ("lung_001", "lung_002"):
        volume_layouts.nifti_lps(dataset / "imagesTr" / f"{case}_0000.nii.gz", LPS)
        volume_layouts.nifti_lps(dataset / "labelsTr" / f"{case}.nii.gz", MASK)
    volume_layouts.nifti_lps(dataset / "imagesTs" / "lung_009_0000.nii.gz", LPS)  # test cases: no labels
    touch(dataset / "imagesTr" / "._lung_001_0000.nii.gz")  # macOS metadata, as in the MSD archives
    touch(dataset / "imagesTr" / "lung_001_0001.nii.gz")  # a second channel of lung_001: not read
    expected = [
        Pair(case, dataset / "imagesTr" / f"{case}_0000.nii.gz", dataset / "labelsTr" / f"{case}.nii.gz")
        for case in ("lung_001", "lung_002")
    ]
    assert find_pairs([dataset]) == expected
    assert find_pairs([dataset / "imagesTr"]) == expected
    # --mask-dir pairs by the same rule (channel 0 with its case); the ids then keep the file names
    assert find_pairs([dataset / "imagesTr"], mask_dir=dataset / "labelsTr") == [
        Pair(f"{pair.id}_0000", pair.image, pair.mask) for pair in expected
    ]


def test_msd_images_and_labels_share_their_names(tmp_path: Path) -> None:
    volume_layouts.nifti_lps(tmp_path / "Task06_Lung" / "imagesTr" / "lung_001.nii.gz", LPS)
    volume_layouts.nifti_lps(tmp_path / "Task06_Lung" / "labelsTr" / "lung_001.nii.gz", MASK)
    [pair] = find_pairs([tmp_path / "Task06_Lung"])
    assert (pair.id, pair.mask) == ("lung_001", tmp_path / "Task06_Lung" / "labelsTr" / "lung_001.nii.gz")


def test_masks_named_with_seg_beside_their_images_pair_without_options(tmp_path: Path) -> None:
    touch(
        tmp_path / "case1.nii.gz",
        tmp_path / "case1_seg.nii.gz",
        tmp_path / "case2.mha",
        tmp_path / "case2_seg.mha",
    )
    assert [(pair.id, pair.mask) for pair in find_pairs([tmp_path])] == [
        ("case1", tmp_path / "case1_seg.nii.gz"),
        ("case2", tmp_path / "case2_seg.mha"),
    ]


def test_a_folder_in_no_known_layout_is_named_with_the_layouts_accepted(tmp_path: Path) -> None:
    touch(tmp_path / "scans" / "slice001.png", tmp_path / "scans" / "ct.raw")
    pattern = re.escape(f"no volumes found in {tmp_path / 'scans'}") + "(?s:.*)"
    for layout in (
        "LUNA16",
        "seg-lungs-LUNA16",
        "images/",
        "masks/",
        "labels/",
        "imagesTr/",
        "labelsTr/",
        "_0000",
    ):
        pattern += f"(?=(?s:.*){re.escape(layout)})"
    with pytest.raises(UsageError, match=pattern + "(?=(?s:.*)DICOM)(?=(?s:.*)_seg)"):
        find_pairs([tmp_path / "scans"])


# -- DICOM found by content ------------------------------------------------------------------------------

SERIES_A, SERIES_B, SERIES_C = (f"1.2.826.0.1.3680043.2.1125.9.{n}" for n in (11, 12, 13))


def test_dicom_series_without_extensions_are_found_by_content_one_volume_per_series(tmp_path: Path) -> None:
    export = tmp_path / "export"
    flat = export / "PAT1"  # a PACS export: two series in one folder, files named by a counter
    volume_layouts.dicom_series(flat, LPS, SERIES_A, names=[f"{k:08d}" for k in (4, 0, 2, 5, 1, 3)])
    volume_layouts.dicom_series(flat, LPS[:4] + 7, SERIES_B, names=[f"{k:08d}" for k in (9, 6, 8, 7)])
    own = volume_layouts.dicom_series(export / "PAT2" / "SE000001", LPS - 5, SERIES_C, part10=False)
    touch(export / "README.TXT", export / "PAT2" / "VERSION")  # what else export media carry
    pairs = find_pairs([export])
    assert [(pair.id, pair.mask) for pair in pairs] == [
        (SERIES_A, None),
        (SERIES_B, None),
        ("SE000001", None),
    ]
    assert pairs[2].image == own  # a folder holding one series is that series
    for pair, expected in zip(pairs, (LPS, LPS[:4] + 7, LPS - 5), strict=True):
        volume = read_volume(pair.image)
        np.testing.assert_array_equal(volume.array, expected)  # sorted along the normal, not by file name
        assert volume.spacing == pytest.approx(SPACING_ZYX)


def test_any_file_of_a_series_reads_the_whole_series(tmp_path: Path) -> None:
    volume_layouts.dicom_series(tmp_path / "flat", LPS, SERIES_A)
    volume_layouts.dicom_series(tmp_path / "flat", LPS[:3] + 1, SERIES_B, names=["x1", "x2", "x3"])
    np.testing.assert_array_equal(read_volume(tmp_path / "flat" / "x2").array, LPS[:3] + 1)
    with raises_naming(tmp_path / "flat", "2 DICOM series", "give one file of a series"):
        read_volume(tmp_path / "flat")


def test_a_series_with_a_missing_slice_is_refused(tmp_path: Path) -> None:
    series = volume_layouts.dicom_series(
        tmp_path / "series", LPS, SERIES_A, names=[f"IM{k}" for k in range(Z)]
    )
    (series / "IM2").unlink()
    with raises_naming(tmp_path / "series", "unevenly spaced", "missing"):
        read_volume(series)


def test_a_localizer_whose_slices_lie_in_several_planes_is_not_a_volume(tmp_path: Path) -> None:
    planes = [volume_layouts.IDENTITY, (0.0, 1.0, 0.0, 0.0, 0.0, -1.0), (1.0, 0.0, 0.0, 0.0, 0.0, -1.0)]
    scout = volume_layouts.dicom_series(tmp_path / "scout", LPS[:3], SERIES_A, orientations=planes)
    with raises_naming(scout, "3 orientations", "localizer"):
        read_volume(scout / "IM0001")
    ct = volume_layouts.dicom_series(tmp_path / "ct", LPS, SERIES_B)
    # exported with its own scout, as CT studies are: the folder still reads as the CT
    volume_layouts.dicom_series(ct, LPS[:3], SERIES_C, names=["S1", "S2", "S3"], orientations=planes)
    np.testing.assert_array_equal(read_volume(ct).array, LPS)
    left_out: list[str] = []
    assert [pair.id for pair in find_pairs([tmp_path], on_left_out=left_out.append)] == ["ct"]
    assert sorted(note.split(":")[0] for note in left_out) == [str(ct), str(scout)]
    assert all("localizer" in note for note in left_out)


def test_the_dicomdir_export_shipped_with_pydicom_gives_one_volume_per_series(tmp_path: Path) -> None:
    export = volume_layouts.shipped_dicomdir_export(tmp_path / "dicomdirtests")
    left_out: list[str] = []
    pairs = find_pairs([export], on_left_out=left_out.append)
    folders = sorted({pair.image.relative_to(export).parts[1] for pair in pairs})
    assert folders == ["CR1", "CR2", "CR3", "CT2", "CT5N", "MR1", "MR2"]
    assert len(pairs) == 9  # MR1 holds three one-slice series; MR2 one besides its two localizers
    assert sorted(note.split(":")[0].rsplit("/", 1)[-1] for note in left_out) == [
        "CT2N",
        "MR2",
        "MR2",
        "MR700",
    ]
    ct = read_volume(export / "98892001" / "CT5N")
    assert ct.array.shape == (5, 16, 16) and ct.spacing == pytest.approx((2.5, 0.488281, 0.488281))
    first = pydicom.dcmread(export / "98892001" / "CT5N" / "3353")  # lowest z: the first LPS slice
    np.testing.assert_array_equal(
        ct.array[0], first.pixel_array * float(first.RescaleSlope) + float(first.RescaleIntercept)
    )
    with raises_naming(export / "77654033" / "CT2", "unevenly spaced"):
        read_volume(export / "77654033" / "CT2")
