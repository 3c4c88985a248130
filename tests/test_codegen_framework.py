"""Code generation plumbing: symbols, identifiers, the arena planner, targets, output safety."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import ZOO
from qlane.codegen.emit import GenerateError, content_hash, generate, write_project
from qlane.codegen.names import KernelSpec, c_comment, c_identifier, parse_symbol
from qlane.codegen.planner import Buffer, check_plan, plan_arena
from qlane.codegen.targets import TargetError, load_target, target_names
from qlane.sim import load_tflite


def test_kernel_symbols_parse_back() -> None:
    for spec in [
        KernelSpec("mnet", 3, "uint8", "dwconv2d", "k3x3s2", "double", "1x8", "neon"),
        KernelSpec("a_l001_b", 120, "int8", "conv2d", "k1x1s1", "single", "4x8", "dsp"),
        KernelSpec("m", 0, "int8", "fc", "n1001", "litert", "1x4", "c"),
    ]:
        assert parse_symbol(spec.symbol) == spec
    assert parse_symbol("mnet_l003_qu8_dwconv2d_k3x3s2_rnddbl_1x8__neon").tile == "1x8"
    with pytest.raises(ValueError):
        parse_symbol("mnet_l003_qu8_dwconv2d_k3x3s2_rnddbl_1x8__sse")


@pytest.mark.parametrize("text", ["int", "3d model", "__x", "a/*b*/c", "a\nb", "", "é", "main"])
def test_identifiers_are_safe(text: str) -> None:
    ident = c_identifier(text)
    assert ident and ident.isidentifier() and ident.isascii()
    assert not ident[0].isdigit() and not ident.startswith("__")
    assert ident not in {"int", "main", "static"}


def test_comments_cannot_escape() -> None:
    hostile = "x */ system(\"rm -rf /\"); /* \\\n??/ \x00"
    clean = c_comment(hostile)
    assert "*/" not in clean and "/*" not in clean and "\n" not in clean
    assert "??" not in clean and "\\" not in clean and "\x00" not in clean
    # a backslash becomes "/" before the delimiters are broken up, so none can form afterwards
    for text in ("a\\*b", "/\\*", "*\\/", "**//**", "/*/", "???"):
        clean = c_comment(text)
        assert "*/" not in clean and "/*" not in clean and "??" not in clean, (text, clean)
        assert c_comment(clean) == clean  # idempotent


def test_planner_reuses_memory_without_overlap() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        bufs = []
        for k in range(int(rng.integers(1, 30))):
            first = int(rng.integers(0, 20))
            bufs.append(Buffer(f"b{k}", int(rng.integers(1, 5000)), first,
                               first + int(rng.integers(0, 5))))
        plan = plan_arena(bufs)
        check_plan(bufs, plan)
        assert plan.arena_bytes <= plan.naive_bytes
        peak = max(sum((b.size + 15) // 16 * 16 for b in bufs if b.first <= t <= b.last)
                   for t in range(30))
        assert plan.arena_bytes >= peak


def test_targets_load() -> None:
    names = target_names()
    assert {"generic", "cortex-m4", "cortex-m7", "cortex-a53", "cortex-a72"} <= set(names)
    m7 = load_target("cortex-m7")
    assert m7.clock_hz == 216_000_000 and m7.sram_bytes == 320 * 1024
    assert m7.features["dsp"] and not m7.features["neon"] and m7.isa[-1] == "c"
    assert load_target("cortex-a72").features["neon"]
    with pytest.raises(TargetError, match="unknown target"):
        load_target("pentium")


def test_generation_is_deterministic() -> None:
    graph = load_tflite(ZOO / "u8_add_7x9x5_relu6.tflite")
    t = load_target("generic")
    a, b = generate(graph, t, name="m"), generate(load_tflite(ZOO / "u8_add_7x9x5_relu6.tflite"),
                                                  t, name="m")
    assert a.files == b.files and content_hash(a) == content_hash(b)
    assert all("do not edit" in text for f, text in a.files.items() if f.endswith((".c", ".h")))


@pytest.mark.parametrize("target", ["generic", "cortex-m7", "cortex-a72"])
def test_mobilenet_generation_is_byte_identical(target: str) -> None:
    path = ZOO / "u8_mobilenet_v1_0.25_128.tflite"
    a = generate(load_tflite(path), load_target(target), name="mnet")
    b = generate(load_tflite(path), load_target(target), name="mnet")
    assert content_hash(a) == content_hash(b)
    assert len(a.files) > 35 and a.manifest["arena_bytes"] < a.manifest["arena_naive_bytes"]


def test_existing_directory_is_not_clobbered(tmp_path: Path) -> None:
    graph = load_tflite(ZOO / "i8_add_7x9x3.tflite")
    project = generate(graph, load_target("generic"), name="m")
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "m.c").write_text("my own m.c")
    with pytest.raises(GenerateError, match="not written by qlane"):
        write_project(project, out)
    assert (out / "m.c").read_text() == "my own m.c"
    (out / "m.c").unlink()
    write_project(project, out)
    write_project(project, out)  # a second run replaces its own files
    assert (out / "notes.txt").read_text() == "mine"
    manifest = json.loads((out / "manifest.json").read_text())
    assert "notes.txt" not in manifest["files"] and "m.c" in manifest["files"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(GenerateError, match="not a directory"):
        write_project(project, tmp_path / "file")


def test_layer_with_only_constant_inputs_is_refused_clearly() -> None:
    from peers import single_op_graph, spec
    from qlane.sim import QuantParams

    q = QuantParams(np.float32(0.1), 0)
    graph = single_op_graph("ADD", [spec([4], np.int8, q, np.arange(4)),
                                    spec([4], np.int8, q, np.arange(4))],
                            [spec([4], np.int8, QuantParams(np.float32(0.2), 0))],
                            {"activation": "NONE"})
    graph.inputs = []
    with pytest.raises(GenerateError, match="every input is a constant"):
        generate(graph, load_target("generic"))


def test_interrupted_host_build_cache_is_rebuilt(tmp_path: Path) -> None:
    """A cache entry left half-written (manifest.json first, sources missing) is replaced."""
    from qlane.codegen.verify import HostBuild, verify

    graph = load_tflite(ZOO / "u8_add_7x9x3.tflite")
    target = load_target("generic")
    project = generate(graph, target)
    src = tmp_path / f"{project.name}-{content_hash(project)[:20]}" / "src"
    src.mkdir(parents=True)
    (src / "manifest.json").write_text(project.files["manifest.json"])
    HostBuild(project, tmp_path)
    assert sorted(p.name for p in src.iterdir()) == sorted(project.files)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folders left
    x = np.random.default_rng(0).integers(0, 256, (2, *graph.input_tensors[0].shape), np.uint8)
    y = np.random.default_rng(1).integers(0, 256, (2, *graph.input_tensors[1].shape), np.uint8)
    assert verify(graph, target, [x, y], build_root=tmp_path).bit_exact


_PARALLEL = """
import sys
import numpy as np
from qlane.codegen.targets import load_target
from qlane.codegen.verify import verify
from qlane.sim import load_tflite
graph = load_tflite(sys.argv[1])
rng = np.random.default_rng(0)
xs = [rng.integers(0, 256, (2, *t.shape)).astype(t.dtype) if t.dtype.kind == "u" else
      rng.integers(-128, 128, (2, *t.shape)).astype(t.dtype) for t in graph.input_tensors]
report = verify(graph, load_target("cortex-m7"), xs, build_root=sys.argv[2])
print("BIT-EXACT" if report.bit_exact else "MISMATCH")
"""


def test_parallel_verifies_share_a_cache(tmp_path: Path) -> None:
    """Two processes verifying (different, then equal) models into one cache both succeed."""
    import subprocess
    import sys

    for models in (["u8_add_7x9x3", "i8_conv_7x9x3_k3s2_same_relu6"],
                   ["u8_fc_3x13_to5", "u8_fc_3x13_to5"]):
        procs = [subprocess.Popen([sys.executable, "-c", _PARALLEL, str(ZOO / f"{m}.tflite"),
                                   str(tmp_path)], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for m in models]
        for p in procs:
            out, err = p.communicate(timeout=300)
            assert p.returncode == 0 and out.strip() == "BIT-EXACT", err[-2000:]


def test_given_names_are_kept_exactly() -> None:
    graph = load_tflite(ZOO / "i8_add_7x9x3.tflite")
    project = generate(graph, load_target("generic"), name="Net")
    assert project.name == "Net" and project.manifest["entry"] == "Net_invoke"
    assert {"Net.h", "Net.c", "Net_l000.c", "Net_sample.h"} <= set(project.files)
    assert "int Net_invoke(const void *const inputs[]" in project.files["Net.h"]
    assert "#define NET_ARENA_BYTES " in project.files["Net.h"]
    assert project.manifest["layers"][0]["kernel"].startswith("Net_l000_qs8_add_")
    assert parse_symbol(project.manifest["layers"][0]["kernel"]).prefix == "Net"


@pytest.mark.parametrize(("name", "reason"), [
    ("int", "name 'int' is a C keyword"),
    ("bool", "name 'bool' is a C keyword"),
    ("a b", "name 'a b' is not a C identifier"),
    ("3net", "name '3net' is not a C identifier"),
    ("", "name '' is not a C identifier"),
    ("__net", "name '__net' starts with _ (reserved"),
    ("_Net", "name '_Net' starts with _ (reserved"),
    ("n" * 41, "is 41 characters long (at most 40)"),
    ("main", "name 'main' is the C entry point main"),
    ("Board", "name 'Board' clashes with qlane's own board.c"),
    ("qlane_fixedpoint", "uses qlane's own C prefix qlane_"),
])
def test_given_names_that_are_unsafe_are_refused(name: str, reason: str) -> None:
    graph = load_tflite(ZOO / "i8_add_7x9x3.tflite")
    with pytest.raises(GenerateError) as e:
        generate(graph, load_target("generic"), name=name)
    assert reason in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize(("model_name", "prefix"), [
    ("My Net", "my_net"), ("int", "int_"), ("board", "m_board"), ("qlane_rt", "m_qlane_rt")])
def test_names_from_the_model_file_are_sanitised(model_name: str, prefix: str) -> None:
    graph = load_tflite(ZOO / "i8_add_7x9x3.tflite")
    graph.name = model_name
    project = generate(graph, load_target("generic"))
    assert project.name == prefix and f"{prefix}.c" in project.files


def test_stale_files_of_the_previous_generation_are_removed(tmp_path: Path) -> None:
    out = tmp_path / "out"
    graph = load_tflite(ZOO / "i8_add_7x9x3.tflite")
    first = generate(graph, load_target("cortex-m4"), name="first")
    write_project(first, out)
    assert first.removed == []
    (out / "notes.txt").write_text("mine")
    (out / "cmake" / "mine.cmake").write_text("mine")
    second = generate(graph, load_target("generic"), name="second")
    write_project(second, out)
    stale = sorted(set(first.files) - set(second.files))
    assert second.removed == stale
    assert {"first.c", "first.h", "first_l000.c", "board.c", "cmake/zig.cmake"} <= set(stale)
    on_disk = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()}
    assert on_disk == set(second.files) | {"notes.txt", "cmake/mine.cmake"}
    (out / "cmake" / "mine.cmake").unlink()
    write_project(first, out)
    write_project(second, out)
    assert not (out / "cmake").exists()  # emptied by the removal: gone too


def test_stale_removal_stays_inside_the_directory(tmp_path: Path) -> None:
    out = tmp_path / "out"
    graph = load_tflite(ZOO / "i8_add_7x9x3.tflite")
    project = generate(graph, load_target("generic"), name="m")
    write_project(project, out)
    (tmp_path / "outside.txt").write_text("keep")
    (out / "sub").mkdir()
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["files"] += ["../outside.txt", str(tmp_path / "outside.txt"), "sub", "gone.c"]
    (out / "manifest.json").write_text(json.dumps(manifest))
    write_project(project, out)
    assert project.removed == []
    assert (tmp_path / "outside.txt").read_text() == "keep" and (out / "sub").is_dir()
    manifest["files"] = "m.c"  # not a list: not a qlane manifest
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(GenerateError, match="is not a qlane manifest"):
        write_project(project, out)
