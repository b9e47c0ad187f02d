"""registry.yaml agrees with the plugins that exist: every plugin folder is catalogued, every released first-party
plugin is installed in the test environment, and what each installed plugin registers is what the catalogue says."""

from __future__ import annotations

from pathlib import Path

import pytest

from medkit.catalogue import load_catalogue
from medkit.plugins import get_plugins

REPO = Path(__file__).resolve().parents[1]
CATALOGUE = load_catalogue(REPO / "registry.yaml")
PLUGIN_FOLDERS = sorted(
    p.parent for p in [*REPO.glob("plugins/*/pyproject.toml"), *REPO.glob("examples/*/pyproject.toml")]
)


def test_the_catalogue_lists_the_five_first_party_plugins():
    first_party = {e.name for e in CATALOGUE if e.first_party}
    assert first_party == {"ct-seg", "ph-ensemble", "ubc", "anomaly-backbones", "gan-aug"}
    assert len({e.name for e in CATALOGUE}) == len(CATALOGUE)


@pytest.mark.parametrize("folder", PLUGIN_FOLDERS, ids=lambda p: p.name)
def test_every_plugin_folder_is_catalogued_as_released(folder):
    entries = [e for e in CATALOGUE if e.path == str(folder.relative_to(REPO))]
    assert len(entries) == 1, f"{folder} has no entry in registry.yaml"
    assert entries[0].released
    assert f'name = "{entries[0].distribution}"' in (folder / "pyproject.toml").read_text()


@pytest.mark.parametrize("entry", CATALOGUE, ids=lambda e: e.name)
def test_each_catalogue_entry_agrees_with_the_installed_plugin(entry):
    if not entry.released:
        assert not (REPO / entry.path).exists(), f"{entry.path} exists: mark {entry.name} released"
        return
    record = get_plugins().get(entry.name)  # released plugins are installed by `make test`
    assert record.distribution == entry.distribution
    assert record.api == entry.api
    for kind, names in entry.provides.items():
        assert sorted(record.of_kind(kind.removesuffix("s"))) == sorted(names), f"{entry.name} {kind}"
