import pytest

from nnunet_ulseg.training.schedule import ShortSchedule, _env_int


class _Base:
    def __init__(self, plans, configuration, fold, dataset_json, device=None):
        self.num_epochs, self.num_iterations_per_epoch, self.num_val_iterations_per_epoch = 1000, 250, 50


class _Short(ShortSchedule, _Base):
    short_num_epochs, short_iterations_per_epoch, short_val_iterations_per_epoch = 3, 4, 2


def test_short_schedule_sets_attributes(monkeypatch):
    monkeypatch.delenv("ULSEG_SHORT_EPOCHS", raising=False)
    monkeypatch.delenv("ULSEG_SHORT_ITERATIONS", raising=False)
    t = _Short({}, "2d", 0, {})
    assert (t.num_epochs, t.num_iterations_per_epoch, t.num_val_iterations_per_epoch) == (3, 4, 2)


def test_environment_override(monkeypatch):
    monkeypatch.setenv("ULSEG_SHORT_EPOCHS", "7")
    monkeypatch.setenv("ULSEG_SHORT_ITERATIONS", "11")
    t = _Short({}, "2d", 0, {})
    assert (t.num_epochs, t.num_iterations_per_epoch) == (7, 11)
    monkeypatch.setenv("ULSEG_SHORT_EPOCHS", "zero")
    with pytest.raises(ValueError, match="ULSEG_SHORT_EPOCHS must be a positive integer"):
        _Short({}, "2d", 0, {})
    monkeypatch.setenv("ULSEG_SHORT_EPOCHS", "0")
    with pytest.raises(ValueError, match="positive"):
        _env_int("ULSEG_SHORT_EPOCHS")


def test_trainer_classes_use_the_mixin_with_nnunet_signature():
    import inspect

    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    assert list(inspect.signature(ShortSchedule.__init__).parameters) == \
        list(inspect.signature(nnUNetTrainer.__init__).parameters)


class _Full(ShortSchedule, _Base):
    short_num_epochs = None  # what nnUNetTrainerWeak declares: keep nnU-Net's schedule


def test_no_short_epochs_keeps_nnunets_schedule_and_ignores_the_environment(monkeypatch):
    monkeypatch.setenv("ULSEG_SHORT_EPOCHS", "7")
    t = _Full({}, "2d", 0, {})
    assert (t.num_epochs, t.num_iterations_per_epoch, t.num_val_iterations_per_epoch) == (1000, 250, 50)
    assert not t._schedule_override


def test_thread_cap_on_cpu_only(monkeypatch):
    import torch

    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("ULSEG_NUM_THREADS", "1")
        _Short({}, "2d", 0, {}, torch.device("cuda"))
        assert torch.get_num_threads() == before  # not a CPU run: untouched
        _Short({}, "2d", 0, {}, torch.device("cpu"))
        assert torch.get_num_threads() == 1
        monkeypatch.setenv("ULSEG_NUM_THREADS", "0")
        with pytest.raises(ValueError, match="ULSEG_NUM_THREADS"):
            _Short({}, "2d", 0, {}, torch.device("cpu"))
    finally:
        torch.set_num_threads(before)
