"""ulseg segment marks: world points under a non-identity direction and anisotropic spacing land on hand-computed voxels."""
from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_ulseg.segment.marks import box_to_recist, parse_marks, read_mark_rows
from nnunet_ulseg.segment.volume_io import Volume

SPACING = (0.5, 0.8, 3.0)
ORIGIN = (10.0, -20.0, 100.0)
# columns of the direction matrix: image x -> patient -y, image y -> patient +x, image k -> patient -z
DIRECTION = (0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, -1.0)


def _volume() -> Volume:
    img = sitk.GetImageFromArray(np.zeros((6, 40, 50), np.int16))
    img.SetSpacing(SPACING)
    img.SetOrigin(ORIGIN)
    img.SetDirection(DIRECTION)
    return Volume(img, np.zeros((6, 40, 50), np.float32), "ct.nii.gz")


def _world(i, j, k):
    """Hand-computed: origin + i*sx*(0,-1,0) + j*sy*(1,0,0) + k*sz*(0,0,-1)."""
    return (ORIGIN[0] + j * SPACING[1], ORIGIN[1] - i * SPACING[0], ORIGIN[2] - k * SPACING[2])


def test_world_marks_land_on_the_right_voxels():
    vol = _volume()
    pts = [(10, 20), (30, 20), (20, 15), (20, 25)]  # voxel (x, y) on slice 4
    world = [c for x, y in pts for c in _world(x, y, 4)]
    assert _world(10, 20, 4) == (26.0, -25.0, 88.0)
    marks, issues = parse_marks([("row 1", {"recist": ",".join(map(str, world)), "space": "world",
                                             "lesion_id": "A"})], vol, strict=True)
    assert not issues and marks[0].k == 4 and marks[0].lesion_id == "A"
    np.testing.assert_allclose(marks[0].recist.points, np.array(pts, float), atol=1e-9)
    # lengths in mm: long along x (0.5 mm), short along y (0.8 mm)
    assert marks[0].recist.lengths_mm(SPACING[:2]) == pytest.approx((10.0, 8.0))


def test_a_row_off_one_slice_is_rejected_and_named():
    vol = _volume()
    world = [*_world(10, 20, 4), *_world(30, 20, 4), *_world(20, 15, 4), *_world(20, 25, 3)]
    rows = [("marks.csv line 2", {"recist": ",".join(map(str, world)), "space": "world"}),
            ("marks.csv line 3", {"recist": "10,20,30,20,20,15,20,25", "slice": "2"})]
    marks, issues = parse_marks(rows, vol)
    assert [m.row for m in marks] == ["marks.csv line 3"] and marks[0].k == 2
    assert len(issues) == 1 and issues[0].where == "marks.csv line 2" and "one axial slice" in issues[0].reason
    with pytest.raises(ValueError, match="marks.csv line 2: .*one axial slice"):
        parse_marks(rows, vol, strict=True)


def test_bad_rows_are_counted_with_their_reason():
    vol = _volume()
    rows = [("l2", {"recist": "1,2,3", "slice": "1"}), ("l3", {"recist": "10,20,30,20,20,15,20,25"}),
            ("l4", {"recist": "10,20,30,20,20,15,20,25", "slice": "9"}),
            ("l5", {"recist": "10,20,80,20,20,15,20,25", "slice": "1"}),
            ("l6", {"box": "1,1,5,5", "recist": "10,20,30,20,20,15,20,25", "slice": "1"}),
            ("l7", {"box": "1,1,5,5", "slice": "1", "lesion_id": "X"}),
            ("l8", {"box": "2,2,6,6", "slice": "1", "lesion_id": "X"})]
    marks, issues = parse_marks(rows, vol)
    assert [m.row for m in marks] == ["l7"]
    reasons = {i.where: i.reason for i in issues}
    assert "expected 8 numbers" in reasons["l2"] and "needs the slice" in reasons["l3"]
    assert "outside the volume" in reasons["l4"] and "outside the 50 x 40 slice" in reasons["l5"]
    assert "exactly one of recist or box" in reasons["l6"] and "repeated" in reasons["l8"]


def test_box_becomes_its_inscribed_ellipse_axes():
    r = box_to_recist(30, 10, 10, 18)  # corners in any order; 20 wide, 8 high
    np.testing.assert_allclose(r.long_axis, [[10, 14], [30, 14]])
    np.testing.assert_allclose(r.short_axis, [[20, 10], [20, 18]])
    tall = box_to_recist(0, 0, 4, 10)
    np.testing.assert_allclose(tall.long_axis, [[2, 0], [2, 10]])
    vol = _volume()
    world = [*_world(10, 10, 2), *_world(30, 18, 2)]  # a box in world coordinates
    marks, _ = parse_marks([("r", {"box": world, "space": "world"})], vol, strict=True)
    assert marks[0].kind == "box" and marks[0].k == 2
    np.testing.assert_allclose(marks[0].recist.points, [[10, 14], [30, 14], [20, 10], [20, 18]], atol=1e-9)


def test_csv_and_json_files(tmp_path):
    (tmp_path / "m.csv").write_text('lesion_id,recist,slice,lymph_node\nN1,"10,20,30,20,20,15,20,25",1,yes\n')
    (tmp_path / "m.json").write_text(json.dumps({"lesions": [{"box": [1, 1, 5, 9], "slice": 0}]}))
    vol = _volume()
    a, _ = parse_marks(read_mark_rows(tmp_path / "m.csv"), vol, strict=True)
    b, _ = parse_marks(read_mark_rows(tmp_path / "m.json"), vol, strict=True)
    assert a[0].lesion_id == "N1" and a[0].lymph_node and a[0].row.endswith("m.csv line 2")
    assert b[0].lesion_id == "L1" and b[0].kind == "box" and b[0].row.endswith("m.json item 1")
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="bad.json: expected a list of lesion objects"):
        read_mark_rows(tmp_path / "bad.json")


def test_negative_world_numbers_are_values_on_the_command_line():
    """``--recist -120.5,...`` (a world point left of the origin) is the option's value, not an unknown option."""
    from nnunet_ulseg.cli import build_parser

    numbers = "-120.5,3,-4.25,5,6,7,8,9,1,2,3,4"
    args = build_parser().parse_args(["segment", "-i", "ct.nii.gz", "--recist", numbers, "--space", "world",
                                      "-o", "out", "-d", "5", "-device", "cpu"])
    assert (args.recist, args.space, args.dataset, args.device) == (numbers, "world", "5", "cpu")
    args = build_parser().parse_args(["segment", "-i", "ct.nii.gz", "--box", "-.5,-2,-3e1,4", "--slice", "3",
                                      "-o", "out"])
    assert args.box == "-.5,-2,-3e1,4"
