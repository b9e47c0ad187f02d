"""gan-aug speed: medkit's conditional StyleGAN2 against plain torch ops of the same shapes, and the cost of ADA.

Neither StyleGAN2 port on PyPI runs on a CPU, so the reference is a plain-torch network with the same layer
shapes: ``stylegan2-torch`` (1.3.0) JIT-compiles its CUDA kernels when imported and its up/down-sampling has no
CPU path; ``stylegan2-pytorch`` (lucidrains, 1.9.0) asserts ``torch.cuda.is_available()`` when imported (and
pulls aim, boto3, fastapi, ...). The plain generator has the same mapping MLP, 4x4 constant, channel plan, two
3x3 convolutions per resolution, skip toRGB and per-conv affine maps from w - but w enters each convolution as a
per-sample bias instead of modulating its weight, so every conv is one ordinary ``nn.Conv2d`` over the batch
(no grouped convolution, no demodulation), with bilinear instead of [1, 3, 3, 1] FIR upsampling, no noise and
no equalized learning rate. The plain discriminator has the same residual blocks with average pooling instead
of the FIR filter, a batch-stddev channel and a projection head. "medkit / plain" is therefore the price of
StyleGAN2's own machinery, not of a different network; the JSON lists both parameter counts.

Measured, per resolution, in one process, in interleaved rounds (every case once per round, the cases a ratio
compares next to each other, the order reversed every other round, so machine noise and drift hit both alike),
medians over rounds:

1. G fwd+bwd: z, c -> images -> mean square -> backward (no style mixing, random noise);
2. D step: D fwd+bwd on a batch of reals and one of fakes, in two calls as the training step makes them
   (softplus loss, gradients for the parameters only);
3. ADA (bgc at p=0.5): the medkit D step with both batches augmented; the augmentation of reals and fakes
   alone; and ADA's fwd+bwd on a batch of fakes that need a gradient, as the G step has it.

Ratios are medians of per-round ratios of wall times. Process CPU seconds per step are kept too. One torch
thread by default: with two on a 2-core machine that other jobs share, an OpenMP thread spins at every barrier
while its partner waits for a core, and both wall and CPU time then swing several-fold between rounds.

    nice -n 5 .venv/bin/python benchmarks/gan_speed.py [--rounds 8] [--threads 1] [--quick]

Writes benchmarks/results/gan_speed.json (``--quick``: tiny sizes, one round, written to a temporary file
unless ``--out`` is given).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

HERE = Path(__file__).resolve().parent
NUM_CLASSES, Z_DIM, W_DIM, MAPPING_LAYERS, CHANNEL_BASE = 4, 512, 512, 8, 16384
ADA_PRESET, ADA_P = "bgc", 0.5
# resolution -> (channel_max, batch): widths a 2-core CPU measures in a few minutes (StyleGAN2's are 512)
SIZES = {64: (128, 8), 256: (64, 4)}
QUICK_SIZES = {16: (32, 4), 32: (32, 4)}
REFERENCE_NOTE = (
    "plain torch ops of the same layer shapes: stylegan2-torch 1.3.0 compiles CUDA kernels at import and has "
    "no CPU up/down-sampling; stylegan2-pytorch 1.9.0 asserts a CUDA GPU at import"
)


# --- the plain-torch reference --------------------------------------------------------------------------------


def channels_at(resolution: int, channel_max: int) -> int:
    return max(1, min(CHANNEL_BASE // resolution, channel_max))


def lrelu(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, 0.2)


class PlainConv(nn.Module):
    """3x3 (or 1x1) conv whose style enters as a per-sample bias from w, instead of modulating the weight."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, w_dim: int) -> None:
        super().__init__()
        self.affine = nn.Linear(w_dim, out_channels)
        self.conv = nn.Conv2d(in_channels, out_channels, kernel, padding=kernel // 2)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return self.conv(x) + self.affine(w)[:, :, None, None]


class PlainGenerator(nn.Module):
    def __init__(self, resolution: int, channel_max: int) -> None:
        super().__init__()
        self.z_dim = Z_DIM
        self.embed = nn.Embedding(NUM_CLASSES, W_DIM)
        widths = [Z_DIM + W_DIM] + [W_DIM] * MAPPING_LAYERS
        self.mapping = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(widths))
        resolutions = [2**i for i in range(2, int(math.log2(resolution)) + 1)]
        self.const = nn.Parameter(torch.randn(channels_at(4, channel_max), 4, 4))
        self.conv0, self.conv1, self.torgb = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        previous = channels_at(4, channel_max)
        for res in resolutions:
            channels = channels_at(res, channel_max)
            self.conv0.append(PlainConv(previous, channels, 3, W_DIM) if res > 4 else nn.Identity())
            self.conv1.append(PlainConv(channels, channels, 3, W_DIM))
            self.torgb.append(PlainConv(channels, 3, 1, W_DIM))
            previous = channels

    def forward(self, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        w = torch.cat([F.normalize(z, dim=1), F.normalize(self.embed(c), dim=1)], dim=1)
        for layer in self.mapping:
            w = lrelu(layer(w))
        x = self.const[None].expand(len(z), -1, -1, -1)
        image = None
        for conv0, conv1, torgb in zip(self.conv0, self.conv1, self.torgb, strict=True):
            if image is not None:
                x = lrelu(conv0(F.interpolate(x, scale_factor=2, mode="bilinear"), w))
                image = F.interpolate(image, scale_factor=2, mode="bilinear")
            x = lrelu(conv1(x, w))
            rgb = torgb(x, w)
            image = rgb if image is None else image + rgb
        return image


class PlainBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, from_rgb: bool) -> None:
        super().__init__()
        self.fromrgb = nn.Conv2d(3, in_channels, 1) if from_rgb else None
        self.conv0 = nn.Conv2d(in_channels, in_channels, 3, padding=1)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.skip = nn.Conv2d(in_channels, out_channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fromrgb is not None:
            x = lrelu(self.fromrgb(x))
        down = F.avg_pool2d(x, 2)
        return (self.skip(down) + lrelu(self.conv1(F.avg_pool2d(lrelu(self.conv0(x)), 2)))) * math.sqrt(0.5)


class PlainDiscriminator(nn.Module):
    def __init__(self, resolution: int, channel_max: int) -> None:
        super().__init__()
        blocks, res = [], resolution
        while res > 4:
            blocks.append(
                PlainBlock(
                    channels_at(res, channel_max), channels_at(res // 2, channel_max), res == resolution
                )
            )
            res //= 2
        self.blocks = nn.Sequential(*blocks)
        features = channels_at(4, channel_max)
        self.conv = nn.Conv2d(features + 1, features, 3, padding=1)
        self.fc = nn.Linear(features * 16, features)
        self.adv = nn.Linear(features, 1)
        self.projection = nn.Embedding(NUM_CLASSES, features)

    def forward(self, images: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        x = self.blocks(images)
        stddev = x.std(dim=0, unbiased=False).mean().expand(len(x), 1, *x.shape[2:])
        h = lrelu(self.fc(lrelu(self.conv(torch.cat([x, stddev], dim=1))).flatten(1)))
        return self.adv(h).squeeze(1) + (self.projection(c) * h).sum(dim=1) / math.sqrt(h.shape[1])


# --- the cases ------------------------------------------------------------------------------------------------


def logits_of(out: Any) -> torch.Tensor:
    """medkit's D returns a DiscriminatorOutput, the plain one its logits."""
    return out if isinstance(out, torch.Tensor) else out.logits


def parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def build_cases(
    resolution: int, channel_max: int, batch: int
) -> tuple[dict[str, tuple[Callable[[], None], int]], dict[str, int]]:
    """The timed steps of one resolution with the images each step handles, and the networks' parameters."""
    from medkit_gan.ada import AdaptiveAugment
    from medkit_gan.discriminator import Discriminator
    from medkit_gan.generator import Generator

    torch.manual_seed(0)
    generators = {
        "medkit": Generator(
            resolution,
            NUM_CLASSES,
            z_dim=Z_DIM,
            w_dim=W_DIM,
            mapping_layers=MAPPING_LAYERS,
            channel_base=CHANNEL_BASE,
            channel_max=channel_max,
        ).train(),
        "plain": PlainGenerator(resolution, channel_max).train(),
    }
    discriminators = {
        "medkit": Discriminator(
            resolution, NUM_CLASSES, channel_base=CHANNEL_BASE, channel_max=channel_max
        ).train(),
        "plain": PlainDiscriminator(resolution, channel_max).train(),
    }
    augment = AdaptiveAugment(preset=ADA_PRESET, p=ADA_P)
    z, c = torch.randn(batch, Z_DIM), torch.randint(0, NUM_CLASSES, (batch,))
    reals, fakes = (torch.rand(batch, 3, resolution, resolution) * 2 - 1 for _ in range(2))

    def g_step(net: nn.Module) -> Callable[[], None]:
        def step() -> None:
            net.zero_grad(set_to_none=True)
            net(z, c).square().mean().backward()

        return step

    def d_step(net: nn.Module, ada: bool) -> Callable[[], None]:
        def step() -> None:
            net.zero_grad(set_to_none=True)
            for x in (reals, fakes):  # in separate calls, as the training step does (minibatch stddev)
                F.softplus(logits_of(net(augment(x) if ada else x, c))).mean().backward()

        return step

    def ada_forward() -> None:
        augment(reals)
        augment(fakes)

    def ada_backward() -> None:
        x = fakes.clone().requires_grad_(True)
        augment(x).square().mean().backward()

    # pairs that a ratio compares run next to each other; run() reverses the order every other round
    cases: dict[str, tuple[Callable[[], None], int]] = {
        "G plain": (g_step(generators["plain"]), batch),
        "G medkit": (g_step(generators["medkit"]), batch),
        "D plain": (d_step(discriminators["plain"], ada=False), 2 * batch),
        "D medkit": (d_step(discriminators["medkit"], ada=False), 2 * batch),
        "D medkit + ADA": (d_step(discriminators["medkit"], ada=True), 2 * batch),
        "ADA reals + fakes": (ada_forward, 2 * batch),
        "ADA fwd+bwd fakes": (ada_backward, batch),
    }
    counts = {f"G {k}": parameters(v) for k, v in generators.items()}
    counts.update({f"D {k}": parameters(v) for k, v in discriminators.items()})
    return cases, counts


def timed(step: Callable[[], None], steps: int) -> tuple[float, float]:
    """Wall and CPU seconds per step over ``steps`` steps."""
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        step()
    return (time.perf_counter() - wall) / steps, (time.process_time() - cpu) / steps


# --- the run --------------------------------------------------------------------------------------------------


def ratio_of(rounds: dict[str, list[tuple[float, float]]], numerator: str, denominator: str) -> float:
    """Median over rounds of wall(numerator) / wall(denominator), measured in the same round."""
    pairs = zip(rounds[numerator], rounds[denominator], strict=True)
    return statistics.median(a[0] / b[0] for a, b in pairs)


def summarise(
    resolution: int,
    batch: int,
    rounds: dict[str, list[tuple[float, float]]],
    images: dict[str, int],
    counts: dict[str, int],
) -> dict[str, Any]:
    cases = {}
    for name, samples in rounds.items():
        wall = statistics.median(s[0] for s in samples)
        cases[name] = {
            "images_per_step": images[name],
            "images_per_s": images[name] / wall,
            "wall_s_per_step": wall,
            "cpu_s_per_step": statistics.median(s[1] for s in samples),
            "wall_s_per_round": [s[0] for s in samples],
        }
    ratios = {
        "G medkit / plain (time)": ratio_of(rounds, "G medkit", "G plain"),
        "D medkit / plain (time)": ratio_of(rounds, "D medkit", "D plain"),
        "D step with ADA / without": ratio_of(rounds, "D medkit + ADA", "D medkit"),
        "ADA reals + fakes / D step": ratio_of(rounds, "ADA reals + fakes", "D medkit"),
        "ADA fwd+bwd fakes / G fwd+bwd": ratio_of(rounds, "ADA fwd+bwd fakes", "G medkit"),
    }
    return {"resolution": resolution, "batch": batch, "parameters": counts, "cases": cases, "ratios": ratios}


def run(sizes: dict[int, tuple[int, int]], rounds: int, steps: int) -> dict[int, dict[str, Any]]:
    built = {res: build_cases(res, cmax, batch) for res, (cmax, batch) in sizes.items()}
    # warm-up: first-call allocations and oneDNN's choice of kernels, not counted
    for cases, _ in built.values():
        for step, _ in cases.values():
            step()
    samples: dict[int, dict[str, list[tuple[float, float]]]] = {
        res: {name: [] for name in cases} for res, (cases, _) in built.items()
    }
    for number in range(1, rounds + 1):
        started = time.perf_counter()
        for res, (cases, _) in built.items():
            order = list(cases) if number % 2 else list(reversed(cases))  # A B, then B A: drift cancels
            for name in order:
                samples[res][name].append(timed(cases[name][0], steps))
        print(f"round {number}/{rounds}: {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    return {
        res: summarise(
            res,
            sizes[res][1],
            samples[res],
            {name: images for name, (_, images) in built[res][0].items()},
            built[res][1],
        )
        for res in sizes
    }


def table(results: dict[int, dict[str, Any]], sizes: dict[int, tuple[int, int]]) -> str:
    lines = [
        "| px | channel max | batch | case | parameters | images/s | wall s/step | CPU s/step |",
        "|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for res, result in results.items():
        cmax, batch = sizes[res]
        for name, case in result["cases"].items():
            count = f"{result['parameters'][name]:,}" if name in result["parameters"] else ""
            lines.append(
                f"| {res} | {cmax} | {batch} | {name} | {count} | {case['images_per_s']:.2f} | "
                f"{case['wall_s_per_step']:.3f} | {case['cpu_s_per_step']:.3f} |"
            )
    lines += ["", "| px | ratio | value |", "|---:|---|---:|"]
    for res, result in results.items():
        lines += [f"| {res} | {name} | {value:.3f} |" for name, value in result["ratios"].items()]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8, help="interleaved rounds (medians over them)")
    parser.add_argument("--steps", type=int, default=1, help="timed steps per case and round")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (see the docstring)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes and one round: a smoke run")
    parser.add_argument("--out", type=Path, default=None, help="default: benchmarks/results/gan_speed.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sizes, rounds = (QUICK_SIZES, 1) if args.quick else (SIZES, args.rounds)
    out = args.out or (
        Path(tempfile.gettempdir()) / "gan_speed_quick.json"
        if args.quick
        else HERE / "results" / "gan_speed.json"
    )
    load_before = os.getloadavg()
    results = run(sizes, rounds, args.steps)
    report = {
        "command": " ".join(["python", *sys.argv]),
        "reference": REFERENCE_NOTE,
        "settings": {
            "torch": torch.__version__,
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
            "threads": torch.get_num_threads(),
            "rounds": rounds,
            "steps_per_round": args.steps,
            "num_classes": NUM_CLASSES,
            "z_dim": Z_DIM,
            "w_dim": W_DIM,
            "mapping_layers": MAPPING_LAYERS,
            "channel_base": CHANNEL_BASE,
            "sizes": {
                str(res): {"channel_max": cmax, "batch": batch} for res, (cmax, batch) in sizes.items()
            },
            "ada": {"preset": ADA_PRESET, "p": ADA_P},
            "load_average_1min_before_after": [load_before[0], os.getloadavg()[0]],
        },
        "results": {str(res): result for res, result in results.items()},
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(table(results, sizes))
    print(f"\nwritten: {out}")


if __name__ == "__main__":
    main()
