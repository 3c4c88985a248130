"""qlane targets / generate / verify from the command line, hostile names, and the build files."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import ZOO
from peers import spec, write_tflite
from qlane.cli import main
from qlane.codegen.emit import generate
from qlane.codegen.targets import load_target
from qlane.codegen.verify import verify
from qlane.sim import Graph, Operator, QuantParams, load_tflite

ADD = ZOO / "i8_add_7x9x5_relu6.tflite"


def run(*args: object) -> tuple[int, str]:
    res = CliRunner().invoke(main, [str(a) for a in args])
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exc_info
    return res.exit_code, res.output


def test_targets_lists_the_chips() -> None:
    code, out = run("targets")
    assert code == 0
    for name in ("generic", "cortex-m4", "cortex-m7", "cortex-a53", "cortex-a72"):
        assert re.search(rf"^{name}\s", out, re.M), out
    assert "216 MHz" in out and "320 KB" in out


def test_generate_writes_the_project(tmp_path: Path) -> None:
    out = tmp_path / "gen"
    code, text = run("generate", ADD, "--target", "cortex-m7", "-o", out, "--name", "net")
    assert code == 0, text
    m = json.loads((out / "manifest.json").read_text())
    assert m["entry"] == "net_invoke" and m["target"] == "cortex-m7"
    assert {"net.h", "net.c", "main.c", "CMakeLists.txt", "Makefile"} <= set(m["files"])
    for f in m["sources"]:
        assert (out / f).exists()
    assert m["inputs"][0]["shape"] == [1, 7, 9, 5] and m["inputs"][1]["dtype"] == "int8"
    layer = m["layers"][0]
    assert layer["op"] == "ADD" and layer["kernel"].startswith("net_l000_qs8_add_")
    header = (out / "net.h").read_text()
    assert f"#define NET_ARENA_BYTES {m['arena_bytes']}" in header
    assert "int net_invoke(const void *const inputs[], void *const outputs[], void *arena);" \
        in header
    assert "malloc" not in "".join((out / f).read_text() for f in m["sources"])


def test_generate_refuses_foreign_files(tmp_path: Path) -> None:
    out = tmp_path / "gen"
    out.mkdir()
    (out / "net.c").write_text("/* mine */")
    code, text = run("generate", ADD, "--target", "generic", "-o", out, "--name", "net")
    assert code != 0 and "not written by qlane" in text and "Traceback" not in text
    assert (out / "net.c").read_text() == "/* mine */"


def test_generate_errors_are_one_line(tmp_path: Path) -> None:
    code, text = run("generate", ADD, "--target", "z80", "-o", tmp_path / "x")
    assert code != 0 and "unknown target 'z80'" in text and len(text.strip().splitlines()) == 1


def test_verify_cli_table_and_json() -> None:
    code, text = run("verify", ADD, "--target", "generic", "--inputs",
                     ZOO / "i8_add_7x9x5_relu6.npz", "--samples", 2)
    assert code == 0, text
    assert "identical" in text and "BIT-EXACT" in text
    code, text = run("verify", ADD, "--target", "cortex-a72", "--samples", 3, "--json")
    assert code == 0, text
    report = json.loads(text)
    assert report["bit_exact"] is True and report["samples"] == 3
    assert report["layers"][0]["op"] == "ADD" and report["layers"][0]["bit_exact"] is True


HOSTILE = '*/ #include "/etc/passwd"\nsystem("rm -rf /"); /* \\ ??/ int main(){}'


def _hostile_graph() -> Graph:
    q = QuantParams(np.float32(0.05), 3)
    a = spec([1, 4, 4, 3], np.int8, q, name=HOSTILE + "a")
    b = spec([1, 4, 4, 3], np.int8, QuantParams(np.float32(0.07), -5), name=HOSTILE + "b")
    c = spec([1, 4, 4, 3], np.int8, QuantParams(np.float32(0.1), 1), name=HOSTILE + "c")
    for k, t in enumerate((a, b, c)):
        t.index = k
    op = Operator(0, "ADD", (0, 1), (2,), {"activation": "RELU"})
    return Graph([a, b, c], [op], [0, 1], [2], name=HOSTILE)


def _strip_comments(text: str) -> str:
    return re.sub(r"/\*.*?\*/", " ", text, flags=re.S)


def test_hostile_names_never_reach_c_as_code(tmp_path: Path) -> None:
    model = tmp_path / "evil model;rm -rf.tflite"
    model.write_bytes(write_tflite(_hostile_graph()))
    graph = load_tflite(model)
    assert graph.tensors[0].name.startswith("*/")
    project = generate(graph, load_target("generic"))
    for fname, text in project.files.items():
        assert re.fullmatch(r"[a-z0-9_]+(\.[a-zA-Z]+)?|CMakeLists\.txt|Makefile", fname), fname
        if fname.endswith((".c", ".h")):
            code = _strip_comments(text)
            for needle in ("system(", "/etc/passwd", "rm -rf", "??/"):
                assert needle not in code, (fname, needle)
    report = verify(graph, load_target("generic"), [np.random.default_rng(1).integers(
        -128, 128, (2, 1, 4, 4, 3), dtype=np.int8) for _ in range(2)])
    assert report.bit_exact
    code, text = run("generate", model, "--target", "generic", "-o", tmp_path / "out")
    assert code == 0, text
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["entry"] == \
        "evil_model_rm_rf_invoke"


def _build(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600)


@pytest.mark.skipif(shutil.which("make") is None or shutil.which("cc") is None,
                    reason="make and cc are needed")
def test_generated_makefile_builds_and_runs_the_example(tmp_path: Path) -> None:
    out = tmp_path / "p"
    project = generate(load_tflite(ZOO / "u8_conv_7x9x3_k3s2_same_relu6.tflite"),
                       load_target("generic"), name="conv")
    from qlane.codegen.emit import write_project

    write_project(project, out)
    res = _build(["make", "CFLAGS=-std=c99 -O2 -Wall -Wextra -Werror", "conv_example"], out)
    assert res.returncode == 0, res.stderr
    ran = subprocess.run([str(out / "conv_example")], capture_output=True, text=True)
    assert ran.returncode == 0 and "checksum 0x" in ran.stdout


def test_generated_makefile_cross_compiles_with_zig(tmp_path: Path) -> None:
    pytest.importorskip("ziglang", reason="ziglang (PyPI) provides the cross compiler")
    out = tmp_path / "p"
    project = generate(load_tflite(ZOO / "i8_dw_7x9x3_k3s2_same_mult2_relu6.tflite"),
                       load_target("cortex-m4"), name="dw")
    from qlane.codegen.emit import write_project

    write_project(project, out)
    zig = f"{sys.executable} -m ziglang"
    res = _build(["make", f"CC={zig} cc -target thumb-freestanding-eabihf "
                  "-mcpu=cortex_m4+vfp4d16sp", f"AR={zig} ar",
                  "CFLAGS=-std=c99 -O2 -Wall -Werror -ffreestanding"], out)
    assert res.returncode == 0, res.stderr
    assert (out / "libdw.a").stat().st_size > 0


@pytest.mark.skipif(shutil.which("make") is None or shutil.which("cc") is None,
                    reason="make and cc are needed")
def test_generate_keeps_the_given_name(tmp_path: Path) -> None:
    out = tmp_path / "gen"
    code, text = run("generate", ADD, "--target", "generic", "-o", out, "--name", "Net")
    assert code == 0, text
    assert text.startswith(f"generated Net_invoke for generic (double rounding) in {out}")
    assert {"Net.h", "Net.c", "Net_l000.c"} <= {p.name for p in out.iterdir()}
    (out / "user.c").write_text('#include "Net.h"\n'
                                'int use(void) { return NET_ARENA_BYTES > 0; }\n')
    res = _build(["cc", "-std=c99", "-Wall", "-Werror", "-c", "user.c", "Net.c", "Net_l000.c"],
                 out)
    assert res.returncode == 0, res.stderr


@pytest.mark.parametrize(("name", "reason"), [
    ("int", "name 'int' is a C keyword; choose another name"),
    ("a b", "name 'a b' is not a C identifier"),
    ("__net", "name '__net' starts with _ (reserved for the C implementation)")])
def test_generate_refuses_unsafe_names(tmp_path: Path, name: str, reason: str) -> None:
    code, text = run("generate", ADD, "--target", "generic", "-o", tmp_path / "gen",
                     "--name", name)
    lines = text.strip().splitlines()
    assert code == 1 and len(lines) == 1 and lines[0].startswith(f"Error: {reason}"), text
    assert not (tmp_path / "gen").exists()


def test_generate_removes_and_names_stale_files(tmp_path: Path) -> None:
    out = tmp_path / "gen"
    assert run("generate", ADD, "--target", "cortex-m4", "-o", out, "--name", "first")[0] == 0
    first = set(json.loads((out / "manifest.json").read_text())["files"])
    (out / "notes.txt").write_text("mine")
    code, text = run("generate", ADD, "--target", "generic", "-o", out, "--name", "second")
    assert code == 0, text
    second = set(json.loads((out / "manifest.json").read_text())["files"])
    stale = sorted(first - second)
    assert len(stale) > 5 and "first.h" in stale and "cmake/zig.cmake" in stale
    assert text.splitlines()[-1] == (f"removed {len(stale)} stale files of the previous "
                                     f"generation: {', '.join(stale)}")
    assert {p.name for p in out.iterdir()} == second | {"notes.txt"}
    code, text = run("generate", ADD, "--target", "generic", "-o", out, "--name", "second")
    assert code == 0 and "removed" not in text
