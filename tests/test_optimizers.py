"""medkit.trainer.make_optimizer_factory: `optim.name` picks the optimiser, with the config's lr and weight
decay; Lion comes from the optional lion-pytorch package and its absence is a message, not a traceback."""

from __future__ import annotations

import sys

import pytest
import torch

from medkit.config import OptimizerConfig, TrainingConfig, resolve_config
from medkit.errors import UsageError
from medkit.trainer import make_optimizer_factory


def parameters() -> list[torch.nn.Parameter]:
    return list(torch.nn.Linear(3, 2).parameters())


@pytest.mark.parametrize(
    ("name", "expected"),
    [("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW), ("sgd", torch.optim.SGD)],
)
def test_each_torch_optimiser_is_built_by_name(name: str, expected: type) -> None:
    optimizer = make_optimizer_factory(OptimizerConfig(name=name, lr=0.01))(parameters())
    assert type(optimizer) is expected and optimizer.defaults["lr"] == 0.01


def test_optim_name_lion_is_a_valid_option_and_builds_lion_with_the_given_lr_and_weight_decay() -> None:
    from lion_pytorch import Lion

    config, _ = resolve_config(
        TrainingConfig, [("--set", {"optim": {"name": "lion", "lr": 1e-4, "weight_decay": 1e-2}})]
    )
    optimizer = make_optimizer_factory(config.optim)(parameters())
    assert isinstance(optimizer, Lion)
    assert (optimizer.defaults["lr"], optimizer.defaults["weight_decay"]) == (1e-4, 1e-2)


def test_lion_takes_a_step_that_keeps_only_momentum() -> None:
    model = torch.nn.Linear(3, 2)
    optimizer = make_optimizer_factory(OptimizerConfig(name="lion", lr=1e-4))(model.parameters())
    before = model.weight.detach().clone()
    model(torch.ones(4, 3)).sum().backward()
    optimizer.step()
    # Lion moves every weight by exactly lr (the sign of its update), and keeps no second moment
    torch.testing.assert_close((model.weight - before).abs(), torch.full_like(before, 1e-4))
    assert set(optimizer.state[model.weight]) == {"exp_avg"}


def test_lion_without_lion_pytorch_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "lion_pytorch", None)  # makes `import lion_pytorch` fail
    build = make_optimizer_factory(OptimizerConfig(name="lion"))
    with pytest.raises(UsageError, match=r"optim.name=lion needs .*pip install lion-pytorch"):
        build(parameters())
