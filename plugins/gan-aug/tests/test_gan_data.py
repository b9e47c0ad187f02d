"""Data: the embedded procedural histology set (deterministic, imbalanced like PATH-DT-MSU, told apart by texture
more than by colour), patch extraction with the paper's size/overlap, and the folder loaders (class folders,
NCT-CRC-HE-100K, BACH, PATH-DT-MSU-like) with a clear message for every kind of bad input."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from medkit import UsageError
from medkit_gan.folders import (
    BACH_CLASSES,
    NCT_CLASSES,
    ImageSetDataset,
    detect_layout,
    load_class_folders,
    load_dataset,
    load_path_dt_msu,
)
from medkit_gan.patches import PATCH_PRESETS, extract_patches, patch_starts, resize_images
from medkit_gan.synthetic import (
    CLASS_NAMES,
    DEFAULT_TRAIN_COUNTS,
    DEFAULT_VAL_COUNTS,
    embedded_split,
    scaled_counts,
    synthetic_histology,
)


def save(path: Path, pixels: np.ndarray, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels, mode).save(path) if mode else Image.fromarray(pixels).save(path)
    return path


def flat(height: int, width: int, value: int) -> np.ndarray:
    return np.full((height, width, 3), value, np.uint8)


# --- the embedded synthetic set ---------------------------------------------------------------------------


def test_the_default_training_counts_are_imbalanced_like_path_dt_msu_with_dys_the_rarest():
    assert set(DEFAULT_TRAIN_COUNTS) == set(CLASS_NAMES) == set(DEFAULT_VAL_COUNTS)
    assert 900 <= sum(DEFAULT_TRAIN_COUNTS.values()) <= 1100
    assert min(DEFAULT_TRAIN_COUNTS, key=DEFAULT_TRAIN_COUNTS.get) == "DYS"
    assert max(DEFAULT_TRAIN_COUNTS, key=DEFAULT_TRAIN_COUNTS.get) == "AT"
    assert DEFAULT_TRAIN_COUNTS["AT"] / DEFAULT_TRAIN_COUNTS["DYS"] >= 10  # 33,966 vs 1,002 in the paper


def test_a_seed_gives_the_same_images_and_another_seed_different_ones():
    counts = scaled_counts(DEFAULT_TRAIN_COUNTS, 0.02)
    first, again, other = (synthetic_histology(counts, 32, seed) for seed in (3, 3, 4))
    assert first.counts() == counts and first.counts()["DYS"] == 2  # the minimum of 2 per class
    assert first.images.shape == (sum(counts.values()), 32, 32, 3) and first.images.dtype == np.uint8
    np.testing.assert_array_equal(first.images, again.images)
    np.testing.assert_array_equal(first.labels, again.labels)
    assert not np.array_equal(first.images, other.images)
    assert first.images.min() < 120 and first.images.max() > 220  # dark nuclei and bright glass both occur
    assert all(g.startswith("s3-slide") for g in first.groups) and len(set(first.groups)) > 1


def test_a_class_keeps_its_images_whatever_the_other_classes_counts():
    alone = synthetic_histology({"LP": 3}, 24, seed=1)
    with_others = synthetic_histology({"LP": 3, "AT": 4, "TUM": 2}, 24, seed=1)
    lp = with_others.images[with_others.labels == CLASS_NAMES.index("LP")]
    assert sorted(i.tobytes() for i in lp) == sorted(i.tobytes() for i in alone.images)


def test_the_embedded_split_scales_counts_and_draws_train_and_val_from_different_slides():
    train, val = embedded_split(resolution=16, seed=0, scale=0.04)
    assert train.counts() == scaled_counts(DEFAULT_TRAIN_COUNTS, 0.04) and val.counts() == dict.fromkeys(
        CLASS_NAMES, 2
    )
    assert not set(train.groups) & set(val.groups)
    assert train.resolution == val.resolution == 16


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [({"resolution": 8}, "16..256"), ({"counts": {"XYZ": 3}}, "XYZ"), ({"counts": {"AT": -1}}, ">= 0")],
)
def test_bad_synthetic_arguments_are_refused_with_a_message(kwargs, words):
    with pytest.raises(UsageError, match=words):
        synthetic_histology(**{"counts": {"AT": 1}, **kwargs})


def _mean_colour(images: np.ndarray) -> np.ndarray:
    return images.reshape(len(images), -1, 3).mean(axis=1)


def _texture(images: np.ndarray) -> np.ndarray:
    """Colour-blind texture statistics of the optical density, divided by its mean (so stain amount cancels):
    gradient energy, orientation coherence, dark-blob density, dark area, contrast and spread."""
    od = -np.log((images.astype(np.float32) + 1) / 256).sum(axis=-1)
    od /= od.mean(axis=(1, 2), keepdims=True)
    gy, gx = np.gradient(ndimage.gaussian_filter(od, (0, 0.7, 0.7)), axis=(1, 2))
    jyy, jxx, jxy = (ndimage.uniform_filter(a, (0, 5, 5)) for a in (gy * gy, gx * gx, gx * gy))
    coherence = (np.sqrt((jxx - jyy) ** 2 + 4 * jxy**2) / (jxx + jyy + 1e-6)).mean(axis=(1, 2))
    dark = od > 1.8
    blobs = np.array([ndimage.label(d)[1] for d in dark]) / od[0].size
    spread = np.percentile(od.reshape(len(od), -1), [10, 50, 90], axis=1)
    energy = np.log((gy**2 + gx**2).mean(axis=(1, 2)))
    return np.stack([energy, coherence, blobs, dark.mean(axis=(1, 2)), od.std(axis=(1, 2)), *spread], axis=1)


def test_classes_differ_in_texture_more_than_in_mean_colour():
    counts = dict.fromkeys(CLASS_NAMES, 40)
    train, test = synthetic_histology(counts, 32, seed=0), synthetic_histology(counts, 32, seed=1)
    accuracy = {}
    for name, features in (("colour", _mean_colour), ("texture", _texture)):
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
        model.fit(features(train.images), train.labels)
        accuracy[name] = (model.predict(features(test.images)) == test.labels).mean()
    # per-slide and per-image staining makes mean colours overlap; nuclei, fibres and cells do not
    assert accuracy["colour"] < 0.8, accuracy
    assert accuracy["texture"] > 0.8 and accuracy["texture"] >= accuracy["colour"] + 0.15, accuracy


# --- patches ------------------------------------------------------------------------------------------------


def test_bach_photographs_give_the_papers_patch_counts():
    size, overlap = PATCH_PRESETS["bach"]
    per_image = len(patch_starts(2048, size, overlap)) * len(patch_starts(1536, size, overlap))
    assert per_image == 35 and 300 * per_image == 10_500 and 100 * per_image == 3_500


def test_patches_step_by_size_minus_overlap_and_the_last_lies_flush_with_the_border():
    image = np.arange(9 * 10 * 3, dtype=np.int64).reshape(9, 10, 3).astype(np.uint8)
    patches = extract_patches(image, size=4, overlap=1)
    assert patch_starts(9, 4, 1) == [0, 3, 5] and patch_starts(10, 4, 1) == [0, 3, 6]
    assert patches.shape == (9, 4, 4, 3)
    np.testing.assert_array_equal(patches[1], image[0:4, 3:7])
    np.testing.assert_array_equal(patches[-1], image[5:9, 6:10])  # bottom-right corner covered
    assert len(extract_patches(image[:8, :8], 4, 0)) == 4  # an exact fit adds no flush row


def test_an_overlap_of_a_whole_patch_is_refused_naming_overlap():
    with pytest.raises(UsageError, match="overlap"):
        extract_patches(flat(8, 8, 0), size=4, overlap=4)


def test_an_image_smaller_than_the_patch_is_refused_naming_the_file_and_the_remedy():
    with pytest.raises(
        UsageError, match=r"slide7\.png: 20 x 10 px is smaller than the 16 px patch.*patch_size"
    ):
        extract_patches(flat(10, 20, 0), 16, 8, source="slide7.png")


def test_resizing_brings_patches_to_the_gans_resolution():
    patches = np.stack([flat(32, 32, 10), flat(32, 32, 200)])
    small = resize_images(patches, 8)
    assert small.shape == (2, 8, 8, 3) and small.dtype == np.uint8
    assert (small[0] == 10).all() and (small[1] == 200).all()
    assert resize_images(small, 8) is small


# --- folders ------------------------------------------------------------------------------------------------


def test_grey_transparent_and_16_bit_images_become_8_bit_rgb_with_a_note(tmp_path):
    save(tmp_path / "a" / "rgb.png", flat(8, 8, 40))
    save(tmp_path / "a" / "grey.png", np.full((8, 8), 90, np.uint8))
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 3] = 0  # fully transparent: the empty slide shows through
    save(tmp_path / "b" / "clear.png", rgba)
    save(tmp_path / "b" / "deep.png", np.full((8, 8), 32896, np.uint16))  # 16-bit: 32896 / 257 = 128
    images = load_class_folders(tmp_path, resolution=None)
    pixel = {g.split("/")[1]: images.images[i, 0, 0].tolist() for i, g in enumerate(images.groups)}
    assert pixel == {"rgb": [40] * 3, "grey": [90] * 3, "clear": [255] * 3, "deep": [128] * 3}
    assert images.class_names == ("a", "b") and images.labels.tolist() == [0, 0, 1, 1]
    notes = " ".join(images.notes)
    assert "grey to RGB" in notes and "transparency on white" in notes and "16-bit grey" in notes


def test_an_empty_class_folder_is_refused_with_its_path(tmp_path):
    save(tmp_path / "full" / "x.png", flat(8, 8, 0))
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("not an image")
    with pytest.raises(UsageError, match=re.escape(f"{tmp_path / 'empty'}: class folder with no images")):
        load_class_folders(tmp_path, 8)


def test_a_root_without_class_folders_is_refused_with_the_expected_layout(tmp_path):
    save(tmp_path / "loose.png", flat(8, 8, 0))
    with pytest.raises(UsageError, match=rf"{re.escape(str(tmp_path))}: no class folders.*<class>"):
        load_class_folders(tmp_path, 8)
    with pytest.raises(UsageError, match="no class folders"):
        load_dataset(tmp_path)


def test_mixed_sizes_need_a_resolution_and_non_square_images_are_centre_cropped(tmp_path):
    save(tmp_path / "a" / "wide.png", np.concatenate([flat(8, 4, 0), flat(8, 8, 250), flat(8, 4, 0)], axis=1))
    save(tmp_path / "b" / "small.png", flat(4, 4, 100))
    with pytest.raises(UsageError, match=r"different sizes.*pass a resolution"):
        load_class_folders(tmp_path, None)
    images = load_class_folders(tmp_path, 4)
    assert images.images.shape == (2, 4, 4, 3)
    assert (images.images[0] == 250).all()  # the dark side bands were cropped off, not squeezed in
    assert any("centre-cropped" in n for n in images.notes)


def test_max_per_class_caps_samples_and_slide_folders_become_groups(tmp_path):
    for i in range(5):
        save(tmp_path / "a" / f"slideA/{i}.png", flat(8, 8, i))
        save(tmp_path / "b" / f"{i}.png", flat(8, 8, 100 + i))
    images = load_class_folders(tmp_path, None, max_per_class=3, seed=0)
    assert images.counts() == {"a": 3, "b": 3}
    assert set(images.groups[images.labels == 0]) == {"slideA"}
    assert len(set(images.groups[images.labels == 1])) == 3


def test_a_bach_like_tree_gives_every_patch_its_images_label_and_group(tmp_path):
    for label, name in enumerate(BACH_CLASSES):
        for i in range(2):
            save(tmp_path / "Photos" / name / f"{name}{i}.tif", flat(48, 64, 10 * (2 * label + i) + 5))
    assert detect_layout(tmp_path) == "bach"
    images = load_dataset(tmp_path, resolution=16, patch_size=32, overlap=16)
    assert images.class_names == BACH_CLASSES  # the clinical order, not the alphabet
    assert len(images) == 8 * 3 * 2  # 64 px: starts 0, 16, 32; 48 px: starts 0, 16
    assert images.images.shape[1:] == (16, 16, 3) and "layout bach (detected)" in images.notes
    for group in set(images.groups):
        mine = images.groups == group
        assert mine.sum() == 6 and len(set(images.labels[mine])) == 1
        assert len(np.unique(images.images[mine])) == 1  # all six patches come from that one image
    label_of_value = {
        int(v): int(lab) for v, lab in zip(images.images[:, 0, 0, 0], images.labels, strict=True)
    }
    assert label_of_value == {10 * k + 5: k // 2 for k in range(8)}


def test_small_images_can_be_skipped_instead_of_refused(tmp_path):
    save(tmp_path / "a" / "big.png", flat(32, 32, 0))
    save(tmp_path / "a" / "tiny.png", flat(8, 8, 0))
    save(tmp_path / "b" / "big.png", flat(32, 32, 0))
    with pytest.raises(UsageError, match=r"tiny\.png"):
        load_class_folders(tmp_path, None, patch_size=16)
    images = load_class_folders(tmp_path, None, patch_size=16, skip_small=True)
    assert images.counts() == {"a": 4, "b": 4} and any("tiny.png" in n for n in images.notes)


def test_a_path_dt_msu_like_tree_loads_both_splits_with_the_training_classes(tmp_path):
    for split in ("train", "val"):
        for name in ("AT", "DYS"):
            save(tmp_path / split / name / "wss1" / "region0.png", flat(12, 20, 7))
    assert detect_layout(tmp_path) == "path_dt_msu"
    sets = load_path_dt_msu(tmp_path, resolution=None, patch_size=8, overlap=4)
    assert set(sets) == {"train", "val"}
    assert sets["val"].class_names == ("AT", "DYS") and set(sets["val"].groups) == {"wss1"}
    assert len(sets["train"]) == 2 * len(patch_starts(12, 8, 4)) * len(patch_starts(20, 8, 4))
    val = load_dataset(tmp_path, resolution=8, patch_size=8, overlap=4, split="val")
    assert len(val) == len(sets["val"]) and val.source.endswith("(path_dt_msu, val)")
    save(tmp_path / "val" / "MM" / "r.png", flat(12, 20, 7))
    with pytest.raises(UsageError, match=r"MM.*not in train"):
        load_path_dt_msu(tmp_path, None, 8, 4)


def test_nct_class_names_are_detected_and_other_names_are_plain_class_folders(tmp_path):
    for name in NCT_CLASSES:
        save(tmp_path / "nct" / name / f"{name}-A.tif", flat(12, 12, 60))
    assert detect_layout(tmp_path / "nct") == "nct_crc"
    nct = load_dataset(tmp_path / "nct", resolution=8)
    assert nct.class_names == NCT_CLASSES and len(nct) == 9 and nct.images.shape[1:3] == (8, 8)
    save(tmp_path / "other" / "tumour" / "x.jpg", flat(12, 12, 60))
    save(tmp_path / "other" / "stroma" / "y.bmp", flat(12, 12, 60))
    assert detect_layout(tmp_path / "other") == "class_folders"


def test_an_unknown_layout_or_a_split_the_layout_lacks_is_refused(tmp_path):
    save(tmp_path / "a" / "x.png", flat(8, 8, 0))
    with pytest.raises(UsageError, match="class_folders, nct_crc, bach, path_dt_msu"):
        load_dataset(tmp_path, layout="imagenet")
    with pytest.raises(UsageError, match="no 'val' split"):
        load_dataset(tmp_path, split="val")


def test_an_imageset_is_a_medkit_classification_dataset():
    images = synthetic_histology({"AT": 2, "TUM": 1}, 16, seed=0)
    dataset = ImageSetDataset(images)
    sample = dataset[0]
    assert sample["image"].shape == (3, 16, 16) and str(sample["image"].dtype) == "torch.float32"
    assert float(sample["image"].min()) >= 0.0 and float(sample["image"].max()) <= 1.0
    assert float(sample["image"][0, 2, 3]) == pytest.approx(images.images[0, 2, 3, 0] / 255)
    assert sample["label"] == int(images.labels[0]) and isinstance(sample["label"], int)
    assert dataset.groups() == list(images.groups)
    assert dataset.describe() == {
        "task": "classification",
        "size": 3,
        "classes": list(CLASS_NAMES),
        "in_channels": 3,
    }
