"""QUANTIZE (float32 -> uint8/int8, and uint8/int8 requantization) and DEQUANTIZE.

Semantics of the classic TFLite reference kernels (``kernels/quantize.cc``,
``reference/quantize.h``, ``reference/requantize.h``, ``kernels/dequantize.cc``,
``reference/dequantize.h``).
"""

from __future__ import annotations

import numpy as np

from ..fixedpoint import (
    Rounding,
    dtype_range,
    mul_by_quantized_multiplier,
    quantize_multiplier,
)
from ..graph import Graph, Operator
from ..quant import QuantParams, quantize
from .base import Kernel, register

_F = np.float32
_INTS = (np.dtype(np.uint8), np.dtype(np.int8))


@register("QUANTIZE")
class Quantize(Kernel):
    """float32 -> uint8/int8 (affine quantization), or uint8/int8 -> uint8/int8 requantization.

    Requantization multiplies ``q - z_in`` by ``s_in / s_out`` (computed in double) with
    MultiplyByQuantizedMultiplier, adds ``z_out`` and saturates.
    """

    def __init__(self, op: Operator, graph: Graph, rounding: Rounding = "double") -> None:
        super().__init__(op, graph, rounding)
        self.need(len(self.inputs) == 1 and len(self.outputs) == 1,
                  "expects 1 input and 1 output")
        x, out = self.inputs[0], self.outputs[0]
        self.need(x is not None, "the input is required")
        self.dtype = np.dtype(out.dtype)
        self.need(self.dtype in _INTS, f"output {out.describe()}: dtype must be uint8 or int8")
        self.need(out.quant is not None and not out.quant.per_axis,
                  f"output {out.describe()} needs per-tensor quantization")
        self.out_scale, self.out_zp = _F(out.quant.s), out.quant.zp
        lo, hi = dtype_range(self.dtype)
        self.need(lo <= self.out_zp <= hi,
                  f"output zero point {self.out_zp} outside the {self.dtype.name} range")
        self.need(tuple(x.shape) == tuple(out.shape),
                  f"input {x.describe()} and output {out.describe()} differ in shape")
        in_dtype = np.dtype(x.dtype)
        if in_dtype == np.dtype(np.float32):
            self.requantize = False
            return
        self.need(in_dtype in _INTS,
                  f"input {x.describe()}: dtype must be float32, uint8 or int8")
        self.need(x.quant is not None and not x.quant.per_axis,
                  f"input {x.describe()} needs per-tensor quantization")
        self.requantize = True
        self.in_zp = x.quant.zp
        m, s = quantize_multiplier(float(_F(x.quant.s)) / float(self.out_scale), rounding)
        self.mult = (int(m), int(s))

    def __call__(self, *inputs: np.ndarray | None) -> list[np.ndarray]:
        x = np.asarray(inputs[0])
        if not self.requantize:
            return [quantize(x, QuantParams(self.out_scale, self.out_zp), self.dtype)]
        y = mul_by_quantized_multiplier(x.astype(np.int64) - self.in_zp, *self.mult,
                                        self.rounding) + self.out_zp
        lo, hi = dtype_range(self.dtype)
        return [np.clip(y, lo, hi).astype(self.dtype)]


@register("DEQUANTIZE")
class Dequantize(Kernel):
    """uint8/int8 -> float32: ``scale * (q - zero_point)``, per tensor or per axis."""

    def __init__(self, op: Operator, graph: Graph, rounding: Rounding = "double") -> None:
        super().__init__(op, graph, rounding)
        self.need(len(self.inputs) == 1 and len(self.outputs) == 1,
                  "expects 1 input and 1 output")
        x, out = self.inputs[0], self.outputs[0]
        self.need(x is not None, "the input is required")
        self.need(np.dtype(x.dtype) in _INTS, f"input {x.describe()}: dtype must be uint8 or int8")
        self.need(np.dtype(out.dtype) == np.dtype(np.float32),
                  f"output {out.describe()}: dtype must be float32")
        self.need(x.quant is not None, f"input {x.describe()} has no quantization")
        self.need(tuple(x.shape) == tuple(out.shape),
                  f"input {x.describe()} and output {out.describe()} differ in shape")
        q = x.quant
        shape = [1] * (len(x.shape) + 1)
        if q.per_axis:
            shape[q.axis + 1] = -1
        # scale * (q - z) is exact in double and rounds once to float32, as in float32.
        self.scale = np.asarray(q.scale, np.float64).reshape(shape)
        self.zp = np.asarray(q.zero_point, np.int64).reshape(shape)
        self.folded = self._apply(x.data[None]) if x.is_constant else None

    def _apply(self, x: np.ndarray) -> np.ndarray:
        return (self.scale * (x.astype(np.int64) - self.zp)).astype(np.float32)

    def __call__(self, *inputs: np.ndarray | None) -> list[np.ndarray]:
        if self.folded is not None:
            return [self.folded]
        return [self._apply(np.asarray(inputs[0]))]
