"""Figures: exact survival curve values, and PNGs that exist, have the expected size and are not blank."""
import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.image import imread  # noqa: E402

from nnunet_ulseg.evaluation.plots import (  # noqa: E402
    PRED_COLOUR,
    REF_COLOUR,
    GalleryPanel,
    dice_survival,
    pick_cases,
    plot_dice_cumulative,
    plot_gallery,
    scale_bar_mm,
    shared_cases,
    window_image,
)


def load_rgb(path):
    img = imread(str(path))
    assert img.ndim == 3 and img.shape[2] in (3, 4)
    return img[..., :3]


def assert_not_blank(img):
    """More than 10 distinct colours (a blank or single-colour image has 1)."""
    rgb = np.round(img * 255).astype(np.int64)
    assert np.unique(rgb[..., 0] * 65536 + rgb[..., 1] * 256 + rgb[..., 2]).size > 10


def test_dice_survival_is_fraction_at_or_above_threshold():
    d = [0.5, 0.8, 0.9, 1.0, float("nan")]
    np.testing.assert_allclose(dice_survival(d, [0.0, 0.8, 0.85, 1.0, 1.01]), [1, 0.75, 0.5, 0.25, 0])
    assert np.isnan(dice_survival([], [0.5])).all()


def test_window_image():
    np.testing.assert_allclose(window_image(np.array([-200, -175, 50, 275, 1000]), (-175, 275)),
                               [0, 0, 0.5, 1, 1])
    with pytest.raises(ValueError, match="window"):
        window_image(np.zeros(2), (10, 10))


def test_pick_cases_best_median_worst():
    recs = [{"case": c, "dice": d} for c, d in [("a", 0.5), ("b", 0.9), ("c", 0.7), ("d", float("nan"))]]
    picked = pick_cases(recs)
    assert [(k, r["case"]) for k, r in picked] == [("best", "b"), ("median", "c"), ("worst", "a")]
    four = recs[:3] + [{"case": "e", "dice": 0.6}]  # ascending 0.5, 0.6, 0.7, 0.9: median index 1
    assert pick_cases(four)[1][1]["case"] == "e"
    assert pick_cases([{"case": "x", "dice": float("nan")}]) == []


def test_dice_cumulative_png(tmp_path):
    path = plot_dice_cumulative({"ellipse": [0.7, 0.82, 0.9], "model": [0.85, 0.9, 0.95]}, tmp_path / "d.png")
    img = load_rgb(path)
    assert img.shape[:2] == (450, 600)
    assert_not_blank(img)
    with pytest.raises(ValueError):
        plot_dice_cumulative({}, tmp_path / "e.png")


def colour_pixels(img, hex_colour: str, tol: float = 0.12) -> np.ndarray:
    rgb = np.array([int(hex_colour[i:i + 2], 16) / 255 for i in (1, 3, 5)])
    return (np.abs(img - rgb) < tol).all(axis=-1)


def test_gallery_png_has_colour_blind_safe_contours_and_a_scale_bar(tmp_path):
    yy, xx = np.mgrid[0:64, 0:64]
    ref = (yy - 32) ** 2 + (xx - 32) ** 2 <= 15 ** 2
    pred = (yy - 36) ** 2 + (xx - 30) ** 2 <= 12 ** 2
    ct = np.where(ref, 60, -50).astype(np.int16) + (xx % 7).astype(np.int16)
    recist = np.array([[17, 32], [47, 32], [32, 17], [32, 47]], float)
    panels = {"model": [GalleryPanel("best: c1", pred, ref, 0.81, ct, (-175, 275), recist, spacing=0.5),
                        GalleryPanel("worst: c2", np.zeros_like(ref), ref, 0.0, None)]}
    img = load_rgb(plot_gallery(panels, tmp_path / "g.png"))
    assert img.shape[:2] == (325, 600)  # 3.0 in x 2 panels wide, 3.25 in high, 100 dpi
    assert_not_blank(img)
    # Okabe-Ito sky blue (reference) and orange (prediction)
    assert REF_COLOUR == "#56B4E9" and PRED_COLOUR == "#E69F00"
    assert colour_pixels(img, REF_COLOUR).sum() > 50 and colour_pixels(img, PRED_COLOUR).sum() > 50
    # the orange prediction is only in the first panel (the second one's prediction is empty)
    assert colour_pixels(img[:, 300:], PRED_COLOUR).sum() == 0
    with pytest.raises(ValueError):
        plot_gallery({"model": []}, tmp_path / "none.png")


def test_scale_bar_length():
    assert scale_bar_mm(64, 0.5) == 5.0  # a quarter of 64 px at 0.5 mm is 8 mm: 5 mm fits, 10 mm does not
    assert scale_bar_mm(200, 0.8) == 20.0
    assert scale_bar_mm(2, 1.0) is None and scale_bar_mm(64, float("nan")) is None


def test_shared_cases_are_the_same_lesions_for_every_folder():
    a = [{"case": c, "dice": d} for c, d in [("x", 0.9), ("y", 0.5), ("z", 0.7), ("w", 0.1)]]
    b = [{"case": c, "dice": d} for c, d in [("x", 0.3), ("y", 0.6), ("z", 0.8)]]  # w missing in b
    # means over both folders, lesions scored by both: x 0.6, y 0.55, z 0.75
    assert shared_cases({"a": a, "b": b}) == [("best", "z"), ("median", "x"), ("worst", "y")]
    assert shared_cases({"a": a}) == [("best", "x"), ("median", "y"), ("worst", "w")]
    assert shared_cases({"a": [], "b": []}) == []
