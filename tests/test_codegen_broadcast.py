"""Broadcasting ADD, SUB and MUL in generated C, on every target, host and instruction set.

Every broadcast pattern of ranks 1-4 (each single axis, all but the channel axis, a lower-rank
operand, a one-element operand), both operand orders, uint8 and int8, as independent layers of one
graph; each layer is compared with the simulator (which equals TFLite). A template once indexed
every operand with the loop counter of the dimension loop and got all of them wrong.
"""

from __future__ import annotations

from itertools import cycle
from pathlib import Path

import numpy as np
import pytest

from conftest import deep_for
from peers import GraphBuilder, random_activation_quant, spec
from qlane.codegen.emulate import emulate_verify
from qlane.codegen.targets import load_target
from qlane.codegen.verify import Report, verify
from qlane.sim.graph import Graph

BASE = {1: (6,), 2: (3, 5), 3: (2, 3, 5), 4: (2, 3, 4, 5)}
HOST_TARGETS = ["generic", "cortex-m4", "cortex-m7", "cortex-a53", "cortex-a72"]
ISA_TARGETS = ["cortex-m4", "cortex-m7", "cortex-a53", "cortex-a72"]
SAMPLES = 2


def patterns(rank: int) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """(full shape, broadcast shape) pairs of one rank: every way an operand may broadcast."""
    full = BASE[rank]
    out = []
    for axis in range(rank):  # one axis of size 1
        out.append(tuple(1 if d == axis else n for d, n in enumerate(full)))
    if rank > 1:
        out.append(tuple([1] * (rank - 1) + [full[-1]]))  # per channel, e.g. [1, 1, 1, 5]
        out.append(tuple([full[0]] + [1] * (rank - 1)))  # per batch / row
    for k in range(1, rank):  # lower rank: the trailing k dimensions
        out.append(full[rank - k:])
    out.append((1,))  # one element
    return [(full, b) for b in dict.fromkeys(out) if b != full]


def broadcast_graph(seed: int = 0) -> tuple[Graph, list[np.ndarray], list[str]]:
    """One graph of independent broadcasting layers, their inputs and a label per layer."""
    rng = np.random.default_rng(seed)
    g = GraphBuilder()
    inputs, outputs, data, labels = [], [], [], []
    dtypes = cycle([np.uint8, np.int8])
    for rank in BASE:
        for full, small in patterns(rank):
            for opcode in ("ADD", "SUB", "MUL"):
                for order in ((full, small), (small, full)):
                    dt = next(dtypes)
                    info = np.iinfo(dt)
                    ins = []
                    for shape in order:
                        index = g.add(spec(shape, dt, random_activation_quant(rng, dt)))
                        ins.append(index)
                        inputs.append(index)
                        data.append(rng.integers(info.min, info.max + 1, (SAMPLES, *shape))
                                    .astype(dt))
                    shape = tuple(np.broadcast_shapes(*order))
                    lo, hi = (0.5, 2.0) if opcode == "MUL" else (0.02, 0.2)
                    out = g.add(spec(shape, dt, random_activation_quant(rng, dt, lo, hi)))
                    g.op(opcode, ins, [out])
                    outputs.append(out)
                    labels.append(f"{opcode} {list(order[0])} {list(order[1])} "
                                  f"{np.dtype(dt).name}")
    return g.build(inputs, outputs, name="bcast"), data, labels


@pytest.fixture(scope="module")
def case() -> tuple[Graph, list[np.ndarray], list[str]]:
    return broadcast_graph()


def _check(report: Report, labels: list[str]) -> None:
    bad = [f"{labels[r.index]} ({r.kernel}): {r.differing} differ, first {r.first}"
           for r in report.layers if not r.bit_exact]
    assert not bad, "\n".join(bad)
    assert report.model_bit_exact, report.model_first


def test_patterns_cover_every_axis_and_rank(case) -> None:
    graph, _, labels = case
    assert len(patterns(4)) == 10 and ((2, 3, 4, 1) in [b for _, b in patterns(4)])
    assert len(graph.operators) == len(labels) == 2 * 3 * sum(len(patterns(r)) for r in BASE)
    assert {lab.split()[0] for lab in labels} == {"ADD", "SUB", "MUL"}


@pytest.mark.parametrize("target", deep_for(HOST_TARGETS, "cortex-a72"))
def test_broadcast_host(case, target: str, tmp_path: Path) -> None:
    graph, data, labels = case
    _check(verify(graph, load_target(target), data, build_root=tmp_path), labels)


@pytest.mark.parametrize("target", deep_for(ISA_TARGETS, "cortex-a72"))
def test_broadcast_instruction_set(case, target: str, tmp_path: Path) -> None:
    graph, data, labels = case
    report = emulate_verify(graph, load_target(target), data, build_root=tmp_path, count=False)
    _check(report, labels)
