"""Patient-level train/val/test assignment for ULS23 VOIs (which carry no split of their own).

DeepLesion gives a split per row (``Train_Val_Test``); ULS23's training VOIs do not.  The
converter draws one here, per *patient* (:mod:`.uls23_names`), so no patient's lesions end
up in two splits; the result feeds :func:`~.splits.make_splits` like DeepLesion's values
(1 train, 2 val, 3 test).

Choices: the patients are sorted, shuffled with ``random.Random(seed)`` (reproducible for
a given folder and seed), and the first ``round(n * test_fraction)`` become test, the
next ``round(n * val_fraction)`` val, the rest train.  Where a fraction is positive, at
least one patient goes to that split as long as one train patient remains (nnU-Net's
fold 0 needs a non-empty ``val`` list; a user asking for a test split gets one even from
a handful of patients); val is served before test.
"""
from __future__ import annotations

import random
from typing import Iterable


def assign_patient_splits(patients: Iterable[int], val_fraction: float = 0.1, test_fraction: float = 0.2,
                          seed: int = 0) -> dict[int, int]:
    """Patient -> split value (1 train, 2 val, 3 test), see the module docstring."""
    for name, f in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= f < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {f}")
    if val_fraction + test_fraction >= 1.0:
        raise ValueError(f"val_fraction + test_fraction must leave training patients, got "
                         f"{val_fraction} + {test_fraction}")
    order = sorted(set(patients))
    random.Random(seed).shuffle(order)
    n = len(order)
    n_val, n_test = round(n * val_fraction), round(n * test_fraction)
    if val_fraction > 0 and n_val == 0 and n - n_test >= 2:
        n_val = 1
    if test_fraction > 0 and n_test == 0 and n - n_val >= 2:
        n_test = 1
    while n_val + n_test >= n and n > 0:  # rounding up may leave no training patient
        if n_test > 0:
            n_test -= 1
        else:
            n_val -= 1
    splits = {p: 3 for p in order[:n_test]}
    splits.update({p: 2 for p in order[n_test:n_test + n_val]})
    splits.update({p: 1 for p in order[n_test + n_val:]})
    return splits
