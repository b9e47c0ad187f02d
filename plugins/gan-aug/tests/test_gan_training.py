"""The adversarial training loop: checkpoints, logs with ADA p per step, frozen blocks, EMA, exact resume, NaN
handling, the stopping rule and the class-balanced real sampler, on 8-px networks a CPU trains in a second."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from medkit import RunError, UsageError
from medkit.checkpoint import load_checkpoint
from medkit.seeding import set_rng_state
from medkit_gan import training
from medkit_gan.discriminator import Discriminator
from medkit_gan.freeze import FreezeSpec
from medkit_gan.generator import Generator
from medkit_gan.imageset import ImageSet
from medkit_gan.training import GanTrainer, GanTrainingOptions, RealBatchSampler

TINY = {"resolution": 8, "num_classes": 2, "channel_base": 128, "channel_max": 16}
OPTIONS = GanTrainingOptions(
    batch_size=4,
    total_images=32,
    r1_gamma=1.0,
    r1_interval=2,
    pl_interval=2,
    ema_half_life_images=64,
    ema_rampup=None,
    ada_p=0.3,
    ada_interval=3,
    ada_speed_images=256,
    eval_every_images=16,
    checkpoint_every_images=16,
    seed=3,
)


def networks(seed: int = 0) -> tuple[Generator, Discriminator]:
    torch.manual_seed(seed)
    generator = Generator(**TINY, z_dim=16, w_dim=16, mapping_layers=2)
    return generator, Discriminator(**TINY, embed_dim=16)


def image_set(per_class: tuple[int, int] = (10, 6)) -> ImageSet:
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], per_class)
    images = rng.integers(0, 256, (len(labels), 8, 8, 3), dtype=np.uint8)
    images[labels == 1, :, :, 0] //= 4  # the classes differ in colour
    return ImageSet(images, labels, ("tumour", "stroma"))


def trainer(tmp_path: Path, options: GanTrainingOptions = OPTIONS, **kwargs) -> GanTrainer:
    return GanTrainer(*networks(), options, device="cpu", run_dir=tmp_path, **kwargs)


def random_fid(generator: torch.nn.Module) -> dict[str, float]:
    """A stand-in evaluation that, like a real one, draws random numbers (latents) from the global stream."""
    z = torch.randn(4, generator.z_dim)
    images = generator(z, torch.tensor([0, 1, 0, 1]))
    return {"fid": float(images.square().mean()), "precision": 0.5}


def params(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_a_short_fit_writes_last_and_best_and_logs_ada_p_every_step(tmp_path):
    records: list[dict] = []
    summary = trainer(tmp_path, evaluate=random_fid, log=records.append).fit(image_set())
    assert summary["images_seen"] == 32 and summary["steps"] == 8 and not summary["stopped_early"]
    last = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert last["progress"]["images_seen"] == 32
    assert last["hparams"]["generator"]["z_dim"] == 16 and set(last) >= {
        "generator_ema",
        "optimizer_d",
        "ada",
    }
    best = load_checkpoint(tmp_path / "checkpoints" / "best.pt")
    assert best["images_seen"] == summary["best_checkpoint_images"]
    assert best["figures"]["fid"] == pytest.approx(summary["best"]["fid"])
    # one record per evaluation + checkpoint (every 16 images), each with the ADA p of each of its 4 steps
    assert [r["images"] for r in records] == [16, 32]
    assert [pair[0] for r in records for pair in r["ada/p_per_step"]] == list(range(4, 33, 4))
    assert records[-1]["ada/p_per_step"][-1][1] == pytest.approx(summary["ada_p"])
    assert {"loss/D", "loss/G", "loss/R1", "loss/PL", "loss/cond_D", "loss/cond_G", "eval/fid"} <= set(
        records[0]
    )
    assert all(np.isfinite(records[0][k]) for k in ("loss/D", "loss/G", "loss/R1", "loss/PL"))


def test_frozen_blocks_keep_their_weights_while_the_others_train(tmp_path):
    run = trainer(
        tmp_path, replace(OPTIONS, total_images=16), frozen=FreezeSpec(generator=1, discriminator=1)
    )
    g_start, d_start = params(run.generator), params(run.discriminator)
    run.fit(image_set())
    assert len(run.freeze_notes) == 2
    for net, start in ((run.generator, g_start), (run.discriminator, d_start)):
        for name, value in net.state_dict().items():
            frozen = name.startswith(("synthesis.blocks.0.", "blocks.0."))
            if frozen:
                assert torch.equal(value, start[name]), name
            elif name.startswith(("synthesis.blocks.1.conv1.conv.weight", "blocks.1.conv.weight")):
                assert not torch.equal(value, start[name]), name


def test_the_ema_generator_lags_behind_the_trained_one(tmp_path):
    run = trainer(tmp_path, replace(OPTIONS, total_images=48))
    start = params(run.generator)
    run.fit(image_set())

    def distance(module: torch.nn.Module) -> float:
        return sum(float((p.detach() - start[k]).square().sum()) for k, p in module.named_parameters())

    assert 0 < distance(run.generator_ema) < 0.5 * distance(run.generator)


def test_a_killed_and_resumed_run_equals_the_uninterrupted_one(tmp_path):
    whole = trainer(tmp_path / "whole", evaluate=random_fid)
    whole_summary = whole.fit(image_set())
    # killed at 16 images = 4 steps: inside an ADA interval (3), between lazy R1/PL steps, and without the
    # evaluation the whole run made there (evaluations must not shift the training's random stream)
    trainer(tmp_path / "split", replace(OPTIONS, total_images=16)).fit(image_set())
    resumed = GanTrainer(
        *networks(seed=9), OPTIONS, device="cpu", run_dir=tmp_path / "split", evaluate=random_fid
    )
    summary = resumed.fit(image_set(), resume=True)
    assert summary["resumed_from_images"] == 16 and summary["images_seen"] == whole_summary["images_seen"]
    assert summary["ada_p"] == whole_summary["ada_p"] and summary["steps"] == whole_summary["steps"]
    for name in ("generator", "discriminator", "generator_ema"):
        a, b = getattr(whole, name).state_dict(), getattr(resumed, name).state_dict()
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=1e-6, atol=1e-7, msg=f"{name}.{key}")
    wider = Generator(**{**TINY, "channel_max": 32}, z_dim=16, w_dim=16, mapping_layers=2)
    other = GanTrainer(wider, networks()[1], OPTIONS, device="cpu", run_dir=tmp_path / "split")
    with pytest.raises(UsageError, match=r"last.pt was written for a generator with .*same model options"):
        other.fit(image_set(), resume=True)


def test_the_random_states_of_last_pt_restore_however_the_checkpoint_is_mapped(tmp_path):
    """Resume on CUDA: torch.load(map_location=device) moves every tensor to the GPU, while the random states
    (global and the real sampler's) must be restored from CPU bytes. Mapped onto "meta" (a device without data,
    standing in for a GPU here) they must still restore, and give the same draws as the CPU copy."""
    trainer(tmp_path, replace(OPTIONS, total_images=16)).fit(image_set())
    last = tmp_path / "checkpoints" / "last.pt"
    draws = {}
    for device in ("cpu", "meta"):
        state = load_checkpoint(last, map_location=device)
        sampler = RealBatchSampler(np.array([0, 1, 1]), balanced=True, seed=0)
        sampler.load_state_dict(state["sampler"])
        set_rng_state(state["rng"])
        draws[device] = (sampler.draw(8).tolist(), torch.rand(3).tolist(), np.random.rand())
    assert draws["meta"] == draws["cpu"]


def test_a_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    calls = {"n": 0}
    real_loss = training.d_logistic

    def nan_from_the_fourth_step(real_logits, fake_logits):
        calls["n"] += 1
        loss = real_loss(real_logits, fake_logits)
        return loss * float("nan") if calls["n"] >= 4 else loss

    monkeypatch.setattr(training, "d_logistic", nan_from_the_fourth_step)
    run = trainer(tmp_path, replace(OPTIONS, checkpoint_every_images=8))
    last = tmp_path / "checkpoints" / "last.pt"
    with pytest.raises(RunError) as error:
        run.fit(image_set())
    message = str(error.value)
    assert "image 16" in message and "D loss is nan" in message
    assert str(last) in message and "from image 8" in message and "r1_gamma" in message
    kept = load_checkpoint(last)
    assert kept["progress"]["images_seen"] == 8
    assert all(torch.isfinite(v).all() for v in kept["generator"].values())
    assert not all(torch.isfinite(p).all() for p in run.discriminator.parameters())  # the bad state in memory


def test_a_nan_before_the_first_checkpoint_says_none_was_written(tmp_path, monkeypatch):
    monkeypatch.setattr(training, "g_nonsaturating", lambda logits: logits.mean() * float("inf"))
    with pytest.raises(RunError, match=r"image 4: the G loss is (-)?inf.*no checkpoint was written yet"):
        trainer(tmp_path).fit(image_set())
    assert not (tmp_path / "checkpoints" / "last.pt").exists()


def test_training_stops_when_the_figures_stop_improving(tmp_path):
    figures = iter([{"fid": 50.0 + i, "precision": 0.5 - 0.1 * i, "coverage": 0.4} for i in range(16)])
    options = replace(OPTIONS, total_images=64, eval_every_images=4, stop_patience=2)
    summary = trainer(tmp_path, options, evaluate=lambda g: next(figures)).fit(image_set())
    assert summary["stopped_early"] and summary["images_seen"] == 12 and summary["evaluations"] == 3
    assert "2 evaluations" in summary["stop_reason"] and "fid 50 at 4 images" in summary["stop_reason"]
    assert load_checkpoint(tmp_path / "checkpoints" / "best.pt")["images_seen"] == 4  # the lowest FID
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["progress"]["images_seen"] == 12


def test_the_real_sampler_draws_every_class_equally_from_a_20_to_1_set():
    labels = np.repeat([0, 1], [200, 10])
    drawn = labels[RealBatchSampler(labels, balanced=True, seed=0).draw(4000)]
    assert abs(drawn.mean() - 0.5) < 0.03
    plain = labels[RealBatchSampler(labels, balanced=False, seed=0).draw(4000)]
    assert abs(plain.mean() - 10 / 210) < 0.015
    again = RealBatchSampler(labels, balanced=True, seed=0).draw(4000)
    assert np.array_equal(labels[again], drawn)


def test_images_of_the_wrong_size_are_refused_with_the_resolution(tmp_path):
    small = ImageSet(np.zeros((4, 4, 4, 3), np.uint8), np.array([0, 1, 0, 1]), ("a", "b"))
    with pytest.raises(UsageError, match=r"4 x 4 px but the GAN works at 8 px"):
        trainer(tmp_path).fit(small)
