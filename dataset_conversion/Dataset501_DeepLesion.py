"""Convert DeepLesion into the nnU-Net raw dataset ``Dataset501_DeepLesion`` (nnU-Net converter style).

Thin wrapper over :func:`nnunet_ulseg.conversion.deeplesion.convert_deeplesion`; the same
options as ``ulseg convert-deeplesion`` plus ``-d``: without ``--out`` the dataset goes to
``$nnUNet_raw/Dataset<id>_DeepLesion``.  ``splits_final.json`` is also copied to
``$nnUNet_preprocessed/<dataset>/`` when that variable is set.

    python dataset_conversion/Dataset501_DeepLesion.py --deeplesion /data/DeepLesion -d 501
"""
import argparse
import os
import sys

from nnunet_ulseg.conversion.cli import add_convert_arguments, run_convert


def dataset_folder(dataset_id: int, raw_root: str) -> str:
    """``<raw_root>/Dataset<id:03d>_DeepLesion``."""
    return os.path.join(raw_root, f"Dataset{dataset_id:03d}_DeepLesion")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_convert_arguments(parser, out_required=False)
    parser.add_argument("-d", type=int, default=501, dest="dataset_id",
                        help="dataset id used when --out is not given (default 501)")
    args = parser.parse_args(argv)
    if args.out is None:
        raw = os.environ.get("nnUNet_raw")
        if not raw:
            parser.error("give --out, or set nnUNet_raw so the dataset can go to $nnUNet_raw/Dataset<id>_DeepLesion")
        args.out = dataset_folder(args.dataset_id, raw)
    return run_convert(args)


if __name__ == "__main__":
    sys.exit(main())
