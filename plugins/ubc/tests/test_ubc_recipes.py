"""`medkit run ubc` end to end on tiny data: train (both models, deep supervision, semi-supervised), predict
with mask and Grad-CAM, the study's table and figures, and bad input that stops with exit code 2."""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path

import pytest
import yaml
from helpers import brats_training_tree, image_folder

from medkit.scorers import wilson_interval
from medkit.testing import run_cli

TINY = [
    "--device",
    "cpu",
    "--epochs",
    "2",
    "--set",
    "image_size=32",
    "--set",
    "batch_size=8",
    "--set",
    "data_options.synthetic.patients=4",
    "--set",
    "plateau=2",
]


def summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


@pytest.mark.parametrize("arch", ["resnet34", "ubc_resnet18"])
def test_a_short_run_writes_the_papers_figures_at_the_plateau(tmp_path, arch):
    out = tmp_path / "run"
    result = run_cli(["run", "ubc", "--arch", arch, "--out", str(out), *TINY])
    assert result.exit_code == 0, result.output
    figures = summary(out)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 2 and records[0]["train/samples"] == 20  # 2 of 4 patients per class x 5 slices
    for name in ("accuracy", "accuracy_ci_low", "accuracy_ci_high", "balanced_accuracy", "roc_auc"):
        assert f"val/{name}" in records[-1]
    assert ("val/dice" in records[-1]) is (arch != "resnet34")
    mean = (records[0]["val/accuracy"] + records[1]["val/accuracy"]) / 2
    assert figures["plateau"]["accuracy"] == pytest.approx(mean)
    assert figures["plateau"]["accuracy_ci_low"] < mean < figures["plateau"]["accuracy_ci_high"]
    assert figures["train"]["patients"] == 4 and figures["test"]["patients"] == 4
    assert (out / "checkpoints" / "best.pt").is_file() and (out / "plots" / "curves.png").is_file()
    config = yaml.safe_load((out / "config.yaml").read_text())
    # the CPU demo's step size with the paper's schedule shape (README, Deviations)
    assert (config["optim"]["lr"], config["optim"]["step_size"], config["optim"]["gamma"]) == (5e-4, 5, 0.9)
    assert config["batch_size"] == 8 and config["alpha"] == 0.5


def test_deep_supervision_and_semi_supervised_masks_train_together(tmp_path):
    out = tmp_path / "run"
    options = ["--set", "model.deep_supervision=true", "--set", "data_options.semi_supervised=true"]
    options += ["--set", "data_options.synthetic.unlabelled=2", "--set", "per_class=3"]
    options += ["--set", "min_epoch_images=40"]  # 16 training images: 3 whole passes per epoch
    result = run_cli(["run", "ubc", "--arch", "ubc_resnet18", "--out", str(out), *TINY, *options])
    assert result.exit_code == 0, result.output
    train = summary(out)["train"]
    assert train["per_class"] == {"diffuse": 3, "ring": 3} and train["unlabelled"] == 10  # 2 patients x 5
    assert summary(out)["epoch_images"] == 48
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["train/samples"] for r in records] == [48, 48]
    assert summary(out)["parameters"] > 14_000_000


def test_epoch_indices_repeat_whole_passes():
    from medkit_ubc.recipes.train import epoch_indices

    assert epoch_indices([4, 7, 9], 0) == [4, 7, 9] == epoch_indices([4, 7, 9], 3)
    assert epoch_indices([4, 7], 5) == [4, 7] * 3  # every image equally often, at least 5
    assert epoch_indices([], 80) == []


def test_the_small_study_scale_trains_on_cpu_and_the_paper_scale_keeps_the_papers_set_up():
    from medkit.config import resolve_config
    from medkit_ubc.config import TrainUbcConfig
    from medkit_ubc.studies import StudyUbcConfig, Trial, trial_layers, trials

    trial = Trial("ubc_resnet34", 2, 0)
    small = resolve_config(TrainUbcConfig, trial_layers(StudyUbcConfig(), trial))[0]
    assert (small.optim.lr, small.optim.step_size, small.optim.gamma) == (5e-4, 5, 0.9)
    assert (small.image_size, small.batch_size, small.min_epoch_images, small.per_class) == (64, 16, 128, 2)
    assert small.epochs * small.min_epoch_images // small.batch_size == 96  # optimiser steps at 2 per class
    assert small.plateau == 5  # the paper's mean of 5 evaluations
    grid = trials(StudyUbcConfig())
    assert sorted({t.size for t in grid}) == [2, 5, 10, 20, 50] and {t.seed for t in grid} == {0, 1, 2}
    paper = resolve_config(TrainUbcConfig, trial_layers(StudyUbcConfig(scale="paper"), trial))[0]
    assert (paper.optim.name, paper.optim.lr, paper.optim.step_size, paper.optim.gamma) == (
        "adam",
        2e-5,
        5,
        0.9,
    )
    assert (paper.image_size, paper.epochs, paper.batch_size, paper.min_epoch_images) == (224, 200, 50, 0)
    assert (paper.plateau, paper.dice_formula, paper.data_options.synthetic.patients) == (5, "paper", 76)


def test_predict_draws_probability_mask_and_grad_cam_for_unseen_images(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDKIT_RUNS_DIR", str(tmp_path / "runs"))
    assert run_cli(["run", "ubc", "--arch", "ubc_resnet18", *TINY]).exit_code == 0
    out = tmp_path / "predicted"
    args = ["run", "ubc", "predict", "--out", str(out), "--device", "cpu"]
    result = run_cli([*args, "--set", "image_size=32", "--set", "images=3"])
    assert result.exit_code == 0, result.output
    predicted = summary(out)
    assert predicted["arch"] == "ubc_resnet18" and len(predicted["images"]) == 3
    for entry in predicted["images"].values():
        assert sum(entry["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
        assert 0 <= entry["dice"] <= 1 and entry["true"] in ("diffuse", "ring")
        assert Path(entry["overlay"]).read_bytes()[:4] == b"\x89PNG"
    assert 0 <= predicted["accuracy"] <= 1


def test_a_brats_training_tree_trains_end_to_end_on_the_papers_balanced_sample(tmp_path):
    data = brats_training_tree(tmp_path, hgg=5, lgg=2)
    out = tmp_path / "run"
    result = run_cli(["run", "ubc", "--arch", "ubc_resnet18", "--data", str(data), "--out", str(out), *TINY])
    assert result.exit_code == 0, result.output
    figures = summary(out)
    assert figures["classes"] == ["LGG", "HGG"]
    # 2 LGG and 2 of the 5 HGG, halved per class: 1 patient x 5 slices per class on each side
    assert figures["train"]["per_class"] == figures["test"]["per_class"] == {"LGG": 5, "HGG": 5}
    drawn = figures["train"]["patient_ids"] + figures["test"]["patient_ids"]
    assert len(drawn) == 4 and sum("TCIA10" in p for p in drawn) == 2


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--set", "per_class=30"], "per_class=30: class 'diffuse' has only 10 training images"),
        (["--set", "image_size=40"], "multiple of 32"),
        (["--set", "model.num_classes=3"], "model.num_classes=3"),
    ],
)
def test_bad_options_stop_with_exit_code_2_and_leave_no_run(tmp_path, options, message):
    out = tmp_path / "run"
    result = run_cli(["run", "ubc", "--arch", "resnet34", "--out", str(out), *TINY, *options])
    assert result.exit_code == 2, result.output
    assert message in result.output and not out.exists()


def test_bad_masks_stop_with_exit_code_2(tmp_path):
    data = image_folder(tmp_path / "png", mask_value=255)
    result = run_cli(["run", "ubc", "--data", str(data), "--out", str(tmp_path / "run"), *TINY])
    assert result.exit_code == 2 and "binarize=true" in result.output


STUDY = [
    "base.epochs=1",
    "base.image_size=32",
    "base.batch_size=8",
    "base.plateau=1",
    "base.min_epoch_images=8",
]
STUDY += ["base.data_options.synthetic.patients=4", "sizes=[1,3]", "seeds=2", "archs=[resnet34,ubc_resnet18]"]


def run_study(out: Path, *sets: str, resume: bool = False):
    args = ["run", "ubc", "study", "--out", str(out), "--device", "cpu"]
    args += [a for s in [*STUDY, *sets] for a in ("--set", s)] + (["--resume"] if resume else [])
    return run_cli(args)


def test_the_study_trains_both_models_per_size_and_seed_on_one_test_set(tmp_path):
    out = tmp_path / "study"
    result = run_study(out)
    assert result.exit_code == 0, result.output
    with open(out / "study.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["arch"], r["size"], r["seed"]) for r in rows] == [
        (arch, size, seed)
        for size in ("1", "3")  # smallest first, both models at each size and seed before the next
        for seed in ("0", "1")
        for arch in ("resnet34", "ubc_resnet18")
    ]
    tests = set()
    for row in rows:
        trial = summary(out / row["run_dir"])
        assert trial["train"]["per_class"] == {"diffuse": int(row["size"]), "ring": int(row["size"])}
        assert trial["epoch_images"] == {"1": 8, "3": 12}[row["size"]]  # whole passes of 2 or 6, at least 8
        assert float(row["accuracy"]) == trial["plateau"]["accuracy"]
        tests.add(json.dumps(trial["test"], sort_keys=True))
    assert len(tests) == 1  # one fixed test set for every trial
    by_size = summary(out)["by_size"]
    assert [(r["arch"], r["size"], r["seeds"]) for r in by_size] == [
        ("resnet34", 1, 2),
        ("resnet34", 3, 2),
        ("ubc_resnet18", 1, 2),
        ("ubc_resnet18", 3, 2),
    ]
    for row in by_size:  # the interval is over the one test set's images; the seeds' spread is reported apart
        mine = [r for r in rows if (r["arch"], int(r["size"])) == (row["arch"], row["size"])]
        accuracies = [float(r["accuracy"]) for r in mine]
        n = int(mine[0]["test_images"])
        assert row["test_images"] == n and row["accuracy"] == pytest.approx(sum(accuracies) / 2)
        assert (row["ci_low"], row["ci_high"]) == pytest.approx(
            wilson_interval(round(row["accuracy"] * n), n)
        )
        assert row["seed_sd"] == pytest.approx(statistics.stdev(accuracies))
    for plot in ("accuracy_vs_size", "dice_vs_accuracy"):
        assert (out / "plots" / f"{plot}.png").read_bytes()[:4] == b"\x89PNG"
        assert f"(plots/{plot}.png)" in (out / "study.md").read_text()

    # a killed study resumed: finished trials are kept, a trial without summary is completed
    (out / rows[-1]["run_dir"] / "summary.json").unlink()
    kept = (out / rows[0]["run_dir"] / "metrics.jsonl").stat().st_mtime_ns
    assert run_study(out, resume=True).exit_code == 0
    assert (out / rows[0]["run_dir"] / "metrics.jsonl").stat().st_mtime_ns == kept
    assert (out / rows[-1]["run_dir"] / "summary.json").is_file()


def test_a_failing_trial_is_recorded_and_a_size_too_large_stops_before_the_study(tmp_path):
    out = tmp_path / "study"
    result = run_study(out, "sizes=[1,30]", "seeds=1", "archs=[resnet34]")
    assert result.exit_code == 1 and "1 of 2 trials failed" in result.output
    assert "per_class=30" in (out / "study.md").read_text()
    assert summary(out)["finished"] == 1
    typo = run_study(tmp_path / "other", "base.epoch=2")
    assert typo.exit_code == 2 and "Did you mean 'epochs'" in typo.output


def test_the_papers_set_up_ships_as_a_config_file_equal_to_the_paper_scale():
    from medkit.config import resolve_config
    from medkit_ubc.config import PAPER, TrainUbcConfig

    configs = Path(__file__).resolve().parents[1] / "configs"
    result = run_cli(["run", "ubc", "--config", str(configs / "paper.yaml"), "--print-config"])
    assert result.exit_code == 0, result.output
    paper = yaml.safe_load(result.stdout)
    assert (paper["image_size"], paper["epochs"], paper["batch_size"], paper["alpha"]) == (224, 200, 50, 0.5)
    assert (paper["optim"]["name"], paper["optim"]["lr"], paper["optim"]["step_size"]) == ("adam", 2e-5, 5)
    assert paper["data_options"]["slices_per_patient"] == 5 and paper["val_fraction"] == 0.5
    from_file = resolve_config(
        TrainUbcConfig, [("paper.yaml", yaml.safe_load((configs / "paper.yaml").read_text()))]
    )
    from_constant = resolve_config(TrainUbcConfig, [("config.PAPER", PAPER)])
    assert from_file[0] == from_constant[0]  # one paper set-up: the file and the study's paper scale agree


def test_the_papers_config_takes_a_real_step_at_224_px(tmp_path):
    """configs/paper.yaml as shipped (224 px, Adam 2e-5, batch 50, equation 3's Dice), on 2 synthetic patients per
    class instead of 76 and one epoch: one optimiser step on the 10 training images."""
    import math

    configs = Path(__file__).resolve().parents[1] / "configs"
    out = tmp_path / "paper"
    options = ["--device", "cpu", "--epochs", "1", "--set", "data_options.synthetic.patients=2"]
    result = run_cli(["run", "ubc", "--config", str(configs / "paper.yaml"), "--out", str(out), *options])
    assert result.exit_code == 0, result.output
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert (config["image_size"], config["batch_size"], config["optim"]["lr"]) == (224, 50, 2e-5)
    assert config["dice_formula"] == "paper"
    (record,) = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert record["train/samples"] == 10  # 1 of 2 patients per class trains, 5 slices each
    assert math.isfinite(record["train/loss"]) and "val/dice" in record
