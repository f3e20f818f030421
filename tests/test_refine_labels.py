"""Building the next round's dataset (links, labels, dataset.json) and the cross-validation split."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from nnunet_ulseg.refine.labels import (LabelStats, build_round_dataset, dataset_id_of, find_dataset,
                                        label_statistics, link_file, next_round_dataset_id, read_label,
                                        round_dataset_name, training_cases, used_dataset_ids, write_label)
from nnunet_ulseg.pseudo_masks.update import restrict_to_ellipse, scale_about_centroid
from nnunet_ulseg.refine.splits import crossval_splits, is_crossval_partition, patients_from_sidecar

from refine_support import SIZE, disk, read_image, write_image, write_tiny_dataset


def test_dataset_names_ids_and_lookup(tmp_path):
    assert dataset_id_of("Dataset501_DeepLesion") == 501
    with pytest.raises(ValueError, match="not an nnU-Net dataset name"):
        dataset_id_of("DeepLesion")
    assert round_dataset_name(601, "Dataset501_DeepLesion", 2) == "Dataset601_DeepLesion_round2"
    write_tiny_dataset(tmp_path)
    assert find_dataset(tmp_path, 501) == find_dataset(tmp_path, "501") == "Dataset501_Tiny"
    assert find_dataset(tmp_path, "Dataset501_Tiny") == "Dataset501_Tiny"
    with pytest.raises(FileNotFoundError, match="id 502"):
        find_dataset(tmp_path, 502)
    (tmp_path / "Dataset501_Other").mkdir()
    with pytest.raises(ValueError, match="several datasets with id 501"):
        find_dataset(tmp_path, 501)


def test_next_round_ids_skip_used_ids_in_any_nnunet_folder(tmp_path):
    raw, pre, res = (tmp_path / n for n in ("raw", "pre", "res"))
    for folder in (raw / "Dataset501_A", pre / "Dataset601_B", res / "Dataset602_C", raw / "notes"):
        folder.mkdir(parents=True)
    used = used_dataset_ids([raw, pre, res, tmp_path / "missing"])
    assert used == {501, 601, 602}
    assert next_round_dataset_id(501, 1, used) == 603
    assert next_round_dataset_id(501, 2, used) == 701
    # past 999 the search wraps to the smallest free id
    assert next_round_dataset_id(950, 1, {1, 2}) == 3
    with pytest.raises(ValueError, match="no free"):
        next_round_dataset_id(5, 1, set(range(1, 1000)))


def test_training_cases_come_from_images_and_need_labels(tmp_path):
    raw = write_tiny_dataset(tmp_path, n_patients=2)
    assert training_cases(raw) == ["P0L0", "P0L1", "P1L0", "P1L1"]
    (raw / "labelsTr" / "P1L0.mha").unlink()
    with pytest.raises(ValueError, match="lacks labels for 1 case.*P1L0"):
        training_cases(raw)


def test_link_file_prefers_relative_symlinks_then_hardlinks_then_copies(tmp_path, monkeypatch):
    src = tmp_path / "a" / "img.mha"
    src.parent.mkdir()
    src.write_bytes(b"data")
    (tmp_path / "b").mkdir()
    assert link_file(src, tmp_path / "b" / "s.mha") == "symlink"
    assert os.readlink(tmp_path / "b" / "s.mha") == os.path.join("..", "a", "img.mha")

    def refuse(*_a, **_k):
        raise OSError("not supported")

    monkeypatch.setattr(os, "symlink", refuse)
    assert link_file(src, tmp_path / "b" / "h.mha") == "hardlink"
    assert os.stat(tmp_path / "b" / "h.mha").st_ino == os.stat(src).st_ino
    monkeypatch.setattr(os, "link", refuse)
    assert link_file(src, tmp_path / "b" / "c.mha") == "copy"
    assert (tmp_path / "b" / "c.mha").read_bytes() == b"data" and not (tmp_path / "b" / "c.mha").is_symlink()


def test_read_and_write_label_keep_geometry(tmp_path):
    write_image(tmp_path / "ref.mha", disk())
    array, ref = read_label(tmp_path / "ref.mha")
    assert array.shape == (SIZE, SIZE)
    write_label(tmp_path / "out.mha", np.full((SIZE, SIZE), 2), ref)
    out, image = read_label(tmp_path / "out.mha")
    assert out.dtype == np.uint8 and (out == 2).all()
    assert image.GetSpacing() == ref.GetSpacing() and image.GetOrigin() == ref.GetOrigin()


def test_label_stats_counts_ignore_change_and_fallback():
    s = LabelStats()
    s.add(np.array([[0, 1], [2, 2]]), previous=np.array([[0, 1], [1, 0]]), fallback=True)
    s.add(np.array([[1, 1], [0, 0]]), previous=np.array([[1, 1], [0, 0]]))
    d = s.to_dict()
    assert (d["cases"], d["pixels"], d["ignore_pixels"], d["lesion_pixels"]) == (2, 8, 2, 3)
    assert d["ignore_fraction"] == 0.25 and d["label_change"] == 0.25 and d["fallback_cases"] == 1
    assert LabelStats().to_dict()["label_change"] is None
    with pytest.raises(ValueError, match="shape"):
        s.add(np.zeros((2, 2)), previous=np.zeros((3, 2)))


def test_label_statistics_of_round1_ellipses(tmp_path):
    raw = write_tiny_dataset(tmp_path, n_patients=2)
    d = label_statistics(raw)
    assert d["cases"] == 4 and d["pixels"] == 4 * SIZE * SIZE
    assert d["ignore_fraction"] == 0.0 and d["label_change"] is None
    assert d["lesion_pixels"] == 4 * int(disk().sum())


def _predictions(tmp_path, cases, make):
    folder = tmp_path / "pred"
    folder.mkdir(exist_ok=True)
    out = {}
    for case in cases:
        write_image(folder / f"{case}.mha", make(case))
        out[case] = folder / f"{case}.mha"
    return out


def test_build_round_dataset_links_images_and_updates_labels(tmp_path):
    raw = write_tiny_dataset(tmp_path / "raw", n_patients=2)
    cases = training_cases(raw)
    block = np.zeros((SIZE, SIZE), np.uint8)
    block[4:12, 8:16] = 1

    def make(case):
        return np.zeros_like(block) if case == "P1L1" else block

    preds = _predictions(tmp_path, cases, make)
    target = tmp_path / "raw" / "Dataset601_Tiny_round2"
    splits = [{"train": ["P0L0"], "val": ["P1L0"]}]
    stats = build_round_dataset(raw, raw, target, preds, splits, {"round": 2})

    # images: relative symlinks to round 1, for training and test images and test pseudo labels
    for sub, name in (("imagesTr", "P0L0_0000.mha"), ("imagesTs", "T0_0000.mha"), ("pseudolabelsTs", "T0.mha")):
        link = target / sub / name
        assert link.is_symlink() and not os.path.isabs(os.readlink(link))
        assert link.resolve() == (raw / sub / name).resolve()
    names = [sorted(p.name for p in (folder / "imagesTr").iterdir()) for folder in (target, raw)]
    assert names[0] == names[1]
    # labels: p ∩ e lesion, (p ∪ e) − (p ∩ e) ignore, ellipse fallback when p misses e
    for case in cases:
        e = read_image(raw / "labelsTr" / f"{case}.mha").astype(bool)
        g = read_image(target / "labelsTr" / f"{case}.mha")
        # the prediction restricted to the ellipse's neighbourhood (pseudo_masks.update docstring)
        p = restrict_to_ellipse(make(case).astype(bool), e)
        if case == "P1L1":
            np.testing.assert_array_equal(g, e.astype(np.uint8))
        else:
            np.testing.assert_array_equal(g == 1, p & e)
            np.testing.assert_array_equal(g == 2, (p | e) & ~(p & e))
        assert 2 in g or case == "P1L1"
    # dataset.json: same labels and file ending, new name, provenance
    dj = json.loads((target / "dataset.json").read_text())
    old = json.loads((raw / "dataset.json").read_text())
    assert dj["labels"] == old["labels"] == {"background": 0, "lesion": 1, "ignore": 2}
    assert dj["file_ending"] == ".mha" and dj["numTraining"] == old["numTraining"]
    assert dj["name"] == target.name and dj["ulseg_refine"] == {"round": 2}
    assert json.loads((target / "splits_final.json").read_text()) == splits
    assert (target / "lesions.csv").read_text() == (raw / "lesions.csv").read_text()
    assert not list(tmp_path.glob("raw/.*partial"))
    # statistics against the previous round's labels
    total = len(cases) * SIZE * SIZE
    ignore = sum(int((read_image(target / "labelsTr" / f"{c}.mha") == 2).sum()) for c in cases)
    changed = sum(int((read_image(target / "labelsTr" / f"{c}.mha") != read_image(raw / "labelsTr" / f"{c}.mha")).sum())
                  for c in cases)
    assert stats["ignore_fraction"] == ignore / total and stats["label_change"] == changed / total
    assert stats["fallback_cases"] == 1 and stats["link_method"] == ["symlink"]


def test_build_round_dataset_uses_round1_ellipse_not_previous_labels(tmp_path):
    raw = write_tiny_dataset(tmp_path / "raw", n_patients=1, n_test=0)
    cases = training_cases(raw)
    full = np.ones((SIZE, SIZE), np.uint8)
    r2 = tmp_path / "raw" / "Dataset601_Tiny_round2"
    build_round_dataset(raw, raw, r2, _predictions(tmp_path, cases, lambda c: full), None)
    # round 2 labels have ignore everywhere in the x2 ellipse outside the ellipse; round 3 from the same
    # prediction must again give lesion = ellipse (e from round 1), and nothing changed
    r3 = tmp_path / "raw" / "Dataset701_Tiny_round3"
    stats = build_round_dataset(raw, r2, r3, _predictions(tmp_path, cases, lambda c: full), None)
    for case in cases:
        e = read_image(raw / "labelsTr" / f"{case}.mha") == 1
        np.testing.assert_array_equal(read_image(r3 / "labelsTr" / f"{case}.mha"),
                                      np.where(e, 1, np.where(scale_about_centroid(e), 2, 0)))
    assert stats["label_change"] == 0.0
    assert not (r3 / "splits_final.json").exists()


def test_build_round_dataset_rejects_incomplete_predictions_and_existing_target(tmp_path):
    raw = write_tiny_dataset(tmp_path / "raw", n_patients=1)
    preds = _predictions(tmp_path, ["P0L0", "X9"], lambda c: disk())
    with pytest.raises(ValueError, match=r"missing \['P0L1'\].*unknown \['X9'\]"):
        build_round_dataset(raw, raw, tmp_path / "raw" / "Dataset601_T_round2", preds, None)
    with pytest.raises(FileExistsError):
        build_round_dataset(raw, raw, raw, preds, None)
    bad = _predictions(tmp_path, ["P0L0", "P0L1"], lambda c: np.zeros((4, 4)))
    with pytest.raises(ValueError, match="shape"):
        build_round_dataset(raw, raw, tmp_path / "raw" / "Dataset601_T_round2", bad, None)


def test_build_round_dataset_falls_back_to_hardlinks(tmp_path, monkeypatch):
    raw = write_tiny_dataset(tmp_path / "raw", n_patients=1, n_test=0)

    def refuse(*_a, **_k):
        raise OSError("no symlinks here")

    monkeypatch.setattr(os, "symlink", refuse)
    stats = build_round_dataset(raw, raw, tmp_path / "raw" / "Dataset601_T_round2",
                                _predictions(tmp_path, training_cases(raw), lambda c: disk()), None)
    assert stats["link_method"] == ["hardlink"]


def test_crossval_splits_group_patients_and_partition_cases():
    patients = {f"c{i}": i // 3 for i in range(18)}  # 6 patients x 3 cases
    patients.update({"d0": 9, "d1": 9, "d2": 9, "d3": 9, "d4": 9})  # one big patient
    cases = sorted(patients)
    splits = crossval_splits(cases, patients)
    assert len(splits) == 5 and is_crossval_partition(splits, cases)
    for fold in splits:
        val_patients = {patients[c] for c in fold["val"]}
        train_patients = {patients[c] for c in fold["train"]}
        assert not val_patients & train_patients
        assert sorted(fold["train"] + fold["val"]) == cases
    sizes = sorted(len(f["val"]) for f in splits)
    assert sizes == [3, 3, 5, 6, 6]  # the big patient alone, then two patients per fold at most
    assert crossval_splits(cases, patients) == splits  # deterministic
    with pytest.raises(ValueError, match="at least 5 patients"):
        crossval_splits(["a", "b"], {"a": 1, "b": 2})
    with pytest.raises(ValueError, match="no patient"):
        crossval_splits(["a"], {})


def test_is_crossval_partition_rejects_other_splits():
    cases = ["a", "b", "c", "d", "e"]
    good = [{"train": [c for c in cases if c != v], "val": [v]} for v in cases]
    assert is_crossval_partition(good, cases)
    assert not is_crossval_partition(good[:1], cases)  # the converter's single fold
    overlap = [dict(f) for f in good]
    overlap[1] = {"train": ["c", "d", "e"], "val": ["a", "b"]}
    assert not is_crossval_partition(overlap, cases)
    leaky = [dict(f) for f in good]
    leaky[0] = {"train": cases, "val": ["a"]}
    assert not is_crossval_partition(leaky, cases)
    assert not is_crossval_partition(good, cases + ["f"])


def test_patients_from_sidecar(tmp_path):
    raw = write_tiny_dataset(tmp_path, n_patients=3)
    patients = patients_from_sidecar(raw / "lesions.csv")
    assert patients["P2L1"] == 2 and patients["T0"] == 100 and len(patients) == 8
