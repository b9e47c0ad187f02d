"""Anomaly-detection methods fitted in one pass over normal images: SPADE, PaDiM, PatchCore, CFLOW-AD.

Every method is an :class:`~medkit_anomaly.methods.base.AnomalyModel` built as ``Method(extractor, **options)``.
The table names them without importing torch, so the CLI can list them instantly; :func:`method_class` imports one.
"""

from __future__ import annotations

import importlib
from typing import Any

METHODS: dict[str, str] = {
    "spade": "medkit_anomaly.methods.spade:SPADE",
    "padim": "medkit_anomaly.methods.padim:PaDiM",
    "patchcore": "medkit_anomaly.methods.patchcore:PatchCore",
    "cflow": "medkit_anomaly.methods.cflow:CFlow",
}


def method_class(name: str) -> Any:
    """The class of the method called ``name`` (a key of :data:`METHODS`)."""
    from medkit import UsageError

    if name not in METHODS:
        raise UsageError(f"unknown anomaly method {name!r}; choose one of {', '.join(METHODS)}")
    module, attribute = METHODS[name].split(":")
    return getattr(importlib.import_module(module), attribute)


def method_options(name: str) -> list[str]:
    """The keyword options of the method's constructor (``extractor`` first, as declared)."""
    import inspect

    return list(inspect.signature(method_class(name)).parameters)
