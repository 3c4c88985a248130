"""The qlane command line: inspect and simulate on real models, and its errors."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import ZOO
from qlane.cli import main

ROOT = Path(__file__).resolve().parents[1]
MOBILENET = ROOT / "examples" / "mobilenet_v1_0.25_128_u8.tflite"
MOBILENET_INPUTS = ROOT / "examples" / "mobilenet_v1_0.25_128_u8.inputs.npz"


def run(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(main, [str(a) for a in args])
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exc_info
    return res.exit_code, res.output


def test_inspect_mobilenet_totals() -> None:
    code, out = run("inspect", MOBILENET)
    assert code == 0
    # the zoo's 467,595 constants include RESHAPE's 2-element shape, which is no parameter
    assert "total: 31 layers, 13,570,304 MACs, 467,593 parameters (478,804 bytes)" in out
    assert "DEPTHWISE_CONV_2D" in out and "(unsupported)" not in out


def test_inspect_json_schema_and_sums() -> None:
    code, out = run("inspect", MOBILENET, "--json")
    assert code == 0
    info = json.loads(out)
    assert info["scheme"] == "uint8"
    assert info["inputs"][0]["shape"] == [1, 128, 128, 3]
    assert info["inputs"][0]["zero_point"] == [128]
    layers = info["layers"]
    assert len(layers) == 31
    assert sum(r["macs"] for r in layers) == info["total"]["macs"] == 13_570_304
    assert layers[0]["op"] == "CONV_2D" and layers[0]["macs"] == 64 * 64 * 8 * 27
    assert layers[0]["outputs"][0]["shape"] == [1, 64, 64, 8]


def test_inspect_int8_per_channel() -> None:
    code, out = run("inspect", ZOO / "i8_conv_12x10x16_k3_same_to24.tflite")
    assert code == 0
    assert "per-axis[24]" in out and "int8" in out


def test_simulate_matches_reference(tmp_path: Path) -> None:
    out = tmp_path / "out.npz"
    tens = tmp_path / "t.npz"
    code, text = run("simulate", MOBILENET, "--inputs", MOBILENET_INPUTS, "--output", out,
                     "--tensors", tens)
    assert code == 0, text
    ref = np.load(ZOO / "u8_mobilenet_v1_0.25_128.tfl214.npz")["out0"]
    np.testing.assert_array_equal(np.load(out)["out0"], ref)
    inter = np.load(ZOO / "u8_mobilenet_v1_0.25_128.tensors.npz")
    np.testing.assert_array_equal(np.load(tens)["t31"], inter["t31"])
    assert f"argmax per sample {ref.reshape(3, -1).argmax(1).tolist()}" in text


def test_simulate_random_inputs_are_seeded(tmp_path: Path) -> None:
    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    model = ZOO / "i8_conv_7x9x3_k3s2_same_relu6.tflite"
    assert run("simulate", model, "--output", a, "--samples", 5, "--seed", 3)[0] == 0
    assert run("simulate", model, "--output", b, "--samples", 5, "--seed", 3)[0] == 0
    ya, yb = np.load(a)["out0"], np.load(b)["out0"]
    assert ya.shape == (5, 1, 4, 5, 5) and ya.dtype == np.int8
    assert len(np.unique(ya)) > 10
    np.testing.assert_array_equal(ya, yb)


@pytest.mark.parametrize("rounding", ["double", "single", "litert"])
def test_simulate_rounding_modes(tmp_path: Path, rounding: str) -> None:
    out = tmp_path / "o.npz"
    model = ZOO / "i8_fc_4x256_to100.tflite"
    inputs = ZOO / "i8_fc_4x256_to100.npz"
    code, text = run("simulate", model, "--inputs", inputs, "--output", out,
                     "--rounding", rounding)
    assert code == 0, text
    got = np.load(out)["out0"]
    if rounding == "double":
        np.testing.assert_array_equal(got, np.load(ZOO / "i8_fc_4x256_to100.tfl214.npz")["out0"])
    if rounding == "litert":
        np.testing.assert_array_equal(got, np.load(inputs)["out0"])


def _one_line_error(code: int, out: str, *needles: str) -> None:
    assert code != 0
    assert "Traceback" not in out
    lines = [ln for ln in out.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, out
    for n in needles:
        assert n in lines[0], out


def test_errors_are_one_line(tmp_path: Path) -> None:
    _one_line_error(*run("inspect", tmp_path / "missing.tflite"), "cannot read")
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"\x00" * 64)
    _one_line_error(*run("inspect", junk), "junk")
    trunc = tmp_path / "trunc.tflite"
    trunc.write_bytes(MOBILENET.read_bytes()[:5000])
    _one_line_error(*run("inspect", trunc), "trunc")

    bad = tmp_path / "bad.npz"
    np.savez(bad, x=np.zeros(3))
    _one_line_error(*run("simulate", MOBILENET, "--inputs", bad, "--output", tmp_path / "o.npz"),
                    "missing array 'in0'")
    np.savez(bad, in0=np.zeros((2, 1, 128, 128, 3), np.float32))
    _one_line_error(*run("simulate", MOBILENET, "--inputs", bad, "--output", tmp_path / "o.npz"),
                    "dtype float32", "uint8")
    np.savez(bad, in0=np.zeros((2, 128, 128, 3), np.uint8))
    _one_line_error(*run("simulate", MOBILENET, "--inputs", bad, "--output", tmp_path / "o.npz"),
                    "shape [2, 128, 128, 3]")


def test_inputs_and_model_are_never_overwritten(tmp_path: Path) -> None:
    inputs = tmp_path / "in.npz"
    np.savez(inputs, in0=np.load(MOBILENET_INPUTS)["in0"][:1])
    before = inputs.read_bytes()
    _one_line_error(*run("simulate", MOBILENET, "--inputs", inputs, "--output", inputs),
                    "refusing to overwrite")
    assert inputs.read_bytes() == before
    _one_line_error(*run("simulate", MOBILENET, "--output", tmp_path), "directory")


def test_console_script_runs() -> None:
    exe = Path(sys.executable).with_name("qlane")
    res = subprocess.run([str(exe), "inspect", str(ZOO / "u8_add_7x9x3.tflite")],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "ADD" in res.stdout


@pytest.mark.parametrize("entry", [["-m", "qlane.cli"], ["-m", "qlane"]])
def test_module_entry_lists_every_command(entry: list[str]) -> None:
    """``python -m qlane.cli`` registers every command before running (it used to stop at two)."""
    res = subprocess.run([sys.executable, *entry, "--help"], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    listed = {line.split()[0] for line in res.stdout.split("Commands:")[1].splitlines()
              if line.strip()}
    assert listed == {"estimate", "generate", "inspect", "simulate", "targets", "verify"}


@pytest.mark.parametrize("command", ["simulate", "verify", "generate"])
def test_inputs_that_are_not_npz_archives(tmp_path: Path, command: str) -> None:
    """A .npy array and a text file named .npz give one line naming the problem, no traceback."""
    extra = {"simulate": ["--output", tmp_path / "o.npz"], "verify": ["--target", "generic"],
             "generate": ["--target", "generic", "-o", tmp_path / "gen"]}[command]
    npy = tmp_path / "x.npy"
    np.save(npy, np.load(MOBILENET_INPUTS)["in0"])
    _one_line_error(*run(command, MOBILENET, "--inputs", npy, *extra),
                    f"{npy} is a .npy array; give an .npz with in0, in1, ...")
    text = tmp_path / "x.npz"
    text.write_text("in0 = 1, 2, 3\n")
    _one_line_error(*run(command, MOBILENET, "--inputs", text, *extra),
                    f"{text} is not an NPZ archive")
    truncated = tmp_path / "t.npz"
    truncated.write_bytes(MOBILENET_INPUTS.read_bytes()[:1000])
    _one_line_error(*run(command, MOBILENET, "--inputs", truncated, *extra),
                    f"{truncated} is not an NPZ archive (damaged or truncated")
    assert not (tmp_path / "o.npz").exists() and not (tmp_path / "gen").exists()


def _hybrid_model(tmp_path: Path) -> Path:
    """FULLY_CONNECTED with float32 activations and int8 weights (a 'hybrid' model)."""
    from peers import GraphBuilder, spec
    from qlane.sim import QuantParams
    from qlane.sim.writer import write_tflite

    g = GraphBuilder()
    x = g.add(spec([1, 4], np.float32, name="x"))
    w = g.add(spec([2, 4], np.int8, QuantParams(np.float32(0.5), 0), np.ones((2, 4)), "w"))
    y = g.add(spec([1, 2], np.float32, name="y"))
    g.op("FULLY_CONNECTED", [x, w, -1], [y], activation="NONE")
    path = tmp_path / "hybrid.tflite"
    path.write_bytes(write_tflite(g.build([x], [y])))
    return path


def test_inspect_marks_a_hybrid_model_unsupported(tmp_path: Path) -> None:
    model = _hybrid_model(tmp_path)
    code, sim = run("simulate", model, "--output", tmp_path / "o.npz")
    error = "operator 0 (FULLY_CONNECTED): float32 input is not supported (float model?)"
    assert code == 1 and sim.strip() == f"Error: {error}"
    code, out = run("inspect", model)
    assert code == 0
    row = [ln for ln in out.splitlines() if ln.startswith("0  FULLY_CONNECTED")]
    assert len(row) == 1 and row[0].endswith("(unsupported)")
    assert f"unsupported: {error}; simulate, generate, verify and estimate refuse this model" \
        in out
    code, out = run("inspect", model, "--json")
    layer = json.loads(out)["layers"][0]
    assert layer["supported"] is False and layer["reason"] == error
    assert json.loads(out)["total"]["unsupported"] == ["FULLY_CONNECTED"]


def test_inspect_json_quantization_is_numbers() -> None:
    code, out = run("inspect", MOBILENET, "--json")
    assert code == 0
    first = json.loads(out)["layers"][0]
    assert first["inputs"][0] == {"shape": [1, 128, 128, 3], "dtype": "uint8",
                                  "scale": 0.0078125, "zero_point": 128, "axis": None}
    w = first["weights"]
    assert w["shape"] == [8, 3, 3, 3] and w["zero_point"] == 132 and w["axis"] is None
    assert f"{w['scale']:.6g}/{w['zero_point']}" == "0.0432121/132"
    assert json.loads(out)["layers"][30]["weights"] is None  # SOFTMAX
    code, out = run("inspect", ZOO / "i8_conv_12x10x16_k3_same_to24.tflite", "--json")
    w = json.loads(out)["layers"][0]["weights"]
    assert w["axis"] == 0 and len(w["scale"]) == 24 and w["zero_point"] == [0] * 24
    assert all(isinstance(s, float) and s > 0 for s in w["scale"])
    _, text = run("inspect", MOBILENET)  # the table keeps its text form
    assert "0.0078125/128" in text and "0.0432121/132" in text


def _cells(line: str) -> list[str]:
    return re.split(r" {2,}", line.strip())


def _aligned(lines: list[str]) -> None:
    """Header, rule, rows: no cell overflows into the next (that leaves one space, not two)."""
    head = lines[0]
    assert lines[1] == "-" * len(head)
    for row in lines[2:]:
        assert len(_cells(row)) == len(_cells(head)), (head, row)


def test_inspect_table_columns_fit_two_input_adds() -> None:
    code, out = run("inspect", ZOO / "i8_add_7x9x5_relu6.tflite")
    assert code == 0
    lines = out.splitlines()
    table = lines[lines.index(next(ln for ln in lines if ln.startswith("#"))):][:3]
    _aligned(table)
    assert _cells(table[2]) == ["0", "ADD", "1x7x9x5 1x7x9x5", "1x7x9x5", "int8",
                                "0.0152452/64 0.00975595/60", "0.00629879/-128", "-", "0", "0"]


def _table_after(out: str, title: str) -> list[str]:
    """Header, rule and rows of the table under the line starting with ``title``."""
    lines = out.splitlines()
    start = next(k for k, ln in enumerate(lines) if ln.startswith(title)) + 1
    end = next((k for k in range(start + 2, len(lines)) if not lines[k][:1].isdigit()),
               len(lines))
    return lines[start:end]


LONG_NAME = "an_add_model_whose_file_name_is_long_enough_for_any_column"


def test_estimate_and_verify_tables_fit_long_names_and_two_input_adds(tmp_path: Path) -> None:
    model = tmp_path / f"{LONG_NAME}.tflite"
    model.write_bytes((ZOO / "i8_add_7x9x5_relu6.tflite").read_bytes())
    code, out = run("estimate", model, "--target", "cortex-m4", "--mode", "static")
    assert code == 0, out
    table = _table_after(out, "estimate ")
    _aligned(table)
    assert _cells(table[2])[:5] == ["0", "ADD", "dsp", "1x7x9x5 1x7x9x5 -> 1x7x9x5", "0"]
    code, out = run("verify", model, "--target", "cortex-a72", "--samples", 1)
    assert code == 0, out
    table = _table_after(out, "verify ")
    _aligned(table)
    cells = _cells(table[2])
    assert cells[:4] == ["0", "ADD", "neon", "identical"]
    assert cells[4].startswith(f"{LONG_NAME[:40]}_l000_qs8_add_") and cells[4].endswith("__neon")
