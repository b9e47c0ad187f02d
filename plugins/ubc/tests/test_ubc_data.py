"""Data: BraTS folders through the slice cache (5 largest-lesion slices, union of tumour labels, grades from
folders or a CSV), the image-folder loader, the synthetic default, patient-wise splits and per-class subsets,
and a clear message for every kind of bad input."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from helpers import brats_folder, brats_patient, brats_training_tree, image_folder

from medkit import UsageError
from medkit.config import resolve_config
from medkit_ubc.config import TrainUbcConfig
from medkit_ubc.data import load_slices
from medkit_ubc.slices import NO_LABEL, Slices, draw_patients, per_class_subset, split_by_patient
from medkit_ubc.synthetic import brain_patient


def config(data=None, **options):
    layer = {"image_size": 32, **({"data": str(data)} if data else {}), **options}
    return resolve_config(TrainUbcConfig, [("test", layer)])[0]


def toy(patients_per_class: int = 4, slices: int = 5) -> Slices:
    n = 2 * patients_per_class * slices
    labels = np.repeat([0, 1], patients_per_class * slices)
    patients = np.array([f"p{i // slices}" for i in range(n)], dtype=object)
    return Slices(
        np.zeros((n, 4, 4), np.float32), np.zeros((n, 4, 4), np.uint8), np.ones(n, bool), labels, patients,
        np.array([""] * n, dtype=object), ("a", "b"),
    )  # fmt: skip


def test_a_brats_folder_gives_the_five_largest_lesion_slices_per_patient_with_the_union_mask(tmp_path):
    data = brats_folder(tmp_path / "brats")
    slices = load_slices(config(data))
    assert slices.class_names == ("LGG", "HGG")
    assert len(slices) == 6 * 5 and slices.images.shape[1:] == (32, 32)
    hgg = slices.patients == "BraTS19_HGG_000"
    assert (slices.labels[hgg] == 1).all() and (
        slices.labels[slices.patients == "BraTS19_LGG_000"] == 0
    ).all()
    assert set(np.unique(slices.masks)) == {0, 1}  # labels 1, 2, 4 joined
    # the blob peaks at slice 6 of 12: the chosen five are 4..8, whose masks are the largest
    flair = nib.load(tmp_path / "brats/HGG/BraTS19_HGG_000/BraTS19_HGG_000_seg.nii.gz").get_fdata()
    areas = sorted(((flair[..., z] > 0).sum() for z in range(12)), reverse=True)
    assert sorted(slices.masks[hgg].sum(axis=(1, 2)).tolist(), reverse=True) == areas[:5]
    assert slices.images.min() >= 0 and slices.images.max() <= 1


def test_brats_is_sampled_as_the_paper_does_every_lgg_and_as_many_random_hgg_halved_per_class(tmp_path):
    tree = brats_training_tree(tmp_path, hgg=6, lgg=2)
    slices = load_slices(config(tree))
    patients = set(slices.patients)
    lgg = {p for p in patients if "TCIA10" in p}
    assert len(lgg) == 2 and len(patients - lgg) == 2  # both LGG, 2 of the 6 HGG
    assert all((slices.patients == p).sum() == 5 for p in patients)  # the 5 largest-lesion FLAIR slices
    assert (slices.labels[np.isin(slices.patients, list(lgg))] == 0).all()
    train, test = split_by_patient(slices, 0.5, seed=0)
    for side in (train, test):  # halved per class: a majority guess scores 0.5, not HGG's share
        assert np.bincount(slices.labels[side]).tolist() == [5, 5]
    # the draw is seeded apart from --seed: the same sample_seed draws the same patients, others others
    assert set(load_slices(config(tree, seed=3)).patients) == patients
    draws = {frozenset(load_slices(config(tree, data_options={"sample_seed": s})).patients) for s in range(5)}
    assert len(draws) > 1 and all(len(d) == 4 and lgg <= d for d in draws)


def test_the_draw_can_be_sized_or_turned_off_and_refuses_more_patients_than_a_grade_has(tmp_path):
    tree = brats_training_tree(tmp_path, hgg=5, lgg=3)
    everyone = load_slices(config(tree, data_options={"all_patients": True}))
    assert len(set(everyone.patients)) == 8 and (everyone.labels == 1).mean() == 5 / 8
    two = load_slices(config(tree, data_options={"patients_per_class": 2}))
    assert np.bincount(two.labels).tolist() == [10, 10]
    with pytest.raises(UsageError, match=r"patients_per_class=4: class 'LGG' has only 3 patient\(s\)"):
        load_slices(config(tree, data_options={"patients_per_class": 4}))


def test_the_papers_brats_sample_is_76_lgg_and_76_of_259_hgg_190_images_per_class_per_split():
    grades = {f"HGG{i:03d}": 1 for i in range(259)} | {f"LGG{i:03d}": 0 for i in range(76)}
    drawn = draw_patients(grades, ("LGG", "HGG"), None, seed=0)
    assert sum(p.startswith("LGG") for p in drawn) == 76 and sum(p.startswith("HGG") for p in drawn) == 76
    assert draw_patients(dict(reversed(grades.items())), ("LGG", "HGG"), None, seed=0) == drawn
    assert draw_patients(grades, ("LGG", "HGG"), None, seed=1) != drawn
    ids = np.repeat(sorted(drawn), 5)
    labels = np.array([grades[p] for p in ids])
    n = len(ids)
    slices = Slices(
        np.zeros((n, 2, 2), np.float32), np.zeros((n, 2, 2), np.uint8), np.ones(n, bool), labels,
        ids.astype(object), np.array([""] * n, dtype=object), ("LGG", "HGG"),
    )  # fmt: skip
    train, test = split_by_patient(slices, 0.5, seed=0)
    assert np.bincount(labels[train]).tolist() == np.bincount(labels[test]).tolist() == [190, 190]
    assert len(set(ids[test])) == 76  # the paper's test set: 380 images of 76 patients


def test_grades_and_an_explicit_split_can_come_from_a_csv(tmp_path):
    data = tmp_path / "flat"
    for i in range(4):
        brats_patient(data, f"P{i}", seed=i)
    csv = tmp_path / "grades.csv"
    csv.write_text("patient,grade,split\nP0,LGG,train\nP1,HGG,train\nP2,LGG,test\nP3,HGG,test\n")
    slices = load_slices(config(data, data_options={"grades_csv": str(csv)}))
    assert dict(zip(slices.patients, slices.labels, strict=True)) == {"P0": 0, "P1": 1, "P2": 0, "P3": 1}
    train, test = split_by_patient(slices, 0.5, seed=0)
    assert set(slices.patients[test]) == {"P2", "P3"} and set(slices.patients[train]) == {"P0", "P1"}
    csv.write_text("patient,grade,split\nP0,LGG,train\nP1,HGG,train\nP2,LGG,test\nP3,HGG,train\n")
    with pytest.raises(UsageError, match="class 'HGG' has no images in the test split"):
        split_by_patient(load_slices(config(data, data_options={"grades_csv": str(csv)})), 0.5, 0)


def test_a_patient_without_a_grade_is_refused_unless_semi_supervised(tmp_path):
    data = brats_folder(tmp_path / "brats", per_grade=2)
    brats_patient(data / "other", "BraTS19_X", seed=9)
    with pytest.raises(UsageError, match=r"BraTS19_X .* has no grade"):
        load_slices(config(data))
    slices = load_slices(config(data, data_options={"semi_supervised": True}))
    assert (slices.labels[slices.patients == "BraTS19_X"] == NO_LABEL).all()
    train, test = split_by_patient(slices, 0.5, seed=0)
    assert "BraTS19_X" in set(slices.patients[train]) and "BraTS19_X" not in set(slices.patients[test])


def test_a_mask_of_another_size_names_both_files(tmp_path):
    data = brats_folder(tmp_path / "brats", per_grade=2)
    seg = next(data.rglob("BraTS19_HGG_000_seg.nii.gz"))
    nib.save(nib.Nifti1Image(np.zeros((30, 32, 12), np.uint8), np.eye(4)), seg)
    with pytest.raises(
        UsageError, match=r"BraTS19_HGG_000_seg.nii.gz: mask shape .* differs from image shape"
    ):
        load_slices(config(data))


def test_mask_values_other_than_lesion_labels_need_binarize(tmp_path):
    data = image_folder(tmp_path / "png", mask_value=255)
    with pytest.raises(
        UsageError, match=r"img0_mask.png: mask values 0, 255 are not 0/1; pass --set data_options"
    ):
        load_slices(config(data))
    slices = load_slices(config(data, data_options={"binarize": True}))
    assert set(np.unique(slices.masks)) == {0, 1}
    brats = tmp_path / "brats"
    for grade, i in (("HGG", 0), ("LGG", 1)):
        brats_patient(brats / grade, f"P{i}", seed=i, labels=(1, 2, 7))
    with pytest.raises(UsageError, match=r"mask holds values \[7\]"):
        load_slices(config(brats))


def test_the_image_folder_loader_reads_classes_masks_and_refuses_a_mask_of_another_size(tmp_path):
    from PIL import Image

    data = image_folder(tmp_path / "png")
    slices = load_slices(config(data))
    assert slices.class_names == ("benign", "malignant") and len(slices) == 6
    assert slices.masks.shape == (6, 32, 32) and slices.has_mask.all()
    Image.fromarray(np.zeros((20, 24), np.uint8)).save(data / "benign" / "img1_mask.png")
    with pytest.raises(
        UsageError, match=r"img1_mask.png: mask size \(24, 20\) differs from image size \(24, 24\)"
    ):
        load_slices(config(data))


def test_a_patient_in_both_explicit_splits_is_refused_as_leakage(tmp_path):
    for split in ("train", "test"):
        image_folder(tmp_path / "data" / split)
    with pytest.raises(UsageError, match="would be in both the training and the test split"):
        split_by_patient(load_slices(config(tmp_path / "data")), 0.5, 0)


def test_random_splits_keep_every_patient_on_one_side_and_each_class_on_both():
    slices = toy()
    train, test = split_by_patient(slices, 0.5, seed=3)
    assert not set(slices.patients[train]) & set(slices.patients[test])
    assert set(slices.labels[test]) == {0, 1} and len(test) == 20
    single = toy(patients_per_class=1)
    with pytest.raises(UsageError, match="class 'a' has 1 patient"):
        split_by_patient(single, 0.5, 0)


def test_subsets_take_one_slice_per_patient_first_and_refuse_more_than_there_is():
    slices = toy(patients_per_class=4, slices=5)
    train = list(range(len(slices)))
    three = per_class_subset(slices, train, 3, seed=0)
    assert len(three) == 6 and len(set(slices.patients[three])) == 6  # one slice of 3 patients per class
    eight = per_class_subset(slices, train, 8, seed=0)
    assert len(eight) == 16 and all((slices.patients[eight] == p).sum() == 2 for p in set(slices.patients))
    with pytest.raises(UsageError, match="per_class=21: class 'a' has only 20 training images"):
        per_class_subset(slices, train, 21, seed=0)


def test_synthetic_classes_differ_in_appearance_not_in_lesion_size():
    areas = {0: [], 1: []}
    for label in (0, 1):
        for seed in range(20):
            _, mask = brain_patient(label, 8, 64, seed=seed)
            areas[label].append(mask.sum(axis=(1, 2)).max())
    assert abs(np.mean(areas[0]) - np.mean(areas[1])) < 0.35 * np.mean(areas[0])
    image, mask = brain_patient(1, 8, 64, seed=1)
    k = mask.sum(axis=(1, 2)).argmax()
    lesion = image[k][mask[k] > 0]
    assert lesion.min() < np.median(image[k][image[k] > 0.05]) < lesion.max()  # dark core, bright rim


def test_the_synthetic_class_is_decided_by_the_lesion_alone():
    """One seed drawn as either class gives the same brain, mask, spots and noise: the images differ inside the
    lesion only, and there the ring shows a core darker than the brain around it, which the diffuse lesion lacks."""
    for seed in range(12):
        diffuse, mask = brain_patient(0, 8, 64, seed=seed)
        ring, same_mask = brain_patient(1, 8, 64, seed=seed)
        assert np.array_equal(mask, same_mask)
        differs = np.abs(diffuse - ring) > 1e-6
        assert not differs[mask == 0].any() and differs[mask > 0].mean() > 0.5
        k = mask.sum(axis=(1, 2)).argmax()
        lesion = mask[k] > 0
        level = np.median(diffuse[k][(diffuse[k] > 0.1) & ~lesion])
        dark_ring, dark_diffuse = ((image[k][lesion] < 0.8 * level).mean() for image in (ring, diffuse))
        assert dark_ring > dark_diffuse + 0.05


def test_synthetic_distractors_lie_outside_the_mask_in_both_classes_alike():
    changed = {0: [], 1: []}
    for label in (0, 1):
        for seed in range(12):
            image, mask = brain_patient(label, 8, 64, seed=seed)
            plain, same_mask = brain_patient(label, 8, 64, seed=seed, distractors=False)
            assert np.array_equal(mask, same_mask)
            differs = np.abs(image - plain) > 1e-6
            assert not differs[mask > 0].any()  # the lesion, and so the class's evidence, is untouched
            assert differs.any()  # every brain holds at least one bright non-lesion structure
            brain = plain[k := mask.sum(axis=(1, 2)).argmax()] > 0.1
            assert (image[k][differs[k]] > np.median(image[k][brain])).mean() > 0.3  # bright, not a shadow
            changed[label].append(differs.sum())
    assert abs(np.mean(changed[0]) - np.mean(changed[1])) < 0.35 * np.mean(changed[0])


def test_the_synthetic_cache_is_keyed_by_the_generators_version(tmp_path, monkeypatch):
    from medkit_ubc import data
    from medkit_ubc.synthetic import VERSION

    monkeypatch.setattr(data, "build_once", lambda target, build: target)
    assert data.synthetic_cache(3, 8, 32).name == f"synthetic-v{VERSION}-3p0u-8x32-seed0.h5"
    assert VERSION >= 3  # v1 had no distractors; v2 hid the class in texture, outside what the lesion decides


def test_the_embedded_data_splits_by_synthetic_patient():
    slices = load_slices(config(data_options={"synthetic": {"patients": 4, "slices": 8}}))
    assert slices.class_names == ("diffuse", "ring") and len(slices) == 2 * 4 * 5
    assert len(set(slices.patients)) == 8 and slices.masks.any(axis=(1, 2)).all()


def test_options_that_cannot_work_are_refused_before_the_run():
    with pytest.raises(UsageError, match="multiple of 32"):
        config(image_size=48)
    with pytest.raises(UsageError, match="alpha"):
        config(alpha=1.5)


def test_the_registered_dataset_entries_build_medkit_datasets(tmp_path):
    from medkit.plugins import get_plugins

    record = get_plugins().get("ubc")
    embedded = record.entry("dataset", "synthetic_brains")
    assert embedded.embedded
    brains = embedded.load()(image_size=32, synthetic={"patients": 3})
    assert len(brains) == 30 and brains.task == "classification"
    sample = brains[0]
    assert sample["image"].shape == (1, 32, 32) and sample["mask"].shape == (32, 32) and sample["has_mask"]
    assert len(set(brains.groups())) == 6  # one group per synthetic patient
    folder = record.entry("dataset", "folder").load()(image_folder(tmp_path / "png"), image_size=32)
    assert folder.class_names == ("benign", "malignant") and len(folder) == 6


@pytest.mark.parametrize("source", [240, 100])  # BraTS' 240 px slices down to 128, a small image up
def test_a_resized_mask_stays_on_its_image(source):
    """Masks go through the images' own interpolation: nearest-neighbour sampling shifted them by a third of a
    pixel against their images after a 240 -> 128 resize."""
    from medkit_ubc.slices import resize_images, resize_masks

    grid = np.arange(source, dtype=np.float32)
    y, x = np.meshgrid(grid, grid, indexing="ij")
    lesion = (((y - 0.41 * source) / (0.17 * source)) ** 2 + ((x - 0.6 * source) / (0.1 * source)) ** 2 <= 1)[
        None
    ]
    drawn = resize_images(lesion.astype(np.float32), 128)[0] > 0.5
    labelled = resize_masks(lesion.astype(np.uint8), 128)[0] > 0
    assert np.abs(np.argwhere(drawn).mean(axis=0) - np.argwhere(labelled).mean(axis=0)).max() < 0.02
