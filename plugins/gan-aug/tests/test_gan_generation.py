"""Synthetic data sets and their use: balanced and fill-to labels, H5 and PNG round trips, the slide-wise split of
real data, and GanAugmenter extending a medkit Dataset with a generator's images (paper 001's two protocols)."""

from __future__ import annotations

import numpy as np
import pytest

from medkit import UsageError
from medkit_gan.augmenter import GanAugmenter, imageset_from_dataset
from medkit_gan.data import split_by_group
from medkit_gan.folders import ImageSetDataset
from medkit_gan.imageset import ImageSet
from medkit_gan.sampling import balanced_labels, fill_labels
from medkit_gan.storage import load_generated, save_h5, save_png_folders
from medkit_gan.synthetic import embedded_split

TINY_NETWORK = {
    "channel_base": 128,
    "channel_max": 8,
    "z_dim": 8,
    "w_dim": 8,
    "mapping_layers": 1,
    "embed_dim": 8,
}
TINY_TRAINING = {"batch_size": 4, "total_images": 8, "checkpoint_every_images": 8, "eval_every_images": None}


def random_set(
    n: int = 12, classes: tuple[str, ...] = ("a", "b", "c"), size: int = 8, seed: int = 0
) -> ImageSet:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    return ImageSet(images, np.arange(n) % len(classes), classes, groups=[f"slide{i // 2}" for i in range(n)])


def test_balanced_labels_give_every_class_the_same_count():
    assert np.bincount(balanced_labels(4, 3)).tolist() == [4, 4, 4]
    with pytest.raises(UsageError, match="at least one image per class"):
        balanced_labels(0, 3)


def test_fill_labels_generate_only_what_each_class_lacks():
    labels = fill_labels({"a": 10, "b": 2, "c": 0}, {"b": 5, "c": 3, "a": 4}, ("a", "b", "c"))
    assert np.bincount(labels, minlength=3).tolist() == [0, 3, 3]
    with pytest.raises(UsageError, match="unknown class"):
        fill_labels({"a": 1}, {"z": 3}, ("a", "b"))
    with pytest.raises(UsageError, match="already has that many"):
        fill_labels({"a": 5, "b": 5}, {"a": 3}, ("a", "b"))


def test_h5_and_png_folders_round_trip_images_labels_and_classes(tmp_path):
    images = random_set()
    back = load_generated(save_h5(images, tmp_path / "images.h5"))
    assert (back.images == images.images).all() and (back.labels == images.labels).all()
    assert back.class_names == images.class_names
    folder = save_png_folders(images, tmp_path / "pngs")
    assert not list(tmp_path.glob(".pngs*"))  # no partial folder left beside it
    read = load_generated(folder)
    assert read.counts() == images.counts()
    order = np.lexsort((images.images.reshape(12, -1).sum(1), images.labels))
    order_back = np.lexsort((read.images.reshape(12, -1).sum(1), read.labels))
    assert (read.images[order_back] == images.images[order]).all()  # PNG is lossless


def test_a_file_that_is_not_a_generated_set_is_named(tmp_path):
    bad = tmp_path / "images.h5"
    bad.write_bytes(b"not hdf5")
    with pytest.raises(UsageError, match=r"is not a gan-aug images\.h5"):
        load_generated(bad)
    with pytest.raises(UsageError, match="run `medkit run gan-aug generate` first"):
        load_generated(tmp_path / "missing")


def test_the_split_never_puts_one_slide_on_both_sides_and_keeps_every_class_on_both():
    images = random_set(n=60)
    train, val = split_by_group(images, 0.25, seed=0)
    assert not set(train.groups) & set(val.groups)
    assert len(train) + len(val) == 60
    assert all(n > 0 for n in train.counts().values()) and all(n > 0 for n in val.counts().values())


def test_a_class_from_a_single_slide_cannot_be_validated_and_says_so():
    images = random_set(n=12)
    images.groups = np.where(images.labels == 2, "only-slide", images.groups)
    with pytest.raises(UsageError, match="class 'c' has no images in the"):
        split_by_group(images, 0.25, seed=0)


@pytest.fixture(scope="module")
def histology() -> ImageSetDataset:
    train, _ = embedded_split(resolution=16, seed=0, scale=0.05)
    return ImageSetDataset(train)


def test_a_dataset_becomes_an_imageset_and_back(histology):
    images = imageset_from_dataset(histology)
    assert images.images.shape[1:] == (16, 16, 3) and images.class_names == tuple(histology.class_names)
    again = imageset_from_dataset(ImageSetDataset(images))
    assert (again.images == images.images).all()


def test_gan_augmenter_trains_on_a_dataset_and_extends_it_as_the_paper_does(histology, tmp_path):
    augmenter = GanAugmenter(
        per_class=3, network=TINY_NETWORK, training=TINY_TRAINING, run_dir=tmp_path / "gan", seed=1
    ).fit(histology)
    assert augmenter.checkpoint.is_file()
    mixed = augmenter.extend(histology)
    assert len(mixed) == len(histology) + 3 * 6
    real = imageset_from_dataset(histology)
    added = imageset_from_dataset(mixed).counts()
    assert added == {name: n + 3 for name, n in real.counts().items()}  # real + synthetic (BACH protocol)
    only = GanAugmenter(checkpoint=augmenter.checkpoint, per_class=2, mode="synthetic").fit(histology)
    assert imageset_from_dataset(only.extend(histology)).counts() == dict.fromkeys(real.class_names, 2)
    sample = histology[0]
    assert augmenter(sample, np.random.default_rng(0)) is sample


def test_gan_augmenter_refuses_a_generator_of_other_classes(histology, tmp_path):
    augmenter = GanAugmenter(network=TINY_NETWORK, training=TINY_TRAINING, run_dir=tmp_path / "gan").fit(
        histology
    )
    other = ImageSetDataset(random_set(n=6, classes=("x", "y"), size=16))
    with pytest.raises(UsageError, match="generates classes"):
        GanAugmenter(checkpoint=augmenter.checkpoint).fit(other)
    with pytest.raises(UsageError, match="before fit"):
        GanAugmenter(checkpoint=augmenter.checkpoint).extend(histology)
