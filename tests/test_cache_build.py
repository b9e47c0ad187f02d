"""`medkit cache build|info|verify`: atomic and resumable builds, bad inputs named, and integrity checks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import tracemalloc
from concurrent.futures import ProcessPoolExecutor

import h5py
import nibabel as nib
import numpy as np
import pytest
import volume_layouts

from medkit.cache import build as build_module
from medkit.cache.build import build_cache, partial_path
from medkit.cache.pairing import Pair, find_pairs
from medkit.cache.store import SliceCache
from medkit.cache.synthetic import ct_volume
from medkit.errors import RunError, UsageError
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


def write_npy_volumes(folder, count: int, slices: int = 32, size: int = 256) -> list[Pair]:
    """``count`` unmasked int16 volumes of ``slices * size * size * 2`` bytes each (4 MiB by default)."""
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    pairs = []
    for i in range(count):
        path = folder / f"v{i:02d}.npy"
        np.save(path, rng.integers(-1000, 1000, size=(slices, size, size), dtype=np.int16))
        pairs.append(Pair(f"v{i:02d}", path, None))
    return pairs


def test_a_parallel_build_holds_a_few_volumes_in_memory_not_the_whole_data_set(tmp_path):
    pairs = write_npy_volumes(tmp_path / "in", 32)
    volume_bytes = 32 * 256 * 256 * 2
    import hdf5plugin  # noqa: F401  (imported here, its module objects do not count as build memory)

    tracemalloc.start()  # numpy reports its arrays to tracemalloc; results are unpickled in this process
    try:
        build_cache(pairs, tmp_path / "c.h5", codec="none", workers=2)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(SliceCache(tmp_path / "c.h5")) == 32
    assert peak < 8 * volume_bytes, f"peak {peak / volume_bytes:.1f} volumes held of 32"


def test_a_bad_volume_stops_a_parallel_build_without_converting_the_rest(tmp_path, monkeypatch):
    pairs = write_npy_volumes(tmp_path / "in", 31)
    np.save(pairs[0].image, np.zeros((32, 256, 256), np.int16))  # constant: refused as soon as it is read
    submitted = []

    class RecordingPool(ProcessPoolExecutor):
        def submit(self, *args, **kwargs):
            submitted.append(super().submit(*args, **kwargs))
            return submitted[-1]

    monkeypatch.setattr(build_module, "ProcessPoolExecutor", RecordingPool)
    with pytest.raises(UsageError, match=r"v00\.npy"):
        build_cache(pairs, tmp_path / "c.h5", workers=2)
    converted = sum(not future.cancelled() for future in submitted)
    # at most 2 * workers were in flight when it failed (4-7 measured); all 31 were converted before the fix
    assert converted <= len(pairs) // 2, (
        f"{converted} of 31 volumes were converted after the first one failed"
    )


def test_a_worker_killed_mid_build_stops_it_even_with_skip_bad(tmp_path, monkeypatch):
    # 2 KiB volumes: a result is sent in one pipe write, so the kill cannot cut one in half (Python's pool then
    # waits forever for the rest of it)
    pairs = write_npy_volumes(tmp_path / "in", 12, slices=4, size=16)

    class KillingPool(ProcessPoolExecutor):
        submitted = 0

        def submit(self, *args, **kwargs):
            self.submitted += 1
            if self.submitted == 6:  # both workers started and busy: kill one, as the OOM killer would
                next(iter(self._processes.values())).kill()
            return super().submit(*args, **kwargs)

    monkeypatch.setattr(build_module, "ProcessPoolExecutor", KillingPool)
    with pytest.raises(RunError, match="fewer --workers"):
        build_cache(pairs, tmp_path / "c.h5", workers=2, skip_bad=True)
    assert not (tmp_path / "c.h5").exists()  # not a finished cache with every volume "skipped as bad"


def test_resume_with_another_codec_is_refused_and_the_cache_is_left_in_place(nifti_folder, tmp_path):
    out = tmp_path / "cache.h5"
    assert build(nifti_folder, out, "--codec", "gzip").exit_code == 0
    result = build(nifti_folder, out, "--resume", "--codec", "lzf")
    assert result.exit_code == 2
    assert all(text in result.output for text in (str(out), "--codec gzip", "not lzf", "another --out"))
    assert out.exists() and not partial_path(out).exists()
    assert SliceCache(out).codec == "gzip"


@pytest.mark.parametrize("bad_id", ["lung/left", "/abs", ".", ".."])
def test_a_manifest_id_that_cannot_name_a_cache_group_is_refused(nifti_folder, tmp_path, bad_id):
    manifest = tmp_path / "pairs.csv"
    manifest.write_text(
        "image,mask,id\n"
        "volumes/case0.nii.gz,volumes/case0_seg.nii.gz,ok\n"
        f"volumes/case1.nii.gz,volumes/case1_seg.nii.gz,{bad_id}\n"
    )
    with pytest.raises(UsageError, match="line 3") as refused:
        find_pairs([], manifest=manifest)
    assert str(manifest) in str(refused.value) and f"'{bad_id}'" in str(refused.value)
    assert "'/'" in str(refused.value)  # says what an id may not contain

    result = run_cli(["cache", "build", "--manifest", str(manifest), "--out", str(tmp_path / "c.h5")])
    assert result.exit_code == 2 and "line 3" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "c.h5").exists() and not partial_path(tmp_path / "c.h5").exists()


def test_a_volume_whose_name_is_empty_is_refused(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    np.save(folder / ".npy", np.arange(64, dtype=np.int16).reshape(4, 4, 4))  # the name is all suffix
    manifest = tmp_path / "pairs.csv"
    manifest.write_text("image,mask\nin/.npy,\n")
    with pytest.raises(UsageError, match=r"line 2.*empty"):
        find_pairs([], manifest=manifest)
    with pytest.raises(UsageError, match="empty"):
        find_pairs([folder / ".npy"])


def test_build_cache_refuses_ids_it_cannot_store(tmp_path):
    (pair,) = write_npy_volumes(tmp_path / "in", 1, slices=2, size=8)
    with pytest.raises(UsageError, match="'a/b'"):
        build_cache([Pair("a/b", pair.image, None)], tmp_path / "c.h5", workers=1)
    with pytest.raises(UsageError, match=r"'v00'.*twice"):
        build_cache([pair, pair], tmp_path / "d.h5", workers=1)


def test_cache_build_converts_each_series_of_a_dicom_export_and_names_what_it_leaves_out(tmp_path):
    export = volume_layouts.shipped_dicomdir_export(tmp_path / "export")
    out = tmp_path / "dicom.h5"
    result = run_cli(["cache", "build", str(export), "--out", str(out), "--workers", "1", "--skip-bad"])
    assert result.exit_code == 0, result.output
    assert "8 volume(s) converted" in result.output and "1 skipped as bad" in result.output
    assert "CT2" in result.output and "unevenly spaced" in result.output  # the series with a 200 mm gap
    assert result.output.count("localizer") == 4  # CT2N, two of MR2's series and MR700: not volumes
    cache = SliceCache(out)
    ct = next(v for v in cache.volumes if v.id == "CT5N")
    assert (ct.slices, ct.has_mask) == (5, False)


def test_cache_build_pairs_a_luna16_tree_without_options(tmp_path):
    cases = {f"1.2.840.113654.2.55.{n}": ct_volume(4, 16, seed=n) for n in range(3)}
    root = volume_layouts.luna16_tree(tmp_path / "LUNA16", cases)
    out = tmp_path / "luna.h5"
    result = run_cli(["cache", "build", str(root), "--out", str(out), "--workers", "1"])
    assert result.exit_code == 0, result.output
    cache = SliceCache(out)
    assert sorted(v.id for v in cache.volumes) == sorted(cases)
    assert all(v.has_mask for v in cache.volumes)  # the masks folder is not read as more scans
    for v, info in enumerate(cache.volumes):
        np.testing.assert_array_equal(cache.read_volume(v)[1], cases[info.id][1])
