"""Class order follows paper 002 and LUNA16: 1 left lung, 2 right lung, 3 trachea.

The report lists the class balance as "background : left lung : right lung : trachea = 87.1 : 5.965 : 6.836 :
0.102" (section 5), its task as "the left lung, the right lung and the trachea" (section 4), and the authors map
LUNA16's mask values 3, 4, 5 to classes 1, 2, 3. The right lung is the larger (three lobes), which the balance
shows (6.836 > 5.965): value 4, mapped to class 2, is the right lung.
"""

from __future__ import annotations

import numpy as np

from medkit_ct_seg.data import CLASS_NAMES, LUNA16_LABELS
from medkit_ct_seg.phantoms import phantom

REPORT_BALANCE = {"left_lung": 5.965, "right_lung": 6.836}  # percent of pixels, section 5


def test_the_classes_are_in_the_reports_order():
    assert CLASS_NAMES == ("background", "left_lung", "right_lung", "airway")


def test_luna16_mask_values_map_to_the_classes_they_name():
    named = {value: CLASS_NAMES[label] for value, label in LUNA16_LABELS.items()}
    assert named == {3: "left_lung", 4: "right_lung", 5: "airway"}


def test_the_phantoms_label_the_lungs_as_the_report_does():
    """Class 1 lies on the patient's left (LPS: larger x) and is the smaller lung, as in the report's balance."""
    _, mask = phantom(24, 64, seed=0)
    left, right = CLASS_NAMES.index("left_lung"), CLASS_NAMES.index("right_lung")
    columns = np.arange(mask.shape[-1])

    def centre_x(label: int) -> float:
        return float((columns * (mask == label).sum(axis=(0, 1))).sum() / (mask == label).sum())

    assert centre_x(left) > centre_x(right)  # LPS: x grows towards the patient's left
    share = {name: (mask == CLASS_NAMES.index(name)).mean() for name in REPORT_BALANCE}
    assert (share["left_lung"] < share["right_lung"]) == (
        REPORT_BALANCE["left_lung"] < REPORT_BALANCE["right_lung"]
    )
