"""``ulseg propagate``: WSSS self-paced slice propagation (Algorithm 1, Sec. 3.3) on nnU-Net.

``propagate(dataset, trainer, paths=..., K=3, ...)`` (:mod:`.rounds`) is the API; the modules:
:mod:`.crops` (off-key slices cut by the converter's rule), :mod:`.labels` (trimap + GrabCut
labels and each model's dataset), :mod:`.report`, :mod:`.cli`.  The manifest, lock, resume and
parts machinery is ``ulseg refine``'s (:mod:`nnunet_ulseg.refine`).  Imports are lazy.
"""
from __future__ import annotations

__all__ = ["propagate", "PropagateConfig"]


def __getattr__(name: str):
    """Import the API on first access (PEP 562 lazy attribute)."""
    if name in __all__:
        from nnunet_ulseg.propagate import rounds

        return getattr(rounds, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
