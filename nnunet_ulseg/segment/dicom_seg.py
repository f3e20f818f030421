"""DICOM-SEG output of ``ulseg segment --format dicom-seg`` (issue 15 item 4), written with highdicom.

When the CT came as a DICOM series, the lesion masks can go back to the PACS as one DICOM
Segmentation object that references the series' own SOP instances: frame ``k`` of the SEG
is slice ``k`` of the stored grid, which is ``Volume.files[k]`` (the files in the order
GDCM sorted them, the order SimpleITK stacked them; :mod:`.volume_io`).  highdicom takes
the geometry (Image Position/Orientation, Pixel Spacing, Frame of Reference) from those
source instances, so the SEG overlays the series exactly as the NIfTI output overlays the
volume.

Choices:

* one segment per lesion (segment number = the label value of the label volume, the
  segment label is the lesion id), or one segment ``lesion`` with ``--binary``;
  segmentation type BINARY (the masks are hard labels), algorithm type AUTOMATIC, property
  category "Morphologically abnormal structure" and type "Lesion" (SNOMED CT, the codes
  DICOM's CID 7151/7159 examples use for lesions);
* frames without any lesion are omitted (highdicom's default), as viewers expect; a scan
  whose marks were all skipped still gets a SEG with its one empty segment, so every DICOM
  input has an output (an empty segment then says "nothing segmented").

highdicom (and pydicom) are an optional extra (``pip install "nnunet-ulseg[dicom]"``); a
clear error says so when they are missing.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from .volume_io import Volume

DICOM_SEG = "dicom-seg"
SEG_ENDING = ".dcm"


def require_highdicom():
    """The ``highdicom`` module, or ``ValueError`` telling how to install it."""
    try:
        import highdicom
    except ImportError as exc:
        raise ValueError(f"--format {DICOM_SEG} needs highdicom ({exc}); install it with "
                         "pip install \"nnunet-ulseg[dicom]\" (or pip install highdicom)") from None
    return highdicom


def write_dicom_seg(labels: np.ndarray, like: Volume, path: str | os.PathLike,
                    segments: Sequence[tuple[int, str]]) -> Path:
    """Write ``labels`` ``[k, y, x]`` as a DICOM-SEG referencing ``like``'s DICOM files (module docstring).

    ``segments``: ``(label value, segment label)`` per segment, values 1..n in order.
    """
    hd = require_highdicom()
    import pydicom
    from pydicom.sr.codedict import codes

    from nnunet_ulseg import __version__

    if not like.files:
        raise ValueError(f"{like.source}: --format {DICOM_SEG} needs a DICOM series input (this is not one)")
    labels = np.asarray(labels)
    if labels.shape != like.hu.shape:
        raise ValueError(f"label array {labels.shape} does not match the volume {like.hu.shape} ([k, y, x])")
    if len(like.files) != labels.shape[0]:
        raise ValueError(f"{like.source}: {len(like.files)} DICOM files for {labels.shape[0]} slices")
    segments = list(segments) or [(1, "lesion")]
    if [v for v, _ in segments] != list(range(1, len(segments) + 1)):
        raise ValueError(f"segment values must be 1..n in order, got {[v for v, _ in segments]}")
    sources = [pydicom.dcmread(f) for f in like.files]
    algorithm = hd.AlgorithmIdentificationSequence(name="nnunet-ulseg", version=__version__,
                                                   family=codes.cid7162.ArtificialIntelligence)
    descriptions = [
        hd.seg.SegmentDescription(segment_number=value, segment_label=str(label)[:64] or f"lesion {value}",
                                  segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
                                  segmented_property_type=codes.SCT.Lesion,
                                  algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                                  algorithm_identification=algorithm)
        for value, label in segments]
    seg = hd.seg.Segmentation(
        source_images=sources, pixel_array=labels.astype(np.uint16 if labels.max(initial=0) > 255 else np.uint8),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY, segment_descriptions=descriptions,
        series_instance_uid=hd.UID(), series_number=int(getattr(sources[0], "SeriesNumber", 0) or 0) + 1000,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="nnunet-ulseg",
        manufacturer_model_name="ulseg segment", software_versions=__version__, device_serial_number="0",
        series_description="ulseg segment lesions", omit_empty_frames=bool(labels.any()))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    seg.save_as(str(path))
    return path
