"""Checkpoints never unpickle arbitrary objects, refuse another architecture, and are written atomically."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from medkit.atomic import atomic_path, atomic_write_text
from medkit.checkpoint import load_checkpoint, save_checkpoint
from medkit.errors import RunError, UsageError


class Payload:
    """Unpickling this would create a file: the attack weights_only loading stops."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_checkpoint_round_trips_tensors_and_plain_values(tmp_path):
    state = {"arch": "tiny_cnn", "epoch": 3, "model": {"w": torch.arange(6.0).reshape(2, 3)}, "best": 0.5}
    save_checkpoint(tmp_path / "c.pt", state)
    loaded = load_checkpoint(tmp_path / "c.pt", arch="tiny_cnn")
    assert torch.equal(loaded["model"]["w"], state["model"]["w"])
    assert (loaded["epoch"], loaded["best"], loaded["format"]) == (3, 0.5, 1)


def test_loading_never_runs_code_hidden_in_a_checkpoint(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"format": 1, "model": Payload(marker)}, tmp_path / "evil.pt")
    with pytest.raises(RunError, match="cannot be read safely"):
        load_checkpoint(tmp_path / "evil.pt")
    assert not marker.exists()
    with open(tmp_path / "plain.pkl", "wb") as handle:
        pickle.dump(Payload(marker), handle)
    with pytest.raises(RunError):
        load_checkpoint(tmp_path / "plain.pkl")
    assert not marker.exists()


def test_a_checkpoint_of_another_architecture_is_refused_with_the_fix(tmp_path):
    save_checkpoint(tmp_path / "c.pt", {"arch": "unet", "model": {}})
    with pytest.raises(
        UsageError, match=r"written by architecture 'unet', but this run uses 'tiny_cnn'.*--arch unet"
    ):
        load_checkpoint(tmp_path / "c.pt", arch="tiny_cnn")


def test_a_truncated_checkpoint_gives_a_clear_error(tmp_path):
    save_checkpoint(tmp_path / "c.pt", {"model": {"w": torch.zeros(1000)}})
    data = (tmp_path / "c.pt").read_bytes()
    (tmp_path / "c.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(RunError, match="damaged"):
        load_checkpoint(tmp_path / "c.pt")


def test_a_write_that_fails_halfway_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "summary.json"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half of the new")
        raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]
