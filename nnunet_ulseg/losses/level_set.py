"""Regional level set loss, AHRNet Sec. 2.2, Eq. 2 (and the "LS" whole-image variant, Table 2 row 5).

    l_rls = 1/|I'| sum_{i in I'} [lambda1 p(i) |i - c1|^2 + lambda2 (1 - p(i)) |i - c2|^2]

with lambda1 = 1, lambda2 = 3 (paper), i the image intensity at pixel i, p the predicted lesion
probability and I' the constrained region (``region.py``).

Choices where the paper is silent:

- c1, c2: Eq. 1 defines them as the mean intensity inside/outside the contour (Chan-Vese). With a soft
  p we use the p- and (1 - p)-weighted means over I':
  ``c1 = sum_{I'} p i / sum_{I'} p``, ``c2 = sum_{I'} (1 - p) i / sum_{I'} (1 - p)``
  (denominators clamped at 1e-6: when p is ~0 over all of I', its term vanishes anyway).
- Detaching c1, c2 (``detach_means=True``, default): these weighted means are exactly the minimisers of
  Eq. 2 over c1, c2 for fixed p (d l_rls / d c1 = -2 lambda1/|I'| sum p (i - c1) = 0), so by the
  envelope theorem the gradient w.r.t. p is the same with or without back-propagating through them.
  Detaching is the classic alternating Chan-Vese scheme (update c, then phi), costs less and avoids
  round-off in the cancelling terms; ``detach_means=False`` is kept and tested to behave the same.
- Intensities: channel 0 of the network input (the key slice; further channels, if any, are context)
  as nnU-Net hands it to the network, i.e. after its CT normalisation (clipped and z-scored with the
  dataset's foreground statistics), not raw HU. For a deep-supervision output smaller than the input,
  the image is reduced to the output's size by area averaging (``F.interpolate(mode="area")``, the
  mean of each output pixel's footprint, matching the nearest-downsampled target's grid for nnU-Net's
  integer scale factors). An output larger than the image is an error.
- Intensity scale (``normalize_intensity=True``, default): the per-sample loss is divided by
  ``var_{I'}(i) + var_eps`` (the intensity variance inside the sample's region, no gradient),
  which equals z-scoring i inside I'. This makes l_rls invariant to the dataset-dependent z-score of
  nnU-Net (and to a lesion's contrast), bounded by about lambda2, and so comparable to l_seg: the
  paper's weight 0.1 then means "a tenth of the segmentation loss" whatever the normalisation. The floor
  ``var_eps = 0.01`` (z-units squared, about a tenth of the dataset's lesion intensity std) keeps a
  nearly flat, noise-only region from being amplified to an O(1) loss. ``False`` gives Eq. 2 literally
  on nnU-Net's intensities.
- Ignore-label pixels are NOT removed: Eq. 2 uses no labels, and in rounds >= 2 the ignore band is where
  the level set must act (``region.py``). Only BCE and IoU mask them.
- Batch: Eq. 2 per sample, then the mean over the B samples. A sample with an empty I' (empty mask)
  contributes 0 but still counts in B, so one sample's weight does not depend
  on the others. The result stays connected to ``logits`` (DDP), even when all of I' is empty.
- p = softmax(logits)[:, 1]; everything in float32 with autocast off (see ``_common``).
"""
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from nnunet_ulseg.losses._common import check_logits_target, foreground_log_probs, fp32_region, spatial_axes
from nnunet_ulseg.losses.region import REGIONS, build_region


def intensity_at(image: torch.Tensor, spatial_shape: Sequence[int]) -> torch.Tensor:
    """Channel 0 of ``image`` (B, C, *spatial_in) as float32 (B, 1, *spatial_shape), area-averaged if smaller.

    Raises ValueError if ``spatial_shape`` has another dimensionality or is larger than the image.
    """
    spatial_shape = tuple(int(n) for n in spatial_shape)
    if image.ndim != len(spatial_shape) + 2:
        raise ValueError(f"image must be (B, C, *spatial) with {len(spatial_shape)} spatial dims, "
                         f"got shape {tuple(image.shape)}")
    with fp32_region(image.device.type):
        intensity = image[:, :1].float()
        in_shape = tuple(intensity.shape[2:])
        if in_shape == spatial_shape:
            return intensity
        if any(o > i for o, i in zip(spatial_shape, in_shape)):
            raise ValueError(f"output {spatial_shape} is larger than the image {in_shape}; "
                             f"the level set loss only reduces the image")
        return F.interpolate(intensity, size=spatial_shape, mode="area")


def level_set_energy(p: torch.Tensor, intensity: torch.Tensor, region: torch.Tensor,
                     lambda1: float = 1.0, lambda2: float = 3.0, detach_means: bool = True,
                     normalize_intensity: bool = True, var_eps: float = 1e-2) -> torch.Tensor:
    """Eq. 2 per sample, float32 tensors (B, 1, *spatial); returns the (B,) per-sample losses.

    ``p`` in [0, 1], ``intensity`` the image, ``region`` bool (I').
    """
    axes = spatial_axes(p)
    r = region.float()
    count = r.sum(axes, keepdim=True)
    w1 = p * r
    w2 = (1 - p) * r
    c1 = (w1 * intensity).sum(axes, keepdim=True) / w1.sum(axes, keepdim=True).clamp_min(1e-6)
    c2 = (w2 * intensity).sum(axes, keepdim=True) / w2.sum(axes, keepdim=True).clamp_min(1e-6)
    if detach_means:
        c1, c2 = c1.detach(), c2.detach()
    energy = lambda1 * p * (intensity - c1) ** 2 + lambda2 * (1 - p) * (intensity - c2) ** 2
    energy = torch.where(region, energy, torch.zeros_like(energy))
    loss = energy.sum(axes, keepdim=True) / count.clamp_min(1)
    if normalize_intensity:
        with torch.no_grad():
            mean = (r * intensity).sum(axes, keepdim=True) / count.clamp_min(1)
            var = (r * (intensity - mean) ** 2).sum(axes, keepdim=True) / count.clamp_min(1)
        loss = loss / (var + var_eps)
    return loss.flatten()


class RegionalLevelSetLoss(nn.Module):
    def __init__(self, lambda1: float = 1.0, lambda2: float = 3.0, region: str = "rls",
                 ignore_label: Optional[int] = 2, scale: float = 2.0, detach_means: bool = True,
                 normalize_intensity: bool = True, var_eps: float = 1e-2):
        """Eq. 2 over I' (``region="rls"``) or the whole patch (``region="image"``, the LS ablation).

        ``forward(logits (B,2,*sp), target (B,1,*sp), image (B,C,*sp_in))`` -> float32 scalar, the
        batch mean of the per-sample losses. See the module docstring for every choice.
        """
        super().__init__()
        if region not in REGIONS:
            raise ValueError(f"region must be one of {REGIONS}, got {region!r}")
        self.lambda1 = lambda1
        self.lambda2 = lambda2
        self.region = region
        self.ignore_label = ignore_label
        self.scale = scale
        self.detach_means = detach_means
        self.normalize_intensity = normalize_intensity
        self.var_eps = var_eps

    def forward(self, logits: torch.Tensor, target: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        check_logits_target(logits, target)
        if image.shape[0] != logits.shape[0]:
            raise ValueError(f"image batch {image.shape[0]} != logits batch {logits.shape[0]}")
        with fp32_region(logits.device.type):
            p, _, _ = foreground_log_probs(logits)
            intensity = intensity_at(image, logits.shape[2:])
            region = build_region(target, self.region, self.ignore_label, self.scale)
            per_sample = level_set_energy(p, intensity, region, self.lambda1, self.lambda2, self.detach_means,
                                          self.normalize_intensity, self.var_eps)
            return per_sample.mean()
