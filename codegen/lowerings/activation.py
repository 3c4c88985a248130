"""LOGISTIC, TANH, HARD_SWISH, RELU, RELU6, RELU_N1_TO_1 in portable C.

- LOGISTIC, TANH: the simulator's 256-entry table (built in float32 at prepare time, as the
  reference kernel does) emitted as a ``static const`` array: one load per element.
- HARD_SWISH: the reference's int16 fixed point, with the exponents and masks folded at
  generation so that every shift in the C has a constant, in-range amount.
- RELU, RELU6, RELU_N1_TO_1: requantize with the rounding mode's primitive, clamp.

Any 8-bit unary op whose arithmetic the C primitives cannot express (a requantization shift
above 31) falls back to a table evaluated by the simulator on all 256 inputs.
"""

from __future__ import annotations

import numpy as np

from qlane.sim.fixedpoint import dtype_range
from qlane.sim.ops.activation import HardSwish, _LookupTable, _ReluX

from ..lowering import Const, Context, LayerCode, Unsupported, lowering
from .common import ctype

REQUANT_SHIFT = {"single": (-31, 30), "double": (-31, 31), "litert": (-31, 31)}
"""Shifts the C requantization primitives accept, per rounding mode."""


def sim_table(ctx: Context) -> np.ndarray:
    """The simulator's output for each of the 256 values of the 8-bit input, in value order."""
    x = ctx.inputs[0]
    assert x is not None
    lo, hi = dtype_range(x.dtype)
    values = np.arange(lo, hi + 1, dtype=np.int64).astype(x.dtype)
    return np.asarray(ctx.sim(values[None])[0]).reshape(-1)


def lut_kernel(ctx: Context, op: str, table: np.ndarray, comment: str) -> LayerCode:
    """``y[i] = table[x[i] - lo]`` over the whole tensor."""
    x, out = ctx.inputs[0], ctx.outputs[0]
    assert x is not None
    n = out.size
    params = dict(Tin=ctype(x.dtype), Tout=ctype(out.dtype), n=n,
                  offset=-dtype_range(x.dtype)[0])
    return LayerCode(template="c/lut.c.j2", op=op, variant=f"n{n}lut", params=params,
                  consts=[Const("lut", np.asarray(table, out.dtype), comment)])


def requant_kernel(ctx: Context, op: str, in_zp: int, out_zp: int, mult: tuple[int, int],
                   lo: int, hi: int) -> LayerCode:
    """``y = clamp(out_zp + requant(x - in_zp, m, shift), lo, hi)``; a table if out of range."""
    x, out = ctx.inputs[0], ctx.outputs[0]
    assert x is not None
    smin, smax = REQUANT_SHIFT[ctx.rounding]
    if not smin <= mult[1] <= smax:
        return lut_kernel(ctx, op, sim_table(ctx),
                          f"shift {mult[1]} outside the C primitive: simulator table")
    n = out.size
    params = dict(Tin=ctype(x.dtype), Tout=ctype(out.dtype), n=n, in_zp=in_zp, out_zp=out_zp,
                  mult=int(mult[0]), shift=int(mult[1]), lo=lo, hi=hi)
    return LayerCode(template="c/requant.c.j2", op=op, variant=f"n{n}", params=params)


@lowering("LOGISTIC", "TANH", isa="c")
def lookup_c(ctx: Context) -> LayerCode:
    """The reference kernel's float32-built table, exactly as the simulator holds it."""
    sim = ctx.sim
    assert isinstance(sim, _LookupTable)
    op = {"LOGISTIC": "logistic", "TANH": "tanh"}[ctx.op.opcode]
    return lut_kernel(ctx, op, sim.table, f"{ctx.op.opcode} table (LUTPopulate, float32)")


@lowering("RELU", "RELU6", "RELU_N1_TO_1", isa="c")
def relu_c(ctx: Context) -> LayerCode:
    """Requantize input -> output and clamp to the activation range."""
    sim = ctx.sim
    assert isinstance(sim, _ReluX)
    op = {"RELU": "relu", "RELU6": "relu6", "RELU_N1_TO_1": "relun1to1"}[ctx.op.opcode]
    return requant_kernel(ctx, op, sim.in_zp, sim.out_zp, (sim.multiplier, sim.shift),
                          sim.act_min, sim.act_max)


def _rdbpot16(exponent: int) -> int:
    """The exponent of an int16 RoundingDivideByPOT (qlane_rdbpot_s16 takes 0..31)."""
    if not 0 <= exponent <= 31:
        raise Unsupported(f"int16 rounding shift {exponent} outside [0, 31]")
    return exponent


@lowering("HARD_SWISH", isa="c")
def hardswish_c(ctx: Context) -> LayerCode:
    """``reference_ops::HardSwish``: int16 reluish and output multipliers."""
    sim = ctx.sim
    assert isinstance(sim, HardSwish)
    x, out = ctx.inputs[0], ctx.outputs[0]
    assert x is not None
    re = sim.reluish_exponent
    n = out.size
    params = dict(
        Tin=ctype(x.dtype), Tout=ctype(out.dtype), n=n, in_zp=sim.in_zp, out_zp=sim.out_zp,
        lo=sim.lo, hi=sim.hi, out_mult=sim.output_multiplier, relu_mult=sim.reluish_multiplier,
        # a saturating left shift by 16 or more already saturates every nonzero int16
        pre_shift=min(re - 1, 16) if re > 0 else None, post_shift=re > 0,
        relu_div=_rdbpot16(-re) if re < 0 else None, out_div=_rdbpot16(-sim.output_exponent),
    )
    return LayerCode(template="c/hardswish.c.j2", op="hardswish", variant=f"n{n}", params=params)
