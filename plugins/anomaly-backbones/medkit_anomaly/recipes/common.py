"""What the anomaly recipes share: where the images come from, the extractor, and fit memory."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from medkit import UsageError

from ..data import Preprocess, categories


def data_root(config: Any) -> Path:
    """``--data`` (an MVTec-layout folder) or the embedded texture set, generated once."""
    if config.data is not None:
        return Path(config.data)
    from ..textures import TextureSet, embedded_textures

    t = config.textures
    return embedded_textures(
        TextureSet(size=t.size, train=t.train, test_good=t.test_good, test_defect=t.test_defect)
    )


def chosen_categories(root: Path, wanted: list[str]) -> list[str]:
    found = categories(root)
    if not found:
        raise UsageError(
            f"{root} holds no category in MVTec AD's layout (<category>/train/good/*.png); check --data"
        )
    unknown = [c for c in wanted if c not in found]
    if unknown:
        raise UsageError(f"--set categories: {', '.join(unknown)} not in {root}; found: {', '.join(found)}")
    return wanted or found


def preprocess_of(config: Any) -> Preprocess:
    return Preprocess(resize=config.resize, crop=config.crop)


def build_extractor(config: Any, device: str) -> Any:
    from ..backbones import build_backbone

    layers = list(config.layers) if config.layers else None
    return build_backbone(config.backbone, config.weights, layers, seed=config.seed).to(device)


class PeakMemory:
    """The process's peak resident memory above its level at entry (Linux: VmHWM after clear_refs), in MiB."""

    def __enter__(self) -> PeakMemory:
        self.start = self._reset_and_read()
        self.mib = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self.mib = max(0.0, (self._read("VmHWM:") - self.start) / 1024)

    def _reset_and_read(self) -> int:
        # not Linux, or not allowed: the peak then spans the whole process
        with contextlib.suppress(OSError):
            Path("/proc/self/clear_refs").write_text("5")
        return self._read("VmRSS:")

    @staticmethod
    def _read(field: str) -> int:
        try:
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith(field):
                    return int(line.split()[1])
        except OSError:
            pass
        return 0
