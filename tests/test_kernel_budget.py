"""Instruction budgets of the DSP (Cortex-M4) and NEON (Cortex-A53) kernels on small layers.

Keeps the kernels from regressing without timing anything: emulated instruction counts are
deterministic, so every kernel family gets a budget of instructions per MAC (per window addition
for pools, per output for ADD) on one small, MobileNet-like layer, in uint8 (per-tensor) and
int8 (per-channel), with a ReLU-like output stage (zero point at the bottom of the range) and a
general one (zero point mid-range, clamps on both sides). A layer must
- run the expected kernel family (op and ISA of its symbol: no silent portable C fallback),
- stay within its budget, and
- not be far below it (``test_budget_is_not_stale``): lower the budget when a kernel gets faster.

Correctness is tested elsewhere; the emulated outputs are still compared with the simulator here
because it is cheap. All layers of a target share one graph, so each target costs one cached
cross build (``qlane.codegen.cross.build_elf``) and one emulator.
"""

from __future__ import annotations

import math
import tempfile
import zlib
from functools import cache
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytest

try:
    import fcntl
except ImportError:  # not POSIX: concurrent workers may build the same image twice
    fcntl = None

pytest.importorskip("unicorn")
pytest.importorskip("capstone")
pytest.importorskip("elftools")
pytest.importorskip("ziglang")

from peers import merge_graphs, random_input, single_op_graph, spec  # noqa: E402
from qlane.codegen.cross import build_elf  # noqa: E402
from qlane.codegen.emit import generate  # noqa: E402
from qlane.codegen.emulate import Emulator  # noqa: E402
from qlane.codegen.estimate import layer_features  # noqa: E402
from qlane.codegen.names import parse_symbol  # noqa: E402
from qlane.codegen.targets import load_target  # noqa: E402
from qlane.sim.graph import Graph  # noqa: E402
from qlane.sim.interpreter import Interpreter  # noqa: E402
from qlane.sim.ops.conv import out_size  # noqa: E402
from qlane.sim.quant import QuantParams, activation_range  # noqa: E402


class Family(NamedTuple):
    """One small single-layer model: what it computes and the kernel symbol it must get."""

    opcode: str
    op: str  # expected op tag of the kernel symbol
    shape: tuple[int, ...]  # input (NHWC, or [rows, depth] for FULLY_CONNECTED)
    units: int  # output channels / units (= input channels for depthwise, pool, add)
    window: tuple[int, int] = (1, 1)  # filter or pool window
    stride: int = 1
    padding: str = "SAME"
    variant: str | None = None  # expected variant of the symbol (None: not checked)


FAMILIES: dict[str, Family] = {
    "pointwise": Family("CONV_2D", "conv2d", (1, 8, 8, 32), 32, variant="k1x1s1"),
    "depthwise_s1": Family("DEPTHWISE_CONV_2D", "dwconv2d", (1, 8, 8, 32), 32, (3, 3), 1,
                           variant="k3x3s1"),
    "depthwise_s2": Family("DEPTHWISE_CONV_2D", "dwconv2d", (1, 16, 16, 32), 32, (3, 3), 2,
                           variant="k3x3s2"),
    "first_conv": Family("CONV_2D", "conv2d", (1, 16, 16, 3), 8, (3, 3), 2, variant="k3x3s2"),
    "fc": Family("FULLY_CONNECTED", "fc", (1, 256), 64),
    "avgpool": Family("AVERAGE_POOL_2D", "avgpool", (1, 4, 4, 256), 256, (4, 4), 1, "VALID",
                      variant="k4x4s1"),
    "add": Family("ADD", "add", (1, 8, 8, 32), 32),
}
"""MobileNet-like layers, small enough to emulate in milliseconds: a 1x1 conv, 3x3 depthwise
stride 1 and 2, the first 3x3 stride-2 conv on 3 channels, a 256 -> 64 classifier, the global
average pool and a residual ADD (the last two have NEON kernels only)."""

ISA = {"cortex-m4": "dsp", "cortex-a53": "neon"}
"""The ISA every budgeted layer must run on, per target."""

# Budget = measured instructions per MAC (avgpool: per window addition, outputs x 16; add: per
# output) x 1.03, rounded up to 3 decimals; the measurement is the comment after each row.
# Measured on 2026-11-25 with zig 0.17.1 (the test extra pins it). Lower a budget when its kernel
# gets faster: test_budget_is_not_stale fails once a measurement drops below STALE x its budget.
# clamp "relu": zero point at the bottom of the range (uint8 0, int8 -128) and RELU6 over [0, 6],
# as every MobileNet v1 layer (the clamp is the full range); clamp "mid": zero point mid-range and
# RELU_N1_TO_1 (clamps inside the range on both sides: the general output stage).
BUDGETS: list[tuple[str, str, str, str, float]] = [
    # target        family          dtype    clamp  budget     measured
    ("cortex-m4" , "pointwise"   , "uint8", "relu", 1.497),  # 1.4533
    ("cortex-m4" , "pointwise"   , "uint8", "mid" , 1.735),  # 1.6843
    ("cortex-m4" , "pointwise"   , "int8" , "relu", 1.578),  # 1.5319
    ("cortex-m4" , "pointwise"   , "int8" , "mid" , 1.828),  # 1.7741
    ("cortex-m4" , "depthwise_s1", "uint8", "relu", 4.165),  # 4.0428
    ("cortex-m4" , "depthwise_s1", "uint8", "mid" , 5.034),  # 4.8872
    ("cortex-m4" , "depthwise_s1", "int8" , "relu", 4.413),  # 4.2840
    ("cortex-m4" , "depthwise_s1", "int8" , "mid" , 5.299),  # 5.1445
    ("cortex-m4" , "depthwise_s2", "uint8", "relu", 4.539),  # 4.4065
    ("cortex-m4" , "depthwise_s2", "uint8", "mid" , 5.366),  # 5.2091
    ("cortex-m4" , "depthwise_s2", "int8" , "relu", 4.666),  # 4.5294
    ("cortex-m4" , "depthwise_s2", "int8" , "mid" , 5.556),  # 5.3939
    ("cortex-m4" , "first_conv"  , "uint8", "relu", 2.457),  # 2.3847
    ("cortex-m4" , "first_conv"  , "uint8", "mid" , 2.724),  # 2.6440
    ("cortex-m4" , "first_conv"  , "int8" , "relu", 2.410),  # 2.3393
    ("cortex-m4" , "first_conv"  , "int8" , "mid" , 2.706),  # 2.6264
    ("cortex-m4" , "fc"          , "uint8", "relu", 1.211),  # 1.1749
    ("cortex-m4" , "fc"          , "uint8", "mid" , 1.241),  # 1.2041
    ("cortex-m4" , "fc"          , "int8" , "relu", 1.219),  # 1.1826
    ("cortex-m4" , "fc"          , "int8" , "mid" , 1.264),  # 1.2266
    ("cortex-a53", "pointwise"   , "uint8", "relu", 0.364),  # 0.3530
    ("cortex-a53", "pointwise"   , "uint8", "mid" , 0.392),  # 0.3802
    ("cortex-a53", "pointwise"   , "int8" , "relu", 0.380),  # 0.3682
    ("cortex-a53", "pointwise"   , "int8" , "mid" , 0.412),  # 0.3992
    ("cortex-a53", "depthwise_s1", "uint8", "relu", 0.461),  # 0.4471
    ("cortex-a53", "depthwise_s1", "uint8", "mid" , 0.547),  # 0.5309
    ("cortex-a53", "depthwise_s1", "int8" , "relu", 0.508),  # 0.4924
    ("cortex-a53", "depthwise_s1", "int8" , "mid" , 0.621),  # 0.6028
    ("cortex-a53", "depthwise_s2", "uint8", "relu", 0.612),  # 0.5932
    ("cortex-a53", "depthwise_s2", "uint8", "mid" , 0.703),  # 0.6823
    ("cortex-a53", "depthwise_s2", "int8" , "relu", 0.660),  # 0.6399
    ("cortex-a53", "depthwise_s2", "int8" , "mid" , 0.774),  # 0.7510
    ("cortex-a53", "first_conv"  , "uint8", "relu", 0.550),  # 0.5332
    ("cortex-a53", "first_conv"  , "uint8", "mid" , 0.584),  # 0.5663
    ("cortex-a53", "first_conv"  , "int8" , "relu", 0.557),  # 0.5405
    ("cortex-a53", "first_conv"  , "int8" , "mid" , 0.587),  # 0.5694
    ("cortex-a53", "fc"          , "uint8", "relu", 0.341),  # 0.3304
    ("cortex-a53", "fc"          , "uint8", "mid" , 0.345),  # 0.3341
    ("cortex-a53", "fc"          , "int8" , "relu", 0.294),  # 0.2847
    ("cortex-a53", "fc"          , "int8" , "mid" , 0.299),  # 0.2896
    ("cortex-a53", "avgpool"     , "uint8", "relu", 0.299),  # 0.2903
    ("cortex-a53", "avgpool"     , "uint8", "mid" , 0.309),  # 0.2991
    ("cortex-a53", "avgpool"     , "int8" , "relu", 0.364),  # 0.3528
    ("cortex-a53", "avgpool"     , "int8" , "mid" , 0.373),  # 0.3616
    ("cortex-a53", "add"         , "uint8", "relu", 4.063),  # 3.9438
    ("cortex-a53", "add"         , "uint8", "mid" , 4.966),  # 4.8208
    ("cortex-a53", "add"         , "int8" , "relu", 4.191),  # 4.0688
    ("cortex-a53", "add"         , "int8" , "mid" , 4.966),  # 4.8208
]

STALE = 0.85
"""A measurement below STALE x its budget means the budget was not lowered after a speed-up."""
SAMPLES = 2
"""Inputs per layer compared with the simulator; the instructions of the first are counted."""


# --------------------------------------------------------------------------------------------
# Layers with MobileNet-like quantization


Case = tuple[str, str, str]
"""(family, dtype, clamp)"""


def _activation_quant(dtype: str, clamp: str, rng: np.random.Generator
                      ) -> tuple[QuantParams, str]:
    """Output (or input) quantization and fused activation of a clamp style.

    ``relu``: the ReLU6 range [0, 6] over the whole 8-bit range (zero point 0 / -128), as every
    MobileNet v1 layer; ``mid``: zero point inside the range and RELU_N1_TO_1 at +-1 / 0.015,
    which clamps on both sides.
    """
    if clamp == "relu":
        return QuantParams(np.float32(6 / 255), 0 if dtype == "uint8" else -128), "RELU6"
    lo, hi = (100, 156) if dtype == "uint8" else (-28, 28)
    return QuantParams(np.float32(0.015), int(rng.integers(lo, hi))), "RELU_N1_TO_1"


def _weights(rng: np.random.Generator, shape: tuple[int, ...], dtype: str, axis: int
             ) -> tuple[np.ndarray, QuantParams]:
    """Gaussian filter values: uint8 per tensor around a zero point near 128 (about +-30), or
    int8 symmetric per channel along ``axis`` (each channel's largest magnitude 127)."""
    real = rng.normal(0.0, 1.0, shape)
    if dtype == "uint8":
        zp = int(rng.integers(110, 150))
        w = np.clip(np.round(zp + 30 * real), 0, 255).astype(np.uint8)
        return w, QuantParams(np.float32(0.02), zp)
    peak = np.abs(np.moveaxis(real, axis, -1)).reshape(-1, shape[axis]).max(axis=0)
    shape_b = [1] * len(shape)
    shape_b[axis] = shape[axis]
    w = np.round(127 * real / peak.reshape(shape_b)).astype(np.int8)
    scales = (0.02 * peak / peak.mean()).astype(np.float32)
    return w, QuantParams(scales, np.zeros(shape[axis], np.int64), axis)


def _weighted(fam: Family, dtype: str, clamp: str, rng: np.random.Generator) -> Graph:
    """CONV_2D, DEPTHWISE_CONV_2D or FULLY_CONNECTED: inputs of the clamp style (the first conv:
    an image in [-1, 1)), outputs spread over the range around its middle."""
    info = np.iinfo(np.dtype(dtype))
    if fam.opcode == "CONV_2D" and fam.shape[-1] == 3:  # image input: zero point mid-range
        qi = QuantParams(np.float32(1 / 128), 128 if dtype == "uint8" else 0)
    else:
        qi, _ = _activation_quant(dtype, clamp, rng)
    qo, act = _activation_quant(dtype, clamp, rng)
    cin, n = fam.shape[-1], fam.units
    if fam.opcode == "FULLY_CONNECTED":
        w_shape, axis, out_shape = (n, cin), 0, (fam.shape[0], n)
        options: dict[str, Any] = {}
    else:
        kh, kw = fam.window
        w_shape, axis = ((1, kh, kw, n), 3) if fam.opcode == "DEPTHWISE_CONV_2D" else \
            ((n, kh, kw, cin), 0)
        oh, ow = (out_size(fam.padding, fam.shape[i], fam.window[i - 1], fam.stride, 1)
                  for i in (1, 2))
        out_shape = (fam.shape[0], oh, ow, n)
        options = dict(padding=fam.padding, stride_h=fam.stride, stride_w=fam.stride,
                       dilation_h=1, dilation_w=1)
        if fam.opcode == "DEPTHWISE_CONV_2D":
            options["depth_multiplier"] = 1
    w, qw = _weights(rng, w_shape, dtype, axis)
    # accumulators of uniform inputs: mean and spread per channel; the bias centres them on
    # the middle of the output range and the output scale spreads them over about +-80 steps
    wo = np.moveaxis(w.astype(np.int64) - np.asarray(qw.zero_point).reshape(-1)[0], axis, 0)
    wo = wo.reshape(n, -1)
    x_mean = (info.max + info.min) / 2 - qi.zp
    acc_mean = x_mean * wo.sum(axis=1)
    acc_rms = math.sqrt(wo.shape[1] * ((info.max - info.min + 1) ** 2 - 1) / 12) * \
        float(np.sqrt(np.mean(np.square(wo.astype(np.float64)))))
    s_w = np.asarray(qw.scale, np.float64) * float(qo.s) * 80 / (float(qi.s) * 0.02 * acc_rms)
    qw = QuantParams(s_w.astype(np.float32), qw.zero_point, qw.axis)
    s_b = (np.float32(qi.s) * np.asarray(qw.scale, np.float32)).astype(np.float32)
    centre = (info.max + info.min + 1) / 2 - qo.zp  # output steps from the zero point
    bias = np.round(-acc_mean + centre * float(qo.s) / s_b.astype(np.float64)).astype(np.int64)
    bias += rng.integers(-int(acc_rms / 4) - 1, int(acc_rms / 4) + 2, n)
    qb = QuantParams(s_b.reshape(-1), np.zeros(s_b.size, np.int64), 0) if s_b.size > 1 else \
        QuantParams(s_b.reshape(1), 0)
    return single_op_graph(
        fam.opcode,
        [spec(fam.shape, dtype, qi), spec(w_shape, dtype, qw, w),
         spec((n,), np.int32, qb, bias.astype(np.int32))],
        [spec(out_shape, dtype, qo)], dict(options, activation=act))


def _pool(fam: Family, dtype: str, clamp: str, rng: np.random.Generator) -> Graph:
    """AVERAGE_POOL_2D with the same quantization in and out (MobileNet: no activation)."""
    q, act = _activation_quant(dtype, clamp, rng)
    oh, ow = (out_size(fam.padding, fam.shape[i], fam.window[i - 1], fam.stride, 1)
              for i in (1, 2))
    return single_op_graph(
        fam.opcode, [spec(fam.shape, dtype, q)], [spec((1, oh, ow, fam.units), dtype, q)],
        dict(padding=fam.padding, stride_h=fam.stride, stride_w=fam.stride,
             filter_h=fam.window[0], filter_w=fam.window[1],
             activation="NONE" if clamp == "relu" else act))


def _add(fam: Family, dtype: str, clamp: str, rng: np.random.Generator) -> Graph:
    """ADD of two same-shape tensors with different scales (a residual connection)."""
    qa, _ = _activation_quant(dtype, clamp, rng)
    qb = QuantParams(np.float32(float(qa.s) * 0.7), int(qa.zp) + (0 if clamp == "relu" else 9))
    qo, act = _activation_quant(dtype, clamp, rng)
    return single_op_graph(fam.opcode, [spec(fam.shape, dtype, qa), spec(fam.shape, dtype, qb)],
                           [spec(fam.shape, dtype, qo)], dict(activation=act))


def case_graph(family: str, dtype: str, clamp: str) -> Graph:
    """The single-layer model of a case, from a seed of its own (other cases do not shift it)."""
    fam = FAMILIES[family]
    rng = np.random.default_rng(zlib.crc32(f"{family}/{dtype}/{clamp}".encode()))
    build = {"AVERAGE_POOL_2D": _pool, "ADD": _add}.get(fam.opcode, _weighted)
    return build(fam, dtype, clamp, rng)


# --------------------------------------------------------------------------------------------
# Measurement: every case of a target in one graph, one cached build, one emulator


class Measured(NamedTuple):
    """One budgeted layer as emulated: its kernel, instructions and amount of work."""

    symbol: str
    instructions: int
    work: int  # MACs; window additions for pools; outputs for ops with neither
    unit: str
    differing: int  # output values that differ from the simulator's

    @property
    def per_unit(self) -> float:
        return self.instructions / self.work


@cache
def measure(target: str) -> dict[Case, Measured]:
    """Every budgeted layer of ``target`` emulated on the simulator's inputs (once per process)."""
    cases = [(f, d, c) for t, f, d, c, _ in BUDGETS if t == target]
    graph, first_op = merge_graphs([case_graph(*case) for case in cases], name="budget")
    rng = np.random.default_rng(1)
    inputs = [random_input(rng, graph.tensors[i].shape, graph.tensors[i].dtype, SAMPLES)
              for i in graph.inputs]
    tensors = Interpreter(graph).run(inputs, keep=True).tensors
    tg = load_target(target)
    project = generate(graph, tg)
    root = Path(tempfile.gettempdir()) / "qlane-cross"  # build_elf's default, cached by content
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f"budget-{target}.lock", "w") as lock:
        if fcntl is not None:  # pytest-xdist workers wait for one build instead of racing
            fcntl.flock(lock, fcntl.LOCK_EX)
        elf = build_elf(project, tg, root)
    emu = Emulator(elf, tg)
    out = {}
    for case, index in zip(cases, first_op):
        layer = project.layers[index]
        specs = [(graph.tensors[t].shape, graph.tensors[t].dtype) for t in layer.outputs]
        got, counts = emu.run_layer(index, [tensors[t] for t in layer.inputs], specs,
                                    count_samples=[0])
        differing = sum(int(np.count_nonzero(g != tensors[t]))
                        for g, t in zip(got, layer.outputs))
        features = layer_features(layer, graph)
        work, unit = int(features["macs"]), "MAC"
        if not layer.macs:
            unit = "addition" if work else "output"
            work = work or int(features["outputs"])
        out[case] = Measured(layer.symbol, counts[0]["instructions"], work, unit, differing)
    return out


def _cases() -> list[Any]:
    return [pytest.param(t, f, d, c, b, id=f"{t}-{f}-{d}-{c}") for t, f, d, c, b in BUDGETS]


# --------------------------------------------------------------------------------------------
# Tests


def test_budget_table_is_well_formed() -> None:
    keys = [row[:4] for row in BUDGETS]
    assert len(set(keys)) == len(keys), "duplicate rows in BUDGETS"
    for target, family, dtype, clamp, budget in BUDGETS:
        assert target in ISA and family in FAMILIES, (target, family)
        assert dtype in ("uint8", "int8") and clamp in ("relu", "mid"), (dtype, clamp)
        assert budget > 0


@pytest.mark.parametrize("family", list(FAMILIES))
def test_cases_have_both_output_stages(family: str) -> None:
    """"relu": zero point at the bottom, no clamp inside the range; "mid": zero point inside,
    clamps on both sides (the output stage the kernels cannot specialise away)."""
    for dtype in ("uint8", "int8"):
        info = np.iinfo(np.dtype(dtype))
        for clamp in ("relu", "mid"):
            graph = case_graph(family, dtype, clamp)
            op = graph.operators[0]
            q = graph.tensors[op.outputs[0]].quant
            lo, hi = activation_range(op.options["activation"], q, dtype)
            if clamp == "relu":
                assert (q.zp, lo, hi) == (info.min, info.min, info.max), (dtype, q.zp, lo, hi)
            else:
                assert info.min < lo < q.zp < hi < info.max, (dtype, q.zp, lo, hi)


@pytest.mark.parametrize(("target", "family", "dtype", "clamp", "budget"), _cases())
def test_kernel_within_budget(target: str, family: str, dtype: str, clamp: str,
                              budget: float) -> None:
    """The expected kernel family runs, within its instruction budget."""
    m = measure(target)[family, dtype, clamp]
    ks = parse_symbol(m.symbol)
    fam = FAMILIES[family]
    want = (fam.op, fam.variant or ks.variant, ISA[target], dtype)
    assert (ks.op, ks.variant, ks.isa, ks.dtype) == want, (
        f"{target} {family} {dtype} {clamp}: kernel {m.symbol}, expected "
        f"{' '.join(want[:2])} on {ISA[target]} (a fallback to portable C?)")
    assert m.per_unit <= budget, (
        f"{target} {family} {dtype} {clamp} ({m.symbol}): {m.per_unit:.4f} instructions per "
        f"{m.unit} > budget {budget} ({m.instructions:,} instructions / {m.work:,})")


@pytest.mark.parametrize(("target", "family", "dtype", "clamp", "budget"), _cases())
def test_budget_is_not_stale(target: str, family: str, dtype: str, clamp: str,
                             budget: float) -> None:
    """A budget more than twice the measurement hides regressions: lower it after a speed-up."""
    m = measure(target)[family, dtype, clamp]
    assert m.per_unit >= STALE * budget, (
        f"{target} {family} {dtype} {clamp} ({m.symbol}): {m.per_unit:.4f} instructions per "
        f"{m.unit} < {STALE} x budget {budget}: lower the budget in BUDGETS to "
        f"{math.ceil(m.per_unit * 1.03 * 1000) / 1000}")


@pytest.mark.parametrize("target", list(ISA))
def test_budgeted_layers_equal_the_simulator(target: str) -> None:
    """The emulated layers give the simulator's outputs, bit for bit (cheap, so checked here)."""
    bad = [f"{' '.join(case)} ({m.symbol}): {m.differing} values differ"
           for case, m in measure(target).items() if m.differing]
    assert not bad, "\n".join(bad)
