"""Convert ULS23 VOIs into the nnU-Net raw dataset ``Dataset502_ULS23`` (nnU-Net converter style).

Thin wrapper over :func:`nnunet_ulseg.conversion.uls23.convert_uls23`; the same options as
``ulseg convert-uls23`` (``-i`` images, ``-l`` labels, ``-o``, ``-d`` (default 502),
``--name`` (default ULS23), ``-np``): without ``-o`` the dataset goes to
``$nnUNet_raw/Dataset<id>_<name>``.  ``splits_final.json`` is also copied to
``$nnUNet_preprocessed/<dataset>/`` when that variable is set.

    python dataset_conversion/Dataset502_ULS23.py \\
        -i ULS23/novel_data/ULS23_DeepLesion3D/images -l ULS23/novel_data/ULS23_DeepLesion3D/labels -d 502
"""
import sys

from nnunet_ulseg.cli_args import ArgumentParser, help_text
from nnunet_ulseg.conversion.uls23_cli import add_uls23_arguments, run_uls23


def main(argv=None) -> int:
    parser = ArgumentParser(description=help_text(__doc__.split("\n\n")[0]))
    add_uls23_arguments(parser)
    return run_uls23(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
