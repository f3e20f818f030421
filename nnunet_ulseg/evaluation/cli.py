"""``ulseg evaluate`` and ``ulseg measure`` argument parsing.

:func:`add_evaluate_parser` and :func:`add_measure_parser` register the sub-commands on the
``ulseg`` sub-parsers object; the handler is ``args.func(args)``, which returns the exit
code (0) and raises ``ValueError``/``FileNotFoundError`` with a message naming the file or
case for bad input (``nnunet_ulseg.cli.main`` turns those into one error line).  The
evaluation code is imported inside the handlers, so building the parser stays cheap.

:func:`add_label_options` adds ``--lesion-label``/``--threshold`` (how the prediction
files' values are read, :class:`~nnunet_ulseg.evaluation.label_io.LabelRule`) to
``evaluate``, ``measure`` and ``ulseg postprocess``, in the ``add_*`` style of
:mod:`nnunet_ulseg.cli_args`: dashes as the other ``ulseg`` options, nnU-Net's
underscore spelling (``--lesion_label``) as an alias, checked when parsed.
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

from nnunet_ulseg.cli_args import add_chill, add_output_folder, check_output_folder

#: :data:`nnunet_ulseg.postprocess.MODES`, spelled out so that building the parser stays cheap
#: (no numpy/scipy import; a test checks that both agree).
POSTPROCESS_CHOICES = ("none", "mark", "mark-ellipse", "mark-grabcut")
#: the file ``ulseg measure`` writes inside its output folder
MEASUREMENTS_CSV = "measurements.csv"
#: :data:`nnunet_ulseg.evaluation.measure3d.VOLUME_GEOMETRIES`, spelled out for the same reason (a test checks both)
VOLUME_GEOMETRIES = ("crop", "slice")


def lesion_label_value(value: str) -> int:
    """A ``--lesion-label`` value: a non-zero integer (0 is background)."""
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"lesion label must be an integer, got {value!r}") from None
    if number == 0:
        raise argparse.ArgumentTypeError("lesion label must not be 0 (0 is background)")
    return number


def threshold_value(value: str) -> float:
    """A ``--threshold`` value: a finite number > 0 (so that background 0 is never lesion)."""
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"threshold must be a number, got {value!r}") from None
    if not (math.isfinite(number) and number > 0):
        raise argparse.ArgumentTypeError(f"threshold must be a finite number > 0 (0 is background), got {value!r}")
    return number


def add_label_options(p: argparse.ArgumentParser, what: str = "prediction") -> None:
    """``--lesion-label N`` | ``--threshold T`` (mutually exclusive): dests ``lesion_label``, ``threshold``.

    Without either, a file's values must be 0 background, 1 lesion, 2 ignore (background);
    anything else stops the command with an error naming the file and the values.
    """
    group = p.add_mutually_exclusive_group()
    group.add_argument("--lesion-label", "--lesion_label", dest="lesion_label", type=lesion_label_value,
                       default=None, metavar="N",
                       help=f"the value that is lesion in the {what} files, e.g. 255 for 0/255 masks (default: 1; "
                            "values other than 0, N and 2 = ignore are an error)")
    group.add_argument("--threshold", dest="threshold", type=threshold_value, default=None, metavar="T",
                       help=f"read the {what} files as probability maps: lesion where value >= T (e.g. 0.5)")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sidecar", type=Path, required=True, metavar="lesions.csv",
                   help="the converted dataset's lesions.csv (crop boxes, true spacing, RECIST, lesion type)")
    p.add_argument("--split", default="test",
                   help="sidecar split to use: train, val, test or all (default: test)")
    add_chill(p)
    p.add_argument("--interpolation", choices=("linear", "nearest"), default="linear",
                   help="paste-back of crops into the key slice: bilinear + threshold 0.5 (default) or nearest")
    p.add_argument("--file-ending", default=None,
                   help="file ending of crops (default: .mha; evaluate --3d: detected per folder)")
    add_label_options(p)
    p.add_argument("--recist-convention", "--recist_convention", dest="recist_convention",
                   choices=("auto", "edge", "uls23"), default="auto",
                   help="axis convention under which masks are compared with the RECIST mark (*_err_recist): "
                        "edge (outer pixel edges; DeepLesion's caliper marks) or uls23 (boundary pixel centres; "
                        "marks a converter derived from ULS23 labels); auto (default) reads the dataset.json "
                        "beside --sidecar")


def add_evaluate_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``evaluate``: per-lesion metrics, summary tables and plots for prediction folders."""
    p = subparsers.add_parser(
        "evaluate",
        help="score prediction folders against reference masks (Dice, VS, HD95, RECIST axes in mm)",
        description="Paste every predicted and reference crop back into its key slice (lesions.csv) and compute "
                    "per-lesion precision, recall, Dice, volumetric similarity, averaged Hausdorff distance, HD95 "
                    "and RECIST long/short axes in mm; write metrics.csv, summary.json, summary.txt, "
                    "dice_cumulative.png and gallery.png, and print the summary table.",
    )
    p.add_argument("--pred", type=Path, nargs="+", required=True, metavar="DIR",
                   help="one or more prediction folders of <case>.mha crops (0 background, 1 lesion, 2 ignore; "
                        "see --lesion-label, --threshold)")
    p.add_argument("--ref", type=Path, required=True, metavar="DIR",
                   help="reference folder: key-slice PNGs named like DeepLesion (<pp>_<ss>_<se>/<slice>.png or "
                        "<File_name>), NIfTI/MHA (<case>.nii.gz ...; 3D: z = key_slice), ULS23 VOIs "
                        "(<File_name>), a make-sample folder (masks.csv) or <case>.mha crops; scored in key-slice "
                        "geometry")
    p.add_argument("--ref-format", choices=("auto", "crop", "png", "volume", "uls23", "sample"), default="auto",
                   help="kind of --ref folder (default: auto, detected from its files); crop = crop-geometry "
                        "<case>.mha pasted back like the predictions (lossy)")
    add_output_folder(p, help="output folder (created): metrics.csv, summary.json, summary.txt, figures")
    p.add_argument("--names", nargs="+", metavar="NAME", help="display names of the prediction folders")
    p.add_argument("--images", type=Path, metavar="DIR",
                   help="CT crops <case>_0000.mha for the gallery (default: <ref>/../imagesTs); --3d: the slices' "
                        "crops that --postprocess mark-grabcut reads (ulseg propagate's slices/test_reach<E>)")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG figures")
    p.add_argument("--postprocess", nargs="+", choices=POSTPROCESS_CHOICES, default=["none"], metavar="MODE",
                   help="post-process each prediction with its RECIST mark (lesions.csv) before scoring: none "
                        "(default), mark (keep the components the mark crosses, fill holes) or mark-ellipse (also "
                        "clip to the 1.5x RECIST ellipse); several modes score each folder once per mode; with "
                        "--3d, the modes walk outwards from the key slice with the 3D RECIST estimate and stop at the "
                        "first empty slice (as ulseg segment --propagate)")
    g = p.add_argument_group("3D (WSSS Sec. 4, Fig. 4): slice-by-slice predictions scored as volumes")
    g.add_argument("--3d", dest="three_d", action="store_true",
                   help="each --pred folder holds crops of key cases and their off-key slices plus slices.csv (as "
                        "ulseg propagate writes round<m>/test_predictions); --ref is a make-sample folder (masks3d.csv) "
                        "or label volumes <case>_<first>-<last>.nii.gz; writes metrics3d.csv, offset_curve.csv, "
                        "summary3d.json")
    g.add_argument("--slices", type=Path, nargs="+", metavar="slices.csv",
                   help="implies --3d: the slices.csv of the folders (one, or one per --pred; default "
                        "<pred>/slices.csv)")
    g.add_argument("--reach", type=int, default=None, metavar="E",
                   help="--3d: score slices key-E..key+E (default: the largest offset in the folders' slices.csv)")
    g.add_argument("--ellipse", action="store_true",
                   help="--3d: also write and score the ellipse of the 3D RECIST estimate on the same slices "
                        "(OUT_DIR/ellipse_predictions), as the first row")
    _common(p)
    p.set_defaults(func=run_evaluate)
    return p


def add_measure_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``measure``: long/short axis and area in mm of every predicted lesion."""
    p = subparsers.add_parser(
        "measure",
        help="measure predicted lesions: RECIST long/short axis (mm), area (mm²), components",
        description="Paste every predicted crop back into its key slice (lesions.csv) and write, per lesion, the "
                    "ULS23 long and short axis (mm) and area (mm²) of the largest component, the component count, "
                    "and the RECIST annotation's axes and ellipse area for comparison; with --volume, 3D "
                    "predictions and their volume (mm³) beside the RECIST ellipsoid.",
    )
    p.add_argument("--pred", type=Path, required=True, metavar="DIR", help="prediction folder of <case>.mha crops")
    add_output_folder(p, help=f"output folder (created): the table is written to OUT_DIR/{MEASUREMENTS_CSV}")
    p.add_argument("--volume", action="store_true",
                   help="the predictions are 3D: <case> files of consecutive axial slices [z, y, x] (slice interval "
                        "spacing_z of lesions.csv); adds volume_mm3 (voxel count x spacing_x*spacing_y*spacing_z of "
                        "the largest 3D component), the RECIST ellipsoid pi*L*S^2/6 and their ratio; the 2D columns "
                        "are measured on the slice where the lesion is largest (axes_z)")
    p.add_argument("--volume-geometry", "--volume_geometry", dest="volume_geometry", choices=VOLUME_GEOMETRIES,
                   default="crop",
                   help="in-plane geometry of --volume slices: crop (default; crop_size x crop_size in the key "
                        "slice's crop box, pasted back like the 2D crops) or slice (image_height x image_width)")
    _common(p)
    p.set_defaults(func=run_measure)
    return p


def run_evaluate(args: argparse.Namespace) -> int:
    """Handler of ``ulseg evaluate``: run :func:`~.evaluate.evaluate_folders` and print the table."""
    from nnunet_ulseg.evaluation.evaluate import evaluate_folders

    out_dir = check_output_folder(args.out)
    if args.three_d or args.slices:
        return run_evaluate_3d(args, out_dir)
    if args.ellipse or args.reach is not None:
        raise ValueError("--ellipse and --reach are options of the 3D evaluation (--3d / --slices)")
    result = evaluate_folders(args.pred, args.ref, args.sidecar, out_dir, names=args.names, split=args.split,
                              images_dir=args.images, allow_missing=args.allow_missing,
                              interpolation=args.interpolation, file_ending=args.file_ending or ".mha",
                              plots=not args.no_plots, postprocess=args.postprocess,
                              ref_format=args.ref_format, lesion_label=args.lesion_label,
                              threshold=args.threshold, recist_convention=args.recist_convention)
    print(result.table)
    print(f"\nwrote {', '.join(str(p) for p in result.files.values())}")
    return 0


def run_evaluate_3d(args: argparse.Namespace, out_dir: Path) -> int:
    """``ulseg evaluate --3d``: run :func:`~.evaluate3d.evaluate_3d` and print its table."""
    from nnunet_ulseg.evaluation.evaluate3d import evaluate_3d

    if args.ref_format not in ("auto", "sample", "volume"):
        raise ValueError(f"--3d: --ref-format must be auto, sample or volume, got {args.ref_format}")
    result = evaluate_3d(args.pred, args.ref, args.sidecar, out_dir, slices=args.slices, names=args.names,
                         split=args.split, ref_format=args.ref_format, reach=args.reach,
                         interpolation=args.interpolation, file_ending=args.file_ending,
                         lesion_label=args.lesion_label, threshold=args.threshold,
                         allow_missing=args.allow_missing, ellipse=args.ellipse, postprocess=args.postprocess,
                         images_dir=args.images)
    print(result.table)
    print(f"\nwrote {', '.join(str(p) for p in result.files.values())}")
    return 0


def run_measure(args: argparse.Namespace) -> int:
    """Handler of ``ulseg measure``: run :func:`~.measure.measure_folder` and print a one-line summary."""
    from nnunet_ulseg.evaluation.measure import measure_folder

    target = check_output_folder(args.out) / MEASUREMENTS_CSV  # measure_folder creates the folder
    rows = measure_folder(args.pred, args.sidecar, target, split=args.split, allow_missing=args.allow_missing,
                          interpolation=args.interpolation, file_ending=args.file_ending or ".mha",
                          lesion_label=args.lesion_label, threshold=args.threshold,
                          recist_convention=args.recist_convention, volume=args.volume,
                          volume_geometry=args.volume_geometry)
    ok = [r for r in rows if r["status"] == "ok"]
    empty = sum(r["components"] == 0 for r in ok)
    kind = "lesion volume(s)" if args.volume else "lesion(s)"
    print(f"measured {len(ok)} {kind} ({empty} empty, {len(rows) - len(ok)} missing) -> {target}")
    return 0
