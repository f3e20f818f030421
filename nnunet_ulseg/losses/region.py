"""The constrained region I' of the regional level set loss (AHRNet Sec. 2.2, Eq. 2; DESIGN "RLS region").

The paper builds I' by "dilating [the pseudo mask] g to four times its size so that I' is
lesion-adaptive", and shows it following the lesion through random cropping and rotation (Fig. 3).
We therefore derive I' inside the loss from the (augmented) target tensor of each sample, never from
the raw image, so it follows nnU-Net's rotation, scaling, mirroring and cropping for free.

Choices where the paper is silent:

- The mask that is scaled is the pseudo-mask lesion ``target == 1`` union the ignore region
  ``target == ignore_label``: in later rounds (Sec. 2.3) foreground = p AND e and
  ignore = (p OR e) - (p AND e), so the union is the whole candidate lesion p OR e. In round 1 there
  is no ignore label and this is the fitted ellipse itself.
- "Four times its size" = scaling by 2 about the mask's centre (4x area in 2D). The centre is the
  centroid of the mask (the ellipse centre for an ellipse; defined for any mask shape, including a
  lesion partly cropped away, where it is the centroid of the visible part).
- Implementation by inverse mapping: x is in I' iff ``M(c + (x - c) / 2) >= 0.5`` where ``M`` is the
  mask sampled with (bi/tri)linear interpolation (``grid_sample``, zero outside the patch). Linear
  interpolation thresholded at 0.5 puts the sampled boundary half-way between inside and outside
  pixel centres (ties count as inside), so I' of a rasterised ellipse equals the rasterised 2x
  ellipse up to about one pixel at the boundary (nearest sampling would allow sqrt(2)). A single
  pixel becomes itself plus its 4 neighbours. Batched over samples, no Python loop over pixels.
- 3D targets (B, 1, D, H, W) are scaled by 2 along every axis (8x volume). Scaling about a point
  commutes with per-axis voxel spacing, so anisotropic spacing needs no special care.
- An empty mask gives an empty I'. Pixels of I' that fall outside the patch are simply absent.
- Ignored pixels stay in I' (DESIGN "RLS region I'"): Eq. 2 sums over every pixel of I' and uses no
  label. In rounds >= 2 the ignore label (p OR e) - (p AND e) is exactly the boundary band where the
  model and the ellipse disagree, which is where the level set must pull the contour to the lesion
  edge; masking it (as BCE and IoU do) would leave that band with no gradient from any term.
"""
from typing import Optional

import torch
import torch.nn.functional as F

from nnunet_ulseg.losses._common import fp32_region, spatial_axes, split_target


def scale_mask_about_centroid(mask: torch.Tensor, scale: float = 2.0) -> torch.Tensor:
    """Scale each sample's binary mask by ``scale`` about its centroid (inverse-mapped linear sampling).

    :param mask: (B, 1, H, W) or (B, 1, D, H, W), bool or 0/1 of any dtype.
    :param scale: linear scale factor (2 = AHRNet's "four times its size" in 2D).
    :return: bool tensor of the same shape, on the same device. Empty masks stay empty.
    """
    if mask.ndim not in (4, 5) or mask.shape[1] != 1:
        raise ValueError(f"mask must be (B, 1, H, W) or (B, 1, D, H, W), got shape {tuple(mask.shape)}")
    if not scale > 0:
        raise ValueError(f"scale must be > 0, got {scale}")
    with fp32_region(mask.device.type):
        m = (mask != 0).float()
        batch, spatial = m.shape[0], m.shape[2:]
        axes = spatial_axes(m)
        mass = m.sum(axes).view(batch, *([1] * len(spatial)))  # (B, 1[, 1], 1)
        coords = torch.meshgrid(*[torch.arange(n, device=m.device, dtype=torch.float32) for n in spatial],
                                indexing="ij")
        normalised = []
        for coord, n in zip(coords, spatial):
            centre = (m[:, 0] * coord).sum(tuple(range(1, coord.ndim + 1)), keepdim=True) / mass.clamp_min(1)
            source = centre + (coord - centre) / scale  # (B, *spatial), pixel coordinates
            # align_corners=True: -1 and +1 are the centres of the first and last pixel
            normalised.append(source * (2.0 / (n - 1)) - 1.0 if n > 1 else torch.zeros_like(source))
        # grid_sample wants the last dimension ordered (x, y[, z]) = reversed spatial axes
        grid = torch.stack(normalised[::-1], dim=-1)
        sampled = F.grid_sample(m, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
        # ties (exactly 0.5, e.g. half-way between an inside and an outside pixel centre) are inside;
        # the tolerance absorbs the round-off of the coordinate normalisation so ties resolve symmetrically
        return sampled >= 0.5 - 1e-4


def rls_region(target: torch.Tensor, ignore_label: Optional[int] = 2, scale: float = 2.0) -> torch.Tensor:
    """I' of Eq. 2: the candidate lesion (target == 1 or ignore) scaled about its centroid.

    :param target: raw nnU-Net label map (B, 1, *spatial) with 0/1/ignore_label.
    :return: bool (B, 1, *spatial).
    """
    g, valid = split_target(target, ignore_label)
    lesion = (g > 0) | ~valid
    return scale_mask_about_centroid(lesion, scale)


#: the level set regions :func:`build_region` knows
REGIONS = ("rls", "image", "rls_labelled")


def build_region(target: torch.Tensor, kind: str, ignore_label: Optional[int] = 2,
                 scale: float = 2.0) -> torch.Tensor:
    """The pixels over which the level set loss is summed; ignore-label pixels are part of it.

    ``kind="rls"``: I' = scaled lesion (AHRNet RLS, Table 2 row 6). ``kind="image"``: the whole patch
    (the "LS" ablation, Table 2 row 5). ``kind="rls_labelled"``: I' without its ignore-label pixels,
    the behaviour before issue 10's fix, kept only as the ablation that measures that fix (in
    rounds >= 2 it gives the boundary band no RLS gradient). Returns bool (B, 1, *spatial).
    """
    if kind == "rls":
        return rls_region(target, ignore_label, scale)
    if kind == "rls_labelled":
        _, valid = split_target(target, ignore_label)
        return rls_region(target, ignore_label, scale) & valid
    if kind == "image":
        return torch.ones_like(target, dtype=torch.bool)
    raise ValueError(f"region must be one of {REGIONS}, got {kind!r}")
