"""The baselines' networks: the appendix SimpleCNN's size, and which layers each fine-tuning stage trains."""

import pytest
import torch

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
