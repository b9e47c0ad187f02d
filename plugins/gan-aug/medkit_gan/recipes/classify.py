"""`medkit run gan-aug classify`: the paper's classifier protocol (tables 1-2) - ResNet34, DenseNet169 and
EfficientNet-B2, three runs each, on real, synthetic only and real + synthetic data, scored on the real
validation set. The synthetic images come from a checkpoint (generated here) or a `generate` output."""

from __future__ import annotations

from typing import Any

from medkit import RecipeContext, UsageError

from ..comparison import compare, synthetic_per_class
from ..config import ClassifyRecipeConfig
from ..data import load_real
from ..sampling import balanced_labels, load_generator, synthetic_set
from ..storage import load_generated
from .generate import checkpoint_of
from .train import SYNTHETIC_SEED


def classify(ctx: RecipeContext) -> dict[str, Any]:
    cfg: ClassifyRecipeConfig = ctx.config
    synthetic, generator, origin = None, None, "none"
    if cfg.synthetic is not None:
        synthetic, origin = load_generated(cfg.synthetic), str(cfg.synthetic)
    elif any(setting != "real" for setting in cfg.classify.settings):
        checkpoint = checkpoint_of(cfg.checkpoint)
        generator, _ = load_generator(checkpoint)
        origin = str(checkpoint)
    resolution = cfg.resolution or _resolution_of(synthetic, generator)
    real, val = load_real(cfg.data_options, cfg.data, resolution, cfg.seed)
    if generator is not None:
        per_class = synthetic_per_class(real, cfg.classify)
        labels = balanced_labels(per_class, len(real.class_names))
        synthetic = synthetic_set(
            generator,
            labels,
            real.class_names,
            seed=SYNTHETIC_SEED,
            truncation=cfg.classify.truncation,
            device=ctx.device,
        )
        origin += f" ({per_class} per class)"
    synthetic = real.subset([]) if synthetic is None else synthetic
    if synthetic.class_names != real.class_names or synthetic.resolution != real.resolution:
        raise UsageError(
            f"the synthetic images ({origin}: classes {list(synthetic.class_names)}, {synthetic.resolution} px) do "
            f"not match the real ones (classes {list(real.class_names)}, {real.resolution} px); generate them "
            "from a model trained on this data"
        )
    result = compare(
        real,
        val,
        synthetic,
        cfg.classify,
        ctx.run.dir,
        device=ctx.device,
        seed=cfg.seed,
        title=f"Classifiers on {real.source}: real vs synthetic from {origin}",
        progress=ctx.console.print,
    )
    return {"synthetic": origin, **result}


def _resolution_of(*sources: Any) -> int:
    for source in sources:
        if source is not None:
            return int(source.resolution)
    raise UsageError(
        "classify with settings=[real] and no generator: give the image side with --set resolution=N"
    )
