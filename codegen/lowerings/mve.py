"""Helium (MVE, Armv8.1-M: Cortex-M55 / M85) lowerings: CONV_2D (1x1 rows, or im2col windows)
and FULLY_CONNECTED with int8 weights as VMLADAVA dot products; DEPTHWISE_CONV_2D with channels
in int32 lanes.

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
    _interior,
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


DW_CHANNELS = 4
"""Channels per depthwise vector: four int32 lanes (VLDRB.S32 widens four input bytes)."""


@lowering("DEPTHWISE_CONV_2D", isa="mve")
def depthwise_mve(ctx: Context) -> LayerCode:
    """Depth multiplier 1, channels a multiple of 4: per tap VLDRB.S32 of four channels of the
    input and of the filter, VMUL, VADD into int32 lanes; two output pixels share each filter
    load. The input zero point is folded into the bias; taps in the padding add it back."""
    sim = ctx.sim
    assert isinstance(sim, DepthwiseConv2D)
    dt = _dtype(ctx)
    if dt != np.int8:
        raise Unsupported("uint8 layer (the MVE depthwise kernel takes the int8 scheme)")
    if sim.mult != 1:
        raise Unsupported(f"depth multiplier {sim.mult} (only 1)")
    g = _geometry(sim)
    c = g["C"]
    if c % DW_CHANNELS:
        raise Unsupported(f"{c} channels (a multiple of {DW_CHANNELS})")
    req = _fixed_requantizer(sim)
    win = sim.win
    taps = np.asarray(sim.wrows[:, :, :c], np.int64).reshape(win.kh * win.kw, c)
    if taps.min(initial=0) < -128 or taps.max(initial=0) > 127:
        raise Unsupported("weights outside int8")
    zi = int(sim.qi.zp)
    bias = _wrap32(np.asarray(req.bias, np.int64) - zi * taps.sum(axis=0))
    rq, rq_consts = _layer_requant(req, c)
    oy = _interior(win.oh, win.sh, win.top, win.kh, win.dh, g["H"])
    ox = _interior(win.ow, win.sw, win.left, win.kw, win.dw, g["W"])
    consts = [
        Const("w", taps.reshape(-1).astype(np.int8),
              f"filter, int8 [{win.kh * win.kw} taps][{c} channels]"),
        Const("bias", _pad(bias, c, 0),
              f"bias - input zero point ({zi}) x the channel's filter sum, int32 wrap"),
        *rq_consts,
    ]
    params: dict[str, Any] = dict(
        **_types(dt), **g, **_out_stage(req.zp, req.lo, req.hi, dt), rq=rq, ZI=zi,
        OY0=oy[0], OY1=oy[1], OX0=ox[0], OX1=ox[1],
        taps=[(ky, kx) for ky in range(win.kh) for kx in range(win.kw)],
    )
    return LayerCode(template="mve/dwconv.c.j2", op="dwconv2d",
                     variant=window_tag(win.kh, win.kw, win.sh, win.sw, win.dh, win.dw),
                     tile=f"2x{DW_CHANNELS}", params=params, consts=consts)
