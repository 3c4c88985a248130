"""Fixed-point primitives against TFLite's goldens and an exact Python-int model."""

from __future__ import annotations

import math

import numpy as np
import pytest

from qlane.sim.fixedpoint import (
    INT32_MAX,
    INT32_MIN,
    PRIMITIVES,
    mul_by_quantized_multiplier,
    mul_by_quantized_multiplier_double,
    mul_by_quantized_multiplier_double_ties_up,
    mul_by_quantized_multiplier_single,
    quantize_multiplier,
    quantize_multiplier_greater_than_one,
    quantize_multiplier_smaller_than_one,
    rounding_divide_by_pot,
    saturate,
    saturating_cast,
    saturating_rounding_doubling_high_mul,
    wrap_int32,
)

EDGES = [
    INT32_MIN, INT32_MIN + 1, -(1 << 30) - 1, -(1 << 30), -(1 << 30) + 1, -65536, -3, -2, -1,
    0, 1, 2, 3, 65536, (1 << 30) - 1, 1 << 30, (1 << 30) + 1, INT32_MAX - 1, INT32_MAX,
]


# --- an exact model in Python ints, written from the definitions, not from the code -----------


def exact_wrap32(v: int) -> int:
    return (v + (1 << 31)) % (1 << 32) - (1 << 31)


def exact_srdhm(a: int, b: int) -> int:
    """round(a * b / 2^31) with ties toward +infinity; INT32_MIN^2 saturates."""
    if a == b == INT32_MIN:
        return INT32_MAX
    return (a * b + (1 << 30)) // (1 << 31)


def exact_rdbp(x: int, e: int) -> int:
    """round(x / 2^e), ties away from zero."""
    q, r = divmod(abs(x), 1 << e)
    q += 2 * r >= (1 << e) if e else 0
    return q if x >= 0 else -q


def exact_double(x: int, m: int, s: int) -> int:
    return exact_rdbp(exact_srdhm(exact_wrap32(x << max(s, 0)), m), max(-s, 0))


def exact_single(x: int, m: int, s: int) -> int:
    t = 31 - s
    return min(max((x * m + (1 << (t - 1))) >> t, INT32_MIN), INT32_MAX)


def random_int32(rng: np.random.Generator, n: int) -> np.ndarray:
    """Uniform int32 mixed with values of every magnitude and the edge values."""
    uniform = rng.integers(INT32_MIN, INT32_MAX, n // 2, endpoint=True)
    bits = rng.integers(0, 32, n - n // 2 - len(EDGES))
    scaled = rng.integers(0, 1 << 31, bits.size) >> bits
    scaled = np.where(rng.random(bits.size) < 0.5, -scaled, scaled)
    return np.concatenate([uniform, scaled, EDGES]).astype(np.int64)


# --- QuantizeMultiplier: goldens of tensorflow/lite/kernels/internal/quantization_util_test.cc --


@pytest.mark.parametrize(
    "real, expected",
    [
        (0.25, (1073741824, -1)),
        (0.50 - 5e-9, (2147483627, -1)),
        (0.50 - 1e-10, (1073741824, 0)),  # rounds up to 2^31: halved, shift + 1
        (0.50, (1073741824, 0)),
        (0.75, (1610612736, 0)),
        (1 - 1e-9, (2147483646, 0)),
    ],
)
def test_quantize_multiplier_smaller_than_one_goldens(real, expected):
    q, s = quantize_multiplier_smaller_than_one(real)
    assert (int(q), int(s)) == expected


@pytest.mark.parametrize("real", [-0.1, 0.0, 1 - 1e-15, 1 - 1e-17, 1.0])
def test_quantize_multiplier_smaller_than_one_rejects(real):
    with pytest.raises(ValueError):
        quantize_multiplier_smaller_than_one(real)


@pytest.mark.parametrize(
    "real, expected",
    [
        (1 + 1e-11, (1073741824, 1)),
        (1.25, (1342177280, 1)),
        (1.50, (1610612736, 1)),
        (1.75, (1879048192, 1)),
        (2 - 1e-9, (2147483647, 1)),
        (2 - 1e-11, (1073741824, 2)),
        (2.0, (1073741824, 2)),
    ],
)
def test_quantize_multiplier_greater_than_one_goldens(real, expected):
    q, s = quantize_multiplier_greater_than_one(real)
    assert (int(q), int(s)) == expected


def test_quantize_multiplier_greater_than_one_rejects_one():
    with pytest.raises(ValueError):
        quantize_multiplier_greater_than_one(1 + 1e-16)


@pytest.mark.parametrize("rounding", ["double", "single"])
def test_quantize_multiplier_underflow_goldens(rounding):
    reals = [math.ldexp(1.0, -31), math.ldexp(1.0, -32), math.ldexp(float(np.float32(0.99)), -32),
             math.ldexp(1.0, -33)]
    q, s = quantize_multiplier(reals, rounding)
    assert q.tolist() == [1073741824, 1073741824, 0, 0]
    assert s.tolist() == [-30, -31, 0, 0]


def test_quantize_multiplier_array_golden():
    reals = [-4, -2, -1, -0.5, -0.25, -0.125, 0, 0.125, 0.25, 0.5, 1, 2, 4]
    q, s = quantize_multiplier(reals)
    assert q.tolist() == [-1073741824] * 6 + [0] + [1073741824] * 6
    assert s.tolist() == [3, 2, 1, 0, -1, -2, 0, -2, -1, 0, 1, 2, 3]


def test_quantize_multiplier_frexp_golden():
    # IntegerFrExp(123.45) == 2071147315 with shift 7; QuantizeMultiplier shares frexp.
    q, s = quantize_multiplier(123.45)
    assert (int(q), int(s)) == (2071147315, 7)


def test_quantize_multiplier_single_rounding_clamps_shift_above_30():
    assert tuple(map(int, quantize_multiplier(2.0**31, "double"))) == (1 << 30, 32)
    assert tuple(map(int, quantize_multiplier(2.0**31, "single"))) == (INT32_MAX, 30)
    assert tuple(map(int, quantize_multiplier(2.0**40, "single"))) == (INT32_MAX, 30)
    # The reals PreprocessSoftmaxScaling quantizes: its goldens for both builds.
    assert tuple(map(int, quantize_multiplier((1 << 30) - 1.0, "single"))) == (2147483646, 30)
    assert tuple(map(int, quantize_multiplier(2.0**29, "single"))) == (1073741824, 30)
    assert tuple(map(int, quantize_multiplier((1 << 31) - 1.0, "double"))) == (2147483647, 31)
    assert tuple(map(int, quantize_multiplier(2.0**30, "double"))) == (1073741824, 31)


def test_quantize_multiplier_zero():
    for rounding in ("double", "single"):
        q, s = quantize_multiplier([0.0, -0.0], rounding)
        assert q.tolist() == [0, 0] and s.tolist() == [0, 0]


def test_quantize_multiplier_reconstructs_the_real():
    rng = np.random.default_rng(0)
    reals = np.exp(rng.uniform(-20, 5, 2000))
    q, s = quantize_multiplier(reals)
    assert np.all((q >= 1 << 30) & (q <= INT32_MAX))
    rel = np.abs(q * np.exp2(s - 31.0) - reals) / reals
    assert rel.max() <= 2.0**-31


# --- SaturatingRoundingDoublingHighMul -------------------------------------------------------


@pytest.mark.parametrize(
    "a, b, expected",
    [
        (INT32_MIN, INT32_MIN, INT32_MAX),  # +1.0 saturates
        (INT32_MIN, INT32_MAX, -INT32_MAX),
        (INT32_MAX, INT32_MAX, INT32_MAX - 1),
        (INT32_MIN, 1 << 30, -(1 << 30)),
        (1 << 30, 1, 1),  # +0.5 rounds up
        (-(1 << 30), 1, 0),  # -0.5 rounds up too (toward +infinity)
        (3 << 29, 2, 2),  # +1.5
        (-(3 << 29), 2, -1),  # -1.5
        ((1 << 30) - 1, 1, 0),
        (-(1 << 30) - 1, 1, -1),
    ],
)
def test_srdhm_goldens(a, b, expected):
    assert int(saturating_rounding_doubling_high_mul(a, b)) == expected
    assert int(saturating_rounding_doubling_high_mul(b, a)) == expected


def test_srdhm_matches_exact_model():
    rng = np.random.default_rng(1)
    a = random_int32(rng, 20000)
    b = np.concatenate([random_int32(rng, 20000 - len(EDGES) ** 2), np.repeat(EDGES, len(EDGES))])
    a = np.concatenate([a[: a.size - len(EDGES) ** 2], np.tile(EDGES, len(EDGES))])
    # exact ties: a * b = odd * 2^30, with a = odd * 2^j and b = odd * 2^(30 - j)
    j = rng.integers(0, 31, 2000)
    ta = (rng.integers(0, 1 << 62, j.size) % (1 << (30 - j)) * 2 + 1) << j
    tb = (rng.integers(0, 1 << 62, j.size) % (1 << j) * 2 + 1) << (30 - j)
    a = np.concatenate([a, np.where(rng.random(j.size) < 0.5, -ta, ta)])
    b = np.concatenate([b, tb])
    got = saturating_rounding_doubling_high_mul(a, b)
    want = [exact_srdhm(int(x), int(y)) for x, y in zip(a, b)]
    assert got.tolist() == want
    assert np.count_nonzero((a * b) % (1 << 31) == 1 << 30) >= 2000


# --- RoundingDivideByPOT ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "x, e, expected",
    [
        (5, 1, 3), (-5, 1, -3), (3, 1, 2), (-3, 1, -2), (-1, 1, -1), (1, 1, 1),
        (-6, 2, -2), (6, 2, 2), (-2, 2, -1), (-5, 2, -1), (-7, 2, -2), (7, 3, 1), (-4, 3, -1),
        (-3, 3, 0), (INT32_MIN, 31, -1), (INT32_MIN, 1, -(1 << 30)), (INT32_MIN, 0, INT32_MIN),
        (INT32_MAX, 31, 1), (INT32_MAX, 1, 1 << 30), (INT32_MAX, 0, INT32_MAX),
        (-(1 << 30), 31, -1), ((1 << 30) - 1, 31, 0), (-(1 << 30) + 1, 31, 0),
    ],
)
def test_rounding_divide_by_pot_goldens(x, e, expected):
    assert int(rounding_divide_by_pot(x, e)) == expected


def test_rounding_divide_by_pot_every_exponent_matches_exact_model():
    rng = np.random.default_rng(2)
    x = random_int32(rng, 3000)
    for e in range(32):
        half = 1 << e >> 1
        halves = np.array([half, -half, 3 * half, -3 * half, -5 * half]) if e else np.array([])
        xs = np.concatenate([x, halves[np.abs(halves) <= INT32_MAX]]).astype(np.int64)
        want = [exact_rdbp(int(v), e) for v in xs]
        assert rounding_divide_by_pot(xs, e).tolist() == want, e
    exponents = rng.integers(0, 32, x.size)
    assert rounding_divide_by_pot(x, exponents).tolist() == [
        exact_rdbp(int(v), int(e)) for v, e in zip(x, exponents)
    ]


@pytest.mark.parametrize("e", [-1, 32])
def test_rounding_divide_by_pot_rejects_exponent(e):
    with pytest.raises(ValueError):
        rounding_divide_by_pot(1, e)


# --- MultiplyByQuantizedMultiplier -------------------------------------------------------------


def quant_and_multiply(x: int, real: float, rounding: str) -> int:
    q, s = quantize_multiplier(real, rounding)
    return int(mul_by_quantized_multiplier(x, q, s, rounding))


@pytest.mark.parametrize("rounding", ["double", "single"])
def test_multiply_by_quantized_multiplier_goldens(rounding):
    # MultiplyByQuantizedMultiplierInt32 of quantization_util_test.cc
    assert quant_and_multiply(0, 0.1, rounding) == 0
    assert quant_and_multiply(1, 0, rounding) == 0
    assert quant_and_multiply(10000, 0.00097656, rounding) == 10
    assert quant_and_multiply(-10000, 0.00097656, rounding) == -10
    assert quant_and_multiply(INT32_MIN, 0.00001, rounding) == -21475
    assert quant_and_multiply(INT32_MAX, 0.00001, rounding) == 21475
    x, m, s = INT32_MAX, INT32_MAX, -3
    expected = math.floor(x * m / float(1 << (31 - s)) + 0.5)
    assert int(mul_by_quantized_multiplier(x, m, s, rounding)) == expected
    assert int(mul_by_quantized_multiplier(-x, m, s, rounding)) == -expected


def test_multiply_by_quantized_multiplier_negative_multiplier_goldens():
    assert quant_and_multiply(10000, -0.00097656, "double") == -10
    assert quant_and_multiply(-10000, -0.00097656, "double") == 10
    assert quant_and_multiply(INT32_MIN, -0.00001, "double") == 21475
    assert quant_and_multiply(INT32_MAX, -0.00001, "double") == -21475


@pytest.mark.parametrize(
    "x, m, s, double, single",
    [
        (1, 1 << 30, -1, 1, 0),  # 0.25: the first rounding makes a tie of 0.5, then rounds up
        (-6, 1 << 30, -1, -2, -1),  # -1.5: away from zero twice vs toward +infinity once
        (3, 1 << 30, -2, 1, 0),  # 0.375
        (1 << 30, 1 << 30, 1, -(1 << 30), 1 << 30),  # x << 1 wraps to INT32_MIN (double only)
        (INT32_MAX, 1 << 30, 1, -1, INT32_MAX),  # INT32_MAX << 1 wraps to -2
        (INT32_MIN, INT32_MIN, 0, INT32_MAX, INT32_MAX),  # +1.0: saturated / clamped
    ],
)
def test_double_and_single_rounding_differ(x, m, s, double, single):
    assert int(mul_by_quantized_multiplier_double(x, m, s)) == double
    assert int(mul_by_quantized_multiplier_single(x, m, s)) == single
    assert int(mul_by_quantized_multiplier(x, m, s, "litert")) == double


def test_multiply_by_quantized_multiplier_matches_exact_model():
    rng = np.random.default_rng(3)
    n = 12000
    x = random_int32(rng, n)
    m = np.concatenate([rng.integers(1 << 30, 1 << 31, n - 5), [0, 1 << 30, INT32_MAX, 1, 3]])
    rng.shuffle(m)
    s = rng.integers(-31, 31, n)
    got_d = mul_by_quantized_multiplier_double(x, m, s)
    got_s = mul_by_quantized_multiplier_single(x, m, s)
    triples = [(int(a), int(b), int(c)) for a, b, c in zip(x, m, s)]
    assert got_d.tolist() == [exact_double(*t) for t in triples]
    assert got_s.tolist() == [exact_single(*t) for t in triples]
    small = (s < 0) & (np.abs(x) < 1 << 24)
    assert 0 < np.count_nonzero(got_d[small] != got_s[small])
    assert np.abs(got_d[small] - got_s[small]).max() == 1


def test_double_ties_up_differs_only_at_negative_ties_and_not_after_a_relu_clamp():
    rng = np.random.default_rng(5)
    n = 20000
    x = np.concatenate([random_int32(rng, n), rng.integers(-4096, 4096, n)])
    m = rng.integers(1 << 30, 1 << 31, 2 * n)
    s = rng.integers(-31, 31, 2 * n)
    ref = mul_by_quantized_multiplier_double(x, m, s)
    up = mul_by_quantized_multiplier_double_ties_up(x, m, s)
    high = saturating_rounding_doubling_high_mul(wrap_int32(x << np.maximum(s, 0)), m)
    e = np.maximum(-s, 0)
    tie = (high < 0) & (e > 0) & ((high & ((1 << e) - 1)) == (1 << e) >> 1)
    assert np.count_nonzero(tie) > 50
    assert np.array_equal(up != ref, tie)
    assert np.all(up[tie] == ref[tie] + 1) and np.all(up[tie] <= 0)
    for lower in (0, 1, 7):
        assert np.array_equal(np.maximum(up, lower), np.maximum(ref, lower))


def test_single_rounding_rejects_shift_out_of_range():
    for s in (-32, 31):
        with pytest.raises(ValueError):
            mul_by_quantized_multiplier_single(1, 1 << 30, s)
    with pytest.raises(ValueError):
        mul_by_quantized_multiplier(1, 1 << 30, 0, "nearest")


def test_wrap_and_saturate():
    v = np.array([INT32_MAX + 1, INT32_MIN - 1, 1 << 32, -(1 << 33) - 5, 7])
    assert wrap_int32(v).tolist() == [INT32_MIN, INT32_MAX, 0, -5, 7]
    assert saturate(v, -128, 127).tolist() == [127, -128, 127, -128, 7]
    assert saturating_cast([300, -300, 5], np.uint8).tolist() == [255, 0, 5]
    assert saturating_cast([300, -300, 5], np.int8).dtype == np.int8
    assert saturating_cast([40000, -40000], np.int16).tolist() == [32767, -32768]


def test_every_primitive_is_documented():
    assert {
        "saturating_rounding_doubling_high_mul",
        "rounding_divide_by_pot",
        "mul_by_quantized_multiplier_double",
        "mul_by_quantized_multiplier_single",
        "saturate",
    } <= set(PRIMITIVES)
    for name, p in PRIMITIVES.items():
        assert p.name == name
        assert p.meaning.strip() and p.saturation.strip() and p.instruction.strip(), name


def test_round_half_away_is_exact_for_float64_and_float32() -> None:
    from qlane.sim.fixedpoint import round_half_away

    below = np.nextafter(0.5, 0.0)
    v = np.array([0.5, -0.5, 1.5, -2.5, below, -below, 2.0**52 + 1, np.inf, -0.0])
    assert round_half_away(v).tolist() == [1, -1, 2, -3, 0, -0.0, 2.0**52 + 1, np.inf, -0.0]
    assert round_half_away(np.float32(0.49999997)) == 0
    assert np.isnan(round_half_away(np.nan))
