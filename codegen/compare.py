"""Compare a generated model with the simulator, layer by layer and whole, on any runner.

Both verification tiers use `compare`: the host build (`verify.verify`) and the instruction-set
machine (`emulate.emulate_verify`). Each layer is fed the simulator's own input tensors, so a
wrong layer is reported alone rather than polluting every later one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from qlane.sim.graph import Graph
from qlane.sim.interpreter import Interpreter

if TYPE_CHECKING:
    from .emit import Project

Spec = tuple[tuple[int, ...], Any]
"""An output's (shape, dtype)."""
Progress = Callable[[str, int, int], None]
"""Called with (stage, steps done, steps in all) as a long task advances."""


@dataclass
class Mismatch:
    """The first differing element of a layer: sample, flat index in the output, values."""

    sample: int
    output: int
    index: int
    got: int
    expected: int


@dataclass
class LayerResult:
    """Verification of one layer over every sample."""

    index: int
    op: str
    kernel: str
    isa: str
    bit_exact: bool = True
    differing: int = 0
    first: Mismatch | None = None
    instructions: int | None = field(default=None, compare=False)
    """Instructions the emulator tier counted for the first sample (not in `Report.to_json`,
    which has ``counts``)."""


@dataclass
class Report:
    """Verification of a model on one target."""

    model: str
    target: str
    rounding: str
    samples: int
    layers: list[LayerResult]
    model_bit_exact: bool
    model_first: Mismatch | None = None
    arena_bytes: int = 0
    outputs: list[np.ndarray] = field(default_factory=list, repr=False)

    @property
    def bit_exact(self) -> bool:
        return self.model_bit_exact and all(r.bit_exact for r in self.layers)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        del d["outputs"]
        for la in d["layers"]:
            del la["instructions"]
        d["bit_exact"] = self.bit_exact
        return d


class Runner(Protocol):
    """Runs a generated model's layers and whole model on samples (leading axis of every array).

    ``batch`` is how many samples one call takes (None: all of them).
    """

    batch: int | None

    def run_layer(self, index: int, inputs: Sequence[np.ndarray],
                  out_specs: Sequence[Spec]) -> list[np.ndarray]: ...

    def invoke(self, inputs: Sequence[np.ndarray],
               out_specs: Sequence[Spec]) -> list[np.ndarray]: ...


def _num(v: Any) -> Any:
    return float(v) if np.asarray(v).dtype.kind == "f" else int(v)


def _diff(got: np.ndarray, want: np.ndarray, sample: int, output: int
          ) -> tuple[int, Mismatch | None]:
    """Differing elements of one sample's output and the first of them."""
    diff = np.flatnonzero(got.reshape(-1) != want.reshape(-1))
    if diff.size == 0:
        return 0, None
    i = int(diff[0])
    return int(diff.size), Mismatch(sample, output, i, _num(got.reshape(-1)[i]),
                                    _num(want.reshape(-1)[i]))


def compare(graph: Graph, project: Project, target: str, rounding: str,
            inputs: Sequence[np.ndarray], runner: Runner, progress: Progress | None = None,
            report: type[Report] = Report, *,
            on_layer: Callable[[LayerResult], None] | None = None, **fields: Any) -> Report:
    """Run every layer and the whole model of ``project`` on ``runner`` and compare each output
    with the simulator's, ``runner.batch`` samples at a time.

    ``inputs[k]`` has shape ``[S, *input_shape]``. Layers run in order, each on every sample
    before the next, then the patch layers of the schedule, each on its share of the
    simulator's tensors; ``on_layer`` gets each layer's result as soon as it is complete. Within a
    batch, a layer's first mismatch is that of its lowest output, then lowest sample.
    ``progress`` gets ("compare", runner calls done, calls in all) after every call. Returns a
    ``report`` (a `Report` class) with ``fields``.
    """
    tensors = Interpreter(graph, rounding).run(inputs, keep=True).tensors
    samples = int(inputs[0].shape[0])
    specs = {i: (tuple(t.shape), np.dtype(t.dtype)) for i, t in enumerate(graph.tensors)}
    jobs = [(layer.index, layer, [tensors[t] for t in layer.inputs],
             [tensors[t] for t in layer.outputs], [specs[t] for t in layer.outputs])
            for layer in project.layers]
    for slot, layer, g, sc in project.patch_layers:  # each on its share of the whole tensors
        k = sc.variants.index(layer)
        part = next(p[pos] for p, row in zip(sc.patches, sc.which)
                    for pos, v in enumerate(row) if v == k).span
        cut = (slice(None), slice(None), slice(part.in_rows.lo, part.in_rows.hi),
               slice(part.in_cols.lo, part.in_cols.hi))
        got = (slice(None), slice(None), slice(part.out_rows.lo, part.out_rows.hi),
               slice(part.out_cols.lo, part.out_cols.hi))
        y = g.tensors[layer.outputs[0]]
        jobs.append((slot, layer, [np.ascontiguousarray(tensors[layer.inputs[0]][cut])],
                     [tensors[layer.outputs[0]][got]], [(tuple(y.shape), np.dtype(y.dtype))]))
    results = [LayerResult(i, layer.op.opcode, layer.symbol, layer.spec.isa)
               for i, layer, _, _, _ in jobs]
    outputs = [np.zeros((samples, *specs[t][0]), specs[t][1]) for t in graph.outputs]
    model_ok, model_first = True, None
    step = runner.batch or samples
    batches = [(lo, min(lo + step, samples)) for lo in range(0, samples, step)]
    total, done = len(batches) * (len(results) + 1), 0
    if progress:
        progress("compare", 0, total)
    for (index, _, ins, want, out_specs), res in zip(jobs, results):
        for lo, hi in batches:
            got = runner.run_layer(index, [x[lo:hi] for x in ins], out_specs)
            for k, w in enumerate(want):
                for s in range(lo, hi):
                    n, mm = _diff(got[k][s - lo], w[s], s, k)
                    if n:
                        res.bit_exact = False
                        res.differing += n
                        res.first = res.first or mm
            done += 1
            if progress:
                progress("compare", done, total)
        if on_layer:
            on_layer(res)
    for lo, hi in batches:
        outs = runner.invoke([x[lo:hi] for x in inputs], [specs[t] for t in graph.outputs])
        for k, t in enumerate(graph.outputs):
            outputs[k][lo:hi] = outs[k]
            for s in range(lo, hi):
                n, mm = _diff(outs[k][s - lo], tensors[t][s], s, k)
                if n:
                    model_ok = False
                    model_first = model_first or mm
        done += 1
        if progress:
            progress("compare", done, total)
    return report(graph.name, target, rounding, samples, results, model_ok, model_first,
                  arena_bytes=project.plan.arena_bytes, outputs=outputs, **fields)
