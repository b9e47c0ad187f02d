"""Shell-completion callbacks: plugin, recipe and architecture names and config keys."""

from __future__ import annotations

from collections.abc import Iterator

import typer


def _record(plugin: str | None):
    from medkit.plugins import get_plugins

    try:
        return get_plugins().get(plugin) if plugin else None
    except Exception:
        return None


def plugins(incomplete: str) -> Iterator[str]:
    from medkit.plugins import get_plugins

    yield from (name for name in get_plugins().names() if name.startswith(incomplete))


def recipes(ctx: typer.Context, incomplete: str) -> Iterator[str]:
    record = _record(ctx.params.get("plugin"))
    if record:
        yield from (name for name in record.recipes if name.startswith(incomplete))


def architectures(ctx: typer.Context, incomplete: str) -> Iterator[str]:
    record = _record(ctx.params.get("plugin"))
    if record:
        yield from (name for name in record.of_kind("architecture") if name.startswith(incomplete))


def config_keys(ctx: typer.Context, incomplete: str) -> Iterator[str]:
    """``--set`` completes to ``key.path=`` for every option of the chosen (or default) recipe."""
    from medkit.config import key_paths

    record = _record(ctx.params.get("plugin"))
    if not record:
        return
    name = ctx.params.get("recipe")
    recipe = record.recipes.get(name) if name else record.default_recipe()
    if recipe:
        yield from (f"{key}=" for key in key_paths(recipe.load_config_class()) if key.startswith(incomplete))
