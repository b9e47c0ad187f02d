"""`medkit run` with the installed example plugin: bad input gets one clear message and exit code 2, never a
traceback; --print-config shows the layered config without running; --help shows the plugin's options."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from medkit.plugins import discover
from medkit.testing import run_cli

INSTALLED = ", ".join(discover().names())  # as the messages list them: every plugin that loaded
TINY = ["--set", "samples=16", "--set", "image_size=16", "--epochs", "1", "--device", "cpu"]
"""The smallest real run of the example: a second or two on a CPU."""


def medkit_process(args: list[str], runs_dir: Path, cwd: Path) -> subprocess.CompletedProcess:
    """``python -m medkit ARGS`` in a real process (so a traceback would really reach the user)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDKIT_")}
    env.update({"MEDKIT_RUNS_DIR": str(runs_dir), "COLUMNS": "200"})
    return subprocess.run(
        [sys.executable, "-m", "medkit", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=120,
        check=False,
    )


@pytest.fixture
def runs_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where a default run directory would go; tests check that nothing was written there."""
    folder = tmp_path / "runs"
    monkeypatch.setenv("MEDKIT_RUNS_DIR", str(folder))
    return folder


@pytest.fixture
def medkit(tmp_path: Path, runs_dir: Path) -> Callable[..., subprocess.CompletedProcess]:
    return lambda *args: medkit_process([str(a) for a in args], runs_dir, tmp_path)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real (tiny) run of the example, shared by the tests about existing run directories."""
    root = tmp_path_factory.mktemp("finished")
    out = root / "run"
    result = medkit_process(["run", "example", *TINY, "--out", str(out)], root / "runs", root)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (out / "summary.json").is_file()
    return out


def assert_usage_error(result: subprocess.CompletedProcess, *fragments: str) -> str:
    """Exit code 2, one `error:` message naming every fragment, and no traceback anywhere."""
    text = result.stdout + result.stderr
    assert result.returncode == 2, text
    assert "Traceback" not in text
    assert "error:" in result.stderr or "Error" in result.stderr, text
    for fragment in fragments:
        assert fragment in text, f"{fragment!r} not in:\n{text}"
    return text


# --- bad input: a clear message, exit code 2, never a traceback ------------------------------------------


def test_unknown_plugin_lists_the_installed_ones(medkit):
    text = assert_usage_error(
        medkit("run", "exampel"), "unknown plugin 'exampel'", f"Installed plugins: {INSTALLED}"
    )
    assert "Did you mean 'example'?" in text


def test_unknown_recipe_lists_the_plugins_recipes(medkit):
    assert_usage_error(
        medkit("run", "example", "trian"), "'trian'", "Known recipes: train", "Did you mean 'train'"
    )


def test_unknown_arch_suggests_the_closest_name(medkit):
    assert_usage_error(medkit("run", "example", "--arch", "tiny_cn"), "'tiny_cn'", "Did you mean 'tiny_cnn'?")


def test_missing_config_file_is_named(medkit, tmp_path):
    missing = tmp_path / "nope.yaml"
    assert_usage_error(medkit("run", "example", "--config", missing), str(missing), "does not exist")


def test_unreadable_config_file_is_named(medkit, tmp_path):
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x81\x00 not text")
    assert_usage_error(medkit("run", "example", "--config", binary), str(binary), "cannot be read")


def test_invalid_yaml_names_the_file_and_line(medkit, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: 3\nseed: 1\nsamples: [16\n", encoding="utf-8")
    assert_usage_error(medkit("run", "example", "--config", bad), str(bad), "line 4", "invalid YAML")


def test_a_config_file_holding_a_list_is_refused(medkit, tmp_path):
    listed = tmp_path / "list.yaml"
    listed.write_text("- epochs: 3\n", encoding="utf-8")
    assert_usage_error(medkit("run", "example", "--config", listed), str(listed), "must be a mapping")


def test_set_of_an_unknown_key_suggests_and_lists_valid_keys(medkit):
    text = assert_usage_error(
        medkit("run", "example", "--set", "sample=16"),
        "sample (from --set sample=16): no such option",
        "Did you mean 'samples'",
    )
    assert "image_size" in text.split("Valid keys here:", 1)[1]


def test_set_of_an_unknown_nested_key_lists_its_section(medkit):
    text = assert_usage_error(medkit("run", "example", "--set", "optim.lrr=0.1"), "optim.lrr", "'optim.lr'")
    assert "optim.momentum" in text.split("Valid keys here:", 1)[1]


def test_unknown_key_in_a_config_file_names_the_file(medkit, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("epoch: 3\n", encoding="utf-8")
    assert_usage_error(
        medkit("run", "example", "--config", config),
        f"epoch (from config file {config})",
        "Did you mean 'epochs'",
    )


def test_wrong_value_type_names_key_layer_and_expected_type(medkit):
    assert_usage_error(
        medkit("run", "example", "--set", "epochs=ten"),
        "epochs (from --set epochs=ten): expected int, got 'ten'",
    )


def test_several_problems_are_reported_together(medkit):
    text = assert_usage_error(
        medkit("run", "example", "--set", "epochs=ten", "--set", "optim.name=rmsprop", "--set", "nosuch=1"),
        "epochs (from --set epochs=ten)",
        "optim.name (from --set optim.name=rmsprop)",
        "nosuch (from --set nosuch=1)",
    )
    assert text.count("error:") == 1


def test_wrong_device_flag_lists_the_choices(medkit):
    assert_usage_error(
        medkit("run", "example", "--device", "gpu"), "device (from command-line flags)", "'cpu'", "'gpu'"
    )


def test_non_integer_epochs_flag_is_a_usage_error(medkit):
    assert_usage_error(medkit("run", "example", "--epochs", "ten"), "Invalid value for '--epochs'")


def test_transfer_flags_are_refused_by_a_recipe_without_them(medkit, runs_dir):
    assert_usage_error(
        medkit("run", "example", "--freeze", "d1,g2"),
        "--freeze",
        "recipe example train has no 'freeze' option",
    )
    assert not runs_dir.exists()


def test_set_without_equals_sign_is_a_usage_error(medkit):
    assert_usage_error(medkit("run", "example", "--set", "epochs"), "--set 'epochs'", "key.path=value")


def test_missing_data_path_is_named(medkit, tmp_path, runs_dir):
    missing = tmp_path / "no-such-data"
    assert_usage_error(medkit("run", "example", *TINY, "--data", missing), f"--data {missing} does not exist")
    assert not runs_dir.exists()


def test_unknown_model_option_is_named_and_leaves_no_run_directory(medkit, tmp_path):
    out = tmp_path / "out"
    assert_usage_error(
        medkit("run", "example", *TINY, "--set", "model.nosuch=1", "--out", out),
        "model.nosuch",
        "'tiny_cnn'",
        "width",
    )
    # a typo must not leave a half-made run behind that refuses the corrected command without --resume
    assert not out.exists()


def test_a_misspelt_monitor_is_a_usage_error_naming_the_closest_figure_and_leaves_no_run_directory(
    medkit, tmp_path
):
    out = tmp_path / "out"
    result = medkit("run", "example", *TINY, "--set", "monitor=val/mean_dcie", "--out", out)
    assert_usage_error(result, "monitor='val/mean_dcie'", "Did you mean 'val/mean_dice'", "val/loss")
    assert not out.exists()


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--set", "batch_size=0"], "batch_size (from --set batch_size=0): must be at least 1, got 0"),
        (["--epochs", "0"], "epochs (from command-line flags): must be at least 1, got 0"),
        (["--set", "optim.lr=-0.1"], "optim.lr (from --set optim.lr=-0.1): must be at least 0"),
        (["--set", "num_workers=-1"], "num_workers (from --set num_workers=-1): must be at least 0"),
    ],
)
def test_out_of_range_numbers_are_usage_errors_before_a_run_directory_exists(
    medkit, tmp_path, option, message
):
    out = tmp_path / "out"
    assert_usage_error(medkit("run", "example", *TINY, *option, "--out", out), message)
    assert not out.exists()


def test_out_directory_holding_a_run_is_refused_without_resume(medkit, finished_run):
    summary = (finished_run / "summary.json").read_text(encoding="utf-8")
    assert_usage_error(
        medkit("run", "example", *TINY, "--out", finished_run),
        f"--out {finished_run} already holds a run",
        "--resume",
    )
    assert (finished_run / "summary.json").read_text(encoding="utf-8") == summary  # untouched


def test_out_directory_holding_a_run_is_accepted_with_resume(medkit, finished_run):
    result = medkit("run", "example", *TINY, "--out", finished_run, "--resume", "--print-config")
    assert result.returncode == 0, result.stderr
    printed = yaml.safe_load(result.stdout)
    assert printed["samples"] == 16 and printed["out"] == str(finished_run)


def test_resume_refuses_a_changed_config(medkit, finished_run):
    assert_usage_error(
        medkit("run", "example", "--set", "samples=32", "--out", finished_run, "--resume"),
        "--resume",
        "samples",
    )


def test_out_directory_with_other_files_is_refused(medkit, tmp_path):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "notes.txt").write_text("mine", encoding="utf-8")
    assert_usage_error(medkit("run", "example", *TINY, "--out", out), str(out), "not an empty folder")
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def test_resume_on_a_folder_without_a_run(medkit, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_usage_error(medkit("run", "example", "--resume", "--out", empty), f"{empty} holds no medkit run")
    assert not any(empty.iterdir())


def test_resume_without_out_and_no_earlier_run(medkit, runs_dir):
    assert_usage_error(medkit("run", "example", "--resume"), "no earlier run of example train")


def test_run_without_a_plugin_names_the_installed_ones(medkit):
    assert_usage_error(medkit("run"), "missing PLUGIN", f"installed plugins: {INSTALLED}")


# --- --print-config: the layered config, and no run ----------------------------------------------------


@pytest.fixture
def epochs_3_file(tmp_path: Path) -> Path:
    path = tmp_path / "three.yaml"
    path.write_text("epochs: 3\nbatch_size: 4\noptim:\n  lr: 1e-3\n", encoding="utf-8")
    return path


def print_config(*args: object) -> dict:
    result = run_cli(["run", "example", *map(str, args), "--print-config"])
    assert result.exit_code == 0, result.output
    return yaml.safe_load(result.stdout)


def test_print_config_shows_the_recipe_defaults(runs_dir):
    from medkit.config import defaults
    from medkit_example.config import TrainShapesConfig

    printed = print_config()
    assert printed == {**defaults(TrainShapesConfig), "out": None}
    assert printed["arch"] == "tiny_cnn" and printed["optim"]["scheduler"] == "cosine"
    assert not runs_dir.exists()


def test_print_config_config_file_beats_defaults(epochs_3_file, runs_dir):
    printed = print_config("--config", epochs_3_file)
    assert (printed["epochs"], printed["batch_size"], printed["optim"]["lr"]) == (3, 4, 0.001)
    assert printed["optim"]["name"] == "adam"  # the rest of the section keeps its defaults


def test_print_config_set_beats_the_config_file(epochs_3_file, runs_dir):
    printed = print_config("--config", epochs_3_file, "--set", "epochs=4")
    assert (printed["epochs"], printed["batch_size"]) == (4, 4)


def test_print_config_flags_beat_set_and_config_file(epochs_3_file, runs_dir, tmp_path):
    out = tmp_path / "would-be-run"
    printed = print_config(
        "--config",
        epochs_3_file,
        "--set",
        "epochs=4",
        "--epochs",
        "5",
        "--out",
        out,
        "--set",
        "seed=9",
        "--seed",
        "11",
    )
    assert (printed["epochs"], printed["seed"], printed["batch_size"]) == (5, 11, 4)
    assert printed["out"] == str(out)
    assert not out.exists()  # --print-config runs nothing
    assert not runs_dir.exists()


def test_print_config_output_is_a_config_file_that_reproduces_itself(tmp_path, runs_dir):
    first = run_cli(["run", "example", "--set", "model.width=8", "--set", "optim.name=sgd", "--print-config"])
    assert first.exit_code == 0, first.output
    saved = tmp_path / "saved.yaml"
    saved.write_text(first.stdout, encoding="utf-8")
    again = run_cli(["run", "example", "--config", str(saved), "--print-config"])
    assert again.exit_code == 0, again.output
    assert again.stdout == first.stdout
    assert yaml.safe_load(again.stdout)["model"] == {"width": 8}


def test_print_config_still_validates(runs_dir):
    result = run_cli(["run", "example", "--set", "epochs=ten", "--print-config"])
    assert result.exit_code == 2
    assert "epochs (from --set epochs=ten)" in result.stderr
    assert result.stdout == ""


# --- help ------------------------------------------------------------------------------------------------


def test_run_help_for_a_plugin_shows_its_options_and_recipes(runs_dir):
    result = run_cli(["run", "example", "--help"])
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert "--print-config" in text  # the command's own options
    assert "recipes: train" in text
    assert "tiny_cnn" in text
    for key in ("optim.lr", "optim.name", "samples", "image_size", "epochs", "model"):
        assert key in text, key
    assert "number of epochs" in text  # the options' help texts
    assert not runs_dir.exists()


def test_run_help_for_an_unknown_plugin_is_a_usage_error(runs_dir):
    result = run_cli(["run", "nosuch", "--help"])
    assert result.exit_code == 2
    assert "unknown plugin 'nosuch'" in result.stderr


def test_in_process_errors_go_to_stderr_with_exit_code_2(runs_dir):
    result = run_cli(["run", "example", "--arch", "tiny_cn"])
    assert result.exit_code == 2
    assert "Did you mean 'tiny_cnn'?" in result.stderr
    assert result.stdout == ""


def test_the_finished_run_wrote_its_config_with_the_tiny_settings(finished_run):
    config = yaml.safe_load((finished_run / "config.yaml").read_text(encoding="utf-8"))
    assert (config["samples"], config["image_size"], config["epochs"], config["device"]) == (16, 16, 1, "cpu")
    assert config["out"] is None  # a saved config re-runs into a new folder
    env = json.loads((finished_run / "env.json").read_text(encoding="utf-8"))
    assert (env["plugin"], env["recipe"]) == ("example", "train")
