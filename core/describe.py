"""What a plugin provides, as plain data (for ``medkit describe``)."""

from __future__ import annotations

from typing import Any

from .entries import ArchitectureEntry, Recipe
from .plugins import PluginRecord, describe_exception


def parameter_count(entry: ArchitectureEntry) -> int | str:
    """Parameters at default settings, counted on torch's meta device (no memory is allocated)."""
    import torch

    try:
        with torch.device("meta"):
            model = entry.build()
        return (
            int(model.num_parameters())
            if hasattr(model, "num_parameters")
            else sum(p.numel() for p in model.parameters())
        )
    except Exception as err:  # a broken factory is reported, not fatal
        return f"cannot build: {describe_exception(err)}"


def describe_entry(entry: Any) -> dict[str, Any]:
    item: dict[str, Any] = {"name": entry.name, "summary": entry.summary}
    if hasattr(entry, "task"):
        item["task"] = entry.task
    if isinstance(entry, Recipe):
        item["default"] = entry.default
    if isinstance(entry, ArchitectureEntry):
        item["parameters"] = parameter_count(entry)
    return item


def describe_plugin(record: PluginRecord) -> dict[str, Any]:
    return {
        "name": record.name,
        "distribution": record.distribution,
        "version": record.version,
        "api": record.api,
        "entries": {
            kind: [describe_entry(e) for _, e in sorted(table.items())]
            for kind, table in record.entries.items()
        },
    }
