"""Cortex-M DSP lowering of ADD: two same-shape 8-bit tensors through two byte tables.

TFLite's quantized ADD scales each input on its own (offset, shift left by 20, multiply by a
multiplier smaller than one) before one output requantization of the sum. The first stage is a
function of the input byte alone: the lowering tabulates it (256 int32 per input, copied from
flash to scratch once per call, where the lookups cost no flash wait states), and the kernel
runs per element two LDRB, two table loads, an ADD, the output's ``high_mul`` form
(`qlane.sim.requant.RequantPlan`: SMMLAR / SMMLA, the output zero point in the rounding addend)
and SSAT / USAT with the final arithmetic shift; four outputs are packed into one word, which
SSUB8 / USUB8 and SEL clamp to the fused activation's range. Before emitting, the lowering runs
this arithmetic on every pair of input bytes against the simulator (65536 pairs): the kernel is
exact for every input or not used.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from qlane.sim.ops.elementwise import AddSub
from qlane.sim.requant import HighMul, RequantPlan

from ..lowering import Const, Context, LayerCode, Unsupported, lowering
from .common import ctype, same_shape_operands
from .dsp import zp_folds

ADD_TABLE_BYTES = 2 * 256 * 4
"""Scratch of the two stage tables."""


def _wrap(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, np.int64) & 0xFFFFFFFF
    return np.where(v >= 2**31, v - 2**32, v)


def add_form(sim: AddSub, dtype: np.dtype) -> tuple[np.ndarray, dict[str, Any]]:
    """The tables (two x 256 int32, indexed by the input byte as unsigned) and the output
    stage's parameters; Unsupported where no exact form applies."""
    values = np.arange(256, dtype=np.int64)
    if dtype == np.int8:
        values = np.where(values >= 128, values - 256, values)
    stage = [np.asarray(sim._stage(k, values), np.int64) for k in (0, 1)]
    bound = int(np.abs(stage[0]).max() + np.abs(stage[1]).max())
    mo, so = sim.out_mult
    plan = RequantPlan(mo, so, sim.out_zp, sim.act_min, sim.act_max, sim.rounding, bound=bound,
                       channels=1)
    high = plan.high_mul()
    if high is None and sim.rounding == "single" and so == 0 and bound < 2**30:
        # floor((a M + 2^30) / 2^31) = SMMULR(2a, M): the double-rounding form with e = 0
        high = HighMul("dbl0", np.asarray([mo], np.int64), np.zeros(1, np.int64),
                       np.zeros(1, np.int64))
    if high is None or mo <= 0:
        raise Unsupported("no high-multiply form of the output requantization")
    variant = high.variant
    scale = 2 if variant in ("dbl", "dbl0") else 1  # SMMULR(2a, M): the tables hold 2 x stage
    m, rnd, shift = int(high.m[0]), int(high.rnd[0]), int(high.shift[0])
    if variant in ("dbl0", "smmulr"):
        rnd, shift = 0, 0
    fixup = variant == "dbl" and not plan.ties_up
    if variant == "smmulr" or variant == "dbl0" or zp_folds(plan, high):
        rnd += sim.out_zp << shift
        zp_add = 0
    else:
        zp_add = sim.out_zp
    if zp_add:
        raise Unsupported("the output zero point does not fold into the rounding addend")
    tables = [scale * s for s in stage]
    signed = dtype == np.int8
    info = np.iinfo(dtype)
    params = dict(mm=variant, m=m, rnd=rnd, shift=shift, fixup=fixup, signed=signed,
                  ties_up=plan.ties_up,
                  lo=sim.act_min, hi=sim.act_max, T=ctype(dtype),
                  clamp_lo=sim.act_min > info.min, clamp_hi=sim.act_max < info.max,
                  smmla="smmla" if variant == "smmul" else "smmlar")
    _check(sim, dtype, values, tables, params)
    return np.stack(tables), params


def _c_model(a: np.ndarray, p: dict[str, Any]) -> np.ndarray:
    """The kernel's output stage, instruction by instruction, on sums ``a`` of table entries."""
    a = np.asarray(a, np.int64)
    rnd = np.int64(p["rnd"])
    if p["fixup"]:
        rnd = rnd + (a >> 31)  # ADD r, rnd, a, ASR #31
    prod = a * np.int64(p["m"])
    if p["smmla"] == "smmlar":
        h = (prod + (1 << 31)) >> 32
    else:
        h = prod >> 32
    r = _wrap(h + rnd) >> p["shift"]
    bits = 8
    if p["signed"]:
        r = np.clip(r, -(1 << (bits - 1)), (1 << (bits - 1)) - 1)
    else:
        r = np.clip(r, 0, (1 << bits) - 1)
    return np.clip(r, p["lo"], p["hi"])


def _check(sim: AddSub, dtype: np.dtype, values: np.ndarray, tables: list[np.ndarray],
           p: dict[str, Any]) -> None:
    """Every pair of input bytes through the kernel's arithmetic against the simulator."""
    x1, x2 = np.meshgrid(values, values, indexing="ij")
    want = np.asarray(sim(x1.reshape(1, -1).astype(dtype), x2.reshape(1, -1).astype(dtype))[0],
                      np.int64).reshape(-1)
    a = (tables[0][:, None] + tables[1][None, :]).reshape(-1)
    if np.any(np.abs(a) >= 2**31) or not np.array_equal(_c_model(a, p), want):
        raise Unsupported("the table form differs from the reference for some inputs")


@lowering("ADD", isa="dsp")
def add_dsp(ctx: Context) -> LayerCode:
    """ADD of two same-shape int8 / uint8 tensors (no broadcast, no constant operand)."""
    sim = ctx.sim
    if ctx.op.opcode != "ADD" or not isinstance(sim, AddSub):
        raise Unsupported(f"{ctx.op.opcode} (ADD only)")
    a, b, out = same_shape_operands(ctx)
    dtype = np.dtype(out.dtype)
    if dtype not in (np.dtype(np.int8), np.dtype(np.uint8)):
        raise Unsupported(f"{dtype.name} output (uint8 or int8 expected)")
    tables, params = add_form(sim, dtype)
    n = int(np.prod(out.shape))
    lo_b, hi_b = (params["lo"] & 0xFF), (params["hi"] & 0xFF)
    params.update(N=n, N4=n - n % 4, lo4=lo_b * 0x01010101, hi4=hi_b * 0x01010101,
                  ext="ssat" if params["signed"] else "usat",
                  sub8="ssub8" if params["signed"] else "usub8")
    consts = [Const("lut", _wrap(tables).astype(np.int32).reshape(-1),
                    "input 1 then input 2 after their stage (offset, << 20, multiplier), "
                    f"{'x 2 ' if params['mm'] in ('dbl', 'dbl0') else ''}by input byte")]
    return LayerCode(template="dsp/add.c.j2", op="add", variant=f"n{n}", params=params,
                     consts=consts, scratch_bytes=ADD_TABLE_BYTES)
