"""NEON kernels (qlane.codegen.lowerings.neon) on the host through SIMDe, against the simulator.

Builds are expensive (every layer file parses SIMDe), so many independent layers share one graph
and one build: the zoo's single-op models merged per run, and randomised graphs of about twenty
layers aimed at the tails (channels 1..33, odd sizes, stride, padding, dilation, batch 2, both
dtypes, every fused activation, double and single rounding).

The randomised graphs also run on the real instruction set: compiled for AArch64 by clang
(``zig cc``) and executed in unicorn's Cortex-A72 with guard pages. MobileNet and the whole zoo
on NEON are in ``test_codegen_zoo``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conftest import ZOO, ZOO_MODELS, deep
from peers import (
    GraphBuilder,
    merge_graphs,
    random_activation_quant,
    random_bias,
    random_input,
    random_weights,
    spec,
    tie_graph,
)
from qlane.codegen.emit import Project, generate, write_project
from qlane.codegen.lowering import LOWERINGS, Context, Unsupported
from qlane.codegen.lowerings.neon import (
    _div_magic,
    add_sub_neon,
    depthwise_neon,
    fully_connected_neon,
)
from qlane.codegen.targets import load_target
from qlane.codegen.verify import Report, verify
from qlane.sim import load_tflite
from qlane.sim.graph import Graph
from qlane.sim.interpreter import Interpreter
from qlane.sim.quant import ACTIVATIONS, QuantParams

TARGET = load_target("cortex-a72")
RANGE = {"uint8": (0, 255), "int8": (-128, 127)}
NEON_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "ADD", "SUB", "AVERAGE_POOL_2D",
            "MAX_POOL_2D"}


@pytest.fixture(scope="module")
def build_root(tmp_path_factory: pytest.TempPathFactory):
    """A build directory; host builds skip debug information (half the SIMDe compile time)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CFLAGS", "-g0")  # appended after Python's own CFLAGS (which hold -g)
        yield tmp_path_factory.mktemp("neon-build")


def neon_applies(graph: Graph, rounding: str = "double") -> list[str | None]:
    """Per operator: None if its NEON lowering applies, else the reason (or "no NEON kernel")."""
    interp = Interpreter(graph, rounding)
    reasons: list[str | None] = []
    for op, sim in zip(graph.operators, interp.kernels):
        fn = LOWERINGS.get((op.opcode, "neon"))
        if fn is None:
            reasons.append("no NEON kernel")
            continue
        ctx = Context(op=op, graph=graph, sim=sim, target=TARGET, rounding=rounding, isa="neon")
        try:
            fn(ctx)
            reasons.append(None)
        except Unsupported as e:
            reasons.append(str(e))
    return reasons


def check_report(rep: Report, graph: Graph) -> None:
    """Every layer bit-exact, and every layer of a NEON op really ran the NEON kernel."""
    bad = [(r.index, r.kernel, r.differing, r.first) for r in rep.layers if not r.bit_exact]
    assert not bad, bad
    assert rep.model_bit_exact, rep.model_first
    for r in rep.layers:
        if graph.operators[r.index].opcode in NEON_OPS:
            assert r.isa == "neon" and r.kernel.endswith("__neon"), (r.index, r.kernel)


# --------------------------------------------------------------------------------------------
# (a) the converter-made zoo


def _zoo_graphs() -> tuple[list[str], list[str]]:
    """Zoo models made only of NEON ops: those every NEON kernel takes, and the others."""
    covered, fallback = [], []
    for name in ZOO_MODELS:
        graph = load_tflite(ZOO / f"{name}.tflite")
        if not {op.opcode for op in graph.operators} <= NEON_OPS:
            continue
        (covered if all(r is None for r in neon_applies(graph)) else fallback).append(name)
    return covered, fallback


ZOO_COVERED, ZOO_FALLBACK = _zoo_graphs()


def test_zoo_single_op_models_bit_exact(build_root: Path) -> None:
    graphs, inputs = [], []
    for name in ZOO_COVERED:
        graphs.append(load_tflite(ZOO / f"{name}.tflite"))
        data = np.load(ZOO / f"{name}.npz")
        inputs += [data[f"in{i}"] for i in range(len(graphs[-1].inputs))]
    assert len(graphs) >= 30
    merged, _ = merge_graphs(graphs, "neonzoo")
    rep = verify(merged, TARGET, inputs, "double", build_root=build_root)
    check_report(rep, merged)


def test_zoo_fallbacks_are_explicit() -> None:
    """Only the depth-multiplier-2 depthwise models leave NEON, and they say why."""
    assert ZOO_FALLBACK and all("_mult2_" in name for name in ZOO_FALLBACK), ZOO_FALLBACK
    for name in ZOO_FALLBACK:
        reasons = neon_applies(load_tflite(ZOO / f"{name}.tflite"))
        assert any(r and "depth multiplier 2" in r for r in reasons), reasons


# --------------------------------------------------------------------------------------------
# (b) randomised layers on the tails


class Maker:
    """Random independent layers appended to one graph, each with its own inputs and output."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.g = GraphBuilder()
        self.inputs: list[int] = []
        self.outputs: list[int] = []

    def _act(self) -> str:
        """A fused activation; the narrow ones less often (they clamp most outputs)."""
        return str(self.rng.choice(ACTIVATIONS, p=[0.4, 0.3, 0.15, 0.15]))

    def _input(self, shape: tuple[int, ...], dt: Any) -> tuple[int, QuantParams]:
        q = random_activation_quant(self.rng, dt, 0.01, 0.1)
        i = self.g.add(spec(shape, dt, q))
        self.inputs.append(i)
        return i, q

    def _output(self, shape: tuple[int, ...], dt: Any, q: QuantParams) -> int:
        o = self.g.add(spec(shape, dt, q))
        self.outputs.append(o)
        return o

    def _out_quant(self, dt: Any, s_in: float, s_w: np.ndarray, sigma: float,
                   gain: float | None = None) -> QuantParams:
        """An output scale spreading the accumulators over about +-60 steps (x gain)."""
        if gain is None:
            gain = float(np.exp(self.rng.uniform(np.log(0.3), np.log(2.0))))
        scale = np.float32(s_in * float(np.mean(s_w)) * sigma / (60.0 * gain))
        info = np.iinfo(np.dtype(dt))
        zp = int(self.rng.integers(info.min + 64, info.max - 63))
        return QuantParams(max(scale, np.float32(1e-9)), zp)

    def _weighted(self, dt: Any, w_shape: tuple[int, ...], axis: int, n: int, k: int,
                  qi: QuantParams, minus128: bool = False, odd_zw: bool = False,
                  boost: bool = False) -> tuple[int, int, QuantParams]:
        """Weights, bias and output quantization; ``boost``: weights within +-2 of the zero
        point and real multipliers around 1 to 10 (left shifts, positive single shifts)."""
        w, qw = random_weights(self.rng, w_shape, dt, axis)
        if boost:
            zw = 0 if qw.per_axis else qw.zp
            w = np.clip(zw + self.rng.integers(-2, 3, w_shape), *RANGE[np.dtype(dt).name])
            w = w.astype(dt)
        if minus128:
            w.reshape(-1)[:: 7] = -128
        if np.dtype(dt) == np.int8 and self.rng.random() < 0.3 and axis == 0:
            qw = QuantParams(qw.scale[:1], 0)  # int8 per-tensor
        if odd_zw:  # uint8: filter zero point 0; int8: per-tensor with zero point 7
            qw = QuantParams(qw.scale[:1], 0 if np.dtype(dt) == np.uint8 else 7)
        wf = w.astype(np.int64) - (0 if qw.per_axis else qw.zp)
        sigma = float(np.sqrt(k) * 74.0 * max(np.sqrt(np.mean(wf.astype(float) ** 2)), 1.0))
        x_mean = (127.5 if np.dtype(dt) == np.uint8 else -0.5) - qi.zp
        mean_acc = np.moveaxis(wf, axis, 0).reshape(n, -1).sum(axis=1) * x_mean
        bias, qb = random_bias(self.rng, n, float(qi.s), qw.scale, int(sigma) + 1, -mean_acc)
        wi = self.g.add(spec(w_shape, dt, qw, w))
        bi = self.g.add(spec((n,), np.int32, qb, bias))
        gain = 0.05 * sigma if boost else None
        return wi, bi, self._out_quant(dt, float(qi.s), qw.scale, sigma, gain)

    def conv(self, dt: Any, batch: int, hw: tuple[int, int], cin: int, cout: int,
             k: tuple[int, int], s: tuple[int, int], d: tuple[int, int], padding: str,
             boost: bool = False) -> None:
        x, qi = self._input((batch, *hw, cin), dt)
        wi, bi, qo = self._weighted(dt, (cout, *k, cin), 0, cout, k[0] * k[1] * cin, qi,
                                    boost=boost)
        oh, ow = (_out(padding, hw[i], k[i], s[i], d[i]) for i in range(2))
        y = self._output((batch, oh, ow, cout), dt, qo)
        self.g.op("CONV_2D", [x, wi, bi], [y], padding=padding, stride_h=s[0], stride_w=s[1],
                  dilation_h=d[0], dilation_w=d[1], activation=self._act())

    def dw(self, dt: Any, batch: int, hw: tuple[int, int], c: int, k: tuple[int, int],
           s: tuple[int, int], d: tuple[int, int], padding: str) -> None:
        x, qi = self._input((batch, *hw, c), dt)
        wi, bi, qo = self._weighted(dt, (1, *k, c), 3, c, k[0] * k[1], qi)
        oh, ow = (_out(padding, hw[i], k[i], s[i], d[i]) for i in range(2))
        y = self._output((batch, oh, ow, c), dt, qo)
        self.g.op("DEPTHWISE_CONV_2D", [x, wi, bi], [y], padding=padding, stride_h=s[0],
                  stride_w=s[1], dilation_h=d[0], dilation_w=d[1], depth_multiplier=1,
                  activation=self._act())

    def fc(self, dt: Any, rows: int, depth: int, units: int, minus128: bool = False,
           odd_zw: bool = False, boost: bool = False) -> None:
        x, qi = self._input((rows, depth), dt)
        wi, bi, qo = self._weighted(dt, (units, depth), 0, units, depth, qi, minus128, odd_zw,
                                    boost)
        y = self._output((rows, units), dt, qo)
        self.g.op("FULLY_CONNECTED", [x, wi, bi], [y], activation=self._act())

    def add(self, dt: Any, shape: tuple[int, ...], opcode: str = "ADD") -> None:
        a, _ = self._input(shape, dt)
        b, _ = self._input(shape, dt)
        q = random_activation_quant(self.rng, dt, 0.01, 0.1)
        y = self._output(shape, dt, q)
        self.g.op(opcode, [a, b], [y], activation=self._act())

    def pool(self, dt: Any, opcode: str, batch: int, hw: tuple[int, int], c: int,
             f: tuple[int, int], s: tuple[int, int], padding: str, act: str | None = None
             ) -> None:
        x, q = self._input((batch, *hw, c), dt)
        oh, ow = (_out(padding, hw[i], f[i], s[i], 1) for i in range(2))
        y = self._output((batch, oh, ow, c), dt, q)
        self.g.op(opcode, [x], [y], padding=padding, stride_h=s[0], stride_w=s[1],
                  filter_h=f[0], filter_w=f[1], activation=act or self._act())

    def build(self, name: str, samples: int = 2) -> tuple[Graph, list[np.ndarray]]:
        graph = self.g.build(self.inputs, self.outputs, name)
        xs = [random_input(self.rng, graph.tensors[i].shape, graph.tensors[i].dtype, samples)
              for i in self.inputs]
        return graph, xs


def _out(padding: str, size: int, k: int, s: int, d: int) -> int:
    eff = (k - 1) * d + 1
    return (size + s - 1) // s if padding == "SAME" else (size - eff) // s + 1


def mixed_graph(seed: int, flip: bool) -> tuple[Graph, list[np.ndarray]]:
    """Twenty-three independent layers of every NEON kernel, aimed at the tiles and the tails.

    Shapes are fixed where they pick a code path and random (1..33 channels) elsewhere;
    ``flip`` swaps uint8 and int8 so that two graphs cover both dtypes of every slot.
    """
    m = Maker(seed)
    r = m.rng
    u8, i8 = (np.int8, np.uint8) if flip else (np.uint8, np.int8)

    def ch() -> int:
        return int(r.integers(1, 34))

    # CONV_2D 1x1, direct rows: the 4x16 tile, then 8x8 with pixel, channel and depth tails;
    # a strided one with multipliers above 1
    m.conv(u8, 1, (3, 5), ch(), 16 * int(r.integers(1, 3)), (1, 1), (1, 1), (1, 1), "SAME")
    m.conv(i8, 2, (1, 7), 17, 33, (1, 1), (1, 1), (1, 1), "SAME")
    m.conv(u8, 1, (7, 6), 2, ch(), (1, 1), (2, 2), (1, 1), "VALID", boost=True)
    m.conv(i8, 2, (1, 1), ch(), ch(), (1, 1), (1, 1), (1, 1), "SAME")  # 2 pixels: dot products
    # CONV_2D through im2col: stride 2 with asymmetric padding, dilation, rectangular windows
    m.conv(i8, 2, (6, 8), 3, 8, (3, 3), (2, 2), (1, 1), "SAME")
    m.conv(u8, 1, (9, 7), ch(), 16, (3, 2), (1, 2), (2, 1), "VALID" if flip else "SAME")
    # FULLY_CONNECTED: depth chunks of 16, 8 and a partial 8; unit tails; filter zero point 0
    # (uint8) or 7 (int8); int8 -128 weights; per-channel shifts of both signs
    m.fc(u8, 3, 16 * int(r.integers(0, 3)) + 8 + int(r.integers(1, 8)), ch())
    m.fc(i8, 1, 16 * int(r.integers(1, 3)) + (8 if flip else int(r.integers(1, 8))),
         8 * int(r.integers(1, 4)), odd_zw=True)
    m.fc(np.int8, 2, 27, 9, minus128=True)
    m.fc(np.int8, 2, 3, 12, boost=True)
    # DEPTHWISE_CONV_2D: fewer than 8 channels (all border pixels when flipped), 16 + 8,
    # 16s + an overlapping 8
    m.dw(u8, 2, (2, 3) if flip else (5, 6), int(r.integers(1, 8)), (3, 3), (1, 1), (1, 1), "SAME")
    m.dw(i8, 1, (7, 9), 24, (3, 3), (2, 2), (1, 1), "SAME")
    m.dw(u8, 1, (9, 8), 32 + int(r.integers(1, 8)), (5, 3), (1, 2), (2, 1),
         "VALID" if flip else "SAME")
    # pools: clipped windows with per-pixel counts, channel groups, 256 taps
    m.pool(u8, "AVERAGE_POOL_2D", 2, (7, 9), 16 + int(r.integers(1, 18)), (3, 3), (2, 2), "SAME")
    m.pool(i8, "MAX_POOL_2D", 1, (6, 5), 16 + int(r.integers(0, 18)), (3, 2), (2, 1), "SAME")
    m.pool(i8, "AVERAGE_POOL_2D", 1, (16, 16), int(r.integers(1, 9)), (16, 16), (1, 1), "VALID",
           "NONE")
    # ADD / SUB, eight lanes and a tail
    m.add(u8, (2, 3, 5, ch()), "ADD")
    m.add(i8, (1, int(r.integers(1, 40))), "SUB")
    # DEPTHWISE_CONV_2D row ring (channels a multiple of 8): batch 2 with a remainder pass,
    # dilation with clipped top and bottom rows, 5x3 windows with stride 1x2, one output pixel
    m.dw(i8, 2, (6, 11), 48, (3, 3), (1, 1), (1, 1), "SAME")
    m.dw(u8, 1, (7, 7), 8, (3, 3), (1, 1), (2, 2), "SAME")
    m.dw(i8, 1, (9, 8), 16 * int(r.integers(1, 3)) + (8 if flip else 0), (5, 3), (1, 2), (2, 1),
         "VALID" if flip else "SAME")
    m.dw(u8, 1, (1, 2), 16, (3, 3), (2, 2), (1, 1), "SAME")
    m.dw(i8, 1, (6, 9), 16, (7, 7), (1, 1), (1, 1), "SAME")  # wide filter rows: 2-pixel passes
    return m.build(f"mixed{seed}")


@pytest.mark.parametrize("rounding,seed,flip", [("double", 1, False), deep("single", 2, True)])
def test_random_layers_bit_exact(build_root: Path, rounding: str, seed: int, flip: bool) -> None:
    graph, xs = mixed_graph(seed, flip)
    check_report(verify(graph, TARGET, xs, rounding, build_root=build_root), graph)


# --------------------------------------------------------------------------------------------
# (c) opt-in: the same kernels built for AArch64 by clang (zig cc) and run in unicorn


_HARNESS = r"""
#include <stddef.h>
void *memcpy(void *d, const void *s, size_t n)
{ unsigned char *a = d; const unsigned char *b = s; while (n--) *a++ = *b++; return d; }
void *memset(void *d, int c, size_t n)
{ unsigned char *a = d; while (n--) *a++ = (unsigned char)c; return d; }
void _start(void) { for (;;) {} }
"""


def _aarch64_elf(project: Project, out: Path) -> Path:
    """The project's layer files and a libc-free harness linked into one static AArch64 ELF."""
    zig = [sys.executable, "-m", "ziglang", "cc", "-target", "aarch64-linux-musl",
           "-mcpu=cortex_a72"]
    write_project(project, out)
    (out / "harness.c").write_text(_HARNESS)
    objs = []
    for layer in project.layers:
        src = out / f"{project.name}_l{layer.index:03d}.c"
        subprocess.run([*zig, "-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-I", str(out),
                        "-c", str(src), "-o", f"{src}.o"], check=True)
        objs.append(f"{src}.o")
    subprocess.run([*zig, "-O1", "-fno-builtin", "-c", str(out / "harness.c"), "-o",
                    str(out / "harness.o")], check=True)
    elf = out / "model.elf"
    subprocess.run([*zig, "-nostdlib", "-static", "-Wl,-e,_start", "-o", str(elf), *objs,
                    str(out / "harness.o")], check=True)
    return elf


class _Arm64:
    """A Cortex-A72 in unicorn running layer functions of one ELF.

    Every buffer gets its own pages: inputs and scratch sit flush against an unmapped page
    (after them, or before them with ``at_end=False``) so that any over-read faults; outputs
    are surrounded by guard bytes that must survive.
    """

    RET, STACK, HEAP = 0x1000_0000, 0x3000_0000, 0x4000_0000

    def __init__(self, elf: Path) -> None:
        from elftools.elf.elffile import ELFFile
        from unicorn import UC_ARCH_ARM64, UC_MODE_ARM, Uc
        from unicorn import arm64_const as a64

        self.a64 = a64
        self.uc = uc = Uc(UC_ARCH_ARM64, UC_MODE_ARM)
        uc.ctl_set_cpu_model(a64.UC_CPU_ARM64_A72)
        with open(elf, "rb") as f:
            e = ELFFile(f)
            for seg in e.iter_segments():
                if seg["p_type"] == "PT_LOAD":
                    lo = seg["p_vaddr"] & ~0xFFF
                    hi = (seg["p_vaddr"] + seg["p_memsz"] + 0xFFF) & ~0xFFF
                    uc.mem_map(lo, hi - lo)
                    uc.mem_write(seg["p_vaddr"], seg.data())
            self.symbols = {s.name: s["st_value"] for s in
                            e.get_section_by_name(".symtab").iter_symbols()}
        uc.mem_map(self.STACK - (1 << 20), 1 << 20)
        uc.mem_map(self.RET, 0x1000)
        uc.reg_write(a64.UC_ARM64_REG_CPACR_EL1, 3 << 20)  # FP/SIMD on

    def call(self, symbol: str, ins: list[np.ndarray], outs: list[tuple[Any, Any]],
             scratch: int, at_end: bool) -> list[np.ndarray]:
        uc, a64, regions = self.uc, self.a64, []

        def place(data: bytes, end: bool) -> int:
            size = max((len(data) + 0xFFF) & ~0xFFF, 0x1000)
            base = self.HEAP + sum(s + 0x10000 for _, s in regions)
            uc.mem_map(base, size)
            regions.append((base, size))
            addr = base + size - len(data) if end else base
            uc.mem_write(addr, data)
            return addr

        in_ptrs = [place(np.ascontiguousarray(x).tobytes(), at_end) for x in ins]
        sizes = [int(np.prod(shape)) * np.dtype(dt).itemsize for shape, dt in outs]
        out_ptrs = [place(b"\xa5" * (n + 64), True) + 32 for n in sizes]
        regs = [place(np.array(in_ptrs, np.uint64).tobytes(), True),
                place(np.array(out_ptrs, np.uint64).tobytes(), True),
                place(b"\x5a" * max(scratch, 1), at_end)]
        for reg, value in zip((a64.UC_ARM64_REG_X0, a64.UC_ARM64_REG_X1, a64.UC_ARM64_REG_X2),
                              regs):
            uc.reg_write(reg, value)
        uc.reg_write(a64.UC_ARM64_REG_SP, self.STACK - 256)
        uc.reg_write(a64.UC_ARM64_REG_LR, self.RET)
        uc.emu_start(self.symbols[symbol], self.RET)
        results = []
        for ptr, n, (shape, dt) in zip(out_ptrs, sizes, outs):
            raw = bytes(uc.mem_read(ptr - 32, n + 64))
            assert raw[:32] == raw[32 + n:] == b"\xa5" * 32, f"{symbol} wrote out of bounds"
            results.append(np.frombuffer(raw[32:32 + n], dt).reshape(shape))
        for base, size in regions:
            uc.mem_unmap(base, size)
        return results


def test_relu_outputs_drop_the_tie_fixup_and_stay_exact(build_root: Path) -> None:
    graph, xs = tie_graph()
    project = generate(graph, TARGET, graph.name, "double")
    for layer in project.layers:
        relu = graph.operators[layer.index].options["activation"] == "RELU"
        rq = layer.kernel.params.get("rq") or layer.kernel.params["rqo"]
        assert rq["mode"] == ("double_up" if relu else "double"), layer.symbol
    check_report(verify(graph, TARGET, xs, "double", build_root=build_root), graph)
    emulate(graph, xs, "double", build_root / "ties_a72")


def emulate(graph: Graph, inputs: list[np.ndarray], rounding: str, out: Path) -> None:
    """Every layer of ``graph`` on the emulated Cortex-A72 equals the simulator."""
    project = generate(graph, TARGET, graph.name, rounding)
    cpu = _Arm64(_aarch64_elf(project, out))
    tensors = Interpreter(graph, rounding).run(inputs, keep=True).tensors
    for layer in project.layers:
        assert layer.spec.isa == "neon", layer.symbol
        specs = [(graph.tensors[t].shape, graph.tensors[t].dtype) for t in layer.outputs]
        for s in range(inputs[0].shape[0]):
            got = cpu.call(layer.symbol, [tensors[t][s] for t in layer.inputs], specs,
                           layer.kernel.scratch_bytes, at_end=s % 2 == 0)
            for y, t in zip(got, layer.outputs):
                np.testing.assert_array_equal(y, tensors[t][s], err_msg=layer.symbol)


def test_emulated_cortex_a72(tmp_path: Path) -> None:
    """The random tail cases on the real AArch64 instruction set (zoo: test_codegen_zoo), in the
    two (graph, rounding) pairs of the host test: both dtypes of every slot, both roundings."""
    for rounding, seed, flip in (("double", 1, False), ("single", 2, True)):
        graph, xs = mixed_graph(seed, flip)
        emulate(graph, xs, rounding, tmp_path / f"{graph.name}_{rounding}")


# --------------------------------------------------------------------------------------------
# Kernel identity, fallbacks and generation-time helpers (no builds)


def test_symbols_name_variant_and_tile() -> None:
    graph, _ = mixed_graph(1, False)
    symbols = [layer.symbol for layer in generate(graph, TARGET, "g", "double").layers]
    assert symbols[0] == "g_l000_qu8_conv2d_k1x1s1_rnddbl_4x16__neon"
    assert symbols[1] == "g_l001_qs8_conv2d_k1x1s1_rnddbl_8x8__neon"
    assert symbols[2].startswith("g_l002_qu8_conv2d_k1x1s2_rnddbl_")
    assert symbols[3] == "g_l003_qs8_conv2d_k1x1s1_rnddbl_1x8__neon"  # 2 pixels: dot products
    assert symbols[4] == "g_l004_qs8_conv2d_k3x3s2_rnddbl_8x8__neon"
    assert symbols[5] == "g_l005_qu8_conv2d_k3x2s1x2d2x1_rnddbl_4x16__neon"
    assert symbols[8] == "g_l008_qs8_fc_k27n9_rnddbl_1x8__neon"
    assert symbols[11] == "g_l011_qs8_dwconv2d_k3x3s2_rnddbl_4x16__neon"  # row ring
    assert symbols[15] == "g_l015_qs8_avgpool_k16x16s1_rnddbl_1x8__neon"
    assert symbols[17].startswith("g_l017_qs8_sub_n") and symbols[17].endswith("_1x8__neon")
    assert symbols[18] == "g_l018_qs8_dwconv2d_k3x3s1_rnddbl_4x16__neon"
    assert symbols[19] == "g_l019_qu8_dwconv2d_k3x3s1d2_rnddbl_7x8__neon"
    assert symbols[22] == "g_l022_qs8_dwconv2d_k7x7s1_rnddbl_2x16__neon"
    assert len(symbols) == 23 and all(s.endswith("__neon") for s in symbols)


def _ctx(graph: Graph, index: int, rounding: str) -> Context:
    sim = Interpreter(graph, rounding).kernels[index]
    return Context(graph.operators[index], graph, sim, TARGET, rounding, "neon")


def test_unsupported_layers_say_why() -> None:
    m = Maker(5)
    m.fc(np.int8, 1, 20, 4)
    m.add(np.uint8, (2, 3))
    graph, _ = m.build("u")
    with pytest.raises(Unsupported, match="float requantization"):
        fully_connected_neon(_ctx(graph, 0, "litert"))
    fully_connected_neon(_ctx(graph, 0, "double"))
    # broadcasting ADD: same op, second input reshaped to broadcast
    g = GraphBuilder()
    q = QuantParams(np.float32(0.05), 3)
    a = g.add(spec((2, 3), np.uint8, q))
    b = g.add(spec((1, 3), np.uint8, q))
    y = g.add(spec((2, 3), np.uint8, q))
    g.op("ADD", [a, b], [y])
    bc = g.build([a, b], [y])
    with pytest.raises(Unsupported, match="broadcasting"):
        add_sub_neon(_ctx(bc, 0, "double"))
    layer = generate(bc, TARGET, "bc").layers[0]
    assert layer.spec.isa == "c" and "broadcasting" in layer.isa_note
    # depth multiplier 2
    dw = load_tflite(ZOO / "u8_dw_7x9x3_k3s2_same_mult2_relu6.tflite")
    with pytest.raises(Unsupported, match="depth multiplier 2"):
        depthwise_neon(_ctx(dw, 0, "double"))


@pytest.mark.parametrize("n", [1, 2, 3, 7, 9, 25, 49, 100, 255, 256])
def test_pool_reciprocals_are_exact(n: int) -> None:
    for top in (255, 128):
        vmax = top * n + n // 2
        mult, shift = _div_magic(n, vmax)
        v = np.arange(vmax + 1, dtype=np.uint64)
        assert mult * vmax < 2**32
        assert np.array_equal((v * np.uint64(mult)) >> np.uint64(shift), v // np.uint64(n))
