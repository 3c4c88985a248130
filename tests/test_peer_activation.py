"""Live peers: random single-op models, simulated vs LiteRT's reference kernels, bit for bit.

Every case writes a one-operator ``.tflite`` (``write_tflite``), runs it on LiteRT with
``OpResolverType.BUILTIN_REF`` and on qlane's interpreter, and compares every output. Inputs of
the elementwise ops contain all 256 values of the type, so a case checks the whole table.
TFLite Micro is a second peer where it runs the same reference code (int8 SOFTMAX, RELU,
HARD_SWISH) and checks the gemmlowp logistic / tanh that its int8 kernels use.
"""

from __future__ import annotations

import math
import signal
import subprocess
import sys
import textwrap
import zlib

import numpy as np
import pytest

from peers import run_litert, run_tflm, single_op_graph, spec, write_tflite
from qlane.sim import Graph, Interpreter, ModelError, QuantParams
from qlane.sim.fixedpoint import mul_by_quantized_multiplier, rounding_divide_by_pot
from qlane.sim.ops.activation import populate_lut
from qlane.sim.transcendental import FixedPoint, calculate_input_radius, logistic, tanh

CASES = 50
DTYPES = [np.uint8, np.int8]


def _rng(*key: object) -> np.random.Generator:
    return np.random.default_rng([zlib.crc32(str(k).encode()) for k in key])


def _quant(rng: np.random.Generator, dtype, lo: float = 1e-3, hi: float = 1.0) -> QuantParams:
    info = np.iinfo(dtype)
    scale = np.float32(np.exp(rng.uniform(np.log(lo), np.log(hi))))
    return QuantParams(scale, int(rng.integers(info.min, info.max + 1)))


def _elementwise_input(rng: np.random.Generator, dtype) -> np.ndarray:
    """``[S, *shape]`` of random rank 1-4 holding every value of ``dtype`` at least once."""
    shape = tuple(int(d) for d in rng.integers(1, 9, int(rng.integers(1, 5))))
    size = int(np.prod(shape))
    samples = -(-256 // size) + int(rng.integers(0, 2))
    info = np.iinfo(dtype)
    flat = rng.integers(info.min, info.max + 1, samples * size)
    flat[:256] = rng.permutation(np.arange(info.min, info.max + 1))
    return flat.astype(dtype).reshape(samples, *shape)


def _graph(opcode: str, dtype, in_q: QuantParams, out_q: QuantParams, shape: tuple[int, ...],
           options: dict | None = None) -> Graph:
    return single_op_graph(opcode, [spec(shape, dtype, in_q)], [spec(shape, dtype, out_q)],
                           options)


def _mismatch(graph: Graph, x: np.ndarray, peer=run_litert) -> str | None:
    """None when qlane and the peer agree on every output element, else a description."""
    want = peer(write_tflite(graph), [x])[0]
    got = Interpreter(graph).run([x]).outputs[0]
    assert got.dtype == want.dtype and got.shape == want.shape
    bad = np.flatnonzero(got != want)
    if bad.size == 0:
        return None
    op = graph.operators[0]
    i, o = graph.tensors[op.inputs[0]], graph.tensors[op.outputs[0]]
    k = bad[0]
    return (f"{op.opcode} {np.dtype(i.dtype).name} in {i.quant} out {o.quant} {op.options} "
            f"shape {list(i.shape)}: {bad.size} of {want.size} differ, e.g. x={x.flat[k]} "
            f"got {got.flat[k]} want {want.flat[k]}")


def _check_all(failures: list[str | None]) -> None:
    bad = [f for f in failures if f is not None]
    assert not bad, f"{len(bad)} case(s) differ:\n" + "\n".join(bad[:10])


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_logistic_matches_litert(dtype) -> None:
    rng = _rng("LOGISTIC", dtype)
    info = np.iinfo(dtype)
    failures = []
    for k in range(CASES):
        x = _elementwise_input(rng, dtype)
        out_zp = info.min if k % 2 else int(rng.integers(info.min, info.max + 1))
        graph = _graph("LOGISTIC", dtype, _quant(rng, dtype, 1e-3, 2.0),
                       QuantParams(1 / 256, out_zp), x.shape[1:])
        failures.append(_mismatch(graph, x))
    _check_all(failures)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_tanh_matches_litert(dtype) -> None:
    rng = _rng("TANH", dtype)
    conventional = QuantParams(1 / 128, 128 if dtype == np.uint8 else 0)
    failures = []
    for k in range(CASES):
        x = _elementwise_input(rng, dtype)
        out_q = conventional if k % 2 else _quant(rng, dtype, 1e-3, 0.05)
        graph = _graph("TANH", dtype, _quant(rng, dtype, 1e-3, 2.0), out_q, x.shape[1:])
        failures.append(_mismatch(graph, x))
    _check_all(failures)


def test_tanh_table_uses_fdlibm_tanhf_like_the_reference() -> None:
    """A case where the table entry sits on a rounding boundary that glibc's (fdlibm) tanhf
    and a correctly rounded tanh resolve differently: -88.5 steps of the output scale."""
    in_q, out_q = QuantParams(np.float32(0.00604457129), 102), QuantParams(0.00978774019, -13)
    x = np.arange(-128, 128).astype(np.int8)[None, None]
    graph = _graph("TANH", np.int8, in_q, out_q, (1, 256))
    assert _mismatch(graph, x) is None
    got = Interpreter(graph).run([x]).outputs[0]
    assert got[0, 0, -116 + 128] == -102
    correctly_rounded = populate_lut(
        lambda v: np.tanh(v.astype(np.float64)).astype(np.float32), in_q, out_q, np.int8)
    assert correctly_rounded[-116 + 128] == -101


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_hard_swish_matches_litert(dtype) -> None:
    rng = _rng("HARD_SWISH", dtype)
    failures, refused = [], 0
    for _ in range(CASES):
        x = _elementwise_input(rng, dtype)
        in_q, out_q = _quant(rng, dtype, 1e-3, 1.0), _quant(rng, dtype, 1e-3, 1.0)
        graph = _graph("HARD_SWISH", dtype, in_q, out_q, x.shape[1:])
        if float(in_q.s) / (128 * float(out_q.s)) >= 1:
            # Both refuse: the reference needs a right-shifting output multiplier.
            with pytest.raises(ModelError, match="right shift"):
                Interpreter(graph)
            with pytest.raises(Exception, match="output_multiplier_exponent"):
                run_litert(write_tflite(graph), [x])
            refused += 1
            continue
        failures.append(_mismatch(graph, x))
    _check_all(failures)
    assert refused < CASES // 2


@pytest.mark.parametrize("opcode", ["RELU", "RELU6", "RELU_N1_TO_1"])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_relu_family_matches_litert(opcode: str, dtype) -> None:
    rng = _rng(opcode, dtype)
    failures = []
    for k in range(CASES):
        x = _elementwise_input(rng, dtype)
        in_q = _quant(rng, dtype, 1e-3, 1.0)
        out_q = in_q if k % 4 == 0 else _quant(rng, dtype, 1e-3, 1.0)
        failures.append(_mismatch(_graph(opcode, dtype, in_q, out_q, x.shape[1:]), x))
    _check_all(failures)


def _softmax_case(rng: np.random.Generator, dtype, max_depth: int = 300):
    info = np.iinfo(dtype)
    rank = int(rng.integers(1, 5))
    shape = tuple(int(d) for d in rng.integers(1, 4, rank - 1)) + (
        int(rng.integers(1, max_depth + 1)),)
    beta = float(np.float32(np.exp(rng.uniform(np.log(0.05), np.log(100.0)))))
    x = rng.integers(info.min, info.max + 1, (2, *shape))
    if rng.random() < 0.5:  # entries near the row maximum exercise exp and the reciprocal
        x = int(rng.integers(info.min + 12, info.max - 12)) + rng.integers(-12, 13, x.shape)
    out_q = QuantParams(1 / 256, info.min)
    graph = _graph("SOFTMAX", dtype, _quant(rng, dtype, 1e-3, 1.0), out_q, shape, {"beta": beta})
    return graph, x.astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_softmax_matches_litert(dtype) -> None:
    rng = _rng("SOFTMAX", dtype)
    _check_all([_mismatch(*_softmax_case(rng, dtype)) for _ in range(2 * CASES)])


def test_softmax_int8_matches_tflite_micro() -> None:
    rng = _rng("SOFTMAX", "tflm")
    _check_all([_mismatch(*_softmax_case(rng, np.int8), peer=run_tflm) for _ in range(CASES)])


_LITERT_SUBPROCESS = textwrap.dedent("""
    import sys, numpy as np
    from ai_edge_litert.interpreter import Interpreter, OpResolverType
    data = sys.stdin.buffer.read()
    n = int(sys.argv[1])
    it = Interpreter(model_content=data[n:],
                     experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
    it.allocate_tensors()
    it.set_tensor(it.get_input_details()[0]["index"], np.frombuffer(data[:n], np.uint8).copy())
    it.invoke()
""")


def test_softmax_row_sum_limit_is_where_litert_aborts() -> None:
    """A row whose sum of exponentials reaches 512 makes LiteRT abort (gemmlowp's
    ``exponent <= 31`` assertion); qlane raises ModelError on exactly the same rows."""
    depth = 700
    graph = _graph("SOFTMAX", np.uint8, QuantParams(0.5, 0), QuantParams(1 / 256, 0), (depth,))

    def row(k: int) -> np.ndarray:  # k entries at the maximum, a tail 1.5 .. 19.5 below it
        x = np.full(depth, 200, np.uint8)
        x[k:] = 200 - (3 + np.arange(depth - k) * 7 % 37)
        return x

    assert _mismatch(graph, row(508)[None]) is None
    with pytest.raises(ModelError, match="exceeds 31"):
        Interpreter(graph).run([row(509)[None]])
    proc = subprocess.run([sys.executable, "-c", _LITERT_SUBPROCESS, str(depth)],
                          input=row(509).tobytes() + write_tflite(graph), capture_output=True,
                          timeout=120)
    assert proc.returncode == -signal.SIGABRT


@pytest.mark.parametrize("opcode", ["RELU", "HARD_SWISH"])
def test_int8_relu_and_hard_swish_match_tflite_micro(opcode: str) -> None:
    rng = _rng(opcode, "tflm")
    failures = []
    for _ in range(CASES // 2):
        x = _elementwise_input(rng, np.int8)
        in_q, out_q = _quant(rng, np.int8, 1e-3, 1.0), _quant(rng, np.int8, 1e-3, 1.0)
        if opcode == "HARD_SWISH" and float(in_q.s) / (128 * float(out_q.s)) >= 1:
            continue
        failures.append(_mismatch(_graph(opcode, np.int8, in_q, out_q, x.shape[1:]), x, run_tflm))
    _check_all(failures)


def test_int8_relu6_matches_tflite_micro_only_with_equal_quantization() -> None:
    """TFLite Micro's int8 RELU6 clamps in the input quantization without rescaling; with equal
    input and output quantization that is the classic reference, which qlane follows."""
    rng = _rng("RELU6", "tflm")
    x = np.arange(-128, 128).astype(np.int8)[None, None]
    same = [_mismatch(_graph("RELU6", np.int8, q, q, (1, 256)), x, run_tflm)
            for q in (_quant(rng, np.int8) for _ in range(10))]
    _check_all(same)
    rescaled = _graph("RELU6", np.int8, QuantParams(0.1, 3), QuantParams(0.05, -100), (1, 256))
    assert _mismatch(rescaled, x, run_tflm) is not None
    assert _mismatch(rescaled, x, run_litert) is None


def _tflm_int8(fn, x: np.ndarray, in_q: QuantParams, out_bits: int, out_zp: int) -> np.ndarray:
    """TFLite Micro's int8 LOGISTIC / TANH: 4 integer bits in, gemmlowp ``fn``, Q0.31 -> 8 bits."""
    mantissa, shift = math.frexp(float(np.float32(in_q.s)) * 2.0**27)
    multiplier = int(np.floor(mantissa * 2**31 + 0.5))
    radius = calculate_input_radius(4, shift, 31)
    diff = x.astype(np.int64) - in_q.zp
    q4 = mul_by_quantized_multiplier(diff, multiplier, shift)
    y = rounding_divide_by_pot(fn(FixedPoint.from_raw(q4, 4)).raw, 31 - out_bits) + out_zp
    y = np.where(diff <= -radius, -128, np.where(diff >= radius, 127, np.clip(y, -128, 127)))
    return y.astype(np.int8)


@pytest.mark.parametrize(("opcode", "fn", "out_bits", "out_q"), [
    ("LOGISTIC", logistic, 8, QuantParams(1 / 256, -128)),
    ("TANH", tanh, 7, QuantParams(1 / 128, 0)),
])
def test_gemmlowp_logistic_and_tanh_match_tflite_micro(opcode, fn, out_bits, out_q) -> None:
    rng = _rng(opcode, "gemmlowp")
    x = np.arange(-128, 128).astype(np.int8)[None, None]
    failures = []
    for _ in range(CASES):
        in_q = _quant(rng, np.int8, 1e-3, 1.0)
        want = run_tflm(write_tflite(_graph(opcode, np.int8, in_q, out_q, (1, 256))), [x])[0]
        got = _tflm_int8(fn, x, in_q, out_bits, out_q.zp)
        bad = np.flatnonzero(got != want)
        if bad.size:
            failures.append(f"{opcode} in {in_q}: {bad.size} differ, e.g. x={x.flat[bad[0]]} "
                            f"got {got.flat[bad[0]]} want {want.flat[bad[0]]}")
    _check_all(failures)
