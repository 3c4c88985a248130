"""The optional QEMU tier (qlane.codegen.qemu): MVE programs on the Cortex-M55 model give the
values numpy computes, and the counting plugin's totals equal QEMU's own one-instruction-per-
block execution trace."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from qlane.codegen import qemu

M, N = 4, 64  # int8 matrix-vector product, rows of N (a multiple of 16)
L = 37  # the tail-predicated loop's length (2 full vectors and a 5-lane tail)
Q = 12  # vqrdmulhq_s32 operands
EXIT = 42

PROTOTYPES = """\
#include <stdint.h>
void qlane_semihost_write0(const char *s);
void qlane_exit(int code);
"""

PRINT_C = """\
static void put(const char *label, int32_t index, int32_t value)
{
    char buf[48];
    char *p = buf + sizeof buf;
    *--p = '\\0';
    *--p = '\\n';
    for (int k = 0; k < 2; ++k) {
        uint32_t u = (uint32_t)(k == 0 ? value : index);
        int neg = k == 0 && value < 0;
        if (neg) {
            u = 0u - u;
        }
        do {
            *--p = (char)('0' + u % 10u);
            u /= 10u;
        } while (u != 0u);
        if (neg) {
            *--p = '-';
        }
        *--p = ' ';
    }
    qlane_semihost_write0(label);
    qlane_semihost_write0(p);
}
"""


def skip_unless_available() -> None:
    reason = qemu.available()
    if reason is not None:
        pytest.skip(reason)


def c_array(decl: str, values: np.ndarray) -> str:
    return f"{decl} = {{{', '.join(str(int(v)) for v in values.ravel())}}};\n"


def mve_inputs() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(20240607)
    qa = rng.integers(-2**31, 2**31, Q, dtype=np.int64)
    qb = rng.integers(-2**31, 2**31, Q, dtype=np.int64)
    qa[:3] = [-2**31, -2**31, 3]  # the one saturating product, and rounding of small ones
    qb[:3] = [-2**31, 2**31 - 1, -(2**30) - 1]
    return {"w": rng.integers(-128, 128, (M, N), dtype=np.int64),
            "x": rng.integers(-128, 128, N, dtype=np.int64),
            "ta": rng.integers(-128, 128, L, dtype=np.int64),
            "tb": rng.integers(-128, 128, L, dtype=np.int64),
            "qa": qa, "qb": qb}


def mve_source(v: dict[str, np.ndarray]) -> str:
    # external, writable arrays: the compiler cannot fold the results at build time
    arrays = (c_array(f"int8_t w[{M}][{N}]", v["w"]) + c_array(f"int8_t x[{N}]", v["x"])
              + c_array(f"int8_t ta[{L}]", v["ta"]) + c_array(f"int8_t tb[{L}]", v["tb"])
              + c_array(f"int32_t qa[{Q}]", v["qa"]) + c_array(f"int32_t qb[{Q}]", v["qb"]))
    return f"""\
#include <arm_mve.h>
{PROTOTYPES}
#if __ARM_FEATURE_MVE != 3
#error "integer and float MVE expected"
#endif
{arrays}
int8_t sat[48] = {{ {", ".join(["85"] * 48)} }};
int8_t ca[48];
int32_t qr[{Q}];
int32_t n_tail = {L}; /* run-time trip count: a dlstp/letp loop, not an unrolled one */
{PRINT_C}
int main(void)
{{
    for (int r = 0; r < {M}; ++r) {{
        int32_t acc = 0;
        for (int i = 0; i < {N}; i += 16) {{
            acc = vmladavaq_s8(acc, vldrbq_s8(&w[r][i]), vldrbq_s8(&x[i]));
        }}
        put("dot", r, acc);
    }}
    for (int i = 0; i < {Q}; i += 4) {{
        vstrwq_s32(&qr[i], vqrdmulhq_s32(vldrwq_s32(&qa[i]), vldrwq_s32(&qb[i])));
    }}
    for (int i = 0; i < {Q}; ++i) {{
        put("qrdmulh", i, qr[i]);
    }}
    int32_t tail = 0;
    __builtin_memcpy(ca, ta, (uint32_t)n_tail); /* a call: the runtime's memcpy */
    for (int32_t i = 0; i < n_tail; i += 16) {{
        mve_pred16_t p = vctp8q((uint32_t)(n_tail - i));
        int8x16_t a = vldrbq_z_s8(&ca[i], p);
        int8x16_t b = vldrbq_z_s8(&tb[i], p);
        tail = vmladavaq_p_s8(tail, a, b, p);
        vstrbq_p_s8(&sat[i], vqaddq_s8(a, b), p);
    }}
    put("tail", 0, tail);
    for (int i = 0; i < 48; ++i) {{
        put("sat", i, sat[i]);
    }}
    return {EXIT};
}}
"""


def mve_expected(v: dict[str, np.ndarray]) -> dict[tuple[str, int], int]:
    dots = v["w"] @ v["x"]
    # vqrdmulh: saturate((2ab + 2^31) >> 32) == saturate((ab + 2^30) >> 31)
    qr = np.clip((v["qa"] * v["qb"] + (1 << 30)) >> 31, -2**31, 2**31 - 1)
    sat = np.full(48, 85)
    sat[:L] = np.clip(v["ta"] + v["tb"], -128, 127)
    out = {("dot", i): int(d) for i, d in enumerate(dots)}
    out |= {("qrdmulh", i): int(q) for i, q in enumerate(qr)}
    out |= {("tail", 0): int(v["ta"] @ v["tb"])}
    out |= {("sat", i): int(s) for i, s in enumerate(sat)}
    return out


LOOP_SOURCE = """\
#include <stdint.h>
int main(void)
{
    uint32_t n = TRIPS;
    /* two instructions an iteration, whatever the compiler makes of the rest */
    __asm__ volatile("1:\\n\\tsubs %0, %0, #1\\n\\tbne 1b" : "+r"(n) : : "cc");
    return (int)n + 3;
}
"""


@pytest.fixture(scope="module")
def mve_elf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    skip_unless_available()
    d = tmp_path_factory.mktemp("mve")
    (d / "mve.c").write_text(mve_source(mve_inputs()))
    return qemu.build_m55([d / "mve.c"], d / "mve.elf")


@pytest.fixture(scope="module")
def loop_elfs(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    skip_unless_available()
    d = tmp_path_factory.mktemp("loop")
    elfs = {}
    for trips in (1000, 3000):
        src = d / f"loop{trips}.c"
        src.write_text(LOOP_SOURCE.replace("TRIPS", f"{trips}u"))
        elfs[trips] = qemu.build_m55([src], d / f"loop{trips}.elf")
    return elfs


def test_mve_intrinsics_match_numpy(mve_elf: Path) -> None:
    res = qemu.run(mve_elf, timeout_s=30)
    assert res.exit_code == EXIT, res.console
    got = {(m[1], int(m[2])): int(m[3])
           for m in re.finditer(r"^(\w+) (\d+) (-?\d+)$", res.console, re.M)}
    want = mve_expected(mve_inputs())
    assert got == want
    assert any(v < -2**24 for k, v in want.items() if k[0] == "qrdmulh")  # real values
    assert want[("qrdmulh", 0)] == 2**31 - 1  # the saturating product
    assert res.instructions == sum(n * e for n, e in res.blocks.values()) > 0
    assert not res.faulted
    # tuned for the Cortex-M85, the same program still runs on the M55 model
    m85 = qemu.build_m55([mve_elf.with_suffix(".c")], mve_elf.with_name("mve85.elf"),
                         cpu="cortex_m85+mve_fp+fp_armv8d16")
    res85 = qemu.run(m85, timeout_s=30)
    assert (res85.exit_code, res85.console) == (EXIT, res.console)


def one_insn_per_tb_trace(elf: Path, log: Path) -> int:
    """Executed instructions from QEMU's own trace: one instruction per block, no chaining, a
    ``Trace`` line per executed block."""
    version = re.search(r"version (\d+)\.(\d+)", qemu.qemu_version())
    assert version is not None
    newer = (int(version[1]), int(version[2])) >= (8, 1)
    single = ["-accel", "tcg,one-insn-per-tb=on"] if newer else ["-singlestep"]
    cmd = [*qemu.qemu_command(elf, log.with_suffix(".console")), *single,
           "-d", "exec,nochain", "-D", str(log)]
    subprocess.run(cmd, capture_output=True, check=False, timeout=60)
    with log.open() as fh:
        return sum(1 for line in fh if line.startswith("Trace "))


def test_counts_equal_the_single_step_trace(mve_elf: Path, loop_elfs: dict[int, Path],
                                            tmp_path: Path) -> None:
    runs = {trips: qemu.run(elf, timeout_s=30) for trips, elf in loop_elfs.items()}
    assert all(r.exit_code == 3 for r in runs.values())
    # the loop body is subs + bne: 2 instructions an iteration, the rest the same
    assert runs[3000].instructions - runs[1000].instructions == 2 * 2000
    body = [(n, e) for n, e in runs[3000].blocks.values() if e >= 2999]
    assert body and all(n == 2 for n, _ in body)
    for name, elf, res in [("loop", loop_elfs[1000], runs[1000]),
                           ("mve", mve_elf, qemu.run(mve_elf, timeout_s=30))]:
        assert one_insn_per_tb_trace(elf, tmp_path / f"{name}.log") == res.instructions, name


def test_available_and_plugin_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    skip_unless_available()
    assert qemu.available() is None
    monkeypatch.setenv("QLANE_CACHE", str(tmp_path))
    first = qemu.plugin_path()
    assert first.is_file() and first.is_relative_to(tmp_path / "qemu")
    stat = first.stat()
    second = qemu.plugin_path()
    assert second == first
    again = second.stat()
    assert (again.st_ino, again.st_mtime_ns) == (stat.st_ino, stat.st_mtime_ns)  # not rebuilt
    assert [p.name for p in first.parent.iterdir()] == [first.name]  # no temporary left


def test_hang_times_out_and_fault_is_reported(tmp_path: Path) -> None:
    skip_unless_available()
    (tmp_path / "hang.c").write_text("int main(void) { for (;;) { __asm__ volatile(\"\"); } }\n")
    (tmp_path / "fault.c").write_text(
        "int main(void) { return *(volatile int *)0xF0000000u; }\n")
    hang = qemu.build_m55([tmp_path / "hang.c"], tmp_path / "hang.elf")
    fault = qemu.build_m55([tmp_path / "fault.c"], tmp_path / "fault.elf")
    with pytest.raises(qemu.QemuTimeout, match="did not exit within 1 s") as exc:
        qemu.run(hang, timeout_s=1, count=False)
    assert "\n" not in str(exc.value)
    res = qemu.run(fault, timeout_s=30, count=False)
    assert res.faulted and res.exit_code == qemu.FAULT_EXIT
    assert re.search(r"qlane: fault: \w+ at pc 0x[0-9a-f]{8}", res.console), res.console
    assert res.blocks == {} and res.instructions == 0
