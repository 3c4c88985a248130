"""gemmlowp fixed-point math as TFLite's reference kernels use it, vectorised and exact.

Values are int64 numpy arrays holding int32 raw values (or int16 for the ``*_int16`` helpers).
Where gemmlowp relies on C's wrapping int32 arithmetic (``Add``, ``Sub``, ``Neg``) the result
is wrapped the same way. A `FixedPoint` carries its number of integer bits ``m`` (format
Qm.(31-m), range [-2^m, 2^m)), which the type system of gemmlowp carries as a template argument.

Normative sources: gemmlowp ``fixedpoint/fixedpoint.h``; TFLite ``kernels/internal/common.h``
(GetReciprocal, CountLeadingZeros, MultiplyByQuantizedMultiplierGreaterThanOne) and
``quantization_util.cc`` (CalculateInputRadius); ``reference/hard_swish.h`` (int16 helpers).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .fixedpoint import (
    INT32_MAX,
    INT32_MIN,
    Rounding,
    mul_by_quantized_multiplier,
    primitive,
    round_half_away,
    rounding_divide_by_pot,
    saturating_rounding_doubling_high_mul,
    wrap_int32,
)

INT16_MIN = -(2**15)
INT16_MAX = 2**15 - 1


def _i64(x) -> np.ndarray:
    return np.asarray(x, dtype=np.int64)


def _trunc_div(x: np.ndarray, d: int) -> np.ndarray:
    q = np.abs(x) // d
    return np.where(x < 0, -q, q)


@dataclass(frozen=True)
class FixedPoint:
    """gemmlowp ``FixedPoint<int32_t, integer_bits>``: real value ``raw / 2^(31 - integer_bits)``.

    Operators follow gemmlowp: ``+``, ``-`` and unary ``-`` wrap like int32; ``*`` is
    SaturatingRoundingDoublingHighMul and adds the integer bits of both operands; ``&`` is the
    bitwise and of the raw values.
    """

    raw: np.ndarray
    integer_bits: int

    def __post_init__(self) -> None:
        if not 0 <= self.integer_bits <= 31:
            raise ValueError(f"integer_bits must lie in [0, 31], not {self.integer_bits}")
        object.__setattr__(self, "raw", _i64(self.raw))

    @property
    def fractional_bits(self) -> int:
        return 31 - self.integer_bits

    @classmethod
    def from_raw(cls, raw, integer_bits: int) -> FixedPoint:
        return cls(_i64(raw), integer_bits)

    @classmethod
    def from_double(cls, x, integer_bits: int) -> FixedPoint:
        """``round(x * 2^frac)`` (ties away from zero), clamped to the int32 range."""
        scaled = np.asarray(x, np.float64) * float(1 << (31 - integer_bits))
        r = round_half_away(scaled)
        return cls(np.clip(r, INT32_MIN, INT32_MAX).astype(np.int64), integer_bits)

    @classmethod
    def zero(cls, integer_bits: int) -> FixedPoint:
        return cls(_i64(0), integer_bits)

    @classmethod
    def one(cls, integer_bits: int) -> FixedPoint:
        """1.0; with 0 integer bits it is not representable and saturates to INT32_MAX."""
        return cls(_i64(INT32_MAX if integer_bits == 0 else 1 << (31 - integer_bits)),
                   integer_bits)

    @classmethod
    def constant_pot(cls, exponent: int, integer_bits: int) -> FixedPoint:
        """2^exponent, exactly (gemmlowp ``ConstantPOT``)."""
        offset = 31 - integer_bits + exponent
        if not 0 <= offset < 31:
            raise ValueError(f"2^{exponent} is not exactly representable in Q{integer_bits}")
        return cls(_i64(1 << offset), integer_bits)

    def to_double(self) -> np.ndarray:
        return self.raw / float(1 << self.fractional_bits)

    def _same(self, other: FixedPoint) -> None:
        if other.integer_bits != self.integer_bits:
            raise TypeError(f"Q{self.integer_bits} and Q{other.integer_bits} do not mix")

    def __add__(self, other: FixedPoint) -> FixedPoint:
        self._same(other)
        return FixedPoint(wrap_int32(self.raw + other.raw), self.integer_bits)

    def __sub__(self, other: FixedPoint) -> FixedPoint:
        self._same(other)
        return FixedPoint(wrap_int32(self.raw - other.raw), self.integer_bits)

    def __neg__(self) -> FixedPoint:
        return FixedPoint(wrap_int32(-self.raw), self.integer_bits)

    def __and__(self, other: FixedPoint) -> FixedPoint:
        self._same(other)
        return FixedPoint(self.raw & other.raw, self.integer_bits)

    def __mul__(self, other: FixedPoint) -> FixedPoint:
        bits = self.integer_bits + other.integer_bits
        return FixedPoint(saturating_rounding_doubling_high_mul(self.raw, other.raw), bits)


def select(mask, then_val: FixedPoint, else_val: FixedPoint) -> FixedPoint:
    """gemmlowp ``SelectUsingMask`` with a boolean mask."""
    then_val._same(else_val)
    return FixedPoint(np.where(mask, then_val.raw, else_val.raw), then_val.integer_bits)


@primitive(
    meaning="x * 2^exponent: an exact left shift for exponent > 0, rounded half away from zero "
    "for exponent < 0",
    saturation="a left shift saturates to INT32_MIN / INT32_MAX once |x| > 2^(31 - exponent) - 1",
    instruction="SQSHL / VQSHL by an immediate (left); VRSHL after a sign fix-up (right); "
    "gemmlowp SaturatingRoundingMultiplyByPOT", vector=False,
)
def saturating_rounding_multiply_by_pot(x, exponent: int) -> np.ndarray:
    """``x * 2^exponent`` on int32 raw values (gemmlowp SaturatingRoundingMultiplyByPOT).

    Real meaning: exact left shift for ``exponent > 0``, round-half-away-from-zero right shift
    for ``exponent < 0``. Saturation: a left shift saturates to INT32_MIN / INT32_MAX once
    ``|x| > 2^(31 - exponent) - 1``; a right shift never saturates.
    """
    x = _i64(x)
    if exponent == 0:
        return x
    if exponent < 0:
        return rounding_divide_by_pot(x, -exponent)
    threshold = (1 << (31 - exponent)) - 1
    shifted = wrap_int32(x << exponent)
    return np.where(x > threshold, INT32_MAX, np.where(x < -threshold, INT32_MIN, shifted))


def rescale(x: FixedPoint, integer_bits: int) -> FixedPoint:
    """The same real value in another format (gemmlowp ``Rescale``).

    Saturation: values outside [-2^integer_bits, 2^integer_bits) clamp to the format's ends;
    fewer fractional bits round half away from zero.
    """
    raw = saturating_rounding_multiply_by_pot(x.raw, x.integer_bits - integer_bits)
    return FixedPoint(raw, integer_bits)


def exact_mul_by_pot(x: FixedPoint, exponent: int) -> FixedPoint:
    """``x * 2^exponent`` by relabelling the format (gemmlowp ``ExactMulByPot``): never rounds."""
    return FixedPoint(x.raw, x.integer_bits + exponent)


def rounding_half_sum(a: FixedPoint, b: FixedPoint) -> FixedPoint:
    """``(a + b) / 2`` rounded half away from zero, computed without overflow (NEON VRHADD)."""
    a._same(b)
    s = a.raw + b.raw
    return FixedPoint(_trunc_div(s + np.where(s >= 0, 1, -1), 2), a.integer_bits)


def _constant(raw: int, integer_bits: int = 0) -> FixedPoint:
    return FixedPoint.from_raw(raw, integer_bits)


# Raw Q0.31 constants of gemmlowp; each equals FixedPoint.from_double of its real value.
EXP_MINUS_ONE_EIGHTH = 1895147668  # exp(-1/8)
ONE_THIRD = 715827883  # 1/3
EXP_BARREL_SHIFTER = {  # exponent k -> exp(-2^k) in Q0.31
    -2: 1672461947,
    -1: 1302514674,
    0: 790015084,
    1: 290630308,
    2: 39332535,
    3: 720401,
    4: 242,
}
FORTY_EIGHT_OVER_SEVENTEEN_Q2 = 1515870810  # 48/17 in Q2.29
MINUS_THIRTY_TWO_OVER_SEVENTEEN_Q2 = -1010580540  # -32/17 in Q2.29


def exp_on_interval_between_negative_one_quarter_and_0_excl(a: FixedPoint) -> FixedPoint:
    """exp(a) for Q0.31 ``a`` in [-1/4, 0): a degree-4 Taylor expansion around -1/8.

    Real meaning: exp(a), error below 2.5e-7 on [-1/4, 0) (the Taylor remainder). Saturation:
    none inside the domain (the result lies in (0.77, 1)); outside it the polynomial is wrong.
    """
    if a.integer_bits != 0:
        raise TypeError("exp_on_interval_between_negative_one_quarter_and_0_excl takes Q0.31")
    constant_term = _constant(EXP_MINUS_ONE_EIGHTH)
    x = a + FixedPoint.constant_pot(-3, 0)
    x2 = x * x
    x3 = x2 * x
    x4 = x2 * x2
    x4_over_4 = FixedPoint(saturating_rounding_multiply_by_pot(x4.raw, -2), 0)
    inner = (x4_over_4 + x3) * _constant(ONE_THIRD) + x2
    x4_over_24_plus_x3_over_6_plus_x2_over_2 = FixedPoint(
        saturating_rounding_multiply_by_pot(inner.raw, -1), 0
    )
    return constant_term + constant_term * (x + x4_over_24_plus_x3_over_6_plus_x2_over_2)


def exp_on_negative_values(a: FixedPoint) -> FixedPoint:
    """exp(a) for ``a <= 0`` in any Qm format, as Q0.31.

    Real meaning: exp(a), absolute error below 2.5e-7 (that of the polynomial on [-1/4, 0),
    times barrel-shifter factors < 1). Saturation: exp(0) = 1 is not representable in Q0.31
    and returns INT32_MAX; for ``m > 5``, inputs below -32 return exactly 0. Positive inputs
    give garbage.
    """
    m, frac = a.integer_bits, a.fractional_bits
    one_quarter = FixedPoint.constant_pot(-2, m)
    mask = one_quarter - FixedPoint.from_raw(1, m)
    a_mod_quarter_minus_one_quarter = (a & mask) - one_quarter
    result = exp_on_interval_between_negative_one_quarter_and_0_excl(
        rescale(a_mod_quarter_minus_one_quarter, 0)
    )
    remainder = (a_mod_quarter_minus_one_quarter - a).raw
    for exponent, multiplier in EXP_BARREL_SHIFTER.items():
        if m > exponent:
            bit = remainder & (1 << (frac + exponent))
            result = select(bit != 0, result * _constant(multiplier), result)
    if m > 5:
        clamp = FixedPoint.from_raw(-(1 << (36 - m)), m)
        result = select(a.raw < clamp.raw, FixedPoint.zero(0), result)
    return select(a.raw == 0, FixedPoint.one(0), result)


def _newton_reciprocal_of_half_denominator(half_denominator: FixedPoint) -> FixedPoint:
    """Three Newton-Raphson steps for 1 / half_denominator (in [1, 2]), as Q2.29."""
    x = _constant(FORTY_EIGHT_OVER_SEVENTEEN_Q2, 2) + half_denominator * _constant(
        MINUS_THIRTY_TWO_OVER_SEVENTEEN_Q2, 2
    )
    one = FixedPoint.one(2)
    for _ in range(3):
        half_denominator_times_x = half_denominator * x
        one_minus = one - half_denominator_times_x
        x = x + rescale(x * one_minus, 2)
    return x


@primitive(
    meaning="1 / (1 + a) for Q0.31 a in [0, 1), as Q0.31, by three Newton-Raphson steps on "
    "Q2.29 (error below 5e-9)",
    saturation="a = 0 gives 1.0, which saturates to INT32_MAX",
    instruction="VQRDMULH / SQRDMULH chains; gemmlowp one_over_one_plus_x_for_x_in_0_1",
    vector=False,
)
def one_over_one_plus_x_for_x_in_0_1(a: FixedPoint) -> FixedPoint:
    """1 / (1 + a) for Q0.31 ``a`` in [0, 1), as Q0.31 (Newton-Raphson division).

    Real meaning: 1/(1+a), error below 5e-9. Saturation: at ``a = 0`` the exact result 1.0
    saturates to INT32_MAX.
    """
    if a.integer_bits != 0:
        raise TypeError("one_over_one_plus_x_for_x_in_0_1 takes Q0.31")
    half_denominator = rounding_half_sum(a, FixedPoint.one(0))
    x = _newton_reciprocal_of_half_denominator(half_denominator)
    return rescale(exact_mul_by_pot(x, -1), 0)


def one_minus_x_over_one_plus_x_for_x_in_0_1(a: FixedPoint) -> FixedPoint:
    """(1 - a) / (1 + a) for Q0.31 ``a`` in [0, 1), as Q0.31.

    Real meaning: (1-a)/(1+a), error below 1e-8. Saturation: at ``a = 0`` the result 1.0
    saturates to INT32_MAX.
    """
    if a.integer_bits != 0:
        raise TypeError("one_minus_x_over_one_plus_x_for_x_in_0_1 takes Q0.31")
    half_denominator = rounding_half_sum(a, FixedPoint.one(0))
    x = _newton_reciprocal_of_half_denominator(half_denominator)
    return rescale(x - FixedPoint.one(2), 0)


def neg_tanh_on_negative_values(a: FixedPoint) -> FixedPoint:
    """-tanh(a) for ``a < 0``, as Q0.31: (1 - exp(2a)) / (1 + exp(2a)).

    Saturation: ``2a`` is taken exactly by relabelling, so ``a`` needs ``m <= 30``.
    """
    return one_minus_x_over_one_plus_x_for_x_in_0_1(exp_on_negative_values(exact_mul_by_pot(a, 1)))


def tanh(a: FixedPoint) -> FixedPoint:
    """tanh(a) for any Qm ``a`` (m <= 30), as Q0.31.

    Real meaning: tanh(a), error below 2e-7. Saturation: |tanh| = 1 is not representable and
    clamps to INT32_MAX / -INT32_MAX; tanh(0) is exactly 0.
    """
    negative = a.raw < 0
    n = select(negative, a, -a)
    t = neg_tanh_on_negative_values(n)
    return select(a.raw == 0, FixedPoint.zero(0), select(negative, -t, t))


def logistic_on_positive_values(a: FixedPoint) -> FixedPoint:
    """1 / (1 + exp(-a)) for ``a > 0``, as Q0.31."""
    return one_over_one_plus_x_for_x_in_0_1(exp_on_negative_values(-a))


def logistic(a: FixedPoint) -> FixedPoint:
    """The logistic function 1 / (1 + exp(-a)) for any Qm ``a``, as Q0.31.

    Real meaning: sigmoid(a), error below 1e-7. Saturation: sigmoid(0) is exactly 2^30 (0.5);
    large positive inputs saturate at INT32_MAX (just below 1.0).
    """
    positive = a.raw > 0
    abs_input = select(positive, a, -a)
    result_if_positive = logistic_on_positive_values(abs_input)
    result_if_negative = FixedPoint.one(0) - result_if_positive
    half = FixedPoint.from_raw(1 << 30, 0)
    return select(a.raw == 0, half, select(positive, result_if_positive, result_if_negative))


def count_leading_zeros(x) -> np.ndarray:
    """Leading zero bits of ``x`` as uint32 (32 for 0): TFLite ``CountLeadingZeros<uint32_t>``."""
    u = _i64(x) & 0xFFFFFFFF
    bits = np.zeros(u.shape, np.int64)
    for shift in (16, 8, 4, 2, 1):
        big = u >= (np.int64(1) << shift)
        bits = bits + np.where(big, shift, 0)
        u = np.where(big, u >> shift, u)
    return np.where(_i64(x) & 0xFFFFFFFF == 0, 32, 31 - bits)


def get_reciprocal(x, x_integer_digits: int) -> tuple[np.ndarray, np.ndarray]:
    """TFLite ``GetReciprocal``: 1/x for a positive Q(x_integer_digits) raw ``x``.

    Returns ``(raw, num_bits_over_unit)`` with ``1/x ~= raw / 2^31 / 2^num_bits_over_unit``:
    ``x`` is normalised into [1, 2) by its leading zeros and 1/(1 + (x' - 1)) is evaluated in
    Q0.31. Saturation: x' = 1 gives INT32_MAX; ``x <= 0`` is outside the contract (the reference
    then works on the wrapped uint32 bits, and so does this function).
    """
    x = _i64(x)
    headroom_plus_one = count_leading_zeros(x)
    num_bits_over_unit = x_integer_digits - headroom_plus_one
    shifted = ((x & 0xFFFFFFFF) << np.minimum(headroom_plus_one, 32)) & 0xFFFFFFFF
    shifted_sum_minus_one = wrap_int32(shifted - (1 << 31))
    scale = one_over_one_plus_x_for_x_in_0_1(FixedPoint.from_raw(shifted_sum_minus_one, 0))
    return scale.raw, num_bits_over_unit


def mul_by_quantized_multiplier_greater_than_one(
    x, multiplier, left_shift: int, rounding: Rounding = "double"
) -> np.ndarray:
    """TFLite ``MultiplyByQuantizedMultiplierGreaterThanOne``: ``x * m / 2^31 * 2^left_shift``.

    Double rounding (the default build) shifts left first, wrapping like C int32, then takes
    SaturatingRoundingDoublingHighMul; ``TFLITE_SINGLE_ROUNDING`` builds use the single-rounding
    MultiplyByQuantizedMultiplier instead.
    """
    if rounding == "single":
        return mul_by_quantized_multiplier(x, multiplier, left_shift, "single")
    shifted = wrap_int32(_i64(x) << left_shift)
    return saturating_rounding_doubling_high_mul(shifted, multiplier)


def calculate_input_radius(
    input_integer_bits: int, input_left_shift: int, total_signed_bits: int = 31
) -> int:
    """TFLite ``CalculateInputRadius``: the largest input magnitude whose rescaled value fits.

    ``floor((2^m - 1) * 2^(total - m) / 2^left_shift)``.
    """
    max_input_rescaled = (
        1.0 * ((1 << input_integer_bits) - 1)
        * float(1 << (total_signed_bits - input_integer_bits))
        / float(1 << input_left_shift)
    )
    return int(np.floor(max_input_rescaled))


# int16 helpers of the reference HardSwish (``reference/hard_swish.h``).


@primitive(
    meaning="round(a * b / 2^15) of int16 a and b, ties away from zero: the Q15 product",
    saturation="INT16_MIN * INT16_MIN gives INT16_MAX (the only case)",
    instruction="SQRDMULH Vd.8H / VQRDMULH.S16; gemmlowp SaturatingRoundingDoublingHighMul "
    "on int16", vector=False,
)
def saturating_rounding_doubling_high_mul_int16(a, b) -> np.ndarray:
    """Q15 product ``round(a * b / 2^15)``, ties away from zero (NEON VQRDMULH.S16).

    Saturation: only INT16_MIN * INT16_MIN, which gives INT16_MAX.
    """
    a, b = _i64(a), _i64(b)
    ab = a * b
    res = _trunc_div(ab + np.where(ab >= 0, 1 << 14, 1 - (1 << 14)), 1 << 15)
    return np.where((a == INT16_MIN) & (b == INT16_MIN), INT16_MAX, res)


@primitive(
    meaning="a * b / 2^15 of int16 a and b, truncated toward zero",
    saturation="INT16_MIN * INT16_MIN gives INT16_MAX (the only case)",
    instruction="SQDMULH Vd.8H / VQDMULH.S16; gemmlowp SaturatingDoublingHighMul on int16",
    vector=False,
)
def saturating_doubling_high_mul_int16(a, b) -> np.ndarray:
    """Q15 product ``a * b / 2^15`` truncated toward zero (ARM SQDMULH).

    Saturation: only INT16_MIN * INT16_MIN, which gives INT16_MAX.
    """
    a, b = _i64(a), _i64(b)
    res = _trunc_div(a * b, 1 << 15)
    return np.where((a == INT16_MIN) & (b == INT16_MIN), INT16_MAX, res)


@primitive(
    meaning="x * 2^amount of an int16 x, 0 <= amount <= 16",
    saturation="clamped to [INT16_MIN, INT16_MAX]",
    instruction="SQSHL Vd.8H / VQSHL.S16 by an immediate; gemmlowp SaturatingLeftShift",
    vector=False,
)
def saturating_left_shift_int16(x, amount: int) -> np.ndarray:
    """``x * 2^amount`` clamped to the int16 range."""
    return np.clip(_i64(x) * (1 << amount), INT16_MIN, INT16_MAX)


@primitive(
    meaning="round(x / 2^exponent) of an int16 x, ties away from zero, with the reference's "
    "int16 mask (1 << exponent) - 1, which is -1 for exponent >= 16",
    saturation="none for exponent <= 15; from 16 on the result is 1 for x >= 0, -1 for x < 0",
    instruction="VRSHL.S16 after a sign fix-up; gemmlowp RoundingDivideByPOT on int16",
    vector=False,
)
def rounding_divide_by_pot_int16(x, exponent: int) -> np.ndarray:
    """gemmlowp RoundingDivideByPOT on int16 values: ``x / 2^exponent``, ties away from zero.

    Saturation: none for ``exponent <= 15``. For ``exponent >= 16`` the reference's int16 mask
    ``(1 << exponent) - 1`` truncates to -1 and the result degenerates to 1 for ``x >= 0`` and
    -1 for ``x < 0``; this function reproduces that.
    """
    x = _i64(x)
    mask = (1 << exponent) - 1
    mask = ((mask + 2**15) & 0xFFFF) - 2**15  # the int16 the C code stores
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0)
    return (x >> exponent) + (remainder > threshold)
