"""`medkit run ct-seg study`: the paper's studies as grids of train runs; a table that agrees with each trial's
own files, plots, a resumed study that keeps its finished trials, and failures that do not stop the study."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import yaml

from medkit.config import load_yaml_file, resolve_config, to_plain
from medkit.testing import run_cli
from medkit_ct_seg.config import TrainSegConfig
from medkit_ct_seg.studies import SCALES, StudySegConfig, trials

TINY = {  # every trial as small as the train recipe's tests: a second or two each
    "base.arch": "mini_unet",
    "base.epochs": 1,
    "base.image_size": 32,
    "base.phantoms.volumes": 4,
    "base.phantoms.slices": 8,
    "base.sampler.samples_per_epoch": 16,
    "base.sampler.resident": 2,
    "base.sampler.uses": 4,
}
PAPER_YAML = Path(__file__).resolve().parents[1] / "configs" / "paper.yaml"


def run_study(out: Path, *sets: str, resume: bool = False):
    options = [f"{k}={v}" for k, v in TINY.items()] + list(sets)
    args = ["run", "ct-seg", "study", "--out", str(out), "--device", "cpu"]
    args += [a for option in options for a in ("--set", option)] + (["--resume"] if resume else [])
    return run_cli(args)


def table(out: Path) -> list[dict[str, str]]:
    with open(out / "study.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def metrics(trial: Path) -> list[dict]:
    return [json.loads(line) for line in (trial / "metrics.jsonl").read_text().splitlines()]


def test_the_table_has_a_row_per_grid_point_with_each_trials_own_figures_and_a_resume_keeps_them(tmp_path):
    out = tmp_path / "study"
    grid = ("studies=[architectures,optimizers]", "archs=[mini_unet,unet]", "widths=[4]")
    result = run_study(out, *grid)
    assert result.exit_code == 0, result.output
    rows = table(out)
    assert [(r["study"], r["trial"], r["status"]) for r in rows] == [
        ("architectures", "mini_unet-b4", "finished"),
        ("architectures", "unet-b4", "finished"),
        ("optimizers", "adam", "finished"),
        ("optimizers", "lion", "finished"),
    ]
    for row in rows:
        trial = out / row["run_dir"]
        summary = json.loads((trial / "summary.json").read_text())
        assert float(row["best_mean_dice"]) == summary["ranking"]["best"]
        assert float(row["mean_top10_dice"]) == summary["ranking"]["mean_top10"]
        assert int(row["best_epoch"]) == summary["ranking"]["best_epoch"]
        assert int(row["parameters"]) == summary["parameters"]
        for name in ("right_lung", "left_lung", "airway"):
            assert float(row[f"dice_{name}"]) == summary["best_val"][f"dice/{name}"]
        assert float(row["seconds"]) == round(sum(r["seconds"] for r in metrics(trial)), 1)
    assert int(rows[0]["parameters"]) == 310 * 4**2 + 64 * 4 + 4  # Mini U-Net's closed form at width 4
    lion = yaml.safe_load((out / "trials" / "optimizers" / "lion" / "config.yaml").read_text())
    assert lion["lion"] and (lion["optim"]["lr"], lion["optim"]["weight_decay"]) == (1e-4, 1e-2)
    assert not yaml.safe_load((out / "trials" / "optimizers" / "adam" / "config.yaml").read_text())["lion"]
    architectures = [r for r in rows if r["study"] == "architectures"]
    best = max(architectures, key=lambda r: float(r["best_mean_dice"]))
    assert json.loads((out / "summary.json").read_text())["best"]["architectures"]["trial"] == best["trial"]
    for plot in ("architectures_curves", "architectures_best", "architectures_parameters", "optimizers_best"):
        assert (out / "plots" / f"{plot}.png").read_bytes()[:4] == b"\x89PNG"
        assert f"(plots/{plot}.png)" in (out / "study.md").read_text()

    # a study killed after lion's last epoch, before its summary; resumed with two more widths
    (out / "trials" / "optimizers" / "lion" / "summary.json").unlink()
    kept = {r["trial"]: (out / r["run_dir"] / "metrics.jsonl").stat().st_mtime_ns for r in rows[:3]}
    result = run_study(out, *grid[:2], "widths=[4,8]", resume=True)
    assert result.exit_code == 0, result.output
    again = table(out)
    assert [r["trial"] for r in again] == [
        "mini_unet-b4",
        "mini_unet-b8",
        "unet-b4",
        "unet-b8",
        "adam",
        "lion",
    ]
    for row in again:
        if row["trial"] in kept:
            assert (out / row["run_dir"] / "metrics.jsonl").stat().st_mtime_ns == kept[row["trial"]]
    assert len(metrics(out / "trials" / "optimizers" / "lion")) == 1  # its epoch is not trained again
    assert (out / "trials" / "optimizers" / "lion" / "summary.json").is_file()


def test_a_failing_trial_is_reported_and_the_others_still_run(tmp_path):
    out = tmp_path / "study"
    result = run_study(out, "studies=[architectures]", "archs=[attn_unetpp_v2,mini_unet]", "widths=[5]")
    assert result.exit_code == 1 and "1 of 2 trials failed (architectures/attn_unetpp_v2-b5)" in result.output
    failed, finished = table(out)
    assert failed["status"] == "failed" and "width b=5 must be a positive multiple of 2" in failed["error"]
    assert finished["status"] == "finished" and (out / finished["run_dir"] / "summary.json").is_file()
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["finished"], summary["failed"]) == (1, 1)
    assert "| attn_unetpp_v2-b5 | failed |" in (out / "study.md").read_text()


def test_a_wrong_option_stops_the_study_before_its_run_directory_exists(tmp_path):
    out = tmp_path / "study"
    typo = run_study(out, "base.los=focal")
    assert typo.exit_code == 2 and "los (from study base (--set base.*)): no such option" in typo.output
    assert "Did you mean 'loss'" in typo.output
    unknown = run_study(out, "archs=[unte]")
    assert unknown.exit_code == 2 and "no architecture 'unte'. Did you mean 'unet'" in unknown.output
    assert not out.exists()


def test_the_small_study_has_14_trials_and_the_papers_the_reports_60():
    def counts(scale: str) -> Counter:
        config, _ = resolve_config(StudySegConfig, [("test", {"scale": scale})])
        return Counter(trial.study for trial in trials(config))

    assert counts("small") == {
        "architectures": 3,
        "batch_sizes": 3,
        "losses": 3,
        "optimizers": 2,
        "augmentations": 3,
    }
    assert counts("paper") == {  # 8 families x widths 8..128, batch sizes 2..128, the report's 5 losses
        "architectures": 40,
        "batch_sizes": 7,
        "losses": 5,
        "optimizers": 2,
        "augmentations": 6,
    }


def test_the_paper_scale_trains_as_configs_paper_yaml():
    def train_config(layer: dict) -> dict:
        plain = to_plain(resolve_config(TrainSegConfig, [("test", layer)])[0])
        return {k: v for k, v in plain.items() if k not in ("arch", "epochs")}

    assert train_config(SCALES["paper"].base) == train_config(load_yaml_file(PAPER_YAML))
