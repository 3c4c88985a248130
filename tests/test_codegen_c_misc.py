"""Portable C for CONCATENATION, PAD/PADV2, MEAN, QUANTIZE/DEQUANTIZE, SOFTMAX and activations.

Many independent layers share one graph (each with its own graph inputs and outputs), so one
host build covers them; `verify` compares every layer with the simulator, bit for bit. 8-bit
inputs hold all 256 values in their first sample whenever they have room for them.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conftest import ZOO, ZOO_MODELS, zoo_inputs
from peers import GraphBuilder, merge_graphs, spec
from qlane.codegen.emit import generate, write_project
from qlane.codegen.lowerings.shape import merge_pads, merge_reduce
from qlane.codegen.lowerings.softmax import MAX_DIFFS, exp_table, softmax_table_model
from qlane.codegen.names import parse_symbol
from qlane.codegen.targets import load_target
from qlane.codegen.verify import HostBuild, Report, verify
from qlane.sim import load_tflite
from qlane.sim.fixedpoint import ROUNDINGS
from qlane.sim.graph import Graph, ModelError
from qlane.sim.interpreter import Interpreter
from qlane.sim.ops.softmax import Softmax
from qlane.sim.quant import QuantParams

GENERIC = load_target("generic")
DTYPES = (np.uint8, np.int8)
SAMPLES = 3


class Layers:
    """Independent layers in one graph; remembers each graph input's test data."""

    def __init__(self, seed: int) -> None:
        self.g = GraphBuilder()
        self.rng = np.random.default_rng(seed)
        self.inputs: list[int] = []
        self.outputs: list[int] = []
        self.data: list[np.ndarray] = []
        self.ops: list[str] = []

    def activation(self, shape: tuple[int, ...], dtype: Any, quant: QuantParams | None,
                   x: np.ndarray | None = None) -> int:
        """A graph input with random (or given) samples; 8-bit ones hold every value."""
        index = self.g.add(spec(shape, dtype, quant))
        self.inputs.append(index)
        if x is None:
            x = _random_samples(self.rng, shape, dtype)
        self.data.append(np.asarray(x, dtype).reshape((SAMPLES, *shape)))
        return index

    def const(self, values: Any, dtype: Any, quant: QuantParams | None = None) -> int:
        values = np.asarray(values, dtype)
        return self.g.add(spec(values.shape, dtype, quant, data=values))

    def layer(self, opcode: str, inputs: list[int], shape: tuple[int, ...], dtype: Any,
              quant: QuantParams | None, **options: Any) -> None:
        out = self.g.add(spec(shape, dtype, quant))
        self.g.op(opcode, inputs, [out], **options)
        self.outputs.append(out)
        self.ops.append(opcode)

    def unary(self, opcode: str, dtype: Any, q_in: QuantParams, q_out: QuantParams,
              shape: tuple[int, ...] = (2, 9, 17), **options: Any) -> None:
        self.layer(opcode, [self.activation(shape, dtype, q_in)], shape, dtype, q_out, **options)

    def graph(self, name: str) -> Graph:
        return self.g.build(self.inputs, self.outputs, name=name)


def _random_samples(rng: np.random.Generator, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    dt = np.dtype(dtype)
    size = int(np.prod(shape, dtype=np.int64))
    if dt == np.float32:
        return rng.normal(0, 3, (SAMPLES, size)).astype(np.float32)
    info = np.iinfo(dt)
    x = rng.integers(info.min, info.max + 1, (SAMPLES, size))
    if size >= 256:
        x[0, :256] = rng.permutation(np.arange(info.min, info.max + 1))
    return x.astype(dt)


def _q(rng: np.random.Generator, dtype: Any, lo: float = 1e-3, hi: float = 0.2) -> QuantParams:
    info = np.iinfo(np.dtype(dtype))
    scale = np.exp(rng.uniform(np.log(lo), np.log(hi)))
    return QuantParams(np.float32(scale), int(rng.integers(info.min, info.max + 1)))


def _check(report: Report, ops: list[str]) -> None:
    bad = [f"layer {r.index} {r.op} ({r.kernel}): {r.differing} differ, first {r.first}"
           for r in report.layers if not r.bit_exact]
    assert not bad, "\n".join(bad)
    assert report.model_bit_exact, report.model_first
    assert [r.op for r in report.layers] == ops
    assert all(parse_symbol(r.kernel).isa == "c" for r in report.layers)


# --- (a) the converter-made zoo --------------------------------------------------------------

ZOO_SELECTION = [m for m in ZOO_MODELS
                 if any(k in m for k in ("concat", "reshape", "softmax", "add"))]



def test_zoo_concat_reshape_softmax_add_bit_exact() -> None:
    assert len(ZOO_SELECTION) == 18
    graphs = [load_tflite(ZOO / f"{n}.tflite") for n in ZOO_SELECTION]
    merged, _ = merge_graphs(graphs, name="zoo_misc")
    inputs = [x for n in ZOO_SELECTION for x in zoo_inputs(n)]
    report = verify(merged, GENERIC, inputs)
    _check(report, [op.opcode for op in merged.operators])
    outs = iter(report.outputs)
    for n, g in zip(ZOO_SELECTION, graphs):
        ref = np.load(ZOO / f"{n}.tfl214.npz")
        for k in range(len(g.outputs)):
            got = next(outs)
            assert np.array_equal(got, ref[f"out{k}"]), f"{n}: differs from the tfl214 reference"
    variants = {(parse_symbol(r.kernel).op, parse_symbol(r.kernel).variant)
                for r in report.layers}
    assert {("softmax", "r2d1001"), ("softmax", "r15d7"), ("concat", "n2a3"),
            ("concat", "n2a1"), ("reshape", "n189")} <= variants


# --- (b) randomised layers of every op --------------------------------------------------------


def _activation_layers(b: Layers, dtype: Any) -> None:
    rng = b.rng
    lo = int(np.iinfo(np.dtype(dtype)).min)
    for _ in range(2):
        b.unary("LOGISTIC", dtype, _q(rng, dtype, 0.01, 0.3), QuantParams(1 / 256, lo))
        b.unary("TANH", dtype, _q(rng, dtype, 0.005, 0.2), QuantParams(1 / 128, lo + 128))
    b.unary("TANH", dtype, _q(rng, dtype), _q(rng, dtype, 0.004, 0.01), shape=(257,))
    # HARD_SWISH: reluish exponent > 0, = 0 and < 0; an output shift of 16 or more
    for s_in, s_out in ((0.1, 0.05), (0.008, 0.004), (0.002, 0.003), (0.001, 1.0), (0.05, 0.001)):
        q_in = QuantParams(np.float32(s_in * rng.uniform(0.9, 1.1)),
                           int(rng.integers(lo, lo + 256)))
        q_out = QuantParams(np.float32(s_out), int(rng.integers(lo, lo + 256)))
        b.unary("HARD_SWISH", dtype, q_in, q_out, shape=(3, 5, 19))
    for op in ("RELU", "RELU6", "RELU_N1_TO_1"):
        q_in = _q(rng, dtype, 0.005, 0.05)
        b.unary(op, dtype, q_in, QuantParams(np.float32(float(q_in.s) * rng.uniform(0.3, 1.5)),
                                             int(rng.integers(lo + 60, lo + 200))))
    b.unary("RELU", dtype, QuantParams(0.02, lo + 128), QuantParams(0.02, lo + 128), shape=(300,))


def _quantize_layers(b: Layers, dtype: Any) -> None:
    rng = b.rng
    other = np.int8 if dtype == np.uint8 else np.uint8
    q_out = _q(rng, dtype, 0.01, 0.1)
    shape = (4, 67)
    x = _random_samples(rng, shape, np.float32).reshape(SAMPLES, -1)
    s = float(q_out.s)
    x[0, :100] = ((np.arange(-50, 50) + 0.5) * np.float32(s)).astype(np.float32)  # ties
    x[1, :8] = [np.nan, np.inf, -np.inf, 3e9, -3e9, -0.0, 1e-30, 2.5]
    x[2, :40] = (np.arange(-20, 20) * np.float32(s) * np.float32(1.5)).astype(np.float32)
    b.layer("QUANTIZE", [b.activation(shape, np.float32, None, x)], shape, dtype, q_out)
    # 8-bit requantization: to the other type, the same type, and a ratio beyond 2^31
    b.layer("QUANTIZE", [b.activation((2, 9, 17), other, _q(rng, other))], (2, 9, 17), dtype,
            q_out)
    b.unary("QUANTIZE", dtype, _q(rng, dtype), _q(rng, dtype))
    b.unary("QUANTIZE", dtype, QuantParams(np.float32(4.0), 3),
            QuantParams(np.float32(1e-9), int(np.iinfo(np.dtype(dtype)).min) + 5))
    shape = (5, 3, 7)
    b.layer("DEQUANTIZE", [b.activation(shape, dtype, _q(rng, dtype))], shape, np.float32, None)
    scales = np.exp(rng.uniform(-8, 1, 3)).astype(np.float32)
    zps = rng.integers(-128, 128, 3) if dtype == np.int8 else rng.integers(0, 256, 3)
    per_axis = QuantParams(scales, zps, axis=1)
    b.layer("DEQUANTIZE", [b.activation(shape, dtype, per_axis)], shape, np.float32, None)


def _softmax_layers(b: Layers, dtype: Any) -> None:
    rng = b.rng
    lo = int(np.iinfo(np.dtype(dtype)).min)
    q_out = QuantParams(1 / 256, lo)
    for shape, s_lo, s_hi, beta in (((1,), 0.01, 0.1, 1.0), ((3, 10), 0.01, 0.3, 1.0),
                                    ((2, 3, 37), 0.002, 0.05, 1.0), ((2, 1001), 0.05, 0.2, 1.0),
                                    ((4, 16), 0.01, 0.1, 0.3), ((5, 7), 0.5, 2.0, 2.0)):
        b.unary("SOFTMAX", dtype, _q(rng, dtype, s_lo, s_hi), q_out, shape=shape, beta=beta)
    # 8192 values at the maximum and 8 one step below: the Q12.19 sum wraps past 2^32 to a
    # small positive number, which the reference (and the simulator) carry on with
    x = _random_samples(rng, (8200,), dtype)
    x[0] = lo + 7
    x[0, rng.permutation(8200)[:8]] = lo + 6
    b.layer("SOFTMAX", [b.activation((8200,), dtype, QuantParams(2.0, lo), x)], (8200,), dtype,
            q_out, beta=1.0)


def _concat_layers(b: Layers, dtype: Any) -> None:
    rng = b.rng
    uint8 = dtype == np.uint8
    q = _q(rng, dtype)
    for shape, axis, sizes in (((2, 3, 5, 7), 3, (3, 1, 4)), ((3, 5, 2), 0, (1, 2, 4)),
                               ((4, 3, 6), -2, (2, 5)), ((7,), 0, (3, 4))):
        ins, total = [], 0
        for k, n in enumerate(sizes):
            part = list(shape)
            part[axis] = n
            q_in = _q(rng, dtype) if uint8 and k % 2 == 0 else q
            if k == 1:  # a constant operand
                info = np.iinfo(np.dtype(dtype))
                ins.append(b.const(rng.integers(info.min, info.max + 1, part), dtype, q_in))
            else:
                ins.append(b.activation(tuple(part), dtype, q_in))
            total += n
        out = list(shape)
        out[axis] = total
        b.layer("CONCATENATION", ins, tuple(out), dtype, q, axis=axis, activation="NONE")


def _pad_layers(b: Layers, dtype: Any) -> None:
    rng = b.rng
    q = _q(rng, dtype)
    for shape, pads in (((1, 5, 7, 3), [[0, 0], [1, 1], [2, 1], [0, 0]]),
                        ((2, 3, 4), [[1, 0], [0, 0], [0, 2]]), ((9,), [[3, 4]]),
                        ((2, 3, 1, 2, 3), [[0, 1], [1, 0], [2, 2], [0, 0], [1, 1]]),
                        ((4, 5), [[0, 0], [0, 0]]), ((3, 2, 5), [[0, 0], [2, 3], [0, 0]])):
        out = tuple(d + a + c for d, (a, c) in zip(shape, pads))
        x = b.activation(shape, dtype, q)
        paddings = b.const(pads, np.int32)
        if len(shape) == 3:
            value = int(rng.integers(np.iinfo(np.dtype(dtype)).min, 100))
            v = b.const([value], dtype, q)
            b.layer("PADV2", [x, paddings, v], out, dtype, q)
        else:
            b.layer("PAD", [x, paddings], out, dtype, q)


def _mean_layers(b: Layers, dtype: Any) -> None:
    rng = b.rng
    for shape, axes, keep in (((1, 5, 7, 3), [1, 2], True), ((2, 3, 5), [2], False),
                              ((3, 4, 5), [0, 2], False), ((2, 3, 4, 5), [0, 1, 2, 3], True),
                              ((6, 1, 9), [-1, 1, -1], True), ((4, 1), [1], False),
                              ((3, 300), [1], False)):
        rank = len(shape)
        red = {a % rank for a in axes}
        out = tuple(1 if d in red else n for d, n in enumerate(shape) if keep or d not in red)
        x = b.activation(shape, dtype, _q(rng, dtype))
        b.layer("MEAN", [x, b.const(axes, np.int32)], out, dtype, _q(rng, dtype),
                keep_dims=keep)


FAMILIES = {"activation": _activation_layers, "quantize": _quantize_layers,
            "softmax": _softmax_layers, "shape": (_concat_layers, _pad_layers, _mean_layers)}


def _family_graph(family: str, seed: int) -> tuple[Graph, list[np.ndarray], list[str]]:
    b = Layers(seed)
    builders = FAMILIES[family]
    for dtype in DTYPES:
        for fn in builders if isinstance(builders, tuple) else (builders,):
            fn(b, dtype)
    return b.graph(f"misc_{family}"), b.data, b.ops


@pytest.mark.parametrize("rounding", ROUNDINGS)
@pytest.mark.parametrize("family", list(FAMILIES))
def test_random_layers_bit_exact(family: str, rounding: str) -> None:
    graph, data, ops = _family_graph(family, seed=len(family))
    report = verify(graph, GENERIC, data, rounding=rounding)
    _check(report, ops)
    assert report.rounding == rounding and report.samples == SAMPLES


def test_kernel_choices_and_constants() -> None:
    """The lowerings pick the documented variants; tables are the simulator's."""
    graph, _, _ = _family_graph("quantize", seed=8)
    project = generate(graph, GENERIC, rounding="double")
    tags = [(layer.spec.op, layer.spec.variant) for layer in project.layers]
    assert tags[:4] == [("quantize", "f32n268"), ("quantize", "n306"), ("quantize", "n306"),
                        ("quantize", "n306lut")]  # 4 / 1e-9 needs a shift above 31: a table
    assert tags[4:6] == [("dequantize", "n105"), ("dequantize", "n105c3")]
    single = generate(graph, GENERIC, rounding="single")
    assert single.layers[3].spec.variant == "n306"  # single rounding clamps the shift to 30

    graph, _, _ = _family_graph("activation", seed=10)
    project = generate(graph, GENERIC)
    interp = Interpreter(graph)
    for layer, sim in zip(project.layers, interp.kernels):
        if layer.op.opcode in ("LOGISTIC", "TANH"):
            (lut,) = layer.kernel.consts
            assert lut.values.size == 256 and np.array_equal(lut.values, sim.table)
    ops = [layer.spec.op for layer in project.layers]
    assert ops[:5] == ["logistic", "tanh", "logistic", "tanh", "tanh"]
    assert {"hardswish", "relu", "relu6", "relun1to1"} <= set(ops)


def test_merge_helpers() -> None:
    assert merge_pads((1, 5, 7, 3), [(0, 0), (1, 1), (2, 1), (0, 0)]) == [(5, 1, 1), (21, 6, 3)]
    assert merge_pads((4, 5), [(0, 0), (0, 0)]) == [(20, 0, 0)]
    assert merge_pads((), []) == [(1, 0, 0)]
    assert merge_reduce((1, 5, 7, 3), (1, 2)) == [(35, True), (3, False)]
    assert merge_reduce((6, 1, 9), (1, 2)) == [(6, False), (9, True)]
    assert merge_reduce((3, 4, 5), (0, 2)) == [(3, True), (4, False), (5, True)]


def test_known_values_through_c() -> None:
    """Hand-computed outputs of a few layers, run through the generated C."""
    b = Layers(1)
    q = QuantParams(np.float32(0.5), -3)
    nan, big = np.float32(np.nan), np.float32(1e10)
    x = np.array([0.25, 0.75, -0.25, -0.75, 1.25, nan, big, -big, 63, 100, -70, 0.2499999],
                 np.float32)
    b.layer("QUANTIZE", [b.activation((12,), np.float32, None, np.tile(x, 3))], (12,),
            np.int8, q)
    b.layer("QUANTIZE", [b.activation((12,), np.float32, None, np.tile(x, 3))], (12,),
            np.uint8, QuantParams(np.float32(0.5), 3))
    q_u8 = QuantParams(np.float32(0.5), 3)
    b.layer("DEQUANTIZE", [b.activation((4,), np.uint8, q_u8, np.tile([3, 4, 0, 255], 3))],
            (4,), np.float32, None)
    b.layer("SOFTMAX", [b.activation((2, 4), np.uint8, QuantParams(np.float32(0.1), 0),
                                     np.tile([7, 7, 7, 7, 200, 0, 0, 0], 3))],
            (2, 4), np.uint8, QuantParams(1 / 256, 0), beta=1.0)
    q_relu = QuantParams(np.float32(0.1), 10)
    b.layer("RELU6", [b.activation((3,), np.uint8, q_relu, np.tile([0, 200, 50], 3))], (3,),
            np.uint8, q_relu)
    q_one = QuantParams(np.float32(1.0), 0)
    b.layer("MEAN", [b.activation((1, 2, 2, 1), np.uint8, q_one, np.tile([1, 2, 3, 5], 3)),
                     b.const([1, 2], np.int32)], (1, 1), np.uint8, q_one, keep_dims=False)
    q_pad = QuantParams(np.float32(0.25), -5)
    b.layer("PAD", [b.activation((1, 2), np.int8, q_pad, np.tile([1, 2], 3)),
                    b.const([[1, 0], [0, 1]], np.int32)], (2, 3), np.int8, q_pad)
    b.layer("CONCATENATION", [b.activation((2,), np.uint8, q_one, np.tile([1, 2], 3)),
                              b.const([3], np.uint8, q_one)], (3,), np.uint8, q_one, axis=0)
    graph = b.graph("known")
    report = verify(graph, GENERIC, b.data)
    _check(report, b.ops)
    want = [
        [-2, -1, -4, -5, 0, 127, 127, 127, 123, 127, -128, -3],  # NaN, +-1e10: INT32_MIN + zp
        [4, 5, 2, 1, 6, 0, 0, 0, 129, 203, 0, 3],
        [0.0, 0.5, -1.5, 126.0],
        [[64, 64, 64, 64], [255, 0, 0, 0]],
        [10, 70, 50],
        [[3]],  # 11 / 4 = 2.75
        [[-5, -5, -5], [1, 2, -5]],
        [1, 2, 3],
    ]
    for got, expected in zip(report.outputs, want):
        assert np.array_equal(got[0], np.asarray(expected, got.dtype)), (got[0], expected)


# --- SOFTMAX: the table model, the >= 512 corner ---------------------------------------------


def _softmax_sim(dtype: Any, depth: int, scale: float, beta: float, rounding: str) -> Softmax:
    lo = int(np.iinfo(np.dtype(dtype)).min)
    g = GraphBuilder()
    i = g.add(spec((depth,), dtype, QuantParams(np.float32(scale), lo + 3)))
    o = g.add(spec((depth,), dtype, QuantParams(1 / 256, lo)))
    g.op("SOFTMAX", [i], [o], beta=beta)
    sim = Interpreter(g.build([i], [o]), rounding).kernels[0]
    assert isinstance(sim, Softmax)
    return sim


@pytest.mark.parametrize("rounding", ROUNDINGS)
def test_softmax_table_model_equals_simulator(rounding: str) -> None:
    rng = np.random.default_rng(3)
    checked = 0
    for dtype in DTYPES:
        info = np.iinfo(np.dtype(dtype))
        for scale, beta, depth in ((0.1, 1.0, 10), (0.02, 1.0, 50), (0.004, 0.5, 7),
                                   (1.5, 1.0, 300), (0.3, 3.0, 1001), (2e-6, 1.0, 5)):
            sim = _softmax_sim(dtype, depth, scale, beta, rounding)
            table = exp_table(sim)
            assert 1 <= table.size <= MAX_DIFFS and table[0] == 2**31 - 1
            assert table.size == MAX_DIFFS or table[-1] != 0
            x = rng.integers(info.min, info.max + 1, (160, depth))
            x[1] = info.max  # all equal
            x[2] = info.min
            x[3, 0] = info.max  # one hot on a floor
            x[4] = np.where(np.arange(depth) % 2, info.max, info.min)
            x = x.astype(dtype)
            try:
                want = sim(x)[0]
            except ModelError:  # sums of 512 or more: drop those rows
                rows = [r for r in x if _sim_ok(sim, r[None])]
                x = np.asarray(rows, dtype)
                want = sim(x)[0]
            assert np.array_equal(softmax_table_model(table, x, dtype), want)
            checked += len(x)
    assert checked > 1800


def _sim_ok(sim: Softmax, x: np.ndarray) -> bool:
    try:
        sim(x)
    except ModelError:
        return False
    return True


def test_softmax_sum_of_512_outputs_the_minimum_in_c() -> None:
    """The simulator raises on such rows; the model and the C write the type's minimum."""
    graphs, rows = [], []
    for dtype in DTYPES:
        lo = int(np.iinfo(np.dtype(dtype)).min)
        b = Layers(5)
        x = np.full((SAMPLES, 600), lo + 9, dtype)
        x[1, :300] = lo  # 300 values at the max (after the next line), 300 far below
        x[1, 300:] = lo + 255
        x[2] = lo + 255
        x[2, :88] = lo  # 512 at the max: exactly the first sum that fails
        b.layer("SOFTMAX", [b.activation((600,), dtype, QuantParams(0.1, lo), x)], (600,),
                dtype, QuantParams(1 / 256, lo), beta=1.0)
        graphs.append(b.graph(f"sm512_{np.dtype(dtype).name}"))
        rows.append(x)
    merged, _ = merge_graphs(graphs, name="softmax512")
    sims = Interpreter(merged).kernels
    with pytest.raises(ModelError, match="512 or more"):
        sims[0](rows[0])
    build = HostBuild(generate(merged, GENERIC))
    for k, (dtype, x) in enumerate(zip(DTYPES, rows)):
        lo = int(np.iinfo(np.dtype(dtype)).min)
        model = softmax_table_model(exp_table(sims[k]), x, dtype)
        assert np.all(model[0] == lo) and np.all(model[2] == lo)
        assert np.array_equal(model[1], sims[k](x[1:2])[0][0])  # 300 at the max: fine
        for s in range(SAMPLES):
            (got,) = build.run_layer(k, [x[s]], [((600,), np.dtype(dtype))])
            assert np.array_equal(got, model[s])


# --- the C is warning-free C99 ----------------------------------------------------------------


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")
def test_sources_are_warning_free_c99(tmp_path: Path) -> None:
    graphs = [_family_graph(f, seed=len(f))[0] for f in FAMILIES]
    merged, _ = merge_graphs(graphs, name="misc_all")
    project = generate(merged, GENERIC, rounding="single")
    write_project(project, tmp_path)
    sources = [str(tmp_path / f) for f in project.manifest["sources"]]
    assert len(sources) == len(merged.operators) + 1
    objs = tmp_path / "obj"
    objs.mkdir()
    # -c (not -fsyntax-only): unused static functions are only reported when compiling
    cmd = ["gcc", "-std=c99", "-pedantic", "-Wall", "-Wextra", "-Wshadow", "-Wconversion",
           "-Wno-sign-conversion", "-Wdouble-promotion", "-Werror", "-O0", "-c",
           f"-I{tmp_path}", *sources]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=objs)
    assert res.returncode == 0, res.stderr[:4000]
