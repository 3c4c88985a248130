"""ADD, SUB, MUL: portable C with broadcasting; constant operands are staged at generation."""

from __future__ import annotations

import numpy as np

from qlane.sim.ops.elementwise import ADD_LEFT_SHIFT, AddSub, Mul

from ..lowering import Const, Context, LayerCode, lowering
from .common import broadcast_plan, ctype


@lowering("ADD", "SUB", "MUL", isa="c")
def binary_c(ctx: Context) -> LayerCode:
    sim = ctx.sim
    assert isinstance(sim, AddSub | Mul)
    out = ctx.outputs[0]
    shapes = [t.shape for t in ctx.inputs]
    dims, strides = broadcast_plan(shapes, out.shape)
    operands, consts, slot = [], [], 0
    for k, t in enumerate(ctx.inputs):
        if t.is_constant:
            staged = np.asarray(sim._folded[k]).reshape(t.shape or (1,))
            consts.append(Const(f"c{k}", staged.astype(np.int32),
                                f"input {k}, staged at generation time"))
            operands.append({"const": True, "name": f"c{k}"})
        else:
            operands.append({"const": False, "slot": slot})
            slot += 1
    is_add = isinstance(sim, AddSub)
    params = dict(
        T=ctype(out.dtype), dims=dims, strides=strides, operands=operands, add=is_add,
        zp=sim.in_zp, out_zp=sim.out_zp, lo=sim.act_min, hi=sim.act_max,
        left_shift=ADD_LEFT_SHIFT,
        in_mult=[list(m) for m in sim.in_mult] if is_add else None,
        mult=list(sim.out_mult if is_add else sim.mult),
    )
    op = {"ADD": "add", "SUB": "sub", "MUL": "mul"}[ctx.op.opcode]
    n = int(np.prod(dims))
    variant = f"n{n}" if len(dims) == 1 else "bcast" + "x".join(map(str, dims))
    return LayerCode(template="c/binary.c.j2", op=op, variant=variant, params=params, consts=consts)
