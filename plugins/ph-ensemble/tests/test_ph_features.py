"""Features come from local weights only, are extracted once into the H5 cache and reused, and a cache of
another extractor version is never read."""

import h5py
import numpy as np
import pytest

from medkit import UsageError
from medkit_ph.extractors import feature_set, feature_sets
from medkit_ph.feature_cache import cache_path
from medkit_ph.features import extract
from medkit_ph.pipelines import custom_pipeline, timm_standard

IMAGES = [np.random.default_rng(i).integers(0, 255, (48 + 8 * i, 48), dtype=np.uint8) for i in range(4)]
HASHES = [f"{i:064x}" for i in range(4)]


def test_lite0_features_are_extracted_once_and_then_read_from_the_cache(tmp_path):
    specs = feature_sets(["lite0", "lite0_b4"])
    said = []
    first = extract(IMAGES, HASHES, specs, "custom", folder=tmp_path, say=said.append)
    assert first.computed == 8 and first.cached == 0 and not first.random_weights
    assert first.blocks["lite0"].shape == (4, 1280) and first.blocks["lite0_b4"].shape == (4, 112)
    assert "sha256:" in first.weights["lite0"]  # the package file, by checksum
    again = extract(IMAGES, HASHES, specs, "custom", folder=tmp_path, say=said.append)
    assert again.computed == 0 and again.cached == 8
    np.testing.assert_array_equal(again.blocks["lite0"], first.blocks["lite0"])
    standard = extract(IMAGES, HASHES, specs[:1], "standard", folder=tmp_path, say=said.append)
    assert standard.computed == 4  # another pipeline is another cache
    assert not np.allclose(standard.blocks["lite0"], first.blocks["lite0"])


def test_a_cache_of_another_extractor_version_is_not_used(tmp_path):
    specs = feature_sets(["lite0_b4"])
    extract(IMAGES[:2], HASHES[:2], specs, "custom", folder=tmp_path, say=lambda _: None)
    path = cache_path(tmp_path, specs[0], custom_pipeline(224))
    with h5py.File(path, "r+") as handle:
        handle.attrs["key"] = handle.attrs["key"].replace("sha256:", "sha256:ff")
    said = []
    result = extract(IMAGES[:2], HASHES[:2], specs, "custom", folder=tmp_path, say=said.append)
    assert result.computed == 2
    assert any("another extractor version" in s and "weights" in s for s in said)


def test_random_weights_only_when_asked_and_then_flagged(tmp_path):
    result = extract(
        IMAGES[:1],
        HASHES[:1],
        feature_sets(["lite0_b4"]),
        "standard",
        weights="random",
        folder=tmp_path,
        say=lambda _: None,
    )
    assert result.random_weights == ["lite0_b4"] and result.weights["lite0_b4"].startswith("random")


def test_a_missing_weights_file_names_the_file_and_where_to_put_it(tmp_path):
    with pytest.raises(UsageError) as error:
        extract(
            IMAGES[:1],
            HASHES[:1],
            feature_sets(["f1"]),
            "standard",
            weights_dir=tmp_path,
            folder=tmp_path,
            say=lambda _: None,
        )
    message = str(error.value)
    assert "densenet201-c1103571.pth" in message and str(tmp_path) in message and "hub" in message


def test_pipelines_follow_the_weights_transforms_and_the_custom_grayscale_recipe():
    standard = timm_standard("efficientnet_lite0")
    assert (standard.resize, standard.crop) == (256, 224)
    custom = custom_pipeline(299)
    rgb = np.random.default_rng(0).integers(0, 255, (60, 80, 3), dtype=np.uint8)
    out = custom(rgb)
    assert out.shape == (3, 299, 299)  # resized, not cropped
    assert np.allclose(out[0] * 0.229 + 0.485, out[1] * 0.224 + 0.456, atol=1e-5)  # one gray channel, thrice


def test_custom_feature_sets_and_unknown_names():
    spec = feature_set("timm:resnet18@layer3")
    assert (spec.library, spec.network, spec.tap) == ("timm", "resnet18", "layer:layer3")
    with pytest.raises(UsageError, match="Did you mean"):
        feature_set("lite00")
    with pytest.raises(UsageError, match="timm or torchvision"):
        feature_set("keras:resnet50")


def test_any_timm_model_and_layer_is_an_extractor(tmp_path):
    result = extract(
        IMAGES[:2],
        HASHES[:2],
        feature_sets(["timm:resnet18@layer2"]),
        "custom",
        weights="random",
        folder=tmp_path,
        say=lambda _: None,
    )
    assert result.blocks["timm:resnet18@layer2"].shape == (2, 128)  # layer2's channels, averaged over space
    with pytest.raises(UsageError, match="has no layer 'layer9'"):
        extract(
            IMAGES[:1],
            HASHES[:1],
            feature_sets(["timm:resnet18@layer9"]),
            "custom",
            weights="random",
            folder=tmp_path,
            say=lambda _: None,
        )


def test_the_papers_six_feature_sets_have_the_spec_widths(tmp_path):
    result = extract(
        IMAGES[:1],
        HASHES[:1],
        feature_sets(["f1", "f2", "f3", "f4", "f5", "f6"]),
        "standard",
        weights="random",
        folder=tmp_path,
        say=lambda _: None,
    )
    widths = {name: block.shape[1] for name, block in result.blocks.items()}
    assert widths == {"f1": 1920, "f2": 1920, "f3": 1280, "f4": 1280, "f5": 2048, "f6": 768}
    np.testing.assert_allclose(
        result.blocks["f3"], result.blocks["f4"], rtol=1e-5, atol=1e-6
    )  # spec: identical
    assert (result.blocks["f1"] >= 0).all() and (result.blocks["f2"] < 0).any()  # FC after ReLU, GAP before
