"""The paper's parameter tables (spec, Model) reproduced exactly, and the outputs each model returns."""

from __future__ import annotations

from pathlib import Path

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


def test_ubc_computes_exactly_what_smps_own_unet_with_a_classification_head_computes():
    """The decoder runs through smp's public forward: with the same weights, smp.Unet(aux_params=...) gives the
    same mask and logits (a change inside smp that broke the assembly would show here)."""
    import segmentation_models_pytorch as smp

    torch.manual_seed(0)
    model = ubc(encoder="resnet18").eval()
    reference = smp.Unet(
        "resnet18", encoder_weights=None, in_channels=1, classes=1, decoder_channels=(256, 128, 64, 32, 16),
        aux_params={"classes": 2, "pooling": "avg", "dropout": None},
    ).eval()  # fmt: skip
    for part in ("encoder", "decoder", "segmentation_head"):
        getattr(reference, part).load_state_dict(getattr(model, part).state_dict())
    linear = next(m for m in reference.classification_head.modules() if isinstance(m, torch.nn.Linear))
    linear.load_state_dict(model.classifier[-1].state_dict())
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        mask, logits = reference(x)
        output = model(x)
    assert torch.allclose(output["mask"], mask, atol=1e-5) and torch.allclose(
        output["logits"], logits, atol=1e-5
    )


def test_deep_supervision_reads_the_decoders_blocks_without_changing_the_mask():
    torch.manual_seed(0)
    deep = ubc(encoder="resnet18", deep_supervision=True).eval()
    plain = ubc(encoder="resnet18").eval()
    plain.load_state_dict(deep.state_dict(), strict=False)
    x = torch.randn(1, 1, 64, 64)
    blocks = []
    hook = deep.decoder.blocks[0].register_forward_hook(lambda _m, _i, out: blocks.append(out))
    with torch.no_grad():
        output = deep(x)
        assert torch.equal(output["mask"], plain(x)["mask"])
    hook.remove()
    assert torch.equal(output["deep"][0], deep.deep_heads[0](blocks[0]))  # the coarsest block's own mask
    assert not deep.decoder.blocks[1]._forward_hooks  # hooks live for one forward only


def test_the_installed_smp_lies_in_the_range_the_plugin_pins():
    import tomllib
    from importlib.metadata import version

    from packaging.requirements import Requirement

    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
    (smp,) = [Requirement(d) for d in project["dependencies"] if d.startswith("segmentation-models-pytorch")]
    assert smp.specifier and smp.specifier.contains("0.6.0")  # the version these tests ran on
    assert version("segmentation-models-pytorch") in smp.specifier
