"""The cross build with arm-none-eabi-gcc (``cc="gcc"``): bit-exact on the Cortex-M instruction
sets, costed by the emulated estimate, cached apart from zig's build, refused for AArch64 and
named when absent."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("unicorn")
pytest.importorskip("capstone")
pytest.importorskip("elftools")
pytest.importorskip("ziglang")

from click.testing import CliRunner  # noqa: E402
from elftools.elf.elffile import ELFFile  # noqa: E402

from conftest import ZOO, merged_zoo  # noqa: E402
from qlane import api  # noqa: E402
from qlane.cli import main  # noqa: E402
from qlane.codegen import cross  # noqa: E402
from qlane.codegen.cross import CrossError, build_elf  # noqa: E402
from qlane.codegen.emit import generate  # noqa: E402
from qlane.codegen.emulate import emulate_verify  # noqa: E402
from qlane.codegen.estimate import estimate  # noqa: E402
from qlane.codegen.targets import load_target  # noqa: E402
from qlane.sim import load_tflite  # noqa: E402
from qlane.sim.graph import Graph  # noqa: E402

HAS_GCC = shutil.which(cross.GCC) is not None
needs_gcc = pytest.mark.skipif(not HAS_GCC, reason=f"{cross.GCC} is not installed (Debian: "
                               f"apt-get install {cross.GCC_PACKAGE})")

MODELS = {dt: [f"{dt}_{m}" for m in (
    "conv_7x9x3_k3s2_same_relu6", "conv_12x10x16_k3_same_to24", "conv_b2_6x5x3_k1_relu",
    "dw_16x16x32_k3_same", "dw_7x9x3_k3s2_same_mult2_relu6", "fc_4x256_to100", "fc_3x13_to5",
    "add_7x9x5_relu6", "softmax_2x1001", "avgpool_7x9x5_k3s2_same")] for dt in ("u8", "i8")}
"""Conv (first-conv, kxk, pointwise), depthwise, FC, ADD, SOFTMAX and a pool, per dtype."""
M_TARGETS = ["cortex-m4", "cortex-m7"]


@pytest.fixture(scope="module")
def build_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cross-gcc")


def _merged(names: list[str]) -> tuple[Graph, list[np.ndarray]]:
    return merged_zoo(names, "gcc")


def _comment(path: Path) -> str:
    with path.open("rb") as fh:
        sec = ELFFile(fh).get_section_by_name(".comment")
        return sec.data().decode(errors="replace") if sec is not None else ""


@needs_gcc
@pytest.mark.parametrize("dtype", ["u8", "i8"])
@pytest.mark.parametrize("target", M_TARGETS)
def test_zoo_bit_exact_on_cortex_m_built_with_gcc(target: str, dtype: str,
                                                  build_root: Path) -> None:
    graph, inputs = _merged(MODELS[dtype])
    tg = load_target(target)
    report = emulate_verify(graph, tg, inputs, build_root=build_root, cc="gcc")
    assert report.bit_exact, [(r.index, r.op) for r in report.layers if not r.bit_exact]
    assert len(report.counts) == len(graph.operators)
    assert all(c["instructions"] > 0 for c in report.counts.values())
    elf = Path(report.elf)
    assert "GCC:" in _comment(elf) and "clang" not in _comment(elf)
    build = json.loads((elf.parent / "build.json").read_text())
    assert build["cc"] == "gcc" and f"-mcpu={target}" in build["flags"]
    assert "-ffunction-sections" in build["flags"] and "-lgcc" in build["command"]


@needs_gcc
def test_emulated_estimate_with_gcc_differs_from_zig(build_root: Path) -> None:
    graph, _ = _merged(["i8_conv_12x10x16_k3_same_to24", "i8_dw_16x16x32_k3_same",
                        "i8_fc_4x256_to100"])
    tg = load_target("cortex-m4")
    by = {cc: estimate(graph, tg, build_root=build_root, cc=cc) for cc in ("zig", "gcc")}
    for cc, est in by.items():
        assert all(la.instructions > 0 and la.cycles > 0 for la in est.layers), cc
        assert est.compiler == cross.compiler_version(cc)
        assert est.to_json()["compiler"] == est.compiler
        assert any(est.compiler in note for note in est.notes)
    assert by["gcc"].compiler.startswith("arm-none-eabi-gcc ")
    assert by["zig"].compiler.startswith("zig ")
    assert [la.instructions for la in by["gcc"].layers] != [la.instructions
                                                            for la in by["zig"].layers]
    assert by["gcc"].cycles != by["zig"].cycles
    via_api = api.estimate(graph, tg, cc="gcc")
    assert via_api.instructions == by["gcc"].instructions


@needs_gcc
def test_cache_key_separates_the_compilers(build_root: Path) -> None:
    tg = load_target("cortex-m7")
    project = generate(load_tflite(ZOO / "u8_add_7x9x3.tflite"), tg)
    zig = build_elf(project, tg, build_root)
    gcc = build_elf(project, tg, build_root, cc="gcc")
    again = build_elf(project, tg, build_root, cc="gcc")
    assert zig.path.parent != gcc.path.parent
    assert again.cached and again.path == gcc.path and not gcc.cached
    assert build_elf(project, tg, build_root).path == zig.path
    assert zig.compiler.startswith("zig ") and again.compiler == gcc.compiler
    assert gcc.compiler.startswith("arm-none-eabi-gcc ")
    assert gcc.command[0].endswith(cross.GCC) and "--gc-sections" in " ".join(gcc.command)
    assert gcc.address(f"{project.name}_invoke") == gcc.entry


def _one_line(args: list[str]) -> str:
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 1, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1, res.output
    return lines[0]


@pytest.mark.parametrize("command", ["estimate", "verify"])
def test_gcc_on_aarch64_is_a_one_line_error(command: str) -> None:
    model = str(ZOO / "i8_add_7x9x3.tflite")
    extra = ["--isa"] if command == "verify" else []
    line = _one_line([command, model, "--target", "cortex-a53", "--cc", "gcc", *extra])
    assert "Cortex-M" in line and "cortex-a53" in line and "--cc zig" in line
    with pytest.raises(CrossError, match="Cortex-M"):
        api.verify(model, "cortex-a53", samples=1, isa=True, cc="gcc")
    with pytest.raises(CrossError, match="Cortex-M"):
        api.estimate(model, "cortex-a72", cc="gcc")


def test_absent_gcc_names_the_debian_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cross.shutil, "which", lambda name: None)
    cross.gcc_command.cache_clear()
    try:
        line = _one_line(["estimate", str(ZOO / "i8_add_7x9x3.tflite"), "--target", "cortex-m4",
                          "--cc", "gcc"])
    finally:
        cross.gcc_command.cache_clear()
    assert "arm-none-eabi-gcc" in line and "apt-get install gcc-arm-none-eabi" in line
