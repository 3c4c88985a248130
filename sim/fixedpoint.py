"""Fixed-point primitives of the classic TFLite reference kernels, vectorised and exact.

Every function takes scalars or numpy arrays (broadcast together), computes in int64 so that no
intermediate can overflow silently, and returns int64 arrays holding int32 values unless it says
otherwise. Each one documents the real number it computes, its saturation corner and the
instruction it equals; `PRIMITIVES` lists them for the C renderers and the tests.

Normative sources: gemmlowp ``fixedpoint/fixedpoint.h`` and TFLite
``kernels/internal/common.h`` / ``quantization_util.cc``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1

Rounding = Literal["double", "single", "litert"]
"""Requantization scheme of a run.

- ``double``: classic TFLite / TFLite Micro reference: SaturatingRoundingDoublingHighMul then
  RoundingDivideByPOT (two roundings). The default and the definition of bit-exact.
- ``single``: ``TFLITE_SINGLE_ROUNDING`` (CMSIS-NN's option): one 64-bit multiply, one rounding.
- ``litert``: ``double`` everywhere except FULLY_CONNECTED, which LiteRT >= 2.20's reference
  kernel requantizes in double-precision floating point.
"""
ROUNDINGS: tuple[Rounding, ...] = ("double", "single", "litert")


@dataclass(frozen=True)
class Primitive:
    """What a fixed-point primitive computes, where it saturates and which instruction it is."""

    name: str
    meaning: str
    saturation: str
    instruction: str
    vector: bool = True  # NEON kernels also get a four-lane spelling


PRIMITIVES: dict[str, Primitive] = {}


def primitive(meaning: str, saturation: str, instruction: str, vector: bool = True):
    """Register the decorated function in `PRIMITIVES` (each needs a C spelling per ISA in
    `qlane.codegen.cprims`; ``vector=False``: scalar spellings only)."""

    def register(fn):
        PRIMITIVES[fn.__name__] = Primitive(fn.__name__, meaning, saturation, instruction,
                                            vector)
        return fn

    return register


_primitive = primitive


def _i64(x) -> np.ndarray:
    return np.asarray(x, dtype=np.int64)


def wrap_int32(x) -> np.ndarray:
    """Two's-complement wrap of int64 values to int32 range (C's int32 arithmetic overflow)."""
    x = _i64(x)
    return ((x - INT32_MIN) & 0xFFFFFFFF) + INT32_MIN


def _trunc_div(x: np.ndarray, d: int) -> np.ndarray:
    """C integer division (truncates toward zero) of int64 values by a positive constant."""
    q = np.abs(x) // d
    return np.where(x < 0, -q, q)


@_primitive(
    meaning="round(a * b / 2^31), ties toward +infinity (-0.5 -> 0): the Q31 product of two "
    "Q31 numbers",
    saturation="INT32_MIN * INT32_MIN would be +1.0; it saturates to INT32_MAX (the only case)",
    instruction="NEON VQRDMULH (vqrdmulhq_s32); gemmlowp SaturatingRoundingDoublingHighMul",
)
def saturating_rounding_doubling_high_mul(a, b) -> np.ndarray:
    """High 32 bits of 2*a*b, rounded, saturated."""
    a, b = _i64(a), _i64(b)
    ab = a * b
    nudge = np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    res = _trunc_div(ab + nudge, 1 << 31)
    return np.where((a == INT32_MIN) & (b == INT32_MIN), INT32_MAX, res)


@_primitive(
    meaning="round(x / 2^exponent), ties away from zero, for 0 <= exponent <= 31",
    saturation="none: the result always fits",
    instruction="NEON VRSHL by -exponent after a sign fix-up (vrshlq_s32); gemmlowp "
    "RoundingDivideByPOT",
)
def rounding_divide_by_pot(x, exponent) -> np.ndarray:
    """x / 2^exponent rounded half away from zero (exponent may be per element)."""
    x, exponent = _i64(x), _i64(exponent)
    if np.any((exponent < 0) | (exponent > 31)):
        raise ValueError("rounding_divide_by_pot: exponent must be in [0, 31]")
    mask = (np.int64(1) << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0)
    return (x >> exponent) + (remainder > threshold)


@_primitive(
    meaning="x * m / 2^31 * 2^shift with m a Q31 multiplier; rounds twice (after the high "
    "multiply and after the shift)",
    saturation="x << shift wraps like C int32; the high multiply saturates at INT32_MIN^2",
    instruction="NEON: VSHL + VQRDMULH + fix-up + VRSHL; scalar: SMULL + shifts; TFLite "
    "MultiplyByQuantizedMultiplier (default build)",
)
def mul_by_quantized_multiplier_double(x, multiplier, shift) -> np.ndarray:
    """Classic double-rounding requantization of an int32 accumulator."""
    high, right = _shifted_high_mul(x, multiplier, shift)
    return rounding_divide_by_pot(high, right)


def _shifted_high_mul(x, multiplier, shift) -> tuple[np.ndarray, np.ndarray]:
    """The first rounding of double rounding, SRDHM(x << max(shift, 0), m), and max(-shift, 0)."""
    x, multiplier, shift = _i64(x), _i64(multiplier), _i64(shift)
    left = np.maximum(shift, 0)
    right = np.maximum(-shift, 0)
    return saturating_rounding_doubling_high_mul(wrap_int32(x << left), multiplier), right


@_primitive(
    meaning="x * m / 2^31 * 2^shift rounded twice as mul_by_quantized_multiplier_double, except "
    "that negative ties of the second rounding go toward +infinity; the two agree after any "
    "clamp whose lower bound is >= 0 (such a tie rounds to a value <= 0 either way)",
    saturation="as mul_by_quantized_multiplier_double",
    instruction="NEON: VSHL + VQRDMULH + VRSHL, no fix-up (TFLite optimized_ops "
    "MultiplyByQuantizedMultiplier4Rows)",
)
def mul_by_quantized_multiplier_double_ties_up(x, multiplier, shift) -> np.ndarray:
    """Double-rounding requantization for outputs clamped at >= 0 (ReLU-like activations)."""
    high, right = _shifted_high_mul(x, multiplier, shift)
    if np.any(right > 31):
        raise ValueError("shift must be >= -31")
    half = np.where(right > 0, np.int64(1) << np.maximum(right - 1, 0), 0)
    return (high + half) >> right


def ties_up_exact(lower_clamp: int, zero_point: int) -> bool:
    """True when mul_by_quantized_multiplier_double_ties_up may replace the classic double
    rounding: the output's lower clamp is at or above its zero point, so a negative tie (which
    rounds to a value <= 0 either way) is clamped to the same output."""
    return int(lower_clamp) >= int(zero_point)


@_primitive(
    meaning="round(x * m / 2^(31 - shift)), ties toward +infinity, one 64-bit product",
    saturation="results outside int32 saturate (TFLite leaves them undefined)",
    instruction="SMULL + add + ASR (64-bit); TFLite MultiplyByQuantizedMultiplier with "
    "TFLITE_SINGLE_ROUNDING; CMSIS-NN arm_nn_requantize with CMSIS_NN_USE_SINGLE_ROUNDING",
)
def mul_by_quantized_multiplier_single(x, multiplier, shift) -> np.ndarray:
    """Single-rounding requantization of an int32 accumulator (shift in [-31, 30])."""
    x, multiplier, shift = _i64(x), _i64(multiplier), _i64(shift)
    if np.any((shift < -31) | (shift > 30)):
        raise ValueError("single rounding needs shift in [-31, 30]")
    total = 31 - shift
    res = (x * multiplier + (np.int64(1) << (total - 1))) >> total
    return np.clip(res, INT32_MIN, INT32_MAX)


def mul_by_quantized_multiplier(x, multiplier, shift, rounding: Rounding = "double") -> np.ndarray:
    """Requantize int32 values with a Q31 multiplier and a power-of-two shift."""
    if rounding == "single":
        return mul_by_quantized_multiplier_single(x, multiplier, shift)
    if rounding in ("double", "litert"):
        return mul_by_quantized_multiplier_double(x, multiplier, shift)
    raise ValueError(f"unknown rounding {rounding!r}; choose one of {', '.join(ROUNDINGS)}")


def round_half_away(v) -> np.ndarray:
    """C's ``round``/``roundf``: nearest integer, ties away from zero, as float64.

    Exact for every float32 and float64 input (``floor(|v| + 0.5)`` is not: 0.49999997 and
    odd integers above 2^52 round wrongly), NaN and infinities pass through.
    """
    v = np.asarray(v, np.float64)
    a = np.abs(v)
    f = np.floor(a)
    with np.errstate(invalid="ignore"):
        return np.copysign(f + (a - f >= 0.5), v)


def quantize_multiplier(real, rounding: Rounding = "double") -> tuple[np.ndarray, np.ndarray]:
    """Split a real multiplier into a Q31 multiplier and a power-of-two shift.

    ``real ~= multiplier / 2^31 * 2^shift``. Follows TFLite's QuantizeMultiplier: a mantissa
    that rounds up to 2^31 is halved with the shift raised; a shift below -31 becomes (0, 0);
    under single rounding a shift above 30 is clamped to (INT32_MAX, 30).
    """
    real = np.asarray(real, dtype=np.float64)
    mant, exp = np.frexp(real)
    q = round_half_away(mant * float(1 << 31)).astype(np.int64)
    exp = exp.astype(np.int64)
    top = q == (1 << 31)
    q = np.where(top, q // 2, q)
    exp = np.where(top, exp + 1, exp)
    tiny = exp < -31
    q = np.where(tiny, 0, q)
    exp = np.where(tiny, 0, exp)
    if rounding == "single":
        big = exp > 30
        q = np.where(big, INT32_MAX, q)
        exp = np.where(big, 30, exp)
    zero = real == 0
    return np.where(zero, 0, q), np.where(zero, 0, exp)


def quantize_multiplier_smaller_than_one(real) -> tuple[np.ndarray, np.ndarray]:
    """QuantizeMultiplierSmallerThanOneExp: ``0 < real < 1``; shift <= 0 (a right shift)."""
    r = np.asarray(real, dtype=np.float64)
    if np.any((r <= 0) | (r >= 1)):
        raise ValueError(f"multiplier {r} must lie in (0, 1)")
    q, s = quantize_multiplier(r)
    if np.any(s > 0):
        raise ValueError(f"multiplier {r} rounds to 1.0")
    return q, s


def quantize_multiplier_greater_than_one(real) -> tuple[np.ndarray, np.ndarray]:
    """QuantizeMultiplierGreaterThanOne: ``real > 1``; shift >= 0 (a left shift)."""
    r = np.asarray(real, dtype=np.float64)
    if np.any(r <= 1):
        raise ValueError(f"multiplier {r} must exceed 1")
    return quantize_multiplier(r)


@_primitive(
    meaning="x clamped to [lo, hi]",
    saturation="by definition",
    instruction="SSAT/USAT (Cortex-M), VQMOVN/VQMOVUN (NEON) for the int8/uint8 ranges",
)
def saturate(x, lo: int, hi: int) -> np.ndarray:
    """Clamp int64 values to [lo, hi]."""
    return np.clip(_i64(x), lo, hi)


_RANGES = {
    np.dtype(np.int8): (-128, 127),
    np.dtype(np.uint8): (0, 255),
    np.dtype(np.int16): (-(2**15), 2**15 - 1),
    np.dtype(np.int32): (INT32_MIN, INT32_MAX),
}


def dtype_range(dtype) -> tuple[int, int]:
    """The integer range of an int8, uint8, int16 or int32 dtype."""
    return _RANGES[np.dtype(dtype)]


def saturating_cast(x, dtype) -> np.ndarray:
    """Clamp to the range of ``dtype`` and convert (VQMOVN / SSAT / USAT)."""
    lo, hi = dtype_range(dtype)
    return np.clip(_i64(x), lo, hi).astype(dtype)
