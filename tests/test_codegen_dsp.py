"""Cortex-M DSP kernels (CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED) bit-exact with the simulator.

Host builds run the kernels through qlane_acle.h's portable intrinsics. Every layer these
lowerings cover must come out with isa "dsp" (a silent fallback to portable C fails the test).
Many independent layers share one graph so that each rounding mode costs one C build.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from conftest import ZOO, ZOO_MODELS, zoo_inputs
from peers import GraphBuilder, merge_graphs, random_bias, random_scale, spec, tie_graph
from qlane.codegen.emit import generate
from qlane.codegen.lowering import Context, Unsupported
from qlane.codegen.lowerings import dsp
from qlane.codegen.names import parse_symbol
from qlane.codegen.schedule import Schedule
from qlane.codegen.targets import load_target
from qlane.codegen.verify import Report, verify
from qlane.sim import load_tflite
from qlane.sim.graph import Graph
from qlane.sim.interpreter import Interpreter
from qlane.sim.ops.conv import out_size
from qlane.sim.quant import ACTIVATIONS, QuantParams

DSP_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"}
SAMPLES = 2


# --------------------------------------------------------------------------------------------
# Helpers



def _check(report: Report, graph: Graph) -> None:
    """Every layer bit-exact, the whole model too, and every conv/dw/fc layer on the DSP ISA."""
    bad = [f"layer {r.index} {r.op} ({r.kernel}): {r.differing} differ, first {r.first}"
           for r in report.layers if not r.bit_exact]
    assert not bad, "\n".join(bad)
    assert report.model_bit_exact, report.model_first
    fallback = [f"layer {r.index} {r.op}: {r.kernel}" for r in report.layers
                if r.op in DSP_OPS and r.isa != "dsp"]
    assert not fallback, "fell back to portable C:\n" + "\n".join(fallback)
    for r in report.layers:
        if r.op in DSP_OPS:
            spec_ = parse_symbol(r.kernel)
            assert spec_.isa == "dsp" and spec_.op in ("conv2d", "dwconv2d", "fc")
    assert len(report.layers) == len(graph.operators)


def _extra(opts: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``activation`` of ``extra`` into the operator's options; the rest (``zp_out``, ``dead``)
    for `Layers._tail`."""
    if "activation" in extra:
        opts["activation"] = extra.pop("activation")
    return extra


def _quant(rng: np.random.Generator, dtype: str) -> QuantParams:
    info = np.iinfo(np.dtype(dtype))
    return QuantParams(random_scale(rng, 0.01, 0.1), int(rng.integers(info.min, info.max + 1)))


def _weights(rng: np.random.Generator, shape: tuple[int, ...], dtype: str, axis: int,
             per_channel: bool, tiny: bool) -> tuple[np.ndarray, QuantParams]:
    """int8 symmetric (per channel along ``axis`` or per tensor) or uint8 with a zero point;
    ``tiny``: offset weights in {-1, 0, 1} (small accumulators for multipliers >= 0.5)."""
    if dtype == "int8":
        w = rng.integers(-1, 2, shape) if tiny else rng.integers(-127, 128, shape)
        n = shape[axis] if per_channel else 1
        q = QuantParams(random_scale(rng, 0.01, 0.03, n), np.zeros(n, np.int64),
                        axis if per_channel else 0)
        return w.astype(np.int8), q
    zp = int(rng.integers(1, 255))
    w = zp + rng.integers(-1, 2, shape) if tiny else rng.integers(0, 256, shape)
    return w.astype(np.uint8), QuantParams(random_scale(rng, 1e-3, 0.05), zp)


def _rms(v: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(v.astype(np.float64))))) if v.size else 1.0


class Layers:
    """Independent single-operator layers side by side in one graph (own input and output)."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.g = GraphBuilder()
        self.inputs: list[int] = []
        self.outputs: list[int] = []
        self.data: list[np.ndarray] = []

    def _io(self, x_shape: tuple[int, ...], dtype: str) -> tuple[int, QuantParams]:
        qi = _quant(self.rng, dtype)
        x = self.g.add(spec(x_shape, dtype, qi))
        self.inputs.append(x)
        info = np.iinfo(np.dtype(dtype))
        self.data.append(self.rng.integers(info.min, info.max + 1, (SAMPLES, *x_shape))
                         .astype(dtype))
        return x, qi

    def _tail(self, opcode: str, x: int, qi: QuantParams, w: np.ndarray, qw: QuantParams,
              w_axis: int, n_out: int, k: int, y_shape: tuple[int, ...], dtype: str,
              scale: str, bias: str, options: dict[str, Any], zp_out: int | None = None,
              dead: int = 0) -> None:
        """Bias, output quantization and the operator. ``scale``: "normal" (outputs spread over
        the range), or a fixed real multiplier class: "ge1" (left shift), "half" (e = 0),
        "quarter" (e = 1); ``bias``: "normal" or "wrap" (near +-2^31: int32 wraps);
        ``zp_out``: the output zero point (default random); ``dead``: that many first channels
        get zero weights and a bias of 2^30 (one output value, as converters leave them)."""
        rng = self.rng
        info = np.iinfo(np.dtype(dtype))
        zp_w = np.asarray(qw.zero_point, np.int64).reshape(-1)[0]
        if dead:
            w = w.copy()
            np.moveaxis(w, w_axis, 0)[:dead] = zp_w
        wo = np.moveaxis(w.astype(np.int64) - zp_w, w_axis, 0).reshape(n_out, -1)
        # the bias cancels the mean accumulator so that outputs spread around the zero point
        x_mean = (info.max + info.min) / 2 - qi.zp
        acc_mean = x_mean * wo.sum(axis=1)
        acc_rms = np.sqrt(k * ((info.max - info.min + 1) ** 2 - 1) / 12) * _rms(wo)
        # weight scales chosen for an output scale in [0.01, 0.06]: fused RELU6 and
        # RELU_N1_TO_1 then clamp inside the integer range
        s_out = float(np.exp(rng.uniform(np.log(0.01), np.log(0.06))))
        f = s_out * 40 / (float(np.mean(qw.scale)) * float(qi.s) * acc_rms)
        qw = QuantParams((qw.scale * f).astype(np.float32), qw.zero_point, qw.axis)
        s_w = np.asarray(qw.scale, np.float64)
        wi = self.g.add(spec(w.shape, dtype, qw, w))
        b, qb = random_bias(rng, n_out, float(qi.s), qw.scale, magnitude=int(acc_rms / 4) + 1,
                            offset=-acc_mean)
        if bias == "wrap":
            b = (rng.choice([-1, 1], n_out) * (2**31 - rng.integers(1, 3 * int(acc_rms) + 2,
                                                                  n_out))).astype(np.int32)
        if dead:
            b = b.copy()
            b[:dead] = 2**30
        bi = self.g.add(spec((n_out,), np.int32, qb, b))
        real_out = {"normal": s_out}
        if scale != "normal":
            target = {"ge1": 1.6, "half": 0.7, "quarter": 0.35}[scale]
            real_out[scale] = float(np.float32(qi.s) * np.float32(np.max(s_w))) / target
        zp = int(rng.integers(info.min + 64, info.max - 63))
        q_out = QuantParams(np.float32(real_out[scale]), zp if zp_out is None else zp_out)
        y = self.g.add(spec(y_shape, dtype, q_out))
        self.outputs.append(y)
        options.setdefault("activation", str(rng.choice(ACTIVATIONS, p=[0.4, 0.2, 0.2, 0.2])))
        self.g.op(opcode, [x, wi, bi], [y], **options)

    def conv(self, dtype: str, batch: int, hw: tuple[int, int], cin: int, cout: int,
             k: tuple[int, int], s: tuple[int, int] = (1, 1), d: tuple[int, int] = (1, 1),
             padding: str = "SAME", scale: str = "normal", bias: str = "normal",
             tiny: bool = False, per_channel: bool = True, **extra: Any) -> None:
        x, qi = self._io((batch, *hw, cin), dtype)
        w, qw = _weights(self.rng, (cout, *k, cin), dtype, 0, per_channel, tiny)
        oh = out_size(padding, hw[0], k[0], s[0], d[0])
        ow = out_size(padding, hw[1], k[1], s[1], d[1])
        opts = dict(padding=padding, stride_h=s[0], stride_w=s[1], dilation_h=d[0],
                    dilation_w=d[1])
        self._tail("CONV_2D", x, qi, w, qw, 0, cout, k[0] * k[1] * cin,
                   (batch, oh, ow, cout), dtype, scale, bias, opts, **_extra(opts, extra))

    def dwconv(self, dtype: str, batch: int, hw: tuple[int, int], cin: int, mult: int,
               k: tuple[int, int], s: tuple[int, int] = (1, 1), d: tuple[int, int] = (1, 1),
               padding: str = "SAME", scale: str = "normal", bias: str = "normal",
               tiny: bool = False, per_channel: bool = True, **extra: Any) -> None:
        x, qi = self._io((batch, *hw, cin), dtype)
        n = cin * mult
        w, qw = _weights(self.rng, (1, *k, n), dtype, 3, per_channel, tiny)
        oh = out_size(padding, hw[0], k[0], s[0], d[0])
        ow = out_size(padding, hw[1], k[1], s[1], d[1])
        opts = dict(padding=padding, stride_h=s[0], stride_w=s[1], dilation_h=d[0],
                    dilation_w=d[1], depth_multiplier=mult)
        self._tail("DEPTHWISE_CONV_2D", x, qi, w, qw, 3, n, k[0] * k[1],
                   (batch, oh, ow, n), dtype, scale, bias, opts, **_extra(opts, extra))

    def fc(self, dtype: str, x_shape: tuple[int, ...], units: int, scale: str = "normal",
           bias: str = "normal", tiny: bool = False, per_channel: bool = True,
           keep_num_dims: bool = False, **extra: Any) -> None:
        x, qi = self._io(x_shape, dtype)
        depth = x_shape[-1]
        w, qw = _weights(self.rng, (units, depth), dtype, 0, per_channel, tiny)
        rows = int(np.prod(x_shape)) // depth
        y_shape = (*x_shape[:-1], units) if keep_num_dims else (rows, units)
        opts = dict(keep_num_dims=keep_num_dims)
        self._tail("FULLY_CONNECTED", x, qi, w, qw, 0, units, depth, y_shape, dtype, scale,
                   bias, opts, **_extra(opts, extra))

    def add(self, dtype: str, shape: tuple[int, ...], real: float | None = None,
            activation: str | None = None) -> None:
        """ADD of two same-shape inputs; ``real``: the output stage's real multiplier
        2 max(s1, s2) / (2^20 s_out) (None: an output scale of the inputs' order, e ~ 20)."""
        rng = self.rng
        x1, q1 = self._io(shape, dtype)
        x2, q2 = self._io(shape, dtype)
        s_max = float(max(np.float32(q1.s), np.float32(q2.s)))
        s_out = (float(np.exp(rng.uniform(np.log(0.5), np.log(2.0)))) * s_max if real is None
                 else 2 * s_max / (2**20 * real))
        info = np.iinfo(np.dtype(dtype))
        q_out = QuantParams(np.float32(s_out), int(rng.integers(info.min + 32, info.max - 31)))
        y = self.g.add(spec(shape, dtype, q_out))
        self.outputs.append(y)
        act = activation or str(rng.choice(ACTIVATIONS, p=[0.4, 0.2, 0.2, 0.2]))
        self.g.op("ADD", [x1, x2], [y], activation=act)

    def graph(self, name: str) -> Graph:
        return self.g.build(self.inputs, self.outputs, name=name)


def _conv_layers(lay: Layers) -> None:
    """CONV_2D tails: channels 1..33, odd depths and widths, stride 2, padding, dilation, batch 2,
    1x1 pointwise (rows) and im2col paths, every requantization spelling."""
    for i, (cin, cout) in enumerate([(1, 1), (2, 3), (3, 5), (4, 4), (5, 7), (8, 9), (16, 6),
                                     (33, 2), (7, 33), (6, 13)]):
        dtype = ("uint8", "int8")[i % 2]
        k = [(3, 3), (1, 1), (2, 3), (3, 1), (5, 5), (1, 1), (3, 3), (1, 1), (3, 3), (2, 2)][i]
        s = [(1, 1), (1, 1), (2, 2), (1, 2), (2, 1), (2, 2), (1, 1), (1, 1), (2, 2), (1, 1)][i]
        d = [(1, 1), (1, 1), (1, 1), (2, 1), (1, 1), (1, 1), (2, 2), (1, 1), (1, 1), (1, 3)][i]
        lay.conv(dtype, 1 + i % 2, (5 + i % 3, 7 - i % 3), cin, cout, k, s, d,
                 padding=("SAME", "VALID")[(i // 2) % 2])
    lay.conv("uint8", 1, (3, 5), 1, 3, (1, 1), scale="ge1", tiny=True)  # left shift: generic
    lay.conv("int8", 2, (4, 3), 3, 5, (3, 3), bias="wrap")  # int32 wraps: 64-bit SMLAL form
    lay.conv("uint8", 1, (3, 3), 2, 2, (1, 1), scale="half", tiny=True)  # SMMULR, e = 0
    lay.conv("int8", 1, (5, 3), 4, 3, (1, 3), per_channel=False, tiny=True, scale="quarter")
    # long reductions: the 2x4 byte lanes, with a weight zero point too, and a channel of one
    # output value
    lay.conv("int8", 1, (3, 5), 130, 18, (1, 1), dead=1)
    lay.conv("uint8", 1, (2, 4), 128, 16, (1, 1))
    # RELU onto the zero point: the Cortex-M4's 2x4 assembly requantizes and stores too (two
    # channels a halfword; an odd channel count byte by byte), with byte lanes, with each
    # output doubled, uint8; with channels of one output value, which it does not compute
    # (each computed channel stored at its own place)
    lay.conv("int8", 1, (4, 5), 16, 7, (1, 1), activation="RELU", zp_out=-128)
    lay.conv("uint8", 1, (3, 6), 130, 18, (1, 1), activation="RELU", zp_out=0)
    lay.conv("int8", 1, (4, 6), 16, 9, (1, 1), activation="RELU", zp_out=-128, dead=2)
    lay.conv("int8", 1, (3, 6), 130, 20, (1, 1), activation="RELU", zp_out=-128, dead=3)
    lay.conv("uint8", 1, (3, 6), 130, 18, (1, 1), activation="RELU", zp_out=0, dead=3)
    lay.conv("int8", 1, (9, 8), 3, 8, (3, 3), (2, 2), activation="RELU", zp_out=-128)


def _dw_layers(lay: Layers) -> None:
    """DEPTHWISE_CONV_2D: channel quads and tails, depth multipliers, many filter sizes."""
    cases = [(1, 1, (3, 3)), (3, 1, (3, 3)), (4, 1, (3, 3)), (5, 1, (2, 2)), (8, 1, (5, 5)),
             (12, 1, (3, 1)), (33, 1, (3, 3)), (2, 2, (3, 3)), (3, 3, (1, 1)), (7, 1, (7, 7)),
             (16, 1, (1, 3)), (6, 1, (3, 3))]
    for i, (cin, mult, k) in enumerate(cases):
        dtype = ("int8", "uint8")[i % 2]
        s = [(1, 1), (2, 2), (1, 1), (2, 1), (1, 1), (1, 2)][i % 6]
        d = (2, 2) if i in (2, 6) else (1, 1)
        hw = ((k[0] - 1) * d[0] + 2 + i % 3, (k[1] - 1) * d[1] + 3 + (i * 3) % 4)
        lay.dwconv(dtype, 1 + (i % 3 == 1), hw, cin, mult, k, s, d,
                   padding=("SAME", "VALID")[(i // 3) % 2])
    lay.dwconv("int8", 1, (4, 5), 4, 1, (3, 3), bias="wrap")
    lay.dwconv("uint8", 1, (3, 4), 5, 1, (3, 3), scale="ge1", tiny=True)
    # per-channel exponents 1 and >= 2 mixed: single rounding takes the SMLAL form
    lay.dwconv("int8", 1, (3, 3), 8, 1, (2, 2), scale="quarter", tiny=True)
    # MobileNet's: RELU onto the zero point (the Cortex-M4 runs these rows as assembly), rows of
    # 4-pixel passes and tails, stride 1 and 2, a channel of one output value
    lay.dwconv("int8", 1, (10, 9), 8, 1, (3, 3), activation="RELU", zp_out=-128, dead=1)
    lay.dwconv("uint8", 2, (9, 17), 6, 1, (3, 3), (2, 2), activation="RELU", zp_out=0)
    lay.dwconv("int8", 1, (5, 7), 5, 1, (3, 3), activation="RELU", zp_out=-128)  # 4 + 2 + 1
    lay.dwconv("uint8", 1, (4, 3), 4, 1, (3, 3), activation="RELU", zp_out=0)  # 2 + 1 only


def _fc_layers(lay: Layers) -> None:
    """FULLY_CONNECTED: odd depths, 1..33 units, odd row counts, per-tensor int8 too."""
    for i, (rows, depth, units) in enumerate([(1, 1, 1), (1, 13, 7), (3, 5, 2), (2, 64, 33),
                                               (5, 67, 4), (1, 3, 9), (4, 31, 6)]):
        lay.fc(("uint8", "int8")[i % 2], (rows, depth), units)
    lay.fc("int8", (2, 3, 10), 5, keep_num_dims=True)
    lay.fc("int8", (3, 9), 3, per_channel=False)
    lay.fc("uint8", (1, 6), 3, scale="ge1", tiny=True)
    lay.fc("int8", (2, 17), 5, bias="wrap")
    lay.fc("uint8", (1, 40), 18)  # byte lanes: the 8-channel loop with a weight zero point
    lay.fc("int8", (1, 20), 9, dead=2)


def _requant_kinds(graph: Graph, rounding: str) -> set[str]:
    project = generate(graph, load_target("cortex-m4"), rounding=rounding)
    return {layer.kernel.params["kind"] for layer in project.layers
            if layer.op.opcode in DSP_OPS}


# --------------------------------------------------------------------------------------------
# Zoo


ZOO_DSP = [m for m in ZOO_MODELS
           if any(op.opcode in DSP_OPS for op in load_tflite(ZOO / f"{m}.tflite").operators)]


@pytest.mark.parametrize("target, rounding", [("cortex-m4", "double"), ("cortex-m7", "single")])
def test_zoo_models_bit_exact(target: str, rounding: str) -> None:
    """Every zoo model with a conv, depthwise or fully connected layer, MobileNets included."""
    assert len(ZOO_DSP) >= 26
    graphs = [load_tflite(ZOO / f"{n}.tflite") for n in ZOO_DSP]
    merged, _ = merge_graphs(graphs, name="zoo_dsp")
    inputs = [x for n in ZOO_DSP for x in zoo_inputs(n)]
    # layer by layer: the merged models' inputs crowd the M4's RAM, where the chooser would run
    # patch stages (tests/test_schedule.py); here the kernels are under test
    chip = load_target(target)
    project = generate(merged, chip, rounding=rounding, schedule=Schedule())
    _check(verify(merged, chip, inputs, rounding=rounding, project=project), merged)


# --------------------------------------------------------------------------------------------
# Randomised layers: tails, geometry and every requantization spelling


def _random_graph(seed: int, builders: list[Callable[[Layers], None]], name: str
                  ) -> tuple[Graph, list[np.ndarray]]:
    lay = Layers(seed)
    for build in builders:
        build(lay)
    return lay.graph(name), lay.data


@pytest.mark.parametrize("rounding, target", [("double", "cortex-m4"), ("single", "cortex-m7")])
def test_random_layers_bit_exact(rounding: str, target: str) -> None:
    graph, data = _random_graph(7 if rounding == "double" else 8,
                                [_conv_layers, _dw_layers, _fc_layers], f"rand_{rounding}")
    kinds = _requant_kinds(graph, rounding)
    assert {"mm", "fused", "generic"} <= kinds, kinds
    _check(verify(graph, load_target(target), data, rounding=rounding), graph)


def _add_layers(lay: Layers) -> None:
    """ADD: both dtypes, every activation, lengths with and without a tail of 1..3 and of 4
    (one step per loop iteration), batch 2, and output stages of every high-multiply variant."""
    for dtype in ("int8", "uint8"):
        for act in ACTIVATIONS:
            lay.add(dtype, (1, 4, 4, 8), activation=act)
        lay.add(dtype, (1, 3, 3, 3))
        lay.add(dtype, (1, 16, 16, 8))
        lay.add(dtype, (2, 5, 4))
        lay.add(dtype, (1, 3))
        for real in (0.7, 0.35, 0.2, 0.1):  # e = 0, 1, 2, 3
            lay.add(dtype, (1, 2, 2, 7), real=real)


def _add_variants(graph: Graph, rounding: str) -> set[tuple[str, bool]]:
    project = generate(graph, load_target("cortex-m4"), name="m", rounding=rounding)
    out = set()
    for layer in project.layers:
        assert layer.spec.isa == "dsp" and layer.spec.op == "add", layer.symbol
        out.add((layer.kernel.params["mm"], layer.kernel.params["fixup"]))
    return out


@pytest.mark.parametrize("rounding, target", [("double", "cortex-m4"), ("single", "cortex-m7")])
def test_add_layers_bit_exact(rounding: str, target: str) -> None:
    """The DSP ADD (C steps on the host) against the simulator; every output variant."""
    graph, data = _random_graph(31, [_add_layers], f"add_{rounding}")
    variants = _add_variants(graph, rounding)
    if rounding == "double":
        assert {("dbl", True), ("dbl", False), ("dbl0", False)} <= variants, variants
    else:
        assert {("smmul", False), ("smmulr", False), ("dbl0", False)} <= variants, variants
    _check(verify(graph, load_target(target), data, rounding=rounding), graph)


@pytest.mark.parametrize("rounding, target", [("double", "cortex-m4"), ("single", "cortex-m7")])
def test_add_layers_bit_exact_on_emulated_cortex_m(rounding: str, target: str) -> None:
    """The DSP ADD's assembly steps, emulated; and well under 12 instructions per element."""
    emulate = _emulate()
    graph, data = _random_graph(31, [_add_layers], f"add_emu_{rounding}")
    report = emulate.emulate_verify(graph, load_target(target), data, rounding=rounding)
    _check(report, graph)
    for layer in report.layers:
        n = int(np.prod(graph.tensors[graph.operators[layer.index].outputs[0]].shape))
        if n >= 2048:  # the tables' copy is amortised
            per = report.counts[layer.index]["instructions"] / n
            assert per < 12, f"{layer.kernel}: {per:.2f} instructions per element"


def test_add_edge_inputs_bit_exact() -> None:
    """Every pair of input bytes, extreme zero points and a scale ratio of 2^10."""
    lay = Layers(32)
    g = lay.g
    for dtype, (z1, z2, zo) in (("int8", (-128, 127, 0)), ("uint8", (0, 255, 255)),
                                ("int8", (127, -128, -128)), ("uint8", (255, 0, 0))):
        info = np.iinfo(np.dtype(dtype))
        ins = [g.add(spec((1, 256, 256), dtype, QuantParams(np.float32(s), z)))
               for s, z in ((0.05, z1), (0.05 / 1024, z2))]
        lay.inputs += ins
        v = np.arange(info.min, info.max + 1)
        a, b = np.meshgrid(v, v, indexing="ij")
        lay.data += [np.stack([a, b[::-1]])[:, None].astype(dtype),
                     np.stack([b, a[::-1]])[:, None].astype(dtype)]
        y = g.add(spec((1, 256, 256), dtype, QuantParams(np.float32(0.04), zo)))
        lay.outputs.append(y)
        g.op("ADD", ins, [y], activation="NONE")
    graph = lay.graph("add_edges")
    for rounding, target in (("double", "cortex-m4"), ("single", "cortex-m7")):
        _add_variants(graph, rounding)
        _check(verify(graph, load_target(target), lay.data, rounding=rounding), graph)


def test_add_falls_back_to_c_where_the_dsp_kernel_does_not_apply() -> None:
    """SUB, broadcasting and a constant operand run the portable C kernel."""
    lay = Layers(33)
    g = lay.g
    q = QuantParams(np.float32(0.05), 3)
    x1 = g.add(spec((1, 4, 4, 8), "int8", q))
    x2 = g.add(spec((1, 1, 1, 8), "int8", q))
    x3 = g.add(spec((1, 4, 4, 8), "int8", q))
    c = g.add(spec((1, 4, 4, 8), "int8", q, np.ones((1, 4, 4, 8), np.int8)))
    lay.inputs += [x1, x2, x3]
    outs = [g.add(spec((1, 4, 4, 8), "int8", QuantParams(np.float32(0.1), 0))) for _ in range(3)]
    g.op("ADD", [x1, x2], [outs[0]])
    g.op("SUB", [x1, x3], [outs[1]])
    g.op("ADD", [x3, c], [outs[2]])
    lay.outputs += outs
    project = generate(lay.graph("add_c"), load_target("cortex-m4"), name="m")
    assert [layer.spec.isa for layer in project.layers] == ["c", "c", "c"]


def test_litert_fully_connected_float_requantization() -> None:
    graph, data = _random_graph(9, [_fc_layers], "rand_litert")
    assert _requant_kinds(graph, "litert") == {"float"}
    _check(verify(graph, load_target("cortex-m4"), data, rounding="litert"), graph)


# --------------------------------------------------------------------------------------------
# Emulated Cortex-M: the real <arm_acle.h> intrinsics, alignment checks, instruction counts


def _emulate() -> Any:
    pytest.importorskip("ziglang")
    return pytest.importorskip("qlane.codegen.emulate")


@pytest.mark.parametrize("rounding, target", [("double", "cortex-m4"), ("single", "cortex-m7")])
def test_random_layers_bit_exact_on_emulated_cortex_m(rounding: str, target: str) -> None:
    emulate = _emulate()
    graph, data = _random_graph(7 if rounding == "double" else 8,
                                [_conv_layers, _dw_layers, _fc_layers], f"emu_{rounding}")
    report = emulate.emulate_verify(graph, load_target(target), data, rounding=rounding,
                                    count=False)
    _check(report, graph)


@pytest.mark.parametrize("band_bytes", [1, 3000])
def test_depthwise_row_kernel_over_bands(monkeypatch: pytest.MonkeyPatch, band_bytes: int
                                         ) -> None:
    """The depthwise row kernel with bands of one and of a few output rows: the rows a band
    shares with the next are moved up, padding rows and odd widths at either end."""
    monkeypatch.setattr(dsp, "DW_BAND_BYTES", band_bytes)
    monkeypatch.setattr(dsp, "DW_BAND_FLOOR", 0)
    lay = Layers(21)
    lay.dwconv("int8", 1, (9, 7), 8, 1, (3, 3))
    lay.dwconv("int8", 2, (10, 6), 5, 1, (3, 3), (2, 2))
    lay.dwconv("uint8", 1, (11, 8), 4, 1, (5, 5), (2, 1), padding="VALID")
    lay.dwconv("int8", 1, (7, 9), 12, 1, (2, 3), (1, 2))
    lay.dwconv("uint8", 1, (6, 5), 3, 1, (3, 3), bias="wrap")
    graph = lay.graph(f"dw_rows_{band_bytes}")
    project = generate(graph, load_target("cortex-m4"), name="m")
    assert {parse_symbol(layer.symbol).tile for layer in project.layers} == {f"{dsp.DW_PASS}x1"}
    _check(verify(graph, load_target("cortex-m4"), lay.data, "double"), graph)
    _check(verify(graph, load_target("cortex-m7"), lay.data, "single"), graph)


def test_depthwise_bands_take_the_arena_slack_only() -> None:
    """A depthwise layer below the arena's peak gets a wider band from the slack at its step;
    the arena is what it is with the least band plus at most `DW_BAND_FLOOR`."""
    lay = Layers(22)
    lay.dwconv("int8", 1, (24, 24), 32, 1, (3, 3))  # the arena's peak: a band of 3 rows, 5 KB
    lay.dwconv("int8", 1, (6, 6), 8, 1, (3, 3))  # rows of 128 bytes
    graph = lay.graph("dw_slack")
    target = load_target("cortex-m4")
    project = generate(graph, target, name="m")
    big, small = project.layers
    assert big.kernel.params["NB"] == 1
    assert small.kernel.params["NB"] == 6 and small.kernel.scratch_bytes == 8 * 2 * 8 * 8
    orig = (dsp.DW_BAND_BYTES, dsp.DW_BAND_FLOOR)
    try:
        dsp.DW_BAND_BYTES = dsp.DW_BAND_FLOOR = 0
        least = generate(graph, target, name="m")
    finally:
        dsp.DW_BAND_BYTES, dsp.DW_BAND_FLOOR = orig
    assert all(layer.kernel.params.get("NB", 1) == 1 for layer in least.layers)
    assert least.plan.arena_bytes <= project.plan.arena_bytes <= (
        least.plan.arena_bytes + dsp.DW_BAND_FLOOR)


def test_relu_outputs_drop_the_tie_fixup_and_stay_exact() -> None:
    """Multipliers of exactly 1/4: RELU layers round negative ties up, the others away."""
    emulate = _emulate()
    graph, xs = tie_graph()
    for target in ("cortex-m7", "cortex-m4"):
        project = generate(graph, load_target(target), graph.name, "double")
        for layer in project.layers:
            op = graph.operators[layer.index]
            relu = op.options["activation"] == "RELU"
            assert layer.kernel.params["ties_up"] == relu, layer.symbol
    _check(verify(graph, load_target("cortex-m7"), xs, "double"), graph)
    _check(emulate.emulate_verify(graph, load_target("cortex-m4"), xs, rounding="double",
                                  count=False), graph)


def test_instructions_per_mac_on_emulated_cortex_m4() -> None:
    """Guards the inner loops (measured 1.39, 4.61, 1.60, 2.80 instructions per MAC: GEMMs with
    8-bit weights widened by SXTB16 / UXTB16)."""
    emulate = _emulate()
    lay = Layers(13)
    lay.conv("int8", 1, (8, 8), 64, 64, (1, 1))  # pointwise: 4 channels x 2 pixels of SMLAD
    lay.dwconv("uint8", 1, (10, 10), 32, 1, (3, 3))  # SXTAB16 + SMLABB / SMLATT
    lay.fc("int8", (1, 256), 64)
    lay.conv("uint8", 1, (9, 9), 3, 8, (3, 3), s=(2, 2))  # first-layer shape: im2col of 27
    graph = lay.graph("perf")
    report = emulate.emulate_verify(graph, load_target("cortex-m4"), lay.data)
    _check(report, graph)
    interp = Interpreter(graph)
    limits = [1.55, 5.6, 1.75, 3.1]
    for layer, limit, sim in zip(report.layers, limits, interp.kernels):
        op = graph.operators[layer.index]
        per_mac = report.counts[layer.index]["instructions"] / type(sim).macs(op, graph)
        assert per_mac < limit, f"{layer.kernel}: {per_mac:.2f} instructions per MAC"


# --------------------------------------------------------------------------------------------
# Generation-time facts (no C build)


def test_column_layout_is_the_sxtb16_order() -> None:
    assert dsp.column_layout(4, 1).tolist() == [0, 2, 1, 3]
    assert dsp.column_layout(7, 1).tolist() == [0, 2, 1, 3, 4, 5, 6, -1]
    assert dsp.column_layout(2, 3).tolist() == [0, 1, 2, 3, 4, 5]
    assert dsp.column_layout(3, 3).tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, -1]
    for seg in range(1, 20):
        for nseg in (1, 2, 9):
            lay = dsp.column_layout(seg, nseg)
            assert lay.size % 2 == 0
            assert sorted(lay[lay >= 0].tolist()) == list(range(seg * nseg))


def test_channel_groups_cover_every_channel_once() -> None:
    for n in range(1, 34):
        groups = dsp.channel_groups(n, 4)
        assert [c for c0, size in groups for c in range(c0, c0 + size)] == list(range(n))
        assert all(size in (1, 2, 4) for _, size in groups)


def test_weights_are_packed_in_loop_order() -> None:
    """GEMM words: per 4-channel group, per column pair, one word per channel, low half first."""
    w = np.arange(1, 1 + 6 * 5).reshape(6, 5)  # K = 6, N = 5
    layout = dsp.column_layout(6, 1)  # 0 2 1 3 4 5
    words = dsp.pack_gemm_weights(w, layout, dsp.channel_groups(5, 4)).astype(np.int64)
    lo, hi = ((words & 0xFFFF) ^ 0x8000) - 0x8000, words >> 16
    assert lo[:4].tolist() == w[0, :4].tolist() and hi[:4].tolist() == w[2, :4].tolist()
    assert lo[4:8].tolist() == w[1, :4].tolist() and hi[4:8].tolist() == w[3, :4].tolist()
    assert lo[12:].tolist() == [w[0, 4], w[1, 4], w[4, 4]]
    with pytest.raises(Unsupported):
        dsp.pack_pairs(np.array([40000]), np.array([0]))


def test_weights8_words_pair_with_the_columns_as_smlad_reads_them() -> None:
    """A numpy model of the kernel: per column pair, SXTB16 / UXTB16 of each word (and of it
    rotated by 8) times the column's int16 pair, summed, equals the GEMM; every group size."""
    rng = np.random.default_rng(3)
    for signed, (lo, hi) in ((True, (-128, 128)), (False, (0, 256))):
        for seg, nseg, n, group in ((6, 1, 7, 2), (3, 9, 5, 2), (8, 1, 6, 4), (1, 1, 3, 4)):
            k = seg * nseg
            w = rng.integers(lo, hi, (k, n))
            x = rng.integers(-255, 256, k)
            layout = dsp.column_layout(seg, nseg)
            col = np.where(layout >= 0, x[np.maximum(layout, 0)], 0).reshape(-1, 2)
            groups = dsp.channel_groups(n, group)
            words = dsp.pack_gemm_weights8(w, layout, groups)
            assert words.size == sum((size + 1) // 2 for _, size in groups) * col.shape[0]
            even, odd = dsp.widen8(words, signed)
            acc, i = np.zeros(n, np.int64), 0
            for c0, size in groups:
                for j in range(col.shape[0]):
                    for c in range(c0, c0 + size, 2):
                        acc[c] += even[i] @ col[j]
                        if c + 1 < c0 + size:
                            acc[c + 1] += odd[i] @ col[j]
                        i += 1
            np.testing.assert_array_equal(acc, x @ w)


def test_random_layers_take_every_kernel_path() -> None:
    """The random layers reach each path of the Cortex-M4 kernels: the depthwise assembly
    rows, byte lanes (one pixel and 2x4), per-group records, weights copied into the arena,
    filter rows as one im2col segment, the 2x4 assembly's output stage and its loop over a
    pass's channel pairs, the depthwise band's widening assembly, and channels of one output
    value (a GEMM's are copied, not computed; a depthwise layer's get multiplier 0 and keep the
    SMMLAR form). The same layers run bit-exact
    in the emulator (`test_random_layers_bit_exact_on_emulated_cortex_m`)."""
    graph, _ = _random_graph(7, [_conv_layers, _dw_layers, _fc_layers], "paths")
    project = generate(graph, load_target("cortex-m4"), name="m")
    params = [(layer.kernel.params, layer) for layer in project.layers]
    seen = {
        "dw asm": any(isinstance(p.get("asm"), list) for p, _ in params),
        "lanes 1 pixel": any(p.get("lanes") and p.get("G") == dsp.GEMM_GROUP_LANES
                             for p, _ in params),
        "lanes 2x4": any(p.get("lanes") and p.get("G") == 2 for p, _ in params),
        "records": any(p.get("rec") for p, _ in params),
        "staged": any(p.get("stage") for p, _ in params),
        "row segments": any(p.get("rowseg") for p, _ in params),
        "2x4 output stage": any(isinstance(p.get("asm"), dict)
                                and any(a["epilogue"] for a in p["asm"].values())
                                for p, _ in params),
        "2x4 over every channel pair": any(isinstance(p.get("asm"), dict)
                                           and any(a["whole"] for a in p["asm"].values())
                                           for p, _ in params),
        "dw widening asm": any(p.get("wasm") for p, _ in params),
        "channels not computed (2x4 over every pair)": any(
            p.get("sparse") and any(a["whole"] for a in p["asm"].values()) for p, _ in params),
        "channels not computed (2x4 byte lanes)": any(
            p.get("sparse") and p["lanes"] and any(a["epilogue"] for a in p["asm"].values())
            for p, _ in params),
    }
    assert all(seen.values()), seen
    sims = Interpreter(graph).kernels
    dead = [i for i, s in enumerate(sims) if hasattr(s, "requant")
            and np.any(np.asarray(s.requant.bias) == 2**30)]
    assert len(dead) == 6
    for i in dead:
        kernel = project.layers[i].kernel
        p = kernel.params
        if p.get("sparse"):
            # not computed: its outputs are copied, the GEMM writes the other channels
            assert 0 < kernel.work < 1, i
            crow = {c.suffix: c.values for c in kernel.consts}["crow"]
            assert np.count_nonzero(crow) <= round((1 - kernel.work) * p["N"]), i
        else:
            assert p["kind"] == "mm" and not np.all(np.asarray(p["bias_values"]) != 0), i
    # neither on the dual-issue Cortex-M7: its C schedules are faster there
    m7 = generate(graph, load_target("cortex-m7"), name="m")
    assert not any(isinstance(layer.kernel.params.get("asm"), list)
                   or layer.kernel.params.get("wasm") for layer in m7.layers
                   if layer.spec.op == "dwconv2d")
    assert not any(a["epilogue"] for layer in m7.layers if layer.spec.op in ("conv2d", "fc")
                   and isinstance(layer.kernel.params.get("asm"), dict)
                   for a in layer.kernel.params["asm"].values())


def test_thumb2_add_immediates() -> None:
    """ADD's immediate: ADDW up to 4095, else a Thumb-2 modified immediate (ARM ARM A5.3.2)."""
    ok = [0, 4095, 4096, 8000, 0x1F40, 0xFF000000, 0x00AB00AB, 0xAB00AB00, 0xABABABAB, 0x3FC]
    bad = [-4, 4097, 0x1F41, 7920, 0x101 << 12, 0x00AB00AC, 2**32]
    assert all(dsp.thumb2_add_imm(v) for v in ok)
    assert not any(dsp.thumb2_add_imm(v) for v in bad)


def test_widening_assembly_stores_each_channel_plane() -> None:
    """The depthwise widening's assembly writes channel k of pixels 0-1 and 2-3 at plane k (cs
    int16 apart, planes 2-3 from r12 = r11 + 2 cs int16), and gives up where an offset does not
    fit its instruction."""
    lines = dsp.widen_asm(16, 100, True, False)
    assert lines is not None
    stores = [line for line in lines if line.startswith("str")]
    assert stores == [f"str {r}, [{b}, #{off + h}]" for off in (0, 200) for h in (0, 4)
                      for r, b in ((("r6", "r11"), ("r4", "r12")) if h == 0 else
                                   (("r5", "r11"), ("r6", "r12")))]
    assert sum(line.startswith("sxtab16") for line in lines) == 8
    assert sum(line.startswith("uxtab16") for line in dsp.widen_asm(16, 100, False, True)) == 16
    assert dsp.widen_asm(2000, 100, True, False) is None  # 3 c past LDR's offset
    assert dsp.widen_asm(16, 2046, True, False) is None  # a plane past STR's offset


def test_byte_lane_words_give_two_channels_per_widening() -> None:
    """A numpy model of the one-pixel GEMM: SMLAD of each unwidened word into a[c], SXTB16 of it
    rotated by 8 into a[c + 1], starts and ends as the template computes them (int32 wrapping
    throughout), equals the GEMM with the weights' zero point; int8 and uint8, odd channels."""
    rng = np.random.default_rng(5)

    def w32(v: Any) -> np.ndarray:
        return dsp.wrap32(np.asarray(v, np.int64))

    for signed, zw, (lo, hi) in ((True, 0, (-128, 128)), (False, 131, (0, 256))):
        for seg, n in ((8, 8), (13, 7), (6, 11)):
            w = rng.integers(lo, hi, (seg, n))
            x = rng.integers(-255, 256, seg)
            layout = dsp.column_layout(seg, 1)
            col = np.where(layout >= 0, x[np.maximum(layout, 0)], 0).reshape(-1, 2)
            groups = dsp.channel_groups(n, dsp.GEMM_GROUP_LANES)
            words = dsp.pack_gemm_weights8(w, layout, groups, dsp.lane_shift(signed))
            u = words.astype(np.int64) & 0xFFFFFFFF
            lanes = np.stack([u & 0xFFFF, u >> 16], axis=-1)
            lanes = np.where(lanes >= 2**15, lanes - 2**16, lanes)  # SMLAD's int16 lanes
            _, odd = dsp.widen8(words, True)  # SXTB16 of the word rotated by 8
            ta, tb = dsp.lane_terms(signed, zw)
            s = int(col.sum())
            acc, i = np.zeros(n, np.int64), 0
            for c0, size in groups:
                a = np.zeros(size, np.int64)
                for c in range(0, size, 2):
                    if c + 1 < size:
                        a[c + 1] = s * tb
                        a[c] = w32(s * ta + (a[c + 1] << 8))
                    else:
                        a[c] = s * ta
                for j in range(col.shape[0]):
                    for c in range(0, size, 2):
                        a[c] = w32(a[c] + lanes[i] @ col[j])
                        if c + 1 < size:
                            a[c + 1] = w32(a[c + 1] + odd[i] @ col[j])
                        i += 1
                for c in range(0, size - 1, 2):
                    a[c] = w32(a[c] - (a[c + 1] << 8))
                acc[c0:c0 + size] = a
            np.testing.assert_array_equal(acc, x @ (w - zw))


def test_uint8_gemm_folds_the_weight_zero_point() -> None:
    """uint8 weights stay raw bytes (UXTB16) and the offset is folded; int8 ones are SXTB16."""
    lay = Layers(14)
    lay.conv("uint8", 1, (6, 6), 8, 8, (1, 1))
    lay.fc("int8", (1, 16), 4)
    graph = lay.graph("w8")
    project = generate(graph, load_target("cortex-m4"), name="m")
    sims = Interpreter(graph).kernels
    conv, fc = (layer.kernel.params for layer in project.layers)
    assert conv["weights8"] and fc["weights8"] and fc["w_signed"] and fc["w_zp"] == 0
    assert conv["w_zp"] == sims[0].qw.zp


def test_oversized_depthwise_filter_is_unsupported() -> None:
    lay = Layers(11)
    lay.dwconv("int8", 1, (9, 9), 4, 1, (9, 9))
    graph = lay.graph("big_dw")
    sim = Interpreter(graph).kernels[0]
    ctx = Context(op=graph.operators[0], graph=graph, sim=sim, target=load_target("cortex-m4"),
                  rounding="double", isa="dsp")
    with pytest.raises(Unsupported, match="taps"):
        dsp.depthwise_dsp(ctx)


def test_kernel_symbols_name_variant_and_tile() -> None:
    lay = Layers(12)
    lay.conv("int8", 1, (6, 6), 8, 8, (1, 1))
    lay.conv("uint8", 1, (7, 7), 3, 6, (3, 3), s=(2, 2), d=(1, 1))
    lay.dwconv("int8", 1, (6, 6), 8, 1, (3, 3), d=(2, 2))
    lay.fc("uint8", (1, 10), 3)
    project = generate(lay.graph("names"), load_target("cortex-m4"), name="m")
    specs = [parse_symbol(layer.symbol) for layer in project.layers]
    assert [(s.op, s.variant, s.tile, s.isa) for s in specs] == [
        ("conv2d", "k1x1s1", "4x2", "dsp"), ("conv2d", "k3x3s2", "4x2", "dsp"),
        ("dwconv2d", "k3x3s1d2", "1x4", "dsp"), ("fc", "n3d10", "1x3", "dsp")]
