"""The four MLPerf Tiny int8 models (examples/mlperf_tiny): the simulator against TFLite Micro,
every tensor; the generated code against the simulator on the Cortex-M4 and M7 instruction sets."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from peers import run_tflm
from qlane.api import random_inputs
from qlane.codegen.emulate import emulate_verify
from qlane.codegen.machine import llvm_decode
from qlane.codegen.qemu import available as qemu_available
from qlane.codegen.targets import load_target
from qlane.sim import load_tflite
from qlane.sim.interpreter import Interpreter
from qlane.sim.writer import write_tflite

MLPERF = Path(__file__).resolve().parents[1] / "examples" / "mlperf_tiny"
MODELS = ["vww_96_int8", "kws_ref_model", "pretrainedResnet_quant", "ad01_int8"]


def test_the_four_models_are_here_and_int8() -> None:
    assert sorted(p.stem for p in MLPERF.glob("*.tflite")) == sorted(MODELS)
    notice = (MLPERF / "README.md").read_text()
    assert "Apache License, Version 2.0" in notice and "mlcommons/tiny" in notice
    for name in MODELS:
        graph = load_tflite(str(MLPERF / f"{name}.tflite"))
        assert {np.dtype(t.dtype) for t in graph.input_tensors + graph.output_tensors} == \
            {np.dtype(np.int8)}, name


@pytest.mark.peers
@pytest.mark.parametrize("name", MODELS)
def test_simulation_equals_tflite_micro(name: str) -> None:
    """Every operator's output, read from TFLM by making it a model output, equals the
    simulator's (double rounding, as TFLM's reference kernels), on random inputs."""
    graph = load_tflite(str(MLPERF / f"{name}.tflite"))
    outputs = list(dict.fromkeys(t for op in graph.operators for t in op.outputs))
    exposed = dataclasses.replace(graph, outputs=outputs)
    inputs = random_inputs(graph, samples=3, seed=11)
    want = Interpreter(graph, "double").run(inputs, keep=True).tensors
    got = run_tflm(write_tflite(exposed), inputs)
    assert len(got) == len(outputs)
    for t, y in zip(outputs, got):
        np.testing.assert_array_equal(y, want[t], err_msg=f"{name}: {graph.tensors[t].name}")


@pytest.mark.isa
@pytest.mark.parametrize("target", ["cortex-m4", "cortex-m7", "cortex-m55"])
@pytest.mark.parametrize("name", MODELS)
def test_generated_code_equals_the_simulator_on_the_isa(name: str, target: str) -> None:
    """``verify --isa``: every layer and the whole model, two random samples, alignment checked
    (the Cortex-M55's Helium code on QEMU, an optional tier)."""
    if load_target(target).emulator == "qemu" and (
            why := qemu_available() or llvm_decode.available()):
        pytest.skip(why)
    graph = load_tflite(str(MLPERF / f"{name}.tflite"))
    report = emulate_verify(graph, load_target(target), random_inputs(graph, 2, seed=5))
    bad = [f"layer {r.index} {r.op} ({r.kernel}): {r.differing} differ, first {r.first}"
           for r in report.layers if not r.bit_exact]
    assert not bad, "\n".join(bad)
    assert report.model_bit_exact, report.model_first
    assert report.bit_exact


ROOT = MLPERF.parents[1]
FLASH_MODELS = [*(MLPERF / f"{m}.tflite" for m in MODELS),
                ROOT / "examples" / "mobilenet_v1_0.25_128_u8.tflite",
                ROOT / "tests" / "zoo" / "i8_mobilenet_v1_0.25_128.tflite"]


@pytest.mark.isa
@pytest.mark.parametrize("target", ["cortex-m7", "stm32l4r5"])
@pytest.mark.parametrize("path", FLASH_MODELS, ids=lambda p: p.stem)
def test_flash_image_within_the_parameters_plus_64_kib(path: Path, target: str) -> None:
    """8-bit weights: the cross build's image (code + constants) on both boards of the published
    results is at most 1.05 x the model's parameter bytes + 64 KiB (the Cortex-M4 runs more of
    its kernels as assembly, the M7 more as C)."""
    from qlane import api

    params = sum(t.nbytes for t in api.load_model(str(path)).tensors if t.data is not None)
    flash = api.estimate(str(path), target).flash_bytes
    assert flash <= 1.05 * params + 65536, f"{path.stem}: {flash} B for {params} B of parameters"
