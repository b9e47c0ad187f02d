"""The hooks a medkit plugin implements.

A plugin is a module (or any object) named by an entry point in the ``medkit.plugins`` group. It declares the
core API it was written for in ``MEDKIT_API`` (a version specifier such as ``">=1.0,<2"``) and implements any
of the hooks below, each marked with ``@medkit.hookimpl``. Every hook receives a ``register`` callback and calls
it once per thing it provides; medkit keeps the tables. Hooks are called once per process, when plugins are
first loaded (by ``medkit list-plugins``, ``describe``, ``run`` or :func:`medkit.plugins.get_plugins`), one
plugin at a time, so an exception in one plugin's hook marks that plugin failed and leaves the others working.
Hook functions must be cheap: register entries whose ``target`` is a ``"module:attribute"`` string, and keep
torch and other heavy imports inside those modules.
"""

from __future__ import annotations

from collections.abc import Callable

import pluggy

from .entries import (
    ArchitectureEntry,
    AugmenterEntry,
    DatasetEntry,
    LossEntry,
    Recipe,
    ScorerEntry,
    TrainerEntry,
)

PROJECT = "medkit"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_recipes(register: Callable[[Recipe], None]) -> None:
    """Register the recipes ``medkit run PLUGIN [RECIPE]`` can execute.

    Called once at plugin load. Call ``register(Recipe(...))`` for each recipe; mark one ``default=True``
    (it runs when no recipe is named). Returns nothing.
    """


@hookspec
def register_architectures(register: Callable[[ArchitectureEntry], None]) -> None:
    """Register model architectures, selectable with ``--arch NAME``.

    Called once at plugin load. Call ``register(ArchitectureEntry(name=..., target="pkg.mod:factory",
    task=...))`` per architecture; ``factory(**options)`` must return a :class:`medkit.Model`. ``medkit
    describe`` builds each one with its defaults to report the parameter count. Returns nothing.
    """


@hookspec
def register_datasets(register: Callable[[DatasetEntry], None]) -> None:
    """Register dataset factories (loaders of real data and embedded default data).

    Called once at plugin load. ``target(**options)`` returns a :class:`medkit.Dataset`. Mark the dataset
    a recipe uses without ``--data`` as ``embedded=True``. Returns nothing.
    """


@hookspec
def register_losses(register: Callable[[LossEntry], None]) -> None:
    """Register loss functions by name. Called once at plugin load; returns nothing."""


@hookspec
def register_scorers(register: Callable[[ScorerEntry], None]) -> None:
    """Register :class:`medkit.Scorer` classes (metrics) by name. Called once at plugin load; returns nothing."""


@hookspec
def register_augmenters(register: Callable[[AugmenterEntry], None]) -> None:
    """Register :class:`medkit.Augmenter` classes by name. Called once at plugin load; returns nothing."""


@hookspec
def register_trainers(register: Callable[[TrainerEntry], None]) -> None:
    """Register :class:`medkit.Trainer` classes by name. Called once at plugin load; returns nothing."""


HOOK_KINDS: dict[str, type] = {
    "register_recipes": Recipe,
    "register_architectures": ArchitectureEntry,
    "register_datasets": DatasetEntry,
    "register_losses": LossEntry,
    "register_scorers": ScorerEntry,
    "register_augmenters": AugmenterEntry,
    "register_trainers": TrainerEntry,
}
"""Each hook and the entry type its ``register`` callback accepts."""
