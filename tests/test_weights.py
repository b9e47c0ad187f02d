"""Pretrained weights come from local files only: a missing file names itself, its URL and where to put it;
a state dict with other key names is mapped by order, shapes checked."""

import pytest
import torch
from torch import nn

from medkit import UsageError
from medkit.weights import find_weights_file, fit_state_dict, hub_checkpoints_dir, read_state_dict


def test_a_missing_file_names_the_file_the_url_and_both_folders(tmp_path):
    with pytest.raises(UsageError) as error:
        find_weights_file("net-1234.pth", "https://example.org/net-1234.pth", [tmp_path], what="net")
    message = str(error.value)
    assert "net-1234.pth" in message and "https://example.org/net-1234.pth" in message
    assert str(tmp_path) in message and str(hub_checkpoints_dir()) in message


def test_a_file_in_the_user_folder_is_found_first(tmp_path):
    (tmp_path / "net.pth").write_bytes(b"x")
    assert find_weights_file("net.pth", "u", [tmp_path]) == tmp_path / "net.pth"


def test_other_key_names_are_mapped_by_order_and_shapes_are_checked(tmp_path):
    source = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    path = tmp_path / "w.pth"
    torch.save({"model": {f"layer{i}": t for i, t in enumerate(source.state_dict().values())}}, path)
    target = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    assert fit_state_dict(target, read_state_dict(path), str(path), "mlp") == "by order"
    assert torch.equal(target[1].weight, source[1].weight)
    with pytest.raises(UsageError, match="should have shape"):
        fit_state_dict(
            nn.Sequential(nn.Linear(3, 5), nn.Linear(5, 2)), read_state_dict(path), str(path), "mlp"
        )
