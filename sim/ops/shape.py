"""RESHAPE, CONCATENATION, PAD/PADV2 and MEAN on uint8/int8 tensors.

Semantics of the classic TFLite reference kernels (``kernels/reshape.cc``,
``concatenation.cc``, ``pad.cc``, ``reduce.cc`` with ``reference/concatenation.h`` and
``reference/reduce.h``).
"""

from __future__ import annotations

import numpy as np

from ..fixedpoint import (
    Rounding,
    dtype_range,
    mul_by_quantized_multiplier,
    quantize_multiplier,
    round_half_away,
)
from ..graph import Graph, Operator, Tensor
from .base import Kernel, register

PAD_MAX_RANK = 5
"""Largest rank TFLite's PAD kernel accepts (``PadKernelMaxDimensionCount``)."""

_F = np.float32


def _is_per_tensor(t: Tensor) -> bool:
    return t.quant is not None and not t.quant.per_axis


def _same_quant(a: Tensor, b: Tensor) -> bool:
    """Equal scale (as float32) and zero point, the test TFLite kernels make."""
    return _F(a.quant.s) == _F(b.quant.s) and a.quant.zp == b.quant.zp


def _constant_ints(kernel: Kernel, t: Tensor | None, what: str) -> np.ndarray:
    kernel.need(t is not None, f"the {what} input is required")
    kernel.need(t.is_constant, f"{what} {t.describe()} must be a constant")
    kernel.need(np.dtype(t.dtype) in (np.dtype(np.int32), np.dtype(np.int64)),
                f"{what} {t.describe()} must be int32 or int64")
    return np.asarray(t.data, np.int64)


@register("RESHAPE")
class Reshape(Kernel):
    """Reinterpret the data with the output's shape (a copy: no requantization)."""

    def __init__(self, op: Operator, graph: Graph, rounding: Rounding = "double") -> None:
        super().__init__(op, graph, rounding)
        self.need(1 <= len(self.inputs) <= 2 and len(self.outputs) == 1,
                  "expects 1 or 2 inputs and 1 output")
        x, out = self.inputs[0], self.outputs[0]
        self.need(x is not None, "the data input is required")
        self.need(np.dtype(x.dtype) == np.dtype(out.dtype),
                  f"input {x.describe()} and output {out.describe()} differ in dtype")
        self.need(x.size == out.size,
                  f"cannot reshape {list(x.shape)} ({x.size} elements) to {list(out.shape)}")
        requested = None
        if len(self.inputs) == 2 and self.inputs[1] is not None:
            requested = _constant_ints(self, self.inputs[1], "shape").reshape(-1)
        elif op.options.get("new_shape") is not None:
            requested = np.asarray(op.options["new_shape"], np.int64).reshape(-1)
        if requested is not None:
            self._check_requested([int(v) for v in requested], x.size, out)
        self.shape = tuple(out.shape)

    def _check_requested(self, dims: list[int], size: int, out: Tensor) -> None:
        """The requested shape (one -1 allowed) must resolve to the output's shape."""
        self.need(dims.count(-1) <= 1 and all(d >= -1 for d in dims),
                  f"invalid new shape {dims}")
        if -1 in dims:
            known = int(np.prod([d for d in dims if d != -1], dtype=np.int64))
            self.need(known > 0 and size % known == 0,
                      f"new shape {dims} does not fit {size} elements")
            dims[dims.index(-1)] = size // known
        self.need(tuple(dims) == tuple(out.shape),
                  f"new shape {dims} disagrees with output {out.describe()}")

    def __call__(self, *inputs: np.ndarray | None) -> list[np.ndarray]:
        x = np.asarray(inputs[0])
        return [x.reshape((x.shape[0], *self.shape))]


@register("CONCATENATION")
class Concatenation(Kernel):
    """Join inputs along ``axis``; uint8 inputs quantized unlike the output are rescaled.

    The rescaling is TFLite's ``ConcatenationWithScaling`` in float32:
    ``round(q * (s_in * (1 / s_out)) + (-z_in * that)) + z_out``, clamped to [0, 255].
    int8 inputs must be quantized exactly like the output (TFLite refuses otherwise).
    """

    def __init__(self, op: Operator, graph: Graph, rounding: Rounding = "double") -> None:
        super().__init__(op, graph, rounding)
        self.need(len(self.inputs) >= 1 and len(self.outputs) == 1,
                  "expects at least 1 input and 1 output")
        self.need(all(t is not None for t in self.inputs), "an input is missing")
        out = self.outputs[0]
        self.dtype = np.dtype(out.dtype)
        self.need(self.dtype.name in self.dtypes,
                  f"output {out.describe()}: dtype must be uint8 or int8")
        self.need(op.options.get("activation", "NONE") == "NONE",
                  "fused activations are not supported (TFLite requires NONE)")
        rank = len(out.shape)
        axis = int(op.options.get("axis", 0))
        self.need(-rank <= axis < rank, f"axis {axis} out of range for rank {rank}")
        self.axis = axis % rank
        total = 0
        for t in self.inputs:
            self.need(np.dtype(t.dtype) == self.dtype,
                      f"input {t.describe()} and output {out.describe()} differ in dtype")
            self.need(len(t.shape) == rank and all(
                a == b for d, (a, b) in enumerate(zip(t.shape, out.shape)) if d != self.axis),
                f"input {t.describe()} does not match output {out.describe()} off axis "
                f"{self.axis}")
            total += t.shape[self.axis]
        self.need(total == out.shape[self.axis],
                  f"inputs sum to {total} along axis {self.axis}, output has "
                  f"{out.shape[self.axis]}")
        for t in (*self.inputs, out):
            self.need(_is_per_tensor(t), f"{t.describe()} needs per-tensor quantization")
        self.rescale: list[tuple[np.float32, np.float32] | None] = []
        for t in self.inputs:
            if _same_quant(t, out):
                self.rescale.append(None)
                continue
            self.need(self.dtype == np.dtype(np.uint8),
                      f"int8 input {t.describe()} is quantized unlike the output "
                      f"(scale {float(t.quant.s):g} zero point {t.quant.zp} vs "
                      f"{float(out.quant.s):g}/{out.quant.zp}); TFLite's int8 kernel "
                      "cannot rescale")
            scale = _F(_F(t.quant.s) * (_F(1) / _F(out.quant.s)))
            self.rescale.append((scale, _F(_F(-t.quant.zp) * scale)))
        self.out_zp = out.quant.zp
        self.folded = [self._stage(k, t.data[None]) if t.is_constant else None
                       for k, t in enumerate(self.inputs)]

    def _stage(self, k: int, x: np.ndarray) -> np.ndarray:
        params = self.rescale[k]
        if params is None:
            return x
        scale, bias = params
        v = round_half_away((x.astype(_F) * scale + bias).astype(_F))
        return np.clip(v.astype(np.int64) + self.out_zp, 0, 255).astype(np.uint8)

    def __call__(self, *inputs: np.ndarray | None) -> list[np.ndarray]:
        parts = [f if f is not None else self._stage(k, np.asarray(x))
                 for k, (f, x) in enumerate(zip(self.folded, inputs))]
        samples = max(p.shape[0] for p in parts)
        parts = [np.broadcast_to(p, (samples, *p.shape[1:])) for p in parts]
        return [np.concatenate(parts, axis=self.axis + 1).astype(self.dtype)]


def _same_dtype_data_and_output(k: Kernel) -> tuple[Tensor, Tensor]:
    """The data input and the output of ``k``, both uint8 or both int8; sets ``k.dtype``."""
    x, out = k.inputs[0], k.outputs[0]
    k.need(x is not None, "the data input is required")
    k.dtype = np.dtype(out.dtype)
    k.need(k.dtype.name in k.dtypes, f"output {out.describe()}: dtype must be uint8 or int8")
    k.need(np.dtype(x.dtype) == k.dtype,
           f"input {x.describe()} and output {out.describe()} differ in dtype")
    return x, out


@register("PAD", "PADV2")
class Pad(Kernel):
    """Pad with the output zero point (PAD) or the constant value input (PADV2).

    Like TFLite, the data is copied as is: no requantization between input and output.
    """

    def __init__(self, op: Operator, graph: Graph, rounding: Rounding = "double") -> None:
        super().__init__(op, graph, rounding)
        self.need(len(self.inputs) in (2, 3) and len(self.outputs) == 1,
                  "expects 2 or 3 inputs and 1 output")
        x, out = _same_dtype_data_and_output(self)
        self.need(_is_per_tensor(out), f"output {out.describe()} needs per-tensor quantization")
        rank = len(x.shape)
        self.need(rank <= PAD_MAX_RANK, f"rank {rank} exceeds TFLite's PAD limit {PAD_MAX_RANK}")
        pads = _constant_ints(self, self.inputs[1], "paddings")
        self.need(pads.shape == (rank, 2),
                  f"paddings shape {list(pads.shape)} must be [{rank}, 2]")
        self.need(bool(np.all(pads >= 0)), "paddings must be non-negative")
        want = tuple(int(d + p.sum()) for d, p in zip(x.shape, pads))
        self.need(want == tuple(out.shape),
                  f"padding {list(x.shape)} gives {list(want)}, output is {out.describe()}")
        self.pads = [(0, 0)] + [(int(a), int(b)) for a, b in pads]
        value_t = self.inputs[2] if len(self.inputs) == 3 else None
        if value_t is None:
            lo, hi = dtype_range(self.dtype)
            self.need(lo <= out.quant.zp <= hi,
                      f"output zero point {out.quant.zp} outside the {self.dtype.name} range")
            self.value = out.quant.zp
        else:
            self.need(value_t.is_constant and value_t.size == 1,
                      f"constant value {value_t.describe()} must be a one-element constant")
            self.need(np.dtype(value_t.dtype) == self.dtype,
                      f"constant value {value_t.describe()} must be {self.dtype.name}")
            self.need(value_t.quant is not None and _same_quant(value_t, out),
                      f"constant value {value_t.describe()} must be quantized like the output")
            self.value = int(np.asarray(value_t.data).reshape(-1)[0])

    def __call__(self, *inputs: np.ndarray | None) -> list[np.ndarray]:
        x = np.asarray(inputs[0])
        return [np.pad(x, self.pads, mode="constant", constant_values=self.value)]


@register("MEAN")
class Mean(Kernel):
    """MEAN over constant axes: TFLite's integer-only reference ``QuantizedMeanOrSum``.

    ``s_in / s_out`` (double) becomes a Q31 multiplier and shift; the multiplier is then
    divided by the element count ``n`` after a left shift by ``floor(log2 n)`` (at most 32 and
    at most ``31 + shift``), and ``sum(q) - n z_in`` is requantized with it. This is the
    reference kernel since TensorFlow PR #52014 (2023; tflite-runtime 2.14, LiteRT); older
    releases took float32 or 4-D special paths.
    """

    def __init__(self, op: Operator, graph: Graph, rounding: Rounding = "double") -> None:
        super().__init__(op, graph, rounding)
        self.need(len(self.inputs) == 2 and len(self.outputs) == 1,
                  "expects 2 inputs (data, axes) and 1 output")
        x, out = _same_dtype_data_and_output(self)
        for t in (x, out):
            self.need(_is_per_tensor(t), f"{t.describe()} needs per-tensor quantization")
        axes_t = self.inputs[1]
        self.need(axes_t is not None and axes_t.is_constant,
                  "the axes input must be a constant")
        self.need(np.dtype(axes_t.dtype) == np.dtype(np.int32),
                  f"axes {axes_t.describe()} must be int32")
        raw_axes = [int(a) for a in np.asarray(axes_t.data).reshape(-1)]
        rank = len(x.shape)
        self.need(rank >= 1, "a scalar input cannot be reduced")
        self.need(all(-rank <= a < rank for a in raw_axes),
                  f"axes {raw_axes} out of range for rank {rank}")
        self.need(x.size > 0, f"input {x.describe()} is empty")
        self.axes = tuple(sorted({a % rank for a in raw_axes}))
        keep = bool(op.options.get("keep_dims", False))
        want = tuple(1 if d in self.axes else n for d, n in enumerate(x.shape)
                     if keep or d not in self.axes)
        self.need(want == tuple(out.shape),
                  f"reducing {list(x.shape)} over {raw_axes} gives {list(want)}, output is "
                  f"{out.describe()}")
        self.count = int(np.prod([x.shape[a] for a in self.axes], dtype=np.int64))
        self.lo, self.hi = dtype_range(self.dtype)
        self.zp_in, self.zp_out = x.quant.zp, out.quant.zp
        m, s = (int(v) for v in quantize_multiplier(
            float(_F(x.quant.s)) / float(_F(out.quant.s)), rounding))
        bits = min(self.count.bit_length() - 1, 32, 31 + s)
        self.mult = (int((m << bits) // self.count), s - bits)

    def __call__(self, *inputs: np.ndarray | None) -> list[np.ndarray]:
        x = np.asarray(inputs[0]).astype(np.int64)
        total = x.sum(axis=tuple(a + 1 for a in self.axes)) - self.zp_in * self.count
        y = mul_by_quantized_multiplier(total, *self.mult, self.rounding) + self.zp_out
        y = np.clip(y, self.lo, self.hi).astype(self.dtype)
        return [y.reshape((y.shape[0], *self.outputs[0].shape))]
