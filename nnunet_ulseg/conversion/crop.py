"""The converter's crop rule as one reusable unit: settings, box, channels, written spacing (DESIGN "Crops").

``convert-deeplesion`` cuts every case with these functions (:func:`lesion_box`,
:func:`written_spacing`, and :func:`~.geometry.crop_png_to_hu` per channel in the worker),
and ``ulseg segment`` cuts a CT volume's slices with the same ones, reading the settings a
model was trained with from its ``dataset.json`` (:meth:`CropSettings.from_dataset_json`).
So a crop made at inference is the crop the model saw in training: the same box
(:func:`~.geometry.crop_box`: centre of the RECIST box, side ``max(2 x long, min_crop)``,
snapped at scale 1), the same resampling, the same -1024 HU padding and the same channel
slices (:mod:`.context`).

Choice: :func:`crop_hu_channels` shifts HU to DeepLesion's PNG encoding (``HU + 32768``,
rounded, clipped to uint16) and runs the converter's own :func:`~.geometry.crop_png_to_hu`,
not the float sibling :func:`~.geometry.crop_hu_slice`: cv2's fixed-point bilinear on
uint16 differs from the float path by up to 1 HU, and "exactly as the converter did" is
then literally true.  A volume stacked from DeepLesion PNGs gives bit-identical crops.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

from .context import check_context_mm, resolve_slice, slice_offsets
from .geometry import HU_OFFSET, LESION_SIZE_RANGE, SCALE_POLICIES, CropBox, crop_box, crop_png_to_hu

#: Spacing written for scale policy ``lesion`` so nnU-Net does not resample the crops again.
NOMINAL_SPACING = (1.0, 1.0)


@dataclass(frozen=True)
class CropSettings:
    """How a dataset's crops were cut: the keys ``convert-deeplesion`` writes to ``dataset.json``."""

    scale_policy: str = "lesion"
    min_crop: float = 32.0
    size_range: tuple[int, int] = LESION_SIZE_RANGE
    context: int = 0
    context_mm: float | None = None
    recist_convention: str = "edge"

    def __post_init__(self):
        if self.scale_policy not in SCALE_POLICIES:
            raise ValueError(f"scale_policy must be one of {SCALE_POLICIES}, got {self.scale_policy!r}")
        if not self.min_crop > 0:
            raise ValueError(f"min_crop must be positive, got {self.min_crop}")
        if self.context < 0:
            raise ValueError(f"context must be >= 0, got {self.context}")
        check_context_mm(self.context, self.context_mm)

    @property
    def n_channels(self) -> int:
        return 2 * self.context + 1

    @classmethod
    def from_dataset_json(cls, record: Mapping, where: str = "dataset.json") -> "CropSettings":
        """The settings recorded in a converted dataset's ``dataset.json`` (``where`` names it in errors).

        Keys missing from an older conversion take the converter's defaults; a dataset.json
        whose channel count disagrees with ``context`` is refused, since its crops could not
        be reproduced.
        """
        try:
            policy = record.get("scale_policy") or "lesion"
            size_range = record.get("crop_size_range") or LESION_SIZE_RANGE
            settings = cls(scale_policy=str(policy), min_crop=float(record.get("min_crop") or 32.0),
                           size_range=(int(size_range[0]), int(size_range[-1])),
                           context=int(record.get("context") or 0),
                           context_mm=None if record.get("context_mm") is None else float(record["context_mm"]),
                           recist_convention=str(record.get("recist_convention") or "edge"))
        except (TypeError, ValueError, IndexError) as exc:
            raise ValueError(f"{where}: crop settings cannot be read ({exc})") from None
        channels = record.get("channel_names")
        if isinstance(channels, Mapping) and len(channels) != settings.n_channels:
            raise ValueError(f"{where}: {len(channels)} channels but context {settings.context} means "
                             f"{settings.n_channels}; not a dataset made by convert-deeplesion")
        return settings


def lesion_box(points: Sequence[float] | np.ndarray, settings: CropSettings) -> CropBox:
    """The crop box of a RECIST mark (8 numbers, 0-based slice pixels) under ``settings``."""
    return crop_box(points, settings.min_crop, settings.scale_policy, settings.size_range)


def written_spacing(settings: CropSettings, spacing_xy: Sequence[float]) -> tuple[float, float]:
    """The spacing a crop is written with: nominal 1 mm for policy ``lesion``, the slice's own for ``physical``."""
    if settings.scale_policy == "lesion":
        return NOMINAL_SPACING
    return float(spacing_xy[0]), float(spacing_xy[1])


def channel_slices(key: int, settings: CropSettings, available: Callable[[int], bool],
                   slice_interval: float | None = None) -> tuple[int, ...]:
    """The slice index of each channel of a crop on slice ``key`` (channel 0 = key, :mod:`.context`'s order).

    ``available(i)`` says whether slice ``i`` exists; an unavailable neighbour is replaced
    toward the key (:func:`~.context.resolve_slice`), as the converter does.
    """
    offsets = slice_offsets(settings.context, settings.context_mm,
                            slice_interval if settings.context_mm else None)
    return tuple(resolve_slice(key, o, available) for o in offsets)


def hu_to_png(slice_hu: np.ndarray) -> np.ndarray:
    """A HU slice in DeepLesion's uint16 PNG encoding (``HU + 32768``, rounded, clipped)."""
    arr = np.asarray(slice_hu)
    if arr.ndim != 2:
        raise ValueError(f"expected a 2D slice, got shape {arr.shape}")
    return np.clip(np.rint(arr.astype(np.float64)) + HU_OFFSET, 0, 65535).astype(np.uint16)


def crop_hu_channels(slices_hu: Sequence[np.ndarray], box: CropBox) -> np.ndarray:
    """``(C, size, size)`` int16 HU crops of the channel slices, each cut like the converter cuts a PNG."""
    return np.stack([crop_png_to_hu(hu_to_png(s), box) for s in slices_hu])
