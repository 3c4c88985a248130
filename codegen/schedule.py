"""Schedules: which layers run layer by layer and which as patch stages, lowered and planned.

A `Schedule` names its patch stages (`qlane.codegen.patches.Stage`). `lower_stage` lowers every
distinct patch layer of a stage (one specialised function per layer and patch geometry, the
same lowerings as the whole layer) into a `StageCode`; `buffers` lists what the arena must hold
under a schedule, step by step, for `qlane.codegen.planner.plan_arena`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from qlane.errors import QlaneError
from qlane.sim.graph import Graph
from qlane.sim.ops.base import Kernel
from qlane.sim.ops.conv import Window

from .lowering import Layer
from .patches import PatchLayer, PatchPlan, Stage, chain, plan_patches, stage_patches, sub_graph
from .planner import Buffer


class ScheduleError(QlaneError, ValueError):
    """A schedule that does not apply to the model, or a schedule text that does not parse."""


@dataclass(frozen=True)
class Schedule:
    """Patch stages (in layer order, disjoint); every other layer runs whole, in order."""

    stages: tuple[Stage, ...] = ()
    in_place: bool = False
    """Depthwise layers outside the stages write their output over their input where they can
    (`in_place_offsets`)."""

    def describe(self) -> str:
        text = "; ".join(s.describe() for s in self.stages) or "layer by layer"
        return text + ("; depthwise in place" if self.in_place else "")

    def spec(self) -> str:
        """The ``--schedule`` text that gives this schedule back (`parse_schedule`)."""
        parts = [f"{s.first}-{s.last}:{s.grid[0]}x{s.grid[1]}" for s in self.stages]
        return ",".join([*parts, *(["inplace"] if self.in_place else [])]) or "layers"

    def check(self, graph: Graph) -> None:
        """ScheduleError unless every stage is a chain of the graph and they do not overlap."""
        end = -1
        for s in self.stages:
            if s.first <= end:
                raise ScheduleError(f"stage {s.describe()} overlaps the one before")
            if s.last >= len(graph.operators) or s.first < 0:
                raise ScheduleError(f"stage {s.describe()}: the model has "
                                    f"{len(graph.operators)} operators")
            try:
                chain(graph, s.first, s.last)
            except ValueError as e:
                raise ScheduleError(f"stage {s.describe()}: {e}") from None
            y = graph.tensors[graph.operators[s.last].outputs[0]].shape
            if not (1 <= s.grid[0] <= y[1] and 1 <= s.grid[1] <= y[2]):
                raise ScheduleError(f"stage {s.describe()}: its output has {y[1]}x{y[2]} "
                                    "pixels")
            end = s.last


_STAGE = re.compile(r"^(\d+)-(\d+):(\d+)x(\d+)$")


def parse_schedule(text: str) -> Schedule:
    """``layers`` (layer by layer) or stages ``FIRST-LAST:ROWSxCOLS`` and ``inplace`` (depthwise
    layers in place), joined by commas."""
    text = text.strip()
    if text in ("layers", ""):
        return Schedule()
    stages, in_place = [], False
    for part in text.split(","):
        if part.strip() == "inplace":
            in_place = True
            continue
        m = _STAGE.match(part.strip())
        if not m:
            raise ScheduleError(f"schedule stage {part.strip()!r} is not FIRST-LAST:ROWSxCOLS "
                                "(e.g. 0-7:2x2)")
        a, b, r, c = (int(g) for g in m.groups())
        if b < a:
            raise ScheduleError(f"schedule stage {part.strip()!r}: LAST is before FIRST")
        stages.append(Stage(a, b, (r, c)))
    return Schedule(tuple(stages), in_place)


def _variant_tag(part: PatchLayer) -> str:
    ih, iw, oh, ow, top, left = part.key
    return f"p{oh}x{ow}i{ih}x{iw}t{top}l{left}"


@dataclass
class StageCode:
    """A lowered stage: its distinct patch layers and, per patch, which one runs each layer."""

    stage: Stage
    plan: PatchPlan
    patches: list[list[PatchLayer]]
    variants: list[Layer] = field(default_factory=list)
    graphs: list[Graph] = field(default_factory=list)
    """Each variant's one-operator graph (its tensors cut to the patch)."""
    which: list[list[int]] = field(default_factory=list)
    """Per patch, per layer of the stage: the index into ``variants``."""

    @property
    def layers(self) -> range:
        return self.stage.layers

    def uses(self, k: int) -> int:
        """How many patches run variant ``k``."""
        return sum(row.count(k) for row in self.which)

    def tensor_bytes(self, graph: Graph, t: int, rows: Any, cols: Any) -> int:
        x = graph.tensors[t]
        return rows.size * cols.size * x.shape[3] * np.dtype(x.dtype).itemsize

    def out_bytes(self, graph: Graph, index: int) -> int:
        """The largest output patch of layer ``index`` (its buffer)."""
        pos = index - self.stage.first
        t = graph.operators[index].outputs[0]
        return max(self.tensor_bytes(graph, t, p[pos].span.out_rows, p[pos].span.out_cols)
                   for p in self.patches)

    def scratch(self, index: int) -> int:
        """The largest scratch of layer ``index``'s variants."""
        pos = index - self.stage.first
        return max((self.variants[row[pos]].kernel.scratch_bytes for row in self.which),
                   default=0)

    def full_width_in(self, graph: Graph, k: int) -> bool:
        """Whether patch ``k`` reads whole rows of the stage input (no copy needed)."""
        x = graph.tensors[graph.operators[self.stage.first].inputs[0]]
        return self.patches[k][0].span.in_cols.size == x.shape[2]

    def full_width_out(self, graph: Graph, k: int) -> bool:
        y = graph.tensors[graph.operators[self.stage.last].outputs[0]]
        return self.patches[k][-1].span.out_cols.size == y.shape[2]

    def copy_in_bytes(self, graph: Graph) -> int:
        """The buffer the input of patches that read part of a row is gathered into."""
        t = graph.operators[self.stage.first].inputs[0]
        return max((self.tensor_bytes(graph, t, p[0].span.in_rows, p[0].span.in_cols)
                    for k, p in enumerate(self.patches) if not self.full_width_in(graph, k)),
                   default=0)

    def copy_out_bytes(self, graph: Graph) -> int:
        t = graph.operators[self.stage.last].outputs[0]
        return max((self.tensor_bytes(graph, t, p[-1].span.out_rows, p[-1].span.out_cols)
                    for k, p in enumerate(self.patches) if not self.full_width_out(graph, k)),
                   default=0)


def lower_stage(graph: Graph, kernels: Sequence[Kernel], stage: Stage,
                lower: Callable[[Graph, Kernel | None], Layer], rounding: str) -> StageCode:
    """Lower each distinct patch layer of ``stage`` with ``lower(sub_graph, None)``: the
    lowerings of whole layers, on the patch's shapes and explicit padding."""
    from qlane.sim.ops.base import KERNELS

    code = StageCode(stage, plan_patches(graph, kernels, stage),
                     stage_patches(graph, kernels, stage))
    seen: dict[tuple[int, tuple[int, ...]], int] = {}
    for patch in code.patches:
        row = []
        for part in patch:
            key = (part.span.index, part.key)
            if key not in seen:
                g = sub_graph(graph, part.span.index, part)
                op = g.operators[0]
                layer = lower(g, KERNELS[op.opcode](op, g, rounding))  # type: ignore[arg-type]
                spec = replace(layer.spec, variant=layer.spec.variant + _variant_tag(part))
                layer.spec = spec
                seen[key] = len(code.variants)
                code.variants.append(layer)
                code.graphs.append(g)
            row.append(seen[key])
        code.which.append(row)
    return code


def _lcm(a: int, b: int) -> int:
    from math import gcd

    return a * b // gcd(a, b)


def in_place_offset(graph: Graph, layer: Layer, align: int = 16) -> int | None:
    """How far (bytes) a depthwise layer's input must sit after its output for the kernel to
    write the output over it, or None if it cannot run in place or would save nothing.

    The kernel writes `LayerCode.rows_per_pass` output rows per pass and may read any input
    row of a pass after writing the pass's outputs; so a pass's last output pixel must lie
    before the first input pixel the pass reads (pixels, as channels keep their offset)."""
    rows = layer.kernel.rows_per_pass
    op = graph.operators[layer.index]
    if not rows or op.opcode != "DEPTHWISE_CONV_2D" or len(layer.inputs) != 1:
        return None
    x, y = graph.tensors[layer.inputs[0]], graph.tensors[layer.outputs[0]]
    if x.shape[0] != 1 or x.shape[3] != y.shape[3] or x.dtype != y.dtype:
        return None
    win = _dw_window(graph, layer.index)
    _, h, w, c = x.shape
    ow, oh = y.shape[2], y.shape[1]
    lag = max((min(t + rows, oh) * ow - max(0, t * win.sh - win.top) * w)
              for t in range(0, oh, rows))
    px = c * np.dtype(x.dtype).itemsize
    step = _lcm(px, align)
    d = -(-max(lag, 0) * px // step) * step
    return d if d < y.nbytes else None


def _dw_window(graph: Graph, index: int) -> Window:
    op = graph.operators[index]
    o = op.options
    x, w = graph.tensors[op.inputs[0]], graph.tensors[op.inputs[1]]
    return Window.make(o.get("padding", "SAME"), (x.shape[1], x.shape[2]),
                       (w.shape[1], w.shape[2]), (o.get("stride_h", 1), o.get("stride_w", 1)),
                       (o.get("dilation_h", 1), o.get("dilation_w", 1)))


def in_place_offsets(graph: Graph, layers: Sequence[Layer],
                     stages: Sequence[StageCode] = ()) -> dict[int, int]:
    """Per depthwise layer that runs in place (outside the stages; its input an intermediate
    tensor read by it alone, not itself written in place), `in_place_offset`."""
    ops = graph.operators
    io = set(graph.inputs) | set(graph.outputs)
    staged = {i for sc in stages for i in sc.layers}
    readers: dict[int, int] = {}
    for op in ops:
        for t in op.inputs:
            readers[t] = readers.get(t, 0) + 1
    out: dict[int, int] = {}
    written: set[int] = set()
    for layer in layers:
        if layer.index in staged or len(layer.outputs) != 1 or len(layer.inputs) != 1:
            continue
        x, y = layer.inputs[0], layer.outputs[0]
        if x in io or y in io or x in written or readers.get(x) != 1:
            continue
        d = in_place_offset(graph, layer)
        if d is not None:
            out[layer.index] = d
            written.add(y)
    return out


def buffers(graph: Graph, layers: Sequence[Layer], stages: Sequence[StageCode] = (),
            in_place: dict[int, int] | None = None) -> list[Buffer]:
    """What the arena holds and when (steps are operator indices): intermediate tensors and
    scratch; in a stage, the patch buffers instead of the stage's inner tensors, its input kept
    until the last patch has read it and its output live from the first patch on. A layer in
    ``in_place`` (`in_place_offsets`) has its input anchored that many bytes after its
    output."""
    ops = graph.operators
    io = set(graph.inputs) | set(graph.outputs)
    staged = {i: sc for sc in stages for i in sc.layers}
    hidden = {ops[i].outputs[0] for sc in stages for i in sc.layers if i != sc.stage.last}
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    for step, layer in enumerate(layers):
        for t in layer.outputs:
            first.setdefault(t, step)
            last[t] = max(last.get(t, step), step)
        for t in layer.inputs:
            last[t] = step
    for sc in stages:
        x, y = ops[sc.stage.first].inputs[0], ops[sc.stage.last].outputs[0]
        last[x] = max(last.get(x, sc.stage.last), sc.stage.last)
        first[y] = min(first.get(y, sc.stage.first), sc.stage.first)
        last[y] = max(last.get(y, sc.stage.last), sc.stage.last)
    anchor = {ops[i].inputs[0]: (f"t{ops[i].outputs[0]}", d) for i, d in (in_place or {}).items()}
    bufs = [Buffer(f"t{t}", graph.tensors[t].nbytes, first[t], last[t], *anchor.get(t, ("", 0)))
            for t in sorted(first) if t not in io and t not in hidden]
    for step, layer in enumerate(layers):
        sc = staged.get(layer.index)
        size = layer.kernel.scratch_bytes if sc is None else sc.scratch(layer.index)
        if size:
            bufs.append(Buffer(f"s{layer.index}", size, step, step))
    for sc in stages:
        s = sc.stage
        bufs += [Buffer(f"p{i}", sc.out_bytes(graph, i), i, i + 1) for i in range(s.first, s.last)]
        if sc.copy_in_bytes(graph):
            bufs.append(Buffer(f"c{s.first}", sc.copy_in_bytes(graph), s.first, s.first))
        if sc.copy_out_bytes(graph):
            bufs.append(Buffer(f"d{s.last}", sc.copy_out_bytes(graph), s.last, s.last))
    return bufs


def layer_bound(graph: Graph) -> int:
    """The layer-by-layer bound: the largest input + output of one operator, arena tensors only
    (the model's inputs and outputs are the caller's buffers); no layer-by-layer schedule's
    arena is smaller."""
    io = set(graph.inputs) | set(graph.outputs)
    return max((sum(graph.tensors[t].nbytes for t in (*op.inputs, *op.outputs)
                    if t >= 0 and t not in io and not graph.tensors[t].is_constant)
                for op in graph.operators), default=0)


def live_bytes(bufs: Sequence[Buffer], steps: int) -> list[int]:
    """Bytes live at each step (the arena can be no smaller than the largest); an anchored
    buffer and its anchor, live together, count their union."""
    live = [0] * steps
    by_key = {b.key: b for b in bufs}
    for b in bufs:
        for s in range(b.first, min(b.last, steps - 1) + 1):
            a = by_key.get(b.anchor) if b.anchor else None
            if a is not None and a.first <= s <= a.last:
                live[s] += max(b.delta + b.size, a.size) - a.size
            else:
                live[s] += b.size
    return live
