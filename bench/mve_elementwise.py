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


def count(graph: Graph, target: Target) -> tuple[str, int]:
    """(kernel symbol, instructions of one call) on QEMU's Cortex-M55."""
    project = generate(graph, target, name="m")
    (layer,) = project.layers
    d = Path(tempfile.mkdtemp(prefix="qlane-bench-"))
    for fname, text in project.files.items():
        if fname.endswith((".h", ".c")) and (fname.startswith("m_l") or fname.startswith("qlane_")
                                           and fname != "qlane_rt.c"):
            (d / fname).write_text(text)
    fn = layer.symbol
    ins = [graph.tensors[t] for t in graph.inputs]
    out = graph.tensors[graph.outputs[0]]
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
        elf = qemu.build_m55([d / "h.c", *d.glob("m_l*.c")], d / f"b{reps}.elf",
                             include_dirs=[d])
        runs.append(qemu.run(elf).instructions)
    return fn, runs[1] - runs[0]


CASES: list[tuple[str, Graph]] = [
    ("ADD int8 32x32x16 (ResNet)", add_graph((1, 32, 32, 16), "int8")),
    ("ADD int8 16x16x32 RELU (ResNet)", add_graph((1, 16, 16, 32), "int8", "RELU")),
    ("ADD int8 8x8x64 (ResNet)", add_graph((1, 8, 8, 64), "int8")),
    ("ADD uint8 8x8x64", add_graph((1, 8, 8, 64), "uint8")),
    ("ADD int8 7x7x13 (tail)", add_graph((1, 7, 7, 13), "int8")),
    ("MAX_POOL 2x2 s2 int8 32x32x32", pool_graph("MAX_POOL_2D", (32, 32), 32, (2, 2), (2, 2),
                                                 "VALID", "int8")),
    ("MAX_POOL 3x3 s2 SAME int8 16x16x24", pool_graph("MAX_POOL_2D", (16, 16), 24, (3, 3),
                                                      (2, 2), "SAME", "int8")),
    ("AVG_POOL 8x8 global int8 8x8x64 (ResNet)", pool_graph("AVERAGE_POOL_2D", (8, 8), 64,
                                                            (8, 8), (1, 1), "VALID", "int8")),
    ("AVG_POOL 7x7 global int8 7x7x256", pool_graph("AVERAGE_POOL_2D", (7, 7), 256, (7, 7),
                                                    (1, 1), "VALID", "int8")),
    ("AVG_POOL 4x4 global uint8 4x4x1024 (MobileNet 128)",
     pool_graph("AVERAGE_POOL_2D", (4, 4), 1024, (4, 4), (1, 1), "VALID", "uint8")),
    ("AVG_POOL 25x5 int8 25x5x64 (KWS DS-CNN)",
     pool_graph("AVERAGE_POOL_2D", (25, 5), 64, (25, 5), (1, 1), "VALID", "int8")),
    ("AVG_POOL 3x3 s1 SAME int8 10x10x20", pool_graph("AVERAGE_POOL_2D", (10, 10), 20, (3, 3),
                                                      (1, 1), "SAME", "int8")),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("-k", default="", help="only cases whose name contains this")
    args = ap.parse_args()
    reason = qemu.available()
    if reason:
        sys.exit(reason)
    m55 = load_target("cortex-m55")
    before = dataclasses.replace(m55, isa=tuple(i for i in m55.isa if i != "mve"))
    for name, graph in CASES:
        if args.k not in name:
            continue
        n = int(np.prod(graph.tensors[graph.outputs[0]].shape))
        fa, a = count(graph, before)
        fb, b = count(graph, m55)
        print(f"{name:52s} {parse_symbol(fa).isa:4s} {a / n:7.2f} -> "
              f"{parse_symbol(fb).isa:4s} {b / n:7.2f} instructions/output ({a / b:4.1f}x)",
              flush=True)


if __name__ == "__main__":
    main()
