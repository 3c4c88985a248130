"""Helium (MVE) ADD / SUB, MAX_POOL_2D and AVERAGE_POOL_2D against the simulator: on the host
through the portable qlane_mve.h, and on QEMU's Cortex-M55 with the real arm_mve.h.

The target is the Cortex-M55 (kernel ISAs "mve", "dsp", "c"); every layer these lowerings
cover must come out with isa "mve" (a silent fallback fails the test).
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest
from test_codegen_dsp import Layers
from test_codegen_mve import _mve_target, qemu_skip_reason

from conftest import deep
from peers import spec
from qlane.codegen import qemu
from qlane.codegen.emit import generate
from qlane.codegen.emulate import emulate_verify
from qlane.codegen.lowerings.mve_elementwise import MAX_AVG_TAPS
from qlane.codegen.names import parse_symbol
from qlane.codegen.targets import Target, load_target
from qlane.codegen.verify import verify
from qlane.sim.graph import Graph
from qlane.sim.interpreter import Interpreter
from qlane.sim.ops.conv import out_size
from qlane.sim.quant import ACTIVATIONS, QuantParams
from qlane.sim.simd import MVE_INSTRUCTIONS

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))


def _pool(lay: Layers, kind: str, dtype: str, batch: int, hw: tuple[int, int], c: int,
          k: tuple[int, int], s: tuple[int, int], padding: str, act: str = "NONE") -> None:
    """One pool layer (input and output share their quantization, as the operator requires)."""
    x, qi = lay._io((batch, *hw, c), dtype)
    oh, ow = (out_size(padding, hw[i], k[i], s[i], 1) for i in (0, 1))
    y = lay.g.add(spec((batch, oh, ow, c), dtype, qi))
    lay.outputs.append(y)
    lay.g.op(kind, [x], [y], padding=padding, stride_h=s[0], stride_w=s[1], filter_h=k[0],
             filter_w=k[1], activation=act)


def _sub(lay: Layers, dtype: str, shape: tuple[int, ...], act: str) -> None:
    """SUB of two same-shape inputs (the ADD kernel, input 2's multiplier negated)."""
    x1, q1 = lay._io(shape, dtype)
    x2, _ = lay._io(shape, dtype)
    info = np.iinfo(np.dtype(dtype))
    q = QuantParams(np.float32(float(q1.s) * 1.3), int(info.min + 40))
    y = lay.g.add(spec(shape, dtype, q))
    lay.outputs.append(y)
    lay.g.op("SUB", [x1, x2], [y], activation=act)


def _add_layers(lay: Layers) -> None:
    """ADD: both dtypes, every fused activation, lengths with a tail of 1..3 (not a multiple of
    the four int32 lanes) and without, batch 2, and output multipliers of several exponents;
    SUB."""
    for dtype in ("int8", "uint8"):
        for act in ACTIVATIONS:
            lay.add(dtype, (1, 4, 4, 7), activation=act)
        lay.add(dtype, (1, 3, 3, 3))
        lay.add(dtype, (1, 8, 8, 16))
        lay.add(dtype, (2, 5, 3))
        lay.add(dtype, (1, 1))
        lay.add(dtype, (1, 6))
        for real in (0.7, 0.35, 0.2, 0.1):
            lay.add(dtype, (1, 2, 2, 7), real=real)
        _sub(lay, dtype, (1, 3, 5, 5), "RELU")


POOLS: list[tuple[str, int, tuple[int, int], int, tuple[int, int], tuple[int, int], str, str]] = [
    # (dtype, batch, hw, channels, window, stride, padding, activation)
    ("int8", 1, (7, 9), 5, (3, 3), (2, 2), "SAME", "NONE"),  # 5 channels: all predicated
    ("int8", 2, (8, 8), 19, (2, 2), (2, 2), "VALID", "NONE"),  # 16 + 3 / 2 x 8 + 3
    ("int8", 1, (6, 6), 16, (3, 3), (1, 1), "SAME", "RELU"),
    ("int8", 1, (5, 7), 33, (5, 7), (1, 1), "VALID", "RELU6"),  # global, 35 taps in a row
    ("int8", 1, (9, 6), 8, (9, 6), (1, 1), "VALID", "NONE"),  # global, 54 taps
    ("int8", 1, (4, 4), 24, (4, 4), (3, 3), "SAME", "RELU_N1_TO_1"),
    ("int8", 1, (5, 5), 12, (4, 4), (1, 1), "SAME", "NONE"),  # even windows, every count
    ("int8", 1, (3, 4), 9, (3, 3), (2, 2), "VALID", "NONE"),
    ("int8", 1, (6, 9), 20, (5, 5), (1, 1), "SAME", "NONE"),  # 25 taps: a loop over the rows
    ("uint8", 1, (7, 9), 5, (3, 3), (2, 2), "SAME", "NONE"),
    ("uint8", 2, (8, 8), 19, (2, 2), (2, 2), "VALID", "RELU6"),
    ("uint8", 1, (4, 4), 40, (4, 4), (1, 1), "VALID", "NONE"),  # MobileNet's global pool
    ("uint8", 1, (5, 5), 12, (4, 4), (1, 1), "SAME", "RELU"),
]


def _pool_layers(lay: Layers) -> None:
    """Every POOLS geometry as a max and an average pool."""
    for kind in ("MAX_POOL_2D", "AVERAGE_POOL_2D"):
        for dtype, batch, hw, c, k, s, padding, act in POOLS:
            _pool(lay, kind, dtype, batch, hw, c, k, s, padding, act)


def _graph(seed: int, name: str) -> tuple[Graph, list[np.ndarray]]:
    lay = Layers(seed)
    _add_layers(lay)
    _pool_layers(lay)
    return lay.graph(name), lay.data


def _check_all_mve(graph: Graph, target: Target, rounding: str) -> None:
    project = generate(graph, target, name="m", rounding=rounding)
    specs = [parse_symbol(layer.symbol) for layer in project.layers]
    fallback = [s for s in specs if s.isa != "mve"]
    assert not fallback, fallback
    assert {s.op for s in specs} == {"add", "sub", "maxpool", "avgpool"}


@pytest.mark.hostc
@pytest.mark.parametrize("rounding", ["double", "single"])
def test_mve_elementwise_layers_bit_exact_on_the_host(rounding: str) -> None:
    graph, data = _graph(51, f"mve_elem_{rounding}")
    target = _mve_target()
    _check_all_mve(graph, target, rounding)
    report = verify(graph, target, data, rounding=rounding)
    bad = [f"layer {r.index} {r.kernel}: {r.differing} differ, first {r.first}"
           for r in report.layers if not r.bit_exact]
    assert not bad, "\n".join(bad)
    assert report.model_bit_exact


@pytest.mark.hostc
def test_mve_add_every_input_pair_bit_exact() -> None:
    """Every pair of input bytes, extreme zero points and an input scale ratio of 2^10, both
    roundings."""
    lay = Layers(52)
    g = lay.g
    for dtype, (z1, z2, zo), act in (("int8", (-128, 127, 0), "NONE"),
                                     ("uint8", (0, 255, 255), "NONE"),
                                     ("int8", (127, -128, -128), "RELU"),
                                     ("uint8", (255, 0, 0), "RELU6")):
        info = np.iinfo(np.dtype(dtype))
        ins = [g.add(spec((1, 256, 255), dtype, QuantParams(np.float32(s), z)))
               for s, z in ((0.05, z1), (0.05 / 1024, z2))]
        lay.inputs += ins
        v = np.arange(info.min, info.max + 1)
        a, b = np.meshgrid(v, v, indexing="ij")
        lay.data += [np.stack([a[:, :255], b[::-1, :255]])[:, None].astype(dtype),
                     np.stack([b[:, 1:], a[::-1, 1:]])[:, None].astype(dtype)]
        y = g.add(spec((1, 256, 255), dtype, QuantParams(np.float32(0.04), zo)))
        lay.outputs.append(y)
        g.op("ADD", ins, [y], activation=act)
    graph = lay.graph("mve_add_edges")
    for rounding in ("double", "single"):
        project = generate(graph, _mve_target(), name="m", rounding=rounding)
        assert all(parse_symbol(x.symbol).isa == "mve" for x in project.layers)
        report = verify(graph, _mve_target(), lay.data, rounding=rounding)
        assert all(r.bit_exact for r in report.layers), [r.first for r in report.layers]


@pytest.mark.deep
def test_mve_elementwise_layers_under_address_and_undefined_sanitizers(tmp_path: Path) -> None:
    """The layers with every tensor in its own exact-size heap block under ASan and UBSan: the
    predicated tails read and write no byte outside their tensors."""
    from test_codegen_sanitize import CC, run_sanitized

    if CC is None:
        pytest.skip("no C compiler on this machine")
    graph, data = _graph(54, "san")
    project = generate(graph, _mve_target(), name="san")
    stdout = run_sanitized(project, graph, data, tmp_path, [])
    samples = data[0].shape[0]
    expected = Interpreter(graph).run(data).outputs
    got = np.frombuffer(stdout, np.uint8)
    want = np.concatenate([y[s].view(np.uint8).reshape(-1) for s in range(samples)
                           for y in expected])
    assert np.array_equal(got, want)


@pytest.mark.fast
def test_unsupported_layers_fall_back() -> None:
    """Broadcasting ADD and a constant operand (neither DSP nor MVE: portable C), and an
    average window of more than 256 taps (16-bit sums) go to the kernels beside MVE."""
    lay = Layers(53)
    g = lay.g
    q = QuantParams(np.float32(0.05), 3)
    x1 = g.add(spec((1, 4, 4, 8), "int8", q))
    x2 = g.add(spec((1, 1, 1, 8), "int8", q))
    c = g.add(spec((1, 4, 4, 8), "int8", q, np.ones((1, 4, 4, 8), np.int8)))
    lay.inputs += [x1, x2]
    outs = [g.add(spec((1, 4, 4, 8), "int8", QuantParams(np.float32(0.1), 0))) for _ in range(2)]
    g.op("ADD", [x1, x2], [outs[0]])
    g.op("ADD", [x1, c], [outs[1]])
    lay.outputs += outs
    _pool(lay, "AVERAGE_POOL_2D", "int8", 1, (17, 16), 4, (17, 16), (1, 1), "VALID")
    _pool(lay, "MAX_POOL_2D", "int8", 1, (17, 16), 4, (17, 16), (1, 1), "VALID")
    project = generate(lay.graph("fallback"), _mve_target(), name="m")
    assert [parse_symbol(x.symbol).isa for x in project.layers] == ["c", "c", "c", "mve"]
    assert 17 * 16 > MAX_AVG_TAPS


@pytest.mark.fast
def test_rounded_mean_by_vmulh_is_exact_for_every_count_and_sum() -> None:
    """The average pool's division, instruction by instruction in the lane emulator, for every
    count n <= 256 and every sum of n int8 or uint8 values: sign(s) ((|s| + n/2) / n)."""
    op = MVE_INSTRUCTIONS
    for n in range(1, MAX_AVG_TAPS + 1):
        m = -(-(1 << 30) // n)
        for unsigned in (False, True):
            lo, hi = (0, 255 * n) if unsigned else (-128 * n, 127 * n)
            s = np.arange(lo, hi + 1, dtype=np.int64)
            s = np.concatenate([s, np.full(-s.size % 8, lo)]).reshape(-1, 8)
            if unsigned:
                v = s.astype(np.uint16)
                c4 = 4 * (n // 2)
                t = [op["vaddq_n_s32"](op[f"vshll{h}q_n_u16"](v, 2).astype(np.int32),
                                       np.int32(c4)) for h in "bt"]
            else:
                v = s.astype(np.int16)
                c4, e4 = 4 * (n // 2) + 512 * n, 4 if n % 2 == 0 else 0
                t = []
                for h in "bt":
                    w = op[f"vshll{h}q_n_s16"](v, 2)
                    t.append(op["vmlaq_n_s32"](op["vaddq_n_s32"](w, np.int32(c4)),
                                               op["vshrq_n_s32"](w, 31), np.int32(e4)))
            mv = np.full((len(s), 4), m, np.uint32)
            q = [op["vmulhq_u32"](x.astype(np.uint32), mv).astype(np.int64) for x in t]
            got = np.empty_like(s)
            got[:, 0::2], got[:, 1::2] = q
            if not unsigned:
                got -= 128
            mag = (np.abs(s) + n // 2) // n
            assert np.array_equal(got, np.where(s < 0, -mag, mag)), n


# --- QEMU's Cortex-M55 with the real arm_mve.h ---------------------------------------------------


@pytest.mark.isa
@pytest.mark.parametrize("rounding, chip", [("double", "cortex-m55"), ("single", "cortex-m55"),
                                           deep("double", "cortex-m85")])
def test_mve_elementwise_layers_bit_exact_on_the_cortex_m55(rounding: str, chip: str) -> None:
    """The same layers built with zig's arm_mve.h for the Cortex-M55 (and tuned for the M85,
    whose code runs on the same instruction set) and run on QEMU's mps3-an547 Cortex-M55, each
    layer and the whole model: every output byte of every sample equals the simulator's."""
    if reason := qemu_skip_reason():
        pytest.skip(reason)
    graph, data = _graph(51, f"mve_elem_{rounding}")
    report = emulate_verify(graph, load_target(chip), data, rounding=rounding)
    bad = [f"layer {r.index} {r.kernel}: {r.differing} differ, first {r.first}"
           for r in report.layers if not r.bit_exact]
    assert not bad, "\n".join(bad)
    assert report.model_bit_exact, report.model_first
    assert all(r.isa == "mve" for r in report.layers), [r.kernel for r in report.layers]


@pytest.mark.isa
def test_mve_kernels_take_fewer_instructions_than_dsp_and_c_on_the_cortex_mve_target() -> None:
    """QEMU M55 instructions per output element (measured when written: ADD 9.1 DSP -> 4.25 MVE,
    max pool 2x2 1.06 C -> 0.56, global average pool 8x8 140 C -> 19.2)."""
    reason = qemu.available()
    if reason:
        pytest.skip(reason)
    import mve_elementwise as bench

    m55 = _mve_target()
    before = dataclasses.replace(m55, isa=("dsp", "c"))
    for graph, old_isa, most in (
        (bench.add_graph((1, 16, 16, 32), "int8", "RELU"), "dsp", 4.5),
        (bench.pool_graph("MAX_POOL_2D", (32, 32), 32, (2, 2), (2, 2), "VALID", "int8"), "c",
         0.6),
        (bench.pool_graph("AVERAGE_POOL_2D", (8, 8), 64, (8, 8), (1, 1), "VALID", "int8"), "c",
         20.0),
    ):
        n = int(np.prod(graph.tensors[graph.outputs[0]].shape))
        fa, a = bench.count(graph, before)
        fb, b = bench.count(graph, m55)
        assert parse_symbol(fa).isa == old_isa and parse_symbol(fb).isa == "mve"
        assert b / n <= most and b < a, (fb, a / n, b / n)
