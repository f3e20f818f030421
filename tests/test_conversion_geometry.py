"""Crop boxes, point mapping, crop resampling and paste-back (nnunet_ulseg.conversion.geometry)."""
import numpy as np
import pytest

from nnunet_ulseg.conversion.geometry import (
    PAD_HU, CropBox, crop_box, crop_png_to_hu, crop_to_slice, crop_to_slice_matrix, paste_back_mask,
    slice_to_crop, slice_to_crop_matrix,
)
from nnunet_ulseg.recist import Recist, ellipse_mask


def mark(cx, cy, long, short, angle_deg=0.0):
    a = np.radians(angle_deg)
    d = np.array([np.cos(a), np.sin(a)])
    n = np.array([-d[1], d[0]])
    c = np.array([cx, cy])
    return Recist.from_points([c - d * long / 2, c + d * long / 2, c - n * short / 2, c + n * short / 2])


def dice(a, b):
    return 2 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


@pytest.mark.parametrize("long, size, scale",
                         [(10, 128, 4.0), (40, 128, 128 / 80), (80.2, 160, 1.0), (300, 256, 256 / 600)])
def test_crop_box_lesion_policy_sizes(long, size, scale):
    r = mark(200.3, 150.7, long, long / 2, 20)
    box = crop_box(r, min_crop=32, scale_policy="lesion")
    assert box.size == size
    assert box.scale == pytest.approx(scale, rel=1e-6)
    assert box.scale == box.size / box.side  # exactly
    # centred on the RECIST extent (within the 0.5 px snap at scale 1)
    xmin, ymin, xmax, ymax = r.bbox()
    centre = np.array([box.x0 + box.side / 2, box.y0 + box.side / 2])
    tol = 0.5 if box.scale == 1 else 1e-9
    assert np.all(np.abs(centre - [(xmin + xmax) / 2, (ymin + ymax) / 2]) <= tol)


def test_crop_box_min_crop_and_scale1_snaps_to_pixel_edges():
    box = crop_box(mark(50.2, 40.7, 3, 2), min_crop=32, scale_policy="lesion")
    assert box.side == pytest.approx(32) and box.size == 128
    box1 = crop_box(mark(50.2, 40.7, 70.3, 30), scale_policy="lesion")
    assert box1.scale == 1 and box1.side == 141
    # output pixel centres fall on slice pixel centres
    centres = crop_to_slice(np.array([[0.0, 0.0], [7.0, 3.0]]), box1)
    assert np.allclose(centres, np.round(centres))


def test_crop_box_physical_policy_keeps_scale_1():
    box = crop_box(mark(100, 100, 200.4, 50), scale_policy="physical")
    assert box.scale == 1 and box.size == 401 and box.side == 401
    box = crop_box(mark(100, 100, 5, 3), min_crop=32, scale_policy="physical")
    assert box.size == 32 and box.scale == 1


def test_crop_box_rejects_bad_arguments():
    with pytest.raises(ValueError, match="scale_policy"):
        crop_box(mark(10, 10, 5, 3), scale_policy="huge")
    with pytest.raises(ValueError, match="min_crop"):
        crop_box(mark(10, 10, 5, 3), min_crop=0)


def test_slice_crop_round_trip_and_matrices_agree():
    box = CropBox(12.25, -7.5, 37.3, 128)
    p = np.array([[13.0, 2.0], [40.7, 20.1], [-3.0, 100.0]])
    u = slice_to_crop(p, box)
    np.testing.assert_allclose(crop_to_slice(u, box), p, atol=1e-12)
    # the edge of the box maps to the crop edge -0.5, pixel centres to integers
    np.testing.assert_allclose(slice_to_crop([[box.x0, box.y0]], box), [[-0.5, -0.5]])
    m_c2s, m_s2c = crop_to_slice_matrix(box), slice_to_crop_matrix(box)
    np.testing.assert_allclose(u @ m_c2s[:, :2].T + m_c2s[:, 2], p, atol=1e-12)
    np.testing.assert_allclose(p @ m_s2c[:, :2].T + m_s2c[:, 2], u, atol=1e-12)


def ramp_png(w=120, h=100):
    y, x = np.mgrid[0:h, 0:w]
    return (32768 - 1000 + 2 * x + 3 * y).astype(np.uint16)


@pytest.mark.parametrize("box", [CropBox(10.3, 20.6, 40.0, 128), CropBox(5.5, 9.5, 64.0, 64),
                                 CropBox(-20, -30, 300, 256)])
def test_crop_png_to_hu_matches_bilinear_ramp_and_pads(box):
    png = ramp_png()
    out = crop_png_to_hu(png, box)
    assert out.dtype == np.int16 and out.shape == (box.size, box.size)
    v, u = np.mgrid[0:box.size, 0:box.size]
    xy = crop_to_slice(np.stack([u.ravel(), v.ravel()], 1), box)
    x, y = xy[:, 0].reshape(u.shape), xy[:, 1].reshape(u.shape)
    inside = (x >= 0) & (x <= png.shape[1] - 1) & (y >= 0) & (y <= png.shape[0] - 1)
    expect = -1000 + 2 * x + 3 * y
    assert np.abs(out[inside] - expect[inside]).max() <= 1.0
    outside = (x < -1) | (x > png.shape[1]) | (y < -1) | (y > png.shape[0])
    assert np.all(out[outside] == PAD_HU)
    if box.scale == 1 and box.x0 % 1 == 0.5:  # pixel-aligned: an exact copy
        assert np.array_equal(out[inside], np.rint(expect[inside]).astype(np.int16))


def test_crop_png_to_hu_rejects_non_uint16():
    with pytest.raises(ValueError, match="uint16"):
        crop_png_to_hu(np.zeros((10, 10), np.uint8), CropBox(0, 0, 5, 5))


@pytest.mark.parametrize("r", [mark(60, 50, 12, 7, 10), mark(70, 60, 66, 30, 35), mark(150, 140, 180, 90, -20),
                               mark(4, 3, 20, 10, 0)])
def test_paste_back_of_crop_ellipse_matches_slice_ellipse(r):
    shape = (300, 320)
    box = crop_box(r)
    crop_mask = ellipse_mask(r.mapped(lambda p: slice_to_crop(p, box)), (box.size, box.size))
    back = paste_back_mask(crop_mask, box, shape)
    truth = ellipse_mask(r, shape)
    assert back.shape == shape and back.dtype == bool
    assert dice(back, truth) > 0.95
    nearest = paste_back_mask(crop_mask.astype(np.uint8) * 2, box, shape, interpolation="nearest")
    assert nearest.dtype == np.uint8 and set(np.unique(nearest)) <= {0, 2}
    assert dice(nearest > 0, truth) > 0.9


def test_paste_back_mask_checks_shape_and_mode():
    box = CropBox(0, 0, 10, 20)
    with pytest.raises(ValueError, match="crop size"):
        paste_back_mask(np.zeros((10, 10)), box, (30, 30))
    with pytest.raises(ValueError, match="interpolation"):
        paste_back_mask(np.zeros((20, 20)), box, (30, 30), interpolation="cubic")


def test_crop_size_range_parses_one_size_or_a_range():
    from nnunet_ulseg.conversion.geometry import LESION_SIZE_RANGE, crop_size_range

    assert crop_size_range(None) == LESION_SIZE_RANGE
    assert crop_size_range(64) == (64, 64)
    assert crop_size_range([64]) == (64, 64)
    assert crop_size_range((48, 96)) == (48, 96)
    for bad in ([96, 48], [4], [1, 2, 3], 64.5):
        with pytest.raises(ValueError, match="crop size"):
            crop_size_range(bad)
    # a fixed size resamples every lesion to it, big or small
    assert crop_box([10, 10, 30, 10, 20, 5, 20, 15], size_range=(64, 64)).size == 64
    assert crop_box([10, 10, 300, 10, 150, 5, 150, 15], size_range=(64, 64)).size == 64
