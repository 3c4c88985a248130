"""Read a quantized ``.tflite`` flatbuffer into a :class:`Graph` with the ``tflite`` package.

Every way a file can be wrong ends in a :class:`ModelError` whose message names the tensor or
operator at fault; nothing else escapes :func:`load_tflite`.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Any

import numpy as np
import tflite
from tflite.BuiltinOptions import BuiltinOptions as BO
from tflite.utils import BUILTIN_OPCODE2NAME

from .graph import Graph, ModelError, Operator, Tensor
from .quant import QuantParams

_TYPES: dict[int, np.dtype] = {
    0: np.dtype(np.float32),
    1: np.dtype(np.float16),
    2: np.dtype(np.int32),
    3: np.dtype(np.uint8),
    4: np.dtype(np.int64),
    7: np.dtype(np.int16),
    9: np.dtype(np.int8),
    10: np.dtype(np.float64),
}
_TYPE_NAMES = {
    v: k for k, v in vars(tflite.TensorType).items() if not k.startswith("_") and isinstance(v, int)
}
_ACT = {0: "NONE", 1: "RELU", 2: "RELU_N1_TO_1", 3: "RELU6", 4: "TANH", 5: "SIGN_BIT"}
_PAD = {0: "SAME", 1: "VALID"}
_MAX_TENSOR_ELEMENTS = 1 << 31


def _options(op: Any, opcode: str, where: str) -> dict[str, Any]:
    """Normalised options of one operator (see :mod:`graph` for the keys)."""
    kind = op.BuiltinOptionsType()
    table = op.BuiltinOptions()
    if kind == BO.NONE or table is None:
        return {}

    def load(cls):
        o = cls()
        o.Init(table.Bytes, table.Pos)
        return o

    def act(o) -> str:
        code = o.FusedActivationFunction()
        if code not in _ACT:
            raise ModelError(f"{where}: unknown fused activation code {code}")
        return _ACT[code]

    def pad(o) -> str:
        code = o.Padding()
        if code not in _PAD:
            raise ModelError(f"{where}: unknown padding code {code}")
        return _PAD[code]

    if kind == BO.Conv2DOptions:
        o = load(tflite.Conv2DOptions)
        return dict(padding=pad(o), stride_h=o.StrideH(), stride_w=o.StrideW(),
                    dilation_h=o.DilationHFactor(), dilation_w=o.DilationWFactor(),
                    activation=act(o))
    if kind == BO.DepthwiseConv2DOptions:
        o = load(tflite.DepthwiseConv2DOptions)
        return dict(padding=pad(o), stride_h=o.StrideH(), stride_w=o.StrideW(),
                    dilation_h=o.DilationHFactor(), dilation_w=o.DilationWFactor(),
                    depth_multiplier=o.DepthMultiplier(), activation=act(o))
    if kind == BO.FullyConnectedOptions:
        o = load(tflite.FullyConnectedOptions)
        if o.WeightsFormat() != 0:
            raise ModelError(f"{where}: shuffled FULLY_CONNECTED weights are not supported")
        return dict(activation=act(o), keep_num_dims=bool(o.KeepNumDims()))
    if kind == BO.Pool2DOptions:
        o = load(tflite.Pool2DOptions)
        return dict(padding=pad(o), stride_h=o.StrideH(), stride_w=o.StrideW(),
                    filter_h=o.FilterHeight(), filter_w=o.FilterWidth(), activation=act(o))
    if kind == BO.AddOptions:
        return dict(activation=act(load(tflite.AddOptions)))
    if kind == BO.MulOptions:
        return dict(activation=act(load(tflite.MulOptions)))
    if kind == BO.ConcatenationOptions:
        o = load(tflite.ConcatenationOptions)
        return dict(axis=o.Axis(), activation=act(o))
    if kind == BO.SoftmaxOptions:
        return dict(beta=float(load(tflite.SoftmaxOptions).Beta()))
    if kind == BO.ReducerOptions:
        return dict(keep_dims=bool(load(tflite.ReducerOptions).KeepDims()))
    if kind == BO.ReshapeOptions:
        o = load(tflite.ReshapeOptions)
        return dict(new_shape=None if o.NewShapeIsNone() else tuple(int(v) for v in
                                                                    o.NewShapeAsNumpy()))
    return {}


def _quant(t: Any, where: str) -> QuantParams | None:
    q = t.Quantization()
    if q is None or q.ScaleIsNone() or q.ScaleLength() == 0:
        return None
    scale = q.ScaleAsNumpy().astype(np.float32)
    zp = (np.zeros(scale.shape, np.int64) if q.ZeroPointIsNone()
          else q.ZeroPointAsNumpy().astype(np.int64))
    if zp.size == 1 and scale.size > 1:
        zp = np.full(scale.shape, zp[0])
    if zp.shape != scale.shape:
        raise ModelError(f"{where}: {scale.size} scales but {zp.size} zero points")
    if not np.all(np.isfinite(scale)) or np.any(scale <= 0):
        raise ModelError(f"{where}: quantization scales must be positive and finite")
    return QuantParams(scale, zp, int(q.QuantizedDimension()))


def _tensor(model_bytes: bytes, model: Any, sub: Any, idx: int) -> Tensor:
    t = sub.Tensors(idx)
    name = (t.Name() or b"").decode("utf-8", "replace")
    where = f"tensor {idx} '{name}'"
    code = t.Type()
    if code not in _TYPES:
        raise ModelError(f"{where}: dtype {_TYPE_NAMES.get(code, code)} is not supported")
    dtype = _TYPES[code]
    shape = tuple(int(v) for v in t.ShapeAsNumpy()) if t.ShapeLength() else ()
    if any(d < 0 for d in shape):
        raise ModelError(f"{where}: dynamic or negative shape {list(shape)} is not supported")
    size = int(np.prod(shape, dtype=np.int64)) if shape else 1
    if size > _MAX_TENSOR_ELEMENTS:
        raise ModelError(f"{where}: shape {list(shape)} is implausibly large")
    quant = _quant(t, where)
    if quant is not None and quant.per_axis:
        if not 0 <= quant.axis < max(len(shape), 1) or shape[quant.axis] != quant.scale.size:
            raise ModelError(f"{where}: {quant.scale.size} per-axis scales do not match "
                             f"dimension {quant.axis} of shape {list(shape)}")
    data = None
    b = t.Buffer()
    if b < 0 or b >= model.BuffersLength():
        raise ModelError(f"{where}: buffer index {b} out of range")
    buf = model.Buffers(b)
    raw: bytes | np.ndarray | None = None
    if buf is not None and buf.Offset() > 1:
        start, length = int(buf.Offset()), int(buf.Size())
        if start + length > len(model_bytes):
            raise ModelError(f"{where}: buffer {b} lies outside the file")
        raw = model_bytes[start:start + length]
    elif buf is not None and buf.DataLength() > 0:
        raw = buf.DataAsNumpy()
    if raw is not None and len(raw) > 0:
        want = size * dtype.itemsize
        if len(raw) != want:
            raise ModelError(f"{where}: buffer {b} holds {len(raw)} bytes, shape "
                             f"{list(shape)} of {dtype.name} needs {want}")
        data = np.frombuffer(bytes(raw), dtype=dtype).reshape(shape).copy()
        data.setflags(write=False)
    return Tensor(idx, name, shape, dtype, quant, data)


def _opcode_name(model: Any, index: int, where: str) -> str:
    if index < 0 or index >= model.OperatorCodesLength():
        raise ModelError(f"{where}: opcode index {index} out of range")
    oc = model.OperatorCodes(index)
    code = max(int(oc.BuiltinCode()), int(oc.DeprecatedBuiltinCode()))
    if code == 32:  # CUSTOM
        custom = (oc.CustomCode() or b"?").decode("utf-8", "replace")
        raise ModelError(f"{where}: custom operator '{custom}' is not supported")
    if code not in BUILTIN_OPCODE2NAME:
        raise ModelError(f"{where}: unknown builtin operator code {code}")
    return BUILTIN_OPCODE2NAME[code]


def _parse(data: bytes, name: str) -> Graph:
    if len(data) < 8:
        raise ModelError(f"{name}: file too short to be a .tflite model ({len(data)} bytes)")
    root = struct.unpack_from("<I", data, 0)[0]
    if data[4:8] != b"TFL3" or root + 4 > len(data):
        raise ModelError(f"{name}: not a .tflite flatbuffer (missing 'TFL3' identifier)")
    model = tflite.Model.GetRootAsModel(data, 0)
    if model.SubgraphsLength() < 1:
        raise ModelError(f"{name}: model has no subgraph")
    if model.SubgraphsLength() > 1:
        raise ModelError(f"{name}: models with {model.SubgraphsLength()} subgraphs (control "
                         "flow) are not supported")
    sub = model.Subgraphs(0)
    n = sub.TensorsLength()
    tensors = [_tensor(data, model, sub, i) for i in range(n)]

    def check_index(i: int, where: str, allow_absent: bool) -> int:
        if i == -1 and allow_absent:
            return i
        if not 0 <= i < n:
            raise ModelError(f"{where}: tensor index {i} out of range (model has {n})")
        return i

    inputs = [check_index(int(i), "graph input", False) for i in sub.InputsAsNumpy()] \
        if sub.InputsLength() else []
    outputs = [check_index(int(i), "graph output", False) for i in sub.OutputsAsNumpy()] \
        if sub.OutputsLength() else []
    if not inputs or not outputs:
        raise ModelError(f"{name}: model declares no inputs or no outputs")
    ops = []
    for k in range(sub.OperatorsLength()):
        o = sub.Operators(k)
        opcode = _opcode_name(model, int(o.OpcodeIndex()), f"operator {k}")
        where = f"operator {k} ({opcode})"
        ins = tuple(check_index(int(i), where, True) for i in o.InputsAsNumpy()) \
            if o.InputsLength() else ()
        outs = tuple(check_index(int(i), where, False) for i in o.OutputsAsNumpy()) \
            if o.OutputsLength() else ()
        ops.append(Operator(k, opcode, ins, outs, _options(o, opcode, where)))
    if not any(t.quant is not None for t in tensors):
        raise ModelError(f"{name}: float model (no quantized tensor); qlane runs uint8 or int8 "
                         "models: quantize it first")
    return Graph(tensors, ops, inputs, outputs, name=name)


def load_tflite(source: str | os.PathLike | bytes) -> Graph:
    """Parse a .tflite file (path or bytes) into a Graph; raises ModelError on any defect."""
    if isinstance(source, bytes | bytearray):
        data, name = bytes(source), "model"
    else:
        path = Path(source)
        try:
            data = path.read_bytes()
        except OSError as e:
            raise ModelError(f"cannot read {path}: {e.strerror or e}") from None
        name = path.stem
    try:
        return _parse(data, name)
    except ModelError:
        raise
    except (IndexError, struct.error, ValueError, TypeError, UnicodeDecodeError,
            OverflowError, AttributeError, MemoryError) as e:
        raise ModelError(f"{name}: corrupt or truncated .tflite file ({type(e).__name__}: "
                         f"{e})".split("\n")[0]) from None
