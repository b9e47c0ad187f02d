"""The MVTec-AD loader and the embedded texture set: layout, defects, determinism, and bad input named."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import roc_auc_score

from medkit import UsageError
from medkit_anomaly.data import MVTecCategory, Preprocess, categories, load_category
from medkit_anomaly.textures import (
    CATEGORIES,
    DEFECTS,
    KEPT,
    SMALL,
    TextureSet,
    _photograph,
    add_defect,
    embedded_textures,
    normal_view,
    write_textures,
)

SMALL_PREPROCESS = Preprocess(resize=64, crop=56)  # the thesis' 256/224 ratio at the small set's 64 px


@pytest.fixture(scope="module")
def small_set() -> Path:
    return embedded_textures(SMALL)


def _png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def make_category(root: Path, size: int = 32, mode: str = "RGB", defects: int = 1) -> Path:
    """A tiny MVTec-layout category ``parts`` under ``root``: 2 train, 1 good test, ``defects`` defect images."""
    rng = np.random.default_rng(0)
    channels = {"RGB": (3,), "L": (), "RGBA": (4,)}[mode]
    folder = root / "parts"
    for i in range(2):
        _png(
            folder / "train" / "good" / f"{i:03d}.png",
            rng.integers(0, 255, (size, size, *channels), np.uint8),
        )
    _png(folder / "test" / "good" / "000.png", rng.integers(0, 255, (size, size, *channels), np.uint8))
    for i in range(defects):
        _png(
            folder / "test" / "crack" / f"{i:03d}.png",
            rng.integers(0, 255, (size, size, *channels), np.uint8),
        )
        mask = np.zeros((size, size), np.uint8)
        mask[4:9, 4:9] = 255
        _png(folder / "ground_truth" / "crack" / f"{i:03d}_mask.png", mask)
    return folder


def test_the_embedded_set_has_mvtec_layout_and_every_defect_image_has_a_mask_of_its_size(small_set):
    assert categories(small_set) == sorted(CATEGORIES)
    for category in CATEGORIES:
        folder = small_set / category
        assert len(list((folder / "train" / "good").glob("*.png"))) == SMALL.train
        assert len(list((folder / "test" / "good").glob("*.png"))) == SMALL.test_good
        defect_images = sorted((folder / "test").glob("[!g]*/*.png"))
        assert {p.parent.name for p in defect_images} == set(DEFECTS)
        assert len(defect_images) == SMALL.test_defect
        for image in defect_images:
            mask = folder / "ground_truth" / image.parent.name / f"{image.stem}_mask.png"
            assert Image.open(mask).size == Image.open(image).size == (SMALL.size, SMALL.size)
            assert Image.open(image).mode == "RGB"


def test_defects_cover_half_to_five_percent_of_the_image_and_survive_the_centre_crop(small_set):
    low, high = int(KEPT[0] * SMALL.size), int(KEPT[1] * SMALL.size)
    for mask_path in small_set.glob("*/ground_truth/*/*_mask.png"):
        mask = np.asarray(Image.open(mask_path)) > 0
        assert 0.005 <= mask.mean() <= 0.05, mask_path
        assert mask[low:high, low:high].sum() == mask.sum(), f"{mask_path} reaches outside the centre crop"


def test_a_defect_changes_exactly_the_pixels_of_its_mask():
    rng = np.random.default_rng(3)
    for category in ("brick", "histology"):
        for defect in DEFECTS:
            clean = normal_view(_photograph(category, 96), 96, rng)
            image, mask = add_defect(clean, defect, category, rng)
            changed = np.abs(image - clean).max(axis=-1) >= 1 / 255
            assert np.array_equal(image[~mask], clean[~mask]), (
                f"{defect} on {category} changed pixels outside"
            )
            assert changed[mask].mean() > 0.9, f"{defect} on {category} left its mask mostly unchanged"


def test_mean_intensity_alone_does_not_find_the_defects():
    spec = TextureSet(size=64, train=10, test_good=20, test_defect=20)
    aurocs = []
    for category in spec.categories:
        rng = np.random.default_rng(7)
        photo = _photograph(category, spec.size)
        reference = np.mean([normal_view(photo, spec.size, rng).mean() for _ in range(spec.train)])
        good = [normal_view(photo, spec.size, rng).mean() for _ in range(spec.test_good)]
        bad = [
            add_defect(normal_view(photo, spec.size, rng), DEFECTS[i % 4], category, rng)[0].mean()
            for i in range(spec.test_defect)
        ]
        aurocs.append(
            roc_auc_score([0] * len(good) + [1] * len(bad), np.abs(np.array(good + bad) - reference))
        )
    assert np.mean(aurocs) < 0.7, aurocs


def test_the_same_seed_gives_the_same_set_and_another_seed_another(tmp_path):
    spec = TextureSet(size=48, train=2, test_good=1, test_defect=4, categories=("gravel",))
    for name, seed in (("a", 1024), ("b", 1024), ("c", 7)):
        write_textures(tmp_path / name, TextureSet(**{**spec.__dict__, "seed": seed}))
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.png"))
    assert files == sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*.png"))
    assert all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files)
    assert any((tmp_path / "a" / f).read_bytes() != (tmp_path / "c" / f).read_bytes() for f in files)


def test_the_embedded_set_is_built_once_into_the_cache_folder(small_set):
    assert small_set.parent.name == "anomaly" and small_set.name.startswith("textures-v1-64px-")
    stamp = (small_set / "manifest.json").stat().st_mtime_ns
    assert embedded_textures(SMALL) == small_set
    assert (small_set / "manifest.json").stat().st_mtime_ns == stamp
    assert not [p for p in small_set.parent.iterdir() if p.name.startswith(".building-")]


def test_a_sample_holds_the_preprocessed_image_its_mask_label_defect_and_path(small_set):
    test = MVTecCategory(small_set, "grass", "test", SMALL_PREPROCESS)
    assert len(test) == SMALL.test_good + SMALL.test_defect
    assert test.defects == {"good": SMALL.test_good, **dict.fromkeys(DEFECTS, SMALL.test_defect // 4)}
    for index in (0, len(test) - 1):
        sample = test[index]
        assert set(sample) == {"image", "mask", "label", "defect", "path"}
        assert sample["image"].shape == (3, 56, 56) and sample["mask"].shape == (1, 56, 56)
        assert set(np.unique(sample["mask"].numpy())) <= {0.0, 1.0}
        assert sample["label"] == (sample["defect"] != "good") == (sample["mask"].sum() > 0)
        assert Path(sample["path"]).parent.name == sample["defect"]
    train = load_category(small_set, "grass")["train"]
    assert len(train) == SMALL.train and not train.has_anomalies and test.has_anomalies


def test_the_default_preprocessing_is_torchvisions_resize_256_crop_224_imagenet(tmp_path):
    from torchvision import transforms

    picture = Image.fromarray(np.random.default_rng(1).integers(0, 255, (300, 400, 3), np.uint8))
    thesis = transforms.Compose(
        [
            transforms.Resize(256),
            transforms.CenterCrop(224),
            transforms.ToTensor(),
            transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
        ]
    )
    ours = Preprocess().image(picture)
    assert ours.shape == (3, 224, 224)
    assert np.allclose(ours.numpy(), thesis(picture).numpy(), atol=1e-5)
    mask = Preprocess().mask(Image.fromarray((np.arange(400)[None, :].repeat(300, 0) > 200).astype(np.uint8)))
    assert mask.shape == (1, 224, 224) and set(np.unique(mask.numpy())) == {0.0, 1.0}


def test_a_missing_train_good_is_named(tmp_path):
    folder = make_category(tmp_path)
    for image in (folder / "train" / "good").iterdir():
        image.unlink()
    with pytest.raises(UsageError, match=r"train/good holds no images"):
        MVTecCategory(tmp_path, "parts", "train")
    (folder / "train" / "good").rmdir()
    with pytest.raises(UsageError, match=rf"{folder / 'train' / 'good'} is missing"):
        MVTecCategory(tmp_path, "parts", "train")


def test_a_defect_image_without_its_mask_names_the_mask_it_expects(tmp_path):
    folder = make_category(tmp_path)
    (folder / "ground_truth" / "crack" / "000_mask.png").unlink()
    with pytest.raises(
        UsageError, match=r"crack/000\.png has no mask: expected .*ground_truth/crack/000_mask\.png"
    ):
        MVTecCategory(tmp_path, "parts", "test")


def test_a_mask_of_another_size_is_refused_naming_both_sizes(tmp_path):
    folder = make_category(tmp_path, size=40)
    _png(folder / "ground_truth" / "crack" / "000_mask.png", np.zeros((32, 32), np.uint8))
    with pytest.raises(UsageError, match=r"000_mask\.png is 32x32 but its image .*000\.png is 40x40"):
        MVTecCategory(tmp_path, "parts", "test")


def test_an_unreadable_image_is_named(tmp_path):
    folder = make_category(tmp_path)
    broken = folder / "train" / "good" / "001.png"
    broken.write_bytes(b"not a png")
    with pytest.raises(UsageError, match=rf"{broken} cannot be read as an image"):
        MVTecCategory(tmp_path, "parts", "train")
    good = folder / "train" / "good" / "000.png"
    broken.write_bytes(good.read_bytes()[:200])  # a valid header, cut-off pixel data
    train = MVTecCategory(tmp_path, "parts", "train")
    with pytest.raises(UsageError, match=rf"{broken} cannot be decoded"):
        train[1]


@pytest.mark.parametrize("mode", ["L", "RGBA"])
def test_grayscale_is_repeated_to_rgb_and_alpha_dropped_with_a_warning(tmp_path, mode):
    make_category(tmp_path, mode=mode)
    with pytest.warns(UserWarning, match="grayscale" if mode == "L" else "alpha channel"):
        test = MVTecCategory(tmp_path, "parts", "test", Preprocess(resize=None, crop=None))
    sample = test[0]
    assert sample["image"].shape == (3, 32, 32)
    shown = test.preprocess.unnormalise(sample["image"])
    source = np.asarray(Image.open(sample["path"]))
    expected = np.repeat(source[..., None], 3, axis=-1) if mode == "L" else source[..., :3]
    assert np.abs(shown.astype(int) - expected).max() <= 1


def test_a_category_without_anomalous_test_images_loads(tmp_path):
    make_category(tmp_path, defects=0)
    test = MVTecCategory(tmp_path, "parts", "test")
    assert len(test) == 1 and not test.has_anomalies and test.labels.tolist() == [0]


def test_an_unknown_category_lists_the_ones_there(tmp_path):
    make_category(tmp_path)
    with pytest.raises(UsageError, match=r"no category 'screw' .*found: parts"):
        MVTecCategory(tmp_path, "screw", "test")
    with pytest.raises(UsageError, match=r"is not a folder"):
        categories(tmp_path / "nowhere")


def test_an_interrupted_build_leaves_nothing_half_written(monkeypatch):
    import medkit_anomaly.textures as textures

    def interrupted(root: Path, spec: TextureSet) -> None:
        (root / "brick").mkdir(parents=True)
        raise KeyboardInterrupt

    monkeypatch.setattr(textures, "write_textures", interrupted)
    spec = TextureSet(size=48, train=1, test_good=1, test_defect=4, seed=5)
    with pytest.raises(KeyboardInterrupt):
        embedded_textures(spec)
    cache = textures.cache_folder("anomaly")
    assert not (cache / spec.folder_name).exists()
    assert not [p for p in cache.iterdir() if p.name.startswith(".building-")]
