"""Paper 001's classifier protocol: basic augmentations, the class-balanced sampler, the three classifiers with
local or random weights, and the resumable comparison with its Acc / Bal Acc table."""

from __future__ import annotations

import csv
import statistics

import numpy as np
import pytest
import torch

from medkit import UsageError
from medkit.runs import read_json
from medkit_gan import classifiers, protocol
from medkit_gan.classifiers import (
    adjust_colour,
    apply_geometry,
    basic_augment,
    build_classifier,
    train_classifier,
)
from medkit_gan.imageset import ImageSet


def colour_set(counts: dict[str, int], size: int = 16, seed: int = 0) -> ImageSet:
    """Flat red, blue (and green) images with a little noise: separable at a glance."""
    colours = {"red": (200, 30, 30), "blue": (30, 30, 200), "green": (30, 200, 30)}
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for label, (name, n) in enumerate(counts.items()):
        base = np.array(colours[name], dtype=np.int16)
        noise = rng.integers(-20, 21, size=(n, size, size, 3))
        images.append(np.clip(base + noise, 0, 255).astype(np.uint8))
        labels += [label] * n
    return ImageSet(np.concatenate(images), np.array(labels), tuple(counts))


def test_basic_augment_keeps_shape_and_range_and_repeats_for_a_seed():
    images = torch.rand(6, 3, 12, 12)
    first = basic_augment(images, torch.Generator().manual_seed(3))
    again = basic_augment(images, torch.Generator().manual_seed(3))
    other = basic_augment(images, torch.Generator().manual_seed(4))
    assert first.shape == images.shape and first.min() >= 0 and first.max() <= 1
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_quarter_turns_and_flips_move_pixels_without_changing_them():
    image = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).expand(1, 3, 2, 2)
    quarter = apply_geometry(image, torch.tensor([1]), torch.tensor([False]), torch.tensor([False]))
    assert quarter[0, 0].tolist() == [[2.0, 4.0], [1.0, 3.0]]  # counter-clockwise
    mirrored = apply_geometry(image, torch.tensor([0]), torch.tensor([True]), torch.tensor([False]))
    assert mirrored[0, 0].tolist() == [[2.0, 1.0], [4.0, 3.0]]
    upside = apply_geometry(image, torch.tensor([0]), torch.tensor([False]), torch.tensor([True]))
    assert upside[0, 0].tolist() == [[3.0, 4.0], [1.0, 2.0]]
    batch = torch.rand(8, 3, 5, 5)
    turned = apply_geometry(batch, torch.arange(8) % 4, torch.arange(8) % 2 == 0, torch.arange(8) % 3 == 0)
    for before, after in zip(batch, turned, strict=True):
        assert torch.equal(before.flatten().sort().values, after.flatten().sort().values)
    assert not torch.equal(batch[1:], turned[1:])


def test_colour_factors_of_one_change_nothing_and_brightness_scales():
    images = torch.rand(4, 3, 6, 6) * 0.8
    ones = torch.ones(4)
    assert torch.allclose(adjust_colour(images, ones, ones, ones), images, atol=1e-6)
    brighter = adjust_colour(images, torch.full((4,), 1.2), ones, ones)
    assert torch.allclose(brighter, (images * 1.2).clamp(0, 1), atol=1e-6)
    grey = adjust_colour(images, ones, ones, torch.zeros(4))
    assert torch.allclose(grey[:, 0], grey[:, 1], atol=1e-6)  # saturation 0 leaves a grey image


def test_non_square_images_are_only_turned_half_way():
    images = torch.rand(16, 3, 6, 10)
    assert basic_augment(images, torch.Generator().manual_seed(0)).shape == images.shape


def test_the_balanced_sampler_draws_every_class_about_equally_from_an_imbalanced_set():
    labels = np.array([0] * 900 + [1] * 90 + [2] * 10)
    order = classifiers._epoch_order(labels, 6000, True, torch.Generator().manual_seed(0))
    shares = np.bincount(labels[order], minlength=3) / 6000
    assert np.allclose(shares, 1 / 3, atol=0.03)
    plain = classifiers._epoch_order(labels, 1000, False, torch.Generator().manual_seed(0))
    assert sorted(plain) == list(range(1000))  # without balancing: one pass over the set


def test_resnet34_learns_red_versus_blue_and_repeats_for_a_seed():
    train = colour_set({"red": 24, "blue": 8})
    val = colour_set({"red": 6, "blue": 6}, seed=1)
    lines: list[str] = []
    kwargs = {"batch_size": 8, "weights": "random", "images_per_epoch": 32, "seed": 1}
    result = train_classifier(train, val, "resnet34", epochs=3, progress=lines.append, **kwargs)
    assert result["accuracy"] == 1.0 and result["balanced_accuracy"] == 1.0
    assert result["confusion"] == [[6, 0], [0, 6]]
    assert result["weights"] == "random initialisation"
    assert [h["epoch"] for h in result["history"]] == [1, 2, 3] and len(lines) == 3
    again = train_classifier(train, val, "resnet34", epochs=1, **kwargs)
    assert again["history"][0] == result["history"][0]


def test_densenet169_and_efficientnet_b2_build_with_a_new_head_and_run_forward():
    for arch in ("densenet169", "efficientnet_b2"):
        model, described = build_classifier(arch, 3, "random")
        assert model.eval()(torch.rand(2, 3, 32, 32)).shape == (2, 3)
        assert described == "random initialisation"


def test_densenet169_refuses_images_too_small_for_its_last_pooling():
    tiny = colour_set({"red": 4, "blue": 4})
    with pytest.raises(UsageError, match="densenet169 needs images of at least 32 px"):
        train_classifier(tiny, tiny, "densenet169", epochs=1, weights="random")


def test_an_unknown_classifier_is_refused_with_the_choices():
    with pytest.raises(UsageError, match="resnet34, densenet169, efficientnet_b2"):
        build_classifier("resnet50", 2, "random")


def test_missing_imagenet_weights_name_the_file_and_the_way_to_train_from_scratch(tmp_path, monkeypatch):
    # a torch.hub.set_dir in an earlier test would override TORCH_HOME
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(UsageError) as caught:
        build_classifier("resnet34", 2, None)
    message = str(caught.value)
    assert "resnet34-b627a593.pth" in message and str(tmp_path / "hub" / "checkpoints") in message
    assert "classify.weights=random" in message
    with pytest.raises(UsageError, match=r"nothere\.pth does not exist"):
        build_classifier("resnet34", 2, tmp_path / "nothere.pth")


def test_imagenet_weights_are_loaded_from_the_hub_cache_and_the_head_replaced(tmp_path, monkeypatch):
    import torchvision

    # a torch.hub.set_dir in an earlier test would override TORCH_HOME
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    saved = torchvision.models.resnet34()
    checkpoints = tmp_path / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.save(saved.state_dict(), checkpoints / "resnet34-b627a593.pth")
    model, described = build_classifier("resnet34", 2, None)
    assert described == f"ImageNet ({checkpoints / 'resnet34-b627a593.pth'})"
    assert torch.equal(model.conv1.weight, saved.conv1.weight)
    assert torch.equal(model.layer4[2].bn2.running_var, saved.layer4[2].bn2.running_var)
    assert model.fc.out_features == 2


def test_old_densenet_key_names_are_mapped_to_torchvision_modules():
    old = "features.denseblock2.denselayer11.norm.2.running_mean"
    assert classifiers._densenet_key(old) == "features.denseblock2.denselayer11.norm2.running_mean"
    assert classifiers._densenet_key("features.norm0.weight") == "features.norm0.weight"


def fake_training(calls: list[tuple[str, int]]):
    def train(data, val, arch, *, seed, epochs, **_):
        calls.append((arch, seed))
        accuracy = 0.5 + 0.1 * (seed % 10) + (0.2 if len(data) > 20 else 0.0)
        return {
            "accuracy": accuracy,
            "balanced_accuracy": accuracy - 0.05,
            "confusion": [[1, 0], [0, 1]],
            "history": [],
            "weights": "random initialisation",
            "seconds": 0.1,
        }

    return train


def test_the_comparison_resumes_and_tabulates_mean_and_std_from_the_run_files(tmp_path, monkeypatch):
    calls: list[tuple[str, int]] = []
    monkeypatch.setattr(classifiers, "train_classifier", fake_training(calls))
    real = colour_set({"red": 12, "blue": 6})
    sets = {"real": real, "real+synthetic": ImageSet.concatenate([real, colour_set({"red": 6, "blue": 12})])}
    val = colour_set({"red": 5, "blue": 5}, seed=2)
    archs = ("resnet34", "efficientnet_b2")
    kwargs = {"epochs": 1, "weights": "random", "seed": 10}
    rows = protocol.run_protocol(sets, val, archs, runs=3, out_dir=tmp_path, **kwargs)
    assert len(calls) == 12 and sorted({seed for _, seed in calls}) == [10, 11, 12]
    (tmp_path / "runs" / "real" / "resnet34" / "run1.json").unlink()  # a comparison killed part-way
    again = protocol.run_protocol(sets, val, archs, runs=3, out_dir=tmp_path, **kwargs)
    assert calls[12:] == [("resnet34", 11)]
    assert [r["accuracy"] for r in again] == pytest.approx([r["accuracy"] for r in rows])

    protocol.write_tables(again, tmp_path, "Colours")
    table = (tmp_path / "classify.md").read_text().splitlines()
    assert table[0] == "# Colours"
    assert table[2] == "| Training data | ResNet34 | EfficientNet-B2 |"
    body = [line for line in table if line.startswith("| real")]
    assert [line.split(" | ")[0] for line in body] == ["| real (18 images)", "| real+synthetic (36 images)"]
    stored = [read_json(tmp_path / "runs" / "real" / "efficientnet_b2" / f"run{k}.json") for k in range(3)]
    acc = [100 * r["accuracy"] for r in stored]
    bal = [100 * r["balanced_accuracy"] for r in stored]
    expected = (
        f"{statistics.fmean(acc):.2f} +- {statistics.stdev(acc):.2f} / "
        f"{statistics.fmean(bal):.2f} +- {statistics.stdev(bal):.2f}"
    )
    assert body[0].split(" | ")[2].rstrip(" |") == expected == "60.00 +- 10.00 / 55.00 +- 10.00"
    assert "validation set of 10 images (red 5, blue 5)" in "\n".join(table)
    assert "Weights: random initialisation." in table
    with open(tmp_path / "classify.csv", newline="") as handle:
        assert len(list(csv.DictReader(handle))) == 12


def test_a_resumed_comparison_with_other_settings_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(classifiers, "train_classifier", fake_training([]))
    data = colour_set({"red": 4, "blue": 4})
    protocol.run_protocol({"real": data}, data, ["resnet34"], runs=1, out_dir=tmp_path, epochs=1)
    with pytest.raises(UsageError, match="epochs=1 there, 2 now"):
        protocol.run_protocol({"real": data}, data, ["resnet34"], runs=1, out_dir=tmp_path, epochs=2)


def test_a_training_set_with_other_classes_than_validation_is_refused(tmp_path):
    val = colour_set({"red": 3, "blue": 3})
    other = colour_set({"red": 3, "green": 3})
    with pytest.raises(UsageError, match="training set 'synthetic' has classes red, green"):
        protocol.run_protocol({"synthetic": other}, val, ["resnet34"], out_dir=tmp_path, epochs=1)
