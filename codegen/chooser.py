"""The schedule chooser: the fastest schedule whose arena fits a memory budget.

Layer by layer is the fastest schedule; depthwise layers in place cost nothing more. When
neither fits the budget, every step whose live bytes (depthwise in place) exceed it must run
inside a patch stage. Candidate stages (chains of operators with a grid of up to 8 x 8
patches) are costed with the target's static cycle model on their patch shapes (MACs where the
target has none) and sized from their patch buffers; a dynamic program over the operators picks
the disjoint stages that cover every such step at the fewest extra cycles. Each stage of the
pick is then lowered and its steps sized exactly, and the whole schedule planned; a stage or
pick that does not fit is dropped and the next best taken.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from qlane.sim.graph import Graph

from .patches import (
    STAGE_OPS,
    Axes,
    LayerSpan,
    PatchLayer,
    Span,
    Stage,
    axis_spans,
    buffer_bytes,
    chain,
    plan_patches,
    split,
    sub_graph,
)
from .placement import deployment
from .planner import Buffer
from .schedule import Schedule, buffers, in_place_offsets, live_bytes
from .targets import Target

if TYPE_CHECKING:
    from .emit import Lowered

MAX_GRID = 8
MAX_STAGE_LAYERS = 16


def default_budget(target: Target, graph: Graph) -> int | None:
    """The largest arena the board example's RAM holds beside the model's inputs, outputs,
    static data and stack; None if the target's RAM is not described."""
    ins = [t.nbytes for t in graph.input_tensors]
    outs = [t.nbytes for t in graph.output_tensors]
    top = sum(r.bytes for r in target.regions_of("ram"))
    fits = deployment(target, 0, ins, outs)
    if fits is None or not fits.fits:
        return None if fits is None else 0
    lo, hi = 0, top
    while lo < hi:
        mid = (lo + hi + 1) // 2
        place = deployment(target, mid, ins, outs)
        if place is not None and place.fits:
            lo = mid
        else:
            hi = mid - 1
    return lo // 16 * 16


@dataclass(frozen=True)
class Candidate:
    """A stage with its estimated extra cycles and live bytes."""

    stage: Stage
    extra_cycles: float
    extra_macs: int
    bytes: int


class _Costs:
    """Static cycles of a layer's kernel on any shape (the whole layer's kernel family)."""

    def __init__(self, low: Lowered) -> None:
        from .cost.model import EstimateError, cost_model

        self.low = low
        try:
            self.model = cost_model(low.target)
        except EstimateError:
            self.model = None
        self.cache: dict[tuple[int, tuple[int, ...]], float] = {}
        self._bytes: dict[Stage, int] = {}
        self._cycles_of: dict[Stage, tuple[float, int]] = {}
        self._axes: dict[tuple[int, int, int, int], list[list[tuple[Span, Span, int]]]] = {}

    def axes(self, stage: Stage) -> Axes:
        """`stage_axes`, each axis computed once per chain and number of parts."""
        graph, kernels = self.low.graph, self.low.interp.kernels
        layers = list(stage.layers)
        y = graph.tensors[graph.operators[stage.last].outputs[0]].shape
        out = []
        for axis, parts in ((1, stage.grid[0]), (2, stage.grid[1])):
            key = (stage.first, stage.last, axis, parts)
            if key not in self._axes:
                self._axes[key] = [axis_spans(graph, kernels, layers, s, axis)
                                   for s in split(y[axis], parts)]
            out.append(self._axes[key])
        return out[0], out[1]

    def stage_bytes(self, stage: Stage) -> int:
        """Patch and copy buffers of ``stage`` (estimated: its scratch apart)."""
        if stage not in self._bytes:
            graph = self.low.graph
            rows, cols = self.axes(stage)
            need = buffer_bytes(graph, stage, (rows, cols))
            ops = graph.operators
            x, y = graph.tensors[ops[stage.first].inputs[0]], \
                graph.tensors[ops[stage.last].outputs[0]]
            if stage.grid[1] > 1:  # the copies of patches that do not span whole rows
                r0, c0 = rows[0], cols[0]
                if c0[0][1].size < x.shape[2]:
                    need += r0[0][1].size * c0[0][1].size * x.shape[3] * x.dtype.itemsize
                if c0[-1][0].size < y.shape[2]:
                    need += r0[-1][0].size * c0[-1][0].size * y.shape[3] * y.dtype.itemsize
            self._bytes[stage] = need
        return self._bytes[stage]

    def stage(self, stage: Stage) -> tuple[float, int]:
        """Estimated cycles and extra MACs of ``stage``."""
        if stage not in self._cycles_of:
            self._cycles_of[stage] = self._stage_cost(stage)
        return self._cycles_of[stage]

    def _stage_cost(self, stage: Stage) -> tuple[float, int]:
        graph, kernels = self.low.graph, self.low.interp.kernels
        rows, cols = self.axes(stage)
        pp = plan_patches(graph, kernels, stage, (rows, cols))
        cycles = 0.0
        for pos, i in enumerate(stage.layers):
            rs = Counter(r[pos] for r in rows)
            cs = Counter(c[pos] for c in cols)
            for r, nr in rs.items():
                for c, nc in cs.items():
                    part = PatchLayer(LayerSpan(i, r[0], c[0], r[1], c[1]), r[2], c[2])
                    cycles += nr * nc * self.part(i, part)
        return cycles, pp.macs - pp.layer_macs

    def whole(self, index: int) -> float:
        layer = self.low.layers[index]
        return self._cycles(layer, self.low.graph)

    def part(self, index: int, part: object) -> float:
        key = (index, part.key)  # type: ignore[attr-defined]
        if key not in self.cache:
            graph = self.low.graph
            g = sub_graph(graph, index, part)  # type: ignore[arg-type]
            full = self.low.layers[index]
            y, ys = graph.tensors[full.outputs[0]].shape, g.tensors[full.outputs[0]].shape
            share = (ys[1] * ys[2]) / (y[1] * y[2])
            self.cache[key] = self._cycles(replace(full, macs=round(full.macs * share)), g)
        return self.cache[key]

    def _cycles(self, layer: object, graph: Graph) -> float:
        if self.model is None:
            return float(layer.computed_macs)  # type: ignore[attr-defined]
        from .cost.static import static_layer

        try:
            return static_layer(layer, graph, self.model).cycles
        except ValueError:  # no coefficients for this family: its MACs
            return float(layer.computed_macs)  # type: ignore[attr-defined]


def _chains(graph: Graph) -> list[tuple[int, int]]:
    """Every (first, last) operator pair that can run as a stage."""
    out = []
    for f in range(len(graph.operators)):
        for last in range(f, min(len(graph.operators), f + MAX_STAGE_LAYERS)):
            if graph.operators[last].opcode not in STAGE_OPS:
                break
            try:
                chain(graph, f, last)
            except ValueError:
                break
            out.append((f, last))
    return out


OPTIMISM = 1.25
"""Candidates are kept up to this factor over the budget: their estimated bytes (floor scratch
of the whole layers, patch buffers side by side) err high; each pick is then checked exactly."""


def candidates(low: Lowered, budget: int, costs: _Costs | None = None) -> list[Candidate]:
    """Stages that hold at least one step over ``budget`` and might fit it (estimated, up to
    `OPTIMISM`): per chain and number of patch rows, the patch columns from the fewest that
    might fit to the fewest that fit by the estimate."""
    graph, layers = low.graph, low.layers
    ops = graph.operators
    base = _base(low)
    live = live_bytes(base, len(ops))
    io = set(graph.inputs) | set(graph.outputs)
    costs = costs or _Costs(low)
    out = []
    for f, last in _chains(graph):
        if all(live[i] <= budget for i in range(f, last + 1)):
            continue
        inner = {t for i in range(f, last + 1) for t in (*ops[i].inputs, *ops[i].outputs)}
        keys = {f"t{t}" for t in inner} | {f"s{i}" for i in range(f, last + 1)}
        other = max(live_bytes([b for b in base if b.key not in keys], len(ops))[f:last + 1])
        x, y = ops[f].inputs[0], ops[last].outputs[0]
        whole = sum(graph.tensors[t].nbytes for t in (x, y) if t not in io)
        scratch = max(layers[i].kernel.scratch_bytes for i in range(f, last + 1))
        if other + whole > budget:
            continue
        ys = graph.tensors[y].shape
        before = sum(costs.whole(i) for i in range(f, last + 1))
        for gh in range(1, min(MAX_GRID, ys[1]) + 1):
            for gw in range(1, min(MAX_GRID, ys[2]) + 1):
                if gh * gw == 1:
                    continue
                stage = Stage(f, last, (gh, gw))
                need = other + whole + scratch + costs.stage_bytes(stage)
                if need > budget * OPTIMISM:
                    continue
                cycles, macs = costs.stage(stage)
                out.append(Candidate(stage, cycles - before, macs, need))
                if need <= budget:
                    break  # more columns: more overhead, less memory than needed
    return out


def _best(n: int, hot: set[int], cands: list[Candidate]) -> tuple[Stage, ...] | None:
    """The disjoint stages that cover every hot step at the fewest extra cycles (None: no
    cover)."""
    by_first: dict[int, list[Candidate]] = {}
    for c in cands:
        by_first.setdefault(c.stage.first, []).append(c)
    best: list[tuple[float, tuple[Stage, ...]] | None] = [None] * (n + 1)
    best[0] = (0.0, ())
    for i in range(n):
        cur = best[i]
        if cur is None:
            continue
        if i not in hot and (best[i + 1] is None or cur[0] < best[i + 1][0]):  # type: ignore[index]
            best[i + 1] = cur
        for c in by_first.get(i, []):
            j = c.stage.last + 1
            cost = cur[0] + c.extra_cycles
            if best[j] is None or cost < best[j][0]:  # type: ignore[index]
                best[j] = (cost, (*cur[1], c.stage))
    return None if best[n] is None else best[n][1]  # type: ignore[index]


def choose(low: Lowered, memory_budget: int | None = None) -> tuple[Schedule, str, int | None]:
    """The fastest schedule whose arena fits ``memory_budget`` (default: `default_budget`), why,
    and the budget; GenerateError if a given budget cannot be met, naming the smallest arena
    found."""
    from .emit import GenerateError

    given = memory_budget is not None
    budget = memory_budget if given else default_budget(low.target, low.graph)
    _, _, plan, _ = low.plan(Schedule())
    if budget is None:
        return Schedule(), "layer by layer: the target's RAM is not described", None
    what = "the memory budget" if given else f"the RAM of {low.target.name}"
    if plan.arena_bytes <= budget:
        return Schedule(), (f"layer by layer: its arena ({plan.arena_bytes} B) fits {what} "
                            f"({budget} B)"), budget
    inplace = Schedule(in_place=True)
    _, _, plan, _ = low.plan(inplace)
    if plan.arena_bytes <= budget:
        return inplace, (f"{inplace.describe()}: its arena ({plan.arena_bytes} B) fits {what} "
                         f"({budget} B)"), budget
    costs = _Costs(low)
    n = len(low.graph.operators)
    cands = candidates(low, budget, costs)
    live = live_bytes(_base(low), n)
    hot = {i for i in range(n) if live[i] > budget}
    schedule = pick(low, budget, cands, hot)
    if schedule is not None:
        _, _, plan, _ = low.plan(schedule)
        return schedule, (f"{schedule.describe()}: the fastest schedule whose arena "
                          f"({plan.arena_bytes} B) fits {what} ({budget} B)"), budget
    if not given:  # the search for the smallest takes seconds: only when asked for a budget
        return Schedule(), (f"layer by layer: no schedule fits {what} of {budget} B (give "
                            "--memory-budget to be told the smallest arena qlane can find)"), \
            budget
    smallest, arena = smallest_schedule(low)
    raise GenerateError(f"no schedule fits {what} of {budget} B: the smallest arena found is "
                        f"{arena} B ({smallest.describe()}); give --memory-budget {arena} or "
                        "more")


def _base(low: Lowered) -> list[Buffer]:
    """The arena's buffers layer by layer, depthwise layers in place."""
    return buffers(low.graph, low.layers, (), in_place_offsets(low.graph, low.layers))


def _stage_fits(low: Lowered, stage: Stage, budget: int) -> bool:
    """Whether the arena's live bytes stay within ``budget`` at every step of ``stage`` (the
    stage lowered, its real scratch and buffers)."""
    sc = low.stage(stage)
    bufs = buffers(low.graph, low.layers, [sc], in_place_offsets(low.graph, low.layers, [sc]))
    return max(live_bytes(bufs, len(low.graph.operators))[stage.first:stage.last + 1]) <= budget


def pick(low: Lowered, budget: int, cands: list[Candidate], hot: set[int]
         ) -> Schedule | None:
    """The cheapest cover of the ``hot`` steps whose stages fit ``budget`` exactly and whose
    planned arena does; None if there is none."""
    n = len(low.graph.operators)
    fits: dict[Stage, bool] = {}
    need = {c.stage: c.bytes for c in cands}
    for _ in range(64):
        stages = _best(n, hot, [c for c in cands if fits.get(c.stage, True)])
        if stages is None:
            return None
        for st in stages:
            if st not in fits:
                fits[st] = _stage_fits(low, st, budget)
                if not fits[st]:  # the chain's grids that need as much do not fit either
                    for c in cands:
                        if (c.stage.first, c.stage.last) == (st.first, st.last) and \
                                c.bytes >= need[st]:
                            fits.setdefault(c.stage, False)
        if not all(fits[st] for st in stages):
            continue
        schedule = Schedule(stages, in_place=True)
        _, _, plan, _ = low.plan(schedule)
        if plan.arena_bytes <= budget:
            return schedule
        for st in stages:  # live bytes fit but the planner's packing does not
            fits[st] = False
    return None


def smallest_schedule(low: Lowered, costs: _Costs | None = None) -> tuple[Schedule, int]:
    """The schedule with the smallest arena the chooser finds (a bisection on the budget), and
    that arena."""
    costs = costs or _Costs(low)
    best, arena = min(((s, low.plan(s)[2].arena_bytes) for s in (Schedule(),
                                                                   Schedule(in_place=True))),
                      key=lambda sa: sa[1])
    lo, hi = 0, arena - 1
    n = len(low.graph.operators)
    live = live_bytes(_base(low), n)
    while hi - lo > max(arena // 64, 64):  # within 1.6% of the smallest the search can find
        mid = (lo + hi) // 2
        hot = {i for i in range(n) if live[i] > mid}
        schedule = pick(low, mid, candidates(low, mid, costs), hot)
        if schedule is None:
            lo = mid + 1
            continue
        _, _, p, _ = low.plan(schedule)
        if p.arena_bytes < arena:
            best, arena = schedule, p.arena_bytes
        hi = min(mid, p.arena_bytes) - 1
    return best, arena
