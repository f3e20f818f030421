"""``ulseg coseg-pairs`` and ``ulseg coseg-predict`` (co-segmentation paper Sec. 2.2, 3.1)."""
from __future__ import annotations

import argparse

from nnunet_ulseg.cli_args import (add_checkpoint, add_configuration, add_dataset, add_device, add_folds,
                                   add_input_folder, add_output_folder, add_parts, add_plans, add_trainer, add_tta,
                                   check_output_folder)


def _device(value: str | None) -> str:
    if value:
        return value
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def add_coseg_pairs_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "coseg-pairs", help="cluster the training lesions by embedding and pair them for co-segmentation",
        description="Embed every preprocessed training lesion of DATASET with the encoder of a trained model "
                    "(global average of its bottleneck), cluster the embeddings with k-means (200 clusters on "
                    "DeepLesion, scaled to the corpus), split the cases by patient and stratified by cluster, and "
                    "pair lesions within a cluster. Writes clusters.csv, pairs.json and coseg_embeddings.npz to "
                    "nnUNet_preprocessed/<dataset>/ (needed by the nnUNetTrainerCoSeg trainers and coseg-predict).")
    add_dataset(p)
    add_trainer(p, required=True, help="trainer of the trained model whose encoder embeds the lesions")
    add_configuration(p)
    add_plans(p)
    add_folds(p, default=[0], help="fold of that model (default: 0; the first of several is used)")
    add_checkpoint(p)
    add_device(p)
    p.add_argument("--clusters", type=int, default=None, metavar="K",
                   help="number of k-means clusters (default: round(200 * n / 32735) clamped to [2, n/2])")
    p.add_argument("--split-folds", type=int, default=5, metavar="N",
                   help="folds of the patient-grouped, cluster-stratified split (default: 5, nnU-Net's 80/20)")
    p.add_argument("--pairs-per-case", type=int, default=10, metavar="M",
                   help="partners drawn per lesion for pairs.json (default: 10, about the paper's 270k pairs for "
                        "DeepLesion's training lesions)")
    p.add_argument("--install-splits", action="store_true",
                   help="also write the split as nnUNet_preprocessed/<dataset>/splits_final.json (replacing the "
                        "converter's), so nnU-Net trains on it")
    p.add_argument("--seed", type=int, default=0, help="seed of k-means, the split and the pairs (default: 0)")
    p.set_defaults(func=_run_pairs)
    return p


def _run_pairs(args) -> int:
    from nnunet_ulseg.coseg.build import build_pairs
    from nnunet_ulseg.nnunet_layout import NNUNetPaths

    content = build_pairs(NNUNetPaths.from_environ(), args.dataset, args.trainer, args.plans, args.configuration,
                          args.folds, args.checkpoint, _device(args.device), args.seed, args.split_folds,
                          args.pairs_per_case, args.clusters, args.install_splits)
    print(f"{content['n_cases']} lesions in {content['n_clusters']} clusters (sizes "
          f"{min(content['cluster_sizes'])}-{max(content['cluster_sizes'])}); fold 0: "
          f"{len(content['folds'][0]['train'])} train / {len(content['folds'][0]['val'])} val lesions, "
          f"{content['n_pairs']['train']} / {content['n_pairs']['val']} pairs")
    return 0


def add_coseg_predict_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "coseg-predict", help="predict with a co-segmentation model, each lesion paired with its nearest training "
                              "lesions",
        description="Like nnUNetv2_predict for the nnUNetTrainerCoSeg trainers: nnU-Net's preprocessing and sliding "
                    "window, each input lesion paired with its --partners nearest training lesions in the "
                    "embedding space of coseg-pairs, logits averaged over partners and folds, files written as "
                    "nnUNetv2_predict writes them.")
    add_input_folder(p, "input", help="folder of <case>_0000<file_ending> images (e.g. imagesTs)")
    add_output_folder(p)
    add_dataset(p)
    add_trainer(p, required=True)
    add_configuration(p)
    add_plans(p)
    add_folds(p, default=[0])
    add_checkpoint(p)
    add_device(p)
    add_tta(p)
    add_parts(p)
    p.add_argument("--partners", type=int, default=1, metavar="K",
                   help="nearest training lesions each input is paired with; outputs averaged (default: 1)")
    p.add_argument("--crf", action="store_true",
                   help="dense-CRF post-processing (Table 2 'DCRF'; the paper uses it with decoder D1 only); needs "
                        "the optional package pydensecrf2")
    p.set_defaults(func=_run_predict)
    return p


def _run_predict(args) -> int:
    from pathlib import Path

    from nnunet_ulseg.coseg.predict import coseg_predict
    from nnunet_ulseg.nnunet_layout import NNUNetPaths

    out = check_output_folder(args.out)
    report = coseg_predict(NNUNetPaths.from_environ(), args.dataset, Path(args.input), out, args.trainer, args.plans,
                           args.configuration, args.folds, args.checkpoint, args.partners, _device(args.device),
                           args.tta, args.num_parts, args.part_id, args.crf)
    print(f"{len(report['pairs'])} case(s) predicted with {args.partners} partner(s) each -> {out}")
    return 0
