"""Random single-op models, bit for bit against peer runtimes.

CONV_2D, DEPTHWISE_CONV_2D, AVERAGE_POOL_2D and MAX_POOL_2D against LiteRT's reference kernels
(classic double rounding); int8 FULLY_CONNECTED against TFLite Micro (double rounding) and
against LiteRT (``rounding="litert"``, float requantization); uint8 FULLY_CONNECTED against
LiteRT (``rounding="litert"``). The ``*_extreme`` suites push the output scale far out (tiny or
huge multipliers). Every case has its own seeded generator, so a failing id reproduces alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest

from peers import (
    random_activation_quant,
    random_bias,
    random_input,
    random_weights,
    run_litert,
    run_tflm,
    single_op_graph,
    spec,
)
from qlane.sim import Graph, Interpreter, QuantParams, load_tflite
from qlane.sim.writer import write_tflite

SEED = 20240611
SAMPLES = 4
ACTIVATIONS = ("NONE", "RELU", "RELU6", "RELU_N1_TO_1")
# Largest output scale per fused activation, so that its clamp spans several steps.
_ACTIVATION_CAP = {"RELU6": 0.3, "RELU_N1_TO_1": 0.05}


@dataclass
class Case:
    """A random single-op model, its inputs and what it is compared with."""

    graph: Graph
    inputs: list[np.ndarray]
    peer: str  # "litert" or "tflm"
    rounding: str
    label: str


def _rng(op: str, case: int) -> np.random.Generator:
    return np.random.default_rng([SEED, sum(map(ord, op)), case])


def _out_size(size: int, k: int, stride: int, dilation: int, padding: str) -> int:
    if padding == "SAME":
        return -(-size // stride)
    return -(-(size - (k - 1) * dilation) // stride)


def _spatial(rng: np.random.Generator, padding: str, k: tuple[int, int], dil: tuple[int, int],
             ) -> tuple[int, int]:
    """Random odd-ish input height and width large enough for a VALID window."""
    hw = []
    for kk, d in zip(k, dil):
        lo = (kk - 1) * d + 1 if padding == "VALID" else 1
        hw.append(int(rng.integers(lo, lo + 10)))
    return hw[0], hw[1]


def _bias_and_output(rng: np.random.Generator, dtype: np.dtype, in_q: QuantParams,
                     x: np.ndarray, w_q: QuantParams, weights: np.ndarray, axis: int,
                     terms: int, activation: str) -> tuple[np.ndarray, QuantParams,
                                                           QuantParams]:
    """A bias that roughly centres the accumulators (as folded batch norms do) and output params
    spreading their typical spread over a few dozen steps; one case in twelve gets a multiplier
    above one instead (and saturates)."""
    w_dev = weights.astype(np.float64) - w_q.zero_point.reshape(
        [-1 if a == axis else 1 for a in range(weights.ndim)])
    x_dev = x.astype(np.float64) - in_q.zp
    channel_sums = w_dev.sum(axis=tuple(a for a in range(weights.ndim) if a != axis))
    typical = np.sqrt(terms * np.mean(x_dev ** 2) * np.mean(w_dev ** 2))
    bias, b_q = random_bias(rng, weights.shape[axis], float(in_q.s), w_q.scale,
                            magnitude=int(typical) + 1, offset=-x_dev.mean() * channel_sums)
    w_scale = float(np.mean(w_q.scale))
    if rng.random() < 1 / 12:
        scale = float(in_q.s) * w_scale * rng.uniform(0.3, 1.0)
    else:
        scale = float(in_q.s) * w_scale * typical / 40
        scale *= float(np.exp(rng.uniform(np.log(0.25), np.log(4.0))))
        scale = min(scale, _ACTIVATION_CAP.get(activation, scale))
    info = np.iinfo(dtype)
    out_q = QuantParams(np.float32(scale), int(rng.integers(info.min // 2, info.max // 2 + 1)))
    return bias, b_q, out_q


def _conv_case(op: str, case: int, extreme: bool = False) -> Case:
    """``extreme``: output scale 1e-3 or 1e3..1e6 times the usual (huge or vanishing
    multipliers, mostly saturated or constant outputs)."""
    rng = _rng(op + "-extreme" * extreme, case)
    dtype = np.dtype(np.uint8 if case % 2 else np.int8)
    depthwise = op == "DEPTHWISE_CONV_2D"
    padding = "SAME" if rng.random() < 0.5 else "VALID"
    k = (int(rng.integers(1, 5)), int(rng.integers(1, 5)))
    stride = (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
    dil = (1, 1) if rng.random() < 0.5 else (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
    h, w = _spatial(rng, padding, k, dil)
    batch = int(rng.integers(1, 4))
    cin = int(rng.integers(1, 65 if rng.random() < 0.1 else 8))  # sometimes long sums
    mult = int(rng.integers(1, 4)) if depthwise else 1
    cout = cin * mult if depthwise else int(rng.integers(1, 9))
    activation = ACTIVATIONS[int(rng.integers(0, 4))]

    in_q = random_activation_quant(rng, dtype)
    w_shape = (1, *k, cout) if depthwise else (cout, *k, cin)
    axis = 3 if depthwise else 0
    weights, w_q = random_weights(rng, w_shape, dtype, axis=axis)
    if dtype == np.int8 and rng.random() < 0.2:  # int8 with one weight scale
        w_q = QuantParams(w_q.scale[:1], w_q.zero_point[:1])
    terms = k[0] * k[1] * (1 if depthwise else cin)
    x = random_input(rng, [batch, h, w, cin], dtype, SAMPLES)
    bias, b_q, out_q = _bias_and_output(rng, dtype, in_q, x, w_q, weights, axis, terms,
                                         activation)
    if extreme:
        factor = float(rng.choice([1e-3, 1e3, 1e4, 1e6]))
        out_q = QuantParams(np.float32(out_q.s * factor), out_q.zp)
    oh = _out_size(h, k[0], stride[0], dil[0], padding)
    ow = _out_size(w, k[1], stride[1], dil[1], padding)

    options = dict(padding=padding, stride_h=stride[0], stride_w=stride[1], dilation_h=dil[0],
                   dilation_w=dil[1], activation=activation)
    if depthwise:
        options["depth_multiplier"] = mult
    graph = single_op_graph(
        op,
        [spec([batch, h, w, cin], dtype, in_q, name="input"),
         spec(w_shape, dtype, w_q, weights, name="weights"),
         spec([cout], np.int32, b_q, bias, name="bias")],
        [spec([batch, oh, ow, cout], dtype, out_q, name="output")],
        options,
    )
    label = f"{dtype.name} in={[batch, h, w, cin]} w={list(w_shape)} {options}"
    return Case(graph, [x], "litert", "double", label)


def _pool_case(op: str, case: int) -> Case:
    rng = _rng(op, case)
    dtype = np.dtype(np.uint8 if case % 2 else np.int8)
    padding = "SAME" if rng.random() < 0.5 else "VALID"
    k = (int(rng.integers(1, 5)), int(rng.integers(1, 5)))
    stride = (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
    h, w = _spatial(rng, padding, k, (1, 1))
    batch, c = int(rng.integers(1, 4)), int(rng.integers(1, 8))
    activation = ACTIVATIONS[int(rng.integers(0, 4))]
    info = np.iinfo(dtype)
    q = QuantParams(random_activation_quant(rng, dtype, 1e-3, 0.05).scale,
                    int(rng.integers(info.min + 96, info.max - 95)))  # fused clamps bite
    oh = _out_size(h, k[0], stride[0], 1, padding)
    ow = _out_size(w, k[1], stride[1], 1, padding)
    options = dict(padding=padding, stride_h=stride[0], stride_w=stride[1], filter_h=k[0],
                   filter_w=k[1], activation=activation)
    graph = single_op_graph(op, [spec([batch, h, w, c], dtype, q, name="input")],
                            [spec([batch, oh, ow, c], dtype, q, name="output")], options)
    x = random_input(rng, [batch, h, w, c], dtype, SAMPLES)
    return Case(graph, [x], "litert", "double", f"{dtype.name} in={[batch, h, w, c]} {options}")


def _fc_case(dtype: np.dtype, peer: str, rounding: str, case: int) -> Case:
    rng = _rng(f"FC-{dtype.name}-{peer}", case)
    batch, units = int(rng.integers(1, 5)), int(rng.integers(1, 17))
    depth = int(rng.integers(1, 300 if rng.random() < 0.1 else 40))  # sometimes long sums
    activation = ACTIVATIONS[int(rng.integers(0, 4))]
    keep_num_dims = bool(rng.random() < 0.2)
    lead = [batch, int(rng.integers(1, 4))] if keep_num_dims else [batch]
    no_bias = rng.random() < 0.15
    in_q = random_activation_quant(rng, dtype)
    if no_bias:  # centre the inputs instead, so that the sums still straddle zero
        mid = (int(np.iinfo(dtype).min) + int(np.iinfo(dtype).max) + 1) // 2
        in_q = QuantParams(in_q.scale, mid + int(rng.integers(-8, 9)))
    weights, w_q = random_weights(rng, (units, depth), dtype, axis=0)
    if dtype == np.int8 and rng.random() < 0.4:  # per-tensor int8 weights
        w_q = QuantParams(w_q.scale[:1], w_q.zero_point[:1])
    x = random_input(rng, [*lead, depth], dtype, SAMPLES)
    bias, b_q, out_q = _bias_and_output(rng, dtype, in_q, x, w_q, weights, 0, depth,
                                         activation)
    options = dict(activation=activation, keep_num_dims=keep_num_dims)
    graph = single_op_graph(
        "FULLY_CONNECTED",
        [spec([*lead, depth], dtype, in_q, name="input"),
         spec([units, depth], dtype, w_q, weights, name="weights"),
         None if no_bias else spec([units], np.int32, b_q, bias, name="bias")],
        [spec([*lead, units], dtype, out_q, name="output")],
        options,
    )
    label = (f"{dtype.name} in={[*lead, depth]} units={units} per-channel={w_q.per_axis} "
             f"{options}{' no-bias' if no_bias else ''}")
    return Case(graph, [x], peer, rounding, label)


def _check(case: Case) -> None:
    data = write_tflite(case.graph)
    graph = load_tflite(data)
    got = Interpreter(graph, rounding=case.rounding).run(case.inputs).outputs
    want = [_peer(case, data)]
    assert len(got) == 1
    g, w = got[0], want[0]
    assert g.dtype == w.dtype and g.shape == w.shape, (case.label, g.shape, w.shape)
    diff = np.flatnonzero(g.astype(np.int64) != w.astype(np.int64))
    assert diff.size == 0, (
        f"{case.label}: {diff.size} of {w.size} outputs differ from {case.peer} "
        f"(rounding={case.rounding}); first at flat index {diff[0]}: got {g.flat[diff[0]]}, "
        f"want {w.flat[diff[0]]}; max |diff| "
        f"{np.abs(g.astype(np.int64) - w.astype(np.int64)).max()}"
    )


N_CONV, N_DW, N_POOL, N_FC, N_EXTREME = 200, 160, 80, 80, 20

SUITES: dict[str, tuple[int, Callable[[int], Case]]] = {
    "conv": (N_CONV, lambda i: _conv_case("CONV_2D", i)),
    "dw": (N_DW, lambda i: _conv_case("DEPTHWISE_CONV_2D", i)),
    "conv_extreme": (N_EXTREME, lambda i: _conv_case("CONV_2D", i, extreme=True)),
    "dw_extreme": (N_EXTREME, lambda i: _conv_case("DEPTHWISE_CONV_2D", i, extreme=True)),
    "avgpool": (N_POOL, lambda i: _pool_case("AVERAGE_POOL_2D", i)),
    "maxpool": (N_POOL, lambda i: _pool_case("MAX_POOL_2D", i)),
    "fc_i8_tflm": (N_FC, lambda i: _fc_case(np.dtype(np.int8), "tflm", "double", i)),
    "fc_i8_litert": (N_FC, lambda i: _fc_case(np.dtype(np.int8), "litert", "litert", i)),
    "fc_u8_litert": (N_FC, lambda i: _fc_case(np.dtype(np.uint8), "litert", "litert", i)),
}
CASES = [(suite, i) for suite, (n, _) in SUITES.items() for i in range(n)]


@pytest.mark.parametrize("suite,index", CASES, ids=[f"{s}-{i:03d}" for s, i in CASES])
def test_matches_peer(suite: str, index: int) -> None:
    _check(SUITES[suite][1](index))


def _peer(case: Case, data: bytes) -> np.ndarray:
    return (run_litert if case.peer == "litert" else run_tflm)(data, case.inputs)[0]


@pytest.mark.parametrize("suite", [s for s in SUITES if not s.endswith("_extreme")])
def test_random_cases_exercise_the_arithmetic(suite: str) -> None:
    """Most cases give varied outputs that rarely saturate (else agreement would prove little)."""
    n, make = SUITES[suite]
    varied, saturated = 0, []
    for i in range(n):
        case = make(i)
        want = _peer(case, write_tflite(case.graph))
        info = np.iinfo(want.dtype)
        varied += np.unique(want).size > 1
        saturated.append(np.mean((want == info.min) | (want == info.max)))
    assert varied >= 0.85 * n, f"{suite}: only {varied} of {n} cases have varied outputs"
    assert np.mean(saturated) < 0.2, f"{suite}: {np.mean(saturated):.0%} of outputs saturate"
