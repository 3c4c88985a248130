"""Helium (MVE) kernels against the simulator, on the host through the portable qlane_mve.h and
on QEMU's Cortex-M55 with the real arm_mve.h (the cortex-m55 target, and the cortex-m85 one,
whose M85-tuned code runs on the same instruction set).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from test_codegen_dsp import Layers
from test_cprims import STRICT

from conftest import deep
from qlane.codegen import qemu
from qlane.codegen.cross import GCC
from qlane.codegen.emit import generate
from qlane.codegen.emulate import emulate_verify
from qlane.codegen.machine import llvm_decode
from qlane.codegen.names import parse_symbol
from qlane.codegen.targets import Target, load_target
from qlane.codegen.verify import verify
from qlane.sim.interpreter import Interpreter


def _mve_target() -> Target:
    return load_target("cortex-m55")


def _general_convs(lay: Layers) -> None:
    """Convolutions through im2col: odd sizes, stride 2, dilation 2, SAME and VALID, 1 / 3 / 5 /
    17 input channels, channel counts with a 4-channel tail, RELU and RELU6 clamps, windows
    wider than a 16-byte chunk, a filter larger than the input (every window in the padding),
    1x1 stride 2, batch 2 (windows crossing images within a batch), several batches of windows
    and the tiles' last one or two pixels."""
    lay.conv("int8", 1, (9, 7), 3, 8, (3, 3), (2, 2))  # MobileNet's first conv, smaller
    lay.conv("int8", 1, (13, 6), 1, 9, (10, 4), (2, 2))  # KWS's first conv, smaller
    lay.conv("int8", 2, (7, 8), 5, 6, (3, 3), d=(2, 2), activation="RELU6")
    lay.conv("int8", 1, (6, 7), 17, 5, (3, 3), padding="VALID", activation="RELU", zp_out=-128)
    lay.conv("int8", 1, (5, 9), 16, 12, (3, 3), (1, 2), padding="VALID")
    lay.conv("int8", 1, (7, 5), 3, 7, (5, 3), (2, 1), d=(1, 2))
    lay.conv("int8", 1, (2, 3), 5, 4, (5, 5))
    lay.conv("int8", 1, (5, 5), 9, 6, (1, 1), (2, 2))
    lay.conv("int8", 2, (11, 11), 1, 3, (2, 2), (3, 3), padding="VALID")
    lay.conv("int8", 1, (6, 6), 48, 10, (3, 3))  # K = 432: 3-pixel tiles, 4 batches of 9
    lay.conv("int8", 1, (7, 1), 16, 5, (3, 3))  # 3-pixel tiles and a last pixel alone
    lay.conv("int8", 1, (3, 3), 8, 11, (3, 3), padding="VALID")  # one window


def _layers(lay: Layers) -> None:
    """1x1 convolutions and fully connected layers: K with and without a 16-byte tail, channel
    counts with and without a 4-channel tail, odd pixel counts, RELU onto the zero point,
    a wrapping bias, per-tensor int8 weights, and uint8 ones (which the DSP kernel takes); and
    depthwise layers."""
    for i, (cin, cout, hw) in enumerate([(16, 8, (2, 3)), (7, 5, (3, 3)), (33, 12, (1, 5)),
                                         (64, 6, (2, 2)), (130, 9, (3, 1))]):
        lay.conv("int8", 1 + i % 2, hw, cin, cout, (1, 1))
    lay.conv("int8", 1, (4, 5), 24, 7, (1, 1), activation="RELU", zp_out=-128)
    lay.conv("int8", 1, (2, 3), 9, 4, (1, 1), bias="wrap")
    lay.conv("int8", 1, (3, 3), 20, 6, (1, 1), per_channel=False)
    lay.conv("int8", 1, (5, 1), 144, 6, (1, 1))  # 3-pixel tiles from K = 128: 3 + 2 pixels
    lay.fc("int8", (1, 256), 10)
    lay.fc("int8", (3, 37), 17)
    # one pixel: 7-channel passes, a last pass of 1..6 channels, a predicated K tail
    lay.fc("int8", (1, 37), 15, activation="RELU6")
    lay.fc("int8", (1, 64), 14)
    lay.fc("int8", (1, 16), 6)
    lay.fc("int8", (1, 300), 9)  # K past 16 chunks: a loop of 4 chunks, 1 more, a tail
    lay.fc("int8", (1, 272), 7)
    lay.conv("int8", 1, (1, 1), 200, 33, (1, 1), activation="RELU", zp_out=-128)
    # K past 17 chunks with a tail: the asm's loop of 4 chunks, in the 3-pixel tiles and the
    # last two pixels' 2-pixel one (lr holds a sum there)
    lay.conv("int8", 1, (5, 1), 300, 6, (1, 1))
    lay.conv("uint8", 1, (2, 3), 12, 5, (1, 1))
    _general_convs(lay)
    lay.conv("uint8", 1, (5, 4), 3, 5, (3, 3))  # uint8: the DSP kernel
    # depthwise: stride 1 and 2, SAME and VALID, 5x5, dilation, batch 2, RELU onto the zero
    # point; 6 channels (not a multiple of 4); uint8 takes the DSP kernel
    lay.dwconv("int8", 1, (7, 9), 8, 1, (3, 3))
    lay.dwconv("int8", 2, (9, 8), 16, 1, (3, 3), (2, 2))
    lay.dwconv("int8", 1, (8, 7), 12, 1, (5, 5), padding="VALID")
    lay.dwconv("int8", 1, (9, 9), 4, 1, (3, 3), d=(2, 2))
    lay.dwconv("int8", 1, (6, 10), 32, 1, (3, 3), activation="RELU", zp_out=-128)
    lay.dwconv("int8", 1, (5, 5), 6, 1, (3, 3))
    lay.dwconv("uint8", 1, (5, 6), 8, 1, (3, 3))
    _depthwise_layers(lay)


def _depthwise_layers(lay: Layers) -> None:
    """Depthwise layers of the pixels-in-lanes kernel's paths: odd sizes with stride 2 and
    channels not a multiple of 4; fewer than four output columns (predicated scatter) and rows
    (one short tile); a depth multiplier; dilation with VALID padding; a 5x3 window with stride
    1x2; a 3x5 window (wider than the offset vectors); requantization with a left shift, with a
    zero right shift in some channels, per tensor; a wrapping bias; batch 2."""
    lay.dwconv("int8", 1, (5, 7), 6, 1, (3, 3), (2, 2))
    lay.dwconv("int8", 1, (3, 3), 5, 1, (3, 3))
    lay.dwconv("int8", 1, (6, 5), 3, 2, (3, 3), activation="RELU")
    lay.dwconv("int8", 1, (10, 11), 7, 1, (3, 3), d=(2, 1), padding="VALID")
    lay.dwconv("int8", 2, (7, 6), 8, 1, (5, 3), (1, 2))
    lay.dwconv("int8", 1, (9, 12), 4, 1, (3, 5), (2, 1), activation="NONE")
    lay.dwconv("int8", 1, (6, 6), 8, 1, (3, 3), scale="ge1", tiny=True)
    lay.dwconv("int8", 1, (6, 9), 12, 1, (3, 3), scale="half", activation="NONE")
    lay.dwconv("int8", 1, (5, 8), 9, 1, (3, 3), scale="quarter", bias="wrap")
    lay.dwconv("int8", 1, (13, 4), 2, 1, (2, 2), (3, 1), padding="VALID", activation="RELU6")
    lay.dwconv("int8", 1, (7, 7), 16, 1, (3, 3), per_channel=False)


def test_mve_layers_bit_exact_on_the_host() -> None:
    lay = Layers(41)
    _layers(lay)
    graph = lay.graph("mve_gemm")
    target = _mve_target()
    project = generate(graph, target, name="m")
    isas = [parse_symbol(layer.symbol).isa for layer in project.layers]
    # every int8 conv, FC and depthwise is MVE; the uint8 ones fall back to DSP
    assert isas == (["mve"] * 18 + ["dsp"] + ["mve"] * 12 + ["dsp"] + ["mve"] * 6 + ["dsp"]
                    + ["mve"] * 11), isas
    tiles = [parse_symbol(layer.symbol).tile for layer in project.layers]
    assert tiles[9:17] == ["1x7", "2x4"] + ["1x7"] * 6, tiles
    assert {"2x4", "3x4"} <= set(tiles), tiles
    report = verify(graph, target, lay.data)
    bad = [f"layer {r.index} {r.kernel}: {r.differing} differ, first {r.first}"
           for r in report.layers if not r.bit_exact]
    assert not bad, "\n".join(bad)
    assert report.model_bit_exact


def test_mve_depthwise_single_rounding_bit_exact_on_the_host() -> None:
    """The depthwise layers under single rounding (the kernel's requantization helpers with the
    channel's constants splat, instead of its scalar double-rounding form)."""
    lay = Layers(43)
    _depthwise_layers(lay)
    graph = lay.graph("mve_dw_single")
    target = _mve_target()
    project = generate(graph, target, name="m", rounding="single")
    modes = {layer.kernel.params["rq"]["mode"] for layer in project.layers}
    assert {"single", "single_neg"} <= modes and all("mve" in layer.symbol
                                                       for layer in project.layers)
    report = verify(graph, target, lay.data, rounding="single")
    bad = [f"layer {r.index} {r.kernel}: {r.differing} differ, first {r.first}"
           for r in report.layers if not r.bit_exact]
    assert not bad, "\n".join(bad)


@pytest.mark.hostc
@pytest.mark.parametrize("rounding", ["double", "single"])
def test_mve_depthwise_builds_warning_free(tmp_path: Path, rounding: str) -> None:
    """Every depthwise layer's C, with the portable qlane_mve.h: gcc -std=c99 -pedantic -Wall
    -Wextra -Werror (no unused offset vector or constant on any path)."""
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc is not installed")
    lay = Layers(47)
    _depthwise_layers(lay)
    project = generate(lay.graph("mve_dw_warn"), _mve_target(), name="m", rounding=rounding)
    for fname, text in project.files.items():
        if fname.endswith((".h", ".c")) and "/" not in fname:
            (tmp_path / fname).write_text(text)
    sources = sorted(str(s) for s in tmp_path.glob("m_l*.c"))
    assert len(sources) == len(project.layers)
    res = subprocess.run([gcc, *STRICT, "-fsyntax-only", "-I", str(tmp_path), *sources],
                         cwd=tmp_path, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[:3000]


def test_mve_depthwise_packs_channel_records_and_offsets() -> None:
    """Per output channel: its taps, the bias minus input zero point x filter sum (int32 wrap),
    multiplier, 2^left shift, right shift; the gather offsets of four pixels per filter column
    (stride 2, 3 input channels x 2), the output's four and two rows' eight; scratch for the
    tile's rows."""
    lay = Layers(7)
    lay.dwconv("int8", 1, (9, 11), 3, 2, (3, 3), (2, 2))
    graph = lay.graph("mve_dw_pack")
    project = generate(graph, _mve_target(), name="m")
    kernel = project.layers[0].kernel
    consts = {k.suffix: np.asarray(k.values, np.int64) for k in kernel.consts}
    sim = Interpreter(graph).kernels[0]
    co, kk = 6, 9
    taps = np.asarray(sim.wrows[:, :, :co], np.int64).reshape(kk, co)
    rec = consts["ch"].reshape(co, kk + 4)
    np.testing.assert_array_equal(rec[:, :kk], taps.T)
    bias = np.asarray(sim.requant.bias, np.int64) - int(sim.qi.zp) * taps.sum(axis=0)
    np.testing.assert_array_equal(rec[:, kk], (bias + 2**31) % 2**32 - 2**31)
    shift = np.broadcast_to(np.asarray(sim.requant.shift, np.int64), (co,))
    np.testing.assert_array_equal(rec[:, kk + 1], np.asarray(sim.requant.multiplier))
    np.testing.assert_array_equal(rec[:, kk + 2], 1 << np.maximum(shift, 0))
    np.testing.assert_array_equal(rec[:, kk + 3], np.minimum(shift, 0))
    p = kernel.params
    assert (p["R"], p["NR"], p["OW"], p["WP"], p["OFFV"], p["PAIRS"]) == (4, 9, 6, 13, 3, True)
    offs = consts["offs"]
    assert offs[:12].tolist() == [0, 6, 12, 18, 3, 9, 15, 21, 6, 12, 18, 24]
    assert offs[12:16].tolist() == [0, 6, 12, 18]
    pairs = offs[16:].astype("<i4").view("<u2").tolist()
    assert pairs == [0, 36, 6, 42, 12, 48, 18, 54]
    assert kernel.scratch_bytes == 9 * 13 * 3  # rows x columns x input channels


def test_mve_gemm_packs_weights_in_loop_order_and_folds_the_input_zero_point() -> None:
    lay = Layers(5)
    lay.conv("int8", 1, (2, 2), 19, 6, (1, 1))
    graph = lay.graph("mve_pack")
    project = generate(graph, _mve_target(), name="m")
    kernel = project.layers[0].kernel
    consts = {c.suffix: c.values for c in kernel.consts}
    sim = Interpreter(graph).kernels[0]
    sim_w = np.asarray(sim.wmat_int, np.int64)  # [K, N]
    # per 4 channels, per 16 inputs (19 -> 2 chunks, zero-padded), the 4 channels' 16 bytes
    packed = np.asarray(consts["w"], np.int64).reshape(2, 2, 4, 16)
    rows = packed.transpose(0, 2, 1, 3).reshape(8, 32)
    np.testing.assert_array_equal(rows[:6, :19], sim_w.T)
    assert not rows[6:].any() and not rows[:, 19:].any()
    zi = int(sim.qi.zp)
    bias = np.asarray(sim.requant.bias, np.int64) - zi * sim_w.sum(axis=0)
    np.testing.assert_array_equal(np.asarray(consts["bias"][:6], np.int64),
                                  ((bias + 2**31) % 2**32) - 2**31)
    assert kernel.params["K16"] == 1 and kernel.params["KT"] == 3


def test_mve_im2col_pads_k_to_whole_chunks_with_zero_weights() -> None:
    """A 3x3 window of 3 channels: K = 27 padded to 32 (two unpredicated chunks), the padding's
    weights zero, the bias folding the input zero point over the 27 real taps; interior windows
    copy one 9-byte run per filter row, dilated ones one run per tap."""
    lay = Layers(6)
    lay.conv("int8", 1, (9, 7), 3, 6, (3, 3), (2, 2))
    lay.conv("int8", 1, (9, 9), 2, 4, (2, 3), d=(2, 2))
    graph = lay.graph("mve_im2col")
    project = generate(graph, _mve_target(), name="m")
    kernel = project.layers[0].kernel
    sim = Interpreter(graph).kernels[0]
    sim_w = np.asarray(sim.wmat_int, np.int64)  # [27, 6]
    consts = {c.suffix: c.values for c in kernel.consts}
    rows = np.asarray(consts["w"], np.int64).reshape(2, 2, 4, 16).transpose(0, 2, 1, 3)
    rows = rows.reshape(8, 32)
    np.testing.assert_array_equal(rows[:6, :27], sim_w.T)
    assert not rows[6:].any() and not rows[:, 27:].any()
    bias = np.asarray(sim.requant.bias, np.int64) - int(sim.qi.zp) * sim_w.sum(axis=0)
    np.testing.assert_array_equal(np.asarray(consts["bias"][:6], np.int64),
                                  ((bias + 2**31) % 2**32) - 2**31)
    p = kernel.params
    assert (p["K"], p["KR"], p["K16"], p["KT"], p["P"], p["PB"]) == (32, 27, 2, 0, 20, 20)
    assert p["runs"] == [(0, 0, 9), (21, 9, 9), (42, 18, 9)]
    assert kernel.scratch_bytes == 20 * 32 + 16
    # dilation 2 across: one 2-byte run per tap, rows 2 x 9 x 2 bytes apart
    assert project.layers[1].kernel.params["runs"] == [
        (0, 0, 2), (4, 2, 2), (8, 4, 2), (36, 6, 2), (40, 8, 2), (44, 10, 2)]


def _bit_exact(report) -> None:  # type: ignore[no-untyped-def]
    bad = [f"layer {r.index} {r.kernel}: {r.differing} differ, first {r.first}"
           for r in report.layers if not r.bit_exact]
    assert not bad, "\n".join(bad)
    assert report.model_bit_exact, report.model_first


def qemu_skip_reason() -> str | None:
    """Why the QEMU instruction-set tier cannot run here, or None."""
    return qemu.available() or llvm_decode.available()


@pytest.mark.isa
@pytest.mark.parametrize(("chip", "cc"), [("cortex-m55", "zig"), deep("cortex-m85", "zig"),
                                          ("cortex-m55", "gcc")])
def test_mve_layers_bit_exact_on_the_cortex_m55(chip: str, cc: str) -> None:
    """The same layers built with the real arm_mve.h (zig, tuned for the Cortex-M55, and for the
    M85, whose code runs on the same instruction set; arm-none-eabi-gcc for the M55: the GEMM's
    inline assembly under both compilers) and run on QEMU's mps3-an547 Cortex-M55, each layer
    and the whole model: every output byte of every sample equals the simulator's."""
    if reason := qemu_skip_reason():
        pytest.skip(reason)
    if cc == "gcc" and shutil.which(GCC) is None:
        pytest.skip(f"{GCC} is not installed")
    lay = Layers(41)
    _layers(lay)
    graph = lay.graph("mve_gemm")
    report = emulate_verify(graph, load_target(chip), lay.data, cc=cc)
    _bit_exact(report)
    assert "QEMU" in report.cpu
    assert sum(1 for r in report.layers if r.isa == "mve") == 47
