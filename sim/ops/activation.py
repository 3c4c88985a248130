"""Elementwise activations: LOGISTIC, TANH, HARD_SWISH, RELU, RELU6, RELU_N1_TO_1.

Semantics of the classic TFLite reference kernels (``kernels/activations.cc`` with the
``kReference`` kernel type, which LiteRT's ``BUILTIN_REF`` resolver selects):

- LOGISTIC, TANH (uint8 and int8): a 256-entry table built in float32 at prepare time
  (``LUTPopulate``: dequantize, apply the float function, ``round(y / output_scale) + zp``).
  The 16-bit fixed-point path (``Logistic16bitPrecision``) is the *optimized* kernel type;
  TFLite Micro's int8 kernels use gemmlowp fixed point instead (see ``transcendental``).
  The float functions are the C library's: ``tanhf`` is fdlibm's (glibc up to 2.40, newlib),
  reproduced operation by operation, because its last-bit errors move table entries; ``expf``
  is taken correctly rounded (glibc's differs in the last bit on ~0.04% of inputs, which moved
  none of 7.7 million logistic table entries checked).
- HARD_SWISH: ``reference_ops::HardSwish`` with int16 fixed-point "reluish" and output
  multipliers.
- RELU, RELU6, RELU_N1_TO_1: requantize input -> output (``MultiplyByQuantizedMultiplier``),
  then clamp to the activation range expressed in the output quantization.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..fixedpoint import (
    INT32_MAX,
    INT32_MIN,
    Rounding,
    dtype_range,
    mul_by_quantized_multiplier,
    quantize_multiplier,
    round_half_away,
)
from ..graph import Graph, Operator, Tensor
from ..quant import QuantParams, activation_range
from ..transcendental import (
    rounding_divide_by_pot_int16,
    saturating_doubling_high_mul_int16,
    saturating_left_shift_int16,
    saturating_rounding_doubling_high_mul_int16,
)
from .base import Kernel, register

F32 = np.float32


def unary_quantized(kernel: Kernel) -> tuple[Tensor, Tensor, QuantParams, QuantParams]:
    """Check a one-input, one-output op on per-tensor uint8/int8 of one dtype."""
    kernel.need(len(kernel.inputs) == 1 and kernel.inputs[0] is not None,
                f"expects 1 input, got {len(kernel.inputs)}")
    kernel.need(len(kernel.outputs) == 1, f"expects 1 output, got {len(kernel.outputs)}")
    inp, out = kernel.inputs[0], kernel.outputs[0]
    assert inp is not None
    for role, t in (("input", inp), ("output", out)):
        name = np.dtype(t.dtype).name
        kernel.need(name in kernel.dtypes,
                    f"{role} {t.describe()} must be uint8 or int8, not {name}")
        kernel.need(t.quant is not None, f"{role} {t.describe()} has no quantization")
        assert t.quant is not None
        kernel.need(not t.quant.per_axis, f"{role} {t.describe()} must be quantized per tensor")
        kernel.need(float(t.quant.s) > 0, f"{role} {t.describe()} has scale {t.quant.s}")
    kernel.need(np.dtype(inp.dtype) == np.dtype(out.dtype),
                f"input and output dtypes differ ({np.dtype(inp.dtype).name} vs "
                f"{np.dtype(out.dtype).name})")
    assert inp.quant is not None and out.quant is not None
    return inp, out, inp.quant, out.quant


def _logistic_f32(x: np.ndarray) -> np.ndarray:
    """``1.0f / (1.0f + expf(-x))`` in float32 (expf correctly rounded)."""
    with np.errstate(over="ignore"):
        e = np.exp(-x.astype(np.float64)).astype(F32)
    return (F32(1) / (F32(1) + e)).astype(F32)


# fdlibm's float constants (glibc <= 2.40 sysdeps/ieee754/flt-32/s_expm1f.c, newlib).
_LN2_HI, _LN2_LO, _INVLN2, _Q1, _Q2, _Q3, _Q4, _Q5 = np.array(
    [0x3F317180, 0x3717F7D1, 0x3FB8AA3B, 0xBD088889, 0x3AD00D01, 0xB8A670CD, 0x36867E54,
     0xB457EDBB], np.uint32).view(F32)


def _add_exponent(y: np.ndarray, k: np.ndarray) -> np.ndarray:
    """``SET_FLOAT_WORD(y, GET_FLOAT_WORD(y) + (k << 23))``: y * 2^k by its exponent bits."""
    return (y.view(np.int32) + (k.astype(np.int32) << 23)).astype(np.int32).view(F32)


def expm1f_fdlibm(x: np.ndarray) -> np.ndarray:
    """fdlibm ``expm1f`` in float32, operation for operation (finite inputs below 88.7)."""
    x = np.asarray(x, F32)
    hx = x.view(np.int32) & 0x7FFFFFFF
    neg = x < 0
    one, half = F32(1), F32(0.5)
    sign_half = np.where(neg, -half, half).astype(F32)
    k_big = np.trunc(_INVLN2 * x + sign_half).astype(np.int32)
    near = hx < 0x3F851592  # |x| < 1.5 ln2: k = +-1
    k = np.where(near, np.where(neg, -1, 1), k_big).astype(np.int32)
    t = k.astype(F32)
    hi = np.where(near, np.where(neg, x + _LN2_HI, x - _LN2_HI), x - t * _LN2_HI).astype(F32)
    lo = np.where(near, np.where(neg, -_LN2_LO, _LN2_LO), t * _LN2_LO).astype(F32)
    reduced = hx > 0x3EB17218  # |x| > 0.5 ln2
    k = np.where(reduced, k, 0)
    xr = np.where(reduced, hi - lo, x).astype(F32)
    c = np.where(reduced, (hi - xr) - lo, F32(0)).astype(F32)
    x = xr
    hfx = half * x
    hxs = x * hfx
    r1 = one + hxs * (_Q1 + hxs * (_Q2 + hxs * (_Q3 + hxs * (_Q4 + hxs * _Q5))))
    t = F32(3) - r1 * hfx
    e = hxs * ((r1 - t) / (F32(6) - x * t))
    y_k0 = x - (x * e - hxs)
    e = (x * (e - c) - c) - hxs
    y_km1 = half * (x - e) - half
    y_k1 = np.where(x < F32(-0.25), -F32(2) * (e - (x + half)), one + F32(2) * (x - e))
    y_far = _add_exponent((one - (e - x)).astype(F32), k) - one
    k_small = np.clip(k, 0, 22)
    t_small = (np.int32(0x3F800000) - (np.int32(0x1000000) >> k_small)).view(F32)
    y_small = _add_exponent((t_small - (e - x)).astype(F32), k)
    t_mid = ((0x7F - np.clip(k, 23, 56)) << 23).astype(np.int32).view(F32)
    y_mid = _add_exponent(((x - (e + t_mid)) + one).astype(F32), k)
    y = np.select([k == 0, k == -1, k == 1, (k <= -2) | (k > 56), k < 23],
                  [y_k0, y_km1, y_k1, y_far, y_small], y_mid).astype(F32)
    y = np.where((hx >= 0x4195B844) & neg, F32(-1), y)  # x < -27 ln2
    return np.where(hx < 0x33000000, np.asarray(x, F32), y).astype(F32)


def tanhf_fdlibm(x: np.ndarray) -> np.ndarray:
    """fdlibm ``tanhf`` in float32 (glibc <= 2.40, newlib), operation for operation."""
    x = np.asarray(x, F32)
    ix = x.view(np.int32) & 0x7FFFFFFF
    one, two = F32(1), F32(2)
    ax = np.abs(x)
    with np.errstate(over="ignore", invalid="ignore"):
        t_big = expm1f_fdlibm(two * ax)
        z_big = one - two / (t_big + two)
        t_small = expm1f_fdlibm(-two * ax)
        z_small = -t_small / (t_small + two)
    z = np.where(ix >= 0x3F800000, z_big, z_small)
    z = np.where(ix >= 0x41B00000, one, z)  # |x| >= 22
    z = np.where(x < 0, -z, z).astype(F32)
    return np.where(ix < 0x24000000, x, z).astype(F32)  # |x| < 2^-55 (and 0): x


def _tanh_f32(x: np.ndarray) -> np.ndarray:
    """``tanhf(x)`` as the reference's C library computes it (fdlibm, see TANH)."""
    return tanhf_fdlibm(x)


def populate_lut(
    fn: Callable[[np.ndarray], np.ndarray], in_q: QuantParams, out_q: QuantParams, dtype
) -> np.ndarray:
    """TFLite ``LUTPopulate`` for 8-bit types: entry ``k`` maps the value ``lo + k``.

    All arithmetic is float32 as in the reference; ``fn`` is the float32 transform.
    """
    lo, hi = dtype_range(dtype)
    values = np.arange(lo, hi + 1, dtype=np.int64)
    dequantized = F32(in_q.s) * (values - in_q.zp).astype(F32)
    transformed = fn(dequantized)
    inverse_scale = F32(1) / F32(out_q.s)
    rescaled = round_half_away((transformed * inverse_scale).astype(F32))
    shifted = (rescaled.astype(F32) + F32(out_q.zp)).astype(np.float64)
    if not np.all((shifted >= INT32_MIN) & (shifted <= INT32_MAX)):
        raise ValueError("table values overflow int32 (output scale too small): the "
                         "reference's float -> int32 conversion is undefined there")
    return np.clip(shifted.astype(np.int64), lo, hi).astype(dtype)


class _LookupTable(Kernel):
    """A float-built 256-entry table, as the reference kernel type evaluates 8-bit inputs."""

    transform: Callable[[np.ndarray], np.ndarray]

    def __init__(self, op: Operator, graph: Graph, rounding: Rounding = "double") -> None:
        super().__init__(op, graph, rounding)
        inp, out, in_q, out_q = unary_quantized(self)
        self.check_output(out, out_q)
        self.lo = dtype_range(inp.dtype)[0]
        try:
            self.table = populate_lut(type(self).transform, in_q, out_q, inp.dtype)
        except ValueError as e:
            raise self.fail(f"output {out.describe()}: {e}") from None

    def check_output(self, out: Tensor, out_q: QuantParams) -> None:
        pass

    def __call__(self, x: np.ndarray | None) -> list[np.ndarray]:
        assert x is not None
        return [self.table[x.astype(np.int64) - self.lo]]


@register("LOGISTIC")
class Logistic(_LookupTable):
    """LOGISTIC: table of ``1 / (1 + exp(-x))``; the reference requires output scale 1/256."""

    transform = staticmethod(_logistic_f32)

    def check_output(self, out: Tensor, out_q: QuantParams) -> None:
        self.need(float(out_q.s) == 1.0 / 256,
                  f"output {out.describe()} must have scale 1/256, not {float(out_q.s):.9g}")


@register("TANH")
class Tanh(_LookupTable):
    """TANH: table of ``tanh(x)``; any output quantization (the converter uses 1/128)."""

    transform = staticmethod(_tanh_f32)


def downscale_multiplier_to_int16(multiplier: int) -> int:
    """TFLite ``DownScaleInt32ToInt16Multiplier``: round a Q31 multiplier to Q15, saturating."""
    if multiplier >= INT32_MAX - (1 << 15):
        return (1 << 15) - 1
    return (multiplier + (1 << 15)) >> 16


@register("HARD_SWISH")
class HardSwish(Kernel):
    """HARD_SWISH: ``x * relu6(x + 3) / 6`` in the reference's int16 fixed point."""

    def __init__(self, op: Operator, graph: Graph, rounding: Rounding = "double") -> None:
        super().__init__(op, graph, rounding)
        inp, out, in_q, out_q = unary_quantized(self)
        self.in_zp, self.out_zp = in_q.zp, out_q.zp
        self.lo, self.hi = dtype_range(out.dtype)
        self.dtype = np.dtype(out.dtype)
        hires_input_scale = F32(1.0 / 128.0) * F32(in_q.s)
        reluish_scale = F32(3.0) / F32(32768.0)
        output_multiplier = F32(hires_input_scale / F32(out_q.s))
        m, e = quantize_multiplier(float(output_multiplier))
        self.output_multiplier = downscale_multiplier_to_int16(int(m))
        self.output_exponent = int(e)
        self.need(self.output_exponent <= 0,
                  f"input scale {float(in_q.s):.9g} / (128 * output scale "
                  f"{float(out_q.s):.9g}) must be below 1 (the reference requires a right shift)")
        reluish_multiplier = F32(hires_input_scale / reluish_scale)
        m, e = quantize_multiplier(float(reluish_multiplier))
        self.reluish_multiplier = downscale_multiplier_to_int16(int(m))
        self.reluish_exponent = int(e)

    def __call__(self, x: np.ndarray | None) -> list[np.ndarray]:
        assert x is not None
        hires = (x.astype(np.int64) - self.in_zp) * (1 << 7)
        preshift_output = saturating_rounding_doubling_high_mul_int16(
            hires, self.output_multiplier)
        reluish = hires
        if self.reluish_exponent > 0:
            reluish = saturating_left_shift_int16(reluish, self.reluish_exponent - 1)
        reluish = saturating_rounding_doubling_high_mul_int16(reluish, self.reluish_multiplier)
        if self.reluish_exponent > 0:
            reluish = saturating_left_shift_int16(reluish, 1)
        if self.reluish_exponent < 0:
            reluish = rounding_divide_by_pot_int16(reluish, -self.reluish_exponent)
        reluish = (reluish + (1 << 15)) >> 1
        preshift = saturating_doubling_high_mul_int16(reluish, preshift_output)
        y = rounding_divide_by_pot_int16(preshift, -self.output_exponent) + self.out_zp
        y = ((y + (1 << 15)) & 0xFFFF) - (1 << 15)  # the reference adds the zero point in int16
        return [np.clip(y, self.lo, self.hi).astype(self.dtype)]


class _ReluX(Kernel):
    """Standalone RELU-family op: requantize input -> output, clamp in the output's terms."""

    activation: str

    def __init__(self, op: Operator, graph: Graph, rounding: Rounding = "double") -> None:
        super().__init__(op, graph, rounding)
        inp, out, in_q, out_q = unary_quantized(self)
        self.in_zp, self.out_zp = in_q.zp, out_q.zp
        real = F32(F32(in_q.s) / F32(out_q.s))  # float / float, as ReluPrepare computes it
        m, s = quantize_multiplier(float(real), rounding)
        self.multiplier, self.shift = int(m), int(s)
        self.act_min, self.act_max = activation_range(self.activation, out_q, out.dtype)
        self.dtype = np.dtype(out.dtype)

    def __call__(self, x: np.ndarray | None) -> list[np.ndarray]:
        assert x is not None
        acc = x.astype(np.int64) - self.in_zp
        y = self.out_zp + mul_by_quantized_multiplier(acc, self.multiplier, self.shift,
                                                      self.rounding)
        return [np.clip(y, self.act_min, self.act_max).astype(self.dtype)]


@register("RELU")
class Relu(_ReluX):
    """RELU: max(x, 0), requantized to the output."""

    activation = "RELU"


@register("RELU6")
class Relu6(_ReluX):
    """RELU6: min(max(x, 0), 6), requantized to the output."""

    activation = "RELU6"


@register("RELU_N1_TO_1")
class ReluN1To1(_ReluX):
    """RELU_N1_TO_1: min(max(x, -1), 1), requantized to the output."""

    activation = "RELU_N1_TO_1"
