"""The RLS switch rules (AHRNet Sec. 2.3) on hand-made l_seg histories."""
import math

import pytest

from nnunet_ulseg.training.rls_switch import plateau_reached, rls_on_at, start_epoch


def test_plateau_compares_latest_with_best_of_previous_patience_epochs():
    # best of [1.0, 0.9, 0.8] is 0.8; 0.79 improves by 1.25 % <= 2 %: plateau
    reached, why = plateau_reached([1.2, 1.0, 0.9, 0.8, 0.79], tol=0.02, patience=3)
    assert reached and "1.25%" in why and "epochs 1-3" in why
    # 0.78 improves by 2.5 % > 2 %: still converging
    assert not plateau_reached([1.2, 1.0, 0.9, 0.8, 0.78], 0.02, 3)[0]
    # exactly the tolerance counts as converged; getting worse counts as converged
    assert plateau_reached([1.0, 1.0, 1.0, 0.98], 0.02, 3)[0]
    assert plateau_reached([0.5, 0.6, 0.7, 0.9], 0.02, 3)[0]
    # only the last patience + 1 epochs matter: an early drop does not hide the plateau
    assert plateau_reached([9.0, 5.0, 0.50, 0.50, 0.50, 0.495], 0.02, 3)[0]


def test_plateau_needs_enough_finite_history():
    assert not plateau_reached([1.0, 1.0, 1.0], 0.02, 3)[0]
    assert not plateau_reached([1.0, float("nan"), 1.0, 1.0], 0.02, 3)[0]
    assert plateau_reached([1.0, 1.0], 0.02, 1)[0]
    with pytest.raises(ValueError, match="patience"):
        plateau_reached([1.0] * 5, 0.02, 0)


def test_fraction_rule_is_the_epoch_alone():
    assert start_epoch(0.5, 10) == 5 and start_epoch(0.5, 1) == 0 and start_epoch(0.25, 10) == 2
    assert [rls_on_at(e, 10)[0] for e in range(10)] == [False] * 5 + [True] * 5
    assert rls_on_at(0, 1)[0]  # a 1-epoch smoke run trains with RLS
    # history is ignored by the fraction rule
    assert not rls_on_at(4, 10, "fraction", seg_history=[1.0] * 4, rls_on_history=[1.0] * 4)[0]


def _switch_epoch(history, num_epochs, **kw):
    """The first epoch at which the plateau rule switches on, fed the history as training goes."""
    on_hist = []
    for epoch in range(num_epochs):
        on, why = rls_on_at(epoch, num_epochs, "plateau", 0.5, history[:epoch], on_hist, **kw)
        on_hist.append(float(on))
        if on:
            return epoch, why
    return None, ""


def test_plateau_rule_switches_on_the_converged_epoch_within_its_window():
    # 40 epochs: window [10, 20]; the loss falls fast, then flattens after epoch 12
    history = [1.0 * 0.8 ** k for k in range(13)] + [0.8 ** 12 * (1 - 0.001 * k) for k in range(1, 28)]
    epoch, why = _switch_epoch(history, 40)
    assert epoch == 14 and why.startswith("plateau:")
    # a plateau before the earliest epoch waits for it
    flat = [1.0] * 40
    epoch, why = _switch_epoch(flat, 40)
    assert epoch == 10 and why.startswith("plateau:")
    # a loss that keeps falling by 5 % an epoch: fallback at half way
    falling = [0.95 ** k for k in range(40)]
    epoch, why = _switch_epoch(falling, 40)
    assert epoch == 20 and why.startswith("fallback")
    # custom window and tolerance
    assert _switch_epoch(falling, 40, tol=0.06, min_start_fraction=0.1)[0] == 4


def test_plateau_rule_is_sticky_and_decided_from_logged_history_only():
    # switched on at epoch 3 (logged), then the loss falls again: stays on
    on, why = rls_on_at(6, 40, "plateau", 0.5, [1, 1, 1, 1, 0.5, 0.4], [0, 0, 0, 1, 1, 1], 0.0)
    assert on and "since epoch 3" in why
    # entries from epoch >= current are ignored (a history longer than the current epoch)
    assert not rls_on_at(2, 40, "plateau", 0.5, [1.0] * 10, [0, 0, 1, 1], 0.0)[0]
    # NaN switch entries (epochs from a checkpoint written before the key existed) are not "on"
    assert not rls_on_at(5, 40, "plateau", 0.5, [math.nan] * 5, [math.nan] * 5, 0.0)[0]


def test_bad_settings_raise():
    with pytest.raises(ValueError, match="rls_start"):
        rls_on_at(0, 10, "never")
    with pytest.raises(ValueError, match="rls_min_start_fraction"):
        rls_on_at(0, 10, "plateau", 0.3, min_start_fraction=0.4)
