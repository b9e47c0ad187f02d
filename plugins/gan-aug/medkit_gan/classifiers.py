"""The classifiers of paper 001's comparison (ResNet34, DenseNet169, EfficientNet-B2) trained on one ImageSet and
scored on the real validation set.

Paper 001, "Protocol of the classifier comparison": ImageNet-pretrained networks, only basic augmentations
(rotations by 90 degrees, vertical and horizontal flips, brightness, contrast and saturation scaled in
[0.8, 1.2]) and a sampler that draws every class with the same probability. The paper names no optimiser,
learning rate or schedule: this module uses Adam at a constant learning rate (1e-3 by default) with
cross-entropy, a common choice for fine-tuning these networks, and says so in its results.

ImageNet weights come from local files only (medkit.weights): torchvision's file in the torch hub cache, a state
dict the user names, or "random" for training from scratch; every result names the weights it used.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from medkit import RunError, UsageError
from medkit.weights import find_weights_file, fit_state_dict, read_state_dict

from .imageset import ImageSet, balanced_weights

CLASSIFIER_ARCHS = ("resnet34", "densenet169", "efficientnet_b2")
DISPLAY_NAMES = {"resnet34": "ResNet34", "densenet169": "DenseNet169", "efficientnet_b2": "EfficientNet-B2"}
MIN_SIZE = {"resnet34": 8, "densenet169": 32, "efficientnet_b2": 8}
"""Smallest image side each network accepts: DenseNet's last transition pools a 2 x 2 map, 1 x 1 below 32 px."""
HEAD_KEYS = {
    "resnet34": "fc.weight",
    "densenet169": "classifier.weight",
    "efficientnet_b2": "classifier.1.weight",
}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
COLOUR_RANGE = (0.8, 1.2)
"""Paper 001: brightness, contrast and saturation factors drawn uniformly from [0.8, 1.2]."""
GREY = (0.299, 0.587, 0.114)
"""ITU-R 601 luma weights, the grey image that contrast and saturation blend towards."""
RANDOM = "random"
OPTIMISER = "Adam, constant learning rate, cross-entropy (the paper names no optimiser)"


def check_arch(arch: str) -> None:
    if arch not in CLASSIFIER_ARCHS:
        raise UsageError(f"classifier {arch!r} is not offered; choose from {', '.join(CLASSIFIER_ARCHS)}")


def _hub_weights_file(arch: str) -> Path:
    """torchvision's ImageNet file for ``arch`` in the torch hub cache; absent: a UsageError that says where to
    put it and how to train from scratch instead."""
    import torchvision

    url = torchvision.models.get_model_weights(arch).DEFAULT.url
    try:
        return find_weights_file(Path(url).name, url, what=f"classifier {arch}")
    except UsageError as err:
        raise UsageError(f"{err} Or train from scratch with --set classify.weights={RANDOM}.") from None


def _densenet_key(key: str) -> str:
    """torchvision's DenseNet files predate its module names: 'denselayer1.norm.1.weight' is 'norm1.weight'."""
    return re.sub(r"(denselayer\d+\.(?:norm|relu|conv))\.([12])\.", r"\1\2.", key)


def _head(model: nn.Module, arch: str) -> nn.Linear:
    if arch == "resnet34":
        return model.fc
    if arch == "densenet169":
        return model.classifier
    return model.classifier[1]


def _replace_head(model: nn.Module, arch: str, num_classes: int) -> None:
    new = nn.Linear(_head(model, arch).in_features, num_classes)
    if arch == "resnet34":
        model.fc = new
    elif arch == "densenet169":
        model.classifier = new
    else:
        model.classifier[1] = new


def _file_classes(state: dict[str, Tensor], arch: str) -> int:
    """Output size of the file's final layer: its named head, or (a file ported with other key names, matched by
    order) its last matrix."""
    head = state.get(HEAD_KEYS[arch])
    if head is None:
        matrices = [v for v in state.values() if v.ndim == 2]
        if not matrices:
            raise UsageError(f"weights file has no final layer for {arch}: is it a state dict of {arch}?")
        head = matrices[-1]
    return int(head.shape[0])


def build_classifier(arch: str, num_classes: int, weights: str | Path | None = None) -> tuple[nn.Module, str]:
    """``arch`` with a new final layer of ``num_classes`` outputs, and a description of its weights.

    ``weights``: a local state-dict file (ImageNet weights; its final layer is kept only when it already has
    ``num_classes`` outputs), "random" (random initialisation), or None (torchvision's ImageNet file in the torch
    hub cache, e.g. ~/.cache/torch/hub/checkpoints/resnet34-b627a593.pth).
    """
    import torchvision

    check_arch(arch)
    if isinstance(weights, str) and weights == RANDOM:
        return torchvision.models.get_model(
            arch, weights=None, num_classes=num_classes
        ), "random initialisation"
    if weights is None:
        path = _hub_weights_file(arch)
    else:
        path = Path(weights)
        if not path.is_file():
            raise UsageError(
                f"classifier weights file {path} does not exist: give a state dict of {arch}, "
                f"'{RANDOM}' to train from scratch, or nothing to use torchvision's ImageNet file from the torch "
                "hub cache"
            )
    state = read_state_dict(path)
    if arch == "densenet169":
        state = {_densenet_key(k): v for k, v in state.items()}
    # Load into a network whose head has the file's shape, then swap the head: every other tensor is checked.
    file_classes = _file_classes(state, arch)
    model = torchvision.models.get_model(arch, weights=None, num_classes=file_classes)
    fit_state_dict(model, state, str(path), arch)
    if file_classes != num_classes:
        _replace_head(model, arch, num_classes)
    return model, f"ImageNet ({path})"


def apply_geometry(images: Tensor, turns: Tensor, hflip: Tensor, vflip: Tensor) -> Tensor:
    """Rotate each image by ``turns`` x 90 degrees, then mirror left-right and top-bottom where asked."""
    out = images.clone()
    for k in (1, 2, 3):
        chosen = (turns == k).nonzero().flatten().to(images.device)
        if len(chosen):
            out[chosen] = torch.rot90(images[chosen], k, dims=(-2, -1))
    out = torch.where(hflip.view(-1, 1, 1, 1).to(images.device), out.flip(-1), out)
    return torch.where(vflip.view(-1, 1, 1, 1).to(images.device), out.flip(-2), out)


def _grey(images: Tensor) -> Tensor:
    weights = torch.tensor(GREY, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    return (images * weights).sum(dim=1, keepdim=True)


def adjust_colour(images: Tensor, brightness: Tensor, contrast: Tensor, saturation: Tensor) -> Tensor:
    """Per-image brightness, contrast and saturation factors (1 = unchanged), applied in that order and clipped
    to [0, 1] after each, as torchvision's ColorJitter does: brightness scales, contrast blends with the image's
    mean grey level, saturation blends with its grey image."""

    def per_image(factor: Tensor) -> Tensor:
        return factor.to(images.device, images.dtype).view(-1, 1, 1, 1)

    out = (images * per_image(brightness)).clamp(0, 1)
    mean = _grey(out).mean(dim=(1, 2, 3), keepdim=True)
    out = (mean + per_image(contrast) * (out - mean)).clamp(0, 1)
    grey = _grey(out)
    return (grey + per_image(saturation) * (out - grey)).clamp(0, 1)


def basic_augment(images: Tensor, generator: torch.Generator) -> Tensor:
    """Paper 001's basic augmentations on a float batch (N, 3, H, W) in [0, 1], drawn per image from
    ``generator``: a rotation by 0, 90, 180 or 270 degrees (0 or 180 for non-square images, whose shape a
    quarter turn would change), horizontal and vertical flips with probability 1/2, and brightness, contrast and
    saturation factors uniform in [0.8, 1.2]."""
    n, draw = images.shape[0], generator.device
    turns = torch.randint(0, 4, (n,), generator=generator, device=draw)
    if images.shape[-1] != images.shape[-2]:
        turns = turns - turns % 2
    hflip = torch.rand(n, generator=generator, device=draw) < 0.5
    vflip = torch.rand(n, generator=generator, device=draw) < 0.5
    low, high = COLOUR_RANGE
    factors = low + (high - low) * torch.rand(3, n, generator=generator, device=draw)
    return adjust_colour(apply_geometry(images, turns, hflip, vflip), *factors)


def _check_inputs(train: ImageSet, val: ImageSet, arch: str, epochs: int, batch_size: int) -> None:
    check_arch(arch)
    if train.class_names != val.class_names:
        raise UsageError(
            f"the training set has classes {train.class_names} but the validation set {val.class_names}; "
            "train and score on sets with the same classes in the same order"
        )
    train.require_every_class("classifier training set")
    val.require_every_class("classifier validation set (balanced accuracy needs every class)")
    for what, data in (("training", train), ("validation", val)):
        side = min(data.images.shape[1:3])
        if side < MIN_SIZE[arch]:
            raise UsageError(
                f"{arch} needs images of at least {MIN_SIZE[arch]} px; the {what} set's are {side} px: "
                "use larger patches or another classifier"
            )
    if epochs < 1 or batch_size < 1:
        raise UsageError(
            f"classifier epochs and batch size must be at least 1 (got {epochs} and {batch_size})"
        )


def _epoch_order(labels: np.ndarray, draws: int, balanced: bool, generator: torch.Generator) -> list[int]:
    """The image indices of one epoch: ``draws`` class-balanced draws with replacement (paper 001's sampler), or
    without balancing a shuffle of the set (repeated when ``draws`` exceeds it)."""
    from torch.utils.data import RandomSampler, WeightedRandomSampler

    if balanced:
        weights = torch.as_tensor(balanced_weights(labels), dtype=torch.double)
        sampler = WeightedRandomSampler(weights, draws, replacement=True, generator=generator)
    else:
        sampler = RandomSampler(range(len(labels)), num_samples=draws, generator=generator)
    return list(sampler)


def _as_input(images: Tensor, device: torch.device) -> Tensor:
    """uint8 (N, 3, H, W) -> float in [0, 1] on ``device``."""
    return images.to(device, non_blocking=True).float().div_(255)


def _normalise(images: Tensor) -> Tensor:
    mean = torch.tensor(IMAGENET_MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=images.device).view(1, 3, 1, 1)
    return (images - mean) / std


@torch.no_grad()
def _predict(model: nn.Module, images: Tensor, batch_size: int, device: torch.device) -> np.ndarray:
    model.eval()
    found = [
        model(_normalise(_as_input(images[start : start + batch_size], device))).argmax(dim=1).cpu()
        for start in range(0, len(images), batch_size)
    ]
    return torch.cat(found).numpy()


def _scores(labels: np.ndarray, predicted: np.ndarray, num_classes: int) -> dict[str, Any]:
    from sklearn.metrics import balanced_accuracy_score, confusion_matrix

    return {
        "accuracy": float(np.mean(labels == predicted)),
        "balanced_accuracy": float(balanced_accuracy_score(labels, predicted)),
        "confusion": confusion_matrix(labels, predicted, labels=list(range(num_classes))).tolist(),
    }


def _nchw(data: ImageSet) -> Tensor:
    return torch.from_numpy(data.images).permute(0, 3, 1, 2)


def train_classifier(
    train: ImageSet,
    val: ImageSet,
    arch: str,
    *,
    epochs: int,
    batch_size: int = 32,
    lr: float = 1e-3,
    weights: str | Path | None = None,
    seed: int = 0,
    device: str = "cpu",
    balanced: bool = True,
    images_per_epoch: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Train ``arch`` on ``train`` with the paper's augmentations and sampler, score it on ``val``.

    Each epoch draws ``images_per_epoch`` images (default: the size of ``train``); a last batch of a single image
    is dropped (batch norm cannot train on one). Returns accuracy, balanced accuracy and the confusion matrix
    (rows: true class) after the last epoch, a per-epoch ``history``, the ``weights`` used and the ``seconds``
    taken. The same seed gives the same result on CPU.
    """
    _check_inputs(train, val, arch, epochs, batch_size)
    started = time.perf_counter()
    target = torch.device(device)
    draws = images_per_epoch or len(train)
    num_classes = len(train.class_names)
    images, labels = _nchw(train), torch.from_numpy(train.labels)
    val_images = _nchw(val)
    cuda = [target.index or 0] if target.type == "cuda" else []
    history: list[dict[str, Any]] = []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed)  # the new head, dropout
        generator = torch.Generator().manual_seed(seed)  # sampler and augmentations
        model, described = build_classifier(arch, num_classes, weights)
        model.to(target)
        # The fused kernel is several times faster than the per-tensor loop on CPU, and as deterministic.
        optimiser = torch.optim.Adam(model.parameters(), lr=lr, fused=True)
        for epoch in range(1, epochs + 1):
            order = torch.as_tensor(_epoch_order(train.labels, draws, balanced, generator))
            model.train()
            losses = []
            for start in range(0, len(order), batch_size):
                chosen = order[start : start + batch_size]
                if len(chosen) < 2:
                    continue
                batch = _normalise(basic_augment(_as_input(images[chosen], target), generator))
                loss = nn.functional.cross_entropy(model(batch), labels[chosen].to(target))
                if not torch.isfinite(loss):
                    raise RunError(
                        f"{arch}: the training loss became {loss.item()} in epoch {epoch}; lower the learning "
                        f"rate (now {lr})"
                    )
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                losses.append(loss.item())
            scores = _scores(val.labels, _predict(model, val_images, batch_size, target), num_classes)
            mean_loss = float(np.mean(losses)) if losses else float("nan")
            history.append({"epoch": epoch, "loss": mean_loss, **scores})
            if progress is not None:
                progress(
                    f"{arch} epoch {epoch}/{epochs}: loss {mean_loss:.4f}, val accuracy {scores['accuracy']:.4f}, "
                    f"balanced accuracy {scores['balanced_accuracy']:.4f}"
                )
    return {
        "accuracy": history[-1]["accuracy"],
        "balanced_accuracy": history[-1]["balanced_accuracy"],
        "confusion": history[-1]["confusion"],
        "history": [{k: v for k, v in h.items() if k != "confusion"} for h in history],
        "weights": described,
        "optimiser": OPTIMISER,
        "seconds": time.perf_counter() - started,
    }
