"""AHRNet's optimisation recipe (Sec. 3): Adam 1e-3, x0.1 at 1/2 and 3/4 of the epochs."""
import pytest
import torch

from nnunet_ulseg.training.optim import StepFractionLR, ahrnet_optimizer


def _lrs(scheduler, optimizer, epochs):
    out = []
    for epoch in range(epochs):
        scheduler.step(epoch)  # how nnU-Net 2.8's on_train_epoch_start calls it
        out.append(optimizer.param_groups[0]["lr"])
    return out


def test_paper_schedule_at_80_epochs():
    optimizer, scheduler = ahrnet_optimizer([torch.nn.Parameter(torch.zeros(1))], 1e-3, 3e-5, 80)
    assert isinstance(optimizer, torch.optim.Adam) and optimizer.defaults["weight_decay"] == 3e-5
    assert scheduler.milestone_epochs == [40, 60]
    lrs = _lrs(scheduler, optimizer, 80)
    assert lrs[:40] == pytest.approx([1e-3] * 40)
    assert lrs[40:60] == pytest.approx([1e-4] * 20)
    assert lrs[60:] == pytest.approx([1e-5] * 20)
    assert scheduler.get_last_lr() == pytest.approx([1e-5])


def test_short_schedules_keep_the_shape_and_resume_by_epoch():
    p = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.Adam([p], lr=1e-3)
    scheduler = StepFractionLR(optimizer, 1e-3, 10)
    assert scheduler.milestone_epochs == [5, 7]
    assert _lrs(scheduler, optimizer, 10) == pytest.approx([1e-3] * 5 + [1e-4] * 2 + [1e-5] * 3)
    # a resumed training steps with its epoch directly
    scheduler.step(6)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-4)
    # step() without an epoch counts calls (torch's constructor already made one)
    fresh = StepFractionLR(torch.optim.Adam([p], lr=1e-3), 1e-3, 4)
    assert fresh.milestone_epochs == [2, 3]
    fresh.step()
    assert fresh.get_last_lr() == pytest.approx([1e-3])
    fresh.step()
    assert fresh.get_last_lr() == pytest.approx([1e-4])


def test_bad_milestones_raise():
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    with pytest.raises(ValueError, match="milestones"):
        StepFractionLR(optimizer, 1e-3, 10, milestones=(0.75, 0.5))
