"""load_tflite rejects every defective model with a one-line ModelError naming the culprit."""

from __future__ import annotations

import struct
import time
from pathlib import Path

import numpy as np
import pytest
import tflite

from conftest import ZOO
from peers import GraphBuilder, single_op_graph, spec
from qlane.sim import Graph, Interpreter, ModelError, QuantParams, Tensor, load_tflite
from qlane.sim.writer import write_tflite

Q = QuantParams(np.float32(0.05), 3)
WQ = QuantParams(np.float32(0.01), 128)
BQ = QuantParams(np.float32(0.0005), 0)


def _conv(x=(1, 5, 5, 3), w=(4, 3, 3, 3), bias=4, y=(1, 5, 5, 4), opcode="CONV_2D",
          **options) -> Graph:
    """A uint8 convolution-family graph whose parts can be made to disagree."""
    options = {"padding": "SAME", **options}
    ins = [spec(x, np.uint8, Q, name="input"),
           spec(w, np.uint8, WQ, data=np.full(w, 130), name="weights")]
    if bias is not None:
        ins.append(spec([bias], np.int32, BQ, data=np.arange(bias), name="bias"))
    return single_op_graph(opcode, ins, [spec(y, np.uint8, Q, name="output")], options)


def _error(source) -> str:
    with pytest.raises(ModelError) as info:
        load_tflite(source)
    message = str(info.value)
    assert "\n" not in message and len(message) < 400, message
    return message


def _field_pos(table, slot: int) -> int:
    offset = table._tab.Offset(slot)
    assert offset, f"field {slot} absent"
    return table._tab.Pos + offset


def _patched(data: bytes, pos: int, fmt: str, value: int) -> bytes:
    out = bytearray(data)
    struct.pack_into(fmt, out, pos, value)
    return bytes(out)


def _model(data: bytes) -> tflite.Model:
    return tflite.Model.GetRootAsModel(data, 0)


def test_valid_models_load() -> None:
    for graph in (_conv(), _conv(opcode="DEPTHWISE_CONV_2D", w=(1, 3, 3, 6), bias=6,
                                 y=(1, 5, 5, 6), depth_multiplier=2)):
        again = load_tflite(write_tflite(graph))
        assert [t.name for t in again.tensors] == ["input", "weights", "bias", "output"]
        assert again.operators[0].opcode == graph.operators[0].opcode


def test_float_model() -> None:
    g = GraphBuilder()
    x = g.add(spec([1, 4], np.float32, name="x"))
    w = g.add(spec([2, 4], np.float32, data=np.ones((2, 4)), name="w"))
    y = g.add(spec([1, 2], np.float32, name="y"))
    g.op("FULLY_CONNECTED", [x, w, -1], [y])
    assert "float model" in _error(write_tflite(g.build([x], [y])))


@pytest.mark.parametrize("opcode", ["SQUARED_DIFFERENCE", "CUMSUM", "LSTM"])
def test_unsupported_builtin_operator(opcode: str) -> None:
    graph = single_op_graph(opcode, [spec([4], np.int8, Q), spec([4], np.int8, Q)],
                            [spec([4], np.int8, Q)])
    message = _error(write_tflite(graph))
    assert message.startswith(f"operator 0 ({opcode}): ") and "not supported" in message


def test_custom_operator() -> None:
    graph = single_op_graph("CUSTOM", [spec([4], np.int8, Q)], [spec([4], np.int8, Q)],
                            {"custom_code": "TFLite_Detection_PostProcess"})
    assert _error(write_tflite(graph)) == (
        "operator 0: custom operator 'TFLite_Detection_PostProcess' is not supported")


@pytest.mark.parametrize("dtype,name", [(np.bool_, "BOOL"), (np.complex64, "COMPLEX64"),
                                        (np.uint16, "UINT16")])
def test_unsupported_dtype(dtype, name: str) -> None:
    graph = single_op_graph("ADD", [spec([4], np.int8, Q, name="a"),
                                    spec([4], dtype, name="odd")], [spec([4], np.int8, Q)])
    assert _error(write_tflite(graph)) == f"tensor 1 'odd': dtype {name} is not supported"


def test_8bit_tensor_without_quantization() -> None:
    graph = single_op_graph("ADD", [spec([4], np.int8, Q), spec([4], np.int8, name="raw")],
                            [spec([4], np.int8, Q)])
    message = _error(write_tflite(graph))
    assert message.startswith("operator 0 (ADD): tensor 1 'raw'") and "no quantization" in message


@pytest.mark.parametrize("graph,fragment", [
    (_conv(w=(4, 3, 3, 2)), "weights tensor 1 'weights' [4, 3, 3, 2] uint8 have 2 input "
                            "channels, input tensor 0 'input' [1, 5, 5, 3] uint8 has 3"),
    (_conv(bias=5), "bias tensor 2 'bias' [5] int32 must hold 4 values"),
    (_conv(y=(1, 5, 5, 3)), "should be [1, 5, 5, 4]"),
    (_conv(padding="VALID"), "should be [1, 3, 3, 4]"),
    (_conv(stride_h=2), "should be [1, 3, 5, 4]"),
    (_conv(x=(1, 5, 3), y=(1, 5, 4)), "must be 4-D"),
    (_conv(opcode="DEPTHWISE_CONV_2D", w=(1, 3, 3, 4), y=(1, 5, 5, 4), depth_multiplier=2),
     "must be [1, kh, kw, 3 x depth_multiplier 2]"),
    (_conv(opcode="FULLY_CONNECTED", x=(2, 10), w=(4, 3), y=(2, 4)),
     "does not split into rows of depth 3"),
    (_conv(opcode="FULLY_CONNECTED", x=(2, 3), w=(4, 3), y=(2, 5)), "must hold 2 rows of 4"),
], ids=["conv-channels", "conv-bias", "conv-out-channels", "conv-valid", "conv-stride",
        "conv-rank", "dw-multiplier", "fc-depth", "fc-units"])
def test_inconsistent_shapes(graph: Graph, fragment: str) -> None:
    message = _error(write_tflite(graph))
    assert message.startswith(f"operator 0 ({graph.operators[0].opcode}): ")
    assert fragment in message


def test_inconsistent_elementwise_shapes_fail_at_prepare_naming_the_operator() -> None:
    graph = single_op_graph("ADD", [spec([2, 3], np.int8, Q), spec([4, 5], np.int8, Q)],
                            [spec([2, 3], np.int8, Q)], {"activation": "NONE"})
    loaded = load_tflite(write_tflite(graph))
    with pytest.raises(ModelError, match=r"^operator 0 \(ADD\): "):
        Interpreter(loaded)


def test_buffer_size_mismatch() -> None:
    graph = _conv()
    w = graph.tensors[1]
    graph.tensors[1] = Tensor(w.index, w.name, w.shape, w.dtype, w.quant,
                              np.zeros(w.size - 1, np.uint8))
    assert _error(write_tflite(graph)) == (
        "tensor 1 'weights': buffer 1 holds 107 bytes, shape [4, 3, 3, 3] of uint8 needs 108")


def test_out_of_range_indices() -> None:
    graph = _conv()
    graph.operators[0].inputs = (0, 1, 9)
    assert _error(write_tflite(graph)) == (
        "operator 0 (CONV_2D): tensor index 9 out of range (model has 4)")
    graph = _conv()
    graph.outputs = [4]
    assert _error(write_tflite(graph)) == "graph output: tensor index 4 out of range (model has 4)"

    data = write_tflite(_conv())
    sub = _model(data).Subgraphs(0)
    bad = _patched(data, _field_pos(sub.Tensors(1), 8), "<I", 77)
    assert _error(bad) == "tensor 1 'weights': buffer index 77 out of range (model has 3)"
    g = GraphBuilder()
    x, h, y = (g.add(spec([4], np.int8, Q, name=n)) for n in "xhy")
    g.op("RELU", [x], [h])
    g.op("RELU6", [h], [y])
    data = write_tflite(g.build([x], [y]))
    bad = _patched(data, _field_pos(_model(data).Subgraphs(0).Operators(1), 4), "<I", 5)
    assert _error(bad) == "operator 1: opcode index 5 out of range (model has 2)"


def test_dataflow_errors() -> None:
    g = GraphBuilder()
    x = g.add(spec([4], np.int8, Q, name="x"))
    h = g.add(spec([4], np.int8, Q, name="h"))
    y = g.add(spec([4], np.int8, Q, name="y"))
    g.op("RELU", [h], [y])
    g.op("RELU", [x], [h])
    message = _error(write_tflite(g.build([x], [y])))
    assert message.startswith("operator 0 (RELU): input tensor 1 'h'")
    g = GraphBuilder()
    x = g.add(spec([4], np.int8, Q, name="x"))
    y = g.add(spec([4], np.int8, Q, name="y"))
    g.op("RELU", [x], [x])
    assert "output tensor 0 'x' [4] int8 is already" in _error(write_tflite(g.build([x], [x])))
    g = GraphBuilder()
    x = g.add(spec([4], np.int8, Q, name="x"))
    y = g.add(spec([4], np.int8, Q, name="y"))
    z = g.add(spec([4], np.int8, Q, name="z"))
    g.op("RELU", [x], [y])
    assert _error(write_tflite(g.build([x], [z]))) == (
        "graph output tensor 2 'z' [4] int8 is never computed")


@pytest.mark.parametrize("options,fragment", [
    ({"stride_w": 0}, "option stride_w = 0 must be at least 1"),
    ({"dilation_h": -3}, "option dilation_h = -3 must be at least 1"),
])
def test_invalid_options(options: dict, fragment: str) -> None:
    assert _error(write_tflite(_conv(**options))) == f"operator 0 (CONV_2D): {fragment}"


def test_invalid_quantization() -> None:
    graph = single_op_graph("RELU", [spec([3], np.int8, QuantParams(np.float32(-0.5), 0),
                                          name="neg")], [spec([3], np.int8, Q)])
    assert _error(write_tflite(graph)) == (
        "tensor 0 'neg': quantization scales must be positive and finite")
    per_axis = QuantParams(np.array([0.1, 0.2], np.float32), np.zeros(2), axis=1)
    graph = single_op_graph("RELU", [spec([3, 3], np.int8, per_axis, name="pa")],
                            [spec([3, 3], np.int8, Q)])
    assert _error(write_tflite(graph)) == (
        "tensor 0 'pa': 2 per-axis scales do not match dimension 1 of shape [3, 3]")


def test_zero_point_outside_the_dtype_range_and_implausible_scales() -> None:
    graph = single_op_graph("RELU", [spec([3], np.int8, QuantParams(np.float32(0.5), 128),
                                          name="x")], [spec([3], np.int8, Q)])
    assert _error(write_tflite(graph)) == (
        "tensor 0 'x': zero point 128 is outside the int8 range [-128, 127]")
    graph = single_op_graph("RELU", [spec([3], np.uint8, QuantParams(np.float32(1e-30), 0),
                                          name="x")], [spec([3], np.uint8, Q)])
    assert _error(write_tflite(graph)) == (
        "tensor 0 'x': quantization scale 1e-30 is outside the plausible range [1e-20, 1e+20]")


def test_empty_8bit_tensor() -> None:
    graph = single_op_graph("RELU", [spec([2, 0], np.int8, Q, name="x")],
                            [spec([2, 0], np.int8, Q)])
    assert _error(write_tflite(graph)) == "tensor 0 'x': int8 tensor of shape [2, 0] is empty"


def test_negative_shape_and_schema_version() -> None:
    graph = single_op_graph("RELU", [spec([3], np.int8, Q, name="x")], [spec([3], np.int8, Q)])
    graph.tensors[0].shape = (1, -1)
    assert "tensor 0 'x': dynamic or negative shape [1, -1]" in _error(write_tflite(graph))
    data = write_tflite(_conv())
    bad = _patched(data, _field_pos(_model(data), 4), "<I", 2)
    assert _error(bad) == "model: schema version 2, qlane reads version 3"


@pytest.mark.parametrize("slot_path", ["tensors", "operators", "buffers", "shape", "weights"])
def test_huge_vector_lengths_are_rejected_quickly(slot_path: str) -> None:
    data = write_tflite(_conv())
    model = _model(data)
    sub = model.Subgraphs(0)
    table, slot = {"tensors": (sub, 4), "operators": (sub, 10), "buffers": (model, 12),
                   "shape": (sub.Tensors(0), 4), "weights": (model.Buffers(1), 4)}[slot_path]
    length_pos = table._tab.Vector(table._tab.Offset(slot)) - 4
    bad = _patched(data, length_pos, "<I", 0x7FFFFFF0)
    start = time.perf_counter()
    message = _error(bad)
    assert time.perf_counter() - start < 0.5
    assert "runs past the end of the file" in message or "rank" in message


@pytest.mark.parametrize("name", ["i8_mobilenet_v1_0.25_128", "u8_conv_7x9x3_k3s2_same_relu6"])
def test_truncated_files(name: str) -> None:
    data = (ZOO / f"{name}.tflite").read_bytes()
    for cut in (0, 3, 7, 8, 64, len(data) // 3, len(data) // 2, len(data) - 100, len(data) - 1):
        message = _error(data[:cut])
        assert message.startswith("model: ")


def test_random_bytes_and_empty_input(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    assert "missing 'TFL3' identifier" in _error(rng.bytes(4096))
    assert _error(b"") == "model: file too short to be a .tflite model (0 bytes)"
    empty = tmp_path / "empty.tflite"
    empty.write_bytes(b"")
    assert _error(empty) == "empty: file too short to be a .tflite model (0 bytes)"
    fake = tmp_path / "fake.tflite"
    fake.write_bytes(b"\x1c\x00\x00\x00TFL3" + rng.bytes(200))
    assert _error(fake).startswith("fake: ")


def test_directory_and_missing_path(tmp_path: Path) -> None:
    assert _error(tmp_path) == f"cannot read {tmp_path}: Is a directory"
    missing = tmp_path / "nope.tflite"
    assert _error(missing) == f"cannot read {missing}: No such file or directory"
    assert _error(str(missing)) == f"cannot read {missing}: No such file or directory"
