"""``medkit cache build|info|verify``: the H5 slice cache from the command line."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from .output import console, err_console, user_errors

app = typer.Typer(help="Build, inspect and verify H5 slice caches of CT/MR volumes.", no_args_is_help=True)


def _preprocessing(window: str | None, minmax: bool):
    from medkit.cache.store import Preprocessing
    from medkit.errors import UsageError

    if window and minmax:
        raise UsageError("--window and --minmax exclude each other; choose one intensity preprocessing")
    if minmax:
        return Preprocessing("minmax")
    if window:
        try:
            low, high = (float(part) for part in window.split(","))
        except ValueError:
            raise UsageError(
                f"--window {window!r}: expected LOW,HIGH in HU, e.g. --window=-1000,400"
            ) from None
        return Preprocessing("window", low, high)
    return Preprocessing()


@app.command()
def build(
    out: Annotated[Path, typer.Option("--out", help="The cache file to write (HDF5).")],
    sources: Annotated[
        list[Path] | None,
        typer.Argument(
            help="Volume files or folders (NIfTI, MetaImage, DICOM of any file names, NumPy); none with "
            "--manifest. Without a pairing rule a folder's layout is recognised: LUNA16, images/ + masks/ "
            "or labels/, nnU-Net imagesTr/ + labelsTr/, <name>_seg masks, or volumes without masks."
        ),
    ] = None,
    mask_suffix: Annotated[
        str | None, typer.Option(help="Mask file = image name + suffix, e.g. _seg.")
    ] = None,
    mask_dir: Annotated[
        str | None, typer.Option(help="Masks in a parallel folder with the same file names (LUNA16).")
    ] = None,
    manifest: Annotated[Path | None, typer.Option(help="CSV with columns image,mask[,id].")] = None,
    window: Annotated[
        str | None, typer.Option(help="HU window LOW,HIGH applied when slices are served.")
    ] = None,
    minmax: Annotated[bool, typer.Option("--minmax", help="Per-slice min-max scaling (paper 002).")] = False,
    codec: Annotated[
        str, typer.Option(help="blosc-lz4 (default, measured fastest), blosc-zstd, gzip, lzf, none.")
    ] = ("blosc-lz4"),
    workers: Annotated[int, typer.Option(help="Processes that read volumes in parallel.")] = min(
        4, os.cpu_count() or 1
    ),
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue an interrupted build or add to a cache.")
    ] = False,
    skip_bad: Annotated[
        bool, typer.Option("--skip-bad", help="Skip and report volumes that cannot be read.")
    ] = False,
) -> None:
    """Convert volumes and masks into one HDF5 slice cache (atomic; --resume continues)."""
    from medkit.cache.build import build_cache
    from medkit.cache.pairing import find_pairs

    with user_errors():
        if not sources and manifest is None:
            from medkit.errors import UsageError

            raise UsageError("name the volumes to convert: SRC... (files or folders) or --manifest pairs.csv")
        pairs = find_pairs(
            sources or [],
            mask_suffix=mask_suffix,
            mask_dir=mask_dir,
            manifest=manifest,
            on_left_out=_left_out,
        )
        preprocessing = _preprocessing(window, minmax)
        with _progress(len(pairs)) as advance:
            report = build_cache(
                pairs,
                out,
                codec=codec,
                preprocessing=preprocessing,
                workers=workers,
                resume=resume,
                skip_bad=skip_bad,
                on_progress=advance,
            )
    console.print(
        f"{out}: {len(report.converted)} volume(s) converted, {len(report.skipped_done)} already there, "
        f"{len(report.bad)} skipped as bad, in {report.seconds:.1f} s",
        soft_wrap=True,
    )
    for name, message in report.bad.items():
        err_console.print(f"[yellow]skipped[/] {name}: {message}", soft_wrap=True)


def _left_out(note: str) -> None:
    """A DICOM series that is no volume (a localizer) is not converted; say so rather than drop it unseen."""
    err_console.print(f"[yellow]left out[/] {escape(note)}", soft_wrap=True, highlight=False)


class _progress:
    """A rich progress bar on a terminal; one line per volume otherwise."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.bar = None

    def __enter__(self):
        if console.is_terminal:
            from rich.progress import Progress

            self.bar = Progress(console=console, transient=True)
            self.bar.start()
            self.task = self.bar.add_task("converting", total=self.total)
        return self.advance

    def advance(self, name: str, status: str) -> None:
        if self.bar is not None:
            self.bar.advance(self.task)
        else:
            console.print(f"{name}: {status}", soft_wrap=True)

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.stop()


@app.command()
def info(
    cache: Annotated[Path, typer.Argument(help="A slice cache file.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Volumes, slices, shapes, classes and bytes of a cache."""
    from medkit.cache.inspect import cache_info

    with user_errors():
        summary = cache_info(cache)
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    for key, value in summary.items():
        console.print(f"[bold]{key}[/]: {value}")


@app.command()
def verify(cache: Annotated[Path, typer.Argument(help="A slice cache file.")]) -> None:
    """Read every chunk; check checksums, mask/image shapes and stored class areas (exit 1 on any problem)."""
    from medkit.cache.inspect import verify_cache

    with user_errors():
        report = verify_cache(cache)
    for name, problem in report.problems.items():
        err_console.print(f"[red]{name}[/]: {problem}", soft_wrap=True)
    console.print(f"{report.volumes_checked} volume(s) checked, {len(report.problems)} problem(s)")
    if not report.ok:
        raise typer.Exit(1)
