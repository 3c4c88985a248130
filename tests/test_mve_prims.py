"""The MVE (Helium) intrinsics: qlane_mve.h's portable versions, compiled on this host, equal
sim.simd.MVE_INSTRUCTIONS bit for bit on edge and random operands, build warning-free and run
UBSan / ASan-clean; the real <arm_mve.h> on QEMU's Cortex-M55 gives the same values; and
requantize_mve equals sim.fixedpoint's requantization."""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
from test_cprims import STRICT, edge_values, multiplier_edges, random_int32, random_multipliers

from qlane.codegen import cprims
from qlane.sim import fixedpoint as fp
from qlane.sim.simd import (
    GATHER_BYTES,
    INSTRUCTIONS,
    MVE_INSTRUCTIONS,
    Imm,
    Vec,
    requantize_mve,
)

INT32_MIN, INT32_MAX = fp.INT32_MIN, fp.INT32_MAX
HEADER = "qlane_mve.h"
RNG_SEED = 20250307
N_RANDOM = 4096  # registers per intrinsic
CAP = 40_000  # registers of an edge grid at most (beyond: a random sample of it)
QEMU_EDGE, QEMU_RANDOM = 768, 256  # registers per intrinsic on the QEMU Cortex-M55

# --- the registry: every intrinsic of qlane_mve.h and the kind of each operand -------------------
#
# reg: a vector register; gpr: a general-purpose register; mem: memory at a pointer (a load's
# source, a store's destination; a predicated store's operand 0 is the memory before it);
# shift: a vector of per-lane shift counts (their signed low bytes); pred: an mve_pred16_t;
# count: VCTP's element count; offs: a vector of byte offsets into a gather's or scatter's memory
# (inside sim.simd.GATHER_BYTES); imm: an immediate.

REG, GPR, MEM, SHIFT, PRED, COUNT, OFFS, IMM = ("reg", "gpr", "mem", "shift", "pred", "count",
                                               "offs", "imm")
_LOADS = ("vld1q_s8", "vld1q_u8", "vldrbq_s16", "vldrbq_u16", "vldrbq_s32", "vldrbq_u32",
          "vldrwq_s32", "vld1q_s32")
_STORES = ("vst1q_s8", "vst1q_u8", "vstrbq_s16", "vstrbq_s32", "vstrbq_u32", "vstrwq_s32")
_LOADS_Z = ("vldrbq_z_s8", "vldrbq_z_s16", "vldrbq_z_u16", "vldrbq_z_s32", "vldrbq_z_u32")
_STORES_P = ("vstrbq_p_s8", "vstrbq_p_s16", "vstrbq_p_s32")
_LANEWISE = ("vaddq_s32", "vaddq_s16", "vsubq_s16", "vmulq_s32", "vmaxq_s32", "vminq_s32",
             "vmaxq_s16", "vminq_s16", "vmaxq_s8", "vminq_s8", "vmaxq_u8", "vminq_u8",
             "vqaddq_s32", "vandq_s32", "vqrdmulhq_s32", "vqdmulhq_s32", "vmulhq_s32",
             "vmulhq_u32", "vrmulhq_s32", "vmovnbq_s32", "vqmovnbq_s32",
             "vqmovntq_s32", "vmovnbq_s16", "vqmovnbq_s16", "vqmovntq_s16")
_REINTERPRET = ("vreinterpretq_s8_s16", "vreinterpretq_s16_s8", "vreinterpretq_s8_s32",
                "vreinterpretq_s32_s8", "vreinterpretq_s16_s32", "vreinterpretq_s32_s16",
                "vreinterpretq_u8_s8", "vreinterpretq_s8_u8", "vreinterpretq_u16_s16",
                "vreinterpretq_s16_u16", "vreinterpretq_u32_s32", "vreinterpretq_s32_u32")
SPECS: dict[str, tuple[tuple[str, ...], str]] = {
    **{n: ((MEM,), REG) for n in _LOADS},
    **{n: ((MEM, PRED), REG) for n in _LOADS_Z},
    **{n: ((REG,), MEM) for n in _STORES},
    "vldrbq_gather_offset_s32": ((MEM, OFFS), REG),
    "vstrbq_scatter_offset_s32": ((MEM, OFFS, REG), MEM),
    "vstrbq_scatter_offset_s16": ((MEM, OFFS, REG), MEM),
    "vstrbq_scatter_offset_p_s32": ((MEM, OFFS, REG, PRED), MEM),
    **{n: ((MEM, REG, PRED), MEM) for n in _STORES_P},
    **{f"vctp{b}q": ((COUNT,), PRED) for b in (8, 16, 32)},
    "vmladavq_s8": ((REG, REG), GPR),
    **{n: ((GPR, REG, REG), GPR) for n in ("vmladavaq_s8", "vmladavaq_u8", "vmladavaq_s16")},
    **{n: ((GPR, REG, REG, PRED), GPR) for n in ("vmladavaq_p_s8", "vmladavaq_p_s16")},
    **{f"vdupq_n_s{b}": ((GPR,), REG) for b in (8, 16, 32)},
    **{n: ((REG, REG), REG) for n in _LANEWISE},
    **{n: ((REG, GPR), REG) for n in ("vaddq_n_s32", "vsubq_n_s16", "vmulq_n_s32",
                                      "vqrdmulhq_n_s32", "vqaddq_n_s16")},
    "vmlaq_n_s32": ((REG, REG, GPR), REG),
    "vshrq_n_s32": ((REG, IMM), REG),
    "vshlq_n_s16": ((REG, IMM), REG),
    **{f"vshll{h}q_n_{t}16": ((REG, IMM), REG) for h in "bt" for t in "su"},
    **{n: ((REG, SHIFT), REG) for n in ("vshlq_s32", "vrshlq_s32", "vqshlq_s32")},
    "vrshlq_n_s32": ((REG, GPR), REG),
    **{n: ((REG,), REG) for n in _REINTERPRET},
    "vaddvq_s32": ((REG,), GPR),
    "vaddvq_s8": ((REG,), GPR),
    "vaddvaq_s32": ((GPR, REG), GPR),
}
NAMES = sorted(SPECS)
CTYPES = {"int8": "int8_t", "uint8": "uint8_t", "int16": "int16_t", "uint16": "uint16_t",
          "int32": "int32_t", "uint32": "uint32_t"}


def header_text() -> str:
    return (resources.files("qlane.templates") / HEADER).read_text(encoding="utf-8")


def header_intrinsics(text: str) -> list[str]:
    """The intrinsics the portable half of the header defines (not its qlane_mve_ helpers)."""
    return re.findall(r"^static inline [\w ]+?\b(v\w+)\(", text, re.M)


# --- operand values ----------------------------------------------------------------------------


def dtype_edges(dtype: str) -> list[int]:
    """The boundaries of one lane type: its ends and their neighbours, 0, +-1, +-2, the middle."""
    info = np.iinfo(dtype)
    mid = 1 << (info.bits - 2)
    v = {int(info.min), int(info.min) + 1, int(info.max) - 1, int(info.max), 0, 1, 2, mid,
         mid + 1 if info.min == 0 else -mid}
    if info.min < 0:
        v |= {-1, -2}
    return sorted(v)


SHIFT_EDGES = [-256, -255, -129, -128, -127, -64, -40, -33, -32, -31, -30, -17, -16, -2, -1, 0,
               1, 2, 15, 16, 30, 31, 32, 33, 40, 64, 127, 128, 255, 256, 257, 0x7FFFFF01,
               INT32_MIN, INT32_MAX]
"""Shift counts at their ends (the low byte counts: 255 is -1, 256 is 0, 0x7FFFFF01 is 1)."""
PRED_EDGES = sorted({0x0000, 0xFFFF, 0x0001, 0x0002, 0x000E, 0x000F, 0x0010, 0x1111, 0xEEEE,
                     0x5555, 0xAAAA, 0x3333, 0xCCCC, 0x00FF, 0xFF00, 0x7FFF, 0x8000, 0xF0F0,
                     0x0F0F, 0x8421, 0x7BDE}
                    | {(1 << (n * w)) - 1 for w, top in ((1, 16), (2, 8), (4, 4))
                       for n in range(top + 1)})
"""All-false, all-true, every VCTP pattern, and partial ones that set some but not all of an
element's bits (an element is active by the bit of its lowest byte)."""
COUNT_EDGES = [*range(0, 21), 31, 32, 33, 255, 256, 0x7FFFFFFF, 0x80000000, 0xFFFFFFF0,
               0xFFFFFFFF]


OFFS_EDGES = [0, 1, 2, 3, 4, 5, 7, 8, 15, 16, 31, 32, 33, 47, 48, 60, 61, 62, 63]
"""Byte offsets at the ends of the emulated gather memory and around its powers of two (a
register with every lane on one of them makes a scatter's lanes share a byte)."""
MEMORY_BEFORE = (*_STORES_P, "vstrbq_scatter_offset_s32", "vstrbq_scatter_offset_s16",
                 "vstrbq_scatter_offset_p_s32")
"""The stores that leave some bytes of their memory as they were (operand 0: the memory before)."""


def _special(kind: str) -> np.ndarray | None:
    return {SHIFT: np.array(SHIFT_EDGES, np.int64), PRED: np.array(PRED_EDGES, np.int64),
            COUNT: np.array(COUNT_EDGES, np.int64), OFFS: np.array(OFFS_EDGES, np.int64)}.get(
        kind)


def _candidates(t: Vec | Imm, kind: str, rich: bool, rng: np.random.Generator) -> np.ndarray:
    """Edge-grid candidates of one operand: registers with every lane on one edge value, a few
    mixing them, or scalars."""
    if isinstance(t, Imm):
        return np.arange(t.lo, t.hi + 1, dtype=np.int32)
    vals = _special(kind)
    if vals is None:
        vals = edge_values() if rich and t.dtype == "int32" else np.array(dtype_edges(t.dtype))
    if t.lanes == 1:
        return vals.astype(t.dtype)
    regs = np.repeat(vals[:, None], t.lanes, axis=1)
    mixes = np.stack([np.resize(vals, t.lanes), np.resize(vals[::-1], t.lanes),
                      np.resize(np.roll(vals, 3), t.lanes), rng.permutation(np.resize(vals, 64))[
                          : t.lanes]])
    return np.concatenate([regs, mixes]).astype(t.dtype)


def _seed(name: str, kind: str) -> int:
    return RNG_SEED + sum(map(ord, name)) * 7 + sum(map(ord, kind))


@functools.cache
def edge_operands(name: str, rich: bool = True, cap: int = CAP) -> tuple[np.ndarray, ...]:
    """Every combination of the operands' candidates (a random sample of ``cap`` beyond)."""
    inst = MVE_INSTRUCTIONS[name]
    kinds = SPECS[name][0]
    rng = np.random.default_rng(_seed(name, "edge"))
    cands = [_candidates(t, k, rich, rng) for t, k in zip(inst.inputs, kinds)]
    size = int(np.prod([len(c) for c in cands]))
    if size > cap and rich:
        return edge_operands(name, False, cap)
    if size <= cap:
        grid = np.meshgrid(*[np.arange(len(c)) for c in cands], indexing="ij")
        idx = np.stack([g.ravel() for g in grid], axis=-1)
    else:
        idx = np.stack([rng.integers(0, len(c), cap) for c in cands], axis=-1)
    return tuple(np.ascontiguousarray(c[idx[:, k]]) for k, c in enumerate(cands))


def _random_data(t: Vec, n: int, rng: np.random.Generator) -> np.ndarray:
    shape = (n, t.lanes) if t.lanes > 1 else (n,)
    size = int(np.prod(shape))
    if t.dtype == "int32":
        v = random_int32(rng, size)
    else:
        info = np.iinfo(t.dtype)
        v = rng.integers(int(info.min), int(info.max), size, endpoint=True)
    edges = np.array(dtype_edges(t.dtype))
    v = np.where(rng.random(size) < 0.2, rng.choice(edges, size), v)
    return v.reshape(shape).astype(t.dtype)


@functools.cache
def random_operands(name: str) -> tuple[np.ndarray, ...]:
    inst = MVE_INSTRUCTIONS[name]
    rng = np.random.default_rng(_seed(name, "random"))
    n = N_RANDOM
    out = []
    for t, kind in zip(inst.inputs, SPECS[name][0]):
        if isinstance(t, Imm):
            out.append(rng.integers(t.lo, t.hi, n, endpoint=True).astype(np.int32))
        elif kind == SHIFT:
            small = rng.integers(-40, 41, (n, 4)) + 256 * rng.integers(-3, 4, (n, 4))
            big = random_int32(rng, 4 * n).reshape(n, 4)
            out.append(np.where(rng.random((n, 4)) < 0.8, small, big).astype(np.int32))
        elif kind == PRED:
            tails = rng.choice(np.array(PRED_EDGES), n)
            out.append(np.where(rng.random(n) < 0.5, rng.integers(0, 1 << 16, n), tails)
                       .astype(np.uint16))
        elif kind == OFFS:
            out.append(rng.integers(0, GATHER_BYTES, (n, t.lanes)).astype(t.dtype))
        elif kind == COUNT:
            big = rng.integers(0, 1 << 32, n, dtype=np.uint64)
            out.append(np.where(rng.random(n) < 0.7, rng.integers(0, 40, n), big)
                       .astype(np.uint32))
        else:
            out.append(_random_data(t, n, rng))
    return tuple(out)


def sim_values(name: str, args: tuple[np.ndarray, ...]) -> np.ndarray:
    """The emulator's answer for registers ``args`` (an immediate group by group)."""
    inst = MVE_INSTRUCTIONS[name]
    imm = [k for k, t in enumerate(inst.inputs) if isinstance(t, Imm)]
    if not imm:
        return inst(*args)
    (k,) = imm
    n = len(args[k])
    t = inst.output
    out = np.zeros((n, t.lanes) if t.lanes > 1 else (n,), t.storage)
    for v in np.unique(args[k]):
        sel = args[k] == v
        out[sel] = inst(*(int(v) if j == k else a[sel] for j, a in enumerate(args)))
    return out


@dataclass(frozen=True)
class Case:
    """One harness run: operand registers and the emulator's results."""

    name: str
    inputs: tuple[np.ndarray, ...]
    expected: np.ndarray


@functools.cache
def case(name: str, kind: str) -> Case:
    args = edge_operands(name) if kind == "edge" else random_operands(name)
    return Case(name, args, sim_values(name, args))


def assert_equal(c: Case, got: np.ndarray, where: str) -> None:
    bad = np.flatnonzero((got != c.expected).reshape(len(got), -1).any(axis=1))
    if bad.size:
        i = bad[0]
        ins = ", ".join(str(a[i].tolist()) for a in c.inputs)
        pytest.fail(f"{where} {c.name}({ins}) = {got[i].tolist()}, sim says "
                    f"{c.expected[i].tolist()} ({bad.size} of {len(got)} registers differ)")


# --- the C harness: one loop per intrinsic, shared by cffi, the sanitizers and QEMU -------------


def _harness_fn(name: str) -> tuple[str, str]:
    """(signature, definition) of ``h_NAME(a0, ..., out, n)``: the intrinsic on n registers."""
    inst = MVE_INSTRUCTIONS[name]
    kinds, out_kind = SPECS[name]
    out_t = inst.output
    params, body, args = [], [], []
    imm: tuple[int, Imm] | None = None
    for k, (t, kind) in enumerate(zip(inst.inputs, kinds)):
        if isinstance(t, Imm):
            params.append(f"const int32_t *a{k}")
            imm = k, t
            args.append("IMM")
            continue
        params.append(f"const {CTYPES[t.dtype]} *a{k}")
        if kind == MEM and out_kind == MEM:  # the memory a partial store starts from
            body.append(f"memcpy(out + i * {t.lanes}, a{k} + i * {t.lanes}, sizeof *out * "
                        f"{t.lanes});")
            args.append(f"out + i * {t.lanes}")
        elif kind == MEM:
            args.append(f"a{k} + i * {t.lanes}")
        elif t.lanes == 1:
            args.append(f"a{k}[i]")
        else:
            body.append(f"{t.c_type} v{k};")
            body.append(f"memcpy(&v{k}, a{k} + i * {t.lanes}, sizeof v{k});")
            args.append(f"v{k}")
    if out_kind == MEM and kinds[0] != MEM:
        args.insert(0, f"out + i * {out_t.lanes}")
    params += [f"{CTYPES[out_t.dtype]} *out", "size_t n"]
    call = f"{name}({', '.join(args)})"
    if out_kind == MEM:
        body.append(f"{call};")
    elif out_t.lanes == 1:
        body.append(f"out[i] = {call};")
    else:
        body.append(f"{out_t.c_type} r;")
        if imm is not None:
            k, t = imm
            body.append("memset(&r, 0, sizeof r);")
            cases = " ".join(f"case {v}: r = {call.replace('IMM', str(v))}; break;"
                             for v in range(t.lo, t.hi + 1))
            body.append(f"switch (a{k}[i]) {{ {cases} default: break; }}")
        else:
            body.append(f"r = {call};")
        body.append(f"memcpy(out + i * {out_t.lanes}, &r, sizeof r);")
    sig = f"void h_{name}({', '.join(params)})"
    inner = "\n        ".join(body)
    return sig, (f"{sig};\n{sig} {{\n    size_t i;\n    for (i = 0; i < n; ++i) {{\n"
                 f"        {inner}\n    }}\n}}\n")


def harness(host: bool = True) -> tuple[str, str]:
    """(cffi cdef, C source) of every intrinsic's loop (not ``host``: for a freestanding image,
    whose runtime has memcpy and memset but no <string.h>)."""
    fns = [_harness_fn(n) for n in NAMES]
    strings = ("#include <string.h>\n" if host else
               "void *memcpy(void *restrict dst, const void *restrict src, size_t n);\n"
               "void *memset(void *dst, int c, size_t n);\n")
    src = (f"#include <stddef.h>\n#include <stdint.h>\n{strings}#include \"{HEADER}\"\n\n"
           + "\n".join(d for _, d in fns))
    return "\n".join(f"{s};" for s, _ in fns), src


def _c_array_type(a: np.ndarray) -> str:
    return CTYPES[a.dtype.name]


def run_cffi(ffi, lib, c: Case) -> np.ndarray:
    bufs = [ffi.from_buffer(f"{_c_array_type(a)}[]", np.ascontiguousarray(a)) for a in c.inputs]
    out = np.zeros_like(c.expected)
    dst = ffi.from_buffer(f"{_c_array_type(out)}[]", out, require_writable=True)
    getattr(lib, f"h_{c.name}")(*bufs, dst, len(out))
    return out


@pytest.fixture(scope="module")
def build_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mve")
    (root / "inc").mkdir()
    (root / "inc" / HEADER).write_text(header_text())
    return root


@pytest.fixture(scope="module")
def mve_lib(build_root: Path):
    cdef, src = harness()
    return cprims.build_cffi_module("mve_prims", cdef, src, [build_root / "inc"],
                                    build_root / "cffi")


@pytest.mark.hostc
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("kind", ["edge", "random"])
def test_portable_intrinsic_equals_sim(mve_lib, name: str, kind: str) -> None:
    ffi, lib = mve_lib
    c = case(name, kind)
    assert_equal(c, run_cffi(ffi, lib, c), f"[portable/{kind}]")


@pytest.mark.fast
def test_every_header_intrinsic_has_a_case() -> None:
    defined = header_intrinsics(header_text())
    assert len(defined) == len(set(defined))
    assert set(defined) == set(SPECS) == set(MVE_INSTRUCTIONS)
    for name, (kinds, out_kind) in SPECS.items():
        inst = MVE_INSTRUCTIONS[name]
        assert len(kinds) == len(inst.inputs), name
        for t, kind in zip(inst.inputs, kinds):
            if isinstance(t, Imm):
                assert kind == IMM, name
            else:
                assert (t.lanes == 1) == (kind in (GPR, PRED, COUNT)), (name, kind)
        assert (inst.output.lanes == 1) == (out_kind in (GPR, PRED)), name
        assert (out_kind == MEM) == name.startswith("vst"), name
        assert (MEM in kinds) == (name.startswith("vld") or name in MEMORY_BEFORE), name


@pytest.mark.fast
def test_header_text() -> None:
    """<arm_mve.h> and nothing else on an MVE core; elsewhere one comment line per intrinsic
    naming its instruction, and C99's portable types."""
    text = header_text()
    lines = text.splitlines()
    native = lines.index("#if defined(__ARM_FEATURE_MVE) && !defined(QLANE_MVE_PORTABLE)")
    portable = lines.index("#else /* portable C99 versions */")
    assert [ln for ln in lines[native + 1 : portable] if ln.strip()] == ["#include <arm_mve.h>"]
    assert "typedef struct { int8_t val[16]; } int8x16_t;" in lines
    assert "typedef struct { uint32_t val[4]; } uint32x4_t;" in lines
    assert "typedef uint16_t mve_pred16_t;" in lines
    for name in header_intrinsics(text):
        at = next(k for k, ln in enumerate(lines)
                  if re.match(rf"static inline [\w ]+?\b{name}\(", ln))
        comment = lines[at - 1]
        assert comment.startswith("/* ") and comment.endswith(" */"), name
        mnemonic = MVE_INSTRUCTIONS[name].mnemonic
        for insn in re.findall(r"\bV[A-Z]+\.[A-Z]?\d+\b", mnemonic) or [mnemonic.split()[0]]:
            if insn.startswith("("):
                insn = "(no instruction)"
            assert insn in comment, (name, insn, comment)
    assert all(len(ln) <= 100 for ln in lines)


@pytest.mark.fast
def test_registry_metadata() -> None:
    for name, inst in MVE_INSTRUCTIONS.items():
        assert inst.name == name == inst.intrinsic and inst.isa == "mve" and inst.lanes >= 1
        assert inst.mnemonic and inst.meaning and inst.saturation
        kinds, out_kind = SPECS[name]
        for t, kind in [*zip(inst.inputs, kinds), (inst.output, out_kind)]:
            if isinstance(t, Vec) and kind in (REG, SHIFT, OFFS):
                assert t.bits == 128, (name, t)
    assert all(i.isa in ("neon", "dsp") for i in INSTRUCTIONS.values())
    assert MVE_INSTRUCTIONS["vmladavaq_p_s8"].lanes == 16
    assert MVE_INSTRUCTIONS["vstrbq_p_s32"].output.c_type == "int8x4_t"  # four bytes of memory


@pytest.mark.fast
def test_same_name_as_neon_same_values() -> None:
    """Where arm_mve.h reuses a NEON name for a lane operation, the two ISAs agree."""
    shared = sorted(set(MVE_INSTRUCTIONS) & set(INSTRUCTIONS))
    assert {"vqrdmulhq_s32", "vqdmulhq_s32", "vrshlq_s32", "vshlq_s32", "vqaddq_s32",
            "vandq_s32", "vshrq_n_s32", "vmaxq_u8", "vdupq_n_s32"} <= set(shared)
    for name in shared:
        mve, neon = MVE_INSTRUCTIONS[name], INSTRUCTIONS[name]
        assert mve.inputs == neon.inputs or name == "vshrq_n_s32"
        args = edge_operands(name)
        if name == "vshrq_n_s32":
            for n in (1, 7, 31, 32):
                assert np.array_equal(mve(args[0], n), neon(args[0], n))
            continue
        rand = random_operands(name)
        for a in (args, rand):
            assert np.array_equal(mve(*a), neon(*a)), name
            assert np.array_equal(mve.saturated(*a), neon.saturated(*a)), name


@pytest.mark.fast
def test_architecture_corners() -> None:
    """Answers by hand from the Armv8.1-M pseudocode."""
    op = MVE_INSTRUCTIONS
    u32 = np.uint32
    assert [int(op["vctp8q"](u32(n))) for n in (0, 1, 15, 16, 17, 0xFFFFFFFF)] == [
        0, 1, 0x7FFF, 0xFFFF, 0xFFFF, 0xFFFF]
    assert [int(op["vctp16q"](u32(n))) for n in (0, 1, 7, 8, 0x80000000)] == [
        0, 0x3, 0x3FFF, 0xFFFF, 0xFFFF]
    assert [int(op["vctp32q"](u32(n))) for n in (0, 1, 3, 4, 100)] == [
        0, 0xF, 0xFFF, 0xFFFF, 0xFFFF]
    mem = np.full(4, 9, np.int8)
    word = np.array([0x1FF, -129, 0x7F80, 3], np.int32)
    # an element is active by the bit of its lowest byte: 0x000E leaves lane 0 alone
    store = op["vstrbq_p_s32"]
    assert store(mem, word, np.uint16(0x000E)).tolist() == [9, 9, 9, 9]
    assert store(mem, word, np.uint16(0x0011)).tolist() == [-1, 127, 9, 9]
    assert store(mem, word, np.uint16(0xFFFF)).tolist() == [-1, 127, -128, 3]
    # gathers and scatters address bytes; a scatter writes lane 0 first, so a later lane wins
    mem64 = np.arange(64, dtype=np.int8) - 32
    offs = np.array([63, 0, 7, 7], np.uint32)
    assert op["vldrbq_gather_offset_s32"](mem64, offs).tolist() == [31, -32, -25, -25]
    scat = op["vstrbq_scatter_offset_s32"](np.zeros(64, np.int8), offs, word)
    assert scat[[0, 7, 63]].tolist() == [127, 3, -1] and np.count_nonzero(scat) == 3
    scat_p = op["vstrbq_scatter_offset_p_s32"](mem64, offs, word, np.uint16(0x00F1))
    assert scat_p[[0, 7, 63]].tolist() == [127, -25, -1]
    assert op["vstrbq_p_s8"](np.zeros(16, np.int8), np.full(16, 5, np.int8),
                             np.uint16(0x8001)).tolist() == [5] + [0] * 14 + [5]
    halves = np.array([0x1FF, -129, 300, 7, -1, 2, 3, 4], np.int16)
    scat16 = op["vstrbq_scatter_offset_s16"](np.zeros(64, np.int8),
                                             np.array([0, 1, 2, 63, 5, 5, 6, 7], np.uint16), halves)
    assert scat16[[0, 1, 2, 5, 63]].tolist() == [-1, 127, 44, 2, 7]
    assert op["vqaddq_n_s16"](np.array([32760, -32760, 5, 0, 0, 0, 0, 0], np.int16),
                              np.int16(-128)).tolist()[:3] == [32632, -32768, -123]
    with pytest.raises(ValueError):
        op["vldrbq_gather_offset_s32"](mem64, np.array([0, 64, 1, 2], np.uint32))
    assert op["vrshlq_n_s32"](np.full(4, -7, np.int32), np.int32(0x1FE)).tolist() == [-2] * 4
    a8 = np.arange(1, 17, dtype=np.int8)
    assert op["vldrbq_z_s8"](a8, np.uint16(0x8001)).tolist() == [1] + [0] * 14 + [16]
    ones = np.ones(8, np.int16)
    assert int(op["vmladavaq_p_s16"](np.int32(0), ones, ones, np.uint16(0x0002))) == 0
    assert int(op["vmladavaq_p_s16"](np.int32(0), ones, ones, np.uint16(0x5555))) == 8
    # VMOVNB / VQMOVNT write half the lanes and keep the others
    a = np.arange(8, dtype=np.int16)
    b = np.array([0x12345, -40000, 40000, -1], np.int32)
    assert op["vmovnbq_s32"](a, b).tolist() == [0x2345, 1, 25536, 3, -25536, 5, -1, 7]
    assert op["vqmovntq_s32"](a, b).tolist() == [0, 32767, 2, -32768, 4, 32767, 6, -1]
    assert op["vqmovntq_s32"].saturated(a, b).tolist() == [False, True, False, True, False,
                                                            True, False, False]
    # the shift count is the signed low byte of each lane
    x = np.full(4, -7, np.int32)
    assert op["vshlq_s32"](x, np.array([0x100, 0xFF, 0x1FE, 33], np.int32)).tolist() == [
        -7, -4, -2, 0]
    assert op["vrshlq_s32"](x, np.array([-1, -2, -3, -128], np.int32)).tolist() == [-3, -2, -1, 0]
    assert op["vqshlq_s32"](np.array([1 << 30, -(1 << 30), 0, -1], np.int32),
                            np.array([1, 2, 127, 200], np.int32)).tolist() == [
        INT32_MAX, INT32_MIN, 0, -1]
    mn = np.full(4, INT32_MIN, np.int32)
    assert op["vqrdmulhq_s32"](mn, mn).tolist() == [INT32_MAX] * 4
    assert op["vqrdmulhq_s32"].saturated(mn, mn).all()
    assert op["vrmulhq_s32"](mn, mn).tolist() == [1 << 30] * 4
    assert op["vmulhq_s32"](mn, np.full(4, INT32_MAX, np.int32)).tolist() == [-(1 << 30) + 0] * 4
    # 32-bit accumulators wrap
    m8 = np.full(16, -128, np.int8)
    assert int(op["vmladavaq_s8"](np.int32(INT32_MAX - (1 << 18) + 1), m8, m8)) == INT32_MIN
    assert int(op["vmladavaq_u8"](np.uint32(0xFFFFFFFF), np.ones(16, np.uint8),
                                  np.ones(16, np.uint8))) == 15
    assert int(op["vaddvq_s8"](m8)) == -2048
    assert op["vreinterpretq_s16_s8"](np.arange(16, dtype=np.int8)).tolist()[:2] == [
        0x0100, 0x0302]


# --- strict warnings, UBSan and ASan (one native binary over the edge grids) --------------------


def _blob(runs: list[Case], path: Path) -> list[list[int]]:
    """Write every case's operands into one file, 16-byte aligned; their offsets."""
    offsets, data = [], bytearray()
    for c in runs:
        offs = []
        for a in c.inputs:
            data += bytes(-len(data) % 16)
            offs.append(len(data))
            data += np.ascontiguousarray(a).astype(a.dtype.newbyteorder("<")).tobytes()
        offsets.append(offs)
    path.write_bytes(bytes(data))
    return offsets


TAIL_CHECK = """\
/* Tail predication touches no byte past the end (ASan on exact-size buffers). */
static int qlane_tail_check(void) {
    int8_t *in = (int8_t *)malloc(5), *st = (int8_t *)malloc(3);
    int8_t lanes[16];
    int ok = in != NULL && st != NULL, k;
    if (ok) {
        memset(in, 7, 5);
        memset(st, 0, 3);
        vst1q_s8(lanes, vldrbq_z_s8(in, vctp8q(5)));
        vstrbq_p_s32(st, vdupq_n_s32(0x1234), vctp32q(3));
        for (k = 0; k < 16; ++k) {
            ok = ok && lanes[k] == (k < 5 ? 7 : 0);
        }
        ok = ok && st[0] == 0x34 && st[1] == 0x34 && st[2] == 0x34;
    }
    free(in);
    free(st);
    return ok;
}
"""


def program(runs: list[Case], blob: Path, host: bool) -> str:
    """The harness and a main() that runs every case on the operands of ``blob`` and prints
    ``NAME HEX`` lines of its results (stdout on the host, semihosting on QEMU)."""
    offsets = _blob(runs, blob)
    biggest = max(c.expected.nbytes for c in runs)
    calls = []
    for c, offs in zip(runs, offsets):
        ins = ", ".join(f"(const {_c_array_type(a)} *)(qlane_blob + {o})"
                        for a, o in zip(c.inputs, offs))
        calls.append(f"    h_{c.name}({ins}, ({_c_array_type(c.expected)} *)qlane_out, "
                     f"{len(c.expected)});\n    qlane_dump(\"{c.name}\", "
                     f"{c.expected.nbytes});")
    head = ("#include <stdio.h>\n#include <stdlib.h>\n" if host else
            "void qlane_semihost_write0(const char *s);\n")
    put = "fputs(s, stdout)" if host else "qlane_semihost_write0(s)"
    blob_path = str(blob).replace("\\", "\\\\").replace('"', '\\"')
    main = f"""
__asm__(".section .rodata\\n.balign 16\\n.globl qlane_blob\\nqlane_blob:\\n"
        ".incbin \\"{blob_path}\\"\\n.previous\\n");
extern const unsigned char qlane_blob[];
static unsigned char qlane_out[{biggest}];
static char qlane_hex[{2 * biggest + 2}];
static void qlane_put(const char *s) {{
    {put};
}}
static void qlane_dump(const char *name, size_t bytes) {{
    static const char digits[] = "0123456789abcdef";
    size_t k;
    for (k = 0; k < bytes; ++k) {{
        qlane_hex[2 * k] = digits[qlane_out[k] >> 4];
        qlane_hex[2 * k + 1] = digits[qlane_out[k] & 15u];
    }}
    qlane_hex[2 * bytes] = '\\0';
    qlane_put(name);
    qlane_put(" ");
    qlane_put(qlane_hex);
    qlane_put("\\n");
    memset(qlane_out, 0, sizeof qlane_out);
}}
{TAIL_CHECK if host else ""}
int main(void) {{
{chr(10).join(calls)}
    return {"qlane_tail_check() ? 42 : 3" if host else "42"};
}}
"""
    return head + harness(host)[1] + main


def parse_dump(text: str, runs: list[Case], where: str) -> None:
    got = dict(re.findall(r"^(v\w+) ([0-9a-f]*)$", text, re.M))
    assert set(got) == {c.name for c in runs}, where
    for c in runs:
        raw = np.frombuffer(bytes.fromhex(got[c.name]), c.expected.dtype.newbyteorder("<"))
        assert_equal(c, raw.reshape(c.expected.shape).astype(c.expected.dtype), where)


def _gcc() -> str:
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc is not installed")
    return gcc


def _sanitizers(gcc: str, root: Path) -> list[str]:
    probe = root / "probe.c"
    probe.write_text("int main(void) { return 0; }\n")
    for flags in (["-fsanitize=undefined,address"], ["-fsanitize=undefined"]):
        if subprocess.run([gcc, *flags, str(probe), "-o", str(root / "probe")],
                          capture_output=True).returncode == 0:
            return flags
    pytest.skip("gcc's UBSan runtime (libubsan) is not available")


@pytest.mark.hostc
def test_strict_and_sanitized_edge_grid(build_root: Path) -> None:
    """gcc -std=c99 -O2 -Wall -Wextra -pedantic -Werror builds the header and the harness, and
    the edge grids of every intrinsic run clean under UBSan and ASan with sim's values."""
    gcc = _gcc()
    sanitize = _sanitizers(gcc, build_root)
    runs = [case(n, "edge") for n in NAMES]
    src = build_root / "host.c"
    src.write_text(program(runs, build_root / "host.bin", host=True))
    exe = build_root / "host"
    res = subprocess.run([gcc, *STRICT, *sanitize, "-fno-sanitize-recover=all",
                          "-I", str(build_root / "inc"), str(src), "-o", str(exe)],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    res = subprocess.run([str(exe)], capture_output=True, text=True,
                         env={"ASAN_OPTIONS": "detect_leaks=0", "UBSAN_OPTIONS":
                              "print_stacktrace=1"})
    assert "runtime error" not in res.stderr and "ERROR:" not in res.stderr, res.stderr[:4000]
    assert res.returncode == 42, res.stderr[:4000]
    parse_dump(res.stdout, runs, "[sanitized edge]")


# --- the real arm_mve.h on QEMU's Cortex-M55 -----------------------------------------------------


@pytest.mark.isa
def test_native_arm_mve_on_qemu_m55_equals_sim(build_root: Path) -> None:
    """The same harness built against zig's (clang's) <arm_mve.h> for the Cortex-M55 and run
    on QEMU: every intrinsic exists with these names and arguments and computes what sim says,
    on an edge sample and random registers."""
    from qlane.codegen import qemu

    reason = qemu.available()
    if reason is not None:
        pytest.skip(reason)
    runs = []
    for name in NAMES:
        edge = edge_operands(name, False, QEMU_EDGE)
        rand = random_operands(name)
        args = tuple(np.concatenate([e, r[:QEMU_RANDOM]]) for e, r in zip(edge, rand))
        runs.append(Case(name, args, sim_values(name, args)))
    src = build_root / "m55.c"
    src.write_text(program(runs, build_root / "m55.bin", host=False))
    elf = qemu.build_m55([src], build_root / "m55.elf", include_dirs=[build_root / "inc"])
    res = qemu.run(elf, timeout_s=120, count=False)
    assert res.exit_code == 42, res.console[-2000:]
    parse_dump(res.console, runs, "[arm_mve.h on QEMU M55]")


# --- requantize_mve ------------------------------------------------------------------------------


def _lanes(*arrays: np.ndarray) -> list[np.ndarray]:
    """Flat values padded to whole int32x4 registers (repeating the first) and shaped (n, 4)."""
    n = len(arrays[0])
    extra = -n % 4
    return [np.concatenate([a, np.repeat(a[:1], extra)]).reshape(-1, 4) for a in arrays]


def double_ties() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact halves at either rounding of double rounding, and their neighbours."""
    xs, ms, ss = [], [], []
    for e in range(1, 32):  # the second rounding: SRDHM(x, 2^30) = x / 2 = k 2^e + 2^(e-1)
        for k in range(-3, 3):
            for d in (-1, 0, 1):
                x = k * (1 << (e + 1)) + (1 << e) + d
                if INT32_MIN <= x <= INT32_MAX:
                    xs.append(x)
                    ms.append(1 << 30)
                    ss.append(-e)
        xs.append(INT32_MIN)
        ms.append(1 << 30)
        ss.append(-e)
    for i in range(31):  # the first rounding: (x << left) * m = odd * 2^30
        for odd in (1, 3, 255, 4097):
            for left in (0, 1, 4):
                base = (odd << i) >> left
                if base << left != odd << i or not 0 < (odd << i) <= INT32_MAX:
                    continue
                for sx in (1, -1):
                    for sm in (1, -1):
                        for s in (left, -1, -7) if left == 0 else (left,):
                            xs.append(sx * base)
                            ms.append(sm * (1 << (30 - i)))
                            ss.append(s)
    return np.array(xs), np.array(ms), np.array(ss)


def single_ties() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x * m = odd * 2^(30 - shift): exact halves of single rounding, and their neighbours."""
    xs, ms, ss = [], [], []
    for s in range(-31, 31):
        k = 31 - s  # x * m / 2^k
        q = min(30, k - 1)
        p = k - 1 - q
        for odd in (1, 3, 5, 255, (1 << 20) + 1, INT32_MAX):
            for sx in (1, -1):
                for sm in (1, -1):
                    for d in (-1, 0, 1):
                        x = sx * odd * (1 << p) + d
                        if INT32_MIN <= x <= INT32_MAX:
                            xs.append(x)
                            ms.append(sm * (1 << q))
                            ss.append(s)
        xs.append(INT32_MIN)
        ms.append(1 << q if p == 0 else 1 << 30)
        ss.append(s)
    return np.array(xs), np.array(ms), np.array(ss)


def requant_inputs(rounding: str, kind: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x, multiplier, shift), flat: the edge grid and the ties, or random values."""
    top = 30 if rounding == "single" else 31
    if kind == "edge":
        grid = np.meshgrid(edge_values(), multiplier_edges(), np.arange(-31, top + 1))
        ties = single_ties() if rounding == "single" else double_ties()
        return tuple(np.concatenate([g.ravel(), t]) for g, t in zip(grid, ties))
    rng = np.random.default_rng(RNG_SEED + len(rounding))
    n = 200_000
    return (random_int32(rng, n), random_multipliers(rng, n),
            rng.integers(-31, top, n, endpoint=True))


@pytest.mark.fast
@pytest.mark.parametrize("kind", ["edge", "random"])
@pytest.mark.parametrize("rounding", ["double", "single", "litert"])
def test_requantize_mve_equals_reference(rounding: str, kind: str) -> None:
    x, m, s = requant_inputs(rounding, kind)
    want = fp.mul_by_quantized_multiplier(x, m, s, rounding)
    # per channel: every lane its own multiplier and shift (mixed signs of shift in a register)
    xr, mr, sr = _lanes(x, m, s)
    (wr,) = _lanes(want)
    got = requantize_mve(xr.astype(np.int32), mr, sr, rounding)
    assert got.dtype == np.int32
    bad = np.flatnonzero(got.ravel() != wr.ravel())
    assert not bad.size, [(int(xr.flat[i]), int(mr.flat[i]), int(sr.flat[i]), int(got.flat[i]),
                           int(wr.flat[i])) for i in bad[:5]]
    # every shift negative (single rounding's two-instruction path), per channel
    neg = s < 0
    xn, mn, sn = _lanes(x[neg], m[neg], s[neg])
    (wn,) = _lanes(want[neg])
    assert np.array_equal(requantize_mve(xn.astype(np.int32), mn, sn, rounding), wn)
    # per tensor: one multiplier (vqrdmulhq_n_s32 / vdupq_n_s32) and one shift
    (xt,) = _lanes(x[:4096])
    for mult in (INT32_MIN, -1, 0, 1 << 30, 1518500250, INT32_MAX):
        for shift in (-31, -13, -1, 0, 1, 7, 30):
            want_t = fp.mul_by_quantized_multiplier(xt, mult, shift, rounding)
            got_t = requantize_mve(xt.astype(np.int32), mult, shift, rounding)
            assert np.array_equal(got_t, want_t), (mult, shift)


@pytest.mark.fast
def test_requantize_mve_without_fixup_rounds_negative_ties_up() -> None:
    x, m, s = requant_inputs("double", "edge")
    xr, mr, sr = _lanes(x, m, s)
    want = fp.mul_by_quantized_multiplier_double_ties_up(xr, mr, sr)
    assert np.array_equal(requantize_mve(xr.astype(np.int32), mr, sr, fixup=False), want)
    assert not np.array_equal(requantize_mve(xr.astype(np.int32), mr, sr), want)


@pytest.mark.fast
def test_requantize_mve_checks_its_operands() -> None:
    acc = np.zeros((2, 4), np.int32)
    with pytest.raises(TypeError):
        requantize_mve(acc.astype(np.int64), 1 << 30, -1)
    with pytest.raises(ValueError):
        requantize_mve(acc, 1 << 30, 31, "single")
    with pytest.raises(ValueError):
        requantize_mve(acc, 1 << 31, 0)
    with pytest.raises(ValueError):
        requantize_mve(acc, 1 << 30, -32)
    with pytest.raises(ValueError):
        requantize_mve(acc, 1 << 30, 0, "bogus")
