"""Pseudo-mask update between training rounds (AHRNet Sec. 2.3).

"Based on the prediction p from the trained model and the fitted ellipse e, we
construct an updated pseudo mask g' by setting p ∩ e as the foreground, p ∪ e − p ∩ e
as the ignored region, and the rest as the background."  Labels follow docs/DESIGN.md:
0 background, 1 lesion, 2 ignore.

Before the rule is applied, ``p`` is restricted to the RECIST ellipse's neighbourhood
(:func:`restrict_to_ellipse`).  Reason: the regional level set region I' of the next round is
the candidate lesion ``lesion OR ignore`` scaled x2 about its centroid (``losses/region.py``,
derived from the augmented target).  With the literal rule one spurious predicted blob far
from the mark becomes ignore, moves the centroid and inflates I' (a 20x20 blob in a 128 px
crop halves I''s overlap with the ellipse's), whereas the paper's I' is the dilated ellipse.
A RECIST mark names one lesion, so predicted components that do not touch ``e`` are not that
lesion: they become background, which is also what round 1's ellipse label says of them.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from nnunet_ulseg.labels import BACKGROUND, IGNORE, LESION  # noqa: F401 - re-exported (refine.labels)



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


#: 8-connectivity: a diagonal step keeps a thin predicted rim one component
_EIGHT = np.ones((3, 3), bool)


def scale_about_centroid(mask: np.ndarray, scale: float = 2.0) -> np.ndarray:
    """``mask`` scaled by ``scale`` about its centroid (nearest inverse mapping), 2D bool.

    The numpy twin of :func:`nnunet_ulseg.losses.region.scale_mask_about_centroid` for label
    building: x is inside iff the pixel nearest to ``c + (x - c) / scale`` is.  Empty stays empty.
    """
    m = np.asarray(mask, bool)
    if m.ndim != 2:
        raise ValueError(f"expected a 2D mask, got shape {m.shape}")
    if not m.any():
        return m.copy()
    ys, xs = np.nonzero(m)
    cy, cx = ys.mean(), xs.mean()
    yy, xx = np.mgrid[:m.shape[0], :m.shape[1]]
    sy = np.clip(np.rint(cy + (yy - cy) / scale).astype(int), 0, m.shape[0] - 1)
    sx = np.clip(np.rint(cx + (xx - cx) / scale).astype(int), 0, m.shape[1] - 1)
    return m[sy, sx]


def restrict_to_ellipse(p: np.ndarray, ellipse: np.ndarray, scale: float = 2.0) -> np.ndarray:
    """The part of prediction ``p`` that can be the lesion RECIST ellipse ``ellipse`` marks.

    Keeps the 8-connected components of ``p`` that overlap the ellipse, clipped to the ellipse
    scaled by ``scale`` about its centre (x2 = the region I' of round 1, AHRNet Sec. 2.2): the
    RECIST long axis is the lesion's longest diameter, so a lesion lies inside its long x short
    box, which the x2 ellipse contains; anything beyond is a leak.  With an empty ellipse ``p``
    is returned unchanged (there is no mark to restrict to).
    """
    p, e = np.asarray(p, bool), np.asarray(ellipse, bool)
    if not e.any():
        return p.copy()
    components, n = ndimage.label(p, structure=_EIGHT)
    touching = np.unique(components[e & p])
    kept = np.isin(components, touching[touching > 0])
    return kept & scale_about_centroid(e, scale)


def update_pseudo_mask(prediction: np.ndarray, ellipse: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """The round r+1 label map g' (uint8, values 0/1/2) from prediction ``p`` and ellipse ``e``.

    Choice where the paper is silent: when ``p ∩ e`` is empty (an empty prediction, or one
    that misses the ellipse entirely) the rule would leave the case with no lesion pixel
    at all, only an ignore region.  A RECIST mark guarantees a lesion under it, so we
    fall back to the ellipse itself as foreground (the round-1 label) and keep the
    prediction's pixels outside it as ignore: the model's miss is treated as the model's
    failure, not as evidence that the lesion is absent.

    ``p`` is first :func:`restrict_to_ellipse`'d (module docstring): lesion = p AND e is
    unchanged by that, but the ignore band stays in the ellipse's neighbourhood.
    """
    p = binarize_prediction(prediction, threshold)
    e = np.asarray(ellipse).astype(bool)
    if p.shape != e.shape:
        raise ValueError(f"prediction shape {p.shape} differs from ellipse shape {e.shape}")
    p = restrict_to_ellipse(p, e)
    foreground = p & e
    if not foreground.any():
        foreground = e
    label = np.full(e.shape, BACKGROUND, dtype=np.uint8)
    label[p | e] = IGNORE
    label[foreground] = LESION
    return label
