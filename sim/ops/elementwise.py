"""ADD, SUB and MUL on per-tensor uint8/int8 tensors: broadcasting, fused activations.

Semantics of the classic TFLite reference kernels (``kernels/add.cc``, ``sub.cc``, ``mul.cc``,
``reference/add.h``, ``reference/integer_ops/add.h``, ``reference/mul.h``).
"""

from __future__ import annotations

import numpy as np

from ..fixedpoint import (
    Rounding,
    mul_by_quantized_multiplier,
    quantize_multiplier,
    quantize_multiplier_smaller_than_one,
)
from ..graph import Graph, Operator
from ..quant import ACTIVATIONS, activation_range
from .base import Kernel, register

ADD_LEFT_SHIFT = 20
"""Headroom bits of the 8-bit ADD/SUB path (``left_shift`` in ``add.cc``)."""


def align(x: np.ndarray, rank: int) -> np.ndarray:
    """Insert unit axes after the sample axis so that ``x`` broadcasts at ``rank`` + 1 dims."""
    missing = rank - (x.ndim - 1)
    return x.reshape(x.shape[:1] + (1,) * missing + x.shape[1:])


class _Binary(Kernel):
    """Checks shared by the two-input arithmetic kernels; folds constant operands."""

    def __init__(self, op: Operator, graph: Graph, rounding: Rounding = "double") -> None:
        super().__init__(op, graph, rounding)
        self.need(len(self.inputs) == 2 and len(self.outputs) == 1,
                  f"expects 2 inputs and 1 output, got {len(self.inputs)} and {len(self.outputs)}")
        self.need(all(t is not None for t in self.inputs), "both inputs are required")
        out = self.outputs[0]
        self.dtype = np.dtype(out.dtype)
        self.need(self.dtype.name in self.dtypes,
                  f"output {out.describe()}: dtype must be uint8 or int8")
        for t in self.inputs:
            self.need(np.dtype(t.dtype) == self.dtype,
                      f"input {t.describe()} and output {out.describe()} differ in dtype")
        for t in (*self.inputs, out):
            self.need(t.quant is not None and not t.quant.per_axis,
                      f"{t.describe()} needs per-tensor quantization")
        try:
            shape = np.broadcast_shapes(self.inputs[0].shape, self.inputs[1].shape)
        except ValueError:
            raise self.fail(f"input shapes {list(self.inputs[0].shape)} and "
                            f"{list(self.inputs[1].shape)} do not broadcast") from None
        self.need(tuple(shape) == tuple(out.shape),
                  f"inputs broadcast to {list(shape)}, but output {out.describe()} differs")
        self.rank = len(out.shape)
        activation = op.options.get("activation", "NONE")
        self.need(activation in ACTIVATIONS, f"fused activation {activation} is not supported")
        self.act_min, self.act_max = activation_range(activation, out.quant, self.dtype)
        self.out_zp = out.quant.zp

    def _operand(self, k: int, x: np.ndarray | None) -> np.ndarray:
        """Input ``k`` after its per-input stage, aligned for broadcasting (constants folded)."""
        folded = self._folded[k]
        if folded is not None:
            return folded
        if x is None:
            raise self.fail(f"input {k} is missing")
        return align(self._stage(k, np.asarray(x)), self.rank)

    def _fold(self) -> None:
        self._folded: list[np.ndarray | None] = [
            align(self._stage(k, t.data[None]), self.rank) if t.is_constant else None
            for k, t in enumerate(self.inputs)
        ]

    def _stage(self, k: int, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _finish(self, acc: np.ndarray) -> list[np.ndarray]:
        y = np.clip(acc + self.out_zp, self.act_min, self.act_max)
        return [y.astype(self.dtype)]


@register("ADD", "SUB")
class AddSub(_Binary):
    """8-bit ADD (and SUB, the ADD kernel with input 2's multiplier negated, as TFLite does).

    Each input is offset, shifted left by 20 bits and scaled by ``s_i / (2 max(s1, s2))``; the
    sum is scaled by ``2 max(s1, s2) / (2^20 s_out)``. The real multipliers are computed in
    double precision from the float32 scales (exact products by powers of two).
    """

    def __init__(self, op: Operator, graph: Graph, rounding: Rounding = "double") -> None:
        super().__init__(op, graph, rounding)
        s1, s2, so = (np.float32(t.quant.s) for t in (*self.inputs, self.outputs[0]))
        twice_max = float(np.float32(2) * max(s1, s2))
        reals = (float(s1) / twice_max, float(s2) / twice_max,
                 twice_max / float(np.float32(1 << ADD_LEFT_SHIFT) * so))
        try:
            (m1, sh1), (m2, sh2), (mo, sho) = (
                (int(m), int(s)) for m, s in map(quantize_multiplier_smaller_than_one, reals))
        except ValueError:
            raise self.fail(f"output scale {float(so):g} is too small for input scales "
                            f"{float(s1):g} and {float(s2):g} (needs 2 max(s1, s2) < "
                            f"2^{ADD_LEFT_SHIFT} s_out)") from None
        sign = -1 if op.opcode == "SUB" else 1
        self.in_zp = [t.quant.zp for t in self.inputs]
        self.in_mult = [(m1, sh1), (sign * m2, sh2)]
        self.out_mult = (mo, sho)
        self._fold()

    def _stage(self, k: int, x: np.ndarray) -> np.ndarray:
        shifted = (x.astype(np.int64) - self.in_zp[k]) << ADD_LEFT_SHIFT
        return mul_by_quantized_multiplier(shifted, *self.in_mult[k], self.rounding)

    def __call__(self, *inputs: np.ndarray | None) -> list[np.ndarray]:
        raw = self._operand(0, inputs[0]) + self._operand(1, inputs[1])
        return self._finish(mul_by_quantized_multiplier(raw, *self.out_mult, self.rounding))


@register("MUL")
class Mul(_Binary):
    """8-bit MUL: ``(q1 - z1)(q2 - z2)`` scaled by ``s1 s2 / s_out``.

    TFLite computes that real multiplier in float32 (``s1 * s2 / s_out`` on floats) before
    widening it to double; so does this kernel.
    """

    def __init__(self, op: Operator, graph: Graph, rounding: Rounding = "double") -> None:
        super().__init__(op, graph, rounding)
        s1, s2, so = (np.float32(t.quant.s) for t in (*self.inputs, self.outputs[0]))
        real = float(np.float32(s1 * s2) / so)
        m, s = quantize_multiplier(real, rounding)
        self.mult = (int(m), int(s))
        self.in_zp = [t.quant.zp for t in self.inputs]
        self._fold()

    def _stage(self, k: int, x: np.ndarray) -> np.ndarray:
        return x.astype(np.int64) - self.in_zp[k]

    def __call__(self, *inputs: np.ndarray | None) -> list[np.ndarray]:
        prod = self._operand(0, inputs[0]) * self._operand(1, inputs[1])
        return self._finish(mul_by_quantized_multiplier(prod, *self.mult, self.rounding))

