"""The GAN objectives: the logistic losses on known values, R1 and path length against analytic gradients, and
D2D-CE against a direct loop over the spec's formula (false negatives removed, easy negatives counting 1)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from medkit_gan.losses import (
    PathLengthRegularizer,
    acgan_ce,
    conditional_loss,
    d2d_ce,
    d_logistic,
    g_nonsaturating,
    r1_penalty,
)


def test_logistic_losses_on_known_values():
    zero = torch.zeros(3)
    assert d_logistic(zero, zero).item() == pytest.approx(2 * math.log(2))
    # a confident, correct discriminator pays almost nothing; a fooled one pays about the logit margin
    assert d_logistic(torch.full((3,), 30.0), torch.full((3,), -30.0)).item() == pytest.approx(0, abs=1e-6)
    assert d_logistic(torch.full((3,), -5.0), torch.full((3,), 5.0)).item() == pytest.approx(
        2 * math.log1p(math.exp(5))
    )
    fake = torch.tensor([1.0, -1.0])
    expected = (math.log1p(math.exp(-1)) + math.log1p(math.exp(1))) / 2
    assert g_nonsaturating(fake).item() == pytest.approx(expected)


def test_r1_of_a_linear_discriminator_is_the_squared_weight_norm():
    torch.manual_seed(0)
    w = torch.randn(3, 4, 4)
    images = torch.randn(5, 3, 4, 4, requires_grad=True)
    logits = (images * w).flatten(1).sum(1)
    penalty = r1_penalty(images, logits)
    assert penalty.item() == pytest.approx(w.square().sum().item(), rel=1e-5)
    # the graph is kept: a discriminator with a quadratic term gets a gradient from the penalty
    scale = torch.tensor(2.0, requires_grad=True)
    r1_penalty(images, (scale * images.square()).flatten(1).sum(1)).backward()
    assert scale.grad is not None and scale.grad.item() > 0


def _linear_generator(ws: torch.Tensor, k: torch.Tensor, size: int = 4) -> torch.Tensor:
    """Every pixel is k * (sum of w): with y ~ N(0, 1) / size, J^T y = k * N(0, 1) per latent copy."""
    return (k * ws.reshape(len(ws), -1).sum(1))[:, None, None, None].expand(-1, 1, size, size)


def test_path_length_mean_moves_to_the_observed_lengths():
    torch.manual_seed(0)
    k = torch.tensor(3.0, requires_grad=True)
    expected_length = 3.0 * math.sqrt(2 / math.pi)  # E|3 z|, z ~ N(0, 1)
    regularizer = PathLengthRegularizer(decay=0.01)
    ws = torch.zeros(4096, 1, requires_grad=True)
    regularizer(_linear_generator(ws, k), ws)
    # one step of the exponential moving average from 0
    assert float(regularizer.mean) == pytest.approx(0.01 * expected_length, rel=0.05)

    regularizer = PathLengthRegularizer(decay=0.3)
    for _ in range(30):
        ws = torch.zeros(4096, 2, 1, requires_grad=True)  # (N, num_ws, W): lengths average the copies
        penalty = regularizer(_linear_generator(ws, k), ws)
    assert float(regularizer.mean) == pytest.approx(expected_length, rel=0.05)
    # converged: the penalty is the variance of the lengths, 9 (1 - 2 / pi), and it trains the generator
    assert penalty.item() == pytest.approx(9 * (1 - 2 / math.pi), rel=0.1)
    penalty.backward()
    assert k.grad is not None and k.grad.isfinite()

    restored = PathLengthRegularizer()
    restored.load_state_dict(regularizer.state_dict())
    assert float(restored.mean) == pytest.approx(float(regularizer.mean))
    assert restored.decay == 0.3


def d2d_ce_loop(embeddings, proxies, labels, temperature, margin) -> float:
    """The spec's D2D-CE written out sample by sample, in plain Python floats."""

    def cos(a, b):
        return sum(x * y for x, y in zip(a, b, strict=True)) / math.sqrt(
            sum(x * x for x in a) * sum(y * y for y in b)
        )

    total = 0.0
    for i, (e_i, p_i, y_i) in enumerate(zip(embeddings, proxies, labels, strict=True)):
        attraction = max(0.0, (margin - cos(e_i, p_i)) / temperature)
        inside_log = math.exp(-attraction)
        for j, (e_j, y_j) in enumerate(zip(embeddings, labels, strict=True)):
            if j != i and y_j != y_i:
                inside_log += math.exp(max(0.0, (cos(e_i, e_j) + margin - 1) / temperature))
        total += attraction + math.log(inside_log)
    return total / len(labels)


@pytest.mark.parametrize(("temperature", "margin"), [(0.5, 0.98), (0.1, 0.9), (1.0, 0.5)])
def test_d2d_ce_equals_the_loop_reference_in_float64(temperature, margin):
    generator = torch.Generator().manual_seed(int(temperature * 100))
    embeddings = torch.randn(7, 5, generator=generator, dtype=torch.float64)
    proxies = torch.randn(7, 5, generator=generator, dtype=torch.float64)
    labels = torch.tensor([0, 1, 0, 2, 1, 1, 2])
    expected = d2d_ce_loop(embeddings.tolist(), proxies.tolist(), labels.tolist(), temperature, margin)
    assert d2d_ce(embeddings, proxies, labels, temperature, margin).item() == pytest.approx(
        expected, rel=1e-10
    )


def test_d2d_ce_removes_same_label_samples_as_false_negatives():
    torch.manual_seed(0)
    embeddings, proxies = torch.randn(6, 4, dtype=torch.float64), torch.randn(6, 4, dtype=torch.float64)
    # one label for the whole batch: no negatives, so loss_i = a_i + log(exp(-a_i)) = 0
    same = torch.zeros(6, dtype=torch.long)
    assert d2d_ce(embeddings, proxies, same).item() == pytest.approx(0, abs=1e-12)
    # distinct labels: every other sample is a negative and the loss is positive
    assert d2d_ce(embeddings, proxies, torch.arange(6)).item() > 0.1


def test_d2d_ce_easy_negatives_count_one():
    # orthogonal embeddings (cos 0 < 1 - m_p): each negative adds exp(0) = 1
    embeddings = torch.eye(2, 4)
    labels = torch.tensor([0, 1])
    # proxy on the embedding: a = relu((0.98 - 1) / 0.5) = 0, loss = log(1 + 1)
    assert d2d_ce(embeddings, embeddings, labels).item() == pytest.approx(math.log(2), rel=1e-6)
    # proxy orthogonal to the embedding: a = 0.98 / 0.5, loss = a + log(exp(-a) + 1)
    proxies = torch.eye(4)[2:]
    a = 0.98 / 0.5
    assert d2d_ce(embeddings, proxies, labels).item() == pytest.approx(
        a + math.log(math.exp(-a) + 1), rel=1e-6
    )
    # a hard negative (cos 0.6 > 1 - m_p) counts more than 1
    hard = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.6, 0.8, 0.0, 0.0]])
    assert d2d_ce(hard, hard, labels).item() > math.log(2) + 0.5


def test_d2d_ce_stays_finite_for_extreme_inputs():
    torch.manual_seed(0)
    labels = torch.tensor([0, 1, 2, 0])
    # huge features and a tiny temperature: exp((cos + m_p - 1) / t) overflows float32 in the plain formula
    embeddings = (torch.randn(4, 8) * 1e20).requires_grad_()
    loss = d2d_ce(embeddings, torch.randn(4, 8), labels, temperature=1e-4)
    loss.backward()
    assert loss.isfinite() and loss.item() > 1000
    assert embeddings.grad.isfinite().all()
    # identical embeddings (every negative maximally hard)
    identical = torch.ones(4, 8).requires_grad_()
    d2d_ce(identical, torch.randn(4, 8), labels).backward()
    assert identical.grad.isfinite().all() and identical.grad.abs().sum() > 0


def test_conditional_loss_dispatches_on_kind():
    torch.manual_seed(0)
    out = SimpleNamespace(
        embedding=torch.randn(4, 6), proxy=torch.randn(4, 6), class_logits=torch.randn(4, 3)
    )
    labels = torch.tensor([0, 1, 2, 1])
    expected_d2d = d2d_ce(out.embedding, out.proxy, labels, 0.3, 0.9)
    assert conditional_loss("d2d_ce", out, labels, 0.3, 0.9).item() == pytest.approx(expected_d2d.item())
    expected_ce = -F.log_softmax(out.class_logits, 1)[torch.arange(4), labels].mean()
    assert acgan_ce(out.class_logits, labels).item() == pytest.approx(expected_ce.item(), rel=1e-6)
    assert conditional_loss("acgan", out, labels, 0.5, 0.98).item() == pytest.approx(
        expected_ce.item(), rel=1e-6
    )
    for kind in ("projection", "none"):
        assert conditional_loss(kind, out, labels, 0.5, 0.98).item() == 0.0
    with pytest.raises(ValueError, match="d2d_ce, acgan, projection, none"):
        conditional_loss("contra", out, labels, 0.5, 0.98)
