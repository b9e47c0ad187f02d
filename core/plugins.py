"""Discovering, checking and registering plugins, one at a time, so that a broken one never stops the rest.

Environment switches:
- ``MEDKIT_STRICT_PLUGINS=1``: a plugin that fails to load is an error (for plugin authors and CI).
- ``MEDKIT_PLUGINS=a,b``: load only these plugins (allow list); the others are reported as ``blocked``.
- ``MEDKIT_DISABLE_PLUGINS=c``: never load these (deny list), also reported as ``blocked``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Literal

import pluggy

from . import hookspecs
from .entries import Entry, Recipe, describe_exception, stops_the_program
from .errors import PluginError, UsageError
from .suggest import did_you_mean
from .version import API_VERSION

ENTRY_POINT_GROUP = "medkit.plugins"
ENV_STRICT = "MEDKIT_STRICT_PLUGINS"
ENV_ALLOW = "MEDKIT_PLUGINS"
ENV_DENY = "MEDKIT_DISABLE_PLUGINS"

Status = Literal["ok", "failed", "blocked"]


@dataclass
class PluginRecord:
    """One plugin as medkit sees it: where it came from, whether it loaded, and what it registered."""

    name: str
    distribution: str | None = None
    version: str | None = None
    status: Status = "ok"
    error: str | None = None
    api: str | None = None
    entries: dict[str, dict[str, Entry]] = field(default_factory=dict)

    def of_kind(self, kind: str) -> dict[str, Entry]:
        return self.entries.get(kind, {})

    @property
    def recipes(self) -> dict[str, Recipe]:
        return self.of_kind("recipe")  # type: ignore[return-value]

    def default_recipe(self) -> Recipe:
        recipes = list(self.recipes.values())
        if not recipes:
            raise UsageError(f"plugin {self.name!r} registers no recipe, so there is nothing to run")
        return next((r for r in recipes if r.default), recipes[0])

    def entry(self, kind: str, name: str, option: str | None = None) -> Entry:
        """The entry ``name`` of ``kind``, or a UsageError naming the closest known names."""
        table = self.of_kind(kind)
        if name not in table:
            where = f"{option} {name!r}" if option else f"{kind} {name!r}"
            known = ", ".join(sorted(table)) or "none"
            raise UsageError(
                f"plugin {self.name!r} has no {kind} named {name!r} ({where}).{did_you_mean(name, table)}"
                f" Known {kind}s: {known}."
            )
        return table[name]

    def provides(self) -> dict[str, list[str]]:
        return {kind: sorted(table) for kind, table in self.entries.items() if table}

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "distribution": self.distribution,
            "version": self.version,
            "status": self.status,
            "error": self.error,
            "api": self.api,
            "recipes": sorted(self.recipes),
            "provides": self.provides(),
        }


class PluginSet:
    """Every plugin that was found, in discovery order, with lookups that fail with helpful messages."""

    def __init__(self, records: Iterable[PluginRecord]) -> None:
        self.all = list(records)
        self.records: dict[str, PluginRecord] = {}
        for record in self.all:
            self.records.setdefault(record.name, record)  # of two plugins with one name, the first wins

    def __iter__(self) -> Iterator[PluginRecord]:
        return iter(self.all)

    def names(self, status: Status | None = "ok") -> list[str]:
        return [r.name for r in self if status is None or r.status == status]

    def failures(self) -> list[PluginRecord]:
        return [r for r in self if r.status == "failed"]

    def get(self, name: str) -> PluginRecord:
        """The loaded plugin ``name``; a UsageError (exit 2) if it is unknown, failed or blocked."""
        record = self.records.get(name)
        if record is None:
            known = ", ".join(self.names()) or "none installed"
            raise UsageError(
                f"unknown plugin {name!r}.{did_you_mean(name, self.records)} Installed plugins: {known}. "
                "`medkit list-plugins --all` shows the catalogue and how to install more."
            )
        if record.status == "failed":
            raise PluginError(f"plugin {name!r} is installed but failed to load: {record.error}")
        if record.status == "blocked":
            raise UsageError(f"plugin {name!r} is blocked: {record.error}")
        return record


def _env_list(variable: str) -> set[str] | None:
    raw = os.environ.get(variable)
    if raw is None or not raw.strip():
        return None
    return {item.strip() for item in raw.split(",") if item.strip()}


def strict_mode() -> bool:
    return os.environ.get(ENV_STRICT, "").strip().lower() in {"1", "true", "yes", "on"}


def blocked_reason(name: str) -> str | None:
    allow, deny = _env_list(ENV_ALLOW), _env_list(ENV_DENY)
    if deny is not None and name in deny:
        return f"disabled by {ENV_DENY}"
    if allow is not None and name not in allow:
        return f"not in {ENV_ALLOW}={os.environ[ENV_ALLOW]}"
    return None


def check_api(declared: Any) -> str | None:
    """None if ``declared`` (a version specifier) admits this core's API_VERSION, else the reason it does not."""
    from packaging.specifiers import InvalidSpecifier, SpecifierSet

    if declared is None:
        return (
            'declares no MEDKIT_API; add e.g. MEDKIT_API = ">=1.0,<2" to the plugin module '
            f"(this medkit provides API {API_VERSION})"
        )
    try:
        spec = SpecifierSet(str(declared))
    except InvalidSpecifier:
        return f'MEDKIT_API = {declared!r} is not a version specifier such as ">=1.0,<2"'
    if API_VERSION in spec:
        return None
    return (
        f"needs medkit API {declared} but this medkit {_core_version()} provides API {API_VERSION}; "
        f"install a version of the plugin that supports API {API_VERSION.split('.')[0]}.x, "
        f"or a medkit whose API matches {declared}"
    )


def _core_version() -> str:
    from .version import __version__

    return __version__


class _Loader:
    """Registers plugins into one pluggy manager, recording each outcome instead of raising."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.records: list[PluginRecord] = []

    def add(self, record: PluginRecord, load: Callable[[], Any]) -> None:
        """Load ``load()`` as plugin ``record.name`` and collect its entries; a failure marks only this record."""
        self.records.append(record)
        if any(r.name == record.name and r is not record for r in self.records):
            first = next(r for r in self.records if r.name == record.name)
            return self._fail(record, f"the name {record.name!r} is already used by {first.distribution}")
        reason = blocked_reason(record.name)
        if reason:
            record.status, record.error = "blocked", reason
            return None
        try:
            problem = self._register(record, load)
        except BaseException as err:  # a hook may raise anything, even SystemExit; only Ctrl-C stops the rest
            if stops_the_program(err):
                raise
            problem = f"registration failed: {describe_exception(err)}"
        if problem:
            self._forget(record.name)
            self._fail(record, problem)
        return None

    def _register(self, record: PluginRecord, load: Callable[[], Any]) -> str | None:
        """Import, check and register one plugin; the reason it cannot be used, or None."""
        try:
            plugin = load()
        except BaseException as err:  # a plugin may raise anything at import, even SystemExit
            if stops_the_program(err):
                raise
            return f"import failed: {describe_exception(err)}"
        record.api = getattr(plugin, "MEDKIT_API", None)
        api_problem = check_api(record.api)
        if api_problem:
            return api_problem
        try:
            self.pm.register(plugin, name=record.name)
        except Exception as err:
            return f"invalid hook implementation: {err}"
        unknown = self._unknown_hooks(plugin)
        if unknown:
            known = ", ".join(hookspecs.HOOK_KINDS)
            return f"implements unknown hook(s) {', '.join(unknown)}; known hooks: {known}"
        record.entries = self._collect(plugin, record.name)
        return None

    def _forget(self, name: str) -> None:
        """Unregister a plugin that failed half way, so its hooks never run again."""
        if self.pm.get_plugin(name) is not None:
            self.pm.unregister(name=name)

    def _fail(self, record: PluginRecord, message: str) -> None:
        record.status, record.error = "failed", message

    def _unknown_hooks(self, plugin: Any) -> list[str]:
        return [
            name
            for name in dir(plugin)
            if self.pm.parse_hookimpl_opts(plugin, name) is not None and name not in hookspecs.HOOK_KINDS
        ]

    def _collect(self, plugin: Any, plugin_name: str) -> dict[str, dict[str, Entry]]:
        entries: dict[str, dict[str, Entry]] = {}
        for hook_name, entry_type in hookspecs.HOOK_KINDS.items():
            impls = [i for i in getattr(self.pm.hook, hook_name).get_hookimpls() if i.plugin is plugin]
            for impl in impls:
                impl.function(register=_Registrar(entries, entry_type, hook_name, plugin_name))
        return entries


class _Registrar:
    """The ``register`` callback handed to one hook: checks the entry type and refuses duplicate names."""

    def __init__(
        self, entries: dict[str, dict[str, Entry]], entry_type: type, hook_name: str, plugin_name: str
    ) -> None:
        self.entries, self.entry_type, self.hook_name = entries, entry_type, hook_name
        self.plugin_name = plugin_name

    def __call__(self, entry: Entry) -> None:
        if not isinstance(entry, self.entry_type):
            raise TypeError(
                f"{self.hook_name} registers {self.entry_type.__name__} objects, got {type(entry).__name__}"
            )
        table = self.entries.setdefault(entry.kind, {})
        if entry.name in table:
            raise ValueError(f"{entry.kind} {entry.name!r} is registered twice")
        # a copy that knows its plugin, so that an error while loading it later names the plugin
        table[entry.name] = dataclasses.replace(entry, plugin=self.plugin_name)


_direct_plugins: list[tuple[str, Any]] = []
_cached: PluginSet | None = None


def add_direct_plugin(name: str, plugin: Any) -> None:
    """Register a plugin object without an entry point (tests, notebooks); clears the cache.

    It replaces an installed plugin of the same name for as long as it stays registered.
    """
    _direct_plugins.append((name, plugin))
    reset_plugins()


def remove_direct_plugin(name: str) -> None:
    _direct_plugins[:] = [(n, p) for n, p in _direct_plugins if n != name]
    reset_plugins()


def reset_plugins() -> None:
    """Forget the loaded plugins, so the next :func:`get_plugins` discovers them again."""
    global _cached
    _cached = None


def discover() -> PluginSet:
    """Load every entry point of ``medkit.plugins`` and every direct plugin, each on its own."""
    loader = _Loader()
    for name, plugin in _direct_plugins:
        record = PluginRecord(name=name, version=getattr(plugin, "__version__", None))
        loader.add(record, lambda plugin=plugin: plugin)
    shadowed = {name for name, _ in _direct_plugins}  # a direct plugin replaces an installed one of its name
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in shadowed:
            continue
        dist = getattr(ep, "dist", None)
        record = PluginRecord(
            name=ep.name,
            distribution=dist.name if dist else None,
            version=dist.version if dist else None,
        )
        loader.add(record, ep.load)
    return PluginSet(loader.records)


def get_plugins() -> PluginSet:
    """The plugins of this process (discovered once). In strict mode a failed plugin raises PluginError."""
    global _cached
    if _cached is None:
        _cached = discover()
    failures = _cached.failures()
    if failures and strict_mode():
        lines = "; ".join(f"{r.name} ({r.distribution} {r.version}): {r.error}" for r in failures)
        raise PluginError(f"{ENV_STRICT} is set and {len(failures)} plugin(s) failed: {lines}")
    return _cached
