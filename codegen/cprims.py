"""C spellings of the fixed-point primitives per ISA, the headers they live in, and a cffi builder.

One definition per primitive: `sim.fixedpoint.PRIMITIVES` holds what it computes (numpy and
metadata); `C_FUNCTIONS` here holds how C spells it, keyed by the PRIMITIVES name. Each entry has a
generic body (ISA ``"c"``) and thin per-ISA overrides, gemmlowp ``fixedpoint.h`` style: composites
(requantization) are written once on top of the leaves (high multiply, rounding shift), and an ISA
specialises only the leaves it does differently (or inherits another ISA's overrides:
`OVERRIDE_FALLBACK`). Vector (int32x4_t) spellings exist on NEON and on Helium (MVE), whose
arm_mve.h shares NEON's names and semantics for the lane operations they use.
`render_fixedpoint_header` renders ``templates/qlane_fixedpoint.h.j2`` from the table, with each
function's comment taken from the PRIMITIVES metadata; `header_files` returns every header a
generated project for an ISA needs.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from types import ModuleType
from typing import Any

import jinja2

from qlane.sim import transcendental as _transcendental  # noqa: F401  (registers primitives)
from qlane.sim.fixedpoint import PRIMITIVES

from .isa import ISAS as _REGISTRY
from .isa import host_has_neon, simde_include_dir  # noqa: F401  (re-exported)
from .names import ISAS, c_comment

VECTOR_ISAS = tuple(name for name, entry in _REGISTRY.items() if entry.vector)
"""ISAs whose kernels also need vector (int32x4_t) spellings of every primitive."""

OVERRIDE_FALLBACK: dict[str, str] = {"mve": "dsp"}
"""ISA -> the ISA whose override (and note) a function uses on it when it has none of its own.
Helium cores (Cortex-M55, Cortex-M85) also have the DSP extension, and MVE projects carry
qlane_acle.h: their scalar code gets the "dsp" spellings (SSAT / USAT saturation, the
SMLAL-based high multiply and single-rounding requantization)."""

HOST_CFLAGS = ("-O2", "-fno-wrapv", "-g0")
"""Appended after Python's own CFLAGS (which carry -O3 -fwrapv -g): plain -O2, no debug info
(halves SIMDe build times), no -march=native (SIMDe 0.8.2 is inexact with AVX2), and C's real
signed-overflow rules."""


@dataclass(frozen=True)
class CFunction:
    """One ``static inline`` function of qlane_fixedpoint.h: the primitive it spells, and how."""

    name: str
    primitive: str
    returns: str
    params: tuple[tuple[str, str], ...]
    body: str
    overrides: Mapping[str, str] = field(default_factory=dict)
    notes: Mapping[str, str] = field(default_factory=dict)
    detail: str = ""
    isas: tuple[str, ...] = ISAS
    vector: bool = False

    @property
    def signature(self) -> str:
        """``ret name(type arg, ...)``."""
        args = ", ".join(f"{t} {n}" for t, n in self.params)
        return f"{self.returns} {self.name}({args})"

    def body_for(self, isa: str) -> str:
        """The C body used on ``isa``: its override, else the override of
        ``OVERRIDE_FALLBACK[isa]`` (``"mve"`` takes the ``"dsp"`` ones), else the generic one."""
        if isa not in self.isas:
            raise ValueError(f"{self.name} does not exist on ISA {isa!r}")
        return _lookup(self.overrides, isa, self.body).strip("\n")

    def comment(self, isa: str) -> str:
        """One line: real-number meaning and the instruction it equals (from PRIMITIVES); the
        note of ``isa`` (or of its `OVERRIDE_FALLBACK`) says what the spelling there equals."""
        prim = PRIMITIVES[self.primitive]
        detail = f" ({self.detail})" if self.detail else ""
        text_note = _lookup(self.notes, isa, "")
        note = f" Here: {text_note}." if text_note else ""
        text = f"{self.name}: {prim.meaning}{detail}. Equals {prim.instruction}.{note}"
        return c_comment(text, limit=1000)


def _lookup(table: Mapping[str, str], isa: str, default: str) -> str:
    """``table[isa]``, else ``table[OVERRIDE_FALLBACK[isa]]``, else ``default``."""
    if isa in table:
        return table[isa]
    return table.get(OVERRIDE_FALLBACK.get(isa, ""), default)


_S32 = "int32_t"
_V32 = "int32x4_t"

_SRDHM_C = """
if (a == INT32_MIN && b == INT32_MIN) {
    return INT32_MAX;
}
const int64_t ab = (int64_t)a * (int64_t)b;
const int64_t nudge = ab >= 0 ? ((int64_t)1 << 30) : 1 - ((int64_t)1 << 30);
return (int32_t)((ab + nudge) / ((int64_t)1 << 31));
"""

_SRDHM_DSP = """
if (a == INT32_MIN && b == INT32_MIN) {
    return INT32_MAX; /* the guard: CMSIS-NN's no_sat version wraps to INT32_MIN here */
}
return (int32_t)((((int64_t)1 << 30) + (int64_t)a * (int64_t)b) >> 31);
"""

_RDBPOT_C = """
const int32_t mask = (int32_t)(((int64_t)1 << exponent) - 1);
const int32_t remainder = x & mask;
const int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
return (x >> exponent) + (remainder > threshold ? 1 : 0);
"""

_REQUANT_DOUBLE_C = """
const int left = shift > 0 ? shift : 0;
const int right = shift > 0 ? 0 : -shift;
/* x * 2^left wraps like TFLite's x * (1 << left_shift), via uint32 (no signed overflow) */
return qlane_rdbpot(qlane_srdhm(qlane_wrap_s32((uint32_t)x << left), m), right);
"""

_REQUANT_DOUBLE_UP_C = """
const int left = shift > 0 ? shift : 0;
const int right = shift > 0 ? 0 : -shift;
const int32_t high = qlane_srdhm(qlane_wrap_s32((uint32_t)x << left), m);
return right ? (int32_t)(((int64_t)high + ((int64_t)1 << (right - 1))) >> right) : high;
"""

_REQUANT_SINGLE_C = """
const int total = 31 - shift;
const int64_t r = ((int64_t)x * (int64_t)m + ((int64_t)1 << (total - 1))) >> total;
return r > INT32_MAX ? INT32_MAX : (r < INT32_MIN ? INT32_MIN : (int32_t)r);
"""

_REQUANT_SINGLE_DSP = """
/* arm_nn_requantize (CMSIS_NN_USE_SINGLE_ROUNDING), kept in 64 bits and saturated */
const int64_t r = (((int64_t)x * (int64_t)m) >> (30 - shift)) + 1;
const int64_t q = r >> 1;
return q > INT32_MAX ? INT32_MAX : (q < INT32_MIN ? INT32_MIN : (int32_t)q);
"""


_REQUANT_SINGLE_MVE = """
/* x * m = h * 2^31 + r: h = floor(x * m / 2^31) (VQDMULH), r its low 31 bits (VMUL, VAND) */
const int32x4_t left = vmaxq_s32(shift, vdupq_n_s32(0));
const int32x4_t right = vminq_s32(shift, vdupq_n_s32(0));
int32x4_t high = vqdmulhq_s32(x, m);
const int32x4_t low31 = vandq_s32(vmulq_s32(x, m), vdupq_n_s32(INT32_MAX));
/* r rounded by 2^(31 - shift): the carry into h * 2^left (0 for shift < 0) */
int32x4_t carry = vrshlq_s32(low31, vaddq_n_s32(shift, -31));
/* h < 0: (h + 1) * 2^left + (carry - 2^left), so that VQSHL clamps only where the sum does */
const int32x4_t negative = vshrq_n_s32(high, 31);
high = vaddq_s32(high, vandq_s32(negative, vdupq_n_s32(1)));
carry = vaddq_s32(carry, vandq_s32(negative, vshlq_s32(vdupq_n_s32(-1), left)));
return vrshlq_s32(vqaddq_s32(vqshlq_s32(high, left), carry), right);
"""


def _clamp(ctype: str, lo: int, hi: int) -> str:
    return f"return ({ctype})(x < {lo} ? {lo} : (x > {hi} ? {hi} : x));"


_XY = ((_S32, "a"), (_S32, "b"))
_REQ = ((_S32, "x"), (_S32, "m"), ("int", "shift"))

C_FUNCTIONS: tuple[CFunction, ...] = (
    CFunction(
        "qlane_srdhm", "saturating_rounding_doubling_high_mul", _S32, _XY, _SRDHM_C,
        overrides={"dsp": _SRDHM_DSP},
        notes={"dsp": "SMLAL of 2^30 + a*b, ASR 31 (CMSIS-NN arm_nn_doubling_high_mult_no_sat) "
               "guarded for INT32_MIN * INT32_MIN"},
    ),
    CFunction(
        "qlane_rdbpot", "rounding_divide_by_pot", _S32, ((_S32, "x"), ("int", "exponent")),
        _RDBPOT_C,
        notes={"dsp": "CMSIS-NN arm_nn_divide_by_power_of_two"},
    ),
    CFunction(
        "qlane_requant_double", "mul_by_quantized_multiplier_double", _S32, _REQ,
        _REQUANT_DOUBLE_C, detail="-31 <= shift <= 31",
        notes={"dsp": "CMSIS-NN arm_nn_requantize (SMLAL-based qlane_srdhm, guarded)"},
    ),
    CFunction(
        "qlane_requant_double_up", "mul_by_quantized_multiplier_double_ties_up", _S32, _REQ,
        _REQUANT_DOUBLE_UP_C, detail="-31 <= shift <= 31; for outputs clamped at >= 0",
    ),
    CFunction(
        "qlane_requant_single", "mul_by_quantized_multiplier_single", _S32, _REQ,
        _REQUANT_SINGLE_C, overrides={"dsp": _REQUANT_SINGLE_DSP},
        detail="-31 <= shift <= 30",
        notes={"dsp": "SMULL, ASR by 30 - shift, (r + 1) >> 1 in 64 bits (CMSIS-NN single "
               "rounding without its int32 truncation)"},
    ),
    CFunction(
        "qlane_saturate", "saturate", _S32, ((_S32, "x"), (_S32, "lo"), (_S32, "hi")),
        "return x < lo ? lo : (x > hi ? hi : x);", detail="lo <= hi",
    ),
    CFunction(
        "qlane_sat_s8", "saturate", "int8_t", ((_S32, "x"),), _clamp("int8_t", -128, 127),
        overrides={"dsp": "return (int8_t)__ssat(x, 8);"}, detail="lo = -128, hi = 127",
        notes={"dsp": "SSAT #8"},
    ),
    CFunction(
        "qlane_sat_u8", "saturate", "uint8_t", ((_S32, "x"),), _clamp("uint8_t", 0, 255),
        overrides={"dsp": "return (uint8_t)__usat(x, 8);"}, detail="lo = 0, hi = 255",
        notes={"dsp": "USAT #8"},
    ),
    CFunction(
        "qlane_sat_s16", "saturate", "int16_t", ((_S32, "x"),), _clamp("int16_t", -32768, 32767),
        overrides={"dsp": "return (int16_t)__ssat(x, 16);"}, detail="lo = -32768, hi = 32767",
        notes={"dsp": "SSAT #16"},
    ),
    # --- gemmlowp helpers of SOFTMAX and the int16 ones of HARD_SWISH ---------------------------
    CFunction(
        "qlane_sat_mul_pot", "saturating_rounding_multiply_by_pot", _S32,
        ((_S32, "x"), ("int", "exponent")), """
if (exponent <= 0) {
    return exponent == 0 ? x : qlane_rdbpot(x, -exponent);
}
const int32_t threshold = (int32_t)(((int64_t)1 << (31 - exponent)) - 1);
if (x > threshold) {
    return INT32_MAX;
}
if (x < -threshold) {
    return INT32_MIN;
}
return qlane_wrap_s32((uint32_t)x << exponent);
""", detail="-31 <= exponent <= 31",
    ),
    CFunction(
        "qlane_one_over_one_plus_x", "one_over_one_plus_x_for_x_in_0_1", _S32, ((_S32, "a"),),
        """
const int64_t s = (int64_t)a + INT32_MAX; /* RoundingHalfSum(a, 1) */
const int32_t half_denominator = (int32_t)((s + (s >= 0 ? 1 : -1)) / 2);
/* Q2.29: 48/17 - 32/17 * half_denominator, then three Newton-Raphson steps */
int32_t x = qlane_wrap_s32((uint32_t)1515870810 +
                           (uint32_t)qlane_srdhm(half_denominator, -1010580540));
for (int k = 0; k < 3; ++k) {
    const int32_t one_minus = qlane_wrap_s32(((uint32_t)1 << 29) -
                                             (uint32_t)qlane_srdhm(half_denominator, x));
    x = qlane_wrap_s32((uint32_t)x + (uint32_t)qlane_sat_mul_pot(qlane_srdhm(x, one_minus), 2));
}
return qlane_sat_mul_pot(x, 1); /* Q2.29 / 2 as Q1.30, rescaled to Q0.31 */
""", detail="0 <= a",
    ),
    CFunction(
        "qlane_srdhm_s16", "saturating_rounding_doubling_high_mul_int16", _S32, _XY, """
if (a == -32768 && b == -32768) {
    return 32767;
}
const int32_t ab = a * b;
return (ab + (ab >= 0 ? (1 << 14) : 1 - (1 << 14))) / (1 << 15);
""", detail="a, b in the int16 range",
    ),
    CFunction(
        "qlane_sdhm_s16", "saturating_doubling_high_mul_int16", _S32, _XY, """
if (a == -32768 && b == -32768) {
    return 32767;
}
return (a * b) / (1 << 15);
""", detail="a, b in the int16 range",
    ),
    CFunction(
        "qlane_sat_shl_s16", "saturating_left_shift_int16", _S32,
        ((_S32, "x"), ("int", "amount")), """
const int32_t v = x * ((int32_t)1 << amount);
return v < -32768 ? -32768 : (v > 32767 ? 32767 : v);
""", detail="x in the int16 range, 0 <= amount <= 16",
    ),
    CFunction(
        "qlane_rdbpot_s16", "rounding_divide_by_pot_int16", _S32,
        ((_S32, "x"), ("int", "exponent")), """
/* the reference keeps (1 << exponent) - 1 in an int16: -1 from exponent 16 on */
const int32_t mask = (int32_t)(((((int64_t)1 << exponent) - 1 + 32768) & 0xFFFF) - 32768);
const int32_t remainder = x & mask;
const int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
return (x >> exponent) + (remainder > threshold ? 1 : 0);
""", detail="x in the int16 range, 0 <= exponent <= 31",
    ),
    # --- NEON and Helium (MVE): four lanes per call --------------------------------------------
    CFunction(
        "qlane_srdhm_s32x4", "saturating_rounding_doubling_high_mul", _V32,
        ((_V32, "a"), (_V32, "b")), "return vqrdmulhq_s32(a, b);",
        isas=("neon", "mve"), vector=True, detail="per lane",
    ),
    CFunction(
        "qlane_rdbpot_s32x4", "rounding_divide_by_pot", _V32,
        ((_V32, "x"), (_V32, "neg_exponent")),
        """
const int32x4_t fixup = vshrq_n_s32(vandq_s32(x, neg_exponent), 31);
return vrshlq_s32(vqaddq_s32(x, fixup), neg_exponent);
""",
        isas=("neon", "mve"), vector=True, detail="per lane; neg_exponent holds -exponent",
        notes={"neon": "gemmlowp's NEON fix-up: VAND, VSHR #31, VQADD, then VRSHL",
               "mve": "the same fix-up in MVE (CMSIS-NN arm_requantize_mve_32x4): VAND, "
               "VSHR #31, VQADD, then VRSHL"},
    ),
    CFunction(
        "qlane_requant_double_s32x4", "mul_by_quantized_multiplier_double", _V32,
        ((_V32, "x"), (_V32, "m"), (_V32, "left_shift"), (_V32, "right_shift")),
        "return qlane_rdbpot_s32x4(qlane_srdhm_s32x4(vshlq_s32(x, left_shift), m), right_shift);",
        isas=("neon", "mve"), vector=True,
        detail="per lane; left_shift = max(shift, 0), right_shift = min(shift, 0) <= 0 as "
        "TFLite's optimized kernels pass it to VRSHL",
        notes={"neon": "VSHL (wraps), VQRDMULH, fix-up, VRSHL, exactly sim.simd.requantize_neon",
               "mve": "VSHL (wraps), VQRDMULH, fix-up, VRSHL, exactly sim.simd.requantize_mve "
               "(CMSIS-NN arm_requantize_mve_32x4)"},
    ),
    CFunction(
        "qlane_requant_double_up_s32x4", "mul_by_quantized_multiplier_double_ties_up", _V32,
        ((_V32, "x"), (_V32, "m"), (_V32, "left_shift"), (_V32, "right_shift")),
        "return vrshlq_s32(qlane_srdhm_s32x4(vshlq_s32(x, left_shift), m), right_shift);",
        isas=("neon", "mve"), vector=True,
        detail="per lane; shifts as qlane_requant_double_s32x4; for outputs clamped at >= 0",
        notes={"neon": "constant shifts fold: a zero left shift disappears, and VRSHL by a "
               "constant then VQMOVN becomes VQRSHRN",
               "mve": "VSHL (wraps), VQRDMULH, VRSHL: sim.simd.requantize_mve with fixup=False"},
    ),
    CFunction(
        "qlane_requant_single_s32x4", "mul_by_quantized_multiplier_single", _V32,
        ((_V32, "x"), (_V32, "m"), (_V32, "shift")),
        """
const int32x4_t post = vsubq_s32(shift, vdupq_n_s32(31)); /* rounding shift right by 31 - shift */
const int64x2_t lo = vrshlq_s64(vmull_s32(vget_low_s32(x), vget_low_s32(m)),
                                vmovl_s32(vget_low_s32(post)));
const int64x2_t hi = vrshlq_s64(vmull_s32(vget_high_s32(x), vget_high_s32(m)),
                                vmovl_s32(vget_high_s32(post)));
return vcombine_s32(vqmovn_s64(lo), vqmovn_s64(hi));
""",
        overrides={"mve": _REQUANT_SINGLE_MVE},
        isas=("neon", "mve"), vector=True, detail="per lane, any -31 <= shift <= 30",
        notes={"neon": "VMULL.S32, VRSHL.S64 by shift - 31, VQMOVN.S64",
               "mve": "no 64-bit lanes: VQDMULH high part, VMUL and VAND low 31 bits, carry "
               "VRSHL by shift - 31, VQSHL + VQADD, VRSHL by min(shift, 0), exactly "
               "sim.simd.requantize_mve (single)"},
    ),
    CFunction(
        "qlane_requant_single_neg_s32x4", "mul_by_quantized_multiplier_single", _V32,
        ((_V32, "x"), (_V32, "m"), (_V32, "shift")),
        "return vrshlq_s32(vqdmulhq_s32(x, m), shift);",
        isas=("neon", "mve"), vector=True, detail="per lane, every -31 <= shift <= -1",
        notes={"neon": "VQDMULH then VRSHL by shift (TFLite's single-rounding NEON path)",
               "mve": "VQDMULH then VRSHL by shift (CMSIS-NN's single-rounding MVE path)"},
    ),
    CFunction(
        "qlane_saturate_s32x4", "saturate", _V32, ((_V32, "x"), (_V32, "lo"), (_V32, "hi")),
        "return vminq_s32(vmaxq_s32(x, lo), hi);",
        isas=("neon", "mve"), vector=True, detail="per lane, lo <= hi",
    ),
    CFunction(
        "qlane_narrow_s16x8", "saturate", "int16x8_t", ((_V32, "a"), (_V32, "b")),
        "return vcombine_s16(vqmovn_s32(a), vqmovn_s32(b));",
        isas=("neon",), vector=True, detail="x = lanes of a then b, int16: lo = -32768, hi = 32767",
    ),
    CFunction(
        "qlane_narrow_s8x8", "saturate", "int8x8_t", ((_V32, "a"), (_V32, "b")),
        "return vqmovn_s16(vcombine_s16(vqmovn_s32(a), vqmovn_s32(b)));",
        isas=("neon",), vector=True, detail="x = lanes of a then b, int8: lo = -128, hi = 127",
    ),
    CFunction(
        "qlane_narrow_u8x8", "saturate", "uint8x8_t", ((_V32, "a"), (_V32, "b")),
        "return vqmovun_s16(vcombine_s16(vqmovn_s32(a), vqmovn_s32(b)));",
        isas=("neon",), vector=True, detail="x = lanes of a then b, uint8: lo = 0, hi = 255",
    ),
)

def _check_isa(isa: str) -> None:
    if isa not in ISAS:
        raise ValueError(f"unknown ISA {isa!r}; choose one of {', '.join(ISAS)}")


def functions_for(isa: str) -> list[CFunction]:
    """The C functions qlane_fixedpoint.h defines on ``isa``, in definition order."""
    _check_isa(isa)
    return [f for f in C_FUNCTIONS if isa in f.isas]


def spellings(primitive: str, isa: str, vector: bool = False) -> list[CFunction]:
    """The C functions spelling one PRIMITIVES entry on ``isa`` (scalar or vector ones)."""
    return [f for f in functions_for(isa) if f.primitive == primitive and f.vector == vector]


@cache
def _env() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(resources.files("qlane.templates"))),
        undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
        trim_blocks=True, lstrip_blocks=True, autoescape=False,
    )


def render_fixedpoint_header(isa: str) -> str:
    """The text of qlane_fixedpoint.h for ``isa`` (a tag of `qlane.codegen.isa.ISAS`)."""
    functions = [
        {"comment": f.comment(isa), "signature": f.signature, "body": f.body_for(isa)}
        for f in functions_for(isa)
    ]
    template = _env().get_template("qlane_fixedpoint.h.j2")
    return template.render(isa=isa, includes=_REGISTRY[isa].headers, functions=functions)


def _plain_header(name: str) -> str:
    return (resources.files("qlane.templates") / name).read_text(encoding="utf-8")


def header_files(isa: str) -> dict[str, str]:
    """Every header a generated project for ``isa`` needs: {file name: text}."""
    files = {"qlane_fixedpoint.h": render_fixedpoint_header(isa)}
    files.update({name: _plain_header(name) for name in _REGISTRY[isa].headers})
    return files


def write_header_files(isa: str, directory: str | Path) -> list[Path]:
    """Write `header_files` (isa) into ``directory``; returns the paths."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in header_files(isa).items():
        path = out / name
        path.write_text(text, encoding="utf-8")
        paths.append(path)
    return paths


def host_include_dirs(isa: str) -> list[str]:
    """Extra include directories a host build of ``isa`` code needs (SIMDe for NEON on x86;
    none for MVE, whose qlane_mve.h has portable versions)."""
    _check_isa(isa)
    return _REGISTRY[isa].host_include_dirs()


# --- cffi --------------------------------------------------------------------------------------

_LOADED: dict[str, ModuleType] = {}


def _dir_fingerprint(directory: str) -> list[list[str]]:
    """Names and content hashes of the files directly inside an include directory."""
    d = Path(directory)
    if not d.is_dir():
        return []
    return [
        [p.name, hashlib.sha256(p.read_bytes()).hexdigest()]
        for p in sorted(d.iterdir())
        if p.is_file()
    ]


def _load(modname: str, path: Path) -> ModuleType:
    key = str(path)
    if key not in _LOADED:
        spec = importlib.util.spec_from_file_location(modname, key)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot import {key}")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _LOADED[key] = module
    return _LOADED[key]


NEON_PCH_HEADER = "qlane_neon.h"
"""The header `neon_pch_args` precompiles: on a host without NEON it pulls in all of SIMDe."""


def _cache_root(kind: str) -> Path:
    """``$QLANE_CACHE`` (cffi modules) or its ``pch`` subdirectory; else ``~/.cache/qlane/KIND``."""
    env = os.environ.get("QLANE_CACHE")
    if env:
        return Path(env) if kind == "cffi" else Path(env) / kind
    return Path.home() / ".cache" / "qlane" / kind


def host_compiler() -> list[str] | None:
    """The command distutils compiles cffi sources with (compiler, Python's CFLAGS, -fPIC), or
    None when that compiler is not GCC (`neon_pch_args` relies on GCC's ``X.h.gch`` lookup)."""
    import setuptools  # noqa: F401, I001  (first: its distutils on Python >= 3.12)
    from distutils.ccompiler import new_compiler
    from distutils.sysconfig import customize_compiler

    compiler = new_compiler()
    customize_compiler(compiler)
    command = list(getattr(compiler, "compiler_so", None) or [])
    return command if command and _gcc_version(command[0]) else None


@cache
def _gcc_version(executable: str) -> str | None:
    """``EXECUTABLE --version`` when it is GCC, else None."""
    try:
        out = subprocess.run([executable, "--version"], capture_output=True, text=True,
                             check=False)
    except OSError:
        return None
    text = out.stdout
    gcc = out.returncode == 0 and "Free Software Foundation" in text and "clang" not in text
    return text if gcc else None


def neon_pch_args(include_dirs: Sequence[str], args: Sequence[str],
                  pch_dir: str | Path | None = None) -> list[str]:
    """Compiler arguments that start every C file with a precompiled `NEON_PCH_HEADER`.

    Only on a host without NEON, with GCC, and when an include directory holds the header:
    there it is SIMDe's ~100k lines, parsed once per generated .c file otherwise. The header's
    text is precompiled once per (text, other include directories, compiler, ``args``) into
    ``pch_dir`` (default: ``$QLANE_CACHE/pch`` or ``~/.cache/qlane/pch``) as
    ``qlane_neon_<hash>.h`` and its ``.h.gch``, each published with an atomic rename.
    ``-include`` puts it before the first C token, where GCC takes the ``.gch`` beside it; the
    include guard then makes the sources' own ``#include "qlane_neon.h"`` a no-op.
    ``-Winvalid-pch`` reports a rejected .gch (the build then parses the header text: slower,
    same result). Empty when any condition fails, or when the header does not compile on its
    own (the normal build then reports why).
    """
    if host_has_neon():
        return []
    found = [Path(d) / NEON_PCH_HEADER for d in include_dirs
             if (Path(d) / NEON_PCH_HEADER).is_file()]
    compiler = host_compiler() if found else None
    if compiler is None:
        return []
    text = found[0].read_bytes()
    others = [str(d) for d in include_dirs if Path(d) != found[0].parent]
    key = json.dumps({
        "header": hashlib.sha256(text).hexdigest(), "include_dirs": others,
        "headers": [_dir_fingerprint(d) for d in others], "compiler": compiler,
        "version": _gcc_version(compiler[0]), "args": list(args),
    }, sort_keys=True)
    out = Path(pch_dir or _cache_root("pch")).resolve()
    header = out / f"qlane_neon_{hashlib.sha256(key.encode()).hexdigest()[:16]}.h"
    gch = header.with_name(header.name + ".gch")
    if not gch.exists():
        out.mkdir(parents=True, exist_ok=True)
        _publish(header, text)
        fd, tmp = tempfile.mkstemp(dir=out, prefix=f".{gch.name}.")
        os.close(fd)
        try:
            # -isystem: GCC < 13 drops SIMDe's warning pragmas from a .gch (GCC bug 64117)
            cmd = [*compiler, *(f"-isystem{d}" for d in others), "-x", "c-header",
                   str(header), "-o", tmp, *args]
            if subprocess.run(cmd, capture_output=True, check=False).returncode != 0:
                return []
            os.chmod(tmp, 0o644)
            os.replace(tmp, gch)
        finally:
            Path(tmp).unlink(missing_ok=True)
    return ["-include", str(header), "-Winvalid-pch"]


def _publish(path: Path, data: bytes) -> None:
    """Write ``path`` whole or not at all (a temp file renamed over it)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def build_cffi_module(
    name: str,
    cdef: str,
    source: str,
    include_dirs: Sequence[str | Path] = (),
    tmpdir: str | Path | None = None,
    extra_args: Sequence[str] = (),
    *,
    sources: Sequence[str | Path] = (),
    pch_dir: str | Path | None = None,
) -> tuple[Any, Any]:
    """Compile C with cffi at plain -O2 and import it from its absolute path: ``(ffi, lib)``.

    ``cdef`` declares what Python sees, ``source`` is the module's C text, ``sources`` extra C
    files compiled into it. Builds live under ``tmpdir`` (default: ``$QLANE_CACHE`` or
    ``~/.cache/qlane/cffi``) keyed by a hash of every input: the texts, the flags, the files
    directly inside each include directory (deeper trees such as SIMDe count by path), the
    Python ABI and the cffi version. An identical request reuses the built module. NEON code
    built on a host without NEON starts from a precompiled SIMDe (`neon_pch_args`, ``pch_dir``).
    """
    import cffi

    build_dir = Path(tmpdir or _cache_root("cffi")).resolve()
    incs = [str(Path(d).resolve()) for d in include_dirs]
    srcs = [str(Path(s).resolve()) for s in sources]
    args = [*HOST_CFLAGS, *extra_args]
    key = json.dumps({
        "cdef": cdef, "source": source, "include_dirs": incs, "args": args,
        "headers": [_dir_fingerprint(d) for d in incs],
        "sources": [[s, hashlib.sha256(Path(s).read_bytes()).hexdigest()] for s in srcs],
        "abi": sys.implementation.cache_tag, "platform": sys.platform,
        "cffi": cffi.__version__, "cc": os.environ.get("CC", ""),
    }, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    stem = re.sub(r"\W", "_", name) or "mod"
    modname = f"{stem}_{digest}"
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    target = build_dir / f"{modname}{suffix}"
    if not target.exists():
        build_dir.mkdir(parents=True, exist_ok=True)
        ffi = cffi.FFI()
        ffi.cdef(cdef)
        ffi.set_source(modname, source, include_dirs=incs, sources=srcs,
                       extra_compile_args=[*args, *neon_pch_args(incs, args, pch_dir)])
        with tempfile.TemporaryDirectory(dir=build_dir, prefix=f".{modname}-") as work:
            built = ffi.compile(tmpdir=work, verbose=False)
            os.replace(built, target)  # atomic: concurrent builders of one key agree
    module = _load(modname, target)
    return module.ffi, module.lib
