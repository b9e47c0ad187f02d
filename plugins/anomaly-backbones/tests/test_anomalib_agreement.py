"""medkit's PaDiM and PatchCore give anomalib's anomaly maps and image scores, number for number (issue 18, item 6).

Both libraries get the very same ResNet-18 module (random weights from a fixed seed: no file to fetch; anomalib
traces it with torch.fx, medkit hooks it), the same layers (1-3 for PaDiM, 2-3 for PatchCore) and the same
images: smoothed noise at 96 px, three of the six test images with a bright square. anomalib's torch models are
driven directly (training mode collects embeddings, then ``fit`` / the bank is set), without Lightning.

Where the two differ by design, the test makes both choose alike, so that only float32 rounding remains:

- PaDiM's random channel subset: anomalib's ``idx`` buffer is set to medkit's channels.
- PaDiM's ridge: anomalib adds 1e-5 I on top of eq. 1's 0.01 I; medkit's ridge is raised by the same 1e-5 here.
  Left unmatched, it alone moves the distances by 5e-4 relative: five times the tolerance.
- Smoothing: anomalib pads the map by reflection, medkit by replication. Unsmoothed maps (medkit sigma 0,
  anomalib's blur removed) are compared everywhere; smoothed ones (sigma 4 both) farther than the kernel's
  radius (16 px) from the border.
- PatchCore's coreset: both keep the whole bank (medkit ``coreset_fraction=1``; anomalib's bank is its stacked
  embeddings, without ``subsample_embedding``): the two coresets project and start at random differently.
- PatchCore's map upsampling: anomalib upsamples the patch scores by nearest neighbour, medkit bilinearly (as
  anomalib's own PaDiM does), so anomalib's PatchCore gets its PaDiM's bilinear ``up_sample`` and no blur.

Tolerance: relative 1e-4. Everything runs in float32 (eps 1.2e-7). PaDiM's covariances come from shifted running
sums over two batches in medkit and from a two-pass covariance of the stacked embeddings in anomalib; their
rounding differs by a few eps and the inverse amplifies it by the covariance's condition number (about 400 here),
so distances may differ by ~5e-5 relative (measured 4e-6). PatchCore's distances are |x|^2 + |y|^2 - 2 x.y in
both (FAISS, anomalib's matmul) summed in other orders: measured 1e-5 relative. The absolute tolerance 1e-4 only
covers values near zero.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import scipy.ndimage as ndi
import torch
from torch import nn

from medkit_anomaly.backbones import FeatureExtractor
from medkit_anomaly.methods import padim as padim_module
from medkit_anomaly.methods.padim import PaDiM
from medkit_anomaly.methods.patchcore import PatchCore

pytest.importorskip("anomalib", reason="anomalib is the optional test oracle (the plugin's test extra)")
from anomalib.models.image.padim.anomaly_map import AnomalyMapGenerator
from anomalib.models.image.padim.torch_model import PadimModel
from anomalib.models.image.patchcore.torch_model import PatchcoreModel

pytestmark = pytest.mark.usefixtures("one_thread")

SIZE, D, REWEIGHT = 96, 40, 9
PADIM_LAYERS, PATCHCORE_LAYERS = ["layer1", "layer2", "layer3"], ["layer2", "layer3"]
# anomalib's MultiVariateGaussian.forward: covariance + 0.01 I, then + 1e-5 I before inverting
ANOMALIB_EXTRA_RIDGE = 1e-5
BLUR_RADIUS = 16  # 4 sigma at sigma 4, in both libraries
TOLERANCE = {"rtol": 1e-4, "atol": 1e-4}


def textures(n: int, rng: np.random.Generator) -> torch.Tensor:
    noise = ndi.gaussian_filter(rng.normal(size=(n, 3, SIZE, SIZE)), sigma=(0, 0, 2, 2))
    return torch.from_numpy(noise / noise.std(axis=(1, 2, 3), keepdims=True)).float()


@pytest.fixture(scope="module")
def network() -> nn.Module:
    import torchvision

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return torchvision.models.resnet18(weights=None).eval()


@pytest.fixture(scope="module")
def images() -> dict[str, Any]:
    """16 normal training images in two batches (medkit's running sums see more than one); 6 test images."""
    rng = np.random.default_rng(0)
    train, test = textures(16, rng), textures(6, rng)
    test[3:, :, 30:50, 40:60] += 3.0
    return {"batches": [train[:8], train[8:]], "test": test}


def assert_close(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    torch.testing.assert_close(ours, theirs.reshape(ours.shape), **TOLERANCE)


def assert_defects_score_higher(scores: torch.Tensor) -> None:
    """A check of the set-up itself: maps that agree but carry no signal would prove little."""
    assert scores[3:].min() > scores[:3].max()


class BilinearUpsample(nn.Module):
    """anomalib's PaDiM map upsampling (bilinear, no corner alignment), without smoothing, for its PatchCore."""

    def forward(self, patch_scores: torch.Tensor, image_size: torch.Size) -> torch.Tensor:
        return AnomalyMapGenerator.up_sample(patch_scores, image_size)


@pytest.fixture(scope="module")
def padims(network: nn.Module, images: dict[str, Any]) -> tuple[PaDiM, PadimModel]:
    extractor = FeatureExtractor(network, PADIM_LAYERS, name="resnet18")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(padim_module, "COVARIANCE_RIDGE", padim_module.COVARIANCE_RIDGE + ANOMALIB_EXTRA_RIDGE)
        ours = PaDiM(extractor, d=D, seed=7, sigma=0).fit(images["batches"])
    theirs = PadimModel(backbone=network, layers=PADIM_LAYERS, pre_trained=False, n_features=D)
    theirs.idx.copy_(ours.channels)
    theirs.train()  # training mode: forward() stores the embeddings, fit() estimates the Gaussians
    for batch in images["batches"]:
        theirs(batch)
    theirs.fit()
    return ours, theirs.eval()


def anomalib_output(model: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        out = model(images)
    return out.pred_score, out.anomaly_map


def test_padim_gaussians_equal_anomalibs(padims: tuple[PaDiM, PadimModel]) -> None:
    ours, theirs = padims
    assert_close(ours.mean, theirs.gaussian.mean.T)  # anomalib: (d, positions); medkit: (positions, d)
    # relative to the largest entry: the small off-diagonal entries of an inverse carry its rounding
    scale = theirs.gaussian.inv_covariance.abs().max()
    assert_close(ours.inv_covariance / scale, theirs.gaussian.inv_covariance / scale)


def set_smoothing(ours: PaDiM, theirs: PadimModel, sigma: int) -> None:
    """Both PaDiMs' map smoothing: a Gaussian of std ``sigma`` px (4, anomalib's default), none at 0."""
    ours.sigma = sigma
    theirs.anomaly_map_generator.blur = AnomalyMapGenerator(sigma=sigma).blur if sigma else nn.Identity()


def test_padim_maps_and_scores_equal_anomalibs(
    padims: tuple[PaDiM, PadimModel], images: dict[str, Any]
) -> None:
    ours, theirs = padims
    set_smoothing(ours, theirs, 0)
    our_scores, our_maps = ours.predict(images["test"])
    their_scores, their_maps = anomalib_output(theirs, images["test"])
    assert_close(our_maps, their_maps)
    assert_close(our_scores, their_scores)  # both: the maximum of the (unsmoothed) map
    assert_defects_score_higher(our_scores)


def test_padim_smoothed_maps_equal_anomalibs_away_from_the_border(
    padims: tuple[PaDiM, PadimModel], images: dict[str, Any]
) -> None:
    ours, theirs = padims
    set_smoothing(ours, theirs, 4)
    _, our_maps = ours.predict(images["test"])
    _, their_maps = anomalib_output(theirs, images["test"])
    inside = (slice(None), slice(BLUR_RADIUS, -BLUR_RADIUS), slice(BLUR_RADIUS, -BLUR_RADIUS))
    assert_close(our_maps[inside], their_maps.reshape(our_maps.shape)[inside])


@pytest.fixture(scope="module")
def patchcores(network: nn.Module, images: dict[str, Any]) -> tuple[PatchCore, PatchcoreModel]:
    extractor = FeatureExtractor(network, PATCHCORE_LAYERS, name="resnet18")
    ours = PatchCore(extractor, coreset_fraction=1.0, reweight_neighbours=REWEIGHT, sigma=0)
    ours.fit(images["batches"])
    theirs = PatchcoreModel(
        backbone=network, layers=PATCHCORE_LAYERS, pre_trained=False, num_neighbors=REWEIGHT
    )
    theirs.train()  # training mode: forward() stores the patch embeddings
    for batch in images["batches"]:
        theirs(batch)
    # the whole bank, as medkit's coreset_fraction=1
    theirs.memory_bank = torch.vstack(theirs.embedding_store)
    theirs.anomaly_map_generator = BilinearUpsample()
    return ours, theirs.eval()


def test_patchcore_bank_equals_anomalibs(patchcores: tuple[PatchCore, PatchcoreModel]) -> None:
    """The locally aware patch features (3x3 average, layer 3 upsampled to layer 2's grid), in the same order."""
    ours, theirs = patchcores
    bank = torch.from_numpy(ours.memory.reconstruct(np.arange(ours.memory.ntotal)))
    assert bank.shape == theirs.memory_bank.shape == (16 * 12 * 12, 128 + 256)
    assert_close(bank, theirs.memory_bank)


def test_patchcore_maps_and_reweighted_scores_equal_anomalibs(
    patchcores: tuple[PatchCore, PatchcoreModel], images: dict[str, Any]
) -> None:
    ours, theirs = patchcores
    our_scores, our_maps = ours.predict(images["test"])
    their_scores, their_maps = anomalib_output(theirs, images["test"])
    assert_close(our_maps, their_maps)
    # eq. 7: the largest patch score, weighted by 1 - softmax over the 9 bank neighbours of its nearest feature
    assert_close(our_scores, their_scores)
    assert_defects_score_higher(our_scores)
