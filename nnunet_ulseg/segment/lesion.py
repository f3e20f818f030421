"""One lesion of a CT volume: crop as the converter did, predict, paste back; optionally slice by slice in 3D.

Key slice (issue 15 items 2-3; DESIGN "Crops"): the crop box is the converter's rule on the
mark (:func:`~nnunet_ulseg.conversion.crop.lesion_box` with the model's
:class:`~nnunet_ulseg.conversion.crop.CropSettings`), the channels are the key slice and its
``--context`` neighbours (:func:`~nnunet_ulseg.conversion.crop.channel_slices`, the volume's
slices standing for DeepLesion's ``Slice_range``), cut by
:func:`~nnunet_ulseg.conversion.crop.crop_hu_channels` and written-spacing'd like a
converted case.  The predicted crop is pasted back onto the slice with
:func:`~nnunet_ulseg.conversion.geometry.paste_back_mask` (nearest: label values), then the
chosen post-processing (:mod:`nnunet_ulseg.postprocess`) keeps the marked lesion.

``propagate`` (WSSS Sec. 3.3, Algorithm 1, without its self-paced retraining): the model is
applied to slices ``key ± 1``, ``key ± 2``, ... outwards
(:func:`~nnunet_ulseg.postprocess3d.walk_outwards`, the walk and stop rule shared with
``ulseg evaluate --3d --postprocess``), each cut with **the key slice's
crop box** (the WSSS convention of :mod:`nnunet_ulseg.conversion.slices`: one box per
lesion, so every slice's mask pastes back into the same slice geometry); the mark on each
off-key slice is the 3D RECIST estimate ``R̂``
(:func:`~nnunet_ulseg.pseudo_masks.recist3d.estimate_recist`, mode ``ratio``), which
the post-processing uses in place of the drawn mark
(:func:`~nnunet_ulseg.postprocess3d.keep_off_key`: no ellipse fallback off the key slice).
A direction stops at the first slice where ``R̂`` vanishes (beyond the lesion's reach), the
volume ends (stop ``no_slice``), no predicted component crosses ``R̂`` (the model no longer
sees the lesion), or after ``max_slices``.  The slices are stacked with
:func:`~nnunet_ulseg.conversion.geometry3d.stack_slices`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from nnunet_ulseg.conversion.crop import channel_slices, crop_hu_channels, lesion_box, written_spacing
from nnunet_ulseg.conversion.geometry import CropBox, paste_back_mask
from nnunet_ulseg.conversion.geometry3d import Stack3D, stack_slices
from nnunet_ulseg.postprocess import IMAGE_MODES, postprocess_mask
from nnunet_ulseg.postprocess3d import keep_off_key, walk_outwards
from nnunet_ulseg.recist import Recist

from .marks import Mark
from .volume_io import Volume

#: Soft-tissue window for ``mark-grabcut`` when a mark has none (DeepLesion's most common DICOM window).
DEFAULT_WINDOW = (-175.0, 275.0)


@dataclass
class LesionResult:
    """A lesion's masks in slice geometry: ``{slice index k: [y, x] bool}``, the key slice's box and notes."""

    mark: Mark
    box: CropBox
    masks: dict[int, np.ndarray]
    status: str = ""
    stopped: dict[str, str] = field(default_factory=dict)

    @property
    def key_mask(self) -> np.ndarray:
        return self.masks[self.mark.k]

    def stack(self, volume: Volume) -> Stack3D:
        return stack_slices(self.masks, volume.spacing, self.mark.k, what=self.mark.lesion_id)


def predict_slice(model, volume: Volume, k: int, box: CropBox) -> np.ndarray:
    """The model's label map ``[y, x]`` of slice ``k`` cut with ``box``, pasted back into slice geometry."""
    settings = model.settings
    sx, sy, sz = volume.spacing
    used = channel_slices(k, settings, volume.has_slice, sz)
    channels = crop_hu_channels([volume.slice_hu(i) for i in used], box)
    crop_label = model.predict(channels, written_spacing(settings, (sx, sy)))
    return paste_back_mask(crop_label.astype(np.uint8), box, volume.slice_shape, interpolation="nearest")


def segment_slice(model, volume: Volume, k: int, box: CropBox, recist: Recist, postprocess: str,
                  window: tuple[float, float] = DEFAULT_WINDOW) -> tuple[np.ndarray, str]:
    """The post-processed mask ``[y, x]`` (bool) of slice ``k`` cut with ``box``, marked by ``recist``."""
    label = predict_slice(model, volume, k, box)
    image = volume.slice_hu(k) if postprocess in IMAGE_MODES else None
    kept = postprocess_mask(label, recist.points, postprocess, lesion_label=model.lesion_label, image=image,
                            window=window)
    return np.asarray(kept.mask, dtype=bool), kept.status


def segment_lesion(model, volume: Volume, mark: Mark, postprocess: str = "mark", propagate: bool = False,
                   max_slices: int | None = None) -> LesionResult:
    """Segment ``mark``'s lesion on its slice and, with ``propagate``, outwards (module docstring).

    ``max_slices`` bounds the slices visited on each side (None: until a stop rule).
    """
    box = lesion_box(mark.recist.points, model.settings)
    key, status = segment_slice(model, volume, mark.k, box, mark.recist, postprocess)
    result = LesionResult(mark, box, {mark.k: key}, status)
    if not propagate:
        return result
    if volume.n_slices < 2:
        raise ValueError(f"{volume.source}: one slice only, nothing to propagate to")

    def keep_at(offset: int, estimate: Recist) -> np.ndarray | None:
        k = mark.k + offset
        if not volume.has_slice(k):
            return None
        image = volume.slice_hu(k) if postprocess in IMAGE_MODES else None
        return keep_off_key(predict_slice(model, volume, k, box), estimate, postprocess, model.lesion_label, image,
                            DEFAULT_WINDOW)

    sx, sy, sz = volume.spacing
    masks, result.stopped = walk_outwards(keep_at, mark.recist, (sx, sy), sz, max_slices)
    result.masks.update({mark.k + offset: m for offset, m in masks.items()})
    return result
