"""The co-segmentation trainers (co-segmentation paper Sec. 2.2-2.4): pair loader, loss, optimisers, nnU-Net runs.

The loader is tested on nnU-Net's own ``nnUNetDatasetNumpy`` files (each case's image is filled
with its number, so a batch shows which case each sample came from); the trainers are built
in-process from the tiny plans of ``test_trainers_inprocess``; the integration test runs the
real ``nnUNetv2_*`` commands and ``ulseg coseg-pairs``/``coseg-predict`` on a generated sample.
"""
from __future__ import annotations

import json
import shutil
from collections import Counter

import numpy as np
import pytest
import torch

from nnunet_ulseg.training.coseg import PairDataLoader
from test_trainers_inprocess import nnunet_env, make_trainer, tiny_plans  # noqa: F401  (fixture)

LABELS = {"background": 0, "lesion": 1, "ignore": 2}


def _write_cases(folder, n):
    """``n`` preprocessed 2d cases ``c00..``: image = case number + 1, a lesion square, nnU-Net's properties."""
    from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetNumpy

    folder.mkdir(parents=True, exist_ok=True)
    seg = np.zeros((1, 1, 16, 16), dtype=np.int8)
    seg[0, 0, 4:12, 4:12] = 1
    locations = np.argwhere(seg >= 0)
    props = {"class_locations": {1: np.argwhere(seg == 1), (-1, 0, 1): locations}, "spacing": [1.0, 1.0, 1.0]}
    for i in range(n):
        data = np.full((1, 1, 16, 16), i + 1, dtype=np.float32)
        nnUNetDatasetNumpy.save_case(data, seg, props, str(folder / f"c{i:02d}"))
    return nnUNetDatasetNumpy(str(folder))


def _loader(dataset, clusters, batch_size=6, identifiers=None):
    from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetNumpy
    from nnunetv2.utilities.label_handling.label_handling import LabelManager

    if identifiers is not None:
        dataset = nnUNetDatasetNumpy(dataset.source_folder, identifiers)
    return PairDataLoader(dataset, batch_size, (16, 16), (16, 16), LabelManager(LABELS, None),
                          oversample_foreground_percent=0.33, clusters=clusters)


def test_loader_yields_interleaved_pairs_from_one_cluster_within_its_cases(tmp_path):
    dataset = _write_cases(tmp_path / "pre", 10)
    clusters = {f"c{i:02d}": i % 3 for i in range(10)}  # clusters {0,3,6,9}, {1,4,7}, {2,5,8}
    train = [f"c{i:02d}" for i in range(8)]  # c08, c09 are the other side of the split
    loader = _loader(dataset, clusters, batch_size=6, identifiers=train)
    np.random.seed(0)
    anchors = Counter()
    for _ in range(40):
        batch = loader.generate_train_batch()
        keys = list(batch["keys"])
        assert len(keys) == 6 and batch["data"].shape == (6, 1, 16, 16)
        for j, key in enumerate(keys):  # the image of sample j is case keys[j]'s
            assert float(batch["data"][j].max()) == int(key[1:]) + 1  # padding is 0
        for a, b in zip(keys[0::2], keys[1::2]):
            assert clusters[a] == clusters[b] and a != b and {a, b} <= set(train)
            anchors[a] += 1
    assert set(anchors) == set(train)  # every case of the side is drawn as an anchor


def test_loader_pairs_a_lone_lesion_with_itself_and_refuses_odd_batches(tmp_path):
    dataset = _write_cases(tmp_path / "pre", 3)
    clusters = {"c00": 0, "c01": 0, "c02": 1}
    loader = _loader(dataset, clusters, batch_size=2, identifiers=["c00", "c02"])  # c01 on the other side
    np.random.seed(1)
    for _ in range(10):
        a, b = loader.get_indices()
        assert a == b
    with pytest.raises(ValueError, match="even batch size"):
        _loader(dataset, clusters, batch_size=3)
    with pytest.raises(ValueError, match="no cluster for 1 case"):
        _loader(dataset, {"c00": 0, "c01": 0})
