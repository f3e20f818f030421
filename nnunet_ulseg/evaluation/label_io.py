"""Reading label images for the evaluation: crop-geometry label files and reference arrays.

One reader (SimpleITK) for every format the evaluation meets (``.mha``, ``.nii.gz``,
``.nii``, ``.nrrd``), so crops, key-slice references and ULS23 VOIs are read the same
way: as the array SimpleITK returns, indexed ``[z, y, x]`` (``[y, x]`` for 2D files),
with singleton axes squeezed (ULS23 label files carry a trailing one, 256 x 256 x 128 x 1,
which SimpleITK reads as a 4D image or as a vector image; both squeeze to ``[z, y, x]``).

Label values of crop-geometry files (predictions, pseudo labels, crop references):
:class:`LabelRule` and :func:`lesion_and_ignore` (issue 12, case 5).  The contract is
CONVENTIONS "Files": 0 background, 1 lesion, 2 ignore.  The values are checked because
reading "1 = lesion, the rest background" turns a 0/255 mask, a probability map or a
label 3 into empty predictions that score Dice 0 for every lesion without a word:

* {0, 1, 2} is read as it is; 2 (the ignore band of a refined pseudo label) is
  *background* for the lesion mask and returned separately, for the callers that leave
  it out (``score_folder``'s ``dice_labelled``).  A float file whose values are these
  integers (0.0 / 1.0, how ULS23 stores labels) is a label file too.
* Any other value (255, a non-integral float, a negative number, 3) is a ``ValueError``
  naming the file, the first offending values, the values found and the two options:
* ``lesion_label`` N (``--lesion-label``): N is the lesion; allowed values are then
  {0, N, 2}, e.g. a 0/255 mask with N = 255.
* ``threshold`` T (``--threshold``): a probability (or score) map; lesion where
  value >= T; no ignore label, no value check beyond finiteness.  T must be > 0 so that the
  background value 0 is never lesion.  The two options exclude each other.

The slice-geometry references (:mod:`.references.png`, :mod:`.references.volume`) keep
their own documented rule (:func:`foreground`: any value > 0 is lesion, floats > 0.5):
a DeepLesion-style PNG mask is 0/255 by nature, and a shared slice is an instance map.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nnunet_ulseg.labels import IGNORE, LESION

#: File endings read as label images (``.png`` references are read with OpenCV instead).
IMAGE_ENDINGS = (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd")


def has_image_ending(name: str) -> bool:
    """True when ``name`` ends with one of :data:`IMAGE_ENDINGS` (case-insensitive)."""
    return name.lower().endswith(IMAGE_ENDINGS)


def read_label_array(path: str | Path) -> np.ndarray:
    """The array of a label image, ``[z, y, x]`` or ``[y, x]``, every singleton axis removed.

    Raises ``ValueError`` naming the file when it cannot be read or has more than three
    non-singleton axes.
    """
    import SimpleITK as sitk

    try:
        array = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    except RuntimeError as exc:
        raise ValueError(f"{path}: cannot read as an image ({str(exc).strip().splitlines()[-1]})") from None
    squeezed = np.squeeze(array)
    if squeezed.ndim > 3:
        raise ValueError(f"{path}: label array of shape {array.shape} has more than 3 non-singleton axes")
    return squeezed


def read_crop_mask(path: str | Path) -> np.ndarray:
    """A 2D crop-geometry label image (``.mha`` etc.) as a ``[y, x]`` array."""
    import SimpleITK as sitk

    array = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    return array.reshape(array.shape[-2:])


#: CONVENTIONS "Files": the lesion and ignore labels of every crop-geometry label file.
LESION_LABEL = LESION
IGNORE_LABEL = IGNORE
#: How many distinct values an error message shows.
SHOWN_VALUES = 6


@dataclass(frozen=True)
class LabelRule:
    """How a crop-geometry label file becomes a lesion mask (module docstring).

    ``lesion_label``: the lesion value (``None``: :data:`LESION_LABEL`); ``threshold``:
    read a probability map, lesion where value >= ``threshold`` (then ``lesion_label``
    must be ``None``); ``ignore_label``: background for the lesion, reported apart.
    ``hint``: the sentence that ends an error (how the user can fix it); by default
    it names ``--lesion-label`` and ``--threshold``.
    """

    lesion_label: int | None = None
    threshold: float | None = None
    ignore_label: int = IGNORE_LABEL
    hint: str | None = None

    def __post_init__(self):
        if self.threshold is not None and self.lesion_label is not None:
            raise ValueError("give a lesion label (--lesion-label) or a threshold (--threshold), not both")
        if self.lesion_label is not None and (isinstance(self.lesion_label, bool) or
                                              int(self.lesion_label) != self.lesion_label or self.lesion_label == 0):
            raise ValueError(f"lesion label must be a non-zero integer (0 is background), got {self.lesion_label!r}")
        if self.threshold is not None and not (math.isfinite(self.threshold) and self.threshold > 0):
            raise ValueError(f"threshold must be a finite number > 0 (0 is background), got {self.threshold!r}")

    @property
    def lesion(self) -> int:
        """The lesion value of a label file."""
        return LESION_LABEL if self.lesion_label is None else int(self.lesion_label)

    def allowed(self) -> tuple[int, ...]:
        """The values a label file may hold: 0, the lesion value and the ignore label."""
        return tuple(sorted({0, self.lesion, self.ignore_label}))

    def describe(self) -> str:
        """One line for reports and ``summary.json``."""
        if self.threshold is not None:
            return f"probability map: lesion where value >= {self.threshold:g} (--threshold), the rest background"
        option = "" if self.lesion_label is None else ", --lesion-label"
        return (f"0 background, {self.lesion} lesion{option}, {self.ignore_label} ignore (background); any other "
                "value is an error")

    def with_hint(self, hint: str) -> "LabelRule":
        """This rule with another fix-it sentence (e.g. for references, which the options do not touch)."""
        return LabelRule(self.lesion_label, self.threshold, self.ignore_label, hint)


#: The contract: 0 background, 1 lesion, 2 ignore.
DEFAULT_RULE = LabelRule()
OPTIONS_HINT = ("give --lesion-label N if another value is the lesion (e.g. --lesion-label 255 for a 0/255 mask) or "
                "--threshold T for a probability map (lesion where value >= T)")


def _number(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def _values_text(values: np.ndarray) -> str:
    """The first :data:`SHOWN_VALUES` of sorted unique ``values``, ``, ...`` when there are more."""
    shown = ", ".join(_number(v) for v in values[:SHOWN_VALUES].tolist())
    return shown + (", ..." if values.size > SHOWN_VALUES else "")


def _found_text(values: np.ndarray) -> str:
    """What a file holds: its sorted unique ``values``, or their count and range when there are many."""
    if values.size <= SHOWN_VALUES:
        return _values_text(values)
    return f"{values.size} distinct values from {_number(values[0].item())} to {_number(values[-1].item())}"


def lesion_and_ignore(array: np.ndarray, path: str | Path, rule: LabelRule = DEFAULT_RULE
                      ) -> tuple[np.ndarray, np.ndarray]:
    """``(lesion, ignore)`` boolean masks of a label ``array`` read from ``path``, by ``rule`` (module docstring).

    A bool array is a lesion mask as it is.  Raises ``ValueError`` naming ``path``, the
    offending values, the values found and ``rule.hint`` for a value the rule does not
    allow, and for non-finite values.
    """
    array = np.asarray(array)
    none = np.zeros(array.shape, dtype=bool)
    if array.dtype == bool:
        return array.copy(), none
    if not np.issubdtype(array.dtype, np.number):
        raise ValueError(f"{path}: label values of type {array.dtype} are not numbers")
    hint = rule.hint if rule.hint is not None else OPTIONS_HINT
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        raise ValueError(f"{path}: label values not finite (NaN or inf) in {int((~np.isfinite(array)).sum())} "
                         "pixel(s)")
    if rule.threshold is not None:
        return array >= rule.threshold, none
    values = np.unique(array)
    bad = values[~np.isin(values, rule.allowed())]
    if bad.size:
        lesion = f"{rule.lesion} (lesion{', --lesion-label' if rule.lesion_label is not None else ''})"
        raise ValueError(f"{path}: label values {_values_text(bad)} ({bad.size} value{'s' if bad.size > 1 else ''} "
                         f"outside 0 (background), {lesion}, {rule.ignore_label} (ignore); the file holds "
                         f"{_found_text(values)}); {hint}")
    ignore = array == rule.ignore_label if rule.ignore_label != rule.lesion else none
    return array == rule.lesion, ignore


def foreground(array: np.ndarray) -> np.ndarray:
    """Lesion pixels of a reference array: ``> 0.5`` for floating point, ``> 0`` for integers and bool.

    A float label (ULS23's float32 {0, 1}) is thresholded at half its lesion value, so
    stored rounding (0.999...) cannot drop a pixel; an integer mask counts every non-zero
    value (a 0/255 PNG, label 1, an instance id) as lesion, never as background.
    """
    array = np.asarray(array)
    if np.issubdtype(array.dtype, np.floating):
        return array > 0.5
    return array > 0
