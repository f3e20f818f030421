"""Package list for setuptools; every other setting is in pyproject.toml.

``trainers/`` and ``dataset_conversion/`` stay top-level folders of the repository (the
folder ``nnUNet_extTrainer`` points at in a checkout, and nnU-Net-style converter
scripts), and ship inside the wheel as ``nnunet_ulseg/trainers`` and
``nnunet_ulseg/dataset_conversion``, so a non-editable ``pip install`` user gets them
under the package's one top-level name (nothing generic such as ``trainers`` lands in
site-packages).  pyproject.toml cannot both discover packages and add renamed ones, hence
this file: discovery keeps new sub-packages of ``nnunet_ulseg`` in the wheel automatically.
"""
from setuptools import find_packages, setup

SHIPPED_FOLDERS = {"nnunet_ulseg.trainers": "trainers", "nnunet_ulseg.dataset_conversion": "dataset_conversion"}

setup(
    packages=find_packages(include=["nnunet_ulseg", "nnunet_ulseg.*"]) + list(SHIPPED_FOLDERS),
    package_dir=SHIPPED_FOLDERS,
)
