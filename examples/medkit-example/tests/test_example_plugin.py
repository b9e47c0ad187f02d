"""The example plugin: its data is reproducible, --data reads a folder of .npz files, and the demo learns."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from medkit.errors import UsageError
from medkit.testing import run_cli
from medkit_example.data import NpzFolderDataset, ShapesDataset
from medkit_example.model import TinyCNN


def test_the_embedded_shapes_are_the_same_for_the_same_seed_and_differ_across_seeds():
    a, b, c = ShapesDataset(4, 32, seed=0), ShapesDataset(4, 32, seed=0), ShapesDataset(4, 32, seed=1)
    assert torch.equal(a[3]["image"], b[3]["image"]) and torch.equal(a[3]["mask"], b[3]["mask"])
    assert not torch.equal(a[3]["mask"], c[3]["mask"])
    sample = a[0]
    assert sample["image"].shape == (1, 32, 32) and sample["image"].dtype == torch.float32
    assert set(sample["mask"].unique().tolist()) == {0, 1, 2}  # a disc and a square on background


def test_tiny_cnn_keeps_the_image_size_and_predicts_one_map_per_class():
    model = TinyCNN(in_channels=1, num_classes=3, width=8)
    assert model(torch.zeros(2, 1, 24, 24)).shape == (2, 3, 24, 24)
    assert model.num_parameters() == sum(p.numel() for p in model.parameters())


def write_npz_folder(folder, count: int = 12) -> None:
    folder.mkdir()
    shapes = ShapesDataset(count, 16, seed=5)
    for i in range(count):
        sample = shapes[i]
        np.savez(folder / f"case{i:02d}.npz", image=sample["image"][0].numpy(), mask=sample["mask"].numpy())


def test_data_from_a_folder_of_npz_files_trains(tmp_path):
    write_npz_folder(tmp_path / "data")
    out = tmp_path / "run"
    result = run_cli(
        [
            "run",
            "example",
            "--data",
            str(tmp_path / "data"),
            "--out",
            str(out),
            "--epochs",
            "1",
            "--device",
            "cpu",
        ]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["train_samples"] + summary["val_samples"] == 12


def test_a_bad_npz_folder_is_named_in_the_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match=r"no \.npz files"):
        NpzFolderDataset(tmp_path / "empty")
    (tmp_path / "bad").mkdir()
    np.savez(tmp_path / "bad" / "x.npz", image=np.zeros((4, 4)), mask=np.zeros((5, 5)))
    with pytest.raises(UsageError, match=r"x.npz has image \(4, 4\) but mask \(5, 5\)"):
        NpzFolderDataset(tmp_path / "bad")
    result = run_cli(["run", "example", "--data", str(tmp_path / "empty"), "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "no .npz files" in result.output


@pytest.mark.slow
def test_the_demo_learns_to_segment_both_shapes(tmp_path):
    out = tmp_path / "run"
    assert run_cli(["run", "example", "--out", str(out), "--device", "cpu"]).exit_code == 0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["val/loss"] < records[0]["val/loss"] / 2
    assert records[-1]["val/mean_dice"] > 0.7
    assert records[-1]["val/dice/disc"] > 0.6 and records[-1]["val/dice/square"] > 0.6
