"""Helpers shared by lowerings: C types, broadcasting plans, requantization constants."""

from __future__ import annotations

import numpy as np

from qlane.sim.graph import Tensor

from ..lowering import C_TYPES, Context, Unsupported


def ctype(dtype) -> str:
    """The C type of a numpy dtype."""
    return C_TYPES[np.dtype(dtype)]


def broadcast_plan(in_shapes: list[tuple[int, ...]], out_shape: tuple[int, ...]
                   ) -> tuple[list[int], list[list[int]]]:
    """Output dims and per-input element strides (0 where broadcast), adjacent dims merged.

    Two neighbouring dims merge when every input either spans both or broadcasts both.
    """
    rank = max(len(out_shape), 1)
    out = [1] * (rank - len(out_shape)) + list(out_shape)
    strides = []
    for shape in in_shapes:
        full = [1] * (rank - len(shape)) + list(shape)
        st, acc = [0] * rank, 1
        for d in range(rank - 1, -1, -1):
            st[d] = acc if full[d] != 1 or out[d] == 1 else 0
            acc *= full[d]
        strides.append(st)
    dims = [out[0]]
    merged = [[s[0]] for s in strides]
    for d in range(1, rank):
        if out[d] == 1:
            continue
        if dims[-1] == 1:
            dims[-1] = out[d]
            for m, s in zip(merged, strides):
                m[-1] = s[d]
            continue
        if all((m[-1] == s[d] * out[d]) for m, s in zip(merged, strides)):
            dims[-1] *= out[d]
            for m, s in zip(merged, strides):
                m[-1] = s[d]
        else:
            dims.append(out[d])
            for m, s in zip(merged, strides):
                m.append(s[d])
    return dims, merged


def same_shape_operands(ctx: Context) -> tuple[Tensor, Tensor, Tensor]:
    """(a, b, out) of a binary elementwise layer whose operands are both computed tensors of the
    output's shape; :class:`Unsupported` names the constant operand or the broadcast."""
    a, b = ctx.inputs
    out = ctx.outputs[0]
    if a is None or b is None or a.is_constant or b.is_constant:
        raise Unsupported("constant operand")
    if tuple(a.shape) != tuple(out.shape) or tuple(b.shape) != tuple(out.shape):
        raise Unsupported("broadcasting")
    return a, b, out
