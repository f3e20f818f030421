"""Slice-by-slice post-processing with the 3D RECIST estimate (nnunet_ulseg.postprocess3d, WSSS Sec. 3.3).

A 64 x 64 grid of 1 mm pixels holds a mark whose long axis runs (22, 32)-(42, 32) (20 px,
half-length 10 mm) and short axis (32, 26)-(32, 38), crossing at (32, 32).  By Pythagoras
the estimate ``R̂`` at distance d mm has the long axis 2 * sqrt(100 - d²) px and vanishes at
d >= 10 mm, so with 4 mm slices steps 1 and 2 have an estimate and step 3 has none; with
1 mm slices steps 1..9 have one.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from nnunet_ulseg.postprocess import scaled_ellipse
from nnunet_ulseg.postprocess3d import keep_marked_slices, walk_outwards
from nnunet_ulseg.recist import Recist, rasterize_ellipse

MARK = Recist.from_points([22, 32, 42, 32, 32, 26, 32, 38])
SHAPE = (64, 64)


def disc(cx=32, cy=32, r=5):
    yy, xx = np.indices(SHAPE)
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r


def test_the_walk_passes_the_estimate_of_each_step_and_stops_where_it_vanishes():
    seen = {}

    def keep_at(offset, hat):
        seen[offset] = hat
        return disc()

    masks, stopped = walk_outwards(keep_at, MARK, (1.0, 1.0), 4.0)
    assert sorted(masks) == [-2, -1, 1, 2]
    assert stopped == {"up": "recist_estimate_vanished", "down": "recist_estimate_vanished"}
    assert sorted(seen) == [-2, -1, 1, 2]  # no prediction asked for beyond the reach
    for offset, hat in seen.items():
        half = math.sqrt(100 - (4 * abs(offset)) ** 2)
        assert hat.long_length == pytest.approx(2 * half)
        assert hat.short_length == pytest.approx(12 * half / 10)  # ratio mode keeps short / long


def test_no_slice_and_max_steps_end_a_direction():
    calls = []

    def keep_at(offset, hat):
        calls.append(offset)
        return None if offset < -1 else disc()

    masks, stopped = walk_outwards(keep_at, MARK, (1.0, 1.0), 1.0, max_steps=3)
    assert sorted(masks) == [-1, 1, 2, 3]
    assert stopped == {"up": "max_slices", "down": "no_slice"}
    assert calls == [1, 2, 3, -1, -2]
    with pytest.raises(ValueError, match="max_steps"):
        walk_outwards(keep_at, MARK, (1.0, 1.0), 1.0, max_steps=-1)


def test_a_slice_that_misses_the_estimate_ends_the_walk_and_nothing_beyond_is_kept():
    far = disc(6, 6, 3)  # a blob in the corner, crossed by no estimate
    masks = {0: disc(r=8), 1: disc(r=7) | far, 2: far, 3: disc(r=6), -1: disc(r=7), -2: disc(r=6)}
    kept = keep_marked_slices(masks, MARK, (1.0, 1.0), 1.0)
    assert kept.key_status == "marked"
    assert kept.stopped == {"up": "empty_prediction", "down": "no_slice"}
    np.testing.assert_array_equal(kept.masks[1], disc(r=7))  # the corner blob is not the lesion
    assert not kept.masks[2].any() and not kept.masks[3].any()  # +3 comes back under R̂, after the stop
    np.testing.assert_array_equal(kept.masks[-2], disc(r=6))
    assert kept.kept_offsets == [-2, -1, 0, 1]
    assert set(kept.masks) == set(masks)


def test_the_key_slice_falls_back_to_the_ellipse_but_off_key_slices_do_not():
    empty = np.zeros(SHAPE, bool)
    kept = keep_marked_slices({0: empty, 1: empty, -1: disc()}, MARK, (1.0, 1.0), 4.0)
    assert kept.key_status == "fallback_ellipse"
    assert kept.masks[0].sum() == pytest.approx(math.pi * 10 * 6, rel=0.1)  # the mark's ellipse
    assert not kept.masks[1].any()
    # -2 (8 mm) has an estimate but no file
    assert kept.stopped["up"] == "empty_prediction" and kept.stopped["down"] == "no_slice"


def test_label_maps_modes_none_and_mark_ellipse():
    labels = disc(r=8).astype(np.uint8) * 2
    kept = keep_marked_slices({0: labels, 1: labels}, MARK, (1.0, 1.0), 1.0, mode="none", lesion_label=2)
    assert kept.key_status == "unchanged" and kept.stopped == {}
    np.testing.assert_array_equal(kept.masks[1], disc(r=8))
    # a component crossing R̂ but running far along the row: mark-ellipse clips it to R̂'s 1.5x ellipse
    bar = np.zeros(SHAPE, bool)
    bar[30:35, 2:62] = True
    kept = keep_marked_slices({0: disc(r=8), 1: bar}, MARK, (1.0, 1.0), 8.0, mode="mark-ellipse")
    from nnunet_ulseg.pseudo_masks.recist3d import estimate_recist

    hat = estimate_recist(MARK, 8.0, (1.0, 1.0))
    limit = rasterize_ellipse(scaled_ellipse(hat, 1.5), SHAPE)
    assert kept.masks[1].any() and not (kept.masks[1] & ~limit).any()
    assert keep_marked_slices({0: disc(r=8), 1: bar}, MARK, (1.0, 1.0), 8.0).masks[1].sum() == bar.sum()


def test_errors():
    with pytest.raises(ValueError, match="offset 0"):
        keep_marked_slices({1: disc()}, MARK, (1.0, 1.0), 1.0)
    with pytest.raises(ValueError, match=r"needs the CT image of every slice.*no image for offsets \[1\]"):
        keep_marked_slices({0: disc(), 1: disc()}, MARK, (1.0, 1.0), 1.0, mode="mark-grabcut",
                           images={0: np.zeros(SHAPE)}, window=(-175.0, 275.0))
    with pytest.raises(ValueError, match=r"no window"):
        keep_marked_slices({0: disc()}, MARK, (1.0, 1.0), 1.0, mode="mark-grabcut", images={0: np.zeros(SHAPE)})
    with pytest.raises(ValueError, match="unknown post-processing mode"):
        keep_marked_slices({0: disc()}, MARK, (1.0, 1.0), 1.0, mode="largest")


def test_mark_grabcut_snaps_each_kept_slice_to_its_ct_and_still_stops_on_an_empty_slice():
    # CT: a 60 HU soft-tissue background with a 160 HU lesion whose radius shrinks slice by slice;
    # the model's masks are the key slice's radius-8 disc everywhere (too large off the key slice)
    radii = {0: 8, 1: 7, 2: 6, 3: 5}
    images = {o: np.where(disc(r=r), 160.0, 60.0) + np.random.default_rng(o).normal(0, 5, SHAPE)
              for o, r in radii.items()}
    masks = {o: disc(r=8) for o in radii}
    masks[3] = np.zeros(SHAPE, bool)
    kept = keep_marked_slices(masks, MARK, (1.0, 1.0), 1.0, mode="mark-grabcut", images=images,
                              window=(-175.0, 275.0))
    assert kept.stopped["up"] == "empty_prediction" and kept.stopped["down"] == "no_slice"
    assert not kept.masks[3].any()
    for offset in (1, 2):
        truth = disc(r=radii[offset])
        dice = 2 * (kept.masks[offset] & truth).sum() / (kept.masks[offset].sum() + truth.sum())
        before = 2 * (masks[offset] & truth).sum() / (masks[offset].sum() + truth.sum())
        assert dice > 0.9 and dice > before + 0.05, (offset, dice, before)
