"""``medkit``: list plugins, describe one, run a recipe."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from . import complete
from .cache import app as cache_app
from .output import console, user_errors
from .run import run

app = typer.Typer(
    name="medkit",
    help="Deep learning on small medical-imaging data sets. Plugins add methods; `medkit run PLUGIN` runs one.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)
app.command(
    "run",
    context_settings={"help_option_names": []},
    help="Run a plugin's recipe (default: its default recipe) on --data or on its embedded demo data.",
)(run)

app.add_typer(cache_app, name="cache")


@app.command("list-plugins")
def list_plugins(
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list for scripts.")] = False,
    show_all: Annotated[
        bool,
        typer.Option(
            "--all", help="Also list catalogue plugins that are not installed, with how to install."
        ),
    ] = False,
) -> None:
    """Installed plugins: name, version, status (ok / failed / blocked) and what each registers."""
    from medkit.catalogue import load_catalogue, repo_root
    from medkit.plugins import get_plugins

    with user_errors():
        records = [r.to_json() for r in get_plugins()]
        missing = []
        if show_all:
            installed = {r["name"] for r in records}
            root = repo_root()
            missing = [
                {
                    "name": e.name,
                    "distribution": e.distribution,
                    "version": None,
                    "status": "not installed",
                    "error": None,
                    "api": e.api,
                    "recipes": e.provides.get("recipes", []),
                    "summary": e.summary,
                    "install": e.install_command(root),
                }
                for e in load_catalogue()
                if e.name not in installed
            ]
    if as_json:
        typer.echo(json.dumps(records + missing, indent=2))
        return
    _print_plugin_table(records, missing)


def plural(kind: str) -> str:
    return kind + ("es" if kind.endswith("s") else "s")


def _print_plugin_table(records: list[dict], missing: list[dict]) -> None:
    from rich.markup import escape
    from rich.table import Table

    colour = {"ok": "green", "failed": "red", "blocked": "yellow", "not installed": "dim"}
    table = Table(title="medkit plugins", title_justify="left")
    for column in ("plugin", "version", "status", "provides"):
        table.add_column(column, overflow="fold")
    for r in records:
        provides = "; ".join(f"{plural(kind)}: {', '.join(names)}" for kind, names in r["provides"].items())
        detail = escape(provides if r["status"] == "ok" else r["error"] or "")
        status = f"[{colour[r['status']]}]{r['status']}[/]"
        table.add_row(r["name"], r["version"] or "-", status, detail)
    for m in missing:
        table.add_row(m["name"], "-", "[dim]not installed[/]", escape(f"{m['summary']}\n-> {m['install']}"))
    if not records and not missing:
        console.print("No plugins installed. `medkit list-plugins --all` shows the catalogue.")
        return
    console.print(table)


@app.command()
def describe(
    plugin: Annotated[str, typer.Argument(help="Plugin name.", autocompletion=complete.plugins)],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """What a plugin registers: recipes, architectures (with parameter counts), datasets, losses, scorers."""
    from medkit.describe import describe_plugin
    from medkit.plugins import get_plugins

    with user_errors():
        description = describe_plugin(get_plugins().get(plugin))
    if as_json:
        typer.echo(json.dumps(description, indent=2))
        return
    _print_description(description)


def _print_description(description: dict) -> None:
    from rich.table import Table

    console.print(f"[bold]{description['name']}[/] {description['version'] or ''}  API {description['api']}")
    for kind, items in description["entries"].items():
        table = Table(title=plural(kind), title_justify="left")
        columns = [
            c for c in ("name", "task", "parameters", "default", "summary") if any(c in i for i in items)
        ]
        for column in columns:
            table.add_column(column, justify="right" if column == "parameters" else "left")
        for item in items:
            cells = []
            for column in columns:
                value = item.get(column, "")
                cells.append(
                    f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)
                )
            table.add_row(*cells)
        console.print(table)


def main() -> None:
    app(prog_name="medkit")


if __name__ == "__main__":
    main()
