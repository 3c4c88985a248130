"""CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED and the pools against naive loop implementations."""

from __future__ import annotations

import math
import re
import zlib
from itertools import product

import numpy as np
import pytest

from conftest import ZOO
from qlane.sim import load_tflite
from qlane.sim.fixedpoint import mul_by_quantized_multiplier, quantize_multiplier
from qlane.sim.graph import Graph, ModelError, Operator, Tensor
from qlane.sim.ops import KERNELS
from qlane.sim.ops import conv as conv_mod
from qlane.sim.ops.conv import Requantizer
from qlane.sim.quant import QuantParams

RANGE = {"uint8": (0, 255), "int8": (-128, 127)}


# ------------------------------------------------------------------------------------------
# Naive references: Python loops over output positions, integer arithmetic throughout


def seed(*key: object) -> int:
    return zlib.crc32(repr(key).encode())


def wrap32(v: int) -> int:
    return (v + 2**31) % 2**32 - 2**31


def naive_out_pad(padding: str, size: int, k: int, s: int, d: int) -> tuple[int, int]:
    eff = d * (k - 1) + 1
    out = -(-size // s) if padding == "SAME" else (size - eff) // s + 1
    return out, max((out - 1) * s + eff - size, 0) // 2


def clamp_act(act: str, q: QuantParams, dtype: str) -> tuple[int, int]:
    lo, hi = RANGE[dtype]

    def quant(v: float) -> int:
        r = float(np.float32(v) / np.float32(q.s))
        return q.zp + int(math.copysign(math.floor(abs(r) + 0.5), r))

    return {"NONE": (lo, hi), "RELU": (max(lo, q.zp), hi),
            "RELU6": (max(lo, q.zp), min(hi, quant(6.0))),
            "RELU_N1_TO_1": (max(lo, quant(-1.0)), min(hi, quant(1.0)))}[act]


def c_round(v: float) -> int:
    t = math.trunc(v)
    f = v - t
    return t + (1 if f >= 0.5 else -1 if f <= -0.5 else 0)


def requant(acc: int, c: int, spec: dict) -> int:
    """One accumulator (bias included) to the clamped output integer."""
    acc = wrap32(acc)
    if spec["kind"] == "float":
        y = c_round(float(acc) * spec["real"][c])
    else:
        y = int(mul_by_quantized_multiplier(acc, spec["m"][c], spec["shift"][c], spec["rnd"]))
    return min(max(y + spec["zp"], spec["lo"]), spec["hi"])


def make_spec(real: np.ndarray, n: int, rounding: str, qo: QuantParams, act: str, dtype: str,
              requant_rounding: str | None = None) -> dict:
    m, s = quantize_multiplier(np.broadcast_to(real, (n,)), rounding)
    lo, hi = clamp_act(act, qo, dtype)
    rnd = requant_rounding or ("single" if rounding == "single" else "double")
    return dict(kind="fixed", m=[int(v) for v in m], shift=[int(v) for v in s], rnd=rnd,
                zp=qo.zp, lo=lo, hi=hi)


def naive_conv(x, w, b, xzp, wzp, o, spec, depthwise=False):
    n, h, wd, cin = x.shape
    kh, kw = w.shape[1:3]
    cout = w.shape[3] if depthwise else w.shape[0]
    oh, top = naive_out_pad(o["padding"], h, kh, o["stride_h"], o["dilation_h"])
    ow, left = naive_out_pad(o["padding"], wd, kw, o["stride_w"], o["dilation_w"])
    mult = cout // cin
    y = np.zeros((n, oh, ow, cout), np.int64)
    for bi, oy, ox, co in product(range(n), range(oh), range(ow), range(cout)):
        acc = 0
        for ky, kx in product(range(kh), range(kw)):
            iy = oy * o["stride_h"] - top + ky * o["dilation_h"]
            ix = ox * o["stride_w"] - left + kx * o["dilation_w"]
            if not (0 <= iy < h and 0 <= ix < wd):
                continue
            if depthwise:
                acc += (int(x[bi, iy, ix, co // mult]) - xzp) * (int(w[0, ky, kx, co]) - wzp)
            else:
                for ci in range(cin):
                    acc += (int(x[bi, iy, ix, ci]) - xzp) * (int(w[co, ky, kx, ci]) - wzp)
        y[bi, oy, ox, co] = requant(acc + (int(b[co]) if b is not None else 0), co, spec)
    return y


def naive_fc(x2, w, b, xzp, wzp, spec):
    y = np.zeros((x2.shape[0], w.shape[0]), np.int64)
    for r, u in product(range(x2.shape[0]), range(w.shape[0])):
        acc = sum((int(a) - xzp) * (int(c) - wzp) for a, c in zip(x2[r], w[u]))
        y[r, u] = requant(acc + (int(b[u]) if b is not None else 0), u, spec)
    return y


def naive_pool(x, o, lo, hi, kind):
    n, h, wd, c = x.shape
    oh, top = naive_out_pad(o["padding"], h, o["filter_h"], o["stride_h"], 1)
    ow, left = naive_out_pad(o["padding"], wd, o["filter_w"], o["stride_w"], 1)
    y = np.zeros((n, oh, ow, c), np.int64)
    for bi, oy, ox, ch in product(range(n), range(oh), range(ow), range(c)):
        vals = [int(x[bi, iy, ix, ch])
                for iy in range(oy * o["stride_h"] - top, oy * o["stride_h"] - top + o["filter_h"])
                for ix in range(ox * o["stride_w"] - left,
                                ox * o["stride_w"] - left + o["filter_w"])
                if 0 <= iy < h and 0 <= ix < wd]
        if kind == "max":
            v = max(vals)
        else:
            s, cnt = sum(vals), len(vals)
            v = (s + cnt // 2) // cnt if s > 0 else -((-s + cnt // 2) // cnt)
        y[bi, oy, ox, ch] = min(max(v, lo), hi)
    return y


# ------------------------------------------------------------------------------------------
# Graph builders


def graph_of(opcode: str, options: dict, tensors: list[Tensor], inputs: tuple[int, ...],
             outputs: tuple[int, ...] = (3,)) -> Graph:
    op = Operator(0, opcode, inputs, outputs, options)
    return Graph(tensors, [op], [inputs[0]], list(outputs))


def run(graph: Graph, x: np.ndarray, rounding: str = "double") -> np.ndarray:
    op = graph.operators[0]
    kernel = KERNELS[op.opcode](op, graph, rounding)
    args = [x] + [None if i < 0 else graph.tensors[i].data[None] for i in op.inputs[1:]]
    return kernel(*args)[0]


class Case:
    """Random quantized operands of one weighted operator (``fc``: FULLY_CONNECTED rules)."""

    def __init__(self, rng: np.random.Generator, dtype: str, x_shape: tuple, w_shape: tuple,
                 n_out: int, k_eff: int, per_channel_axis: int | None, bias: bool = True,
                 fc: bool = False):
        self.dtype, self.is_fc = dtype, fc
        lo, hi = RANGE[dtype]
        self.x = rng.integers(lo, hi + 1, size=(2,) + x_shape).astype(dtype)
        s_in = np.float32(rng.uniform(0.005, 0.05))
        if dtype == "uint8":
            w = rng.integers(0, 256, size=w_shape).astype(np.uint8)
            s_w = np.float32(rng.uniform(0.002, 0.02))
            self.qw = QuantParams(s_w, int(rng.integers(90, 170)))
            self.xzp = int(rng.integers(0, 256))
            s_bias = np.float32(s_in * s_w)
            self.qb = QuantParams(s_bias, 0)
            mean_w = float(s_w)
        else:
            w = rng.integers(-127, 128, size=w_shape).astype(np.int8)
            s_w = rng.uniform(0.002, 0.02, size=n_out).astype(np.float32)
            self.qw = (QuantParams(s_w, np.zeros(n_out, np.int64), per_channel_axis)
                       if per_channel_axis is not None else QuantParams(s_w[0], 0))
            self.xzp = int(rng.integers(-128, 128))
            self.qb = QuantParams((s_in * s_w).astype(np.float32), np.zeros(n_out, np.int64))
            mean_w = float(s_w.mean())
        self.w = w
        self.qi = QuantParams(s_in, self.xzp)
        s_out = np.float32(float(s_in) * mean_w * 137 * math.sqrt(k_eff))  # outputs of std ~40
        self.qo = QuantParams(s_out, int(rng.integers(lo + 60, hi - 59)))
        self.b = rng.integers(-20000, 20000, size=n_out).astype(np.int32) if bias else None

    def tensors(self, x_shape: tuple, y_shape: tuple) -> list[Tensor]:
        dt = np.dtype(self.dtype)
        bias = Tensor(2, "b", (len(self.b),) if self.b is not None else (0,), np.dtype(np.int32),
                      self.qb, self.b)
        return [Tensor(0, "x", x_shape, dt, self.qi),
                Tensor(1, "w", self.w.shape, dt, self.qw, self.w),
                bias, Tensor(3, "y", y_shape, dt, self.qo)]

    def real(self) -> np.ndarray:
        if self.dtype == "uint8" or not self.qw.per_axis and self.is_fc:
            return np.float64(np.float32(self.qi.s) * np.float32(self.qw.s)) / np.float64(self.qo.s)
        return (np.float64(self.qi.s) * self.qw.scale.astype(np.float64)
                / np.float64(self.qo.s))


CONV_CASES = [
    # dtype, (h, w, cin), cout, (kh, kw), padding, stride, dilation, activation, batch
    ("uint8", (7, 9, 3), 4, (3, 3), "SAME", (2, 2), (1, 1), "NONE", 1),
    ("uint8", (8, 6, 3), 5, (3, 3), "SAME", (2, 2), (1, 1), "RELU6", 2),
    ("uint8", (6, 5, 4), 3, (1, 1), "VALID", (1, 1), (1, 1), "RELU", 2),
    ("uint8", (9, 7, 2), 3, (3, 2), "VALID", (1, 2), (2, 1), "RELU_N1_TO_1", 1),
    ("int8", (7, 9, 3), 4, (3, 3), "SAME", (2, 2), (1, 1), "NONE", 1),
    ("int8", (8, 6, 3), 5, (3, 3), "SAME", (2, 1), (1, 1), "RELU6", 2),
    ("int8", (9, 7, 5), 2, (3, 2), "VALID", (1, 1), (2, 2), "RELU", 1),
    ("int8", (5, 6, 4), 3, (2, 2), "SAME", (1, 1), (1, 1), "NONE", 3),
    ("int8", (6, 6, 3), 2, (4, 4), "SAME", (3, 3), (1, 1), "NONE", 1),
]


@pytest.mark.parametrize("rounding", ["double", "single"])
@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: "-".join(map(str, c)))
def test_conv2d_matches_naive_loops(case, rounding: str) -> None:
    dtype, (h, w, cin), cout, (kh, kw), pad, (sh, sw), (dh, dw), act, n = case
    rng = np.random.default_rng(seed(case, rounding))
    opts = dict(padding=pad, stride_h=sh, stride_w=sw, dilation_h=dh, dilation_w=dw,
                activation=act)
    oh, _ = naive_out_pad(pad, h, kh, sh, dh)
    ow, _ = naive_out_pad(pad, w, kw, sw, dw)
    c = Case(rng, dtype, (n, h, w, cin), (cout, kh, kw, cin), cout, kh * kw * cin, 0)
    g = graph_of("CONV_2D", opts, c.tensors((n, h, w, cin), (n, oh, ow, cout)), (0, 1, 2))
    got = run(g, c.x, rounding)
    spec = make_spec(c.real(), cout, rounding, c.qo, act, dtype)
    wzp = c.qw.zp if dtype == "uint8" else 0
    want = np.stack([naive_conv(s, c.w, c.b, c.xzp, wzp, opts, spec) for s in c.x])
    assert got.dtype == np.dtype(dtype) and got.shape == want.shape
    np.testing.assert_array_equal(got.astype(np.int64), want)
    assert len(np.unique(want)) > 5  # the data exercises the requantization, not only clamps


DW_CASES = [
    # dtype, (h, w, cin), mult, (kh, kw), padding, stride, dilation, activation, batch
    ("uint8", (7, 9, 3), 1, (3, 3), "SAME", (1, 1), (1, 1), "NONE", 1),
    ("uint8", (7, 9, 3), 2, (3, 3), "SAME", (2, 2), (1, 1), "RELU6", 2),
    ("uint8", (8, 6, 2), 3, (3, 3), "SAME", (2, 2), (1, 1), "NONE", 1),
    ("uint8", (9, 7, 5), 1, (3, 3), "VALID", (1, 1), (2, 2), "RELU", 1),
    ("int8", (7, 9, 3), 2, (3, 3), "SAME", (2, 2), (1, 1), "RELU6", 1),
    ("int8", (8, 6, 3), 1, (3, 3), "SAME", (2, 2), (1, 1), "NONE", 2),
    ("int8", (9, 7, 5), 1, (3, 3), "VALID", (1, 1), (2, 2), "RELU", 1),
    ("int8", (6, 7, 4), 2, (2, 3), "SAME", (1, 2), (2, 1), "RELU_N1_TO_1", 2),
]


@pytest.mark.parametrize("rounding", ["double", "single"])
@pytest.mark.parametrize("case", DW_CASES, ids=lambda c: "-".join(map(str, c)))
def test_depthwise_matches_naive_loops(case, rounding: str) -> None:
    dtype, (h, w, cin), mult, (kh, kw), pad, (sh, sw), (dh, dw), act, n = case
    rng = np.random.default_rng(seed(case, rounding))
    cout = cin * mult
    opts = dict(padding=pad, stride_h=sh, stride_w=sw, dilation_h=dh, dilation_w=dw,
                depth_multiplier=mult, activation=act)
    oh, _ = naive_out_pad(pad, h, kh, sh, dh)
    ow, _ = naive_out_pad(pad, w, kw, sw, dw)
    c = Case(rng, dtype, (n, h, w, cin), (1, kh, kw, cout), cout, kh * kw, 3)
    g = graph_of("DEPTHWISE_CONV_2D", opts, c.tensors((n, h, w, cin), (n, oh, ow, cout)),
                 (0, 1, 2))
    got = run(g, c.x, rounding)
    # uint8 depthwise rounds twice even in TFLITE_SINGLE_ROUNDING builds
    spec = make_spec(c.real(), cout, rounding, c.qo, act, dtype,
                     "double" if dtype == "uint8" else None)
    wzp = c.qw.zp if dtype == "uint8" else 0
    want = np.stack([naive_conv(s, c.w, c.b, c.xzp, wzp, opts, spec, depthwise=True)
                     for s in c.x])
    np.testing.assert_array_equal(got.astype(np.int64), want)
    assert len(np.unique(want)) >= min(6, want.size // 3)


FC_CASES = [
    # dtype, input shape, units, keep_num_dims, per-channel, activation, bias
    ("uint8", (3, 13), 5, False, False, "NONE", True),
    ("uint8", (1, 2, 3, 4), 7, False, False, "RELU", True),  # flattened to [1, 24]
    ("uint8", (2, 3, 8), 4, True, False, "RELU6", False),
    ("int8", (4, 16), 6, False, True, "NONE", True),
    ("int8", (2, 2, 10), 3, True, True, "RELU", True),
    ("int8", (6, 5), 4, False, False, "NONE", True),  # per-tensor int8 weights
    ("int8", (3, 2, 6), 5, False, True, "NONE", False),  # flattened to [3, 12] with depth 12
]


@pytest.mark.parametrize("rounding", ["double", "single", "litert"])
@pytest.mark.parametrize("case", FC_CASES, ids=lambda c: "-".join(map(str, c)))
def test_fully_connected_matches_naive_loops(case, rounding: str) -> None:
    dtype, in_shape, units, keep, per_channel, act, has_bias = case
    rng = np.random.default_rng(seed(case, rounding))
    depth = 12 if in_shape == (3, 2, 6) else in_shape[-1] if keep else int(np.prod(in_shape[1:]))
    rows = int(np.prod(in_shape)) // depth
    out_shape = in_shape[:-1] + (units,) if keep else (rows, units)
    c = Case(rng, dtype, in_shape, (units, depth), units, depth, 0 if per_channel else None,
             bias=has_bias, fc=True)
    if dtype == "int8" and not per_channel:
        c.qw = QuantParams(c.qw.s, 3)  # per-tensor int8 weights keep their zero point
    tensors = c.tensors(in_shape, out_shape)
    g = graph_of("FULLY_CONNECTED", dict(activation=act, keep_num_dims=keep), tensors,
                 (0, 1, 2 if has_bias else -1))
    got = run(g, c.x, rounding)
    if rounding == "litert":
        scales = np.broadcast_to(c.qw.scale.astype(np.float64), (units,))
        lo, hi = clamp_act(act, c.qo, dtype)
        spec = dict(kind="float", real=list(np.float64(c.qi.s) * scales / np.float64(c.qo.s)),
                    zp=c.qo.zp, lo=lo, hi=hi)
    else:
        spec = make_spec(c.real(), units, rounding, c.qo, act, dtype)
    wzp = 0 if per_channel else c.qw.zp
    want = np.stack([naive_fc(s.reshape(rows, depth), c.w, c.b, c.xzp, wzp, spec)
                     for s in c.x]).reshape((2,) + out_shape)
    np.testing.assert_array_equal(got.astype(np.int64), want)
    assert len(np.unique(want)) >= min(6, want.size // 3)


POOL_CASES = [
    # dtype, (h, w, c), (fh, fw), (sh, sw), padding, activation, batch
    ("uint8", (7, 9, 3), (2, 2), (2, 2), "VALID", "NONE", 1),
    ("uint8", (7, 9, 5), (3, 3), (2, 2), "SAME", "NONE", 2),
    ("uint8", (6, 5, 2), (4, 2), (1, 2), "SAME", "RELU6", 1),
    ("int8", (7, 9, 3), (2, 2), (2, 2), "VALID", "NONE", 2),
    ("int8", (7, 9, 5), (3, 3), (2, 2), "SAME", "RELU", 1),
    ("int8", (8, 6, 3), (2, 3), (3, 1), "SAME", "RELU_N1_TO_1", 1),
]


@pytest.mark.parametrize("kind", ["avg", "max"])
@pytest.mark.parametrize("case", POOL_CASES, ids=lambda c: "-".join(map(str, c)))
def test_pools_match_naive_loops(case, kind: str) -> None:
    dtype, (h, w, c), (fh, fw), (sh, sw), pad, act, n = case
    rng = np.random.default_rng(seed(case, kind))
    lo, hi = RANGE[dtype]
    x = rng.integers(lo, hi + 1, size=(3, n, h, w, c)).astype(dtype)
    q = QuantParams(np.float32(0.05), int(rng.integers(lo + 100, hi - 99)))
    opts = dict(padding=pad, stride_h=sh, stride_w=sw, filter_h=fh, filter_w=fw, activation=act)
    oh, _ = naive_out_pad(pad, h, fh, sh, 1)
    ow, _ = naive_out_pad(pad, w, fw, sw, 1)
    dt = np.dtype(dtype)
    g = graph_of("AVERAGE_POOL_2D" if kind == "avg" else "MAX_POOL_2D", opts,
                 [Tensor(0, "x", (n, h, w, c), dt, q), Tensor(1, "y", (n, oh, ow, c), dt, q)],
                 (0,), (1,))
    got = run(g, x)
    alo, ahi = clamp_act(act, q, dtype)
    want = np.stack([naive_pool(s, opts, alo, ahi, kind) for s in x])
    np.testing.assert_array_equal(got.astype(np.int64), want)


@pytest.mark.parametrize("case", [CONV_CASES[1], CONV_CASES[5], DW_CASES[2], DW_CASES[7]],
                         ids=lambda c: "-".join(map(str, c)))
def test_chunks_and_row_bands_do_not_change_results(case, monkeypatch) -> None:
    dtype, (h, w, cin), co, (kh, kw), pad, (sh, sw), (dh, dw), act, n = case
    depthwise = case in DW_CASES
    cout = cin * co if depthwise else co
    rng = np.random.default_rng(seed("chunks", case))
    opts = dict(padding=pad, stride_h=sh, stride_w=sw, dilation_h=dh, dilation_w=dw,
                activation=act, depth_multiplier=co)
    oh, _ = naive_out_pad(pad, h, kh, sh, dh)
    ow, _ = naive_out_pad(pad, w, kw, sw, dw)
    wshape = (1, kh, kw, cout) if depthwise else (cout, kh, kw, cin)
    c = Case(rng, dtype, (n, h, w, cin), wshape, cout, kh * kw * (1 if depthwise else cin),
             3 if depthwise else 0)
    opcode = "DEPTHWISE_CONV_2D" if depthwise else "CONV_2D"
    g = graph_of(opcode, opts, c.tensors((n, h, w, cin), (n, oh, ow, cout)), (0, 1, 2))
    x = np.concatenate([c.x] * 3)  # 6 samples
    whole = run(g, x)
    monkeypatch.setattr(conv_mod, "_CONV_CHUNK", 8)  # one sample per chunk, one row per band
    monkeypatch.setattr(conv_mod, "_DW_CHUNK", 8)
    np.testing.assert_array_equal(run(g, x), whole)
    spec = make_spec(c.real(), cout, "double", c.qo, act, dtype)
    wzp = c.qw.zp if dtype == "uint8" else 0
    np.testing.assert_array_equal(
        whole[:2].astype(np.int64),
        np.stack([naive_conv(s, c.w, c.b, c.xzp, wzp, opts, spec, depthwise) for s in c.x]))


def test_average_pool_rounds_ties_away_from_zero() -> None:
    q = QuantParams(np.float32(0.1), 0)
    dt = np.dtype(np.int8)
    opts = dict(padding="VALID", stride_h=1, stride_w=1, filter_h=1, filter_w=2,
                activation="NONE")
    g = graph_of("AVERAGE_POOL_2D", opts, [Tensor(0, "x", (1, 1, 2, 4), dt, q),
                                           Tensor(1, "y", (1, 1, 1, 4), dt, q)], (0,), (1,))
    x = np.array([[[[[3, -3, 2, -2], [4, -4, 2, -2]]]]], np.int8)  # sums 7, -7, 4, -4 over 2
    np.testing.assert_array_equal(run(g, x)[0, 0, 0, 0], [4, -4, 2, -2])


# ------------------------------------------------------------------------------------------
# Requantizer: the exact float64 shortcut equals the integer primitives


@pytest.mark.parametrize("bits,path", [(16, "f64"), (26, "i64")])
@pytest.mark.parametrize("rounding", ["double", "single"])
@pytest.mark.parametrize("dtype,zp,act_lo", [("uint8", 131, 0), ("int8", -7, -128),
                                             ("int8", -7, -7), ("uint8", 0, 0)])
def test_requantizer_shortcuts_equal_integer_primitives(rounding, dtype, zp, act_lo, bits,
                                                        path) -> None:
    rng = np.random.default_rng(7)
    reals = np.concatenate([rng.uniform(1e-4, 0.9, 12), [0.5, 0.25, 1.0, 1.7, 3.2, 2.0**-12]])
    m, s = quantize_multiplier(reals, rounding)
    n = len(reals)
    bias = rng.integers(-20_000, 20_000, n)
    hi = RANGE[dtype][1]
    r = Requantizer(m, s, bias, zp, act_lo, hi, np.dtype(dtype), rounding, bound=1 << bits)
    assert r.path == path
    acc = rng.integers(-(1 << bits), 1 << bits, size=(4000, n))
    acc[:40] = np.arange(-20, 20)[:, None] - bias  # accumulators at and around zero
    acc[40:80] = np.arange(-20, 20)[:, None] * 977  # small multiples, ties of both roundings
    want = r._reference(acc.astype(np.float64))
    for rows in (acc.astype(np.float32), acc.astype(np.float64), acc):
        if rows.dtype == np.float32 and bits > 23:
            continue
        got = r(rows)
        np.testing.assert_array_equal(got, want)
    assert got.dtype == np.dtype(dtype)
    assert len(np.unique(want)) > 50


def test_requantizer_rounds_double_rounding_ties_like_the_primitives() -> None:
    # M = 2^30 (real 0.5) and shift -4: a*0.5/16; odd a/2 then ties of the second rounding
    m, s = np.array([1 << 30]), np.array([-4])
    r = Requantizer(m, s, np.zeros(1, np.int64), 0, -128, 127, np.dtype(np.int8), "double",
                    bound=1000)
    a = np.arange(-600, 601)[:, None]
    want = mul_by_quantized_multiplier(a, m, s, "double")
    np.testing.assert_array_equal(r(a.astype(np.float64)).astype(np.int64), np.clip(want, -128,
                                                                                   127))
    # -16 -> h = -8 -> -0.5 rounds away to -1; -15 -> h = -7 (ties up) -> -0.4375 -> 0
    assert want[600 - 16, 0] == -1 and want[600 - 15, 0] == 0 and want[600 + 16, 0] == 1


def test_requantizer_falls_back_and_wraps_like_c_int32() -> None:
    m, s = quantize_multiplier(np.array([0.01]))
    bias = np.array([2**31 - 100])
    r = Requantizer(m, s, bias, 0, -128, 127, np.dtype(np.int8), "double", bound=1000)
    assert r.path == "reference"
    acc = np.array([[50.0], [150.0]])  # 2^31 - 50 fits; 2^31 + 50 wraps to a negative value
    np.testing.assert_array_equal(r(acc)[:, 0], [127, -128])


def test_wide_accumulators_use_float64_or_int64(monkeypatch) -> None:
    rng = np.random.default_rng(3)
    depth = 2048
    c = Case(rng, "uint8", (2, depth), (3, depth), 3, depth, None, fc=True)
    c.xzp, c.qi = 0, QuantParams(c.qi.s, 0)  # |x - zp| up to 255: the bound needs ~2^25
    c.qw, c.qo = QuantParams(c.qw.s, 128), QuantParams(c.qo.s, 128)
    g = graph_of("FULLY_CONNECTED", dict(activation="NONE"), c.tensors((2, depth), (2, 3)),
                 (0, 1, 2))
    spec = make_spec(c.real(), 3, "double", c.qo, "NONE", "uint8")
    want = np.stack([naive_fc(s, c.w, c.b, c.xzp, c.qw.zp, spec) for s in c.x])
    assert len(np.unique(want)) > 3
    op = g.operators[0]
    k = KERNELS[op.opcode](op, g)
    assert k.acc_dtype == np.float64 and k.requant.path == "i64"
    np.testing.assert_array_equal(run(g, c.x), want)
    monkeypatch.setattr(conv_mod, "F64_EXACT", 1 << 20)
    k = KERNELS[op.opcode](op, g)
    assert k.acc_dtype == np.int64 and k.requant.path == "i64"
    np.testing.assert_array_equal(k(c.x, None, None)[0], want)


# ------------------------------------------------------------------------------------------
# Model-level facts


def test_macs_of_mobilenet() -> None:
    g = load_tflite(ZOO / "u8_mobilenet_v1_0.25_128.tflite")
    total = sum(KERNELS[op.opcode].macs(op, g) for op in g.operators if op.opcode in KERNELS)
    assert total == 13_570_304
    first = g.operators[0]
    assert KERNELS["CONV_2D"].macs(first, g) == 64 * 64 * 8 * 27
    assert KERNELS["DEPTHWISE_CONV_2D"].macs(g.operators[1], g) == 64 * 64 * 8 * 9
    assert KERNELS["AVERAGE_POOL_2D"].macs(g.operators[27], g) == 0


def test_uint8_multiplier_uses_a_float32_product_of_scales() -> None:
    g = load_tflite(ZOO / "u8_conv_8x6x3_k3s2_same_asympad.tflite")
    op = g.operators[0]
    k = KERNELS[op.opcode](op, g)
    si, sw, so = (g.tensors[i].quant.s for i in (op.inputs[0], op.inputs[1], op.outputs[0]))
    want, _ = quantize_multiplier(np.float64(np.float32(si) * np.float32(sw)) / np.float64(so))
    assert np.all(k.multiplier == want)
    g8 = load_tflite(ZOO / "i8_conv_8x6x3_k3s2_same_asympad.tflite")
    op8 = g8.operators[0]
    k8 = KERNELS[op8.opcode](op8, g8)
    si, so = g8.tensors[op8.inputs[0]].quant.s, g8.tensors[op8.outputs[0]].quant.s
    sw = g8.tensors[op8.inputs[1]].quant.scale
    want8, _ = quantize_multiplier(np.float64(si) * sw.astype(np.float64) / np.float64(so))
    np.testing.assert_array_equal(k8.multiplier, want8)


# ------------------------------------------------------------------------------------------
# Errors


def _conv_graph(**change) -> Graph:
    rng = np.random.default_rng(0)
    c = Case(rng, "uint8", (1, 5, 5, 2), (3, 3, 3, 2), 3, 18, None)
    t = c.tensors((1, 5, 5, 2), (1, 5, 5, 3))
    for key, value in change.items():
        i, field = key.split("_", 1)
        setattr(t[int(i[1:])], field, value)
    return graph_of("CONV_2D", dict(padding="SAME", stride_h=1, stride_w=1), t, (0, 1, 2))


@pytest.mark.parametrize("change,message", [
    (dict(t0_dtype=np.dtype(np.float32)), "float32 input is not supported (float model?)"),
    (dict(t0_dtype=np.dtype(np.int16)), "input dtype int16 is not supported"),
    (dict(t0_quant=None), "has no quantization parameters"),
    (dict(t3_dtype=np.dtype(np.int8)), "input is uint8 but output is int8"),
    (dict(t1_dtype=np.dtype(np.int8)), "uint8 input needs uint8 filter"),
    (dict(t1_data=None), "non-constant filter"),
    (dict(t2_dtype=np.dtype(np.int16)), "bias must be int32"),
    (dict(t2_quant=QuantParams(np.float32(1.0), 0)), "bias scale does not match"),
    (dict(t3_shape=(1, 3, 3, 3)), "does not match the computed [1, 5, 5, 3]"),
    (dict(t1_quant=QuantParams(np.ones(3, np.float32), np.zeros(3), 0)),
     "per-channel filter quantization needs int8"),
])
def test_conv_rejects_bad_models(change, message) -> None:
    g = _conv_graph(**change)
    with pytest.raises(ModelError, match=r"operator 0 \(CONV_2D\): .*" + _re(message)):
        KERNELS["CONV_2D"](g.operators[0], g)


def _re(s: str) -> str:
    return re.escape(s)


def test_weighted_ops_reject_more_bad_models() -> None:
    g = _conv_graph()
    g.operators[0].options["activation"] = "TANH"
    with pytest.raises(ModelError, match="fused activation TANH is not supported"):
        KERNELS["CONV_2D"](g.operators[0], g)
    g = load_tflite(ZOO / "i8_dw_7x9x3_k3s2_same_mult2_relu6.tflite")
    op = g.operators[0]
    op.options["depth_multiplier"] = 3
    with pytest.raises(ModelError, match="depth_multiplier 3 disagrees"):
        KERNELS[op.opcode](op, g)
    g = load_tflite(ZOO / "i8_conv_8x6x3_k3s2_same_asympad.tflite")
    w = g.tensors[g.operators[0].inputs[1]]
    w.quant = QuantParams(w.quant.scale, np.ones(w.quant.scale.size, np.int64), 0)
    with pytest.raises(ModelError, match="must be symmetric"):
        KERNELS["CONV_2D"](g.operators[0], g)
    g = load_tflite(ZOO / "u8_fc_3x13_to5.tflite")
    g.tensors[g.operators[0].inputs[0]].shape = (3, 14)
    with pytest.raises(ModelError, match="cannot be flattened to rows of depth 13"):
        KERNELS["FULLY_CONNECTED"](g.operators[0], g)
    g = load_tflite(ZOO / "u8_avgpool_7x9x5_k3s2_same.tflite")
    y = g.tensors[g.operators[0].outputs[0]]
    y.quant = QuantParams(np.float32(0.5), y.quant.zp)
    with pytest.raises(ModelError, match="pooling does not rescale"):
        KERNELS["AVERAGE_POOL_2D"](g.operators[0], g)
