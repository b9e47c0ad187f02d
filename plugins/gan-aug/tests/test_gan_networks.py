"""The conditional StyleGAN2 networks: shapes at several resolutions, conditioning, per-class truncation,
demodulation, noise modes, style mixing, parameter counts, and the discriminator's heads and minibatch stddev."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from medkit import UsageError
from medkit_gan.discriminator import Discriminator, minibatch_stddev
from medkit_gan.generator import Generator
from medkit_gan.layers import Downsample2d, Upsample2d, modulated_conv2d

TINY_G = {"z_dim": 16, "w_dim": 16, "mapping_layers": 2, "channel_base": 256, "channel_max": 32}
TINY_D = {"channel_base": 256, "channel_max": 32, "embed_dim": 16}


def tiny_generator(resolution: int = 16, num_classes: int = 3, seed: int = 0) -> Generator:
    torch.manual_seed(seed)
    return Generator(resolution, num_classes, **TINY_G)


def tiny_discriminator(resolution: int = 16, num_classes: int = 3, seed: int = 0, **kwargs) -> Discriminator:
    torch.manual_seed(seed)
    return Discriminator(resolution, num_classes, **{**TINY_D, **kwargs})


def set_noise_strength(generator: Generator, value: float) -> None:
    with torch.no_grad():
        for name, parameter in generator.named_parameters():
            if name.endswith("noise.strength"):
                parameter.fill_(value)


@pytest.mark.parametrize("resolution", [8, 16, 32])
def test_generator_builds_log2_minus_1_blocks_from_4x4_and_outputs_rgb_at_the_resolution(resolution: int):
    generator = tiny_generator(resolution)
    levels = int(math.log2(resolution))
    assert [block.resolution for block in generator.synthesis.blocks] == [2**i for i in range(2, levels + 1)]
    assert len(generator.synthesis.blocks) == levels - 1
    assert generator.num_ws == 2 * levels - 2  # StyleGAN2: 18 ws at 1024 px
    images, ws = generator(torch.randn(5, 16), torch.tensor([0, 1, 2, 0, 1]), return_ws=True)
    assert images.shape == (5, 3, resolution, resolution)
    assert ws.shape == (5, generator.num_ws, 16)
    assert generator.synthesis(ws, noise_mode="none").shape == (5, 3, resolution, resolution)


def test_a_generator_at_twice_the_resolution_has_one_more_block_and_more_parameters():
    small, large = tiny_generator(16), tiny_generator(32)
    assert len(large.synthesis.blocks) == len(small.synthesis.blocks) + 1
    assert sum(p.numel() for p in large.parameters()) > sum(p.numel() for p in small.parameters())


def expected_generator_parameters(
    resolution: int, classes: int, z: int, w: int, layers: int, base: int, cap: int
):
    """StyleGAN2's generator counted by hand: embedding + mapping MLP, then per block its convs and toRGB."""
    mapping = classes * w + (z + w) * w + w + (layers - 1) * (w * w + w)

    def conv(cin: int, cout: int) -> int:  # affine (w -> cin styles), 3x3 weight, noise strength, bias
        return w * cin + cin + cout * cin * 9 + 1 + cout

    def to_rgb(cin: int) -> int:
        return w * cin + cin + 3 * cin + 3

    total, previous = mapping, 0
    for level in range(2, int(math.log2(resolution)) + 1):
        channels = min(base // 2**level, cap)
        first = channels * 16 if level == 2 else conv(previous, channels)
        total += first + conv(channels, channels) + to_rgb(channels)
        previous = channels
    return total


def test_generator_parameter_count_matches_the_architecture_counted_by_hand():
    for resolution in (8, 32):
        generator = tiny_generator(resolution, num_classes=4)
        expected = expected_generator_parameters(resolution, 4, 16, 16, 2, 256, 32)
        assert sum(p.numel() for p in generator.parameters()) == expected


@pytest.mark.parametrize("resolution", [24, 4, 2048, 100])
def test_a_resolution_that_is_not_a_power_of_two_from_8_to_1024_is_refused_by_name(resolution: int):
    with pytest.raises(UsageError, match=r"resolution must be a power of two.*--set resolution="):
        Generator(resolution, 3, **TINY_G)
    with pytest.raises(UsageError, match="resolution"):
        Discriminator(resolution, 3, **TINY_D)


def test_the_same_z_gives_different_images_for_different_classes():
    generator = tiny_generator().eval()
    z = torch.randn(1, 16).repeat(3, 1)
    images = generator(z, torch.tensor([0, 1, 2]), noise_mode="const")
    for a, b in [(0, 1), (0, 2), (1, 2)]:
        assert (images[a] - images[b]).abs().mean() > 1e-3


def test_w_avg_is_a_per_class_running_mean_updated_only_in_training_mode():
    generator = tiny_generator()
    z, c = torch.randn(8, 16), torch.tensor([0, 0, 0, 0, 2, 2, 2, 2])
    generator.eval()
    generator.mapping(z, c)
    assert torch.count_nonzero(generator.mapping.w_avg) == 0
    generator.train()
    w = generator.mapping(z, c)
    beta = generator.hparams["w_avg_beta"]
    assert torch.allclose(generator.mapping.w_avg[0], (1 - beta) * w[:4].mean(0), atol=1e-6)
    assert torch.allclose(generator.mapping.w_avg[2], (1 - beta) * w[4:].mean(0), atol=1e-6)
    assert torch.count_nonzero(generator.mapping.w_avg[1]) == 0  # class 1 was not in the batch


def test_truncation_psi_0_maps_every_z_to_the_mean_w_of_its_class():
    generator = tiny_generator().train()
    for _ in range(20):
        generator.mapping(torch.randn(12, 16), torch.arange(12) % 3)
    generator.eval()
    c = torch.tensor([0, 1, 2, 0, 1, 2])
    ws = generator.mapping(torch.randn(6, 16), c, truncation_psi=0.0)
    assert torch.allclose(ws, generator.mapping.w_avg[c], atol=1e-6)
    assert (generator.mapping.w_avg[0] - generator.mapping.w_avg[1]).abs().max() > 1e-3  # classes stay apart
    images = generator(torch.randn(6, 16), c, truncation_psi=0.0, noise_mode="const")
    assert torch.allclose(images[:3], images[3:], atol=1e-5)
    half = generator.mapping(torch.randn(6, 16), c, truncation_psi=0.5)
    full = generator.mapping(torch.randn(6, 16), c)
    assert (half - generator.mapping.w_avg[c]).norm() < (full - generator.mapping.w_avg[c]).norm()


def test_demodulated_conv_gives_unit_variance_for_unit_variance_input_whatever_the_style_scale():
    torch.manual_seed(0)
    x = torch.randn(8, 64, 24, 24)
    weight = torch.randn(32, 64, 3, 3)
    styles = torch.rand(8, 64) * 2 + 0.1
    interior = (slice(None), slice(None), slice(1, -1), slice(1, -1))  # zero padding lowers the border
    out = modulated_conv2d(x, weight, styles, demodulate=True)[interior]
    assert out.shape == (8, 32, 22, 22)
    assert abs(out.var().item() - 1.0) < 0.05
    scaled = modulated_conv2d(x, weight, styles * 7.0, demodulate=True)[interior]
    assert torch.allclose(scaled, out, atol=1e-4)
    plain = modulated_conv2d(x, weight, styles * 7.0, demodulate=False)[interior]
    assert plain.var().item() > 100  # without demodulation the style scale passes straight through


def test_grouped_modulated_conv_equals_a_plain_conv_per_sample():
    torch.manual_seed(1)
    x, weight, styles = torch.randn(3, 4, 6, 6), torch.randn(5, 4, 3, 3), torch.rand(3, 4) + 0.5
    out = modulated_conv2d(x, weight, styles, demodulate=False)
    for i in range(3):
        single = torch.nn.functional.conv2d(x[i : i + 1], weight * styles[i][None, :, None, None], padding=1)
        assert torch.allclose(out[i : i + 1], single, atol=1e-5)


def test_resampling_filters_keep_a_constant_image_constant_to_the_border():
    flat = torch.full((1, 2, 8, 8), 3.0)
    assert Upsample2d()(flat).shape == (1, 2, 16, 16)
    # the border is replicated, so a flat image stays flat up to its edge (no dark frame)
    assert torch.allclose(Upsample2d()(flat), torch.tensor(3.0))
    assert Downsample2d()(flat).shape == (1, 2, 4, 4)
    assert torch.allclose(Downsample2d()(flat), torch.tensor(3.0))


def test_replicated_borders_change_only_the_edge_pixels_of_the_resampling_filters():
    x = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    up, down = Upsample2d(), Downsample2d()
    zero_padded_up = F.conv_transpose2d(x, up.kernel.expand(3, 1, 4, 4), stride=2, padding=1, groups=3)
    zero_padded_down = F.conv2d(x, down.kernel.expand(3, 1, 4, 4), stride=2, padding=1, groups=3)
    assert torch.allclose(up(x)[..., 1:-1, 1:-1], zero_padded_up[..., 1:-1, 1:-1], atol=1e-6)
    assert torch.allclose(down(x)[..., 1:-1, 1:-1], zero_padded_down[..., 1:-1, 1:-1], atol=1e-6)
    assert not torch.allclose(up(x)[..., 0, :], zero_padded_up[..., 0, :])


def test_const_noise_makes_the_generator_deterministic_and_random_noise_does_not():
    generator = tiny_generator().eval()
    set_noise_strength(generator, 0.5)
    z, c = torch.randn(4, 16), torch.tensor([0, 1, 2, 0])
    assert torch.equal(generator(z, c, noise_mode="const"), generator(z, c, noise_mode="const"))
    assert not torch.allclose(generator(z, c, noise_mode="random"), generator(z, c, noise_mode="random"))
    assert not torch.allclose(generator(z, c, noise_mode="none"), generator(z, c, noise_mode="const"))
    with pytest.raises(ValueError, match="noise_mode"):
        generator(z, c, noise_mode="fixed")


def test_style_mixing_with_probability_1_takes_a_second_zs_ws_from_a_cutoff_layer_onward():
    generator = tiny_generator(32).eval()
    z, c = torch.randn(6, 16), torch.tensor([0, 1, 2, 0, 1, 2])
    plain, plain_ws = generator(z, c, noise_mode="const", return_ws=True)
    assert torch.equal(plain_ws, generator.mapping(z, c)[:, None].expand_as(plain_ws))
    torch.manual_seed(3)
    mixed, mixed_ws = generator(z, c, noise_mode="const", mixing_prob=1.0, return_ws=True)
    assert not torch.allclose(mixed, plain, atol=1e-4)
    for sample in range(6):
        same = (mixed_ws[sample] == plain_ws[sample]).all(dim=1).tolist()
        cutoff = same.index(False)
        assert cutoff >= 1 and not any(same[cutoff:])  # layers before the cutoff keep the first z
        assert torch.equal(mixed_ws[sample, cutoff:], mixed_ws[sample, -1:].expand(len(same) - cutoff, -1))
    unmixed = generator(z, c, noise_mode="const", mixing_prob=0.0)
    assert torch.equal(unmixed, plain)


@pytest.mark.parametrize("resolution", [8, 32])
def test_discriminator_blocks_run_from_the_image_down_to_the_epilogue_and_heads_have_their_shapes(resolution):
    discriminator = tiny_discriminator(resolution, num_classes=4)
    levels = int(math.log2(resolution))
    assert [block.resolution for block in discriminator.blocks] == [2**i for i in range(levels, 1, -1)]
    assert discriminator.blocks[0].fromrgb is not None
    assert all(block.fromrgb is None for block in discriminator.blocks[1:-1])
    c = torch.tensor([0, 3, 1, 2, 3])
    out = discriminator(torch.randn(5, 3, resolution, resolution), c)
    assert out.logits.shape == (5,)
    assert out.embedding.shape == (5, 16)
    assert torch.equal(out.proxy, discriminator.proxies.weight[c])
    assert out.class_logits.shape == (5, 4)


def test_the_projection_term_makes_the_logit_depend_on_the_class_only_when_enabled():
    images = torch.randn(2, 3, 16, 16)
    projected = tiny_discriminator(projection=True).eval()
    logits = [projected(images, torch.tensor([k, k])).logits for k in range(3)]
    assert not torch.allclose(logits[0], logits[1])
    plain = tiny_discriminator(projection=False).eval()
    assert torch.equal(plain(images, torch.tensor([0, 0])).logits, plain(images, torch.tensor([2, 2])).logits)


def test_minibatch_stddev_uses_the_largest_group_dividing_the_batch():
    torch.manual_seed(2)
    x = torch.randn(6, 4, 2, 2)
    out = minibatch_stddev(x, group_size=4, channels=1)  # 6 is not a multiple of 4: groups of 3
    assert out.shape == (6, 5, 2, 2)
    for i in range(6):
        group = x[[i % 2, i % 2 + 2, i % 2 + 4]]  # sample i is grouped with i mod (6 / 3)
        expected = group.var(dim=0, unbiased=False).add(1e-8).sqrt().mean()
        assert torch.allclose(out[i, 4], expected.expand(2, 2), atol=1e-6)


@pytest.mark.parametrize("batch", [1, 5, 7])
def test_the_discriminator_accepts_odd_batches(batch: int):
    out = tiny_discriminator(8)(torch.randn(batch, 3, 8, 8), torch.zeros(batch, dtype=torch.long))
    assert out.logits.shape == (batch,) and torch.isfinite(out.logits).all()


def test_the_discriminator_names_the_expected_image_shape():
    with pytest.raises(ValueError, match=r"\(N, 3, 16, 16\)"):
        tiny_discriminator(16)(torch.randn(2, 3, 32, 32), torch.zeros(2, dtype=torch.long))
