"""What holds ct-seg's headline recipe back against a plain U-Net: one change at a time (issue 16, item 0).

Each ablation trains `attn_unetpp_v2` (b=8, batch 8) for a fixed number of steps on the labelled slices of the
embedded phantoms' training volumes and keeps its best of 8 evaluations on the validation volumes (ct-seg's
per-slice metric, absent class = 1). Steps, not seconds, make the figures independent of how busy the machine
is: 360 steps is what `attn_unetpp_v2` takes in the 5 minutes of `ct_seg_reference.py` on 2 cores, and 1300
what the plain U-Net of that benchmark takes in the same time (it is 3.4x faster per step). Each trial runs in
its own process on one thread, two at a time; a trial's figures do not depend on which others run beside it.

Only the embedded generator is used: the second generator (`ct_seg_phantoms_b.py`) stays out of the tuning and
is seen only by `ct_seg_reference.py`.

    .venv/bin/python benchmarks/ct_seg_ablations.py [--only NAME,...] [--processes 2]

Writes benchmarks/results/ct_seg_ablations.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

ATTN_STEPS, PLAIN_STEPS = 360, 1300
SHARES = (
    0.125,
    0.25,
    0.5,
)  # shares of the class weights' bias removed at inference, scored beside each trial
NEW_DEFAULT: dict[str, Any] = {"arch": "attn_unetpp_v2", "loss": "weighted_ce", "power": 0.5}
ABLATIONS: dict[str, dict[str, Any]] = {
    # the recipe before issue 16, and today's default
    "old_default": {**NEW_DEFAULT, "schedule": "cosine", "augment": "rotation+crop"},
    "default": NEW_DEFAULT,
    "default_seed1": {**NEW_DEFAULT, "seed": 1},  # another draw of batches and initial weights: the noise
    # the schedule and the augmentations, one at a time on today's default
    "+cosine": {**NEW_DEFAULT, "schedule": "cosine"},
    "+rotation": {**NEW_DEFAULT, "augment": "rotation"},
    "+rotation+crop": {**NEW_DEFAULT, "augment": "rotation+crop"},
    # the sampler's draw: every slice, as the paper, instead of those with lung or airway
    "+all_slices": {**NEW_DEFAULT, "slices": "all"},
    # the loss weighting: the paper's focal loss, and other class-weight powers
    "focal": {**NEW_DEFAULT, "loss": "focal"},
    "dice_ce": {**NEW_DEFAULT, "loss": "dice_ce"},
    "weighted_ce+dice": {**NEW_DEFAULT, "loss": "weighted_ce+dice"},
    # only the rare class weighted: the lungs keep the background's weight, so their boundaries are unbiased
    "weights_rare_only": {**NEW_DEFAULT, "rare_only": True},
    "weight_power_1": {**NEW_DEFAULT, "power": 1.0},
    "weight_power_0.25": {**NEW_DEFAULT, "power": 0.25},
    # class weights that fade out: power 0.5 at the start, 0 (plain cross-entropy, unbiased) at the end
    "weights_fading": {**NEW_DEFAULT, "fading": True},
    # the architecture's upsampling: learned 2x2 transposed convs in place of U-Net++'s bilinear upsampling
    "+transposed_up": {**NEW_DEFAULT, "upsampling": "transposed"},
    # the optimiser's pace: a larger Adam step, and batches of 4 (twice the steps for the same compute)
    "lr_3e-3": {**NEW_DEFAULT, "lr": 3e-3},
    "batch_4": {**NEW_DEFAULT, "batch": 4, "steps": 2 * ATTN_STEPS},
    # ct-seg's U-Net with the paper's recipe, given the plain U-Net's steps
    "unet_focal": {"arch": "unet", "loss": "focal", "steps": PLAIN_STEPS},
    # the reference of ct_seg_reference.py, at its 5-minute steps and at the attention model's
    "plain_unet": {"arch": "plain", "loss": "focal", "steps": PLAIN_STEPS},
    "plain_unet_seed1": {"arch": "plain", "loss": "focal", "steps": PLAIN_STEPS, "seed": 1},
    "plain_unet_360": {"arch": "plain", "loss": "focal"},
}


def build_model(arch: str, upsampling: str) -> Any:
    import ct_seg_reference as reference
    import torch
    from torch import nn

    from medkit_ct_seg.models import unet, unetpp

    if arch == "plain":
        return reference.plain_unet()
    if arch == "unet":
        return unet.unet(b=8)
    model = getattr(unetpp, arch)(b=8)
    if upsampling == "transposed":

        class TransposedUp(nn.Module):
            """A learned 2x upsampling per width (U-Net++ calls one shared `up` on maps of every level)."""

            def __init__(self, widths: list[int]) -> None:
                super().__init__()
                self.ups = nn.ModuleDict({str(w): nn.ConvTranspose2d(w, w, 2, stride=2) for w in widths})

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return self.ups[str(x.shape[1])](x)

        model.up = TransposedUp([8 * 2**i for i in range(1, 5)])
    return model


def foreground_dice_loss(logits: Any, target: Any, eps: float = 1.0) -> Any:
    """One minus the soft Dice of the foreground classes, each summed over the whole batch (so a class absent from
    one slice does not score that slice 0)."""
    import torch

    p = logits.softmax(dim=1)
    g = torch.nn.functional.one_hot(target, logits.shape[1]).permute(0, 3, 1, 2).to(p.dtype)
    intersection, sum_p, sum_g = (t.sum(dim=(0, 2, 3))[1:] for t in (p * g, p, g))
    return 1 - ((2 * intersection + eps) / (sum_p + sum_g + eps)).mean()


def make_loss(name: str, power: float, counts: Any, rare_only: bool = False) -> Any:
    """The named loss; class weights from the training pixels' ``counts`` (``rare_only``: the lungs keep the
    background's weight)."""
    import torch

    from medkit_ct_seg import losses

    if name == "dice_ce":  # nnU-Net's pairing
        return lambda logits, y: (
            torch.nn.functional.cross_entropy(logits, y) + foreground_dice_loss(logits, y)
        )
    if not name.startswith("weighted_ce"):
        return losses.LOSSES[name]()
    weights = losses.class_weights_from_counts(counts, power)
    if rare_only:
        weights[1:3] = weights[0]
    weighted = losses.WeightedCrossEntropy(weights)
    if name == "weighted_ce+dice":
        return lambda logits, y: weighted(logits, y) + foreground_dice_loss(logits, y)
    return weighted


def class_counts(masks: Any) -> Any:
    import torch

    return torch.bincount(masks.flatten(), minlength=4).double()


def trial(name: str, cache_path: str, evaluations: int = 8) -> dict[str, Any]:
    """One ablation, in this process: its best evaluation and the curve of (step, mean Dice, airway Dice).
    The train/validation split is the same for every trial (seed 0); ``seed`` draws weights and batches."""
    import ct_seg_reference as reference
    import numpy as np
    import torch

    from medkit.cache.store import Preprocessing, SliceCache
    from medkit_ct_seg.augment import SliceTransform
    from medkit_ct_seg.config import AugmentConfig
    from medkit_ct_seg.data import split_volumes
    from medkit_ct_seg.decision import attach_offset, weight_offset
    from medkit_ct_seg.losses import class_weights_from_counts

    spec = {
        "schedule": "none",
        "augment": "none",
        "slices": "labelled",
        "upsampling": "bilinear",
        **ABLATIONS[name],
    }
    steps, seed = spec.get("steps", ATTN_STEPS), spec.get("seed", 0)
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    cache = SliceCache(Path(cache_path))
    cache.preprocessing = Preprocessing("minmax")
    train_ids, val_ids = split_volumes(cache, 0.25, 0)
    train_x, train_y = reference.slices_of(cache, train_ids, every_slice=spec["slices"] == "all")
    val_x, val_y = reference.slices_of(cache, val_ids)
    model = build_model(spec["arch"], spec["upsampling"])
    counts = class_counts(train_y)  # also for fading weights, recomputed from these each step
    loss = make_loss(spec["loss"], spec.get("power", 0.5), counts, spec.get("rare_only", False))
    optimizer = torch.optim.Adam(model.parameters(), lr=spec.get("lr", 1e-3))
    cosine = spec["schedule"] == "cosine"
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1 + np.cos(np.pi * step / steps)) if cosine else 1.0
    )
    augment = {
        "none": None,
        "rotation": AugmentConfig(crop_scale=1.0),
        "rotation+crop": AugmentConfig(),  # the authors' values: 5 degrees (p 0.7), 95-100 % of the area
    }[spec["augment"]]
    transform = SliceTransform(128, augment, {}) if augment else None
    rng, generator = np.random.default_rng(seed), torch.Generator().manual_seed(seed)
    best: dict[str, float] = {}
    curve = []
    # weighted losses: each evaluation also scored with a share of the weights' bias removed (decision.py)
    adjusted: dict[float, dict[str, float]] = {}
    for step in range(1, steps + 1):
        chosen = torch.randint(0, len(train_x), (spec.get("batch", 8),), generator=generator)
        images, masks = train_x[chosen], train_y[chosen]
        if transform is not None:
            out = [transform({"image": i, "mask": m}, rng) for i, m in zip(images, masks, strict=True)]
            images, masks = torch.stack([o["image"] for o in out]), torch.stack([o["mask"] for o in out])
        if spec.get("fading"):
            power = spec.get("power", 0.5) * (1 - (step - 1) / steps)
            loss.weights = class_weights_from_counts(counts, power)
        value = loss(model(images), masks)
        optimizer.zero_grad(set_to_none=True)
        value.backward()
        optimizer.step()
        schedule.step()
        if step % (steps // evaluations) == 0 or step == steps:
            figures = reference.evaluate(model, val_x, val_y)
            curve.append([step, round(figures["mean_dice"], 4), round(figures["dice/airway"], 4)])
            if not best or figures["mean_dice"] > best["mean_dice"]:
                best = figures
            weights = getattr(loss, "weights", None)  # read now: fading weights change every step
            for share in SHARES if weights is not None else ():
                attach_offset(model, weight_offset(weights, share))
                scored = reference.evaluate(model, val_x, val_y)
                if share not in adjusted or scored["mean_dice"] > adjusted[share]["mean_dice"]:
                    adjusted[share] = scored
                attach_offset(model, torch.zeros(len(weights)))
    kept = [
        *reference.FIGURES,
        "precision/left_lung",
        "recall/left_lung",
        "precision/airway",
        "recall/airway",
    ]
    figures = {f: round(best[f], 4) for f in kept}
    result = {"spec": spec, "steps": steps, **figures, "curve": curve}
    if adjusted:
        result["bias_removed"] = {str(s): {f: round(v[f], 4) for f in kept} for s, v in adjusted.items()}
    return result


def run_in_process(name: str, cache: Path, out: Path) -> dict[str, Any]:
    command = [sys.executable, __file__, "--trial", name, "--cache", str(cache), "--out", str(out)]
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    if completed.returncode:
        raise RuntimeError(f"{name}: {completed.stderr[-3000:]}")
    return json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", default=",".join(ABLATIONS), help="comma-separated ablation names")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "ct_seg_ablations.json")
    parser.add_argument("--trial", help=argparse.SUPPRESS)
    parser.add_argument("--cache", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.trial:  # a child process: one trial, its result to --out
        args.out.write_text(json.dumps(trial(args.trial, str(args.cache))))
        return
    import ct_seg_reference as reference

    names = args.only.split(",")
    unknown = sorted(set(names) - set(ABLATIONS))
    if unknown:
        parser.error(f"--only: unknown ablation(s) {unknown}; choose from {', '.join(ABLATIONS)}")
    with tempfile.TemporaryDirectory(prefix="ct-seg-ablations-") as folder:
        cache = reference.build_data("embedded", 16, Path(folder))
        with ThreadPoolExecutor(args.processes) as pool:
            futures = {n: pool.submit(run_in_process, n, cache, Path(folder) / f"{n}.json") for n in names}
            results = {}
            for name, future in futures.items():
                results[name] = future.result()
                row = {k: v for k, v in results[name].items() if k not in ("spec", "curve")}
                print(name, row, flush=True)
    report = {"generator": "embedded", "volumes": 16, "seed": 0, "ablations": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
