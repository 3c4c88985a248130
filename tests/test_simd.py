"""SIMD lane emulator: every instruction against a scalar Python-int model of the Arm ARM
pseudocode, and the composed requantizations against sim.fixedpoint."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from qlane.sim.fixedpoint import (
    INT32_MAX,
    INT32_MIN,
    mul_by_quantized_multiplier,
    rounding_divide_by_pot,
    saturating_rounding_doubling_high_mul,
)
from qlane.sim.simd import INSTRUCTIONS, Imm, Vec, pack, requantize_dsp, requantize_neon, unpack

# --- scalar model: Python ints, one lane at a time ----------------------------------------------


def wrap(v: int, bits: int, signed: bool = True) -> int:
    v &= (1 << bits) - 1
    return v - (1 << bits) if signed and v >> (bits - 1) else v


def sat(v: int, bits: int, signed: bool = True) -> tuple[int, bool]:
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    c = min(max(v, lo), hi)
    return c, c != v


def halves(word: int, signed: bool = True) -> list[int]:
    return [wrap(word, 16, signed), wrap(word >> 16, 16, signed)]


def word(lanes: list[int], bits: int) -> int:
    return sum((v & ((1 << bits) - 1)) << (bits * i) for i, v in enumerate(lanes))


def shift_by_register(x: int, b: int, bits: int, rounding: bool) -> int:
    """SSHL / SRSHL: shift = SInt(b<7:0>); element = (x + round_const) << shift; low bits."""
    s = wrap(b, 8)
    if s >= 0:
        return wrap(x << s, bits)
    return (x + ((1 << (-s - 1)) if rounding else 0)) >> -s


def ror(x: int, n: int) -> int:
    return ((x >> n) | (x << (32 - n))) & 0xFFFFFFFF if n else x


def extend_bytes(x: int, n: int, signed: bool) -> list[int]:
    r = ror(x, n)
    return [wrap(r, 8, signed), wrap(r >> 16, 8, signed)]


def lanes(fn):
    """Lift a per-lane (value, saturated) function to whole registers."""

    def reg(*regs):
        out = [fn(*vals) for vals in zip(*regs)]
        return [v for v, _ in out], [s for _, s in out]

    return reg


def nosat(fn):
    return lanes(lambda *v: (fn(*v), False))


def widen_mul(bits, signed, acc=False):
    if acc:
        return nosat(lambda c, a, b: wrap(c + a * b, bits, signed))
    return nosat(lambda a, b: a * b)


def minmax(fn):
    return nosat(fn)


def smlad_like(x, y, acc, cross=False):
    xs, ys = halves(x), halves(y)
    if cross:
        ys = ys[::-1]
    exact = xs[0] * ys[0] + xs[1] * ys[1] + acc
    return wrap(exact, 32), exact != wrap(exact, 32)


REF = {
    "vqrdmulhq_s32": lanes(lambda a, b: sat((2 * a * b + (1 << 31)) >> 32, 32)),
    "vqdmulhq_s32": lanes(lambda a, b: sat((2 * a * b) >> 32, 32)),
    "vrshlq_s32": nosat(lambda a, b: shift_by_register(a, b, 32, True)),
    "vshlq_s32": nosat(lambda a, b: shift_by_register(a, b, 32, False)),
    "vrshlq_s64": nosat(lambda a, b: shift_by_register(a, b, 64, True)),
    "vqaddq_s32": lanes(lambda a, b: sat(a + b, 32)),
    "vandq_s32": nosat(lambda a, b: a & b),
    "vshrq_n_s32": lambda a, n: ([v >> n for v in a], [False] * len(a)),
    "vqmovn_s32": lanes(lambda a: sat(a, 16)),
    "vqmovn_s16": lanes(lambda a: sat(a, 8)),
    "vqmovun_s16": lanes(lambda a: sat(a, 8, False)),
    "vqmovun_s32": lanes(lambda a: sat(a, 16, False)),
    "vqmovn_s64": lanes(lambda a: sat(a, 32)),
    "vmull_u8": widen_mul(16, False),
    "vmlal_u8": widen_mul(16, False, acc=True),
    "vmull_s8": widen_mul(16, True),
    "vmlal_s8": widen_mul(16, True, acc=True),
    "vmull_s16": widen_mul(32, True),
    "vmlal_s16": widen_mul(32, True, acc=True),
    "vmull_s32": widen_mul(64, True),
    "vmull_lane_s16": lambda a, v, k: ([x * v[k] for x in a], [False] * 4),
    "vmlal_lane_s16": lambda c, a, v, k: ([wrap(s + x * v[k], 32) for s, x in zip(c, a)],
                                          [False] * 4),
    "vpadalq_u16": lambda c, a: ([wrap(c[i] + a[2 * i] + a[2 * i + 1], 32, False)
                                  for i in range(4)], [False] * 4),
    "vpadalq_s16": lambda c, a: ([wrap(c[i] + a[2 * i] + a[2 * i + 1], 32) for i in range(4)],
                                 [False] * 4),
    "vdotq_u32": lambda c, a, b: ([wrap(c[i] + sum(a[4 * i + j] * b[4 * i + j] for j in range(4)),
                                        32, False) for i in range(4)], [False] * 4),
    "vdotq_s32": lambda c, a, b: ([wrap(c[i] + sum(a[4 * i + j] * b[4 * i + j] for j in range(4)),
                                        32) for i in range(4)], [False] * 4),
    "vmovl_u8": nosat(lambda a: a),
    "vmovl_s8": nosat(lambda a: a),
    "vmovl_s16": nosat(lambda a: a),
    "vmovl_s32": nosat(lambda a: a),
    "vaddw_u8": nosat(lambda c, a: wrap(c + a, 16, False)),
    "vaddw_s8": nosat(lambda c, a: wrap(c + a, 16)),
    "vaddw_s16": nosat(lambda c, a: wrap(c + a, 32)),
    "vdupq_n_s32": lambda x: ([x] * 4, [False] * 4),
    "vget_low_s32": lambda a: (a[:2], [False] * 2),
    "vget_high_s32": lambda a: (a[2:], [False] * 2),
    "vcombine_s32": lambda a, b: (a + b, [False] * 4),
    "__smlad": lambda x, y, acc: smlad_like(x, y, acc),
    "__smladx": lambda x, y, acc: smlad_like(x, y, acc, cross=True),
    "__smlabb": lambda x, y, acc: (wrap(halves(x)[0] * halves(y)[0] + acc, 32),
                                   halves(x)[0] * halves(y)[0] + acc
                                   != wrap(halves(x)[0] * halves(y)[0] + acc, 32)),
    **{f"__smla{n}": (lambda x, y, acc, i=i, j=j: (
        wrap(halves(x)[i] * halves(y)[j] + acc, 32),
        halves(x)[i] * halves(y)[j] + acc != wrap(halves(x)[i] * halves(y)[j] + acc, 32)))
       for n, i, j in (("bt", 0, 1), ("tb", 1, 0), ("tt", 1, 1))},
    "__smulbb": lambda x, y: (halves(x)[0] * halves(y)[0], False),
    "__sxtb16": lambda x, n: (word(extend_bytes(x, n, True), 16), False),
    "__uxtb16": lambda x, n: (word(extend_bytes(x, n, False), 16), False),
    "__sxtab16": lambda x, y, n: (word([a + b for a, b in zip(halves(x), extend_bytes(y, n, True))],
                                       16), False),
    "__uxtab16": lambda x, y, n: (word([a + b for a, b in
                                        zip(halves(x, False), extend_bytes(y, n, False))], 16),
                                  False),
    "__qadd8": lambda x, y: (word([sat(wrap(x >> i, 8) + wrap(y >> i, 8), 8)[0]
                                   for i in (0, 8, 16, 24)], 8), False),
    "__qadd16": lambda x, y: (word([sat(a + b, 16)[0] for a, b in zip(halves(x), halves(y))], 16),
                              False),
    "__ssat": lambda x, n: sat(x, n),
    "__usat": lambda x, n: sat(x, n, False),
    "__smmulr": lambda a, b: ((a * b + (1 << 31)) >> 32, False),
    "__smmlar": lambda a, b, acc: (wrap(acc + ((a * b + (1 << 31)) >> 32), 32), False),
    "__pkhbt": lambda lo, hi: ((lo & 0xFFFF) | (hi & 0xFFFF0000), False),
    "__pack_lo16": lambda a, b: ((a & 0xFFFF) | ((b & 0xFFFF) << 16), False),
    "__pack_hi16": lambda a, b: ((a >> 16) | (b & 0xFFFF0000), False),
    "smull": lambda a, b: (a * b, False),
    "smlal": lambda c, a, b: (wrap(c + a * b, 64), False),
}
for _s, _t in (("s32", 32), ("s16", 16), ("s8", 8)):
    REF[f"vmaxq_{_s}"] = minmax(max)
    REF[f"vminq_{_s}"] = minmax(min)
for _name in ("vmaxq_u8", "vmax_u8", "vmax_s8"):
    REF[_name] = minmax(max)
for _name in ("vminq_u8", "vmin_u8", "vmin_s8"):
    REF[_name] = minmax(min)

SHIFT_OPERAND = {"vrshlq_s32": 1, "vshlq_s32": 1, "vrshlq_s64": 1}
IMM_VALUES = {"ror": [0, 8, 16, 24]}


def edge_values(dtype: np.dtype) -> list[int]:
    info = np.iinfo(dtype)
    mids = [-1, 0, 1] if info.min < 0 else [0, 1]
    return [int(info.min), int(info.min) + 1, *mids, int(info.max) - 1, int(info.max)]


def random_lanes(rng: np.random.Generator, dtype, shape) -> np.ndarray:
    dtype = np.dtype(dtype)
    info = np.iinfo(dtype)
    v = rng.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)
    edges = np.array(edge_values(dtype), dtype)
    return np.where(rng.random(shape) < 0.3, rng.choice(edges, shape), v)


def random_operand(rng, t: Vec, n: int) -> np.ndarray:
    if t.packed:
        return pack(random_lanes(rng, t.dtype, (n, t.lanes)), t.dtype)
    if t.lanes == 1:
        return random_lanes(rng, t.dtype, (n,))
    return random_lanes(rng, t.dtype, (n, t.lanes))


def edge_block(inputs) -> list[np.ndarray | None]:
    """Registers holding every combination of edge values across the (up to 3) operands."""
    vecs = [t for t in inputs if isinstance(t, Vec)][:3]
    edges = [edge_values(np.dtype(t.dtype)) for t in vecs]
    combos = np.array(list(itertools.product(*(range(len(e)) for e in edges))))
    regs = -(-len(combos) // min(1 if t.packed else t.lanes for t in vecs))
    out: list[np.ndarray | None] = []
    k = 0
    for t in inputs:
        if not isinstance(t, Vec) or k >= len(vecs):
            out.append(None)
            continue
        seq = np.array(edges[k], dtype=t.dtype)[combos[:, k]]
        k += 1
        if t.packed:
            out.append(pack(np.resize(seq, (regs, t.lanes)), t.dtype))
        else:
            out.append(np.resize(seq, (regs, t.lanes) if t.lanes > 1 else (regs,)))
    return out


def as_python(a: np.ndarray, i: int):
    v = a[i]
    return v.tolist() if isinstance(v, np.ndarray) else int(v)


@pytest.mark.parametrize("name", sorted(INSTRUCTIONS))
def test_instruction_matches_scalar_model(name):
    inst = INSTRUCTIONS[name]
    rng = np.random.default_rng(sum(map(ord, name)))
    n_random = 96
    block = edge_block(inst.inputs)
    imm_ranges = [
        IMM_VALUES.get(t.name, range(t.lo, t.hi + 1)) if isinstance(t, Imm) else [None]
        for t in inst.inputs
    ]
    checked = 0
    for imms in itertools.product(*imm_ranges):
        args = []
        for k, (t, imm) in enumerate(zip(inst.inputs, imms)):
            if isinstance(t, Imm):
                args.append(imm)
                continue
            a = random_operand(rng, t, n_random)
            if SHIFT_OPERAND.get(name) == k:
                span = 70 if t.lane_bits == 64 else 40
                small = rng.integers(-span, span + 1, a.shape) + 256 * rng.integers(-4, 4, a.shape)
                a = np.where(rng.random(a.shape) < 0.8, small, a).astype(a.dtype)
            if block[k] is not None:
                a = np.concatenate([block[k], a])
            args.append(a)
        n = len(next(a for a in args if isinstance(a, np.ndarray)))
        out = inst(*args)
        flags = inst.saturated(*args)
        assert out.dtype == inst.output.storage
        for i in range(n):
            call = [a if isinstance(t, Imm) else as_python(a, i) for a, t in zip(args, inst.inputs)]
            want, want_sat = REF[name](*call)
            assert as_python(out, i) == want, (name, call)
            assert as_python(flags, i) == want_sat, (name, call)
            checked += 1
    assert checked >= n_random


REQUIRED = """vqrdmulhq_s32 vrshlq_s32 vqaddq_s32 vshlq_s32 vandq_s32 vshrq_n_s32 vqmovn_s32
vqmovn_s16
vqmovun_s16 vqmovun_s32 vmull_u8 vmlal_u8 vmull_s8 vmlal_s8 vmull_s16 vmlal_s16
vmull_lane_s16 vmlal_lane_s16 vpadalq_u16 vpadalq_s16 vdotq_u32 vdotq_s32 vmovl_u8 vmovl_s8
vaddw_u8 vaddw_s8 vaddw_s16 vmaxq_s32 vminq_s32 vmaxq_u8 vminq_u8 vmaxq_s8 vminq_s8 __smlad
__smladx __smlabb __smlabt __smlatb __smlatt __smulbb __sxtb16 __uxtb16 __sxtab16 __uxtab16
__qadd8 __qadd16 __ssat __usat __smmulr smull smlal""".split()


def test_registry_metadata():
    assert set(REQUIRED) <= set(INSTRUCTIONS)
    assert set(INSTRUCTIONS) == set(REF)
    for name, inst in INSTRUCTIONS.items():
        assert inst.name == name and inst.isa in ("neon", "dsp") and inst.lanes >= 1
        assert inst.intrinsic and inst.mnemonic and inst.meaning and inst.saturation
        vectors = [t for t in (*inst.inputs, inst.output) if isinstance(t, Vec)]
        for t in vectors:
            if inst.isa == "neon" and t.lanes > 1:
                assert t.bits in (64, 128), (name, t)
            if t.packed:
                assert t.bits == 32, (name, t)
    assert INSTRUCTIONS["vqrdmulhq_s32"].output.c_type == "int32x4_t"
    assert INSTRUCTIONS["vqmovun_s16"].output.c_type == "uint8x8_t"
    assert INSTRUCTIONS["__smlad"].inputs[0].c_type == "int16x2_t"
    assert INSTRUCTIONS["__smlad"].output.c_type == "int32_t"
    assert (INSTRUCTIONS["__smlad"].lanes, INSTRUCTIONS["__qadd8"].lanes) == (2, 4)
    assert INSTRUCTIONS["vdotq_s32"].isa == "neon" and INSTRUCTIONS["__ssat"].isa == "dsp"


def test_operand_types_are_checked():
    op = INSTRUCTIONS
    a = np.zeros((2, 4), np.int32)
    with pytest.raises(TypeError):
        op["vqaddq_s32"](a.astype(np.int64), a)
    with pytest.raises(TypeError):
        op["vqaddq_s32"](a[:, :2], a[:, :2])
    with pytest.raises(TypeError):
        op["vqaddq_s32"](a)
    with pytest.raises(ValueError):
        op["vshrq_n_s32"](a, 0)
    with pytest.raises(ValueError):
        op["__ssat"](np.int32(5), 33)
    with pytest.raises(ValueError):
        op["__sxtb16"](np.uint32(5), 4)
    with pytest.raises(TypeError):
        op["__qadd8"](np.int64(1), np.uint32(1))
    assert op["__smlad"](np.int32(-1), np.uint32(0x00010001), 5) == 3  # int32 word accepted


def test_saturation_flag_corners():
    op = INSTRUCTIONS
    m = np.full((1, 4), INT32_MIN, np.int32)
    assert op["vqrdmulhq_s32"](m, m).tolist() == [[INT32_MAX] * 4]
    assert op["vqrdmulhq_s32"].saturated(m, m).all()
    # SMLAD: (-32768)^2 * 2 = 2^31 wraps to INT32_MIN and sets Q; with acc = -1 it fits.
    w = np.uint32(0x80008000)
    assert int(op["__smlad"](w, w, 0)) == INT32_MIN and op["__smlad"].saturated(w, w, 0)
    assert int(op["__smlad"](w, w, -1)) == INT32_MAX and not op["__smlad"].saturated(w, w, -1)
    # QADD8 saturates every lane but leaves Q alone.
    x = pack(np.array([100, -100, 127, 1], np.int8), np.int8)
    assert unpack(op["__qadd8"](x, x), np.int8).tolist() == [127, -128, 127, 2]
    assert not op["__qadd8"].saturated(x, x)
    assert int(op["__usat"](np.int32(-5), 8)) == 0 and op["__usat"].saturated(np.int32(-5), 8)
    assert int(op["__ssat"](np.int32(200), 8)) == 127


def test_shift_corners():
    op = INSTRUCTIONS
    x = np.array([[INT32_MAX, INT32_MIN, -3, 5]], np.int32)
    # VRSHL by -1 computes INT32_MAX + 1 without overflow (a known SIMDe slip).
    assert op["vrshlq_s32"](x, np.full_like(x, -1)).tolist() == [[1 << 30, -(1 << 30), -1, 3]]
    assert op["vrshlq_s32"](x, np.full_like(x, -32)).tolist() == [[0, 0, 0, 0]]
    assert op["vshlq_s32"](x, np.full_like(x, -40)).tolist() == [[0, -1, -1, 0]]
    assert op["vshlq_s32"](x, np.full_like(x, 1)).tolist() == [[-2, 0, -6, 10]]
    assert op["vshlq_s32"](x, np.full_like(x, 0x101)).tolist() == [[-2, 0, -6, 10]]  # low byte


def test_pack_unpack():
    assert int(pack(np.array([1, -1], np.int16), np.int16)) == 0xFFFF0001
    assert unpack(np.uint32(0x80FF7F01), np.int8).tolist() == [1, 127, -1, -128]
    assert unpack(np.uint32(0x80FF7F01), np.uint8).tolist() == [1, 127, 255, 128]
    rng = np.random.default_rng(0)
    for dt in (np.int8, np.uint8, np.int16, np.uint16):
        v = random_lanes(rng, dt, (50, 4 if np.dtype(dt).itemsize == 1 else 2))
        assert np.array_equal(unpack(pack(v, dt), dt), v)
        assert np.array_equal(unpack(pack(v, dt).astype(np.int32), dt), v)
    with pytest.raises(TypeError):
        pack(np.zeros(3, np.int8), np.int8)


# --- requantization ------------------------------------------------------------------------------

EDGE_ACC = [INT32_MIN, INT32_MIN + 1, -(1 << 30), -65537, -3, -2, -1, 0, 1, 2, 3, 65537,
            (1 << 30) - 1, 1 << 30, INT32_MAX - 1, INT32_MAX]
EDGE_MULT = [0, 1, 3, (1 << 30) - 1, 1 << 30, (1 << 30) + 1, 1518500250, INT32_MAX - 1, INT32_MAX]


def tie_accumulators() -> np.ndarray:
    """x with multiplier 2^30: x = 2r - 1 makes both the high multiply (r - 0.5 -> r) and the
    divide by 2^e (r = (2t + 1) 2^(e-1)) exact ties, for every e, positive and negative."""
    out = []
    for e in range(1, 31):
        for t in (0, 1, 2, 5, (1 << (30 - e)) - 1):
            r = (2 * t + 1) << (e - 1)
            for rr in (r, -r):
                out += [2 * rr - 1, 2 * rr + 1, 2 * rr]
    out = np.array(out, np.int64)
    return out[(out >= INT32_MIN) & (out <= INT32_MAX)]


def grid(shifts, accs=None, mults=EDGE_MULT):
    accs = np.concatenate([EDGE_ACC, tie_accumulators()]) if accs is None else accs
    x, m, s = np.meshgrid(accs, mults, shifts, indexing="ij")
    x, m, s = (a.ravel() for a in (x, m, s))
    pad = -x.size % 4
    x, m, s = (np.concatenate([a, a[:pad]]) for a in (x, m, s))
    return x.astype(np.int32).reshape(-1, 4), m.reshape(-1, 4), s.reshape(-1, 4)


@pytest.mark.parametrize("rounding, shifts", [("double", range(-31, 32)),
                                              ("litert", range(-31, 32)),
                                              ("single", range(-31, 31))])
def test_requantize_edge_grid(rounding, shifts):
    x, m, s = grid(list(shifts))
    want = mul_by_quantized_multiplier(x, m, s, rounding)
    assert np.array_equal(requantize_neon(x, m, s, rounding), want)
    assert np.array_equal(requantize_dsp(x, m, s, rounding), want)
    # with every shift negative, single rounding takes the 32-bit VQDMULH + VRSHL path
    right = np.minimum(s, -1)
    assert np.array_equal(requantize_neon(x, m, right, rounding),
                          mul_by_quantized_multiplier(x, m, right, rounding))


def test_requantize_ties_are_exercised():
    x, m, s = grid(list(range(-30, 0)), tie_accumulators(), [1 << 30])
    high = saturating_rounding_doubling_high_mul(x, m)
    assert np.count_nonzero((x.astype(np.int64) * m) % (1 << 31) == 1 << 30) > 1000
    e = -s
    assert np.count_nonzero((high & ((1 << e) - 1)) == 1 << e >> 1) > 500
    for rounding in ("double", "single"):
        want = mul_by_quantized_multiplier(x, m, s, rounding)
        assert np.array_equal(requantize_neon(x, m, s, rounding), want)
        assert np.array_equal(requantize_dsp(x, m, s, rounding), want)


@pytest.mark.parametrize("rounding", ["double", "single"])
def test_requantize_scalar_multiplier_and_shift(rounding):
    x, _, _ = grid([0])
    for mult, shift in ((1 << 30, -1), (INT32_MAX, -31), (1518500250, 0), (1 << 30, 5), (0, -7)):
        want = mul_by_quantized_multiplier(x, mult, shift, rounding)
        assert np.array_equal(requantize_neon(x, mult, shift, rounding), want)
        assert np.array_equal(requantize_dsp(x, mult, shift, rounding), want)


def test_requantize_random_per_channel():
    rng = np.random.default_rng(11)
    n = 75_000
    x = rng.integers(INT32_MIN, INT32_MAX, (n, 4), endpoint=True).astype(np.int32)
    small = (rng.integers(-(1 << 20), 1 << 20, (n, 4))).astype(np.int32)
    x = np.where(rng.random((n, 4)) < 0.5, small, x)
    m = rng.integers(1 << 30, 1 << 31, 4)
    for rounding, lo, hi in (("double", -31, 8), ("single", -31, 0), ("single", -31, 9)):
        s = rng.integers(lo, hi, (n, 4))
        want = mul_by_quantized_multiplier(x, m, s, rounding)
        assert np.array_equal(requantize_neon(x, m, s, rounding), want), rounding
        assert np.array_equal(requantize_dsp(x, m, s, rounding), want), rounding


def test_requantize_neon_without_fixup_rounds_negative_ties_up():
    x, m, s = grid(list(range(-31, 1)))
    ref = mul_by_quantized_multiplier(x, m, s)
    loose = requantize_neon(x, m, s, fixup=False)
    differ = loose != ref
    assert np.count_nonzero(differ) > 100
    high = saturating_rounding_doubling_high_mul(x, m)
    e = -s
    negative_tie = (high < 0) & (e > 0) & ((high & ((1 << e) - 1)) == 1 << e >> 1)
    assert np.array_equal(differ, negative_tie)
    assert np.all(loose[differ] == ref[differ] + 1)
    assert np.array_equal(loose, rounding_divide_by_pot(high + negative_tie * (1 << e >> 1), e))


def test_requantize_dsp_unguarded_matches_cmsis_nn_corners():
    # arm_nn_doubling_high_mult_no_sat: INT32_MIN * INT32_MIN wraps instead of saturating.
    x = np.array([INT32_MIN, INT32_MIN, 1 << 30], np.int32)
    assert requantize_dsp(x, INT32_MIN, [0, -1, 1], guard=False).tolist() == [
        INT32_MIN, -(1 << 30), INT32_MIN]
    assert requantize_dsp(x, INT32_MIN, [0, -1, 1]).tolist() == [
        INT32_MAX, 1 << 30, INT32_MAX]
    # CMSIS_NN_USE_SINGLE_ROUNDING truncates (x * m) >> (30 - shift) to int32: big results wrap.
    big = np.array([INT32_MAX, 1 << 30, INT32_MIN], np.int32)
    ref = mul_by_quantized_multiplier(big, INT32_MAX, 0, "single")
    assert np.array_equal(requantize_dsp(big, INT32_MAX, 0, "single"), ref)
    assert ref.tolist() == [INT32_MAX - 1, 1 << 30, -INT32_MAX]
    assert np.all(requantize_dsp(big, INT32_MAX, 0, "single", guard=False) != ref)
    # Elsewhere both corners are out of reach and CMSIS-NN agrees with the reference.
    x, m, s = grid(list(range(-31, 1)), mults=EDGE_MULT[1:])
    ok = np.abs(mul_by_quantized_multiplier(x, m, s, "single")) < 1 << 30
    for rounding in ("double", "single"):
        want = mul_by_quantized_multiplier(x, m, s, rounding)
        got = requantize_dsp(x, m, s, rounding, guard=False)
        assert np.array_equal(got[ok], want[ok])


def test_requantize_rejects_bad_arguments():
    x = np.zeros((1, 4), np.int32)
    with pytest.raises(TypeError):
        requantize_neon(x.astype(np.int64), 1 << 30, -1)
    with pytest.raises(TypeError):
        requantize_dsp(x.astype(np.int16), 1 << 30, -1)
    with pytest.raises(ValueError):
        requantize_neon(x, 1 << 30, 31, "single")
    with pytest.raises(ValueError):
        requantize_dsp(x, 1 << 30, -32)
    with pytest.raises(ValueError):
        requantize_neon(x, 1 << 31, -1)
    with pytest.raises(ValueError):
        requantize_dsp(x, 1 << 30, -1, "nearest")
