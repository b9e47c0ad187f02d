"""The recipe's options and the trainer's agree, and the paper's configuration file resolves."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import yaml

from medkit.testing import run_cli
from medkit_gan.config import GanTrainingConfig
from medkit_gan.gan_options import GanTrainingOptions

PAPER = Path(__file__).parents[1] / "configs" / "paper.yaml"


def test_every_option_of_the_trainer_can_be_set_from_the_command_line():
    recipe = {f.name for f in fields(GanTrainingConfig)}
    trainer = {f.name for f in fields(GanTrainingOptions)}
    assert trainer - recipe == {"seed"}  # --seed sets it
    assert recipe <= trainer


def test_the_papers_configuration_resolves_to_stylegan2_at_256_px():
    result = run_cli(["run", "gan-aug", "--config", str(PAPER), "--print-config"])
    assert result.exit_code == 0, result.output
    resolved = yaml.safe_load(result.output)
    network = resolved["network"]
    assert (network["resolution"], network["z_dim"], network["w_dim"], network["mapping_layers"]) == (
        256,
        512,
        512,
        8,
    )
    assert resolved["training"]["lr_g"] == 0.0025 and resolved["training"]["betas"] == [0.0, 0.99]
    assert resolved["training"]["r1_interval"] == 16 and resolved["training"]["pl_interval"] == 4
    assert resolved["training"]["mixing_prob"] == 0.9 and resolved["training"]["cond_loss"] == "d2d_ce"
    assert resolved["classify"]["archs"] == ["resnet34", "densenet169", "efficientnet_b2"]
    assert resolved["classify"]["runs"] == 3
