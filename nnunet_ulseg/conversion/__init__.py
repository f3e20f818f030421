"""DeepLesion -> nnU-Net raw dataset conversion (see :mod:`.deeplesion`).

Public names are imported lazily so that ``import nnunet_ulseg.conversion.cli`` (done when
the ``ulseg`` parser is built) does not load cv2/numpy.
"""
from importlib import import_module

_EXPORTS = {
    "convert_deeplesion": "deeplesion",
    "ConversionResult": "deeplesion",
    "ConversionError": "report",
    "LesionRow": "sidecar",
    "read_sidecar": "sidecar",
    "paste_back": "sidecar",
    "read_dl_info": "dl_info",
    "LesionRecord": "dl_info",
    "CropBox": "geometry",
    "crop_box": "geometry",
}
__all__ = list(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
