"""The plan of a demo corpus: who, where and what, before any pixel is drawn.

The plan fixes every choice that the CSV reflects, in this order:

1. **Split first** (patient-level, like DeepLesion): lesion counts per split are
   ~60/15/25 % (train/val/test); each split's lesions then get their own patients, so
   no patient can straddle splits, and every split has a patient once ``n >= 6``.
2. **Key slices** ("groups"): a group is 1-3 lesions measured on the same slice, one
   CSV row each.  Several groups hold 2+ lesions (at least ``min(3, n_train // 6)`` in
   train), because the pairing of rows to instances on shared slices is exactly what a
   converter can get wrong.
3. **Types**: when ``n >= 24`` the first eight val/test groups get the eight types once
   each, so every type is evaluable; otherwise types follow DeepLesion's frequencies.
   Each type lives in a range of body levels (lung nodules at lung levels, ...); the
   other lesions of a group get types that exist at the group's level.
4. **Patients / studies / series**: groups are dealt to patients (2-5 groups), studies
   (1-2 per study) and series; inside a series the key slices are far enough apart that
   no lesion reaches another key slice's sub-volume (each key slice's true mask is then
   complete).  A group that does not fit goes to a new series of the same study.
5. **Scanner settings per series**: pixel spacing from a field of view that fits the
   patient (0.6-1.0 mm), slice interval 1, 2.5 or 5 mm, noise 10-25 HU, contrast phase.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from nnunet_ulseg.demo.anatomy import PatientAnatomy, make_patient_anatomy

#: Relative frequency of the coarse types in DeepLesion (lung and abdomen most common).
TYPE_WEIGHTS = {1: 0.04, 2: 0.21, 3: 0.17, 4: 0.12, 5: 0.22, 6: 0.06, 7: 0.09, 8: 0.09}
#: Body levels (0 lung apex .. 1 pelvic floor) at which a key slice can show each type.
TYPE_LEVELS = {1: (0.05, 0.9), 2: (0.44, 0.72), 3: (0.07, 0.3), 4: (0.36, 0.54), 5: (0.08, 0.36),
               6: (0.49, 0.57), 7: (0.05, 0.95), 8: (0.8, 0.95)}
#: Largest long axis (mm) per type; all types are at least 5 mm.
TYPE_MAX_MM = {1: 60.0, 2: 80.0, 3: 45.0, 4: 80.0, 5: 45.0, 6: 60.0, 7: 80.0, 8: 80.0}
#: Slices written on each side of a key slice (Slice_range = key -+ this).
NEIGHBOURS = 3
SLICE_INTERVALS = (1.0, 2.5, 5.0)
SPLIT_FRACTIONS = {1: 0.6, 2: 0.15, 3: 0.25}


@dataclass
class LesionPlan:
    """One lesion to draw: its true type, planned long axis (mm) and Possibly_noisy flag."""

    lesion_type: int
    long_mm: float
    noisy: int = 0


@dataclass
class KeySlicePlan:
    """Lesions measured on one slice; ``index`` is the 1-based slice number in its series."""

    lesions: list[LesionPlan]
    lo: float
    hi: float
    level: float = 0.0
    index: int = 0

    @property
    def reach_mm(self) -> float:
        """Upper bound of how far (mm) the group's lesions extend along z from the key slice."""
        return max(0.75 * les.long_mm for les in self.lesions)


@dataclass
class SeriesPlan:
    """A series: scanner settings (spacing x, y, z in mm; contrast phase; noise), its
    render seed, its key slices, and the z (mm) of its slice 1."""

    series_id: int
    spacing: tuple[float, float, float]
    phase: str
    noise_hu: float
    seed: int
    keys: list[KeySlicePlan] = field(default_factory=list)
    first_z_mm: float = 0.0

    def slice_level(self, index: int, length_mm: float) -> float:
        """Body level of slice ``index`` (1-based) of this series."""
        return (self.first_z_mm + (index - 1) * self.spacing[2]) / length_mm


@dataclass
class StudyPlan:
    """A study (1-based index within its patient) and its series."""

    study_index: int
    series: list[SeriesPlan] = field(default_factory=list)


@dataclass
class PatientPlan:
    """A patient: index, split (1/2/3, for all their rows), demographics, body, studies."""

    patient_index: int
    split: int
    gender: str
    age: int | None
    anatomy: PatientAnatomy
    studies: list[StudyPlan] = field(default_factory=list)


def split_counts(n_lesions: int) -> dict[int, int]:
    """Lesions per split (1 train, 2 val, 3 test): ~60/15/25 %, each >= 1 when ``n >= 6``."""
    n_val = round(SPLIT_FRACTIONS[2] * n_lesions)
    n_test = round(SPLIT_FRACTIONS[3] * n_lesions)
    if n_lesions >= 6:
        n_val, n_test = max(1, n_val), max(1, n_test)
    n_train = n_lesions - n_val - n_test
    return {1: n_train, 2: n_val, 3: n_test}


def _group_sizes(rng: np.random.Generator, n: int, min_multi: int) -> list[int]:
    """Sizes (1-3) of key-slice groups summing to ``n``, with >= ``min_multi`` multi-lesion groups."""
    sizes: list[int] = []
    while sum(sizes) < n:
        r = rng.random()
        k = 3 if r < 0.06 else 2 if r < 0.33 else 1
        sizes.append(min(k, n - sum(sizes)))
    while sum(s > 1 for s in sizes) < min_multi and sizes.count(1) >= 2:
        sizes.remove(1)
        sizes.remove(1)
        sizes.append(2)
    rng.shuffle(sizes)
    return sizes


def _weighted_type(rng: np.random.Generator, allowed: list[int]) -> int:
    """A type from ``allowed`` drawn with DeepLesion's relative frequencies."""
    w = np.array([TYPE_WEIGHTS[t] for t in allowed])
    return int(allowed[int(rng.choice(len(allowed), p=w / w.sum()))])


def _long_mm(rng: np.random.Generator, lesion_type: int) -> float:
    """Long axis (mm): log-normal, median 18 mm, clipped to 5.5..type maximum (most lesions small;
    5.5 so that calibration and annotator jitter keep every measured lesion >= 5 mm)."""
    return float(np.clip(math.exp(rng.normal(math.log(18.0), 0.6)), 5.5, TYPE_MAX_MM[lesion_type]))


def _make_group(rng: np.random.Generator, size: int, primary: int) -> KeySlicePlan:
    """A key slice with a lesion of type ``primary`` plus ``size - 1`` lesions that exist at its level."""
    lo, hi = TYPE_LEVELS[primary]
    level = rng.uniform(lo, hi)
    types = [primary]
    for _ in range(size - 1):
        if rng.random() < 0.5 and primary not in (1, 7):
            types.append(primary)
        else:
            types.append(_weighted_type(rng, [t for t, (a, b) in TYPE_LEVELS.items() if a <= level <= b]))
    lo = max(TYPE_LEVELS[t][0] for t in types)
    hi = min(TYPE_LEVELS[t][1] for t in types)
    return KeySlicePlan([LesionPlan(t, _long_mm(rng, t)) for t in types], lo, hi, level)


def _fits(series: SeriesPlan, group: KeySlicePlan, level: float, length_mm: float) -> bool:
    """Whether a key slice at ``level`` keeps clear of the series' other sub-volumes.

    Lesions reach at most ``reach_mm`` along z (their z extent, blob offsets and the
    sub-slice offset of their centre included); two more intervals cover snapping both
    key slices to the slice grid.
    """
    dz = series.spacing[2]
    for other in series.keys:
        gap = NEIGHBOURS * dz + max(group.reach_mm, other.reach_mm) + 2 * dz
        if abs(level - other.level) * length_mm < gap:
            return False
    return True


def _new_series(rng: np.random.Generator, series_id: int, anatomy: PatientAnatomy) -> SeriesPlan:
    """Scanner settings: the field of view is 2.1-2.7 x the body's half width (so the body
    fits, as a technologist would set it), on a 512 matrix, clipped to 0.6-1.0 mm."""
    fov = round(rng.uniform(2.1, 2.7) * anatomy.half_width_mm)
    px = float(f"{min(1.0, max(0.6, fov / 512.0)):.6g}")
    dz = float(rng.choice(SLICE_INTERVALS, p=[0.2, 0.3, 0.5]))
    phase = str(rng.choice(["native", "arterial", "portal"], p=[0.2, 0.15, 0.65]))
    return SeriesPlan(series_id, (px, px, dz), phase, float(rng.uniform(10.0, 25.0)), int(rng.integers(2**31)))


def _place(rng: np.random.Generator, study: StudyPlan, group: KeySlicePlan, anatomy: PatientAnatomy) -> None:
    """Put ``group`` into a series of ``study`` where it fits (new series if none), choosing its level.

    One time in four a group opens a new series even if it would fit (a study's lesions
    are often measured on different reconstructions), so series IDs above 1 occur.
    """
    candidates = study.series if rng.random() > 0.25 else []
    for series in candidates + [None]:
        if series is None:
            series = _new_series(rng, len(study.series) + 1, anatomy)
            study.series.append(series)
        levels = np.append(np.arange(group.lo, group.hi, 0.002), group.level)
        ok = [lv for lv in levels if _fits(series, group, lv, anatomy.length_mm)]
        if ok:
            group.level = float(ok[int(rng.integers(len(ok)))]) if series.keys else group.level
            series.keys.append(group)
            return


def _number_slices(rng: np.random.Generator, series: SeriesPlan, length_mm: float) -> None:
    """Put the series' first slice 10-150 mm above its highest key slice and snap the
    key slices to the slice grid (their levels move by at most half an interval)."""
    dz = series.spacing[2]
    series.keys.sort(key=lambda k: k.level)
    top = series.keys[0].level * length_mm
    series.first_z_mm = top - (NEIGHBOURS + 1) * dz - rng.uniform(10.0, 150.0)
    for key in series.keys:
        key.index = int(round((key.level * length_mm - series.first_z_mm) / dz)) + 1
        key.level = series.slice_level(key.index, length_mm)


def plan_corpus(n_lesions: int, seed: int) -> list[PatientPlan]:
    """The full corpus plan for ``n_lesions`` lesions, deterministic in ``seed``.

    Patients are returned in ``patient_index`` order; their numbering is shuffled
    across splits, as in DeepLesion where the index carries no split information.
    """
    if n_lesions < 1:
        raise ValueError(f"n_lesions must be >= 1, got {n_lesions}")
    rng = np.random.default_rng(np.random.SeedSequence([seed, 20240611]))
    counts = split_counts(n_lesions)
    sizes = {s: _group_sizes(rng, counts[s], min(3, counts[s] // 6) if s == 1 else 0) for s in (1, 2, 3)}
    if n_lesions >= 24:  # enough val/test key slices to show each of the 8 types once
        while len(sizes[2]) + len(sizes[3]) < 8:
            s = 3 if any(k > 1 for k in sizes[3]) else 2
            i = next(i for i, k in enumerate(sizes[s]) if k > 1)
            sizes[s][i] -= 1
            sizes[s].append(1)
    evaluated = [(s, i) for s in (2, 3) for i in range(len(sizes[s]))]
    order = rng.permutation(len(evaluated))
    forced = {}
    if n_lesions >= 24:
        for t, j in zip(rng.permutation(np.arange(1, 9)), order[:8]):
            forced[evaluated[j]] = int(t)
    groups: dict[int, list[KeySlicePlan]] = {}
    for s in (1, 2, 3):
        groups[s] = [_make_group(rng, k, forced.get((s, i)) or _weighted_type(rng, list(TYPE_WEIGHTS)))
                     for i, k in enumerate(sizes[s])]

    patients: list[PatientPlan] = []
    for s in (1, 2, 3):
        pending = list(groups[s])
        while pending:
            take = min(len(pending), int(rng.integers(2, 6)))
            mine, pending = pending[:take], pending[take:]
            female = bool(rng.random() < 0.5)
            age = None if rng.random() < 0.1 else int(rng.integers(18, 90))
            anatomy = make_patient_anatomy(np.random.default_rng(rng.integers(2**31)), female)
            patient = PatientPlan(0, s, "F" if female else "M", age, anatomy)
            while mine:
                study = StudyPlan(len(patient.studies) + 1)
                take = min(len(mine), int(rng.integers(1, 3)))
                for group in mine[:take]:
                    _place(rng, study, group, anatomy)
                mine = mine[take:]
                patient.studies.append(study)
            patients.append(patient)
    if len(patients) >= 4 and all(p.age is not None for p in patients):
        patients[int(rng.integers(len(patients)))].age = None  # DeepLesion has missing ages: show one
    order = rng.permutation(len(patients))
    patients = [patients[i] for i in order]
    for i, p in enumerate(patients, start=1):
        p.patient_index = i
        for study in p.studies:
            for series in study.series:
                _number_slices(rng, series, p.anatomy.length_mm)
    lesions = [les for p in patients for st in p.studies for se in st.series for k in se.keys for les in k.lesions]
    for i in rng.choice(len(lesions), size=round(0.05 * len(lesions)), replace=False):
        lesions[int(i)].noisy = 1
    return patients
