"""When the regional level set term is switched on (AHRNet Sec. 2.3).

The paper: "we do not add l_rls for training until the model converges using only l_seg ...
We then add l_rls ... at the later training stage".  It gives no epoch and no convergence
test.  Two rules, chosen by the trainer attribute ``rls_start``:

* ``"fraction"`` (default): on from epoch ``floor(rls_start_fraction * num_epochs)``.
* ``"plateau"``: on at the first epoch ``e`` (0-based; decided when epoch ``e`` starts, from
  the epoch means of the training l_seg of epochs ``< e``, highest-resolution output) for
  which the latest epoch's l_seg ``h[e-1]`` has not improved by more than a relative
  ``tol`` on the best (lowest) of the ``patience`` epochs before it,
  ``(min(h[e-1-patience:e-1]) - h[e-1]) / min(...) <= tol``, but never before
  ``floor(rls_min_start_fraction * num_epochs)``; at the latest (fallback) at
  ``floor(rls_start_fraction * num_epochs)``, so a loss that keeps falling still gets its
  RLS phase.  Once on, RLS stays on.

Choices where the paper is silent: the training l_seg (not the validation loss) is the
convergence signal, because l_seg is what the paper says converges and nnU-Net's
validation batches are few (the validation loss also contains l_rls once it is on); the
comparison is relative, so it does not depend on the scale of BCE + IoU versus Dice + CE;
a missing (NaN) epoch mean never counts as a plateau.

The decision is a pure function of the logged history (``train_seg`` and ``rls_on`` in
nnU-Net's logger, which is saved in every checkpoint), so a resumed training decides
exactly as the uninterrupted one would have.
"""
from __future__ import annotations

import math
from typing import Sequence

RLS_START_RULES = ("fraction", "plateau")


def start_epoch(fraction: float, num_epochs: int) -> int:
    """``floor(fraction * num_epochs)``: the epoch a fraction of the schedule points at."""
    return int(math.floor(fraction * num_epochs))


def plateau_reached(history: Sequence[float], tol: float, patience: int) -> tuple[bool, str]:
    """``(reached, why)``: has ``history[-1]`` improved by at most ``tol`` (relative) on ``min(history[-1-patience:-1])``?

    Needs ``patience + 1`` finite values at the end of ``history``; otherwise not reached.
    """
    if patience < 1:
        raise ValueError(f"rls_plateau_patience must be >= 1, got {patience}")
    if len(history) < patience + 1:
        return False, f"{len(history)} epochs of l_seg, {patience + 1} needed"
    window = [float(v) for v in history[-1 - patience:]]
    if not all(math.isfinite(v) for v in window):
        return False, "l_seg missing (NaN) in the last epochs"
    best, latest = min(window[:-1]), window[-1]
    improvement = (best - latest) / abs(best) if best != 0 else (0.0 if latest >= best else math.inf)
    converged = improvement <= tol + 1e-12  # round-off: a drop of exactly tol counts as converged
    n = len(history)
    why = (f"l_seg {latest:.4f} in epoch {n - 1} vs best {best:.4f} of epochs {n - 1 - patience}-{n - 2}: "
           f"relative improvement {100 * improvement:.2f}% {'<=' if converged else '>'} {100 * tol:g}%")
    return converged, why


def rls_on_at(epoch: int, num_epochs: int, rule: str = "fraction", start_fraction: float = 0.5,
              seg_history: Sequence[float] = (), rls_on_history: Sequence[float] = (),
              min_start_fraction: float = 0.25, tol: float = 0.02, patience: int = 3) -> tuple[bool, str]:
    """``(on, why)`` for epoch ``epoch`` given the logged history of the epochs before it.

    ``seg_history[k]`` / ``rls_on_history[k]`` are epoch ``k``'s mean l_seg and 0/1 switch; only
    entries ``< epoch`` are used.  ``why`` says which rule decided.
    """
    if rule not in RLS_START_RULES:
        raise ValueError(f"rls_start must be one of {RLS_START_RULES}, got {rule!r}")
    if not 0 <= min_start_fraction <= start_fraction <= 1:
        raise ValueError(f"need 0 <= rls_min_start_fraction ({min_start_fraction}) <= rls_start_fraction "
                         f"({start_fraction}) <= 1")
    fallback = start_epoch(start_fraction, num_epochs)
    if rule == "fraction":
        on = epoch >= fallback
        return on, f"epoch {epoch} {'>=' if on else '<'} {fallback} = floor({start_fraction} x {num_epochs} epochs)"
    earlier = [k for k, v in enumerate(list(rls_on_history)[:epoch]) if v == v and v > 0.5]
    if earlier:
        return True, f"on since epoch {earlier[0]} (logged)"
    if epoch >= fallback:
        return True, f"fallback: epoch {epoch} >= {fallback} = floor({start_fraction} x {num_epochs} epochs)"
    earliest = start_epoch(min_start_fraction, num_epochs)
    if epoch < earliest:
        return False, f"epoch {epoch} < {earliest} = floor({min_start_fraction} x {num_epochs} epochs)"
    reached, why = plateau_reached(list(seg_history)[:epoch], tol, patience)
    return reached, ("plateau: " if reached else "no plateau: ") + why
