"""medkit.config: layered resolution (defaults < config files < --set < flags), validation against a typed
schema with messages for people, ``--set`` parsing, config files, and the YAML round trip of a config."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest
import yaml

from medkit.config import (
    OptimizerConfig,
    RecipeConfig,
    TrainingConfig,
    closest_keys,
    defaults,
    dump_yaml,
    key_paths,
    load_yaml_file,
    option,
    parse_set,
    resolve_config,
)
from medkit.errors import UsageError


@dataclass(kw_only=True)
class Augment:
    flip: bool = option(True, help="random flips")
    strength: float = option(0.5, help="how strong")
    kind: Literal["light", "heavy"] = option("light", help="preset")


@dataclass(kw_only=True)
class Small(RecipeConfig):
    """A non-training recipe: scalars of every supported type and one nested section."""

    count: int = option(3, help="an int")
    ratio: float = option(0.25, help="a float")
    verbose: bool = option(False, help="a bool")
    mode: Literal["fast", "slow"] = option("fast", help="a choice")
    limit: int | None = option(None, help="an optional int")
    root: Path = field(default_factory=lambda: Path("data"))
    sizes: list[int] = field(default_factory=lambda: [8, 16])
    augment: Augment = field(default_factory=Augment)


@dataclass(kw_only=True)
class Train(TrainingConfig):
    """A training recipe as a plugin writes one: TrainingConfig with an arch default and one extra option."""

    arch: str = option("net", help="architecture")
    samples: int = option(64, help="data set size")


FILE = "config file run.yaml"
SET = "--set epochs=4"
FLAGS = "command-line flags"


def problems(schema: type, layers: list[tuple[str, dict[str, Any]]]) -> str:
    with pytest.raises(UsageError) as info:
        resolve_config(schema, layers)
    assert info.value.exit_code == 2
    return str(info.value)


# --- precedence ---------------------------------------------------------------------------------------


def test_no_layers_gives_the_recipe_defaults_and_no_origins():
    config, origins = resolve_config(Train, [])
    assert config == Train()
    assert config.arch == "net" and config.epochs == 10 and config.optim == OptimizerConfig()
    assert origins == {}


def test_a_config_file_beats_the_defaults():
    config, origins = resolve_config(Train, [(FILE, {"epochs": 3, "seed": 7})])
    assert (config.epochs, config.seed) == (3, 7)
    assert config.batch_size == Train().batch_size  # untouched keys keep their defaults
    assert origins == {"epochs": FILE, "seed": FILE}


def test_a_later_config_file_beats_an_earlier_one():
    config, origins = resolve_config(
        Train, [("config file a.yaml", {"epochs": 3, "seed": 1}), ("config file b.yaml", {"epochs": 6})]
    )
    assert (config.epochs, config.seed) == (6, 1)
    assert origins["epochs"] == "config file b.yaml"
    assert origins["seed"] == "config file a.yaml"


def test_set_beats_config_files():
    config, origins = resolve_config(Train, [(FILE, {"epochs": 3, "seed": 1}), (SET, {"epochs": 4})])
    assert (config.epochs, config.seed) == (4, 1)
    assert origins["epochs"] == SET


def test_flags_beat_set_and_config_files():
    layers = [
        (FILE, {"epochs": 3, "batch_size": 2, "seed": 1}),
        (SET, {"epochs": 4, "batch_size": 5}),
        (FLAGS, {"epochs": 5}),
    ]
    config, origins = resolve_config(Train, layers)
    assert (config.epochs, config.batch_size, config.seed) == (5, 5, 1)
    assert origins == {"epochs": FLAGS, "batch_size": SET, "seed": FILE}


def test_a_bad_value_overridden_by_a_later_layer_is_not_an_error():
    config, _ = resolve_config(Train, [(FILE, {"epochs": "ten"}), (FLAGS, {"epochs": 2})])
    assert config.epochs == 2


# --- nested sections and dict options -------------------------------------------------------------------


def test_a_nested_key_changes_only_that_key_of_its_section():
    config, origins = resolve_config(Train, [(SET, {"optim": {"lr": 0.05}})])
    assert config.optim.lr == 0.05
    assert isinstance(config.optim, OptimizerConfig)
    assert config.optim.name == "adam" and config.optim.momentum == 0.9
    assert origins == {"optim.lr": SET}


def test_nested_keys_from_different_layers_merge_deeply():
    layers = [(FILE, {"optim": {"name": "sgd", "lr": 0.1}}), (SET, {"optim": {"lr": 0.01}})]
    config, origins = resolve_config(Train, layers)
    assert (config.optim.name, config.optim.lr) == ("sgd", 0.01)
    assert origins == {"optim.name": FILE, "optim.lr": SET}


def test_a_section_given_a_scalar_is_a_type_error_naming_the_section():
    message = problems(Train, [(FILE, {"optim": "adam"})])
    assert "optim (from config file run.yaml): expected a section of options" in message
    assert "lr" in message  # the section's keys are listed


def test_a_section_given_a_scalar_then_a_nested_key_takes_the_later_layer():
    # `optim: adam` in a file, then `--set optim.lr=...`: used to crash with a TypeError (a traceback)
    config, origins = resolve_config(Train, [(FILE, {"optim": "adam"}), (SET, {"optim": {"lr": 0.02}})])
    assert config.optim == OptimizerConfig(lr=0.02)
    assert origins["optim.lr"] == SET


def test_nested_sections_of_a_custom_schema():
    config, _ = resolve_config(Small, [(SET, {"augment": {"kind": "heavy", "strength": 1}})])
    assert config.augment == Augment(kind="heavy", strength=1.0, flip=True)


def test_model_options_merge_across_layers_key_by_key():
    layers = [(FILE, {"model": {"width": 8, "depth": 2}}), (SET, {"model": {"width": 16}})]
    config, origins = resolve_config(Train, layers)
    assert config.model == {"width": 16, "depth": 2}
    assert origins["model.width"] == SET and origins["model.depth"] == FILE


def test_nested_mappings_in_an_untyped_option_merge_at_every_depth():
    layers = [
        (FILE, {"model": {"stem": {"width": 8, "depth": 2}}}),
        (SET, {"model": {"stem": {"width": 16}}}),
    ]
    config, _ = resolve_config(Train, layers)
    assert config.model == {"stem": {"width": 16, "depth": 2}}


@dataclass(kw_only=True)
class Range(RecipeConfig):
    low: int = option(0, help="lower end")
    high: int = option(10, help="upper end")

    def validate(self) -> None:
        if self.low > self.high:
            raise UsageError(f"low {self.low} is above high {self.high}")


def test_a_configs_own_check_across_options_runs_once_the_types_are_valid():
    assert resolve_config(Range, [(SET, {"low": 3})])[0].low == 3
    with pytest.raises(UsageError, match="low 12 is above high 10"):
        resolve_config(Range, [(SET, {"low": 12})])
    with pytest.raises(UsageError, match=r"low \(from --set epochs=4\): expected int"):  # types first
        resolve_config(Range, [(SET, {"low": "x"})])


def test_model_options_are_passed_through_untyped():
    config, _ = resolve_config(Train, [(SET, {"model": {"widths": [8, 16], "act": "relu", "p": None}})])
    assert config.model == {"widths": [8, 16], "act": "relu", "p": None}


def test_model_must_be_a_mapping():
    message = problems(Train, [(SET, {"model": 3})])
    assert "model (from --set epochs=4): expected a mapping, got 3" in message


def test_defaults_of_model_are_not_shared_between_configs():
    first, _ = resolve_config(Train, [(SET, {"model": {"width": 4}})])
    second, _ = resolve_config(Train, [])
    assert first.model == {"width": 4}
    assert second.model == {}


# --- type checks ----------------------------------------------------------------------------------------


def test_int_refuses_a_word():
    message = problems(Small, [("--set count=ten", {"count": "ten"})])
    assert "count (from --set count=ten): expected int, got 'ten'" in message


@pytest.mark.parametrize("value", [True, 2.5, "3"])
def test_int_refuses_bools_floats_and_strings(value):
    assert "count (from" in problems(Small, [(SET, {"count": value})])


@pytest.mark.parametrize("value", [1, "yes", "true", None])
def test_bool_accepts_only_true_or_false(value):
    assert "verbose (from --set epochs=4): expected bool" in problems(Small, [(SET, {"verbose": value})])


def test_bool_accepts_true_and_false():
    assert resolve_config(Small, [(SET, {"verbose": True})])[0].verbose is True
    assert resolve_config(Small, [(SET, {"verbose": False})])[0].verbose is False


def test_float_accepts_an_int_and_stores_a_float():
    config, _ = resolve_config(Small, [(SET, {"ratio": 1})])
    assert config.ratio == 1.0 and isinstance(config.ratio, float)


@pytest.mark.parametrize("value", ["half", True, [0.5]])
def test_float_refuses_non_numbers(value):
    assert "ratio (from --set epochs=4): expected float" in problems(Small, [(SET, {"ratio": value})])


def test_literal_accepts_its_choices_and_names_them_otherwise():
    assert resolve_config(Small, [(SET, {"mode": "slow"})])[0].mode == "slow"
    message = problems(Small, [("--set mode=medium", {"mode": "medium"})])
    assert "mode (from --set mode=medium): expected one of 'fast', 'slow', got 'medium'" in message


def test_literal_device_of_every_recipe():
    message = problems(Small, [(FLAGS, {"device": "gpu"})])
    assert "device (from command-line flags): expected one of 'auto', 'cpu', 'cuda', got 'gpu'" in message


def test_optional_accepts_null_and_the_inner_type_only():
    assert resolve_config(Small, [(SET, {"limit": None})])[0].limit is None
    assert resolve_config(Small, [(SET, {"limit": 5})])[0].limit == 5
    message = problems(Small, [(SET, {"limit": "five"})])
    assert "limit (from --set epochs=4): expected int or null, got 'five'" in message


def test_path_options_become_paths():
    config, _ = resolve_config(Small, [(SET, {"root": "some/dir", "data": "/tmp/x"})])
    assert config.root == Path("some/dir") and isinstance(config.root, Path)
    assert config.data == Path("/tmp/x")


@pytest.mark.parametrize("value", [5, "", ["a"]])
def test_path_refuses_non_strings_and_the_empty_string(value):
    assert "root (from --set epochs=4): expected Path" in problems(Small, [(SET, {"root": value})])


def test_lists_check_their_items():
    assert resolve_config(Small, [(SET, {"sizes": [1, 2, 3]})])[0].sizes == [1, 2, 3]
    message = problems(Small, [(SET, {"sizes": [1, "x"]})])
    assert "sizes (from --set epochs=4): expected int, got [1, 'x']" in message
    assert "expected list of int, got 4" in problems(Small, [(SET, {"sizes": 4})])


def test_a_type_error_in_a_section_names_the_dotted_key_and_its_layer():
    message = problems(Train, [("--set optim.lr=fast", {"optim": {"lr": "fast"}})])
    assert "optim.lr (from --set optim.lr=fast): expected float, got 'fast'" in message


# --- unknown keys ---------------------------------------------------------------------------------------


def test_an_unknown_key_suggests_the_closest_and_lists_the_valid_keys():
    message = problems(Train, [("--set epoch=3", {"epoch": 3})])
    assert "epoch (from --set epoch=3): no such option." in message
    assert "Did you mean 'epochs'?" in message
    valid = message.split("Valid keys here:", 1)[1]
    for key in ("epochs", "batch_size", "optim", "samples", "seed"):
        assert key in valid


def test_an_unknown_nested_key_suggests_the_dotted_key_and_lists_its_section():
    message = problems(Train, [("--set optim.lrr=0.1", {"optim": {"lrr": 0.1}})])
    assert "optim.lrr (from --set optim.lrr=0.1): no such option." in message
    assert "'optim.lr'" in message
    valid = message.split("Valid keys here:", 1)[1]
    assert "optim.lr" in valid and "optim.momentum" in valid
    assert "batch_size" not in valid  # only the section's own keys are "nearby"


def test_an_unknown_key_with_nothing_close_still_lists_the_valid_keys():
    message = problems(Small, [(FILE, {"zzzzzz": 1})])
    assert "zzzzzz (from config file run.yaml): no such option." in message
    assert "Did you mean" not in message
    assert "count" in message.split("Valid keys here:", 1)[1]


def test_closest_keys_and_key_paths():
    assert "optim.lr" in key_paths(Train) and "optim" not in key_paths(Train)
    assert "augment.strength" in key_paths(Small)
    assert closest_keys(Train, "optim.lt")[0] == "optim.lr"


# --- several problems at once ---------------------------------------------------------------------------


def test_every_problem_is_reported_in_one_error_each_with_its_layer():
    layers = [
        ("config file bad.yaml", {"epochs": "ten", "batchsize": 4, "optim": {"name": "rmsprop"}}),
        ("--set monitor_mode=up", {"monitor_mode": "up"}),
    ]
    message = problems(Train, layers)
    lines = message.splitlines()
    assert lines[0] == "invalid configuration:"
    assert len(lines) == 5  # the heading and one line per problem
    assert any(line.strip().startswith("epochs (from config file bad.yaml): expected int") for line in lines)
    assert any(
        "batchsize (from config file bad.yaml): no such option. Did you mean 'batch_size'" in ln
        for ln in lines
    )
    assert any(
        "optim.name (from config file bad.yaml): expected one of 'adam', 'adamw', 'sgd'" in ln for ln in lines
    )
    assert any(
        "monitor_mode (from --set monitor_mode=up): expected one of 'min', 'max'" in ln for ln in lines
    )


def test_a_schema_option_without_a_default_is_reported_to_the_plugin_author():
    @dataclass(kw_only=True)
    class NoDefault(RecipeConfig):
        size: int = option(help="no default given")

    with pytest.raises(TypeError, match="every option of NoDefault needs a default"):
        defaults(NoDefault)


# --- parse_set ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("epochs=5", {"epochs": 5}),
        ("optim.lr=0.01", {"optim": {"lr": 0.01}}),
        ("optim.lr=1e-3", {"optim": {"lr": 0.001}}),
        ("optim.lr=2E+2", {"optim": {"lr": 200.0}}),
        ("a.b.c=-3", {"a": {"b": {"c": -3}}}),
        ("sizes=[8, 16]", {"sizes": [8, 16]}),
        ("patience=null", {"patience": None}),
        ("amp=false", {"amp": False}),
        ("monitor=val/mean_dice", {"monitor": "val/mean_dice"}),
        ("model={width: 4}", {"model": {"width": 4}}),
        ("name=a=b", {"name": "a=b"}),
        ("name=", {"name": ""}),
        (" epochs = 5", {"epochs": 5}),
        ("name=[unclosed", {"name": "[unclosed"}),
        ("version='1.10'", {"version": "1.10"}),
    ],
)
def test_parse_set_reads_the_value_as_yaml(expression, expected):
    assert parse_set(expression) == expected


def test_parse_set_types_are_real_numbers():
    assert isinstance(parse_set("x=1e-3")["x"], float)
    assert isinstance(parse_set("x=3")["x"], int)


@pytest.mark.parametrize("expression", ["epochs", "=5", " =5", ""])
def test_parse_set_without_a_key_and_equals_sign_is_a_usage_error(expression):
    with pytest.raises(UsageError, match=r"expected key\.path=value") as info:
        parse_set(expression)
    assert info.value.exit_code == 2
    assert repr(expression) in str(info.value)


def test_parse_set_output_resolves_as_a_layer():
    expressions = ["optim.lr=1e-4", "model.width=32", "patience=null", "epochs=2"]
    config, origins = resolve_config(Train, [(f"--set {e}", parse_set(e)) for e in expressions])
    assert (config.optim.lr, config.model, config.patience, config.epochs) == (1e-4, {"width": 32}, None, 2)
    assert origins["optim.lr"] == "--set optim.lr=1e-4"


# --- config files ---------------------------------------------------------------------------------------


def test_load_yaml_file_reads_a_mapping(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("epochs: 3\noptim:\n  lr: 1e-3\nmodel:\n  width: 8\n", encoding="utf-8")
    assert load_yaml_file(path) == {"epochs": 3, "optim": {"lr": 0.001}, "model": {"width": 8}}


def test_an_empty_config_file_is_an_empty_layer(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing set\n", encoding="utf-8")
    assert load_yaml_file(path) == {}


def test_a_missing_config_file_is_a_usage_error_naming_it(tmp_path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(UsageError) as info:
        load_yaml_file(path)
    assert str(path) in str(info.value) and "does not exist" in str(info.value)


def test_invalid_yaml_names_the_file_and_the_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("epochs: 3\nseed: 1\noptim: [lr, 0.1\nmodel: {}\n", encoding="utf-8")
    with pytest.raises(UsageError) as info:
        load_yaml_file(path)
    message = str(info.value)
    assert str(path) in message and "invalid YAML" in message
    assert "line 4" in message  # the unclosed list on line 3 is found where line 4 starts


def test_invalid_yaml_on_the_first_line_is_line_1(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("epochs: : 3\n", encoding="utf-8")
    with pytest.raises(UsageError, match=r"line 1, column \d+: invalid YAML"):
        load_yaml_file(path)


def test_a_top_level_list_is_refused(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- epochs: 3\n- seed: 1\n", encoding="utf-8")
    with pytest.raises(UsageError) as info:
        load_yaml_file(path)
    message = str(info.value)
    assert str(path) in message and "must be a mapping" in message and "list" in message


def test_a_file_that_is_not_text_is_a_usage_error(tmp_path):
    path = tmp_path / "binary.yaml"
    path.write_bytes(b"\xff\xfe\x00\x81epochs: 3")
    with pytest.raises(UsageError, match="cannot be read as YAML") as info:
        load_yaml_file(path)
    assert str(path) in str(info.value)


# --- the YAML round trip --------------------------------------------------------------------------------


def test_a_dumped_config_loads_back_as_the_same_config(tmp_path):
    layers = [
        (FILE, {"epochs": 3, "data": "some/folder", "optim": {"name": "sgd", "lr": 1e-4}}),
        (SET, {"model": {"width": 12, "blocks": [1, 2]}, "patience": 2, "amp": False, "device": "cpu"}),
    ]
    config, _ = resolve_config(Train, layers)
    path = tmp_path / "config.yaml"
    path.write_text(dump_yaml(config), encoding="utf-8")
    again, origins = resolve_config(Train, [(f"config file {path}", load_yaml_file(path))])
    assert again == config
    assert again.data == Path("some/folder")
    assert origins["epochs"] == f"config file {path}"


def test_dump_yaml_is_plain_yaml_in_schema_order():
    config, _ = resolve_config(Small, [(SET, {"root": "x/y", "limit": 2})])
    text = dump_yaml(config)
    assert "!!" not in text  # no Python tags: any YAML reader can read it
    plain = yaml.safe_load(text)
    assert plain["root"] == "x/y" and plain["limit"] == 2 and plain["augment"]["kind"] == "light"
    assert list(plain) == [
        "data",
        "out",
        "seed",
        "device",
        "count",
        "ratio",
        "verbose",
        "mode",
        "limit",
        "root",
        "sizes",
        "augment",
    ]
    again, _ = resolve_config(Small, [("dump", plain)])
    assert again == config


def test_defaults_are_plain_and_resolve_to_the_defaults():
    plain = defaults(Small)
    assert plain["root"] == "data" and plain["augment"] == {"flip": True, "strength": 0.5, "kind": "light"}
    assert resolve_config(Small, [("defaults", plain)])[0] == Small()
