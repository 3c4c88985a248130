"""The QEMU machine backend (qlane.codegen.machine.qemu): Cortex-M55/M85 images on QEMU's
mps3-an547 board through gdbstub, with exact per-call counts from the counting plugin.

Models are bit-exact with the simulator (and the TFLite reference), hand-written loops count
exactly what they execute, counts repeat exactly, faults and hangs are one-line errors, and the
LLVM-based decoder gives the MVE and v8.1-M facts capstone cannot.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import merged_zoo, zoo_reference
from qlane.cli import main
from qlane.codegen import qemu
from qlane.codegen.cost import find_llvm_mca, mca_check
from qlane.codegen.cost.model import cost_model
from qlane.codegen.cost.pipeline import block_cycles, make_op
from qlane.codegen.cross import build_elf
from qlane.codegen.emit import generate
from qlane.codegen.emulate import emulate_verify
from qlane.codegen.machine import CLASSES, EmulationError, llvm_decode, machine_for
from qlane.codegen.machine import qemu as qemu_machine
from qlane.codegen.machine.llvm_decode import make_insn, parse_listing
from qlane.codegen.targets import load_target
from qlane.sim import load_tflite

ROOT = Path(__file__).resolve().parents[1]
KWS = ROOT / "examples" / "mlperf_tiny" / "kws_ref_model.tflite"
ZOO_I8 = ["i8_conv_12x10x16_k3_same_to24", "i8_dw_16x16x32_k3_same", "i8_fc_4x256_to100",
          "i8_add_7x9x5_relu6", "i8_avgpool_7x9x5_k3s2_same", "i8_maxpool_7x9x3_k3s2_same",
          "i8_softmax_1x10", "i8_conv_9x7x5_k3x2_valid_dil2"]

ASM = r"""
    .syntax unified
    .thumb
    .text

    .global qt_loop
    .type qt_loop, %function
    .p2align 2
qt_loop:                    @ r0 = n >= 1: returns 2n after 3n + 3 instructions
    movs r1, #0
1:  adds r1, r1, #2
    subs r0, r0, #1
    bne 1b
    mov r0, r1
    bx lr
    .size qt_loop, . - qt_loop

    .global qt_mve_double
    .type qt_mve_double, %function
    .p2align 2
qt_mve_double:              @ dst r0, src r1, n r2 >= 1: dst = 2 * src; 4 ceil(n / 16) + 4
    push {r7, lr}
    dlstp.8 lr, r2
1:  vldrb.u8 q0, [r1], #16
    vadd.i8 q0, q0, q0
    vstrb.8 q0, [r0], #16
    letp lr, 1b
    movs r0, #0
    pop {r7, pc}
    .size qt_mve_double, . - qt_mve_double

    .global qt_fault
    .type qt_fault, %function
    .p2align 2
qt_fault:
    udf #7
    bx lr
    .size qt_fault, . - qt_fault

    .global qt_hang
    .type qt_hang, %function
    .p2align 2
qt_hang:
    b qt_hang
    .size qt_hang, . - qt_hang
"""
ASM_FNS = ["qt_loop", "qt_mve_double", "qt_fault", "qt_hang"]


def _skip_reason() -> str | None:
    return qemu.available() or llvm_decode.available()


needs_qemu = pytest.mark.skipif(_skip_reason() is not None, reason=str(_skip_reason()))


@pytest.fixture(scope="module")
def build_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("qemu-cross")


@pytest.fixture(scope="module")
def asm_machine(build_root: Path):  # type: ignore[no-untyped-def]
    target = load_target("cortex-m55")
    graph = load_tflite(str(ROOT / "tests" / "zoo" / "i8_add_7x9x3.tflite"))
    project = generate(graph, target, name="qt_asm")
    elf = build_elf(project, target, build_root, extra_sources={"qt_asm.s": ASM}, keep=ASM_FNS)
    machine = machine_for(elf, target, timeout_s=1.0)
    yield machine
    machine.close()


def _bit_exact(report) -> None:  # type: ignore[no-untyped-def]
    bad = [f"layer {r.index} {r.op} ({r.kernel}): {r.differing} differ, first {r.first}"
           for r in report.layers if not r.bit_exact]
    assert not bad, "\n".join(bad)
    assert report.model_bit_exact, report.model_first


@needs_qemu
def test_kws_bit_exact_on_m55_with_repeatable_counts(build_root: Path) -> None:
    graph = load_tflite(str(KWS))
    rng = np.random.default_rng(7)
    t = graph.input_tensors[0]
    x = rng.integers(-128, 128, (2, *t.shape), dtype=np.int8)
    report = emulate_verify(graph, load_target("cortex-m55"), [x], build_root=build_root)
    _bit_exact(report)
    assert "QEMU" in report.cpu and "mps3-an547" in report.cpu
    assert report.counts_data_independent  # samples 0 and 1 counted: identical blocks
    assert set(report.counts) == {r.index for r in report.layers}
    for c in [*report.counts.values(), report.invoke_counts]:
        assert c["instructions"] > 0
        assert set(c["by_class"]) == set(CLASSES)
        assert sum(c["by_class"].values()) == c["instructions"]
        assert sum(n * e for n, e in c["blocks"].values()) == c["instructions"]
        assert c["stack_bytes"] > 0
    mve = [report.counts[r.index] for r in report.layers if r.isa == "mve"]
    assert mve and all(c["by_class"]["mac"] > 0 and c["by_class"]["simd"] > 0 for c in mve)
    # every layer runs inside the whole model, plus the invoke entry's own instructions
    assert report.invoke_counts["instructions"] >= sum(
        c["instructions"] for c in report.counts.values())
    json.dumps(report.to_json())


@needs_qemu
@pytest.mark.parametrize("chip", ["cortex-m55", "cortex-m85"])
def test_int8_zoo_bit_exact(chip: str, build_root: Path) -> None:
    graph, inputs = merged_zoo(ZOO_I8, "qzoo")
    report = emulate_verify(graph, load_target(chip), inputs, build_root=build_root)
    _bit_exact(report)
    outs = iter(report.outputs)
    for name in ZOO_I8:
        for want in zoo_reference(name):
            assert np.array_equal(next(outs), want), f"{name}: QEMU output != tfl214"
    # (the average pool's rounding takes data-dependent branches, on unicorn's M4 too)
    assert all(r.instructions for r in report.layers)


@needs_qemu
@pytest.mark.parametrize("chip", ["cortex-m55", "cortex-m85"])
def test_cycle_model_against_llvm_mca_19(chip: str, build_root: Path) -> None:
    """Our steady-state cycles of KWS's hot blocks against llvm-mca 19's scheduling model of the
    same core (measured 1.00 on the M55; 0.81 on the M85, whose model LLVM gives longer MVE
    latencies), every hot block compared."""
    if find_llvm_mca(19) is None:
        pytest.skip("llvm-mca 19 not installed (apt-get install llvm-19): no cross-check")
    res = mca_check(load_tflite(str(KWS)), load_target(chip), build_root=build_root)
    print(f"{chip}: ours / {res.mca} = {res.ratio:.3f} over {len(res.compared)} blocks")
    assert res.coverage > 0.95 and len(res.compared) >= 5
    assert 0.6 < res.ratio < 1.67, (chip, res.ratio)


@needs_qemu
def test_known_loops_count_exactly(asm_machine) -> None:  # type: ignore[no-untyped-def]
    m = asm_machine
    for n in (1, 5, 1000):
        ret, c = m.call("qt_loop", [n], count=True)
        assert ret == 2 * n
        assert c is not None and c["instructions"] == 3 * n + 3
        assert c["by_class"]["branch"] == n + 1  # bne per iteration, bx lr
    first = m.call("qt_loop", [77], count=True)[1]
    assert first == m.call("qt_loop", [77], count=True)[1]  # counted twice: identical
    assert first is not None and len(first["blocks"]) == 3  # entry, loop body, exit

    m.free_all()
    n = 37  # two full vectors and a 5-lane tail
    src = np.arange(n, dtype=np.int8) - 20
    a_src, a_dst = m.alloc(64), m.alloc(64)
    m.write(a_src, src)
    m.write(a_dst, bytes(64))
    ret, c = m.call("qt_mve_double", [a_dst, a_src, n], count=True)
    got = np.frombuffer(m.read(a_dst, 64), np.int8)
    assert ret == 0
    assert np.array_equal(got[:n], (src.astype(np.int16) * 2).astype(np.int8))
    assert not got[n:].any()  # the tail predication stored no lane past n
    k = 3
    assert c is not None and c["instructions"] == 4 * k + 4
    assert c["by_class"] == {"mac": 0, "simd": k, "load": k, "store": k + 1,
                             "branch": k + 2, "other": 1}
    letp = [i for a in range(m.elf.address("qt_mve_double"), m.elf.address("qt_mve_double") + 24)
            if (i := m.instruction(a)) is not None and i.name == "letp"]
    assert letp and letp[0].flow and letp[0].target == m.elf.address("qt_mve_double") + 6


@needs_qemu
def test_fault_and_hang_are_one_line_errors(asm_machine) -> None:  # type: ignore[no-untyped-def]
    m = asm_machine
    with pytest.raises(EmulationError) as err:
        m.call("qt_fault")
    msg = str(err.value)
    assert "\n" not in msg
    assert re.search(r"HardFault \(UNDEFINSTR\) at 0x[0-9a-f]{8} \(qt_fault\+0x0\): udf", msg), msg
    assert m.call("qt_loop", [4])[0] == 8  # the machine restarts after a fault
    with pytest.raises(EmulationError, match=r"qt_hang did not return within 1 s on QEMU; "
                                             r"stopped at 0x[0-9a-f]{8} \(qt_hang\+0x0\): b"):
        m.call("qt_hang")
    assert m.call("qt_loop", [3], count=True)[1]["instructions"] == 12


@needs_qemu
def test_cli_estimate_counts_per_layer(build_root: Path) -> None:
    res = CliRunner().invoke(main, ["estimate", str(KWS), "--target", "cortex-m55", "--json"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.output[res.output.index("{"):])
    assert d["mode"] == "emulated" and len(d["layers"]) == 13
    for la in d["layers"]:
        assert la["instructions"] > 0 and la["cycles"] > 0
        assert la["instructions"] == sum(la["by_class"].values())
    # the pointwise convolutions read their weights from the flash region (breakpoint per load)
    assert all(d["layers"][i]["flash_read_bytes"] > 0 for i in (2, 4, 6, 8))
    text = CliRunner().invoke(main, ["estimate", str(KWS), "--target", "cortex-m55", "-q"])
    assert text.exit_code == 0, text.output
    rows = [ln for ln in text.output.splitlines() if re.match(r"\s*\d+\s+[A-Z_0-9]+\s", ln)]
    assert len(rows) == 13
    assert f"{d['layers'][2]['instructions']:,}" in rows[2]


def test_missing_tools_are_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(qemu, "qemu_binary", lambda: None)
    assert qemu_machine.missing(load_target("cortex-m55")) == (
        "the instruction-set tier of cortex-m55 needs qemu-system-arm "
        "(Debian: apt install qemu-system-arm)")
    llvm_decode.llvm_tool.cache_clear()
    monkeypatch.setattr(llvm_decode.shutil, "which", lambda _name: None)
    try:
        assert llvm_decode.available() == (
            "the QEMU tier needs llvm-objdump (Debian: apt install llvm-19)")
    finally:
        llvm_decode.llvm_tool.cache_clear()


LISTING = """\
60000000 <f>:
60000000: b580         \tpush\t{r7, lr}
60000002: f02f c001    \tdlstp.8\tlr, r2
60000006: ec91 0f00    \tvldrb.u8\tq0, [r1], #16
6000000a: ef00 0840    \tvmladava.s8\tr0, q0, q1
6000000e: fe71 0f4d    \tvpst
60000012: ef02 0840    \tvaddt.i8\tq0, q1, q2
60000016: bf8c         \tite\thi
60000018: 2001         \tmovhi\tr0, #0x1
6000001a: 2000         \tmovls\tr0, #0x0
6000001c: f01f c809    \tletp\tlr, 0x60000006 <f+0x6>
60000020: ec80 1f00    \tvldrb.s32\tq1, [r0]
60000024: bd80         \tpop\t{r7, pc}
"""


@pytest.mark.parametrize("chip, steady", [("cortex-m55", 4.0), ("cortex-m85", 4.0)])
def test_helium_beats_overlap_on_different_pipes(chip: str, steady: float) -> None:
    """Two VLDRB (two beats each on the one load/store pipe) and a VMLADAVA (the multiply pipe):
    the multiply's beats hide under the loads', so the loop is the loads' 4 cycles, as
    llvm-mca 19 finds (4.02 on both); without the overlap it would be 6."""
    model = cost_model(load_target(chip))
    ops = [make_op(make_insn(0x100 + 4 * k, 4, m, o), "thumb", model) for k, (m, o) in enumerate(
        [("vldrb.u8", "q0, [r0], #16"), ("vldrb.u8", "q1, [r1], #16"),
         ("vmlava.s8", "r12, q0, q1")])]
    assert [op.issue for op in ops] == [1, 1, 1] and ops[0].occupancy == 2
    assert ops[0].pools == ("load",) and ops[2].pools == ("neon_mac",)
    assert block_cycles(ops, model)[1] == steady
    scalar = make_op(make_insn(0x200, 2, "ldr", "r2, [r3]"), "thumb", model)
    assert scalar.pools == ("alu",) and scalar.issue == 0  # LLVM: scalar loads on the ALU


def test_llvm_listing_facts() -> None:
    insns, raw = parse_listing(LISTING)
    assert raw[0x60000000] == bytes.fromhex("80b5")
    get = {i.name: i for i in insns.values()}
    assert get["dlstp"].cls == "branch" and not get["dlstp"].flow
    vldrb = insns[0x60000006]
    assert vldrb.cls == "load" and vldrb.writeback and vldrb.base == "r1"
    assert vldrb.writes == ("q0", "r1")
    assert get["vmladava"].cls == "mac" and "r0" in get["vmladava"].reads
    vadd = insns[0x60000012]
    assert vadd.name == "vadd" and vadd.conditional and vadd.cls == "simd"
    assert insns[0x60000018].name == "mov" and insns[0x6000001A].conditional
    assert get["letp"].flow and get["letp"].target == 0x60000006
    assert get["pop"].flow and get["pop"].cls == "branch"
    model = cost_model(load_target("cortex-m55"))
    ops = {i.address: make_op(i, "thumb", model) for i in insns.values()}
    assert ops[0x60000006].kind == "load" and ops[0x60000006].nbytes == 16
    assert ops[0x60000020].nbytes == 4  # four bytes widened into 32-bit lanes
    assert ops[0x6000000A].kind == "vmac" and ops[0x6000000A].accumulates
    assert ops[0x60000012].kind == "vec"
    assert ops[0x6000001C].branch == "cond" and ops[0x60000002].branch == ""
    assert make_insn(0, 4, "vmlav.s8", "r0, q0, q1").reads == ("q0", "q1")
