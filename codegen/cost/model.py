"""The cycle model of a target and what an estimate reports: per layer and for the model."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from qlane.errors import QlaneError
from qlane.sim.graph import Graph

from ..placement import Placement, deployment
from ..targets import CostModel, Target, cost_model_of


class EstimateError(QlaneError, ValueError):
    """The estimate cannot be made: no cycle model, no toolchain, or a failed build or run."""


def cost_model(target: Target) -> CostModel:
    """The cycle model of ``target`` (its TOML ``[cost]`` table, checked when it was read)."""
    model = cost_model_of(target)
    if model is None or not target.clock_hz:
        raise EstimateError(f"target {target.name} has no cycle model (no [cost] parameters or "
                            "clock); estimate for a chip such as cortex-m4 or cortex-a53")
    return model


@dataclass
class LayerEstimate:
    """One layer's estimate; the cycles include ``branch_cycles`` and ``memory_cycles``."""

    index: int
    op: str
    kernel: str
    isa: str
    input_shapes: list[list[int]]
    output_shapes: list[list[int]]
    macs: int
    instructions: int
    cycles: float
    weight_bytes: int
    activation_bytes: int
    core_cycles: float = 0.0
    branch_cycles: float = 0.0
    memory_cycles: float = 0.0
    flash_read_bytes: int = 0
    by_class: dict[str, int] = field(default_factory=dict)
    peak_bound: bool = False  # cycles were raised to computed MACs / peak
    computed_macs: int | None = None  # MACs the kernel computes (None: all of ``macs``)

    def to_json(self, clock_hz: int) -> dict[str, Any]:
        return {
            "index": self.index, "op": self.op, "kernel": self.kernel, "isa": self.isa,
            "input_shapes": self.input_shapes, "output_shapes": self.output_shapes,
            "macs": self.macs, "instructions": self.instructions,
            "cycles": int(self.cycles),
            "cycles_per_mac": round(self.cycles / self.macs, 4) if self.macs else None,
            "instructions_per_mac": (round(self.instructions / self.macs, 4) if self.macs
                                     else None),
            "seconds": self.cycles / clock_hz,
            "weight_bytes": self.weight_bytes, "activation_bytes": self.activation_bytes,
            "core_cycles": round(self.core_cycles, 1),
            "branch_cycles": round(self.branch_cycles, 1),
            "memory_cycles": round(self.memory_cycles, 1),
            "flash_read_bytes": self.flash_read_bytes, "by_class": self.by_class,
            "peak_bound": self.peak_bound,
            "computed_macs": self.macs if self.computed_macs is None else self.computed_macs,
        }


@dataclass
class StageEstimate:
    """A patch stage's cost against its layers run whole (the recompute overhead)."""

    first: int
    last: int
    grid: tuple[int, int]
    patches: int
    macs: int  # the layers' own MACs
    computed_macs: int  # with the patches' halos computed again
    cycles: float  # patch functions and copies
    layer_cycles: float  # the same layers run whole
    copy_cycles: float = 0.0

    @property
    def extra_macs(self) -> int:
        return self.computed_macs - self.macs

    @property
    def extra_cycles(self) -> float:
        return self.cycles - self.layer_cycles

    def to_json(self) -> dict[str, Any]:
        return {"first": self.first, "last": self.last, "grid": list(self.grid),
                "patches": self.patches, "macs": self.macs,
                "computed_macs": self.computed_macs, "extra_macs": self.extra_macs,
                "cycles": int(self.cycles), "layer_cycles": int(self.layer_cycles),
                "extra_cycles": int(self.extra_cycles), "copy_cycles": int(self.copy_cycles)}


@dataclass
class MemoryView:
    """Live arena bytes per step under the schedule and layer by layer, and the budget."""

    schedule: str
    why: str
    budget: int | None
    arena: int
    arena_layers: int  # the arena of the layer-by-layer schedule (same kernels)
    bound: int  # the layer-by-layer bound: the largest input + output of any layer
    steps: list[tuple[int, str, int, int]]  # (layer index, op, live, live layer by layer)

    def to_json(self) -> dict[str, Any]:
        return {"schedule": self.schedule, "why": self.why, "budget": self.budget,
                "arena": self.arena, "arena_layer_by_layer": self.arena_layers,
                "layer_by_layer_bound": self.bound,
                "steps": [{"index": i, "op": op, "live": a, "live_layer_by_layer": b}
                          for i, op, a, b in self.steps]}


@dataclass
class Estimate:
    """A whole-model estimate for one target and mode."""

    model: str
    target: str
    mode: str
    clock_hz: int
    layers: list[LayerEstimate]
    arena_bytes: int
    flash_bytes: int
    flash_note: str
    sram_capacity: int
    flash_capacity: int
    peak_macs_per_cycle: float
    notes: list[str] = field(default_factory=list)
    ram: Placement | None = None  # arena, I/O buffers, static data and stack per RAM region
    compiler: str | None = None  # what built the emulated image ("zig 0.17.1"); None if static
    stages: list[StageEstimate] = field(default_factory=list)
    memory: MemoryView | None = None

    @property
    def macs(self) -> int:
        return sum(la.macs for la in self.layers)

    @property
    def cycles(self) -> float:
        return float(sum(la.cycles for la in self.layers))

    @property
    def instructions(self) -> int:
        return sum(la.instructions for la in self.layers)

    @property
    def seconds(self) -> float:
        return self.cycles / self.clock_hz

    @property
    def arena_fits(self) -> bool:
        """The RAM a deployment needs fits region by region (without described regions: the
        arena fits the SRAM capacity)."""
        if self.ram is not None:
            return self.ram.fits
        return not self.sram_capacity or self.arena_bytes <= self.sram_capacity

    @property
    def flash_fits(self) -> bool:
        return not self.flash_capacity or self.flash_bytes <= self.flash_capacity

    @property
    def fits(self) -> bool:
        return self.arena_fits and self.flash_fits

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model, "target": self.target, "mode": self.mode,
            "clock_hz": self.clock_hz, "peak_macs_per_cycle": self.peak_macs_per_cycle,
            "compiler": self.compiler,
            "layers": [la.to_json(self.clock_hz) for la in self.layers],
            "total": {
                "macs": self.macs, "instructions": self.instructions,
                "cycles": int(self.cycles),
                "cycles_per_mac": round(self.cycles / self.macs, 4) if self.macs else None,
                "seconds": self.seconds,
                "arena_bytes": self.arena_bytes, "sram_bytes": self.sram_capacity,
                "arena_fits": self.arena_fits,
                "flash_bytes": self.flash_bytes, "flash_capacity_bytes": self.flash_capacity,
                "flash_fits": self.flash_fits, "flash_note": self.flash_note,
                "ram": self.ram.to_json() if self.ram is not None else None,
                "fits": self.fits,
            },
            "notes": self.notes,
            "stages": [st.to_json() for st in self.stages],
            "memory": self.memory.to_json() if self.memory is not None else None,
        }


def ram_of(graph: Graph, target: Target, arena_bytes: int) -> Placement | None:
    """The RAM placement of a deployment: arena, one buffer per model input and output, static
    data and stack, region by region (the layout of the generated board example)."""
    return deployment(target, arena_bytes, [t.nbytes for t in graph.input_tensors],
                      [t.nbytes for t in graph.output_tensors])


def layer_base(layer: Any, graph: Graph) -> dict[str, Any]:
    ins = [graph.tensors[t] for t in layer.inputs]
    outs = [graph.tensors[t] for t in layer.outputs]
    return {
        "index": layer.index, "op": layer.op.opcode, "kernel": layer.symbol,
        "isa": layer.spec.isa, "input_shapes": [list(t.shape) for t in ins],
        "output_shapes": [list(t.shape) for t in outs], "macs": int(layer.macs),
        "computed_macs": int(layer.computed_macs),
        "weight_bytes": int(layer.const_bytes),
        "activation_bytes": int(sum(t.nbytes for t in ins) + sum(t.nbytes for t in outs)),
    }


def floor_peak(est: LayerEstimate, model: CostModel) -> LayerEstimate:
    """Whole cycles, never fewer than the MACs the kernel computes / peak MACs per cycle."""
    floor = (est.macs if est.computed_macs is None else est.computed_macs
             ) / model.peak_macs_per_cycle
    if est.cycles < floor:
        est.cycles = floor
        est.peak_bound = True
    est.cycles = float(math.ceil(est.cycles - 1e-9))
    return est


def skipped_note(layers: list[LayerEstimate]) -> list[str]:
    """A note where layers compute fewer MACs than they have (channels of one output value)."""
    part = [la for la in layers if la.computed_macs is not None and la.computed_macs < la.macs]
    if not part:
        return []
    total = sum(la.macs for la in part)
    done = sum(la.computed_macs or 0 for la in part)
    return [f"{len(part)} layer(s) compute {done:,} of their {total:,} MACs: channels whose "
            "output is one value for every input (all-zero weights, or saturated) are written "
            "as constants"]


def model_notes(model: CostModel) -> list[str]:
    notes = [f"{model.pipeline} {model.issue_width}-wide pipeline model, "
             f"peak {model.peak_macs_per_cycle:g} MACs/cycle"]
    if model.flash_wait_states:
        notes.append(f"weights in flash: {model.flash_wait_states} wait states per "
                     f"{model.flash_line_bytes}-byte line miss; arena in zero-wait SRAM")
    else:
        notes.append("weights and arena assumed cache-resident (no memory stalls modelled)")
    return notes


def copy_cycles(model: CostModel, rows: int, row_bytes: int) -> float:
    """A patch copy of ``rows`` rows: one memcpy call per row, costed with the copy kernel's
    fitted coefficients (``reshape.c``: a call, bytes read and written)."""
    table = model.static.get("cycles", {}).get("reshape.c")
    if not table:
        return float(rows * (20 + row_bytes))
    feats = {"calls": rows, "macs": 0, "outputs": rows * row_bytes, "inputs": rows * row_bytes,
             "tiles": rows * row_bytes, "pixels": 0}
    names = model.static.get("features", list(feats))
    return float(sum(float(a) * feats[f] for a, f in zip(table, names)))


def scheduled(project: Any, graph: Graph, whole: dict[int, LayerEstimate],
              parts: dict[int, LayerEstimate], model: CostModel
              ) -> tuple[list[LayerEstimate], list[StageEstimate]]:
    """Per layer of ``project`` under its schedule: ``whole[index]`` outside the stages; in a
    stage, the sum of its patch functions' estimates (``parts[run_layer index]``) times their
    uses, the copies on the stage's first and last layers. With each stage against its layers
    run whole."""
    from ..schedule import StageCode

    layers = []
    stage_of: dict[int, StageCode] = {i: sc for sc in project.stages for i in sc.layers}
    slots = {id(layer): slot for slot, layer, _, _ in project.patch_layers}
    stages = []
    for sc in project.stages:
        copies = 0.0
        for k, patch in enumerate(sc.patches):
            x = graph.tensors[graph.operators[sc.stage.first].inputs[0]]
            y = graph.tensors[graph.operators[sc.stage.last].outputs[0]]
            if not sc.full_width_in(graph, k):
                s = patch[0].span
                copies += copy_cycles(model, s.in_rows.size,
                                      s.in_cols.size * x.shape[3] * x.dtype.itemsize)
            if not sc.full_width_out(graph, k):
                s = patch[-1].span
                copies += copy_cycles(model, s.out_rows.size,
                                      s.out_cols.size * y.shape[3] * y.dtype.itemsize)
        stages.append(StageEstimate(sc.stage.first, sc.stage.last, sc.stage.grid,
                                    len(sc.patches), 0, 0, copies, 0.0, copies))
    for layer in project.layers:
        sc = stage_of.get(layer.index)
        est = whole[layer.index]
        if sc is None:
            layers.append(est)
            continue
        st = stages[project.stages.index(sc)]
        pos = layer.index - sc.stage.first
        uses: dict[int, int] = {}
        for row in sc.which:
            uses[row[pos]] = uses.get(row[pos], 0) + 1
        ests = [(parts[slots[id(sc.variants[v])]], n) for v, n in uses.items()]
        main = max(ests, key=lambda e: e[1])[0]
        merged = LayerEstimate(
            index=layer.index, op=est.op, kernel=main.kernel, isa=main.isa,
            input_shapes=est.input_shapes, output_shapes=est.output_shapes, macs=est.macs,
            instructions=sum(e.instructions * n for e, n in ests),
            cycles=sum(e.cycles * n for e, n in ests), weight_bytes=est.weight_bytes,
            activation_bytes=est.activation_bytes,
            core_cycles=sum(e.core_cycles * n for e, n in ests),
            branch_cycles=sum(e.branch_cycles * n for e, n in ests),
            memory_cycles=sum(e.memory_cycles * n for e, n in ests),
            flash_read_bytes=sum(e.flash_read_bytes * n for e, n in ests),
            by_class={}, peak_bound=any(e.peak_bound for e, _ in ests),
            computed_macs=sum((e.macs if e.computed_macs is None else e.computed_macs) * n
                              for e, n in ests))
        for e, n in ests:
            for cls, c in e.by_class.items():
                merged.by_class[cls] = merged.by_class.get(cls, 0) + c * n
        share = st.copy_cycles / 2 if sc.stage.first != sc.stage.last else st.copy_cycles
        if layer.index in (sc.stage.first, sc.stage.last):
            merged.cycles += share
            merged.core_cycles += share
        st.macs += est.macs
        st.computed_macs += merged.computed_macs or 0
        st.cycles += merged.cycles - (share if layer.index in (sc.stage.first,
                                                               sc.stage.last) else 0)
        st.layer_cycles += est.cycles
        layers.append(merged)
    return layers, stages


def memory_view(project: Any, graph: Graph) -> MemoryView:
    """`MemoryView` of a generated project."""
    from ..planner import plan_arena
    from ..schedule import buffers, layer_bound, live_bytes

    n = len(graph.operators)
    ops = graph.operators
    live = live_bytes(buffers(graph, project.layers, project.stages, project.in_place), n)
    lbl_bufs = buffers(graph, project.layers)
    lbl = live_bytes(lbl_bufs, n)
    return MemoryView(project.schedule.describe(), project.schedule_note,
                      project.memory_budget, project.plan.arena_bytes,
                      plan_arena(lbl_bufs, 16).arena_bytes, layer_bound(graph),
                      [(i, ops[i].opcode, live[i], lbl[i]) for i in range(n)])


def schedule_notes(project: Any, stages: list[StageEstimate]) -> list[str]:
    """The schedule and why, and each stage's recompute overhead."""
    notes = [f"schedule: {project.schedule_note or project.schedule.describe()}"]
    for st in stages:
        macs = 100 * st.extra_macs / max(st.macs, 1)
        cycles = 100 * st.extra_cycles / max(st.layer_cycles, 1)
        copies = f", {st.copy_cycles:,.0f} of them copies" if st.copy_cycles else ""
        notes.append(
            f"layers {st.first}-{st.last} in {st.grid[0]}x{st.grid[1]} patches: "
            f"{st.extra_macs:,} more MACs (+{macs:.1f}%), {st.extra_cycles:,.0f} more cycles "
            f"(+{cycles:.1f}%) than run whole{copies}")
    return notes
