"""QUANTIZE (float32 -> 8 bit, and 8-bit requantization) and DEQUANTIZE in portable C.

The float paths use float32 arithmetic only, one IEEE operation per value (a division for
QUANTIZE, a multiplication for DEQUANTIZE), so there is nothing for a compiler to contract into
an FMA and no libm call: QUANTIZE rounds half away from zero by hand.
"""

from __future__ import annotations

import numpy as np

from qlane.sim.fixedpoint import dtype_range
from qlane.sim.ops.quantize import Dequantize, Quantize

from ..lowering import Const, Context, LayerCode, Unsupported, lowering
from .activation import requant_kernel
from .common import ctype

EXACT_INT_IN_FLOAT = 1 << 24
"""Integers up to this magnitude convert to float32 exactly."""


def cfloat(v: float) -> str:
    """A C float literal for a float32 value, exact (shortest repr of its double)."""
    f = float(np.float32(v))
    if not np.isfinite(f):
        raise Unsupported(f"non-finite float constant {f}")
    return f"{f!r}f"


@lowering("QUANTIZE", isa="c")
def quantize_c(ctx: Context) -> LayerCode:
    """float32: ``clamp(round_half_away(x / scale) + zp)``; 8 bit: requantization."""
    sim = ctx.sim
    assert isinstance(sim, Quantize)
    out = ctx.outputs[0]
    lo, hi = dtype_range(sim.dtype)
    if sim.requantize:
        return requant_kernel(ctx, "quantize", sim.in_zp, sim.out_zp, sim.mult, lo, hi)
    n = out.size
    params = dict(T=ctype(out.dtype), n=n, scale=cfloat(sim.out_scale), zp=sim.out_zp, lo=lo,
                  hi=hi)
    return LayerCode(template="c/quantize_f32.c.j2", op="quantize", variant=f"f32n{n}",
                  params=params)


@lowering("DEQUANTIZE", isa="c")
def dequantize_c(ctx: Context) -> LayerCode:
    """``scale * (float)(q - zp)`` in float32, per tensor or per axis."""
    sim = ctx.sim
    assert isinstance(sim, Dequantize)
    x = ctx.inputs[0]
    assert x is not None and x.quant is not None
    lo, hi = dtype_range(x.dtype)
    zps = np.asarray(x.quant.zero_point, np.int64)
    if np.any(np.maximum(np.abs(hi - zps), np.abs(lo - zps)) > EXACT_INT_IN_FLOAT):
        raise Unsupported("a zero point so far out that q - zp is not exact in float32")
    n = x.size
    if not x.quant.per_axis:
        params = dict(T=ctype(x.dtype), n=n, per_axis=False, scale=cfloat(x.quant.s),
                      zp=int(zps[0]))
        return LayerCode(template="c/dequantize.c.j2", op="dequantize", variant=f"n{n}",
                      params=params)
    axis = x.quant.axis
    channels = x.shape[axis]
    outer = int(np.prod(x.shape[:axis], dtype=np.int64))
    inner = int(np.prod(x.shape[axis + 1:], dtype=np.int64))
    consts = [Const("scale", np.asarray(x.quant.scale, np.float32), "per-channel scales"),
              Const("zp", zps.astype(np.int32), "per-channel zero points")]
    params = dict(T=ctype(x.dtype), n=n, per_axis=True, outer=outer, channels=channels,
                  inner=inner)
    return LayerCode(template="c/dequantize.c.j2", op="dequantize", variant=f"n{n}c{channels}",
                  params=params, consts=consts)
