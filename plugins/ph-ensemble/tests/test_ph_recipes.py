"""`medkit run ph-ensemble ...` end to end on tiny embedded data: the ensemble reports faithful and nested side
by side; the baselines train; bad input exits with code 2 and a message."""

import json

from medkit.testing import run_cli

TINY = ["--set", "phantoms.count=36", "--set", "phantoms.size=64"]
TINY_ENSEMBLE = [
    *TINY,
    "--set",
    "folds=3",
    "--set",
    "inner_folds=2",
    "--set",
    "features=[lite0_b4,lite0_b5]",
    "--set",
    "reductions=[relieff,chi2]",
    "--set",
    "n_features=12",
    "--set",
    "n_top=8",
    "--set",
    "jobs=1",
]
FINETUNE = [
    "run",
    "ph-ensemble",
    "finetune_effnet_b0",
    *TINY,
    "--set",
    "image_size=32",
    "--set",
    "stage_epochs=[1,1,1]",
]
FINETUNE += ["--set", "batch_size=16"]


def test_ensemble_reports_faithful_and_nested_side_by_side(tmp_path):
    result = run_cli(["run", "ph-ensemble", *TINY_ENSEMBLE, "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["base_classifiers"] == 3 * 2 * 2
    for mode in ("faithful", "nested"):
        assert 0.0 <= summary[f"{mode}_accuracy"] <= 1.0
        assert len(summary[mode]["folds"]) == 3
        assert sum(map(sum, summary[mode]["confusion"])) == 36  # every image validated once
        assert all(fold["members"] for fold in summary[mode]["folds"])
    assert set(summary["faithful"]["by_pipeline"]) == {"standard", "custom"}
    report = (tmp_path / "run" / "report.md").read_text()
    assert "| faithful (authors' protocol) |" in report and "| nested |" in report
    assert (tmp_path / "run" / "plots" / "confusion.png").is_file()
    assert any(key.startswith("extraction") for key in summary["seconds"])
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 6  # 3 folds x 2 pipelines


def test_random_weights_are_said_in_the_report(tmp_path):
    result = run_cli(
        [
            "run",
            "ph-ensemble",
            *TINY_ENSEMBLE,
            "--set",
            "weights=random",
            "--set",
            "pipelines=[custom]",
            "--set",
            "mode=faithful",
            "--out",
            str(tmp_path / "run"),
        ]
    )
    assert result.exit_code == 0, result.output
    assert "**Random weights**" in (tmp_path / "run" / "report.md").read_text()
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["random_weights"] == [
        "lite0_b4",
        "lite0_b5",
    ]


def test_more_folds_than_members_of_a_class_exits_2_naming_the_class(tmp_path):
    result = run_cli(["run", "ph-ensemble", *TINY, "--set", "folds=10", "--out", str(tmp_path / "run")])
    assert result.exit_code == 2
    assert "needs at least 10 images per class" in result.output
    assert not (tmp_path / "run").exists()


def test_simple_cnn_trains_on_the_embedded_slices(tmp_path):
    result = run_cli(
        [
            "run",
            "ph-ensemble",
            "simple_cnn",
            *TINY,
            "--epochs",
            "1",
            "--set",
            "batch_size=8",
            "--out",
            str(tmp_path / "run"),
        ]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["train_images"] + summary["val_images"] == 36 and summary["val_images"] == 4  # 90:10
    assert "val/accuracy" in summary["final"]


def test_finetune_runs_three_stages_with_random_weights(tmp_path):
    result = run_cli([*FINETUNE, "--set", "weights=random", "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["random_weights"] and len(summary["stages"]) == 3
    assert summary["backbone"] == "efficientnet_b0"
    assert all((tmp_path / "run" / f"stage{i}" / "checkpoints" / "last.pt").is_file() for i in (1, 2, 3))


def test_finetune_on_lite0_runs_three_stages_from_the_packaged_imagenet_weights(tmp_path):
    import torch

    result = run_cli([*FINETUNE, "--set", "backbone=efficientnet_lite0", "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["backbone"] == "efficientnet_lite0" and not summary["random_weights"]
    assert summary["weights"] == "efficientnet-lite0-57934424.pth (by order)" and len(summary["stages"]) == 3
    checkpoint = torch.load(tmp_path / "run" / "stage3" / "checkpoints" / "last.pt", weights_only=True)
    assert checkpoint["arch_options"] == {"backbone": "efficientnet_lite0"}


def test_finetune_without_a_local_imagenet_file_exits_2_naming_it(tmp_path):
    result = run_cli(
        [
            "run",
            "ph-ensemble",
            "finetune_effnet_b0",
            *TINY,
            "--set",
            f"weights_dir={tmp_path}",
            "--out",
            str(tmp_path / "run"),
        ]
    )
    assert result.exit_code == 2
    assert "efficientnet_b0_rwightman" in result.output and str(tmp_path) in result.output


def test_data_whose_names_break_the_public_layout_exits_2_naming_a_file(tmp_path):
    import numpy as np
    from PIL import Image

    data = tmp_path / "slices"
    data.mkdir()
    for name in ("1 (1).png", "2 (1).png", "patient7.png"):
        Image.fromarray(np.zeros((16, 16), np.uint8)).save(data / name)
    result = run_cli(["run", "ph-ensemble", "--data", str(data), "--out", str(tmp_path / "run")])
    assert result.exit_code == 2
    assert "patient7.png" in result.output and "'<c> (<n>).png'" in result.output
