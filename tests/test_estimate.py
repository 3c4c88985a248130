"""Cycle estimates (qlane.codegen.estimate, `qlane estimate`): schema, sums, the chip's peak,
memory fit, static vs emulated agreement, the pipeline model on known instruction sequences, the
llvm-mca cross-check, reports and one-line errors."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest

pytest.importorskip("unicorn")
pytest.importorskip("capstone")
pytest.importorskip("elftools")
pytest.importorskip("ziglang")

from click.testing import CliRunner  # noqa: E402

from conftest import ZOO  # noqa: E402
from qlane.cli import main  # noqa: E402
from qlane.codegen.cost import (  # noqa: E402
    EmulatedRun,
    Estimate,
    EstimateError,
    block_cycles,
    cost_model,
    emulate_layers,
    estimate_emulated,
    estimate_static,
    find_llvm_mca,
    make_op,
    mca_check,
    run_mca,
)
from qlane.codegen.cost.mca import _mca_line as mca_line  # noqa: E402
from qlane.codegen.cost.pipeline import Op  # noqa: E402
from qlane.codegen.estimate import estimate  # noqa: E402
from qlane.codegen.machine import decoder_for  # noqa: E402
from qlane.codegen.targets import Region, load_target  # noqa: E402
from qlane.sim import load_tflite  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MOBILENET = ROOT / "examples" / "mobilenet_v1_0.25_128_u8.tflite"
CHIPS = ["cortex-m4", "cortex-m7", "cortex-a53", "cortex-a72"]
ZOO_FEW = ["i8_conv_12x10x16_k3_same_to24", "u8_dw_16x16x32_k3_same", "i8_fc_4x256_to100",
           "u8_add_7x9x5_relu6", "u8_softmax_2x1001"]
MODEL_BAND = (0.9, 1.11)
"""Static / emulated cycles of the whole MobileNet, which bench/calibrate_static.py holds out of
the fit (measured 0.98-1.04 on Cortex-M4 and A53, uint8 and int8)."""
LAYER_BAND = (0.7, 1.75)
"""Static / emulated cycles of a held-out MobileNet layer with >= 100k MACs (measured 0.76-1.71
on Cortex-M4, 0.90-1.27 on A53). The Cortex-M4's high end is its long-row depthwise layers: their
rows run the assembly passes, which only 3x3 layers with a full-range output stage and rows of
8 pixels or more take, and their bands' widening assembly, and no shape feature tells those
from the layers the fit sees that run the C passes (up to 1.8x the cycles per MAC)."""
REFIT = "static coefficients are stale: rerun python bench/calibrate_static.py"


def _cli(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(main, list(args))
    return res.exit_code, res.output


def check_schema(d: dict, target_name: str, mode: str) -> None:
    """The --json contract: fields, sums, peak, seconds and fits."""
    target = load_target(target_name)
    model = cost_model(target)
    assert d["target"] == target_name and d["mode"] == mode
    assert set(d) >= {"target", "mode", "layers", "total"}
    assert set(d["total"]) >= {"macs", "cycles", "seconds", "arena_bytes", "flash_bytes", "fits"}
    assert d["layers"], "no layers"
    for la in d["layers"]:
        assert set(la) >= {"index", "op", "macs", "instructions", "cycles"}
        assert la["cycles"] > 0 and la["instructions"] > 0
        if la["macs"]:
            assert la["cycles"] / la["macs"] >= 1 / model.peak_macs_per_cycle - 1e-9, la
        assert la["seconds"] == pytest.approx(la["cycles"] / target.clock_hz, rel=1e-12)
    t = d["total"]
    assert t["macs"] == sum(la["macs"] for la in d["layers"])
    assert t["instructions"] == sum(la["instructions"] for la in d["layers"])
    assert t["cycles"] == sum(la["cycles"] for la in d["layers"])
    assert t["seconds"] == pytest.approx(t["cycles"] / target.clock_hz, rel=1e-12)
    sram_ok = not target.sram_bytes or t["arena_bytes"] <= target.sram_bytes
    if t["ram"] is not None:  # region by region: arena, I/O buffers, static data, stack
        sram_ok = all(r["used"] <= r["capacity"] for r in t["ram"])
        assert sum(r["items"].get("arena", 0) for r in t["ram"]) == t["arena_bytes"]
        assert {r["region"] for r in t["ram"]} == {r.name for r in target.regions_of("ram")}
    flash_ok = not target.flash_bytes or t["flash_bytes"] <= target.flash_bytes
    assert t["fits"] is (sram_ok and flash_ok)
    assert t["arena_bytes"] >= 0 and t["flash_bytes"] >= 0
    if mode == "emulated":
        assert t["flash_bytes"] > 500  # the image holds the code too


@pytest.fixture(scope="module")
def mobilenet():
    return load_tflite(str(MOBILENET))


@pytest.fixture(scope="module")
def runs(mobilenet) -> dict[str, EmulatedRun]:
    """MobileNet cross-compiled and every layer counted on an M4 and an A53 (cached builds)."""
    return {t: emulate_layers(mobilenet, load_target(t)) for t in ("cortex-m4", "cortex-a53")}


@pytest.fixture(scope="module")
def emulated(mobilenet, runs) -> dict[str, Estimate]:
    """Emulated MobileNet estimates on an M4 and an A53."""
    return {t: estimate_emulated(mobilenet, load_target(t), run=run) for t, run in runs.items()}


# --- the command line: schema and sums ---------------------------------------------------------

@pytest.mark.parametrize("chip,mode", [("cortex-m4", "emulated"), ("cortex-a53", "static"),
                                       ("cortex-m7", "static")])
def test_cli_json_mobilenet(chip: str, mode: str) -> None:
    code, out = _cli("estimate", str(MOBILENET), "--target", chip, "--mode", mode, "--json")
    assert code == 0, out
    d = json.loads(out)
    check_schema(d, chip, mode)
    assert len(d["layers"]) == 31
    assert d["total"]["macs"] == 13_570_304
    assert d["layers"][0]["op"] == "CONV_2D" and d["layers"][30]["op"] == "SOFTMAX"
    assert d["total"]["fits"] is True  # 96 KiB arena, < 1 MB of flash


def test_cli_text_table() -> None:
    code, out = _cli("estimate", str(ZOO / "u8_dw_16x16x32_k3_same.tflite"), "--target",
                     "cortex-m4", "--mode", "static")
    assert code == 0, out
    lines = out.splitlines()
    assert "DEPTHWISE_CONV_2D" in lines[3] and "1x16x16x32 -> 1x16x16x32" in lines[3]
    assert any(ln.startswith("total: 73,728 MACs") for ln in lines)
    # the arena: the depthwise row kernel's band, 3 rows x 32 channels x 18 int16 columns
    assert any(ln.startswith("ram: ") and "sram" in ln and "arena 3,456" in ln
               for ln in lines)
    assert any(ln.startswith("flash:") and "fits" in ln for ln in lines)


@pytest.mark.parametrize("chip", ["cortex-m4", "cortex-a53"])
@pytest.mark.parametrize("name", ZOO_FEW)
def test_zoo_both_modes(name: str, chip: str) -> None:
    graph = load_tflite(str(ZOO / f"{name}.tflite"))
    target = load_target(chip)
    for mode in ("static", "emulated"):
        est = estimate(graph, target, mode)
        check_schema(est.to_json(), chip, mode)
        if mode == "emulated":
            for la in est.layers:
                assert la.instructions == sum(la.by_class.values())
                assert la.cycles == pytest.approx(la.core_cycles + la.branch_cycles
                                                  + la.memory_cycles, abs=1.0)


# --- the model: peak, memory, agreement ----------------------------------------------------------

def test_mobilenet_emulated_figures(emulated: dict[str, Estimate]) -> None:
    m4, a53 = emulated["cortex-m4"], emulated["cortex-a53"]
    for est in (m4, a53):
        check_schema(est.to_json(), est.target, "emulated")
        assert not any(la.peak_bound for la in est.layers)  # real code is far from the peak
    # instructions per cycle stay within what the cores can issue
    assert 0.3 < m4.instructions / m4.cycles <= 1.0
    assert 0.3 < a53.instructions / a53.cycles <= 2.0
    # the M4 pays flash wait states for weights; the DRAM-backed A53 model does not
    assert sum(la.memory_cycles for la in m4.layers) > 0
    assert sum(la.memory_cycles for la in a53.layers) == 0
    assert all(la.flash_read_bytes > 0 for la in m4.layers if la.macs)
    # an A53 with NEON is several times faster per MAC than an M4 with SMLAD
    assert m4.cycles / m4.macs > 2 * a53.cycles / a53.macs
    assert m4.seconds > 10 * a53.seconds


@pytest.mark.parametrize("chip", ["cortex-m4", "cortex-a53"])
def test_static_vs_emulated_band(emulated: dict[str, Estimate], mobilenet, chip: str) -> None:
    emu = emulated[chip]
    st = estimate_static(mobilenet, load_target(chip))
    ratio = st.cycles / emu.cycles
    assert MODEL_BAND[0] <= ratio <= MODEL_BAND[1], f"MobileNet {ratio:.3f}; {REFIT}"
    for s, e in zip(st.layers, emu.layers):
        assert (s.index, s.kernel) == (e.index, e.kernel)
        if e.macs >= 100_000:
            r = s.cycles / e.cycles
            assert LAYER_BAND[0] <= r <= LAYER_BAND[1], f"layer {e.index} {r:.3f}; {REFIT}"


def test_peak_floor(mobilenet) -> None:
    """Coefficients that promise more than the chip can do are floored at MACs / peak."""
    target = load_target("cortex-m4")
    zero = {m: {"default": [0.0] * 6} for m in ("cycles", "instructions")}
    fake = dataclasses.replace(target, cost=dataclasses.replace(target.cost, static={
        **zero, "features": ["calls", "macs", "outputs", "inputs", "tiles", "pixels"]}))
    est = estimate_static(mobilenet, fake)
    for la in est.layers:
        if la.macs:
            assert la.peak_bound and la.cycles == math.ceil(la.macs / 2)
    assert est.cycles == sum(math.ceil(la.macs / 2) for la in est.layers)


def test_fits_by_how_much(mobilenet) -> None:
    target = load_target("cortex-m4")
    small = dataclasses.replace(target, sram_bytes=64 * 1024, flash_bytes=256 * 1024, regions=(
        Region("flash", 256 * 1024, kind="flash", origin=0x0800_0000),
        Region("sram", 64 * 1024, kind="ram", origin=0x2000_0000)))
    est = estimate_static(mobilenet, small)
    t = est.to_json()["total"]
    assert t["arena_bytes"] > 64 * 1024 and not t["arena_fits"]
    assert t["ram"][0]["used"] > 64 * 1024 and t["ram"][0]["fits"] is False
    assert t["flash_bytes"] > 256 * 1024 and not t["flash_fits"]
    assert t["fits"] is False
    f407_est = estimate_static(mobilenet, target)  # 128 KB SRAM + 64 KB CCM
    f407 = f407_est.to_json()["total"]["ram"]
    assert [(r["region"], sorted(r["items"]), r["fits"]) for r in f407] == [
        ("sram", ["arena", "output0", "stack", "static data"], True), ("ccm", ["input0"], True)]
    assert f407[0]["used"] == f407_est.arena_bytes + 1008 + 1024 + 8192
    assert f407[1]["used"] == 128 * 128 * 3
    dram = estimate_static(mobilenet, load_target("cortex-a53"))
    assert dram.sram_capacity == 0 and dram.fits  # no on-chip limit on a DRAM-backed core


# --- the pipeline model on known sequences ----------------------------------------------------

def _ops(hexcode: str, arch: str, chip: str):
    model = cost_model(load_target(chip))
    insns = decoder_for(arch).decode(bytes.fromhex(hexcode), 0x1000)
    return [make_op(insn, arch, model) for insn in insns], model


THREE_LDR_ADDS = "0868 1a68 2c68 f619"  # ldr r0,[r1]; ldr r2,[r3]; ldr r4,[r5]; adds r6,r6,r7
SMLAD_CHAIN = "29fb0a88" * 3  # smlad r8, r9, r10, r8 (x3, one accumulator)
SMLAL_4 = "2080620e 8380650e e680680e 49816b0e"  # smlal v{0,3,6,9}.4s, ... (independent)
SMLAL_ACC = "2080220e 6080240e"  # smlal v0.8h, v1.8b, v2.8b; smlal v0.8h, v3.8b, v4.8b
LDRQ_POST = "2004c13c 2204c13c"  # ldr q0, [x1], #16; ldr q2, [x1], #16


@pytest.mark.parametrize("hexcode,arch,chip,steady", [
    (THREE_LDR_ADDS, "thumb", "cortex-m4", 5.0),  # TRM: N loads pipeline to N + 1, ALU 1
    (SMLAD_CHAIN, "thumb", "cortex-m4", 3.0),  # single-cycle MAC, accumulator forwarded
    ("d4e90023", "thumb", "cortex-m4", 3.0),  # ldrd: 1 + N
    (THREE_LDR_ADDS, "thumb", "cortex-m7", 2.0),  # dual issue, two load pipes
    (SMLAL_4, "aarch64", "cortex-a53", 8.0),  # 128-bit NEON MAC: 2 cycles on the 64-bit path
    (SMLAL_4, "aarch64", "cortex-a72", 4.0),  # one MAC per cycle on F0
    (SMLAL_ACC, "aarch64", "cortex-a53", 4.0),  # accumulator forwarding, not 2 x latency 4
    (SMLAL_ACC, "aarch64", "cortex-a72", 2.0),
    (LDRQ_POST, "aarch64", "cortex-a53", 4.0),  # post-increment base ready after 1 cycle
    (LDRQ_POST, "aarch64", "cortex-a72", 2.0),
])
def test_block_model(hexcode: str, arch: str, chip: str, steady: float) -> None:
    ops, model = _ops(hexcode, arch, chip)
    first, per = block_cycles(ops, model)
    assert per == pytest.approx(steady)
    assert first >= per - 1
    macs = {"2080220e": 8, "6080240e": 8}
    peak_macs = sum(macs.get(h, 0) for h in hexcode.split())
    assert peak_macs / per <= model.peak_macs_per_cycle


def test_sixteen_macs_per_smlal_pair_reach_the_a53_peak() -> None:
    ops, model = _ops(SMLAL_ACC, "aarch64", "cortex-a53")
    _, per = block_cycles(ops, model)
    assert 16 / per == model.peak_macs_per_cycle  # 4 MACs per cycle


# --- llvm-mca cross-check -----------------------------------------------------------------------

def test_llvm_mca_ratio(mobilenet, runs) -> None:
    """Our steady-state cycles of MobileNet's hot blocks against llvm-mca's, per chip."""
    found = find_llvm_mca()
    if found is None:
        pytest.skip("llvm-mca not installed (apt-get install llvm-16): no cross-check")
    for chip in CHIPS:
        target = load_target(chip)
        run = runs.get(chip) or emulate_layers(mobilenet, target, flash=False)
        res = mca_check(mobilenet, target, run=run)
        ratios = res.block_ratios
        print(f"{chip}: ours / {res.mca} -mcpu={res.mcpu} = {res.ratio:.3f} over "
              f"{len(res.compared)} blocks ({100 * res.coverage:.0f}% of the hot blocks' "
              f"instructions), per block {min(ratios):.2f}..{max(ratios):.2f}")
        assert res.coverage > 0.5
        assert all(b.mca and b.mca > 0 and b.ours > 0 for b in res.compared)
        assert 0.6 < res.ratio < 1.67, (chip, res.ratio)
        assert math.isfinite(res.ratio)


def _text_op(text: str, cls: str, branch: str = "") -> Op:
    return Op(0, 4, text, cls, "vec", 1, 1, (), (), (), 0, False, False, branch, None, None,
              False)


def test_llvm_mca_19_costs_helium_loops() -> None:
    """The Helium cores go to llvm-mca 19 with the Armv8.1-M triple; a low-overhead loop's
    DLSTP becomes the MOV into LR it performs and its closing LETP is left out (LLVM's M55 model
    rejects it, its M85 model makes it a 102-cycle barrier)."""
    loop = [_text_op("dlstp.8 lr, r2", "branch"), _text_op("vldrb.u8 q0, [r0], #16", "load"),
            _text_op("vldrb.u8 q1, [r1], #16", "load"),
            _text_op("vmlava.s8 r12, q0, q1", "mac"), _text_op("letp lr, #-0x10", "branch", "cond")]
    lines = [mca_line(op, "thumb", ".Lq0", False, False) for op in loop]
    assert lines == ["mov lr, r2", "vldrb.u8 q0, [r0], #16", "vldrb.u8 q1, [r1], #16",
                     "vmlava.s8 r12, q0, q1", None]
    for chip in ("cortex-m55", "cortex-m85"):
        model = cost_model(load_target(chip))
        assert (model.mca_llvm, model.mca_triple) == (19, "thumbv8.1m.main-none-eabi")
    if find_llvm_mca(19) is None:
        pytest.skip("llvm-mca 19 not installed (apt-get install llvm-19): no Helium cross-check")
    for chip in ("cortex-m55", "cortex-m85"):
        model = cost_model(load_target(chip))
        cycles, dropped = run_mca([loop[1:4]], "thumb", model.mca_cpu, llvm=19,
                                  triple=model.mca_triple)
        # two 2-beat loads on the one load/store pipe bound the loop at 4 cycles
        assert dropped == [0] and cycles[0] is not None and 4.0 <= cycles[0] < 8.0, (chip, cycles)


# --- reports and errors -------------------------------------------------------------------------

def test_report_png_and_html(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "rep"
    code, text = _cli("estimate", str(ZOO / "i8_conv_12x10x16_k3_same_to24.tflite"),
                      "--target", "cortex-m4", "--mode", "static", "--report", str(out))
    assert code == 0, text
    png = out / "i8_conv_12x10x16_k3_same_to24_cortex_m4_static.png"
    page = png.with_suffix(".html")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    html = page.read_text()
    layers, memory = html.split("<h2>Memory view</h2>")
    assert layers.count("<tr>") == 3 and png.name in html
    assert memory.count("<tr>") == 2 and "_memory.png" in memory  # its one step
    assert "CONV_2D" in html and "does not fit" not in html
    assert f"wrote {png}" in text


@pytest.mark.parametrize("args,message", [
    (["missing.tflite", "--target", "cortex-m4"], "cannot read missing.tflite"),
    ([str(MOBILENET), "--target", "generic"], "no cycle model"),
    ([str(MOBILENET), "--target", "cortex-m9"], "unknown target"),
    ([str(MOBILENET), "--target", "cortex-m4", "--report", str(MOBILENET)],
     "not a directory"),
])
def test_bad_input_one_line(args: list[str], message: str) -> None:
    code, out = _cli("estimate", *args)
    assert code == 1
    lines = out.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0], out


def test_garbage_model_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"not a flatbuffer at all" * 4)
    code, out = _cli("estimate", str(bad), "--target", "cortex-a53", "--mode", "static")
    assert code == 1 and len(out.strip().splitlines()) == 1 and out.startswith("Error: ")


def test_estimate_error_names_the_fix() -> None:
    with pytest.raises(EstimateError, match="no cycle model"):
        cost_model(load_target("generic"))
    target = load_target("cortex-m4")
    empty = dataclasses.replace(target, cost=dataclasses.replace(target.cost, static={}))
    graph = load_tflite(str(ZOO / "u8_add_7x9x3.tflite"))
    with pytest.raises(EstimateError, match="calibrate_static"):
        estimate_static(graph, empty)
