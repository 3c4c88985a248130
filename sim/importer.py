"""Read a quantized ``.tflite`` flatbuffer into a :class:`Graph` with the ``tflite`` package.

Every way a file can be wrong ends in a :class:`ModelError` whose message names the tensor or
operator at fault; nothing else escapes :func:`load_tflite`. Work is bounded by the file size:
every vector is checked to lie inside the file before it is read.
"""

from __future__ import annotations

import math
import os
import struct
from pathlib import Path
from typing import Any

import flatbuffers
import numpy as np
import tflite
from tflite.BuiltinOptions import BuiltinOptions as BO
from tflite.utils import BUILTIN_OPCODE2NAME

from .graph import Graph, ModelError, Operator, Tensor
from .ops import KERNELS
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
_MAX_RANK = 8
_QUANTIZED_TYPES = ("uint8", "int8", "int16")
_SCHEMA_VERSION = 3
# Scales beyond these overflow float32 in the kernels' derived quantities (e.g. 6 / scale).
_MIN_SCALE, _MAX_SCALE = 1e-20, 1e20

# The operators of the graph contract (see graph.py); any operator with a kernel is also read.
DOCUMENTED_OPS = frozenset({
    "CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "AVERAGE_POOL_2D", "MAX_POOL_2D", "ADD",
    "MUL", "CONCATENATION", "SOFTMAX", "MEAN", "RESHAPE", "PAD", "LOGISTIC", "TANH", "HARD_SWISH",
    "QUANTIZE", "DEQUANTIZE", "RELU", "RELU6", "RELU_N1_TO_1",
})

# Schema vtable slots (4 + 2 * field id) of the vector fields read here.
_MODEL_OPCODES, _MODEL_SUBGRAPHS, _MODEL_BUFFERS = 6, 8, 12
_SUB_TENSORS, _SUB_INPUTS, _SUB_OUTPUTS, _SUB_OPERATORS = 4, 6, 8, 10
_TENSOR_SHAPE, _BUFFER_DATA, _OP_INPUTS, _OP_OUTPUTS = 4, 4, 6, 8
_QUANT_SCALE, _QUANT_ZERO_POINT, _RESHAPE_NEW_SHAPE = 8, 10, 4


def supported_ops() -> frozenset[str]:
    """Operators load_tflite accepts: the documented ones and every one with a kernel."""
    return DOCUMENTED_OPS | frozenset(KERNELS)


def _vector_len(obj: Any, slot: int, elem_size: int, file_size: int, where: str) -> int:
    """Length of a vector field, after checking that all of it lies inside the file."""
    tab = obj._tab
    o = tab.Offset(slot)
    if o == 0:
        return 0
    start, n = tab.Vector(o), tab.VectorLen(o)
    if start < 0 or start + n * elem_size > file_size:
        raise ModelError(f"{where}: a vector of {n} entries runs past the end of the file "
                         f"({file_size} bytes): corrupt or truncated .tflite file")
    return n


def _options(op: Any, opcode: str, where: str, size: int) -> dict[str, Any]:
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
    if kind == BO.SubOptions:
        return dict(activation=act(load(tflite.SubOptions)))
    if kind == BO.ConcatenationOptions:
        o = load(tflite.ConcatenationOptions)
        return dict(axis=o.Axis(), activation=act(o))
    if kind == BO.SoftmaxOptions:
        return dict(beta=float(load(tflite.SoftmaxOptions).Beta()))
    if kind == BO.ReducerOptions:
        return dict(keep_dims=bool(load(tflite.ReducerOptions).KeepDims()))
    if kind == BO.ReshapeOptions:
        o = load(tflite.ReshapeOptions)
        if o._tab.Offset(_RESHAPE_NEW_SHAPE) == 0:
            return dict(new_shape=None)
        _vector_len(o, _RESHAPE_NEW_SHAPE, 4, size, where)
        return dict(new_shape=tuple(int(v) for v in o.NewShapeAsNumpy()))
    return {}


_POSITIVE_OPTIONS = ("stride_h", "stride_w", "dilation_h", "dilation_w", "filter_h", "filter_w",
                     "depth_multiplier")


def _check_options(options: dict[str, Any], where: str) -> None:
    for key in _POSITIVE_OPTIONS:
        if key in options and not 1 <= options[key] <= 1 << 16:
            raise ModelError(f"{where}: option {key} = {options[key]} must be at least 1")
    beta = options.get("beta")
    if beta is not None and not (math.isfinite(beta) and beta > 0):
        raise ModelError(f"{where}: softmax beta {beta} must be positive and finite")


def _quant(t: Any, where: str, size: int) -> QuantParams | None:
    q = t.Quantization()
    if q is None:
        return None
    n_scale = _vector_len(q, _QUANT_SCALE, 4, size, where)
    n_zp = _vector_len(q, _QUANT_ZERO_POINT, 8, size, where)
    if n_scale == 0:
        return None
    scale = q.ScaleAsNumpy().astype(np.float32)
    zp = np.zeros(scale.shape, np.int64) if n_zp == 0 else q.ZeroPointAsNumpy().astype(np.int64)
    if zp.size == 1 and scale.size > 1:
        zp = np.full(scale.shape, zp[0])
    if zp.shape != scale.shape:
        raise ModelError(f"{where}: {scale.size} scales but {zp.size} zero points")
    if not np.all(np.isfinite(scale)) or np.any(scale <= 0):
        raise ModelError(f"{where}: quantization scales must be positive and finite")
    if np.any(scale < _MIN_SCALE) or np.any(scale > _MAX_SCALE):
        bad = scale[(scale < _MIN_SCALE) | (scale > _MAX_SCALE)][0]
        raise ModelError(f"{where}: quantization scale {bad:.3g} is outside the plausible range "
                         f"[{_MIN_SCALE:g}, {_MAX_SCALE:g}]")
    if np.any(np.abs(zp) > 1 << 31):
        raise ModelError(f"{where}: zero point out of the int32 range")
    return QuantParams(scale, zp, int(q.QuantizedDimension()))


def _tensor(model_bytes: bytes, model: Any, n_buffers: int, sub: Any, idx: int) -> Tensor:
    size = len(model_bytes)
    t = sub.Tensors(idx)
    name = (t.Name() or b"").decode("utf-8", "replace")
    where = f"tensor {idx} '{name}'"
    code = t.Type()
    if code not in _TYPES:
        raise ModelError(f"{where}: dtype {_TYPE_NAMES.get(code, code)} is not supported")
    dtype = _TYPES[code]
    rank = _vector_len(t, _TENSOR_SHAPE, 4, size, where)
    if rank > _MAX_RANK:
        raise ModelError(f"{where}: rank {rank} exceeds {_MAX_RANK}")
    shape = tuple(int(v) for v in t.ShapeAsNumpy()) if rank else ()
    if any(d < 0 for d in shape):
        raise ModelError(f"{where}: dynamic or negative shape {list(shape)} is not supported")
    elements = math.prod(shape)
    if elements > _MAX_TENSOR_ELEMENTS:
        raise ModelError(f"{where}: shape {list(shape)} is implausibly large")
    quant = _quant(t, where, size)
    if dtype.name in _QUANTIZED_TYPES:
        if 0 in shape:
            raise ModelError(f"{where}: {dtype.name} tensor of shape {list(shape)} is empty")
        info = np.iinfo(dtype)
        if quant is not None and not np.all((quant.zero_point >= info.min)
                                            & (quant.zero_point <= info.max)):
            bad = quant.zero_point[(quant.zero_point < info.min) | (quant.zero_point > info.max)]
            raise ModelError(f"{where}: zero point {int(bad[0])} is outside the {dtype.name} "
                             f"range [{info.min}, {info.max}]")
    if quant is not None and quant.per_axis:
        if not 0 <= quant.axis < len(shape) or shape[quant.axis] != quant.scale.size:
            raise ModelError(f"{where}: {quant.scale.size} per-axis scales do not match "
                             f"dimension {quant.axis} of shape {list(shape)}")
    b = t.Buffer()
    if b < 0 or b >= n_buffers:
        raise ModelError(f"{where}: buffer index {b} out of range (model has {n_buffers})")
    buf = model.Buffers(b)
    raw: bytes | np.ndarray | None = None
    if buf is not None and buf.Offset() > 1:
        start, length = int(buf.Offset()), int(buf.Size())
        if start + length > size:
            raise ModelError(f"{where}: buffer {b} lies outside the file")
        raw = model_bytes[start:start + length]
    elif buf is not None and _vector_len(buf, _BUFFER_DATA, 1, size, f"buffer {b}") > 0:
        raw = buf.DataAsNumpy()
    data = None
    if raw is not None and len(raw) > 0:
        want = elements * dtype.itemsize
        if len(raw) != want:
            raise ModelError(f"{where}: buffer {b} holds {len(raw)} bytes, shape "
                             f"{list(shape)} of {dtype.name} needs {want}")
        data = np.frombuffer(bytes(raw), dtype=dtype).reshape(shape).copy()
        data.setflags(write=False)
    return Tensor(idx, name, shape, dtype, quant, data)


def _opcode_name(model: Any, n_codes: int, index: int, where: str) -> str:
    if index < 0 or index >= n_codes:
        raise ModelError(f"{where}: opcode index {index} out of range (model has {n_codes})")
    oc = model.OperatorCodes(index)
    code = max(int(oc.BuiltinCode()), int(oc.DeprecatedBuiltinCode()))
    if code == 32:  # CUSTOM
        custom = (oc.CustomCode() or b"?").decode("utf-8", "replace")
        raise ModelError(f"{where}: custom operator '{custom}' is not supported")
    if code not in BUILTIN_OPCODE2NAME:
        raise ModelError(f"{where}: unknown builtin operator code {code}")
    name = BUILTIN_OPCODE2NAME[code]
    if name not in supported_ops():
        raise ModelError(f"{where} ({name}): operator {name} is not supported by qlane")
    return name


def _check_dataflow(g: Graph) -> None:
    """Operators run in order: each input exists when its operator runs."""
    ready = set(g.inputs) | {t.index for t in g.tensors if t.is_constant}
    for op in g.operators:
        where = op.describe()
        for i in op.inputs:
            if i >= 0 and i not in ready:
                raise ModelError(f"{where}: input {g.tensors[i].describe()} is neither a model "
                                 "input, a constant nor an output of an earlier operator")
        for i in op.outputs:
            if i in ready:
                raise ModelError(f"{where}: output {g.tensors[i].describe()} is already a model "
                                 "input, a constant or another operator's output")
            ready.add(i)
        for i in (*op.inputs, *op.outputs):
            t = g.tensor(i)
            if t is not None and t.dtype.name in _QUANTIZED_TYPES and t.quant is None:
                raise ModelError(f"{where}: {t.describe()} has no quantization parameters")
    for i in g.outputs:
        if i not in ready:
            raise ModelError(f"graph output {g.tensors[i].describe()} is never computed")


def _window_out(size: int, k: int, stride: int, dilation: int, padding: str) -> int:
    if padding == "SAME":
        return (size + stride - 1) // stride
    return (size - (k - 1) * dilation + stride - 1) // stride


def _check_conv_shapes(op: Operator, g: Graph) -> None:
    """Weights, bias and output of CONV_2D, DEPTHWISE_CONV_2D and FULLY_CONNECTED agree."""
    where = op.describe()
    if len(op.inputs) not in (2, 3) or len(op.outputs) != 1 or min(op.inputs[:2]) < 0:
        raise ModelError(f"{where}: expects input, weights, optional bias and one output")
    x, w, out = g.tensors[op.inputs[0]], g.tensors[op.inputs[1]], g.tensors[op.outputs[0]]
    bias = g.tensor(op.inputs[2]) if len(op.inputs) == 3 else None

    def fail(message: str) -> ModelError:
        return ModelError(f"{where}: {message}")

    if op.opcode == "FULLY_CONNECTED":
        if len(w.shape) != 2:
            raise fail(f"weights {w.describe()} must be 2-D [units, depth]")
        units, depth = w.shape
        if depth == 0 or x.size % depth:
            raise fail(f"input {x.describe()} does not split into rows of depth {depth} "
                       f"(weights {w.describe()})")
        if not out.shape or out.shape[-1] != units or out.size != x.size // depth * units:
            raise fail(f"output {out.describe()} must hold {x.size // depth} rows of {units} "
                       "units")
    else:
        if len(x.shape) != 4 or len(w.shape) != 4 or len(out.shape) != 4:
            raise fail(f"input {x.describe()}, weights {w.describe()} and output "
                       f"{out.describe()} must be 4-D")
        o = op.options
        if op.opcode == "CONV_2D":
            units = w.shape[0]
            if w.shape[3] != x.shape[3]:
                raise fail(f"weights {w.describe()} have {w.shape[3]} input channels, input "
                           f"{x.describe()} has {x.shape[3]}")
        else:
            units = w.shape[3]
            if w.shape[0] != 1 or units != x.shape[3] * o.get("depth_multiplier", 1):
                raise fail(f"weights {w.describe()} must be [1, kh, kw, {x.shape[3]} x "
                           f"depth_multiplier {o.get('depth_multiplier', 1)}]")
        pad = o.get("padding", "SAME")
        want = (x.shape[0],
                _window_out(x.shape[1], w.shape[1], o.get("stride_h", 1),
                            o.get("dilation_h", 1), pad),
                _window_out(x.shape[2], w.shape[2], o.get("stride_w", 1),
                            o.get("dilation_w", 1), pad),
                units)
        if tuple(out.shape) != want or min(want) < 1:
            raise fail(f"output {out.describe()} should be {list(want)}")
    if bias is not None and (len(bias.shape) != 1 or bias.shape[0] != units):
        raise fail(f"bias {bias.describe()} must hold {units} values")


def _parse(data: bytes, name: str) -> Graph:
    size = len(data)
    if size < 8:
        raise ModelError(f"{name}: file too short to be a .tflite model ({size} bytes)")
    root = struct.unpack_from("<I", data, 0)[0]
    if data[4:8] != b"TFL3" or root + 4 > size:
        raise ModelError(f"{name}: not a .tflite flatbuffer (missing 'TFL3' identifier)")
    model = tflite.Model.GetRootAsModel(data, 0)
    if model.Version() != _SCHEMA_VERSION:
        raise ModelError(f"{name}: schema version {model.Version()}, qlane reads version "
                         f"{_SCHEMA_VERSION}")
    n_sub = _vector_len(model, _MODEL_SUBGRAPHS, 4, size, name)
    if n_sub < 1:
        raise ModelError(f"{name}: model has no subgraph")
    if n_sub > 1:
        raise ModelError(f"{name}: models with {n_sub} subgraphs (control flow) are not "
                         "supported")
    n_buffers = _vector_len(model, _MODEL_BUFFERS, 4, size, name)
    n_codes = _vector_len(model, _MODEL_OPCODES, 4, size, name)
    sub = model.Subgraphs(0)
    n = _vector_len(sub, _SUB_TENSORS, 4, size, name)
    tensors = [_tensor(data, model, n_buffers, sub, i) for i in range(n)]
    if not any(t.quant is not None for t in tensors):
        raise ModelError(f"{name}: float model (no quantized tensor); qlane runs uint8 or int8 "
                         "models: quantize it first")

    def indices(obj: Any, slot: int, where: str, allow_absent: bool) -> tuple[int, ...]:
        if _vector_len(obj, slot, 4, size, where) == 0:
            return ()
        values = tuple(int(i) for i in obj._tab.GetVectorAsNumpy(
            flatbuffers.number_types.Int32Flags, obj._tab.Offset(slot)))
        for i in values:
            if not (0 <= i < n or (i == -1 and allow_absent)):
                raise ModelError(f"{where}: tensor index {i} out of range (model has {n})")
        return values

    inputs = list(indices(sub, _SUB_INPUTS, "graph input", False))
    outputs = list(indices(sub, _SUB_OUTPUTS, "graph output", False))
    if not inputs or not outputs:
        raise ModelError(f"{name}: model declares no inputs or no outputs")
    ops = []
    for k in range(_vector_len(sub, _SUB_OPERATORS, 4, size, name)):
        o = sub.Operators(k)
        opcode = _opcode_name(model, n_codes, int(o.OpcodeIndex()), f"operator {k}")
        where = f"operator {k} ({opcode})"
        ins = indices(o, _OP_INPUTS, where, True)
        outs = indices(o, _OP_OUTPUTS, where, False)
        if not outs:
            raise ModelError(f"{where}: operator has no outputs")
        options = _options(o, opcode, where, size)
        _check_options(options, where)
        ops.append(Operator(k, opcode, ins, outs, options))
    graph = Graph(tensors, ops, inputs, outputs, name=name)
    _check_dataflow(graph)
    for op in ops:
        if op.opcode in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
            _check_conv_shapes(op, graph)
    return graph


def load_tflite(source: str | os.PathLike | bytes) -> Graph:
    """Parse a .tflite file (path or bytes) into a Graph; raises ModelError on any defect."""
    if isinstance(source, bytes | bytearray | memoryview):
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
    except (IndexError, struct.error, ValueError, TypeError, UnicodeDecodeError, KeyError,
            OverflowError, AttributeError) as e:
        raise ModelError(f"{name}: corrupt or truncated .tflite file ({type(e).__name__}: "
                         f"{e})".split("\n")[0]) from None
