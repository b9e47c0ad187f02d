"""The backbone registry of the study (paper 004): dimensions, weights from local files only, and bad input."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from medkit.errors import UsageError
from medkit_anomaly.backbone_table import BACKBONES, backbone_spec, list_backbones, patchcore_layers
from medkit_anomaly.backbones import build_backbone, build_network, empty_weights, probe_head, probe_layers
from medkit_anomaly.weights import LITE0_VARIANT, default_variant

# The spec's table (spec/anomaly.md, "Backbones and embedding layers"): name -> (dimension a, random reduction d).
# NOT_GIVEN where the spec is silent; d None is the spec's "no reduction".
NOT_GIVEN = object()
_VGG = ["vgg11", "vgg13", "vgg16", "vgg19", "vgg11_bn", "vgg13_bn", "vgg16_bn", "vgg19_bn"]
_MOBILENETS = ["mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large"]
SPEC = {
    "alexnet": (256, 100),
    "squeezenet1_0": (NOT_GIVEN, 100),
    "squeezenet1_1": (NOT_GIVEN, 100),
    **dict.fromkeys(_VGG, (512, 120)),
    "resnet18": (448, 100),
    "resnet34": (448, 100),
    **dict.fromkeys(["resnet50", "resnet101", "resnet152"], (1792, 550)),
    "googlenet": (1248, 550),
    "inception_v3": (832, 220),
    "shufflenet_v2_x0_5": (336, 100),
    "shufflenet_v2_x1_0": (812, 220),
    **dict.fromkeys(_MOBILENETS, (64, None)),
    "resnext50_32x4d": (1792, NOT_GIVEN),
    "resnext101_32x8d": (1792, NOT_GIVEN),
    **dict.fromkeys(["wide_resnet50_2", "wide_resnet101_2", "resnest50d", "resnest101e"], (1792, 550)),
    "mnasnet0_5": (80, None),
    "mnasnet1_0": (144, None),
    "efficientnet_b0": (80, None),
    "efficientnet_b1": (80, None),
    "efficientnet_b2": (88, None),
    "efficientnet_b3": (104, 100),
    "efficientnet_b4": (112, 100),
    "efficientnet_b5": (128, 100),
    "efficientnet_b6": (144, 100),
    "efficientnet_b7": (160, 100),
    "regnet_y_400mf": (360, 100),
    "regnet_y_800mf": (528, 150),
    "regnet_y_1_6gf": (504, 150),
    "regnet_y_3_2gf": (864, 220),
    "regnet_y_8gf": (1568, 450),
    "regnet_y_16gf": (1904, 600),
    "regnet_y_32gf": (2320, 700),
    "regnet_x_400mf": (256, 100),
    "regnet_x_800mf": (480, 100),
    "regnet_x_1_6gf": (648, 150),
    "regnet_x_3_2gf": (720, 200),
    "regnet_x_8gf": (1040, 300),
    "regnet_x_16gf": (1664, 500),
    "regnet_x_32gf": (2352, 700),
}

IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
IMAGENET_CATS = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """Empty torch hub and Hugging Face caches under tmp_path, and no network: a download attempt fails loudly."""
    import huggingface_hub.constants

    def no_network(*args, **kwargs):
        raise AssertionError("a backbone tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    # torch.hub.set_dir has no undo (afterwards $TORCH_HOME is ignored for good), so the setting it makes is
    # patched and restored instead: later tests that point TORCH_HOME elsewhere still see their folder
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    yield tmp_path / "hub" / "checkpoints"


def resnet18_state(seed: int) -> dict[str, torch.Tensor]:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_network("resnet18").state_dict()


def test_efficientnet_lite0_with_the_shipped_imagenet_weights_sees_a_cat(offline):
    from skimage import data

    backbone = build_backbone("efficientnet_lite0", weights="imagenet")
    photo = torch.from_numpy(data.chelsea()).permute(2, 0, 1).float() / 255
    x = F.interpolate(photo[None], size=(224, 224), mode="bilinear", antialias=True, align_corners=False)
    x = (x - IMAGENET_MEAN) / IMAGENET_STD
    with torch.inference_mode():
        top = backbone.model(x).argmax(1).item()
        maps = backbone(x)
    assert top in IMAGENET_CATS
    assert "efficientnet-lite0-57934424.pth (by order)" in backbone.weights
    assert [tuple(m.shape) for m in maps] == [(1, 16, 112, 112), (1, 24, 56, 56), (1, 40, 28, 28)]


def test_resnet18_embedding_is_448_dimensional_and_its_default_d_is_100():
    backbone = build_backbone("resnet18", weights="random")
    with torch.inference_mode():
        maps = backbone(torch.randn(2, 3, 64, 64))
    assert backbone.layers == ["layer1", "layer2", "layer3"]
    assert backbone.channels == [64, 128, 256] and backbone.embedding_dim == 448
    assert backbone.default_d == 100
    assert backbone.strides == [4, 8, 16]
    assert [tuple(m.shape) for m in maps] == [(2, 64, 16, 16), (2, 128, 8, 8), (2, 256, 4, 4)]


@pytest.mark.parametrize("name", list(SPEC))
def test_the_table_gives_the_specs_embedding_dimension_and_d(name):
    a, d = SPEC[name]
    spec = backbone_spec(name)
    assert a is NOT_GIVEN or spec.embedding_dim == a
    assert d is NOT_GIVEN or spec.default_d == d


@pytest.mark.parametrize("name", list(BACKBONES))
def test_the_tables_channels_are_those_of_the_built_network(name):
    """Every entry, big ones included: built with weights on the meta device, probed with a meta input."""
    spec = BACKBONES[name]
    with empty_weights():
        network = build_network(name)
    probed = probe_layers(network, spec.layers, name)
    assert tuple(c for c, _ in probed) == spec.channels
    strides = [s for _, s in probed]
    assert strides == sorted(strides), "embedding layers come in order of increasing stride"
    assert spec.default_d is None or spec.default_d < spec.embedding_dim
    # SPADE's image feature: the final pooled feature is at least as wide as the last embedding layer
    assert probe_head(network, spec.head, name) >= spec.channels[-1]
    if len(spec.layers) > 1:  # AlexNet and VGG have one embedding layer, and PatchCore takes it
        (_, fine), (_, coarse) = probe_layers(network, patchcore_layers(name), name)
        assert (fine, round(coarse / 8)) == (8, 2), (
            "PatchCore's default layers: the stride-8 and stride-16 stages"
        )


def test_list_backbones_takes_a_wildcard():
    resnets = list_backbones("*resnet*")
    assert {"resnet18", "wide_resnet50_2", "seresnet50", "legacy_seresnet152"} <= set(resnets)
    assert not any("efficientnet" in n for n in resnets)
    assert list_backbones("regnet_y_*") == sorted(n for n in BACKBONES if n.startswith("regnet_y_"))
    assert len(list_backbones()) == len(BACKBONES) >= 70


def test_the_table_imports_without_torch():
    code = "import sys, medkit_anomaly.backbone_table as t; assert t.BACKBONES; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_forward_pass_stops_after_the_last_embedding_layer():
    backbone = build_backbone("resnet18", weights="random")
    ran = []
    backbone.model.layer4.register_forward_hook(lambda *_: ran.append("layer4"))
    backbone.model.fc.register_forward_hook(lambda *_: ran.append("fc"))
    with torch.inference_mode():
        backbone(torch.randn(1, 3, 64, 64))
    assert ran == []


def test_a_backbone_is_frozen_and_stays_in_evaluation_mode():
    backbone = build_backbone("resnet18", weights="random")
    torch.nn.Sequential(backbone).train()
    assert not any(m.training for m in backbone.modules())
    assert not any(p.requires_grad for p in backbone.parameters())


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2", "densenet121", "efficientnet_lite0"])
def test_the_pooled_feature_is_what_the_networks_classifier_receives(name):
    """SPADE's published image feature: the classifier applied to it gives the network's own logits, and the pass
    that computes it stops before the classifier."""
    backbone = build_backbone(name, weights="random")
    head = dict(backbone.model.named_modules())[backbone.head]
    ran = []
    head.register_forward_hook(lambda *_: ran.append(backbone.head))
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        maps, pooled = backbone.forward_pooled(x)
        assert ran == [] and [m.shape for m in maps] == [m.shape for m in backbone(x)]
        torch.testing.assert_close(head(pooled), backbone.model(x))
    assert pooled.shape == (2, backbone.pooled_dim)


def test_random_weights_are_seeded():
    first, again, other = (build_backbone("resnet18", "random", seed=s) for s in (1024, 1024, 1))
    assert torch.equal(first.model.conv1.weight, again.model.conv1.weight)
    assert not torch.equal(first.model.conv1.weight, other.model.conv1.weight)
    assert first.weights == "random (seed 1024)"


def test_imagenet_weights_in_the_local_hub_cache_are_used(offline):
    offline.mkdir(parents=True)
    state = resnet18_state(seed=7)
    torch.save(state, offline / "resnet18-f37072fd.pth")  # torchvision's IMAGENET1K_V1 file name
    backbone = build_backbone("resnet18", weights="imagenet")
    assert torch.equal(backbone.model.conv1.weight, state["conv1.weight"])
    assert backbone.weights.endswith("resnet18-f37072fd.pth (by name)")


@pytest.mark.parametrize(
    ("name", "expected"),
    [("resnet18", "checkpoints/resnet18-f37072fd.pth"), ("seresnet50", "Hugging Face cache")],
)
def test_imagenet_weights_without_a_local_file_say_where_to_put_them_and_do_not_download(
    offline, name, expected
):
    with pytest.raises(UsageError) as raised:
        build_backbone(name, weights="imagenet")
    message = str(raised.value)
    assert expected in message and "--set weights=PATH" in message


def test_the_default_variants_are_the_studys_and_the_offline_package():
    assert default_variant(backbone_spec("resnet50")) == "IMAGENET1K_V1"
    assert default_variant(backbone_spec("efficientnet_lite0")) == LITE0_VARIANT
    assert build_backbone("efficientnet_lite0", "imagenet").weights_variant == LITE0_VARIANT


def mobilenet_v2_files(folder, variants: dict[str, int]) -> dict[str, dict[str, torch.Tensor]]:
    """Random MobileNetV2 state dicts saved under torchvision's file names of ``variants`` (name -> seed)."""
    files = {"IMAGENET1K_V1": "mobilenet_v2-b0353104.pth", "IMAGENET1K_V2": "mobilenet_v2-7ebf99e0.pth"}
    folder.mkdir(parents=True, exist_ok=True)
    states = {}
    for variant, seed in variants.items():
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            states[variant] = build_network("mobilenet_v2").state_dict()
        torch.save(states[variant], folder / files[variant])
    return states


def test_a_weights_variant_is_chosen_by_name_and_recorded(offline):
    states = mobilenet_v2_files(offline, {"IMAGENET1K_V1": 1, "IMAGENET1K_V2": 2})
    chosen = build_backbone("mobilenet_v2", "imagenet", variant="IMAGENET1K_V2")
    default = build_backbone("mobilenet_v2", "imagenet")
    first_conv = "features.0.0.weight"
    assert torch.equal(chosen.model.state_dict()[first_conv], states["IMAGENET1K_V2"][first_conv])
    assert torch.equal(default.model.state_dict()[first_conv], states["IMAGENET1K_V1"][first_conv])
    assert (chosen.weights_variant, default.weights_variant) == ("IMAGENET1K_V2", "IMAGENET1K_V1")
    assert chosen.weights.endswith("mobilenet_v2-7ebf99e0.pth (by name)")
    assert build_backbone("mobilenet_v2", "random").weights_variant is None


def test_a_missing_variant_is_an_error_naming_its_file_not_a_substitute(offline):
    """IMAGENET1K_V1's file is here, V2's is not: asking for V2 names V2's file and where to put it."""
    mobilenet_v2_files(offline, {"IMAGENET1K_V1": 1})
    with pytest.raises(UsageError) as raised:
        build_backbone("mobilenet_v2", "imagenet", variant="IMAGENET1K_V2")
    message = str(raised.value)
    assert "no local ImageNet weights for mobilenet_v2 (variant IMAGENET1K_V2" in message
    put_at = offline / "mobilenet_v2-7ebf99e0.pth"
    assert (
        f"Download https://download.pytorch.org/models/mobilenet_v2-7ebf99e0.pth elsewhere and put it at {put_at}"
        in message
    )
    assert "Other variants here: IMAGENET1K_V1" in message


def test_a_timm_variant_without_a_file_says_to_put_the_hubs_file_in_the_torch_hub_folder(offline):
    with pytest.raises(UsageError) as raised:
        build_backbone("seresnext50_32x4d", "imagenet", variant="gluon_in1k")
    message = str(raised.value)
    assert "huggingface.co/timm/seresnext50_32x4d.gluon_in1k/resolve/main/model.safetensors" in message
    assert f"put it at {offline / 'seresnext50_32x4d.gluon_in1k.safetensors'}" in message


def test_an_unknown_variant_lists_the_backbones_variants(offline):
    with pytest.raises(
        UsageError, match=r"no ImageNet weights variant 'IMAGENET1K_V3'.*IMAGENET1K_V1, IMAGENET1K_V2"
    ):
        build_backbone("mobilenet_v2", "imagenet", variant="IMAGENET1K_V3")
    with pytest.raises(UsageError, match="needs weights='imagenet'"):
        build_backbone("mobilenet_v2", "random", variant="IMAGENET1K_V2")


def test_a_state_dict_with_other_key_names_loads_by_order(tmp_path):
    state = resnet18_state(seed=7)
    renamed = {f"backbone.{i:03d}": t for i, (k, t) in enumerate(state.items()) if "num_batches" not in k}
    torch.save({"state_dict": renamed}, tmp_path / "renamed.pth")
    backbone = build_backbone("resnet18", weights=tmp_path / "renamed.pth")
    assert torch.equal(backbone.model.layer3[1].bn2.running_var, state["layer3.1.bn2.running_var"])
    assert backbone.weights.endswith("renamed.pth (by order)")


def test_a_safetensors_file_loads(tmp_path):
    from safetensors.torch import save_file

    state = resnet18_state(seed=7)
    save_file(state, tmp_path / "resnet18.safetensors")
    backbone = build_backbone("resnet18", weights=str(tmp_path / "resnet18.safetensors"))
    assert torch.equal(backbone.model.fc.weight, state["fc.weight"])


def test_a_wrong_shaped_file_names_the_tensor(tmp_path):
    state = resnet18_state(seed=7)
    state["layer2.0.conv1.weight"] = torch.zeros(128, 32, 3, 3)
    torch.save(state, tmp_path / "wrong.pth")
    with pytest.raises(UsageError) as raised:
        build_backbone("resnet18", weights=tmp_path / "wrong.pth")
    message = str(raised.value)
    assert "'layer2.0.conv1.weight' should have shape (128, 64, 3, 3)" in message
    assert "has (128, 32, 3, 3)" in message and "wrong.pth" in message
    assert "resnet18 has 102 tensors, the file 102" in message


def test_another_networks_file_does_not_fit(tmp_path):
    torch.save(build_network("resnet34").state_dict(), tmp_path / "resnet34.pth")
    with pytest.raises(UsageError, match=r"resnet18 has 102 tensors, the file 182"):
        build_backbone("resnet18", weights=tmp_path / "resnet34.pth")


def test_an_unknown_layer_lists_the_valid_ones():
    with pytest.raises(UsageError) as raised:
        build_backbone("resnet18", weights="random", layers=["layer1", "layer5"])
    message = str(raised.value)
    assert "no layer 'layer5'" in message
    assert all(f"layer{i}" in message for i in range(1, 5)) and "layer3.1" in message


def test_an_unknown_backbone_suggests_the_closest_names():
    with pytest.raises(UsageError, match=r"unknown backbone 'resnet19'.*'resnet18'"):
        build_backbone("resnet19", weights="random")


def test_an_unknown_weights_source_suggests_the_closest():
    with pytest.raises(UsageError, match=r"weights 'imagnet': no such file. Did you mean 'imagenet'"):
        build_backbone("resnet18", weights="imagnet")
