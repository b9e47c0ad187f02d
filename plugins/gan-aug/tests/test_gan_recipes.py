"""`medkit run gan-aug` end to end on tiny settings: train (grids, metrics, classifier table), generate, metrics,
classify, fine-tuning with --init/--freeze, the transfer study, and bad input that stops with exit code 2."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import pytest
import torch

from medkit.checkpoint import load_checkpoint
from medkit.testing import run_cli
from medkit_gan.models import stylegan2

NETWORK = [
    "--set",
    "network.resolution=16",
    "--set",
    "network.channel_base=256",
    "--set",
    "network.channel_max=16",
]
NETWORK += ["--set", "network.z_dim=16", "--set", "network.w_dim=16", "--set", "network.mapping_layers=2"]
NETWORK += ["--set", "network.embed_dim=16"]
TRAINING = ["--set", "training.batch_size=8", "--set", "training.total_images=48"]
TRAINING += ["--set", "training.eval_every_images=24", "--set", "training.checkpoint_every_images=24"]
DATA = ["--device", "cpu", "--set", "data_options.scale=0.1"]
SMALL = [*DATA, "--set", "metrics.images=36", "--set", "metrics.eval_images=36", *NETWORK]
CLASSIFY = ["--set", "classify.epochs=1", "--set", "classify.synthetic_per_class=4"]
TINY = [*SMALL, *TRAINING, *CLASSIFY]


def summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("gan") / "train"
    result = run_cli(["run", "gan-aug", "--out", str(out), *TINY])
    assert result.exit_code == 0, result.output
    return out


def test_train_writes_checkpoints_grids_metrics_and_the_classifier_table(trained):
    figures = summary(trained)
    assert (trained / "checkpoints" / "best.pt").is_file() and (trained / "checkpoints" / "last.pt").is_file()
    grids = sorted(p.name for p in (trained / "plots").glob("samples-*.png"))
    assert grids == [f"samples-{name}.png" for name in ("AT", "BG", "DYS", "LP", "MM", "TUM")]
    metrics = figures["metrics"]
    assert "EfficientNet-Lite0" in metrics["extractor"]
    assert metrics["fid"] > 0 and 0 <= metrics["precision"] <= 1 and 0 <= metrics["coverage"] <= 1
    assert set(metrics["per_class"]) == {"AT", "BG", "DYS", "LP", "MM", "TUM"}
    records = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    assert [r["images"] for r in records if "eval/fid" in r] == [24, 48]
    assert sum(len(r["ada/p_per_step"]) for r in records) == 6  # ADA p of every one of the 6 steps
    table = (trained / "classify" / "classify.md").read_text()
    assert "real (" in table and "real+synthetic (" in table and "random initialisation" in table
    assert set(figures["classify"]["verdict"]) == {"real+synthetic/resnet34"}
    meta = load_checkpoint(trained / "checkpoints" / "best.pt")["meta"]
    assert meta["class_names"] == ["AT", "BG", "DYS", "LP", "MM", "TUM"] and meta["train_counts"]["DYS"] == 3


def test_generate_writes_balanced_class_folders_or_one_h5_file(trained, tmp_path):
    checkpoint = trained / "checkpoints" / "best.pt"
    out = tmp_path / "png"
    result = run_cli(["run", "gan-aug", "generate", "--out", str(out), "--device", "cpu",
                      "--set", f"checkpoint={checkpoint}", "--set", "per_class=3"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert sorted(len(list(d.glob("*.png"))) for d in (out / "images").iterdir()) == [3] * 6
    out = tmp_path / "h5"
    result = run_cli(["run", "gan-aug", "generate", "--out", str(out), "--device", "cpu", "--set", "format=h5",
                      "--set", f"checkpoint={checkpoint}", "--set", "fill_to={DYS: 5, TUM: 12}"])  # fmt: skip
    assert result.exit_code == 0, result.output
    with h5py.File(out / "images.h5") as handle:
        labels = handle["labels"][...].tolist()
        assert handle["images"].shape[1:] == (16, 16, 3)
    assert labels == [2, 2, 5, 5]  # DYS: 3 real of 5 wanted, TUM: 10 of 12; the other classes get none
    assert summary(out)["per_class"] == {"AT": 0, "BG": 0, "DYS": 2, "LP": 0, "MM": 0, "TUM": 2}


def test_the_same_seed_generates_the_same_images(trained, tmp_path):
    images = []
    for name in ("a", "b"):
        out = tmp_path / name
        args = ["run", "gan-aug", "generate", "--out", str(out), "--device", "cpu", "--set", "format=h5"]
        result = run_cli([*args, "--set", f"checkpoint={trained / 'checkpoints' / 'best.pt'}", "--seed", "3"])
        assert result.exit_code == 0, result.output
        with h5py.File(out / "images.h5") as handle:
            images.append(handle["images"][...])
    assert (images[0] == images[1]).all()


def test_metrics_recipe_reports_per_class_figures_on_a_named_extractor(trained, tmp_path):
    out = tmp_path / "metrics"
    args = ["run", "gan-aug", "metrics", "--out", str(out), *DATA, "--set", "metrics.images=36"]
    result = run_cli([*args, "--set", f"checkpoint={trained / 'checkpoints' / 'best.pt'}"])
    assert result.exit_code == 0, result.output
    figures = summary(out)
    assert "EfficientNet-Lite0" in figures["extractor"] and figures["n_fake"] == 36
    assert figures["per_class"]["DYS"]["n_real"] == 3


def test_classify_reads_a_generated_h5_set(trained, tmp_path):
    generated = tmp_path / "gen"
    result = run_cli(["run", "gan-aug", "generate", "--out", str(generated), "--device", "cpu",
                      "--set", "format=h5", "--set", "per_class=4",
                      "--set", f"checkpoint={trained / 'checkpoints' / 'best.pt'}"])  # fmt: skip
    assert result.exit_code == 0, result.output
    out = tmp_path / "classify"
    result = run_cli(["run", "gan-aug", "classify", "--out", str(out), *DATA, "--set", "classify.epochs=1",
                      "--set", "classify.runs=1", "--set", "classify.archs=[resnet34]",
                      "--set", f"synthetic={generated / 'images.h5'}"])  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = {(r["set"], r["train_size"]) for r in summary(out)["summary"]}
    real = next(size for name, size in rows if name == "real")
    assert ("synthetic", 24) in rows and ("real+synthetic", real + 24) in rows


def test_fine_tuning_with_frozen_blocks_keeps_them_at_the_base_weights(trained, tmp_path):
    base = trained / "checkpoints" / "best.pt"
    out = tmp_path / "tuned"
    args = ["run", "gan-aug", "--out", str(out), *TINY, "--set", "compare_classifiers=false"]
    result = run_cli([*args, "--init", str(base), "--freeze", "d1,g2"])
    assert result.exit_code == 0, result.output
    before, after = load_checkpoint(base), load_checkpoint(out / "checkpoints" / "last.pt")
    for key, value in after["generator"].items():
        if key.startswith(("synthesis.blocks.0.", "synthesis.blocks.1.")):
            assert torch.equal(value, before["generator"][key]), key
    for key, value in after["discriminator"].items():
        if key.startswith("blocks.0."):
            assert torch.equal(value, before["discriminator"][key]), key
    changed = [k for k in after["generator"] if k.startswith("synthesis.blocks.2.")]
    assert any(not torch.equal(after["generator"][k], before["generator"][k]) for k in changed)
    assert any("g2" in note or "g1" in note for note in summary(out)["training"]["transfer_notes"])


def test_the_study_runs_the_transfer_grid_from_a_given_base_model(trained, tmp_path):
    out = tmp_path / "study"
    args = ["run", "gan-aug", "study", "--out", str(out), *SMALL, *TRAINING, *CLASSIFY]
    args += ["--set", f"base={trained / 'checkpoints' / 'best.pt'}", "--set", "trials=[scratch, 'd1,g2']"]
    result = run_cli(args)
    assert result.exit_code == 0, result.output
    table = (out / "study.md").read_text()
    assert "| scratch |" in table and "| d1,g2 |" in table
    assert (out / "trials" / "d1+g2" / "classify" / "classify.md").is_file()
    rows = summary(out)["rows"]
    assert [r["trial"] for r in rows] == ["scratch", "d1,g2"] and all(r["fid"] > 0 for r in rows)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--freeze", "d1"], "--freeze d1: frozen blocks keep the weights of a pretrained model"),
        (["--set", "network.resolution=24"], "network.resolution=24"),
        (["--init", "no-such.pt"], "no such checkpoint file"),
    ],
)
def test_bad_options_stop_before_training(tmp_path, options, message):
    out = tmp_path / "run"
    result = run_cli(["run", "gan-aug", "--out", str(out), *TINY, *options])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())


def test_a_freeze_naming_a_missing_block_lists_the_valid_ones(trained, tmp_path):
    args = [
        "run",
        "gan-aug",
        "--out",
        str(tmp_path / "run"),
        *TINY,
        "--init",
        str(trained / "checkpoints" / "last.pt"),
    ]
    result = run_cli([*args, "--freeze", "g9"])
    assert result.exit_code == 2, result.output
    assert "--freeze" in result.output and "g1" in result.output and "g3" in result.output


def test_a_checkpoint_of_another_resolution_is_refused_with_what_to_do(trained, tmp_path):
    args = ["run", "gan-aug", "--out", str(tmp_path / "run"), *TINY, "--set", "network.resolution=32"]
    result = run_cli([*args, "--init", str(trained / "checkpoints" / "last.pt")])
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert "resolution=16" in text and "resolution=32" in text


def test_an_empty_class_folder_is_named(tmp_path):
    from PIL import Image

    for name in ("a", "b"):
        (tmp_path / "data" / name).mkdir(parents=True)
    for i in range(3):
        Image.new("RGB", (16, 16), (200, 10 * i, 30)).save(tmp_path / "data" / "a" / f"{i}.png")
    result = run_cli(
        ["run", "gan-aug", "--out", str(tmp_path / "run"), *TINY, "--data", str(tmp_path / "data")]
    )
    assert result.exit_code == 2, result.output
    assert str(tmp_path / "data" / "b") in "".join(result.output.split())


def test_describe_counts_the_generator_and_discriminator():
    result = run_cli(["describe", "gan-aug", "--json"])
    assert result.exit_code == 0, result.output
    entries = json.loads(result.output)["entries"]
    (arch,) = entries["architecture"]
    pair = stylegan2()
    assert arch["parameters"] == sum(p.numel() for p in pair.generator.parameters()) + sum(
        p.numel() for p in pair.discriminator.parameters()
    )
    assert {e["name"] for e in entries["recipe"]} == {"train", "generate", "metrics", "classify", "study"}
