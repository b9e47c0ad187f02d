"""``medkit run PLUGIN [RECIPE] [options]``: resolve the config, then run the recipe in a run directory."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from . import complete
from .output import console, user_errors


def run(
    ctx: typer.Context,
    plugin: Annotated[
        str | None, typer.Argument(help="Plugin name.", autocompletion=complete.plugins)
    ] = None,
    recipe: Annotated[
        str | None,
        typer.Argument(help="Recipe (default: the plugin's default).", autocompletion=complete.recipes),
    ] = None,
    arch: Annotated[
        str | None, typer.Option(help="Architecture name.", autocompletion=complete.architectures)
    ] = None,
    data: Annotated[Path | None, typer.Option(help="Input data; none: embedded demo data.")] = None,
    out: Annotated[
        Path | None, typer.Option(help="Run directory (default runs/<plugin>/<time>-<arch>).")
    ] = None,
    config: Annotated[
        list[Path] | None,
        typer.Option("--config", metavar="FILE", help="YAML config file (repeatable, later files win)."),
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            metavar="KEY=VALUE",
            help="key.path=value (repeatable); beats config files.",
            autocompletion=complete.config_keys,
        ),
    ] = None,
    epochs: Annotated[int | None, typer.Option(help="Number of epochs.")] = None,
    init: Annotated[
        Path | None,
        typer.Option(
            help="Start from this checkpoint (transfer learning), for recipes with an `init` option."
        ),
    ] = None,
    freeze: Annotated[
        str | None,
        typer.Option(
            help="Blocks kept at the --init weights, e.g. d1,g2, for recipes with a `freeze` option."
        ),
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed.")] = None,
    device: Annotated[str | None, typer.Option(help="cpu, cuda or auto.")] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the run in --out (or the latest one).")
    ] = False,
    print_config: Annotated[
        bool, typer.Option("--print-config", help="Print the resolved config and exit.")
    ] = False,
    show_help: Annotated[
        bool, typer.Option("--help", "-h", help="Show this help, with the plugin's options.")
    ] = False,
) -> None:
    from medkit.plugins import get_plugins

    if show_help:
        typer.echo(ctx.get_help(), nl=False)
        with user_errors():
            if plugin:
                _print_recipe_options(get_plugins().get(plugin), recipe)
        raise typer.Exit(0)
    with user_errors():
        if plugin is None:
            from medkit.errors import UsageError

            names = ", ".join(get_plugins().names()) or "none installed"
            raise UsageError(f"missing PLUGIN: `medkit run PLUGIN`; installed plugins: {names}")
        record = get_plugins().get(plugin)
        chosen = _recipe(record, recipe)
        flags: dict[str, Any] = {
            "arch": arch,
            "data": data,
            "out": out,
            "epochs": epochs,
            "init": init,
            "freeze": freeze,
            "seed": seed,
            "device": device,
        }
        from medkit.runner import resolve

        resolved = resolve(record, chosen, list(config or []), list(set_ or []), flags, resume)
        if print_config:
            from medkit.config import dump_yaml

            typer.echo(dump_yaml(resolved), nl=False)
            return
        from medkit.runner import execute

        run_, summary = execute(record, chosen, resolved, resume, console)
    if run_.is_main:
        _print_summary(run_.dir, summary)


def _recipe(record, name: str | None):
    if name is None:
        return record.default_recipe()
    return record.entry("recipe", name, "RECIPE")


def _print_recipe_options(record, recipe_name: str | None) -> None:
    from rich.markup import escape
    from rich.table import Table

    from medkit.config import iter_fields, type_name

    recipe = _recipe(record, recipe_name)
    others = [name for name in record.recipes if name != recipe.name]
    console.print(
        f"\n[bold]{record.name}[/] recipes: "
        + ", ".join(f"[bold]{n}[/]" if n == recipe.name else n for n in record.recipes)
    )
    if record.of_kind("architecture"):
        console.print("architectures (--arch): " + ", ".join(sorted(record.of_kind("architecture"))))
    table = Table(
        title=f"options of {record.name} {recipe.name} (set with --set key=value or a --config file)",
        title_justify="left",
    )
    for column in ("key", "type", "default", "help"):
        table.add_column(column, overflow="fold")
    for info in iter_fields(recipe.load_config_class()):
        table.add_row(info.path, escape(type_name(info.type)), escape(repr(info.default)), escape(info.help))
    console.print(table)
    if others:
        console.print(f"other recipes: `medkit run {record.name} RECIPE --help` for {', '.join(others)}")


def _print_summary(run_dir: Path, summary: dict[str, Any]) -> None:
    """Headline figures; everything else is in summary.json."""
    from rich.table import Table

    table = Table(title=f"summary (all figures: {run_dir}/summary.json)", title_justify="left")
    table.add_column("figure")
    table.add_column("value", justify="right")
    headline = {k: v for k, v in summary.items() if not isinstance(v, dict | list)}
    final = summary.get("final", {})
    if isinstance(final, dict):
        headline.update({k: v for k, v in final.items() if "loss" in k or "/mean_" in k or "accuracy" in k})
    for key, value in headline.items():
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    console.print(table)
