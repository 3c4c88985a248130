"""The generated project as a user builds it: the host example on the bundled sample or on input
files, and the bare-metal example for Cortex-M boards (Makefile and CMake, arm-none-eabi-gcc and
zig), each run and compared with the simulator through the checksum it prints or stores."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import qlane
from board import run_board_elf
from conftest import ZOO, zoo_inputs
from qlane.codegen.emit import generate, write_project
from qlane.codegen.placement import STACK_BYTES, STATIC_BYTES, Item, place
from qlane.codegen.targets import Region, load_target
from qlane.sim import load_tflite

WERROR = "-std=c99 -O2 -Wall -Wextra -Werror"
BOARD_CFLAGS = f"BOARD_CFLAGS={WERROR} -ffunction-sections -fdata-sections"
HAS_GCC_ARM = shutil.which("arm-none-eabi-gcc") is not None
NO_GCC_ARM = "arm-none-eabi-gcc is not installed (Debian: apt-get install gcc-arm-none-eabi)"


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, f"{' '.join(cmd)}\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res


def _project(tmp: Path, model: str, target: str, sample: int | None = 0) -> tuple[Path, int]:
    """Generate ``model`` for ``target`` with sample ``sample`` embedded; (dir, checksum)."""
    graph = load_tflite(ZOO / f"{model}.tflite")
    xs = zoo_inputs(model)
    given = None if sample is None else [x[sample] for x in xs]
    out = tmp / f"{model}-{target}"
    write_project(generate(graph, load_target(target), name="net", sample=given), out)
    checksum = 0
    if given is not None:
        y = qlane.simulate(graph, [x[sample:sample + 1] for x in xs]).outputs
        checksum = qlane.output_checksum([o[0] for o in y])
    return out, checksum


@pytest.mark.skipif(shutil.which("cc") is None, reason="a host C compiler (cc) is needed")
def test_host_example_int8_prints_the_simulator_checksum(tmp_path: Path) -> None:
    """int8 outputs are int8_t (the example once printed 208 for -48), the top classes are the
    simulator's, and a raw input file gives that sample's checksum."""
    model = "i8_mobilenet_v1_0.25_128"
    out, want = _project(tmp_path, model, "generic")
    _run(["make", f"CFLAGS={WERROR}", "example"], out)
    ran = _run([str(out / "net_example")], out).stdout
    assert f"checksum 0x{want:08x}" in ran and "identical" in ran
    y = qlane.simulate(load_tflite(ZOO / f"{model}.tflite"), zoo_inputs(model)).outputs[0]
    top = np.argsort(-y[0].reshape(-1).astype(np.int64), kind="stable")[:5]
    lines = [ln.split() for ln in ran.splitlines() if ln.strip().startswith("class")]
    assert [int(ln[1].rstrip(":")) for ln in lines] == top.tolist()
    assert [int(ln[2]) for ln in lines] == y[0].reshape(-1)[top].tolist()  # signed values
    assert min(int(ln[2]) for ln in lines) < 0 or y[0].min() >= 0
    x1 = zoo_inputs(model)[0][1]
    (out / "x1.bin").write_bytes(np.ascontiguousarray(x1).tobytes())
    ran1 = _run([str(out / "net_example"), "x1.bin"], out).stdout
    assert f"checksum 0x{qlane.output_checksum([y[1]]):08x}" in ran1
    bad = subprocess.run([str(out / "net_example"), "net.h"], cwd=out, capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode == 2 and "expected exactly 49152 bytes" in bad.stderr


def test_without_a_sample_the_examples_use_zero_points(tmp_path: Path) -> None:
    out, _ = _project(tmp_path, "u8_add_7x9x3", "generic", sample=None)
    text = (out / "net_sample.h").read_text()
    assert "#define NET_SAMPLE_GIVEN 0" in text and "net_sample_input0" not in text
    if shutil.which("cc"):
        _run(["make", f"CFLAGS={WERROR}", "example"], out)
        assert "checksum 0x" in _run([str(out / "net_example")], out).stdout


@pytest.mark.parametrize("target", ["cortex-m4", "cortex-m7"])
def test_board_example_with_zig_runs_on_the_core(tmp_path: Path, target: str) -> None:
    out, want = _project(tmp_path, "u8_mobilenet_v1_0.25_128", target)
    _run(["make", f"PYTHON={sys.executable}", BOARD_CFLAGS, "zig-board"], out)
    got = run_board_elf(out / "build-zig" / "net_board.elf", load_target(target))
    assert got == {"status": 0, "checksum": want, "top1": got["top1"], "match": 1}


@pytest.mark.skipif(not HAS_GCC_ARM, reason=NO_GCC_ARM)
@pytest.mark.parametrize("target", ["cortex-m4", "cortex-m7"])
def test_board_example_with_arm_gcc_runs_and_its_map_matches_the_placement(
        tmp_path: Path, target: str) -> None:
    """make board with arm-none-eabi-gcc, -Werror, no host system calls; the ELF runs on the
    emulated core and equals the simulator; the link map puts each buffer where qlane said."""
    out, want = _project(tmp_path, "u8_mobilenet_v1_0.25_128", target)
    _run(["make", BOARD_CFLAGS, "board"], out)
    elf = out / "build-board" / "net_board.elf"
    got = run_board_elf(elf, load_target(target))
    assert got["status"] == 0 and got["checksum"] == want and got["match"] == 1
    text = (out / "build-board" / "net_board.map").read_text()
    sections = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[0].startswith(".qlane_") and parts[1].startswith("0x"):
            sections[parts[0][len(".qlane_"):]] = (int(parts[1], 16), int(parts[2], 16))
    # the estimate's fit is the layout the linker was asked for, region by region
    fit = qlane.estimate(ZOO / "u8_mobilenet_v1_0.25_128.tflite", target, mode="static").ram
    want = {"cortex-m4": {"sram": {"arena", "output0"}, "ccm": {"input0"}},
            "cortex-m7": {"sram": {"arena", "input0", "output0"}}}[target]
    assert {u.region.name: {i.name for i in u.items if i.name.startswith(("arena", "in", "out"))}
            for u in fit.uses if u.items} == want  # the M4's 128 KB SRAM cannot hold all three
    assert set(sections) == set(want)
    for use in fit.uses:
        placed = sum(-(-i.bytes // 16) * 16 for i in use.items if i.name in want[use.region.name])
        assert placed - 16 < sections[use.region.name][1] <= placed, (use.region.name, sections)
        assert sections[use.region.name][0] % 16 == 0
        assert sections[use.region.name][0] >= use.region.origin
    static = sum(int(p[2], 16) for p in (ln.split() for ln in text.splitlines())
                 if len(p) >= 3 and p[0] in (".data", ".bss") and p[1].startswith("0x"))
    assert static <= STATIC_BYTES  # the reserve the fit counts for the program's globals
    assert "libnosys.a(" not in text  # no system call stub was needed


@pytest.mark.skipif(not HAS_GCC_ARM or shutil.which("cmake") is None,
                    reason=NO_GCC_ARM + "; cmake is needed too")
@pytest.mark.parametrize("toolchain", ["arm-none-eabi", "zig"])
def test_cmake_builds_the_board_example(tmp_path: Path, toolchain: str) -> None:
    out, want = _project(tmp_path, "i8_conv_12x10x16_k3_same_to24", "cortex-m4")
    build = out / f"build-{toolchain}"
    _run(["cmake", "-S", ".", "-B", str(build), f"-DCMAKE_TOOLCHAIN_FILE=cmake/{toolchain}.cmake",
          f"-DQLANE_PYTHON={sys.executable}", "-DCMAKE_C_FLAGS=-Wall -Wextra -Werror"], out)
    _run(["cmake", "--build", str(build)], out)
    got = run_board_elf(build / "net_board.elf", load_target("cortex-m4"))
    assert got["status"] == 0 and got["checksum"] == want and got["match"] == 1


@pytest.mark.skipif(shutil.which("cmake") is None or shutil.which("cc") is None,
                    reason="cmake and cc are needed")
def test_cmake_host_build(tmp_path: Path) -> None:
    out, want = _project(tmp_path, "i8_conv_12x10x16_k3_same_to24", "cortex-m7")
    _run(["cmake", "-S", ".", "-B", "build", "-DCMAKE_C_FLAGS=-Wall -Wextra -Werror"], out)
    _run(["cmake", "--build", "build"], out)
    assert f"checksum 0x{want:08x}" in _run([str(out / "build" / "net_example")], out).stdout


def test_placement_first_fit_and_overflow() -> None:
    sram, ccm = Region("sram", 131072, kind="ram"), Region("ccm", 65536, kind="ram")
    items = [Item("arena", 98_336), Item("input0", 49_152), Item("output0", 1001),
             Item("static data", 1024, main=True), Item("stack", STACK_BYTES, main=True)]
    p = place(items, [sram, ccm])
    assert p.fits and p.region_of("arena") == "sram" and p.region_of("input0") == "ccm"
    assert p.region_of("output0") == "sram"
    assert p.uses[0].used == 98_336 + 1008 + 1024 + STACK_BYTES
    small = place([Item("arena", 200_000), *items[1:]], [sram, ccm])
    assert not small.fits and [u.fits for u in small.uses] == [False, True]
