"""Consoles and the translation of medkit errors into messages and exit codes."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import typer
from rich.console import Console
from rich.markup import escape

from medkit.errors import MedkitError

console = Console()
err_console = Console(stderr=True)


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Print a medkit error as one clear message and exit with its code (2 usage, 1 run failure).

    ``MEDKIT_DEBUG=1`` lets the traceback through, for plugin authors.
    """
    try:
        yield
    except MedkitError as err:
        if os.environ.get("MEDKIT_DEBUG", "").lower() in {"1", "true", "yes", "on"}:
            raise
        err_console.print(f"[bold red]error:[/] {escape(str(err))}", soft_wrap=True)
        raise typer.Exit(err.exit_code) from None
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]; a run continues from its last checkpoint with --resume")
        raise typer.Exit(130) from None
