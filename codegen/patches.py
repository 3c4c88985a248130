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

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from qlane.sim.graph import Graph, Operator
from qlane.sim.ops.base import KERNELS, Kernel
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


WINDOWED = ("CONV_2D", "DEPTHWISE_CONV_2D", "AVERAGE_POOL_2D", "MAX_POOL_2D")
POINTWISE = ("RELU", "RELU6", "RELU_N1_TO_1", "LOGISTIC", "TANH", "HARD_SWISH")
STAGE_OPS = WINDOWED + POINTWISE
"""Operators a patch stage may hold: sliding windows over one activation, and unary ops."""


def chain(graph: Graph, first: int, last: int) -> list[int]:
    """Operators ``first`` .. ``last`` if they form a chain on 4-D tensors; ValueError names the
    operator that breaks it."""
    ops = graph.operators
    readers = Counter(t for op in ops for t in op.inputs)
    for i in range(first, last + 1):
        out = ops[i].outputs
        if ops[i].opcode not in STAGE_OPS:
            raise ValueError(f"operator {i} ({ops[i].opcode}) cannot run in patches")
        if len(out) != 1 or len(graph.tensors[out[0]].shape) != 4:
            raise ValueError(f"operator {i} ({ops[i].opcode}) has not one 4-D output")
        if graph.tensors[out[0]].shape[0] != 1:
            raise ValueError(f"operator {i} ({ops[i].opcode}) runs a batch of "
                             f"{graph.tensors[out[0]].shape[0]}; patches take one image")
        if i > first and ops[i].inputs[0] != ops[i - 1].outputs[0]:
            raise ValueError(f"operator {i} ({ops[i].opcode}) does not read operator {i - 1}")
        if i < last and out[0] in graph.outputs:
            raise ValueError(f"operator {i} ({ops[i].opcode})'s output is a model output")
        if i < last and readers[out[0]] != 1:
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


def split(size: int, parts: int) -> list[Span]:
    """``size`` rows cut into ``parts`` spans of near-equal size (the larger ones first)."""
    base, extra = divmod(size, parts)
    spans, lo = [], 0
    for k in range(parts):
        hi = lo + base + (k < extra)
        spans.append(Span(lo, hi))
        lo = hi
    return spans


@dataclass(frozen=True)
class Stage:
    """Operators ``first`` .. ``last`` run as a ``grid`` (rows x columns) of patches of the last
    operator's output."""

    first: int
    last: int
    grid: tuple[int, int]

    @property
    def layers(self) -> range:
        return range(self.first, self.last + 1)

    def describe(self) -> str:
        return f"layers {self.first}-{self.last} in {self.grid[0]}x{self.grid[1]} patches"


@dataclass(frozen=True)
class PatchLayer:
    """One layer of one patch: its spans and the padding its windows see (the image border's
    where the patch touches it, none inside)."""

    span: LayerSpan
    top: int
    left: int

    @property
    def key(self) -> tuple[int, ...]:
        """What the layer's code for this patch depends on: input and output extents, padding."""
        s = self.span
        return (s.in_rows.size, s.in_cols.size, s.out_rows.size, s.out_cols.size, self.top,
                self.left)


def axis_spans(graph: Graph, kernels: Sequence[Kernel], layers: Sequence[int], out: Span,
          axis: int) -> list[tuple[Span, Span, int]]:
    """Per layer (first to last): output span, input span and padding before, along ``axis``
    (1: rows, 2: columns) for span ``out`` of the last layer's output."""
    res = []
    for i in reversed(layers):
        win = _window(kernels[i])
        if win is None:
            res.append((out, out, 0))
            continue
        k, st, d, pad = ((win.kh, win.sh, win.dh, win.top) if axis == 1 else
                         (win.kw, win.sw, win.dw, win.left))
        size = graph.tensors[graph.operators[i].inputs[0]].shape[axis]
        inp = input_span(out, k, st, d, pad, size)
        res.append((out, inp, inp.lo - (out.lo * st - pad)))
        out = inp
    return res[::-1]


def stage_axes(graph: Graph, kernels: Sequence[Kernel], stage: Stage
               ) -> tuple[list[list[tuple[Span, Span, int]]], list[list[tuple[Span, Span, int]]]]:
    """Per patch row and per patch column of ``stage``: `axis_spans` of each layer (patch spans are
    separable: a patch's rows depend on its grid row only)."""
    layers = chain(graph, stage.first, stage.last)
    y = graph.tensors[graph.operators[stage.last].outputs[0]].shape
    rows = [axis_spans(graph, kernels, layers, r, 1) for r in split(y[1], stage.grid[0])]
    cols = [axis_spans(graph, kernels, layers, c, 2) for c in split(y[2], stage.grid[1])]
    return rows, cols


def stage_patches(graph: Graph, kernels: Sequence[Kernel], stage: Stage
                  ) -> list[list[PatchLayer]]:
    """Per patch (row-major over the grid), per layer of the stage, what it computes."""
    rows, cols = stage_axes(graph, kernels, stage)
    return [[PatchLayer(LayerSpan(i, r[0], c[0], r[1], c[1]), r[2], c[2])
             for i, r, c in zip(stage.layers, rr, cc)] for rr in rows for cc in cols]


def sub_graph(graph: Graph, index: int, part: PatchLayer) -> Graph:
    """The one-operator graph that computes operator ``index``'s share ``part`` of a patch: its
    input and output cut to the spans, its windows' padding made explicit."""
    op = graph.operators[index]
    s = part.span
    tensors = list(graph.tensors)
    for t, rows, cols in ((op.inputs[0], s.in_rows, s.in_cols),
                          (op.outputs[0], s.out_rows, s.out_cols)):
        shape = tensors[t].shape
        tensors[t] = replace(tensors[t], shape=(shape[0], rows.size, cols.size, shape[3]))
    options = dict(op.options)
    if op.opcode in WINDOWED:
        options.update(padding="EXPLICIT", pad_top=part.top, pad_left=part.left)
    sub = Operator(op.index, op.opcode, op.inputs, op.outputs, options)
    return Graph(tensors, [sub], [op.inputs[0]], [op.outputs[0]], graph.name)


def sub_kernel(graph: Graph, index: int, part: PatchLayer, rounding: str = "double") -> Kernel:
    """The simulator's kernel of `sub_graph`."""
    g = sub_graph(graph, index, part)
    return KERNELS[g.operators[0].opcode](g.operators[0], g, rounding)  # type: ignore[arg-type]


def run_stage(graph: Graph, kernels: Sequence[Kernel], stage: Stage, x: np.ndarray,
              rounding: str = "double") -> np.ndarray:
    """The stage's output for input ``x`` [S, 1, H, W, C], computed patch by patch with the
    simulator (each patch's layers on their spans only): the reference of generated stages."""
    y = graph.tensors[graph.operators[stage.last].outputs[0]]
    out = np.zeros((x.shape[0], *y.shape), y.dtype)
    cache: dict[tuple[int, tuple[int, ...]], Kernel] = {}
    for patch in stage_patches(graph, kernels, stage):
        first = patch[0].span
        a = x[:, :, first.in_rows.lo:first.in_rows.hi, first.in_cols.lo:first.in_cols.hi]
        for part in patch:
            key = (part.span.index, part.key)
            if key not in cache:
                cache[key] = sub_kernel(graph, part.span.index, part, rounding)
            k = cache[key]
            args = [a if i == 0 else (None if t < 0 else graph.tensors[t].data[None])
                    for i, t in enumerate(graph.operators[part.span.index].inputs)]
            a = k(*args)[0]
        last = patch[-1].span
        out[:, :, last.out_rows.lo:last.out_rows.hi, last.out_cols.lo:last.out_cols.hi] = a
    return out


@dataclass(frozen=True)
class PatchPlan:
    """What running a stage costs and needs."""

    stage: Stage
    macs: int  # computed, halos included
    layer_macs: int  # the layer-by-layer MACs of the same layers
    buffer_bytes: int  # the largest input + output patch buffers of one interior layer
    stage_bytes: int  # the stage's whole input and output tensors

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


Axes = tuple[list[list[tuple[Span, Span, int]]], list[list[tuple[Span, Span, int]]]]


def plan_patches(graph: Graph, kernels: Sequence[Kernel], stage: Stage,
                 axes: Axes | None = None) -> PatchPlan:
    """MACs and buffer bytes of ``stage`` (``axes``: its `stage_axes`, if known)."""
    ops, tensors = graph.operators, graph.tensors
    rows, cols = axes or stage_axes(graph, kernels, stage)
    macs = 0.0
    for pos, i in enumerate(stage.layers):
        area_out = sum(r[pos][0].size for r in rows) * sum(c[pos][0].size for c in cols)
        macs += _macs_per_output(graph, kernels, i) * area_out
    layer_macs = sum(type(kernels[i]).macs(ops[i], graph) for i in stage.layers)
    x0, y1 = tensors[ops[stage.first].inputs[0]], tensors[ops[stage.last].outputs[0]]
    return PatchPlan(stage, round(macs), int(layer_macs),
                     buffer_bytes(graph, stage, (rows, cols)), x0.nbytes + y1.nbytes)


def buffer_bytes(graph: Graph, stage: Stage, axes: Axes) -> int:
    """The largest input + output patch buffers of one layer of ``stage`` (the stage's own
    input and output not counted)."""
    ops, tensors = graph.operators, graph.tensors
    rows, cols = axes
    out = 0
    for pos, i in enumerate(stage.layers):
        op = ops[i]
        rs = {(r[pos][0].size, r[pos][1].size) for r in rows}
        cs = {(c[pos][0].size, c[pos][1].size) for c in cols}
        x, y = tensors[op.inputs[0]], tensors[op.outputs[0]]
        px_in = 0 if pos == 0 else x.shape[3] * x.dtype.itemsize
        px_out = 0 if i == stage.last else y.shape[3] * y.dtype.itemsize
        out = max(out, max(ri * ci * px_in + ro * co * px_out
                           for ro, ri in rs for co, ci in cs))
    return out
