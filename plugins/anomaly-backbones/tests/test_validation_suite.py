"""The second validation suite (issue 18): an MVTec layout the loader reads, masks that hold exactly the defects,
the same files from the same seed, and neither images nor defect kinds of the embedded set."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medkit import UsageError
from medkit_anomaly import textures
from medkit_anomaly.data import Preprocess, categories, load_category
from medkit_anomaly.validation_suite import (
    CATEGORIES,
    DEFECTS,
    MAX_AREA,
    MIN_AREA,
    MIN_CHANGE,
    SuiteSpec,
    copy_smaller,
    defect_image,
    defect_slot,
    load_source,
    normal_image,
    sources,
    to_uint8,
    validation_suites,
    write_suite,
)

# one defect of each kind and a few normal images per category, at a size whose views still hold visible defects
TINY = SuiteSpec(size=96, train=3, test_good=2, test_defect=len(DEFECTS))


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("suite")
    write_suite(root, TINY)
    return root


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.filterwarnings("ignore:.*grayscale image")  # the scans and two photographs are grayscale
def test_the_loader_reads_every_category_with_its_defects_and_masks(suite):
    assert categories(suite) == sorted(CATEGORIES)
    for category in CATEGORIES:
        splits = load_category(suite, category, Preprocess(resize=96, crop=84))  # the thesis' 256 / 224
        assert len(splits["train"]) == TINY.train
        assert splits["test"].defects == {"good": TINY.test_good, **dict.fromkeys(DEFECTS, 1)}
        for index, item in enumerate(splits["test"].items):
            sample = splits["test"][index]
            assert sample["image"].shape == (3, 84, 84)
            if item.mask_path is None:
                assert sample["defect"] == "good" and sample["mask"].sum() == 0
            else:  # a defect lies inside the part the centre crop keeps: its whole mask survives the crop
                assert sample["mask"].sum() == (np.asarray(Image.open(item.mask_path)) > 0).sum() > 0


def test_grayscale_sources_are_written_as_grayscale_images(suite):
    modes = {c: Image.open(suite / c / "train" / "good" / "000.png").mode for c in CATEGORIES}
    assert modes == {c: "RGB" if load_source(CATEGORIES[c].source).shape[2] == 3 else "L" for c in CATEGORIES}
    assert set(modes.values()) == {"RGB", "L"}


@pytest.mark.parametrize("category", list(CATEGORIES))
def test_each_mask_covers_exactly_the_pixels_its_defect_changed(suite, category):
    for index in range(TINY.test_defect):
        defect, number = defect_slot(index)
        clean, _, _ = defect_image(category, TINY, index)
        written = np.asarray(Image.open(suite / category / "test" / defect / f"{number:03d}.png"), dtype=int)
        mask = (
            np.asarray(Image.open(suite / category / "ground_truth" / defect / f"{number:03d}_mask.png")) > 0
        )
        difference = np.abs(written - to_uint8(clean).astype(int))
        difference = difference.max(axis=-1) if difference.ndim == 3 else difference
        assert not difference[~mask].any(), f"{category}/{defect}: pixels outside the mask changed"
        assert (difference[mask] > 0).mean() > 0.5, f"{category}/{defect}: the mask holds unchanged pixels"
        assert MIN_AREA <= mask.mean() <= MAX_AREA
        low, high = round(textures.KEPT[0] * TINY.size), round(textures.KEPT[1] * TINY.size)
        assert (
            not mask[:low].any()
            and not mask[high:].any()
            and not mask[:, :low].any()
            and not mask[:, high:].any()
        )


def test_defects_change_their_region_visibly_at_the_full_size():
    spec = SuiteSpec()
    for category in CATEGORIES:
        for index in range(len(DEFECTS)):
            clean, image, mask = defect_image(category, spec, index)
            change = np.abs(image - clean)[mask].mean()
            assert change >= MIN_CHANGE, f"{category}/{defect_slot(index)[0]}: mean change {change:.3f}"


def test_the_same_seed_writes_the_same_files_and_another_seed_other_images(suite, tmp_path):
    write_suite(tmp_path / "again", TINY)
    assert _files(tmp_path / "again") == _files(suite)
    other = SuiteSpec(size=TINY.size, train=1, test_good=1, test_defect=1, seed=TINY.seed + 1)
    assert not np.array_equal(
        normal_image("lunar", other, "train", 0), normal_image("lunar", TINY, "train", 0)
    )


def test_smaller_training_sizes_nest_in_larger_ones_with_the_same_test_images(suite, tmp_path):
    smaller = SuiteSpec(size=TINY.size, train=2, test_good=TINY.test_good, test_defect=TINY.test_defect)
    write_suite(tmp_path / "drawn", smaller)
    copy_smaller(suite, tmp_path / "copied", smaller)
    drawn = _files(tmp_path / "drawn")
    assert _files(tmp_path / "copied") == drawn
    shared = {k: v for k, v in _files(suite).items() if k != "manifest.json" and "train" not in k.split("/")}
    assert shared.items() <= drawn.items() and len(shared) == len(CATEGORIES) * (2 * len(DEFECTS) + 2)
    with pytest.raises(ValueError, match="other options"):
        copy_smaller(suite, tmp_path / "refused", SuiteSpec(size=TINY.size, train=2, seed=7))


def test_validation_suites_builds_one_root_per_training_size(medkit_user_cache):
    options = {"size": 64, "test_good": 1, "test_defect": 1, "categories": ("spine_ct",)}
    roots = validation_suites((1, 2), **options)
    assert [len(list((roots[n] / "spine_ct" / "train" / "good").iterdir())) for n in (1, 2)] == [1, 2]
    first = "spine_ct/train/good/000.png"
    assert (roots[1] / first).read_bytes() == (roots[2] / first).read_bytes()


def test_no_source_image_or_defect_kind_is_the_embedded_sets():
    from skimage import data

    # the photographs textures._photograph reads: skimage.data.<category>, histology's under its own name
    embedded_names = {"immunohistochemistry" if c == "histology" else c for c in textures.CATEGORIES}
    assert not {s.name for s in sources()} & embedded_names
    assert not set(DEFECTS) & set(textures.DEFECTS)
    embedded = [getattr(data, name)().astype(np.float32) / 255 for name in embedded_names]
    ours = [
        load_source(s).squeeze(axis=2) if load_source(s).shape[2] == 1 else load_source(s) for s in sources()
    ]
    for array in ours:  # by content too: no source is an embedded photograph under another name
        assert all(
            array.shape != photo.shape or not np.allclose(array, photo, atol=0.01) for photo in embedded
        )
    assert len({a.tobytes() for a in ours}) == len(ours) == len(CATEGORIES) + 3


def test_a_bad_spec_is_refused_with_the_known_categories():
    with pytest.raises(UsageError, match="fundus"):
        SuiteSpec(categories=("brick",))
    with pytest.raises(UsageError, match=">= 32"):
        SuiteSpec(size=16)
