"""The CNN architectures of paper 002 match the report's parameter counts and behave as the spec describes."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from medkit import UsageError
from medkit_ct_seg.models.base import SegmentationNet
from medkit_ct_seg.models.unet import max_unet, mini_unet, unet
from medkit_ct_seg.models.unetpp import (
    attn_unetpp_v1,
    attn_unetpp_v1_wired,
    attn_unetpp_v2,
    attn_unetpp_v3,
    attn_unetpp_v4,
    unetpp,
)

Factory = Callable[..., SegmentationNet]

WIDTHS = (8, 16, 32, 64, 128)
# spec "Parameter counts" (trainable, incl. BN affine, in=1, out=4); the report itself states Mini U-Net(8) and
# Max U-Net(128), the other cells follow from the authors' definitions
PARAMETER_TABLE: dict[str, tuple[Factory, tuple[int, ...]]] = {
    "Mini U-Net": (mini_unet, (20_356, 80_388, 319_492, 1_273_860, 5_087_236)),
    "U-Net": (unet, (487_172, 1_943_812, 7_765_508, 31_042_564, 124_131_332)),
    "Max U-Net": (max_unet, (2_538_372, 10_142_212, 40_546_308, 162_140_164, 648_470_532)),
    "U-Net++": (unetpp, (509_676, 2_034_260, 8_128_164, 32_494_916, 129_944_196)),
    "Attention U-Net++ V1": (attn_unetpp_v1, (518_268, 2_067_752, 8_260_416, 33_020_528, 132_039_888)),
    "Attention U-Net++ V2": (attn_unetpp_v2, (518_268, 2_067_752, 8_260_416, 33_020_528, 132_039_888)),
    "Attention U-Net++ V3": (attn_unetpp_v3, (618_428, 2_466_216, 9_849_920, 39_369_840, 157_419_728)),
    "Attention U-Net++ V4": (attn_unetpp_v4, (880_724, 3_512_664, 14_030_240, 56_080_176, 224_239_184)),
    # not in the report: V1 with its gates used has V1's parameters exactly
    "Attention U-Net++ V1 (wired)": (
        attn_unetpp_v1_wired,
        (518_268, 2_067_752, 8_260_416, 33_020_528, 132_039_888),
    ),
}
FACTORIES = {factory.__name__: factory for factory, _ in PARAMETER_TABLE.values()}


@pytest.mark.parametrize(
    ("factory", "b", "expected"),
    [
        pytest.param(factory, b, count, id=f"{title} at width {b} has {count:,} parameters")
        for title, (factory, counts) in PARAMETER_TABLE.items()
        for b, count in zip(WIDTHS, counts, strict=True)
    ],
)
def test_parameter_count_matches_the_report(factory: Factory, b: int, expected: int) -> None:
    with torch.device("meta"):  # shapes only: Max U-Net(128) would need 2.6 GB of real weights
        model = factory(in_channels=1, num_classes=4, b=b)
    assert model.num_parameters(trainable_only=True) == expected


@pytest.fixture(scope="module")
def small_models() -> dict[str, SegmentationNet]:
    torch.manual_seed(0)
    return {name: factory(b=8) for name, factory in FACTORIES.items()}


@pytest.mark.parametrize("name", FACTORIES)
def test_forward_returns_one_logit_per_class_and_pixel(
    small_models: dict[str, SegmentationNet], name: str
) -> None:
    with torch.no_grad():
        logits = small_models[name](torch.rand(2, 1, 64, 64))
    assert logits.shape == (2, 4, 64, 64)


def parameters_without_gradient(model: SegmentationNet) -> set[str]:
    model.zero_grad(set_to_none=True)
    model(torch.rand(2, 1, 32, 32)).sum().backward()
    return {name for name, parameter in model.named_parameters() if parameter.grad is None}


def test_every_parameter_of_v2_learns(small_models: dict[str, SegmentationNet]) -> None:
    assert parameters_without_gradient(small_models["attn_unetpp_v2"]) == set()


def test_v1_gates_get_no_gradient_as_in_the_authors_code(small_models: dict[str, SegmentationNet]) -> None:
    model = small_models["attn_unetpp_v1"]
    gates = {name for name, _ in model.named_parameters() if name.startswith("gates.")}
    assert gates
    assert parameters_without_gradient(model) == gates


def test_wired_v1_gates_learn(small_models: dict[str, SegmentationNet]) -> None:
    assert parameters_without_gradient(small_models["attn_unetpp_v1_wired"]) == set()


def test_v1_computes_what_unetpp_computes() -> None:
    torch.manual_seed(0)
    v1 = attn_unetpp_v1(b=8).eval()
    plain = unetpp(b=8).eval()
    plain.load_state_dict({k: v for k, v in v1.state_dict().items() if not k.startswith("gates.")})
    x = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(v1(x), plain(x))


@pytest.mark.parametrize("name", FACTORIES)
def test_wrong_channel_count_is_refused_with_the_expected_shape(
    small_models: dict[str, SegmentationNet], name: str
) -> None:
    with pytest.raises(UsageError, match=r"expects \(N, 1, H, W\) images, got \(2, 3, 64, 64\)"):
        small_models[name](torch.rand(2, 3, 64, 64))


@pytest.mark.parametrize("name", FACTORIES)
def test_size_not_divisible_by_the_stride_is_refused(
    small_models: dict[str, SegmentationNet], name: str
) -> None:
    model = small_models[name]
    side = 64 + model.stride // 2
    with pytest.raises(UsageError, match=rf"divisible by {model.stride}, got \({side}, {side}\)"):
        model(torch.rand(1, 1, side, side))


@pytest.mark.parametrize(
    "name", ["attn_unetpp_v1", "attn_unetpp_v1_wired", "attn_unetpp_v2", "attn_unetpp_v3", "attn_unetpp_v4"]
)
def test_attention_gates_need_an_even_width(name: str) -> None:
    # F_int of AG1 is b/2
    with pytest.raises(UsageError, match=rf"{name}: width b=9 must be a positive multiple of 2"):
        FACTORIES[name](b=9)


@pytest.mark.parametrize("name", FACTORIES)
def test_a_width_below_one_is_refused(name: str) -> None:
    with pytest.raises(UsageError, match="width b=0"):
        FACTORIES[name](b=0)
