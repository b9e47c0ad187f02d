"""GanAugmenter: the core `Augmenter` that adds a conditional StyleGAN2's images to any classification Dataset
(paper 001: "real + synthetic" as on BACH, or "synthetic" only as on PATH-DT-MSU)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Literal

import numpy as np

from medkit import Augmenter, Dataset, Sample, UsageError

from .folders import ImageSetDataset
from .imageset import ImageSet
from .sampling import balanced_labels, load_generator, synthetic_set


def imageset_from_dataset(dataset: Dataset) -> ImageSet:
    """A classification Dataset's samples (``image`` (C, H, W) in [0, 1] or uint8, ``label``) as an ImageSet;
    single-channel images are repeated to RGB."""
    if getattr(dataset, "task", None) != "classification":
        raise UsageError(f"GanAugmenter extends classification datasets; {type(dataset).__name__} is not one")
    images, labels = [], []
    for index in range(len(dataset)):
        sample = dataset[index]
        image = np.asarray(sample["image"])
        if image.dtype != np.uint8:
            image = np.clip(np.rint(image.astype(np.float32) * 255), 0, 255).astype(np.uint8)
        if image.ndim != 3 or image.shape[0] not in (1, 3):
            raise UsageError(
                f"sample {index}: expected an image (C, H, W) with 1 or 3 channels, got {image.shape}"
            )
        images.append(np.repeat(image, 3, axis=0) if image.shape[0] == 1 else image)
        labels.append(int(sample["label"]))
    if len({im.shape for im in images}) > 1:
        raise UsageError("GanAugmenter needs images of one size; resize the dataset's images first")
    stacked = np.stack(images).transpose(0, 2, 3, 1) if images else np.zeros((0, 1, 1, 3), np.uint8)
    groups = dataset.groups()
    return ImageSet(
        stacked, np.asarray(labels), tuple(dataset.class_names), None if groups is None else groups
    )


class GanAugmenter(Augmenter):
    """``fit(dataset)`` loads ``checkpoint`` (or trains a GAN on the dataset when there is none), ``extend(dataset)``
    returns the dataset with ``per_class`` synthetic images of every class added (``mode="real+synthetic"``) or
    the synthetic images alone (``mode="synthetic"``). Single samples pass through ``__call__`` unchanged."""

    def __init__(
        self,
        checkpoint: str | Path | None = None,
        per_class: int = 100,
        mode: Literal["real+synthetic", "synthetic"] = "real+synthetic",
        truncation: float = 1.0,
        seed: int = 0,
        device: str = "cpu",
        network: dict[str, Any] | None = None,
        training: dict[str, Any] | None = None,
        run_dir: str | Path | None = None,
    ) -> None:
        if mode not in ("real+synthetic", "synthetic"):
            raise UsageError(f"GanAugmenter mode={mode!r}: choose real+synthetic or synthetic")
        self.checkpoint = None if checkpoint is None else Path(checkpoint)
        self.per_class, self.mode, self.truncation, self.seed, self.device = (
            per_class,
            mode,
            truncation,
            seed,
            device,
        )
        self.network, self.training, self.run_dir = dict(network or {}), dict(training or {}), run_dir
        self.generator: Any = None
        self.class_names: tuple[str, ...] = ()

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        return sample

    def fit(self, dataset: Dataset) -> GanAugmenter:
        if self.checkpoint is None:
            self.checkpoint = self._train(imageset_from_dataset(dataset))
        self.generator, meta = load_generator(self.checkpoint)
        self.class_names = tuple(meta["class_names"])
        if tuple(dataset.class_names) != self.class_names:
            raise UsageError(
                f"{self.checkpoint} generates classes {list(self.class_names)}, the dataset has "
                f"{list(dataset.class_names)}; train the GAN on this dataset (fit without a checkpoint)"
            )
        return self

    def extend(self, dataset: Dataset) -> Dataset:
        if self.generator is None:
            raise UsageError("GanAugmenter.extend before fit: call fit(dataset) first")
        real = imageset_from_dataset(dataset)
        labels = balanced_labels(self.per_class, len(self.class_names))
        synthetic = synthetic_set(
            self.generator,
            labels,
            self.class_names,
            seed=self.seed,
            truncation=self.truncation,
            device=self.device,
        )
        if synthetic.resolution != real.resolution:
            raise UsageError(
                f"the generator makes {synthetic.resolution} px images, the dataset has {real.resolution} px ones"
            )
        if self.mode == "synthetic":
            return ImageSetDataset(synthetic)
        synthetic.groups = np.full(len(synthetic), "synthetic") if real.groups is not None else None
        return ImageSetDataset(ImageSet.concatenate([real, synthetic]))

    def _train(self, real: ImageSet) -> Path:
        from .gan_options import GanTrainingOptions
        from .models import CPU_DEFAULTS, build_networks
        from .training import GanTrainer

        network = {
            **CPU_DEFAULTS,
            **self.network,
            "resolution": real.resolution,
            "num_classes": len(real.class_names),
        }
        generator, discriminator = build_networks(**network)
        run_dir = (
            Path(self.run_dir) if self.run_dir else Path(tempfile.mkdtemp(prefix="medkit-gan-augmenter-"))
        )
        options = GanTrainingOptions(**{"seed": self.seed, **self.training})
        trainer = GanTrainer(
            generator,
            discriminator,
            options,
            device=self.device,
            run_dir=run_dir,
            meta={"class_names": list(real.class_names), "train_counts": real.counts()},
        )
        trainer.fit(real)
        return run_dir / "checkpoints" / "last.pt"
