"""Random single-op models, bit for bit against LiteRT's reference kernels (BUILTIN_REF).

ADD, SUB, MUL, CONCATENATION, PAD, PADV2, MEAN, RESHAPE, QUANTIZE (float -> int and int -> int)
and DEQUANTIZE, uint8 and int8, with random shapes, broadcasts, constant operands, scales, zero
points and fused activations. Each model goes through ``write_tflite`` and ``load_tflite``.
Targeted cases pin the float32/double choices: they are picked so that the other choice would
change outputs. Every case has its own seeded generator, so a failing id reproduces alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest

from peers import random_activation_quant, random_input, run_litert, single_op_graph, spec
from qlane.sim import Graph, Interpreter, QuantParams, load_tflite
from qlane.sim.fixedpoint import mul_by_quantized_multiplier, quantize_multiplier
from qlane.sim.writer import write_tflite

SEED = 20240613
SAMPLES = 3
ACTIVATIONS = ("NONE", "RELU", "RELU6", "RELU_N1_TO_1")
DTYPES = (np.dtype(np.uint8), np.dtype(np.int8))
F = np.float32


@dataclass
class Case:
    """A random single-op model and its inputs."""

    graph: Graph
    inputs: list[np.ndarray]
    label: str


def _rng(suite: str, case: int) -> np.random.Generator:
    return np.random.default_rng([SEED, sum(map(ord, suite)), case])


def _dtype(case: int) -> np.dtype:
    return DTYPES[case % 2]


def _shape(rng: np.random.Generator, max_rank: int = 4, max_dim: int = 6) -> list[int]:
    return [int(d) for d in rng.integers(1, max_dim + 1, int(rng.integers(1, max_rank + 1)))]


def _near(rng: np.random.Generator, scale: float, lo: float, hi: float) -> F:
    return F(scale * np.exp(rng.uniform(np.log(lo), np.log(hi))))


def _zero_point(rng: np.random.Generator, dtype: np.dtype, margin: int = 0) -> int:
    info = np.iinfo(dtype)
    return int(rng.integers(info.min + margin, info.max - margin + 1))


def _broadcast_pair(rng: np.random.Generator) -> tuple[list[int], list[int]]:
    full = _shape(rng)
    k = int(rng.integers(0, len(full) + 1))
    other = [1 if rng.random() < 0.4 else d for d in full[len(full) - k:]]
    return (full, other) if rng.random() < 0.5 else (other, full)


# --- case makers ------------------------------------------------------------------------------

def _binary_case(opcode: str, case: int) -> Case:
    rng = _rng(opcode, case)
    dtype = _dtype(case)
    shape1, shape2 = _broadcast_pair(rng)
    q1, q2 = random_activation_quant(rng, dtype), random_activation_quant(rng, dtype)
    activation = ACTIVATIONS[int(rng.integers(0, 4))]
    if opcode == "MUL":
        ratio = (0.3, 1.0) if rng.random() < 0.1 else (40.0, 300.0)  # some multipliers > 1
        scale = _near(rng, float(q1.s) * float(q2.s), *ratio)
    else:
        scale = _near(rng, max(float(q1.s), float(q2.s)), 1.0, 3.0)
    if activation == "RELU6":
        scale = min(scale, F(0.1))
    elif activation == "RELU_N1_TO_1":
        scale = min(scale, F(0.02))
    qo = QuantParams(scale, _zero_point(rng, dtype, 40))
    const = rng.random() < 0.3
    # A scalar input cannot be fed through the peer helper's set_tensor; constants can be.
    shape1 = shape1 or [1]
    if not shape2 and not const:
        shape2 = [1]
    c2 = random_input(rng, shape2, dtype, 1)[0] if const else None
    out = list(np.broadcast_shapes(shape1, shape2))
    graph = single_op_graph(opcode, [spec(shape1, dtype, q1, name="x1"),
                                     spec(shape2, dtype, q2, c2, name="x2")],
                            [spec(out, dtype, qo, name="y")], {"activation": activation})
    inputs = [random_input(rng, shape1, dtype, SAMPLES)]
    if not const:
        inputs.append(random_input(rng, shape2, dtype, SAMPLES))
    label = f"{opcode} {dtype.name} {shape1} {shape2}{' const' if const else ''} {activation}"
    return Case(graph, inputs, label)


def _concat_case(case: int) -> Case:
    rng = _rng("CONCATENATION", case)
    dtype = _dtype(case)
    base = _shape(rng, 4, 4)
    axis = int(rng.integers(-len(base), len(base)))
    qo = random_activation_quant(rng, dtype)
    shapes, specs, inputs = [], [], []
    for k in range(int(rng.integers(1, 4))):
        s = list(base)
        s[axis] = int(rng.integers(1, 4))
        shapes.append(s)
        same = dtype == np.int8 or rng.random() < 0.3
        q = qo if same else QuantParams(_near(rng, float(qo.s), 0.25, 4.0),
                                        _zero_point(rng, dtype))
        const = k > 0 and rng.random() < 0.25
        data = random_input(rng, s, dtype, 1)[0] if const else None
        specs.append(spec(s, dtype, q, data, name=f"x{k}"))
        if not const:
            inputs.append(random_input(rng, s, dtype, SAMPLES))
    out = list(base)
    out[axis] = sum(s[axis] for s in shapes)
    graph = single_op_graph("CONCATENATION", specs, [spec(out, dtype, qo, name="y")],
                            {"axis": axis})
    return Case(graph, inputs, f"CONCATENATION {dtype.name} {shapes} axis={axis}")


def _pad_case(opcode: str, case: int) -> Case:
    rng = _rng(opcode, case)
    dtype = _dtype(case)
    shape = _shape(rng, 5, 4)
    pads = rng.integers(0, 3, (len(shape), 2)).astype(np.int32)
    if rng.random() < 0.3:
        pads[:, 1] = 0
    q = random_activation_quant(rng, dtype)
    ins = [spec(shape, dtype, q, name="x"),
           spec([len(shape), 2], np.int32, None, pads, name="paddings")]
    if opcode == "PADV2":
        ins.append(spec([], dtype, q, random_input(rng, [], dtype, 1)[0], name="value"))
    out = [int(d + p.sum()) for d, p in zip(shape, pads)]
    # PAD copies the data as is: an output quantized differently gets no requantization.
    qo = q if opcode == "PADV2" or case % 4 < 3 else random_activation_quant(rng, dtype)
    graph = single_op_graph(opcode, ins, [spec(out, dtype, qo, name="y")])
    inputs = [random_input(rng, shape, dtype, SAMPLES)]
    return Case(graph, inputs, f"{opcode} {dtype.name} {shape} {pads.tolist()}")


def _mean_case(case: int) -> Case:
    rng = _rng("MEAN", case)
    dtype = _dtype(case)
    if case % 4 == 1:  # the 4-D [1, 2] keep_dims form older kernels special-cased
        shape = [int(d) for d in rng.integers(1, 8, 4)]
        axes, keep = ([1, 2] if rng.random() < 0.5 else [2, 1]), True
    else:
        shape = _shape(rng, 4, 7)
        rank = len(shape)
        axes = [int(a) for a in rng.choice(rank, int(rng.integers(1, rank + 1)), replace=False)]
        axes = [a - rank if rng.random() < 0.3 else a for a in axes]
        keep = bool(rng.random() < 0.5)
    qi = random_activation_quant(rng, dtype)
    qo = qi if case % 5 == 0 else QuantParams(_near(rng, float(qi.s), 0.3, 3.0),
                                              _zero_point(rng, dtype, 20))
    red = {a % len(shape) for a in axes}
    out = [1 if d in red else n for d, n in enumerate(shape) if keep or d not in red]
    graph = single_op_graph(
        "MEAN", [spec(shape, dtype, qi, name="x"),
                 spec([len(axes)], np.int32, None, np.array(axes), name="axes")],
        [spec(out, dtype, qo, name="y")], {"keep_dims": keep})
    inputs = [random_input(rng, shape, dtype, SAMPLES)]
    return Case(graph, inputs, f"MEAN {dtype.name} {shape} axes={axes} keep={keep}")


def _requantize_case(case: int) -> Case:
    rng = _rng("REQUANTIZE", case)
    di, do = DTYPES[case % 2], DTYPES[case // 2 % 2]
    shape = _shape(rng, 3, 8)
    qi = random_activation_quant(rng, di)
    if case % 8 in (2, 5):  # uint8 <-> int8 with the zero point shifted by 128
        qo = QuantParams(qi.s, qi.zp + (-128 if do == np.int8 else 128) * (di != do))
    else:
        qo = QuantParams(_near(rng, float(qi.s), 0.7, 4.0), _zero_point(rng, do, 40))
    graph = single_op_graph("QUANTIZE", [spec(shape, di, qi, name="x")],
                            [spec(shape, do, qo, name="y")])
    return Case(graph, [random_input(rng, shape, di, SAMPLES)],
                f"QUANTIZE {di.name}->{do.name} {shape}")


def _quantize_case(case: int) -> Case:
    rng = _rng("QUANTIZE", case)
    dtype = _dtype(case)
    shape = _shape(rng, 3, 8)
    q = random_activation_quant(rng, dtype)
    x = (rng.standard_normal((SAMPLES, *shape)) * 60 * float(q.s)).astype(np.float32)
    flat = x.reshape(-1)
    ties = (np.round(flat[::3] / q.s) + 0.5) * np.float64(q.s)  # near half-way points
    flat[::3] = ties.astype(np.float32)
    graph = single_op_graph("QUANTIZE", [spec(shape, np.float32, name="x")],
                            [spec(shape, dtype, q, name="y")])
    return Case(graph, [x], f"QUANTIZE float32->{dtype.name} {shape}")


def _dequantize_case(case: int) -> Case:
    rng = _rng("DEQUANTIZE", case)
    dtype = _dtype(case)
    shape = _shape(rng, 3, 8)
    q = random_activation_quant(rng, dtype, 1e-4, 10.0)
    graph = single_op_graph("DEQUANTIZE", [spec(shape, dtype, q, name="x")],
                            [spec(shape, np.float32, name="y")])
    return Case(graph, [random_input(rng, shape, dtype, SAMPLES)],
                f"DEQUANTIZE {dtype.name} {shape}")


def _reshape_case(case: int) -> Case:
    rng = _rng("RESHAPE", case)
    dtype = _dtype(case)
    shape = _shape(rng, 4, 5)
    size = int(np.prod(shape))
    perm = rng.permutation([p for p in range(1, size + 1) if size % p == 0])
    out = [int(perm[0]), size // int(perm[0])]
    q = random_activation_quant(rng, dtype)
    new = list(out)
    new[int(rng.integers(0, 2))] = -1
    if case % 3 == 0:
        graph = single_op_graph("RESHAPE", [spec(shape, dtype, q, name="x")],
                                [spec(out, dtype, q, name="y")], {"new_shape": tuple(out)})
    else:
        graph = single_op_graph(
            "RESHAPE", [spec(shape, dtype, q, name="x"),
                        spec([2], np.int32, None, np.array(new), name="shape")],
            [spec(out, dtype, q, name="y")])
    return Case(graph, [random_input(rng, shape, dtype, SAMPLES)],
                f"RESHAPE {dtype.name} {shape}->{out}")


# --- targeted cases: the other float/double choice would change these outputs ----------------

def _grid(dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    info = np.iinfo(dtype)
    v = np.arange(info.min, info.max + 1)
    return v.astype(dtype).reshape(1, -1, 1), v.astype(dtype).reshape(1, 1, -1)


def _search(suite: str, case: int, accept: Callable[[np.random.Generator], Case | None]) -> Case:
    rng = _rng(suite, case)
    for _ in range(20000):
        found = accept(rng)
        if found is not None:
            return found
    raise AssertionError(f"{suite}: no discriminating parameters found")


def _mul_float_case(case: int) -> Case:
    """MUL whose float32-built multiplier differs, in outputs, from the double one."""
    dtype = _dtype(case)
    a, b = _grid(dtype)

    def accept(rng: np.random.Generator) -> Case | None:
        q1, q2 = random_activation_quant(rng, dtype), random_activation_quant(rng, dtype)
        qo = QuantParams(_near(rng, float(q1.s) * float(q2.s), 40.0, 200.0),
                         _zero_point(rng, dtype, 100))
        m_double = quantize_multiplier(float(q1.s) * float(q2.s) / float(qo.s))
        m_float = quantize_multiplier(float(F(q1.s) * F(q2.s) / F(qo.s)))
        if m_double == m_float:
            return None
        info = np.iinfo(dtype)
        prod = (a.astype(np.int64) - q1.zp) * (b.astype(np.int64) - q2.zp)
        outs = [np.clip(mul_by_quantized_multiplier(prod, *m) + qo.zp, info.min, info.max)
                for m in (m_double, m_float)]
        if (outs[0] == outs[1]).all():
            return None
        n = info.max - info.min + 1
        graph = single_op_graph("MUL", [spec([n, 1], dtype, q1), spec([1, n], dtype, q2)],
                                [spec([n, n], dtype, qo)])
        return Case(graph, [a, b], f"MUL float32 multiplier {dtype.name} {q1} {q2} {qo}")

    return _search("MUL-float", case, accept)


def _add_double_case(case: int) -> Case:
    """ADD whose double-built multipliers differ, in outputs, from float32-built ones."""
    dtype = _dtype(case)
    a, b = _grid(dtype)
    info = np.iinfo(dtype)

    def add(q1: QuantParams, q2: QuantParams, qo: QuantParams, in_float: bool) -> np.ndarray:
        s1, s2, so = F(q1.s), F(q2.s), F(qo.s)
        twice = F(2) * max(s1, s2)
        if in_float:
            reals = [F(s1 / twice), F(s2 / twice), F(twice / (F(1 << 20) * so))]
        else:
            reals = [float(s1) / float(twice), float(s2) / float(twice),
                     float(twice) / (float(so) * 2**20)]
        (m1, e1), (m2, e2), (mo, eo) = (quantize_multiplier(float(r)) for r in reals)
        x1 = mul_by_quantized_multiplier((a.astype(np.int64) - q1.zp) << 20, m1, e1)
        x2 = mul_by_quantized_multiplier((b.astype(np.int64) - q2.zp) << 20, m2, e2)
        return np.clip(mul_by_quantized_multiplier(x1 + x2, mo, eo) + qo.zp, info.min,
                       info.max)

    def accept(rng: np.random.Generator) -> Case | None:
        q1, q2 = random_activation_quant(rng, dtype), random_activation_quant(rng, dtype)
        qo = QuantParams(_near(rng, max(float(q1.s), float(q2.s)), 0.7, 2.0),
                         _zero_point(rng, dtype, 60))
        if (add(q1, q2, qo, False) == add(q1, q2, qo, True)).all():
            return None
        n = info.max - info.min + 1
        graph = single_op_graph("ADD", [spec([n, 1], dtype, q1), spec([1, n], dtype, q2)],
                                [spec([n, n], dtype, qo)])
        return Case(graph, [a, b], f"ADD double multipliers {dtype.name} {q1} {q2} {qo}")

    return _search("ADD-double", case, accept)


def _concat_float_case(case: int) -> Case:
    """uint8 CONCATENATION whose float32 rescaling differs from exact rounding."""
    values = np.arange(256)

    def accept(rng: np.random.Generator) -> Case | None:
        qo = random_activation_quant(rng, np.uint8)
        qi = QuantParams(_near(rng, float(qo.s), 0.25, 4.0), _zero_point(rng, np.uint8))
        scale = F(F(qi.s) * (F(1) / F(qo.s)))
        bias = F(F(-qi.zp) * scale)
        v = (values.astype(F) * scale + bias).astype(F).astype(np.float64)
        f32 = np.sign(v) * np.floor(np.abs(v) + 0.5)
        exact = np.floor((values - qi.zp) * (float(qi.s) / float(qo.s)) + 0.5)
        keep = (np.clip(f32 + qo.zp, 0, 255) != np.clip(exact + qo.zp, 0, 255)).any()
        if not keep:
            return None
        graph = single_op_graph("CONCATENATION", [spec([256], np.uint8, qo),
                                                  spec([256], np.uint8, qi)],
                                [spec([512], np.uint8, qo)], {"axis": 0})
        x = values.astype(np.uint8)[None]
        return Case(graph, [x, x], f"CONCATENATION float32 rescale {qi} -> {qo}")

    return _search("CONCAT-float", case, accept)


def _quantize_special_case(case: int) -> Case:
    """Exact ties, 0.49999997, and values beyond int32 (x86 converts them to INT32_MIN)."""
    dtype = _dtype(case)
    rng = _rng("QUANTIZE-special", case)
    zp = (5, -5, 0, _zero_point(rng, dtype))[case // 2 % 4]
    zp = max(zp, 0) if dtype == np.uint8 else zp
    q = QuantParams(F(1.0) if case < 6 else random_activation_quant(rng, dtype).s, zp)
    special = np.array([0.5, -0.5, 1.5, -1.5, 2.5, -2.5, 0.49999997, -0.49999997, 1e10, -1e10,
                        np.inf, -np.inf, 3e9, -3e9, 2147483520.0, -2147483648.0], np.float32)
    x = (special * F(q.s)).astype(np.float32)[None]
    graph = single_op_graph("QUANTIZE", [spec([special.size], np.float32)],
                            [spec([special.size], dtype, q)])
    return Case(graph, [x], f"QUANTIZE specials {dtype.name} {q}")


SUITES: dict[str, tuple[int, Callable[[int], Case]]] = {
    "add": (40, lambda i: _binary_case("ADD", i)),
    "sub": (16, lambda i: _binary_case("SUB", i)),
    "mul": (40, lambda i: _binary_case("MUL", i)),
    "concat": (40, _concat_case),
    "pad": (24, lambda i: _pad_case("PAD", i)),
    "padv2": (16, lambda i: _pad_case("PADV2", i)),
    "mean": (48, _mean_case),
    "requantize": (32, _requantize_case),
    "quantize": (24, _quantize_case),
    "dequantize": (24, _dequantize_case),
    "reshape": (16, _reshape_case),
    "mul_float32_multiplier": (4, _mul_float_case),
    "add_double_multipliers": (4, _add_double_case),
    "concat_float32_rescale": (4, _concat_float_case),
    "quantize_specials": (8, _quantize_special_case),
}
CASES = [(suite, i) for suite, (n, _) in SUITES.items() for i in range(n)]


@pytest.mark.parametrize("suite,index", CASES, ids=[f"{s}-{i:03d}" for s, i in CASES])
def test_matches_litert(suite: str, index: int) -> None:
    case = SUITES[suite][1](index)
    data = write_tflite(case.graph)
    outputs = Interpreter(load_tflite(data)).run(case.inputs).outputs
    wants = run_litert(data, case.inputs)
    assert len(outputs) == len(wants) == 1
    got, want = outputs[0], wants[0]
    assert got.dtype == want.dtype and got.shape == want.shape, (case.label, got.shape,
                                                                 want.shape)
    if got.dtype == np.float32:
        diff = np.flatnonzero(got.view(np.int32) != want.view(np.int32))
    else:
        diff = np.flatnonzero(got.astype(np.int64) != want.astype(np.int64))
    assert diff.size == 0, (
        f"{case.label}: {diff.size} of {want.size} outputs differ from LiteRT; first at flat "
        f"index {diff[0]}: got {got.flat[diff[0]]}, want {want.flat[diff[0]]}")


@pytest.mark.parametrize("suite", ["add", "sub", "mul", "concat", "mean", "requantize"])
def test_random_cases_exercise_the_arithmetic(suite: str) -> None:
    """Most cases give varied outputs that rarely saturate (else agreement would prove little)."""
    n, make = SUITES[suite]
    varied, saturated = 0, []
    for i in range(n):
        case = make(i)
        got = Interpreter(case.graph).run(case.inputs).outputs[0]
        info = np.iinfo(got.dtype)
        varied += np.unique(got).size > 1
        saturated.append(np.mean((got == info.min) | (got == info.max)))
    assert varied >= 0.75 * n, f"{suite}: only {varied} of {n} cases have varied outputs"
    assert np.mean(saturated) < 0.25, f"{suite}: {np.mean(saturated):.0%} of outputs saturate"
