"""Portable C for CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED, AVERAGE_POOL_2D and MAX_POOL_2D.

Many independent layers share one graph (each with its own graph input and output), so one host
build covers them; `verify` compares every layer with the simulator, bit for bit, and the zoo
models' outputs are also compared with the reference runtimes' stored outputs.
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conftest import ZOO, ZOO_MODELS
from peers import merge_graphs, random_weights, single_op_graph, spec
from qlane.codegen.emit import Project, generate, write_project
from qlane.codegen.lowerings.conv import pack_blocks, window_params
from qlane.codegen.names import parse_symbol
from qlane.codegen.targets import Target, load_target
from qlane.codegen.verify import HostBuild, Report, verify
from qlane.sim import load_tflite
from qlane.sim.graph import Graph
from qlane.sim.interpreter import Interpreter
from qlane.sim.ops.conv import Window
from qlane.sim.quant import QuantParams

GENERIC = load_target("generic")
# An M-profile chip restricted to portable C: the one-row tiles of register-poor cores.
M_PROFILE_C = dataclasses.replace(load_target("cortex-m7"), isa=("c",))
SAMPLES = 2
ACTIVATIONS = ("NONE", "RELU", "RELU6", "RELU_N1_TO_1")
CHANNELS = (1, 2, 3, 4, 5, 7, 8, 9, 11, 13, 16)  # output channels: tails of blocks of 4 and 8
OPS = ("conv", "dw", "fc", "avgpool", "maxpool")
ZOO_OPS = [m for m in ZOO_MODELS if any(f"_{op}_" in m for op in OPS)]


def _failures(report: Report) -> list[str]:
    return [f"layer {r.index} {r.kernel}: {r.differing} differ, first {r.first}"
            for r in report.layers if not r.bit_exact]


def _check(report: Report, n_layers: int) -> None:
    assert len(report.layers) == n_layers
    assert report.bit_exact, _failures(report) or report.model_first


def _zoo_graph(names: list[str], name: str) -> tuple[Graph, list[np.ndarray], list[str]]:
    """Zoo models side by side in one graph; their inputs; the models in output order."""
    graphs = [load_tflite(ZOO / f"{m}.tflite") for m in names]
    merged, _ = merge_graphs(graphs, name=name)
    inputs = [np.load(ZOO / f"{m}.npz")["in0"] for m in names]
    return merged, inputs, names


def _invoke(project: Project, graph: Graph, inputs: list[np.ndarray]) -> list[np.ndarray]:
    """The whole generated model through NAME_invoke, every sample: [S, *shape] per output."""
    build = HostBuild(project)
    specs = [(graph.tensors[t].shape, np.dtype(graph.tensors[t].dtype)) for t in graph.outputs]
    runs = [build.invoke([x[s] for x in inputs], specs) for s in range(inputs[0].shape[0])]
    return [np.stack([r[k] for r in runs]) for k in range(len(graph.outputs))]


# --------------------------------------------------------------------------------------------
# (a) the zoo


def test_zoo_models_are_bit_exact_and_match_the_classic_reference() -> None:
    assert len(ZOO_OPS) == 32
    graph, inputs, names = _zoo_graph(ZOO_OPS, "zoo_conv")
    _check(verify(graph, GENERIC, inputs, rounding="double"), len(graph.operators))
    outs = _invoke(generate(graph, GENERIC, rounding="double"), graph, inputs)
    for m, got in zip(names, outs):
        want = np.load(ZOO / f"{m}.tfl214.npz")["out0"]
        np.testing.assert_array_equal(got.reshape(want.shape), want, err_msg=m)
        assert np.unique(want).size > 3, m


def test_zoo_litert_fully_connected_matches_litert() -> None:
    names = [m for m in ZOO_OPS if "_fc_" in m]
    graph, inputs, _ = _zoo_graph(names, "zoo_fc_litert")
    _check(verify(graph, GENERIC, inputs, rounding="litert"), len(names))
    project = generate(graph, GENERIC, rounding="litert")
    assert {layer.spec.rounding for layer in project.layers} == {"litert"}
    assert all("(double)acc" in project.files[f"zoo_fc_litert_l{i:03d}.c"]
               for i in range(len(names)))
    outs = _invoke(project, graph, inputs)
    differ = 0
    for m, got in zip(names, outs):
        litert = np.load(ZOO / f"{m}.npz")["out0"]
        np.testing.assert_array_equal(got.reshape(litert.shape), litert, err_msg=m)
        differ += int(np.count_nonzero(
            got.reshape(-1) != np.load(ZOO / f"{m}.tfl214.npz")["out0"].reshape(-1)))
    assert differ > 0  # the float requantization really differs from the fixed-point one


def test_zoo_single_rounding() -> None:
    names = [m for m in ZOO_OPS if any(k in m for k in (
        "_dw_7x9x3_k3s2_same_mult2", "_conv_8x6x3_k3s2_same_asympad", "_fc_4x256"))]
    assert len(names) == 6
    graph, inputs, _ = _zoo_graph(names, "zoo_single")
    _check(verify(graph, GENERIC, inputs, rounding="single"), len(names))


# --------------------------------------------------------------------------------------------
# (b) random layers on the tails


@dataclasses.dataclass
class Layer:
    """A single-op graph with its input samples."""

    graph: Graph
    x: np.ndarray
    label: str


def _act_quant(rng: np.random.Generator, dtype: np.dtype) -> QuantParams:
    info = np.iinfo(dtype)
    scale = np.float32(np.exp(rng.uniform(np.log(1e-3), np.log(0.2))))
    return QuantParams(scale, int(rng.integers(info.min, info.max + 1)))


def _out_quant(rng: np.random.Generator, dtype: np.dtype, scale_acc: float, typical: float,
               activation: str, extreme: bool | float) -> QuantParams:
    """Spread typical accumulators over a few dozen output steps (extreme: 1e-3 .. 1e5 off;
    a number: that factor)."""
    scale = scale_acc * typical / 40 * float(np.exp(rng.uniform(np.log(0.25), np.log(4.0))))
    if activation == "RELU6":
        scale = min(scale, 0.3)
    elif activation == "RELU_N1_TO_1":
        scale = min(scale, 0.05)
    if extreme is True:
        scale *= float(rng.choice([1e-3, 1e3, 1e5]))
    elif extreme:
        scale *= float(extreme)
    info = np.iinfo(dtype)
    return QuantParams(np.float32(scale), int(rng.integers(info.min // 2, info.max // 2 + 1)))


def _bias(rng: np.random.Generator, n: int, s_in: float, s_w: np.ndarray, typical: float,
          centre: np.ndarray, wide: bool) -> tuple[np.ndarray, QuantParams]:
    """int32 bias centring the accumulators; ``wide``: some channels next to +-2^31, so that
    the sums wrap around int32 as in TFLite's C."""
    scales = (np.float32(s_in) * np.asarray(s_w, np.float32)).astype(np.float32)
    quant = (QuantParams(scales.reshape(1), 0) if scales.size == 1
             else QuantParams(scales, np.zeros(scales.size, np.int64), 0))
    b = rng.integers(-int(typical) - 1, int(typical) + 2, n) + np.round(centre)
    if wide:
        b[::2] = np.where(rng.random(b[::2].size) < 0.5, 2**31 - 1 - int(typical) // 4,
                          -(2**31) + int(typical) // 4)
    return np.clip(b, -(2**31), 2**31 - 1).astype(np.int32), quant


def _size(rng: np.random.Generator, padding: str, k: int, d: int) -> int:
    lo = (k - 1) * d + 1 if padding == "VALID" else 1
    return int(rng.integers(lo, lo + 9))


def conv_layer(rng: np.random.Generator, depthwise: bool, dtype: np.dtype,
               extreme: bool | float = False, wide: bool = False) -> Layer:
    """A random CONV_2D or DEPTHWISE_CONV_2D: odd sizes, channel tails, stride, dilation,
    SAME/VALID, batch, multiplier, every activation, optional bias. ``extreme``: output scale
    off by a random (or this) factor; ``wide``: biases next to +-2^31."""
    padding = "SAME" if rng.random() < 0.6 else "VALID"
    k = int(rng.integers(1, 5)), int(rng.integers(1, 5))
    s = int(rng.integers(1, 4)), int(rng.integers(1, 3))
    d = (1, 1) if rng.random() < 0.6 else (int(rng.integers(1, 4)), int(rng.integers(1, 3)))
    h, w = _size(rng, padding, k[0], d[0]), _size(rng, padding, k[1], d[1])
    batch = 2 if rng.random() < 0.25 else 1
    cin = int(rng.integers(1, 13 if rng.random() < 0.8 else 41))
    mult = int(rng.integers(1, 4)) if depthwise else 1
    cout = cin * mult if depthwise else int(rng.choice(CHANNELS))
    activation = ACTIVATIONS[int(rng.integers(0, 4))]
    in_q = _act_quant(rng, dtype)
    w_shape = (1, *k, cout) if depthwise else (cout, *k, cin)
    axis = 3 if depthwise else 0
    weights, w_q = random_weights(rng, w_shape, dtype, axis=axis)
    if dtype == np.int8 and rng.random() < 0.2:
        w_q = QuantParams(w_q.scale[:1], w_q.zero_point[:1])
    x = rng.integers(np.iinfo(dtype).min, np.iinfo(dtype).max + 1,
                     (SAMPLES, batch, h, w, cin)).astype(dtype)
    terms = k[0] * k[1] * (1 if depthwise else cin)
    w_dev = weights.astype(np.float64) - w_q.zero_point.reshape(
        [-1 if a == axis else 1 for a in range(4)])
    x_dev = x.astype(np.float64) - in_q.zp
    typical = float(np.sqrt(terms * np.mean(x_dev**2) * np.mean(w_dev**2))) + 1
    centre = -x_dev.mean() * w_dev.sum(axis=tuple(a for a in range(4) if a != axis))
    no_bias = not wide and rng.random() < 0.15
    bias, b_q = _bias(rng, cout, float(in_q.s), w_q.scale, typical, centre, wide)
    out_q = _out_quant(rng, dtype, float(in_q.s) * float(np.mean(w_q.scale)), typical,
                       activation, extreme)
    win = Window.make(padding, (h, w), k, s, d)
    options = dict(padding=padding, stride_h=s[0], stride_w=s[1], dilation_h=d[0],
                   dilation_w=d[1], activation=activation)
    if depthwise:
        options["depth_multiplier"] = mult
    op = "DEPTHWISE_CONV_2D" if depthwise else "CONV_2D"
    graph = single_op_graph(
        op,
        [spec([batch, h, w, cin], dtype, in_q), spec(w_shape, dtype, w_q, weights),
         None if no_bias else spec([cout], np.int32, b_q, bias)],
        [spec([batch, win.oh, win.ow, cout], dtype, out_q)], options)
    return Layer(graph, x, f"{op} {dtype.name} {[batch, h, w, cin]} {w_shape} {options}")


def fc_layer(rng: np.random.Generator, dtype: np.dtype, extreme: bool | float = False,
             wide: bool = False) -> Layer:
    """A random FULLY_CONNECTED: unit tails, odd rows, keep_num_dims, flattening, per-tensor
    int8 weights (with a zero point), optional bias."""
    units = int(rng.choice(CHANNELS))
    depth = int(rng.integers(1, 40 if rng.random() < 0.8 else 300))
    shape: list[int]
    keep = bool(rng.random() < 0.25)
    if keep:
        shape = [int(rng.integers(1, 3)), int(rng.integers(1, 4)), depth]
    elif rng.random() < 0.3:  # flattened: [2, 3, depth/2] style inputs
        rows = int(rng.integers(1, 4))
        depth = 2 * max(depth // 2, 1)
        shape = [rows, 2, depth // 2]
    else:
        shape = [int(rng.integers(1, 6)), depth]
    rows = int(np.prod(shape)) // depth
    out_shape = [*shape[:-1], units] if keep else [rows, units]
    activation = ACTIVATIONS[int(rng.integers(0, 4))]
    in_q = _act_quant(rng, dtype)
    weights, w_q = random_weights(rng, (units, depth), dtype, axis=0)
    if dtype == np.int8 and rng.random() < 0.4:
        w_q = QuantParams(w_q.scale[:1], np.array([int(rng.integers(-5, 6))]))
    x = rng.integers(np.iinfo(dtype).min, np.iinfo(dtype).max + 1,
                     (SAMPLES, *shape)).astype(dtype)
    w_dev = weights.astype(np.float64) - w_q.zero_point.reshape(-1, 1)
    x_dev = x.astype(np.float64) - in_q.zp
    typical = float(np.sqrt(depth * np.mean(x_dev**2) * np.mean(w_dev**2))) + 1
    no_bias = not wide and rng.random() < 0.15
    bias, b_q = _bias(rng, units, float(in_q.s), w_q.scale, typical,
                      -x_dev.mean() * w_dev.sum(axis=1), wide)
    out_q = _out_quant(rng, dtype, float(in_q.s) * float(np.mean(w_q.scale)), typical,
                       activation, extreme)
    options = dict(activation=activation, keep_num_dims=keep)
    graph = single_op_graph(
        "FULLY_CONNECTED",
        [spec(shape, dtype, in_q), spec([units, depth], dtype, w_q, weights),
         None if no_bias else spec([units], np.int32, b_q, bias)],
        [spec(out_shape, dtype, out_q)], options)
    return Layer(graph, x, f"FC {dtype.name} {shape} units={units} {options}")


def pool_layer(rng: np.random.Generator, average: bool, dtype: np.dtype) -> Layer:
    """A random AVERAGE_POOL_2D or MAX_POOL_2D whose fused clamps bite."""
    padding = "SAME" if rng.random() < 0.6 else "VALID"
    k = int(rng.integers(1, 5)), int(rng.integers(1, 5))
    s = int(rng.integers(1, 4)), int(rng.integers(1, 3))
    h, w = _size(rng, padding, k[0], 1), _size(rng, padding, k[1], 1)
    batch, c = (2 if rng.random() < 0.25 else 1), int(rng.integers(1, 20))
    activation = ACTIVATIONS[int(rng.integers(0, 4))]
    info = np.iinfo(dtype)
    q = QuantParams(np.float32(np.exp(rng.uniform(np.log(1e-3), np.log(0.05)))),
                    int(rng.integers(info.min + 96, info.max - 95)))
    win = Window.make(padding, (h, w), k, s, (1, 1))
    options = dict(padding=padding, stride_h=s[0], stride_w=s[1], filter_h=k[0],
                   filter_w=k[1], activation=activation)
    op = "AVERAGE_POOL_2D" if average else "MAX_POOL_2D"
    graph = single_op_graph(op, [spec([batch, h, w, c], dtype, q)],
                            [spec([batch, win.oh, win.ow, c], dtype, q)], options)
    x = rng.integers(info.min, info.max + 1, (SAMPLES, batch, h, w, c)).astype(dtype)
    return Layer(graph, x, f"{op} {dtype.name} {[batch, h, w, c]} {options}")


def _layers(seed: int, recipe: list[tuple[int, Callable[..., Layer], dict[str, Any]]]
            ) -> list[Layer]:
    """``count`` layers per (count, factory, kwargs), alternating uint8 and int8."""
    rng = np.random.default_rng(seed)
    out = []
    for count, make, kwargs in recipe:
        for i in range(count):
            dtype = np.dtype(np.uint8 if i % 2 else np.int8)
            out.append(make(rng, dtype=dtype, **kwargs))
    return out


CONV = (conv_layer, {"depthwise": False})
DW = (conv_layer, {"depthwise": True})
GRAPHS: dict[str, tuple[int, str, Target, list]] = {
    # name: (seed, rounding, target, [(count, factory, kwargs)])
    "double": (1, "double", GENERIC, [
        (6, *CONV), (6, *DW), (4, fc_layer, {}),
        (2, pool_layer, {"average": True}), (2, pool_layer, {"average": False})]),
    "single": (12, "single", GENERIC, [(6, *CONV), (6, *DW), (4, fc_layer, {})]),
    "litert": (3, "litert", GENERIC, [
        (8, fc_layer, {}), (2, fc_layer, {"wide": True}), (2, fc_layer, {"extreme": True}),
        (2, *CONV), (2, *DW)]),
    "extreme": (4, "double", GENERIC, [
        (3, conv_layer, {"depthwise": False, "extreme": True}),
        (3, conv_layer, {"depthwise": True, "extreme": True}),
        (2, fc_layer, {"extreme": True}),
        (2, conv_layer, {"depthwise": False, "wide": True}),
        (2, conv_layer, {"depthwise": True, "wide": True}),
        (2, fc_layer, {"wide": True}),
        # multipliers above one on sums that may wrap: the gemmlowp sequence itself
        (2, conv_layer, {"depthwise": False, "wide": True, "extreme": 1e-4}),
        (2, fc_layer, {"wide": True, "extreme": 1e-4})]),
    "extreme_single": (5, "single", GENERIC, [
        (2, conv_layer, {"depthwise": False, "extreme": True}),
        (2, conv_layer, {"depthwise": True, "extreme": True}),
        (2, fc_layer, {"extreme": True}),
        (2, conv_layer, {"depthwise": False, "wide": True}),
        (2, conv_layer, {"depthwise": True, "wide": True}),
        (2, fc_layer, {"wide": True, "extreme": True})]),
    "m_profile_litert": (6, "litert", M_PROFILE_C, [
        (4, *CONV), (4, *DW), (4, fc_layer, {}), (2, pool_layer, {"average": True})]),
}


def _graph(name: str) -> tuple[Graph, list[np.ndarray], list[Layer]]:
    seed, _, _, recipe = GRAPHS[name]
    layers = _layers(seed, recipe)
    graph, _ = merge_graphs([layer.graph for layer in layers], name=f"rand_{name}")
    return graph, [layer.x for layer in layers], layers


@pytest.mark.parametrize("name", list(GRAPHS))
def test_random_layers_are_bit_exact(name: str) -> None:
    _, rounding, target, _ = GRAPHS[name]
    graph, inputs, layers = _graph(name)
    report = verify(graph, target, inputs, rounding=rounding)
    assert len(report.layers) == len(layers)
    bad = [f"{layers[r.index].label}: {r.differing} differ, first {r.first}"
           for r in report.layers if not r.bit_exact]
    assert not bad, "\n".join(bad)
    assert report.model_bit_exact, report.model_first

    # the cases exercise the arithmetic: most outputs vary, and the code paths are all there
    outs = Interpreter(graph, rounding).run(inputs).outputs
    varied = sum(np.unique(o).size > 2 for o in outs)
    assert varied >= (0.3 if "extreme" in name else 0.7) * len(outs), (varied, len(outs))
    project = generate(graph, target, rounding=rounding)
    params = [layer.kernel.params for layer in project.layers]
    if name.startswith("extreme"):
        assert sum(p.get("wide", False) for p in params) >= 5
        kinds = {p["q"]["kind"] for p in params}
        assert kinds == ({"single", "double"} if "single" in name else {"double", "gemmlowp"})
    else:
        assert any(p.get("border") for p in params) and any(p.get("interior") for p in params)
        per_channel = [p["q"]["per_channel"] for p in params if "q" in p]
        assert 3 <= sum(per_channel) < len(per_channel)
        assert any(p.get("tail") for p in params) and any(p.get("n_full") for p in params)
    tiles = {parse_symbol(layer.symbol).tile for layer in project.layers}
    assert tiles <= ({"1x4", "1x8"} if target is M_PROFILE_C else {"1x4", "2x4", "1x8"})


# --------------------------------------------------------------------------------------------
# Folding and packing, and the C itself


def test_weight_packing_and_interior_ranges() -> None:
    w = np.arange(6 * 5).reshape(6, 5)
    packed = pack_blocks(w, 4)
    np.testing.assert_array_equal(packed[:20].reshape(5, 4), w[:4].T)
    np.testing.assert_array_equal(packed[20:].reshape(5, 2), w[4:].T)
    # 3x3 SAME stride 2 on 8 rows: top pad 0, bottom 1; rows 0..2 interior, row 3 clipped
    geo = window_params(Window.make("SAME", (8, 7), (3, 3), (2, 2), (1, 1)), 8, 7)
    assert (geo["TOP"], geo["oy_lo"], geo["oy_hi"], geo["OH"]) == (0, 0, 3, 4)
    assert (geo["LEFT"], geo["ox_lo"], geo["ox_hi"], geo["OW"]) == (1, 1, 3, 4)
    assert geo["border"] and geo["interior"]
    geo = window_params(Window.make("VALID", (9, 7), (3, 2), (1, 1), (2, 2)), 9, 7)
    assert not geo["border"] and (geo["oy_hi"], geo["ox_hi"]) == (5, 5)


def test_kernel_names_and_folded_constants() -> None:
    graph = load_tflite(ZOO / "u8_dw_7x9x3_k3s2_same_mult2_relu6.tflite")
    project = generate(graph, GENERIC, name="m", rounding="single")
    spec_ = parse_symbol(project.layers[0].symbol)
    assert (spec_.op, spec_.variant, spec_.tile, spec_.rounding) == \
        ("dwconv2d", "k3x3s2m2", "1x8", "single")
    text = project.files["m_l000.c"]
    # the uint8 depthwise kernel keeps double rounding under "single" (TFLite's quirk)
    assert project.layers[0].kernel.params["q"]["kind"] == "double"
    assert "/* qlane_requant_double (multiplier and shift per tensor) folded" in text
    consts = {c.suffix: c.values for c in project.layers[0].kernel.consts}
    w = graph.tensors[graph.operators[0].inputs[1]]
    b = graph.tensors[graph.operators[0].inputs[2]]
    woff = w.data.reshape(9, 6).astype(np.int64) - w.quant.zp
    np.testing.assert_array_equal(consts["w"], woff)
    zpi = graph.tensors[graph.operators[0].inputs[0]].quant.zp
    np.testing.assert_array_equal(consts["bi"], b.data - zpi * woff.sum(axis=0))
    np.testing.assert_array_equal(consts["bb"], b.data)
    assert consts["w"].dtype == np.int16

    graph = load_tflite(ZOO / "i8_conv_12x10x16_k3_same_to24.tflite")
    layer = generate(graph, GENERIC, name="m").layers[0]
    assert parse_symbol(layer.symbol).variant == "k3x3s1"
    consts = {c.suffix: c.values for c in layer.kernel.consts}
    assert consts["w"].dtype == np.int8 and consts["m"].size == 24 and consts["s"].size == 24


def test_generated_c_is_warning_free_and_freestanding(tmp_path: Path) -> None:
    """-Wall -Wextra -Wpedantic clean, and no call to anything (no libm, no libc)."""
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        pytest.skip("no C compiler")
    sources = []
    for name, keep in (("m_profile_litert", (0, 4, 8, 9, 12)), ("extreme", (0, 3, 9, 11, 13))):
        _, rounding, target, _ = GRAPHS[name]
        graph, _, _ = _graph(name)
        project = generate(graph, target, rounding=rounding)
        write_project(project, tmp_path / name)
        sources += [str(tmp_path / name / f"rand_{name}_l{i:03d}.c") for i in keep]
    texts = [Path(s).read_text() for s in sources]
    kinds = {t.split("from template ")[1].split(" ")[0] for t in texts}
    assert kinds == {"c/conv2d.c.j2", "c/dwconv2d.c.j2", "c/fc.c.j2", "c/pool.c.j2"}
    assert sum("int64_t a00" in t for t in texts) >= 2  # wrapping int64 accumulators
    assert sum("(double)acc" in t for t in texts) >= 2  # LiteRT's float requantization
    subprocess.run([cc, "-std=c99", "-O2", "-Wall", "-Wextra", "-Wpedantic", "-Wshadow",
                    "-Werror", "-c", *sources], cwd=tmp_path, check=True, capture_output=True)
    nm = shutil.which("nm")
    if nm:
        undefined = subprocess.run([nm, "-u", *tmp_path.glob("*.o")], capture_output=True,
                                   text=True, check=True).stdout.split()
        assert not [s for s in undefined if not s.endswith(":") and s != "U"], undefined
