"""The anomaly methods and their FAISS search, on a random three-stage conv net and synthetic textures.

The textures are smoothed Gaussian noise; a defect is a bright 16 px square. The extractor here is a stand-in for
the plugin's backbones: any module with the FeatureExtractor contract (maps at strides 4, 8, 16) will do.
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import faiss
import numpy as np
import pytest
import scipy.ndimage as ndi
import torch
from sklearn.metrics import roc_auc_score
from sklearn.neighbors import NearestNeighbors
from torch import nn

from medkit import UsageError
from medkit_anomaly.knn import NearestNeighbours
from medkit_anomaly.methods import method_class, patchcore
from medkit_anomaly.methods.base import AnomalyModel
from medkit_anomaly.methods.cflow import CFlow
from medkit_anomaly.methods.padim import GaussianSums, PaDiM, random_channels
from medkit_anomaly.methods.patchcore import PatchCore, greedy_coreset
from medkit_anomaly.methods.spade import SPADE

pytestmark = pytest.mark.usefixtures("one_thread")

SIZE, DEFECT = 64, 16
needs_peak_reset = pytest.mark.skipif(
    not Path("/proc/self/clear_refs").exists(), reason="needs Linux's /proc peak-memory reset"
)


class RandomConvNet(nn.Module):
    """Three strided conv stages with random weights: maps of 16, 32, 64 channels at strides 4, 8, 16; and, as
    the plugin's backbones, the network's final pooled feature (a fourth stage, average-pooled: 96 channels)."""

    layers = ("stage1", "stage2", "stage3")
    channels = (16, 32, 64)
    embedding_dim = 112
    default_d = 50
    pooled_dim = 96

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.stages = nn.ModuleList(
            [
                nn.Sequential(nn.Conv2d(3, 16, kernel_size=4, stride=4), nn.ReLU()),
                nn.Sequential(nn.Conv2d(16, 32, kernel_size=3, stride=2, padding=1), nn.ReLU()),
                nn.Sequential(nn.Conv2d(32, 64, kernel_size=3, stride=2, padding=1), nn.ReLU()),
            ]
        )
        self.last_stage = nn.Sequential(nn.Conv2d(64, 96, kernel_size=3, stride=2, padding=1), nn.ReLU())

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        maps = []
        for stage in self.stages:
            x = stage(x)
            maps.append(x)
        return maps

    def forward_pooled(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        maps = self.forward(x)
        return maps, self.last_stage(maps[-1]).mean(dim=(2, 3))


def textures(n: int, rng: np.random.Generator, size: int = SIZE) -> torch.Tensor:
    noise = ndi.gaussian_filter(rng.normal(size=(n, 3, size, size)), sigma=(0, 0, 2, 2))
    return torch.from_numpy(noise / noise.std(axis=(1, 2, 3), keepdims=True)).float()


@pytest.fixture(scope="module")
def data() -> dict[str, torch.Tensor]:
    """40 normal training images; 10 normal and 10 defective test images with the defects' masks."""
    rng = np.random.default_rng(0)
    train, normal, defective = textures(40, rng), textures(10, rng), textures(10, rng)
    masks = torch.zeros(20, SIZE, SIZE, dtype=torch.bool)
    for i in range(10):
        r, c = rng.integers(8, SIZE - 8 - DEFECT, size=2)
        defective[i, :, r : r + DEFECT, c : c + DEFECT] += 3.0
        masks[10 + i, r : r + DEFECT, c : c + DEFECT] = True
    return {
        "train": train,
        "test": torch.cat([normal, defective]),
        "masks": masks,
        "labels": torch.arange(20) >= 10,
    }


METHODS = {
    "spade": lambda: SPADE(RandomConvNet(), k=10),
    "spade-last-layer": lambda: SPADE(RandomConvNet(), k=10, image_feature="last_layer"),
    "padim": lambda: PaDiM(RandomConvNet()),
    "patchcore": lambda: PatchCore(RandomConvNet()),
    "patchcore-reweighted": lambda: PatchCore(RandomConvNet(), reweight_neighbours=9),
    "patchcore-ivf": lambda: PatchCore(RandomConvNet(), coreset_fraction=0.25, index="ivf", nlist=16),
    "cflow": lambda: CFlow(RandomConvNet(), blocks=4, condition_dim=32, epochs=2, fiber_batch=512),
}


@pytest.fixture(scope="module")
def fitted(data: dict[str, torch.Tensor]) -> dict[str, tuple[AnomalyModel, torch.Tensor, torch.Tensor]]:
    """Every method fitted once on the training images, with its scores and maps of the test images."""
    results = {}
    for name, build in METHODS.items():
        model = build().fit(data["train"].split(8))
        results[name] = (model, *model.predict(data["test"]))
    return results


# FAISS search


def test_exact_faiss_search_finds_sklearns_neighbours_at_euclidean_distances() -> None:
    rng = np.random.default_rng(1)
    bank, queries = rng.normal(size=(3000, 24)), rng.normal(size=(300, 24))
    distances, indices = NearestNeighbours().add(bank).search(queries, 5)
    expected_distances, expected_indices = NearestNeighbors(n_neighbors=5).fit(bank).kneighbors(queries)
    np.testing.assert_array_equal(indices, expected_indices)
    np.testing.assert_allclose(distances, expected_distances, rtol=1e-4)


def test_ivf_search_recalls_the_exact_nearest_neighbour_at_least_90_percent_on_clustered_data() -> None:
    rng = np.random.default_rng(2)
    centres = rng.normal(scale=10, size=(50, 32))
    bank = (centres[rng.integers(50, size=20_000)] + rng.normal(size=(20_000, 32))).astype(np.float32)
    queries = centres[rng.integers(50, size=500)] + rng.normal(size=(500, 32))
    _, exact = NearestNeighbours().add(bank).search(queries, 1)
    _, approximate = NearestNeighbours(index="ivf", nlist=64, nprobe=8).add(bank).search(queries, 1)
    assert (approximate == exact).mean() >= 0.9


def test_a_saved_index_answers_as_the_original() -> None:
    bank = np.random.default_rng(3).normal(size=(4000, 16))
    original = NearestNeighbours(index="ivfpq", nlist=32, nprobe=4, pq_m=4).add(bank)
    restored = NearestNeighbours()
    restored.load_state_dict(original.state_dict())
    for result, expected in zip(restored.search(bank[:50], 3), original.search(bank[:50], 3), strict=True):
        np.testing.assert_array_equal(result, expected)


def test_asking_for_gpu_search_without_a_gpu_warns_and_searches_on_the_cpu(monkeypatch) -> None:
    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 0)  # as on a machine without one, wherever this runs
    with pytest.warns(UserWarning, match="no GPU"):
        index = NearestNeighbours(gpu=True).add(np.eye(4))
    assert index.search(np.eye(4), 1)[1].ravel().tolist() == [0, 1, 2, 3]


# PatchCore's coreset


def test_a_coreset_of_one_point_per_cluster_covers_every_cluster() -> None:
    rng = np.random.default_rng(4)
    centres = rng.normal(scale=20, size=(12, 256))
    labels = np.repeat(np.arange(12), 100)
    points = torch.from_numpy(centres[labels] + rng.normal(size=(1200, 256))).float()
    chosen = greedy_coreset(points, 12, projection_dim=128)  # 256 dims: selected in the 128-dim projection
    assert sorted(labels[chosen.numpy()]) == list(range(12))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_greedy_coreset_covering_radius_is_within_twice_the_optimum(seed: int) -> None:
    """Greedy k-centre is Gonzalez's 2-approximation; checked against brute force on 14 points, k = 3."""
    points = torch.from_numpy(np.random.default_rng(seed).normal(size=(14, 2))).float()
    distances = torch.cdist(points, points)

    def radius(centres: list[int]) -> float:
        return float(distances[:, centres].min(dim=1).values.max())

    optimum = min(radius(list(c)) for c in itertools.combinations(range(14), 3))
    assert radius(greedy_coreset(points, 3, seed=seed).tolist()) <= 2 * optimum + 1e-6


def test_a_bfloat16_bank_covers_the_patches_almost_as_tightly_as_float32(monkeypatch) -> None:
    """Large banks are selected in bfloat16 (memory-bound loop); the covering radius, measured exactly in float32,
    stays within 3 % of the float32 selection's on clustered patch-like features."""
    generator = torch.Generator().manual_seed(5)
    centres = torch.randn(40, 128, generator=generator) * 3
    points = centres[torch.randint(40, (6000,), generator=generator)] + torch.randn(
        6000, 128, generator=generator
    )
    points = points.relu()

    def radius(chosen: torch.Tensor) -> float:
        return float(torch.cdist(points, points[chosen]).min(dim=1).values.max())

    exact = radius(greedy_coreset(points, 300))  # 3 MB: below the threshold, float32
    monkeypatch.setattr(patchcore, "BFLOAT16_BANK_BYTES", 0)
    in_bfloat16 = greedy_coreset(points, 300)
    assert radius(in_bfloat16) <= 1.03 * exact
    assert len(set(in_bfloat16.tolist())) == 300


def peak_memory_growth(work) -> int:
    """Bytes by which the process's peak resident memory rises above its current size while ``work()`` runs."""

    def status(field: str) -> int:
        return 1024 * int(re.search(rf"{field}:\s+(\d+)", Path("/proc/self/status").read_text()).group(1))

    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current resident size
    before = status("VmRSS")
    work()
    return status("VmHWM") - before


@needs_peak_reset
def test_coreset_selection_never_builds_an_n_by_n_matrix() -> None:
    """40,000 vectors: an N x N float matrix would take 6.4 GB; selection stays within a few copies of the bank."""
    vectors = torch.randn(40_000, 256)
    growth = peak_memory_growth(lambda: greedy_coreset(vectors, 50))
    assert growth < 2 * vectors.numel() * 4  # 82 MB, against 6,400 MB for N x N


# PaDiM


def stacked_embeddings(model: PaDiM, images: torch.Tensor) -> np.ndarray:
    embedding = model.embed(images).double().numpy()
    n, d, h, w = embedding.shape
    return embedding.reshape(n, d, h * w).transpose(2, 0, 1)  # (positions, images, d)


@pytest.mark.parametrize(
    "chunk_bytes", [2**26, 4 * 20 * 20 * 100], ids=["one-chunk", "chunks-of-100-positions"]
)
def test_padims_online_mean_and_covariance_equal_numpys_on_the_stacked_embeddings(
    data: dict[str, torch.Tensor], chunk_bytes: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(GaussianSums, "chunk_bytes", chunk_bytes)
    images = data["train"][:30]
    model = PaDiM(RandomConvNet(), d=20).fit([images[:13], images[13:14], images[14:]])
    per_position = stacked_embeddings(model, images)
    covariance = np.stack([np.cov(x, rowvar=False, ddof=1) for x in per_position]) + 0.01 * np.eye(20)
    np.testing.assert_allclose(model.mean.numpy(), per_position.mean(axis=1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.inv_covariance.numpy(), np.linalg.inv(covariance), rtol=1e-3, atol=1e-3)


def test_float32_sums_keep_the_covariance_of_features_far_from_zero() -> None:
    """Activations of 1000 +- 1: unshifted float32 sums of x x^T (~1e6 per image) would lose the variance (~1)
    to rounding; the shifted sums recover numpy's float64 covariance."""
    generator = torch.Generator().manual_seed(3)
    mixing = torch.randn(6, 6, generator=generator)
    batches = [1000 + torch.randn(25, 4, 6, generator=generator) @ mixing for _ in range(8)]  # (B, P, d)
    sums = GaussianSums(positions=4, d=6, device=torch.device("cpu"))
    for batch in batches:
        sums.add(batch)
    mean, inverse = sums.finish()
    stacked = torch.cat(batches).double().numpy().transpose(1, 0, 2)  # (P, N, d)
    covariance = np.stack([np.cov(x, rowvar=False) for x in stacked]) + 0.01 * np.eye(6)
    np.testing.assert_allclose(mean.numpy(), stacked.mean(axis=1), rtol=1e-6)
    np.testing.assert_allclose(inverse.numpy(), np.linalg.inv(covariance), rtol=1e-3, atol=1e-4)


def test_the_same_seed_draws_the_same_channels_and_another_seed_others() -> None:
    assert torch.equal(PaDiM(RandomConvNet(), seed=1024).channels, PaDiM(RandomConvNet(), seed=1024).channels)
    assert not torch.equal(random_channels(112, 50, seed=1024), random_channels(112, 50, seed=7))
    assert len(random_channels(112, 50, seed=1024).unique()) == 50


def test_a_d_larger_than_the_embedding_is_refused_naming_both() -> None:
    with pytest.raises(UsageError, match=r"d=200.*dimension 112"):
        PaDiM(RandomConvNet(), d=200)


class Pointwise(nn.Module):
    """A cheap extractor for memory checks: one 1x1 convolution to 16 channels at full resolution."""

    layers, channels, embedding_dim, default_d = ("conv",), (16,), 16, 16

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 16, kernel_size=1)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [self.conv(x)]


@needs_peak_reset
def test_padim_fitting_holds_the_covariances_not_the_training_embeddings() -> None:
    """3,000 images of 32 x 32 positions x 16 channels: 197 MB of embeddings, were they stacked.

    Fitting holds the float32 sums (1 MB), the inverses (1 MB) and one batch of 20 images at a time.
    """
    # a first fit on batches of the same shape pages in library code and kernels: not the claim
    PaDiM(Pointwise()).fit(torch.randn(20, 3, 32, 32) for _ in range(2))
    model = PaDiM(Pointwise())
    batches = (torch.randn(20, 3, 32, 32) for _ in range(150))
    growth = peak_memory_growth(lambda: model.fit(batches))
    stacked = 3000 * 16 * 32 * 32 * 4
    assert growth < stacked / 8


def test_cflow_with_a_fiber_budget_takes_that_many_fibers_per_epoch(data, monkeypatch) -> None:
    steps: list[int] = []
    step = torch.optim.Adam.step
    monkeypatch.setattr(
        torch.optim.Adam, "step", lambda self, *a, **k: (steps.append(1), step(self, *a, **k))[1]
    )
    model = CFlow(
        RandomConvNet(),
        layers=(0,),
        blocks=2,
        condition_dim=32,
        epochs=2,
        fiber_batch=100,
        fibers_per_epoch=300,
    )
    model.fit(data["train"][:4])  # 300 of the 4 images' thousands of fibers per epoch
    assert len(steps) == 2 * 3


# SPADE against brute force


class TableExtractor(nn.Module):
    """Features looked up, not computed: image i (every pixel holds i) has the maps ``maps[l][i]`` and the final
    pooled feature ``pooled[i]``, so SPADE's searches run on features drawn at random."""

    def __init__(self, maps: list[torch.Tensor], pooled: torch.Tensor) -> None:
        super().__init__()
        self.maps, self.pooled = maps, pooled
        self.channels = [m.shape[1] for m in maps]
        self.pooled_dim = pooled.shape[1]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [m[x[:, 0, 0, 0].long()] for m in self.maps]

    def forward_pooled(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        return self.forward(x), self.pooled[x[:, 0, 0, 0].long()]


def spade_by_brute_force(
    train: list[np.ndarray],
    test: list[np.ndarray],
    train_global: np.ndarray,
    test_global: np.ndarray,
    k: int,
    kappa: int,
) -> tuple[np.ndarray, np.ndarray]:
    """SPADE in float64 numpy, every distance computed: image scores (T,) and maps (T, H, W), maps at input size."""
    distances = np.linalg.norm(test_global[:, None] - train_global[None], axis=2)  # (T, N)
    nearest = np.argsort(distances, axis=1)[:, :k]
    scores = np.take_along_axis(distances, nearest, axis=1).mean(axis=1)
    maps = []
    for t in range(len(test_global)):
        layer_maps = []
        for train_map, test_map in zip(train, test, strict=True):
            channels, height, width = test_map.shape[1:]
            gallery = train_map[nearest[t]].transpose(0, 2, 3, 1).reshape(-1, channels)
            queries = test_map[t].transpose(1, 2, 0).reshape(-1, channels)
            to_gallery = np.linalg.norm(queries[:, None] - gallery[None], axis=2)
            layer_maps.append(np.sort(to_gallery, axis=1)[:, :kappa].mean(axis=1).reshape(height, width))
        maps.append(np.mean(layer_maps, axis=0))
    return scores, np.stack(maps)


@pytest.mark.parametrize("image_feature", ["avgpool", "last_layer"])
def test_spades_image_and_pixel_knn_equal_a_brute_force_computation(image_feature: str) -> None:
    """12 training and 5 test images with random features: two layers at the input's 6 x 6 (no upsampling), a
    pooled feature of 5; K = 3 images, kappa = 2 gallery neighbours, no smoothing."""
    generator = torch.Generator().manual_seed(6)
    maps = [torch.randn(17, channels, 6, 6, generator=generator) for channels in (4, 7)]
    pooled = torch.randn(17, 5, generator=generator)
    images = torch.arange(17, dtype=torch.float32).view(-1, 1, 1, 1).expand(-1, 3, 6, 6)
    model = SPADE(TableExtractor(maps, pooled), k=3, kappa=2, image_feature=image_feature, sigma=0)
    scores, anomaly_maps = model.fit(images[:12].split(5)).predict(images[12:], batch_size=2)
    layers = [m.double().numpy() for m in maps]
    global_features = pooled.double().numpy() if image_feature == "avgpool" else layers[-1].mean(axis=(2, 3))
    expected_scores, expected_maps = spade_by_brute_force(
        [m[:12] for m in layers], [m[12:] for m in layers], global_features[:12], global_features[12:], 3, 2
    )
    np.testing.assert_allclose(scores.numpy(), expected_scores, rtol=1e-5)
    np.testing.assert_allclose(anomaly_maps.numpy(), expected_maps, rtol=1e-4, atol=1e-5)


def test_spade_pools_the_networks_final_feature_unless_told_the_last_layer() -> None:
    """The two image features retrieve different neighbours for the same maps (their pooled features differ)."""
    generator = torch.Generator().manual_seed(7)
    maps = [torch.randn(20, 4, 6, 6, generator=generator)]
    pooled = torch.randn(20, 5, generator=generator)
    images = torch.arange(20, dtype=torch.float32).view(-1, 1, 1, 1).expand(-1, 3, 6, 6)
    avgpool = SPADE(TableExtractor(maps, pooled), k=1, sigma=0).fit(images[:15])
    last = SPADE(TableExtractor(maps, pooled), k=1, image_feature="last_layer", sigma=0).fit(images[:15])
    assert torch.equal(avgpool.train_features, pooled[:15])
    assert torch.equal(last.train_features, maps[0][:15].mean(dim=(2, 3)))
    assert not torch.equal(avgpool.predict(images[15:])[0], last.predict(images[15:])[0])


def test_spade_asks_for_the_last_layer_when_the_extractor_has_no_pooled_feature() -> None:
    with pytest.raises(UsageError, match="image_feature='last_layer'"):
        SPADE(Pointwise())
    with pytest.raises(UsageError, match="avgpool, last_layer"):
        SPADE(RandomConvNet(), image_feature="pooled")
    assert SPADE(Pointwise(), image_feature="last_layer").config["image_feature"] == "last_layer"


def test_a_spade_model_saved_before_image_feature_existed_loads_as_last_layer(fitted, data, tmp_path) -> None:
    """Older checkpoints pooled the last map and saved neither the option nor the global features."""
    model, scores, maps = fitted["spade-last-layer"]
    state = model.state_dict()
    del state["config"]["image_feature"], state["fitted"]["train_features"]
    loaded = SPADE.from_state(RandomConvNet(seed=1), state)
    assert loaded.image_feature == "last_layer"
    loaded_scores, loaded_maps = loaded.predict(data["test"])
    assert torch.equal(loaded_scores, scores) and torch.equal(loaded_maps, maps)


# all methods


@pytest.mark.parametrize("name", METHODS)
def test_every_method_ranks_defective_images_above_normal_ones(name: str, fitted, data) -> None:
    _, scores, maps = fitted[name]
    assert scores.shape == (20,) and maps.shape == (20, SIZE, SIZE)
    assert roc_auc_score(data["labels"].numpy(), scores.numpy()) > 0.9


@pytest.mark.parametrize("name", METHODS)
def test_every_methods_map_peaks_inside_the_defect(name: str, fitted, data) -> None:
    _, _, maps = fitted[name]
    peaks = maps[10:].flatten(1).argmax(dim=1)
    inside = data["masks"][10:].flatten(1)[torch.arange(10), peaks]
    assert inside.sum() >= 9, (
        f"{name}: the map's maximum lies outside the defect in {10 - inside.sum()} of 10 images"
    )


@pytest.mark.parametrize("name", METHODS)
def test_a_saved_and_loaded_model_gives_identical_scores(name: str, fitted, data, tmp_path: Path) -> None:
    model, scores, maps = fitted[name]
    model.save(tmp_path / "model.pt")
    # another random extractor: the saved state must bring back the weights the model was fitted with
    loaded = type(model).load(tmp_path / "model.pt", RandomConvNet(seed=1))
    loaded_scores, loaded_maps = loaded.predict(data["test"])
    assert torch.equal(loaded_scores, scores) and torch.equal(loaded_maps, maps)


def test_patchcores_reweighting_only_lowers_image_scores(fitted) -> None:
    """Eq. 7's weight lies in [0, 1): the reweighted score never exceeds the largest patch score."""
    plain, reweighted = fitted["patchcore"][1], fitted["patchcore-reweighted"][1]
    assert torch.all(reweighted <= plain) and torch.all(reweighted > 0)


def test_spade_caps_k_at_the_training_set_size_and_says_so(data) -> None:
    with pytest.warns(UserWarning, match="k=50 exceeds the 8 training images"):
        model = SPADE(RandomConvNet()).fit(data["train"][:8])
    assert model.k_used == 8


def test_a_model_loaded_with_other_options_is_refused(fitted, tmp_path: Path) -> None:
    fitted["padim"][0].save(tmp_path / "padim.pt")
    with pytest.raises(UsageError, match="fitted with other options"):
        PaDiM(RandomConvNet(), d=10).load_state_dict(torch.load(tmp_path / "padim.pt", weights_only=True))


def test_bad_images_get_a_message_naming_the_expected_shape(fitted) -> None:
    with pytest.raises(UsageError, match=r"\(N, 3, H, W\).*\(2, 1, 64, 64\)"):
        fitted["padim"][0].predict(torch.zeros(2, 1, 64, 64))
    with pytest.raises(UsageError, match="predict before fit"):
        PaDiM(RandomConvNet()).predict(torch.zeros(1, 3, 64, 64))
    with pytest.raises(UsageError, match="fit received no images"):
        PatchCore(RandomConvNet()).fit([])


def test_methods_are_found_by_name() -> None:
    assert method_class("patchcore") is PatchCore
    with pytest.raises(UsageError, match="spade, padim, patchcore, cflow"):
        method_class("fastflow")
