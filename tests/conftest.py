"""Session fixtures shared by several test files (the helpers live in modules of their own)."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """One 1-epoch ``nnUNetTrainerULSeg_1epochs`` model on a tiny converted sample (``tests/tiny_model.py``).

    Read-only for the tests that use it; copy it (``TinyModel.copy_to``) to write beside it.
    """
    from tiny_model import build

    return build(tmp_path_factory.mktemp("tiny_model"))
