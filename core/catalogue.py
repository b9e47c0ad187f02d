"""The catalogue (registry.yaml): every plugin medkit knows, installed or not, and how to install it."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import UsageError

ENV_REGISTRY = "MEDKIT_REGISTRY"


@dataclass(frozen=True)
class CatalogueEntry:
    name: str
    distribution: str
    summary: str
    api: str
    path: str | None = None
    first_party: bool = True
    released: bool = True
    provides: dict[str, list[str]] = field(default_factory=dict)

    def install_command(self, repo_root: Path | None) -> str:
        if not self.released:
            return "not released yet"
        if self.path and repo_root is not None and (repo_root / self.path).is_dir():
            return f"pip install {repo_root / self.path}"
        return f"pip install {self.distribution}"


def catalogue_path() -> Path:
    """``$MEDKIT_REGISTRY``, else the copy shipped inside the medkit package (the repo's registry.yaml)."""
    override = os.environ.get(ENV_REGISTRY)
    return Path(override) if override else Path(__file__).with_name("registry.yaml")


def repo_root() -> Path | None:
    """The medkit source checkout this package runs from, if any (where plugins/ can be installed from)."""
    for parent in Path(__file__).resolve().parents:
        if (parent / "registry.yaml").is_file() and (parent / "plugins").is_dir():
            return parent
    return None


def load_catalogue(path: Path | None = None) -> list[CatalogueEntry]:
    path = path or catalogue_path()
    try:
        raw: dict[str, Any] = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as err:
        raise UsageError(f"plugin catalogue {path} cannot be read: {err}") from err
    entries = []
    for item in raw.get("plugins", []):
        try:
            entries.append(CatalogueEntry(**item))
        except TypeError as err:
            raise UsageError(
                f"plugin catalogue {path}: entry {item.get('name')!r} is malformed: {err}"
            ) from err
    return entries
