"""Instruction budgets of the DSP (Cortex-M4), NEON (Cortex-A53) and Helium (Cortex-M55, on QEMU:
an optional tier that skips with the reason where it cannot run) kernels on small layers.

Keeps the kernels from regressing without timing anything: emulated instruction counts are
deterministic, so every kernel family gets a budget of instructions per MAC (per window addition
for pools, per output for ADD) on one small, MobileNet-like layer, in uint8 (per-tensor) and
int8 (per-channel), with a ReLU-like output stage (zero point at the bottom of the range) and a
general one (zero point mid-range, clamps on both sides). A layer must
- run the expected kernel family (op and ISA of its symbol: no silent portable C fallback),
- stay within its budget, and
- not be far below it (``test_budget_is_not_stale``): lower the budget when a kernel gets faster.

The families, their layers' shapes, the chips they are measured on and the budgets are one table,
`qlane.codegen.families` (the layers themselves: tests/family_layers.py); budgets hold for the zig
they were measured with (`MEASURED_WITH_ZIG`) and skip on another. Correctness is tested
elsewhere; the emulated outputs are still compared with the simulator here because it is cheap.
All layers of a target share one graph, so each target costs one cached cross build
(``qlane.codegen.cross.build_elf``) and one emulator.
"""

from __future__ import annotations

import math
import tempfile
from functools import cache
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytest

try:
    import fcntl
except ImportError:  # not POSIX: concurrent workers may build the same image twice
    fcntl = None

pytest.importorskip("unicorn")
pytest.importorskip("capstone")
pytest.importorskip("elftools")
pytest.importorskip("ziglang")

from family_layers import case_graph  # noqa: E402
from peers import merge_graphs, random_input  # noqa: E402
from qlane.codegen.cost import layer_features  # noqa: E402
from qlane.codegen.cross import CrossError, build_elf, zig_version  # noqa: E402
from qlane.codegen.emit import generate  # noqa: E402
from qlane.codegen.families import (  # noqa: E402
    BY_NAME,
    CHIPS,
    DTYPES,
    FAMILIES,
    MEASURED_WITH_ZIG,
    STAGES,
    STALE,
    budget_chips,
    budget_rows,
    dtypes_of,
)
from qlane.codegen.machine import llvm_decode, machine_for  # noqa: E402
from qlane.codegen.names import parse_symbol  # noqa: E402
from qlane.codegen.qemu import available as qemu_available  # noqa: E402
from qlane.codegen.targets import load_target  # noqa: E402
from qlane.sim.interpreter import Interpreter  # noqa: E402
from qlane.sim.quant import activation_range  # noqa: E402

SAMPLES = 2
"""Inputs per layer compared with the simulator; the instructions of the first are counted."""


def _zig() -> str:
    try:
        return zig_version()
    except CrossError as e:
        return str(e)


ZIG = _zig()
measured_zig = pytest.mark.skipif(
    ZIG != MEASURED_WITH_ZIG,
    reason=f"budgets were measured with zig {MEASURED_WITH_ZIG}; this is zig {ZIG}")
"""Instruction counts depend on the compiler: budgets hold for the version they were measured
with (the ``test`` extra pins it)."""

Case = tuple[str, str, str]
"""(family, dtype, clamp)"""


# --------------------------------------------------------------------------------------------
# Measurement: every case of a target in one graph, one cached build, one emulator


class Measured(NamedTuple):
    """One budgeted layer as emulated: its kernel, instructions and amount of work."""

    symbol: str
    instructions: int
    work: int  # MACs; window additions for pools; outputs for ops with neither
    unit: str
    differing: int  # output values that differ from the simulator's

    @property
    def per_unit(self) -> float:
        return self.instructions / self.work


@cache
def measure(target: str) -> dict[Case, Measured]:
    """Every budgeted layer of ``target`` emulated on the simulator's inputs (once per process)."""
    tg = load_target(target)
    if tg.emulator == "qemu" and (why := qemu_available() or llvm_decode.available()):
        pytest.skip(why)
    cases = [(f, d, c) for t, f, d, c, _ in budget_rows() if t == target]
    graph, first_op = merge_graphs([case_graph(*case) for case in cases], name="budget")
    rng = np.random.default_rng(1)
    inputs = [random_input(rng, graph.tensors[i].shape, graph.tensors[i].dtype, SAMPLES)
              for i in graph.inputs]
    tensors = Interpreter(graph).run(inputs, keep=True).tensors
    project = generate(graph, tg)
    root = Path(tempfile.gettempdir()) / "qlane-cross"  # build_elf's default, cached by content
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f"budget-{target}.lock", "w") as lock:
        if fcntl is not None:  # pytest-xdist workers wait for one build instead of racing
            fcntl.flock(lock, fcntl.LOCK_EX)
        elf = build_elf(project, tg, root)
    emu = machine_for(elf, tg)
    out = {}
    for case, index in zip(cases, first_op):
        layer = project.layers[index]
        specs = [(graph.tensors[t].shape, graph.tensors[t].dtype) for t in layer.outputs]
        got, counts = emu.run_layer(index, [tensors[t] for t in layer.inputs], specs,
                                    count_samples=[0])
        differing = sum(int(np.count_nonzero(g != tensors[t]))
                        for g, t in zip(got, layer.outputs))
        features = layer_features(layer, graph)
        work, unit = int(features["macs"]), "MAC"
        if not layer.macs:
            unit = "addition" if work else "output"
            work = work or int(features["outputs"])
        out[case] = Measured(layer.symbol, counts[0]["instructions"], work, unit, differing)
    return out


def _cases() -> list[Any]:
    return [pytest.param(t, f, d, c, b, id=f"{t}-{f}-{d}-{c}") for t, f, d, c, b in budget_rows()]


# --------------------------------------------------------------------------------------------
# Tests


def test_budget_table_is_well_formed() -> None:
    keys = [row[:4] for row in budget_rows()]
    assert len(set(keys)) == len(keys) == sum(len(f.budgets) for f in FAMILIES)
    assert len(BY_NAME) == len(FAMILIES), "duplicate family names"
    for f in FAMILIES:
        for (chip, dtype, clamp), budget in f.budgets.items():
            assert chip in CHIPS and dtype in DTYPES and clamp in STAGES, (f.name, chip)
            assert budget > 0
        # a family measured on a chip has every dtype and output stage there
        assert set(f.budgets) == {(c, d, s) for c in f.chips for d in dtypes_of(c)
                                  for s in STAGES}


def test_measured_with_the_pinned_zig() -> None:
    """The ``test`` extra pins the zig the budgets were measured with; the runtime needs less."""
    text = (Path(__file__).resolve().parent.parent / "pyproject.toml").read_text()
    assert f'"ziglang=={MEASURED_WITH_ZIG}"' in text
    assert '"ziglang>=0.13"' in text


@pytest.mark.parametrize("family", [f.name for f in FAMILIES])
def test_cases_have_both_output_stages(family: str) -> None:
    """"relu": zero point at the bottom, no clamp inside the range; "mid": zero point inside,
    clamps on both sides (the output stage the kernels cannot specialise away)."""
    for dtype in DTYPES:
        info = np.iinfo(np.dtype(dtype))
        for clamp in STAGES:
            graph = case_graph(family, dtype, clamp)
            op = graph.operators[0]
            q = graph.tensors[op.outputs[0]].quant
            lo, hi = activation_range(op.options["activation"], q, dtype)
            if clamp == "relu":
                assert (q.zp, lo, hi) == (info.min, info.min, info.max), (dtype, q.zp, lo, hi)
            else:
                assert info.min < lo < q.zp < hi < info.max, (dtype, q.zp, lo, hi)


@pytest.mark.parametrize("chip", list(CHIPS))
def test_every_chip_gets_the_family_kernels(chip: str) -> None:
    """Each family layer, on every chip whose ISA has the family, is generated as that family's
    kernel on that ISA (no fallback to portable C; M7 and A72 share the M4's and A53's)."""
    bad = []
    for f in FAMILIES:
        if CHIPS[chip] not in f.isas:
            continue
        for dtype in dtypes_of(chip):
            for clamp in STAGES:
                ks = parse_symbol(generate(case_graph(f.name, dtype, clamp),
                                           load_target(chip)).layers[0].symbol)
                if (ks.op, ks.isa, ks.dtype) != (f.op, CHIPS[chip], dtype) or \
                        not f.matches(ks.op, ks.variant):
                    bad.append(f"{f.name} {dtype} {clamp}: {ks.op} {ks.variant} on {ks.isa}")
    assert not bad, f"{chip}: " + "; ".join(bad)


@measured_zig
@pytest.mark.parametrize(("target", "family", "dtype", "clamp", "budget"), _cases())
def test_kernel_within_budget(target: str, family: str, dtype: str, clamp: str,
                              budget: float) -> None:
    """The expected kernel family runs, within its instruction budget."""
    m = measure(target)[family, dtype, clamp]
    ks = parse_symbol(m.symbol)
    fam = BY_NAME[family]
    want = (fam.op, fam.variant or ks.variant, CHIPS[target], dtype)
    assert (ks.op, ks.variant, ks.isa, ks.dtype) == want, (
        f"{target} {family} {dtype} {clamp}: kernel {m.symbol}, expected "
        f"{' '.join(want[:2])} on {CHIPS[target]} (a fallback to portable C?)")
    assert m.per_unit <= budget, (
        f"{target} {family} {dtype} {clamp} ({m.symbol}): {m.per_unit:.4f} instructions per "
        f"{m.unit} > budget {budget} ({m.instructions:,} instructions / {m.work:,})")


@measured_zig
@pytest.mark.parametrize(("target", "family", "dtype", "clamp", "budget"), _cases())
def test_budget_is_not_stale(target: str, family: str, dtype: str, clamp: str,
                             budget: float) -> None:
    """A budget more than twice the measurement hides regressions: lower it after a speed-up."""
    m = measure(target)[family, dtype, clamp]
    assert m.per_unit >= STALE * budget, (
        f"{target} {family} {dtype} {clamp} ({m.symbol}): {m.per_unit:.4f} instructions per "
        f"{m.unit} < {STALE} x budget {budget}: lower its budget in "
        f"codegen/families.py to "
        f"{math.ceil(m.per_unit * 1.03 * 1000) / 1000}")


@pytest.mark.parametrize("target", budget_chips())
def test_budgeted_layers_equal_the_simulator(target: str) -> None:
    """The emulated layers give the simulator's outputs, bit for bit (cheap, so checked here)."""
    bad = [f"{' '.join(case)} ({m.symbol}): {m.differing} values differ"
           for case, m in measure(target).items() if m.differing]
    assert not bad, "\n".join(bad)
