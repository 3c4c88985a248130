"""CONV_2D, DEPTHWISE_CONV_2D and FULLY_CONNECTED in portable C.

Every constant comes from the prepared simulator kernel (``ctx.sim``): offset weights, biases,
multipliers, shifts, window geometry, clamps and, for ``rounding="litert"`` FULLY_CONNECTED, the
real per-channel scales. The accumulator of output channel ``o`` is
``bias[o] + sum over valid taps (x - zp_in) * (w - zp_w)``; it is rearranged so that the inner
loops multiply raw inputs:

- ``sum (x - zp_in) * (w - zp_w) = sum x * w - zp_w * sum x - zp_in * sum (w - zp_w)``.
  The last term is a constant per channel when every tap is inside the input, so it is folded
  into the bias of *interior* pixels; ``zp_w * sum x`` (uint8 filters only) is one sum per pixel
  shared by every output channel. *Border* pixels, whose windows the padding clips, skip the
  padded taps and subtract ``zp_in`` from each input they read (padded taps contribute nothing).
- Depthwise filters are stored offset, ``w - zp_w`` (int16 for uint8), since a depthwise tap
  serves one channel only.

The sum is kept in int32 when a bound on every partial sum proves it cannot overflow, otherwise in
int64 and wrapped to int32 at the end, which is what TFLite's int32 arithmetic gives.

Loops: per sample, output row, then output pixel (border pixels first and last in a row, called
out to a clipped helper; interior pixels inline with constant bounds), then blocks of output
channels whose accumulators stay in registers. The tile ``RxT`` is R pixels by T channels:
CONV_2D 2x4 (1x4 on M-profile cores) with weights packed per block as [kh][kw][in][4], so one
pointer streams them; FULLY_CONNECTED the same over rows; DEPTHWISE_CONV_2D 1x8 (1x4) over the
natural [kh][kw][out] filter. Channel counts that are not a multiple of T end with one shorter
block, unrolled for its size.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from qlane.sim.fixedpoint import INT32_MAX, dtype_range
from qlane.sim.ops.conv import Conv2D, DepthwiseConv2D, FullyConnected, Window
from qlane.sim.requant import RequantPlan

from ..lowering import Const, Context, LayerCode, Unsupported, lowering
from ..names import window_tag
from .common import ctype

CONV_CHANNELS = 4
"""Output channels per inner pass of CONV_2D and FULLY_CONNECTED (packed weight blocks)."""


def is_m_profile(ctx: Context) -> bool:
    """Cortex-M class target: few registers, so one output row per inner pass."""
    return ctx.target.m_profile


def window_params(win: Window, h: int, w: int) -> dict[str, Any]:
    """Geometry plus the interior ranges: output rows/columns whose window lies in the input."""

    def interior(n_out: int, stride: int, pad: int, k: int, dil: int, size: int
                 ) -> tuple[int, int]:
        inside = [o for o in range(n_out)
                  if o * stride - pad >= 0 and o * stride - pad + (k - 1) * dil <= size - 1]
        return (inside[0], inside[-1] + 1) if inside else (0, 0)

    oy_lo, oy_hi = interior(win.oh, win.sh, win.top, win.kh, win.dh, h)
    ox_lo, ox_hi = interior(win.ow, win.sw, win.left, win.kw, win.dw, w)
    border = (oy_lo, oy_hi, ox_lo, ox_hi) != (0, win.oh, 0, win.ow)
    return dict(H=h, W=w, OH=win.oh, OW=win.ow, KH=win.kh, KW=win.kw, SH=win.sh, SW=win.sw,
                DH=win.dh, DW=win.dw, TOP=win.top, LEFT=win.left, oy_lo=oy_lo, oy_hi=oy_hi,
                ox_lo=ox_lo, ox_hi=ox_hi, border=border,
                interior=oy_hi > oy_lo and ox_hi > ox_lo)


def _uniform(v: np.ndarray) -> bool:
    return bool(v.size == 0 or np.all(v == v.reshape(-1)[0]))


def requant_params(sim: Conv2D | DepthwiseConv2D | FullyConnected, n: int, abound: int
                   ) -> tuple[dict[str, Any], list[Const]]:
    """How the layer turns an int32 sum ``a`` (``|a| <= abound``) into an output.

    Reads ``sim.requant``: its rounding (the uint8 depthwise kernel keeps double rounding under
    "single"), its kind ("float" for LiteRT FULLY_CONNECTED) and its plan: the ``folded`` form
    of `qlane.sim.requant` (one 64-bit multiply, add and shift) while ``a * 2^l`` cannot wrap,
    else the ``reference`` form (``qlane_requant_double``). The C keeps the sign term of the
    folded form under ReLU-like clamps too.
    """
    rq = sim.requant
    zp, lo, hi = int(sim.qo.zp), int(sim.lo), int(sim.hi)
    q: dict[str, Any] = dict(zp=zp, lo=lo, hi=hi, lo_r=lo - zp, hi_r=hi - zp, kind=rq.kind)
    consts: list[Const] = []
    if rq.kind == "float":
        scale = np.broadcast_to(np.asarray(rq.real_scale, np.float64), (n,))
        q["per_channel"] = not _uniform(scale)
        q["scales"] = [float(v).hex() for v in (scale if q["per_channel"] else scale[:1])]
        return q, consts
    plan = RequantPlan(sim.multiplier, sim.shift, zp, lo, hi, rq.rounding, bound=abound,
                       channels=n)
    m, s = plan.multiplier, plan.shift
    assert np.all(m >= 0) and np.all(m < 2**31) and np.all(s >= -31) and np.all(s <= 31)
    folded = plan.folded(ties_up=False)
    single = rq.rounding == "single"
    q["kind"] = "single" if single else "double" if folded is not None else "gemmlowp"
    q["per_channel"] = not plan.uniform
    q["m"], q["s"] = int(m[0]), int(s[0])
    if folded is not None:
        q["ml"], q["k"], q["c"], q["d"] = (int(folded.m[0]), int(folded.k[0]),
                                           int(folded.c[0]), int(folded.d[0]))
    if q["per_channel"]:
        consts += [Const("m", m.astype(np.int32), "Q31 multiplier per output channel"),
                   Const("s", s.astype(np.int32), "power-of-two shift per output channel")]
    return q, consts


def acc_type(bound: int) -> str:
    """int32 when no partial sum can leave int32, int64 (wrapped at the end) otherwise."""
    return "int32_t" if bound <= INT32_MAX else "int64_t"


def sum_bound(bias: np.ndarray, woff: np.ndarray, dtype: np.dtype, zpi: int, acc: str) -> int:
    """Bound on ``|bias + sum (x - zp_in) * (w - zp_w)|`` as the int32 the requantizer gets
    (``woff``: [channels, taps]); any int32 when the sum may wrap."""
    if acc != "int32_t":
        return 2**31
    lo, hi = dtype_range(dtype)
    xoff = max(abs(lo - zpi), abs(hi - zpi))
    return int(np.max(np.abs(bias) + xoff * np.abs(woff).sum(axis=1), initial=0))


def input_extent(dtype: np.dtype, zp: int, offset_too: bool = True) -> int:
    """Largest ``|x|`` (and ``|x - zp|`` if ``offset_too``) of an input value."""
    lo, hi = dtype_range(dtype)
    ext = max(abs(lo), abs(hi))
    if offset_too:
        ext = max(ext, abs(lo - zp), abs(hi - zp))
    return ext


def bias_const(name: str, values: np.ndarray, wide: bool, comment: str) -> Const:
    return Const(name, values.astype(np.int64 if wide else np.int32), comment)


def bias_consts(bias: np.ndarray, bias_in: np.ndarray, wide: bool, geo: dict[str, Any]
                ) -> list[Const]:
    """The biases a windowed layer needs: folded for interior pixels, plain for border ones."""
    out = []
    if geo["interior"]:
        out.append(bias_const("bi", bias_in, wide,
                              "bias - zp_in * sum(w - zp_w): interior pixels"))
    if geo["border"]:
        out.append(bias_const("bb", bias, wide, "bias: border pixels"))
    return out


def pack_blocks(w: np.ndarray, block: int) -> np.ndarray:
    """[n, k] -> blocks of ``block`` rows (the last one shorter), each stored [k][block]."""
    n = w.shape[0]
    parts = [w[o0:o0 + block].T.reshape(-1) for o0 in range(0, n, block)]
    return np.concatenate(parts) if parts else w.reshape(-1)


def block_plan(n: int, block: int) -> dict[str, int]:
    """Full blocks of ``block`` channels, then a tail of ``n % block``."""
    return dict(TC=block, n_full=n - n % block, tail=n % block)


# --------------------------------------------------------------------------------------------
# CONV_2D


@lowering("CONV_2D", isa="c")
def conv2d_c(ctx: Context) -> LayerCode:
    sim = ctx.sim
    assert isinstance(sim, Conv2D)
    x, w_t = sim.x, sim.w
    b, h, wd, cin = x.shape
    n_out, kh, kw, _ = w_t.shape
    zpi, zpw = int(sim.qi.zp), int(sim.qw.zp) if not sim.qw.per_axis else 0
    geo = window_params(sim.win, h, wd)
    wraw = np.asarray(w_t.data).reshape(n_out, kh * kw * cin)
    k = kh * kw * cin
    woff = wraw.astype(np.int64) - zpw
    bias = sim.bias.astype(np.int64)
    bias_in = bias - zpi * woff.sum(axis=1)
    xr = input_extent(sim.dtype, zpi)
    bound = int(np.max(np.maximum(np.abs(bias), np.abs(bias_in))
                       + xr * np.abs(wraw.astype(np.int64)).sum(axis=1)
                       + abs(zpw) * k * xr, initial=0))
    acc = acc_type(bound)
    wide = acc == "int64_t"
    tc = CONV_CHANNELS
    rows = 1 if is_m_profile(ctx) else 2
    q, consts = requant_params(sim, n_out, sum_bound(bias, woff, sim.dtype, zpi, acc))
    consts = [Const("w", pack_blocks(wraw, tc),
                    f"filter in blocks of {tc} output channels, each [kh][kw][in][{tc}]"),
              *bias_consts(bias, bias_in, wide, geo), *consts]
    params = dict(T=ctype(sim.dtype), WT=ctype(wraw.dtype), ACC=acc, wide=wide, B=b, C=cin,
                  OC=n_out, K=k, zpi=zpi, zpw=zpw, R=rows, q=q, **geo,
                  **block_plan(n_out, tc))
    variant = window_tag(kh, kw, sim.win.sh, sim.win.sw, sim.win.dh, sim.win.dw)
    return LayerCode(template="c/conv2d.c.j2", op="conv2d", variant=variant, tile=f"{rows}x{tc}",
                  params=params, consts=consts)


# --------------------------------------------------------------------------------------------
# DEPTHWISE_CONV_2D


@lowering("DEPTHWISE_CONV_2D", isa="c")
def dwconv2d_c(ctx: Context) -> LayerCode:
    sim = ctx.sim
    assert isinstance(sim, DepthwiseConv2D)
    b, h, wd, cin = sim.x.shape
    _, kh, kw, n_out = sim.w.shape
    zpi, zpw = int(sim.qi.zp), int(sim.qw.zp) if not sim.qw.per_axis else 0
    geo = window_params(sim.win, h, wd)
    wraw = np.asarray(sim.w.data).reshape(kh * kw, n_out)
    woff = wraw.astype(np.int64) - zpw
    wdt = wraw.dtype if zpw == 0 else np.dtype(np.int16)
    bias = sim.bias.astype(np.int64)
    bias_in = bias - zpi * woff.sum(axis=0)
    xr = input_extent(sim.dtype, zpi)
    bound = int(np.max(np.maximum(np.abs(bias), np.abs(bias_in))
                       + xr * np.abs(woff).sum(axis=0), initial=0))
    acc = acc_type(bound)
    wide = acc == "int64_t"
    tc = 4 if is_m_profile(ctx) else 8
    q, consts = requant_params(sim, n_out, sum_bound(bias, woff.T, sim.dtype, zpi, acc))
    consts = [Const("w", woff.astype(wdt), "filter - zp_w, [kh][kw][out]"),
              *bias_consts(bias, bias_in, wide, geo), *consts]
    params = dict(T=ctype(sim.dtype), WT=ctype(wdt), ACC=acc, wide=wide, B=b, C=cin, OC=n_out,
                  M=sim.mult, zpi=zpi, q=q, **geo, **block_plan(n_out, tc))
    variant = (window_tag(kh, kw, sim.win.sh, sim.win.sw, sim.win.dh, sim.win.dw)
               + (f"m{sim.mult}" if sim.mult > 1 else ""))
    return LayerCode(template="c/dwconv2d.c.j2", op="dwconv2d", variant=variant, tile=f"1x{tc}",
                  params=params, consts=consts, rows_per_pass=1)


# --------------------------------------------------------------------------------------------
# FULLY_CONNECTED


@lowering("FULLY_CONNECTED", isa="c")
def fc_c(ctx: Context) -> LayerCode:
    sim = ctx.sim
    assert isinstance(sim, FullyConnected)
    if len(ctx.activations) != 1:
        raise Unsupported("FULLY_CONNECTED with non-constant weights or bias")
    rows, depth, units = sim.rows, sim.depth, sim.units
    zpi = int(sim.qi.zp)
    zpw = 0 if sim.qw.per_axis else int(sim.qw.zp)
    wraw = np.asarray(sim.w.data).reshape(units, depth)
    bias = sim.bias.astype(np.int64)
    bias_f = bias - zpi * (wraw.astype(np.int64) - zpw).sum(axis=1)
    xr = input_extent(sim.dtype, zpi, offset_too=False)
    bound = int(np.max(np.abs(bias_f) + xr * np.abs(wraw.astype(np.int64)).sum(axis=1)
                       + abs(zpw) * depth * xr, initial=0))
    acc = acc_type(bound)
    wide = acc == "int64_t"
    tc = CONV_CHANNELS
    r = 1 if is_m_profile(ctx) or rows == 1 else 2
    woff = wraw.astype(np.int64) - zpw
    q, consts = requant_params(sim, units, sum_bound(bias, woff, sim.dtype, zpi, acc))
    consts = [Const("w", pack_blocks(wraw, tc),
                    f"weights in blocks of {tc} units, each [depth][{tc}]"),
              bias_const("bi", bias_f, wide, "bias - zp_in * sum(w - zp_w)"), *consts]
    params = dict(T=ctype(sim.dtype), WT=ctype(wraw.dtype), ACC=acc, wide=wide, rows=rows,
                  depth=depth, OC=units, zpw=zpw, R=r, q=q, **block_plan(units, tc))
    return LayerCode(template="c/fc.c.j2", op="fc", variant=f"d{depth}n{units}", tile=f"{r}x{tc}",
                  params=params, consts=consts)
