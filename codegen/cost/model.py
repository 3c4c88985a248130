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
