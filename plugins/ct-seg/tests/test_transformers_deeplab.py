"""Claims about the transformer and DeepLabv3+ segmenters of paper 002 (spec "Architectures")."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torchvision

from medkit import UsageError
from medkit.testing import run_cli
from medkit_ct_seg.models.deeplab import (
    CBAM,
    deeplabv3plus_efficientnetb0_cbam,
    deeplabv3plus_mobilenetv2,
    deeplabv3plus_mobilenetv2_cbam,
)
from medkit_ct_seg.models.transformers import medt, transunet, transunet_tokens

# name -> (factory, a small width for CPU forwards (None: the network has no width), expected stride)
ARCHITECTURES: dict[str, tuple[Callable[..., torch.nn.Module], int | None, int]] = {
    "medt": (medt, 4, 16),
    "transunet": (transunet, 4, 16),
    "transunet_tokens": (transunet_tokens, 4, 16),
    "deeplabv3plus_mobilenetv2": (deeplabv3plus_mobilenetv2, None, 32),
    "deeplabv3plus_mobilenetv2_cbam": (deeplabv3plus_mobilenetv2_cbam, None, 32),
    "deeplabv3plus_efficientnetb0_cbam": (deeplabv3plus_efficientnetb0_cbam, None, 32),
}
DEEPLABS = [name for name in ARCHITECTURES if name.startswith("deeplab")]


@pytest.fixture(scope="module")
def small_models() -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    return {name: factory(b=b).eval() for name, (factory, b, _) in ARCHITECTURES.items()}


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_forward_at_128_px_gives_logits_for_four_classes(name: str, small_models) -> None:
    model = small_models[name]
    with torch.no_grad():
        logits = model(torch.rand(2, 1, 128, 128))
    assert logits.shape == (2, 4, 128, 128)
    assert torch.isfinite(logits).all()
    assert model.name == name
    assert model.stride == ARCHITECTURES[name][2]


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_parameter_count_at_default_settings_is_positive(name: str) -> None:
    factory = ARCHITECTURES[name][0]
    with torch.device("meta"):  # no memory and no init cost for the 60 M-parameter defaults
        model = factory()
    count = model.num_parameters(trainable_only=True)
    print(f"{name}: {count:,} parameters at default settings")
    assert count > 0


def tokens_seen_by_transformer(model: torch.nn.Module) -> int:
    seen: list[int] = []
    handle = model.transformer.register_forward_hook(lambda _m, args, _out: seen.append(args[0].shape[1]))
    with torch.no_grad():
        model(torch.rand(1, 1, 128, 128))
    handle.remove()
    return seen[0]


def test_authors_transunet_has_one_token_at_128_px(small_models) -> None:
    model = small_models["transunet"]
    assert model.num_tokens == 1
    assert tokens_seen_by_transformer(model) == 1


def test_transunet_tokens_attends_over_64_tokens_at_128_px(small_models) -> None:
    model = small_models["transunet_tokens"]
    assert model.num_tokens == 64
    assert tokens_seen_by_transformer(model) == 64


def test_transunet_refuses_an_image_size_it_was_not_built_for(small_models) -> None:
    with pytest.raises(UsageError, match=r"built for 128x128.*model.image_size"):
        small_models["transunet_tokens"](torch.rand(1, 1, 256, 256))
    with pytest.raises(UsageError, match="multiple of"):
        transunet(b=4, image_size=64)


@pytest.mark.parametrize("name", ["deeplabv3plus_mobilenetv2_cbam", "deeplabv3plus_efficientnetb0_cbam"])
def test_cbam_variants_attend_after_aspp_and_after_the_decoder(name: str, small_models) -> None:
    model = small_models[name]
    assert sum(isinstance(m, CBAM) for m in model.modules()) == 2
    assert isinstance(model.aspp.attention, CBAM)
    assert isinstance(model.decoder.attention, CBAM)
    assert model.stem[0].out_channels == 3  # 1->3 adapter in front of an unchanged RGB backbone


def test_plain_deeplab_has_no_cbam(small_models) -> None:
    assert not any(isinstance(m, CBAM) for m in small_models["deeplabv3plus_mobilenetv2"].modules())


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_three_channel_input_to_a_one_channel_model_is_refused(name: str, small_models) -> None:
    with pytest.raises(UsageError, match=r"expects \(N, 1, H, W\) images, got \(1, 3, 128, 128\)"):
        small_models[name](torch.rand(1, 3, 128, 128))


def test_deeplab_mobilenetv2_loads_a_local_torchvision_state_dict(tmp_path: Path) -> None:
    torch.manual_seed(1)
    source = torchvision.models.mobilenet_v2(weights=None)
    path = tmp_path / "mobilenet_v2.pth"
    torch.save(source.state_dict(), path)

    model = deeplabv3plus_mobilenetv2(weights_path=str(path))

    features = model.backbone.features
    torch.testing.assert_close(features[18][0].weight, source.features[18][0].weight)
    # the 1-channel first conv starts from the mean of the RGB kernels
    rgb = source.features[0][0].weight
    torch.testing.assert_close(features[0][0].weight, rgb.mean(dim=1, keepdim=True))


def test_deeplab_reports_a_missing_or_wrong_weights_file(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        deeplabv3plus_mobilenetv2(weights_path=str(tmp_path / "absent.pth"))
    wrong = tmp_path / "efficientnet_b0.pth"
    torch.save(torchvision.models.efficientnet_b0(weights=None).state_dict(), wrong)
    with pytest.raises(UsageError, match="does not hold the backbone's torchvision weights"):
        deeplabv3plus_mobilenetv2(weights_path=str(wrong))


@pytest.mark.parametrize("name", DEEPLABS)
@pytest.mark.parametrize("b", [8, 64])
def test_deeplab_has_no_width_and_refuses_one(name: str, b: int) -> None:
    with pytest.raises(UsageError, match=rf"{name}: DeepLab has no width option .*got b={b}"):
        ARCHITECTURES[name][0](b=b)


def test_training_deeplab_at_a_width_stops_before_training_and_says_how_to_drop_it(tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ["run", "ct-seg", "--arch", "deeplabv3plus_mobilenetv2", "--out", str(out), "--device", "cpu"]
    sizes = ["--set", "image_size=32", "--set", "phantoms.volumes=2", "--set", "phantoms.slices=4"]
    result = run_cli([*args, "--set", "model.b=16", *sizes])
    assert result.exit_code == 2, result.output
    assert "DeepLab has no width option" in result.output and "--set model.b=null" in result.output
    assert not out.exists()


def test_deeplab_runs_with_a_plain_arch_flag_the_default_width_not_applying_to_it(tmp_path: Path) -> None:
    result = run_cli(["run", "ct-seg", "--arch", "deeplabv3plus_mobilenetv2", "--print-config"])
    assert result.exit_code == 0, result.output
    assert "b: 8" not in result.output
    default = run_cli(["run", "ct-seg", "--print-config"])
    assert "b: 8" in default.output  # the other architectures keep the CPU width
