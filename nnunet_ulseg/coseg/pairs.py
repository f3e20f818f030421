"""Lesion clusters, the cluster-stratified patient split and the co-segmentation pairs (paper Sec. 1, Sec. 3.1).

Floor 2 (like ``training/``: numpy, scikit-learn; nothing above ``conversion/``).

Paper: "we leverage lesion embeddings to cluster lesions into 200 classes prior to
training", "we split the dataset into 80% training, 10% validation and 10% testing sets
using stratified sampling.  We pair the images from each cluster to build the
co-segmentation dataset" (270,470 training pairs for about 26k training lesions).

* **Cluster count** (:func:`cluster_count`): 200 on full DeepLesion (32,735 lesion images,
  Sec. 3.1) scaled to the corpus, ``round(200 * n / 32735)``, clamped to ``[2, n // 2]``
  so that a cluster holds two lesions on average at least (a pair needs two).
* **k-means** (:func:`kmeans_clusters`): scikit-learn's ``KMeans`` (k-means++, 10 starts,
  ``random_state = seed``) on L2-normalised embeddings (:mod:`.embed`).
* **Split** (:func:`stratified_patient_split`): the converter's test split stays the test
  split (it is not preprocessed by nnU-Net); the training cases are split into
  ``n_folds`` folds by scikit-learn's ``StratifiedGroupKFold``: y = cluster, groups =
  patient.  Both are honoured this way: the patient grouping is a hard constraint (a
  patient's lesions are in exactly one validation fold, so never on both sides), the
  cluster stratification is the best the grouping allows (each fold's cluster histogram
  as close to the whole's as whole patients permit).  5 folds = nnU-Net's 80/20; the
  paper's 80/10/10 is the converter's test split plus these folds.
* **Pairs** (:func:`sample_pairs`): within a cluster *and* within one side of a split.
  Every unordered pair of a cluster would be quadratic (a 160-lesion cluster alone has
  12,720); the paper's 270k pairs for about 26k lesions is about 10 per lesion, so each
  lesion gets ``pairs_per_case`` (default 10) partners drawn without replacement from its
  cluster on its side, pairs de-duplicated.  A lesion alone in its cluster on its side
  is paired with itself (the network's unpaired case, ``self_pair_when_odd``).
  The trainer's loader draws partners on the fly by the same rule (any other nnU-Net
  split works as well: the loader keeps partners within the loader's own cases); the
  pair list in ``pairs.json`` records the dataset the paper's numbers describe.

Files (in ``nnUNet_preprocessed/<dataset>/``): ``clusters.csv`` (case, patient, cluster,
split: ``train``/``val`` of fold 0), ``pairs.json`` (settings, folds, pairs of fold 0) and
``coseg_embeddings.npz`` (cases, embeddings, for pairing at inference).
"""
from __future__ import annotations

import csv
import json
import os
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

#: Sec. 1 / 3.1: 200 clusters on 32,735 DeepLesion lesion images
PAPER_CLUSTERS = 200
PAPER_LESIONS = 32735
CLUSTERS_FILE = "clusters.csv"
PAIRS_FILE = "pairs.json"
EMBEDDINGS_FILE = "coseg_embeddings.npz"
CLUSTER_COLUMNS = ("case", "patient", "cluster", "split")


def cluster_count(n: int, clusters: int = PAPER_CLUSTERS, lesions: int = PAPER_LESIONS) -> int:
    """``round(clusters * n / lesions)`` clamped to ``[2, n // 2]`` (needs ``n >= 4``)."""
    if n < 4:
        raise ValueError(f"co-segmentation pairs need at least 4 lesions to form 2 clusters, got {n}")
    return int(min(max(round(clusters * n / lesions), 2), n // 2))


def kmeans_clusters(embeddings: np.ndarray, n_clusters: int, seed: int = 0) -> np.ndarray:
    """Cluster label per row (0..n_clusters-1), deterministic for a seed."""
    from sklearn.cluster import KMeans

    embeddings = np.asarray(embeddings, dtype=np.float64)
    if embeddings.ndim != 2 or len(embeddings) < n_clusters:
        raise ValueError(f"k-means with {n_clusters} clusters needs at least that many rows of a 2D array, "
                         f"got shape {embeddings.shape}")
    km = KMeans(n_clusters=n_clusters, n_init=10, random_state=seed)
    return km.fit_predict(embeddings).astype(int)


def stratified_patient_split(cases: Sequence[str], clusters: Mapping[str, int], patients: Mapping[str, object],
                             n_folds: int = 5, seed: int = 0) -> list[dict]:
    """``n_folds`` folds ``{"train": [...], "val": [...]}``: patients whole, clusters stratified."""
    from sklearn.model_selection import StratifiedGroupKFold

    cases = sorted(cases)
    missing = [c for c in cases if c not in patients or c not in clusters]
    if missing:
        raise ValueError(f"no patient or cluster for {len(missing)} case(s): {', '.join(missing[:5])}")
    groups = [str(patients[c]) for c in cases]
    if len(set(groups)) < n_folds:
        raise ValueError(f"a {n_folds}-fold split needs at least {n_folds} patients, found {len(set(groups))}")
    y = np.array([clusters[c] for c in cases])
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    folds = []
    with warnings.catch_warnings():  # small clusters: "the least populated class has only 1 member"
        warnings.simplefilter("ignore", UserWarning)
        for train_idx, val_idx in splitter.split(np.zeros(len(cases)), y, groups):
            folds.append({"train": [cases[i] for i in train_idx], "val": [cases[i] for i in val_idx]})
    return folds


def members_by_cluster(cases: Sequence[str], clusters: Mapping[str, int]) -> dict[int, list[str]]:
    """Cluster -> its cases among ``cases`` (sorted)."""
    out: dict[int, list[str]] = defaultdict(list)
    for case in sorted(cases):
        out[int(clusters[case])].append(case)
    return dict(out)


def sample_pairs(cases: Sequence[str], clusters: Mapping[str, int], pairs_per_case: int = 10,
                 seed: int = 0) -> list[tuple[str, str]]:
    """Unordered pairs ``(a, b)``, ``a <= b``, of one split side, each within one cluster."""
    if pairs_per_case < 1:
        raise ValueError(f"pairs_per_case must be >= 1, got {pairs_per_case}")
    rng = np.random.default_rng(seed)
    members = members_by_cluster(cases, clusters)
    pairs: set[tuple[str, str]] = set()
    for case in sorted(cases):
        others = [c for c in members[int(clusters[case])] if c != case]
        if not others:
            pairs.add((case, case))
            continue
        for partner in rng.choice(others, size=min(pairs_per_case, len(others)), replace=False):
            pairs.add(tuple(sorted((case, str(partner)))))
    return sorted(pairs)


def write_pairs(folder: str | os.PathLike, cases: Sequence[str], embeddings: np.ndarray, clusters: Mapping[str, int],
                patients: Mapping[str, object], folds: list[dict], settings: dict,
                pairs_per_case: int = 10, seed: int = 0) -> dict:
    """Write ``clusters.csv``, ``pairs.json`` and ``coseg_embeddings.npz``; returns ``pairs.json``'s content."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    side = {c: "train" for c in folds[0]["train"]} | {c: "val" for c in folds[0]["val"]}
    with open(folder / CLUSTERS_FILE, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(CLUSTER_COLUMNS)
        for case in sorted(cases):
            w.writerow([case, patients[case], int(clusters[case]), side.get(case, "")])
    pairs = {name: [list(p) for p in sample_pairs(folds[0][name], clusters, pairs_per_case, seed)]
             for name in ("train", "val")}
    sizes = np.bincount([int(clusters[c]) for c in cases])
    content = dict(settings, n_cases=len(cases), n_clusters=int(len(sizes)), seed=seed,
                   pairs_per_case=pairs_per_case, cluster_sizes=sizes.tolist(),
                   n_pairs={k: len(v) for k, v in pairs.items()}, folds=folds, pairs=pairs)
    (folder / PAIRS_FILE).write_text(json.dumps(content, indent=1))
    np.savez(folder / EMBEDDINGS_FILE, cases=np.array(sorted(cases)),
             embeddings=np.asarray(embeddings, dtype=np.float32)[np.argsort(np.asarray(cases))])
    return content


def read_clusters(path: str | os.PathLike) -> dict[str, int]:
    """Case -> cluster from a ``clusters.csv``; errors name the file and row."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no lesion clusters; run `ulseg coseg-pairs -d DATASET` first")
    out: dict[str, int] = {}
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or not {"case", "cluster"} <= set(reader.fieldnames):
            raise ValueError(f"{path}: expected columns {', '.join(CLUSTER_COLUMNS)}, got {reader.fieldnames}")
        for row_no, row in enumerate(reader, start=2):
            try:
                out[row["case"]] = int(row["cluster"])
            except (TypeError, ValueError):
                raise ValueError(f"{path} row {row_no}: cluster {row.get('cluster')!r} is not an integer") from None
    if not out:
        raise ValueError(f"{path}: no rows")
    return out


def read_embeddings(path: str | os.PathLike) -> tuple[list[str], np.ndarray]:
    """``(cases, embeddings)`` of the training lesions, as :func:`write_pairs` stored them."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no lesion embeddings; run `ulseg coseg-pairs -d DATASET` first")
    with np.load(path) as z:
        return [str(c) for c in z["cases"]], np.asarray(z["embeddings"], dtype=np.float32)


def nearest_partners(query: np.ndarray, bank: np.ndarray, k: int = 1) -> np.ndarray:
    """Indices ``[n_query, k]`` of the ``k`` nearest rows of ``bank`` (Euclidean on the given vectors)."""
    query, bank = np.atleast_2d(query), np.atleast_2d(bank)
    if not 1 <= k <= len(bank):
        raise ValueError(f"--partners must be between 1 and the {len(bank)} training lesions, got {k}")
    d = (query ** 2).sum(1)[:, None] - 2 * query @ bank.T + (bank ** 2).sum(1)[None]
    return np.argsort(d, axis=1, kind="stable")[:, :k]
