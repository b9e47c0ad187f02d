"""The methods as architectures for `--arch`: each factory builds the method over a feature extractor.

Recipes pass the extractor they built from ``backbone``/``weights``/``layers``; without one (as `medkit
describe` builds them, to count parameters) the study's offline backbone EfficientNet-Lite0 is used with random
weights.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from .methods import method_class
from .methods.base import AnomalyModel


def build_method(name: str, extractor: nn.Module | None = None, **options: Any) -> AnomalyModel:
    if extractor is None:
        from .backbones import build_backbone

        extractor = build_backbone("efficientnet_lite0", weights="random")
        # under `medkit describe` the weights live on torch's meta device; keep the method beside them
        options.setdefault("device", next(extractor.parameters()).device)
    return method_class(name)(extractor, **options)


def spade(extractor: nn.Module | None = None, **options: Any) -> AnomalyModel:
    """SPADE: kNN over global features, then pixel kNN against the retrieved images (options: k, kappa,
    image_feature, sigma)."""
    return build_method("spade", extractor, **options)


def padim(extractor: nn.Module | None = None, **options: Any) -> AnomalyModel:
    """PaDiM: a Gaussian per position over a random channel subset (options: d, sigma)."""
    return build_method("padim", extractor, **options)


def patchcore(extractor: nn.Module | None = None, **options: Any) -> AnomalyModel:
    """PatchCore: a coreset memory bank of locally aggregated patches (options: coreset_fraction, layers, ...)."""
    return build_method("patchcore", extractor, **options)


def cflow(extractor: nn.Module | None = None, **options: Any) -> AnomalyModel:
    """CFLOW-AD: conditional normalising flows over multi-scale features (options: blocks, epochs, ...)."""
    return build_method("cflow", extractor, **options)
