"""``ulseg segment --format dicom-seg``: a DICOM series in, a DICOM Segmentation referencing it out (highdicom).

The series is written here with SimpleITK (an ellipse lesion of +60 HU on -100 HU, two
slices apart from the key slice so the SEG must place its frames by reference); the
segmenter is the threshold model of ``test_segment_output.py`` (no training).  The SEG is
read back with pydicom and highdicom: its frames reference the right source SOP
instances, and the pixels of each segment equal the label volume ``ulseg segment`` writes
for the same input.  Skipped when highdicom is not installed.
"""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from test_segment_output import KEY, ThresholdModel, _ellipse, _mark

from nnunet_ulseg.segment.marks import command_line_row
from nnunet_ulseg.segment.scan import ScanJob, segment_scans

hd = pytest.importorskip("highdicom")
pydicom = pytest.importorskip("pydicom")

SPACING = (0.7, 0.8, 2.5)
ORIGIN = (-120.0, 35.5, 410.0)
UID = "1.2.826.0.1.3680043.2.1125.77"


def _write_series(folder):
    """7 slices, the lesion on ``KEY`` only (and a smaller one at ``KEY + 2``); returns ``hu[k, y, x]``."""
    hu = np.full((7, 100, 120), -100, np.int16)
    hu[KEY][_ellipse(hu.shape[1:])] = 60
    hu[KEY + 2][_ellipse(hu.shape[1:], 0.5)] = 60
    folder.mkdir()
    for k in range(hu.shape[0]):
        img = sitk.GetImageFromArray(hu[k:k + 1])
        img.SetSpacing(SPACING)
        pos = (ORIGIN[0], ORIGIN[1], ORIGIN[2] + k * SPACING[2])
        tags = {"0008|0060": "CT", "0020|000e": UID, "0020|000d": UID + ".1", "0020|0052": UID + ".2",
                "0008|0018": f"{UID}.3.{k + 1}", "0008|0016": "1.2.840.10008.5.1.4.1.1.2",
                "0010|0010": "Test^Patient", "0010|0020": "P1", "0008|0020": "20240101", "0020|0011": "3",
                "0020|0032": "\\".join(map(str, pos)), "0020|0037": "1\\0\\0\\0\\1\\0", "0020|0013": str(k + 1),
                "0018|0050": str(SPACING[2]), "0028|0030": f"{SPACING[1]}\\{SPACING[0]}",
                "0028|1052": "0", "0028|1053": "1"}
        for tag, value in tags.items():
            img.SetMetaData(tag, value)
        writer = sitk.ImageFileWriter()
        writer.KeepOriginalImageUIDOn()
        # written in reverse file-name order: the reader must sort by position, not by name
        writer.SetFileName(str(folder / f"s{6 - k:03d}.dcm"))
        writer.Execute(img)
    return hu


def test_dicom_seg_references_the_series_and_holds_the_masks(tmp_path):
    hu = _write_series(tmp_path / "dcm")
    rows = [command_line_row(_mark(), None, KEY, lesion_id="E1"),
            command_line_row("40,40,50,40,45,35,45,45", None, 0, lesion_id="second")]
    job = ScanJob(tmp_path / "dcm", rows, "ct")
    nifti = segment_scans(ThresholdModel(), [job], tmp_path / "nii", progress=False)
    result = segment_scans(ThresholdModel(), [job], tmp_path / "seg", ending="dicom-seg", progress=False)
    assert [p.name for p in result.label_files] == ["ct.dcm"]
    assert [r["lesion_id"] for r in result.records] == [r["lesion_id"] for r in nifti.records]
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "nii" / "ct.nii.gz")))
    assert labels[KEY].any() and not labels[KEY + 2].any()  # 2D: the key slice only

    ds = pydicom.dcmread(str(tmp_path / "seg" / "ct.dcm"))
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4" and ds.Modality == "SEG"
    assert ds.FrameOfReferenceUID == UID + ".2" and ds.StudyInstanceUID == UID + ".1"
    referenced = {i.ReferencedSOPInstanceUID for s in ds.ReferencedSeriesSequence for i in s.ReferencedInstanceSequence}
    assert referenced == {f"{UID}.3.{k + 1}" for k in range(7)}
    assert [s.SegmentLabel for s in ds.SegmentSequence] == ["E1", "second"]

    seg = hd.seg.Segmentation.from_dataset(ds)
    assert seg.number_of_segments == 2
    # frames are placed by their source instance: slice k is instance UID.3.(k+1)
    for k in range(7):
        frame = seg.get_pixels_by_source_instance(
            source_sop_instance_uids=[f"{UID}.3.{k + 1}"], segment_numbers=[1, 2], assert_missing_frames_are_empty=True)
        np.testing.assert_array_equal(frame[0, :, :, 0], labels[k] == 1)
        np.testing.assert_array_equal(frame[0, :, :, 1], labels[k] == 2)
    # and geometrically: the frame's position is slice KEY's
    positions = [f.PlanePositionSequence[0].ImagePositionPatient for f in ds.PerFrameFunctionalGroupsSequence]
    assert [float(v) for v in positions[0]] == pytest.approx([ORIGIN[0], ORIGIN[1], ORIGIN[2] + KEY * SPACING[2]])
    assert hu[KEY][labels[KEY] == 1].min() == 60


def test_dicom_seg_refuses_a_volume_file_input(tmp_path, capsys):
    from nnunet_ulseg import cli

    img = sitk.GetImageFromArray(np.zeros((3, 8, 8), np.int16))
    sitk.WriteImage(img, str(tmp_path / "ct.nii.gz"))
    (tmp_path / "model").mkdir()
    rc = cli.main(["segment", "-i", str(tmp_path / "ct.nii.gz"), "--recist", "1,1,5,5,1,5,5,1", "--slice", "1",
                   "-o", str(tmp_path / "out"), "-m", str(tmp_path / "model"), "--format", "dicom-seg"])
    assert rc == 2 and "needs DICOM series folders" in capsys.readouterr().err  # before the model is read
