"""Write a :class:`Graph` as a ``.tflite`` flatbuffer with the ``tflite`` package's builders.

The inverse of :func:`qlane.sim.importer.load_tflite`: ``load_tflite(write_tflite(g))`` gives back
``g`` (tensors, quantization, constant data, operators, options). Operators named ``CUSTOM`` take
their custom code from ``options["custom_code"]``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flatbuffers
import numpy as np
import tflite
from tflite.BuiltinOptions import BuiltinOptions as BO
from tflite.utils import BUILTIN_OPCODE2NAME

from .graph import Graph, Operator, Tensor

OPCODES: dict[str, int] = {name: code for code, name in BUILTIN_OPCODE2NAME.items()}

TENSOR_TYPES: dict[np.dtype, int] = {
    np.dtype(np.float32): 0,
    np.dtype(np.float16): 1,
    np.dtype(np.int32): 2,
    np.dtype(np.uint8): 3,
    np.dtype(np.int64): 4,
    np.dtype(np.bool_): 6,
    np.dtype(np.int16): 7,
    np.dtype(np.complex64): 8,
    np.dtype(np.int8): 9,
    np.dtype(np.float64): 10,
    np.dtype(np.complex128): 11,
    np.dtype(np.uint64): 12,
    np.dtype(np.uint32): 15,
    np.dtype(np.uint16): 16,
}

_ACT = {"NONE": 0, "RELU": 1, "RELU_N1_TO_1": 2, "RELU6": 3, "TANH": 4, "SIGN_BIT": 5}
_PAD = {"SAME": 0, "VALID": 1}
_BUFFER_ALIGNMENT = 16
_B = flatbuffers.Builder


def _table(b: _B, prefix: str, fields: list[tuple[str, Any]]) -> int:
    """An options table through the generated ``{prefix}Start/Add{field}/End`` builders."""
    getattr(tflite, f"{prefix}Start")(b)
    for name, value in fields:
        getattr(tflite, f"{prefix}Add{name}")(b, value)
    return getattr(tflite, f"{prefix}End")(b)


def _act(o: dict[str, Any]) -> tuple[str, int]:
    return "FusedActivationFunction", _ACT[o.get("activation", "NONE")]


def _window(o: dict[str, Any]) -> list[tuple[str, Any]]:
    return [("Padding", _PAD[o.get("padding", "SAME")]), ("StrideW", o.get("stride_w", 1)),
            ("StrideH", o.get("stride_h", 1)), _act(o)]


def _dilation(o: dict[str, Any]) -> list[tuple[str, Any]]:
    return [("DilationWFactor", o.get("dilation_w", 1)),
            ("DilationHFactor", o.get("dilation_h", 1))]


def _reshape(b: _B, o: dict[str, Any]) -> int:
    new_shape = o.get("new_shape")
    if new_shape is None:
        return _table(b, "ReshapeOptions", [])
    vec = b.CreateNumpyVector(np.asarray(new_shape, np.int32))
    return _table(b, "ReshapeOptions", [("NewShape", vec)])


_FieldsOf = Callable[[dict[str, Any]], list[tuple[str, Any]]]


def _fields(prefix: str, fields: _FieldsOf) -> Callable[[_B, dict[str, Any]], int]:
    return lambda b, o: _table(b, prefix, fields(o))


# opcode -> (BuiltinOptions union type, builder); RESHAPE writes options only when the graph's
# options carry ``new_shape`` (a converter-made RESHAPE with a shape input has none).
_OPTIONS: dict[str, tuple[int, Callable[[_B, dict[str, Any]], int]]] = {
    "CONV_2D": (BO.Conv2DOptions, _fields("Conv2DOptions", lambda o: _window(o) + _dilation(o))),
    "DEPTHWISE_CONV_2D": (BO.DepthwiseConv2DOptions, _fields(
        "DepthwiseConv2DOptions", lambda o: _window(o) + _dilation(o) + [
            ("DepthMultiplier", o.get("depth_multiplier", 1))])),
    "FULLY_CONNECTED": (BO.FullyConnectedOptions, _fields(
        "FullyConnectedOptions", lambda o: [_act(o),
                                            ("KeepNumDims", bool(o.get("keep_num_dims")))])),
    "ADD": (BO.AddOptions, _fields("AddOptions", lambda o: [_act(o)])),
    "MUL": (BO.MulOptions, _fields("MulOptions", lambda o: [_act(o)])),
    "SUB": (BO.SubOptions, _fields("SubOptions", lambda o: [_act(o)])),
    "CONCATENATION": (BO.ConcatenationOptions, _fields(
        "ConcatenationOptions", lambda o: [("Axis", o.get("axis", 0)), _act(o)])),
    "SOFTMAX": (BO.SoftmaxOptions, _fields(
        "SoftmaxOptions", lambda o: [("Beta", float(np.float32(o.get("beta", 1.0))))])),
    "MEAN": (BO.ReducerOptions, _fields(
        "ReducerOptions", lambda o: [("KeepDims", bool(o.get("keep_dims", False)))])),
    "RESHAPE": (BO.ReshapeOptions, _reshape),
}
for _pool in ("AVERAGE_POOL_2D", "MAX_POOL_2D", "L2_POOL_2D"):
    _OPTIONS[_pool] = (BO.Pool2DOptions, _fields("Pool2DOptions", lambda o: _window(o) + [
        ("FilterWidth", o.get("filter_w", 1)), ("FilterHeight", o.get("filter_h", 1))]))
for _op, _kind in (("PAD", "PadOptions"), ("QUANTIZE", "QuantizeOptions"),
                   ("DEQUANTIZE", "DequantizeOptions"), ("HARD_SWISH", "HardSwishOptions"),
                   ("SQUARED_DIFFERENCE", "SquaredDifferenceOptions")):
    _OPTIONS[_op] = (getattr(BO, _kind), _fields(_kind, lambda o: []))

# Operator versions the converter writes for int8 kernels (uint8 kernels are version 1).
_INT8_VERSIONS = {
    "CONV_2D": 3, "DEPTHWISE_CONV_2D": 3, "FULLY_CONNECTED": 4, "AVERAGE_POOL_2D": 2,
    "MAX_POOL_2D": 2, "ADD": 2, "MUL": 2, "CONCATENATION": 2, "SOFTMAX": 2, "MEAN": 2, "PAD": 2,
    "LOGISTIC": 2, "TANH": 2, "QUANTIZE": 2, "DEQUANTIZE": 2, "RELU": 2, "RELU6": 2,
    "RELU_N1_TO_1": 1, "RESHAPE": 1, "HARD_SWISH": 1,
}


def op_version(op: Operator, graph: Graph) -> int:
    """The operator version a converter would write for ``op`` (1 for uint8 kernels)."""
    dtypes = {np.dtype(graph.tensors[i].dtype) for i in (*op.inputs, *op.outputs)
              if 0 <= i < len(graph.tensors)}
    if np.dtype(np.int8) in dtypes:
        return _INT8_VERSIONS.get(op.opcode, 1)
    if op.opcode == "DEPTHWISE_CONV_2D" and (
        op.options.get("dilation_h", 1) != 1 or op.options.get("dilation_w", 1) != 1
    ):
        return 2
    return 1


def _opcode_key(op: Operator) -> tuple[str, str]:
    return op.opcode, str(op.options.get("custom_code", "")) if op.opcode == "CUSTOM" else ""


def _int_vector(b: _B, values: Any, dtype: Any = np.int32) -> int:
    return b.CreateNumpyVector(np.asarray(list(values), dtype))


def _data_vector(b: _B, raw: bytes) -> int:
    """A ubyte vector aligned to 16 bytes, as the converter aligns buffers."""
    b.StartVector(1, len(raw), _BUFFER_ALIGNMENT)
    b.head = b.head - len(raw)
    b.Bytes[b.head:b.head + len(raw)] = raw
    return b.EndVector()


def _quantization(b: _B, t: Tensor) -> int | None:
    q = t.quant
    if q is None:
        return None
    scale = b.CreateNumpyVector(np.asarray(q.scale, np.float32))
    zero_point = b.CreateNumpyVector(np.asarray(q.zero_point, np.int64))
    tflite.QuantizationParametersStart(b)
    tflite.QuantizationParametersAddScale(b, scale)
    tflite.QuantizationParametersAddZeroPoint(b, zero_point)
    tflite.QuantizationParametersAddQuantizedDimension(b, int(q.axis))
    return tflite.QuantizationParametersEnd(b)


def _tensor(b: _B, t: Tensor, buffer: int) -> int:
    dtype = np.dtype(t.dtype)
    if dtype not in TENSOR_TYPES:
        raise ValueError(f"{t.describe()}: dtype {dtype.name} has no .tflite tensor type")
    name = b.CreateString(t.name)
    shape = _int_vector(b, t.shape)
    quant = _quantization(b, t)
    tflite.TensorStart(b)
    tflite.TensorAddShape(b, shape)
    tflite.TensorAddType(b, TENSOR_TYPES[dtype])
    tflite.TensorAddBuffer(b, buffer)
    tflite.TensorAddName(b, name)
    if quant is not None:
        tflite.TensorAddQuantization(b, quant)
    return tflite.TensorEnd(b)


def _operator(b: _B, op: Operator, opcode_index: int) -> int:
    inputs = _int_vector(b, op.inputs)
    outputs = _int_vector(b, op.outputs)
    options = None
    kind, build = _OPTIONS.get(op.opcode, (BO.NONE, None))
    if build is not None and not (op.opcode == "RESHAPE" and "new_shape" not in op.options):
        options = build(b, op.options)
    tflite.OperatorStart(b)
    tflite.OperatorAddOpcodeIndex(b, opcode_index)
    tflite.OperatorAddInputs(b, inputs)
    tflite.OperatorAddOutputs(b, outputs)
    if options is not None:
        tflite.OperatorAddBuiltinOptionsType(b, kind)
        tflite.OperatorAddBuiltinOptions(b, options)
    return tflite.OperatorEnd(b)


def _operator_code(b: _B, opcode: str, custom: str, version: int) -> int:
    if opcode not in OPCODES:
        raise ValueError(f"unknown builtin operator {opcode!r}")
    code = OPCODES[opcode]
    custom_code = b.CreateString(custom) if opcode == "CUSTOM" else None
    tflite.OperatorCodeStart(b)
    tflite.OperatorCodeAddDeprecatedBuiltinCode(b, min(code, 127))
    tflite.OperatorCodeAddBuiltinCode(b, code)
    tflite.OperatorCodeAddVersion(b, version)
    if custom_code is not None:
        tflite.OperatorCodeAddCustomCode(b, custom_code)
    return tflite.OperatorCodeEnd(b)


def _vector_of(b: _B, offsets: list[int]) -> int:
    b.StartVector(4, len(offsets), 4)
    for off in reversed(offsets):
        b.PrependUOffsetTRelative(off)
    return b.EndVector()


def write_tflite(graph: Graph, description: str = "qlane") -> bytes:
    """Serialise ``graph`` as a schema-version-3 ``.tflite`` flatbuffer ("TFL3")."""
    size_hint = sum(t.data.nbytes for t in graph.tensors if t.data is not None) + 4096
    b = flatbuffers.Builder(size_hint)

    # Buffer 0 is the empty sentinel; each constant tensor gets a buffer of its own.
    buffer_of: dict[int, int] = {}
    raws: list[bytes] = [b""]
    for t in graph.tensors:
        if t.data is not None and t.data.size:
            buffer_of[t.index] = len(raws)
            raws.append(np.ascontiguousarray(t.data, np.dtype(t.dtype)).tobytes())
    buffers = []
    for raw in raws:
        data = _data_vector(b, raw) if raw else None
        tflite.BufferStart(b)
        if data is not None:
            tflite.BufferAddData(b, data)
        buffers.append(tflite.BufferEnd(b))

    codes: dict[tuple[str, str], int] = {}
    versions: dict[tuple[str, str], int] = {}
    for op in graph.operators:
        key = _opcode_key(op)
        codes.setdefault(key, len(codes))
        versions[key] = max(versions.get(key, 1), op_version(op, graph))
    opcode_offsets = [_operator_code(b, name, custom, versions[(name, custom)])
                      for name, custom in codes]

    tensors = [_tensor(b, t, buffer_of.get(t.index, 0)) for t in graph.tensors]
    operators = [_operator(b, op, codes[_opcode_key(op)]) for op in graph.operators]
    sub_name = b.CreateString("main")
    tensors_vec = _vector_of(b, tensors)
    operators_vec = _vector_of(b, operators)
    inputs = _int_vector(b, graph.inputs)
    outputs = _int_vector(b, graph.outputs)
    tflite.SubGraphStart(b)
    tflite.SubGraphAddTensors(b, tensors_vec)
    tflite.SubGraphAddInputs(b, inputs)
    tflite.SubGraphAddOutputs(b, outputs)
    tflite.SubGraphAddOperators(b, operators_vec)
    tflite.SubGraphAddName(b, sub_name)
    subgraph = tflite.SubGraphEnd(b)

    desc = b.CreateString(description)
    subgraphs_vec = _vector_of(b, [subgraph])
    opcodes_vec = _vector_of(b, opcode_offsets)
    buffers_vec = _vector_of(b, buffers)
    tflite.ModelStart(b)
    tflite.ModelAddVersion(b, 3)
    tflite.ModelAddOperatorCodes(b, opcodes_vec)
    tflite.ModelAddSubgraphs(b, subgraphs_vec)
    tflite.ModelAddDescription(b, desc)
    tflite.ModelAddBuffers(b, buffers_vec)
    b.Finish(tflite.ModelEnd(b), file_identifier=b"TFL3")
    return bytes(b.Output())
