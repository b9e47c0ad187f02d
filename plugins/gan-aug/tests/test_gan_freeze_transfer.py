"""Transfer from a base model with frozen blocks (paper 001): the --freeze naming, frozen weights staying at
the base model's values under Adam, gradients through frozen D blocks, and checkpoint loading rules."""

from __future__ import annotations

import io

import pytest
import torch
import torch.nn.functional as F

from medkit import UsageError
from medkit_gan.discriminator import Discriminator
from medkit_gan.freeze import FreezeSpec, apply_freeze, parse_freeze
from medkit_gan.generator import Generator
from medkit_gan.transfer import load_pretrained, rebuild_networks

TINY_G = {"z_dim": 16, "w_dim": 16, "mapping_layers": 2, "channel_base": 256, "channel_max": 32}
TINY_D = {"channel_base": 256, "channel_max": 32, "embed_dim": 16}


def networks(resolution: int = 16, num_classes: int = 3, seed: int = 0, **g_kwargs):
    torch.manual_seed(seed)
    generator = Generator(resolution, num_classes, **{**TINY_G, **g_kwargs})
    return generator, Discriminator(resolution, num_classes, **TINY_D)


def checkpoint(generator: Generator, discriminator: Discriminator, generator_ema: Generator) -> dict:
    """What the trainer writes, through torch.save / torch.load as a file would go."""
    state = {
        "generator": generator.state_dict(),
        "discriminator": discriminator.state_dict(),
        "generator_ema": generator_ema.state_dict(),
        "hparams": {"generator": generator.hparams, "discriminator": discriminator.hparams},
        "step": 1000,
    }
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def trained_base(num_classes: int = 3, resolution: int = 16) -> dict:
    """A 'base model': networks whose w_avg moved and whose noise strengths are non-zero."""
    generator, discriminator = networks(resolution, num_classes, seed=1)
    generator.train()
    generator.mapping(torch.randn(12, 16), torch.arange(12) % num_classes)
    with torch.no_grad():
        for name, parameter in generator.named_parameters():
            if name.endswith("noise.strength"):
                parameter.fill_(0.3)
    ema, _ = networks(resolution, num_classes, seed=2)
    return checkpoint(generator, discriminator, ema)


# --- parse_freeze ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("d1,g2", FreezeSpec(generator=2, discriminator=1)),
        ("g2", FreezeSpec(generator=2)),
        (" D2 , g3 ", FreezeSpec(generator=3, discriminator=2)),
        (["d1", "g2"], FreezeSpec(generator=2, discriminator=1)),
        ("", FreezeSpec()),
        ("none", FreezeSpec()),
        (None, FreezeSpec()),
        ([], FreezeSpec()),
        ("g4,d4", FreezeSpec(generator=4, discriminator=4)),
    ],
)
def test_parse_freeze_reads_the_papers_block_names(spec, expected: FreezeSpec):
    assert parse_freeze(spec, generator_blocks=4, discriminator_blocks=4) == expected


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ("g5", "'g5' names no block"),
        ("d0", "'d0' names no block"),
        ("x1", "'x1' is not a block name"),
        ("g", "'g' is not a block name"),
        ("g1,g2", "names the generator twice"),
        (["d1", "d2"], "names the discriminator twice"),
    ],
)
def test_parse_freeze_refuses_bad_names_and_lists_the_valid_ones(spec, problem: str):
    with pytest.raises(UsageError) as error:
        parse_freeze(spec, generator_blocks=4, discriminator_blocks=4)
    message = str(error.value)
    assert "--freeze" in message and problem in message
    assert "g1..g4" in message and "d1..d4" in message


def test_freeze_spec_prints_in_the_papers_naming():
    assert str(FreezeSpec(generator=2, discriminator=1)) == "d1,g2"
    assert str(FreezeSpec()) == "none"


# --- apply_freeze ---------------------------------------------------------------------------------------------


def gan_step(generator: Generator, discriminator: Discriminator) -> None:
    """One Adam step of D and one of G on the non-saturating logistic loss (StyleGAN2's settings)."""
    g_opt = torch.optim.Adam(generator.parameters(), lr=0.0025, betas=(0.0, 0.99))
    d_opt = torch.optim.Adam(discriminator.parameters(), lr=0.0025, betas=(0.0, 0.99))
    c = torch.arange(6) % 3
    reals = torch.rand(6, 3, 16, 16) * 2 - 1
    fakes = generator(torch.randn(6, 16), c)
    d_loss = F.softplus(discriminator(fakes.detach(), c).logits).mean()
    d_loss = d_loss + F.softplus(-discriminator(reals, c).logits).mean()
    d_opt.zero_grad()
    d_loss.backward()
    d_opt.step()
    g_loss = F.softplus(-discriminator(generator(torch.randn(6, 16), c), c).logits).mean()
    g_opt.zero_grad()
    g_loss.backward()
    g_opt.step()


def test_frozen_blocks_keep_their_weights_through_an_adam_step_while_the_rest_trains():
    generator, discriminator = networks()
    frozen = apply_freeze(generator, discriminator, parse_freeze("d1,g2", 3, 3))
    assert [line.split(":")[0] for line in frozen] == ["g1", "g2", "d1"]
    assert "4x4" in frozen[0] and "8x8" in frozen[1] and "16x16" in frozen[2] and "fromRGB" in frozen[2]
    before = {f"G.{k}": v.clone() for k, v in generator.named_parameters()}
    before |= {f"D.{k}": v.clone() for k, v in discriminator.named_parameters()}
    gan_step(generator, discriminator)
    after = dict(generator.named_parameters(prefix="G")) | dict(discriminator.named_parameters(prefix="D"))
    frozen_prefixes = ("G.synthesis.blocks.0.", "G.synthesis.blocks.1.", "D.blocks.0.")
    unused = ("D.embed_head.", "D.proxies.", "D.class_head.")  # heads of other losses: no gradient here
    for name, value in after.items():
        if name.startswith(frozen_prefixes):
            assert not value.requires_grad and torch.equal(value, before[name]), name
        elif not name.startswith(unused):
            assert value.requires_grad and not torch.equal(value, before[name]), name
    assert any(name.startswith("G.mapping.") for name in after)  # the mapping network trains


def test_gradients_flow_through_frozen_discriminator_blocks_to_the_image():
    generator, discriminator = networks()
    apply_freeze(generator, discriminator, FreezeSpec(discriminator=len(discriminator.blocks)))
    images = torch.randn(4, 3, 16, 16, requires_grad=True)
    logits = discriminator(images, torch.tensor([0, 1, 2, 0])).logits
    (r1_grad,) = torch.autograd.grad(logits.sum(), images, create_graph=True)  # what the R1 penalty needs
    assert r1_grad.abs().sum() > 0
    r1_grad.square().sum().backward()  # R1 backpropagates through the frozen blocks into the heads
    assert all(p.grad is None for p in discriminator.blocks.parameters())
    assert discriminator.adv.weight.grad is not None
    fakes = generator(torch.randn(4, 16), torch.tensor([0, 1, 2, 0]))
    F.softplus(-discriminator(fakes, torch.tensor([0, 1, 2, 0])).logits).mean().backward()
    assert generator.synthesis.blocks[-1].torgb.bias.grad.abs().sum() > 0  # G's loss reaches G


def test_apply_freeze_refuses_more_blocks_than_the_networks_have():
    generator, discriminator = networks(8)
    with pytest.raises(UsageError, match=r"--freeze g3.*g1\.\.g2"):
        apply_freeze(generator, discriminator, FreezeSpec(generator=3))


# --- transfer -------------------------------------------------------------------------------------------------


def test_a_checkpoint_of_the_same_configuration_loads_exactly():
    state = trained_base()
    generator, discriminator = networks(seed=5)
    ema, _ = networks(seed=6)
    notes = load_pretrained(generator, discriminator, state, "base.pt", generator_ema=ema)
    assert notes == ["initialised from base.pt"]
    for network, key in ((generator, "generator"), (discriminator, "discriminator"), (ema, "generator_ema")):
        for name, value in network.state_dict().items():
            assert torch.equal(value, state[key][name]), (key, name)
    rebuilt, rebuilt_d = rebuild_networks(state)
    z, c = torch.randn(4, 16), torch.tensor([0, 1, 2, 1])
    for net in (generator, rebuilt):
        net.eval()
    assert torch.equal(generator(z, c, noise_mode="const"), rebuilt(z, c, noise_mode="const"))
    images = torch.randn(4, 3, 16, 16)
    assert torch.equal(discriminator(images, c).logits, rebuilt_d(images, c).logits)


def test_rebuild_networks_with_ema_loads_the_ema_generator():
    state = trained_base()
    generator, _ = rebuild_networks(state, ema=True)
    assert all(torch.equal(v, state["generator_ema"][k]) for k, v in generator.state_dict().items())
    del state["generator_ema"]
    with pytest.raises(UsageError, match=r"base\.pt holds no generator_ema"):
        rebuild_networks(state, source="base.pt", ema=True)


def test_a_different_class_count_reinitialises_only_the_class_dependent_tensors():
    state = trained_base(num_classes=3)
    generator, discriminator = networks(num_classes=5, seed=5)
    fresh = {"generator": generator.state_dict(), "discriminator": discriminator.state_dict()}
    fresh = {net: {k: v.clone() for k, v in sd.items()} for net, sd in fresh.items()}
    notes = load_pretrained(generator, discriminator, state, "base.pt")
    text = "\n".join(notes)
    assert "trained on 3 classes, this run has 5" in text
    assert "mapping.embed.weight" in text and "proxies.weight" in text and "class_head.weight" in text
    reinitialised = {
        "generator": {"mapping.embed.weight"},
        "discriminator": {"projection.weight", "proxies.weight", "class_head.weight", "class_head.bias"},
    }
    for net, network in (("generator", generator), ("discriminator", discriminator)):
        for name, value in network.state_dict().items():
            if name in reinitialised[net]:
                assert torch.equal(value, fresh[net][name]), name
            elif name != "mapping.w_avg":
                assert torch.equal(value, state[net][name]), name
    expected_avg = state["generator"]["mapping.w_avg"].mean(0).expand(5, -1)
    assert torch.allclose(generator.mapping.w_avg, expected_avg)
    images = generator(torch.randn(5, 16), torch.arange(5))  # the new classes work
    assert discriminator(images, torch.arange(5)).class_logits.shape == (5, 5)


@pytest.mark.parametrize(
    ("change", "pattern"),
    [
        (
            {"resolution": 32},
            r"base\.pt holds a generator with resolution=16, .*resolution=32.*--set network\.resolution=16",
        ),
        ({"channel_max": 16}, r"base\.pt .*channel_max=32.*channel_max=16.*--set network\.channel_max=32"),
        ({"w_dim": 32}, r"base\.pt .*w_dim=16.*w_dim=32"),
    ],
)
def test_a_checkpoint_of_another_architecture_is_refused_with_what_to_do(change: dict, pattern: str):
    state = trained_base()
    resolution = change.get("resolution", 16)
    g_kwargs = {k: v for k, v in change.items() if k != "resolution"}
    generator, discriminator = networks(resolution, **g_kwargs)
    with pytest.raises(UsageError, match=pattern):
        load_pretrained(generator, discriminator, state, "base.pt")


def test_something_that_is_not_a_checkpoint_is_refused_by_name():
    generator, discriminator = networks()
    with pytest.raises(UsageError, match=r"weights\.pt is not a gan-aug checkpoint.*found keys: model"):
        load_pretrained(generator, discriminator, {"model": {}}, "weights.pt")
