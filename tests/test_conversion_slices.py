"""Off-key slice case names and the slices.csv table (conversion.slices, WSSS Algorithm 1)."""
import pytest

from nnunet_ulseg.conversion.slices import (SLICE_COLUMNS, SliceRow, parse_slice_case, read_slices,
                                            slice_case_name, write_slices)


@pytest.mark.parametrize("offset, name", [(0, "DL_000012"), (1, "DL_000012_zp1"), (-3, "DL_000012_zm3"),
                                          (12, "DL_000012_zp12")])
def test_case_names_round_trip(offset, name):
    assert slice_case_name("DL_000012", offset) == name
    assert parse_slice_case(name) == ("DL_000012", offset)


def test_names_that_only_look_like_suffixes_are_key_cases():
    assert parse_slice_case("case_zp0") == ("case_zp0", 0)  # k >= 1 only
    assert parse_slice_case("case_zx1") == ("case_zx1", 0)
    assert parse_slice_case("a_zp1_zm2") == ("a_zp1", -2)
    with pytest.raises(TypeError):
        slice_case_name("a", 1.0)


def test_table_round_trips_exact_floats(tmp_path):
    rows = [SliceRow("L_zm1", "L", -1, -2.5, 40, "train", "grabcut"),
            SliceRow("L", "L", 0, 0.0, 41, "train", "key"),
            SliceRow("T_zp2", "T", 2, 0.1 + 0.2, 9, "test", "none")]
    path = tmp_path / "slices.csv"
    write_slices(path, rows)
    assert path.read_text().splitlines()[0] == ",".join(SLICE_COLUMNS)
    assert read_slices(path) == rows


def test_mismatched_name_and_bad_rows_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="does not match"):
        SliceRow("L_zp2", "L", 1, 2.5, 3, "train", "grabcut")
    path = tmp_path / "slices.csv"
    path.write_text(",".join(SLICE_COLUMNS) + "\nL_zp1,L,one,2.5,3,train,grabcut\n")
    with pytest.raises(ValueError, match="line 2"):
        read_slices(path)
    path.write_text("case,key_case\nL,L\n")
    with pytest.raises(ValueError, match="missing columns"):
        read_slices(path)
