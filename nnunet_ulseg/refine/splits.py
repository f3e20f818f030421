"""The 5-fold, patient-grouped split that ``ulseg refine --cross-val`` trains on.

The paper predicts the training cases with "the trained model" (AHRNet Sec. 2.3), i.e.
a model that has seen those very cases with their ellipse labels.  ``--cross-val`` is
our option to predict every case with a model that did *not* train on it: nnU-Net's
folds 0-4, each predicting its own validation cases.  That needs a split whose five
validation sets partition the training cases.  The converter writes DeepLesion's own
train/val split as a single fold, and nnU-Net's fallback 5-fold split
(``generate_crossval_split``) is random per case, which would put lesions of one patient
on both sides; so we write our own:

* every training case (train and val of the converter's split) is in exactly one
  validation set; ``train`` of a fold is every other case;
* the cases of one patient (``lesions.csv`` column ``patient``) stay in one fold;
* patients are dealt, largest first (ties by patient id), to the fold with the fewest
  cases so far (ties: the lowest fold), which is deterministic and balanced.
"""
from __future__ import annotations

import os
from collections import defaultdict
from typing import Mapping, Sequence

from nnunet_ulseg.conversion.sidecar import read_sidecar

NUM_FOLDS = 5


def crossval_splits(cases: Sequence[str], patients: Mapping[str, object], n_folds: int = NUM_FOLDS) -> list[dict]:
    """``n_folds`` folds ``{"train": [...], "val": [...]}`` grouped by ``patients[case]``."""
    missing = [c for c in cases if c not in patients]
    if missing:
        raise ValueError(f"no patient for {len(missing)} case(s): {', '.join(missing[:5])}")
    groups: dict[str, list[str]] = defaultdict(list)
    for case in cases:
        groups[str(patients[case])].append(case)
    if len(groups) < n_folds:
        raise ValueError(f"--cross-val needs at least {n_folds} patients among the training cases, "
                         f"found {len(groups)}")
    folds: list[list[str]] = [[] for _ in range(n_folds)]
    for _, members in sorted(groups.items(), key=lambda kv: (-len(kv[1]), _natural(kv[0]))):
        target = min(range(n_folds), key=lambda k: (len(folds[k]), k))
        folds[target].extend(members)
    every = sorted(cases)
    out = []
    for val in folds:
        held_out = set(val)
        out.append({"train": [c for c in every if c not in held_out], "val": sorted(val)})
    return out


def is_crossval_partition(splits, cases: Sequence[str], n_folds: int = NUM_FOLDS) -> bool:
    """True if folds ``0..n_folds-1`` of ``splits`` have disjoint ``val`` sets covering ``cases``
    and each fold trains on exactly the other cases."""
    if not isinstance(splits, list) or len(splits) < n_folds:
        return False
    everything = set(cases)
    seen: set[str] = set()
    for fold in splits[:n_folds]:
        val, train = set(fold.get("val", ())), set(fold.get("train", ()))
        if val & seen or train != everything - val:
            return False
        seen |= val
    return seen == everything


def patients_from_sidecar(path: str | os.PathLike) -> dict[str, int]:
    """Case -> patient from a ``lesions.csv`` sidecar."""
    return {row.case: row.patient for row in read_sidecar(path)}


def _natural(key: str):
    return (0, int(key), "") if key.isdigit() else (1, 0, key)
