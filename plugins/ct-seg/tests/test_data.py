"""ct-seg's data: phantoms that look like chest CT, label checks with clear messages, volume-wise splits, and
slice transforms that move image and mask together."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medkit import UsageError
from medkit.cache.build import build_cache
from medkit.cache.pairing import Pair
from medkit.cache.store import SliceCache
from medkit_ct_seg.augment import SliceTransform
from medkit_ct_seg.config import AugmentConfig
from medkit_ct_seg.data import check_labels, split_volumes
from medkit_ct_seg.phantoms import AIRWAY, LEFT_LUNG, RIGHT_LUNG, phantom


@pytest.fixture(scope="module")
def volume():
    return phantom(slices=40, size=128, seed=7)


def test_phantoms_have_ct_intensities_and_the_trachea_is_small(volume):
    image, mask = volume
    assert image.dtype == np.int16 and mask.dtype == np.uint8
    assert np.median(image[mask == RIGHT_LUNG]) == pytest.approx(-850, abs=30)
    assert np.median(image[mask == AIRWAY]) == pytest.approx(-1000, abs=30)
    assert image.max() > 600  # bone
    airway_share = (mask == AIRWAY).mean()
    assert 0.0007 < airway_share < 0.0015  # about 0.1 % of pixels, LUNA16's 0.102 % (spec, Task)


def test_the_right_lung_is_larger_and_on_the_patients_right(volume):
    _, mask = volume
    assert (mask == RIGHT_LUNG).sum() > (mask == LEFT_LUNG).sum()
    columns = np.arange(mask.shape[-1])
    right_x = (columns * (mask == RIGHT_LUNG).sum(axis=(0, 1))).sum() / (mask == RIGHT_LUNG).sum()
    left_x = (columns * (mask == LEFT_LUNG).sum(axis=(0, 1))).sum() / (mask == LEFT_LUNG).sum()
    assert right_x < left_x  # LPS: x grows towards the patient's left


def test_neighbouring_slices_are_continuous(volume):
    _, mask = volume
    lungs = (mask == RIGHT_LUNG) | (mask == LEFT_LUNG)
    changes = [(lungs[k] ^ lungs[k + 1]).mean() for k in range(len(lungs) - 1)]
    assert max(changes) < 0.05


def test_the_same_seed_gives_the_same_phantom():
    a, b = phantom(8, 32, seed=1), phantom(8, 32, seed=1)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], phantom(8, 32, seed=2)[0])


def small_cache(tmp_path, masks: list[np.ndarray | None]) -> SliceCache:
    pairs = []
    for i, mask in enumerate(masks):
        file = tmp_path / f"v{i}.npz"
        image = np.random.default_rng(i).normal(size=(4, 8, 8)).astype(np.float32)
        np.savez(file, image=image, **({} if mask is None else {"mask": mask}))
        pairs.append(Pair(f"v{i}", file, file if mask is not None else None))
    build_cache(pairs, tmp_path / "c.h5")
    return SliceCache(tmp_path / "c.h5")


def test_unexpected_mask_values_are_reported_with_how_to_map_them(tmp_path):
    cache = small_cache(tmp_path, [np.full((4, 8, 8), 5, np.uint8), np.zeros((4, 8, 8), np.uint8)])
    with pytest.raises(UsageError, match=r"values \[5\].*label_map"):
        check_labels(cache, {}, 4)
    check_labels(cache, {3: 1, 4: 2, 5: 3}, 4)  # the LUNA16 map accepts them


def test_volumes_without_masks_cannot_train(tmp_path):
    cache = small_cache(tmp_path, [np.zeros((4, 8, 8), np.uint8), None])
    with pytest.raises(UsageError, match=r"1 volume\(s\) have no mask"):
        check_labels(cache, {}, 4)


def test_validation_holds_whole_volumes(tmp_path):
    cache = small_cache(tmp_path, [np.zeros((4, 8, 8), np.uint8)] * 8)
    train, val = split_volumes(cache, 0.25, seed=0)
    assert len(val) == 2 and not set(train) & set(val) and sorted(train + val) == list(range(8))


def test_transforms_move_image_and_mask_together_and_map_labels():
    image = torch.zeros(1, 64, 64)
    image[:, 20:40, 10:30] = 1.0
    mask = torch.zeros(64, 64, dtype=torch.int64)
    mask[20:40, 10:30] = 4
    transform = SliceTransform(32, AugmentConfig(rotate_degrees=5.0, crop_scale=0.95), {4: 2})
    for seed in range(5):
        out = transform({"image": image, "mask": mask}, np.random.default_rng(seed))
        assert out["image"].shape == (1, 32, 32) and out["mask"].shape == (32, 32)
        assert set(out["mask"].unique().tolist()) <= {0, 2}
        bright = out["image"][0] > 0.95  # well inside the box, away from interpolated edges
        assert (out["mask"][bright] == 2).float().mean() > 0.9  # labels stay under their pixels


def test_flips_and_blur_are_off_by_default_because_they_swap_lungs_and_erase_the_trachea():
    defaults = AugmentConfig()
    assert defaults.flips is False and defaults.blur is False
