"""The C fixed-point primitives (c, dsp, neon via SIMDe, mve via the portable qlane_mve.h) and
the portable ACLE header equal sim.fixedpoint / sim.simd bit for bit, compile warning-free and
run UBSan-clean."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from qlane.codegen import cprims
from qlane.sim import fixedpoint as fp
from qlane.sim import transcendental as tr
from qlane.sim.simd import INSTRUCTIONS, pack, unpack

INT32_MIN, INT32_MAX = fp.INT32_MIN, fp.INT32_MAX
ISAS = ("c", "dsp", "neon", "mve")  # the order seeds the random values
STRICT = ["-std=c99", "-O2", "-Wall", "-Wextra", "-pedantic", "-Werror"]
N_RANDOM = 100_000
CTYPES = {np.dtype(t): c for t, c in [(np.int32, "int32_t"), (np.uint32, "uint32_t"),
                                      (np.int16, "int16_t"), (np.int8, "int8_t"),
                                      (np.uint8, "uint8_t")]}

# --- harness: one C loop per tested function, shared by the cffi modules and the UBSan binary ---


@dataclass(frozen=True)
class Fn:
    """A harness loop: ``out[i] = expr`` over int32 inputs a0..a{n-1}, or a vector step."""

    expr: str
    n_in: int
    out: str = "int32_t"
    step: int = 1  # > 1: expr is a statement storing `step` results at out + i


def _v(k: int) -> str:
    return f"vld1q_s32(a{k} + i)"


SCALAR = {
    "srdhm": Fn("qlane_srdhm(a0[i], a1[i])", 2),
    "rdbpot": Fn("qlane_rdbpot(a0[i], (int)a1[i])", 2),
    "requant_double": Fn("qlane_requant_double(a0[i], a1[i], (int)a2[i])", 3),
    "requant_double_up": Fn("qlane_requant_double_up(a0[i], a1[i], (int)a2[i])", 3),
    "requant_single": Fn("qlane_requant_single(a0[i], a1[i], (int)a2[i])", 3),
    "saturate": Fn("qlane_saturate(a0[i], a1[i], a2[i])", 3),
    "sat_s8": Fn("qlane_sat_s8(a0[i])", 1, "int8_t"),
    "sat_u8": Fn("qlane_sat_u8(a0[i])", 1, "uint8_t"),
    "sat_s16": Fn("qlane_sat_s16(a0[i])", 1, "int16_t"),
    "sat_mul_pot": Fn("qlane_sat_mul_pot(a0[i], (int)a1[i])", 2),
    "one_over_one_plus_x": Fn("qlane_one_over_one_plus_x(a0[i])", 1),
    "srdhm_s16": Fn("qlane_srdhm_s16(a0[i], a1[i])", 2),
    "sdhm_s16": Fn("qlane_sdhm_s16(a0[i], a1[i])", 2),
    "sat_shl_s16": Fn("qlane_sat_shl_s16(a0[i], (int)a1[i])", 2),
    "rdbpot_s16": Fn("qlane_rdbpot_s16(a0[i], (int)a1[i])", 2),
}
VECTOR = {
    "srdhm_v": Fn(f"vst1q_s32(out + i, qlane_srdhm_s32x4({_v(0)}, {_v(1)}));", 2, step=4),
    "rdbpot_v": Fn(f"vst1q_s32(out + i, qlane_rdbpot_s32x4({_v(0)}, {_v(1)}));", 2, step=4),
    "requant_double_v": Fn(
        f"vst1q_s32(out + i, qlane_requant_double_s32x4({_v(0)}, {_v(1)}, {_v(2)}, {_v(3)}));",
        4, step=4),
    "requant_double_up_v": Fn(
        f"vst1q_s32(out + i, qlane_requant_double_up_s32x4({_v(0)}, {_v(1)}, {_v(2)}, {_v(3)}));",
        4, step=4),
    "requant_single_v": Fn(
        f"vst1q_s32(out + i, qlane_requant_single_s32x4({_v(0)}, {_v(1)}, {_v(2)}));", 3, step=4),
    "requant_single_neg_v": Fn(
        f"vst1q_s32(out + i, qlane_requant_single_neg_s32x4({_v(0)}, {_v(1)}, {_v(2)}));",
        3, step=4),
    "saturate_v": Fn(f"vst1q_s32(out + i, qlane_saturate_s32x4({_v(0)}, {_v(1)}, {_v(2)}));",
                     3, step=4),
    "narrow_s16": Fn("vst1q_s16(out + i, qlane_narrow_s16x8(vld1q_s32(a0 + i), "
                     "vld1q_s32(a0 + i + 4)));", 1, "int16_t", 8),
    "narrow_s8": Fn("vst1_s8(out + i, qlane_narrow_s8x8(vld1q_s32(a0 + i), "
                    "vld1q_s32(a0 + i + 4)));", 1, "int8_t", 8),
    **{  # the intrinsics qlane_neon.h replaces on SIMDe hosts, q and d forms
        f"{op}{q}": Fn(f"vst1{q}_s32(out + i, {op}{q}_s32(vld1{q}_s32(a0 + i), "
                       f"vld1{q}_s32(a1 + i)));", 2, step=4 if q else 2)
        for op in ("vqdmulh", "vqrdmulh", "vshl", "vrshl") for q in ("q", "")
    },
    "narrow_u8": Fn("vst1_u8(out + i, qlane_narrow_u8x8(vld1q_s32(a0 + i), "
                    "vld1q_s32(a0 + i + 4)));", 1, "uint8_t", 8),
}
_ROR = "qlane_ror((uint32_t)a{0}[i], (uint32_t)a{1}[i])"
ACLE = {
    "smlad": Fn("__smlad(a0[i], a1[i], a2[i])", 3),
    "smladx": Fn("__smladx(a0[i], a1[i], a2[i])", 3),
    "smlabb": Fn("__smlabb(a0[i], a1[i], a2[i])", 3),
    "smlabt": Fn("__smlabt(a0[i], a1[i], a2[i])", 3),
    "smlatb": Fn("__smlatb(a0[i], a1[i], a2[i])", 3),
    "smlatt": Fn("__smlatt(a0[i], a1[i], a2[i])", 3),
    "smulbb": Fn("__smulbb(a0[i], a1[i])", 2),
    "sxtb16": Fn(f"__sxtb16(qlane_acle_s32({_ROR.format(0, 1)}))", 2),
    "uxtb16": Fn(f"__uxtb16({_ROR.format(0, 1)})", 2, "uint32_t"),
    "sxtab16": Fn(f"__sxtab16(a0[i], qlane_acle_s32({_ROR.format(1, 2)}))", 3),
    "uxtab16": Fn(f"__uxtab16((uint32_t)a0[i], {_ROR.format(1, 2)})", 3, "uint32_t"),
    "qadd8": Fn("__qadd8(a0[i], a1[i])", 2),
    "qsub8": Fn("__qsub8(a0[i], a1[i])", 2),
    "qadd16": Fn("__qadd16(a0[i], a1[i])", 2),
    "ssat": Fn("h_ssat(a0[i], a1[i])", 2),
    "usat": Fn("h_usat(a0[i], a1[i])", 2, "uint32_t"),
    "smmulr": Fn("qlane_smmulr(a0[i], a1[i])", 2),
    "smmlar": Fn("qlane_smmlar(a0[i], a1[i], a2[i])", 3),
    "pkhbt": Fn("qlane_pkhbt((uint32_t)a0[i], (uint32_t)a1[i])", 2, "uint32_t"),
    "pack_lo16": Fn("qlane_pack_lo16((uint32_t)a0[i], (uint32_t)a1[i])", 2, "uint32_t"),
    "pack_hi16": Fn("qlane_pack_hi16((uint32_t)a0[i], (uint32_t)a1[i])", 2, "uint32_t"),
    "sxtb16_ror8": Fn("qlane_sxtb16_ror8((uint32_t)a0[i])", 1),
    "uxtb16_ror8": Fn("qlane_uxtb16_ror8((uint32_t)a0[i])", 1, "uint32_t"),
    "sxtab16_ror8": Fn("qlane_sxtab16_ror8(a0[i], (uint32_t)a1[i])", 2),
    "uxtab16_ror8": Fn("qlane_uxtab16_ror8((uint32_t)a0[i], (uint32_t)a1[i])", 2, "uint32_t"),
    "ror": Fn(_ROR.format(0, 1), 2, "uint32_t"),
    "acle_ror": Fn("__ror((uint32_t)a0[i], (uint32_t)a1[i])", 2, "uint32_t"),
}
_SAT_HELPERS = "\n".join([
    "static int32_t h_ssat(int32_t x, int32_t bits) {\n    switch (bits) {",
    *[f"    case {b}: return __ssat(x, {b});" for b in range(1, 33)],
    "    default: return 0;\n    }\n}",
    "static uint32_t h_usat(int32_t x, int32_t bits) {\n    switch (bits) {",
    *[f"    case {b}: return __usat(x, {b});" for b in range(0, 32)],
    "    default: return 0;\n    }\n}",
])


def _signature(prefix: str, name: str, fn: Fn) -> str:
    ins = ", ".join(f"const int32_t *a{k}" for k in range(fn.n_in))
    return f"void {prefix}{name}({ins}, {fn.out} *out, size_t n)"


def _harness(prefix: str, fns: dict[str, Fn]) -> tuple[str, str]:
    """(cdef, C source) of the loops of ``fns``, each named prefix + key."""
    cdef, src = [], []
    for name, fn in fns.items():
        sig = _signature(prefix, name, fn)
        cdef.append(f"{sig};")
        body = (f"out[i] = {fn.expr};" if fn.step == 1 else fn.expr)
        cond = "i < n" if fn.step == 1 else f"i + {fn.step} <= n"
        src.append(f"{sig};\n{sig} {{\n    size_t i;\n    for (i = 0; {cond}; i += {fn.step}) "
                   f"{{\n        {body}\n    }}\n}}\n")
    return "\n".join(cdef), "\n".join(src)


MVE_VECTOR = ("srdhm_v", "rdbpot_v", "requant_double_v", "requant_double_up_v",
              "requant_single_v", "requant_single_neg_v", "saturate_v")
"""The VECTOR loops of qlane_fixedpoint.h's MVE functions (the others are NEON's narrowing and
the intrinsics qlane_neon.h replaces). They load with vld1q_s32, which qlane_mve.h has too, and
store with its VSTRW.32 spelling vstrwq_s32 (qlane_mve.h has no vst1q_s32)."""


def _mve_fn(fn: Fn) -> Fn:
    return Fn(fn.expr.replace("vst1q_s32(", "vstrwq_s32("), fn.n_in, fn.out, fn.step)


def _fns(isa: str) -> dict[str, Fn]:
    if isa == "neon":
        return {**SCALAR, **VECTOR}
    if isa == "mve":
        return {**SCALAR, **{k: _mve_fn(VECTOR[k]) for k in MVE_VECTOR}}
    return dict(SCALAR)


def _tu(isa: str, include: str) -> tuple[str, str]:
    """(cdef, translation unit) of the harness for one ISA ("acle": the ACLE header)."""
    if isa == "acle":
        cdef, body = _harness("acle_", ACLE)
        return cdef, f'#include <stddef.h>\n#include "{include}qlane_acle.h"\n\n' \
            f"{_SAT_HELPERS}\n\n{body}"
    cdef, body = _harness(f"{isa}_", _fns(isa))
    return cdef, f'#include <stddef.h>\n#include "{include}qlane_fixedpoint.h"\n\n{body}'


# --- value grids ---------------------------------------------------------------------------------

RNG_SEED = 20240611


def _i32(values) -> np.ndarray:
    return np.asarray(values, np.int64).astype(np.int32)


def edge_values() -> np.ndarray:
    """int32 values at every boundary the primitives care about."""
    v = {INT32_MIN, INT32_MIN + 1, INT32_MAX - 1, INT32_MAX, 0x55555555, -0x55555555,
         12345678, -12345678}
    for k in (0, 1, 2, 7, 8, 15, 16, 23, 29, 30):
        for d in (-1, 0, 1):
            v |= {(1 << k) + d, -(1 << k) + d}
    return np.array(sorted(v), np.int64)


def multiplier_edges() -> np.ndarray:
    """Q31 multipliers: the int32 extremes, 0, +-1, 2^30 (0.5) and typical quantized ones."""
    return np.array([INT32_MIN, INT32_MIN + 1, -(1 << 30), -1, 0, 1, 3, 1 << 30, (1 << 30) + 1,
                     1518500250, 1431655765, 1992864825, INT32_MAX - 1, INT32_MAX], np.int64)


def srdhm_grid() -> tuple[np.ndarray, np.ndarray]:
    """All pairs of edges and signed powers of two, plus exact ties (a * b = odd * 2^30)."""
    pows = np.array([s * (1 << k) for k in range(31) for s in (1, -1)] + [INT32_MIN], np.int64)
    vals = np.unique(np.concatenate([edge_values(), pows]))
    a, b = (x.ravel() for x in np.meshgrid(vals, vals))
    ta, tb = [], []
    for i in range(31):
        for odd in (1, 3, 5, 7, 255, 4097):
            base = odd << i
            if base <= INT32_MAX:
                for sa in (1, -1):
                    for sb in (1, -1):
                        ta.append(sa * base)
                        tb.append(sb * (1 << (30 - i)))
    return np.concatenate([a, ta]), np.concatenate([b, tb])


def rdbpot_grid() -> tuple[np.ndarray, np.ndarray]:
    """Edges and exact halves (k * 2^e +- 2^(e-1), +-1) for every exponent 0..31."""
    xs, es = [], []
    for e in range(32):
        vals = set(edge_values().tolist())
        if e > 0:
            for k in range(-4, 5):
                for d in (-1, 0, 1):
                    vals |= {k * (1 << e) + (1 << (e - 1)) + d, k * (1 << e) - (1 << (e - 1)) + d}
        vals = [v for v in vals if INT32_MIN <= v <= INT32_MAX]
        xs += vals
        es += [e] * len(vals)
    return np.array(xs, np.int64), np.array(es, np.int64)


def requant_grid(max_shift: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every edge accumulator x every edge multiplier x every shift -31..max_shift."""
    x, m, s = np.meshgrid(edge_values(), multiplier_edges(), np.arange(-31, max_shift + 1))
    return x.ravel(), m.ravel(), s.ravel()


def random_int32(rng: np.random.Generator, n: int) -> np.ndarray:
    """Half uniform over int32, half log-uniform magnitudes with random signs."""
    uniform = rng.integers(INT32_MIN, INT32_MAX, n // 2, endpoint=True)
    mags = np.floor(2.0 ** rng.uniform(0, 31, n - n // 2)).astype(np.int64)
    logu = np.where(rng.random(n - n // 2) < 0.5, -mags, np.minimum(mags, INT32_MAX))
    return rng.permutation(np.concatenate([uniform, logu]))


def random_multipliers(rng: np.random.Generator, n: int) -> np.ndarray:
    """Half uniform over int32, half in [2^30, 2^31) like QuantizeMultiplier's outputs."""
    return rng.permutation(np.concatenate([
        rng.integers(INT32_MIN, INT32_MAX, n // 2, endpoint=True),
        rng.integers(1 << 30, INT32_MAX, n - n // 2, endpoint=True)]))


# --- cases: inputs and the numpy definition's answer ------------------------------------------


@dataclass
class Case:
    """One harness call: int32 inputs, output dtype, expected values (from sim)."""

    fn: str
    inputs: tuple[np.ndarray, ...]
    out: np.dtype
    expected: np.ndarray


def _pad(arrays: list[np.ndarray], multiple: int = 8) -> list[np.ndarray]:
    """Repeat the first element so that the length is a multiple of the vector step."""
    n = len(arrays[0])
    extra = (-n) % multiple
    return [np.concatenate([a, np.repeat(a[:1], extra)]) for a in arrays]


def primitive_cases(isa: str, kind: str) -> list[Case]:
    """Every scalar (and, for neon and mve, vector) function on the edge grid or on random
    values."""
    rng = np.random.default_rng(RNG_SEED + ISAS.index(isa) + (0 if kind == "edge" else 10))
    if kind == "edge":
        a, b = srdhm_grid()
        x, e = rdbpot_grid()
        xd, md, sd = requant_grid(31)
        xs, ms, ss = requant_grid(30)
        sat = np.concatenate([edge_values(), np.arange(-70000, 70000, 37)])
    else:
        n = N_RANDOM
        a, b = random_int32(rng, n), random_int32(rng, n)
        x, e = random_int32(rng, n), rng.integers(0, 31, n, endpoint=True)
        xd, md, sd = random_int32(rng, n), random_multipliers(rng, n), rng.integers(-31, 31, n,
                                                                                     endpoint=True)
        xs, ms, ss = random_int32(rng, n), random_multipliers(rng, n), rng.integers(-31, 30, n,
                                                                                     endpoint=True)
        sat = random_int32(rng, n)
    a, b = _pad([a, b])
    x, e = _pad([x, e])
    xd, md, sd = _pad([xd, md, sd])
    xs, ms, ss = _pad([xs, ms, ss])
    (sat,) = _pad([sat])
    lo = np.minimum(sat[::-1], np.roll(sat, 1))
    hi = np.maximum(sat[::-1], np.roll(sat, 1))
    i32 = np.dtype(np.int32)
    cases = [
        Case("srdhm", (a, b), i32, fp.saturating_rounding_doubling_high_mul(a, b)),
        Case("rdbpot", (x, e), i32, fp.rounding_divide_by_pot(x, e)),
        Case("requant_double", (xd, md, sd), i32,
             fp.mul_by_quantized_multiplier_double(xd, md, sd)),
        Case("requant_single", (xs, ms, ss), i32,
             fp.mul_by_quantized_multiplier_single(xs, ms, ss)),
        Case("saturate", (sat, lo, hi), i32, fp.saturate(sat, lo, hi)),
        Case("sat_s8", (sat,), np.dtype(np.int8), fp.saturating_cast(sat, np.int8)),
        Case("sat_u8", (sat,), np.dtype(np.uint8), fp.saturating_cast(sat, np.uint8)),
        Case("sat_s16", (sat,), np.dtype(np.int16), fp.saturating_cast(sat, np.int16)),
        Case("requant_double_up", (xd, md, sd), i32,
             fp.mul_by_quantized_multiplier_double_ties_up(xd, md, sd)),
    ]
    cases += helper_cases(rng, kind)
    if isa in ("neon", "mve"):
        neg = ss < 0
        xn, mn, sn = _pad([xs[neg], ms[neg], ss[neg]])
        vector = [
            Case("srdhm_v", (a, b), i32, cases[0].expected),
            Case("rdbpot_v", (x, -e), i32, cases[1].expected),
            Case("requant_double_v", (xd, md, np.maximum(sd, 0), np.minimum(sd, 0)), i32,
                 cases[2].expected),
            Case("requant_single_v", (xs, ms, ss), i32, cases[3].expected),
            Case("requant_double_up_v", (xd, md, np.maximum(sd, 0), np.minimum(sd, 0)), i32,
                 cases[8].expected),
            Case("requant_single_neg_v", (xn, mn, sn), i32,
                 fp.mul_by_quantized_multiplier_single(xn, mn, sn)),
            Case("saturate_v", (sat, lo, hi), i32, cases[4].expected),
            Case("narrow_s16", (sat,), np.dtype(np.int16), cases[7].expected),
            Case("narrow_s8", (sat,), np.dtype(np.int8), cases[5].expected),
            Case("narrow_u8", (sat,), np.dtype(np.uint8), cases[6].expected),
        ]
        cases += [c for c in vector if c.fn in _fns(isa)]
    if isa == "neon":
        cases += intrinsic_cases(a, b, rng, kind)
    return cases


def _by_value(fn, x: np.ndarray, k: np.ndarray) -> np.ndarray:
    """``fn(x, k)`` for a primitive whose second argument is one integer."""
    out = np.zeros(len(x), np.int64)
    for v in np.unique(k):
        sel = k == v
        out[sel] = fn(x[sel], int(v))
    return out


def helper_cases(rng: np.random.Generator, kind: str) -> list[Case]:
    """SOFTMAX's gemmlowp helpers and HARD_SWISH's int16 ones, against sim.transcendental."""
    i16 = np.array([-32768, -32767, -16384, -1, 0, 1, 2, 3, 127, 128, 16383, 16384, 32766,
                    32767], np.int64)
    if kind == "edge":
        px, pe = (v.ravel() for v in np.meshgrid(edge_values(), np.arange(-31, 32)))
        recip = np.unique(np.concatenate([edge_values(), np.arange(0, 1 << 20, 997)]))
        ha, hb = (v.ravel() for v in np.meshgrid(np.arange(-32768, 32768, 61), i16))
        hx, hs = (v.ravel() for v in np.meshgrid(np.arange(-32768, 32768, 7), np.arange(17)))
        dx, de = (v.ravel() for v in np.meshgrid(np.arange(-32768, 32768, 5), np.arange(32)))
    else:
        n = N_RANDOM
        px, pe = random_int32(rng, n), rng.integers(-31, 31, n, endpoint=True)
        recip = rng.integers(0, INT32_MAX, n, endpoint=True)
        ha, hb = rng.integers(-32768, 32767, (2, n), endpoint=True)
        hx, hs = rng.integers(-32768, 32767, n, endpoint=True), rng.integers(0, 16, n,
                                                                             endpoint=True)
        dx, de = rng.integers(-32768, 32767, n, endpoint=True), rng.integers(0, 31, n,
                                                                             endpoint=True)
    recip = recip[recip >= 0]
    px, pe = _pad([px, pe])
    (recip,) = _pad([recip])
    ha, hb = _pad([ha, hb])
    hx, hs = _pad([hx, hs])
    dx, de = _pad([dx, de])
    i32 = np.dtype(np.int32)
    one_over = tr.one_over_one_plus_x_for_x_in_0_1(tr.FixedPoint(recip, 0)).raw
    return [
        Case("sat_mul_pot", (px, pe), i32,
             _by_value(tr.saturating_rounding_multiply_by_pot, px, pe)),
        Case("one_over_one_plus_x", (recip,), i32, one_over),
        Case("srdhm_s16", (ha, hb), i32, tr.saturating_rounding_doubling_high_mul_int16(ha, hb)),
        Case("sdhm_s16", (ha, hb), i32, tr.saturating_doubling_high_mul_int16(ha, hb)),
        Case("sat_shl_s16", (hx, hs), i32, _by_value(tr.saturating_left_shift_int16, hx, hs)),
        Case("rdbpot_s16", (dx, de), i32, _by_value(tr.rounding_divide_by_pot_int16, dx, de)),
    ]


def intrinsic_cases(a: np.ndarray, b: np.ndarray, rng: np.random.Generator,
                    kind: str) -> list[Case]:
    """The NEON intrinsics qlane_neon.h reimplements over SIMDe, against sim.simd."""
    if kind == "edge":
        sx, ss = (v.ravel() for v in np.meshgrid(edge_values(), np.arange(-130, 131)))
    else:
        sx, ss = random_int32(rng, N_RANDOM), rng.integers(-256, 256, N_RANDOM)
        ss = np.where(rng.random(N_RANDOM) < 0.2, random_int32(rng, N_RANDOM), ss)
    sx, ss = _pad([sx, ss])
    cases = []
    for op, (x, y) in [("vqdmulh", (a, b)), ("vqrdmulh", (a, b)), ("vshl", (sx, ss)),
                       ("vrshl", (sx, ss))]:
        want = INSTRUCTIONS[f"{op}q_s32"](_i32(x).reshape(-1, 4), _i32(y).reshape(-1, 4)).ravel()
        cases += [Case(f"{op}{q}", (x, y), np.dtype(np.int32), want) for q in ("q", "")]
    return cases


def edge_words() -> np.ndarray:
    """Packed words made of boundary bytes and boundary halfwords."""
    halves = [0x0000, 0x0001, 0x7FFF, 0x8000, 0x8001, 0xFFFF, 0x00FF, 0xFF80, 0x4000, 0xC000]
    bytes_ = [0x00, 0x01, 0x7F, 0x80, 0x81, 0xFF]
    words = {h0 | (h1 << 16) for h0 in halves for h1 in halves}
    words |= {b0 | (b1 << 8) | (b2 << 16) | (b3 << 24)
              for b0 in bytes_ for b1 in bytes_[::2] for b2 in bytes_ for b3 in bytes_[::2]}
    return np.array(sorted(words), np.uint32)


def _ror_ref(x: np.ndarray, n: np.ndarray) -> np.ndarray:
    x, n = x.astype(np.uint64), n.astype(np.uint64) & 31
    return (((x >> n) | (x << ((32 - n) & 31))) & 0xFFFFFFFF).astype(np.uint32)


def _per_imm(name: str, x: np.ndarray, imm: np.ndarray, *pre: np.ndarray) -> np.ndarray:
    """sim's instruction applied group by group of one immediate value."""
    inst = INSTRUCTIONS[name]
    out = np.zeros(len(x), inst.output.storage)
    for v in np.unique(imm):
        sel = imm == v
        out[sel] = inst(*(p[sel] for p in pre), x[sel], int(v))
    return out


def acle_cases(kind: str) -> list[Case]:
    """Every ACLE intrinsic of qlane_acle.h, against sim.simd's INSTRUCTIONS."""
    rng = np.random.default_rng(RNG_SEED + 100 + (kind == "random"))
    if kind == "edge":
        w = edge_words()
        x, y = (v.ravel() for v in np.meshgrid(w, w))
        accs = np.array([0, 1, -1, INT32_MIN, INT32_MAX, INT32_MIN + 1, INT32_MAX - 1, 1 << 30])
        acc = _i32(np.resize(accs, len(x)))
        scal = np.concatenate([edge_values(), rng.integers(INT32_MIN, INT32_MAX, 20000)])
    else:
        x = rng.integers(0, 1 << 32, N_RANDOM, dtype=np.uint64).astype(np.uint32)
        y = rng.integers(0, 1 << 32, N_RANDOM, dtype=np.uint64).astype(np.uint32)
        acc = _i32(random_int32(rng, N_RANDOM))
        scal = random_int32(rng, N_RANDOM)
    n = len(x)
    scal = _i32(np.resize(scal, n))
    scal2 = _i32(np.resize(rng.permutation(scal.astype(np.int64)), n))
    rot = _i32(np.resize([0, 8, 16, 24], n))
    rot_any = _i32(rng.integers(0, 32, n))
    ssat_bits = _i32(rng.integers(1, 32, n, endpoint=True))
    usat_bits = _i32(rng.integers(0, 31, n, endpoint=True))
    xi, yi = x.view(np.int32), y.view(np.int32)
    i32, u32 = np.dtype(np.int32), np.dtype(np.uint32)
    op = INSTRUCTIONS
    lanes_x, lanes_y = unpack(x, np.int8).astype(np.int16), unpack(y, np.int8).astype(np.int16)
    qsub8 = pack(np.clip(lanes_x - lanes_y, -128, 127).astype(np.int8), np.int8)
    return [
        Case("smlad", (xi, yi, acc), i32, op["__smlad"](x, y, acc)),
        Case("smladx", (xi, yi, acc), i32, op["__smladx"](x, y, acc)),
        Case("smlabb", (xi, yi, acc), i32, op["__smlabb"](x, y, acc)),
        Case("smlabt", (xi, yi, acc), i32, op["__smlabt"](x, y, acc)),
        Case("smlatb", (xi, yi, acc), i32, op["__smlatb"](x, y, acc)),
        Case("smlatt", (xi, yi, acc), i32, op["__smlatt"](x, y, acc)),
        Case("smulbb", (xi, yi), i32, op["__smulbb"](x, y)),
        Case("sxtb16", (xi, rot), i32, _per_imm("__sxtb16", x, rot).view(np.int32)),
        Case("uxtb16", (xi, rot), u32, _per_imm("__uxtb16", x, rot)),
        Case("sxtab16", (xi, yi, rot), i32, _per_imm("__sxtab16", y, rot, x).view(np.int32)),
        Case("uxtab16", (xi, yi, rot), u32, _per_imm("__uxtab16", y, rot, x)),
        Case("qadd8", (xi, yi), i32, op["__qadd8"](x, y).view(np.int32)),
        Case("qsub8", (xi, yi), i32, qsub8.view(np.int32)),
        Case("qadd16", (xi, yi), i32, op["__qadd16"](x, y).view(np.int32)),
        Case("ssat", (scal, ssat_bits), i32, _per_imm("__ssat", scal, ssat_bits)),
        Case("usat", (scal, usat_bits), u32, _per_imm("__usat", scal, usat_bits)),
        Case("smmulr", (scal, scal2), i32, op["__smmulr"](scal, scal2)),
        Case("smmlar", (scal, scal2, acc), i32, op["__smmlar"](scal, scal2, acc)),
        Case("pkhbt", (xi, yi), u32, op["__pkhbt"](x, y)),
        Case("pack_lo16", (xi, yi), u32, op["__pack_lo16"](x, y)),
        Case("pack_hi16", (xi, yi), u32, op["__pack_hi16"](x, y)),
        Case("sxtb16_ror8", (xi,), i32, _per_imm("__sxtb16", x, np.full(n, 8)).view(np.int32)),
        Case("uxtb16_ror8", (xi,), u32, _per_imm("__uxtb16", x, np.full(n, 8))),
        Case("sxtab16_ror8", (xi, yi), i32,
             _per_imm("__sxtab16", y, np.full(n, 8), x).view(np.int32)),
        Case("uxtab16_ror8", (xi, yi), u32, _per_imm("__uxtab16", y, np.full(n, 8), x)),
        Case("ror", (xi, rot_any), u32, _ror_ref(x, rot_any)),
        Case("acle_ror", (xi, rot_any), u32, _ror_ref(x, rot_any)),
    ]


def _assert_case(case: Case, got: np.ndarray, where: str) -> None:
    expected = np.asarray(case.expected).astype(case.out)
    bad = np.flatnonzero(got != expected)
    if bad.size:
        i = bad[0]
        ins = ", ".join(str(int(a[i])) for a in case.inputs)
        pytest.fail(f"{where} {case.fn}({ins}) = {int(got[i])}, sim says {int(expected[i])} "
                    f"({bad.size} of {got.size} differ)")


# --- builds --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def build_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cprims")
    for isa in ISAS:
        cprims.write_header_files(isa, root / "inc" / isa)
    return root


def _module(root: Path, isa: str):
    """The cffi module of one ISA's harness ("acle": the ACLE header, portable on this host)."""
    cdef, src = _tu(isa, "")
    inc_isa = "dsp" if isa == "acle" else isa
    incs = [root / "inc" / inc_isa, *cprims.host_include_dirs(inc_isa)]
    return cprims.build_cffi_module(f"cprims_{isa}", cdef, src, incs, root / "cffi")


def _run(ffi, lib, prefix: str, case: Case) -> np.ndarray:
    ins = [np.ascontiguousarray(a, dtype=np.int64).astype(np.int32) for a in case.inputs]
    out = np.zeros(len(ins[0]), case.out)
    bufs = [ffi.from_buffer("int32_t[]", a) for a in ins]
    dst = ffi.from_buffer(f"{CTYPES[case.out]}[]", out, require_writable=True)
    getattr(lib, f"{prefix}{case.fn}")(*bufs, dst, len(out))
    return out


@pytest.mark.parametrize("kind", ["edge", "random"])
@pytest.mark.parametrize("isa", ISAS)
def test_primitives_equal_sim(build_root: Path, isa: str, kind: str) -> None:
    ffi, lib = _module(build_root, isa)
    cases = primitive_cases(isa, kind)
    assert {c.fn for c in cases} == set(_fns(isa))
    for case in cases:
        _assert_case(case, _run(ffi, lib, f"{isa}_", case), f"[{isa}/{kind}]")


@pytest.mark.parametrize("kind", ["edge", "random"])
def test_acle_portable_equals_sim(build_root: Path, kind: str) -> None:
    ffi, lib = _module(build_root, "acle")
    assert lib is not None
    cases = acle_cases(kind)
    assert {c.fn for c in cases} == set(ACLE)
    for case in cases:
        _assert_case(case, _run(ffi, lib, "acle_", case), f"[acle/{kind}]")


def test_known_values(build_root: Path) -> None:
    """A few answers by hand: ties, the saturation corner, the fix-up, the wrap."""
    ffi, lib = _module(build_root, "c")
    cases = [
        ("srdhm", (1 << 15, 1 << 15), 1),  # +0.5 rounds up
        ("srdhm", (-(1 << 15), 1 << 15), 0),  # -0.5 rounds toward +infinity
        ("srdhm", (INT32_MIN, INT32_MIN), INT32_MAX),
        ("rdbpot", (-3, 1), -2),  # -1.5 rounds away from zero
        ("rdbpot", (3, 1), 2),
        ("rdbpot", (INT32_MIN, 31), -1),
        ("requant_double", (1 << 29, INT32_MAX, 2), INT32_MIN + 1),  # x << 2 wraps to INT32_MIN
        ("requant_single", (INT32_MIN, INT32_MIN, 30), INT32_MAX),  # saturates
    ]
    for fn, args, want in cases:
        case = Case(fn, tuple(np.array([v]) for v in args), np.dtype(np.int32), np.array([want]))
        _assert_case(case, _run(ffi, lib, "c_", case), "[known]")


# --- the one table --------------------------------------------------------------------------------


def test_every_primitive_has_a_c_spelling_per_isa() -> None:
    assert set(ISAS) == set(cprims.ISAS), "a registered ISA without a harness here"
    for name in fp.PRIMITIVES:
        for isa in ISAS:
            assert cprims.spellings(name, isa), f"{name} has no scalar C spelling on {isa}"
        for isa in cprims.VECTOR_ISAS if fp.PRIMITIVES[name].vector else ():
            assert cprims.spellings(name, isa, vector=True), f"{name}: no vector spelling on {isa}"
    for f in cprims.C_FUNCTIONS:
        assert f.primitive in fp.PRIMITIVES, f"{f.name} spells unknown primitive {f.primitive}"
    scalar = {f.name for f in cprims.functions_for("c")}
    for isa in ISAS:  # every ISA offers the whole scalar API of the generic one
        assert scalar <= {f.name for f in cprims.functions_for(isa)}


@pytest.mark.parametrize("isa", ISAS)
def test_harness_calls_every_function(isa: str) -> None:
    """The harness of an ISA calls each function qlane_fixedpoint.h defines there."""
    called = {name for fn in _fns(isa).values() for name in re.findall(r"\b(qlane_\w+)\(",
                                                                         fn.expr)}
    defined = {f.name for f in cprims.functions_for(isa)}
    assert defined - called == set()
    assert called - defined == set()


@pytest.mark.parametrize("isa", ISAS)
def test_header_text(isa: str) -> None:
    files = cprims.header_files(isa)
    expected = {"c": {"qlane_fixedpoint.h"}, "dsp": {"qlane_fixedpoint.h", "qlane_acle.h"},
                "neon": {"qlane_fixedpoint.h", "qlane_neon.h"},
                "mve": {"qlane_fixedpoint.h", "qlane_acle.h", "qlane_mve.h"}}[isa]
    assert set(files) == expected
    text = files["qlane_fixedpoint.h"]
    assert text.splitlines()[0] == (
        "/* generated by qlane from template qlane_fixedpoint.h.j2 — do not edit */")
    lines = text.splitlines()
    for f in cprims.functions_for(isa):
        at = lines.index(f"static inline {f.signature} {{")
        comment = lines[at - 1]
        prim = fp.PRIMITIVES[f.primitive]
        assert comment.startswith(f"/* {f.name}: ") and comment.endswith(" */")
        assert prim.meaning.replace("*/", "* /")[:60] in comment
        assert prim.instruction[:40] in comment
    names = re.findall(r"static inline \w+ (qlane_\w+)\(", text)
    assert names == ["qlane_wrap_s32"] + [f.name for f in cprims.functions_for(isa)]
    assert ("__ssat(x, 8)" in text) == (isa in ("dsp", "mve"))  # mve: the dsp fallback
    assert ("return vqrdmulhq_s32(a, b);" in text) == (isa in ("neon", "mve"))
    if isa == "mve":  # only intrinsics qlane_mve.h defines (portably), no 64-bit lanes
        used = set(re.findall(r"\b(v[a-z0-9]+q\w*)\(", text))
        mve = files["qlane_mve.h"]
        defined = set(re.findall(r"^static inline [\w ]+? \**(v\w+)\(", mve, re.M))
        assert used and used <= defined, used - defined
        assert "int64x2_t" not in text and "vqmovn" not in text


def test_unknown_isa() -> None:
    with pytest.raises(ValueError, match="unknown ISA"):
        cprims.render_fixedpoint_header("sve")


def test_neon_header_switches_on_arm_macros() -> None:
    text = cprims.header_files("neon")["qlane_neon.h"]
    assert "#if defined(__ARM_NEON) || defined(__aarch64__)" in text
    assert "#include <arm_neon.h>" in text and "#include <simde/arm/neon.h>" in text
    acle = cprims.header_files("dsp")["qlane_acle.h"]
    assert "#include <arm_acle.h>" in acle and "__ARM_FEATURE_DSP" in acle
    mve = cprims.header_files("mve")["qlane_mve.h"]
    assert "#include <arm_mve.h>" in mve and "__ARM_FEATURE_MVE" in mve


# --- SIMDe and the cffi helper ----------------------------------------------------------------


def test_simde_include_dir(monkeypatch) -> None:
    inc = Path(cprims.simde_include_dir())
    assert inc.is_absolute() and (inc / "simde" / "arm" / "neon.h").is_file()
    import importlib.metadata

    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.delenv("QLANE_SIMDE_INCLUDE", raising=False)
    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    with pytest.raises(RuntimeError, match="cmeel-simde"):
        cprims.simde_include_dir()


def test_build_cffi_module_caches_by_content(tmp_path: Path) -> None:
    inc = tmp_path / "inc"
    inc.mkdir()
    (inc / "k.h").write_text("#define K 7\n")
    cdef = "int k(void);"
    src = '#include "k.h"\nint k(void) { return K; }\n'
    ffi, lib = cprims.build_cffi_module("tiny", cdef, src, [inc], tmp_path / "b")
    assert lib.k() == 7
    built = sorted(p.name for p in (tmp_path / "b").iterdir())
    t0 = time.perf_counter()
    ffi2, lib2 = cprims.build_cffi_module("tiny", cdef, src, [inc], tmp_path / "b")
    assert lib2 is lib and time.perf_counter() - t0 < 0.5
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == built
    (inc / "k.h").write_text("#define K 8\n")  # a changed header is a new build
    _, lib3 = cprims.build_cffi_module("tiny", cdef, src, [inc], tmp_path / "b")
    assert lib3.k() == 8
    assert len([p for p in (tmp_path / "b").iterdir() if not p.name.startswith(".")]) == 2


# --- strict compile and UBSan ------------------------------------------------------------------

_TUS = (*ISAS, "acle")  # mve's own TU: its portable int32x4_t must not meet SIMDe's


def _write_sources(root: Path) -> list[Path]:
    """One harness translation unit per ISA, including that ISA's headers by relative path."""
    paths = []
    for isa in _TUS:
        inc = "dsp" if isa == "acle" else isa
        path = root / f"tu_{isa}.c"
        path.write_text(_tu(isa, f"inc/{inc}/")[1])
        paths.append(path)
    return paths


def _gcc() -> str:
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc is not installed")
    return gcc


def test_strict_warnings(build_root: Path) -> None:
    """gcc -std=c99 -O2 -Wall -Wextra -pedantic -Werror accepts every header and harness."""
    gcc = _gcc()
    simde = cprims.simde_include_dir()
    for tu in _write_sources(build_root):
        res = subprocess.run([gcc, *STRICT, "-I", simde, "-c", str(tu), "-o",
                              str(tu.with_suffix(".o"))], cwd=build_root, capture_output=True,
                             text=True)
        assert res.returncode == 0, f"{tu.name}:\n{res.stderr}"


def _ubsan_available(gcc: str, root: Path) -> bool:
    probe = root / "probe.c"
    probe.write_text("int main(void) { return 0; }\n")
    res = subprocess.run([gcc, "-fsanitize=undefined", str(probe), "-o", str(root / "probe")],
                         capture_output=True)
    return res.returncode == 0


def test_ubsan_edge_grid(build_root: Path) -> None:
    """Every function over the edge grids in one -fsanitize=undefined binary: no report from
    qlane's code (SIMDe's own are listed as warnings), and the values it writes equal sim's."""
    gcc = _gcc()
    if not _ubsan_available(gcc, build_root):
        pytest.skip("gcc's UBSan runtime (libubsan) is not available")
    runs: list[tuple[str, Case]] = [(f"{isa}_", c) for isa in ISAS
                                    for c in primitive_cases(isa, "edge")]
    runs += [("acle_", c) for c in acle_cases("edge")]
    decls, body = [], []
    for prefix, fns in [(f"{i}_", _fns(i)) for i in ISAS] + [("acle_", ACLE)]:
        decls += [f"{_signature(prefix, name, fn)};" for name, fn in fns.items()]
    for k, (prefix, case) in enumerate(runs):
        n = len(case.inputs[0])
        ctype = CTYPES[case.out]
        ins = ", ".join(f"in + {j * n}" for j in range(len(case.inputs)))
        body.append(f"    {{ /* {k} */\n        static {ctype} out[{n}];\n"
                    f"        if (!load(f, in, {len(case.inputs) * n})) return 2;\n"
                    f"        {prefix}{case.fn}({ins}, out, {n});\n"
                    f"        fwrite(out, sizeof out[0], {n}, g);\n    }}")
    biggest = max(len(c.inputs) * len(c.inputs[0]) for _, c in runs)
    main = "\n".join([
        "#include <stddef.h>", "#include <stdint.h>", "#include <stdio.h>", *decls,
        f"static int32_t in[{biggest}];",
        "static int load(FILE *f, int32_t *dst, size_t n) {",
        "    return fread(dst, sizeof dst[0], n, f) == n;", "}",
        "int main(int argc, char **argv) {",
        "    FILE *f, *g;", "    if (argc != 3) return 3;",
        '    f = fopen(argv[1], "rb");', '    g = fopen(argv[2], "wb");',
        "    if (!f || !g) return 4;", *body,
        "    fclose(f);", "    return fclose(g) != 0;", "}", "",
    ])
    (build_root / "main.c").write_text(main)
    sources = [str(p) for p in _write_sources(build_root)] + [str(build_root / "main.c")]
    exe = build_root / "ubsan_grid"
    cmd = [gcc, *STRICT, "-O1", "-fsanitize=undefined",
           "-I", cprims.simde_include_dir(), *sources, "-o", str(exe)]
    res = subprocess.run(cmd, cwd=build_root, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    with open(build_root / "grid.in", "wb") as fh:
        for _, case in runs:
            for a in case.inputs:
                fh.write(np.asarray(a, np.int64).astype(np.int32).tobytes())
    res = subprocess.run([str(exe), "grid.in", "grid.out"], cwd=build_root, capture_output=True,
                         text=True, env={"UBSAN_OPTIONS": "print_stacktrace=1"})
    reports = [line for line in res.stderr.splitlines() if "runtime error" in line]
    simde = cprims.simde_include_dir()
    ours = [r for r in reports if not r.startswith(simde)]
    assert not ours, "\n".join(ours)
    for r in reports:
        warnings.warn(f"UBSan inside SIMDe (not qlane): {r}", stacklevel=1)
    assert res.returncode == 0, res.stderr[:4000]
    data = (build_root / "grid.out").read_bytes()
    pos = 0
    for prefix, case in runs:
        n = len(case.inputs[0])
        got = np.frombuffer(data, case.out, n, pos)
        pos += n * case.out.itemsize
        _assert_case(case, got, f"[ubsan {prefix}]")
    assert pos == len(data)


def test_neon_builds_start_from_a_precompiled_simde(tmp_path: Path) -> None:
    """On a host without NEON, GCC takes the precompiled qlane_neon.h (``-H`` marks the .gch
    used, ``-Winvalid-pch`` stays quiet), the object code is byte-identical to a build without
    it, and the .gch is built once, published whole."""
    if cprims.host_has_neon() or cprims.host_compiler() is None:
        pytest.skip("the precompiled header serves GCC on hosts without NEON")
    inc = tmp_path / "inc"
    cprims.write_header_files("neon", inc)
    src = tmp_path / "k.c"
    src.write_text('#include "qlane_fixedpoint.h"\n'
                   "int32x4_t k(int32x4_t a, int32x4_t b) {\n"
                   "    return vrshlq_s32(vqrdmulhq_s32(a, b), vdupq_n_s32(-3));\n}\n")
    incs = [str(inc), cprims.simde_include_dir()]
    args = list(cprims.HOST_CFLAGS)
    pch = cprims.neon_pch_args(incs, args, tmp_path / "pch")
    assert pch[0] == "-include" and "-Winvalid-pch" in pch
    gch = Path(pch[1] + ".gch")
    stamp = gch.stat().st_mtime_ns
    assert cprims.neon_pch_args(incs, args, tmp_path / "pch") == pch
    assert gch.stat().st_mtime_ns == stamp, "rebuilt an existing .gch"
    assert sorted(p.name for p in gch.parent.iterdir()) == sorted([gch.name, Path(pch[1]).name])
    base = [*cprims.host_compiler(), *(f"-I{d}" for d in incs), "-c", str(src), *args]
    plain = subprocess.run([*base, "-o", str(tmp_path / "plain.o")], capture_output=True,
                           text=True)
    assert plain.returncode == 0, plain.stderr
    used = subprocess.run([*base, "-o", str(tmp_path / "pch.o"), *pch, "-H"],
                          capture_output=True, text=True)
    assert used.returncode == 0, used.stderr
    assert used.stderr.splitlines()[0] == f"! {gch}", used.stderr[:2000]
    assert "not used" not in used.stderr and "warning" not in used.stderr, used.stderr[:2000]
    assert (tmp_path / "plain.o").read_bytes() == (tmp_path / "pch.o").read_bytes()
