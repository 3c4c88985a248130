"""SOFTMAX on uint8 / int8: the classic reference kernel (``reference_ops::Softmax``).

Prepare (``kReference``): ``PreprocessSoftmaxScaling(beta, input_scale, 5)`` gives a Q31
multiplier and left shift that map an input difference to Q5.26; ``diff_min`` is minus
``CalculateInputRadius(5, left_shift)``. Per row: differences to the row maximum below
``diff_min`` contribute nothing and output the type's minimum; the others go through
``exp_on_negative_values``, are summed in Q12.19, and each is multiplied by ``GetReciprocal`` of
the sum and rounded to 8 bits. The output is always quantized with scale 1/256 and zero point
0 (uint8) or -128 (int8): the kernel writes ``value + numeric_limits<T>::min()``.

A row whose sum of exponentials reaches 512 (e.g. 512 equal entries) makes the final
RoundingDivideByPOT exponent exceed 31; LiteRT and TFLite Micro abort on gemmlowp's assertion
there, and this kernel raises ModelError.
"""

from __future__ import annotations

import numpy as np

from ..fixedpoint import (
    Rounding,
    dtype_range,
    quantize_multiplier,
    rounding_divide_by_pot,
    saturating_rounding_doubling_high_mul,
    wrap_int32,
)
from ..graph import Graph, Operator
from ..transcendental import (
    FixedPoint,
    calculate_input_radius,
    exp_on_negative_values,
    get_reciprocal,
    mul_by_quantized_multiplier_greater_than_one,
    rescale,
)
from .activation import unary_quantized
from .base import Kernel, register

SCALED_DIFF_INTEGER_BITS = 5
ACCUMULATION_INTEGER_BITS = 12


def preprocess_softmax_scaling(
    beta: float, input_scale: float, input_integer_bits: int, rounding: Rounding = "double"
) -> tuple[float, int, int]:
    """TFLite ``PreprocessSoftmaxScaling``: ``(real, multiplier, left_shift)``.

    ``real = min(beta * input_scale * 2^(31 - input_integer_bits), 2^31 - 1)`` in double
    (``2^30 - 1`` under single rounding); the caller must check ``real > 1`` and
    ``left_shift >= 0`` as QuantizeMultiplierGreaterThanOne does.
    """
    cap = float((1 << 30) - 1) if rounding == "single" else float((1 << 31) - 1)
    real = min(float(beta) * float(input_scale) * float(1 << (31 - input_integer_bits)), cap)
    m, s = quantize_multiplier(real)
    return real, int(m), int(s)


@register("SOFTMAX")
class Softmax(Kernel):
    """SOFTMAX over the last axis with ``beta`` (uint8 / int8, output scale 1/256)."""

    def __init__(self, op: Operator, graph: Graph, rounding: Rounding = "double") -> None:
        super().__init__(op, graph, rounding)
        inp, out, in_q, out_q = unary_quantized(self)
        self.need(len(inp.shape) >= 1, f"input {inp.describe()} must have at least one axis")
        self.dtype = np.dtype(out.dtype)
        self.lo, self.hi = dtype_range(self.dtype)
        self.need(abs(float(out_q.s) - 1.0 / 256) <= 0.001 / 256 and out_q.zp == self.lo,
                  f"output {out.describe()} must have scale 1/256 and zero point {self.lo} "
                  f"(the reference writes that quantization), not scale {float(out_q.s):.9g} "
                  f"zero point {out_q.zp}")
        self.beta = float(op.options.get("beta", 1.0))
        real, m, shift = preprocess_softmax_scaling(
            self.beta, float(in_q.s), SCALED_DIFF_INTEGER_BITS, rounding)
        self.need(real > 1.0 and shift >= 0,
                  f"beta * input scale = {self.beta * float(in_q.s):.9g} is too small: "
                  "the reference needs beta * scale * 2^26 > 1")
        self.multiplier, self.left_shift = m, shift
        self.diff_min = -calculate_input_radius(SCALED_DIFF_INTEGER_BITS, shift)

    def __call__(self, x: np.ndarray | None) -> list[np.ndarray]:
        assert x is not None
        x = x.astype(np.int64)
        diff = x - x.max(axis=-1, keepdims=True)
        used = diff >= self.diff_min
        rescaled = mul_by_quantized_multiplier_greater_than_one(
            np.where(used, diff, 0), self.multiplier, self.left_shift, self.rounding)
        exp = exp_on_negative_values(FixedPoint.from_raw(rescaled, SCALED_DIFF_INTEGER_BITS))
        exp_accum = rescale(exp, ACCUMULATION_INTEGER_BITS).raw
        sum_of_exps = wrap_int32(np.where(used, exp_accum, 0).sum(axis=-1, keepdims=True))
        shifted_scale, num_bits_over_unit = get_reciprocal(sum_of_exps, ACCUMULATION_INTEGER_BITS)
        exponent = num_bits_over_unit + 31 - 8 * self.dtype.itemsize
        if np.any(exponent > 31):
            rows = int(np.count_nonzero(exponent > 31))
            raise self.fail(
                f"{rows} row(s) have a sum of exponentials of 512 or more (too many entries "
                "near the row maximum): the reference kernel's RoundingDivideByPOT exponent "
                "exceeds 31, an assertion on which LiteRT and TFLite Micro abort")
        product = saturating_rounding_doubling_high_mul(shifted_scale, exp.raw)
        unsat = rounding_divide_by_pot(product, np.broadcast_to(exponent, product.shape))
        y = np.clip(wrap_int32(unsat + self.lo), self.lo, self.hi)
        return [np.where(used, y, self.lo).astype(self.dtype)]
