"""ADA: the augmentations are per-sample, differentiable and exact where they should be, and the r_t controller
moves p by the paper's step towards the target, within [0, 1], and survives a checkpoint."""

from __future__ import annotations

import io

import pytest
import torch

from medkit import UsageError
from medkit_gan.ada import AdaptiveAugment


def images(n: int = 8, size: int = 16) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(n)) * 2 - 1


def test_p_zero_is_the_identity():
    x = images()
    assert torch.equal(AdaptiveAugment("bgc", p=0.0)(x), x)


def test_p_one_changes_every_sample_and_keeps_shape_dtype_device():
    torch.manual_seed(0)
    x = images(16)
    y = AdaptiveAugment("bgc", p=1.0)(x)
    assert y.shape == x.shape and y.dtype == x.dtype and y.device == x.device
    assert (y != x).flatten(1).any(1).all()
    assert y.isfinite().all()


def test_gradients_reach_the_input():
    torch.manual_seed(0)
    x = images(4).requires_grad_()
    (AdaptiveAugment("bgc", p=1.0)(x) * torch.randn(4, 3, 16, 16)).sum().backward()
    assert x.grad is not None and x.grad.isfinite().all() and (x.grad.flatten(1).abs().sum(1) > 0).all()


def test_each_augmentation_applies_with_probability_p():
    torch.manual_seed(0)
    x = images(2000, size=4)
    changed = (AdaptiveAugment(p=0.3, ops=["brightness"])(x) != x).flatten(1).any(1).float().mean()
    assert changed.item() == pytest.approx(0.3, abs=0.04)


def test_xflip_alone_mirrors_exactly():
    torch.manual_seed(0)
    x = images(16)
    y = AdaptiveAugment(p=1.0, ops=["xflip"])(x)
    mirrored = torch.tensor([torch.equal(a, b) for a, b in zip(y, x.flip(3), strict=True)])
    kept = torch.tensor([torch.equal(a, b) for a, b in zip(y, x, strict=True)])
    # ADA draws the flip (i in {0, 1}) for each sample the op applies to: mirrored exactly or left alone
    assert (mirrored | kept).all() and mirrored.any() and kept.any()


def test_blit_ops_only_move_pixels():
    torch.manual_seed(0)
    x = images(8)
    y = AdaptiveAugment("b", p=1.0)(x)
    assert not torch.equal(y, x)
    for before, after in zip(x, y, strict=True):
        # every output pixel is an exact copy of an input pixel (no interpolation)
        assert set(map(tuple, after.flatten(1).T.tolist())) <= set(map(tuple, before.flatten(1).T.tolist()))


def test_geometric_ops_pad_by_reflection():
    torch.manual_seed(0)
    flat = torch.full((8, 3, 16, 16), 0.25)
    # scaling down and translating pull pixels from outside: zero padding would darken the borders
    assert torch.allclose(AdaptiveAugment("g", p=1.0)(flat), flat, atol=1e-6)
    x = images(8)
    assert ((AdaptiveAugment("g", p=1.0)(x) - x).abs().flatten(1).amax(1) > 0.1).all()


def test_hue_and_saturation_keep_grey_grey_but_move_colours():
    torch.manual_seed(0)
    augment = AdaptiveAugment(p=1.0, ops=["hue", "saturation"])
    for value in (0.0, 0.4, -0.7):
        grey = torch.full((8, 3, 4, 4), value)
        assert torch.allclose(augment(grey), grey, atol=1e-6)
    red = torch.zeros(8, 3, 4, 4)
    red[:, 0] = 0.8
    assert ((augment(red) - red).abs().flatten(1).amax(1) > 0.05).all()


def controller(**options) -> AdaptiveAugment:
    return AdaptiveAugment(**{"interval": 4, "batch_size": 8, "speed_images": 1000, **options})


def test_p_rises_when_the_discriminator_is_overconfident_and_falls_otherwise():
    augment = controller()
    step = 8 * 4 / 1000
    for _ in range(3):
        augment.update(torch.full((8,), 2.0))
    assert augment.p == 0.0 and augment.last_rt is None  # only every 4th update moves p
    augment.update(torch.full((8,), 2.0))
    assert augment.last_rt == 1.0 and augment.p == pytest.approx(step)
    for _ in range(4):
        augment.update(torch.full((8,), 3.0))
    assert augment.p == pytest.approx(2 * step)
    # r_t = (5 - 3) / 8 = 0.25 < 0.6 on every minibatch: one step down
    for _ in range(4):
        augment.update(torch.tensor([1.0] * 5 + [-1.0] * 3))
    assert augment.last_rt == pytest.approx(0.25)
    assert augment.p == pytest.approx(step)


def test_p_stays_in_zero_one_and_fixed_never_moves():
    augment = controller(speed_images=10)  # a step of 3.2
    for _ in range(4):
        augment.update(torch.ones(8))
    assert augment.p == 1.0
    for _ in range(8):
        augment.update(-torch.ones(8))
    assert augment.p == 0.0
    fixed = controller(p=0.3, fixed=True)
    for _ in range(8):
        fixed.update(torch.ones(8))
    assert fixed.p == 0.3 and fixed.last_rt == 1.0


def test_a_checkpoint_restores_p():
    torch.manual_seed(0)
    augment = controller(speed_images=64)  # a step of 0.5
    for _ in range(4):
        augment.update(torch.ones(8))
    buffer = io.BytesIO()
    torch.save(augment.state_dict(), buffer)
    buffer.seek(0)
    restored = controller()
    restored.load_state_dict(torch.load(buffer))
    assert restored.p == 0.5
    assert (restored(images()) != images()).any()  # the restored p is the one forward uses


def test_bad_presets_and_ops_are_refused_with_the_choices():
    with pytest.raises(UsageError, match="b, g, c, bg, bgc"):
        AdaptiveAugment("bcg")
    with pytest.raises(UsageError, match="xflip"):
        AdaptiveAugment(ops=["flip"])
    with pytest.raises(UsageError, match="RGB"):
        AdaptiveAugment("c", p=0.5)(torch.zeros(2, 1, 8, 8))
