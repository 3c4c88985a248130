"""Lowerings per operator family and ISA; importing this package registers them all."""

from . import (  # noqa: F401  (modules register their lowerings on import)
    activation,
    conv,
    dsp,
    dsp_add,
    elementwise,
    mve,
    mve_elementwise,
    neon,
    pool,
    quantize,
    shape,
    softmax,
)
