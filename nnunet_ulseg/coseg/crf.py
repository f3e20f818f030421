"""Optional dense-CRF post-processing of co-segmentation outputs (co-segmentation paper Sec. 2.2, Table 2 "DCRF").

The paper feeds each predicted mask "to a densely-connected conditional random field [17]
(DCRF) to acquire the final masks" with decoder D1, and not with D2 ("it performs worse");
Table 2: DCRF raises precision and lowers recall.  [17] is Krähenbühl and Koltun's fully
connected CRF with Gaussian edge potentials, implemented by ``pydensecrf`` (here its
maintained fork ``pydensecrf2``, an optional dependency: ``pip install pydensecrf2``;
``pydensecrf`` itself no longer builds with current Cython).

Choices where the paper is silent (it gives no CRF parameters):

* Unary: ``-log p`` of the network's softmax (``unary_from_softmax``).
* Pairwise: a smoothness kernel (``sxy = 3``, compat 3) and an appearance kernel
  (``sxy = 20`` px, intensity ``srgb = 10`` grey levels, compat 5): DeepLab's defaults for
  513 px images with the spatial range scaled down to our 128-256 px crops.
* Intensity: the CT crop mapped to 0-255 between its 0.5 and 99.5 percentiles (the crop's
  own contrast; ``coseg-predict`` reads arbitrary input folders, so no DICOM window is
  known), the same grey value in the three channels the library expects.
* 5 mean-field iterations.
"""
from __future__ import annotations

import numpy as np


def available() -> bool:
    try:
        import pydensecrf.densecrf  # noqa: F401
    except ImportError:
        return False
    return True


def grey_levels(image: np.ndarray) -> np.ndarray:
    """``image`` mapped to uint8 between its 0.5 and 99.5 percentiles (a flat image gives zeros)."""
    image = np.asarray(image, dtype=np.float64)
    lo, hi = np.percentile(image, [0.5, 99.5])
    if hi <= lo:
        return np.zeros(image.shape, dtype=np.uint8)
    return np.round(np.clip((image - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8)


def dense_crf(probabilities: np.ndarray, image: np.ndarray, iterations: int = 5, sxy_smooth: float = 3,
              compat_smooth: float = 3, sxy_appearance: float = 20, srgb: float = 10,
              compat_appearance: float = 5) -> np.ndarray:
    """Label map ``[H, W]`` from class probabilities ``[K, H, W]`` and the image ``[H, W]``."""
    if not available():
        raise ValueError("--crf needs the optional package pydensecrf2 (pip install pydensecrf2)")
    import pydensecrf.densecrf as dcrf
    from pydensecrf.utils import unary_from_softmax

    probabilities = np.asarray(probabilities, dtype=np.float32)
    if probabilities.ndim != 3 or probabilities.shape[1:] != np.shape(image):
        raise ValueError(f"probabilities {probabilities.shape} and image {np.shape(image)} do not match "
                         f"([K, H, W] and [H, W])")
    k, h, w = probabilities.shape
    crf = dcrf.DenseCRF2D(w, h, k)
    crf.setUnaryEnergy(np.ascontiguousarray(unary_from_softmax(np.clip(probabilities, 1e-6, 1.0))))
    crf.addPairwiseGaussian(sxy=sxy_smooth, compat=compat_smooth)
    rgb = np.ascontiguousarray(np.repeat(grey_levels(image)[..., None], 3, axis=2))
    crf.addPairwiseBilateral(sxy=sxy_appearance, srgb=srgb, rgbim=rgb, compat=compat_appearance)
    q = np.array(crf.inference(iterations)).reshape(k, h, w)
    return q.argmax(axis=0).astype(np.uint8)
