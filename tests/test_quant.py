"""Quantization parameters, QUANTIZE/DEQUANTIZE, nudging and fake quantization."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from qlane.sim.fixedpoint import round_half_away
from qlane.sim.quant import (
    QuantParams,
    activation_range,
    dequantize,
    fake_quant,
    nudge,
    params_from_min_max,
    quantize,
)

f32 = np.float32
VARIANTS = ("multiply", "divide")

# (num_bits, narrow_range, min, max, inputs, expected): tensorflow/core/kernels/
# fake_quant_ops_test.cc, the FakeQuantWithMinMaxArgs / FakeQuantWithMinMaxVars cases.
TF_KERNEL_GOLDENS = [
    (8, False, -10.0, 53.75, [-10.1, -10.0, -9.9, -9.75, 53.75, 53.8],
     [-10.0, -10.0, -10.0, -9.75, 53.75, 53.75]),
    (8, True, -10.0, 53.5, [-10.1, -10.0, -9.9, -9.75, 53.5, 53.6],
     [-10.0, -10.0, -10.0, -9.75, 53.5, 53.5]),
    (8, False, -0.1, 63.65, [-0.1, 0.0, 0.1, 0.25, 63.75, 63.8],
     [0.0, 0.0, 0.0, 0.25, 63.75, 63.75]),
    (8, True, -0.1, 63.4, [-0.1, 0.0, 0.1, 0.25, 63.5, 63.6], [0.0, 0.0, 0.0, 0.25, 63.5, 63.5]),
    (8, False, -0.1275, 63.6225, [-0.26, -0.25, -0.24, 0.0, 63.5, 63.6],
     [-0.25, -0.25, -0.25, 0.0, 63.5, 63.5]),
    (8, True, -0.1275, 63.3725, [-0.26, -0.25, -0.24, 0.0, 63.25, 63.3],
     [-0.25, -0.25, -0.25, 0.0, 63.25, 63.25]),
    (8, False, -0.125, 63.625, [-0.26, -0.25, -0.24, 0.0, 63.5, 63.6],
     [-0.25, -0.25, -0.25, 0.0, 63.5, 63.5]),  # zero point 0.5 rounds away from zero, to 1
    (8, True, -0.125, 63.375, [-0.26, -0.25, -0.24, 0.0, 63.25, 63.3],
     [-0.25, -0.25, -0.25, 0.0, 63.25, 63.25]),
    (8, False, -63.65, 0.1, [-63.8, -63.75, -63.7, -63.5, 0.0, 0.1],
     [-63.75, -63.75, -63.75, -63.5, 0.0, 0.0]),
    (8, True, -63.4, 0.1, [-63.6, -63.5, -63.4, -63.25, 0.0, 0.1],
     [-63.5, -63.5, -63.5, -63.25, 0.0, 0.0]),
    (4, False, -6.0, 1.5, [-6.1, -6.0, -5.9, -5.5, 1.5, 1.6], [-6.0, -6.0, -6.0, -5.5, 1.5, 1.5]),
    (4, True, -6.0, 1.0, [-6.1, -6.0, -5.9, -5.5, 1.0, 1.1], [-6.0, -6.0, -6.0, -5.5, 1.0, 1.0]),
    (4, False, -0.1, 7.4, [-0.1, 0.0, 0.1, 0.5, 7.5, 7.6], [0.0, 0.0, 0.0, 0.5, 7.5, 7.5]),
    (4, True, -0.1, 6.9, [-0.1, 0.0, 0.1, 0.5, 7.0, 7.1], [0.0, 0.0, 0.0, 0.5, 7.0, 7.0]),
    (4, False, -0.4, 7.1, [-0.6, -0.5, -0.24, 0.0, 7.0, 7.1], [-0.5, -0.5, 0.0, 0.0, 7.0, 7.0]),
    (4, True, -0.4, 6.6, [-0.6, -0.5, -0.24, 0.0, 6.5, 6.6], [-0.5, -0.5, 0.0, 0.0, 6.5, 6.5]),
    (4, False, -7.3, 0.2, [-7.6, -7.5, -7.4, -7.2, 0.0, 0.1], [-7.5, -7.5, -7.5, -7.0, 0.0, 0.0]),
    (4, True, -6.8, 0.2, [-7.1, -7.0, -6.9, -6.7, 0.0, 0.1], [-7.0, -7.0, -7.0, -6.5, 0.0, 0.0]),
    (2, False, -1.0, 0.5, [-1.1, -1.0, -0.9, -0.3, 0.1, 0.6], [-1.0, -1.0, -1.0, -0.5, 0.0, 0.5]),
    (2, True, -1.0, 0.0, [-1.1, -1.0, -0.9, -0.3, 0.0, 0.1], [-1.0, -1.0, -1.0, -0.5, 0.0, 0.0]),
    (2, False, -0.1, 1.4, [-0.2, 0.1, 0.7, 1.0, 1.3, 1.6], [0.0, 0.0, 0.5, 1.0, 1.5, 1.5]),
    (2, True, -0.1, 0.9, [-0.1, 0.1, 0.7, 0.9, 1.0, 1.1], [0.0, 0.0, 0.5, 1.0, 1.0, 1.0]),
    (2, False, -0.4, 1.1, [-0.6, -0.5, -0.24, 0.0, 1.0, 1.1], [-0.5, -0.5, 0.0, 0.0, 1.0, 1.0]),
    (2, True, -0.4, 0.6, [-0.6, -0.5, -0.24, 0.0, 0.5, 0.6], [-0.5, -0.5, 0.0, 0.0, 0.5, 0.5]),
]

# (min, max, num_bits, narrow_range, nudged_min, nudged_max, step): tensorflow/compiler/tests/
# fake_quant_ops_test.py, including ranges that exclude 0.
TF_XLA_GOLDENS = [
    (0.0, 255.0, 8, False, 0.0, 255.0, 1.0),
    (0.5, 128.0, 8, False, 0.0, 127.5, 0.5),
    (-128.0, -0.5, 8, False, -127.5, 0.0, 0.5),
    (-0.1, 127.4, 8, False, 0.0, 127.5, 0.5),
    (0.0, 254.0, 8, True, 0.0, 254.0, 1.0),
    (0.1, 127.1, 8, True, 0.0, 127.0, 0.5),
    (-127.1, -0.1, 8, True, -127.0, 0.0, 0.5),
    (-0.1, 126.9, 8, True, 0.0, 127.0, 0.5),
    (0.0, 127.0, 7, False, 0.0, 127.0, 1.0),
    (0.5, 64.0, 7, False, 0.0, 63.5, 0.5),
    (-64.0, -0.5, 7, False, -63.5, 0.0, 0.5),
    (-0.1, 63.4, 7, False, 0.0, 63.5, 0.5),
    (0.0, 126.0, 7, True, 0.0, 126.0, 1.0),
    (0.1, 63.1, 7, True, 0.0, 63.0, 0.5),
    (-63.1, -0.1, 7, True, -63.0, 0.0, 0.5),
    (-0.1, 62.9, 7, True, 0.0, 63.0, 0.5),
]


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("bits, narrow, lo, hi, x, expected", TF_KERNEL_GOLDENS)
def test_fake_quant_tf_kernel_goldens(variant, bits, narrow, lo, hi, x, expected):
    got = fake_quant(np.array(x, f32), lo, hi, bits, narrow, variant)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, np.array(expected, f32), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("lo, hi, bits, narrow, nmin, nmax, step", TF_XLA_GOLDENS)
def test_fake_quant_tf_xla_goldens(variant, lo, hi, bits, narrow, nmin, nmax, step):
    x = [nmin - step, nmin - 0.01, nmin, nmin + 0.01, nmin + step - 0.01, nmin + step,
         nmin + step + 0.01, nmax - 0.01, nmax, nmax + 0.01, nmax + step]
    expected = [nmin] * 4 + [nmin + step] * 3 + [nmax] * 4
    got = fake_quant(np.array(x, f32), lo, hi, bits, narrow, variant)
    np.testing.assert_allclose(got, np.array(expected, f32), rtol=1e-6, atol=1e-6)
    got_min, got_max, scale, _, _ = nudge(lo, hi, bits, narrow)
    assert (got_min, got_max, scale) == (f32(nmin), f32(nmax), f32(step))


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("narrow", [False, True])
def test_fake_quant_symmetric_range_keeps_zero_exact(variant, narrow):
    assert np.all(fake_quant(np.zeros(6, f32), -10.0, 10.0, 8, narrow, variant) == 0.0)


@pytest.mark.parametrize("variant", VARIANTS)
def test_fake_quant_zero_min_and_max_gives_zeros(variant):
    got = fake_quant(np.array([0.0, 1.5, -3.0], f32), 0.0, 0.0, 8, False, variant)
    assert got.tolist() == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("variant", VARIANTS)
def test_fake_quant_zero_is_exact_for_any_range(variant):
    # tensorflow#47193: TF 2.4 returned -2e-7 for fake_quant(0.0, -25, 20).
    assert fake_quant(f32(0.0), -25.0, 20.0, 8, False, variant) == 0.0
    rng = np.random.default_rng(0)
    for lo, hi, bits in zip(-rng.uniform(0.01, 100, 200), rng.uniform(0.01, 100, 200),
                            rng.integers(2, 17, 200)):
        assert fake_quant(f32(0.0), lo, hi, int(bits), bool(bits % 2), variant) == 0.0


def test_nudge_zero_point_from_float32_division():
    # tensorflow/model-optimization#858: [-1, 1] has zero point 127 (1 / scale is 127.49999 in
    # float32), so fake_quant([-1, 0, 1]) is [-0.9960785, 0, 1.0039215].
    nmin, nmax, scale, _, zp = nudge(-1.0, 1.0)
    assert zp == 127 and scale == f32(2.0) / f32(255.0)
    np.testing.assert_allclose(fake_quant(np.array([-1, 0, 1], f32), -1.0, 1.0),
                               [-0.9960785, 0.0, 1.0039215], rtol=2e-7)


def test_nudge_rounds_zero_point_like_std_round():
    # 0 - min / scale is 0.49999997 in float32: std::round gives 0, floor(z + 0.5f) gave 1.
    rmin, rmax = f32(-0.011787818744778633), f32(6.0)
    scale = (rmax - rmin) / f32(255)
    assert f32(0) - rmin / scale == np.nextafter(f32(0.5), f32(0))
    nmin, nmax, _, _, zp = nudge(rmin, rmax)
    assert zp == 0 and nmin == 0.0
    assert params_from_min_max(rmin, rmax).zp == 0


@pytest.mark.parametrize("bits", [4, 5, 6, 7, 8, 16])
@pytest.mark.parametrize("narrow", [False, True])
def test_nudge_puts_zero_on_the_grid(bits, narrow):
    rng = np.random.default_rng(bits)
    qmin, qmax = int(narrow), (1 << bits) - 1
    for lo, hi in zip(-rng.exponential(3, 100), rng.exponential(3, 100)):
        nmin, nmax, scale, inv_scale, zp = nudge(lo, hi, bits, narrow)
        assert qmin <= zp <= qmax
        assert nmin == (f32(qmin) - f32(zp)) * scale and nmax == (f32(qmax) - f32(zp)) * scale
        assert nmin <= 0.0 <= nmax
        assert abs(Fraction(float(scale)) * (qmax - qmin) - (Fraction(float(hi)) - Fraction(
            float(lo)))) <= abs(Fraction(float(hi - lo))) * Fraction(1, 1 << 22)
        assert inv_scale == f32(qmax - qmin) / (f32(hi) - f32(lo))


def test_fake_quant_variants_differ_where_the_division_rounds_to_a_tie():
    # min -3, max 0.3, 4 bits: scale 0.22, zero point 14, nudged min -3.08. For x = -1.65 the
    # exact (x - nudged_min) / scale is 6.4999998 (-> 6 steps, -1.76); the float32 division
    # rounds it to 6.5 (-> 7 steps, -1.54), the multiplication by inv_scale to 6.4999995.
    nmin, _, scale, inv_scale, zp = nudge(-3.0, 0.3, 4)
    assert (zp, scale, nmin) == (14, f32(0.22), f32(-3.08))
    x = f32(-1.65)
    shifted = x - nmin
    exact = Fraction(float(shifted)) / Fraction(float(scale))
    assert Fraction(6) < exact < Fraction(13, 2)
    assert shifted / scale == f32(6.5) and shifted * inv_scale < f32(6.5)
    assert fake_quant(x, -3.0, 0.3, 4, variant="multiply") == f32(-1.76)
    assert fake_quant(x, -3.0, 0.3, 4, variant="divide") == f32(-1.54)


def test_fake_quant_variants_agree_off_ties_and_differ_by_one_step():
    rng = np.random.default_rng(5)
    x = rng.uniform(-40, 40, 20000).astype(f32)
    a = fake_quant(x, -31.85, 13.5, 5, False, "multiply")
    b = fake_quant(x, -31.85, 13.5, 5, False, "divide")
    _, _, scale, _, _ = nudge(-31.85, 13.5, 5)
    assert np.all(np.isclose(a, b, rtol=0, atol=1e-6) | np.isclose(np.abs(a - b), scale))
    q = a / scale
    np.testing.assert_allclose(q, np.round(q), atol=1e-3)


def test_fake_quant_rejects_unknown_variant():
    with pytest.raises(ValueError):
        fake_quant(f32(1.0), -1.0, 1.0, variant="round")


# --- per-tensor parameters from a (min, max) range -------------------------------------------


@pytest.mark.parametrize(
    "lo, hi, scale, zp",
    # ChooseQuantizationParams goldens of quantization_util_test.cc
    [(-10.0, 30.0, 0.156863, 64), (0.0, 30.0, 0.117647, 0), (-10.0, 0.0, 0.039216, 255)],
)
def test_params_from_min_max_goldens(lo, hi, scale, zp):
    p = params_from_min_max(lo, hi, np.uint8)
    assert p.zp == zp and abs(float(p.s) - scale) < 1e-5
    p8 = params_from_min_max(lo, hi, np.int8)
    assert p8.zp == zp - 128 and p8.s == p.s


@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
def test_params_from_min_max_represent_zero_exactly(dtype):
    rng = np.random.default_rng(7)
    for lo, hi in zip(rng.normal(0, 5, 300), rng.normal(0, 5, 300)):
        lo, hi = min(lo, hi), max(lo, hi)
        p = params_from_min_max(lo, hi, dtype)
        assert quantize(np.float32(0.0), p, dtype) == p.zp
        assert dequantize(np.array(p.zp, dtype), p) == 0.0
        assert np.iinfo(dtype).min <= p.zp <= np.iinfo(dtype).max


def test_params_from_min_max_widen_the_range_to_include_zero():
    assert params_from_min_max(2.0, 10.0, np.uint8).zp == 0
    assert params_from_min_max(-10.0, -2.0, np.uint8).zp == 255
    assert params_from_min_max(-10.0, -2.0, np.int8).zp == 127
    p = params_from_min_max(0.0, 0.0, np.int8)
    assert (p.s, p.zp) == (1.0, -128)
    with pytest.raises(ValueError):
        params_from_min_max(-1.0, 1.0, np.int16)


# --- QUANTIZE / DEQUANTIZE -------------------------------------------------------------------


def test_quantize_rounds_ties_away_from_zero():
    p = QuantParams(f32(0.5), 0)
    x = np.array([0.25, -0.25, 0.75, -0.75, 1.25, -1.25, 0.2, -0.2], f32)
    assert quantize(x, p, np.int8).tolist() == [1, -1, 2, -2, 3, -3, 0, 0]
    p10 = QuantParams(f32(1.0), 10)
    below_half = np.nextafter(f32(0.5), f32(0))
    assert quantize(np.array([below_half, -below_half], f32), p10, np.int8).tolist() == [10, 10]


def test_quantize_saturates_to_the_dtype():
    p = QuantParams(f32(0.1), 3)
    x = np.array([1e3, -1e3, 1e8, -1e8], f32)
    assert quantize(x, p, np.int8).tolist() == [127, -128, 127, -128]
    assert quantize(x, p, np.uint8).tolist() == [255, 0, 255, 0]
    assert quantize(x, p, np.int16).tolist() == [10003, -9997, 32767, -32768]


def test_quantize_divides_in_float32():
    # In float32 0.35 / 0.1 and 0.25 / 0.1 are exact ties (3.5, 2.5) that round away from zero;
    # a float64 division of the same float32 values gives 3.4999999 and 2.4999999.
    p = QuantParams(f32(0.1), 0)
    assert f32(0.35) / f32(0.1) == f32(3.5) and np.float64(f32(0.35)) / np.float64(f32(0.1)) < 3.5
    x = np.array([0.35, 0.25, -0.35], f32)
    assert quantize(x, p, np.int8).tolist() == [4, 3, -4]


def test_quantize_dequantize_per_axis():
    p = QuantParams(np.array([0.5, 0.25, 1.0], f32), np.array([0, 1, -2]), axis=1)
    x = np.array([[1.0, 1.0, 1.0], [-0.75, 0.125, -200.0]], f32)
    q = quantize(x, p, np.int8)
    assert q.tolist() == [[2, 5, -1], [-2, 2, -128]]
    d = dequantize(q, p)
    assert d.dtype == np.float32
    assert d.tolist() == [[1.0, 1.0, 1.0], [-1.0, 0.25, -126.0]]
    p0 = QuantParams(np.array([0.5, 2.0], f32), np.array([1, 0]), axis=0)
    q0 = quantize(np.array([[1.0, -1.0], [4.0, -3.0]], f32), p0, np.uint8)
    assert q0.tolist() == [[3, 0], [2, 0]]
    assert dequantize(q0, p0).tolist() == [[1.0, -0.5], [4.0, 0.0]]


def test_dequantize_equals_tflite_double_product():
    # reference Dequantize computes static_cast<float>(double(scale) * (q - zp))
    q = np.arange(-128, 128, dtype=np.int8)
    for scale in (0.1, 0.0078125, 3.3e-5, 17.37):
        p = QuantParams(f32(scale), -3)
        want = (np.float64(f32(scale)) * (q.astype(np.int64) + 3)).astype(f32)
        assert np.array_equal(dequantize(q, p), want)


def test_round_half_away():
    v = np.array([0.5, -0.5, 1.5, -1.5, 2.5, np.nextafter(f32(0.5), f32(0)), 8388609.0], f32)
    assert round_half_away(v).tolist() == [1, -1, 2, -2, 3, 0, 8388609]


# --- fused activation clamps -----------------------------------------------------------------


def test_activation_range():
    u8 = QuantParams(f32(0.05), 10)
    assert activation_range("NONE", u8, np.uint8) == (0, 255)
    assert activation_range("RELU", u8, np.uint8) == (10, 255)
    assert activation_range("RELU6", u8, np.uint8) == (10, 130)
    assert activation_range("RELU_N1_TO_1", u8, np.uint8) == (0, 30)
    s8 = QuantParams(f32(1 / 32), -128)
    assert activation_range("RELU", s8, np.int8) == (-128, 127)
    assert activation_range("RELU6", s8, np.int8) == (-128, 64)
    assert activation_range("RELU_N1_TO_1", s8, np.int8) == (-128, -96)
    big = QuantParams(f32(0.01), 0)
    assert activation_range("RELU6", big, np.int8) == (0, 127)
    assert activation_range("RELU", None, np.int8) == (-128, 127)
    with pytest.raises(ValueError):
        activation_range("TANH", u8, np.uint8)


def test_activation_range_rounds_like_std_round():
    halves = QuantParams(f32(2.0), 0)  # -1 / 2 and 1 / 2 are exact ties
    assert activation_range("RELU_N1_TO_1", halves, np.int8) == (-1, 1)
    fours = QuantParams(f32(4.0), 0)  # 6 / 4 = 1.5
    assert activation_range("RELU6", fours, np.int8) == (0, 2)
    s = np.nextafter(f32(12.0), f32(13.0))  # 6 / s is 0.49999997 in float32
    assert f32(6.0) / s == np.nextafter(f32(0.5), f32(0))
    assert activation_range("RELU6", QuantParams(s, 0), np.int8) == (0, 0)
