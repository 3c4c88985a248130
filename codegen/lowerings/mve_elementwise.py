"""Helium (MVE, Cortex-M55 / M85) lowerings of ADD / SUB, MAX_POOL_2D and AVERAGE_POOL_2D.

ADD / SUB take eight elements at a time: offset and shift them left by 4 in int16 lanes, widen
the even and odd lanes by VSHLLB / VSHLLT #16 (a left shift of 20 in all), and requantize each
input and then their sum with the primitives of ``qlane_fixedpoint.h`` (TFLite's double or
single rounding, as the layer's rounding says). The pools keep 16 channels in lanes: VMAX.S8 /
.U8, or two int16x8 of sums divided by the window's count of valid taps with one VMULH.U32 per
four (exact for every reachable sum). Lengths and channel counts that are not a multiple of the
vector go through VCTP-predicated loads and stores. Layers the kernels do not fit raise
:class:`Unsupported`; the DSP and then the portable C kernels take them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from qlane.sim.fixedpoint import (
    mul_by_quantized_multiplier,
    mul_by_quantized_multiplier_double_ties_up,
    ties_up_exact,
)
from qlane.sim.ops.elementwise import ADD_LEFT_SHIFT, AddSub
from qlane.sim.ops.pool import AveragePool2D, MaxPool2D

from ..lowering import Context, LayerCode, Unsupported, lowering
from ..names import window_tag
from .common import same_shape_operands
from .neon import _dtype, _geometry, _interior, _out_stage, _requant, _types

MAX_AVG_TAPS = 256
"""Largest average-pool window: 256 8-bit values sum exactly in 16-bit lanes (int8: down to
-32768; uint8: up to 65280 as uint16)."""


def _input_stage(mult: int, shift: int, rounding: str) -> tuple[int, int]:
    """(left shift before the input's requantization, its shift). TFLite shifts by 20 and
    requantizes by (mult, shift <= 0). Single rounding rounds the exact product once, so a
    shift of 0 becomes left shift 21 and shift -1 (the two-instruction VQDMULH + VRSHL path;
    |x - zero point| 2^21 < 2^30; the kernel shifts by 16 + 5)."""
    if rounding == "single" and shift == 0:
        return ADD_LEFT_SHIFT + 1, -1
    return ADD_LEFT_SHIFT, shift


def _ties_up_same(x: np.ndarray, mult: int, shift: int, rounding: str,
                  lo: int | None = None, hi: int | None = None, zp: int = 0) -> bool:
    """Whether double rounding without its fix-up of negative ties (qlane_requant_double_up)
    gives the same as the layer's rounding on every value of ``x`` (after + ``zp`` and the
    clamp to [``lo``, ``hi``] when given). Single rounding has no fix-up: False."""
    if rounding == "single":
        return False
    want = mul_by_quantized_multiplier(x, mult, shift, rounding)
    got = mul_by_quantized_multiplier_double_ties_up(x, mult, shift)
    if lo is not None:
        want, got = (np.clip(v + zp, lo, hi) for v in (want, got))
    return bool(np.array_equal(want, got))


@lowering("ADD", "SUB", isa="mve")
def add_sub_mve(ctx: Context) -> LayerCode:
    """ADD / SUB of two same-shape int8 or uint8 tensors (no broadcast, no constant operand)."""
    sim = ctx.sim
    if not isinstance(sim, AddSub):
        raise Unsupported(f"{ctx.op.opcode} (ADD / SUB only)")
    dt = _dtype(ctx)
    a, b, out = same_shape_operands(ctx)
    rnd = ctx.rounding
    # every input byte, and every sum of two staged inputs the output stage can see: where no
    # negative tie changes a result among them, the fix-up of double rounding is left out
    info = np.iinfo(dt)
    values = np.arange(int(info.min), int(info.max) + 1, dtype=np.int64)
    staged = [np.asarray(sim._stage(k, values), np.int64) for k in (0, 1)]
    stages = []
    for k, name in ((0, "r1"), (1, "r2")):
        m, s = sim.in_mult[k]
        left, shift = _input_stage(int(m), int(s), rnd)
        x = (values - int(sim.in_zp[k])) << ADD_LEFT_SHIFT
        floor = shift == 0 or _ties_up_same(x, int(m), int(s), rnd)
        rq, _ = _requant(m, shift, rnd, 1, name, floor=floor)
        stages.append((left, rq))
    sums = (staged[0][:, None] + staged[1][None, :]).reshape(-1)
    mo, so = sim.out_mult
    floor = ties_up_exact(sim.act_min, sim.out_zp) or _ties_up_same(
        sums, int(mo), int(so), rnd, sim.act_min, sim.act_max, sim.out_zp)
    rqo, _ = _requant(mo, so, rnd, 1, "ro", floor=floor)
    count = int(out.size)
    (left1, rq1), (left2, rq2) = stages
    z1, z2 = (int(z) for z in sim.in_zp)
    params: dict[str, Any] = dict(
        **_types(dt), **_out_stage(sim.out_zp, sim.act_min, sim.act_max, dt),
        rq1=rq1, rq2=rq2, rqo=rqo, LEFT1=left1, LEFT2=left2, Z1=z1, Z2=z2,
        LEFT_SHIFT=ADD_LEFT_SHIFT, COUNT=count,
    )
    op = "add" if ctx.op.opcode == "ADD" else "sub"
    return LayerCode(template="mve/add.c.j2", op=op, variant=f"n{count}", tile="1x8",
                     params=params)


UNROLL_TAPS = 16
"""Windows of at most this many taps run unrolled inside the input; larger ones loop over their
rows with the columns unrolled (windows spanning whole rows: see `FLAT_TAPS`)."""

FLAT_TAPS = 4
"""Windows of more taps spanning whole rows (global pools) walk their consecutive pixels with one
post-incremented pointer, up to 32 taps a loop iteration (QEMU M55: MobileNet's 4x4x256 global
average 8.0 -> 7.1 instructions/output against the unrolled form)."""

OPAQUE_TAPS = {"max": 9, "avg": 8}
"""Beyond this many taps, the window's pointer is hidden from the compiler, which would keep one
pointer per tap across the channel loop (spilled past the registers; measured on QEMU's M55:
3x3 max pools are faster with the per-tap pointers, 3x3 average pools without)."""


@lowering("AVERAGE_POOL_2D", "MAX_POOL_2D", isa="mve")
def pool_mve(ctx: Context) -> LayerCode:
    """Any window, stride and padding. Max pool: 16 channels per VMAX; average pool: 16-bit sums,
    8 channels a vector, divided by each pixel's count of valid taps (at most `MAX_AVG_TAPS`)."""
    sim = ctx.sim
    assert isinstance(sim, AveragePool2D | MaxPool2D)
    dt = _dtype(ctx)
    g = _geometry(sim)
    win = sim.win
    is_max = isinstance(sim, MaxPool2D)
    taps = win.kh * win.kw
    if not is_max and taps > MAX_AVG_TAPS:
        raise Unsupported(f"window of {taps} > {MAX_AVG_TAPS} taps (16-bit sums)")
    oy = _interior(win.oh, win.sh, win.top, win.kh, 1, g["H"])
    ox = _interior(win.ow, win.sw, win.left, win.kw, 1, g["W"])
    interior = oy[1] > oy[0] and ox[1] > ox[0]
    border = not (interior and oy == (0, win.oh) and ox == (0, win.ow))
    lo, hi = int(sim.lo), int(sim.hi)
    unsigned = dt == np.uint8
    c = g["C"]
    rem = c % 16
    if is_max:
        full, tail = [(0, 0)], [(0, rem)] if rem else []
    else:  # two vectors of eight channels: the predicated one last
        full = [(0, 0), (8, 0)]
        tail = ([(0, 0), (8, rem - 8)] if rem > 8 else [(0, 0)] if rem == 8
                else [(0, rem)] if rem else [])
    params: dict[str, Any] = dict(
        **_types(dt), **g, **_out_stage(0, lo, hi, dt), max=is_max, CFULL=c - rem,
        full_parts=full, tail_parts=tail, OPAQUE=taps > OPAQUE_TAPS["max" if is_max else "avg"],
        MAX_TAPS=MAX_AVG_TAPS, OY0=oy[0], OY1=oy[1], OX0=ox[0], OX1=ox[1], interior=interior,
        border=border, UNROLL=taps <= UNROLL_TAPS,
        FLAT=taps > FLAT_TAPS and win.kw == g["W"],
        FLAT_UNROLL=max(d for d in range(1, 33) if taps % d == 0),
        # uint8 bounds as the int8 of their bit pattern (vdupq_n_s8)
        LO8=lo - 256 if lo > 127 else lo, HI8=hi - 256 if hi > 127 else hi,
    )
    if not is_max:
        # the interior windows' constants (see templates/mve/pool.c.j2)
        params.update(M=-(-(1 << 30) // taps),
                      C4=4 * (taps // 2) + (0 if unsigned else 512 * taps),
                      E4=4 if taps % 2 == 0 else 0)
    return LayerCode(template="mve/pool.c.j2", op="maxpool" if is_max else "avgpool",
                     variant=window_tag(win.kh, win.kw, win.sh, win.sw), tile="1x16",
                     params=params)
