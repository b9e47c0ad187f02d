"""`medkit run ubc predict`: class probabilities from a trained checkpoint, each drawn with the predicted mask
and a Grad-CAM of the predicted class beside the image - so a reader sees where the model looked.

Without ``--data`` it predicts freshly generated synthetic patients (never seen in training) and scores itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from medkit import RecipeContext, UsageError
from medkit.checkpoint import load_checkpoint
from medkit.plots import pyplot, save_figure
from medkit.runs import ENV_FILE, read_json, runs_root

from ..data import load_slices
from ..metrics import dice_per_image
from ..slices import NO_LABEL, Slices, resize_images, resize_masks
from ..synthetic import CLASS_NAMES, brain_patient

UNSEEN_SEED = 424_242  # synthetic patients drawn from here are never among the training ones


def latest_checkpoint() -> Path:
    found = sorted((runs_root() / "ubc").glob("*/checkpoints/best.pt"), key=lambda p: p.stat().st_mtime)
    found = [p for p in found if read_json(p.parents[1] / ENV_FILE).get("recipe") == "train"]
    if not found:
        raise UsageError(
            f"no trained ubc model under {runs_root() / 'ubc'}; run `medkit run ubc` first or pass "
            "--set checkpoint=PATH"
        )
    return found[-1]


def load_model(ctx: RecipeContext, path: Path, classes: int) -> tuple[Any, dict[str, Any]]:
    state = load_checkpoint(path)
    arch, options = state.get("arch"), dict(state.get("arch_options", {}))
    model = ctx.plugin.entry("architecture", arch, "--arch").build(
        **options, in_channels=1, num_classes=classes
    )
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as err:
        raise UsageError(
            f"checkpoint {path} does not fit {arch} with {classes} classes ({str(err).splitlines()[0]}); "
            "predict data with the classes the model was trained on"
        ) from err
    return model.to(ctx.device).eval(), {"arch": arch, "options": options, "epoch": state.get("epoch")}


def unseen_synthetic(count: int, size: int) -> Slices:
    images, masks, labels = [], [], []
    for i in range(count):
        label = i % 2
        stack, mask = brain_patient(label, 8, size, seed=UNSEEN_SEED + i)
        k = int(mask.reshape(len(mask), -1).sum(axis=1).argmax())  # the slice with most lesion
        images.append(resize_images(stack[k : k + 1], size))
        masks.append(resize_masks(mask[k : k + 1], size))
        labels.append(label)
    return Slices(
        images=np.concatenate(images),
        masks=np.concatenate(masks),
        has_mask=np.ones(count, dtype=bool),
        labels=np.array(labels),
        patients=np.array([f"unseen-{i:03d}" for i in range(count)], dtype=object),
        splits=np.array([""] * count, dtype=object),
        class_names=CLASS_NAMES,
    )


def grad_cam(model: Any, image: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Class probabilities, Grad-CAM of the predicted class on the encoder's deepest map (normalised to
    [0, 1] at the image's size) and the predicted mask probability (None for the baseline)."""
    with torch.enable_grad():
        features = model.encoder(image)
        deepest = features[-1].detach().requires_grad_(True)
        logits = model.classifier(deepest)
        predicted = int(logits.argmax(1))
        (gradient,) = torch.autograd.grad(logits[0, predicted], deepest)
    weights = gradient.mean(dim=(2, 3), keepdim=True)  # Grad-CAM: channel weights = mean gradient
    cam = F.relu((weights * deepest.detach()).sum(1, keepdim=True))
    cam = F.interpolate(cam, size=image.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
    cam = (cam / cam.max() if float(cam.max()) > 0 else cam).float().cpu().numpy()
    with torch.no_grad():
        output = model(image)
    mask = torch.sigmoid(output["mask"])[0, 0].float().cpu().numpy() if "mask" in output else None
    return logits.softmax(1)[0].detach().cpu().numpy(), cam, mask


def draw(
    path: Path,
    image: np.ndarray,
    title: str,
    mask: np.ndarray | None,
    truth: np.ndarray | None,
    cam: np.ndarray | None,
) -> Path:
    panels = 1 + (mask is not None) + (cam is not None)
    figure, axes = pyplot().subplots(1, panels, figsize=(3.2 * panels, 3.4), squeeze=False)
    axes = list(axes[0])
    axes[0].imshow(image, cmap="gray")
    axes[0].set_title(title, fontsize="small")
    if truth is not None and truth.any():
        axes[0].contour(truth, [0.5], colors="lime", linewidths=0.8)
    column = 1
    if mask is not None:
        axes[column].imshow(image, cmap="gray")
        axes[column].imshow(np.ma.masked_less(mask, 0.5), cmap="autumn", alpha=0.5, vmin=0, vmax=1)
        axes[column].set_title("predicted mask", fontsize="small")
        column += 1
    if cam is not None:
        axes[column].imshow(image, cmap="gray")
        axes[column].imshow(cam, cmap="jet", alpha=0.45, vmin=0, vmax=1)
        axes[column].set_title("Grad-CAM", fontsize="small")
    for axis in axes:
        axis.axis("off")
    figure.tight_layout()
    return save_figure(figure, path, dpi=80)


def predict(ctx: RecipeContext) -> dict[str, Any]:
    cfg = ctx.config
    slices = unseen_synthetic(cfg.images, cfg.image_size) if cfg.data is None else load_slices(cfg)
    checkpoint = Path(cfg.checkpoint) if cfg.checkpoint else latest_checkpoint()
    model, info = load_model(ctx, checkpoint, len(slices.class_names))
    results, correct, scored = {}, 0, 0
    for i in range(min(cfg.images, len(slices))):
        image = torch.from_numpy(slices.images[i])[None, None].to(ctx.device)
        probabilities, cam, mask = grad_cam(model, image)
        predicted = int(probabilities.argmax())
        name = f"{i:03d}-{str(slices.patients[i]).replace('/', '_')}"
        truth = slices.masks[i] if slices.has_mask[i] else None
        entry: dict[str, Any] = {
            "patient": str(slices.patients[i]),
            "probabilities": {c: float(p) for c, p in zip(slices.class_names, probabilities, strict=True)},
            "predicted": slices.class_names[predicted],
        }
        if slices.labels[i] != NO_LABEL:
            entry["true"] = slices.class_names[slices.labels[i]]
            correct += int(predicted == slices.labels[i])
            scored += 1
        if mask is not None and truth is not None:
            entry["dice"] = float(dice_per_image(mask[None], truth[None])[0])
        title = f"{entry['predicted']} p={probabilities[predicted]:.2f}" + (
            f" (true {entry['true']})" if "true" in entry else ""
        )
        overlay = draw(
            ctx.run.dir / "overlays" / f"{name}.png",
            slices.images[i],
            title,
            mask,
            truth,
            cam if cfg.gradcam else None,
        )
        entry["overlay"] = str(overlay)
        results[name] = entry
        ctx.console.print(f"{name}: {title}")
    summary: dict[str, Any] = {"checkpoint": str(checkpoint), **info, "images": results}
    if scored:
        summary["accuracy"] = correct / scored
    dices = [r["dice"] for r in results.values() if "dice" in r]
    if dices:
        summary["mean_dice"] = float(np.mean(dices))
    return summary
