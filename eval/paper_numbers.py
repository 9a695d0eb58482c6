"""The paper's published numbers (Liu, Li et al., "Denoised Internal Models", arXiv 2111.10844, Tables 1 and 2),
transcribed from its text (../shared/docs/paper.txt; METHOD.md section 3 repeats Table 1), with its protocol: the
attack rows in the paper's order and the thresholds.

Accuracies are percentages on the paper's test images; "All" rows of Table 1 are (median distance, accuracy), of
Table 2 accuracy only (the paper prints no medians there). Row keys: "NORM:ATTACK" for an attack (attack names as in
`dim_tf.eval.attacks`), "all:NORM" for the per-norm worst case, "minimal" for the minimal-accuracy row (the paper's
is over its 42 attacks, of which the tables show 15). NumPy-free and TensorFlow-free.
"""

from __future__ import annotations

import dataclasses

# The bound under which Table 1 and 2 report accuracy, per norm (L0 in pixels).
THRESHOLDS = {"l2": 1.5, "linf": 0.3, "l0": 12.0, "l1": 8.0}
NORM_ORDER = ("l2", "linf", "l0", "l1")  # the paper's order
NORM_LABELS = {"l2": "L2", "linf": "L-inf", "l0": "L0", "l1": "L1"}


@dataclasses.dataclass(frozen=True)
class Row:
    """An attack row of the tables: `attack` (a name of the attack table) under `norm`, printed as `label`."""

    norm: str
    attack: str
    label: str

    @property
    def key(self) -> str:
        return f"{self.norm}:{self.attack}"


ROWS = (
    Row("l2", "ddn", "L2 DDN"),
    Row("l2", "pgd", "L2 PGD"),
    Row("l2", "bim", "L2 BIM"),
    Row("l2", "fgm", "L2 FGM"),
    Row("l2", "deepfool", "L2 DeepFool"),
    Row("l2", "cw_l2", "L2 Carlini-Wagner"),
    Row("l2", "brendel_bethge", "L2 Brendel-Bethge"),
    Row("l2", "boundary", "L2 Boundary"),
    Row("linf", "pgd", "L-inf PGD"),
    Row("linf", "bim", "L-inf BIM"),
    Row("linf", "fgsm", "L-inf FGSM"),
    Row("linf", "deepfool", "L-inf DeepFool"),
    Row("linf", "brendel_bethge", "L-inf Brendel-Bethge"),
    Row("l0", "pointwise", "L0 Pointwise x10"),
    Row("l1", "brendel_bethge", "L1 Brendel-Bethge"),
)

# Column of each (model name, variant) in the tables; models as named by dim_tf.registry (abs: the ABS model).
COLUMNS = {("cnn", "default"): "CNN", ("cnn", "bi"): "biCNN", ("madry", "default"): "Madry",
           ("abs", "bi"): "biABS", ("abs", "default"): "ABS", ("dim", "bi"): "biDIM", ("dim", "default"): "DIM",
           ("single_im", "default"): "singleIM", ("im", "default"): "IM",
           ("dn_single_im", "default"): "Dn-singleIM"}
TABLE1_COLUMNS = ("CNN", "biCNN", "Madry", "biABS", "ABS", "biDIM", "DIM")
TABLE2_COLUMNS = ("CNN", "singleIM", "IM", "Dn-singleIM", "DIM", "biDIM")

# "the DIM models ... clean accuracies are 96%, while the other models reach 99%" (section 4; no per-model figure).
CLEAN_ABOUT = {"DIM": 96, "biDIM": 96, "CNN": 99, "biCNN": 99, "Madry": 99, "ABS": 99, "biABS": 99}

_T1 = {  # CNN, biCNN, Madry, biABS, ABS, biDIM, DIM
    "l2:ddn": (15, 71, 94, 85, 84, 92, 93),
    "l2:pgd": (30, 76, 96, 86, 88, 93, 94),
    "l2:bim": (17, 67, 95, 83, 83, 93, 94),
    "l2:fgm": (55, 92, 97, 94, 86, 94, 95),
    "l2:deepfool": (21, 21, 95, 49, 83, 75, 89),
    "l2:cw_l2": (13, 10, 83, 45, 84, 51, 74),
    "l2:brendel_bethge": (12, 8, 50, 48, 93, 57, 71),
    "l2:boundary": (19, 62, 54, 93, 90, 80, 80),
    "all:l2": ((1.1, 9), (0.9, 7), (1.4, 41), (1.3, 41), (2.2, 83), (1.4, 45), (1.9, 66)),
    "linf:pgd": (0, 73, 95, 88, 11, 89, 85),
    "linf:bim": (0, 70, 96, 83, 8, 89, 82),
    "linf:fgsm": (7, 78, 96, 86, 38, 90, 89),
    "linf:deepfool": (0, 83, 95, 86, 7, 91, 78),
    "linf:brendel_bethge": (2, 81, 94, 89, 11, 88, 9),
    "all:linf": ((0.08, 0), (0.36, 69), (0.34, 93), (0.42, 82), (0.22, 3), (0.49, 78), (0.2, 8)),
    "l0:pointwise": (25, 43, 2, 82, 76, 53, 59),
    "all:l0": ((8, 25), (11, 43), (4, 2), (26, 82), (19, 76), (13, 53), (14, 59)),
    "l1:brendel_bethge": (11, 4, 16, 48, 89, 65, 65),
    "all:l1": ((5, 11), (3, 4), (4, 16), (8, 47), (19, 89), (13, 65), (11, 65)),
    "minimal": (0, 4, 2, 41, 3, 45, 8),
}
_T2 = {  # CNN, singleIM, IM ("Internal Models"), Dn-singleIM, DIM, biDIM
    "l2:ddn": (15, 83, 91, 87, 93, 92),
    "l2:pgd": (30, 89, 95, 89, 94, 93),
    "l2:bim": (17, 88, 94, 90, 94, 93),
    "l2:fgm": (55, 89, 95, 90, 95, 94),
    "l2:deepfool": (21, 71, 83, 82, 89, 75),
    "l2:cw_l2": (13, 54, 66, 68, 74, 51),
    "l2:brendel_bethge": (12, 61, 58, 70, 71, 57),
    "l2:boundary": (19, 65, 67, 75, 80, 80),
    "all:l2": (9, 52, 51, 65, 66, 45),
    "linf:pgd": (0, 49, 70, 72, 85, 89),
    "linf:bim": (0, 54, 61, 72, 82, 89),
    "linf:fgsm": (7, 64, 78, 79, 89, 90),
    "linf:deepfool": (0, 44, 61, 66, 78, 91),
    "linf:brendel_bethge": (2, 2, 1, 6, 9, 88),
    "all:linf": (0, 2, 0, 6, 8, 78),
    "l0:pointwise": (25, 54, 50, 58, 59, 53),
    "all:l0": (25, 54, 50, 58, 59, 53),
    "l1:brendel_bethge": (11, 61, 57, 65, 65, 65),
    "all:l1": (11, 61, 57, 65, 65, 65),
}

# TABLE1[row key][column] -> accuracy, or (median distance, accuracy) for "all:NORM"; TABLE2 likewise (accuracy).
TABLE1 = {key: dict(zip(TABLE1_COLUMNS, values)) for key, values in _T1.items()}
TABLE2 = {key: dict(zip(TABLE2_COLUMNS, values)) for key, values in _T2.items()}
