"""The GAN objectives of the conditional StyleGAN2 (spec, "The components"): the non-saturating logistic loss,
its R1 and path-length regularisers, and the conditional terms (D2D-CE, AC-GAN cross-entropy, or none when the
projection discriminator already carries the class in its logits).

Every function takes tensors, not networks, so the trainer decides which outputs it feeds in. Regulariser
weights (gamma / 2, the lazy interval, the path-length weight) are the caller's: these return the raw terms.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

CONDITIONAL_KINDS = ("d2d_ce", "acgan", "projection", "none")


def d_logistic(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Discriminator loss of the non-saturating logistic GAN (StyleGAN2): softplus(D(fake)) + softplus(-D(real))."""
    return F.softplus(fake_logits.float()).mean() + F.softplus(-real_logits.float()).mean()


def g_nonsaturating(fake_logits: torch.Tensor) -> torch.Tensor:
    """Generator loss of the non-saturating logistic GAN: softplus(-D(G(z)))."""
    return F.softplus(-fake_logits.float()).mean()


def r1_penalty(real_images: torch.Tensor, real_logits: torch.Tensor) -> torch.Tensor:
    """R1 (Mescheder et al. 2018, StyleGAN2's D regulariser): mean over the batch of |grad_x D(x)|^2 on reals.

    ``real_images`` must require grad and ``real_logits`` come from them; the graph is kept so the penalty
    itself can be backpropagated. The caller multiplies by gamma / 2 and the lazy interval (StyleGAN2 sec. 3.1).
    """
    (gradient,) = torch.autograd.grad(real_logits.float().sum(), real_images, create_graph=True)
    return gradient.float().square().flatten(1).sum(1).mean()


class PathLengthRegularizer:
    """Path-length regularisation of G (StyleGAN2 sec. 3.2): E[(|J_w^T y| - a)^2] with y ~ N(0, I) / sqrt(H W).

    ``a`` (``mean``) is the exponential moving average of the observed lengths, updated by ``decay`` at every
    call and treated as a constant in the penalty; it starts at 0, as in StyleGAN2, and belongs in a checkpoint
    (``state_dict`` / ``load_state_dict``).
    """

    def __init__(self, decay: float = 0.01) -> None:
        if not 0 < decay <= 1:
            raise ValueError(f"PathLengthRegularizer decay must lie in (0, 1]; got {decay}")
        self.decay = decay
        self.mean = torch.zeros(())  # kept as a tensor on the lengths' device: no host sync per call

    def __call__(self, fake_images: torch.Tensor, ws: torch.Tensor) -> torch.Tensor:
        """``ws``: the (N, W) or (N, num_ws, W) latents ``fake_images`` were synthesised from (requiring grad)."""
        height, width = fake_images.shape[-2:]
        noise = torch.randn_like(fake_images) / (height * width) ** 0.5
        (gradient,) = torch.autograd.grad((fake_images * noise).sum(), ws, create_graph=True)
        # |J^T y| per sample: squared norm over the w dimensions, averaged over the per-layer copies of w
        squared = gradient.float().square().sum(-1)
        lengths = squared.reshape(len(squared), -1).mean(1).sqrt()
        mean = self.mean.to(lengths.device)
        self.mean = mean.lerp(lengths.detach().mean(), self.decay)
        return (lengths - self.mean).square().mean()

    def state_dict(self) -> dict[str, float]:
        return {"mean": float(self.mean), "decay": self.decay}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.mean = torch.tensor(float(state["mean"]), device=self.mean.device)
        self.decay = float(state.get("decay", self.decay))


def d2d_ce(
    embeddings: torch.Tensor,
    proxies: torch.Tensor,
    labels: torch.Tensor,
    temperature: float = 0.5,
    margin: float = 0.98,
) -> torch.Tensor:
    """Data-to-Data Cross-Entropy (Kang et al. 2021, ReACGAN; spec "D2D-CE"), averaged over the batch.

    With e, p normalised and cos similarities: a_i = relu((m_p - cos(e_i, p_yi)) / t); every other sample j
    with a different label (same-label samples are false negatives, removed) adds
    exp(relu((cos(e_i, e_j) + m_p - 1) / t)), so easy negatives below 1 - m_p count a constant 1;
    loss_i = a_i + log(exp(-a_i) + sum_j negatives). The log term is a log-sum-exp over -a_i and the negatives'
    exponents, computed with the row maximum subtracted (torch.logsumexp), so it stays finite for any t.
    """
    if embeddings.ndim != 2 or proxies.shape != embeddings.shape or labels.shape != embeddings.shape[:1]:
        raise ValueError(
            "d2d_ce needs embeddings and proxies of one shape (N, E) and labels (N,); "
            f"got {tuple(embeddings.shape)}, {tuple(proxies.shape)}, {tuple(labels.shape)}"
        )
    if temperature <= 0:
        raise ValueError(f"d2d_ce temperature must be positive; got {temperature}")
    dtype = torch.promote_types(embeddings.dtype, torch.float32)  # half-precision features are summed in fp32
    embed = F.normalize(embeddings.to(dtype), dim=1)
    proxy = F.normalize(proxies.to(dtype), dim=1)
    attraction = F.relu((margin - (embed * proxy).sum(1)) / temperature)
    repulsion = F.relu((embed @ embed.T + margin - 1) / temperature)
    # a different label excludes the sample itself and the false negatives in one mask
    negative = labels[:, None] != labels[None, :]
    exponents = torch.cat([-attraction[:, None], repulsion.masked_fill(~negative, float("-inf"))], dim=1)
    return (attraction + torch.logsumexp(exponents, dim=1)).mean()


def acgan_ce(class_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """AC-GAN's data-to-class cross-entropy (Odena et al. 2017), the conditional term D2D-CE replaces."""
    return F.cross_entropy(class_logits.float(), labels)


def conditional_loss(
    kind: str, out: Any, labels: torch.Tensor, temperature: float = 0.5, margin: float = 0.98
) -> torch.Tensor:
    """The conditional term for discriminator output ``out`` (attributes ``embedding``, ``proxy``,
    ``class_logits``): "d2d_ce", "acgan", or zero for "projection" / "none" (the projection term is already in
    the logits, and "none" trains an unconditional GAN)."""
    if kind == "d2d_ce":
        return d2d_ce(out.embedding, out.proxy, labels, temperature, margin)
    if kind == "acgan":
        return acgan_ce(out.class_logits, labels)
    if kind in ("projection", "none"):
        return torch.zeros((), device=labels.device)
    raise ValueError(f"unknown conditional loss {kind!r}; choose one of {', '.join(CONDITIONAL_KINDS)}")
