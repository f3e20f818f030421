"""RECIST 1.1 response of target lesions over time points (Eisenhauer et al. 2009, Sec. 4.3.1).

No anchor of this product reports a response category; this module computes it from
per-lesion measurements at a baseline and one or more follow-ups, for two sources side by
side: the radiologist's marks (``recist_long_mm``/``recist_short_mm``) and the masks'
axes (``long_mm``/``short_mm``), as ``ulseg segment`` writes them.

The rules (RECIST 1.1, target lesions):

* **Sum of diameters**: the long axis of each non-nodal lesion plus the short axis of each
  lymph node (Sec. 4.2: nodes are measured by their short axis).
* **CR** (complete response): every non-nodal target lesion has disappeared (long axis 0)
  and every nodal one has a short axis < 10 mm.
* **PD** (progressive disease): the sum has grown by at least 20 % over the smallest sum on
  study (the *nadir*, the baseline included) **and** by at least 5 mm in absolute terms.
* **PR** (partial response): the sum has fallen by at least 30 % from the baseline sum.
* **SD** (stable disease): none of these.
* **NE** (not evaluable): a target lesion of the baseline has no measurement at that time
  point (RECIST: "if any target lesion is not evaluated, the response is NE" unless the
  missing one could not change the category; we do not guess, we say NE).

Choices where RECIST 1.1 leaves room for an implementation:

* PD is tested before PR: a sum can be ≥ 30 % under the baseline and still ≥ 20 % + 5 mm
  over a lower nadir; RECIST calls that progression.
* Boundaries are inclusive ("at least 30 %", "at least 20 %" and "at least 5 mm"), tested
  with a relative tolerance of 1e-9 so that 70 mm after 100 mm is a PR despite binary floats.
* The nadir of follow-up ``t`` is the smallest sum over the baseline and the follow-ups
  before ``t`` (not ``t`` itself), so a PD is judged against the best response so far.
* New lesions and non-target lesions are outside this module's inputs; a ``new_lesion``
  flag column (1 on any row of a time point) makes that time point PD, as RECIST 1.1 does.
* Lesions are matched by ``lesion_id``; a follow-up lesion unknown at baseline is an error
  (it would be a new lesion, which must be flagged as such, not silently added to the sum).
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

#: the two measurement sources: name -> (long-axis column, short-axis column)
SOURCES = {"marks": ("recist_long_mm", "recist_short_mm"), "masks": ("long_mm", "short_mm")}
CATEGORIES = ("CR", "PR", "SD", "PD", "NE")
NODE_CR_SHORT_MM = 10.0
PR_DECREASE = 0.30
PD_INCREASE = 0.20
PD_ABSOLUTE_MM = 5.0
_TOL = 1e-9


@dataclass(frozen=True)
class Lesion:
    """One target lesion at one time point (mm; ``None`` = not measured)."""

    lesion_id: str
    long_mm: float | None
    short_mm: float | None
    lymph_node: bool = False

    @property
    def diameter(self) -> float | None:
        """The lesion's contribution to the sum of diameters (RECIST 1.1 Sec. 4.2)."""
        return self.short_mm if self.lymph_node else self.long_mm


@dataclass(frozen=True)
class TimePoint:
    """A time point's response: the sum, its change from baseline and nadir, and the category."""

    name: str
    sum_mm: float | None
    change_from_baseline: float | None
    nadir_mm: float | None
    change_from_nadir_mm: float | None
    category: str
    reason: str


def sum_of_diameters(lesions: Sequence[Lesion]) -> float | None:
    """Sum of long axes (non-nodal) and short axes (nodal); ``None`` if any is unmeasured."""
    values = [lesion.diameter for lesion in lesions]
    if any(v is None for v in values):
        return None
    return float(sum(values))


def _at_least(value: float, bound: float) -> bool:
    return value >= bound - _TOL * max(1.0, abs(bound))


def categorise(baseline: Sequence[Lesion], follow_ups: Sequence[tuple[str, Sequence[Lesion]]],
               new_lesions: Mapping[str, bool] | None = None) -> list[TimePoint]:
    """RECIST 1.1 category of each follow-up (module docstring) against ``baseline``.

    ``follow_ups``: ``(name, lesions)`` in chronological order, lesions matched by id.
    ``new_lesions``: time-point name -> whether a new lesion appeared (PD).
    """
    base_ids = [lesion.lesion_id for lesion in baseline]
    if len(set(base_ids)) != len(base_ids):
        raise ValueError(f"baseline lists a lesion twice: {sorted(i for i in base_ids if base_ids.count(i) > 1)}")
    base_sum = sum_of_diameters(baseline)
    if base_sum is None:
        missing = [lesion.lesion_id for lesion in baseline if lesion.diameter is None]
        raise ValueError(f"baseline target lesions without a measurement: {missing}")
    nodes = {lesion.lesion_id: lesion.lymph_node for lesion in baseline}
    nadir = base_sum
    results = []
    for name, lesions in follow_ups:
        by_id = {}
        for lesion in lesions:
            if lesion.lesion_id not in nodes:
                raise ValueError(f"{name}: lesion {lesion.lesion_id!r} is not a baseline target lesion "
                                 "(a new lesion must be flagged with the new_lesion column, not measured as a target)")
            if lesion.lesion_id in by_id:
                raise ValueError(f"{name}: lesion {lesion.lesion_id!r} is listed twice")
            by_id[lesion.lesion_id] = Lesion(lesion.lesion_id, lesion.long_mm, lesion.short_mm, nodes[lesion.lesion_id])
        missing = [i for i in base_ids if i not in by_id or by_id[i].diameter is None]
        if missing:
            results.append(TimePoint(name, None, None, nadir, None, "NE", f"not measured: {', '.join(missing)}"))
            continue
        current = [by_id[i] for i in base_ids]
        total = sum_of_diameters(current)
        change = (total - base_sum) / base_sum if base_sum > 0 else math.nan
        growth = total - nadir
        if new_lesions and new_lesions.get(name):
            category, reason = "PD", "new lesion"
        elif all((lesion.short_mm < NODE_CR_SHORT_MM) if lesion.lymph_node else lesion.long_mm == 0
                 for lesion in current):
            category, reason = "CR", "all non-nodal lesions gone, all nodes < 10 mm short axis"
        elif nadir > 0 and _at_least(growth / nadir, PD_INCREASE) and _at_least(growth, PD_ABSOLUTE_MM):
            category, reason = "PD", f"+{100 * growth / nadir:.1f} % and +{growth:.1f} mm over the nadir {nadir:.1f} mm"
        elif nadir == 0 and _at_least(growth, PD_ABSOLUTE_MM):
            category, reason = "PD", f"+{growth:.1f} mm over a nadir of 0 mm"
        elif base_sum > 0 and _at_least(-change, PR_DECREASE):
            category, reason = "PR", f"{100 * change:.1f} % from the baseline sum {base_sum:.1f} mm"
        else:
            category, reason = "SD", f"{100 * change:+.1f} % from baseline, {growth:+.1f} mm over the nadir"
        results.append(TimePoint(name, total, change, nadir, growth, category, reason))
        nadir = min(nadir, total)
    return results


def _number(text: str | None, where: str) -> float | None:
    if text is None or text.strip() == "":
        return None
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{where}: not a number: {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{where}: a diameter must be a finite number >= 0, got {text!r}")
    return value


def _flag(text: str | None, where: str) -> bool:
    value = (text or "").strip().lower()
    if value in ("", "0", "false", "no", "n"):
        return False
    if value in ("1", "true", "yes", "y"):
        return True
    raise ValueError(f"{where}: expected 0/1, got {text!r}")


def read_time_point(path: str | Path, source: str) -> tuple[list[Lesion], bool]:
    """Read one time point's measurement CSV for ``source`` (:data:`SOURCES`).

    Columns: ``lesion_id``, the source's two axis columns, optionally ``lymph_node`` and
    ``new_lesion`` (0/1).  Returns the lesions and whether any row flags a new lesion.
    Errors name the file and line.
    """
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}; choose from {sorted(SOURCES)}")
    long_col, short_col = SOURCES[source]
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such measurement file")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = {"lesion_id", long_col, short_col} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path}: missing columns {sorted(missing)} (needed for the {source!r} source)")
        lesions, new = [], False
        for line, row in enumerate(reader, start=2):
            where = f"{path}, line {line}"
            lesion_id = (row["lesion_id"] or "").strip()
            if not lesion_id:
                raise ValueError(f"{where}: empty lesion_id")
            lesions.append(Lesion(lesion_id, _number(row[long_col], where), _number(row[short_col], where),
                                  _flag(row.get("lymph_node"), where)))
            new = new or _flag(row.get("new_lesion"), where)
    return lesions, new


def response_table(paths: Sequence[str | Path], sources: Sequence[str] = ("marks", "masks")) -> dict[str, list[TimePoint]]:
    """Categories of every follow-up (``paths[1:]``) against the baseline ``paths[0]``, per source."""
    if len(paths) < 2:
        raise ValueError("give a baseline and at least one follow-up measurement file")
    out = {}
    for source in sources:
        baseline, _ = read_time_point(paths[0], source)
        follow_ups, flags = [], {}
        for p in paths[1:]:
            lesions, new = read_time_point(p, source)
            follow_ups.append((str(p), lesions))
            flags[str(p)] = new
        out[source] = categorise(baseline, follow_ups, flags)
    return out
