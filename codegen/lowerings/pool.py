"""AVERAGE_POOL_2D and MAX_POOL_2D in portable C.

Windows are clipped to the input, as in the simulator: interior pixels run with constant loop
bounds (the average divides by a constant), border pixels clip their taps and count them. Each
pass keeps ``TC`` channels in registers, so no scratch memory is needed.
"""

from __future__ import annotations

from qlane.sim.ops.pool import AveragePool2D, MaxPool2D

from ..lowering import Context, LayerCode, lowering
from ..names import window_tag
from .common import ctype
from .conv import block_plan, window_params

POOL_CHANNELS = 8
"""Channels per inner pass."""


@lowering("AVERAGE_POOL_2D", "MAX_POOL_2D", isa="c")
def pool_c(ctx: Context) -> LayerCode:
    sim = ctx.sim
    assert isinstance(sim, AveragePool2D | MaxPool2D)
    b, h, w, c = sim.x.shape
    win = sim.win
    kind = "avg" if isinstance(sim, AveragePool2D) else "max"
    params = dict(kind=kind, T=ctype(sim.dtype), B=b, C=c, lo=int(sim.lo), hi=int(sim.hi),
                  **window_params(win, h, w), **block_plan(c, POOL_CHANNELS))
    variant = window_tag(win.kh, win.kw, win.sh, win.sw)
    return LayerCode(template="c/pool.c.j2", op=f"{kind}pool", variant=variant,
                  tile=f"1x{POOL_CHANNELS}", params=params)
