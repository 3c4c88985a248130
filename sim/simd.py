"""SIMD lane emulator: NEON, ACLE DSP and MVE (Helium) instructions as exact numpy functions.

Each instruction our kernels use is an `Instruction` in `INSTRUCTIONS` (NEON and DSP) or in
`MVE_INSTRUCTIONS` (MVE, keyed by its arm_mve.h name: arm_mve.h reuses NEON's names), carrying its
ISA (``"neon"``, ``"dsp"`` or ``"mve"``), its lane count, its operand and result types, its C
intrinsic and its mnemonic, and a numpy definition written from the pseudocode of the Arm
Architecture Reference Manual (A64 / A32 / Armv7-M / Armv8.1-M). Calling it returns the result;
`Instruction.saturated` says where the instruction would set the sticky saturation flag
(FPSCR.QC / FPSR.QC for NEON and MVE, APSR.Q for DSP).

Values:

- NEON and MVE: numpy arrays whose last axis holds the lanes of one 64-bit (d) or 128-bit (q)
  register, e.g. ``int32`` ``(..., 4)`` for ``int32x4_t``; leading axes are independent
  registers, so one call emulates many. An MVE predicate (``mve_pred16_t``) is a ``uint16``
  scalar, one bit per byte lane; MVE loads and stores take or give the memory they touch.
- DSP: a 32-bit word holding packed lanes is a ``uint32`` array (``int32`` accepted, by bit
  pattern); `pack` and `unpack` convert. Plain 32/64-bit scalars are ``int32`` / ``int64`` arrays.
- Immediates (shift counts, lane indices, saturation widths) are Python ints.

`requantize_neon`, `requantize_dsp` and `requantize_mve` compose these instructions into TFLite's
requantization and equal `sim.fixedpoint.mul_by_quantized_multiplier` exactly; their docstrings
list where TFLite's optimized NEON kernels and CMSIS-NN compute something else.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from .fixedpoint import INT32_MAX, INT32_MIN, Rounding

Isa = Literal["neon", "dsp", "mve"]


@dataclass(frozen=True)
class Vec:
    """A register type: ``lanes`` lanes of ``dtype`` (a NEON register, a packed word, a scalar)."""

    dtype: str
    lanes: int
    packed: bool = False

    @property
    def lane_bits(self) -> int:
        """Width of one lane."""
        return np.dtype(self.dtype).itemsize * 8

    @property
    def bits(self) -> int:
        """Width of the whole register or word."""
        return self.lane_bits * self.lanes

    @property
    def signed(self) -> bool:
        """True for signed lanes."""
        return np.dtype(self.dtype).kind == "i"

    @property
    def storage(self) -> np.dtype:
        """numpy dtype of a value of this type (packed words are held as uint32)."""
        return np.dtype(np.uint32) if self.packed else np.dtype(self.dtype)

    @property
    def c_type(self) -> str:
        """The arm_neon.h / arm_acle.h type name (ACLE's packed types are 32-bit integers)."""
        if self.lanes == 1 and not self.packed:
            return f"{self.dtype}_t"
        return f"{self.dtype}x{self.lanes}_t"


@dataclass(frozen=True)
class Imm:
    """A compile-time immediate operand in ``[lo, hi]``."""

    name: str
    lo: int
    hi: int
    c_type: str = "const int"


Operand = Vec | Imm


@dataclass(frozen=True)
class Instruction:
    """One SIMD instruction: its types, names, meaning and exact lane semantics."""

    name: str
    isa: Isa
    lanes: int
    inputs: tuple[Operand, ...]
    output: Vec
    intrinsic: str
    mnemonic: str
    meaning: str
    saturation: str
    impl: Callable[..., tuple[np.ndarray, np.ndarray | None]] = field(repr=False)

    def _run(self, args: tuple) -> tuple[np.ndarray, np.ndarray | None]:
        if len(args) != len(self.inputs):
            raise TypeError(f"{self.name} takes {len(self.inputs)} operands, got {len(args)}")
        checked = [_check(self.name, i, a, t) for i, (a, t) in enumerate(zip(args, self.inputs))]
        with np.errstate(over="ignore"):
            value, sat = self.impl(*checked)
        return _store(value, self.output), sat

    def __call__(self, *args) -> np.ndarray:
        return self._run(args)[0]

    def saturated(self, *args) -> np.ndarray:
        """Where (per result lane or word) the instruction sets the sticky Q / QC flag."""
        value, sat = self._run(args)
        shape = value.shape
        return np.zeros(shape, bool) if sat is None else np.broadcast_to(sat, shape)


def _check(name: str, index: int, arg, t: Operand):
    where = f"{name} operand {index}"
    if isinstance(t, Imm):
        if isinstance(arg, np.ndarray) or int(arg) != arg or not t.lo <= int(arg) <= t.hi:
            raise ValueError(f"{where}: {t.name} must be an integer in [{t.lo}, {t.hi}]")
        return int(arg)
    if t.packed:
        if isinstance(arg, int) and INT32_MIN <= arg <= 0xFFFFFFFF:
            return np.asarray(arg & 0xFFFFFFFF, np.uint32)
        a = np.asarray(arg)
        if a.dtype not in (np.uint32, np.int32):
            raise TypeError(f"{where}: a packed {t.c_type} word is uint32 or int32, not {a.dtype}")
        return a.astype(np.uint32)
    if t.lanes == 1:
        if isinstance(arg, int | np.integer) and not isinstance(arg, np.ndarray):
            info = np.iinfo(t.dtype)
            if not info.min <= int(arg) <= info.max:
                raise ValueError(f"{where}: {arg} does not fit {t.c_type}")
            return np.asarray(arg, t.dtype)
        a = np.asarray(arg)
        if a.dtype != t.storage:
            raise TypeError(f"{where}: expected {t.dtype}, got {a.dtype}")
        return a
    if not isinstance(arg, np.ndarray) or arg.dtype != t.storage or arg.shape[-1:] != (t.lanes,):
        got = f"{arg.dtype}{list(arg.shape)}" if isinstance(arg, np.ndarray) else type(arg).__name__
        raise TypeError(f"{where}: expected {t.c_type} (..., {t.lanes}) {t.dtype}, got {got}")
    return arg


def _store(value: np.ndarray, t: Vec) -> np.ndarray:
    return np.asarray(value).astype(t.storage)


INSTRUCTIONS: dict[str, Instruction] = {}


def _register(
    name: str,
    isa: Isa,
    inputs: tuple[Operand, ...],
    output: Vec,
    mnemonic: str,
    meaning: str,
    saturation: str,
    intrinsic: str | None = None,
    lanes: int | None = None,
):
    def deco(fn: Callable[..., tuple[np.ndarray, np.ndarray | None]]) -> Instruction:
        inst = Instruction(
            name=name,
            isa=isa,
            lanes=output.lanes if lanes is None else lanes,
            inputs=inputs,
            output=output,
            intrinsic=intrinsic or name,
            mnemonic=mnemonic,
            meaning=meaning,
            saturation=saturation,
            impl=fn,
        )
        INSTRUCTIONS[name] = inst
        return inst

    return deco


# --- integer helpers (values up to 32 bits are handled in int64, 64-bit ones in uint64) -------


def _i64(a) -> np.ndarray:
    return np.asarray(a).astype(np.int64)


def _wrap(v: np.ndarray, bits: int, signed: bool) -> np.ndarray:
    """Keep the low ``bits`` bits (bits <= 32) of int64 values, as a signed or unsigned number."""
    v = np.asarray(v, np.int64) & ((1 << bits) - 1)
    return v - ((v >> (bits - 1)) << bits) if signed else v


def _wrap64(v_u64: np.ndarray) -> np.ndarray:
    return np.asarray(v_u64, np.uint64).view(np.int64)


def _range(bits: int, signed: bool) -> tuple[int, int]:
    return (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)


def _sat(v: np.ndarray, bits: int, signed: bool) -> tuple[np.ndarray, np.ndarray]:
    lo, hi = _range(bits, signed)
    c = np.clip(v, lo, hi)
    return c, c != v


def _shift_amount(b: np.ndarray) -> np.ndarray:
    """Per-lane shift of VSHL/VRSHL (register): the signed low byte of each lane."""
    low = np.asarray(b).astype(np.int64) & 0xFF
    return low - ((low >> 7) << 8)


def _shl_small(a: np.ndarray, s: np.ndarray, bits: int, rounding: bool) -> np.ndarray:
    """SSHL/SRSHL on lanes of <= 32 bits: shift left by s, or (rounding) right by -s."""
    a, s = np.broadcast_arrays(_i64(a), s)
    left = np.clip(s, 0, bits)
    right = np.clip(-s, 0, 40)
    shifted_left = _wrap(a << left, bits, True)
    if rounding:
        half = np.where(right > 0, np.int64(1) << np.maximum(right - 1, 0), 0)
        shifted_right = (a + half) >> right
    else:
        shifted_right = a >> right
    return np.where(s >= 0, shifted_left, shifted_right)


def _shl64(a: np.ndarray, s: np.ndarray, rounding: bool) -> np.ndarray:
    """SSHL/SRSHL on 64-bit lanes, exact (the rounding increment never overflows)."""
    a = np.asarray(a, np.int64)
    a, s = np.broadcast_arrays(a, s)
    left = np.clip(s, 0, 63)
    shifted_left = _wrap64(a.view(np.uint64) << left.astype(np.uint64))
    shifted_left = np.where(s >= 64, 0, shifted_left)
    right = np.clip(-s, 0, 63)
    shifted_right = a >> right
    if rounding:
        carry = (a >> np.maximum(right - 1, 0)) & 1
        shifted_right = np.where(-s >= 64, 0, shifted_right + np.where(right > 0, carry, 0))
    return np.where(s >= 0, shifted_left, shifted_right)


def _lanes_of(words: np.ndarray, bits: int, signed: bool) -> np.ndarray:
    """Split uint32 words into (..., 32 // bits) int64 lanes, lane 0 in the low bits."""
    w = _i64(words)[..., None]
    offsets = np.arange(0, 32, bits, dtype=np.int64)
    return _wrap(w >> offsets, bits, signed)


def _pack_lanes(lanes: np.ndarray, bits: int) -> np.ndarray:
    offsets = np.arange(0, 32, bits, dtype=np.int64)
    return np.bitwise_or.reduce((_i64(lanes) & ((1 << bits) - 1)) << offsets, axis=-1).astype(
        np.uint32
    )


def pack(values, dtype) -> np.ndarray:
    """Pack lanes ``(..., 32 // bits)`` of an 8- or 16-bit ``dtype`` into uint32 words."""
    dt = np.dtype(dtype)
    bits = dt.itemsize * 8
    v = np.asarray(values)
    if bits not in (8, 16) or v.dtype != dt or v.shape[-1:] != (32 // bits,):
        raise TypeError(f"pack: expected (..., {32 // max(bits, 1)}) values of int8/16 or uint8/16")
    return _pack_lanes(v, bits)


def unpack(words, dtype) -> np.ndarray:
    """Split uint32 (or int32) words into ``(..., 32 // bits)`` lanes of ``dtype``."""
    dt = np.dtype(dtype)
    bits = dt.itemsize * 8
    if bits not in (8, 16):
        raise TypeError("unpack: lanes are 8 or 16 bits")
    w = np.asarray(words)
    if w.dtype not in (np.uint32, np.int32):
        raise TypeError(f"unpack: words are uint32 or int32, not {w.dtype}")
    return _lanes_of(w.astype(np.uint32), bits, dt.kind == "i").astype(dt)


# --- NEON ---------------------------------------------------------------------------------------

S8x8, S8x16 = Vec("int8", 8), Vec("int8", 16)
U8x8, U8x16 = Vec("uint8", 8), Vec("uint8", 16)
S16x4, S16x8 = Vec("int16", 4), Vec("int16", 8)
U16x4, U16x8 = Vec("uint16", 4), Vec("uint16", 8)
S32x2, S32x4 = Vec("int32", 2), Vec("int32", 4)
U32x4 = Vec("uint32", 4)
S64x2 = Vec("int64", 2)
S32, U32, S64 = Vec("int32", 1), Vec("uint32", 1), Vec("int64", 1)


@_register(
    "vqrdmulhq_s32", "neon", (S32x4, S32x4), S32x4, "SQRDMULH Vd.4S / VQRDMULH.S32",
    meaning="round(a * b / 2^31) per lane, ties toward +infinity: the Q31 product",
    saturation="only INT32_MIN * INT32_MIN (+1.0) saturates, to INT32_MAX, setting QC",
)
def _vqrdmulhq_s32(a, b):
    """(2ab + 2^31) >> 32, saturated."""
    return _sat((_i64(a) * _i64(b) + (1 << 30)) >> 31, 32, True)


@_register(
    "vqdmulhq_s32", "neon", (S32x4, S32x4), S32x4, "SQDMULH Vd.4S / VQDMULH.S32",
    meaning="floor(a * b / 2^31) per lane: the Q31 product, truncated toward -infinity",
    saturation="only INT32_MIN * INT32_MIN saturates, to INT32_MAX, setting QC",
)
def _vqdmulhq_s32(a, b):
    """(2ab) >> 32, saturated."""
    return _sat((_i64(a) * _i64(b)) >> 31, 32, True)


@_register(
    "vrshlq_s32", "neon", (S32x4, S32x4), S32x4, "SRSHL Vd.4S / VRSHL.S32",
    meaning="a * 2^s with s the signed low byte of b: for s < 0 round(a / 2^-s), ties toward "
    "+infinity (computed without overflow, so INT32_MAX + 2^(-s-1) is fine); for s >= 0 a << s",
    saturation="none: left shifts wrap (keep the low 32 bits); s <= -33 gives 0",
)
def _vrshlq_s32(a, b):
    """Rounding shift by a signed per-lane amount."""
    return _shl_small(a, _shift_amount(b), 32, rounding=True), None


@_register(
    "vshlq_s32", "neon", (S32x4, S32x4), S32x4, "SSHL Vd.4S / VSHL.S32",
    meaning="a * 2^s with s the signed low byte of b: s >= 0 shifts left, s < 0 shifts right "
    "arithmetically (floor)",
    saturation="none: left shifts wrap like C int32 overflow; s >= 32 gives 0, s <= -32 the sign",
)
def _vshlq_s32(a, b):
    """Shift by a signed per-lane amount, no rounding."""
    return _shl_small(a, _shift_amount(b), 32, rounding=False), None


@_register(
    "vrshlq_s64", "neon", (S64x2, S64x2), S64x2, "SRSHL Vd.2D / VRSHL.S64",
    meaning="a * 2^s with s the signed low byte of b; for s < 0 round(a / 2^-s), ties toward "
    "+infinity, exact for every int64",
    saturation="none: left shifts wrap",
)
def _vrshlq_s64(a, b):
    """Rounding shift of 64-bit lanes by a signed per-lane amount."""
    return _shl64(a, _shift_amount(b), rounding=True), None


@_register(
    "vqaddq_s32", "neon", (S32x4, S32x4), S32x4, "SQADD Vd.4S / VQADD.S32",
    meaning="a + b per lane",
    saturation="clamps to [INT32_MIN, INT32_MAX], setting QC",
)
def _vqaddq_s32(a, b):
    """Saturating add."""
    return _sat(_i64(a) + _i64(b), 32, True)


@_register(
    "vandq_s32", "neon", (S32x4, S32x4), S32x4, "AND Vd.16B / VAND",
    meaning="bitwise a AND b", saturation="none",
)
def _vandq_s32(a, b):
    """Bitwise and."""
    return np.bitwise_and(a, b), None


@_register(
    "vshrq_n_s32", "neon", (S32x4, Imm("n", 1, 32)), S32x4, "SSHR Vd.4S, #n / VSHR.S32",
    meaning="floor(a / 2^n), arithmetic shift right by an immediate 1..32 (n >= 31: the sign "
    "mask 0 or -1)",
    saturation="none",
)
def _vshrq_n_s32(a, n):
    """Arithmetic shift right by an immediate."""
    return _i64(a) >> min(n, 31), None


def _narrow(bits: int, signed_out: bool):
    def impl(a):
        return _sat(_i64(a), bits, signed_out)

    return impl


_register(
    "vqmovn_s32", "neon", (S32x4,), S16x4, "SQXTN Vd.4H / VQMOVN.S32",
    meaning="int32 lanes narrowed to int16",
    saturation="clamps to [-32768, 32767], setting QC",
)(_narrow(16, True))
_register(
    "vqmovn_s16", "neon", (S16x8,), S8x8, "SQXTN Vd.8B / VQMOVN.S16",
    meaning="int16 lanes narrowed to int8",
    saturation="clamps to [-128, 127], setting QC",
)(_narrow(8, True))
_register(
    "vqmovun_s16", "neon", (S16x8,), U8x8, "SQXTUN Vd.8B / VQMOVUN.S16",
    meaning="signed int16 lanes narrowed to uint8",
    saturation="clamps to [0, 255], setting QC",
)(_narrow(8, False))
_register(
    "vqmovun_s32", "neon", (S32x4,), U16x4, "SQXTUN Vd.4H / VQMOVUN.S32",
    meaning="signed int32 lanes narrowed to uint16",
    saturation="clamps to [0, 65535], setting QC",
)(_narrow(16, False))
_register(
    "vqmovn_s64", "neon", (S64x2,), S32x2, "SQXTN Vd.2S / VQMOVN.S64",
    meaning="int64 lanes narrowed to int32",
    saturation="clamps to [INT32_MIN, INT32_MAX], setting QC",
)(_narrow(32, True))


def _widening_mul(out_bits: int, signed: bool, accumulate: bool):
    def impl(*args):
        acc = _i64(args[0]) if accumulate else 0
        a, b = args[-2:]
        return _wrap(acc + _i64(a) * _i64(b), out_bits, signed), None

    return impl


_register(
    "vmull_u8", "neon", (U8x8, U8x8), U16x8, "UMULL Vd.8H / VMULL.U8",
    meaning="a * b, uint8 lanes widened to uint16 (exact: at most 65025)", saturation="none",
)(_widening_mul(16, False, False))
_register(
    "vmlal_u8", "neon", (U16x8, U8x8, U8x8), U16x8, "UMLAL Vd.8H / VMLAL.U8",
    meaning="acc + a * b into uint16 lanes",
    saturation="none: the sum wraps modulo 2^16",
)(_widening_mul(16, False, True))
_register(
    "vmull_s8", "neon", (S8x8, S8x8), S16x8, "SMULL Vd.8H / VMULL.S8",
    meaning="a * b, int8 lanes widened to int16 (exact: -128 * -128 = 16384 fits)",
    saturation="none",
)(_widening_mul(16, True, False))
_register(
    "vmlal_s8", "neon", (S16x8, S8x8, S8x8), S16x8, "SMLAL Vd.8H / VMLAL.S8",
    meaning="acc + a * b into int16 lanes (two products of weights in [-127, 127] always fit)",
    saturation="none: the sum wraps modulo 2^16",
)(_widening_mul(16, True, True))
_register(
    "vmull_s16", "neon", (S16x4, S16x4), S32x4, "SMULL Vd.4S / VMULL.S16",
    meaning="a * b, int16 lanes widened to int32 (exact)", saturation="none",
)(_widening_mul(32, True, False))
_register(
    "vmlal_s16", "neon", (S32x4, S16x4, S16x4), S32x4, "SMLAL Vd.4S / VMLAL.S16",
    meaning="acc + a * b into int32 lanes", saturation="none: the sum wraps modulo 2^32",
)(_widening_mul(32, True, True))


@_register(
    "vmull_s32", "neon", (S32x2, S32x2), S64x2, "SMULL Vd.2D / VMULL.S32",
    meaning="a * b, int32 lanes widened to int64 (exact)", saturation="none",
)
def _vmull_s32(a, b):
    """Widening multiply into 64-bit lanes."""
    return _i64(a) * _i64(b), None


@_register(
    "vmull_lane_s16", "neon", (S16x4, S16x4, Imm("lane", 0, 3)), S32x4,
    "SMULL Vd.4S, Vn.4H, Vm.H[lane] / VMULL.S16 Qd, Dn, Dm[lane]",
    meaning="a * v[lane], int16 widened to int32 (exact)", saturation="none",
)
def _vmull_lane_s16(a, v, lane):
    """Widening multiply by one lane of v."""
    return _i64(a) * _i64(v[..., lane : lane + 1]), None


@_register(
    "vmlal_lane_s16", "neon", (S32x4, S16x4, S16x4, Imm("lane", 0, 3)), S32x4,
    "SMLAL Vd.4S, Vn.4H, Vm.H[lane] / VMLAL.S16 Qd, Dn, Dm[lane]",
    meaning="acc + a * v[lane] into int32 lanes", saturation="none: wraps modulo 2^32",
)
def _vmlal_lane_s16(acc, a, v, lane):
    """Widening multiply-accumulate by one lane of v."""
    return _wrap(_i64(acc) + _i64(a) * _i64(v[..., lane : lane + 1]), 32, True), None


def _pairwise_acc(signed: bool):
    def impl(acc, a):
        a = _i64(a)
        return _wrap(_i64(acc) + a[..., 0::2] + a[..., 1::2], 32, signed), None

    return impl


_register(
    "vpadalq_u16", "neon", (U32x4, U16x8), U32x4, "UADALP Vd.4S / VPADAL.U16",
    meaning="acc[i] + a[2i] + a[2i+1]: adjacent uint16 pairs summed into uint32 lanes",
    saturation="none: wraps modulo 2^32",
)(_pairwise_acc(False))
_register(
    "vpadalq_s16", "neon", (S32x4, S16x8), S32x4, "SADALP Vd.4S / VPADAL.S16",
    meaning="acc[i] + a[2i] + a[2i+1]: adjacent int16 pairs summed into int32 lanes",
    saturation="none: wraps modulo 2^32",
)(_pairwise_acc(True))


def _dot(signed: bool):
    def impl(acc, a, b):
        prod = _i64(a) * _i64(b)
        sums = prod.reshape(*prod.shape[:-1], 4, 4).sum(axis=-1)
        return _wrap(_i64(acc) + sums, 32, signed), None

    return impl


_register(
    "vdotq_u32", "neon", (U32x4, U8x16, U8x16), U32x4,
    "UDOT Vd.4S, Vn.16B, Vm.16B (Armv8.2 DotProd)",
    meaning="acc[i] + sum_j a[4i+j] * b[4i+j]: four uint8 products per uint32 lane",
    saturation="none: wraps modulo 2^32",
)(_dot(False))
_register(
    "vdotq_s32", "neon", (S32x4, S8x16, S8x16), S32x4,
    "SDOT Vd.4S, Vn.16B, Vm.16B (Armv8.2 DotProd)",
    meaning="acc[i] + sum_j a[4i+j] * b[4i+j]: four int8 products per int32 lane",
    saturation="none: wraps modulo 2^32",
)(_dot(True))


def _widen(a):
    return _i64(a), None


_register(
    "vmovl_u8", "neon", (U8x8,), U16x8, "UXTL Vd.8H / VMOVL.U8",
    meaning="uint8 lanes zero-extended to uint16", saturation="none",
)(_widen)
_register(
    "vmovl_s8", "neon", (S8x8,), S16x8, "SXTL Vd.8H / VMOVL.S8",
    meaning="int8 lanes sign-extended to int16", saturation="none",
)(_widen)
_register(
    "vmovl_s16", "neon", (S16x4,), S32x4, "SXTL Vd.4S / VMOVL.S16",
    meaning="int16 lanes sign-extended to int32", saturation="none",
)(_widen)
_register(
    "vmovl_s32", "neon", (S32x2,), S64x2, "SXTL Vd.2D / VMOVL.S32",
    meaning="int32 lanes sign-extended to int64", saturation="none",
)(_widen)


def _add_wide(bits: int, signed: bool):
    def impl(acc, a):
        return _wrap(_i64(acc) + _i64(a), bits, signed), None

    return impl


_register(
    "vaddw_u8", "neon", (U16x8, U8x8), U16x8, "UADDW Vd.8H / VADDW.U8",
    meaning="acc + a, uint8 lanes widened into uint16", saturation="none: wraps modulo 2^16",
)(_add_wide(16, False))
_register(
    "vaddw_s8", "neon", (S16x8, S8x8), S16x8, "SADDW Vd.8H / VADDW.S8",
    meaning="acc + a, int8 lanes widened into int16", saturation="none: wraps modulo 2^16",
)(_add_wide(16, True))
_register(
    "vaddw_s16", "neon", (S32x4, S16x4), S32x4, "SADDW Vd.4S / VADDW.S16",
    meaning="acc + a, int16 lanes widened into int32", saturation="none: wraps modulo 2^32",
)(_add_wide(32, True))


def _minmax(fn):
    def impl(a, b):
        return fn(a, b), None

    return impl


for _t, _suffix, _q in (
    (S32x4, "s32", "q"), (S16x8, "s16", "q"), (S8x16, "s8", "q"), (U8x16, "u8", "q"),
    (S8x8, "s8", ""), (U8x8, "u8", ""),
):
    _arrangement = f"{_t.lanes}{'B' if _t.lane_bits == 8 else 'H' if _t.lane_bits == 16 else 'S'}"
    _op = "U" if _suffix.startswith("u") else "S"
    _register(
        f"vmax{_q}_{_suffix}", "neon", (_t, _t), _t,
        f"{_op}MAX Vd.{_arrangement} / VMAX.{_suffix.upper()}",
        meaning="max(a, b) per lane (the lower clamp of a fused activation)", saturation="none",
    )(_minmax(np.maximum))
    _register(
        f"vmin{_q}_{_suffix}", "neon", (_t, _t), _t,
        f"{_op}MIN Vd.{_arrangement} / VMIN.{_suffix.upper()}",
        meaning="min(a, b) per lane (the upper clamp of a fused activation)", saturation="none",
    )(_minmax(np.minimum))


@_register(
    "vdupq_n_s32", "neon", (S32,), S32x4, "DUP Vd.4S, Wn / VDUP.32",
    meaning="one int32 copied to every lane", saturation="none",
)
def _vdupq_n_s32(x):
    """Broadcast a scalar."""
    return np.repeat(_i64(x)[..., None], 4, axis=-1), None


@_register(
    "vget_low_s32", "neon", (S32x4,), S32x2, "(register alias: Dn = low half of Qn)",
    meaning="lanes 0-1 of a q register", saturation="none",
)
def _vget_low_s32(a):
    """Low half."""
    return a[..., :2], None


@_register(
    "vget_high_s32", "neon", (S32x4,), S32x2, "(register alias) / DUP Vd.2D, Vn.D[1]",
    meaning="lanes 2-3 of a q register", saturation="none",
)
def _vget_high_s32(a):
    """High half."""
    return a[..., 2:], None


@_register(
    "vcombine_s32", "neon", (S32x2, S32x2), S32x4, "(register alias) / INS Vd.D[1], Vm.D[0]",
    meaning="two d registers as one q register, a in lanes 0-1", saturation="none",
)
def _vcombine_s32(a, b):
    """Concatenate halves."""
    return np.concatenate(np.broadcast_arrays(a, b), axis=-1), None


# --- ACLE DSP (Armv7E-M / Armv8-M DSP extension); words hold packed lanes ------------------------

S16x2w, U16x2w = Vec("int16", 2, packed=True), Vec("uint16", 2, packed=True)
S8x4w, U8x4w = Vec("int8", 4, packed=True), Vec("uint8", 4, packed=True)
_ROR = Imm("ror", 0, 24)


def _rotate(words: np.ndarray, ror: int) -> np.ndarray:
    if ror not in (0, 8, 16, 24):
        raise ValueError("the rotation of SXTB16/UXTB16/SXTAB16/UXTAB16 is 0, 8, 16 or 24")
    w = _i64(words)
    return ((w >> ror) | (w << (32 - ror))) & 0xFFFFFFFF if ror else w


@_register(
    "__smlad", "dsp", (S16x2w, S16x2w, S32), S32, "SMLAD Rd, Rn, Rm, Ra",
    meaning="acc + x.lo * y.lo + x.hi * y.hi: two int16 MACs",
    saturation="the 32-bit result wraps; Q is set when the exact sum leaves int32",
    lanes=2,
)
def _smlad(x, y, acc):
    """Dual signed 16-bit multiply-accumulate."""
    xs, ys = _lanes_of(x, 16, True), _lanes_of(y, 16, True)
    exact = (xs * ys).sum(axis=-1) + _i64(acc)
    return _wrap(exact, 32, True), (exact < INT32_MIN) | (exact > INT32_MAX)


@_register(
    "__smladx", "dsp", (S16x2w, S16x2w, S32), S32, "SMLADX Rd, Rn, Rm, Ra",
    meaning="acc + x.lo * y.hi + x.hi * y.lo: two int16 MACs, y's halves swapped",
    saturation="the 32-bit result wraps; Q is set when the exact sum leaves int32",
    lanes=2,
)
def _smladx(x, y, acc):
    """Dual signed 16-bit multiply-accumulate, exchanged."""
    xs, ys = _lanes_of(x, 16, True), _lanes_of(y, 16, True)[..., ::-1]
    exact = (xs * ys).sum(axis=-1) + _i64(acc)
    return _wrap(exact, 32, True), (exact < INT32_MIN) | (exact > INT32_MAX)


def _smla_halves(x, y, acc, hx: int, hy: int):
    """acc + (half hx of x) * (half hy of y), signed 16x16 (0: bottom, 1: top)."""
    exact = _lanes_of(x, 16, True)[..., hx] * _lanes_of(y, 16, True)[..., hy] + _i64(acc)
    return _wrap(exact, 32, True), (exact < INT32_MIN) | (exact > INT32_MAX)


@_register(
    "__smlabb", "dsp", (S16x2w, S16x2w, S32), S32, "SMLABB Rd, Rn, Rm, Ra",
    meaning="acc + x.lo * y.lo: one int16 MAC on the bottom halves",
    saturation="the 32-bit result wraps; Q is set when the exact sum leaves int32",
    lanes=1,
)
def _smlabb(x, y, acc):
    """Signed 16x16 multiply-accumulate, bottom halves."""
    return _smla_halves(x, y, acc, 0, 0)


for _name, _hx, _hy in (("bt", 0, 1), ("tb", 1, 0), ("tt", 1, 1)):
    _halves = ("lo", "hi")
    _register(
        f"__smla{_name}", "dsp", (S16x2w, S16x2w, S32), S32,
        f"SMLA{_name.upper()} Rd, Rn, Rm, Ra",
        meaning=f"acc + x.{_halves[_hx]} * y.{_halves[_hy]}: one int16 MAC",
        saturation="the 32-bit result wraps; Q is set when the exact sum leaves int32",
        lanes=1,
    )(lambda x, y, acc, _hx=_hx, _hy=_hy: _smla_halves(x, y, acc, _hx, _hy))


@_register(
    "__smulbb", "dsp", (S16x2w, S16x2w), S32, "SMULBB Rd, Rn, Rm",
    meaning="x.lo * y.lo (exact: at most 2^30)", saturation="none", lanes=1,
)
def _smulbb(x, y):
    """Signed 16x16 multiply, bottom halves."""
    return _lanes_of(x, 16, True)[..., 0] * _lanes_of(y, 16, True)[..., 0], None


@_register(
    "__sxtb16", "dsp", (S8x4w, _ROR), S16x2w, "SXTB16 Rd, Rm {, ROR #n}",
    meaning="bytes 0 and 2 of ROR(x, n), sign-extended into the two int16 halves (n = 8 "
    "takes bytes 1 and 3; C: __sxtb16(__ror(x, n)))",
    saturation="none",
)
def _sxtb16(x, ror):
    """Sign-extend two bytes to halfwords."""
    b = _lanes_of(_rotate(x, ror), 8, True)
    return _pack_lanes(b[..., 0::2], 16), None


@_register(
    "__uxtb16", "dsp", (U8x4w, _ROR), U16x2w, "UXTB16 Rd, Rm {, ROR #n}",
    meaning="bytes 0 and 2 of ROR(x, n), zero-extended into the two uint16 halves",
    saturation="none",
)
def _uxtb16(x, ror):
    """Zero-extend two bytes to halfwords."""
    b = _lanes_of(_rotate(x, ror), 8, False)
    return _pack_lanes(b[..., 0::2], 16), None


@_register(
    "__sxtab16", "dsp", (S16x2w, S8x4w, _ROR), S16x2w, "SXTAB16 Rd, Rn, Rm {, ROR #n}",
    meaning="x.lo + sext(ROR(y, n).byte0), x.hi + sext(ROR(y, n).byte2)",
    saturation="none: each halfword wraps modulo 2^16",
)
def _sxtab16(x, y, ror):
    """Add two sign-extended bytes to halfwords."""
    b = _lanes_of(_rotate(y, ror), 8, True)[..., 0::2]
    return _pack_lanes(_lanes_of(x, 16, True) + b, 16), None


@_register(
    "__uxtab16", "dsp", (U16x2w, U8x4w, _ROR), U16x2w, "UXTAB16 Rd, Rn, Rm {, ROR #n}",
    meaning="x.lo + ROR(y, n).byte0, x.hi + ROR(y, n).byte2 (zero-extended)",
    saturation="none: each halfword wraps modulo 2^16",
)
def _uxtab16(x, y, ror):
    """Add two zero-extended bytes to halfwords."""
    b = _lanes_of(_rotate(y, ror), 8, False)[..., 0::2]
    return _pack_lanes(_lanes_of(x, 16, False) + b, 16), None


@_register(
    "__qadd8", "dsp", (S8x4w, S8x4w), S8x4w, "QADD8 Rd, Rn, Rm",
    meaning="x + y in each of four int8 lanes",
    saturation="each lane clamps to [-128, 127]; QADD8 does not touch the Q flag",
)
def _qadd8(x, y):
    """Saturating add of four bytes."""
    return _pack_lanes(_sat(_lanes_of(x, 8, True) + _lanes_of(y, 8, True), 8, True)[0], 8), None


@_register(
    "__qadd16", "dsp", (S16x2w, S16x2w), S16x2w, "QADD16 Rd, Rn, Rm",
    meaning="x + y in each of two int16 lanes",
    saturation="each lane clamps to [-32768, 32767]; QADD16 does not touch the Q flag",
)
def _qadd16(x, y):
    """Saturating add of two halfwords."""
    s = _sat(_lanes_of(x, 16, True) + _lanes_of(y, 16, True), 16, True)[0]
    return _pack_lanes(s, 16), None


@_register(
    "__ssat", "dsp", (S32, Imm("bits", 1, 32)), S32, "SSAT Rd, #bits, Rn",
    meaning="x clamped to the signed range of `bits` bits, [-2^(bits-1), 2^(bits-1) - 1]",
    saturation="sets Q when it clamps",
)
def _ssat(x, bits):
    """Signed saturation to a bit width."""
    return _sat(_i64(x), bits, True)


@_register(
    "__usat", "dsp", (S32, Imm("bits", 0, 31)), U32, "USAT Rd, #bits, Rn",
    meaning="signed x clamped to [0, 2^bits - 1]",
    saturation="sets Q when it clamps",
)
def _usat(x, bits):
    """Unsigned saturation of a signed value to a bit width."""
    return _sat(_i64(x), bits, False)


@_register(
    "__smmulr", "dsp", (S32, S32), S32, "SMMULR Rd, Rn, Rm",
    meaning="round(a * b / 2^32), ties toward +infinity: the high word of the product, rounded "
    "(no ACLE intrinsic: qlane_smmulr, whose C Clang compiles to SMMULR; GCC takes its asm)",
    saturation="none: the result is always within [-2^30, 2^30]",
)
def _smmulr(a, b):
    """Most-significant word multiply, rounded."""
    return (_i64(a) * _i64(b) + (1 << 31)) >> 32, None


@_register(
    "__smmlar", "dsp", (S32, S32, S32), S32, "SMMLAR Rd, Rn, Rm, Ra",
    meaning="acc + round(a * b / 2^32): SMMULR's rounded high word added to acc",
    saturation="the 32-bit result wraps", intrinsic="qlane_smmlar",
)
def _smmlar(a, b, acc):
    """Most-significant word multiply-accumulate, rounded."""
    exact = _i64(acc) + ((_i64(a) * _i64(b) + (1 << 31)) >> 32)
    return _wrap(exact, 32, True), None


@_register(
    "__pkhbt", "dsp", (U32, U32), U32, "PKHBT Rd, Rn, Rm",
    meaning="the low halfword of lo under the high halfword of hi",
    saturation="none", intrinsic="qlane_pkhbt",
)
def _pkhbt(lo, hi):
    """Pack halfwords: bottom of lo, top of hi."""
    return (_i64(lo) & 0xFFFF) | (_i64(hi) & 0xFFFF0000), None


@_register(
    "__pack_lo16", "dsp", (U32, U32), U32, "PKHBT Rd, Rn, Rm, LSL #16",
    meaning="the low halfwords of a and b as (a's, b's)",
    saturation="none", intrinsic="qlane_pack_lo16",
)
def _pack_lo16(a, b):
    """Pack the bottom halfwords."""
    return (_i64(a) & 0xFFFF) | ((_i64(b) & 0xFFFF) << 16), None


@_register(
    "__pack_hi16", "dsp", (U32, U32), U32, "PKHTB Rd, Rm, Rn, ASR #16",
    meaning="the high halfwords of a and b as (a's, b's)",
    saturation="none", intrinsic="qlane_pack_hi16",
)
def _pack_hi16(a, b):
    """Pack the top halfwords."""
    return ((_i64(a) >> 16) & 0xFFFF) | (_i64(b) & 0xFFFF0000), None


@_register(
    "smull", "dsp", (S32, S32), S64, "SMULL RdLo, RdHi, Rn, Rm",
    meaning="a * b as int64 (exact)", saturation="none",
    intrinsic="(int64_t)a * (int64_t)b",
)
def _smull(a, b):
    """32x32 -> 64 signed multiply."""
    return _i64(a) * _i64(b), None


@_register(
    "smlal", "dsp", (S64, S32, S32), S64, "SMLAL RdLo, RdHi, Rn, Rm",
    meaning="acc + a * b in 64 bits", saturation="none: wraps modulo 2^64",
    intrinsic="acc + (int64_t)a * (int64_t)b",
)
def _smlal(acc, a, b):
    """32x32 -> 64 signed multiply-accumulate."""
    prod = (_i64(a) * _i64(b)).view(np.uint64)
    return _wrap64(np.asarray(acc, np.int64).view(np.uint64) + prod), None


# --- requantization composed from lane operations ------------------------------------------------


def _lane_vector(v, like: np.ndarray, what: str,
                 registry: dict[str, Instruction] | None = None) -> np.ndarray:
    """A scalar (VDUP of ``registry``: NEON's by default) or per-lane int32 operand broadcast to
    the shape of ``like``."""
    a = np.asarray(v, np.int64)
    if np.any((a < INT32_MIN) | (a > INT32_MAX)):
        raise ValueError(f"{what} must fit int32")
    if a.ndim == 0:
        vdup = (INSTRUCTIONS if registry is None else registry)["vdupq_n_s32"]
        return np.broadcast_to(vdup(a.astype(np.int32)), like.shape)
    return np.ascontiguousarray(np.broadcast_to(a.astype(np.int32), like.shape))


def requantize_neon(
    acc: np.ndarray,
    multiplier,
    shift,
    rounding: Rounding = "double",
    *,
    fixup: bool = True,
) -> np.ndarray:
    """TFLite's MultiplyByQuantizedMultiplier on int32x4 registers, built from NEON lane ops.

    ``acc`` is int32 ``(..., 4)``; ``multiplier`` and ``shift`` are scalars or per-lane
    (per-channel) values broadcastable to it. Equals
    ``fixedpoint.mul_by_quantized_multiplier(acc, multiplier, shift, rounding)`` everywhere.

    - ``double`` / ``litert``: VSHL (wrapping, as C's ``x * (1 << left_shift)``), VQRDMULH, then
      gemmlowp's RoundingDivideByPOT: ``fixup = VSHR(VAND(x, -exponent), 31)``, VQADD, VRSHL.
      ``fixup=False`` drops the fix-up as TFLite's optimized_ops MultiplyByQuantizedMultiplier4Rows
      does: negative ties then round toward +infinity instead of away from zero.
    - ``single``: for ``shift < 0`` VQDMULH + VRSHL (TFLite's single-rounding NEON path). TFLite
      shifts left by ``shift + 1`` for ``shift >= 0`` and wraps once ``x << (shift + 1)`` leaves
      int32; here those shifts go through 64 bits (VMULL.S32, VRSHL.S64, VQMOVN.S64), exact and
      saturating like the reference.
    """
    op = INSTRUCTIONS
    acc = np.asarray(acc)
    if acc.dtype != np.int32 or acc.shape[-1:] != (4,):
        raise TypeError("requantize_neon: acc must be int32 (..., 4)")
    m = _lane_vector(multiplier, acc, "multiplier")
    s = np.broadcast_to(np.asarray(shift, np.int64), acc.shape)
    if rounding == "single":
        if np.any((s < -31) | (s > 30)):
            raise ValueError("single rounding needs shift in [-31, 30]")
        if np.all(s < 0):
            return op["vrshlq_s32"](op["vqdmulhq_s32"](acc, m), s.astype(np.int32))
        post = (s - 31).astype(np.int32)  # rounding right shift by 31 - shift
        halves = []
        for half in ("vget_low_s32", "vget_high_s32"):
            prod = op["vmull_s32"](op[half](acc), op[half](m))
            shifted = op["vrshlq_s64"](prod, op["vmovl_s32"](op[half](post)))
            halves.append(op["vqmovn_s64"](shifted))
        return op["vcombine_s32"](*halves)
    if rounding not in ("double", "litert"):
        raise ValueError(f"unknown rounding {rounding!r}")
    if np.any((s < -31) | (s > 31)):
        raise ValueError("shift must be in [-31, 31]")
    left = np.maximum(s, 0).astype(np.int32)
    neg_exponent = np.minimum(s, 0).astype(np.int32)
    x = op["vqrdmulhq_s32"](op["vshlq_s32"](acc, left), m)
    if fixup:
        x = op["vqaddq_s32"](x, op["vshrq_n_s32"](op["vandq_s32"](x, neg_exponent), 31))
    return op["vrshlq_s32"](x, neg_exponent)


def requantize_dsp(
    acc,
    multiplier,
    shift,
    rounding: Rounding = "double",
    *,
    guard: bool = True,
) -> np.ndarray:
    """CMSIS-NN's ``arm_nn_requantize`` on int32 values, with its 64-bit SMULL / SMLAL.

    Equals ``fixedpoint.mul_by_quantized_multiplier(acc, multiplier, shift, rounding)``
    everywhere while ``guard`` is on. ``guard=False`` reproduces CMSIS-NN exactly, which differs
    at two corners:

    - ``double``: ``arm_nn_doubling_high_mult_no_sat`` does not saturate: with both the shifted
      accumulator and the multiplier INT32_MIN the product 2^31 wraps to INT32_MIN (the
      reference, like VQRDMULH, gives INT32_MAX). The guard selects INT32_MAX there.
    - ``single`` (``CMSIS_NN_USE_SINGLE_ROUNDING``): the product shifted right by
      ``30 - shift`` is truncated to int32 before the final ``(r + 1) >> 1``, so results of
      magnitude about 2^30 and above wrap. The guard keeps 64 bits and saturates to int32.
    """
    op = INSTRUCTIONS
    x = np.asarray(acc)
    if x.dtype != np.int32:
        raise TypeError("requantize_dsp: acc must be int32")
    m = np.broadcast_to(np.asarray(multiplier, np.int64), x.shape)
    if np.any((m < INT32_MIN) | (m > INT32_MAX)):
        raise ValueError("multiplier must fit int32")
    m = m.astype(np.int32)
    s = np.broadcast_to(np.asarray(shift, np.int64), x.shape)
    if rounding == "single":
        if np.any((s < -31) | (s > 30)):
            raise ValueError("single rounding needs shift in [-31, 30]")
        r = op["smull"](x, m) >> (30 - s)
        if guard:
            return np.clip((r + 1) >> 1, INT32_MIN, INT32_MAX).astype(np.int32)
        return (_wrap(_wrap(r, 32, True) + 1, 32, True) >> 1).astype(np.int32)
    if rounding not in ("double", "litert"):
        raise ValueError(f"unknown rounding {rounding!r}")
    if np.any((s < -31) | (s > 31)):
        raise ValueError("shift must be in [-31, 31]")
    left = np.maximum(s, 0)
    right = np.maximum(-s, 0)
    xs = _wrap(_i64(x) << left, 32, True).astype(np.int32)
    high = _wrap(op["smlal"](np.int64(1 << 30), xs, m) >> 31, 32, True)
    if guard:
        high = np.where((xs == INT32_MIN) & (m == INT32_MIN), INT32_MAX, high)
    # arm_nn_divide_by_power_of_two
    mask = _wrap((np.int64(1) << right) - 1, 32, True)
    remainder = mask & high
    result = high >> right
    threshold = (mask >> 1) + (result < 0)
    return (result + (remainder > threshold)).astype(np.int32)


# --- MVE (Helium: Armv8.1-M, Cortex-M55 / M85) ---------------------------------------------------
#
# From the Armv8.1-M pseudocode (DDI0553). Registers are 128-bit (..., lanes) arrays as for NEON.
# A predicate (mve_pred16_t, VPR.P0) is a uint16 scalar holding one bit per byte of a register:
# element e of an esize-bit instruction is active when bit e * esize / 8 (the bit of its lowest
# byte) is set, as the pseudocode's elmtMask reads it; VCTP sets every bit of an active element.
# Memory is explicit: a load's first operand is what it reads at the pointer (elements of the
# memory type, ``(..., n)``), a store's result is what it leaves there, and a predicated store's
# first operand is the memory before it (inactive elements keep it).

MVE_INSTRUCTIONS: dict[str, Instruction] = {}
"""The MVE instructions, keyed by their explicitly typed arm_mve.h intrinsic (``vmladavaq_s8``,
not the polymorphic ``vmladavaq``). A registry of its own: arm_mve.h reuses NEON's names
(``vqrdmulhq_s32``, ``vshlq_s32``, ``vld1q_s8`` ...), which `INSTRUCTIONS` keeps for NEON."""


def _register_mve(
    name: str,
    inputs: tuple[Operand, ...],
    output: Vec,
    mnemonic: str,
    meaning: str,
    saturation: str,
    lanes: int | None = None,
):
    """`_register` for MVE: an ``"mve"`` `Instruction` in `MVE_INSTRUCTIONS`, named by its
    intrinsic."""

    def deco(fn: Callable[..., tuple[np.ndarray, np.ndarray | None]]) -> Instruction:
        inst = Instruction(
            name=name,
            isa="mve",
            lanes=output.lanes if lanes is None else lanes,
            inputs=inputs,
            output=output,
            intrinsic=name,
            mnemonic=mnemonic,
            meaning=meaning,
            saturation=saturation,
            impl=fn,
        )
        MVE_INSTRUCTIONS[name] = inst
        return inst

    return deco


P16 = Vec("uint16", 1)  # mve_pred16_t
S8, S16 = Vec("int8", 1), Vec("int16", 1)
S8x4m, U8x4m = Vec("int8", 4), Vec("uint8", 4)  # four bytes in memory (VLDRB.32 / VSTRB.32)
GATHER_BYTES = 64
S8xG = Vec("int8", GATHER_BYTES)
"""The memory a byte gather or scatter reaches in the emulator: ``GATHER_BYTES`` bytes from the
base register, every offset inside them (a program's offsets may reach further)."""


def _active(p, lanes: int) -> np.ndarray:
    """Active elements of predicate ``p`` for ``lanes`` elements: bit ``e * 16 / lanes``."""
    bits = np.arange(lanes, dtype=np.int64) * (16 // lanes)
    return ((_i64(p)[..., None] >> bits) & 1).astype(bool)


def _scalar_lanes(x) -> np.ndarray:
    """A general-purpose register operand (the ``_n`` forms) against every lane."""
    return _i64(x)[..., None]


def _mve_load(memory):
    """The elements at the pointer, sign- or zero-extended from their memory type."""
    return _i64(memory), None


for _name, _mem, _out, _mn, _meaning in (
    ("vld1q_s8", S8x16, S8x16, "VLDRB.8 Qd, [Rn]", "the 16 int8 at the pointer"),
    ("vld1q_u8", U8x16, U8x16, "VLDRB.8 Qd, [Rn]", "the 16 uint8 at the pointer"),
    ("vldrbq_s16", S8x8, S16x8, "VLDRB.S16 Qd, [Rn]",
     "the 8 int8 at the pointer, sign-extended into int16 lanes"),
    ("vldrbq_u16", U8x8, U16x8, "VLDRB.U16 Qd, [Rn]",
     "the 8 uint8 at the pointer, zero-extended into uint16 lanes"),
    ("vldrbq_s32", S8x4m, S32x4, "VLDRB.S32 Qd, [Rn]",
     "the 4 int8 at the pointer, sign-extended into int32 lanes"),
    ("vldrbq_u32", U8x4m, U32x4, "VLDRB.U32 Qd, [Rn]",
     "the 4 uint8 at the pointer, zero-extended into uint32 lanes"),
    ("vldrwq_s32", S32x4, S32x4, "VLDRW.32 Qd, [Rn]", "the 4 int32 at the pointer"),
    ("vld1q_s32", S32x4, S32x4, "VLDRW.32 Qd, [Rn]",
     "the 4 int32 at the pointer (vldrwq_s32's alias)"),
):
    _register_mve(_name, (_mem,), _out, _mn, meaning=_meaning, saturation="none")(_mve_load)


@_register_mve(
    "vldrbq_z_s8", (S8x16, P16), S8x16, "VPST; VLDRBT.8 Qd, [Rn]",
    meaning="the int8 at the pointer in the active lanes (bit e of p), 0 in the others, whose "
    "bytes are not read (the tail of a predicated loop)",
    saturation="none",
)
def _vldrbq_z_s8(memory, p):
    """Predicated load: inactive lanes are zeroed."""
    return np.where(_active(p, 16), _i64(memory), 0), None


def _mve_load_z(lanes: int):
    def impl(memory, p):
        return np.where(_active(p, lanes), _i64(memory), 0), None

    return impl


for _name, _mem, _out, _mn, _ext in (
    ("vldrbq_z_s16", S8x8, S16x8, "VPST; VLDRBT.S16 Qd, [Rn]", "sign-extended into int16"),
    ("vldrbq_z_u16", U8x8, U16x8, "VPST; VLDRBT.U16 Qd, [Rn]", "zero-extended into uint16"),
    ("vldrbq_z_s32", S8x4m, S32x4, "VPST; VLDRBT.S32 Qd, [Rn]", "sign-extended into int32"),
    ("vldrbq_z_u32", U8x4m, U32x4, "VPST; VLDRBT.U32 Qd, [Rn]", "zero-extended into uint32"),
):
    _bit = 16 // _out.lanes
    _register_mve(
        _name, (_mem, P16), _out, _mn,
        meaning=f"the {_mem.dtype} at the pointer {_ext} lanes where active (bit {_bit}e of "
        "p), 0 in the others, whose bytes are not read (a predicated tail)",
        saturation="none",
    )(_mve_load_z(_out.lanes))


def _mve_store(bits: int, signed: bool):
    def impl(value):
        return _wrap(_i64(value), bits, signed), None

    return impl


for _name, _val, _mem, _mn, _meaning in (
    ("vst1q_s8", S8x16, S8x16, "VSTRB.8 Qd, [Rn]", "the 16 int8 lanes written at the pointer"),
    ("vst1q_u8", U8x16, U8x16, "VSTRB.8 Qd, [Rn]", "the 16 uint8 lanes written at the pointer"),
    ("vstrbq_s32", S32x4, S8x4m, "VSTRB.32 Qd, [Rn]",
     "the low byte of each int32 lane written at the pointer (truncation, not saturation)"),
    ("vstrbq_u32", U32x4, U8x4m, "VSTRB.32 Qd, [Rn]",
     "the low byte of each uint32 lane written at the pointer (truncation)"),
    ("vstrwq_s32", S32x4, S32x4, "VSTRW.32 Qd, [Rn]", "the 4 int32 lanes written at the pointer"),
):
    _register_mve(_name, (_val,), _mem, _mn, meaning=_meaning, saturation="none")(
        _mve_store(_mem.lane_bits, _mem.signed)
    )


@_register_mve(
    "vstrbq_p_s32", (S8x4m, S32x4, P16), S8x4m, "VPST; VSTRBT.32 Qd, [Rn]",
    meaning="the low byte of each active int32 lane (bit 4e of p) written at the pointer; the "
    "bytes of inactive lanes keep the memory's value (operand 0)",
    saturation="none",
)
def _vstrbq_p_s32(memory, value, p):
    """Predicated truncating byte store of int32 lanes."""
    return np.where(_active(p, 4), _wrap(_i64(value), 8, True), _i64(memory)), None


_register_mve(
    "vstrbq_s16", (S16x8,), S8x8, "VSTRB.16 Qd, [Rn]",
    meaning="the low byte of each int16 lane written at the pointer (truncation, not saturation)",
    saturation="none",
)(_mve_store(8, True))


def _mve_store_p(lanes: int):
    def impl(memory, value, p):
        return np.where(_active(p, lanes), _wrap(_i64(value), 8, True), _i64(memory)), None

    return impl


for _name, _mem, _val, _mn, _what in (
    ("vstrbq_p_s8", S8x16, S8x16, "VPST; VSTRBT.8 Qd, [Rn]", "each active int8 lane (bit e"),
    ("vstrbq_p_s16", S8x8, S16x8, "VPST; VSTRBT.16 Qd, [Rn]",
     "the low byte of each active int16 lane (bit 2e"),
):
    _register_mve(
        _name, (_mem, _val, P16), _mem, _mn,
        meaning=f"{_what} of p) written at the pointer; the bytes of inactive lanes keep the "
        "memory's value (operand 0)",
        saturation="none",
    )(_mve_store_p(_val.lanes))


def _offsets(memory: np.ndarray, offsets) -> np.ndarray:
    """Byte offsets of a gather or scatter, checked to lie inside the emulated memory."""
    o = _i64(offsets)
    if np.any((o < 0) | (o >= memory.shape[-1])):
        raise ValueError(f"gather/scatter offset outside the {memory.shape[-1]} emulated bytes")
    return o


@_register_mve(
    "vldrbq_gather_offset_s32", (S8xG, U32x4), S32x4, "VLDRB.S32 Qd, [Rn, Qm]",
    meaning="lane e: the int8 at the pointer + offset[e] (bytes), sign-extended into int32",
    saturation="none",
)
def _vldrbq_gather_offset_s32(memory, offsets):
    """Byte gather: memory[offset[e]] per lane."""
    m = _i64(memory)
    o = _offsets(m, offsets)
    lead = np.broadcast_shapes(m.shape[:-1], o.shape[:-1])
    m = np.broadcast_to(m, lead + m.shape[-1:])
    o = np.broadcast_to(o, lead + o.shape[-1:])
    return np.take_along_axis(m, o, axis=-1), None


def _scatter(memory, offsets, value, p=None):
    """Byte scatter of the lanes' low bytes, lane 0 first (a later lane wins a shared byte)."""
    m = _i64(memory)
    o = _offsets(m, offsets)
    v = _wrap(_i64(value), 8, True)
    lanes = v.shape[-1]
    act = np.ones(v.shape, bool) if p is None else _active(p, lanes)
    lead = np.broadcast_shapes(m.shape[:-1], o.shape[:-1], v.shape[:-1], act.shape[:-1])
    out = np.array(np.broadcast_to(m, lead + m.shape[-1:])).reshape(-1, m.shape[-1])
    o, v, act = (np.broadcast_to(a, lead + (lanes,)).reshape(-1, lanes) for a in (o, v, act))
    rows = np.arange(out.shape[0])
    for e in range(lanes):
        on = act[:, e]
        out[rows[on], o[on, e]] = v[on, e]
    return out.reshape(lead + m.shape[-1:]), None


_register_mve(
    "vstrbq_scatter_offset_s32", (S8xG, U32x4, S32x4), S8xG, "VSTRB.32 Qd, [Rn, Qm]",
    meaning="the low byte of int32 lane e written at the pointer + offset[e] (bytes), lanes in "
    "order (the last lane to a byte wins); other bytes keep the memory's value (operand 0)",
    saturation="none",
)(_scatter)
_register_mve(
    "vstrbq_scatter_offset_s16", (S8xG, U16x8, S16x8), S8xG, "VSTRB.16 Qd, [Rn, Qm]",
    meaning="the low byte of int16 lane e written at the pointer + offset[e] (bytes), lanes in "
    "order (the last lane to a byte wins); other bytes keep the memory's value (operand 0)",
    saturation="none",
)(_scatter)
_register_mve(
    "vstrbq_scatter_offset_p_s32", (S8xG, U32x4, S32x4, P16), S8xG,
    "VPST; VSTRBT.32 Qd, [Rn, Qm]",
    meaning="vstrbq_scatter_offset_s32 for the active lanes (bit 4e of p) only",
    saturation="none",
)(_scatter)


def _vctp(lanes: int):
    def impl(n):
        count = np.minimum(_i64(n), lanes)
        return (np.int64(1) << (count * (16 // lanes))) - 1, None

    return impl


for _lanes in (16, 8, 4):
    _bits = 16 // _lanes * 8
    _register_mve(
        f"vctp{_bits}q", (U32,), P16, f"VCTP.{_bits} Rn; VMRS Rd, P0",
        meaning=f"the predicate of the first min(n, {_lanes}) {_bits}-bit lanes (n unsigned: "
        f"every n >= {_lanes} gives all {_lanes}), each lane's {16 // _lanes} bit(s) set",
        saturation="none", lanes=_lanes,
    )(_vctp(_lanes))


def _mladav(signed: bool, accumulate: bool, predicated: bool, lanes: int):
    def impl(*args):
        acc = _i64(args[0]) if accumulate else np.int64(0)
        a, b = args[int(accumulate) : int(accumulate) + 2]
        prod = _i64(a) * _i64(b)
        if predicated:
            prod = np.where(_active(args[-1], lanes), prod, 0)
        return _wrap(acc + prod.sum(axis=-1), 32, signed), None

    return impl


_WRAPS = "none: the 32-bit Rda wraps modulo 2^32"
for _name, _ins, _out, _signed, _acc, _pred, _mn, _meaning in (
    ("vmladavq_s8", (S8x16, S8x16), S32, True, False, False, "VMLADAV.S8 Rda, Qn, Qm",
     "sum_e a[e] * b[e] over the 16 int8 lanes (exact: at most 16 * 2^14)"),
    ("vmladavaq_s8", (S32, S8x16, S8x16), S32, True, True, False, "VMLADAVA.S8 Rda, Qn, Qm",
     "acc + sum_e a[e] * b[e] over the 16 int8 lanes"),
    ("vmladavaq_p_s8", (S32, S8x16, S8x16, P16), S32, True, True, True,
     "VPST; VMLADAVAT.S8 Rda, Qn, Qm",
     "acc + sum of a[e] * b[e] over the active int8 lanes (bit e of p)"),
    ("vmladavaq_u8", (U32, U8x16, U8x16), U32, False, True, False, "VMLADAVA.U8 Rda, Qn, Qm",
     "acc + sum_e a[e] * b[e] over the 16 uint8 lanes"),
    ("vmladavaq_s16", (S32, S16x8, S16x8), S32, True, True, False, "VMLADAVA.S16 Rda, Qn, Qm",
     "acc + sum_e a[e] * b[e] over the 8 int16 lanes"),
    ("vmladavaq_p_s16", (S32, S16x8, S16x8, P16), S32, True, True, True,
     "VPST; VMLADAVAT.S16 Rda, Qn, Qm",
     "acc + sum of a[e] * b[e] over the active int16 lanes (bit 2e of p)"),
):
    _lanes = _ins[-2 if _pred else -1].lanes
    _register_mve(_name, _ins, _out, _mn, meaning=_meaning, saturation=_WRAPS, lanes=_lanes)(
        _mladav(_signed, _acc, _pred, _lanes)
    )


def _dup(lanes: int):
    def impl(x):
        return np.repeat(_i64(x)[..., None], lanes, axis=-1), None

    return impl


for _t, _s in ((S8, S8x16), (S16, S16x8), (S32, S32x4)):
    _register_mve(
        f"vdupq_n_s{_t.lane_bits}", (_t,), _s, f"VDUP.{_t.lane_bits} Qd, Rt",
        meaning=f"one int{_t.lane_bits} copied to every lane", saturation="none",
    )(_dup(_s.lanes))


def _lanewise(fn, bits: int, scalar: bool = False):
    """A wrapping lane operation fn(a, b) on int64 values; ``scalar``: b is a general register."""

    def impl(a, b):
        b = _scalar_lanes(b) if scalar else _i64(b)
        return _wrap(fn(_i64(a), b), bits, True), None

    return impl


for _name, _ins, _out, _mn, _fn, _meaning in (
    ("vaddq_s32", (S32x4, S32x4), S32x4, "VADD.I32 Qd, Qn, Qm", np.add, "a + b per lane"),
    ("vaddq_n_s32", (S32x4, S32), S32x4, "VADD.I32 Qd, Qn, Rm", np.add, "a + b, b a scalar"),
    ("vaddq_s16", (S16x8, S16x8), S16x8, "VADD.I16 Qd, Qn, Qm", np.add, "a + b per lane"),
    ("vsubq_s16", (S16x8, S16x8), S16x8, "VSUB.I16 Qd, Qn, Qm", np.subtract, "a - b per lane"),
    ("vsubq_n_s16", (S16x8, S16), S16x8, "VSUB.I16 Qd, Qn, Rm", np.subtract,
     "a - b, b a scalar (an input zero point)"),
    ("vmulq_s32", (S32x4, S32x4), S32x4, "VMUL.I32 Qd, Qn, Qm", np.multiply,
     "a * b per lane, the low 32 bits of the product"),
    ("vmulq_n_s32", (S32x4, S32), S32x4, "VMUL.I32 Qd, Qn, Rm", np.multiply,
     "a * b, b a scalar, the low 32 bits of the product"),
):
    _bits = _out.lane_bits
    _register_mve(_name, _ins, _out, _mn, meaning=_meaning,
                  saturation=f"none: wraps modulo 2^{_bits}")(
        _lanewise(_fn, _bits, scalar=_ins[1].lanes == 1)
    )


@_register_mve(
    "vmlaq_n_s32", (S32x4, S32x4, S32), S32x4, "VMLA.S32 Qda, Qn, Rm",
    meaning="add + m1 * m2 per lane, m2 a scalar (MVE has no vector-by-vector integer VMLA: "
    "there is no vmlaq_s32; use vaddq_s32(add, vmulq_s32(m1, m2)))",
    saturation="none: wraps modulo 2^32",
)
def _vmlaq_n_s32(add, m1, m2):
    """Multiply by a scalar and accumulate."""
    return _wrap(_i64(add) + _i64(m1) * _scalar_lanes(m2), 32, True), None


for _t, _suffix in ((S32x4, "s32"), (S16x8, "s16"), (S8x16, "s8"), (U8x16, "u8")):
    for _op, _fn, _use in (("max", np.maximum, "lower"), ("min", np.minimum, "upper")):
        _register_mve(
            f"v{_op}q_{_suffix}", (_t, _t), _t, f"V{_op.upper()}.{_suffix.upper()} Qd, Qn, Qm",
            meaning=f"{_op}(a, b) per lane (the {_use} clamp of a fused activation, pools)",
            saturation="none",
        )(_minmax(_fn))


# the same lane operations as the NEON entries of these names: their definitions serve both
_register_mve(
    "vqaddq_s32", (S32x4, S32x4), S32x4, "VQADD.S32 Qd, Qn, Qm",
    meaning="a + b per lane",
    saturation="clamps to [INT32_MIN, INT32_MAX], setting QC",
)(INSTRUCTIONS["vqaddq_s32"].impl)


@_register_mve(
    "vqaddq_n_s16", (S16x8, S16), S16x8, "VQADD.S16 Qd, Qn, Rm",
    meaning="a + b per lane, b a scalar (an output zero point)",
    saturation="clamps to [-32768, 32767], setting QC",
)
def _vqaddq_n_s16(a, b):
    """Saturating add of a scalar."""
    return _sat(_i64(a) + _scalar_lanes(b), 16, True)


_register_mve(
    "vandq_s32", (S32x4, S32x4), S32x4, "VAND Qd, Qn, Qm",
    meaning="bitwise a AND b", saturation="none",
)(INSTRUCTIONS["vandq_s32"].impl)


@_register_mve(
    "vshrq_n_s32", (S32x4, Imm("imm", 1, 32)), S32x4, "VSHR.S32 Qd, Qm, #imm",
    meaning="floor(a / 2^imm), arithmetic shift right by an immediate 1..32 (imm >= 31: the "
    "sign mask 0 or -1)",
    saturation="none",
)
def _mve_vshrq_n_s32(a, imm):
    """Arithmetic shift right by an immediate."""
    return _i64(a) >> min(imm, 31), None


@_register_mve(
    "vshlq_n_s16", (S16x8, Imm("imm", 0, 15)), S16x8, "VSHL.I16 Qd, Qm, #imm",
    meaning="a * 2^imm per lane, shift left by an immediate 0..15, the low 16 bits",
    saturation="none: wraps modulo 2^16",
)
def _mve_vshlq_n_s16(a, imm):
    """Shift left by an immediate, wrapping."""
    return _wrap(_i64(a) << imm, 16, True), None


_register_mve(
    "vshlq_s32", (S32x4, S32x4), S32x4, "VSHL.S32 Qd, Qm, Qn",
    meaning="a * 2^s with s the signed low byte of b: s >= 0 shifts left, s < 0 shifts right "
    "arithmetically (floor, truncating)",
    saturation="none: left shifts wrap; s >= 32 gives 0, s <= -32 the sign",
)(INSTRUCTIONS["vshlq_s32"].impl)
_register_mve(
    "vrshlq_s32", (S32x4, S32x4), S32x4, "VRSHL.S32 Qd, Qm, Qn",
    meaning="a * 2^s with s the signed low byte of b: for s < 0 round(a / 2^-s), ties toward "
    "+infinity, computed without overflow; for s >= 0 a << s",
    saturation="none: left shifts wrap; s <= -32 gives 0",
)(INSTRUCTIONS["vrshlq_s32"].impl)


@_register_mve(
    "vrshlq_n_s32", (S32x4, S32), S32x4, "VRSHL.S32 Qda, Rm",
    meaning="vrshlq_s32 by the signed low byte of the scalar b in every lane (a per-tensor or "
    "per-channel right shift held in a general register)",
    saturation="none: left shifts wrap; s <= -32 gives 0",
)
def _mve_vrshlq_n_s32(a, b):
    """Rounding shift by a scalar."""
    return INSTRUCTIONS["vrshlq_s32"].impl(a, _scalar_lanes(b))


@_register_mve(
    "vqshlq_s32", (S32x4, S32x4), S32x4, "VQSHL.S32 Qd, Qm, Qn",
    meaning="a * 2^s with s the signed low byte of b: s >= 0 shifts left, s < 0 shifts right "
    "arithmetically (floor, truncating)",
    saturation="left shifts clamp to [INT32_MIN, INT32_MAX] (any s >= 32 of a nonzero a), "
    "setting QC; right shifts never saturate",
)
def _mve_vqshlq_s32(a, b):
    """Saturating shift by a signed per-lane amount."""
    s = _shift_amount(b)
    a, s = np.broadcast_arrays(_i64(a), s)
    left, sat = _sat(a << np.clip(s, 0, 32), 32, True)
    right = a >> np.clip(-s, 0, 40)
    return np.where(s < 0, right, left), sat & (s >= 0)


def _qdmulh(rounding: bool, scalar: bool):
    def impl(a, b):
        b = _scalar_lanes(b) if scalar else _i64(b)
        return _sat((_i64(a) * b + ((1 << 30) if rounding else 0)) >> 31, 32, True)

    return impl


_Q31_SAT = "only INT32_MIN * INT32_MIN (+1.0) saturates, to INT32_MAX, setting QC"
_register_mve(
    "vqrdmulhq_s32", (S32x4, S32x4), S32x4, "VQRDMULH.S32 Qd, Qn, Qm",
    meaning="round(a * b / 2^31) per lane, ties toward +infinity: the Q31 product",
    saturation=_Q31_SAT,
)(_qdmulh(True, False))
_register_mve(
    "vqrdmulhq_n_s32", (S32x4, S32), S32x4, "VQRDMULH.S32 Qd, Qn, Rm",
    meaning="round(a * b / 2^31), ties toward +infinity, b a scalar (one multiplier per tensor)",
    saturation=_Q31_SAT,
)(_qdmulh(True, True))
_register_mve(
    "vqdmulhq_s32", (S32x4, S32x4), S32x4, "VQDMULH.S32 Qd, Qn, Qm",
    meaning="floor(a * b / 2^31) per lane: the Q31 product, truncated toward -infinity",
    saturation=_Q31_SAT,
)(_qdmulh(False, False))


@_register_mve(
    "vmulhq_s32", (S32x4, S32x4), S32x4, "VMULH.S32 Qd, Qn, Qm",
    meaning="floor(a * b / 2^32) per lane: the high word of the 64-bit product",
    saturation="none: the result lies in [-2^30, 2^30]",
)
def _vmulhq_s32(a, b):
    """High half of the product."""
    return (_i64(a) * _i64(b)) >> 32, None


@_register_mve(
    "vmulhq_u32", (U32x4, U32x4), U32x4, "VMULH.U32 Qd, Qn, Qm",
    meaning="floor(a * b / 2^32) per uint32 lane: the high word of the unsigned 64-bit product",
    saturation="none",
)
def _vmulhq_u32(a, b):
    """High half of the unsigned product (exact in uint64)."""
    prod = np.asarray(a).astype(np.uint64) * np.asarray(b).astype(np.uint64)
    return (prod >> np.uint64(32)).astype(np.int64), None


@_register_mve(
    "vrmulhq_s32", (S32x4, S32x4), S32x4, "VRMULH.S32 Qd, Qn, Qm",
    meaning="round(a * b / 2^32) per lane, ties toward +infinity: the rounded high word",
    saturation="none: the result lies in [-2^30, 2^30]",
)
def _vrmulhq_s32(a, b):
    """Rounded high half of the product."""
    return (_i64(a) * _i64(b) + (1 << 31)) >> 32, None


def _shll(top: bool):
    """VSHLL{B,T}: the even (bottom) or odd (top) lanes widened to twice their width and shifted
    left by the immediate."""

    def impl(a, imm):
        return _i64(a)[..., int(top) :: 2] << imm, None

    return impl


for _name, _in, _out, _top in (
    ("vshllbq_n_s16", S16x8, S32x4, False), ("vshlltq_n_s16", S16x8, S32x4, True),
    ("vshllbq_n_u16", U16x8, U32x4, False), ("vshlltq_n_u16", U16x8, U32x4, True),
):
    _half = "odd (top) lanes 2e + 1" if _top else "even (bottom) lanes 2e"
    _register_mve(
        _name, (_in, Imm("imm", 1, 16)), _out,
        f"VSHLL{'T' if _top else 'B'}.{'S' if _in.signed else 'U'}16 Qd, Qm, #imm",
        meaning=f"a's {_half}, {'sign' if _in.signed else 'zero'}-extended to 32 bits and "
        "shifted left by imm (1..16): lane e of the result",
        saturation="none: exact (at most 32 bits)",
    )(_shll(_top))


def _narrow_into(bits: int, top: bool, saturating: bool):
    """VMOVN{B,T} / VQMOVN{B,T}: b's lanes narrowed into the even (bottom) or odd (top) lanes of
    a, whose other lanes are kept."""

    def impl(a, b):
        v = _i64(b)
        v, sat = _sat(v, bits, True) if saturating else (_wrap(v, bits, True), None)
        a = _i64(a)
        shape = np.broadcast_shapes(a.shape[:-1], v.shape[:-1]) + a.shape[-1:]
        out = np.array(np.broadcast_to(a, shape))
        out[..., int(top) :: 2] = v
        if sat is None:
            return out, None
        flags = np.zeros(shape, bool)
        flags[..., int(top) :: 2] = sat
        return out, flags

    return impl


for _bits, _narrow_t, _wide_t in ((16, S16x8, S32x4), (8, S8x16, S16x8)):
    _w = 2 * _bits
    _lo, _hi = _range(_bits, True)
    for _name, _top, _q in (
        (f"vmovnbq_s{_w}", False, False),
        (f"vqmovnbq_s{_w}", False, True),
        (f"vqmovntq_s{_w}", True, True),
    ):
        _half = "odd (top)" if _top else "even (bottom)"
        _register_mve(
            _name, (_narrow_t, _wide_t), _narrow_t,
            f"V{'Q' if _q else ''}MOVN{'T' if _top else 'B'}.{'S' if _q else 'I'}{_w} Qd, Qm",
            meaning=f"b's int{_w} lanes narrowed into the {_half} int{_bits} lanes of a; a's "
            "other lanes are kept",
            saturation=f"clamps to [{_lo}, {_hi}], setting QC" if _q
            else f"none: keeps the low {_bits} bits",
        )(_narrow_into(_bits, _top, _q))


def _reinterpret(out_dtype: str):
    def impl(a):
        a = np.ascontiguousarray(a, np.dtype(a.dtype).newbyteorder("<"))
        return a.view(np.dtype(out_dtype).newbyteorder("<")).astype(out_dtype), None

    return impl


_VECTORS = {"s8": S8x16, "u8": U8x16, "s16": S16x8, "u16": U16x8, "s32": S32x4, "u32": U32x4}
for _to, _from in (
    ("s8", "s16"), ("s16", "s8"), ("s8", "s32"), ("s32", "s8"), ("s16", "s32"), ("s32", "s16"),
    ("u8", "s8"), ("s8", "u8"), ("u16", "s16"), ("s16", "u16"), ("u32", "s32"), ("s32", "u32"),
):
    _register_mve(
        f"vreinterpretq_{_to}_{_from}", (_VECTORS[_from],), _VECTORS[_to],
        "(none: the same register)",
        meaning=f"the 128 bits of a {_VECTORS[_from].c_type} read as a {_VECTORS[_to].c_type} "
        "(little-endian: lane 0 in the lowest bytes)",
        saturation="none",
    )(_reinterpret(_VECTORS[_to].dtype))


def _addv(accumulate: bool):
    def impl(*args):
        acc = _i64(args[0]) if accumulate else np.int64(0)
        return _wrap(acc + _i64(args[-1]).sum(axis=-1), 32, True), None

    return impl


for _name, _ins, _mn, _meaning, _sat_text in (
    ("vaddvq_s32", (S32x4,), "VADDV.S32 Rda, Qm", "sum of the 4 int32 lanes", _WRAPS),
    ("vaddvaq_s32", (S32, S32x4), "VADDVA.S32 Rda, Qm", "acc + sum of the 4 int32 lanes",
     _WRAPS),
    ("vaddvq_s8", (S8x16,), "VADDV.S8 Rda, Qm",
     "sum of the 16 int8 lanes, sign-extended to 32 bits", "none: exact (|sum| <= 2048)"),
):
    _register_mve(_name, _ins, S32, _mn, meaning=_meaning, saturation=_sat_text,
                  lanes=_ins[-1].lanes)(_addv(len(_ins) == 2))


def requantize_mve(
    acc: np.ndarray,
    multiplier,
    shift,
    rounding: Rounding = "double",
    *,
    fixup: bool = True,
) -> np.ndarray:
    """TFLite's MultiplyByQuantizedMultiplier on int32x4 registers, built from MVE lane ops.

    ``acc`` is int32 ``(..., 4)``; ``multiplier`` and ``shift`` are scalars (per tensor) or
    per-lane (per-channel) values broadcastable to it. Equals
    ``fixedpoint.mul_by_quantized_multiplier(acc, multiplier, shift, rounding)`` everywhere.

    - ``double`` / ``litert``: VSHL (wrapping, as C's ``x * (1 << left_shift)``), VQRDMULH
      (``vqrdmulhq_n_s32`` for one multiplier), then gemmlowp's RoundingDivideByPOT: VRSHL
      rounds ties toward +infinity, so ``fixup = VSHR(VAND(x, -exponent), 31)`` (-1 for a
      negative x when exponent > 0) is first added with VQADD, which sends negative ties away
      from zero. This is CMSIS-NN's ``arm_requantize_mve_32x4``. ``fixup=False`` drops the
      fix-up: negative ties then round toward +infinity
      (``mul_by_quantized_multiplier_double_ties_up``).
    - ``single``: with every shift < 0, VQDMULH then VRSHL by the shift: floor(x * m / 2^31)
      rounded once more equals round(x * m / 2^(31 - shift)), the floors nesting (CMSIS-NN's
      ``CMSIS_NN_USE_SINGLE_ROUNDING`` path for these shifts). MVE has no 64-bit lane shift for
      NEON's VMULL + VRSHL.S64 route, and CMSIS-NN shifts x left by ``shift + 1`` (VSHL,
      wrapping) before VQDMULH, which differs from the reference once ``x << (shift + 1)``
      leaves int32. Here any shift goes exactly: the product splits into VQDMULH's
      h = floor(x * m / 2^31) and VMUL's low 31 bits r, and the result is
      sat(h * 2^left + c) with c = VRSHL(r, shift - 31) (0 for shift < 0), then VRSHL by
      min(shift, 0). The saturating VQSHL + VQADD pair takes h * 2^left + c as is for h >= 0
      and as (h + 1) * 2^left + (c - 2^left) for h < 0, so that VQSHL only clamps where the
      sum is beyond int32 too.
    """
    op = MVE_INSTRUCTIONS
    acc = np.asarray(acc)
    if acc.dtype != np.int32 or acc.shape[-1:] != (4,):
        raise TypeError("requantize_mve: acc must be int32 (..., 4)")
    s = np.broadcast_to(np.asarray(shift, np.int64), acc.shape)
    left = np.maximum(s, 0).astype(np.int32)
    right = np.minimum(s, 0).astype(np.int32)
    if rounding == "single":
        if np.any((s < -31) | (s > 30)):
            raise ValueError("single rounding needs shift in [-31, 30]")
        m = _lane_vector(multiplier, acc, "multiplier", MVE_INSTRUCTIONS)
        high = op["vqdmulhq_s32"](acc, m)
        if np.all(s < 0):
            return op["vrshlq_s32"](high, right)
        low31 = op["vandq_s32"](op["vmulq_s32"](acc, m), op["vdupq_n_s32"](INT32_MAX))
        carry = op["vrshlq_s32"](low31, (s - 31).astype(np.int32))
        negative = op["vshrq_n_s32"](high, 31)
        one = op["vdupq_n_s32"](1)
        neg_pow = (-(np.int64(1) << left)).astype(np.int32)
        high = op["vaddq_s32"](high, op["vandq_s32"](negative, one))
        carry = op["vaddq_s32"](carry, op["vandq_s32"](negative, neg_pow))
        return op["vrshlq_s32"](op["vqaddq_s32"](op["vqshlq_s32"](high, left), carry), right)
    if rounding not in ("double", "litert"):
        raise ValueError(f"unknown rounding {rounding!r}")
    if np.any((s < -31) | (s > 31)):
        raise ValueError("shift must be in [-31, 31]")
    x = op["vshlq_s32"](acc, left)
    if np.ndim(multiplier) == 0:
        m = int(multiplier)
        if not INT32_MIN <= m <= INT32_MAX:
            raise ValueError("multiplier must fit int32")
        x = op["vqrdmulhq_n_s32"](x, np.broadcast_to(np.int32(m), x.shape[:-1]))
    else:
        x = op["vqrdmulhq_s32"](x, _lane_vector(multiplier, acc, "multiplier", MVE_INSTRUCTIONS))
    if fixup:
        x = op["vqaddq_s32"](x, op["vshrq_n_s32"](op["vandq_s32"](x, right), 31))
    return op["vrshlq_s32"](x, right)
