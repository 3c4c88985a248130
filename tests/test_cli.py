"""The qlane command line: inspect and simulate on real models, and its errors."""

from __future__ import annotations

import json
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
