"""`predict` scores a plain folder of new images without ground truth: a float32 map per image equal to the model's
own, a PNG overlay, and a table whose decision is score > threshold; `test --set maps=true` exports the same
files for a test set. Bad input stops with exit 2 and a message, leaving no run directory."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medkit.testing import run_cli
from medkit_anomaly.image_folder import output_names

SIDE = 64
TINY_FIT = [
    "--device",
    "cpu",
    "--arch",
    "padim",
    *("--set", "weights=random"),
    *("--set", f"textures.size={SIDE}"),
    *("--set", "textures.train=12"),  # 10 or more: one image is held out and sets the thresholds
    *("--set", "textures.test_good=2"),
    *("--set", "textures.test_defect=2"),
    *("--set", f"resize={SIDE}"),
    *("--set", f"crop={SIDE}"),
    *("--set", "categories=[brick]"),
]


@pytest.fixture(scope="module")
def fitted(tmp_path_factory, one_thread) -> Path:
    out = tmp_path_factory.mktemp("fit") / "run"
    result = run_cli(["run", "anomaly-backbones", "--out", str(out), *TINY_FIT])
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture
def new_images(tmp_path) -> Path:
    """New images of several formats, sizes and modes in a folder tree, beside files that are not images."""
    folder = tmp_path / "new"
    (folder / "line2").mkdir(parents=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (72, 96, 3), dtype=np.uint8)).save(folder / "a.png")
    Image.fromarray(rng.integers(0, 255, (SIDE, SIDE, 3), dtype=np.uint8)).save(folder / "b.jpg")
    Image.fromarray(rng.integers(0, 255, (48, 48), dtype=np.uint8)).save(folder / "line2" / "c.tiff")
    (folder / "notes.txt").write_text("not an image")
    (folder / "._a.png").write_bytes(b"\x00\x05\x16\x07 macOS AppleDouble, not a PNG")  # hidden: skipped
    return folder


def predict(out: Path, *options: str) -> object:
    return run_cli(["run", "anomaly-backbones", "predict", "--device", "cpu", "--out", str(out), *options])


def table(run: Path) -> list[dict[str, str]]:
    return list(csv.DictReader((run / "predictions.csv").open()))


def scored_directly(fitted: Path, files: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    """Scores and maps of ``files`` through the saved model, without the recipe."""
    import torch

    from medkit.runs import stored_config
    from medkit_anomaly.data import Preprocess, read_rgb
    from medkit_anomaly.recipes.common import load_fitted

    config = stored_config(fitted)
    model, _ = load_fitted(fitted / "models" / "brick.pt", config, "cpu")
    preprocess = Preprocess(resize=config["resize"], crop=config["crop"])
    scores, maps = model.predict(torch.stack([preprocess.image(read_rgb(f)) for f in files]))
    return scores.numpy(), maps.numpy()


def test_predict_writes_each_images_map_as_the_model_scores_it_and_decides_against_the_fits_threshold(
    fitted, new_images, tmp_path
):
    out = tmp_path / "predict"
    result = predict(out, "--set", f"models={fitted}", "--data", str(new_images))
    assert result.exit_code == 0, result.output
    rows = table(out)
    # the folder is searched recursively; the hidden ._a.png and notes.txt are skipped
    assert [r["name"] for r in rows] == ["a.png", "b.jpg", "line2/c.tiff"]
    scores, maps = scored_directly(fitted, [Path(r["image"]) for r in rows])
    fit_summary = json.loads((fitted / "summary.json").read_text())
    threshold = fit_summary["categories"]["brick"]["thresholds"]["image"]
    for row, score, expected in zip(rows, scores, maps, strict=True):
        anomaly_map = np.load(out / row["map"])
        assert anomaly_map.dtype == np.float32 and anomaly_map.shape == (SIDE, SIDE)  # the model's resolution
        np.testing.assert_allclose(anomaly_map, expected, rtol=1e-5, atol=1e-6)
        assert float(row["score"]) == pytest.approx(float(score), rel=1e-5)
        assert float(row["threshold"]) == threshold
        assert row["anomalous"] == str(float(row["score"]) > threshold)
        with Image.open(out / row["overlay"]) as picture:
            assert picture.size == (2 * SIDE, SIDE)  # the image beside it under its heat map
    assert rows[2]["map"] == "maps/line2/c.npy"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["image_threshold"] == threshold and summary["map_size"] == [SIDE, SIDE]
    assert summary["threshold_source"] == "fit: the 0.99 quantile of 1 held-out normal images' scores"


def test_a_given_threshold_and_a_model_file_decide_score_above_threshold_without_overlays(
    fitted, new_images, tmp_path
):
    scores, _ = scored_directly(fitted, [new_images / "a.png", new_images / "b.jpg"])
    between = float(np.mean(scores))  # one image above, one below
    out = tmp_path / "predict"
    model = fitted / "models" / "brick.pt"
    options = ["--set", f"models={model}", "--set", f"threshold={between}", "--set", "overlays=false"]
    result = predict(out, *options, "--data", str(new_images))
    assert result.exit_code == 0, result.output
    rows = table(out)
    decisions = [r["anomalous"] == "True" for r in rows]
    assert decisions == [float(r["score"]) > between for r in rows] and any(decisions) and not all(decisions)
    assert all(r["overlay"] == "" for r in rows) and not list(out.glob("maps/**/*.png"))
    assert json.loads((out / "summary.json").read_text())["threshold_source"] == "--set threshold"


def test_test_exports_every_test_images_map_as_predict_scores_it(fitted, tmp_path):
    tested = tmp_path / "test"
    result = run_cli(
        [
            "run",
            "anomaly-backbones",
            "test",
            "--out",
            str(tested),
            "--set",
            f"models={fitted}",
            "--set",
            "maps=true",
        ]
    )
    assert result.exit_code == 0, result.output
    predicted = tmp_path / "predict"
    assert predict(predicted, "--set", f"models={fitted}").exit_code == 0  # the fitted category's test images
    by_image = {r["image"]: r for r in table(predicted)}
    rows = table(tested)
    assert len(rows) == len(by_image) == 4 and {r["defect"] for r in rows} >= {"good"}
    for row in rows:
        other = by_image[str(Path(row["image"]).resolve())]
        assert row["map"] == f"maps/brick/{other['map'].removeprefix('maps/')}"
        np.testing.assert_allclose(np.load(tested / row["map"]), np.load(predicted / other["map"]), rtol=1e-5)
        assert row["anomalous"] == str(float(row["score"]) > float(row["threshold"]))
        assert (tested / row["overlay"]).is_file()


def test_test_writes_no_maps_unless_asked(fitted, tmp_path):
    out = tmp_path / "test"
    result = run_cli(["run", "anomaly-backbones", "test", "--out", str(out), "--set", f"models={fitted}"])
    assert result.exit_code == 0, result.output
    assert not (out / "maps").exists() and not (out / "predictions.csv").exists()


def test_bad_input_stops_with_exit_2_a_message_and_no_run_directory(fitted, tmp_path):
    empty, texts, broken, not_a_run = (tmp_path / n for n in ("empty", "texts", "broken", "not_a_run"))
    for folder in (empty, texts, broken, not_a_run):
        folder.mkdir()
    (texts / "readme.txt").write_text("no images here")
    Image.new("RGB", (SIDE, SIDE)).save(broken / "fine.png")
    (broken / "torn.png").write_bytes(b"\x89PNG\r\n\x1a\n and then nothing")
    other_run = tmp_path / "other_run"
    assert predict(other_run, "--set", f"models={fitted}", "--data", str(broken / "fine.png")).exit_code == 0
    models = f"models={fitted}"
    cases = [
        (["--set", models, "--data", str(empty)], "it is empty"),
        (["--set", models, "--data", str(texts)], "holds no images"),
        (
            ["--set", models, "--data", str(broken)],
            "1 of 2 image file(s) cannot be read: " + str(broken / "torn.png"),
        ),
        (["--set", models, "--data", str(tmp_path / "missing")], "does not exist"),
        (
            ["--set", models, "--data", str(empty), "--set", f"images=[{broken / 'fine.png'}]"],
            "give one of them",
        ),
        (["--set", f"models={not_a_run}"], "is not a medkit run"),
        (["--set", f"models={other_run}"], "is a run of anomaly-backbones predict, not a fit run"),
        (["--set", f"models={broken / 'fine.png'}"], "not a fit run's model"),
        (["--set", f"models={tmp_path / 'nowhere'}"], "does not exist"),
    ]
    for options, message in cases:
        out = tmp_path / "run"
        result = predict(out, *options)
        assert result.exit_code == 2, (options, result.output)
        assert message in " ".join(result.output.split()), (options, result.output)
        assert not out.exists(), options


def test_output_names_are_paths_below_the_folder_and_unique_when_only_the_suffix_differs(tmp_path):
    files = [tmp_path / "a.png", tmp_path / "a.jpg", tmp_path / "line2" / "b.tif"]
    assert output_names(files, tmp_path.resolve()) == ["a_png", "a_jpg", "line2/b"]
