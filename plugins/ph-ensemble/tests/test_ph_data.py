"""The loaders read the public layout and class folders, say what is wrong with bad input, and the embedded
slices carry the grade in the pulmonary artery's size relative to the aorta."""

import json

import numpy as np
import pytest
from PIL import Image

from medkit import UsageError
from medkit_ph.data import check_folds, load_folder, phantom_folder
from medkit_ph.phantoms import GRADE_RATIOS


def _save(path, array, mode=None):
    Image.fromarray(array, mode=mode).save(path) if mode else Image.fromarray(array).save(path)


def test_public_layout_gives_label_c_minus_1_and_reads_mixed_sizes_and_modes(tmp_path):
    rng = np.random.default_rng(0)
    _save(tmp_path / "1 (1).png", rng.integers(0, 255, (40, 40), dtype=np.uint8))
    _save(tmp_path / "2 (1).png", rng.integers(0, 255, (30, 50, 3), dtype=np.uint8))
    sixteen = (rng.integers(1000, 3000, (40, 40))).astype(np.uint16)
    Image.fromarray(sixteen).save(tmp_path / "3 (1).png")
    gray_rgb = np.repeat(rng.integers(0, 255, (40, 40, 1), dtype=np.uint8), 3, axis=2)
    _save(tmp_path / "4 (7).png", gray_rgb)
    data = load_folder(tmp_path)
    assert dict(zip(data.names, data.labels.tolist(), strict=True)) == {
        "1 (1).png": 0,
        "2 (1).png": 1,
        "3 (1).png": 2,
        "4 (7).png": 3,
    }
    by_name = dict(zip(data.names, data.images, strict=True))
    assert by_name["2 (1).png"].shape == (30, 50, 3)  # colour kept
    assert by_name["4 (7).png"].shape == (40, 40)  # RGB with equal channels is grayscale
    assert (
        by_name["3 (1).png"].dtype == np.uint8 and by_name["3 (1).png"].max() == 255
    )  # 16-bit min-max scaled
    assert any("2 sizes" in note for note in data.notes) and any("modes" in note for note in data.notes)


def test_a_name_outside_the_layout_is_refused_with_the_file_named(tmp_path):
    _save(tmp_path / "1 (1).png", np.zeros((8, 8), np.uint8))
    _save(tmp_path / "scan_02.png", np.zeros((8, 8), np.uint8))
    with pytest.raises(UsageError, match=r"'<c> \(<n>\)\.png'.*scan_02\.png"):
        load_folder(tmp_path)


def test_a_missing_class_number_is_refused(tmp_path):
    for name in ("1 (1).png", "3 (1).png"):
        _save(tmp_path / name, np.zeros((8, 8), np.uint8))
    with pytest.raises(UsageError, match="no images of class"):
        load_folder(tmp_path)


def test_class_per_folder_layout_labels_folders_in_sorted_order(tmp_path):
    for folder, n in (("b_severe", 2), ("a_none", 3)):
        (tmp_path / folder).mkdir()
        for i in range(n):
            _save(tmp_path / folder / f"x{i}.png", np.full((8, 8), i, np.uint8))
    data = load_folder(tmp_path)
    assert data.class_names == ["a_none", "b_severe"]
    assert data.counts() == [3, 2]


def test_a_class_with_fewer_members_than_folds_is_refused_by_name(tmp_path):
    for folder, n in (("none", 4), ("severe", 2)):
        (tmp_path / folder).mkdir()
        for i in range(n):
            _save(tmp_path / folder / f"x{i}.png", np.full((8, 8), i, np.uint8))
    data = load_folder(tmp_path)
    check_folds(data, 2)
    with pytest.raises(UsageError, match=r"'severe' has 2.*--set folds"):
        check_folds(data, 3)


def test_embedded_slices_are_generated_once_and_grade_follows_the_pa_to_aorta_ratio():
    folder = phantom_folder(40, 64, seed=3)
    first = (folder / "1 (1).png").stat().st_mtime_ns
    assert phantom_folder(40, 64, seed=3) == folder
    assert (folder / "1 (1).png").stat().st_mtime_ns == first  # not generated again
    data = load_folder(folder)
    assert len(data) == 40 and data.counts() == [10, 10, 10, 10]
    meta = json.loads((folder / "phantoms.json").read_text())
    ratios = [[m["pa_aa_ratio"] for m in meta.values() if m["grade"] == g] for g in range(4)]
    means = [float(np.mean(r)) for r in ratios]
    assert means == sorted(means)  # a wider pulmonary trunk with every grade
    assert np.allclose(means, GRADE_RATIOS, atol=0.05)
    assert len(set(data.hashes)) == 40  # no two slices alike
