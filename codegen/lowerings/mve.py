"""Helium (MVE, Armv8.1-M: Cortex-M55 / M85) lowerings: CONV_2D (1x1 rows, or im2col windows)
and FULLY_CONNECTED with int8 weights as VMLADAVA dot products; DEPTHWISE_CONV_2D with output
pixels in int32 lanes.

Every constant comes from the prepared simulator kernel. The input zero point is folded into
the bias, the weights are raw int8 rows (symmetric per-channel quantization, the int8 scheme);
requantization goes through the ``qlane_requant_*_s32x4`` primitives of ``qlane_fixedpoint.h``
(`qlane.sim.simd.requantize_mve` is their lane model). Layers the kernel does not fit raise
:class:`Unsupported` with the reason, and the next ISA (the DSP kernels, then portable C) takes
over.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from qlane.sim.ops.conv import Conv2D, DepthwiseConv2D, FullyConnected

from ..lowering import Const, Context, LayerCode, Unsupported, lowering
from ..names import window_tag
from .neon import (
    _dtype,
    _fixed_requantizer,
    _geometry,
    _layer_requant,
    _out_stage,
    _pad,
    _types,
    _wrap32,
)

GEMM_CHANNELS = 4
"""Output channels per tile: one int32x4 requantization."""

GEMM_PIXELS = 2
"""Pixels per tile: each weight vector loaded once feeds this many VMLADAVA."""

GEMM_PIXELS_LONG = 3
"""Pixels per tile from `GEMM_LONG_K` input channels: two passes of 3 pixels x 2 channels, whose
six sums fit the even registers VMLADAVA accumulates in (measured on QEMU's Cortex-M55:
4x4x256->256 0.178 -> 0.161 instructions/MAC; below 128 the second pass over the inputs costs
more than it saves)."""

GEMM_LONG_K = 128

ONE_PIXEL_CHANNELS = 7
"""Channels per pass over one pixel (a classifier): each 16 inputs loaded once feed seven
VMLADAVA, whose sums fill the seven even registers r0-r12."""


def _gemm(ctx: Context, op: str, variant: str, wmat: np.ndarray, pixels: int,
          im2col: dict[str, Any] | None = None) -> LayerCode:
    """templates/mve/gemm.c.j2 over ``pixels`` rows of K int8 inputs (row stride K) and the
    [K, N] weights ``wmat`` (minus their zero point). ``im2col``: the convolution's geometry;
    the rows are then its windows, copied a batch at a time into scratch with K padded to a
    multiple of 16 (zero weights: whole chunks, no predicated tail)."""
    sim = ctx.sim
    dt = _dtype(ctx)
    if dt != np.int8:
        raise Unsupported("uint8 layer (the MVE GEMM takes the int8 scheme)")
    if sim.qw.per_axis and np.any(sim.qw.zero_point) or not sim.qw.per_axis and sim.qw.zp:
        raise Unsupported("weights with a zero point")
    req = _fixed_requantizer(sim)
    k, n = wmat.shape
    if wmat.min(initial=0) < -128 or wmat.max(initial=0) > 127:
        raise Unsupported("weights outside int8")
    zi = int(sim.qi.zp)
    # sum (x - zi) w = sum x w - zi sum w: the second term joins the bias (modulo 2^32, as the
    # kernel's int32 sums wrap); taps in the padding read zi and add nothing
    bias = _wrap32(np.asarray(req.bias, np.int64) - zi * wmat.sum(axis=0))
    k_real = k
    if im2col is not None:
        k = -(-k // 16) * 16
        wmat = np.concatenate([wmat, np.zeros((k - k_real, n), np.int64)])
    n4 = -(-n // GEMM_CHANNELS) * GEMM_CHANNELS
    kc = -(-k // 16)  # 16-byte chunks of a row, the last zero-padded
    rows = np.zeros((n4, kc * 16), np.int64)
    rows[:n, :k] = wmat.T
    # in loop order: per group of 4 channels, per chunk, the 4 channels' 16 bytes
    packed = rows.reshape(n4 // GEMM_CHANNELS, GEMM_CHANNELS, kc, 16).transpose(0, 2, 1, 3)
    wdesc = (f"weights in loop order: per 4 output channels ({n} padded to {n4}), per 16 of "
             f"the K={k_real} inputs (the last zero-padded), the 4 channels' 16 bytes")
    one = pixels == 1 and im2col is None
    if one:
        # one pixel: groups of ONE_PIXEL_CHANNELS channels (the last one smaller), each packed
        # per chunk, its channels' 16 bytes
        g = ONE_PIXEL_CHANNELS
        packed = np.concatenate([
            rows[c0:min(c0 + g, n)].reshape(-1, kc, 16).transpose(1, 0, 2).reshape(-1)
            for c0 in range(0, n, g)])
        wdesc = (f"weights in loop order: per {g} output channels (the last {n % g or g}), per "
                 f"16 of the K={k_real} inputs (the last zero-padded), the channels' 16 bytes")
    rq, rq_consts = _layer_requant(req, n4)
    consts = [
        Const("w", packed.reshape(-1).astype(np.int8), wdesc),
        Const("bias", _pad(bias, n4, 0),
              f"bias - input zero point ({zi}) x the channel's weight sum, int32 wrap"),
        *rq_consts,
    ]
    px = GEMM_PIXELS_LONG if k >= GEMM_LONG_K else GEMM_PIXELS
    params: dict[str, Any] = dict(
        **_types(dt), **_out_stage(req.zp, req.lo, req.hi, dt), rq=rq,
        K=k, K16=k // 16, KT=k % 16, KC=kc, N=n, N4=n4, NFULL=n // GEMM_CHANNELS * GEMM_CHANNELS,
        NT=n % GEMM_CHANNELS, P=pixels, PX=px, KR=k_real, im2col=im2col,
        G=ONE_PIXEL_CHANNELS if one else 0,
    )
    tile = f"{px}x{GEMM_CHANNELS}"
    if one:
        tile = f"1x{ONE_PIXEL_CHANNELS}"
    scratch = 4 * n4 if one else 0  # one pixel: the sums, then the output stage
    if im2col is not None:
        # a batch of windows: PX-pixel tiles, up to IM2COL_BYTES of rows (at least one tile)
        batch = max(1, min(IM2COL_PIXELS, IM2COL_BYTES // k) // px) * px
        params.update(PB=min(batch, pixels), ZI=zi, runs=_runs(im2col))
        scratch = params["PB"] * k + 16  # + the last 16-byte store past the last row
    return LayerCode(template="mve/gemm.c.j2", op=op, variant=variant,
                     tile=tile, params=params, consts=consts, scratch_bytes=scratch)


IM2COL_PIXELS = 24
"""Windows per im2col batch at most (then the GEMM over them)."""

IM2COL_BYTES = 4096
"""Scratch bytes of an im2col batch at most (at least one tile's windows)."""


def _runs(g: dict[str, Any]) -> list[tuple[int, int, int]]:
    """Contiguous input runs of an interior window, as (row offset, byte offset, bytes) with
    the byte offset in the window row: one per filter row when the taps touch (dilation 1),
    else one per tap."""
    c, kw, dw = g["C"], g["KW"], g["DW"]
    row = g["W"] * c
    if dw == 1:
        return [(ky * g["DH"] * row, ky * kw * c, kw * c) for ky in range(g["KH"])]
    return [(ky * g["DH"] * row + kx * dw * c, (ky * kw + kx) * c, c)
            for ky in range(g["KH"]) for kx in range(kw)]


@lowering("CONV_2D", isa="mve")
def conv2d_mve(ctx: Context) -> LayerCode:
    """CONV_2D as the GEMM: a 1x1 stride-1 convolution without padding reads every pixel's
    channels as one row; any other copies its windows (im2col), taps in the padding filled
    with the input zero point."""
    sim = ctx.sim
    assert isinstance(sim, Conv2D)
    win = sim.win
    b, _, _, _ = sim.x.shape
    return _gemm(ctx, "conv2d", window_tag(win.kh, win.kw, win.sh, win.sw, win.dh, win.dw),
                 np.asarray(sim.wmat_int, np.int64), b * win.oh * win.ow,
                 None if win.is_identity() else _geometry(sim))


@lowering("FULLY_CONNECTED", isa="mve")
def fully_connected_mve(ctx: Context) -> LayerCode:
    """FULLY_CONNECTED: each input row is one GEMM row."""
    sim = ctx.sim
    assert isinstance(sim, FullyConnected)
    wmat = np.asarray(sim.wmat_int, np.int64)
    return _gemm(ctx, "fc", f"n{sim.units}d{sim.depth}", wmat, int(sim.rows))


DW_ROWS = 4
"""Output rows per depthwise tile: the loads of the input rows they share serve all of them
(four int32x4 sums; with the filter columns' offset vectors, eight Q registers)."""

DW_OFFSET_VECTORS = 3
"""Filter widths up to this keep one gather offset vector per filter column; wider ones add the
column's offset to the row pointer."""


def _dw_loads(win: Any, rows: int, n_rows: int) -> list[tuple[int, list[tuple[int, Any]]]]:
    """Per input row of a tile: per filter column, the (output row, tap) pairs its load feeds."""
    loads = []
    for i in range(n_rows):
        per_row = []
        for kx in range(win.kw):
            uses = [(r, ky * win.kw + kx) for r in range(rows) for ky in range(win.kh)
                    if r * win.sh + ky * win.dh == i]
            if uses:
                per_row.append((kx, uses))
        loads.append((i, per_row))
    return loads


@lowering("DEPTHWISE_CONV_2D", isa="mve")
def depthwise_mve(ctx: Context) -> LayerCode:
    """Any window, stride, dilation, padding, channel count and depth multiplier, int8: four
    output pixels of one channel in int32 lanes, a gather VLDRB.S32 per input row and filter
    column, VMLA.S32 by the scalar weight into each of `DW_ROWS` output rows that use it. The
    input zero point is folded into the bias; the rows a tile reads are copied into scratch
    between zero-point columns (zero-point rows outside the image)."""
    sim = ctx.sim
    assert isinstance(sim, DepthwiseConv2D)
    dt = _dtype(ctx)
    if dt != np.int8:
        raise Unsupported("uint8 layer (the MVE depthwise kernel takes the int8 scheme)")
    g = _geometry(sim)
    c, mult = g["C"], sim.mult
    co = c * mult
    req = _fixed_requantizer(sim)
    win = sim.win
    kk = win.kh * win.kw
    taps = np.asarray(sim.wrows[:, :, :co], np.int64).reshape(kk, co)
    if taps.min(initial=0) < -128 or taps.max(initial=0) > 127:
        raise Unsupported("weights outside int8")
    zi = int(sim.qi.zp)
    bias = _wrap32(np.asarray(req.bias, np.int64) - zi * taps.sum(axis=0))
    rq, rq_consts = _layer_requant(req, co)
    rows = min(DW_ROWS, win.oh)
    n_rows = (rows - 1) * win.sh + (win.kh - 1) * win.dh + 1
    # scratch columns: every lane of a group of four reads inside the row, also past OW < 4
    wp = (max(win.ow, 4) - 1) * win.sw + (win.kw - 1) * win.dw + 1
    n_copy = min(g["W"], wp - win.left)
    if n_copy <= 0:
        raise Unsupported("left padding wider than the columns the window reads")
    offv = win.kw if win.kw <= DW_OFFSET_VECTORS else 1
    offs = [(kx * win.dw + j * win.sw) * c for kx in range(offv) for j in range(4)]
    offs += [j * co for j in range(4)]
    # two output rows' eight pixels in int16 lanes: even lanes the first row, odd the second
    row_out = win.ow * co
    pairs = rows > 1 and win.ow >= 4 and row_out + 3 * co <= 0xFFFF
    if pairs:
        so2 = [j // 2 * co + (row_out if j % 2 else 0) for j in range(8)]
        offs += np.array(so2, "<u2").view("<i4").tolist()
    # the right shifts of double rounding: all nonzero (the tie fix-up is the sign), all zero
    # (no rounding shift), or mixed (the fix-up masks by the shift)
    shift = np.broadcast_to(np.asarray(req.shift, np.int64), (co,))
    right = np.minimum(shift, 0)
    fix = "none" if not right.any() else "sign" if right.all() else "vector"
    # per channel one record (one pointer for all of a channel's constants): the taps, the
    # bias, and double rounding's multiplier, 2^left shift and right shift; single rounding
    # keeps its per-channel arrays (splat for the qlane_fixedpoint.h helpers)
    multiplier = np.broadcast_to(np.asarray(req.multiplier, np.int64), (co,))
    records = _wrap32(np.concatenate([taps.T, bias[:, None], multiplier[:, None],
                                      (1 << np.maximum(shift, 0))[:, None], right[:, None]],
                                     axis=1))
    consts = [
        Const("ch", records.reshape(-1).astype(np.int32),
              f"per channel: {kk} taps, bias - input zero point ({zi}) x the filter sum (int32 "
              "wrap), multiplier, 2^left shift, right shift (<= 0)"),
        Const("offs", np.array(offs, np.int32),
              "gather byte offsets of four pixels per filter column, then the output's (and "
              "two rows' eight, int16 pairs)"),
        *([] if rq["mode"].startswith("double") else rq_consts),
    ]
    params: dict[str, Any] = dict(
        **_types(dt), **g, **_out_stage(req.zp, req.lo, req.hi, dt), rq=rq, ZI=zi,
        CO=co, MULT=mult, KK=kk, R=rows, NR=n_rows, WP=wp, NCOPY=n_copy, OFFV=offv,
        rows=_dw_loads(win, rows, n_rows), REC=kk + 4, FIX=fix, PAIRS=pairs,
        SO_IS_OFF0=offs[:4] == offs[4 * offv:4 * offv + 4],
    )
    return LayerCode(template="mve/dwconv_px.c.j2", op="dwconv2d",
                     variant=window_tag(win.kh, win.kw, win.sh, win.sw, win.dh, win.dw),
                     tile=f"{rows}x4", params=params, consts=consts,
                     scratch_bytes=n_rows * wp * c, rows_per_pass=rows)
