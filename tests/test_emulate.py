"""Emulator tier: generated C cross-compiled with zig cc, run on unicorn Cortex-M4 and Cortex-A53.

Checks bit-exactness per layer and for the whole model against the simulator, the instruction
accounting (classes, real basic blocks, agreement with a per-instruction hook, determinism), and
that wrong code is caught: an instruction the core lacks (planted in the image, or emitted by a
build for a richer CPU), a compile error, a wrong result, an out-of-bounds write and an unaligned
LDRD that a real Cortex-M would fault on.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("unicorn")
pytest.importorskip("capstone")
pytest.importorskip("elftools")
pytest.importorskip("ziglang")

from unicorn import UC_HOOK_CODE  # noqa: E402

from conftest import ZOO, ZOO_MODELS, merged_zoo, zoo_reference  # noqa: E402
from qlane.codegen.cross import CrossError, build_elf  # noqa: E402
from qlane.codegen.emit import GenerateError, generate  # noqa: E402
from qlane.codegen.emulate import EmulationReport, emulate_verify  # noqa: E402
from qlane.codegen.machine import CLASSES, EmulationError, machine_for  # noqa: E402
from qlane.codegen.targets import load_target  # noqa: E402
from qlane.codegen.verify import Report  # noqa: E402
from qlane.sim import load_tflite  # noqa: E402
from qlane.sim.graph import Graph  # noqa: E402

TARGETS = ["cortex-m4", "cortex-a53"]
ALL_TARGETS = ["cortex-m4", "cortex-m7", "cortex-a53", "cortex-a72"]
CORE = ["i8_add_7x9x3", "u8_add_7x9x5_relu6", "i8_reshape_7x9x3_to_189",
        "u8_reshape_7x9x5_to_63x5"]
"""Single-op models whose C lowerings exist (ADD, RESHAPE); more ops join via test_zoo_*."""

PLANTED = {"cortex-m4": (bytes.fromhex("30ee010b"), r"vadd\.f64 d0, d0, d1"),
           "cortex-a53": (bytes.fromhex("8094824e"), r"sdot v0\.4s, v4\.16b, v2\.16b")}
"""An instruction each core lacks: M4 has a single-precision FPU only; A53 has no dot product."""

EXTRA = r"""
#include <stdint.h>
int32_t qt_dot(const int8_t *a, const int8_t *b, int32_t n)
{
    int32_t acc = 0;
    for (int32_t i = 0; i < n; ++i) {
        acc += (int32_t)a[i] * (int32_t)b[i];
    }
    return acc;
}
int32_t qt_dsum(const double *a, int32_t n)
{
    double s = 0.0;
    for (int32_t i = 0; i < n; ++i) {
        s += a[i] * 0.5;
    }
    return (int32_t)(s * 4.0);
}
int32_t qt_load64(const int64_t *p)
{
    const int64_t v = *p; /* both words: LDRD on Cortex-M */
    return (int32_t)v + (int32_t)(v >> 32);
}
"""
EXTRA_FNS = ["qt_dot", "qt_dsum", "qt_load64", "qt_long"]
LONG_STEPS = 200
EXTRA += ("int32_t qt_long(const int32_t *x, int32_t n)\n{\n    int32_t a = 0, b = 1;\n"
          "    for (int32_t i = 0; i < n; ++i) {\n"
          + "".join(f"        a += x[{k}] * b; b ^= a >> {k % 7 + 1};\n"
                    for k in range(LONG_STEPS))
          + "    }\n    return a + b;\n}\n")
"""qt_long: a loop body of ~1000 straight-line instructions, longer than unicorn's 512-instruction
translated blocks and than a 1 KiB page."""


@pytest.fixture(scope="module")
def build_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cross")




def _merged(names: list[str]) -> tuple[Graph, list[np.ndarray]]:
    return merged_zoo(names, "emu")


def _check_counts(c: dict) -> None:
    assert c["instructions"] > 0
    assert set(c["by_class"]) == set(CLASSES)
    assert sum(c["by_class"].values()) == c["instructions"]
    assert sum(n * e for n, e in c["blocks"].values()) == c["instructions"]
    assert c["stack_bytes"] > 0


@pytest.mark.parametrize("target", ALL_TARGETS)
def test_core_models_bit_exact_with_counts(target: str, build_root: Path) -> None:
    graph, inputs = _merged(CORE)
    tg = load_target(target)
    report = emulate_verify(graph, tg, inputs, build_root=build_root)
    assert isinstance(report, Report) and isinstance(report, EmulationReport)
    bad = [f"layer {r.index} {r.op} ({r.kernel}): {r.differing} differ, first {r.first}"
           for r in report.layers if not r.bit_exact]
    assert not bad, "\n".join(bad)
    assert report.model_bit_exact, report.model_first
    outs = iter(report.outputs)
    for name in CORE:
        for want in zoo_reference(name):
            assert np.array_equal(next(outs), want), f"{name}: emulated output != tfl214"
    assert report.sizes["text"] > 0
    assert set(report.counts) == {r.index for r in report.layers}
    for c in report.counts.values():
        _check_counts(c)
    _check_counts(report.invoke_counts)
    assert report.invoke_counts["instructions"] >= sum(
        c["instructions"] for c in report.counts.values())
    adds = [report.counts[r.index] for r in report.layers if r.op == "ADD"]
    assert all(c["by_class"]["mac"] > 0 for c in adds), "requantization multiplies not seen"
    assert report.counts_data_independent
    json.dumps(report.to_json())

    again = emulate_verify(graph, tg, inputs, build_root=build_root)
    assert again.counts == report.counts, "instruction counts are not deterministic"
    assert again.invoke_counts == report.invoke_counts


@pytest.mark.parametrize("target", TARGETS)
def test_zoo_models_that_generate(target: str, build_root: Path) -> None:
    """Every small zoo model with C lowerings today (more as kernels land) is bit-exact here."""
    tg = load_target(target)
    names = [n for n in ZOO_MODELS if "mobilenet" not in n and n not in CORE]
    try:
        project = generate(_merged(names)[0], tg)
    except GenerateError:  # some op has no C lowering yet: keep the models that generate
        names = [n for n in names if _generates(n, target)]
        if not names:
            pytest.skip("no further zoo model generates yet")
        project = generate(_merged(names)[0], tg)
    graph, inputs = _merged(names)
    report = emulate_verify(graph, tg, inputs, build_root=build_root, project=project)
    bad = [f"layer {r.index} {r.op} ({r.kernel}): {r.differing} differ, first {r.first}"
           for r in report.layers if not r.bit_exact]
    assert not bad, "\n".join(bad)
    assert report.model_bit_exact, report.model_first


def _generates(name: str, target: str) -> bool:
    try:
        generate(load_tflite(ZOO / f"{name}.tflite"), load_target(target))
    except GenerateError:
        return False
    return True


_COND = re.compile(r"(eq|ne|cs|hs|cc|lo|mi|pl|vs|vc|hi|ls|ge|lt|gt|le)(\.[wn])?$")


@pytest.mark.parametrize("target", TARGETS)
def test_block_counts_match_per_instruction_hook(target: str, build_root: Path) -> None:
    """Translated blocks -> instruction counts agree with unicorn's per-instruction hook.

    The per-instruction hook skips IT-predicated instructions whose condition fails; the block
    counts include them (they still take an issue slot), so on Thumb the only differences are
    conditional instructions, and only upwards.
    """
    tg = load_target(target)
    graph, inputs = _merged(["i8_add_7x9x3"])
    emu = machine_for(build_elf(generate(graph, tg), tg, build_root), tg)
    spec = [((1, 7, 9, 3), np.int8)]
    one = [x[:1] for x in inputs]
    _, counts = emu.run_layer(0, one, spec, count_samples=[0], dispatch=True)
    blocks = counts[0]["blocks"]
    mine: Counter[int] = Counter()
    for start, (n, execs) in blocks.items():
        a = start
        for _ in range(n):
            mine[a] += execs
            a += emu.instruction(a).size
    seen: Counter[int] = Counter()
    hook = emu.uc.hook_add(UC_HOOK_CODE, lambda _uc, a, _s, _d: seen.update([a]))
    emu.uc.ctl_flush_tb()
    emu.run_layer(0, one, spec)  # also runs NAME_layer_scratch_bytes: left out below
    emu.uc.hook_del(hook)
    aside = emu.elf.symbols[f"{emu.elf.name}_layer_scratch_bytes"]
    seen = Counter({a: n for a, n in seen.items()
                    if not aside.addr <= a < aside.addr + aside.size and a != 0x1000_0000})
    diff = {a for a in set(mine) | set(seen) if mine[a] != seen[a]}
    if target == "cortex-a53":
        assert not diff
    else:
        assert all(mine[a] > seen[a] for a in diff)
        texts = [emu.instruction(a).text.split()[0] for a in diff]
        assert all(_COND.search(t) for t in texts), texts


@pytest.mark.parametrize("target", TARGETS)
def test_planted_instruction_is_named(target: str, build_root: Path) -> None:
    tg = load_target(target)
    graph, inputs = _merged(["i8_add_7x9x3"])
    project = generate(graph, tg)
    emu = machine_for(build_elf(project, tg, build_root), tg)
    spec = [((1, 7, 9, 3), np.int8)]
    emu.run_layer(0, inputs, spec)  # translated and cached before the patch
    symbol = project.layers[0].symbol
    addr = emu.elf.address(symbol)
    word, text = PLANTED[target]
    emu.patch(addr, word)
    with pytest.raises(EmulationError) as exc:
        emu.run_layer(0, inputs, spec)
    msg = str(exc.value)
    assert re.search(text, msg), msg
    assert f"0x{addr:08x}" in msg and symbol in msg and target in msg


@pytest.mark.parametrize(("target", "cpu", "fn", "pattern"), [
    ("cortex-m4", "cortex_m7+fp_armv8d16", "qt_dsum", r"\.f64"),
    ("cortex-a53", "cortex_a55", "qt_dot", r"\bsdot\b"),
])
def test_build_for_richer_cpu_faults_on_the_target(target: str, cpu: str, fn: str, pattern: str,
                                                   build_root: Path) -> None:
    """Code built with -mcpu of a richer chip runs on the target's core until it faults."""
    tg = load_target(target)
    graph, _ = _merged(["i8_add_7x9x3"])
    project = generate(graph, tg)
    a = np.arange(-64, 64, dtype=np.int8)
    d = np.linspace(-2, 2, 32)
    args = {"qt_dot": lambda e, p: [p, p, a.size], "qt_dsum": lambda e, p: [p, d.size]}
    data = {"qt_dot": a, "qt_dsum": d}[fn]
    want = {"qt_dot": int(np.dot(a.astype(np.int32), a)), "qt_dsum": int(d.sum() * 2.0)}[fn]

    own = machine_for(build_elf(project, tg, build_root, extra_sources={"qt.c": EXTRA},
                             keep=EXTRA_FNS), tg)
    p = own.alloc(data.nbytes)
    own.write(p, data)
    assert own.call(fn, args[fn](own, p))[0] == want

    rich = machine_for(build_elf(project, tg, build_root, cpu=cpu, extra_sources={"qt.c": EXTRA},
                              keep=EXTRA_FNS), tg)
    p = rich.alloc(data.nbytes)
    rich.write(p, data)
    with pytest.raises(EmulationError) as exc:
        rich.call(fn, args[fn](rich, p))
    msg = str(exc.value)
    assert re.search(pattern, msg) and fn in msg and target in msg, msg


@pytest.mark.parametrize(("target", "source", "pattern"), [
    ("cortex-a53", 'void qt_bad(void) { __asm__ volatile("sdot v0.4s, v1.16b, v2.16b"); }\n',
     r"instruction requires: dotprod"),
    ("cortex-m4", "#include <arm_neon.h>\nint32x4_t qt_bad(int32x4_t a) { return a; }\n",
     r"error"),
])
def test_compile_error_names_target_and_line(target: str, source: str, pattern: str,
                                             build_root: Path) -> None:
    tg = load_target(target)
    graph, _ = _merged(["i8_add_7x9x3"])
    with pytest.raises(CrossError) as exc:
        build_elf(generate(graph, tg), tg, build_root, extra_sources={"qt_bad.c": source})
    msg = str(exc.value)
    assert target in msg and tg.zig_cpu in msg and re.search(pattern, msg), msg
    assert "error" in exc.value.log


def test_generic_target_has_no_cross_build(build_root: Path) -> None:
    graph, _ = _merged(["i8_add_7x9x3"])
    with pytest.raises(CrossError, match="generic"):
        build_elf(generate(graph, load_target("generic")), load_target("generic"), build_root)


def test_wrong_result_is_a_mismatch(build_root: Path) -> None:
    """A deliberately wrong layer (one output byte flipped in run_layer) is reported."""
    tg = load_target("cortex-m4")
    graph, inputs = _merged(["i8_add_7x9x3", "i8_reshape_7x9x3_to_189"])
    project = generate(graph, tg)
    src = f"{project.name}.c"
    text, n = re.subn(r"(case 0: [^;]+;)", r"\1 ((unsigned char *)out[0])[5] ^= 1u;",
                      project.files[src], count=1)
    assert n == 1
    project.files[src] = text
    report = emulate_verify(graph, tg, inputs, build_root=build_root, project=project)
    first, second = report.layers
    assert not first.bit_exact and second.bit_exact
    assert first.differing == inputs[0].shape[0]
    assert first.first is not None and first.first.index == 5 and first.first.sample == 0
    assert report.model_bit_exact, "NAME_invoke does not go through run_layer"


def test_write_past_output_is_caught(build_root: Path) -> None:
    tg = load_target("cortex-a53")
    graph, inputs = _merged(["i8_reshape_7x9x3_to_189"])
    project = generate(graph, tg)
    src = f"{project.name}.c"
    project.files[src], n = re.subn(r"(case 0: [^;]+;)",
                                    r"\1 ((unsigned char *)out[0])[189] = 0u;",
                                    project.files[src], count=1)
    assert n == 1
    with pytest.raises(EmulationError, match="past the end of output 0"):
        emulate_verify(graph, tg, inputs, build_root=build_root, project=project)


def test_unaligned_ldrd_is_caught_on_cortex_m(build_root: Path) -> None:
    """unicorn does not fault on an unaligned LDRD; a real Cortex-M4 does, so the checker must."""
    graph, _ = _merged(["i8_add_7x9x3"])
    buf = np.arange(16, dtype=np.uint8)
    for target in TARGETS:
        tg = load_target(target)
        emu = machine_for(build_elf(generate(graph, tg), tg, build_root,
                                 extra_sources={"qt.c": EXTRA}, keep=EXTRA_FNS), tg)
        p = emu.alloc(16, 8)
        emu.write(p, buf)
        want = int(buf[:8].view(np.uint32).sum()) & 0xFFFF_FFFF
        ret, _ = emu.call("qt_load64", [p], count=True)
        assert ret & 0xFFFF_FFFF == want
        if target == "cortex-m4":
            with pytest.raises(EmulationError, match=r"unaligned access .*ldrd"):
                emu.call("qt_load64", [p + 2], count=True)
        else:
            emu.call("qt_load64", [p + 2], count=True)


def test_cross_build_is_cached_and_laid_out(build_root: Path) -> None:
    tg = load_target("cortex-m4")
    graph, _ = _merged(["i8_add_7x9x3"])
    project = generate(graph, tg)
    first = build_elf(project, tg, build_root)
    second = build_elf(project, tg, build_root)
    assert second.cached and second.path == first.path
    assert first.text_bytes > 0 and first.sizes()["flash"] >= first.text_bytes
    mem = first.memory
    for seg in first.segments:
        in_flash = mem.flash_origin <= seg.vaddr < mem.flash_origin + mem.flash_bytes
        in_ram = mem.ram_origin <= seg.vaddr < mem.ram_origin + mem.ram_bytes
        assert in_flash or in_ram
    assert mem.flash_origin <= first.address(f"{project.name}_invoke") < mem.ram_origin
    assert first.symbols["__stack_top"].addr == mem.ram_origin + mem.ram_bytes


@pytest.mark.parametrize("target", TARGETS)
def test_long_loop_body_is_one_basic_block(target: str, build_root: Path) -> None:
    """unicorn splits a long loop body into several translated blocks; the counts do not."""
    tg = load_target(target)
    graph, _ = _merged(["i8_add_7x9x3"])
    emu = machine_for(build_elf(generate(graph, tg), tg, build_root, extra_sources={"qt.c": EXTRA},
                             keep=EXTRA_FNS), tg)
    x = np.arange(LONG_STEPS, dtype=np.int32)
    p = emu.alloc(x.nbytes)
    emu.write(p, x)
    iterations = 7
    _, counts = emu.call("qt_long", [p, iterations], count=True)
    _check_counts(counts)
    body = [(n, e) for n, e in counts["blocks"].values() if e == iterations]
    assert body and max(n for n, _ in body) > 512, sorted(counts["blocks"].values())
    fn = emu.elf.symbols["qt_long"]
    assert all(fn.addr <= a < fn.addr + fn.size for a in counts["blocks"])
