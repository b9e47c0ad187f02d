"""`medkit run ct-seg` trains through the slice cache and the limited-RAM sampler, on phantoms or a folder."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from medkit.testing import free_port, logged_figures, run_and_kill, run_cli
from medkit_ct_seg.data import CLASS_NAMES
from medkit_ct_seg.phantoms import phantom

TINY = [
    "--device",
    "cpu",
    "--epochs",
    "1",
    "--set",
    "model.b=8",
    "--set",
    "image_size=32",
    "--set",
    "phantoms.volumes=4",
    "--set",
    "phantoms.slices=8",
    "--set",
    "sampler.samples_per_epoch=16",
    "--set",
    "sampler.resident=2",
    "--set",
    "sampler.uses=4",
]


@pytest.mark.parametrize("arch", ["mini_unet", "attn_unetpp_v2"])
def test_a_short_run_on_the_embedded_phantoms_writes_the_papers_figures(tmp_path, arch):
    out = tmp_path / "run"
    result = run_cli(["run", "ct-seg", "--arch", arch, "--out", str(out), *TINY])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    record = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert record["train/samples"] == 16
    for name in ("right_lung", "left_lung", "airway"):
        for figure in ("precision", "recall", "dice", "iou"):
            assert f"val/{figure}/{name}" in record
    assert summary["train_volumes"] + summary["val_volumes"] == 4
    assert summary["sampler"]["peak_resident_bytes"] <= 1024 * 2**20
    assert set(summary["ranking"]) == {"best", "best_epoch", "mean_top10"}
    # the epochs are scored with the weighted loss's own decision; best_val with best.pt's adjusted one
    weighted = summary["best_val_weighted_decision"]
    assert weighted["mean_dice"] == summary["best"] == record["val/mean_dice"]
    assert weighted["dice/airway"] == record["val/dice/airway"]
    assert summary["best_val/dice/airway"] == summary["best_val"]["dice/airway"]


def test_a_luna16_style_folder_is_cached_and_its_labels_mapped(tmp_path):
    scans, masks = tmp_path / "subset0", tmp_path / "seg-lungs-LUNA16"
    scans.mkdir()
    masks.mkdir()
    for i in range(3):
        image, mask = phantom(8, 32, seed=i)
        luna_mask = np.where(mask > 0, mask + 2, 0).astype(np.uint8)  # LUNA16 stores lungs 3, 4 and trachea 5
        affine = np.diag([0.7, 0.7, 2.5, 1.0])
        nib.save(nib.Nifti1Image(image.transpose(2, 1, 0), affine), scans / f"scan{i}.nii.gz")
        nib.save(nib.Nifti1Image(luna_mask.transpose(2, 1, 0), affine), masks / f"scan{i}.nii.gz")
    out = tmp_path / "run"
    result = run_cli(["run", "ct-seg", "--arch", "mini_unet", "--data", str(scans), "--out", str(out), *TINY])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "summary.json").read_text())["train_volumes"] == 2


def test_predict_segments_unseen_phantoms_with_the_trained_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDKIT_RUNS_DIR", str(tmp_path / "runs"))
    assert run_cli(["run", "ct-seg", "--arch", "mini_unet", *TINY]).exit_code == 0
    out = tmp_path / "predicted"
    result = run_cli(
        [
            "run",
            "ct-seg",
            "predict",
            "--out",
            str(out),
            "--device",
            "cpu",
            "--set",
            "image_size=32",
            "--set",
            "phantoms=1",
            "--set",
            "phantom_slices=8",
            "--set",
            "overlays=2",
        ]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["arch"] == "mini_unet" and summary["options"] == {"b": 8}  # rebuilt from the checkpoint
    # the checkpoint's offset (the weighted loss's bias shares) is what predict subtracts before the argmax
    (best,) = (tmp_path / "runs" / "ct-seg").glob("*/checkpoints/best.pt")
    stored = torch.load(best, weights_only=False)["model"]["decision_offset"]
    assert summary["decision_offset"] == dict(zip(CLASS_NAMES, stored.tolist(), strict=True))
    assert summary["decision_offset"]["background"] == 0
    (entry,) = summary["volumes"].values()
    mask = nib.load(entry["mask"])
    assert mask.shape == (32, 32, 8) and mask.get_fdata().max() <= 3
    assert len(entry["overlays"]) == 2 and set(entry["dice"]) == {"right_lung", "left_lung", "airway"}


def test_predict_refuses_a_checkpoint_of_another_width(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDKIT_RUNS_DIR", str(tmp_path / "runs"))
    assert run_cli(["run", "ct-seg", "--arch", "mini_unet", *TINY]).exit_code == 0
    result = run_cli(
        [
            "run",
            "ct-seg",
            "predict",
            "--out",
            str(tmp_path / "p"),
            "--set",
            "model.b=16",
            "--set",
            "image_size=32",
            "--set",
            "phantoms=1",
            "--set",
            "phantom_slices=8",
        ]
    )
    assert result.exit_code == 2 and "another width" in result.output


def with_options(options: list[str], **settings: object) -> list[str]:
    """TINY with some ``--set``/flag values replaced (the last occurrence of an option wins)."""
    extra = []
    for key, value in settings.items():
        extra += (
            ["--epochs", str(value)] if key == "epochs" else ["--set", f"{key.replace('__', '.')}={value}"]
        )
    return [*options, *extra]


UNEVEN = with_options(TINY, sampler__samples_per_epoch=81, batch_size=8, phantoms__volumes=8, epochs=2)
"""81 slices per epoch at batch 8 over 2 ranks: shares of 41 and 40 would take 6 and 5 steps and hang DDP."""


@pytest.mark.parametrize("workers", [0, 2])
def test_training_under_torchrun_with_uneven_shares_finishes_and_logs_each_epoch_once(tmp_path, workers):
    port = free_port()
    out = tmp_path / "ddp"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(port),
        "-m",
        "medkit",
        "run",
        "ct-seg",
        "--arch",
        "mini_unet",
        "--out",
        str(out),
        *with_options(UNEVEN, num_workers=workers),
    ]
    completed = subprocess.run(
        command, capture_output=True, text=True, encoding="utf-8", errors="replace", check=False, timeout=300
    )
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-2000:]
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]  # each epoch logged once, by rank 0
    assert all(r["train/samples"] == 82 for r in records)  # 41 per rank: 81 padded to a multiple of 2
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["epochs_run"] == 2


def test_a_run_killed_mid_training_resumes_to_the_figures_of_an_uninterrupted_one(tmp_path):
    """SIGKILL after epoch 1 of 4, resume: the resident sampler's draws, the prefetch thread, the augmentation
    and every random state continue exactly, so every epoch's figures equal the uninterrupted run's."""
    options = ["--arch", "mini_unet", *with_options(UNEVEN, epochs=4)]
    whole = tmp_path / "whole"
    assert run_cli(["run", "ct-seg", "--out", str(whole), *options]).exit_code == 0
    killed = tmp_path / "killed"
    run_and_kill(["run", "ct-seg", "--out", str(killed), *options], killed)
    resumed = run_cli(["run", "ct-seg", "--out", str(killed), "--resume", *options])
    assert resumed.exit_code == 0, resumed.output
    assert len(logged_figures(whole)) == 4
    assert logged_figures(killed) == logged_figures(whole)


def test_a_misspelt_monitor_is_refused_before_a_run_directory_exists(tmp_path):
    out = tmp_path / "run"
    result = run_cli(["run", "ct-seg", "--out", str(out), *TINY, "--set", "monitor=val/mean_dcie"])
    assert result.exit_code == 2
    assert "Did you mean 'val/mean_dice'" in result.output and "val/dice/airway" in result.output
    assert not out.exists()


def test_training_can_draw_only_from_labelled_slices():
    from medkit.cache.selection import labelled_slices
    from medkit.cache.store import SliceCache
    from medkit.config import resolve_config
    from medkit_ct_seg.config import TrainSegConfig
    from medkit_ct_seg.data import phantom_cache
    from medkit_ct_seg.recipes.train import training_set

    cache = SliceCache(phantom_cache(4, 8, 32))
    labelled = labelled_slices(cache)
    assert sum(info.slices for info in cache.volumes) > sum(map(len, labelled.values()))  # some are empty
    for choice, only_labelled in (("labelled", True), ("all", False)):
        config, _ = resolve_config(
            TrainSegConfig,
            [
                (
                    "test",
                    {
                        "image_size": 32,
                        "sampler": {"slices": choice, "samples_per_epoch": 200, "resident": 2, "uses": 10},
                    },
                )
            ],
        )
        drawn = [(s["volume"], s["slice"]) for s in training_set(cache, config, [0, 1, 2, 3], {})]
        assert all(s in labelled[v] for v, s in drawn) is only_labelled


def test_class_weights_count_only_the_slices_training_draws_from():
    """Unlabelled slices the sampler never draws would add background pixels and shrink its weight."""
    import torch

    from medkit.cache.selection import labelled_slices
    from medkit.cache.store import SliceCache
    from medkit_ct_seg.data import phantom_cache
    from medkit_ct_seg.losses import class_weights_from_counts
    from medkit_ct_seg.recipes.train import make_loss

    cache = SliceCache(phantom_cache(4, 8, 32))
    labelled, volumes = labelled_slices(cache), [0, 1, 2]
    for slices in (labelled, None):
        counts = np.zeros(4)
        for v in volumes:
            for s in labelled[v] if slices else range(cache.volumes[v].slices):
                counts += np.bincount(np.asarray(cache.sample(v, s)["mask"]).ravel(), minlength=4)[:4]
        loss = make_loss("weighted_ce", cache, volumes, {}, 0.5, slices)
        torch.testing.assert_close(loss.weights, class_weights_from_counts(list(counts), 0.5))
    everything = make_loss("weighted_ce", cache, volumes, {}, 0.5, None).weights
    assert make_loss("weighted_ce", cache, volumes, {}, 0.5, labelled).weights[0] > everything[0]


def test_lion_replaces_adam_when_asked(tmp_path):
    from medkit.checkpoint import load_checkpoint

    states = {}
    for lion in ("false", "true"):
        out = tmp_path / lion
        result = run_cli(
            ["run", "ct-seg", "--arch", "mini_unet", "--out", str(out), "--set", f"lion={lion}", *TINY]
        )
        assert result.exit_code == 0, result.output
        optimizer = load_checkpoint(out / "checkpoints" / "last.pt")["optimizer"]
        states[lion] = next(iter(optimizer["state"].values()))
    assert "exp_avg_sq" in states["false"]  # Adam keeps second moments
    assert "exp_avg_sq" not in states["true"] and "exp_avg" in states["true"]  # Lion keeps only momentum


def test_the_papers_set_up_ships_as_a_valid_config_file():
    import yaml

    paper = Path(__file__).resolve().parents[1] / "configs" / "paper.yaml"
    result = run_cli(["run", "ct-seg", "--config", str(paper), "--print-config"])
    assert result.exit_code == 0, result.output
    config = yaml.safe_load(result.stdout)
    assert (config["loss"], config["batch_size"], config["image_size"], config["model"]) == (
        "focal",
        8,
        128,
        {"b": 16},
    )
    assert (
        config["sampler"]["resident"],
        config["sampler"]["uses"],
        config["sampler"]["samples_per_epoch"],
    ) == (20, 10, 960)


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("image_size=36", "divisible by 16"),
        ("model.b=7", "multiple of 2"),
        ("model.in_channels=3", "single-channel CT slices"),
    ],
)
def test_a_setting_the_network_refuses_leaves_no_run_directory(tmp_path, option, message):
    out = tmp_path / "run"
    result = run_cli(["run", "ct-seg", "--out", str(out), *TINY, "--set", option])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not out.exists()
