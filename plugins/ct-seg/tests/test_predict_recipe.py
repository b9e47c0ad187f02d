"""`medkit run ct-seg predict` writes masks that overlay their scans and scores them per case in 3D and per slice."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch
from test_train_recipe import TINY

from medkit.cache.readers import read_volume
from medkit.testing import process_locale_kept, run_cli
from medkit_ct_seg.phantoms import phantom
from medkit_ct_seg.source_geometry import write_labels_like
from medkit_ct_seg.volume_metrics import class_figures

CLASSES = ("left_lung", "right_lung", "airway")


def oblique_nifti(path: Path, array: np.ndarray) -> None:
    """(Z, Y, X) array as a NIfTI whose voxel axes are permuted, flipped and rotated 20 degrees in the world."""
    angle = np.deg2rad(20)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    swap = np.array([[0, -1, 0], [1, 0, 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ swap @ np.diag([0.8, 0.7, 2.5])
    affine[:3, 3] = [10.0, -20.0, 30.0]
    nib.save(nib.Nifti1Image(array.transpose(2, 1, 0), affine), path)


def oblique_metaimage(path: Path, array: np.ndarray) -> None:
    """(Z, Y, X) array as a MetaImage whose direction is rotated 30 degrees and has the y axis pointing down."""
    angle = np.deg2rad(30)
    direction = [[np.cos(angle), 0, -np.sin(angle)], [np.sin(angle), 0, np.cos(angle)], [0, -1, 0]]
    image = sitk.GetImageFromArray(array)
    image.SetDirection(np.ravel(direction).tolist())
    image.SetOrigin((5.0, 6.0, 7.0))
    image.SetSpacing((0.7, 0.8, 2.5))
    sitk.WriteImage(image, str(path))


def oblique_dicom(folder: Path, array: np.ndarray) -> None:
    """(Z, Y, X) array as a DICOM series rotated 30 degrees in-plane, one file per slice, names out of order."""
    angle = np.deg2rad(30)
    volume = sitk.GetImageFromArray(array.astype(np.int16))
    volume.SetDirection((np.cos(angle), -np.sin(angle), 0, np.sin(angle), np.cos(angle), 0, 0, 0, 1))
    volume.SetSpacing((0.7, 0.8, 2.5))
    volume.SetOrigin((-20.0, -30.0, 100.0))
    cosines = volume.GetDirection()[0:7:3] + volume.GetDirection()[1:8:3]  # row, then column direction
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    folder.mkdir(parents=True)
    for k in range(volume.GetDepth()):
        plane = volume[:, :, k]
        for tag, value in {
            "0008|0060": "CT",
            "0020|000e": "1.2.826.0.1.3680043.2.1125.77",
            "0020|0013": str(k + 1),
            "0020|0032": "\\".join(map(str, volume.TransformIndexToPhysicalPoint((0, 0, k)))),
            "0020|0037": "\\".join(map(str, cosines)),
        }.items():
            plane.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"slice{(5 * k + 3) % volume.GetDepth():03d}.dcm"))
        with process_locale_kept():
            writer.Execute(plane)


WRITERS = {"nifti.nii.gz": oblique_nifti, "metaimage.mhd": oblique_metaimage}
SOURCES = {**WRITERS, "dicom": oblique_dicom}  # the series' folder is the source


def luna16_folder(root: Path) -> Path:
    """subset1/ with one NIfTI and one MetaImage scan, seg-lungs-LUNA16/ with their masks valued 3, 4, 5."""
    scans, masks = root / "subset1", root / "seg-lungs-LUNA16"
    scans.mkdir(parents=True)
    masks.mkdir()
    for seed, (name, write) in enumerate(WRITERS.items(), start=700):
        image, mask = phantom(8, 32, seed=seed)
        write(scans / name, image[:, :, :28])  # 28 x 32 slices: a swapped axis changes the shape
        write(masks / name, np.where(mask > 0, mask + 2, 0).astype(np.uint8)[:, :, :28])
    return scans


@pytest.fixture(scope="module")
def predicted(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny model trained on phantoms segments a LUNA16-style folder; returns (scans folder, predict run)."""
    root = tmp_path_factory.mktemp("predict")
    trained = root / "trained"
    assert run_cli(["run", "ct-seg", "--arch", "mini_unet", "--out", str(trained), *TINY]).exit_code == 0
    scans = luna16_folder(root / "LUNA16")
    out = root / "predicted"
    options = ["--set", f"checkpoint={trained / 'checkpoints' / 'last.pt'}", "--set", "image_size=32"]
    result = run_cli(
        ["run", "ct-seg", "predict", "--data", str(scans), "--out", str(out), "--device", "cpu", *options]
    )
    assert result.exit_code == 0, result.output
    return scans, out


def volumes_of(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())["volumes"]


@pytest.mark.parametrize("name", list(WRITERS))
def test_a_predicted_mask_has_its_scans_origin_direction_spacing_and_size(predicted, name):
    scans, out = predicted
    source = sitk.ReadImage(str(scans / name))
    mask = sitk.ReadImage(volumes_of(out)[name.split(".")[0]]["mask"])
    assert mask.GetSize() == source.GetSize()
    assert np.allclose(mask.GetOrigin(), source.GetOrigin(), atol=1e-4)
    assert np.allclose(mask.GetDirection(), source.GetDirection(), atol=1e-6)
    assert np.allclose(mask.GetSpacing(), source.GetSpacing(), atol=1e-6)


def read_as_stored(source: Path) -> sitk.Image:
    if source.is_dir():
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(source)))
        return reader.Execute()
    return sitk.ReadImage(str(source))


@pytest.mark.parametrize("name", list(SOURCES))
def test_a_mask_written_like_its_scan_puts_every_label_on_its_own_voxel(tmp_path, name):
    """Labels computed on the reader's LPS array land, in the written file, on the voxels they were computed
    from (thresholding the scan as stored gives the written mask exactly), with the scan's geometry."""
    image, _ = phantom(8, 32, seed=3)
    SOURCES[name](tmp_path / name, image[:, :, :28])
    volume = read_volume(tmp_path / name)
    target = tmp_path / "mask.nii.gz"
    write_labels_like((volume.array > -500).astype(np.uint8), tmp_path / name, volume.spacing, target)
    stored, mask = read_as_stored(tmp_path / name), sitk.ReadImage(str(target))
    assert np.array_equal(sitk.GetArrayFromImage(mask), sitk.GetArrayFromImage(stored) > -500)
    assert np.allclose(mask.GetDirection(), stored.GetDirection(), atol=1e-6)
    assert np.allclose(mask.GetOrigin(), stored.GetOrigin(), atol=1e-4)


def test_predict_scores_each_case_in_3d_and_per_slice_against_its_mapped_mask(predicted):
    scans, out = predicted
    summary = json.loads((out / "summary.json").read_text())
    for name in WRITERS:
        case = summary["volumes"][name.split(".")[0]]
        assert set(case) >= {"dice", "hd95", "surface_dice", "slices"}
        assert "mean_dice" in case["slices"] and set(case["hd95"]) == set(CLASSES)
        # the 3D Dice equals one computed here from the files as stored: mask and prediction share one grid
        truth = sitk.GetArrayFromImage(sitk.ReadImage(str(scans.parent / "seg-lungs-LUNA16" / name)))
        labels = sitk.GetArrayFromImage(sitk.ReadImage(case["mask"]))
        for c, cls in enumerate(CLASSES, start=1):
            p, g = labels == c, truth == c + 2  # LUNA16's 3, 4, 5 are classes 1, 2, 3
            expected = 2 * (p & g).sum() / (p.sum() + g.sum()) if p.sum() + g.sum() else 1.0
            assert case["dice"][cls] == pytest.approx(expected)
    with open(summary["cases_csv"], newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["case"] for row in rows] == ["metaimage", "nifti"]
    assert {"dice/airway", "hd95/airway", "surface_dice/airway", "slices/mean_dice"} <= set(rows[0])
    assert set(summary["mean"]) == {"dice", "hd95", "surface_dice", "slices"}


def test_predict_segments_scans_without_masks_and_scores_nothing(predicted, tmp_path):
    image, _ = phantom(8, 32, seed=9)
    (tmp_path / "scans").mkdir()
    oblique_nifti(tmp_path / "scans" / "unlabelled.nii.gz", image)
    _, out = predicted
    checkpoint = json.loads((out / "summary.json").read_text())["checkpoint"]
    new = tmp_path / "out"
    args = ["--data", str(tmp_path / "scans"), "--out", str(new), "--set", f"checkpoint={checkpoint}"]
    result = run_cli(["run", "ct-seg", "predict", "--device", "cpu", "--set", "image_size=32", *args])
    assert result.exit_code == 0, result.output
    summary = json.loads((new / "summary.json").read_text())
    assert "mean" not in summary and "dice" not in summary["volumes"]["unlabelled"]


def plates(z_pred: int, z_true: int) -> tuple[np.ndarray, np.ndarray]:
    predicted, actual = np.zeros((10, 12, 12), bool), np.zeros((10, 12, 12), bool)
    predicted[z_pred, 3:8, 3:8] = actual[z_true, 3:8, 3:8] = True
    return predicted, actual


def test_hd95_and_surface_dice_are_in_millimetres_of_the_volumes_spacing():
    """Two 5 x 5 plates two slices apart: every boundary voxel is 2 slices from the other plate."""
    predicted, actual = plates(2, 4)
    thick = class_figures(predicted, actual, (2.5, 0.7, 0.7), tolerance_mm=1.0)
    assert (thick["dice"], thick["hd95"], thick["surface_dice"]) == (0.0, pytest.approx(5.0), 0.0)
    assert class_figures(predicted, actual, (2.5, 0.7, 0.7), tolerance_mm=5.0)["surface_dice"] == 1.0
    assert class_figures(predicted, actual, (1.0, 1.0, 1.0), tolerance_mm=1.0)["hd95"] == pytest.approx(2.0)


def test_a_class_absent_from_both_scores_dice_one_and_undefined_distances():
    empty = np.zeros((4, 6, 6), bool)
    figures = class_figures(empty, empty, (1.0, 1.0, 1.0), tolerance_mm=1.0)
    assert figures["dice"] == 1.0 and math.isnan(figures["hd95"]) and math.isnan(figures["surface_dice"])
    present, _ = plates(2, 2)
    missed = class_figures(np.zeros_like(present), present, (1.0, 1.0, 1.0), tolerance_mm=1.0)
    assert (missed["dice"], missed["hd95"], missed["surface_dice"]) == (0.0, math.inf, 0.0)


@pytest.mark.filterwarnings("ignore::FutureWarning")  # MONAI 1.5+ passes its own deprecated argument
def test_figures_on_the_cropped_box_equal_monais_on_the_whole_volume():
    from monai.metrics import compute_dice, compute_hausdorff_distance, compute_surface_dice
    from scipy.ndimage import binary_dilation

    rng = np.random.default_rng(0)
    spacing = (2.5, 0.7, 0.8)
    blobs = [binary_dilation(rng.random((20, 30, 30)) > 0.997, iterations=2) for _ in range(2)]
    ours = class_figures(blobs[0], blobs[1], spacing, tolerance_mm=1.5)
    y_pred, y = (torch.from_numpy(b).float()[None, None] for b in blobs)
    whole = {"include_background": True, "spacing": list(spacing)}
    assert ours["dice"] == pytest.approx(float(compute_dice(y_pred, y, ignore_empty=False)))
    assert ours["hd95"] == pytest.approx(float(compute_hausdorff_distance(y_pred, y, percentile=95, **whole)))
    assert ours["surface_dice"] == pytest.approx(float(compute_surface_dice(y_pred, y, [1.5], **whole)))
