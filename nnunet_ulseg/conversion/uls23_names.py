"""What a ULS23 VOI's file name says: patient, study, series, lesion type and a display window.

ULS23 (DIAGNijmegen/ULS23, ``annotations/ULS23/...``) names its VOIs after their source:

* DeepLesion-derived VOIs (``novel_data/ULS23_DeepLesion3D`` and the weakly annotated
  DeepLesion parts) carry DeepLesion's key-slice name:
  ``<patient:06d>_<study:02d>_<series:02d>_<slice:03d>[_lesion_<NN>]``, e.g.
  ``000010_02_02_100_lesion_01.nii.gz`` is DeepLesion's ``000010_02_02_100.png``.
* The other sub-datasets use ``<source>_<case>_lesion_<NN>[_sample_<K>]``, e.g.
  ``bone_00002_lesion_01.nii.gz`` (Radboudumc bone), ``lidcidri_100_lesion_01_sample_0.nii.gz``
  (LIDC-IDRI).  ``<source>_<case>`` is one patient scan; its lesions and samples share it.

Choices where ULS23 is silent:

* The patient of a DeepLesion-derived VOI is DeepLesion's ``Patient_index``.  Other names
  give a *case key* (``bone_00002``); the converter numbers the distinct keys in sorted
  order from :data:`CASE_ID_BASE` (so they never collide with DeepLesion's < 10^6 indices),
  and records the key itself in ``uls23_volumes.csv``.  A name matching neither pattern
  is its own patient (:data:`VOI_ID_BASE` + rank): a per-VOI split, which the converter
  warns about.
* ``study``/``series`` are 0 ("unknown"; DeepLesion's indices start at 1) unless the name
  is DeepLesion-derived.
* ``lesion_type`` uses DeepLesion's coarse codes: 1 bone for ``bone_*``, 5 lung for
  ``lidcidri_*`` (LIDC-IDRI is a lung-nodule set), otherwise -1 (unknown, as DeepLesion's
  training rows).  The window (HU min, max; used by the mark-grabcut post-processing) is
  the conventional one of that type: bone W1500/L300, lung W1500/L-600, else soft tissue
  W400/L40.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

#: File name endings read as VOIs (ULS23 ships ``.nii.gz``; the others are read the same way).
VOI_SUFFIXES = (".nii.gz", ".nii", ".mha", ".nrrd")
#: First patient id given to ``<source>_<case>`` keys (DeepLesion patient indices stay below it).
CASE_ID_BASE = 1_000_000
#: First patient id given to VOIs whose name identifies no patient (one patient per VOI).
VOI_ID_BASE = 2_000_000

SOFT_TISSUE_WINDOW = (-160.0, 240.0)
LUNG_WINDOW = (-1350.0, 150.0)
BONE_WINDOW = (-450.0, 1050.0)
#: ``<source>`` prefix -> (DeepLesion coarse lesion type, window); unknown sources get (-1, soft tissue).
SOURCE_TYPES: dict[str, tuple[int, tuple[float, float]]] = {
    "bone": (1, BONE_WINDOW),
    "lidcidri": (5, LUNG_WINDOW),
}

_DEEPLESION = re.compile(r"(\d{6})_(\d{2})_(\d{2})_(\d{3})(?:_lesion_\d+)?")
_SOURCE_CASE = re.compile(r"(([A-Za-z0-9-]+)_.+?)_lesion_\d+(?:_sample_\d+)?")


def voi_stem(file_name: str) -> str | None:
    """``file_name`` without its VOI ending (``x.nii.gz`` -> ``x``); None when it is not a VOI file."""
    lower = file_name.lower()
    for suffix in VOI_SUFFIXES:
        if lower.endswith(suffix) and len(file_name) > len(suffix):
            return file_name[: -len(suffix)]
    return None


@dataclass(frozen=True, slots=True)
class VoiName:
    """What one VOI file name says (see the module docstring for the rules)."""

    file_name: str
    stem: str
    kind: str  # "deeplesion", "case" or "voi" (no patient in the name)
    case_key: str  # DeepLesion series + slice, "<source>_<case>", or the stem
    patient: int | None  # DeepLesion patient index; None until numbered (other kinds)
    study: int
    series: int
    lesion_type: int
    window: tuple[float, float]

    @property
    def deeplesion_file_name(self) -> str | None:
        """DeepLesion's ``File_name`` of the key slice this VOI was cut around, if DeepLesion-derived."""
        return f"{self.case_key}.png" if self.kind == "deeplesion" else None


def parse_voi_name(file_name: str) -> VoiName:
    """Read patient/study/series, lesion type and window from a VOI file name."""
    stem = voi_stem(file_name)
    if stem is None:
        raise ValueError(f"{file_name}: not a VOI file (expected one of {', '.join(VOI_SUFFIXES)})")
    m = _DEEPLESION.fullmatch(stem)
    if m:
        patient, study, series, _ = (int(g) for g in m.groups())
        key = "_".join(m.groups())
        return VoiName(file_name, stem, "deeplesion", key, patient, study, series, -1, SOFT_TISSUE_WINDOW)
    m = _SOURCE_CASE.fullmatch(stem)
    if m:
        lesion_type, window = SOURCE_TYPES.get(m.group(2).lower(), (-1, SOFT_TISSUE_WINDOW))
        return VoiName(file_name, stem, "case", m.group(1), None, 0, 0, lesion_type, window)
    return VoiName(file_name, stem, "voi", stem, None, 0, 0, -1, SOFT_TISSUE_WINDOW)


def number_patients(names: list[VoiName]) -> dict[str, int]:
    """Patient id per VOI file name: DeepLesion's index, else the rank of the case key (see module docstring)."""
    case_keys = sorted({n.case_key for n in names if n.kind == "case"})
    voi_keys = sorted({n.case_key for n in names if n.kind == "voi"})
    case_ids = {k: CASE_ID_BASE + i for i, k in enumerate(case_keys)}
    voi_ids = {k: VOI_ID_BASE + i for i, k in enumerate(voi_keys)}
    out = {}
    for n in names:
        if n.kind == "deeplesion":
            out[n.file_name] = n.patient
        elif n.kind == "case":
            out[n.file_name] = case_ids[n.case_key]
        else:
            out[n.file_name] = voi_ids[n.case_key]
    return out


def case_id_for(stem: str) -> str:
    """nnU-Net case id of a VOI: ``ULS_<stem>`` with characters other than letters, digits, ``_`` and ``-`` as ``_``."""
    return "ULS_" + re.sub(r"[^A-Za-z0-9_-]", "_", stem)
