"""Generated C for the whole zoo, built with -fsanitize=address,undefined: zero reports.

A harness runs every layer alone with each tensor in its own exact-size heap block (so an
over-read or over-write of any tensor is caught, not hidden inside the arena), then the whole
model through ``NAME_invoke`` on the zoo inputs with an exact-size arena, and prints the outputs,
which must equal the simulator's.
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from conftest import ZOO, ZOO_MODELS, zoo_inputs
from peers import merge_graphs
from qlane.codegen.cprims import simde_include_dir
from qlane.codegen.emit import Project, generate, write_project
from qlane.codegen.targets import load_target
from qlane.sim import Interpreter, load_tflite
from qlane.sim.graph import Graph

CC = shutil.which("gcc") or shutil.which("cc")


def _harness(project: Project, graph) -> str:
    name = project.name
    lines = [
        "#include <stdint.h>", "#include <stdio.h>", "#include <stdlib.h>", "#include <string.h>",
        f'#include "{name}.h"',
        "static uint32_t seed = 12345u;",
        "static void fill(void *p, size_t n, int is_float) {",
        "    size_t i;",
        "    if (is_float) { float *f = (float *)p;",
        "        for (i = 0; i < n / 4; ++i) { seed = seed * 1664525u + 1013904223u;",
        "            f[i] = (float)((int32_t)(seed >> 8) % 20000) / 100.0f; } return; }",
        "    for (i = 0; i < n; ++i) { seed = seed * 1664525u + 1013904223u;",
        "        ((uint8_t *)p)[i] = (uint8_t)(seed >> 24); }",
        "}",
        "static void *block(size_t n) { void *p = malloc(n ? n : 1);"
        " if (!p) exit(3); return p; }",
        "int main(void) {",
        "    int round;",
    ]
    jobs = [(layer.index, layer, graph) for layer in project.layers]
    jobs += [(slot, layer, g) for slot, layer, g, _ in project.patch_layers]
    for index, layer, g in jobs:  # the patch functions too, each on its patch's shapes
        ins = [g.tensors[t] for t in layer.inputs]
        outs = [g.tensors[t] for t in layer.outputs]
        lines.append("    for (round = 0; round < 3; ++round) {")
        for k, t in enumerate(ins):
            lines.append(f"        void *i{k} = block({t.nbytes}); "
                         f"fill(i{k}, {t.nbytes}, {int(np.dtype(t.dtype).kind == 'f')});")
        for k, t in enumerate(outs):
            lines.append(f"        void *o{k} = block({t.nbytes});")
        in_list = ", ".join(f"i{k}" for k in range(len(ins))) or "0"
        out_list = ", ".join(f"o{k}" for k in range(len(outs)))
        lines += [
            f"        const void *const in[] = {{ {in_list} }};",
            f"        void *const out[] = {{ {out_list} }};",
            f"        void *s = block((size_t){layer.kernel.scratch_bytes});",
            f"        if ({name}_run_layer({index}, in, out, s) != 0) return 4;",
            "        free(s);",
            *[f"        free(i{k});" for k in range(len(ins))],
            *[f"        free(o{k});" for k in range(len(outs))],
            "    }",
        ]
    n_in, n_out = len(graph.inputs), len(graph.outputs)
    lines += [
        f"    {{ void *ins[{n_in}]; void *outs[{n_out}]; int k;",
        f"      static const size_t isz[] = {{ {', '.join(str(t.nbytes) for t in graph.input_tensors)} }};",  # noqa: E501
        f"      static const size_t osz[] = {{ {', '.join(str(t.nbytes) for t in graph.output_tensors)} }};",  # noqa: E501
        f"      void *arena = block({project.plan.arena_bytes});",
        "      int samples;",
        "      if (fread(&samples, sizeof samples, 1, stdin) != 1) return 5;",
        "      while (samples-- > 0) {",
        f"        for (k = 0; k < {n_in}; ++k) {{ ins[k] = block(isz[k]);"
        " if (fread(ins[k], 1, isz[k], stdin) != isz[k]) return 6; }",
        f"        for (k = 0; k < {n_out}; ++k) outs[k] = block(osz[k]);",
        f"        if ({name}_invoke((const void *const *)ins, outs, arena) != 0) return 7;",
        f"        for (k = 0; k < {n_out}; ++k) {{ fwrite(outs[k], 1, osz[k], stdout);"
        " free(outs[k]); }",
        f"        for (k = 0; k < {n_in}; ++k) free(ins[k]);",
        "      }",
        "      free(arena); }",
        "    return 0;",
        "}",
    ]
    return "\n".join(lines) + "\n"



def run_sanitized(project: Project, graph: Graph, inputs: list[np.ndarray], tmp_path: Path,
                  include_dirs: list[str]) -> bytes:
    """Build ``project`` with `_harness` under ASan and UBSan, feed it every sample of
    ``inputs`` (each tensor in its own exact-size heap block) and return its stdout, the
    outputs' bytes; skips where the sanitizer runtime is missing, fails on any report."""
    src = tmp_path / "src"
    write_project(project, src)
    (src / "harness.c").write_text(_harness(project, graph))
    includes = ["-I", str(src)] + [a for d in include_dirs for a in ("-I", d)]
    exe = tmp_path / "harness"
    sources = [str(src / s) for s in project.manifest["sources"]] + [str(src / "harness.c")]
    build = subprocess.run(
        [CC, "-std=c99", "-O1", "-g1", "-fsanitize=address,undefined",
         "-fno-sanitize-recover=all", "-fno-omit-frame-pointer", *includes, *sources, "-o",
         str(exe)], capture_output=True, text=True, timeout=900)
    if build.returncode != 0 and "cannot find" in build.stderr and "asan" in build.stderr:
        pytest.skip("the sanitizer runtime (libasan/libubsan) is not installed")
    assert build.returncode == 0, build.stderr[-3000:]
    samples = inputs[0].shape[0]
    stdin = np.int32(samples).tobytes() + b"".join(
        np.ascontiguousarray(x[s]).tobytes() for s in range(samples) for x in inputs)
    run = subprocess.run([str(exe)], input=stdin, capture_output=True, timeout=900,
                         env={"ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0",
                              "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1"})
    report = run.stderr.decode(errors="replace")
    assert run.returncode == 0 and "runtime error" not in report and "Sanitizer" not in report, \
        report[-4000:]
    return run.stdout


@pytest.mark.skipif(CC is None, reason="no C compiler on this machine")
@pytest.mark.parametrize("target", ["generic", "cortex-m7", "cortex-a72", "cortex-m55"])
def test_zoo_under_address_and_undefined_sanitizers(target: str, tmp_path: Path) -> None:
    # every layer file of the NEON build parses SIMDe under the sanitizers (seconds each): there,
    # MobileNet's layers (the same kernel families as the single-op models) are left out
    names = [n for n in ZOO_MODELS if target != "cortex-a72" or "mobilenet" not in n]
    graphs = [load_tflite(ZOO / f"{n}.tflite") for n in names]
    graph, _ = merge_graphs(graphs, name="zoo")
    inputs = [x for n in names for x in zoo_inputs(n)]
    project = generate(graph, load_target(target), name="zoo")
    stdout = run_sanitized(project, graph, inputs, tmp_path,
                           [simde_include_dir()] if target == "cortex-a72" else [])
    expected = Interpreter(graph).run(inputs).outputs
    samples = inputs[0].shape[0]
    blob = memoryview(stdout)
    offset = 0
    for s in range(samples):
        for k, y in enumerate(expected):
            n = y[s].nbytes
            got = np.frombuffer(blob[offset:offset + n], y.dtype).reshape(y[s].shape)
            offset += n
            assert np.array_equal(got, y[s]), f"sample {s} output {k} differs"
    assert offset == len(stdout)


def _expect(stdout: bytes, graph: Graph, inputs: list[np.ndarray]) -> None:
    expected = Interpreter(graph).run(inputs).outputs
    blob, offset = memoryview(stdout), 0
    for s in range(inputs[0].shape[0]):
        for k, y in enumerate(expected):
            got = np.frombuffer(blob[offset:offset + y[s].nbytes], y.dtype).reshape(y[s].shape)
            offset += y[s].nbytes
            assert np.array_equal(got, y[s]), f"sample {s} output {k} differs"
    assert offset == len(stdout)


@pytest.mark.skipif(CC is None, reason="no C compiler on this machine")
@pytest.mark.parametrize("target", ["generic", "cortex-m7"])
def test_schedules_under_address_and_undefined_sanitizers(target: str, tmp_path: Path) -> None:
    """Patch stages (whole-row and copied patches) and in-place depthwise layers: every patch
    function alone in exact-size blocks, the model in an arena of exactly the planned size.
    The zoo's windowed models in patches beside the MLPerf Tiny VWW at half its layer-by-layer
    bound (the chooser's schedule)."""
    from test_schedule import VWW, zoo_in_patches

    from qlane.api import random_inputs
    from qlane.codegen.schedule import Schedule, layer_bound

    zoo, zoo_x, zoo_schedule = zoo_in_patches()
    vww = load_tflite(str(VWW))
    chip = load_target(target)
    half = generate(vww, chip, memory_budget=layer_bound(vww) // 2)
    assert half.schedule.stages and half.schedule.in_place
    graph, firsts = merge_graphs([zoo, vww], name="sched")
    stages = [*zoo_schedule.stages, *(dataclasses.replace(
        s, first=s.first + firsts[1], last=s.last + firsts[1]) for s in half.schedule.stages)]
    project = generate(graph, chip, name="sched", schedule=Schedule(tuple(stages), True))
    assert project.in_place and len(project.stages) == len(stages)
    inputs = [x[:2] for x in zoo_x] + random_inputs(vww, samples=2, seed=4)
    _expect(run_sanitized(project, graph, inputs, tmp_path, []), graph, inputs)
