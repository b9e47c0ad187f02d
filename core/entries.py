"""What a plugin registers: named entries that point at the real objects without importing them yet.

An entry's ``target`` is either the object itself or a ``"package.module:attribute"`` string. Strings keep
heavy imports (torch, timm) out of plugin discovery, so ``medkit list-plugins`` stays instant; ``load()``
imports the target when the entry is used.
"""

from __future__ import annotations

import importlib
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .errors import MedkitError, PluginError
from .interfaces import Task

STOPS_THE_PROGRAM: tuple[type[BaseException], ...] = (KeyboardInterrupt, GeneratorExit)
"""Exceptions that pass through plugin code untouched; medkit contains anything else a plugin raises, even
SystemExit, so one broken plugin cannot end a command about another."""


def stops_the_program(err: BaseException) -> bool:
    return isinstance(err, STOPS_THE_PROGRAM)


def describe_exception(err: BaseException) -> str:
    """``Type: message (at file:line)``: enough for a plugin author to find the fault.

    A medkit error is already a message for people (and its last frame is medkit's), so it is kept as is.
    """
    if isinstance(err, MedkitError):
        return str(err)
    if isinstance(err, SyntaxError) and err.filename:  # the fault is in the file parsed, not in any frame
        message, where = err.msg, f" (at {err.filename}:{err.lineno})"
    else:
        # importlib's own frames say nothing about the plugin
        frames = [f for f in traceback.extract_tb(err.__traceback__) if not f.filename.startswith("<frozen")]
        message = str(err)
        where = f" (at {frames[-1].filename}:{frames[-1].lineno})" if frames else ""
    return f"{type(err).__name__}: {' '.join(message.split())}{where}"  # one line, whatever the message


def resolve(target: Any, what: str) -> Any:
    """Import ``"module:attr"`` (or return a non-string target unchanged).

    Whatever the import raises becomes a one-line PluginError that starts with ``what``.
    """
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
    except BaseException as err:  # module-level code may raise anything, even SystemExit
        if stops_the_program(err):
            raise
        raise PluginError(
            f"{what}: importing module {module_name!r} for {target!r} failed: {describe_exception(err)}"
        ) from err
    return obj


@dataclass(frozen=True, kw_only=True)
class Entry:
    """A named thing a plugin provides; ``kind`` says which of the registries it belongs to.

    ``plugin`` is filled in by medkit when the entry is registered, so that load errors name the plugin.
    """

    kind: ClassVar[str] = "entry"
    name: str
    target: Callable[..., Any] | str
    summary: str = ""
    plugin: str | None = field(default=None, compare=False, repr=False)

    def label(self, part: str = "") -> str:
        """``plugin 'p': recipe 'r'`` (or ``plugin 'p': config of recipe 'r'``), for error messages."""
        own = f"{part} of {self.kind} {self.name!r}" if part else f"{self.kind} {self.name!r}"
        return f"plugin {self.plugin!r}: {own}" if self.plugin else own

    def load(self) -> Any:
        return resolve(self.target, self.label())


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
        return resolve(self.config, self.label("config"))


ENTRY_KINDS: tuple[type[Entry], ...] = (
    Recipe,
    ArchitectureEntry,
    DatasetEntry,
    LossEntry,
    ScorerEntry,
    AugmenterEntry,
    TrainerEntry,
)
