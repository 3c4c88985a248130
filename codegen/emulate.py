"""The instruction-set tier of verification: run the cross build on the target's machine.

`emulate_verify` cross-compiles a project, loads it into the machine backend registered for the
target (`qlane.codegen.machine`), compares every layer and the whole model with the simulator
(`qlane.codegen.compare`) and keeps the instruction counts. A failed run raises
`EmulationError`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from qlane.sim.graph import Graph

from .compare import LayerResult, Progress, Report, Spec, compare
from .cross import build_elf
from .emit import Project, generate
from .machine import Counts, EmulationError, Machine, machine_for
from .targets import Target

__all__ = ["EmulationError", "EmulationReport", "emulate_verify"]


@dataclass
class EmulationReport(Report):
    """A `Report` from the emulator tier, with instruction counts and image sizes."""

    cpu: str = ""
    elf: str = ""
    sizes: dict[str, int] = field(default_factory=dict)
    counts: dict[int, Counts] = field(default_factory=dict, repr=False)
    invoke_counts: Counts | None = field(default=None, repr=False)
    counts_data_independent: bool = True

    def to_json(self) -> dict[str, Any]:
        d = super().to_json()
        d["counts"] = {str(k): _json_counts(c) for k, c in self.counts.items()}
        d["invoke_counts"] = _json_counts(self.invoke_counts) if self.invoke_counts else None
        return d


def _json_counts(c: Counts) -> dict[str, Any]:
    return {**c, "blocks": {f"0x{a:x}": list(v) for a, v in c["blocks"].items()}}


def _same(a: Counts, b: Counts) -> bool:
    return a["instructions"] == b["instructions"] and a["blocks"] == b["blocks"]


class _MachineRunner:
    """A machine as a comparison runner: every sample in one call, the chosen ones counted."""

    batch = None

    def __init__(self, machine: Machine, arena_bytes: int, count_samples: Sequence[int]) -> None:
        self.machine = machine
        self.arena_bytes = arena_bytes
        self.which = list(count_samples)
        self.counts: dict[int, Counts] = {}
        self.invoke_counts: Counts | None = None
        self.same = True

    def _keep(self, c: dict[int, Counts]) -> Counts | None:
        if not c:
            return None
        self.same &= all(_same(c[self.which[0]], v) for v in c.values())
        return c[self.which[0]]

    def run_layer(self, index: int, inputs: Sequence[np.ndarray],
                  out_specs: Sequence[Spec]) -> list[np.ndarray]:
        outs, c = self.machine.run_layer(index, inputs, out_specs, count_samples=self.which)
        kept = self._keep(c)
        if kept is not None:
            self.counts[index] = kept
        return outs

    def invoke(self, inputs: Sequence[np.ndarray], out_specs: Sequence[Spec]) -> list[np.ndarray]:
        outs, c = self.machine.invoke(inputs, out_specs, self.arena_bytes,
                                      count_samples=self.which)
        self.invoke_counts = self._keep(c)
        return outs


def emulate_verify(graph: Graph, target: Target, inputs: Sequence[np.ndarray],
                   rounding: str = "double", name: str | None = None,
                   build_root: str | Path | None = None,
                   progress: Progress | None = None,
                   project: Project | None = None, count: bool = True,
                   check_alignment: bool = True, timeout_s: float = 0.0, *,
                   on_layer: Callable[[LayerResult], None] | None = None,
                   cc: str = "zig") -> EmulationReport:
    """Cross-compile, run every layer and the whole model in the emulator, compare with the sim.

    Like `verify.verify`, but on the target's instruction set. ``project`` verifies a given
    (possibly edited) generated project instead of generating one. With ``count``, the first and
    last samples of every layer and of the whole model are counted (and, on Cortex-M, checked for
    unaligned LDRD/LDM/VLDR... unless ``check_alignment`` is False); the report keeps the first
    sample's counts, and each `LayerResult` its instructions. ``timeout_s`` bounds each call
    (unicorn: costs ~0.1 ms per call; 0 = none there, 300 s on QEMU). ``progress`` gets the
    stages "compile" (the cross build, 0 of 1 then 1 of 1) and "compare"; ``on_layer`` each
    layer's result as soon as it is compared.
    ``cc`` is the cross compiler (`qlane.codegen.cross.CCS`).
    """
    if progress:
        progress("compile", 0, 1)
    project = project or generate(graph, target, name=name, rounding=rounding)
    elf = build_elf(project, target, build_root, cc=cc)
    machine = machine_for(elf, target, timeout_s=timeout_s, check_alignment=check_alignment)
    if progress:
        progress("compile", 1, 1)
    samples = int(inputs[0].shape[0])
    runner = _MachineRunner(machine, project.plan.arena_bytes,
                            sorted({0, samples - 1}) if count else [])

    def counted(res: LayerResult) -> None:
        kept = runner.counts.get(res.index)
        res.instructions = int(kept["instructions"]) if kept else None
        if on_layer:
            on_layer(res)

    report = compare(graph, project, target.name, rounding, inputs, runner, progress,
                     EmulationReport, on_layer=counted,
                     cpu=machine.cpu_label,
                     elf=str(elf.path), sizes=elf.sizes())
    assert isinstance(report, EmulationReport)
    report.counts = runner.counts
    report.invoke_counts = runner.invoke_counts
    report.counts_data_independent = runner.same
    return report
