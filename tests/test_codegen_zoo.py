"""Generated C for every zoo model: bit-exact per layer, and equal to the classic reference.

Host tier on generic, cortex-m7, cortex-a72 and cortex-m55 (MVE through qlane_mve.h's portable C);
emulator tier on cortex-m4 and cortex-a53.

The host build compiles NEON through SIMDe and the DSP intrinsics through qlane_acle.h's
portable C; each layer is compared with the simulator, and the whole model's outputs with the
classic TFLite reference outputs in ``NAME.tfl214.npz``.
"""

from __future__ import annotations

import numpy as np
import pytest

from conftest import ZOO, ZOO_MODELS, deep_for, zoo_inputs, zoo_reference
from peers import merge_graphs
from qlane.codegen.emulate import emulate_verify
from qlane.codegen.machine import llvm_decode
from qlane.codegen.qemu import available as qemu_available
from qlane.codegen.targets import load_target
from qlane.codegen.verify import verify
from qlane.sim import load_tflite

TARGETS = ["generic", "cortex-m7", "cortex-a72", "cortex-m55"]
SMALL = [m for m in ZOO_MODELS if "mobilenet" not in m]
MOBILENETS = [m for m in ZOO_MODELS if "mobilenet" in m]




def _check(names: list[str], target: str, tier=verify) -> None:
    graphs = [load_tflite(ZOO / f"{n}.tflite") for n in names]
    merged, first = merge_graphs(graphs, name="zoo")
    inputs = [x for n in names for x in zoo_inputs(n)]
    report = tier(merged, load_target(target), inputs)
    owner = {}
    for n, start, g in zip(names, first, graphs):
        for k in range(len(g.operators)):
            owner[start + k] = n
    bad = [f"{owner[r.index]} layer {r.index - first[names.index(owner[r.index])]} {r.op} "
           f"({r.kernel}): {r.differing} differ, first {r.first}"
           for r in report.layers if not r.bit_exact]
    assert not bad, "\n".join(bad)
    assert report.model_bit_exact, report.model_first
    outs = iter(report.outputs)
    for n in names:
        for want in zoo_reference(n):
            got = next(outs)
            assert np.array_equal(got, want), f"{n}: C output differs from tfl214 reference"


@pytest.mark.parametrize("target", TARGETS)
def test_zoo_single_op_models(target: str) -> None:
    _check(SMALL, target)


@pytest.mark.parametrize("target", deep_for(TARGETS, "cortex-a72"))
@pytest.mark.parametrize("name", MOBILENETS)
def test_zoo_mobilenet(target: str, name: str) -> None:
    _check([name], target)


@pytest.mark.parametrize("target", ["cortex-m4", "cortex-a53", "cortex-m55"])
def test_zoo_on_the_chip_instruction_set(target: str) -> None:
    """``verify --isa``: zig-built code for the chip, run in unicorn with that CPU model (the
    Cortex-M55 on QEMU's mps3-an547, an optional tier)."""
    if load_target(target).emulator == "qemu" and (
            why := qemu_available() or llvm_decode.available()):
        pytest.skip(why)
    _check(ZOO_MODELS, target, tier=emulate_verify)
