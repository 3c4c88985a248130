"""gemmlowp fixed-point math and the activation / softmax kernels, against independent references.

The float64 references (numpy's exp, tanh) are ~1e-16 accurate, far below the documented errors
of the fixed-point functions (1e-9 .. 2.5e-7) that they check.
"""

from __future__ import annotations

import numpy as np
import pytest

from peers import single_op_graph, spec
from qlane.sim import Interpreter, ModelError, QuantParams
from qlane.sim.fixedpoint import INT32_MAX, INT32_MIN, rounding_divide_by_pot
from qlane.sim.ops.activation import (
    downscale_multiplier_to_int16,
    expm1f_fdlibm,
    populate_lut,
    tanhf_fdlibm,
)
from qlane.sim.ops.softmax import preprocess_softmax_scaling
from qlane.sim.transcendental import (
    EXP_BARREL_SHIFTER,
    EXP_MINUS_ONE_EIGHTH,
    FORTY_EIGHT_OVER_SEVENTEEN_Q2,
    MINUS_THIRTY_TWO_OVER_SEVENTEEN_Q2,
    ONE_THIRD,
    FixedPoint,
    calculate_input_radius,
    count_leading_zeros,
    exp_on_interval_between_negative_one_quarter_and_0_excl,
    exp_on_negative_values,
    get_reciprocal,
    logistic,
    mul_by_quantized_multiplier_greater_than_one,
    one_minus_x_over_one_plus_x_for_x_in_0_1,
    one_over_one_plus_x_for_x_in_0_1,
    rescale,
    rounding_divide_by_pot_int16,
    saturating_doubling_high_mul_int16,
    saturating_left_shift_int16,
    saturating_rounding_doubling_high_mul_int16,
    saturating_rounding_multiply_by_pot,
    tanh,
)

RNG_SEED = 20240611


def q(raw, bits: int) -> FixedPoint:
    return FixedPoint.from_raw(raw, bits)


def real(x: FixedPoint) -> np.ndarray:
    return x.to_double()


# ---------------------------------------------------------------- constants and primitives


@pytest.mark.parametrize(
    ("raw", "bits", "value"),
    [
        (EXP_MINUS_ONE_EIGHTH, 0, np.exp(-1 / 8)),
        (ONE_THIRD, 0, 1 / 3),
        (FORTY_EIGHT_OVER_SEVENTEEN_Q2, 2, 48 / 17),
        (MINUS_THIRTY_TWO_OVER_SEVENTEEN_Q2, 2, -32 / 17),
        *[(raw, 0, np.exp(-(2.0**k))) for k, raw in EXP_BARREL_SHIFTER.items()],
    ],
)
def test_gemmlowp_constants_are_the_rounded_reals(raw: int, bits: int, value: float) -> None:
    assert int(FixedPoint.from_double(value, bits).raw) == raw


def test_fixedpoint_formats_and_arithmetic() -> None:
    assert int(FixedPoint.one(0).raw) == INT32_MAX
    assert int(FixedPoint.one(5).raw) == 1 << 26
    assert int(FixedPoint.constant_pot(-2, 5).raw) == 1 << 24
    assert FixedPoint.from_double(-1.5, 3).to_double() == -1.5
    assert int(FixedPoint.from_double(40.0, 5).raw) == INT32_MAX  # clamps
    half = FixedPoint.from_double(0.5, 0)
    three = FixedPoint.from_double(3.0, 2)
    assert (half * three).integer_bits == 2 and real(half * three) == 1.5
    big = q(INT32_MAX, 0)
    assert int((big + q(1, 0)).raw) == INT32_MIN  # int32 wrap, as the C code
    assert int((-q(INT32_MIN, 0)).raw) == INT32_MIN
    with pytest.raises(TypeError):
        _ = q(1, 0) + q(1, 1)
    with pytest.raises(ValueError):
        FixedPoint.constant_pot(0, 0)


def test_saturating_rounding_multiply_by_pot() -> None:
    x = np.array([0, 1, -1, 3, -3, (1 << 26) - 1, 1 << 26, -(1 << 26), -(1 << 26) - 1])
    got = saturating_rounding_multiply_by_pot(x, 5)
    want = np.clip(x * 32, INT32_MIN, INT32_MAX)
    want[x > (1 << 26) - 1] = INT32_MAX
    want[x < -((1 << 26) - 1)] = INT32_MIN
    np.testing.assert_array_equal(got, want)
    # Right shifts round half away from zero.
    np.testing.assert_array_equal(saturating_rounding_multiply_by_pot([5, -5, 6, -6], -2),
                                  [1, -1, 2, -2])
    np.testing.assert_array_equal(saturating_rounding_multiply_by_pot(x, 0), x)


def test_rescale_changes_the_format_not_the_value() -> None:
    x = FixedPoint.from_double(np.array([-3.25, 0.75, 1.9]), 5)
    np.testing.assert_array_equal(real(rescale(x, 2)), real(x))  # more fractional bits
    np.testing.assert_array_equal(rescale(x, 0).raw, [INT32_MIN, 3 << 29, INT32_MAX])


def test_count_leading_zeros_matches_bit_length() -> None:
    rng = np.random.default_rng(RNG_SEED)
    x = np.concatenate([rng.integers(INT32_MIN, INT32_MAX, 5000, endpoint=True),
                        [0, 1, 2, 3, INT32_MAX, INT32_MIN, -1], 1 << np.arange(31)])
    want = [32 - (int(v) & 0xFFFFFFFF).bit_length() for v in x]
    np.testing.assert_array_equal(count_leading_zeros(x), want)


# ---------------------------------------------------------------- exp, reciprocal, sigmoid, tanh


def test_exp_on_interval_golden_and_error() -> None:
    at_minus_eighth = exp_on_interval_between_negative_one_quarter_and_0_excl(
        FixedPoint.from_double(-1 / 8, 0))
    assert int(at_minus_eighth.raw) == EXP_MINUS_ONE_EIGHTH  # x = 0: the constant term exactly
    a = np.arange(-(1 << 29), 0, 997)
    got = real(exp_on_interval_between_negative_one_quarter_and_0_excl(q(a, 0)))
    assert np.abs(got - np.exp(a / 2.0**31)).max() < 2.5e-7


@pytest.mark.parametrize("bits", [0, 1, 3, 4, 5, 6, 8, 12])
def test_exp_on_negative_values_error(bits: int) -> None:
    rng = np.random.default_rng(RNG_SEED + bits)
    a = np.concatenate([-rng.integers(0, 1 << 31, 200_000), [0, -1, INT32_MIN + 1, INT32_MIN],
                        -(1 << np.arange(31))])
    got = exp_on_negative_values(q(a, bits))
    assert got.integer_bits == 0
    assert np.abs(real(got) - np.exp(a / 2.0 ** (31 - bits))).max() < 2.5e-7


def test_exp_on_negative_values_corners() -> None:
    for bits in (0, 5, 12):
        assert int(exp_on_negative_values(q(0, bits)).raw) == INT32_MAX  # exp(0) = 1 saturates
    # With more than 5 integer bits inputs below -32 give exactly 0.
    below = FixedPoint.from_double(np.array([-32.001, -100.0, -2047.0]), 12)
    np.testing.assert_array_equal(exp_on_negative_values(below).raw, 0)
    # Exact powers of two below -1/4 only use barrel-shifter products.
    minus_one = exp_on_negative_values(FixedPoint.from_double(-1.0, 5))
    assert abs(real(minus_one) - np.exp(-1.0)) < 2.5e-7


def test_one_over_one_plus_x() -> None:
    a = np.concatenate([np.arange(0, INT32_MAX, 9973), [INT32_MAX]])
    got = real(one_over_one_plus_x_for_x_in_0_1(q(a, 0)))
    assert np.abs(got - 1 / (1 + a / 2.0**31)).max() < 5e-9
    assert int(one_over_one_plus_x_for_x_in_0_1(q(0, 0)).raw) == INT32_MAX


def test_one_minus_x_over_one_plus_x() -> None:
    a = np.arange(1, INT32_MAX, 9973)
    got = real(one_minus_x_over_one_plus_x_for_x_in_0_1(q(a, 0)))
    x = a / 2.0**31
    assert np.abs(got - (1 - x) / (1 + x)).max() < 1e-8


@pytest.mark.parametrize("bits", [0, 2, 4, 5, 8])
def test_logistic_and_tanh_error_and_symmetry(bits: int) -> None:
    rng = np.random.default_rng(RNG_SEED + 100 + bits)
    a = np.concatenate([rng.integers(INT32_MIN + 1, INT32_MAX, 100_000, endpoint=True),
                        [1, -1, INT32_MAX, INT32_MIN + 1]])
    x = a / 2.0 ** (31 - bits)
    sig, sig_neg = logistic(q(a, bits)), logistic(q(-a, bits))
    assert np.abs(real(sig) - 1 / (1 + np.exp(-x))).max() < 1e-7
    np.testing.assert_array_equal(sig.raw + sig_neg.raw, INT32_MAX)  # 1 - s computed exactly
    th, th_neg = tanh(q(a, bits)), tanh(q(-a, bits))
    assert np.abs(real(th) - np.tanh(x)).max() < 2e-7
    np.testing.assert_array_equal(th_neg.raw, -th.raw)
    assert int(logistic(q(0, bits)).raw) == 1 << 30
    assert int(tanh(q(0, bits)).raw) == 0


def test_get_reciprocal() -> None:
    one_q12 = 1 << 19
    raw, over = get_reciprocal(np.array([one_q12]), 12)
    assert (int(raw[0]), int(over[0])) == (INT32_MAX, 0)
    x = np.arange(one_q12, INT32_MAX, 7919)
    raw, over = get_reciprocal(x, 12)
    got = raw / 2.0**31 / 2.0**over
    np.testing.assert_array_less(np.abs(got * (x / 2.0**19) - 1), 1e-8)
    np.testing.assert_array_equal(over, 12 - count_leading_zeros(x))


def test_multiply_by_quantized_multiplier_greater_than_one() -> None:
    m = 1 << 30  # 0.5
    # Ties round toward +infinity (SaturatingRoundingDoublingHighMul), in both schemes.
    for rounding in ("double", "single"):
        np.testing.assert_array_equal(
            mul_by_quantized_multiplier_greater_than_one([-3, 3, -5, 5], m, 0, rounding),
            [-1, 2, -2, 3])
    np.testing.assert_array_equal(
        mul_by_quantized_multiplier_greater_than_one([-3, 3], m, 2), [-6, 6])
    # Double rounding shifts left first, wrapping like C int32; single rounding does not wrap.
    assert int(mul_by_quantized_multiplier_greater_than_one(1 << 30, INT32_MAX, 1)) == \
        -INT32_MAX
    assert int(mul_by_quantized_multiplier_greater_than_one(1 << 30, INT32_MAX, 1, "single")) \
        == INT32_MAX


def test_calculate_input_radius_goldens() -> None:
    # TFLite quantization_util_test.cc values.
    assert calculate_input_radius(4, 27) == 15
    assert calculate_input_radius(3, 27) == 14
    assert calculate_input_radius(3, 28) == 7
    assert calculate_input_radius(4, 2) == 503316480
    assert calculate_input_radius(4, 11, 15) == 15  # the 16-bit logistic / tanh variant


def test_int16_helpers() -> None:
    i16 = np.arange(-(1 << 15), 1 << 15, 37)
    b = 23170  # ~ 1/sqrt(2) in Q15
    prod = i16 * b
    np.testing.assert_array_equal(saturating_doubling_high_mul_int16(i16, b),
                                  np.trunc(prod / 32768).astype(np.int64))
    rounded = np.sign(prod) * np.floor(np.abs(prod) / 32768 + 0.5)
    np.testing.assert_array_equal(saturating_rounding_doubling_high_mul_int16(i16, b), rounded)
    assert int(saturating_rounding_doubling_high_mul_int16(-32768, -32768)) == 32767
    assert int(saturating_doubling_high_mul_int16(-32768, -32768)) == 32767
    np.testing.assert_array_equal(saturating_left_shift_int16([1000, -1000, 5000], 3),
                                  [8000, -8000, 32767])
    for e in range(16):
        np.testing.assert_array_equal(rounding_divide_by_pot_int16(i16, e),
                                      rounding_divide_by_pot(i16, e))
    # Past 15 the reference's int16 mask is -1: the result degenerates to +-1.
    np.testing.assert_array_equal(rounding_divide_by_pot_int16([0, 5, -5, 32767], 17),
                                  [1, 1, -1, 1])


def test_downscale_multiplier_to_int16() -> None:
    assert downscale_multiplier_to_int16(1 << 30) == 1 << 14
    assert downscale_multiplier_to_int16((1 << 30) + (1 << 15)) == (1 << 14) + 1
    assert downscale_multiplier_to_int16(INT32_MAX) == 32767
    assert downscale_multiplier_to_int16(INT32_MAX - (1 << 15)) == 32767


# ---------------------------------------------------------------- libm as the reference uses it

# (x, tanhf(x)) from glibc 2.36 (fdlibm): the first three differ from correctly rounded tanh.
TANHF_GOLDENS = [
    ("0x1.07e0fep-20", "0x1.07e0fcp-20"), ("0x1.333334p-2", "0x1.2a4ddap-2"),
    ("-0x1.a36e2ep-14", "-0x1.a36e3p-14"), ("-0x1.333334p-2", "-0x1.2a4ddap-2"),
    ("0x1.333334p-1", "0x1.12f82ap-1"), ("0x1.ccccccp-1", "0x1.6ebe98p-1"),
    ("0x1p+0", "0x1.85efacp-1"), ("0x1.4cccccp+0", "0x1.b933c6p-1"),
    ("-0x1.4p+1", "-0x1.f92582p-1"), ("0x1.4p+2", "0x1.fff41ap-1"), ("0x1.233334p+3", "0x1p+0"),
    ("0x1.5e6666p+4", "0x1p+0"), ("0x1.6p+4", "0x1p+0"), ("0x1.4484cp-100", "0x1.4484cp-100"),
    ("0x1.8p-1", "0x1.45323ep-1"), ("0", "0"),
]
# (x, expm1f(x)) from glibc 2.36, one per branch of the argument reduction.
EXPM1F_GOLDENS = [
    ("0x1.12e0bep-30", "0x1.12e0bep-30"), ("0x1.99999ap-3", "0x1.c56edp-3"),
    ("-0x1.99999ap-3", "-0x1.733d4ap-3"), ("0x1p-1", "0x1.4c2532p-1"),
    ("-0x1p-1", "-0x1.92e9ap-2"), ("0x1.99999ap-1", "0x1.39bd0ep+0"),
    ("-0x1.99999ap-1", "-0x1.19f18ep-1"), ("0x1.333334p+0", "0x1.28f998p+1"),
    ("0x1.8p+1", "0x1.315e5cp+4"), ("-0x1.8p+1", "-0x1.e6825p-1"), ("0x1.4p+3", "0x1.5825dcp+14"),
    ("0x1.4p+4", "0x1.ceb088p+28"), ("0x1.4p+5", "0x1.a220d4p+57"), ("-0x1.4p+4", "-0x1p+0"),
    ("0x1.1p+4", "0x1.709348p+24"), ("0x1.08p+4", "0x1.bf1abcp+23"),
]


def _f32(pairs: list[tuple[str, str]]) -> tuple[np.ndarray, np.ndarray]:
    x = np.array([float.fromhex(a) for a, _ in pairs], np.float32)
    y = np.array([float.fromhex(b) for _, b in pairs], np.float32)
    return x, y


def test_tanhf_fdlibm_goldens() -> None:
    x, y = _f32(TANHF_GOLDENS)
    np.testing.assert_array_equal(tanhf_fdlibm(x).view(np.uint32), y.view(np.uint32))
    np.testing.assert_array_equal(tanhf_fdlibm(-x), -y)


def test_expm1f_fdlibm_goldens() -> None:
    x, y = _f32(EXPM1F_GOLDENS)
    np.testing.assert_array_equal(expm1f_fdlibm(x).view(np.uint32), y.view(np.uint32))


def test_tanhf_fdlibm_within_two_ulp() -> None:
    x = np.linspace(-12, 12, 200_001).astype(np.float32)
    got = tanhf_fdlibm(x).astype(np.float64)
    want = np.tanh(x.astype(np.float64))
    ulp = np.spacing(np.abs(want).astype(np.float32)).astype(np.float64)
    assert (np.abs(got - want) <= 2 * ulp).all()


# ---------------------------------------------------------------- kernels


def _run(opcode: str, dtype, in_q: QuantParams, out_q: QuantParams, x: np.ndarray,
         options: dict | None = None) -> np.ndarray:
    shape = x.shape[1:]
    g = single_op_graph(opcode, [spec(shape, dtype, in_q)], [spec(shape, dtype, out_q)], options)
    return Interpreter(g).run([x]).outputs[0]


def _all_values(dtype) -> np.ndarray:
    info = np.iinfo(dtype)
    return np.arange(info.min, info.max + 1).astype(dtype)[None]


@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
def test_logistic_table(dtype) -> None:
    zp = 128 if dtype == np.uint8 else 0
    out_zp = 0 if dtype == np.uint8 else -128
    x = _all_values(dtype)
    got = _run("LOGISTIC", dtype, QuantParams(1 / 16, zp), QuantParams(1 / 256, out_zp), x)
    r = (x.astype(np.int64) - zp) / 16
    want = np.clip(np.round(256 / (1 + np.exp(-r))) + out_zp, *_range(dtype))
    np.testing.assert_array_equal(got, want)
    assert got[0, list(x[0]).index(zp)] == 128 + out_zp


def _range(dtype) -> tuple[int, int]:
    info = np.iinfo(dtype)
    return info.min, info.max


@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
def test_tanh_table_any_output_quantization(dtype) -> None:
    x = _all_values(dtype)
    in_q = QuantParams(0.037, 3)
    for out_q in (QuantParams(1 / 128, 128 if dtype == np.uint8 else 0), QuantParams(0.01, 7)):
        got = _run("TANH", dtype, in_q, out_q, x).astype(np.int64)
        r = np.tanh(np.float32(0.037) * (x.astype(np.float64) - 3))
        want = np.clip(np.round(r / float(out_q.s)) + out_q.zp, *_range(dtype))
        assert np.abs(got - want).max() <= 1
        assert np.mean(got == want) > 0.98


def test_populate_lut_rejects_int32_overflow() -> None:
    """Beyond int32 the reference's float -> int conversion is undefined (LiteRT's uint8 and
    int8 tables even disagree there): refuse such tables."""
    in_q, out_q = QuantParams(0.01, 0), QuantParams(1e-9, 0)
    table = populate_lut(lambda v: v, in_q, out_q, np.int8)  # |v| / 1e-9 <= 1.28e9 fits
    np.testing.assert_array_equal(table[128 - 2:128 + 3], [-128, -128, 0, 127, 127])
    with pytest.raises(ValueError, match="overflow int32"):
        populate_lut(lambda v: v, in_q, out_q, np.uint8)  # 2.55e9 does not


@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
def test_softmax_against_float(dtype) -> None:
    rng = np.random.default_rng(RNG_SEED)
    lo, hi = _range(dtype)
    x = rng.integers(lo, hi + 1, (4, 3, 37)).astype(dtype)
    in_q = QuantParams(0.05, 10)
    got = _run("SOFTMAX", dtype, in_q, QuantParams(1 / 256, lo), x, {"beta": 0.7})
    d = (x.astype(np.float64) - x.max(-1, keepdims=True)) * np.float32(0.05) * 0.7
    p = np.exp(d) / np.exp(d).sum(-1, keepdims=True)
    want = np.clip(np.round(p * 256), 0, 255) + lo
    assert np.abs(got.astype(np.int64) - want).max() <= 1


def test_softmax_equal_entries_and_far_entries() -> None:
    x = np.full((1, 10), 200, np.uint8)[None]
    got = _run("SOFTMAX", np.uint8, QuantParams(0.1, 0), QuantParams(1 / 256, 0), x)
    np.testing.assert_array_equal(got, 26)  # round(256 / 10) = 26
    # A difference below diff_min outputs exactly the minimum.
    x = np.array([[[200, 0, 199]]], np.uint8)
    got = _run("SOFTMAX", np.uint8, QuantParams(1.0, 0), QuantParams(1 / 256, 0), x)
    assert got[0, 0, 1] == 0 and got[0, 0, 0] > got[0, 0, 2] > 0


def test_softmax_refuses_what_the_reference_aborts_on() -> None:
    x = np.zeros((1, 2, 512), np.int8)
    with pytest.raises(ModelError, match="exceeds 31"):
        _run("SOFTMAX", np.int8, QuantParams(0.1, 0), QuantParams(1 / 256, -128), x)
    # 511 equal entries still work: 256 / 511 rounds to 1.
    got = _run("SOFTMAX", np.int8, QuantParams(0.1, 0), QuantParams(1 / 256, -128), x[..., :511])
    np.testing.assert_array_equal(got, -127)


def test_preprocess_softmax_scaling() -> None:
    real, m, shift = preprocess_softmax_scaling(1.0, 0.1, 5)
    assert real == 0.1 * 2**26 and shift == 23 and m == round(0.1 * 2**26 / 2**23 * 2**31)
    real, m, shift = preprocess_softmax_scaling(1e6, 100.0, 5)
    assert real == 2**31 - 1 and shift == 31 and m == INT32_MAX  # capped
    assert preprocess_softmax_scaling(1e6, 100.0, 5, "single")[0] == 2**30 - 1


@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
def test_hard_swish_against_float(dtype) -> None:
    x = _all_values(dtype)
    lo, hi = _range(dtype)
    in_q = QuantParams(0.05, lo + 100)
    out_q = QuantParams(0.03, lo + 20)
    got = _run("HARD_SWISH", dtype, in_q, out_q, x).astype(np.int64)
    r = np.float32(0.05) * (x.astype(np.float64) - in_q.zp)
    want = np.clip(np.round(r * np.clip(r + 3, 0, 6) / 6 / np.float32(0.03)) + out_q.zp, lo, hi)
    assert np.abs(got - want).max() <= 1


@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
def test_relu_family_same_quantization_is_a_clamp(dtype) -> None:
    x = _all_values(dtype)
    lo, hi = _range(dtype)
    qp = QuantParams(0.05, lo + 90)
    relu = _run("RELU", dtype, qp, qp, x)
    np.testing.assert_array_equal(relu, np.maximum(x, lo + 90))
    relu6 = _run("RELU6", dtype, qp, qp, x)
    np.testing.assert_array_equal(relu6, np.clip(x, lo + 90, min(hi, lo + 90 + 120)))
    relu1 = _run("RELU_N1_TO_1", dtype, qp, qp, x)
    np.testing.assert_array_equal(relu1, np.clip(x, lo + 70, lo + 110))


def test_relu6_requantizes_to_the_output() -> None:
    """The classic reference rescales input -> output (TFLM's int8 RELU6 does not)."""
    x = _all_values(np.int8)
    got = _run("RELU6", np.int8, QuantParams(0.1, 0), QuantParams(0.05, -128), x)
    want = np.clip(x.astype(np.int64) * 2 - 128, -128, -128 + 120)  # 6.0 = 120 output steps
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize(
    ("opcode", "in_spec", "out_spec", "message"),
    [
        ("LOGISTIC", (np.int8, QuantParams(0.1, 0)), (np.int8, QuantParams(1 / 128, 0)),
         "scale 1/256"),
        ("SOFTMAX", (np.int8, QuantParams(0.1, 0)), (np.int8, QuantParams(1 / 256, 0)),
         "zero point -128"),
        ("SOFTMAX", (np.uint8, QuantParams(0.1, 0)), (np.uint8, QuantParams(1 / 255, 0)),
         "scale 1/256"),
        ("TANH", (np.uint8, QuantParams(0.1, 0)), (np.int8, QuantParams(1 / 128, 0)),
         "dtypes differ"),
        ("RELU", (np.float32, None), (np.float32, None), "must be uint8 or int8"),
        ("RELU6", (np.int8, None), (np.int8, QuantParams(0.1, 0)), "no quantization"),
        ("HARD_SWISH", (np.int8, QuantParams([0.1, 0.2], [0, 0])),
         (np.int8, QuantParams(0.1, 0)), "per tensor"),
        ("HARD_SWISH", (np.int8, QuantParams(1.0, 0)), (np.int8, QuantParams(1e-4, 0)),
         "right shift"),
        ("SOFTMAX", (np.int8, QuantParams(1e-9, 0)), (np.int8, QuantParams(1 / 256, -128)),
         "too small"),
        ("TANH", (np.int8, QuantParams(0.1, 0)), (np.int8, QuantParams(1e-10, 0)),
         "overflow int32"),
    ],
)
def test_kernels_reject_what_the_reference_rejects(opcode, in_spec, out_spec, message) -> None:
    g = single_op_graph(opcode, [spec((1, 4), *in_spec)], [spec((1, 4), *out_spec)])
    with pytest.raises(ModelError, match=message) as err:
        Interpreter(g)
    assert f"({opcode})" in str(err.value) and "\n" not in str(err.value)
