"""SOFTMAX in portable C: a table of exponentials per input difference, exact integer division.

For 8-bit inputs ``diff = x - max(row)`` takes at most 256 values, so the simulator's fixed-point
``exp_on_negative_values`` of every rescaled difference is evaluated at generation time into a
table of Q0.31 values (``0`` past ``diff_min``, and trailing zeros trimmed). The C then does what
the reference does with them at run time: the Q12.19 sum, ``GetReciprocal`` (leading-zero
normalisation and three Newton-Raphson steps in gemmlowp fixed point), the high multiply and the
final RoundingDivideByPOT. :func:`softmax_table_model` is that C, line for line, in numpy.

Rows whose sum of exponentials reaches 512 (``exponent > 31``): the simulator raises ModelError
when it *runs* such a row (LiteRT and TFLite Micro abort on gemmlowp's assertion), but that
depends on the data, so the model is not rejected at generation; only what the simulator rejects
at prepare time (beta * scale too small, wrong output quantization) is. The C then writes the
type's minimum on the whole row: what RoundingDivideByPOT extended to exponents above 31 returns,
since the high product is below 2^31.
"""

from __future__ import annotations

import numpy as np

from qlane.sim.fixedpoint import (
    rounding_divide_by_pot,
    saturating_rounding_doubling_high_mul,
    wrap_int32,
)
from qlane.sim.ops.softmax import ACCUMULATION_INTEGER_BITS, SCALED_DIFF_INTEGER_BITS, Softmax
from qlane.sim.transcendental import (
    FixedPoint,
    exp_on_negative_values,
    get_reciprocal,
    mul_by_quantized_multiplier_greater_than_one,
)

from ..lowering import Const, Context, LayerCode, lowering
from .common import ctype

MAX_DIFFS = 256
"""Differences ``max - x`` of 8-bit values: 0 .. 255."""


def exp_table(sim: Softmax) -> np.ndarray:
    """Q0.31 ``exp`` of each difference ``-k`` (k = 0, 1, ...), 0 once ``-k < diff_min``.

    Trailing zeros are trimmed: a difference past the table's end contributes 0, exactly as an
    unused difference or one whose exponential underflows does.
    """
    diffs = -np.arange(MAX_DIFFS, dtype=np.int64)
    used = diffs >= sim.diff_min
    rescaled = mul_by_quantized_multiplier_greater_than_one(
        np.where(used, diffs, 0), sim.multiplier, sim.left_shift, sim.rounding)
    exp = exp_on_negative_values(FixedPoint.from_raw(rescaled, SCALED_DIFF_INTEGER_BITS)).raw
    table = np.where(used, exp, 0).astype(np.int64)
    nonzero = np.flatnonzero(table)
    return table[: int(nonzero[-1]) + 1 if nonzero.size else 1].astype(np.int32)


def softmax_table_model(table: np.ndarray, x: np.ndarray, dtype) -> np.ndarray:
    """What the generated C computes, in numpy: rows along the last axis of ``x``."""
    lo, hi = np.iinfo(np.dtype(dtype)).min, np.iinfo(np.dtype(dtype)).max
    x = np.asarray(x, np.int64)
    k = x.max(axis=-1, keepdims=True) - x
    padded = np.zeros(MAX_DIFFS, np.int64)
    padded[: table.size] = table
    exp = padded[k]
    total = wrap_int32(rounding_divide_by_pot(exp, ACCUMULATION_INTEGER_BITS)
                       .sum(axis=-1, keepdims=True))
    scale, bits_over_unit = get_reciprocal(total, ACCUMULATION_INTEGER_BITS)
    exponent = bits_over_unit + 31 - 8
    ok = exponent <= 31
    product = saturating_rounding_doubling_high_mul(scale, exp)
    unsat = rounding_divide_by_pot(product, np.broadcast_to(np.where(ok, exponent, 31),
                                                            product.shape))
    y = np.clip(wrap_int32(unsat + lo), lo, hi)
    return np.where(ok, y, lo).astype(dtype)


@lowering("SOFTMAX", isa="c")
def softmax_c(ctx: Context) -> LayerCode:
    """Rows along the last axis: max, table sum, reciprocal, scale each exponential."""
    sim = ctx.sim
    assert isinstance(sim, Softmax)
    x = ctx.inputs[0]
    assert x is not None
    depth = int(x.shape[-1])
    rows = x.size // depth if depth else 0
    table = exp_table(sim)
    params = dict(T=ctype(x.dtype), rows=rows, depth=depth, table_len=int(table.size),
                  lo=sim.lo, hi=sim.hi)
    # one zero after the last nonzero entry: the C reads it for every difference past the end
    padded = np.append(table, np.int32(0)) if table.size < MAX_DIFFS else table
    const = Const("exp", padded, f"Q0.31 exp of (x - max) rescaled (beta {sim.beta:g}), "
                                 f"by max - x; then 0")
    return LayerCode(template="c/softmax.c.j2", op="softmax", variant=f"r{rows}d{depth}",
                  params=params, consts=[const])
