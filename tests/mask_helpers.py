"""Hand-made masks shared by the evaluation tests."""
import numpy as np


def box(shape, r0, c0, h, w):
    """Boolean ``shape`` array with the ``h`` x ``w`` rectangle at row ``r0``, column ``c0`` set."""
    m = np.zeros(shape, bool)
    m[r0:r0 + h, c0:c0 + w] = True
    return m
