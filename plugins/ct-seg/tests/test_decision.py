"""A weighted-loss model decides without (a share of) its class weights' bias: logit adjustment (decision.py)."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from test_train_recipe import TINY
from torch import nn

from medkit.testing import run_cli
from medkit_ct_seg.data import CLASS_NAMES
from medkit_ct_seg.decision import (
    OFFSET_BUFFER,
    SHARES,
    attach_offset,
    attach_stored_offset,
    choose_shares,
    score_offset,
    weight_offset,
)
from medkit_ct_seg.losses import WeightedCrossEntropy
from medkit_ct_seg.metrics import PaperSegmentationScorer
from medkit_ct_seg.models.unet import mini_unet


class FreeLogits(nn.Module):
    """One learnable logit per class for every pixel: what a network can do with an uninformative input."""

    def __init__(self, classes: int) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits.view(1, -1, 1, 1).expand(len(x), -1, *x.shape[2:])


def test_weighted_cross_entropy_over_calls_by_the_weights_and_the_whole_offset_removes_it():
    """The minimiser of weighted CE is p_w(c) ~ w_c p(c); subtracting log w gives back p(c), the plain CE's."""
    frequencies = torch.tensor([0.85, 0.06, 0.07, 0.02])
    weights = frequencies**-0.5 / (frequencies**-0.5).mean()
    target = torch.multinomial(
        frequencies, 64 * 64, replacement=True, generator=torch.Generator().manual_seed(0)
    )
    target = target.view(1, 64, 64)
    empirical = torch.bincount(target.flatten(), minlength=4) / target.numel()
    model, loss = FreeLogits(4), WeightedCrossEntropy(weights)
    optimiser = torch.optim.LBFGS(model.parameters(), max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        value = loss(model(torch.zeros(1, 1, 64, 64)), target)
        value.backward()
        return value

    optimiser.step(closure)
    raw = model.logits.detach().softmax(0)
    torch.testing.assert_close(raw, weights * empirical / (weights * empirical).sum(), atol=1e-4, rtol=0)
    assert raw[3] > 2 * empirical[3]  # the airway-like rare class is over-called by its weight
    attach_offset(model, weight_offset(weights, 1.0)).eval()
    adjusted = model(torch.zeros(1, 1, 1, 1))[0, :, 0, 0].detach().softmax(0)
    torch.testing.assert_close(adjusted, empirical.float(), atol=1e-4, rtol=0)


def test_the_offset_is_subtracted_in_eval_mode_only_and_travels_in_the_state_dict():
    torch.manual_seed(0)
    model, x = mini_unet(b=8), torch.rand(2, 1, 32, 32)
    offset = weight_offset(torch.tensor([0.1, 0.5, 0.5, 2.9]), 0.25)
    outputs = {}
    with torch.no_grad():
        for mode in ("train", "eval"):  # train mode: the loss sees raw logits
            getattr(model, mode)()
            outputs[mode, "plain"] = model(x)
            attach_offset(model, offset)
            outputs[mode, "offset"] = model(x)
            attach_offset(model, torch.zeros(4))
    torch.testing.assert_close(outputs["train", "offset"], outputs["train", "plain"])
    torch.testing.assert_close(outputs["eval", "offset"], outputs["eval", "plain"] - offset.view(1, -1, 1, 1))
    attach_offset(model, offset)
    fresh = attach_stored_offset(mini_unet(b=8), model.state_dict())
    fresh.load_state_dict(model.state_dict())
    torch.testing.assert_close(getattr(fresh, OFFSET_BUFFER), offset)
    with torch.no_grad():
        torch.testing.assert_close(fresh.eval()(x), model(x))
    # a state without an offset (another loss, or an older checkpoint) loads into a plain model
    plain = attach_stored_offset(mini_unet(b=8), mini_unet(b=8).state_dict())
    assert not hasattr(plain, OFFSET_BUFFER)


def test_the_shares_are_chosen_per_class_where_each_class_has_its_own_bias():
    """Logits that are right but for the first lung's weight bias: the choice removes that bias fully and leaves
    the unbiased classes alone."""
    generator = torch.Generator().manual_seed(0)
    masks = torch.randint(0, 4, (64, 16, 16), generator=generator)
    weights = torch.tensor([0.1, 0.5, 0.5, 3.0])
    logits = 2 * F.one_hot(masks, 4).permute(0, 3, 1, 2).float()
    logits += torch.randn(logits.shape, generator=generator)
    logits[:, 1] += (
        weights[1] / weights[0]
    ).log()  # class 1 over-called by its weight, as weighted CE trains it
    shares, trace = choose_shares(
        logits, masks, weights, lambda: PaperSegmentationScorer(CLASS_NAMES), CLASS_NAMES
    )
    assert shares == [0.0, 1.0, 0.0, 0.0]
    assert set(trace) == {"common", *CLASS_NAMES[1:]} and all(len(t) == len(SHARES) for t in trace.values())
    unbiased = score_offset(
        logits, masks, weight_offset(weights, shares), lambda: PaperSegmentationScorer(CLASS_NAMES)
    )
    # the last step's best is the choice's figure (the trace is rounded to 5 decimals)
    assert unbiased["mean_dice"] == pytest.approx(max(trace["airway"].values()), abs=1e-5)
    assert (
        unbiased["dice/left_lung"]
        > score_offset(logits, masks, torch.zeros(4), lambda: PaperSegmentationScorer(CLASS_NAMES))[
            "dice/left_lung"
        ]
    )


def test_a_weighted_run_chooses_the_shares_on_training_slices_and_stores_them_in_best_pt(tmp_path):
    out = tmp_path / "run"
    result = run_cli(["run", "ct-seg", "--arch", "mini_unet", "--out", str(out), *TINY])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    weights = torch.tensor(list(summary["class_weights"].values()))
    assert weights.argmax() == 3  # the airway, rarest, weighs most
    adjustment = summary["logit_adjustment"]
    assert adjustment["chosen_on"].endswith("training slices") and set(adjustment["shares"]) == set(
        CLASS_NAMES[1:]
    )
    trace = adjustment["training_mean_dice"]
    for name, share in adjustment["shares"].items():  # each class's share is the best of its step
        assert trace[name][str(share)] == max(trace[name].values())
    state = torch.load(out / "checkpoints" / "best.pt", weights_only=False)["model"]
    torch.testing.assert_close(
        state[OFFSET_BUFFER], weight_offset(weights, [0.0, *adjustment["shares"].values()])
    )
    assert summary["best_val_weighted_decision"]["mean_dice"] == summary["best"]


def test_a_given_share_is_stored_as_given(tmp_path):
    out = tmp_path / "run"
    result = run_cli(
        ["run", "ct-seg", "--arch", "mini_unet", "--out", str(out), *TINY, "--set", "logit_adjustment=0.5"]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["logit_adjustment"] == {
        "shares": dict.fromkeys(CLASS_NAMES[1:], 0.5),
        "chosen_on": "the logit_adjustment option",
    }
    weights = torch.tensor(list(summary["class_weights"].values()))
    state = torch.load(out / "checkpoints" / "best.pt", weights_only=False)["model"]
    torch.testing.assert_close(state[OFFSET_BUFFER], 0.5 * (weights / weights[0]).log())


def test_no_offset_without_class_weights(tmp_path):
    out = tmp_path / "run"
    result = run_cli(
        ["run", "ct-seg", "--arch", "mini_unet", "--out", str(out), *TINY, "--set", "loss=focal"]
    )
    assert result.exit_code == 0, result.output
    assert OFFSET_BUFFER not in torch.load(out / "checkpoints" / "best.pt", weights_only=False)["model"]
    assert "logit_adjustment" not in json.loads((out / "summary.json").read_text())


def test_a_share_above_one_is_refused_before_a_run_directory_exists(tmp_path):
    out = tmp_path / "run"
    result = run_cli(["run", "ct-seg", "--out", str(out), *TINY, "--set", "logit_adjustment=1.5"])
    assert result.exit_code == 2, result.output
    assert "logit_adjustment=1.5" in result.output and "from 0" in result.output
    assert not out.exists()
