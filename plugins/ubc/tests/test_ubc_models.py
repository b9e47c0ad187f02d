"""The paper's parameter tables (spec, Model) reproduced exactly, and the outputs each model returns."""

from __future__ import annotations

import pytest
import torch

from medkit import UsageError
from medkit_ubc.models import resnet34, ubc, ubc_resnet34


@pytest.fixture(scope="module")
def paper_ubc():
    return ubc_resnet34()


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_the_encoder_levels_have_the_papers_parameter_counts(paper_ubc):
    encoder = paper_ubc.encoder
    assert count(encoder.conv1) + count(encoder.bn1) == 3_264  # input block 3.26 K
    assert count(encoder.layer1) == 221_952  # 222 K
    assert count(encoder.layer2) == 1_116_416  # 1.12 M
    assert count(encoder.layer3) == 6_822_400  # 6.82 M
    assert count(encoder.layer4) == 13_114_368  # 13.1 M
    assert count(encoder) == 21_278_400  # 21.3 M


def test_the_decoder_blocks_head_and_classifier_have_the_papers_counts(paper_ubc):
    assert [count(b) for b in paper_ubc.decoder.blocks] == [2_360_320, 590_336, 147_712, 46_208, 6_976]
    assert count(paper_ubc.decoder) == 3_151_552  # 3.15 M
    assert count(paper_ubc.segmentation_head) == 145  # one 3x3 conv 16 -> 1
    assert count(paper_ubc.classifier) == 1_026  # 512 -> 2 logits
    assert paper_ubc.num_parameters() == 24_431_123  # 24.4 M
    assert paper_ubc.parts() == {
        "encoder": 21_278_400,
        "decoder": 3_151_552,
        "segmentation_head": 145,
        "classifier": 1_026,
    }


def test_the_baseline_is_the_same_encoder_and_classifier_without_a_decoder():
    baseline = resnet34()
    assert baseline.num_parameters() == 21_278_400 + 1_026
    output = baseline(torch.randn(2, 1, 64, 64))
    assert set(output) == {"logits"} and output["logits"].shape == (2, 2)


def test_ubc_returns_class_logits_and_a_full_size_mask(paper_ubc):
    output = paper_ubc.eval()(torch.randn(2, 1, 64, 96))
    assert output["logits"].shape == (2, 2) and output["mask"].shape == (2, 1, 64, 96)


def test_deep_supervision_adds_a_mask_at_every_coarser_decoder_scale():
    model = ubc(encoder="resnet18", deep_supervision=True).eval()
    output = model(torch.randn(1, 1, 64, 64))
    assert [tuple(m.shape[-2:]) for m in output["deep"]] == [(4, 4), (8, 8), (16, 16), (32, 32)]
    assert output["mask"].shape[-2:] == (64, 64)
    plain = ubc(encoder="resnet18")
    assert model.num_parameters() - plain.num_parameters() == sum(c * 9 + 1 for c in (256, 128, 64, 32))


def test_other_encoders_are_offered_and_an_unknown_one_is_refused():
    model = ubc(encoder="efficientnet-b0").eval()
    assert model(torch.randn(1, 1, 64, 64))["mask"].shape == (1, 1, 64, 64)
    with pytest.raises(UsageError, match=r"model\.encoder 'resnet35'"):
        ubc(encoder="resnet35")
