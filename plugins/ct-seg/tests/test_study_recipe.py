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
from medkit_ct_seg.studies import SCALES, StudySegConfig, Trial, settings, trial_layers, trials
from medkit_ct_seg.study_report import SETTINGS

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
NO_AUGMENTATION = {
    "rotate_degrees": 0.0,
    "crop_scale": 1.0,
    "noise_std": 0.0,
    "brightness_contrast": 0.0,
    "blur": False,
    "flips": False,
}


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
    lion = yaml.safe_load((out / "trials" / "optimizers" / "lion" / "config.yaml").read_text())["optim"]
    assert (lion["name"], lion["lr"], lion["weight_decay"]) == ("lion", 1e-4, 1e-2)  # the authors' Lion
    adam = yaml.safe_load((out / "trials" / "optimizers" / "adam" / "config.yaml").read_text())["optim"]
    assert (adam["name"], adam["lr"], adam["weight_decay"]) == ("adam", 1e-3, 0.0)
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


def plan(scale: str, **options: object) -> list[Trial]:
    config, _ = resolve_config(StudySegConfig, [("test", {"scale": scale, **options})])
    return trials(config)


def trained_with(trial: Trial, scale: str = "paper") -> tuple:
    """(study, trial, arch, width, loss, batch, optimiser, augmentation) of the train config a trial resolves to."""
    config, _ = resolve_config(StudySegConfig, [("test", {"scale": scale})])
    train_config, _ = resolve_config(TrainSegConfig, trial_layers(config, trial))
    chosen = settings(train_config)
    return (trial.study, trial.name, *(chosen[key] for key in SETTINGS))


def test_the_small_study_has_14_trials_and_the_papers_the_reports_66():
    def counts(scale: str) -> Counter:
        return Counter(trial.study for trial in plan(scale))

    assert counts("small") == {
        "architectures": 3,
        "batch_sizes": 3,
        "losses": 3,
        "optimizers": 2,
        "augmentations": 3,
    }
    assert counts("paper") == {  # section 5 ("48 networks in all") and appendices Б-Ж
        "architectures": 48,
        "batch_sizes": 7,
        "losses": 5,
        "optimizers": 2,
        "augmentations": 4,
    }


# Section 5, the number in brackets being the first convolution's width: Mini U-Net, U-Net, Max U-Net, MedT and
# TransUNet at 8..128; U-Net++ and Attention U-Net++ V1-V4 at 8..64; three DeepLabv3+ without a width.
REPORT_NETWORKS = [
    *(("mini_unet", b) for b in (8, 16, 32, 64, 128)),
    *(("unet", b) for b in (8, 16, 32, 64, 128)),
    *(("max_unet", b) for b in (8, 16, 32, 64, 128)),
    *(("unetpp", b) for b in (8, 16, 32, 64)),
    *(("attn_unetpp_v1", b) for b in (8, 16, 32, 64)),
    *(("attn_unetpp_v2", b) for b in (8, 16, 32, 64)),
    *(("attn_unetpp_v3", b) for b in (8, 16, 32, 64)),
    *(("attn_unetpp_v4", b) for b in (8, 16, 32, 64)),
    *(("medt", b) for b in (8, 16, 32, 64, 128)),
    *(("transunet", b) for b in (8, 16, 32, 64, 128)),
    ("deeplabv3plus_mobilenetv2", None),
    ("deeplabv3plus_mobilenetv2_cbam", None),
    ("deeplabv3plus_efficientnetb0_cbam", None),
]
BEST = (
    "attn_unetpp_v2",
    16,
)  # the preliminary test's best network, which the other studies train (section 5)


def test_the_paper_scale_plans_the_reports_studies_trial_by_trial():
    # (study, trial, arch, width, batch size, loss, optimiser, augmentation); the report's recipe is batch 8,
    # focal loss, Adam, resize + rotation, and each study changes one of them
    expected = [
        ("architectures", arch if b is None else f"{arch}-b{b}", arch, b, 8, "focal", "adam", "rotation")
        for arch, b in REPORT_NETWORKS
    ]
    expected += [
        ("batch_sizes", f"batch{n}", *BEST, n, "focal", "adam", "rotation")
        for n in (2, 4, 8, 16, 32, 64, 128)
    ]
    expected += [
        ("losses", loss, *BEST, 8, loss, "adam", "rotation")
        for loss in ("ce", "dice", "focal", "iou", "hybrid")
    ]
    expected += [("optimizers", name, *BEST, 8, "focal", name, "rotation") for name in ("adam", "lion")]
    expected += [
        ("augmentations", name, *BEST, 8, "focal", "adam", name)
        for name in ("none", "crop", "rotation", "noise")  # each alone, appendix Г
    ]
    planned = plan("paper")
    assert len(REPORT_NETWORKS) == 48 and len(planned) == 66
    assert [trained_with(trial) for trial in planned] == expected


def test_the_papers_lion_trial_runs_at_the_authors_lr_and_weight_decay():
    (lion,) = [t for t in plan("paper", studies=["optimizers"]) if t.name == "lion"]
    config, _ = resolve_config(StudySegConfig, [("test", {"scale": "paper"})])
    optim = resolve_config(TrainSegConfig, trial_layers(config, lion))[0].optim
    assert (optim.name, optim.lr, optim.weight_decay) == ("lion", 1e-4, 1e-2)


def test_the_augmentation_presets_are_each_one_augmentation_alone():
    config, _ = resolve_config(StudySegConfig, [("test", {"scale": "paper"})])
    augments = {
        trial.name: to_plain(resolve_config(TrainSegConfig, trial_layers(config, trial))[0].augment)
        for trial in plan("paper", studies=["augmentations"])
    }
    off = augments.pop("none")
    assert off == NO_AUGMENTATION  # resize only
    changed = {name: {k: v for k, v in a.items() if v != off[k]} for name, a in augments.items()}
    assert changed == {
        "crop": {"crop_scale": 0.95},
        "rotation": {"rotate_degrees": 5.0},
        "noise": {"noise_std": 0.018},
    }


def test_a_width_sweep_trains_each_deeplab_once_without_a_width():
    from medkit_ct_seg.models.deeplab import deeplabv3plus_mobilenetv2

    archs = ["unet", "deeplabv3plus_mobilenetv2"]
    planned = plan("small", studies=["architectures"], archs=archs, widths=[8, 16])
    assert [t.name for t in planned] == ["unet-b8", "unet-b16", "deeplabv3plus_mobilenetv2"]
    config, _ = resolve_config(StudySegConfig, [("test", {"scale": "small", "base": {"model": {"b": 32}}})])
    options = resolve_config(TrainSegConfig, trial_layers(config, planned[-1]))[0].model
    assert options == {"b": None}  # the base's width is cleared, so the factory builds it
    assert deeplabv3plus_mobilenetv2(**options).name == "deeplabv3plus_mobilenetv2"


def test_the_paper_scale_trains_as_configs_paper_yaml():
    def train_config(layer: dict) -> dict:
        plain = to_plain(resolve_config(TrainSegConfig, [("test", layer)])[0])
        return {k: v for k, v in plain.items() if k not in ("arch", "epochs")}

    assert train_config(SCALES["paper"].base) == train_config(load_yaml_file(PAPER_YAML))


def test_configs_paper_yaml_is_the_reports_recipe_and_trains(tmp_path):
    out = tmp_path / "paper"
    sizes = {  # smaller data and images only: the recipe is the file's
        "image_size": 32,
        "phantoms.volumes": 4,
        "phantoms.slices": 8,
        "sampler.samples_per_epoch": 16,
        "sampler.resident": 2,
        "sampler.uses": 4,
    }
    args = ["run", "ct-seg", "--arch", "mini_unet", "--config", str(PAPER_YAML), "--out", str(out)]
    args += [
        "--device",
        "cpu",
        "--epochs",
        "1",
        *(a for k, v in sizes.items() for a in ("--set", f"{k}={v}")),
    ]
    result = run_cli(args)
    assert result.exit_code == 0, result.output
    config = yaml.safe_load((out / "config.yaml").read_text())
    optim = config["optim"]
    assert (config["loss"], config["batch_size"], config["model"]) == ("focal", 8, {"b": 16})
    assert (optim["name"], optim["lr"], optim["weight_decay"], optim["scheduler"]) == (
        "adam",
        1e-3,
        0.0,
        "none",
    )
    assert config["augment"] == {**NO_AUGMENTATION, "rotate_degrees": 5.0}  # resize + rotation, no crop
    assert metrics(out)[0]["train/samples"] == 16  # two real steps of batch 8
