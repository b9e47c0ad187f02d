"""The ``medkit`` command line: a thin Typer layer over the core; heavy imports happen inside commands."""
