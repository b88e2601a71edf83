"""vsr: video and image super-resolution with SRCNN (Dong et al., TPAMI 2016).

The public Python API (`vsr.api`): `load_model`, `make_upscaler`, `upscale_image`, `upscale_video`, the classes
`Upscaler`, `SelfEnsemble`, `SRCNN`, `VideoSummary`, and the errors (`VsrError` and its subclasses). The API is
loaded on first use, so `import vsr` (and `vsr --version`) does not import torch; the errors are here at once.
Library code logs warnings to the `vsr` logger, which prints nothing unless the application configures logging.
"""

import logging

from vsr.errors import BackendError, InputError, OutputError, UsageError, VsrError, WeightsError

__version__ = "0.1.0"

logging.getLogger("vsr").addHandler(logging.NullHandler())

_API = ("SRCNN", "SelfEnsemble", "Upscaler", "VideoSummary", "load_model", "make_upscaler", "upscale_image", "upscale_video")
__all__ = [*_API, "BackendError", "InputError", "OutputError", "UsageError", "VsrError", "WeightsError", "__version__"]


def __getattr__(name: str):
    if name in _API:
        from vsr import api

        return getattr(api, name)
    raise AttributeError(f"module 'vsr' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
