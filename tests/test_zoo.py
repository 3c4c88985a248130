"""Every converter-made zoo model: simulated outputs equal the classic TFLite reference."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import ZOO, ZOO_MODELS, zoo_inputs
from qlane.sim import Interpreter, load_tflite


@pytest.mark.parametrize("name", ZOO_MODELS)
def test_zoo_outputs_match_classic_reference(name: str) -> None:
    graph = load_tflite(ZOO / f"{name}.tflite")
    ref = np.load(ZOO / f"{name}.tfl214.npz")
    result = Interpreter(graph).run(zoo_inputs(name))
    for k, got in enumerate(result.outputs):
        want = ref[f"out{k}"]
        assert got.dtype == want.dtype and got.shape == want.shape
        diff = np.flatnonzero(got.astype(np.int64) != want.astype(np.int64))
        assert diff.size == 0, (
            f"{name} out{k}: {diff.size} of {want.size} differ; first at flat index {diff[0]}: "
            f"got {got.flat[diff[0]]}, want {want.flat[diff[0]]}"
        )


@pytest.mark.parametrize("name", [m for m in ZOO_MODELS if "mobilenet" in m])
def test_mobilenet_every_intermediate_tensor(name: str) -> None:
    graph = load_tflite(ZOO / f"{name}.tflite")
    tensors = np.load(ZOO / f"{name}.tensors.npz")
    result = Interpreter(graph).run(zoo_inputs(name), keep=True)
    checked = 0
    for key in tensors:
        index = int(key[1:])
        if graph.tensors[index].is_constant:
            continue
        got, want = result.tensors[index], tensors[key]
        np.testing.assert_array_equal(got, want, err_msg=graph.tensors[index].describe())
        checked += 1
    assert checked == len(list(tensors)) >= len(graph.operators) - 1


@pytest.mark.parametrize("name", [m for m in ZOO_MODELS if "fc" in m])
def test_litert_rounding_reproduces_litert_fully_connected(name: str) -> None:
    """``--rounding litert`` reproduces LiteRT 2.3's float-requantized reference FC."""
    graph = load_tflite(ZOO / f"{name}.tflite")
    d = np.load(ZOO / f"{name}.npz")
    got = Interpreter(graph, rounding="litert").run(zoo_inputs(name)).outputs[0]
    np.testing.assert_array_equal(got, d["out0"])
