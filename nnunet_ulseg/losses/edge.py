"""Edge targets of E²Net (Sec. 2.3, "edge distance map") and the masked sigmoid BCE that supervises them.

The paper: "We first perform distance transformation on the edge image to get a distance map. Then we
multiply it with the binary liver or tumor mask and normalize it to [0, 1]. Finally, the result of 1
minus the normalized distance map is used as supervision, where the pixels closer to the edge have
larger values." For an object mask ``m`` with edge image ``E``::

    d(x)      = distance from x to the nearest edge pixel (Euclidean distance transform of not-E)
    d_m       = d * m
    target    = (1 - d_m / max(d_m)) * m          1 on the edge, falling inward, 0 outside

``kind="edge"`` gives the plain binary edge image ``E`` instead (Table 3 "+ edge" rows).

Choices where the paper is silent:

- **Edge image**: the object's inner boundary, the object pixels with at least one 4-neighbour outside
  the object (binary erosion by the cross). It is one pixel wide and 8-connected; a 4-neighbour rule
  is symmetric under 90 degree rotations and flips, so the target follows those augmentations exactly.
- **Patch border**: pixels outside the array count as object (erosion with ``border_value=1``), so an
  object cut by the patch border gets no edge along the border: the cut is not a boundary of the organ.
- **Normalisation** ``normalise="component"`` (default): each connected object (8-connectivity) is
  divided by its own maximum distance, so every tumour, small or large, runs from 1 on its edge to 0 at
  its deepest pixel; with ``"image"`` the maximum of the whole image channel is used, and small tumours
  beside a large liver stay close to 1 throughout. An object that is all edge (one or two pixels thick)
  has maximum 0 and target 1 everywhere inside.
- **Where it is computed**: inside the loss from the augmented label (rotation, scaling, cropping all
  act on the label first), never precomputed on the raw image. Exact Euclidean distances come from
  ``scipy.ndimage.distance_transform_edt`` on the CPU: the mask is copied to host memory, each
  (sample, channel) image is transformed, and the float32 target is copied back to the mask's device.
  For 2D patches this costs about 1-2 ms per 256 x 256 image, small beside a training step; it breaks
  no autograd graph because targets carry no gradient. Any number of spatial axes works (2D is the
  paper's case).
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from nnunet_ulseg.losses._common import fp32_region

EDGE_KINDS = ("dist", "edge")
NORMALISATIONS = ("component", "image")


def edge_image(mask: np.ndarray) -> np.ndarray:
    """Bool inner boundary of a bool ``mask``: object pixels with a 4-neighbour (face neighbour) outside it.

    Pixels beyond the array count as object (see the module docstring: a patch border is not an edge).
    """
    mask = np.asarray(mask, dtype=bool)
    cross = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask & ~ndimage.binary_erosion(mask, structure=cross, border_value=1)


def edge_distance_map(mask: np.ndarray, normalise: str = "component") -> np.ndarray:
    """E²Net's edge distance-map target of one bool ``mask`` (float32, same shape): 1 on the edge, 0 outside."""
    if normalise not in NORMALISATIONS:
        raise ValueError(f"normalise must be one of {NORMALISATIONS}, got {normalise!r}")
    mask = np.asarray(mask, dtype=bool)
    out = np.zeros(mask.shape, dtype=np.float32)
    edge = edge_image(mask)
    if not edge.any():
        # no object, or one that fills the whole patch (its edge lies beyond the border): no pixel is near
        # an edge, so the target is 0 everywhere
        return out
    dist = ndimage.distance_transform_edt(~edge) * mask
    if normalise == "image":
        peak = np.full(mask.shape, dist.max())
    else:
        labels, n = ndimage.label(mask, structure=ndimage.generate_binary_structure(mask.ndim, mask.ndim))
        lut = np.zeros(n + 1)
        lut[1:] = ndimage.maximum(dist, labels, index=np.arange(1, n + 1))
        peak = lut[labels]
    norm = np.divide(dist, peak, out=np.zeros_like(dist), where=peak > 0)
    out[mask] = (1.0 - norm[mask]).astype(np.float32)
    return out


def edge_targets(masks: torch.Tensor, kind: str = "dist", normalise: str = "component") -> torch.Tensor:
    """Edge targets of every (sample, channel) of ``masks`` (B, C, *spatial), float32 on ``masks``' device.

    ``masks`` is read as ``masks > 0.5`` (bool, 0/1 integer or float region maps). ``kind``: ``"dist"``
    (E²Net's distance map) or ``"edge"`` (binary edge image). Each channel is its own object (liver,
    tumour); samples and channels never influence each other.
    """
    if kind not in EDGE_KINDS:
        raise ValueError(f"kind must be one of {EDGE_KINDS}, got {kind!r}")
    if masks.ndim < 3:
        raise ValueError(f"masks must be (B, C, *spatial), got shape {tuple(masks.shape)}")
    host = (masks.detach() > 0.5).cpu().numpy()
    out = np.zeros(host.shape, dtype=np.float32)
    for b in range(host.shape[0]):
        for c in range(host.shape[1]):
            if kind == "edge":
                out[b, c] = edge_image(host[b, c])
            else:
                out[b, c] = edge_distance_map(host[b, c], normalise)
    return torch.from_numpy(out).to(masks.device, non_blocking=True)


def masked_sigmoid_bce(logits: torch.Tensor, target: torch.Tensor, valid: Optional[torch.Tensor] = None) -> torch.Tensor:
    """E²Net Eq. 1 on sigmoid outputs: BCE with (soft) targets in [0, 1], mean over the valid pixels.

    ``logits`` and ``target`` (B, C, *spatial); ``valid`` bool broadcastable to them (None: all valid).
    The mean runs over all valid (pixel, channel) entries of the batch, the reduction of our softmax BCE
    (``bce.py``) and of nnU-Net's CE, so per-pixel scales match; Eq. 1 writes a sum, which would only
    rescale the loss by the pixel count. ``binary_cross_entropy_with_logits`` is the log-sum-exp form,
    finite for any finite logits. No valid pixel: 0, still connected to ``logits``.
    """
    if logits.shape != target.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and target {tuple(target.shape)} must have the same shape")
    with fp32_region(logits.device.type):
        pixel = F.binary_cross_entropy_with_logits(logits.float(), target.float(), reduction="none")
        if valid is None:
            return pixel.mean()
        valid = valid.expand_as(pixel)
        pixel = torch.where(valid, pixel, torch.zeros_like(pixel))
        return pixel.sum() / valid.sum().clamp_min(1)
