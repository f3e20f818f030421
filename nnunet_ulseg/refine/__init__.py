"""``ulseg refine``: pseudo-mask refinement rounds on nnU-Net (AHRNet Sec. 2.3, last paragraph).

``refine(dataset, trainer, paths=..., rounds=3, ...)`` (:mod:`.rounds`) is the API; the
modules are small: :mod:`.manifest` (resumable record), :mod:`.labels` (the next round's
dataset), :mod:`.splits` (5-fold patient split for ``--cross-val``), :mod:`.parts`
(multi-machine predictions), :mod:`.backend` (nnU-Net commands, plans transfer),
:mod:`.report` (per-round table), :mod:`.cli` (argument parsing).  Imports are lazy so
``ulseg --help`` stays fast.
"""
from __future__ import annotations

__all__ = ["refine", "RefineConfig"]


def __getattr__(name: str):
    """Import the API on first access (PEP 562 lazy attribute)."""
    if name in __all__:
        from nnunet_ulseg.refine import rounds

        return getattr(rounds, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
