"""Typed recipe configuration: the schema, the layers that set it, and validation with messages for people.

A recipe's options are a dataclass deriving from :class:`RecipeConfig`; nested dataclasses make sections
(``optim.lr``). Values arrive in layers - recipe defaults < config files < ``--set key.path=value`` < explicit
flags - and every key and type is checked against the schema before any work starts. Errors name the key, the
layer it came from, what was expected, and the valid keys nearby.
"""

from __future__ import annotations

import dataclasses
import re
import types
from collections.abc import Iterator
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import yaml

from .errors import UsageError
from .suggest import close_matches, did_you_mean


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader plus YAML 1.2 exponent floats: ``1e-3`` reads as 0.001, not the string '1e-3'."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def option(
    default: Any = MISSING,
    *,
    help: str,
    default_factory: Any = MISSING,
    minimum: float | None = None,
) -> Any:
    """A config field with a help text (shown by ``medkit run PLUGIN --help``) and an optional lower bound
    for a number (null stays allowed where the type allows it)."""
    metadata: dict[str, Any] = {"help": help}
    if minimum is not None:
        metadata["minimum"] = minimum
    return field(default=default, default_factory=default_factory, metadata=metadata)


@dataclass(kw_only=True)
class RecipeConfig:
    """Options every recipe has; the CLI flags ``--data --out --seed --device`` set these keys."""

    data: Path | None = option(None, help="input data (a file or folder); none: the embedded default data")
    out: Path | None = option(None, help="run directory; default runs/<plugin>/<time>-<arch or recipe>")
    seed: int = option(0, help="seed of every random generator; the same seed gives the same run")
    device: Literal["auto", "cpu", "cuda"] = option("auto", help="auto picks cuda when a GPU is present")

    def validate(self) -> None:
        """Checks across options, run once every key and type is valid (before any run directory exists);
        raise a UsageError that names the option. A recipe's config overrides it when it needs any."""


@dataclass(kw_only=True)
class OptimizerConfig:
    """The optimiser and learning-rate schedule of a gradient recipe."""

    name: Literal["adam", "adamw", "sgd", "lion"] = option(
        "adam", help="optimiser; lion needs `pip install lion-pytorch` and usually a 3-10x smaller lr"
    )
    lr: float = option(1e-3, help="learning rate", minimum=0.0)
    weight_decay: float = option(0.0, help="weight decay (decoupled for adamw and lion)", minimum=0.0)
    momentum: float = option(0.9, help="momentum (sgd only)")
    scheduler: Literal["none", "cosine", "step"] = option("none", help="learning-rate schedule over epochs")
    step_size: int = option(5, help="step: epochs between decays", minimum=1)
    gamma: float = option(0.9, help="step: decay factor")


@dataclass(kw_only=True)
class TrainingConfig(RecipeConfig):
    """Options of a gradient-training recipe; the flags --arch and --epochs set ``arch`` and ``epochs``."""

    arch: str = option("", help="architecture name (--arch); a recipe sets its default")
    model: dict[str, Any] = option(
        default_factory=dict, help="keyword options of the architecture, e.g. --set model.width=32"
    )
    epochs: int = option(10, help="number of epochs", minimum=1)
    batch_size: int = option(8, help="samples per batch (per process under torchrun)", minimum=1)
    optim: OptimizerConfig = option(default_factory=OptimizerConfig, help="optimiser and schedule")
    patience: int | None = option(
        None, help="stop after this many epochs without improvement; null: never", minimum=1
    )
    monitor: str = option("val/loss", help="figure that picks the best checkpoint and drives early stopping")
    monitor_mode: Literal["min", "max"] = option(
        "min", help="whether the monitored figure should fall or rise"
    )
    num_workers: int = option(0, help="DataLoader worker processes", minimum=0)
    amp: bool = option(True, help="mixed precision on CUDA (ignored on CPU)")
    channels_last: bool = option(
        True, help="channels-last memory format for image batches (convnets train 10-40 % faster on CPU)"
    )

    def figure_names(self) -> list[str] | None:
        """The figures the recipe's scorers compute (``val/`` + each is a valid ``monitor``), checked before a
        run directory exists; None (the default) leaves the check to the trainer, at the start of training."""
        return None


@dataclass(frozen=True)
class FieldInfo:
    path: str
    type: Any
    default: Any
    help: str


def _hints(cls: type) -> dict[str, Any]:
    return get_type_hints(cls)


def _default_of(f: dataclasses.Field) -> Any:
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return MISSING


def iter_fields(cls: type, prefix: str = "", default: Any = MISSING) -> Iterator[FieldInfo]:
    """Every leaf option of the schema, with its dotted path and effective default, in declaration order.

    A section's defaults come from the enclosing default (a recipe may default ``optim`` to
    ``OptimizerConfig(lr=1e-2)``), not from the section class alone.
    """
    hints = _hints(cls)
    for f in fields(cls):
        tp, path = hints[f.name], f"{prefix}{f.name}"
        value = getattr(default, f.name) if default is not MISSING else _default_of(f)
        if is_dataclass(tp):
            yield from iter_fields(tp, f"{path}.", value)
        else:
            yield FieldInfo(path, tp, value, f.metadata.get("help", ""))


def key_paths(cls: type) -> list[str]:
    return [info.path for info in iter_fields(cls)]


def type_name(tp: Any) -> str:
    origin, args = get_origin(tp), get_args(tp)
    if origin is Literal:
        return "|".join(str(a) for a in args)
    if origin in (Union, types.UnionType):
        return " or ".join(type_name(a) for a in args if a is not type(None)) + " or null"
    if origin in (list, tuple):
        return f"list of {type_name(args[0])}" if args else "list"
    if origin is dict:
        return "mapping"
    if tp is Any:
        return "any"
    return getattr(tp, "__name__", str(tp))


def to_plain(value: Any) -> Any:
    """A dataclass instance (or value) as YAML-safe builtins: Paths become strings, tuples lists."""
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, dict):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def defaults(cls: type) -> dict[str, Any]:
    """The recipe defaults as a plain nested dict."""
    try:
        return to_plain(cls())
    except TypeError as err:
        raise TypeError(f"every option of {cls.__name__} needs a default: {err}") from err


def load_yaml_file(path: Path) -> dict[str, Any]:
    """Read a config file; errors name the file (and line) and say what to do."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"config file {path} does not exist (--config)")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise UsageError(f"config file {path}{where}: invalid YAML: {err.problem}") from err
    except (yaml.YAMLError, UnicodeDecodeError, OSError) as err:
        raise UsageError(f"config file {path} cannot be read as YAML: {err}") from err
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UsageError(f"config file {path} must be a mapping of option: value, not {type(data).__name__}")
    return data


def parse_set(expression: str) -> dict[str, Any]:
    """``"optim.lr=1e-3"`` -> ``{"optim": {"lr": 0.001}}``; the value is read as YAML (numbers, lists, null)."""
    key, sep, raw = expression.partition("=")
    key = key.strip()
    if not sep or not key:
        raise UsageError(f"--set {expression!r}: expected key.path=value, e.g. --set epochs=5")
    try:
        value = yaml.load(raw, Loader=_Loader) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    nested: dict[str, Any] = {}
    node = nested
    *parents, leaf = key.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value
    return nested


Layer = tuple[str, dict[str, Any]]


def merge_mappings(base: dict[Any, Any], update: dict[Any, Any]) -> dict[Any, Any]:
    """``update`` over ``base``, key by key at every depth: ``--set base.a.x=1 --set base.a.y=2`` keeps both."""
    merged = dict(base)
    for key, value in update.items():
        old = merged.get(key)
        merged[key] = (
            merge_mappings(old, value) if isinstance(old, dict) and isinstance(value, dict) else value
        )
    return merged


class _Resolver:
    """Merges layers onto the defaults, remembering which layer set each key, then validates types."""

    def __init__(self, schema: type) -> None:
        self.schema = schema
        self.all_keys = key_paths(schema)
        self.origins: dict[str, str] = {}
        self.errors: list[str] = []

    def merge(
        self, target: dict[str, Any], layer: dict[str, Any], cls: type, source: str, prefix: str = ""
    ) -> None:
        hints = _hints(cls)
        for key, value in layer.items():
            path = f"{prefix}{key}"
            if key not in hints:
                self.errors.append(self._unknown(path, source, list(hints), prefix))
                continue
            tp = hints[key]
            if is_dataclass(tp) and isinstance(value, dict):
                if not isinstance(target.get(key), dict):  # an earlier layer set the section to a scalar
                    target[key] = {}
                self.merge(target[key], value, tp, source, f"{path}.")
            elif get_origin(tp) is dict and isinstance(value, dict) and isinstance(target.get(key), dict):
                target[key] = merge_mappings(target[key], value)
                self.origins.update({f"{path}.{k}": source for k in value})
            else:
                target[key] = value
                self.origins[path] = source

    def _unknown(self, path: str, source: str, siblings: list[str], prefix: str) -> str:
        suggestion = did_you_mean(path, self.all_keys) or did_you_mean(path.rsplit(".", 1)[-1], siblings)
        nearby = ", ".join(f"{prefix}{k}" for k in siblings)
        return f"{path} (from {source}): no such option.{suggestion} Valid keys here: {nearby}"

    def build(self, cls: type, data: dict[str, Any], prefix: str = "") -> Any:
        hints, kwargs = _hints(cls), {}
        for f in fields(cls):
            if f.name in data:
                path = f"{prefix}{f.name}"
                kwargs[f.name] = self.convert(data[f.name], hints[f.name], path)
                self.check_bounds(kwargs[f.name], f.metadata, path)
        return cls(**kwargs)

    def check_bounds(self, value: Any, metadata: Any, path: str) -> None:
        if not isinstance(value, int | float) or isinstance(value, bool):
            return
        minimum = metadata.get("minimum")
        if minimum is not None and value < minimum:
            source = self.origins.get(path, "recipe defaults")
            self.errors.append(f"{path} (from {source}): must be at least {minimum:g}, got {value!r}")

    def convert(self, value: Any, tp: Any, path: str) -> Any:
        try:
            return self._convert(value, tp, path)
        except _Mismatch as mismatch:
            source = self.origins.get(path, "recipe defaults")
            self.errors.append(f"{path} (from {source}): expected {mismatch}, got {value!r}")
            return value

    def _convert(self, value: Any, tp: Any, path: str) -> Any:
        origin, args = get_origin(tp), get_args(tp)
        if tp is Any:
            return value
        if is_dataclass(tp):
            if not isinstance(value, dict):
                raise _Mismatch(f"a section of options ({', '.join(f.name for f in fields(tp))})")
            return self.build(tp, value, f"{path}.")
        if origin in (Union, types.UnionType):
            if value is None and type(None) in args:
                return None
            for arg in (a for a in args if a is not type(None)):
                try:
                    return self._convert(value, arg, path)
                except _Mismatch:
                    continue
            raise _Mismatch(type_name(tp))
        if origin is Literal:
            if value in args:
                return value
            raise _Mismatch(f"one of {', '.join(repr(a) for a in args)}")
        if origin in (list, tuple):
            if not isinstance(value, list | tuple):
                raise _Mismatch(type_name(tp))
            items = [self._convert(v, args[0], path) for v in value] if args else list(value)
            return tuple(items) if origin is tuple else items
        if origin is dict:
            if not isinstance(value, dict):
                raise _Mismatch("a mapping")
            return dict(value)
        return _convert_scalar(value, tp)


class _Mismatch(Exception):
    """Internal: a value does not fit a type; the message is the expected type."""


def _convert_scalar(value: Any, tp: Any) -> Any:
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif tp is Path:
        if isinstance(value, str | Path) and str(value):
            return Path(value)
    elif isinstance(tp, type) and isinstance(value, tp):
        return value
    raise _Mismatch(type_name(tp))


def resolve_config(schema: type, layers: list[Layer]) -> tuple[Any, dict[str, str]]:
    """Defaults < each layer in order; returns the validated config and the origin of every set key.

    Raises one UsageError that lists every problem (unknown keys with suggestions, wrong types with the
    layer that set them), so a user fixes a config file in one go; then a RecipeConfig's own
    :meth:`~RecipeConfig.validate` checks across options.
    """
    resolver = _Resolver(schema)
    merged = defaults(schema)
    for source, layer in layers:
        resolver.merge(merged, layer, schema, source)
    config = resolver.build(schema, merged)
    if resolver.errors:
        problems = "\n  ".join(resolver.errors)
        raise UsageError(f"invalid configuration:\n  {problems}")
    if isinstance(config, RecipeConfig):
        config.validate()
    if isinstance(config, TrainingConfig):
        from .monitor import check_monitor

        check_monitor(config.monitor, config.figure_names())
    return config, resolver.origins


def closest_keys(schema: type, key: str) -> list[str]:
    return close_matches(key, key_paths(schema))


def dump_yaml(config: Any) -> str:
    return yaml.safe_dump(to_plain(config), sort_keys=False, default_flow_style=False)
