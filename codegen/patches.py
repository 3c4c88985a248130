"""Receptive fields of patch-based execution: what each layer of a chain must compute for one
output patch, and what running the chain patch by patch costs and needs.

A *chain* is a run of operators in which each one's first input is the previous one's only
output (a network's first stage: convolutions, depthwise convolutions, pools and elementwise
ops on one path). For a rectangle of the chain's last output, `patch_spans` walks back through
every layer's window (stride, dilation, the padding before the first row and column) to the
rows and columns of each layer's output and input it needs, clipped to the tensors; the halos of
neighbouring patches overlap and are computed again. `plan_patches` sums that over a grid of
patches: the MACs computed (against the layer-by-layer MACs) and the bytes the patch buffers
need beside the chain's whole input and output.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from qlane.sim.graph import Graph
from qlane.sim.ops.base import Kernel
from qlane.sim.ops.conv import Window


@dataclass(frozen=True)
class Span:
    """Rows (or columns) ``lo`` to ``hi`` - 1 of a tensor."""

    lo: int
    hi: int

    @property
    def size(self) -> int:
        return max(0, self.hi - self.lo)


def input_span(out: Span, k: int, s: int, d: int, pad_before: int, in_size: int) -> Span:
    """The input rows that outputs ``out`` of a window (size ``k``, stride ``s``, dilation ``d``,
    ``pad_before`` padded rows first) read, clipped to the ``in_size`` real ones."""
    if out.size == 0:
        return Span(0, 0)
    lo = out.lo * s - pad_before
    hi = (out.hi - 1) * s - pad_before + (k - 1) * d + 1
    return Span(max(lo, 0), min(hi, in_size))


@dataclass(frozen=True)
class LayerSpan:
    """One layer's share of a patch: the output rows and columns it computes and the input ones
    it reads."""

    index: int
    out_rows: Span
    out_cols: Span
    in_rows: Span
    in_cols: Span


def _window(kernel: Kernel) -> Window | None:
    win = getattr(kernel, "win", None)
    return win if isinstance(win, Window) else None


def chain(graph: Graph, first: int, last: int) -> list[int]:
    """Operators ``first`` .. ``last`` if they form a chain on 4-D tensors; ValueError names the
    operator that breaks it."""
    ops = graph.operators
    for i in range(first, last + 1):
        out = ops[i].outputs
        if len(out) != 1 or len(graph.tensors[out[0]].shape) != 4:
            raise ValueError(f"operator {i} ({ops[i].opcode}) has not one 4-D output")
        if i > first and ops[i].inputs[0] != ops[i - 1].outputs[0]:
            raise ValueError(f"operator {i} ({ops[i].opcode}) does not read operator {i - 1}")
        if i < last and sum(t == out[0] for op in ops for t in op.inputs) != 1:
            raise ValueError(f"operator {i} ({ops[i].opcode})'s output is read more than once")
    return list(range(first, last + 1))


def patch_spans(graph: Graph, kernels: Sequence[Kernel], layers: Sequence[int], rows: Span,
                cols: Span) -> list[LayerSpan]:
    """Per layer of the chain ``layers`` (first to last), what output rows ``rows`` and columns
    ``cols`` of the last layer need. Layers without a window map rows and columns one to one."""
    out: list[LayerSpan] = []
    for i in reversed(layers):
        x = graph.tensors[graph.operators[i].inputs[0]]
        win = _window(kernels[i])
        if win is None:
            ir, ic = rows, cols
        else:
            ir = input_span(rows, win.kh, win.sh, win.dh, win.top, x.shape[1])
            ic = input_span(cols, win.kw, win.sw, win.dw, win.left, x.shape[2])
        out.append(LayerSpan(i, rows, cols, ir, ic))
        rows, cols = ir, ic
    return out[::-1]


@dataclass(frozen=True)
class PatchPlan:
    """A chain run as a grid of output patches."""

    layers: tuple[int, ...]
    patch: int  # rows and columns of the last output per patch (the last row/column: fewer)
    grid: tuple[int, int]
    macs: int  # computed, halos included
    layer_macs: int  # the layer-by-layer MACs of the same layers
    buffer_bytes: int  # the largest input + output patch buffers of one interior layer
    stage_bytes: int  # the chain's whole input and output tensors

    @property
    def overhead(self) -> float:
        """Extra MACs over the layer-by-layer schedule (0.1: 10% more)."""
        return self.macs / self.layer_macs - 1 if self.layer_macs else 0.0

    @property
    def peak_bytes(self) -> int:
        return self.stage_bytes + self.buffer_bytes


def _macs_per_output(graph: Graph, kernels: Sequence[Kernel], i: int) -> float:
    op = graph.operators[i]
    y = graph.tensors[op.outputs[0]].shape
    return type(kernels[i]).macs(op, graph) / (y[0] * y[1] * y[2])


def plan_patches(graph: Graph, kernels: Sequence[Kernel], first: int, last: int,
                 patch: int) -> PatchPlan:
    """The chain ``first`` .. ``last`` run as ``patch`` x ``patch`` patches of its last output."""
    layers = chain(graph, first, last)
    ops, tensors = graph.operators, graph.tensors
    y = tensors[ops[last].outputs[0]].shape
    grid = (math.ceil(y[1] / patch), math.ceil(y[2] / patch))
    per = {i: _macs_per_output(graph, kernels, i) for i in layers}
    macs, buffers = 0.0, 0
    for gr in range(grid[0]):
        for gc in range(grid[1]):
            rows = Span(gr * patch, min((gr + 1) * patch, y[1]))
            cols = Span(gc * patch, min((gc + 1) * patch, y[2]))
            for k, ls in enumerate(patch_spans(graph, kernels, layers, rows, cols)):
                op = ops[ls.index]
                xin, yout = tensors[op.inputs[0]], tensors[op.outputs[0]]
                macs += per[ls.index] * ls.out_rows.size * ls.out_cols.size
                n_in = 0 if k == 0 else ls.in_rows.size * ls.in_cols.size * xin.shape[3] * \
                    np.dtype(xin.dtype).itemsize
                n_out = 0 if ls.index == last else ls.out_rows.size * ls.out_cols.size * \
                    yout.shape[3] * np.dtype(yout.dtype).itemsize
                buffers = max(buffers, n_in + n_out)
    layer_macs = sum(type(kernels[i]).macs(ops[i], graph) for i in layers)
    x0, y1 = tensors[ops[first].inputs[0]], tensors[ops[last].outputs[0]]
    stage = sum(int(np.prod(t.shape)) * np.dtype(t.dtype).itemsize for t in (x0, y1))
    return PatchPlan(tuple(layers), patch, grid, round(macs), int(layer_macs), buffers, stage)
