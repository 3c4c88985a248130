"""ADD, SUB, MUL, CONCATENATION, PAD, PADV2, MEAN, RESHAPE, QUANTIZE and DEQUANTIZE kernels
against independent scalar transcriptions of the TFLite reference code, plus error cases.

The transcriptions below work element by element on Python ints and numpy float32 scalars; they
share no code with the kernels (nor with ``qlane.sim.fixedpoint``).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from peers import single_op_graph, spec
from qlane.sim import Interpreter, ModelError, QuantParams
from qlane.sim.graph import Graph

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
F = np.float32
RANGE = {"uint8": (0, 255), "int8": (-128, 127)}


# --- scalar transcriptions of gemmlowp / TFLite ------------------------------------------------

def _wrap32(x: int) -> int:
    return (x + 2**31) % 2**32 - 2**31


def _srdhm(a: int, b: int) -> int:
    if a == b == INT32_MIN:
        return INT32_MAX
    ab = a * b
    nudge = (1 << 30) if ab >= 0 else 1 - (1 << 30)
    v = ab + nudge
    q = abs(v) // (1 << 31)
    return q if v >= 0 else -q


def _rdbp(x: int, exponent: int) -> int:
    mask = (1 << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> exponent) + (1 if remainder > threshold else 0)


def _mbqm(x: int, m: int, shift: int, rounding: str) -> int:
    if rounding == "single":
        total = 31 - shift
        return max(INT32_MIN, min(INT32_MAX, (x * m + (1 << (total - 1))) >> total))
    left, right = max(shift, 0), max(-shift, 0)
    return _rdbp(_srdhm(_wrap32(x * (1 << left)), m), right)


def _quantize_multiplier(d: float, rounding: str = "double") -> tuple[int, int]:
    if d == 0:
        return 0, 0
    mant, exp = math.frexp(d)
    q = int(math.floor(abs(mant) * 2**31 + 0.5)) * (1 if mant > 0 else -1)
    if q == 2**31:
        q, exp = q // 2, exp + 1
    if exp < -31:
        return 0, 0
    if rounding == "single" and exp > 30:
        return INT32_MAX, 30
    return q, exp


def _roundf(v: np.float32) -> float:
    v = float(v)
    if not math.isfinite(v):
        return v
    return math.copysign(math.floor(abs(v) + 0.5), v)


def _clamp(v: int, lo: int, hi: int) -> int:
    return max(lo, min(hi, v))


def _act(activation: str, q: QuantParams, dtype: str) -> tuple[int, int]:
    lo, hi = RANGE[dtype]
    s, z = F(q.s), q.zp

    def qv(x: float) -> int:
        return z + int(_roundf(F(x) / s))

    return {
        "NONE": (lo, hi),
        "RELU": (max(lo, z), hi),
        "RELU6": (max(lo, z), min(hi, qv(6.0))),
        "RELU_N1_TO_1": (max(lo, qv(-1.0)), min(hi, qv(1.0))),
    }[activation]


def _bcast_index(out_index: tuple[int, ...], shape: tuple[int, ...]) -> tuple[int, ...]:
    tail = out_index[len(out_index) - len(shape):] if shape else ()
    return tuple(0 if d == 1 else i for i, d in zip(tail, shape))


def ref_add(x1, x2, q1, q2, qo, dtype, activation="NONE", rounding="double", sub=False):
    s1, s2, so = F(q1.s), F(q2.s), F(qo.s)
    twice = float(F(2) * max(s1, s2))
    m1, e1 = _quantize_multiplier(float(s1) / twice)
    m2, e2 = _quantize_multiplier(float(s2) / twice)
    mo, eo = _quantize_multiplier(twice / (float(so) * 2**20))
    if sub:
        m2 = -m2
    lo, hi = _act(activation, qo, dtype)
    out_shape = np.broadcast_shapes(x1.shape, x2.shape)
    y = np.zeros(out_shape, np.int64)
    for idx in np.ndindex(*out_shape):
        a = int(x1[_bcast_index(idx, x1.shape)]) - q1.zp
        b = int(x2[_bcast_index(idx, x2.shape)]) - q2.zp
        sa = _mbqm(a * (1 << 20), m1, e1, rounding)
        sb = _mbqm(b * (1 << 20), m2, e2, rounding)
        y[idx] = _clamp(_mbqm(sa + sb, mo, eo, rounding) + qo.zp, lo, hi)
    return y.astype(dtype)


def ref_mul(x1, x2, q1, q2, qo, dtype, activation="NONE", rounding="double", in_double=False):
    s1, s2, so = F(q1.s), F(q2.s), F(qo.s)
    real = float(s1) * float(s2) / float(so) if in_double else float(s1 * s2 / so)
    m, e = _quantize_multiplier(real, rounding)
    lo, hi = _act(activation, qo, dtype)
    out_shape = np.broadcast_shapes(x1.shape, x2.shape)
    y = np.zeros(out_shape, np.int64)
    for idx in np.ndindex(*out_shape):
        a = int(x1[_bcast_index(idx, x1.shape)]) - q1.zp
        b = int(x2[_bcast_index(idx, x2.shape)]) - q2.zp
        y[idx] = _clamp(_mbqm(a * b, m, e, rounding) + qo.zp, lo, hi)
    return y.astype(dtype)


def ref_concat_u8(xs, qs, qo, axis):
    parts = []
    for x, q in zip(xs, qs):
        if F(q.s) == F(qo.s) and q.zp == qo.zp:
            parts.append(x)
            continue
        scale = F(F(q.s) * (F(1) / F(qo.s)))
        bias = F(F(-q.zp) * scale)
        y = np.zeros(x.shape, np.uint8)
        for idx in np.ndindex(*x.shape):
            v = int(_roundf(F(F(F(int(x[idx])) * scale) + bias))) + qo.zp
            y[idx] = _clamp(v, 0, 255)
        parts.append(y)
    return np.concatenate(parts, axis=axis)


def ref_mean(x, axes, qi, qo, dtype, keep, rounding="double"):
    rank = x.ndim
    red = sorted({a % rank for a in axes})
    n = int(np.prod([x.shape[a] for a in red]))
    m, e = _quantize_multiplier(float(F(qi.s)) / float(F(qo.s)), rounding)
    shift = min(n.bit_length() - 1, 32, 31 + e)
    m, e = ((m << shift) // n), e - shift
    lo, hi = RANGE[dtype]
    kept = [d for d in range(rank) if d not in red]
    out = np.zeros([x.shape[d] for d in kept], np.int64)
    for oidx in np.ndindex(*out.shape):
        total = 0
        for ridx in np.ndindex(*[x.shape[d] for d in red]):
            full = [0] * rank
            for d, i in zip(kept, oidx):
                full[d] = i
            for d, i in zip(red, ridx):
                full[d] = i
            total += int(x[tuple(full)])
        out[oidx] = _clamp(_mbqm(total - qi.zp * n, m, e, rounding) + qo.zp, lo, hi)
    if keep:
        out = out.reshape([1 if d in red else x.shape[d] for d in range(rank)])
    return out.astype(dtype)


def ref_quantize(x, qo, dtype):
    lo, hi = RANGE[dtype]
    y = np.zeros(x.shape, np.int64)
    for idx in np.ndindex(*x.shape):
        r = _roundf(F(x[idx]) / F(qo.s))
        # x86 cvttss2si: out-of-range and NaN give INT32_MIN; the addition wraps like int32.
        i = int(r) if (not math.isnan(r) and -(2.0**31) <= r < 2.0**31) else INT32_MIN
        y[idx] = _clamp(_wrap32(i + qo.zp), lo, hi)
    return y.astype(dtype)


def ref_requantize(x, qi, qo, dtype, rounding="double"):
    m, e = _quantize_multiplier(float(F(qi.s)) / float(F(qo.s)), rounding)
    lo, hi = RANGE[dtype]
    y = np.zeros(x.shape, np.int64)
    for idx in np.ndindex(*x.shape):
        y[idx] = _clamp(_mbqm(int(x[idx]) - qi.zp, m, e, rounding) + qo.zp, lo, hi)
    return y.astype(dtype)


# --- helpers ----------------------------------------------------------------------------------

def _rng(*key: object) -> np.random.Generator:
    return np.random.default_rng([20240612, *(sum(map(ord, str(k))) for k in key)])


def _q(rng: np.random.Generator, dtype: str, lo: float = 1e-3, hi: float = 0.3) -> QuantParams:
    a, b = RANGE[dtype]
    return QuantParams(F(np.exp(rng.uniform(np.log(lo), np.log(hi)))),
                       int(rng.integers(a, b + 1)))


def _x(rng: np.random.Generator, shape, dtype: str, samples: int | None = None) -> np.ndarray:
    a, b = RANGE[dtype]
    full = tuple(shape) if samples is None else (samples, *shape)
    return rng.integers(a, b + 1, full).astype(dtype)


def _run(graph: Graph, inputs: list[np.ndarray], rounding: str = "double") -> np.ndarray:
    return Interpreter(graph, rounding).run(inputs).outputs[0]


def _fails(graph: Graph, *phrases: str) -> None:
    with pytest.raises(ModelError) as err:
        Interpreter(graph)
    message = str(err.value)
    assert message.startswith("operator 0 (")
    for p in phrases:
        assert p in message, message


def _random_broadcast_pair(rng: np.random.Generator) -> tuple[list[int], list[int]]:
    rank = int(rng.integers(1, 5))
    full = [int(v) for v in rng.integers(1, 5, rank)]
    k = int(rng.integers(0, rank + 1))
    other = [1 if rng.random() < 0.4 else d for d in full[rank - k:]]
    return (full, other) if rng.random() < 0.5 else (other, full)


# --- ADD / SUB / MUL --------------------------------------------------------------------------

ACTS = ("NONE", "RELU", "RELU6", "RELU_N1_TO_1")
ROUNDINGS = ("double", "single")


@pytest.mark.parametrize("case", range(24))
@pytest.mark.parametrize("opcode", ["ADD", "SUB", "MUL"])
def test_binary_matches_transcription(opcode: str, case: int) -> None:
    rng = _rng(opcode, case)
    dtype = ("uint8", "int8")[case % 2]
    rounding = ROUNDINGS[case // 2 % 2]
    activation = ACTS[case // 4 % 4]
    shape1, shape2 = _random_broadcast_pair(rng)
    out_shape = list(np.broadcast_shapes(shape1, shape2))
    q1, q2, qo = _q(rng, dtype), _q(rng, dtype), _q(rng, dtype, 0.02, 0.3)
    const = case % 3 == 0
    c2 = _x(rng, shape2, dtype) if const else None
    graph = single_op_graph(opcode, [spec(shape1, dtype, q1), spec(shape2, dtype, q2, c2)],
                            [spec(out_shape, dtype, qo)], {"activation": activation})
    x1 = _x(rng, shape1, dtype, 3)
    x2 = np.stack([c2] * 3) if const else _x(rng, shape2, dtype, 3)
    got = _run(graph, [x1] if const else [x1, x2], rounding)
    assert got.dtype == np.dtype(dtype) and got.shape == (3, *out_shape)
    for s in range(3):
        if opcode == "MUL":
            want = ref_mul(x1[s], x2[s], q1, q2, qo, dtype, activation, rounding)
        else:
            want = ref_add(x1[s], x2[s], q1, q2, qo, dtype, activation, rounding,
                           sub=opcode == "SUB")
        np.testing.assert_array_equal(got[s], want)


def test_add_golden_values() -> None:
    """Equal scales: the output is the plain sum of the offset values (hand-checked)."""
    q = QuantParams(F(0.5), 10)
    graph = single_op_graph("ADD", [spec([4], "uint8", q), spec([4], "uint8", q)],
                            [spec([4], "uint8", q)])
    x1 = np.array([[10, 11, 20, 255]], np.uint8)
    x2 = np.array([[10, 12, 0, 255]], np.uint8)
    # (0+0)+10, (1+2)+10, (10-10)+10, saturated
    np.testing.assert_array_equal(_run(graph, [x1, x2]), [[10, 13, 10, 255]])


def test_mul_multiplier_is_built_in_float32() -> None:
    """TFLite computes s1 * s2 / s_out on floats: scales where that differs from double."""
    rng = _rng("mul-float")
    xs = np.arange(256, dtype=np.int64)
    for _ in range(4000):
        q1, q2, qo = _q(rng, "uint8"), _q(rng, "uint8"), _q(rng, "uint8", 0.05, 0.3)
        a = ref_mul(xs.astype(np.uint8)[:, None], xs.astype(np.uint8)[None, :], q1, q2, qo,
                    "uint8")
        b = ref_mul(xs.astype(np.uint8)[:, None], xs.astype(np.uint8)[None, :], q1, q2, qo,
                    "uint8", in_double=True)
        if (a != b).any():
            break
    else:
        pytest.fail("no scales found where float32 and double multipliers disagree")
    graph = single_op_graph("MUL", [spec([256, 1], "uint8", q1), spec([1, 256], "uint8", q2)],
                            [spec([256, 256], "uint8", qo)])
    got = _run(graph, [xs.astype(np.uint8).reshape(1, 256, 1),
                       xs.astype(np.uint8).reshape(1, 1, 256)])[0]
    np.testing.assert_array_equal(got, a)
    assert (got != b).any()


# --- CONCATENATION ----------------------------------------------------------------------------

@pytest.mark.parametrize("case", range(16))
def test_concat_matches_transcription(case: int) -> None:
    rng = _rng("concat", case)
    dtype = ("uint8", "int8")[case % 2]
    rank = int(rng.integers(1, 5))
    base = [int(v) for v in rng.integers(1, 4, rank)]
    axis = int(rng.integers(-rank, rank))
    qo = _q(rng, dtype)
    shapes, qs, consts = [], [], []
    for k in range(int(rng.integers(1, 4))):
        s = list(base)
        s[axis] = int(rng.integers(1, 4))
        shapes.append(s)
        qs.append(qo if dtype == "int8" or rng.random() < 0.3 else _q(rng, dtype))
        consts.append(_x(rng, s, dtype) if k > 0 and rng.random() < 0.3 else None)
    out = list(base)
    out[axis] = sum(s[axis] for s in shapes)
    graph = single_op_graph("CONCATENATION",
                            [spec(s, dtype, q, c) for s, q, c in zip(shapes, qs, consts)],
                            [spec(out, dtype, qo)], {"axis": axis})
    xs = [_x(rng, s, dtype, 2) if c is None else np.stack([c] * 2)
          for s, c in zip(shapes, consts)]
    got = _run(graph, [x for x, c in zip(xs, consts) if c is None])
    for s in range(2):
        parts = [x[s] for x in xs]
        want = (ref_concat_u8(parts, qs, qo, axis) if dtype == "uint8"
                else np.concatenate(parts, axis=axis))
        np.testing.assert_array_equal(got[s], want)


def test_concat_rescales_in_float32() -> None:
    """uint8 rescaling follows float32 arithmetic, not exact rounding of the real value."""
    rng = _rng("concat-float")
    xs = np.arange(256).astype(np.uint8)
    for _ in range(4000):
        qi, qo = _q(rng, "uint8"), _q(rng, "uint8")
        want = ref_concat_u8([xs], [qi], qo, 0)
        exact = np.clip(np.floor((xs - qi.zp) * (float(qi.s) / float(qo.s)) + 0.5)
                        + qo.zp, 0, 255)
        if (want != exact).any():
            break
    else:
        pytest.fail("float32 rescaling never differed from exact rounding")
    graph = single_op_graph("CONCATENATION", [spec([256], "uint8", qi)],
                            [spec([256], "uint8", qo)], {"axis": 0})
    got = _run(graph, [xs[None]])[0]
    np.testing.assert_array_equal(got, want)
    assert (got != exact).any()


# --- PAD / PADV2 ------------------------------------------------------------------------------

@pytest.mark.parametrize("case", range(8))
def test_pad_fills_with_zero_point_or_constant(case: int) -> None:
    rng = _rng("pad", case)
    dtype = ("uint8", "int8")[case % 2]
    v2 = case >= 4
    rank = int(rng.integers(1, 6))
    shape = [int(v) for v in rng.integers(1, 4, rank)]
    pads = rng.integers(0, 3, (rank, 2)).astype(np.int32)
    out = [int(d + p.sum()) for d, p in zip(shape, pads)]
    q = _q(rng, dtype)
    value = int(_x(rng, [], dtype)) if v2 else q.zp
    ins = [spec(shape, dtype, q), spec([rank, 2], np.int32, None, pads)]
    if v2:
        ins.append(spec([], dtype, q, np.array(value)))
    graph = single_op_graph("PADV2" if v2 else "PAD", ins, [spec(out, dtype, q)])
    x = _x(rng, shape, dtype, 2)
    got = _run(graph, [x])
    want = np.full((2, *out), value, dtype)
    inner = (slice(None),) + tuple(slice(int(a), int(a) + d) for (a, _), d in zip(pads, shape))
    want[inner] = x
    np.testing.assert_array_equal(got, want)


# --- MEAN -------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", range(20))
def test_mean_matches_transcription(case: int) -> None:
    rng = _rng("mean", case)
    dtype = ("uint8", "int8")[case % 2]
    rounding = ROUNDINGS[case // 2 % 2]
    rank = int(rng.integers(1, 5))
    shape = [int(v) for v in rng.integers(1, 6, rank)]
    axes = [int(a) for a in rng.choice(rank, int(rng.integers(1, rank + 1)), replace=False)]
    axes = [a - rank if rng.random() < 0.3 else a for a in axes]
    if case % 5 == 0:
        axes = axes + axes[:1]  # a duplicate axis counts once
    keep = bool(case % 3)
    qi = _q(rng, dtype)
    qo = qi if case % 7 == 0 else _q(rng, dtype)
    red = {a % rank for a in axes}
    out = [1 if d in red else n for d, n in enumerate(shape) if keep or d not in red]
    graph = single_op_graph(
        "MEAN", [spec(shape, dtype, qi), spec([len(axes)], np.int32, None, np.array(axes))],
        [spec(out, dtype, qo)], {"keep_dims": keep})
    x = _x(rng, shape, dtype, 2)
    got = _run(graph, [x], rounding)
    for s in range(2):
        np.testing.assert_array_equal(got[s], ref_mean(x[s], axes, qi, qo, dtype, keep,
                                                      rounding))


def test_mean_clamps_the_count_shift() -> None:
    """A tiny s_in / s_out: floor(log2 n) is capped at 31 + shift (the multiplier loses bits)."""
    qi, qo = QuantParams(F(2.0**-22), 0), QuantParams(F(1.0), 0)  # shift -21: cap 10 < 11
    x = np.full((1, 2048), 127, np.int8)
    x[0, :7] = -128
    graph = single_op_graph(
        "MEAN", [spec([2048], "int8", qi), spec([1], np.int32, None, np.array([0]))],
        [spec([], "int8", qo)])
    got = _run(graph, [x])
    assert got.shape == (1,)
    assert got[0] == ref_mean(x[0], [0], qi, qo, "int8", False)


def test_mean_golden_values() -> None:
    """Same scale, zero point 0: multiplier 2^30 with shift 0 after the count fold, so the
    halving happens in SaturatingRoundingDoublingHighMul, whose ties go toward +infinity."""
    q = QuantParams(F(0.1), 0)
    graph = single_op_graph(
        "MEAN", [spec([2, 2], "int8", q), spec([1], np.int32, None, np.array([1]))],
        [spec([2], "int8", q)])
    x = np.array([[[1, 2], [-1, -2]]], np.int8)  # means 1.5 and -1.5
    np.testing.assert_array_equal(_run(graph, [x]), [[2, -1]])


# --- RESHAPE ----------------------------------------------------------------------------------

def test_reshape_copies_with_output_shape() -> None:
    q = QuantParams(F(0.1), 3)
    graph = single_op_graph(
        "RESHAPE", [spec([2, 3, 4], "int8", q), spec([2], np.int32, None, np.array([-1, 4]))],
        [spec([6, 4], "int8", q)])
    x = _x(_rng("reshape"), [2, 3, 4], "int8", 3)
    got = _run(graph, [x])
    np.testing.assert_array_equal(got, x.reshape(3, 6, 4))
    graph = single_op_graph("RESHAPE", [spec([2, 3, 4], "uint8", q)], [spec([24], "uint8", q)],
                            {"new_shape": (24,)})
    xu = x.view(np.uint8)
    np.testing.assert_array_equal(_run(graph, [xu]), xu.reshape(3, 24))


# --- QUANTIZE / DEQUANTIZE --------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["uint8", "int8"])
def test_quantize_float_rounding_and_overflow(dtype: str) -> None:
    """Ties away from zero, 0.49999997 -> 0, and x86's INT32_MIN for out-of-range values."""
    rng = _rng("quantize", dtype)
    special = np.array([0.5, -0.5, 1.5, -1.5, 2.5, 0.49999997, -0.49999997, 1e10, -1e10,
                        np.inf, -np.inf, np.nan, 2147483520.0, -2147483648.0], np.float32)
    for q in (QuantParams(F(1.0), 5), QuantParams(F(1.0), -5 if dtype == "int8" else 0),
              _q(rng, dtype)):
        x = np.concatenate([special, rng.standard_normal(50).astype(np.float32) * 40 *
                            np.float32(q.s)])
        graph = single_op_graph("QUANTIZE", [spec([x.size], np.float32)],
                                [spec([x.size], dtype, q)])
        got = _run(graph, [x[None]])[0]
        np.testing.assert_array_equal(got, ref_quantize(x, q, dtype))
    assert ref_quantize(np.array([0.5, 2.5, 0.49999997, 1e10], np.float32),
                        QuantParams(F(1.0), 0), "int8").tolist() == [1, 3, 0, -128]


@pytest.mark.parametrize("pair", list(itertools.product(["uint8", "int8"], repeat=2)))
@pytest.mark.parametrize("rounding", ROUNDINGS)
def test_requantize_matches_transcription(pair: tuple[str, str], rounding: str) -> None:
    di, do = pair
    rng = _rng("requantize", di, do, rounding)
    x = np.arange(*((0, 256) if di == "uint8" else (-128, 128))).astype(di)
    for _ in range(6):
        qi, qo = _q(rng, di, 1e-3, 1.0), _q(rng, do, 1e-3, 1.0)
        graph = single_op_graph("QUANTIZE", [spec([x.size], di, qi)], [spec([x.size], do, qo)])
        got = _run(graph, [x[None]], rounding)[0]
        np.testing.assert_array_equal(got, ref_requantize(x, qi, qo, do, rounding))


def test_dequantize_per_tensor_and_per_axis() -> None:
    rng = _rng("dequantize")
    x = _x(rng, [3, 4], "int8", 2)
    q = QuantParams(F(0.0123), -7)
    graph = single_op_graph("DEQUANTIZE", [spec([3, 4], "int8", q)], [spec([3, 4], np.float32)])
    got = _run(graph, [x])
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, F(0.0123) * (x.astype(np.float32) + F(7)))
    scales = np.array([0.5, 0.25, 0.125, 3.0], np.float32)
    w = _x(rng, [3, 4], "int8")
    qa = QuantParams(scales, np.zeros(4, np.int64), axis=1)
    graph = single_op_graph("DEQUANTIZE", [spec([3, 4], "int8", qa, w)],
                            [spec([3, 4], np.float32)])
    graph.outputs = [1]
    got = Interpreter(graph).run([]).outputs[0]
    np.testing.assert_array_equal(got[0], w.astype(np.float32) * scales[None, :])


# --- error cases ------------------------------------------------------------------------------

Q8 = QuantParams(F(0.1), 128)
QI = QuantParams(F(0.1), 0)


def test_binary_errors() -> None:
    _fails(single_op_graph("ADD", [spec([3], "uint8", Q8), spec([3], "int8", QI)],
                           [spec([3], "uint8", Q8)]), "differ in dtype")
    _fails(single_op_graph("MUL", [spec([3], "uint8", Q8), spec([4], "uint8", Q8)],
                           [spec([3], "uint8", Q8)]), "do not broadcast")
    _fails(single_op_graph("ADD", [spec([3], "uint8", Q8), spec([1], "uint8", Q8)],
                           [spec([1, 3], "uint8", Q8)]), "broadcast to [3]")
    _fails(single_op_graph("ADD", [spec([3], "uint8", Q8), spec([3], "uint8", None)],
                           [spec([3], "uint8", Q8)]), "per-tensor quantization")
    _fails(single_op_graph("ADD", [spec([3], "int8", QuantParams([0.1, 0.2], [0, 0])),
                                   spec([3], "int8", QI)], [spec([3], "int8", QI)]),
           "per-tensor")
    _fails(single_op_graph("ADD", [spec([3], "int16", QI), spec([3], "int16", QI)],
                           [spec([3], "int16", QI)]), "uint8 or int8")
    tiny = QuantParams(F(1e-8), 0)
    _fails(single_op_graph("ADD", [spec([3], "int8", QI), spec([3], "int8", QI)],
                           [spec([3], "int8", tiny)]), "too small")
    _fails(single_op_graph("ADD", [spec([3], "int8", QI), spec([3], "int8", QI)],
                           [spec([3], "int8", QI)], {"activation": "TANH"}),
           "fused activation TANH")


def test_concat_errors() -> None:
    other = QuantParams(F(0.2), 0)
    _fails(single_op_graph("CONCATENATION", [spec([2], "int8", QI), spec([2], "int8", other)],
                           [spec([4], "int8", QI)], {"axis": 0}), "int8", "cannot rescale")
    _fails(single_op_graph("CONCATENATION", [spec([2], "uint8", Q8), spec([2], "uint8", Q8)],
                           [spec([4], "uint8", Q8)], {"axis": 0, "activation": "RELU"}),
           "fused activations")
    _fails(single_op_graph("CONCATENATION", [spec([2], "uint8", Q8)], [spec([2], "uint8", Q8)],
                           {"axis": 1}), "axis 1 out of range")
    _fails(single_op_graph("CONCATENATION", [spec([2, 3], "uint8", Q8),
                                             spec([2, 4], "uint8", Q8)],
                           [spec([4, 3], "uint8", Q8)], {"axis": 0}), "off axis 0")
    _fails(single_op_graph("CONCATENATION", [spec([2], "uint8", Q8), spec([2], "uint8", Q8)],
                           [spec([5], "uint8", Q8)], {"axis": 0}), "sum to 4")


def test_pad_errors() -> None:
    pads = np.array([[1, 1]], np.int32)
    _fails(single_op_graph("PAD", [spec([2], "int8", QI), spec([1, 2], np.int32)],
                           [spec([4], "int8", QI)]), "paddings", "constant")
    _fails(single_op_graph("PAD", [spec([2], "int8", QI),
                                   spec([1, 2], np.int32, None, -pads)],
                           [spec([0], "int8", QI)]), "non-negative")
    _fails(single_op_graph("PAD", [spec([2], "int8", QI), spec([1, 2], np.int32, None, pads)],
                           [spec([5], "int8", QI)]), "gives [4]")
    _fails(single_op_graph("PAD", [spec([2], "int8", QI), spec([2, 2], np.int32, None,
                                                               np.zeros((2, 2)))],
                           [spec([2], "int8", QI)]), "must be [1, 2]")
    _fails(single_op_graph("PADV2", [spec([2], "int8", QI), spec([1, 2], np.int32, None, pads),
                                     spec([], "int8", QuantParams(F(0.3), 0), np.array(1))],
                           [spec([4], "int8", QI)]), "quantized like the output")
    six = [1] * 6
    _fails(single_op_graph("PAD", [spec(six, "int8", QI),
                                   spec([6, 2], np.int32, None, np.zeros((6, 2)))],
                           [spec(six, "int8", QI)]), "rank 6")


def test_mean_errors() -> None:
    _fails(single_op_graph("MEAN", [spec([2, 3], "int8", QI), spec([1], np.int32)],
                           [spec([2], "int8", QI)]), "axes input must be a constant")
    _fails(single_op_graph("MEAN", [spec([2, 3], "int8", QI),
                                    spec([1], np.int32, None, np.array([2]))],
                           [spec([2], "int8", QI)]), "out of range")
    _fails(single_op_graph("MEAN", [spec([2, 3], "int8", QI),
                                    spec([1], np.int32, None, np.array([1]))],
                           [spec([2, 1], "int8", QI)]), "gives [2]")
    _fails(single_op_graph("MEAN", [spec([2, 3], "int8", QI),
                                    spec([1], np.int64, None, np.array([1]))],
                           [spec([2], "int8", QI)]), "int32")


def test_reshape_quantize_dequantize_errors() -> None:
    _fails(single_op_graph("RESHAPE", [spec([2, 3], "int8", QI)], [spec([5], "int8", QI)]),
           "6 elements")
    _fails(single_op_graph("RESHAPE", [spec([2, 3], "int8", QI)], [spec([6], "int8", QI)],
                           {"new_shape": (3, 2)}), "new shape [3, 2]")
    _fails(single_op_graph("RESHAPE", [spec([2, 3], "int8", QI)], [spec([6], "uint8", Q8)]),
           "differ in dtype")
    _fails(single_op_graph("QUANTIZE", [spec([3], np.float32)],
                           [spec([3], "int8", QuantParams([0.1, 0.2, 0.3], [0, 0, 0]))]),
           "per-tensor")
    _fails(single_op_graph("QUANTIZE", [spec([3], np.float16)], [spec([3], "int8", QI)]),
           "float32, uint8 or int8")
    _fails(single_op_graph("QUANTIZE", [spec([3], np.float32)], [spec([3], "int8", None)]),
           "per-tensor quantization")
    _fails(single_op_graph("DEQUANTIZE", [spec([3], "int8", QI)], [spec([3], "int8", QI)]),
           "float32")
    _fails(single_op_graph("DEQUANTIZE", [spec([3], "int8", None)], [spec([3], np.float32)]),
           "no quantization")
