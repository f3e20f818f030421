"""Convert DeepLesion into the nnU-Net raw dataset ``Dataset501_DeepLesion`` (nnU-Net converter style).

Thin wrapper over :func:`nnunet_ulseg.conversion.deeplesion.convert_deeplesion`; the same
options as ``ulseg convert-deeplesion`` (``-i``, ``-o``, ``-d``, ``-np``), with ``-d 501`` by
default: without ``-o`` the dataset goes to ``$nnUNet_raw/Dataset<id>_DeepLesion``.
``splits_final.json`` is also copied to ``$nnUNet_preprocessed/<dataset>/`` when that
variable is set.

    python dataset_conversion/Dataset501_DeepLesion.py -i /data/DeepLesion -d 501
"""
import sys

from nnunet_ulseg.cli_args import ArgumentParser, help_text
from nnunet_ulseg.conversion.cli import add_convert_arguments, run_convert


def main(argv=None) -> int:
    parser = ArgumentParser(description=help_text(__doc__.split("\n\n")[0]))
    add_convert_arguments(parser, dataset_default=501)
    return run_convert(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
