"""Instructions per output element of ADD and the pools on QEMU's Cortex-M55: the MVE kernels
against the kernels the same target runs without them (DSP, then portable C).

Each layer is built alone with zig for the M55 and run once and twice; the difference of the
two instruction counts is one call. Usage: ``python bench/mve_elementwise.py [-k NAME]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from peers import GraphBuilder, spec  # noqa: E402
from qlane.codegen import qemu  # noqa: E402
from qlane.codegen.emit import generate  # noqa: E402
from qlane.codegen.names import parse_symbol  # noqa: E402
from qlane.codegen.targets import Target, load_target  # noqa: E402
from qlane.sim import load_tflite  # noqa: E402
from qlane.sim.graph import Graph  # noqa: E402
from qlane.sim.ops.conv import out_size  # noqa: E402
from qlane.sim.quant import QuantParams  # noqa: E402


def add_graph(shape: tuple[int, ...], dtype: str, act: str = "NONE") -> Graph:
    """One ADD of two same-shape tensors (ResNet's residual adds)."""
    g = GraphBuilder()
    a = g.add(spec(shape, dtype, QuantParams(np.float32(0.05), 3)))
    b = g.add(spec(shape, dtype, QuantParams(np.float32(0.03), -7)))
    y = g.add(spec(shape, dtype, QuantParams(np.float32(0.07), 5)))
    g.op("ADD", [a, b], [y], activation=act)
    return g.build([a, b], [y], name="add")


def pool_graph(kind: str, hw: tuple[int, int], c: int, k: tuple[int, int], s: tuple[int, int],
               padding: str, dtype: str) -> Graph:
    """One MAX_POOL_2D or AVERAGE_POOL_2D."""
    g = GraphBuilder()
    q = QuantParams(np.float32(0.05), 3)
    x = g.add(spec((1, *hw, c), dtype, q))
    oh, ow = (out_size(padding, hw[i], k[i], s[i], 1) for i in (0, 1))
    y = g.add(spec((1, oh, ow, c), dtype, q))
    g.op(kind, [x], [y], padding=padding, stride_h=s[0], stride_w=s[1], filter_h=k[0],
         filter_w=k[1], activation="NONE")
    return g.build([x], [y], name="pool")


def count(graph: Graph, target: Target, index: int = 0) -> tuple[str, int]:
    """(kernel symbol, instructions of one call) of layer ``index`` on QEMU's Cortex-M55 (its
    inputs and output zero; the other layers are not built)."""
    project = generate(graph, target, name="m")
    layer = project.layers[index]
    op = graph.operators[index]
    d = Path(tempfile.mkdtemp(prefix="qlane-bench-"))
    for fname, text in project.files.items():
        if fname.endswith(".h") and fname.startswith(("m_", "qlane_")):
            (d / fname).write_text(text)
    src_name = f"m_l{index:03d}.c"
    (d / src_name).write_text(project.files[src_name])
    fn = layer.symbol
    ins = [graph.tensors[t] for t in op.inputs if not graph.tensors[t].is_constant]
    out = graph.tensors[op.outputs[0]]
    decls = "".join(f"static int8_t x{i}[{int(np.prod(t.shape))}];\n" for i, t in enumerate(ins))
    scratch = layer.kernel.scratch_bytes + 16
    runs = []
    for reps in (1, 2):
        src = f"""#include <stdint.h>
void {fn}(const void *const in[], void *const out[], void *scratch);
{decls}static int8_t y[{int(np.prod(out.shape))}];
static int8_t s[{scratch}] __attribute__((aligned(16)));
int main(void) {{
    const void *in[{len(ins)}] = {{{", ".join(f"x{i}" for i in range(len(ins)))}}};
    void *out[1] = {{y}};
    for (int r = 0; r < {reps}; ++r) {fn}(in, out, s);
    return y[0] & 1;
}}
"""
        (d / "h.c").write_text(src)
        elf = qemu.build_m55([d / "h.c", d / src_name], d / f"b{reps}.elf", include_dirs=[d])
        runs.append(qemu.run(elf).instructions)
    return fn, runs[1] - runs[0]


def model_layers(path: Path) -> list[tuple[str, Graph, int]]:
    """The ADD and pool layers of a model, by name."""
    graph = load_tflite(path)
    out = []
    for i, op in enumerate(graph.operators):
        if op.opcode in ("ADD", "MAX_POOL_2D", "AVERAGE_POOL_2D"):
            shape = "x".join(map(str, graph.tensors[op.inputs[0]].shape[1:]))
            dtype = graph.tensors[op.outputs[0]].dtype
            out.append((f"{path.stem[:18]} {op.opcode} {dtype} {shape}", graph, i))
    return out


ROOT = Path(__file__).resolve().parents[1]
MODELS = [ROOT / "examples/mlperf_tiny/pretrainedResnet_quant.tflite",
          ROOT / "examples/mlperf_tiny/kws_ref_model.tflite",
          ROOT / "examples/mlperf_tiny/vww_96_int8.tflite",
          ROOT / "tests/zoo/u8_mobilenet_v1_0.25_128.tflite",
          ROOT / "tests/zoo/i8_mobilenet_v1_0.25_128.tflite"]


def cases() -> list[tuple[str, Graph, int]]:
    """The models' ADD and pool layers, then synthetic ones (max pools, tails, uint8 ADD)."""
    out = [c for m in MODELS for c in model_layers(m)]
    for name, graph in (
        ("ADD int8 7x7x13 (tail)", add_graph((1, 7, 7, 13), "int8")),
        ("ADD uint8 8x8x64", add_graph((1, 8, 8, 64), "uint8")),
        ("MAX_POOL_2D 2x2 s2 int8 32x32x32", pool_graph("MAX_POOL_2D", (32, 32), 32, (2, 2),
                                                        (2, 2), "VALID", "int8")),
        ("MAX_POOL_2D 2x2 s2 uint8 16x16x64", pool_graph("MAX_POOL_2D", (16, 16), 64, (2, 2),
                                                         (2, 2), "VALID", "uint8")),
        ("MAX_POOL_2D 3x3 s2 SAME int8 16x16x24", pool_graph("MAX_POOL_2D", (16, 16), 24,
                                                             (3, 3), (2, 2), "SAME", "int8")),
        ("AVERAGE_POOL_2D 3x3 s1 SAME int8 10x10x20", pool_graph(
            "AVERAGE_POOL_2D", (10, 10), 20, (3, 3), (1, 1), "SAME", "int8")),
    ):
        out.append((name, graph, 0))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("-k", default="", help="only cases whose name contains this")
    args = ap.parse_args()
    reason = qemu.available()
    if reason:
        sys.exit(reason)
    m55 = load_target("cortex-m55")
    before = dataclasses.replace(m55, isa=tuple(i for i in m55.isa if i != "mve"))
    for name, graph, index in cases():
        if args.k not in name:
            continue
        n = int(np.prod(graph.tensors[graph.operators[index].outputs[0]].shape))
        fa, a = count(graph, before, index)
        fb, b = count(graph, m55, index)
        print(f"{name:52s} {parse_symbol(fa).isa:4s} {a / n:7.2f} -> "
              f"{parse_symbol(fb).isa:4s} {b / n:7.2f} instructions/output ({a / b:4.1f}x)",
              flush=True)


if __name__ == "__main__":
    main()
