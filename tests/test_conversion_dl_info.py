"""DL_info.csv parsing and per-row validation (nnunet_ulseg.conversion.dl_info)."""
import numpy as np
import pytest

from dl_fixtures import dl_row, recist_text, write_dl_info
from nnunet_ulseg.conversion.dl_info import COLUMNS, read_dl_info, series_dir_name, slice_png_name
from nnunet_ulseg.conversion.report import ConversionError


def test_design_example_row_is_parsed_0_based(tmp_path):
    (tmp_path / "DL_info.csv").write_text(
        ",".join(COLUMNS) + "\n"
        '000001_01_01_109.png,1,1,1,109,"233.537, 95.0204, 234.057, 106.977, 231.169, 101.605, 236.252, 101.143",'
        '"226.169, 90.0204, 241.252, 111.977","11.9677, 5.10387","0.44666, 0.283794, 0.434454",3,0,"103, 115",'
        '"0.488281, 0.488281, 5","512, 512","-175, 275",F,,3\n'
    )
    info = read_dl_info(tmp_path / "DL_info.csv")
    assert info.issues == [] and info.n_rows == 1
    r = info.records[0]
    assert (r.dl_row, r.patient, r.study, r.series, r.key_slice, r.split, r.k) == (2, 1, 1, 1, 109, 3, 0)
    np.testing.assert_allclose(r.recist.long_axis, [[232.537, 94.0204], [233.057, 105.977]])
    assert r.recist.long_length == pytest.approx(11.9677, abs=1e-3)  # matches Lesion_diameters_Pixel_
    assert r.spacing == (0.488281, 0.488281, 5.0) and r.image_size == (512, 512) and r.slice_range == (103, 115)
    assert r.window == (-175.0, 275.0) and r.lesion_type == 3 and r.possibly_noisy == 0
    assert r.case_id == "DL_000001_01_01_109_0" and r.png_relpath == "Images_png/000001_01_01/109.png"
    assert r.split_name == "test"


def test_each_fault_gets_its_reason_and_good_rows_survive(tmp_path):
    good = recist_text(40, 40, 10, 5)
    rows = [
        dl_row(1, 1, 1, 10, good, 1),
        dl_row(1, 1, 1, 10, good, 1),                                          # duplicate
        dl_row(1, 1, 1, 10, "nan, 1, 2, 3, 4, 5, 6, 7", 1),
        dl_row(1, 1, 1, 10, "10, 10, 10, 10, 12, 8, 12, 14", 1),               # zero long axis
        dl_row(1, 1, 1, 10, "10, 10, 30, 10, 15, 10, 25, 10", 1),              # collinear
        dl_row(1, 1, 1, 10, "1, 2, 3", 1),
        dl_row(1, 1, 1, 10, recist_text(1, 40, 10, 5), 1),                     # x = -4 (0-based)
        dl_row(1, 1, 1, 10, recist_text(41, 40, 10, 5), 1, spacing="0.7, -1, 5"),
        dl_row(1, 1, 1, 10, recist_text(42, 40, 10, 5), 1, size=("512", "x")),
        dl_row(1, 1, 1, 10, good, 1)[:17],
        dl_row(1, 1, 1, 10, good, 0),
        [*dl_row(1, 1, 1, 10, good, 1)[:4], "10.5", *dl_row(1, 1, 1, 10, good, 1)[5:]],
        ["000001_01_01_011.png", *dl_row(1, 1, 1, 10, recist_text(43, 40, 10, 5), 1)[1:]],
        dl_row(1, 1, 1, 10, recist_text(40.5, 40, 12, 5), 2),
    ]
    write_dl_info(tmp_path, rows)
    info = read_dl_info(tmp_path / "DL_info.csv")
    assert [(i.dl_row, i.reason) for i in info.issues] == [
        (3, "duplicate_row"), (4, "nan_coordinates"), (5, "zero_length_axis"), (6, "degenerate_recist"),
        (7, "bad_coordinates"), (8, "lesion_outside_image"), (9, "bad_spacing"), (10, "bad_image_size"),
        (11, "wrong_column_count"), (12, "unknown_split"), (13, "bad_integer"), (14, "file_name_mismatch"),
    ]
    assert all(i.file.endswith("DL_info.csv") for i in info.issues)
    assert [r.dl_row for r in info.records] == [2, 15]
    # k counts every row of the key slice with parseable indices, so ids are stable
    assert [r.case_id for r in info.records] == ["DL_000001_01_01_010_0", "DL_000001_01_01_010_11"]
    # patients' split values include rows that were skipped later
    assert info.patient_splits == {1: {1, 2}}


def test_endpoint_within_1px_outside_is_accepted(tmp_path):
    write_dl_info(tmp_path, [dl_row(1, 1, 1, 10, recist_text(5.5, 40, 12.8, 5), 1)])  # x from -0.9
    assert len(read_dl_info(tmp_path / "DL_info.csv").records) == 1


def test_duplicates_compare_numbers_not_text(tmp_path):
    a = dl_row(1, 1, 1, 10, "10, 10, 30, 10, 20, 5, 20, 15", 1)
    b = dl_row(1, 1, 1, 10, "10.0,10.00, 30, 10, 20, 5, 20, 15.000", 1)
    write_dl_info(tmp_path, [a, b])
    info = read_dl_info(tmp_path / "DL_info.csv")
    assert [i.reason for i in info.issues] == ["duplicate_row"] and "line 2" in info.issues[0].detail


def test_lenient_sidecar_fields_and_blank_lines(tmp_path):
    row = dl_row(1, 1, 1, 10, recist_text(40, 40, 10, 5), 1, lesion_type="?", noisy="", windows="x",
                 slice_range="a, b", age="")
    path = write_dl_info(tmp_path, [row])
    path.write_text(path.read_text() + "\n\n")
    info = read_dl_info(path)
    r, = info.records
    assert r.lesion_type is None and r.possibly_noisy is None and np.isnan(r.window).all() and r.slice_range is None
    assert info.n_rows == 1 and info.issues == []


def test_strict_raises_on_first_bad_row(tmp_path):
    write_dl_info(tmp_path, [dl_row(1, 1, 1, 10, recist_text(40, 40, 10, 5), 1),
                             dl_row(1, 1, 1, 10, "nan, 1, 2, 3, 4, 5, 6, 7", 1)])
    with pytest.raises(ConversionError, match="line 3.*nan_coordinates"):
        read_dl_info(tmp_path / "DL_info.csv", strict=True)


def test_whole_file_problems_raise(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_dl_info(tmp_path / "DL_info.csv")
    (tmp_path / "DL_info.csv").write_text("a,b,c\n1,2,3\n")
    with pytest.raises(ValueError, match="header"):
        read_dl_info(tmp_path / "DL_info.csv")


def test_path_names():
    assert series_dir_name(12, 3, 4) == "000012_03_04" and slice_png_name(7) == "007.png"


def test_exclude_noisy_and_crlf_line_endings(tmp_path):
    rows = [dl_row(1, 1, 1, 10, recist_text(40, 40, 10, 5), 1, noisy="1"),
            dl_row(1, 1, 1, 10, recist_text(50, 40, 10, 5), 1, noisy="0"),
            dl_row(1, 1, 1, 10, "nan, 1, 2, 3, 4, 5, 6, 7", 1, noisy="1")]
    path = write_dl_info(tmp_path, rows)
    path.write_bytes(path.read_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))
    assert [r.possibly_noisy for r in read_dl_info(path).records] == [1, 0]
    info = read_dl_info(path, exclude_noisy=True)  # a fault is reported as the fault, noise as noise
    assert [(i.dl_row, i.reason) for i in info.issues] == [(2, "possibly_noisy"), (4, "nan_coordinates")]
    assert [r.dl_row for r in info.records] == [3]
    with pytest.raises(ConversionError, match="line 4.*nan_coordinates"):  # line 2 was not raised
        read_dl_info(path, strict=True, exclude_noisy=True)


def test_records_share_repeated_tuples_and_derive_the_file_name(tmp_path):
    rows = [dl_row(1, 1, 1, 10, recist_text(40 + i, 40, 10, 5), 1) for i in range(3)]
    rows.append(dl_row(1, 1, 1, 10, "-0.0, 10, 30, 10, 20, 5, 20, 15", 1))
    rows.append(dl_row(1, 1, 1, 10, "0, 10, 30, 10, 20, 5, 20, 15", 1))  # equal numbers: a duplicate
    write_dl_info(tmp_path, rows)
    info = read_dl_info(tmp_path / "DL_info.csv")
    a, b = info.records[:2]
    assert a.spacing is b.spacing and a.image_size is b.image_size and a.window is b.window
    assert a.file_name == "000001_01_01_010.png"
    assert [(i.dl_row, i.reason) for i in info.issues] == [(6, "duplicate_row")]
