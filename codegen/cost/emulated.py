"""Emulated mode: run every layer once on the target's machine and cost each executed block."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from qlane.sim.graph import Graph

from ..targets import CostModel, Target
from .model import (
    Estimate,
    EstimateError,
    LayerEstimate,
    cost_model,
    floor_peak,
    layer_base,
    memory_view,
    model_notes,
    ram_of,
    schedule_notes,
    scheduled,
    skipped_note,
)
from .pipeline import Op, block_cycles, make_op, taken_branches

if TYPE_CHECKING:
    from ..compare import Progress
    from ..emit import Project
    from ..machine import Machine


class BlockCoster:
    """Costs the basic blocks of one machine's counted calls (cached per block)."""

    def __init__(self, machine: Machine, model: CostModel) -> None:
        self.machine = machine
        self.model = model
        self.arch = machine.arch
        self._ops: dict[tuple[int, int], list[Op]] = {}
        self._cycles: dict[tuple[int, int], tuple[float, float]] = {}

    def ops(self, start: int, n: int) -> list[Op]:
        """The ``n`` instructions of the block at ``start``, from the machine's decoded records."""
        key = (start, n)
        if key not in self._ops:
            self._ops[key] = [make_op(insn, self.arch, self.model)
                              for insn in self.machine.block(start, n)]
        return self._ops[key]

    def cycles(self, start: int, n: int) -> tuple[float, float]:
        """(first, steady) cycles of the block at ``start``."""
        key = (start, n)
        if key not in self._cycles:
            self._cycles[key] = block_cycles(self.ops(start, n), self.model)
        return self._cycles[key]

    def cost(self, counts: dict[str, Any], flash_sites: set[int], weight_bytes: int
             ) -> tuple[float, float, float, int]:
        """(core, branch, memory) cycles and flash bytes read for one call's counts."""
        blocks: dict[int, tuple[int, int]] = counts["blocks"]
        core = 0.0
        last: dict[int, Op] = {}
        flash_bytes = 0
        for start, (n, execs) in blocks.items():
            ops = self.ops(start, n)
            first, steady = self.cycles(start, n)
            core += first + steady * (execs - 1)
            if ops:
                last[start] = ops[-1]
            for op in ops:
                if op.nbytes and op.cls != "store" and (op.address in flash_sites
                                                        or op.pc_relative):
                    flash_bytes += op.nbytes * execs
        taken = taken_branches(blocks, last)
        branch = sum(taken.values()) * self.model.branch_taken_penalty
        memory = 0.0
        m = self.model
        if m.flash_wait_states and flash_bytes:
            footprint = max(weight_bytes, 1)
            if footprint <= m.flash_cache_bytes:
                lines = math.ceil(min(flash_bytes, footprint) / m.flash_line_bytes)
            else:
                lines = math.ceil(flash_bytes / m.flash_line_bytes)
            memory = float(lines * m.flash_wait_states)
        return core, branch, memory, flash_bytes


@dataclass
class EmulatedRun:
    """What the emulated mode measured: the project, the machine, counts and flash loads."""

    project: Project
    emu: Machine
    counts: dict[int, dict[str, Any]]
    flash_sites: dict[int, set[int]]


def emulate_layers(graph: Graph, target: Target, rounding: str = "double",
                   name: str | None = None, build_root: str | Path | None = None,
                   project: Project | None = None, flash: bool = True,
                   progress: Progress | None = None,
                   on_layer: Callable[[EmulatedRun, Any], None] | None = None,
                   cc: str = "zig", schedule: Any = None,
                   memory_budget: int | None = None) -> EmulatedRun:
    """Cross-compile with ``cc``, run every layer once (counting), find its flash-reading loads.

    ``progress`` gets the stages "compile" (0 of 1, then 1 of 1) and "emulate" (layers done of
    all); ``on_layer`` is called with the run so far and each lowered layer once it is counted.
    """
    from qlane.sim.interpreter import Interpreter

    from ..cross import build_elf
    from ..emit import generate
    from ..machine import machine_for

    if progress:
        progress("compile", 0, 1)
    project = project or generate(graph, target, name=name, rounding=rounding,
                                  schedule=schedule, memory_budget=memory_budget)
    elf = build_elf(project, target, build_root, cc=cc)
    emu = machine_for(elf, target, check_alignment=False)
    if progress:
        progress("compile", 1, 1)
    rng = np.random.default_rng(0)
    inputs = []
    for t in graph.input_tensors:
        dt = np.dtype(t.dtype)
        if dt.kind == "f":
            inputs.append(rng.uniform(-1, 1, (1, *t.shape)).astype(dt))
        else:
            info = np.iinfo(dt)
            inputs.append(rng.integers(info.min, info.max, (1, *t.shape), endpoint=True,
                                       dtype=dt))
    tensors = Interpreter(graph, rounding).run(inputs, keep=True).tensors
    run = EmulatedRun(project, emu, {}, {})
    jobs = [(layer.index, layer, [tensors[t] for t in layer.inputs],
             [(tuple(graph.tensors[t].shape), graph.tensors[t].dtype) for t in layer.outputs])
            for layer in project.layers]
    for slot, layer, g, sc in project.patch_layers:  # on its share of the whole input
        k = sc.variants.index(layer)
        span = next(p[pos] for p, row in zip(sc.patches, sc.which)
                    for pos, v in enumerate(row) if v == k).span
        x = tensors[layer.inputs[0]][:, :, span.in_rows.lo:span.in_rows.hi,
                                     span.in_cols.lo:span.in_cols.hi]
        y = g.tensors[layer.outputs[0]]
        jobs.append((slot, layer, [np.ascontiguousarray(x)], [(tuple(y.shape), y.dtype)]))
    total = len(jobs)
    if progress:
        progress("emulate", 0, total)
    for done, (index, layer, ins, specs) in enumerate(jobs, 1):
        _, c = emu.run_layer(index, ins, specs, count_samples=[0])
        run.counts[index] = c[0]
        if flash:
            loads = [insn.address for start, (n, _) in c[0]["blocks"].items()
                     for insn in emu.block(start, n) if insn.cls == "load"]
            run.flash_sites[index] = emu.flash_loads(
                loads, lambda ins=ins, specs=specs, i=index: emu.run_layer(i, ins, specs))
        else:
            run.flash_sites[index] = set()
        if progress:
            progress("emulate", done, total)
        if on_layer and index == layer.index:
            on_layer(run, layer)
    return run


def estimate_emulated(graph: Graph, target: Target, rounding: str = "double",
                      name: str | None = None, build_root: str | Path | None = None,
                      run: EmulatedRun | None = None, *,
                      on_layer: Callable[[LayerEstimate], None] | None = None,
                      progress: Progress | None = None, cc: str = "zig",
                      schedule: Any = None, memory_budget: int | None = None) -> Estimate:
    """Emulated counts of every layer, costed block by block with the target's model.

    Each layer is costed as soon as it has run; ``on_layer`` gets its estimate then.
    ``progress``: see `emulate_layers` (not called for a given ``run``); ``cc`` the cross
    compiler (ignored for a given ``run``, which was built already).
    """
    model = cost_model(target)
    coster: BlockCoster | None = None

    def cost(run: EmulatedRun, index: int, layer: Any, g: Graph) -> LayerEstimate:
        nonlocal coster
        coster = coster or BlockCoster(run.emu, model)
        c = run.counts[index]
        base = layer_base(layer, g)
        core, branch, memory, fbytes = coster.cost(c, run.flash_sites[index],
                                                base["weight_bytes"])
        return floor_peak(LayerEstimate(**base, instructions=int(c["instructions"]),
                                        cycles=core + branch + memory, core_cycles=core,
                                        branch_cycles=branch, memory_cycles=memory,
                                        flash_read_bytes=fbytes, by_class=dict(c["by_class"])),
                          model)

    def layer_done(run: EmulatedRun, layer: Any) -> None:  # layer by layer: report at once
        if on_layer and not run.project.stages:
            on_layer(cost(run, layer.index, layer, graph))

    if run is None:
        try:
            run = emulate_layers(graph, target, rounding, name, build_root, progress=progress,
                                 on_layer=layer_done, cc=cc, schedule=schedule,
                                 memory_budget=memory_budget)
        except ImportError as e:
            raise EstimateError(f"emulated mode needs unicorn, capstone, pyelftools and ziglang "
                                f"({e}); or use --mode static") from None
        reported = not run.project.stages
    else:
        reported = False
    project = run.project
    whole = {la.index: cost(run, la.index, la, graph) for la in project.layers}
    parts = {slot: cost(run, slot, la, g) for slot, la, g, _ in project.patch_layers}
    layers, stages = scheduled(project, graph, whole, parts, model)
    if on_layer and not reported:
        for la in layers:
            on_layer(la)
    elf = run.emu.elf
    return Estimate(
        graph.name, target.name, "emulated", model.clock_hz, layers,
        project.plan.arena_bytes, int(elf.flash_bytes),
        "flash image of the cross build: code, constants (weights, biases, multipliers, "
        "tables) and initialised data", model.sram_bytes, model.flash_bytes,
        model.peak_macs_per_cycle,
        [*model_notes(model), *skipped_note(layers),
         *([f"image built with {elf.compiler} -O2"] if elf.compiler else []),
         *schedule_notes(project, stages)],
        ram=ram_of(graph, target, project.plan.arena_bytes), compiler=elf.compiler or None,
        stages=stages, memory=memory_view(project, graph))
