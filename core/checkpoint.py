"""Checkpoints: plain dicts of tensors and numbers, saved atomically, loaded with ``weights_only=True``.

Nothing is ever unpickled from a checkpoint file: ``torch.load(weights_only=True)`` only rebuilds tensors and
builtin containers, so a checkpoint downloaded from elsewhere cannot run code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .atomic import atomic_path
from .errors import RunError, UsageError

FORMAT_VERSION = 1


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` (tensors, numbers, strings, lists, dicts) to ``path`` atomically."""
    import torch

    with atomic_path(Path(path)) as tmp:
        torch.save({"format": FORMAT_VERSION, **state}, tmp)


def load_checkpoint(path: Path, arch: str | None = None, map_location: str = "cpu") -> dict[str, Any]:
    """Read a checkpoint safely; refuse one written for another architecture than ``arch``."""
    import pickle

    import torch

    path = Path(path)
    if not path.is_file():
        raise UsageError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, OSError, ValueError) as err:
        raise RunError(
            f"checkpoint {path} cannot be read safely ({type(err).__name__}: {str(err).splitlines()[0]}); "
            "it is damaged or holds objects other than tensors and plain values"
        ) from err
    if not isinstance(state, dict) or "format" not in state:
        raise RunError(f"{path} is not a medkit checkpoint")
    if state["format"] > FORMAT_VERSION:
        raise RunError(
            f"checkpoint {path} has format {state['format']}; this medkit reads up to {FORMAT_VERSION}"
        )
    if arch is not None and state.get("arch") not in (None, arch):
        raise UsageError(
            f"checkpoint {path} was written by architecture {state.get('arch')!r}, but this run uses {arch!r}; "
            f"pass --arch {state.get('arch')} or choose another checkpoint"
        )
    return state
