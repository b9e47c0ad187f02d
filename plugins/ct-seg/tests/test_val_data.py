"""The authors' split (a validation set given as ``val_data``) and their validation sampling (K=3, M=10, 384)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
from test_train_recipe import TINY

from medkit.testing import run_cli
from medkit_ct_seg.phantoms import phantom


def phantom_folder(folder: Path, names: list[str], first_seed: int) -> int:
    """NIfTI phantoms with ``*_seg`` masks in ``folder`` (the layout --data reads); returns their labelled slices."""
    folder.mkdir(parents=True)
    labelled = 0
    affine = np.diag([0.7, 0.7, 2.5, 1.0])
    for seed, name in enumerate(names, start=first_seed):
        image, mask = phantom(8, 32, seed=seed)
        nib.save(nib.Nifti1Image(image.transpose(2, 1, 0), affine), folder / f"{name}.nii.gz")
        nib.save(nib.Nifti1Image(mask.transpose(2, 1, 0), affine), folder / f"{name}_seg.nii.gz")
        labelled += int((mask.reshape(len(mask), -1) > 0).any(axis=1).sum())
    return labelled


def first_record(out: Path) -> dict:
    return json.loads((out / "metrics.jsonl").read_text().splitlines()[0])


def test_with_val_data_every_data_volume_trains_and_val_datas_volumes_are_scored(tmp_path):
    labelled = phantom_folder(tmp_path / "subset1", ["val0", "val1"], first_seed=500)
    out = tmp_path / "run"
    result = run_cli(
        [
            "run",
            "ct-seg",
            "--arch",
            "mini_unet",
            "--out",
            str(out),
            *TINY,
            "--set",
            f"val_data={tmp_path / 'subset1'}",
        ]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["train_volumes"], summary["val_volumes"]) == (4, 2)  # all 4 phantoms train
    assert first_record(out)["val/samples"] == summary["val_slices"] == labelled  # val_data's labelled slices


def test_a_volume_in_both_data_and_val_data_is_refused(tmp_path):
    phantom_folder(tmp_path / "scans", ["case0", "case1"], first_seed=0)
    out = tmp_path / "run"
    scans = str(tmp_path / "scans")
    result = run_cli(
        ["run", "ct-seg", "--out", str(out), *TINY, "--data", scans, "--set", f"val_data={scans}"]
    )
    assert result.exit_code == 2, result.output
    assert "share 2 volume(s)" in result.output


def test_the_papers_validation_sampling_scores_384_slices_per_evaluation(tmp_path):
    out = tmp_path / "run"
    options = [*TINY, "--epochs", "2", "--set", "val_sampler.method=resident"]
    result = run_cli(["run", "ct-seg", "--arch", "mini_unet", "--out", str(out), *options])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["val/samples"] for r in records] == [384, 384]


def test_the_papers_validation_sampler_scores_the_same_slices_every_epoch():
    from medkit.cache.store import SliceCache
    from medkit.config import resolve_config
    from medkit_ct_seg.config import TrainSegConfig
    from medkit_ct_seg.data import phantom_cache
    from medkit_ct_seg.validation import Validation, validation_set

    cache = SliceCache(phantom_cache(4, 8, 32))
    settings = {
        "image_size": 32,
        "val_sampler": {"method": "resident", "samples": 40, "resident": 3, "uses": 10},
    }
    config, _ = resolve_config(TrainSegConfig, [("test", settings)])
    val_set = validation_set(Validation(cache, [1, 3], {}), config)
    draws = [[(s["volume"], s["slice"]) for s in val_set] for _ in range(2)]
    assert len(draws[0]) == 40 and draws[0] == draws[1]
    assert {v for v, _ in draws[0]} == {1, 3}  # only the validation volumes
