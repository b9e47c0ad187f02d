"""Checkpoints never unpickle arbitrary objects, refuse another architecture, and are written atomically."""

from __future__ import annotations

import os
import pickle
import stat
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


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_writes_get_the_permissions_the_umask_gives_any_new_file(tmp_path, umask, mode):
    previous = os.umask(umask)
    try:
        save_checkpoint(tmp_path / "last.pt", {"epoch": 1})
        atomic_write_text(tmp_path / "config.yaml", "a: 1\n")
    finally:
        os.umask(previous)
    for name in ("last.pt", "config.yaml"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode


def test_an_atomic_write_flushes_the_folder_after_the_rename(tmp_path, monkeypatch):
    """Without the folder's fsync a power cut after the rename can lose the new name (ext4, XFS)."""
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "replace", lambda *a: (events.append("rename"), real_replace(*a))[1])

    def fsync(fd: int) -> None:
        events.append("fsync folder" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync file")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    atomic_write_text(tmp_path / "summary.json", "{}")
    assert events == ["fsync file", "rename", "fsync folder"]
