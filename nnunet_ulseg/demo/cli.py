"""``ulseg make-sample``: write the demo DeepLesion-format corpus.

Only argparse is imported at module level; the generator (OpenCV, SciPy) is imported
by the handler, so ``ulseg --help`` stays instant.
"""
from __future__ import annotations

import argparse
import csv
from pathlib import Path

from nnunet_ulseg.cli_args import add_output_folder


def add_make_sample_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``make-sample -o DIR --lesions N --seed S`` on ``subparsers`` (``--out`` is an alias of ``-o``).

    The handler is stored as ``func`` (``ulseg`` calls ``args.func(args)``).
    """
    p = subparsers.add_parser(
        "make-sample",
        help="write a small synthetic corpus in DeepLesion's format, with true masks",
        description="Write a synthetic DeepLesion-format corpus (DL_info.csv, Images_png/) with true 3D "
        "lesion masks (Masks_png/: an instance map per slice; masks.csv: key slices; masks3d.csv: every "
        "slice each lesion reaches) into an empty or new folder.",
    )
    add_output_folder(p, help="output folder (must be new or empty)")
    p.add_argument("--lesions", type=int, default=40, metavar="N", help="number of lesions (default: 40)")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="random seed; same seed, same bytes (default: 0)")
    p.add_argument("--image-size", type=int, default=512, metavar="PX", help="slice size in px (default: 512)")
    p.add_argument("--no-progress", action="store_true", help="do not show a progress bar")
    p.set_defaults(func=run_make_sample)
    return p


def run_make_sample(args: argparse.Namespace) -> int:
    """Handler: generate the corpus and print a one-line summary; returns exit status 0."""
    from nnunet_ulseg.demo.corpus import make_sample

    out = make_sample(args.out, n_lesions=args.lesions, seed=args.seed, image_size=args.image_size,
                      progress=not args.no_progress)
    print(summary(out))
    return 0


def summary(out: Path) -> str:
    """``"40 lesions, 12 patients, 217 slices written to /path"`` for a written corpus."""
    with open(out / "DL_info.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    patients = {r["Patient_index"] for r in rows}
    n_slices = sum(1 for _ in (out / "Images_png").glob("*/*.png"))
    return f"{len(rows)} lesions, {len(patients)} patients, {n_slices} slices written to {out}"
