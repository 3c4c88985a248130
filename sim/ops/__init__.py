"""Reference kernels, one module per family; importing this package fills ``KERNELS``."""

from . import (  # noqa: F401  (modules register their kernels on import)
    activation,
    conv,
    elementwise,
    pool,
    quantize,
    shape,
    softmax,
)
from .base import KERNELS, Kernel, register

__all__ = ["KERNELS", "Kernel", "register"]
