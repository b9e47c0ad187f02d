"""The five interfaces every medkit plugin implements: Dataset, Model, Trainer, Augmenter, Scorer.

This module is all a third-party author has to read. It imports neither torch nor numpy, so that the CLI can
list plugins instantly; the types in signatures are strings.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Literal

if TYPE_CHECKING:
    import numpy as np

    from .runs import Run

Task = Literal["segmentation", "classification", "anomaly", "generation"]
TASKS: tuple[str, ...] = ("segmentation", "classification", "anomaly", "generation")

Sample = dict[str, Any]
"""One sample: named arrays or tensors (``image``, ``mask``, ``label``, ...) plus plain metadata values."""


class Dataset(ABC):
    """A sized, indexable source of samples for one task.

    ``dataset[i]`` returns a :data:`Sample`. Images are channel-first float arrays or tensors (C, H, W);
    segmentation masks are integer (H, W) arrays of class indices; classification labels are ints.
    Metadata that describes the whole set (class names, spacing, patient ids) lives on the object, so that
    a model can be built to fit it and a split can respect patients. Works with ``torch.utils.data.DataLoader``
    as a map-style dataset.
    """

    task: ClassVar[Task]
    class_names: Sequence[str] = ()
    in_channels: int = 1

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def __getitem__(self, index: int) -> Sample: ...

    def groups(self) -> Sequence[str] | None:
        """The group (patient, volume) of every sample, for splits that never put one patient on both sides.

        ``None`` means samples are independent.
        """
        return None

    def describe(self) -> dict[str, Any]:
        """A short, JSON-ready description: task, size, classes, channels."""
        return {
            "task": self.task,
            "size": len(self),
            "classes": list(self.class_names),
            "in_channels": self.in_channels,
        }


class Model(ABC):
    """Something that predicts: a torch module, or a non-parametric model (a PaDiM Gaussian, a kNN bank).

    A torch model inherits from both ``torch.nn.Module`` and ``Model``; ``state_dict``/``load_state_dict``
    then come from torch and are what checkpoints store. A non-parametric model implements them over its own
    arrays. Models are built by name from a plugin's registered :class:`~medkit.entries.Architecture`.
    """

    name: ClassVar[str]
    task: ClassVar[Task]

    def num_parameters(self, trainable_only: bool = False) -> int:
        """Number of parameters (of a torch module: the sum of ``numel`` over ``parameters()``)."""
        params = getattr(self, "parameters", None)
        if params is None:
            raise TypeError(f"{type(self).__name__} is not a torch module: override num_parameters()")
        return sum(p.numel() for p in params() if p.requires_grad or not trainable_only)

    @abstractmethod
    def state_dict(self) -> dict[str, Any]: ...

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> Any: ...


class Trainer(ABC):
    """How a model learns from a dataset: gradient epochs, one-pass fitting, an adversarial loop, a search.

    ``fit`` owns the loop and everything around it: checkpoints in ``run`` (written atomically), resuming from
    the last one when ``run.resume`` is set, progress, metrics through Scorers, and determinism from the seed.
    It returns the final figures, which become the run's ``summary.json``.
    """

    @abstractmethod
    def fit(self, model: Model, train: Dataset, val: Dataset | None, run: Run) -> dict[str, Any]: ...


class Augmenter(ABC):
    """Transforms one sample, image and mask together, drawing randomness only from ``rng``.

    Generative augmenters (a GAN) are augmenters too: ``fit`` trains them once on a dataset, ``extend``
    returns that dataset with synthetic samples added. For ordinary augmenters both are identities.
    """

    @abstractmethod
    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample: ...

    def fit(self, dataset: Dataset) -> Augmenter:
        """Learn whatever the augmenter needs from ``dataset``; stateless augmenters need nothing."""
        return self

    def extend(self, dataset: Dataset) -> Dataset:
        """Return ``dataset`` with the augmenter's synthetic samples added; non-generative ones add none."""
        return dataset


class Scorer(ABC):
    """Turns predictions and targets into named numbers, accumulated batch by batch.

    ``update`` adds a batch to ``self.state``; ``compute`` turns the state into ``{"name": value}``. The state
    holds only numbers, numpy arrays (summed when merged) and lists (concatenated when merged), so that the
    states of several processes combine with :meth:`merge` under distributed training.
    """

    name: ClassVar[str]
    greater_is_better: ClassVar[bool] = True

    def __init__(self) -> None:
        self.state: dict[str, Any] = {}

    def reset(self) -> None:
        self.state = {}

    @abstractmethod
    def update(self, prediction: Any, target: Any) -> None: ...

    @abstractmethod
    def compute(self) -> dict[str, float]: ...

    def figure_names(self) -> list[str] | None:
        """The names :meth:`compute` returns, known before any data (a trainer checks ``monitor`` against
        them before a run starts); None when they depend on the data."""
        return None

    def accumulate(self, key: str, value: Any) -> None:
        """Add ``value`` to ``state[key]``: lists are extended, numbers and arrays summed."""
        if key not in self.state:
            self.state[key] = list(value) if isinstance(value, list) else value
        elif isinstance(value, list):
            self.state[key].extend(value)
        else:
            self.state[key] = self.state[key] + value

    def merge(self, state: dict[str, Any]) -> None:
        """Fold another process's state into this one."""
        for key, value in state.items():
            self.accumulate(key, value)
