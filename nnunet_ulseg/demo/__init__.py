"""Demo corpus generator: a small DeepLesion-format sample with true lesion masks.

``make_sample(out_dir, n_lesions=40, seed=0, image_size=512, progress=True)`` writes it
(:mod:`.corpus`); ``TrueMasks3D(sample_dir).volume(dl_row)`` reads a lesion's true 3D
mask back (:mod:`.truth3d`).  The imports are lazy so that ``ulseg --help`` (which imports
:mod:`.cli`) does not pay for OpenCV and SciPy.
"""
from __future__ import annotations

__all__ = ["make_sample", "TrueMasks3D"]


def __getattr__(name: str):
    """Import ``make_sample`` / ``TrueMasks3D`` on first access (PEP 562 lazy attribute)."""
    if name == "make_sample":
        from nnunet_ulseg.demo.corpus import make_sample

        return make_sample
    if name == "TrueMasks3D":
        from nnunet_ulseg.demo.truth3d import TrueMasks3D

        return TrueMasks3D
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
