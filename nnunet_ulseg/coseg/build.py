"""``ulseg coseg-pairs``: embed, cluster, split and pair the training lesions of an nnU-Net dataset (paper Sec. 3.1).

The lesions are the preprocessed training cases (``nnUNet_preprocessed/<dataset>/<data
identifier>``, i.e. ``imagesTr``) embedded with a trained model of ours
(:mod:`.embed`); patients come from the raw dataset's ``lesions.csv`` sidecar.  The
rules (cluster count, k-means, split, pairs) are those of :mod:`.pairs`.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from nnunet_ulseg.conversion.sidecar import read_sidecar
from nnunet_ulseg.coseg.embed import center_tile, embed_tiles, load_encoder_model, normalise
from nnunet_ulseg.coseg.pairs import (cluster_count, kmeans_clusters, stratified_patient_split, write_pairs)
from nnunet_ulseg.nnunet_layout import SPLITS_FILE, NNUNetPaths

SIDECAR = "lesions.csv"


def preprocessed_cases(folder: Path):
    """nnU-Net's dataset object of a preprocessed configuration folder (numpy or blosc2 storage)."""
    from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class

    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: not preprocessed; run nnUNetv2_plan_and_preprocess first")
    return infer_dataset_class(str(folder))(str(folder))


def case_tiles(dataset, cases, patch_size):
    """Centre tiles of the preprocessed images of ``cases`` (a generator, one at a time)."""
    for case in cases:
        data = dataset.load_case(case)[0]
        yield center_tile(np.asarray(data[:]), patch_size)


def patients_of(raw_folder: Path, cases) -> dict[str, int]:
    """Case -> patient from the raw dataset's ``lesions.csv``; an error naming the cases without a row."""
    sidecar = raw_folder / SIDECAR
    if not sidecar.is_file():
        raise FileNotFoundError(f"{sidecar}: no lesions.csv sidecar (patients are needed for the split); "
                                f"convert the dataset with `ulseg convert-deeplesion` or `ulseg convert-uls23`")
    patients = {row.case: row.patient for row in read_sidecar(sidecar)}
    missing = [c for c in cases if c not in patients]
    if missing:
        raise ValueError(f"{sidecar}: no row for {len(missing)} training case(s): {', '.join(missing[:5])}")
    return patients


def build_pairs(paths: NNUNetPaths, dataset: str, trainer: str, plans: str = "nnUNetPlans",
                configuration: str = "2d", folds=(0,), checkpoint: str = "checkpoint_final.pth",
                device: str = "cpu", seed: int = 0, n_folds: int = 5, pairs_per_case: int = 10,
                n_clusters: int | None = None, install_splits: bool = False, progress: bool = True) -> dict:
    """Write ``clusters.csv``/``pairs.json``/``coseg_embeddings.npz`` (and optionally ``splits_final.json``)."""
    name = paths.dataset_name(dataset)
    model_dir = paths.model_dir(name, trainer, plans, configuration)
    if not model_dir.is_dir():
        raise FileNotFoundError(f"{model_dir}: no trained model for the embeddings (train -tr {trainer} first)")
    predictor = load_encoder_model(str(model_dir), folds, checkpoint, device)
    cm = predictor.configuration_manager
    pre = paths.preprocessed_dataset(name)
    data = preprocessed_cases(pre / cm.data_identifier)
    cases = sorted(data.identifiers)
    patients = patients_of(paths.raw_dataset(name).path, cases)
    emb = embed_tiles(predictor.network, case_tiles(data, cases, cm.patch_size), device=device,
                      progress=progress, total=len(cases))
    emb = normalise(emb)
    k = n_clusters if n_clusters is not None else cluster_count(len(cases))
    labels = kmeans_clusters(emb, k, seed)
    clusters = dict(zip(cases, labels.tolist()))
    split = stratified_patient_split(cases, clusters, patients, n_folds, seed)
    settings = dict(dataset=name, embedding=dict(model=str(model_dir), trainer=trainer, plans=plans,
                                                 configuration=configuration, folds=list(folds or ()),
                                                 checkpoint=checkpoint, feature="encoder bottleneck, GAP, L2"),
                    n_clusters_rule="round(200 * n / 32735) clamped to [2, n // 2]" if n_clusters is None
                    else "given", n_folds=n_folds)
    content = write_pairs(pre, cases, emb, clusters, patients, split, settings, pairs_per_case, seed)
    if install_splits:
        (pre / SPLITS_FILE).write_text(json.dumps(split, indent=1))
    return content
