"""What a plugin registers: named entries that point at the real objects without importing them yet.

An entry's ``target`` is either the object itself or a ``"package.module:attribute"`` string. Strings keep
heavy imports (torch, timm) out of plugin discovery, so ``medkit list-plugins`` stays instant; ``load()``
imports the target when the entry is used.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .errors import PluginError
from .interfaces import Task


def resolve(target: Any, what: str) -> Any:
    """Import ``"module:attr"`` (or return a non-string target unchanged)."""
    if not isinstance(target, str):
        return target
    module_name, _, attribute = target.partition(":")
    if not attribute:
        raise PluginError(f"{what}: target {target!r} is not of the form 'package.module:attribute'")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attribute.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as err:
        raise PluginError(f"{what}: cannot import {target!r}: {err}") from err
    return obj


@dataclass(frozen=True, kw_only=True)
class Entry:
    """A named thing a plugin provides; ``kind`` says which of the registries it belongs to."""

    kind: ClassVar[str] = "entry"
    name: str
    target: Callable[..., Any] | str
    summary: str = ""

    def load(self) -> Any:
        return resolve(self.target, f"{self.kind} {self.name!r}")


@dataclass(frozen=True, kw_only=True)
class ArchitectureEntry(Entry):
    """A model factory selectable with ``--arch NAME``; ``defaults`` are the keyword options it is built with."""

    kind: ClassVar[str] = "architecture"
    task: Task
    defaults: dict[str, Any] = field(default_factory=dict)

    def build(self, **options: Any) -> Any:
        return self.load()(**{**self.defaults, **options})


@dataclass(frozen=True, kw_only=True)
class DatasetEntry(Entry):
    """A dataset factory; ``embedded`` marks the one used when a recipe runs without ``--data``."""

    kind: ClassVar[str] = "dataset"
    task: Task
    embedded: bool = False


@dataclass(frozen=True, kw_only=True)
class LossEntry(Entry):
    kind: ClassVar[str] = "loss"


@dataclass(frozen=True, kw_only=True)
class ScorerEntry(Entry):
    kind: ClassVar[str] = "scorer"


@dataclass(frozen=True, kw_only=True)
class AugmenterEntry(Entry):
    kind: ClassVar[str] = "augmenter"


@dataclass(frozen=True, kw_only=True)
class TrainerEntry(Entry):
    kind: ClassVar[str] = "trainer"


@dataclass(frozen=True, kw_only=True)
class Recipe(Entry):
    """What ``medkit run PLUGIN RECIPE`` executes.

    ``target`` is a function ``run(ctx: medkit.RecipeContext) -> dict`` returning the final figures;
    ``config`` is a dataclass (or its ``"module:Class"`` path) deriving from :class:`medkit.RecipeConfig`:
    the typed schema every config file, ``--set`` and flag is validated against before the run starts.
    ``default`` marks the recipe run when none is named; ``resumable`` names the config keys that ``--resume``
    may change besides out, epochs and device (a study's grid may grow or shrink between sessions).
    """

    kind: ClassVar[str] = "recipe"
    config: type | str
    default: bool = False
    resumable: tuple[str, ...] = ()

    def load_config_class(self) -> type:
        return resolve(self.config, f"config of recipe {self.name!r}")


ENTRY_KINDS: tuple[type[Entry], ...] = (
    Recipe,
    ArchitectureEntry,
    DatasetEntry,
    LossEntry,
    ScorerEntry,
    AugmenterEntry,
    TrainerEntry,
)
