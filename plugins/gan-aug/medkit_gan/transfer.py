"""Transfer from a base model's checkpoint (``--init PATH``), and rebuilding networks from a checkpoint.

A checkpoint is a dict with the state dicts "generator", "discriminator", "generator_ema" and "hparams":
{"generator": G.hparams, "discriminator": D.hparams}; other keys are ignored here. The architecture must match
(resolution and widths), or the weights could not mean the same thing: that is refused with what to do. A
different number of classes only reinitialises the class-dependent tensors each network lists in
``class_dependent`` (G's class embedding and per-class w_avg; D's projection embedding, D2D-CE proxies and
AC-GAN head); every other tensor loads strictly.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from medkit import UsageError

from .discriminator import Discriminator
from .generator import Generator

__all__ = ["load_pretrained", "rebuild_networks"]

# hparams that change the shape or the meaning of the weights; the others (w_avg_beta, mbstd_group, projection,
# num_classes) may differ between the base model and the fine-tuned one
_G_ARCHITECTURE = (
    "resolution",
    "z_dim",
    "w_dim",
    "mapping_layers",
    "channel_base",
    "channel_max",
    "mapping_lr_mult",
)
_D_ARCHITECTURE = ("resolution", "channel_base", "channel_max", "mbstd_channels", "embed_dim")


def _checkpoint_parts(state: Mapping, source: str) -> tuple[dict, dict]:
    missing = [key for key in ("generator", "discriminator", "hparams") if key not in state]
    hparams = state.get("hparams", {})
    if missing or not all(key in hparams for key in ("generator", "discriminator")):
        raise UsageError(
            f"{source} is not a gan-aug checkpoint: it lacks {', '.join(missing) or 'hparams of both networks'} "
            f"(found keys: {', '.join(map(str, state)) or 'none'}); pass a checkpoint written by the gan-aug trainer"
        )
    return dict(hparams["generator"]), dict(hparams["discriminator"])


def _check_architecture(which: str, current: dict, stored: dict, names: tuple[str, ...], source: str) -> None:
    for name in names:
        if name in stored and stored[name] != current[name]:
            raise UsageError(
                f"{source} holds a {which} with {name}={stored[name]}, but this run builds {name}={current[name]}; "
                f"its weights cannot be transferred. Build the same network (--set network.{name}={stored[name]}) "
                "or start without --init"
            )


def _load(network: nn.Module, stored: Mapping[str, torch.Tensor], which: str, source: str) -> list[str]:
    """Load ``stored`` into ``network``: strictly outside ``network.class_dependent``; class-dependent tensors
    load only when their shapes match and are otherwise left at their fresh initialisation."""
    prefixes = network.class_dependent
    fresh = network.state_dict()

    def is_class(key: str) -> bool:
        return key.startswith(prefixes)

    missing = sorted(k for k in fresh if not is_class(k) and k not in stored)
    unexpected = sorted(k for k in stored if not is_class(k) and k not in fresh)
    wrong = sorted(k for k in fresh if not is_class(k) and k in stored and stored[k].shape != fresh[k].shape)
    if missing or unexpected or wrong:
        details = "; ".join(
            f"{label}: {', '.join(keys[:5])}{' ...' if len(keys) > 5 else ''}"
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape differs", wrong))
            if keys
        )
        raise UsageError(
            f"{source}: the {which} weights do not fit this network ({details}); "
            "was it written by another version of gan-aug? Start without --init"
        )
    merged = dict(fresh)
    notes, reinitialised = [], []
    for key, value in fresh.items():
        if not is_class(key) or (key in stored and stored[key].shape == value.shape):
            merged[key] = stored[key]
        elif key == "mapping.w_avg" and key in stored:
            # new classes start from the mean w of the base model's classes, not from 0, so truncation works early
            merged[key] = stored[key].mean(dim=0, keepdim=True).expand_as(value).clone()
            notes.append(
                f"{which}: per-class w_avg set to the mean of the checkpoint's {len(stored[key])} classes"
            )
        else:
            reinitialised.append(key)
    dropped = sorted(k for k in stored if is_class(k) and k not in fresh)
    network.load_state_dict(merged, strict=True)
    if reinitialised:
        notes.append(f"{which}: reinitialised class-dependent {', '.join(reinitialised)}")
    if dropped:
        notes.append(
            f"{which}: not used from the checkpoint (absent in this configuration): {', '.join(dropped)}"
        )
    return notes


def load_pretrained(
    generator: Generator,
    discriminator: Discriminator,
    state: dict,
    source: str,
    generator_ema: Generator | None = None,
) -> list[str]:
    """Copy a checkpoint's weights into freshly built networks of the current configuration; returns notes
    for the report (what loaded, what was reinitialised)."""
    g_hparams, d_hparams = _checkpoint_parts(state, source)
    _check_architecture("generator", generator.hparams, g_hparams, _G_ARCHITECTURE, source)
    _check_architecture("discriminator", discriminator.hparams, d_hparams, _D_ARCHITECTURE, source)
    notes = [f"initialised from {source}"]
    stored_classes, classes = g_hparams.get("num_classes"), generator.num_classes
    if stored_classes != classes:
        notes.append(
            f"{source} was trained on {stored_classes} classes, this run has {classes}: the class embedding, "
            "the per-class w_avg and D's class heads start afresh; everything else is transferred"
        )
    notes += _load(generator, state["generator"], "generator", source)
    notes += _load(discriminator, state["discriminator"], "discriminator", source)
    if generator_ema is not None:
        ema_state = state.get("generator_ema")
        if ema_state is None:
            ema_state = state["generator"]
            notes.append(
                f"{source} has no generator_ema: the EMA generator starts from the generator's weights"
            )
        _load(generator_ema, ema_state, "generator_ema", source)
    return notes


def rebuild_networks(
    state: dict, source: str = "the checkpoint", ema: bool = False
) -> tuple[Generator, Discriminator]:
    """The networks a checkpoint was trained with, built from its hparams and loaded strictly; ``ema=True``
    loads the EMA generator's weights (what generation should use) into the generator."""
    g_hparams, d_hparams = _checkpoint_parts(state, source)
    generator, discriminator = Generator(**g_hparams), Discriminator(**d_hparams)
    g_key = "generator_ema" if ema else "generator"
    if state.get(g_key) is None:
        raise UsageError(
            f"{source} holds no {g_key} weights; pass a checkpoint written by the gan-aug trainer"
        )
    generator.load_state_dict(state[g_key], strict=True)
    discriminator.load_state_dict(state["discriminator"], strict=True)
    return generator, discriminator
