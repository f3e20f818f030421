"""Pseudo-mask update between training rounds (AHRNet Sec. 2.3).

"Based on the prediction p from the trained model and the fitted ellipse e, we
construct an updated pseudo mask g' by setting p ∩ e as the foreground, p ∪ e − p ∩ e
as the ignored region, and the rest as the background."  Labels follow DESIGN.md:
0 background, 1 lesion, 2 ignore.
"""
from __future__ import annotations

import numpy as np

BACKGROUND, LESION, IGNORE = 0, 1, 2


def binarize_prediction(prediction: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Lesion mask from a model output.

    * integer or bool arrays are label maps (nnU-Net's exported segmentations): lesion
      where the value is 1;
    * float arrays are lesion probabilities (``softmax[:, 1]``, e.g. from nnU-Net's
      ``--save_probabilities``): lesion where ``p >= threshold``; 0.5 is the argmax
      decision of a two-class softmax, so both routes agree by default.
    """
    prediction = np.asarray(prediction)
    if prediction.dtype == bool:
        return prediction.copy()
    if np.issubdtype(prediction.dtype, np.integer):
        return prediction == LESION
    if np.issubdtype(prediction.dtype, np.floating):
        if prediction.size and (np.nanmin(prediction) < 0 or np.nanmax(prediction) > 1):
            raise ValueError("float predictions must be probabilities in [0, 1]")
        return prediction >= threshold
    raise ValueError(f"unsupported prediction dtype {prediction.dtype}")


def update_pseudo_mask(prediction: np.ndarray, ellipse: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """The round r+1 label map g' (uint8, values 0/1/2) from prediction ``p`` and ellipse ``e``.

    Choice where the paper is silent: when ``p ∩ e`` is empty (an empty prediction, or one
    that misses the ellipse entirely) the rule would leave the case with no lesion pixel
    at all, only an ignore region.  A RECIST mark guarantees a lesion under it, so we
    fall back to the ellipse itself as foreground (the round-1 label) and keep the
    prediction's pixels outside it as ignore: the model's miss is treated as the model's
    failure, not as evidence that the lesion is absent.
    """
    p = binarize_prediction(prediction, threshold)
    e = np.asarray(ellipse).astype(bool)
    if p.shape != e.shape:
        raise ValueError(f"prediction shape {p.shape} differs from ellipse shape {e.shape}")
    foreground = p & e
    if not foreground.any():
        foreground = e
    label = np.full(e.shape, BACKGROUND, dtype=np.uint8)
    label[p | e] = IGNORE
    label[foreground] = LESION
    return label
