"""PNG reading faults and the hand-written MetaImage writer (nnunet_ulseg.conversion.io)."""
import cv2
import numpy as np
import pytest
import SimpleITK as sitk
from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

from nnunet_ulseg.conversion.io import mha_header, read_png, write_mha
from nnunet_ulseg.conversion.report import LesionError


def test_read_png_returns_raw_uint16_and_checks_size(tmp_path):
    img = np.arange(12 * 7, dtype=np.uint16).reshape(7, 12) + 30000
    cv2.imwrite(str(tmp_path / "a.png"), img)
    out = read_png(str(tmp_path / "a.png"), expect_size=(12, 7))
    assert out.dtype == np.uint16 and np.array_equal(out, img)
    with pytest.raises(LesionError) as e:
        read_png(str(tmp_path / "a.png"), expect_size=(7, 12))
    assert e.value.reason == "png_size_mismatch" and e.value.file.endswith("a.png")


@pytest.mark.parametrize("content, reason", [(None, "missing_png"), (b"", "corrupt_png"), (b"not a png", "corrupt_png"),
                                             ("half", "corrupt_png"), ("8bit", "png_format")])
def test_read_png_faults_have_specific_reasons(tmp_path, content, reason):
    path = tmp_path / "x.png"
    if content == "half":
        cv2.imwrite(str(path), np.full((40, 40), 33000, np.uint16) + np.arange(40, dtype=np.uint16))
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif content == "8bit":
        cv2.imwrite(str(path), np.zeros((4, 4), np.uint8))
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(LesionError) as e:
        read_png(str(path))
    assert e.value.reason == reason
    assert e.value.file == str(path)


@pytest.mark.parametrize("dtype, spacing", [(np.int16, (1.0, 1.0)), (np.uint8, (0.7, 0.8))])
def test_write_mha_is_read_by_simpleitk_and_nnunet(tmp_path, dtype, spacing):
    arr = (np.arange(5 * 9).reshape(5, 9) - 20).astype(dtype)
    path = str(tmp_path / "c.mha")
    write_mha(path, arr, spacing)
    img = sitk.ReadImage(path)
    assert np.array_equal(sitk.GetArrayFromImage(img), arr)
    assert img.GetSpacing() == pytest.approx(spacing)
    assert img.GetOrigin() == (0.0, 0.0)
    data, props = SimpleITKIO().read_images([path])
    assert data.shape == (1, 1, 5, 9)
    assert props["spacing"][1:] == pytest.approx([spacing[1], spacing[0]])  # nnU-Net order (z, y, x)
    assert np.array_equal(data[0, 0], arr)


def test_mha_header_matches_what_simpleitk_writes(tmp_path):
    arr = np.zeros((6, 4), np.int16)
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((0.5, 2.0))
    sitk.WriteImage(img, str(tmp_path / "ref.mha"), False)
    ref = (tmp_path / "ref.mha").read_bytes()
    ours = mha_header(arr.shape, arr.dtype, (0.5, 2.0))
    ref_lines = {l for l in ref[: ref.index(b"ElementDataFile")].decode().splitlines() if "Orientation" not in l}
    assert ref_lines == set(ours[: ours.index(b"ElementDataFile")].decode().splitlines())


def test_write_mha_validates(tmp_path):
    with pytest.raises(ValueError, match="spacings"):
        write_mha(str(tmp_path / "x.mha"), np.zeros((3, 3), np.int16), (1.0,))
    with pytest.raises(ValueError, match="dtype"):
        write_mha(str(tmp_path / "x.mha"), np.zeros((3, 3), np.complex64), (1.0, 1.0))


def test_size_and_kind_are_decided_before_decoding(tmp_path):
    """A header-valid PNG with garbage pixels: the header alone gives the size mismatch; a folder is never read."""
    path = tmp_path / "a.png"
    cv2.imwrite(str(path), np.full((40, 30), 33000, np.uint16) + np.arange(30, dtype=np.uint16))
    data = path.read_bytes()
    path.write_bytes(data[:60] + bytes(len(data) - 60))
    with pytest.raises(LesionError) as e:
        read_png(str(path), expect_size=(512, 512))
    assert e.value.reason == "png_size_mismatch" and "30x40" in e.value.detail
    with pytest.raises(LesionError) as e:
        read_png(str(path), expect_size=(30, 40))
    assert e.value.reason == "corrupt_png"
    (tmp_path / "d.png").mkdir()
    with pytest.raises(LesionError) as e:
        read_png(str(tmp_path / "d.png"))
    assert e.value.reason == "not_regular_file" and "folder" in e.value.detail
