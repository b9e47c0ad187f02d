"""The thesis' reference backbones, WideResNet-50-2 and ResNet-18, run through every method from a local weights
file, and the study fills the thesis' tables for every backbone whose weights are here, saying why it skipped the
others. The "ImageNet" files hold seeded random weights (nothing is downloaded), under torchvision's names; the
images are 32 px, so WRN-50-2's layer 3 is a 2 x 2 map and PaDiM's 550-channel covariances stay at 8 x 8 positions.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from medkit.testing import run_cli
from medkit_anomaly.backbones import build_network

METHODS = ("spade", "padim", "patchcore", "cflow")
PRESENT = {"resnet18": "resnet18-f37072fd.pth", "wide_resnet50_2": "wide_resnet50_2-95faca4d.pth"}
ABSENT = "mobilenet_v2"  # no file: its trials are skipped
STUDY = {
    "base.textures.size": 32,
    "base.textures.train": 10,
    "base.textures.test_good": 3,
    "base.textures.test_defect": 3,
    "base.resize": 32,
    "base.crop": 32,
    "base.overlays": 0,
    "categories": "[brick]",
    "methods": f"[{','.join(METHODS)}]",
    "backbones": f"[{','.join([*PRESENT, ABSENT])}]",
    "weight_sources": "[imagenet]",
    "method_options.spade.k": 3,
    # the flows only have to run here: two blocks and one epoch over WRN-50-2's 1024-channel fibers
    "method_options.cflow.blocks": 2,
    "method_options.cflow.epochs": 1,
}


@pytest.fixture(scope="module")
def hub_folder(tmp_path_factory):
    """A torch hub folder with random weights saved as ResNet-18's and WRN-50-2's IMAGENET1K_V1 files."""
    folder = tmp_path_factory.mktemp("torch-home") / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    for seed, (backbone, filename) in enumerate(PRESENT.items()):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            torch.save(build_network(backbone).state_dict(), folder / filename)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch.hub, "_hub_dir", str(folder.parent))
        yield folder


@pytest.fixture(scope="module")
def study(tmp_path_factory, hub_folder, one_thread):
    out = tmp_path_factory.mktemp("study") / "run"
    args = ["run", "anomaly-backbones", "study", "--out", str(out)]
    result = run_cli(args + [a for k, v in STUDY.items() for a in ("--set", f"{k}={v}")])
    return out, result


def rows(out: Path) -> dict[str, dict[str, str]]:
    with open(out / "study.csv", newline="") as handle:
        return {row["trial"]: row for row in csv.DictReader(handle)}


def test_every_method_runs_over_wrn50_2_and_resnet18_from_their_local_files(study, hub_folder):
    out, result = study
    assert result.exit_code == 0, result.output
    table = rows(out)
    for backbone, filename in PRESENT.items():
        for method in METHODS:
            row = table[f"{method}-{backbone}-imagenet"]
            assert row["status"] == "finished", row["error"]
            summary = json.loads((out / row["run_dir"] / "summary.json").read_text())
            assert summary["weights"] == f"{hub_folder / filename} (by name)"
            assert summary["weights_variant"] == "IMAGENET1K_V1"
            assert 0 <= float(row["image_auroc"]) <= 1 and 0 <= float(row["pixel_auroc"]) <= 1
    # the spec's dimensions: layers 1-3 of WRN-50-2 give a = 1792, PaDiM keeps d = 550; PatchCore takes 2-3
    wrn = {method: table[f"{method}-wide_resnet50_2-imagenet"] for method in METHODS}
    assert (wrn["padim"]["embedding_dim"], wrn["padim"]["d"]) == ("1792", "550")
    assert wrn["patchcore"]["embedding_dim"] == str(512 + 1024)


def test_the_thesis_table_is_filled_for_the_backbones_with_weights_and_says_why_others_were_skipped(
    study, hub_folder
):
    out, _ = study
    report = (out / "study.md").read_text()
    thesis = report[report.index("### imagenet weights") :]
    assert "| backbone | spade | padim | patchcore | cflow |" in thesis
    for backbone in PRESENT:
        cells = next(line for line in thesis.splitlines() if line.startswith(f"| {backbone} |"))
        assert cells.count(" / ") == len(METHODS) and "skipped" not in cells and "failed" not in cells
    assert f"| {ABSENT} | skipped | skipped | skipped | skipped |" in thesis
    skipped = thesis[thesis.index("### Skipped trials") :]
    for method in METHODS:
        line = next(line for line in skipped.splitlines() if f"`{method}-{ABSENT}-imagenet`" in line)
        assert "no local ImageNet weights for mobilenet_v2 (variant IMAGENET1K_V1" in line
        assert f"put it at {hub_folder / 'mobilenet_v2-b0353104.pth'}" in line
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["finished"], summary["skipped_trials"], summary["failed"]) == (8, 4, 0)
