"""What the anomaly recipes share: where the images come from, the extractor, saved models, and fit memory."""

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
    if layers is None and config.arch == "patchcore":
        from ..backbone_table import patchcore_layers

        layers = list(patchcore_layers(config.backbone))
    return build_backbone(
        config.backbone, config.weights, layers, seed=config.seed, variant=config.weights_variant
    ).to(device)


def fit_run_dir(models: Path | None) -> Path:
    """``--set models=DIR`` (checked to be an anomaly-backbones fit run), or the latest `fit` run under the runs
    folder."""
    from medkit.runs import latest_run_dir, runs_root

    if models is not None:
        return checked_fit_run(Path(models))
    try:
        return latest_run_dir("anomaly-backbones", "fit")
    except UsageError:
        raise UsageError(
            f"no `fit` run of anomaly-backbones under {runs_root()}; give one with --set models=DIR"
        ) from None


def fit_run_and_model(models: Path | None) -> tuple[Path, Path | None]:
    """The fit run that ``--set models`` names, and the model file when it names one (``RUN/models/<category>.pt``).

    A model file is only usable inside its run: the run's config.yaml holds the backbone and the preprocessing
    the checkpoint does not."""
    if models is None or not Path(models).is_file():
        return fit_run_dir(models), None
    path = Path(models)
    if path.suffix != ".pt" or path.parent.name != "models":
        raise UsageError(
            f"--set models={path}: not a fit run's model; give a fit run's directory or one of its "
            "models/<category>.pt files (the run's config.yaml beside models/ is needed too)"
        )
    return checked_fit_run(path.parent.parent), path


def checked_fit_run(run_dir: Path) -> Path:
    """``run_dir`` if it is a run of anomaly-backbones' `fit` (a study's trials are), else a UsageError saying
    what it is."""
    from medkit.runs import ENV_FILE, is_run_dir, read_json

    what = "give the directory of a `medkit run anomaly-backbones` (fit) run"
    if not run_dir.exists():
        raise UsageError(f"--set models={run_dir} does not exist; {what}")
    if not is_run_dir(run_dir):
        raise UsageError(f"--set models={run_dir} is not a medkit run (no config.yaml and env.json); {what}")
    env = read_json(run_dir / ENV_FILE)
    plugin, recipe = env.get("plugin"), env.get("recipe")
    if (plugin, recipe) != ("anomaly-backbones", "fit"):
        hint = (
            " (a study's fit runs are its trials/<method>-<backbone>-<weights>/ folders)"
            if recipe == "study"
            else ""
        )
        raise UsageError(f"--set models={run_dir} is a run of {plugin} {recipe}, not a fit run{hint}; {what}")
    return run_dir


def saved_models(run_dir: Path) -> dict[str, Path]:
    """The models a fit run saved, by category."""
    models = sorted((Path(run_dir) / "models").glob("*.pt"))
    if not models:
        raise UsageError(
            f"{run_dir} holds no fitted model (models/*.pt); give a `fit` run with --set models=DIR"
        )
    return {path.stem: path for path in models}


def load_fitted(path: Path, fitted: dict[str, Any], device: str) -> tuple[Any, dict[str, Any]]:
    """The model that a fit run (its config ``fitted``) saved at ``path``, and the checkpoint (its category,
    thresholds). The extractor is built without weights: the checkpoint holds them."""
    from medkit.checkpoint import load_checkpoint

    from ..backbones import build_backbone
    from ..methods import method_class

    state = load_checkpoint(path)
    layers = state.get("layers", fitted.get("layers"))  # older checkpoints: the fit config's
    extractor = build_backbone(fitted["backbone"], "random", layers, seed=fitted["seed"])
    return method_class(state["arch"]).from_state(extractor, state["model"], device=device), state


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
