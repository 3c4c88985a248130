"""NEON (AArch64 Advanced SIMD) lowerings: CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED, ADD/SUB
and the two pools.

Every constant comes from the prepared simulator kernel (``ctx.sim``): folded weights, biases,
multipliers, shifts, clamps and the rounding its requantizer uses. Requantization goes through the
``qlane_requant_*_s32x4`` primitives of ``qlane_fixedpoint.h``. Layers a kernel does not fit raise
:class:`Unsupported` with the reason, and the portable C lowering takes over.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from qlane.sim.fixedpoint import ties_up_exact
from qlane.sim.ops.conv import Conv2D, DepthwiseConv2D, FullyConnected, Requantizer, Window
from qlane.sim.ops.elementwise import ADD_LEFT_SHIFT, AddSub
from qlane.sim.ops.pool import AveragePool2D, MaxPool2D
from qlane.sim.requant import RequantPlan

from ..lowering import Const, Context, LayerCode, Unsupported, lowering
from ..names import window_tag
from .common import ctype

DOT_MAX_PIXELS = 4
"""1x1 convolutions over fewer pixels than this use the dot-product (FULLY_CONNECTED) kernel."""

MAX_POOL_TAPS = 256
"""Largest average-pool window: 256 8-bit values still sum exactly in 16-bit lanes."""


# --------------------------------------------------------------------------------------------
# Shared helpers


def _wrap32(v: Any) -> np.ndarray:
    """int64 values wrapped to int32 (two's complement), as C's modular int32 arithmetic."""
    a = np.asarray(v, np.int64)
    return (((a + 2**31) % 2**32) - 2**31).astype(np.int32)


def _pad(a: np.ndarray, n: int, value: int | None = None) -> np.ndarray:
    """``a`` (1-D) padded to ``n`` entries: with ``value``, else by repeating its last entry."""
    extra = n - a.size
    if extra <= 0:
        return a
    if value is None:
        return np.pad(a, (0, extra), mode="edge")
    return np.pad(a, (0, extra), constant_values=value)


def _dtype(ctx: Context) -> np.dtype:
    """The layer's 8-bit dtype (activations and output agree)."""
    dt = np.dtype(ctx.outputs[0].dtype)
    if dt.name not in ("uint8", "int8"):
        raise Unsupported(f"{dt.name} output (uint8 or int8 expected)")
    for t in ctx.activations:
        if np.dtype(t.dtype) != dt:
            raise Unsupported("input and output dtypes differ")
    return dt


def _types(dt: np.dtype) -> dict[str, Any]:
    """C spellings of one 8-bit dtype for the templates."""
    u = dt == np.uint8
    return {"T": ctype(dt), "sfx": "u8" if u else "s8", "V8": "uint8x8_t" if u else "int8x8_t",
            "V16": "uint8x16_t" if u else "int8x16_t", "unsigned": bool(u)}


def _out_stage(zp: int, lo: int, hi: int, dt: np.dtype) -> dict[str, Any]:
    """Output zero point and activation clamp; full-range bounds are left out."""
    full_lo, full_hi = (0, 255) if dt == np.uint8 else (-128, 127)
    return {"zo": int(zp), "lo": int(lo), "hi": int(hi), "clamp_lo": int(lo) > full_lo,
            "clamp_hi": int(hi) < full_hi}


def _requant(mult: Any, shift: Any, rounding: str, n_pad: int, name: str = "rq",
             floor: bool = False) -> tuple[dict[str, Any], list[Const]]:
    """Requantization constants of the ``lanes`` form (`qlane.sim.requant.Lanes`): mode,
    per-tensor literals or per-channel arrays (padded). ``floor``: the output is clamped at or
    above its zero point, so the ``double_up`` mode (no tie fix-up) is exact."""
    m = np.atleast_1d(np.asarray(mult, np.int64))
    plan = RequantPlan(m, np.broadcast_to(np.asarray(shift, np.int64), m.shape), 0, 0, 0,
                       rounding)
    try:
        lanes = plan.lanes(ties_up=floor)
    except ValueError as e:
        raise Unsupported(str(e)) from None
    mode, a, b = lanes.mode, lanes.left, lanes.right
    uniform = plan.uniform
    double = mode.startswith("double")
    left = lanes.needs_left
    params = {"mode": mode, "pc": not uniform, "name": name, "left": left,
              "m": int(m[0]), "a": int(a[0]), "b": int(b[0])}
    consts = []
    if not uniform:
        arrays = [("m", m, "multipliers")]
        if left:
            arrays.append(("a", a, "left shifts" if double else "shifts"))
        if double:
            arrays.append(("b", b, "right shifts (<= 0)"))
        for key, arr, what in arrays:
            consts.append(Const(f"{name}{key}", _pad(arr, n_pad).astype(np.int32),
                                f"per-channel requantization {what}"))
    return params, consts


def _layer_requant(req: Requantizer, n_pad: int) -> tuple[dict[str, Any], list[Const]]:
    """:func:`_requant` of a conv / FC requantizer; no tie fix-up where its clamp allows."""
    return _requant(req.multiplier, req.shift, req.rounding, n_pad, floor=req.plan.ties_up)


def _fixed_requantizer(sim: Any) -> Requantizer:
    """The simulator's fixed-point requantizer (float requantization has no NEON kernel)."""
    req = sim.requant
    if req.kind != "fixed":
        raise Unsupported("float requantization (rounding 'litert' FULLY_CONNECTED)")
    return req


def _window_variant(win: Window) -> str:
    """Symbol variant of a window (names.window_tag)."""
    return window_tag(win.kh, win.kw, win.sh, win.sw, win.dh, win.dw)


def _geometry(sim: Any) -> dict[str, int]:
    """Input shape and window of a windowed operator, as template parameters."""
    win: Window = sim.win
    b, h, w, c = sim.x.shape
    return {"B": int(b), "H": int(h), "W": int(w), "C": int(c), "KH": win.kh, "KW": win.kw,
            "SH": win.sh, "SW": win.sw, "DH": win.dh, "DW": win.dw, "TOP": win.top,
            "LEFT": win.left, "OH": win.oh, "OW": win.ow}


def _interior(out: int, stride: int, pad: int, k: int, dil: int, size: int) -> tuple[int, int]:
    """Output positions [lo, hi) whose whole window lies inside the input (hi = lo if none)."""
    ok = [o for o in range(out) if o * stride - pad >= 0
          and o * stride - pad + (k - 1) * dil < size]
    return (ok[0], ok[-1] + 1) if ok else (0, 0)


def _channel_groups(c: int) -> dict[str, int]:
    """How channels map to lanes: 16-lane groups, one 8-lane group, then the last c % 8.

    The last few channels are an 8-lane group overlapping the previous one (same values written
    twice) when c >= 8, or a partial group loaded and stored through a small buffer when c < 8.
    """
    c16 = c // 16 * 16
    return {"C16": c16, "G8": int(c - c16 >= 8), "REM": c % 8, "OVERLAP": int(c % 8 > 0 and c >= 8)}


# --------------------------------------------------------------------------------------------
# CONV_2D: (im2col +) GEMM, several pixels x several output channels per pass


@lowering("CONV_2D", isa="neon")
def conv2d_neon(ctx: Context) -> LayerCode:
    """CONV_2D as a GEMM: MR pixels x NR output channels, VMLAL.S16 by lane into int32."""
    sim = ctx.sim
    assert isinstance(sim, Conv2D)
    dt = _dtype(ctx)
    req = _fixed_requantizer(sim)
    g = _geometry(sim)
    win: Window = sim.win
    wmat = np.asarray(sim.wmat_int, np.int64)  # [K, N] = filter - its zero point
    k, n = wmat.shape
    zw = int(sim.qw.zp) if dt == np.uint8 else 0
    m_total = g["B"] * g["OH"] * g["OW"]
    if win.is_identity() and m_total < DOT_MAX_PIXELS:
        # a few pixels (a classifier on a 1x1 map): dot products along the depth instead
        params, consts = _dot_products(dt, wmat, zw, int(sim.qi.zp), req, m_total)
        return LayerCode(template="neon/fc.c.j2", op="conv2d", variant=_window_variant(win),
                      tile="1x8", params=params, consts=consts)
    raw = wmat + zw
    lo_w, hi_w = (0, 255) if dt == np.uint8 else (-128, 127)
    if raw.min(initial=0) < lo_w or raw.max(initial=0) > hi_w:
        raise Unsupported("folded filter does not fit 8 bits")
    nr = 16 if n % 16 == 0 else 8
    mr = 4 if nr == 16 else 8
    nb = -(-n // nr)
    kp = -(-k // 8) * 8
    packed = np.full((nb * nr, kp), zw, np.int64)  # padding: filter zero point = weight 0
    packed[:n, :k] = raw.T
    packed = packed.reshape(nb, nr, kp).transpose(0, 2, 1)  # [NB][KP][NR]
    zi = int(sim.qi.zp)
    bias = _wrap32(np.asarray(req.bias, np.int64) - zi * wmat.sum(axis=0))
    rq, rq_consts = _layer_requant(req, nb * nr)
    direct = win.kh == 1 and win.kw == 1 and win.top == 0 and win.left == 0
    consts = [
        Const("w", packed.reshape(-1).astype(dt),
              f"filter packed [{nb} blocks][K={k} padded to {kp}][{nr} channels]"),
        Const("bias", _pad(bias, nb * nr, 0),
              f"bias - input zero point ({zi}) x filter column sums, int32 wrap"),
        *rq_consts,
    ]
    params = dict(
        **_types(dt), **g, **_out_stage(req.zp, req.lo, req.hi, dt), rq=rq,
        K=k, N=n, NR=nr, MR=mr, M=m_total, MFULL=m_total // mr * mr, MTAIL=m_total % mr,
        NFULL=n // nr * nr, NTAIL=n % nr, KB=k // 8, KR=k % 8, KP=kp, ZW=zw, ZB=zi & 0xFF,
        direct=direct,
    )
    return LayerCode(template="neon/conv2d.c.j2", op="conv2d", variant=_window_variant(win),
                  tile=f"{mr}x{nr}", params=params, consts=consts,
                  scratch_bytes=0 if direct else mr * k)


# --------------------------------------------------------------------------------------------
# DEPTHWISE_CONV_2D: channels in lanes


RING_REGISTERS = 28
"""Vector registers a row-ring block may keep live: accumulators + one filter row + inputs."""


def _row_runs(win: Window, h: int) -> list[tuple[int, int, tuple[int, ...]]]:
    """Runs of output rows [start, end) whose windows use the same filter rows inside the input."""
    runs: list[tuple[int, int, tuple[int, ...]]] = []
    for oy in range(win.oh):
        kys = tuple(ky for ky in range(win.kh) if 0 <= oy * win.sh - win.top + ky * win.dh < h)
        if runs and runs[-1][2] == kys:
            runs[-1] = (runs[-1][0], oy + 1, kys)
        else:
            runs.append((oy, oy + 1, kys))
    return runs


def _ring_columns(win: Window, n: int) -> list[tuple[int, list[tuple[int, int]]]]:
    """For a pass of ``n`` pixels: each ring column it reads, with the (pixel, kx) taps using it."""
    uses: dict[int, list[tuple[int, int]]] = {}
    for i in range(n):
        for kx in range(win.kw):
            uses.setdefault(i * win.sw + kx * win.dw, []).append((i, kx))
    return sorted(uses.items())


def _depthwise_rows(sim: DepthwiseConv2D, dt: np.dtype, req: Requantizer) -> LayerCode:
    """Channels a multiple of 8: a ring of widened, zero-padded input rows in the scratch buffer.

    Each input row is widened to int16 minus its zero point once, into a ring slot laid out
    channel group by channel group, with zero columns for the left and right padding. A pass
    then computes ``N`` neighbouring output pixels of one channel group; every input vector it
    loads feeds all the taps that use it. Filter rows outside the input are left out per run
    of output rows at generation, so nothing reads padding rows.
    """
    g = _geometry(sim)
    win: Window = sim.win
    c = g["C"]
    groups = [(c0, 16) for c0 in range(0, c // 16 * 16, 16)] + ([(c // 16 * 16, 8)] if c % 16
                                                                 else [])
    lanes = groups[0][1]
    n = 1
    for cand in (8, 4, 2, 1):
        if cand * lanes // 4 + win.kw * lanes // 8 + 2 * lanes // 8 <= RING_REGISTERS:
            n = cand
            break
    n = max(1, min(n, win.ow))
    wp = max(win.left + g["W"], (win.ow - 1) * win.sw + (win.kw - 1) * win.dw + 1)
    slots = (win.kh - 1) * win.dh + 1
    taps = np.asarray(sim.wrows[:, :, :c], np.int64).reshape(win.kh * win.kw, c)
    packed = np.concatenate([taps[:, c0:c0 + ln].reshape(-1) for c0, ln in groups])
    rq, rq_consts = _layer_requant(req, c)
    consts = [
        Const("w", packed.astype(np.int16), f"filter - zero point, int16, per channel group "
                                            f"[{win.kh * win.kw} taps][group lanes]"),
        Const("bias", _wrap32(req.bias), "bias"),
        *rq_consts,
    ]
    params = dict(
        **_types(dt), **g, **_out_stage(req.zp, req.lo, req.hi, dt), rq=rq, ZI=int(sim.qi.zp),
        C16=c // 16 * 16, C8=int(c % 16 == 8), NB=n, WP=wp, SLOTS=slots, ROW=wp * c,
        runs=_row_runs(win, g["H"]), cols={k: _ring_columns(win, k) for k in {n, win.ow % n}},
    )
    return LayerCode(template="neon/dwconv2d_rows.c.j2", op="dwconv2d",
                  variant=_window_variant(win), tile=f"{n}x{lanes}", params=params,
                  consts=consts, scratch_bytes=slots * wp * c * 2, rows_per_pass=1)


@lowering("DEPTHWISE_CONV_2D", isa="neon")
def depthwise_neon(ctx: Context) -> LayerCode:
    """Depth multiplier 1, taps accumulated with VMLAL.S16: the row ring when the channels are a
    multiple of 8, else one pixel x 16 channels per pass straight from the input."""
    sim = ctx.sim
    assert isinstance(sim, DepthwiseConv2D)
    dt = _dtype(ctx)
    if sim.mult != 1:
        raise Unsupported(f"depth multiplier {sim.mult} (only 1)")
    req = _fixed_requantizer(sim)
    if sim.x.shape[3] % 8 == 0:
        return _depthwise_rows(sim, dt, req)
    g = _geometry(sim)
    win: Window = sim.win
    c = g["C"]
    cs = max(c, 8)
    taps = np.asarray(sim.wrows[:, :, :c], np.int64).reshape(win.kh * win.kw, c)
    weights = np.zeros((win.kh * win.kw, cs), np.int16)
    weights[:, :c] = taps
    rq, rq_consts = _layer_requant(req, cs)
    oy = _interior(win.oh, win.sh, win.top, win.kh, win.dh, g["H"])
    ox = _interior(win.ow, win.sw, win.left, win.kw, win.dw, g["W"])
    interior = oy[1] > oy[0] and ox[1] > ox[0]
    border = not (interior and oy == (0, win.oh) and ox == (0, win.ow))
    consts = [
        Const("w", weights.reshape(-1), f"filter - zero point, int16 [{win.kh * win.kw} taps]"
                                        f"[{cs} channels]"),
        Const("bias", _pad(_wrap32(req.bias), cs, 0), "bias"),
        *rq_consts,
    ]
    taplist = [(ky, kx) for ky in range(win.kh) for kx in range(win.kw)]
    params = dict(
        **_types(dt), **g, **_out_stage(req.zp, req.lo, req.hi, dt), **_channel_groups(c),
        rq=rq, CS=cs, ZI=int(sim.qi.zp), OY0=oy[0], OY1=oy[1], OX0=ox[0], OX1=ox[1],
        interior=interior, border=border, taps=taplist,
    )
    lanes = 16 if c >= 16 else 8
    return LayerCode(template="neon/dwconv2d.c.j2", op="dwconv2d", variant=_window_variant(win),
                  tile=f"1x{lanes}", params=params, consts=consts, rows_per_pass=1)


# --------------------------------------------------------------------------------------------
# FULLY_CONNECTED: dot products along the depth, eight output units per pass


def _dot_products(dt: np.dtype, wmat: np.ndarray, zw: int, zi: int, req: Requantizer,
                  rows: int) -> tuple[dict[str, Any], list[Const]]:
    """Parameters and constants of neon/fc.c.j2: ``rows`` x depth times depth x units.

    ``wmat`` [depth, units] holds weights minus their zero point ``zw``. The kernel multiplies
    raw 8-bit values; ``-zi * sum(w) + depth * zi * zw`` is folded into the bias and
    ``-zw * sum(x)`` is applied per row.
    """
    k, n = wmat.shape
    raw = (wmat + zw).T  # [units, depth]
    lo_w, hi_w = (0, 255) if dt == np.uint8 else (-128, 127)
    if raw.min(initial=0) < lo_w or raw.max(initial=0) > hi_w:
        raise Unsupported("folded weights do not fit 8 bits")
    ub = -(-n // 8)
    k16 = k // 16
    k8 = -(-(k - 16 * k16) // 8)
    kp = 16 * k16 + 8 * k8
    w = np.zeros((ub * 8, kp), np.int64)
    w[:n, :k] = raw
    w = w.reshape(ub, 8, kp)
    blocks = [w[:, :, 16 * i:16 * i + 16].reshape(ub, -1) for i in range(k16)]
    blocks += [w[:, :, 16 * k16 + 8 * i:16 * k16 + 8 * i + 8].reshape(ub, -1) for i in range(k8)]
    packed = np.concatenate(blocks, axis=1)
    # sum (x - zi)(w - zw) = sum x w - zw sum x - zi sum w + k zi zw
    fold = -zi * raw.sum(axis=1) + k * zi * zw
    bias = _wrap32(np.asarray(req.bias, np.int64) + fold)
    # int8: two products share one int16 lane unless a weight is -128 (|x w| <= 128 * 127)
    pair = bool(dt == np.int8 and raw.min(initial=0) >= -127)
    rq, rq_consts = _layer_requant(req, ub * 8)
    consts = [
        Const("w", packed.reshape(-1).astype(dt),
              f"weights packed [{ub} blocks of 8 units][depth chunks of 16, then 8][8 units]"),
        Const("bias", _pad(bias, ub * 8, 0), "bias with zero-point terms folded, int32 wrap"),
        *rq_consts,
    ]
    params = dict(
        **_types(dt), **_out_stage(req.zp, req.lo, req.hi, dt), rq=rq,
        ROWS=rows, K=k, N=n, UB=ub, NFULL=n // 8 * 8, NTAIL=n % 8, K16=k16, K8=k8,
        KLAST=k - 16 * k16 - 8 * (k8 - 1) if k8 else 0, ZW=zw, pair=pair,
    )
    return params, consts


@lowering("FULLY_CONNECTED", isa="neon")
def fully_connected_neon(ctx: Context) -> LayerCode:
    """Depth in lanes: VMULL/VMLAL of 8-bit values, VPADAL into int32, eight units per pass."""
    sim = ctx.sim
    assert isinstance(sim, FullyConnected)
    dt = _dtype(ctx)
    req = _fixed_requantizer(sim)
    wmat = np.asarray(sim.wmat_int, np.int64)  # [depth, units] = weights - zero point
    zw = 0 if sim.qw.per_axis else int(sim.qw.zp)
    params, consts = _dot_products(dt, wmat, zw, int(sim.qi.zp), req, int(sim.rows))
    k, n = wmat.shape
    return LayerCode(template="neon/fc.c.j2", op="fc", variant=f"k{k}n{n}", tile="1x8",
                  params=params, consts=consts)


# --------------------------------------------------------------------------------------------
# ADD / SUB: same shapes, staged requantization eight lanes at a time


@lowering("ADD", "SUB", isa="neon")
def add_sub_neon(ctx: Context) -> LayerCode:
    """Elementwise ADD/SUB of two same-shape tensors (no broadcast, no constant operand)."""
    sim = ctx.sim
    assert isinstance(sim, AddSub)
    dt = _dtype(ctx)
    a, b = ctx.inputs
    out = ctx.outputs[0]
    if a.is_constant or b.is_constant:
        raise Unsupported("constant operand")
    if tuple(a.shape) != tuple(out.shape) or tuple(b.shape) != tuple(out.shape):
        raise Unsupported("broadcasting")
    rnd = ctx.rounding
    rq1, _ = _requant(sim.in_mult[0][0], sim.in_mult[0][1], rnd, 1, "r1")
    rq2, _ = _requant(sim.in_mult[1][0], sim.in_mult[1][1], rnd, 1, "r2")
    rqo, _ = _requant(sim.out_mult[0], sim.out_mult[1], rnd, 1, "ro",
                      floor=ties_up_exact(sim.act_min, sim.out_zp))
    count = int(out.size)
    params = dict(
        **_types(dt), **_out_stage(sim.out_zp, sim.act_min, sim.act_max, dt),
        rq1=rq1, rq2=rq2, rqo=rqo, Z1=int(sim.in_zp[0]), Z2=int(sim.in_zp[1]),
        LEFT_SHIFT=ADD_LEFT_SHIFT, COUNT=count, NFULL=count // 8 * 8, NTAIL=count % 8,
    )
    op = "add" if ctx.op.opcode == "ADD" else "sub"
    return LayerCode(template="neon/add.c.j2", op=op, variant=f"n{count}", tile="1x8",
                  params=params)


# --------------------------------------------------------------------------------------------
# AVERAGE_POOL_2D / MAX_POOL_2D: channels in lanes


def _div_magic(n: int, vmax: int) -> tuple[int, int]:
    """(m, s) with floor(v * m / 2^s) == v // n and v * m < 2^32 for every 0 <= v <= vmax."""
    v = np.arange(vmax + 1, dtype=np.uint64)
    want = v // np.uint64(n)
    for s in range(31, -1, -1):
        m = -(-(1 << s) // n)
        if m * vmax >= 2**32:
            continue
        if np.array_equal((v * np.uint64(m)) >> np.uint64(s), want):
            return m, s
    raise Unsupported(f"no 32-bit reciprocal for a window of {n}")


@lowering("AVERAGE_POOL_2D", "MAX_POOL_2D", isa="neon")
def pool_neon(ctx: Context) -> LayerCode:
    """Pools with 16 channels per vector; windows clipped to the input, per-pixel counts."""
    sim = ctx.sim
    assert isinstance(sim, AveragePool2D | MaxPool2D)
    dt = _dtype(ctx)
    g = _geometry(sim)
    win: Window = sim.win
    avg = isinstance(sim, AveragePool2D)
    consts = []
    if avg:
        taps = win.kh * win.kw
        if taps > MAX_POOL_TAPS:
            raise Unsupported(f"window of {taps} > {MAX_POOL_TAPS} taps")
        top = 255 if dt == np.uint8 else 128
        magic = [(1, 0)] + [_div_magic(n, top * n + n // 2) for n in range(1, taps + 1)]
        consts = [Const("divm", np.array([m for m, _ in magic], np.uint32),
                        "reciprocal multipliers of the window counts 0..n"),
                  Const("divs", np.array([-s for _, s in magic], np.int32),
                        "minus the reciprocal shifts")]
    lo, hi = int(sim.lo), int(sim.hi)
    params = dict(**_types(dt), **g, **_out_stage(0, lo, hi, dt), **_channel_groups(g["C"]),
                  avg=avg, LOWEST=0 if dt == np.uint8 else -128)
    lanes = 16 if g["C"] >= 16 else 8
    return LayerCode(template="neon/pool.c.j2", op="avgpool" if avg else "maxpool",
                  variant=_window_variant(win), tile=f"1x{lanes}", params=params, consts=consts)
