"""Shell-completion callbacks: plugin, recipe and architecture names and config keys.

While an option's value is being completed, click has not parsed the positional arguments yet (and Typer passes
no raw arguments), so the plugin and recipe are read from the words the shell hands over: ``COMP_WORDS`` (bash)
or ``_TYPER_COMPLETE_ARGS`` (zsh, fish, PowerShell).
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Iterator

import typer


def _shell_words() -> list[str]:
    raw = os.environ.get("COMP_WORDS") or os.environ.get("_TYPER_COMPLETE_ARGS", "")
    try:
        return shlex.split(raw)
    except ValueError:  # an unfinished quote
        return raw.split()


def _positionals(ctx: typer.Context) -> tuple[str | None, str | None]:
    plugin, recipe = ctx.params.get("plugin"), ctx.params.get("recipe")
    args = _shell_words()
    if plugin is None and "run" in args:
        after = args[args.index("run") + 1 :]
        plugin = after[0] if after and not after[0].startswith("-") else None
        recipe = after[1] if len(after) > 1 and not after[1].startswith("-") else None
    return plugin, recipe


def _record(plugin: str | None):
    from medkit.plugins import get_plugins

    try:
        return get_plugins().get(plugin) if plugin else None
    except Exception:  # completion must never print an error into the shell
        return None


def plugins(incomplete: str) -> Iterator[str]:
    from medkit.plugins import get_plugins

    yield from (name for name in get_plugins().names() if name.startswith(incomplete))


def recipes(ctx: typer.Context, incomplete: str) -> Iterator[str]:
    record = _record(_positionals(ctx)[0])
    if record:
        yield from (name for name in record.recipes if name.startswith(incomplete))


def architectures(ctx: typer.Context, incomplete: str) -> Iterator[str]:
    record = _record(_positionals(ctx)[0])
    if record:
        yield from (name for name in record.of_kind("architecture") if name.startswith(incomplete))


def config_keys(ctx: typer.Context, incomplete: str) -> Iterator[str]:
    """``--set`` completes to ``key.path=`` for every option of the chosen (or default) recipe."""
    from medkit.config import key_paths

    plugin, recipe_name = _positionals(ctx)
    record = _record(plugin)
    if not record:
        return
    recipe = record.recipes.get(recipe_name) if recipe_name in record.recipes else record.default_recipe()
    yield from (f"{key}=" for key in key_paths(recipe.load_config_class()) if key.startswith(incomplete))
