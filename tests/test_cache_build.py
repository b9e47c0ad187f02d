"""`medkit cache build|info|verify`: atomic and resumable builds, bad inputs named, and integrity checks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import h5py
import nibabel as nib
import numpy as np
import pytest

from medkit.cache.build import build_cache, partial_path
from medkit.cache.pairing import Pair
from medkit.cache.store import SliceCache
from medkit.cache.synthetic import ct_volume
from medkit.testing import run_cli


def write_nifti_pair(folder, name: str, slices: int = 5, size: int = 16, seed: int = 0) -> None:
    image, mask = ct_volume(slices, size, seed=seed)
    affine = np.diag([0.7, 0.7, 2.5, 1.0])
    # nibabel stores (x, y, z); the cache serves (z, y, x)
    nib.save(nib.Nifti1Image(image.transpose(2, 1, 0), affine), folder / f"{name}.nii.gz")
    nib.save(nib.Nifti1Image(mask.transpose(2, 1, 0), affine), folder / f"{name}_seg.nii.gz")


@pytest.fixture
def nifti_folder(tmp_path):
    folder = tmp_path / "volumes"
    folder.mkdir()
    for i in range(4):
        write_nifti_pair(folder, f"case{i}", slices=4 + i, seed=i)
    return folder


def build(folder, out, *extra: str):
    return run_cli(
        ["cache", "build", str(folder), "--out", str(out), "--mask-suffix", "_seg", "--workers", "1", *extra]
    )


def test_build_info_and_verify_a_cache_of_nifti_volumes(nifti_folder, tmp_path):
    out = tmp_path / "cache.h5"
    result = build(nifti_folder, out, "--window=-1000,400")
    assert result.exit_code == 0, result.output
    assert "4 volume(s) converted" in result.output
    info = json.loads(run_cli(["cache", "info", str(out), "--json"]).stdout)
    assert (info["volumes"], info["slices"], info["with_masks"]) == (4, 4 + 5 + 6 + 7, 4)
    present = set().union(*(np.unique(ct_volume(4 + i, 16, seed=i)[1]).tolist() for i in range(4)))
    assert info["slice_shapes"] == {"16x16": 4} and info["classes"] == sorted(present)
    assert json.loads(info["preprocessing"]) == {"kind": "window", "low": -1000.0, "high": 400.0}
    cache = SliceCache(out)
    assert cache.volumes[0].spacing == pytest.approx((2.5, 0.7, 0.7))  # NIfTI stores float32
    with h5py.File(out) as handle:
        group = handle["volumes/case0"]
        assert group["image"].chunks == (1, 16, 16)  # one axial slice per chunk
        assert group.attrs["source"].endswith("case0.nii.gz") and len(group.attrs["sha256"]) == 64
    verified = run_cli(["cache", "verify", str(out)])
    assert verified.exit_code == 0 and "4 volume(s) checked, 0 problem(s)" in verified.output


def test_verify_finds_data_changed_after_the_build(nifti_folder, tmp_path):
    out = tmp_path / "cache.h5"
    assert build(nifti_folder, out).exit_code == 0
    with h5py.File(out, "r+") as handle:
        handle["volumes/case2/image"][1, 3, 3] += 1
    result = run_cli(["cache", "verify", str(out)])
    assert result.exit_code == 1
    assert "case2" in result.output and "checksum mismatch" in result.output


def test_a_bad_volume_stops_the_build_keeps_what_was_converted_and_resume_finishes(nifti_folder, tmp_path):
    broken = nifti_folder / "case9.nii.gz"
    broken.write_bytes((nifti_folder / "case3.nii.gz").read_bytes()[:200])  # truncated
    (nifti_folder / "case9_seg.nii.gz").write_bytes((nifti_folder / "case3_seg.nii.gz").read_bytes())
    out = tmp_path / "cache.h5"
    failed = build(nifti_folder, out)
    assert failed.exit_code == 2
    assert "case9.nii.gz" in failed.output and "--resume" in failed.output
    assert not out.exists() and partial_path(out).exists()

    skipped = build(nifti_folder, out, "--resume", "--skip-bad")
    assert skipped.exit_code == 0, skipped.output
    assert "0 volume(s) converted, 4 already there, 1 skipped as bad" in skipped.output
    assert len(SliceCache(out)) == 4


def test_a_killed_build_leaves_no_cache_and_resume_completes_it(tmp_path):
    folder = tmp_path / "volumes"
    folder.mkdir()
    for i in range(12):
        write_nifti_pair(folder, f"case{i:02d}", slices=60, size=96, seed=i)
    out = tmp_path / "cache.h5"
    command = [
        sys.executable,
        "-m",
        "medkit",
        "cache",
        "build",
        str(folder),
        "--out",
        str(out),
        "--mask-suffix",
        "_seg",
        "--workers",
        "1",
        "--codec",
        "gzip",
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in process.stdout:  # one line per converted volume when not on a terminal
        if line.startswith("case02"):
            break
    time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not out.exists(), "a killed build must leave no cache behind"
    assert partial_path(out).exists()

    resumed = subprocess.run([*command, "--resume"], capture_output=True, text=True, check=False)
    assert resumed.returncode == 0, resumed.stderr
    assert "already there" in resumed.stdout and not partial_path(out).exists()
    assert len(SliceCache(out)) == 12
    assert run_cli(["cache", "verify", str(out)]).exit_code == 0


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: (d / "a.npz").write_bytes(b"not a zip"), "a.npz"),
        (
            lambda d: np.savez(d / "a.npz", image=np.full((3, 8, 8), 7, np.int16), mask=np.zeros((3, 8, 8))),
            "constant",
        ),
        (lambda d: np.savez(d / "a.npz", image=np.full((3, 8, 8), np.nan), mask=np.zeros((3, 8, 8))), "NaN"),
        (
            lambda d: np.savez(
                d / "a.npz", image=np.arange(192.0).reshape(3, 8, 8), mask=np.zeros((3, 8, 9))
            ),
            "(3, 8, 9)",
        ),
    ],
    ids=["corrupt", "constant", "nan", "shape-mismatch"],
)
def test_bad_inputs_name_the_file_and_what_is_wrong(tmp_path, make, message):
    folder = tmp_path / "in"
    folder.mkdir()
    make(folder)
    result = run_cli(["cache", "build", str(folder), "--out", str(tmp_path / "c.h5"), "--workers", "1"])
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output


def test_an_empty_source_folder_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    result = run_cli(["cache", "build", str(tmp_path / "empty"), "--out", str(tmp_path / "c.h5")])
    assert result.exit_code == 2 and "empty" in result.output


def test_a_cache_from_a_newer_medkit_is_refused_with_what_to_do(nifti_folder, tmp_path):
    out = tmp_path / "cache.h5"
    assert build(nifti_folder, out).exit_code == 0
    with h5py.File(out, "r+") as handle:
        handle.attrs["medkit_cache_format"] = 99
    result = run_cli(["cache", "info", str(out)])
    assert (
        result.exit_code == 2
        and "newer medkit (cache format 99)" in result.output
        and "upgrade" in result.output
    )


def test_an_existing_cache_is_not_overwritten_without_resume(nifti_folder, tmp_path):
    out = tmp_path / "cache.h5"
    assert build(nifti_folder, out).exit_code == 0
    before = out.read_bytes()
    result = build(nifti_folder, out)
    assert result.exit_code == 2 and "pass --resume" in result.output
    assert out.read_bytes() == before


def test_parallel_conversion_gives_the_same_cache_as_serial(nifti_folder, tmp_path):
    pairs = [
        Pair(f"case{i}", nifti_folder / f"case{i}.nii.gz", nifti_folder / f"case{i}_seg.nii.gz")
        for i in range(4)
    ]
    build_cache(pairs, tmp_path / "serial.h5", workers=1)
    build_cache(pairs, tmp_path / "parallel.h5", workers=2)
    serial, parallel = SliceCache(tmp_path / "serial.h5"), SliceCache(tmp_path / "parallel.h5")
    assert [v.sha256 for v in serial.volumes] == [v.sha256 for v in parallel.volumes]


def test_a_csv_manifest_names_the_pairs(nifti_folder, tmp_path):
    manifest = tmp_path / "pairs.csv"
    manifest.write_text(
        "image,mask,id\n"
        + "".join(f"volumes/case{i}.nii.gz,volumes/case{i}_seg.nii.gz,patient{i}\n" for i in range(2))
    )
    result = run_cli(
        ["cache", "build", "--manifest", str(manifest), "--out", str(tmp_path / "c.h5"), "--workers", "1"]
    )
    assert result.exit_code == 0, result.output
    assert [v.id for v in SliceCache(tmp_path / "c.h5").volumes] == ["patient0", "patient1"]
    assert run_cli(["cache", "build", "--out", str(tmp_path / "d.h5")]).exit_code == 2


def test_the_user_cache_fixture_keeps_generated_data_out_of_the_home_folder(medkit_user_cache):
    from medkit.user_cache import cache_folder

    assert os.environ["MEDKIT_CACHE_DIR"] == str(medkit_user_cache)
    assert cache_folder("ct-seg").is_relative_to(medkit_user_cache)
