"""ulseg segment volume I/O: a DICOM series written here reads back to the same HU and geometry; file round trips."""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_ulseg.segment.volume_io import read_volume, write_label_volume

SPACING = (0.7, 0.8, 2.5)
ORIGIN = (-120.0, 35.5, 410.0)


def _hu(shape=(4, 20, 24)) -> np.ndarray:
    rng = np.random.default_rng(1)
    return rng.integers(-1024, 1500, shape).astype(np.int16)


def _write_dicom_series(folder, hu, slope=2.0, intercept=-1024.0, uid="1.2.826.0.1.3680043.2.1125.1"):
    """One file per slice; GDCM stores ``(hu - intercept) / slope`` as int16 under the rescale tags given.

    (SimpleITK's recipe for floating-point pixels: the slope/intercept and 16-bit storage tags
    are set, and the writer applies them; an integer image would get slope 1 written instead.)
    """
    folder.mkdir()
    for k in range(hu.shape[0]):
        img = sitk.GetImageFromArray(hu[k:k + 1].astype(np.float64))
        img.SetSpacing(SPACING)
        pos = (ORIGIN[0], ORIGIN[1], ORIGIN[2] + k * SPACING[2])
        tags = {"0008|0060": "CT", "0020|000e": uid, "0020|000d": "1.2.3.4", "0020|0032": "\\".join(map(str, pos)),
                "0020|0037": "1\\0\\0\\0\\1\\0", "0020|0013": str(k + 1), "0028|1052": str(intercept),
                "0028|1053": str(slope), "0018|0050": str(SPACING[2]), "0028|0030": f"{SPACING[1]}\\{SPACING[0]}",
                "0008|0016": "1.2.840.10008.5.1.4.1.1.2", "0028|0100": "16", "0028|0101": "16",
                "0028|0102": "15", "0028|0103": "1"}
        for tag, value in tags.items():
            img.SetMetaData(tag, value)
        writer = sitk.ImageFileWriter()
        writer.KeepOriginalImageUIDOn()
        writer.SetFileName(str(folder / f"s{k:03d}.dcm"))
        writer.Execute(img)


def test_dicom_series_reads_back_hu_and_geometry(tmp_path):
    hu = (_hu() // 2) * 2  # representable exactly with slope 2
    _write_dicom_series(tmp_path / "dcm", hu)
    header = sitk.ImageFileReader()
    header.SetFileName(str(tmp_path / "dcm" / "s000.dcm"))
    header.ReadImageInformation()  # the files carry slope 2 / intercept -1024: stored values are not HU
    assert float(header.GetMetaData("0028|1053")) == 2.0 and float(header.GetMetaData("0028|1052")) == -1024.0
    vol = read_volume(tmp_path / "dcm")
    np.testing.assert_array_equal(vol.hu, hu.astype(np.float32))
    np.testing.assert_allclose(vol.spacing, SPACING, atol=1e-6)
    np.testing.assert_allclose(vol.image.GetOrigin(), ORIGIN, atol=1e-6)
    np.testing.assert_allclose(vol.image.GetDirection(), np.eye(3).ravel(), atol=1e-9)
    assert vol.size == (24, 20, 4) and vol.slice_shape == (20, 24)
    np.testing.assert_array_equal(vol.slice_hu(2), hu[2])


def test_dicom_folder_with_two_series_needs_series_uid(tmp_path):
    hu = _hu((2, 8, 8)) // 2 * 2
    _write_dicom_series(tmp_path / "dcm", hu, uid="1.2.3.100")
    _write_dicom_series(tmp_path / "other", hu + 10, uid="1.2.3.200")
    for p in (tmp_path / "other").iterdir():
        p.rename(tmp_path / "dcm" / f"b_{p.name}")
    with pytest.raises(ValueError, match="2 DICOM series .*--series-uid"):
        read_volume(tmp_path / "dcm")
    vol = read_volume(tmp_path / "dcm", series_uid="1.2.3.200")
    np.testing.assert_array_equal(vol.hu, (hu + 10).astype(np.float32))
    with pytest.raises(ValueError, match="no DICOM series 9.9"):
        read_volume(tmp_path / "dcm", series_uid="9.9")


def _oblique_image(hu):
    img = sitk.GetImageFromArray(hu)
    img.SetSpacing(SPACING)
    img.SetOrigin(ORIGIN)
    c, s = np.cos(0.4), np.sin(0.4)
    img.SetDirection((c, -s, 0.0, s, c, 0.0, 0.0, 0.0, -1.0))
    return img


@pytest.mark.parametrize("ending", [".nii.gz", ".mha", ".nrrd"])
def test_file_round_trip_keeps_geometry_and_label_volume_matches(tmp_path, ending):
    hu = _hu()
    src = _oblique_image(hu)
    path = tmp_path / f"ct{ending}"
    sitk.WriteImage(src, str(path))
    vol = read_volume(path)
    np.testing.assert_array_equal(vol.hu, hu)
    labels = np.zeros(hu.shape, np.uint8)
    labels[1, 3:6, 4:9] = 2
    out = write_label_volume(labels, vol, tmp_path / f"lab{ending}")
    back = sitk.ReadImage(str(out))
    assert back.GetSize() == src.GetSize()
    np.testing.assert_allclose(back.GetSpacing(), src.GetSpacing(), atol=1e-6)
    np.testing.assert_allclose(back.GetOrigin(), src.GetOrigin(), atol=1e-5)
    np.testing.assert_allclose(back.GetDirection(), src.GetDirection(), atol=1e-6)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), labels)


def test_read_errors_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.nii.gz"):
        read_volume(tmp_path / "nope.nii.gz")
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(ValueError, match="x.txt: not a volume file"):
        read_volume(tmp_path / "x.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no DICOM series"):
        read_volume(tmp_path / "empty")
