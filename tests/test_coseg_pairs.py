"""Lesion clusters, the cluster-stratified patient split and pairs (co-segmentation paper Sec. 3.1): nnunet_ulseg.coseg."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from nnunet_ulseg.coseg.embed import center_tile, embed_tiles, normalise
from nnunet_ulseg.coseg.pairs import (CLUSTERS_FILE, EMBEDDINGS_FILE, PAIRS_FILE, cluster_count, kmeans_clusters,
                                      nearest_partners, read_clusters, read_embeddings, sample_pairs,
                                      stratified_patient_split, write_pairs)


def _corpus(n_clusters=4, patients_per_cluster=6, lesions_per_patient=3, seed=0):
    """Cases with blob embeddings (one blob per cluster) and patients; a patient's lesions share a blob."""
    rng = np.random.default_rng(seed)
    centres = np.eye(n_clusters, 8) * 10
    cases, emb, patients, truth = [], [], {}, {}
    p = 0
    for k in range(n_clusters):
        for _ in range(patients_per_cluster):
            for j in range(lesions_per_patient):
                case = f"case_{len(cases):04d}"
                cases.append(case)
                emb.append(centres[k] + rng.normal(0, 0.3, 8))
                patients[case], truth[case] = p, k
            p += 1
    return cases, np.array(emb), patients, truth


def test_cluster_count_scales_200_with_the_corpus_and_is_clamped():
    assert cluster_count(32735) == 200
    assert cluster_count(16368) == 100  # 200 * 16368 / 32735 = 100.003
    assert cluster_count(1000) == 6  # 6.11
    assert cluster_count(40) == 2  # 0.24 rounds to 0, raised to 2
    assert cluster_count(4) == 2
    assert cluster_count(10, clusters=200, lesions=10) == 5  # 200 clamped to n // 2
    with pytest.raises(ValueError, match="at least 4 lesions"):
        cluster_count(3)


def test_kmeans_finds_separated_blobs_and_is_deterministic_per_seed():
    cases, emb, _, truth = _corpus()
    labels = kmeans_clusters(normalise(emb), 4, seed=1)
    # each true blob is exactly one cluster (a bijection)
    mapping = {truth[c]: l for c, l in zip(cases, labels)}
    assert len(set(mapping.values())) == 4
    assert all(mapping[truth[c]] == l for c, l in zip(cases, labels))
    assert np.array_equal(labels, kmeans_clusters(normalise(emb), 4, seed=1))
    with pytest.raises(ValueError, match="needs at least"):
        kmeans_clusters(emb[:3], 4)


def test_split_keeps_patients_whole_and_stratifies_clusters():
    cases, emb, patients, truth = _corpus(n_clusters=4, patients_per_cluster=10)
    folds = stratified_patient_split(cases, truth, patients, n_folds=5, seed=0)
    assert len(folds) == 5
    vals = [set(f["val"]) for f in folds]
    assert set().union(*vals) == set(cases) and sum(map(len, vals)) == len(cases)  # a partition
    for fold in folds:
        assert set(fold["train"]) == set(cases) - set(fold["val"])
        train_patients = {patients[c] for c in fold["train"]}
        assert not train_patients & {patients[c] for c in fold["val"]}  # a patient never spans the split
        # stratified: every cluster (10 patients each) is in every validation fold, 2 patients' worth
        counts = np.bincount([truth[c] for c in fold["val"]], minlength=4)
        assert counts.tolist() == [6, 6, 6, 6]
    assert folds == stratified_patient_split(cases, truth, patients, n_folds=5, seed=0)


def test_split_errors_name_the_problem():
    cases, _, patients, truth = _corpus(n_clusters=2, patients_per_cluster=2)
    with pytest.raises(ValueError, match="at least 5 patients"):
        stratified_patient_split(cases, truth, patients, n_folds=5)
    with pytest.raises(ValueError, match="no patient or cluster"):
        stratified_patient_split(cases + ["extra"], truth, patients, n_folds=2)


def test_pairs_stay_within_clusters_and_split_sides():
    cases, _, patients, truth = _corpus(n_clusters=3, patients_per_cluster=5)
    fold = stratified_patient_split(cases, truth, patients, n_folds=5, seed=3)[0]
    for side in ("train", "val"):
        pairs = sample_pairs(fold[side], truth, pairs_per_case=4, seed=2)
        members = set(fold[side])
        assert pairs and all(a in members and b in members for a, b in pairs)
        assert all(truth[a] == truth[b] for a, b in pairs)
        assert all(a < b for a, b in pairs)  # unordered, no self pair while a cluster has others
        # every lesion of the side is in at least one pair
        assert {c for p in pairs for c in p} == members
        assert pairs == sample_pairs(fold[side], truth, pairs_per_case=4, seed=2)
    # each case draws min(4, cluster size - 1) partners: a 3-lesion cluster gives all 3 pairs
    small = {"a": 0, "b": 0, "c": 0, "d": 1}
    assert sample_pairs(list(small), small, pairs_per_case=4) == [("a", "b"), ("a", "c"), ("b", "c"), ("d", "d")]


def test_files_round_trip(tmp_path):
    cases, emb, patients, truth = _corpus(n_clusters=2, patients_per_cluster=5)
    folds = stratified_patient_split(cases, truth, patients, n_folds=5, seed=0)
    order = np.random.default_rng(0).permutation(len(cases))  # any order in, sorted on disk
    shuffled = [cases[i] for i in order]
    content = write_pairs(tmp_path, shuffled, emb[order], truth, patients, folds, {"dataset": "X"}, 3, 0)
    assert read_clusters(tmp_path / CLUSTERS_FILE) == truth
    stored = json.loads((tmp_path / PAIRS_FILE).read_text())
    assert stored == json.loads(json.dumps(content))
    assert stored["n_clusters"] == 2 and stored["cluster_sizes"] == [15, 15] and stored["folds"] == folds
    assert all(a in folds[0]["val"] and b in folds[0]["val"] for a, b in stored["pairs"]["val"])
    names, vectors = read_embeddings(tmp_path / EMBEDDINGS_FILE)
    assert names == sorted(cases)
    assert np.allclose(vectors[names.index("case_0007")], emb[cases.index("case_0007")])


def test_read_clusters_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="coseg-pairs"):
        read_clusters(tmp_path / CLUSTERS_FILE)
    (tmp_path / CLUSTERS_FILE).write_text("case,patient,cluster,split\na,1,x,train\n")
    with pytest.raises(ValueError, match="row 2: cluster 'x'"):
        read_clusters(tmp_path / CLUSTERS_FILE)


def test_center_tile_crops_and_pads_about_the_centre():
    image = np.arange(2 * 1 * 4 * 6, dtype=np.float32).reshape(2, 1, 4, 6)  # nnU-Net's 2d [C, 1, H, W]
    tile = center_tile(image, (6, 4))
    assert tile.shape == (2, 6, 4)
    # rows: 4 -> 6 padded one each side; columns: 6 -> 4 cropped from column 1
    assert np.all(tile[:, 0] == 0) and np.all(tile[:, 5] == 0)
    assert np.array_equal(tile[:, 1:5], image[:, 0, :, 1:5])
    with pytest.raises(ValueError, match="does not match"):
        center_tile(np.zeros((4, 6)), (4, 4))


def test_nearest_partners_by_hand():
    bank = np.array([[0.0, 0], [1, 0], [5, 5]])
    assert nearest_partners(np.array([[0.9, 0.1], [4, 4]]), bank, k=2).tolist() == [[1, 0], [2, 1]]
    with pytest.raises(ValueError, match="--partners"):
        nearest_partners(bank, bank, k=4)


def test_embeddings_of_identical_images_are_equal_and_from_the_bottleneck():
    from dynamic_network_architectures.architectures.unet import PlainConvUNet

    torch.manual_seed(0)
    net = PlainConvUNet(1, 3, (8, 16, 32), torch.nn.Conv2d, 3, (1, 2, 2), 1, 2, 1, norm_op=torch.nn.InstanceNorm2d,
                        norm_op_kwargs={"affine": True}, nonlin=torch.nn.LeakyReLU)
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(1, 32, 32)).astype(np.float32), rng.normal(size=(1, 32, 32)).astype(np.float32)
    emb = embed_tiles(net, [a, b, a], batch_size=2, progress=False)
    assert emb.shape == (3, 32)  # deepest stage's channels, globally pooled
    assert np.allclose(emb[0], emb[2], atol=1e-6) and not np.allclose(emb[0], emb[1])
    with torch.no_grad():
        expected = net.encoder(torch.from_numpy(a[None]))[-1].mean(dim=(2, 3))[0].numpy()
    assert np.allclose(emb[0], expected, atol=1e-5)
    assert net.training  # the mode is restored
    with pytest.raises(ValueError, match="no .encoder"):
        embed_tiles(torch.nn.Conv2d(1, 1, 1), [a], progress=False)


def test_grey_levels_by_hand():
    from nnunet_ulseg.coseg.crf import grey_levels

    image = np.linspace(-1000, 1000, 201)
    g = grey_levels(image)
    assert g.dtype == np.uint8 and g[0] == 0 and g[-1] == 255 and g[100] == 128  # 0.5 * 255 rounds to 128
    assert not grey_levels(np.full((4, 4), 7.0)).any()


def test_dense_crf_fills_an_uncertain_hole_and_keeps_confident_labels():
    pytest.importorskip("pydensecrf.densecrf")
    from nnunet_ulseg.coseg.crf import dense_crf

    image = np.full((48, 48), -100.0)
    image[12:36, 12:36] = 60.0  # a bright lesion
    lesion = np.full((48, 48), 0.05)
    lesion[12:36, 12:36] = 0.95
    lesion[20:28, 20:28] = 0.4  # an uncertain hole inside the lesion, same intensity as the lesion
    probs = np.stack([1 - lesion, lesion])
    labels = dense_crf(probs, image)
    assert labels.shape == (48, 48) and labels.dtype == np.uint8
    assert labels[20:28, 20:28].all()  # filled by the smoothness and appearance kernels
    assert labels[12:36, 12:36].all() and not labels[:8].any() and not labels[:, :8].any()
    assert (np.argmax(probs, 0)[20:28, 20:28] == 0).all()  # the argmax alone would leave the hole
    with pytest.raises(ValueError, match="do not match"):
        dense_crf(probs, image[:10])
