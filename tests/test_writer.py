"""write_tflite: zoo models round-trip exactly, and peers run the re-written files."""

from __future__ import annotations

import numpy as np
import pytest
import tflite

from conftest import ZOO, ZOO_MODELS, zoo_inputs
from peers import (
    GraphBuilder,
    assert_graphs_equal,
    run_litert,
    run_tflm,
    single_op_graph,
    spec,
)
from qlane.sim import Graph, QuantParams, load_tflite
from qlane.sim.writer import OPCODES, write_tflite


@pytest.mark.parametrize("name", ZOO_MODELS)
def test_zoo_model_round_trips(name: str) -> None:
    graph = load_tflite(ZOO / f"{name}.tflite")
    again = load_tflite(write_tflite(graph))
    assert_graphs_equal(graph, again)
    assert sum(t.is_constant for t in again.tensors) == sum(t.is_constant for t in graph.tensors)


@pytest.mark.parametrize("name", [m for m in ZOO_MODELS if "mobilenet" in m])
def test_litert_runs_rewritten_mobilenet_identically(name: str) -> None:
    original = (ZOO / f"{name}.tflite").read_bytes()
    rewritten = write_tflite(load_tflite(original))
    x = zoo_inputs(name)
    want = run_litert(original, x)
    got = run_litert(rewritten, x)
    assert len(got) == 1 and got[0].shape == (x[0].shape[0], 1, 1001)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[0], np.load(ZOO / f"{name}.npz")["out0"])


def test_tflm_runs_rewritten_int8_models() -> None:
    for name in ("i8_fc_3x13_to5", "i8_conv_9x7x5_k3x2_valid_dil2", "i8_concat_7x9x3_7x9x5_axis3"):
        rewritten = write_tflite(load_tflite(ZOO / f"{name}.tflite"))
        got = run_tflm(rewritten, zoo_inputs(name))
        np.testing.assert_array_equal(got[0], np.load(ZOO / f"{name}.npz")["out0_tflm"])


def _model(data: bytes) -> tflite.Model:
    return tflite.Model.GetRootAsModel(data, 0)


def test_header_version_buffers_and_alignment() -> None:
    graph = load_tflite(ZOO / "i8_conv_12x10x16_k3_same_to24.tflite")
    data = write_tflite(graph)
    assert data[4:8] == b"TFL3"
    assert tflite.Model.ModelBufferHasIdentifier(data, 0)
    model = _model(data)
    assert model.Version() == 3
    assert model.Buffers(0).DataLength() == 0
    sub = model.Subgraphs(0)
    assert list(sub.InputsAsNumpy()) == graph.inputs
    assert list(sub.OutputsAsNumpy()) == graph.outputs
    constants = [t for t in graph.tensors if t.is_constant]
    assert model.BuffersLength() == 1 + len(constants)
    for t in constants:
        buf = model.Buffers(sub.Tensors(t.index).Buffer())
        assert buf.DataLength() == t.nbytes
        start = buf._tab.Vector(buf._tab.Offset(4))
        assert start % 16 == 0
        assert data[start:start + t.nbytes] == t.data.tobytes()
    non_constant = [t.index for t in graph.tensors if not t.is_constant]
    assert all(sub.Tensors(i).Buffer() == 0 for i in non_constant)


def test_operator_codes_above_127_use_the_placeholder() -> None:
    q = QuantParams(np.float32(0.5), 3)
    graph = single_op_graph("CUMSUM", [spec([4], np.int8, q), spec([], np.int32, data=[0])],
                            [spec([4], np.int8, q)])
    oc = _model(write_tflite(graph)).OperatorCodes(0)
    assert (oc.BuiltinCode(), oc.DeprecatedBuiltinCode(), oc.Version()) == (128, 127, 1)
    graph = single_op_graph("ADD", [spec([4], np.uint8, q)] * 2, [spec([4], np.uint8, q)])
    oc = _model(write_tflite(graph)).OperatorCodes(0)
    assert (oc.BuiltinCode(), oc.DeprecatedBuiltinCode(), oc.Version()) == (0, 0, 1)
    assert OPCODES["HARD_SWISH"] == 117 and OPCODES["CONV_2D"] == 3


def test_custom_operator_code() -> None:
    q = QuantParams(np.float32(0.5), 3)
    graph = single_op_graph("CUSTOM", [spec([4], np.int8, q)], [spec([4], np.int8, q)],
                            {"custom_code": "MyOp"})
    oc = _model(write_tflite(graph)).OperatorCodes(0)
    assert (oc.BuiltinCode(), oc.DeprecatedBuiltinCode(), oc.CustomCode()) == (32, 32, b"MyOp")


def test_per_axis_quantization_keeps_dimension_and_zero_points() -> None:
    g = GraphBuilder()
    x = g.add(spec([1, 2, 2, 3], np.int8, QuantParams(np.float32(0.1), -5), name="x"))
    w = QuantParams(np.array([0.5, 0.25, 0.125], np.float32), np.array([0, 1, -2]), axis=3)
    i = g.add(spec([1, 2, 2, 3], np.int8, w, data=np.arange(12) - 6, name="w"))
    o = g.add(spec([1, 2, 2, 3], np.int8, QuantParams(np.float32(0.1), -5), name="y"))
    g.op("ADD", [x, i], [o], activation="NONE")
    graph = g.build([x], [o])
    data = write_tflite(graph)
    q = _model(data).Subgraphs(0).Tensors(i).Quantization()
    assert q.QuantizedDimension() == 3
    np.testing.assert_array_equal(q.ZeroPointAsNumpy(), [0, 1, -2])
    np.testing.assert_array_equal(q.ScaleAsNumpy(), np.array([0.5, 0.25, 0.125], np.float32))
    assert_graphs_equal(graph, load_tflite(data))


OPTIONS = [
    ("CONV_2D", dict(padding="VALID", stride_h=2, stride_w=3, dilation_h=4, dilation_w=5,
                     activation="RELU6")),
    ("DEPTHWISE_CONV_2D", dict(padding="SAME", stride_h=3, stride_w=1, dilation_h=1,
                               dilation_w=2, depth_multiplier=4, activation="RELU_N1_TO_1")),
    ("FULLY_CONNECTED", dict(activation="RELU", keep_num_dims=True)),
    ("AVERAGE_POOL_2D", dict(padding="VALID", stride_h=2, stride_w=1, filter_h=3, filter_w=5,
                             activation="RELU")),
    ("MAX_POOL_2D", dict(padding="SAME", stride_h=1, stride_w=2, filter_h=2, filter_w=4,
                         activation="NONE")),
    ("ADD", dict(activation="RELU6")),
    ("MUL", dict(activation="RELU")),
    ("CONCATENATION", dict(axis=-1, activation="NONE")),
    ("SOFTMAX", dict(beta=0.75)),
    ("MEAN", dict(keep_dims=True)),
    ("RESHAPE", dict(new_shape=(2, -1))),
    ("RESHAPE", dict(new_shape=None)),
    ("RESHAPE", {}),
    ("PAD", {}), ("LOGISTIC", {}), ("TANH", {}), ("HARD_SWISH", {}), ("QUANTIZE", {}),
    ("DEQUANTIZE", {}), ("RELU", {}), ("RELU6", {}), ("RELU_N1_TO_1", {}),
]


_SHAPES = {  # (input, weights, output) that agree with the options in OPTIONS
    "CONV_2D": ([1, 9, 9, 2], [3, 1, 1, 2], [1, 5, 3, 3]),
    "DEPTHWISE_CONV_2D": ([1, 9, 9, 2], [1, 1, 1, 8], [1, 3, 9, 8]),
    "FULLY_CONNECTED": ([2, 3], [4, 3], [2, 4]),
}


def _one_op(opcode: str, options: dict) -> Graph:
    q = QuantParams(np.float32(0.02), 7)
    if opcode not in _SHAPES:
        return single_op_graph(opcode, [spec([2, 3], np.uint8, q)], [spec([2, 3], np.uint8, q)],
                               options)
    x, w, y = _SHAPES[opcode]
    units = y[-1]
    return single_op_graph(
        opcode,
        [spec(x, np.uint8, q), spec(w, np.uint8, q, data=np.arange(np.prod(w)) % 256),
         spec([units], np.int32, QuantParams(np.float32(0.0004), 0), data=np.arange(units))],
        [spec(y, np.uint8, q)], options)


@pytest.mark.parametrize("opcode,options", OPTIONS, ids=[f"{o}-{i}" for i, (o, _) in
                                                         enumerate(OPTIONS)])
def test_builtin_options_round_trip(opcode: str, options: dict) -> None:
    again = load_tflite(write_tflite(_one_op(opcode, options)))
    assert again.operators[0].opcode == opcode
    assert again.operators[0].options == options


def test_options_defaults_fill_absent_keys() -> None:
    options = load_tflite(write_tflite(_one_op("FULLY_CONNECTED", {}))).operators[0].options
    assert options == dict(activation="NONE", keep_num_dims=False)
    graph = _one_op("CONV_2D", {"stride_h": 2, "stride_w": 3, "padding": "VALID"})
    options = load_tflite(write_tflite(graph)).operators[0].options
    assert options == dict(padding="VALID", stride_h=2, stride_w=3, dilation_h=1, dilation_w=1,
                           activation="NONE")
