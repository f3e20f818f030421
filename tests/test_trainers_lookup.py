"""nnU-Net finds every trainer name of ``trainers/`` through its own lookup, and each name means what it says.

``nnUNetv2_train``/``nnUNetv2_predict`` resolve ``-tr`` with
``nnunetv2.utilities.find_objects.recursive_find_trainer_class_by_name``: nnunetv2's own trainer tree
first, then every folder of ``nnUNet_extTrainer`` with ``recursive_find_python_class(folder, name,
None, base_folder=folder, cleanup_imports_from_base_folder=True)``.  Our workflows point the variable
at ``trainers/`` (``nnunet_ulseg.workflow.nnunet.NNUNetPaths.environ``); so do these tests.  Nothing
is built here (no network, no plans): class attributes only.
"""
from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path

import pytest

from nnunet_ulseg.workflow.nnunet import NNUNetPaths, trainers_dir

BASE_NAMES = [
    # nnU-Net's U-Net
    "nnUNetTrainerBCEIoU", "nnUNetTrainerRLS", "nnUNetTrainerLS", "nnUNetTrainerDiceCERLS", "nnUNetTrainerRLSPlateau",
    # HRNet / AHRNet, Table 1 and Table 2 rows 1-6
    "nnUNetTrainerHRNet", "nnUNetTrainerHRNetRLS", "nnUNetTrainerHRNetDE", "nnUNetTrainerHRNetDEDA",
    "nnUNetTrainerAHRNet", "nnUNetTrainerAHRNetRLS", "nnUNetTrainerAHRNetLS", "nnUNetTrainerAHRNetRLSAdam",
    # W18 backbone
    "nnUNetTrainerHRNetW18", "nnUNetTrainerAHRNetW18", "nnUNetTrainerAHRNetW18RLS", "nnUNetTrainerAHRNetW18DE",
    "nnUNetTrainerAHRNetW18DEDA", "nnUNetTrainerAHRNetW18LS", "nnUNetTrainerAHRNetW18RLSAdam",
    "nnUNetTrainerAHRNetW18RLSPlateau", "nnUNetTrainerAHRNetW18S2", "nnUNetTrainerAHRNetW18S2RLS",
    "nnUNetTrainerRLSUnnormalized", "nnUNetTrainerDiceCERLSNoIgnore",
    "nnUNetTrainerAHRNetEdgeRLS", "nnUNetTrainerAHRNetW18EdgeRLS",
]
SHORT_NAMES = [
    "nnUNetTrainerBCEIoU_1epochs", "nnUNetTrainerBCEIoU_10epochs", "nnUNetTrainerRLS_1epochs",
    "nnUNetTrainerRLS_10epochs", "nnUNetTrainerLS_1epochs", "nnUNetTrainerLS_10epochs",
    "nnUNetTrainerDiceCERLS_1epochs", "nnUNetTrainerDiceCERLS_10epochs", "nnUNetTrainerRLSPlateau_10epochs",
    "nnUNetTrainerDiceCERLSNoIgnore_10epochs",
    "nnUNetTrainerHRNet_1epochs", "nnUNetTrainerHRNet_10epochs", "nnUNetTrainerHRNetRLS_10epochs",
    "nnUNetTrainerHRNetDE_10epochs", "nnUNetTrainerHRNetDEDA_10epochs", "nnUNetTrainerAHRNet_10epochs",
    "nnUNetTrainerAHRNetRLS_1epochs", "nnUNetTrainerAHRNetRLS_10epochs", "nnUNetTrainerAHRNetLS_10epochs",
    "nnUNetTrainerAHRNetRLSAdam_10epochs", "nnUNetTrainerHRNetW18_10epochs", "nnUNetTrainerAHRNetW18_10epochs",
    "nnUNetTrainerAHRNetW18RLS_5epochs", "nnUNetTrainerAHRNetW18RLS_10epochs", "nnUNetTrainerAHRNetW18DE_10epochs",
    "nnUNetTrainerAHRNetW18DEDA_10epochs", "nnUNetTrainerAHRNetW18LS_10epochs",
    "nnUNetTrainerAHRNetW18RLSAdam_10epochs", "nnUNetTrainerAHRNetW18RLSPlateau_10epochs",
    "nnUNetTrainerAHRNetW18S2_10epochs", "nnUNetTrainerAHRNetW18S2RLS_10epochs",
    "nnUNetTrainerRLSUnnormalized_10epochs",
    "nnUNetTrainerAHRNetEdgeRLS_1epochs", "nnUNetTrainerAHRNetEdgeRLS_10epochs",
    "nnUNetTrainerAHRNetW18EdgeRLS_10epochs",
]
DEFAULT_LOSS_NAMES = ["nnUNetTrainerULSeg_1epochs", "nnUNetTrainerULSeg_10epochs"]
# co-segmentation (nnunet_ulseg.training.coseg; attributes checked in test_training_coseg.py)
COSEG_NAMES = [f"nnUNetTrainerCoSeg{v}{s}" for v in ("", "Adam", "SEASPP", "ECA", "ECAASPP", "DANet", "None")
               for s in ("", "_10epochs")] + ["nnUNetTrainerCoSeg_1epochs"]
# E2Net (issue 14; not weak-label trainers, attributes checked in test_trainers_e2net.py)
E2NET_NAMES = [f"nnUNetTrainer{n}{v}" for n in ("R2UNetLiver", "E2NetBaseline", "E2NetEdge", "E2NetDist",
                                                 "E2NetEdgeDCFF", "E2Net") for v in ("", "Lite", "Lite_10epochs")] + [
    "nnUNetTrainerE2NetDistDCFF", "nnUNetTrainerE2Net_1epochs", "nnUNetTrainerE2NetLite_1epochs",
    "nnUNetTrainerR2UNetLiverLite_1epochs", "nnUNetTrainerR2UNetLiver_10epochs", "nnUNetTrainerE2Net_10epochs"]
ALL_NAMES = BASE_NAMES + SHORT_NAMES + DEFAULT_LOSS_NAMES + COSEG_NAMES + E2NET_NAMES


def _ext_folder(tmp_path) -> str:
    """``nnUNet_extTrainer`` exactly as our workflows set it."""
    return NNUNetPaths.under(tmp_path).environ(base={})["nnUNet_extTrainer"]


@pytest.fixture(scope="module")
def nnunet_tree_names():
    """Every class name importable from nnunetv2's own trainer tree (built-ins win the lookup)."""
    import pkgutil

    import nnunetv2.training.nnUNetTrainer as tree

    names = set()
    for info in pkgutil.walk_packages(tree.__path__, tree.__name__ + "."):
        if not info.ispkg:
            names.update(vars(importlib.import_module(info.name)))
    return names


def test_ext_trainer_variable_points_at_the_trainers_folder(tmp_path):
    folder = _ext_folder(tmp_path)
    assert folder == str(trainers_dir()) and (Path(folder) / "nnUNetTrainerDiceCERLS.py").is_file()


def test_every_trainer_class_in_the_folder_is_listed(tmp_path):
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    folder = _ext_folder(tmp_path)
    found = set()
    sys.path.insert(0, folder)
    try:
        for path in sorted(Path(folder).glob("*.py")):
            module = importlib.import_module(path.stem)
            found.update(name for name, obj in vars(module).items()
                         if isinstance(obj, type) and issubclass(obj, nnUNetTrainer) and obj.__module__ == path.stem)
            sys.modules.pop(path.stem, None)
    finally:
        sys.path.remove(folder)
    assert found == set(ALL_NAMES)


@pytest.mark.parametrize("name", ALL_NAMES)
def test_nnunet_finds_the_trainer_by_name(tmp_path, monkeypatch, name, nnunet_tree_names):
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.find_class_by_name import recursive_find_python_class
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    folder = _ext_folder(tmp_path)
    assert name not in nnunet_tree_names  # else nnU-Net's own class would shadow ours
    # the folder search exactly as find_objects does it for nnUNet_extTrainer
    direct = recursive_find_python_class(folder, name, None, base_folder=folder,
                                         cleanup_imports_from_base_folder=True)
    assert direct is not None and direct.__name__ == name and issubclass(direct, nnUNetTrainer)
    assert not any(m == direct.__module__ for m in sys.modules)  # cleaned up, as nnU-Net leaves it
    # and the whole nnUNetv2_train lookup
    monkeypatch.setenv("nnUNet_extTrainer", folder)
    cls = recursive_find_trainer_class_by_name(name)
    assert cls.__name__ == name and issubclass(cls, nnUNetTrainer)


def _expected(name: str) -> dict:
    """What a weak-label trainer's name promises, read from the name's grammar."""
    base, _, length = name.partition("_")
    epochs = {"": None, "1epochs": 1, "5epochs": 5, "10epochs": 10}[length]
    stem = base[len("nnUNetTrainer"):]
    network = re.match(r"(AHRNet|HRNet)?(W18)?", stem)
    rest = stem[network.end():]
    exp = {"short_num_epochs": epochs, "seg_loss": "dice_ce" if rest.startswith("DiceCE") else "bce_iou",
           "use_rls": "RLS" in rest or rest.endswith("LS"), "rls_region": "image" if re.search(r"(^|[^R])LS", rest)
           else "rls_labelled" if rest.endswith("NoIgnore") else "rls", "rls_start": "plateau" if rest.endswith("Plateau") else "fraction",
           "optimizer_recipe": "ahrnet" if rest.endswith("Adam") else "nnunet"}
    if network.group(1):
        if rest.startswith("DE"):  # ablation rows 2 and 3: DE, DE + DA
            switches = (True, rest.startswith("DEDA"), False)
        else:  # AHRNet = DE + DA + SA (row 4), HRNet = none (row 1)
            switches = (network.group(1) == "AHRNet",) * 3
        exp.update(dict(zip(("use_decoder", "use_dual_attention", "use_scale_attention"), switches)),
                   hrnet_config="w18" if network.group(2) else "w32", ds_weight_scheme="equal")
    else:
        exp.update(ds_weight_scheme="nnunet")
    return exp


@pytest.mark.parametrize("name", BASE_NAMES + SHORT_NAMES)
def test_trainer_attributes_match_the_name(tmp_path, name):
    from nnunetv2.utilities.find_class_by_name import recursive_find_python_class

    from nnunet_ulseg.training.weak import nnUNetTrainerWeak

    folder = _ext_folder(tmp_path)
    cls = recursive_find_python_class(folder, name, None, base_folder=folder, cleanup_imports_from_base_folder=True)
    assert issubclass(cls, nnUNetTrainerWeak)
    expected = _expected(name)
    assert {k: getattr(cls, k) for k in expected} == expected
    # one base fixes the order of the parts for every trainer
    mro = [c.__name__ for c in cls.__mro__]
    assert mro[mro.index("nnUNetTrainerWeak"):] == ["nnUNetTrainerWeak", "ShortSchedule", "nnUNetTrainer", "object"]
    if "hrnet_config" in expected:
        assert cls.arch_kwargs()[0]["config"] == expected["hrnet_config"]


def test_default_loss_short_trainers_are_nnunets_own():
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    sys.path.insert(0, str(trainers_dir()))
    try:
        module = importlib.import_module("nnUNetTrainerULSeg_Xepochs")
        for name, epochs in (("nnUNetTrainerULSeg_1epochs", 1), ("nnUNetTrainerULSeg_10epochs", 10)):
            cls = getattr(module, name)
            assert cls.__mro__[2] is nnUNetTrainer and cls.short_num_epochs == epochs
    finally:
        sys.modules.pop("nnUNetTrainerULSeg_Xepochs", None)
        sys.path.remove(str(trainers_dir()))
