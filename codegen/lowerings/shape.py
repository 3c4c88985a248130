"""RESHAPE, CONCATENATION, PAD/PADV2 and MEAN in portable C.

- CONCATENATION: per outer index, one contiguous chunk per input, copied with ``memcpy``; a
  uint8 input quantized unlike the output goes through a 256-entry table of the simulator's
  float32 rescaling (``ConcatenationWithScaling``), so the C needs no float at all; constant
  inputs are staged (rescaled) at generation.
- PAD, PADV2: adjacent dimensions merge while the inner one is unpadded; every output byte is
  written once, with ``memset`` (padding) or ``memcpy`` (a row of the input).
- MEAN: int32 sums (straight along a contiguous reduced tail, else into an int32 scratch row in
  input order), then the simulator's folded multiplier and shift.
"""

from __future__ import annotations

import numpy as np

from qlane.sim.fixedpoint import dtype_range
from qlane.sim.ops.shape import Concatenation, Mean, Pad

from ..lowering import Const, Context, LayerCode, Unsupported, lowering
from .activation import REQUANT_SHIFT
from .common import ctype


@lowering("RESHAPE", isa="c")
def reshape_c(ctx: Context) -> LayerCode:
    nbytes = ctx.outputs[0].nbytes
    return LayerCode(template="c/copy.c.j2", op="reshape", variant=f"n{nbytes}",
                  params=dict(nbytes=nbytes))


def _prod(xs) -> int:
    return int(np.prod(list(xs), dtype=np.int64))


@lowering("CONCATENATION", isa="c")
def concat_c(ctx: Context) -> LayerCode:
    """Chunks of each input along ``axis``, per outer index; rescaled inputs via a table."""
    sim = ctx.sim
    assert isinstance(sim, Concatenation)
    out = ctx.outputs[0]
    axis = sim.axis
    outer = _prod(out.shape[:axis])
    inner = _prod(out.shape[axis + 1:])
    lo, hi = dtype_range(sim.dtype)
    values = np.arange(lo, hi + 1, dtype=np.int64).astype(sim.dtype)
    parts, consts, slot = [], [], 0
    for k, t in enumerate(ctx.inputs):
        assert t is not None
        part = {"chunk": int(t.shape[axis]) * inner, "const": None, "slot": None, "lut": None}
        if t.is_constant:
            staged = np.asarray(sim.folded[k]).reshape(-1).astype(sim.dtype)
            consts.append(Const(f"c{k}", staged, f"input {k}, staged at generation time"))
            part["const"] = f"c{k}"
        else:
            part["slot"] = slot
            slot += 1
            if sim.rescale[k] is not None:
                table = np.asarray(sim._stage(k, values)).reshape(-1).astype(sim.dtype)
                consts.append(Const(f"lut{k}", table,
                                    f"input {k} rescaled to the output (float32, simulator)"))
                part["lut"] = f"lut{k}"
        parts.append(part)
    params = dict(T=ctype(sim.dtype), outer=outer, row=_prod(out.shape[axis:]), parts=parts,
                  offset=-lo)
    return LayerCode(template="c/concat.c.j2", op="concat", variant=f"n{len(parts)}a{axis}",
                  params=params, consts=consts)


def merge_pads(shape: tuple[int, ...], pads: list[tuple[int, int]]
               ) -> list[tuple[int, int, int]]:
    """(size, before, after) per dimension, a dimension merged into its outer neighbour when it
    has no padding (the pair is then one dimension with the padding scaled)."""
    merged: list[tuple[int, int, int]] = []
    for d, (b, a) in zip(shape, pads):
        if merged and b == 0 and a == 0:
            size, mb, ma = merged[-1]
            merged[-1] = (size * d, mb * d, ma * d)
        else:
            merged.append((int(d), int(b), int(a)))
    merged = [m for m in merged[:-1] if m != (1, 0, 0)] + merged[-1:]
    return merged or [(1, 0, 0)]


@lowering("PAD", "PADV2", isa="c")
def pad_c(ctx: Context) -> LayerCode:
    """Each output byte written once: whole padded blocks by memset, rows by memcpy."""
    sim = ctx.sim
    assert isinstance(sim, Pad)
    x, out = ctx.inputs[0], ctx.outputs[0]
    assert x is not None
    dims = merge_pads(tuple(x.shape), sim.pads[1:])
    levels = []
    for k, (size, before, after) in enumerate(dims):
        levels.append(dict(
            size=size, before=before, after=after, osize=size + before + after,
            in_stride=_prod(d[0] for d in dims[k + 1:]),
            out_block=_prod(d[0] + d[1] + d[2] for d in dims[k + 1:]),
        ))
    params = dict(T=ctype(out.dtype), levels=levels, byte=int(sim.value) & 0xFF,
                  value=int(sim.value))
    return LayerCode(template="c/pad.c.j2", op="pad", variant=f"r{len(dims)}n{out.size}",
                  params=params)


def merge_reduce(shape: tuple[int, ...], axes: tuple[int, ...]) -> list[tuple[int, bool]]:
    """(size, reduced) runs: size-1 dimensions dropped, neighbours of one kind merged."""
    runs: list[tuple[int, bool]] = []
    for d, size in enumerate(shape):
        if size == 1:
            continue
        red = d in axes
        if runs and runs[-1][1] == red:
            runs[-1] = (runs[-1][0] * int(size), red)
        else:
            runs.append((int(size), red))
    return runs


@lowering("MEAN", isa="c")
def mean_c(ctx: Context) -> LayerCode:
    """int32 sums over the reduced axes, minus ``count * z_in``, requantized, clamped."""
    sim = ctx.sim
    assert isinstance(sim, Mean)
    x, out = ctx.inputs[0], ctx.outputs[0]
    assert x is not None
    if sim.count > (2**31 - 1) // 512:
        raise Unsupported(f"{sim.count} elements per mean overflow an int32 sum")
    smin, smax = REQUANT_SHIFT[ctx.rounding]
    if not smin <= sim.mult[1] <= smax:
        raise Unsupported(f"requantization shift {sim.mult[1]} outside [{smin}, {smax}]")
    runs = merge_reduce(tuple(x.shape), sim.axes)
    n_out = out.size
    direct = not any(red for _, red in runs[:-1])  # reduced dims (if any) form the tail
    loops = []
    if not direct:
        for k, (size, red) in enumerate(runs):
            loops.append(dict(size=size, reduced=red, out_stride=0 if red else _prod(
                s for s, r in runs[k + 1:] if not r)))
    acc_index = " + ".join(f"i{k} * {lv['out_stride']}" for k, lv in enumerate(loops)
                           if not lv["reduced"]) or "0"
    params = dict(T=ctype(out.dtype), n_out=n_out, count=sim.count, direct=direct, loops=loops,
                  acc_index=acc_index,
                  zp_in=sim.zp_in, zp_out=sim.zp_out, mult=int(sim.mult[0]),
                  shift=int(sim.mult[1]), lo=sim.lo, hi=sim.hi)
    return LayerCode(template="c/mean.c.j2", op="mean",
                  variant=f"n{n_out}c{sim.count}" + ("" if direct else "s"), params=params,
                  scratch_bytes=0 if direct else 4 * n_out)
