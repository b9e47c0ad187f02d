"""HDF5 compression for the slice cache, chosen by measurement (benchmarks/cache_codecs.py).

On CT-like int16 volumes chunked one slice per chunk, Blosc with LZ4 and byte shuffle gave a smaller file than
gzip and decoded a slice about 6x faster (README, "Slice cache codecs"), so it is the default; zstd is offered
for the smallest file, gzip and lzf for readers without hdf5plugin.
"""

from __future__ import annotations

from typing import Any

from ..errors import UsageError

CODECS = ("blosc-lz4", "blosc-zstd", "gzip", "lzf", "none")
DEFAULT_CODEC = "blosc-lz4"


def codec_options(name: str) -> dict[str, Any]:
    """Keyword arguments for ``h5py.Group.create_dataset`` that select codec ``name``."""
    if name in ("blosc-lz4", "blosc-zstd"):
        import hdf5plugin

        cname = name.split("-")[1]
        return dict(
            hdf5plugin.Blosc(cname=cname, clevel=5 if cname == "lz4" else 1, shuffle=hdf5plugin.Blosc.SHUFFLE)
        )
    if name == "gzip":
        return {"compression": "gzip", "compression_opts": 1}
    if name == "lzf":
        return {"compression": "lzf"}
    if name == "none":
        return {}
    raise UsageError(f"--codec {name!r}: unknown codec; choose one of {', '.join(CODECS)}")


def register_filters() -> None:
    """Make hdf5plugin's filters (Blosc, ...) available to h5py readers."""
    import hdf5plugin  # noqa: F401  (importing registers the filters)
