"""Cortex-M DSP (SIMD32) lowerings of CONV_2D, DEPTHWISE_CONV_2D and FULLY_CONNECTED.

Every constant comes from the prepared simulator kernel: its offset weights (``wmat_int``,
``wrows``), bias, multipliers, shifts and clamps. Weights are packed here, at generation time,
in exactly the order the C loops read them: the GEMM keeps them as bytes, four to a word, widened
in registers by ``SXTB16`` / ``UXTB16`` (a weight zero point is folded into a per-pixel term);
depthwise (and a GEMM whose 8-bit form would overflow int32) as int16 pairs. The inner loops are
loads, widening and ``__smlad``; the GEMM's 2x4 and 8x1 tiles run them as Thumb-2 inline
assembly (`gemm_asm`), so that GCC and clang execute the same loop. A GEMM does not compute the
channels whose output is one value for every input (`constant_channels`): it copies their
outputs and computes the others (`ChannelSubset`). See ``templates/dsp/*.c.j2`` for the loops.
"""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import numpy as np

from qlane.sim.ops.conv import Conv2D, DepthwiseConv2D, FullyConnected
from qlane.sim.requant import RequantPlan

from ..lowering import Const, Context, LayerCode, Unsupported, lowering
from ..names import window_tag
from .common import ctype

MAX_DW_TAPS = 64  # every tap is unrolled in the generated loop
GEMM_GROUP = 4  # output channels per GEMM pass (x 2 pixels)
GEMM_UNROLL = 8  # column pairs per loop iteration of the 8-bit GEMM, 2 channels x 4 pixels
GEMM_UNROLL_SHORT = 4  # the same below GEMM_UNROLL column pairs (flash: no unused steps)
GEMM_UNROLL_FC = 8  # the same, 8 channels x 1 pixel (byte lanes)
GEMM_GROUP_LANES = 8  # output channels per pass of the one-pixel byte-lane GEMM (4 pairs)
LANES_MIN_K = 128  # reduction length from which the 2x4 GEMM runs byte lanes
ROWSEG_MAX = 32  # input bytes of a filter row up to which it is one column segment
STAGE_FLOOR = 1024
GEMM_REGS = ("r0", "r1", "r2", "r3", "r4", "r5", "r6", "r8", "r9", "r10", "r11")
"""Registers of the GEMM assembly's temporaries and sums, in order (r7 saved and used as a
temporary; r12 and lr hold the weight and column pointers)."""
"""Weight bytes the GEMM copies into the arena even where the arena grows by that much (a small
layer's weights and constants, read from flash once per pass, cost it most)."""
DW_GROUP = 4  # channels per depthwise pass (two SIMD32 words of int16 pairs)


# --------------------------------------------------------------------------------------------
# Packing helpers


def column_layout(seg: int, nseg: int) -> np.ndarray:
    """Column slot -> reduction index (-1: zero pad) of the int16 columns the C code builds.

    The reduction runs over ``nseg`` consecutive segments of ``seg`` elements (one per filter
    tap, or a single one). Within a segment, each full block of four bytes is widened by
    ``SXTB16``/``UXTB16`` of the word and of the word rotated by 8, which yields the order
    0, 2, 1, 3; the remaining 1..3 elements stay in order. The column is padded to even length.
    """
    block = [0, 2, 1, 3]
    one = [4 * b + i for b in range(seg // 4) for i in block] + list(range(seg - seg % 4, seg))
    idx = [s * seg + i for s in range(nseg) for i in one]
    if len(idx) % 2:
        idx.append(-1)
    return np.asarray(idx, np.int64)


def pack_pairs(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Two int16 arrays as int32 words (``lo`` in the low half, as SMLAD reads them)."""
    lo = np.asarray(lo, np.int64)
    hi = np.asarray(hi, np.int64)
    if lo.size and max(np.abs(lo).max(), np.abs(hi).max()) > 32767:
        raise Unsupported("offset weights do not fit int16")
    word = (lo & 0xFFFF) | ((hi & 0xFFFF) << 16)
    return wrap32(word).astype(np.int32)


def wrap32(v: np.ndarray) -> np.ndarray:
    """int64 values wrapped to the int32 range (two's complement)."""
    v = np.asarray(v, np.int64) & 0xFFFFFFFF
    return np.where(v >= 2**31, v - 2**32, v)


def channel_groups(n: int, group: int) -> list[tuple[int, int]]:
    """(first channel, size) of the passes over ``n`` channels: full groups, then 2, then 1."""
    out = [(c, group) for c in range(0, n - n % group, group)]
    c = n - n % group
    while c < n:
        size = 2 if n - c >= 2 and group > 2 else 1
        out.append((c, size))
        c += size
    return out


def pack_gemm_weights(wmat: np.ndarray, layout: np.ndarray, groups: list[tuple[int, int]]
                      ) -> np.ndarray:
    """[K, N] offset weights as int16 pairs: per channel group, per column pair, per channel."""
    k, n = wmat.shape
    wp = np.zeros((layout.size, n), np.int64)
    valid = layout >= 0
    wp[valid] = wmat[layout[valid]]
    words = pack_pairs(wp[0::2], wp[1::2])  # [K2/2, N]
    return np.concatenate([words[:, c:c + size].reshape(-1) for c, size in groups]
                          ) if groups else np.zeros(0, np.int32)


def pack_gemm_weights8(wraw: np.ndarray, layout: np.ndarray, groups: list[tuple[int, int]],
                       shift: tuple[int, int] = (0, 0)) -> np.ndarray:
    """[K, N] 8-bit weights as words: per channel group, per column pair, per channel pair.

    The word of channels (c, c + 1) and column slots (s, s + 1) holds the bytes w[s][c],
    w[s][c + 1], w[s + 1][c], w[s + 1][c + 1] (low first): ``SXTB16`` / ``UXTB16`` of the word
    gives channel c's halfword pair (w[s][c], w[s + 1][c]) in the lane order of the int16 column
    word that ``SMLAD`` multiplies, and of the word rotated by 8, channel c + 1's. A group's odd
    last channel leaves bytes 1 and 3 zero. ``shift`` is added to the bytes of channels c and
    c + 1 (see `lane_shift`).
    """
    k, n = wraw.shape
    wp = np.zeros((layout.size, n), np.int64)
    valid = layout >= 0
    wp[valid] = wraw[layout[valid]]
    lo, hi = wp[0::2], wp[1::2]  # [K2/2, N]: the column pair's low and high slot
    zero = np.zeros(lo.shape[0], np.int64)
    sa, sb = shift
    out = []
    for c0, size in groups:
        pairs = []
        for c in range(c0, c0 + size, 2):
            odd = c + 1 < c0 + size
            b = [lo[:, c] + sa, lo[:, c + 1] + sb if odd else zero, hi[:, c] + sa,
                 hi[:, c + 1] + sb if odd else zero]
            pairs.append(sum((v & 0xFF) << (8 * i) for i, v in enumerate(b)))
        out.append(np.stack(pairs, axis=1).reshape(-1))
    return wrap32(np.concatenate(out)).astype(np.int32) if out else np.zeros(0, np.int32)


def lane_shift(signed: bool) -> tuple[int, int]:
    """What the byte-lane GEMM adds to the stored bytes of channels c and c + 1 of a word.

    ``SMLAD`` of the unwidened word multiplies each column slot by 256 b + a: channel c's byte a
    read unsigned (int8 weights stored + 128) and channel c + 1's byte b signed (uint8 weights
    stored - 128). ``SXTB16`` of the word rotated by 8 gives b alone, so one widening per word
    serves two channels: the dot product with a is the first sum minus 256 times the second, and
    the shifts come back as multiples of the column's sum (see `lane_terms`).
    """
    return (128, 0) if signed else (0, -128)


def lane_terms(signed: bool, zw: int) -> tuple[int, int]:
    """Factors of the column sum S in the start values of channels c and c + 1 of the byte-lane
    GEMM: sum x (w - zw) = sum x stored - (shift + zw) S."""
    sa, sb = lane_shift(signed)
    return -sa - zw, -sb - zw


def widen8(words: np.ndarray, signed: bool) -> tuple[np.ndarray, np.ndarray]:
    """The halfword pairs ``SXTB16`` (``UXTB16`` if not signed) gives of each word and of the word
    rotated by 8: ([..., 2] (bytes 0, 2), [..., 2] (bytes 1, 3)), low lane first."""
    u = np.asarray(words, np.int64) & 0xFFFFFFFF
    b = np.stack([(u >> (8 * i)) & 0xFF for i in range(4)], axis=-1)
    if signed:
        b = np.where(b >= 128, b - 256, b)
    return b[..., [0, 2]], b[..., [1, 3]]


def _words(v: Any, signed: bool) -> int:
    """A halfword value replicated in both halves of a word, as int32 (signed) or uint32."""
    half = int(v) & 0xFFFF
    word = half | (half << 16)
    return int(wrap32(np.int64(word))) if signed else word


# --------------------------------------------------------------------------------------------
# Requantization parameters shared by the templates


def constant_channels(sim: Conv2D | DepthwiseConv2D | FullyConnected, bounds: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray]:
    """(mask, value) of the channels whose output is one value for every input: the
    requantization (non-decreasing in the accumulator) maps both ends of bias -+ ``bounds`` (per
    channel ``|acc|`` before the bias) to it. Converters leave such channels, e.g. a bias of 2^30
    that saturates every output."""
    rq = sim.requant
    n = np.asarray(bounds).size
    bias = np.broadcast_to(np.asarray(rq.bias, np.int64), (n,))
    lo, hi = bias - bounds, bias + bounds
    plan = RequantPlan(rq.multiplier, rq.shift, rq.zp, rq.lo, rq.hi, rq.rounding, channels=n)
    ok = (lo >= -(2**31)) & (hi < 2**31) & (plan.multiplier >= 0)
    out_lo = plan.output(plan.reference(np.where(ok, lo, 0)))
    out_hi = plan.output(plan.reference(np.where(ok, hi, 0)))
    return ok & (out_lo == out_hi), out_lo


def requant_params(sim: Conv2D | DepthwiseConv2D | FullyConnected, n: int, bound: int,
                   bounds: np.ndarray | None = None) -> tuple[dict[str, Any], list[Const]]:
    """How the C code turns an int32 accumulator (bias included) into an output byte.

    ``bound`` bounds ``|acc|`` before the bias (``bounds``: per channel). The cheapest exact form
    of the layer's `qlane.sim.requant.RequantPlan` is chosen: ``"mm"`` (``high_mul``: SMMULR /
    SMMUL and an ASR), ``"fused"`` (SMLAL and an ASR), the ``reference`` ``qlane_requant_*`` of
    qlane_fixedpoint.h (``"generic"``), or ``"float"`` (LiteRT FULLY_CONNECTED). Where channels of
    one output value (`constant_channels`) alone keep the layer from ``"mm"``, they get multiplier
    0, bias 0 and that value as their rounding addend.
    """
    rq = sim.requant
    dtype = np.dtype(sim.dtype)
    full = (rq.lo, rq.hi) == ((-128, 127) if dtype == np.int8 else (0, 255))
    bias = np.broadcast_to(np.asarray(rq.bias, np.int64), (n,)).copy()
    plan = RequantPlan(rq.multiplier, rq.shift, rq.zp, rq.lo, rq.hi, rq.rounding,
                       bound=int(bound) + int(np.abs(bias).max(initial=0)), channels=n)
    const, value = np.zeros(n, bool), np.zeros(n, np.int64)
    if rq.kind != "float" and bounds is not None and plan.high_mul() is None:
        mask, value = constant_channels(sim, np.asarray(bounds, np.int64))
        mult = np.where(mask, 0, plan.multiplier)
        kept = np.where(mask, 0, bias)
        trial = RequantPlan(mult, plan.shift, rq.zp, rq.lo, rq.hi, rq.rounding,
                            bound=int(bound) + int(np.abs(kept).max(initial=0)), channels=n)
        high = trial.high_mul()
        if mask.any() and high is not None and high.variant in ("dbl", "smmul"):
            plan, const, bias = trial, mask, kept
    ties_up = plan.ties_up
    params: dict[str, Any] = dict(
        zp=rq.zp, lo=rq.lo, hi=rq.hi, full_range=full, signed=dtype == np.int8,
        T=ctype(dtype), kind=rq.kind, rounding=rq.rounding, acc_scale=1, ties_up=ties_up,
        zp_folded=False,
        req="qlane_requant_single" if rq.rounding == "single" else
        "qlane_requant_double_up" if ties_up else "qlane_requant_double",
    )
    bias.flags.writeable = False
    params["bias_values"] = bias  # what the kernel's accumulators start from (read only)
    consts = [Const("bias", wrap32(bias).astype(np.int32), "bias (accumulator start)")]
    if rq.kind == "float":
        scale = np.broadcast_to(np.asarray(rq.real_scale, np.float64), (n,))
        params["scale_uniform"] = bool(np.all(scale == scale[0]))
        params["scale"] = [repr(float(s)) for s in scale]
        return params, consts
    m, s = plan.multiplier, plan.shift
    dtypes = {"mult": np.int32, "rnd": np.int32, "shift": np.int32, "kpos": np.int64,
              "kneg": np.int64}
    high = plan.high_mul()
    fused = plan.fused()
    if high is not None:
        params["kind"], params["mm"] = "mm", high.variant
        arrays = {"mult": high.m, "rnd": high.rnd, "shift": high.shift}
        if const.any():  # multiplier 0: the output is rnd >> shift (plus the zero point)
            arrays["rnd"] = np.where(const, (value - rq.zp) << high.shift, high.rnd)
        if high.variant in ("smmulr", "dbl0"):
            del arrays["rnd"], arrays["shift"]
    elif fused is not None:
        params["kind"] = "fused"
        arrays = {"mult": fused.m, "kpos": fused.k, "kneg": fused.k - fused.c,
                  "shift": fused.d - 32}
        params["signed_k"] = bool(np.any(fused.c != 0))
        if not params["signed_k"]:
            del arrays["kneg"]
    else:
        params["kind"] = "generic"
        uniform = plan.uniform
        params["uniform"] = uniform
        if uniform:
            params["mult"], params["shift"] = int(m[0]), int(s[0])
        else:
            consts += [Const("mult", m.astype(np.int32), "Q31 multipliers per channel"),
                       Const("shift", s.astype(np.int32), "shifts per channel")]
        return params, consts
    if "rnd" in arrays and zp_folds(plan, high):
        # ((h + R) >> S) + zp = (h + R + zp 2^S) >> S while no term wraps: one addend
        arrays["rnd"] = arrays["rnd"] + (np.int64(rq.zp) << arrays["shift"])
        params["zp_folded"] = True
    uniform = all(np.all(v == v[0]) for v in arrays.values())
    params["uniform"] = uniform
    if uniform:
        params.update({k: int(v[0]) for k, v in arrays.items()})
    else:
        if "shift" in arrays and np.all(np.abs(arrays["shift"]) < 128):  # flash: bytes
            dtypes["shift"] = np.int8
        consts += [Const(k, v.astype(dtypes[k]), f"requantization: {k} per channel")
                   for k, v in arrays.items()]
    if params.get("mm") in ("dbl", "dbl0"):
        # SMMULR(2 acc, M): the kernel accumulates 2 acc (weights and bias doubled)
        params["acc_scale"] = 2
        consts[0] = Const("bias", wrap32(2 * bias).astype(np.int32),
                          "2 x bias (the accumulator holds 2 acc)")
    return params, consts


def zp_folds(plan: RequantPlan, high: Any) -> bool:
    """Whether the output zero point can join the rounding addend of the ``high_mul`` form:
    ``|h| + R + |zp| 2^S + 1 < 2^31`` for the high word ``h`` (at most the plan's bound + 1)."""
    worst = (plan.bound + 1 + np.asarray(high.rnd, np.int64)
             + (np.int64(abs(plan.zp)) << np.asarray(high.shift, np.int64)) + 1)
    return bool(np.all(worst < 2**31))


def acc_bound(sim: Conv2D | DepthwiseConv2D | FullyConnected, w: np.ndarray) -> int:
    """Bound of |accumulator| before the bias: [K, N] offset weights times the input extent."""
    return int(acc_bounds(sim, w).max(initial=0))


def acc_bounds(sim: Conv2D | DepthwiseConv2D | FullyConnected, w: np.ndarray) -> np.ndarray:
    """`acc_bound` per output channel."""
    return np.abs(np.asarray(w, np.int64)).sum(axis=0) * sim._input_extent()


# --------------------------------------------------------------------------------------------
# CONV_2D and FULLY_CONNECTED: int16 columns x packed weights, 4 channels x 2 pixels per pass


def weights8(sim: Conv2D | FullyConnected, wmat: np.ndarray, scale: int = 1,
             bias: np.ndarray | None = None) -> tuple[np.ndarray, int, bool] | None:
    """The GEMM's weights as stored bytes: (raw [K, N] weights, their zero point zw, signed), or
    None where 8 bits do not serve (weights outside a byte, or int32 overflow of the folded sum).

    sum (x - zx)(w - zw) = sum (x - zx) w - zw sum (x - zx): with zw != 0 the kernel accumulates
    raw weights from the bias minus zw times the column's sum, so that start and every partial
    sum must stay within int32; ``scale`` times that, where columns and bias are scaled by it
    (the accumulator then holds ``scale`` acc). ``bias``: the kernel's (default the layer's).
    """
    qw = sim.qw
    zw = 0 if qw.per_axis else qw.zp
    if qw.per_axis and np.any(qw.zero_point):
        return None
    raw = np.asarray(wmat, np.int64) + zw
    if raw.size and raw.min() >= -128 and raw.max() <= 127:
        signed = True
    elif raw.size and raw.min() >= 0 and raw.max() <= 255:
        signed = False
    else:
        return None
    k = raw.shape[0]
    extent = sim._input_extent()
    bound = (int(np.abs(raw).sum(axis=0).max(initial=0)) * extent + abs(zw) * k * extent
             + int(np.abs(sim.requant.bias if bias is None else bias).max(initial=0)))
    return (raw, zw, signed) if scale * bound < 2**31 else None


def _smlads(half: int, cols: tuple[str, str], first: bool = False) -> list[str]:
    """SMLAD of pixels 2 half and 2 half + 1 (column words in ``cols``) with the two widened
    weight words t1 (channel 0) and t0 (channel 1); ``first``: onto pixel 3's accumulators,
    which hold the biases (pixel 3 comes last)."""
    out = []
    for k, x in enumerate(cols):
        px = 2 * half + k
        src = 3 if first else px
        out += [f"smlad %[a{px}_0], %[t1], %[{x}], %[a{src}_0]",
                f"smlad %[a{px}_1], %[t0], %[{x}], %[a{src}_1]"]
    return out


def _gemm_out(out: dict[str, Any], signed: bool) -> list[str]:
    """The 2x4 tile's output stage (see `gemm_asm`): accumulators a<k>_<c>, record at w."""
    n, sat = out["N"], "ssat" if signed else "usat"
    lines = ["ldr %[t1], [sp, #4]"]
    if out["lanes"]:  # channel 0's own sum: the lanes' first sum minus 256 times channel 1's
        lines += [f"sub %[a{k}_0], %[a{k}_0], %[a{k}_1], lsl #8" for k in range(4)]
    for c in range(2):
        lines += [f"ldr %[t0], [%[w], #{4 * c}]", f"ldr %[t2], [%[w], #{8 + 4 * c}]",
                  f"ldrsb %[q], [%[w], #{16 + c}]"]
        for k in range(4):
            a = f"%[a{k}_{c}]"
            if out["post"] == 2:
                lines.append(f"lsl {a}, {a}, #1")
            lines += [f"smmlar {a}, {a}, %[t0], %[t2]", f"asr {a}, {a}, %[q]",
                      f"{sat} {a}, #8, {a}"]
    if out["sparse"]:  # each channel's own output address: t1 plus its channel
        lines += ["ldrh %[t0], [%[w], #20]", "ldrh %[t2], [%[w], #22]",
                  "add %[t0], %[t1], %[t0]", "add %[t2], %[t1], %[t2]"]
        for k in range(4):
            lines += [f"strb %[a{k}_0], [%[t0], #{k * n}]", f"strb %[a{k}_1], [%[t2], #{k * n}]"]
        return [*lines, "add %[w], %[w], #24"]
    for k in range(4):
        if n % 2 == 0:
            lines += [f"bfi %[a{k}_0], %[a{k}_1], #8, #8", f"strh %[a{k}_0], [%[t1], #{k * n}]"]
        else:
            lines += [f"strb %[a{k}_0], [%[t1], #{k * n}]",
                      f"strb %[a{k}_1], [%[t1], #{k * n + 1}]"]
    return [*lines, "add %[w], %[w], #20"]


def gemm_asm(group: int, cols: int, kp: int, unroll: int, signed: bool, inter: bool = True,
             lanes: bool = False, out: dict[str, Any] | None = None, whole: bool = False
             ) -> dict[str, Any] | None:
    """The Thumb-2 inline assembly of one channel group's reduction over ``kp`` column pairs, or
    None where the tile has none (the C loop runs there).

    2 channels x 4 pixels: per column pair LDR of the weight word, SXTB16/UXTB16 of it and of it
    rotated by 8, LDR of the four pixels' column words (interleaved columns: two then two, each
    LDR after the first of a run taking one cycle on the Cortex-M4, where LDRD takes three for
    two) and 8 SMLAD. The loop runs ``unroll`` pairs per iteration (the remainder first,
    straight); for 2x4 its end sits on the stack (8 accumulators, 4 temporaries and 2 pointers
    fill r0-r12 and lr; r7, which a build keeping frame pointers reserves, is saved and used
    inside). The
    registers are fixed: GCC finds no allocation of so many free operands. Both compilers then run
    the same instructions, where their C loops differed by up to 2x.

    Byte lanes (``lanes``, one pixel, an even group): per column pair LDR of the column word, then
    per two channel pairs LDR of their two words and per word SMLAD of it, SXTB16 of it rotated
    by 8 and SMLAD of that: 4 MACs for one widening. The LDRs follow one another, so that each
    after the first takes one cycle on the Cortex-M4 (TRM, load pipelining).

    ``out`` (2x4 only: ``N`` channels a pixel, ``post`` 1 or 2, ``lanes``): the output stage too,
    reading the group's record after its weights (`gemm_records`): per channel LDR of multiplier
    and rounding addend and LDRSB of the shift, per output SMMLAR, ASR and SSAT / USAT, then per
    pixel BFI of the two channels' bytes and one STRH (an odd N: two STRB). The output address
    comes in t1, pushed with the loop's end.

    ``whole`` (with ``out``, 2x4 without byte lanes): the loop over the pass's channel pairs too,
    from the record at w up to the one at t2; the columns at q. Each pair's first column pair
    loads the two biases into pixel 3's accumulators and adds every pixel's products to them
    (pixel 3's last), where C would copy the biases into 8 registers first.
    """
    ext = "sxtb16" if signed else "uxtb16"
    if lanes and group == 2 and cols == 4 and inter:
        temps = ["t0", "t1", "t2", "t3"]

        def step() -> list[str]:
            out = ["ldr %[t0], [%[w]], #4", "ldr %[t2], [%[q]], #4", "ldr %[t3], [%[q]], #4",
                   "sxtb16 %[t1], %[t0], ror #8"]
            for half in (0, 1):
                if half:
                    out += ["ldr %[t2], [%[q]], #4", "ldr %[t3], [%[q]], #4"]
                for k, x in enumerate(("t2", "t3")):
                    px = 2 * half + k
                    out += [f"smlad %[a{px}_0], %[t0], %[{x}], %[a{px}_0]",
                            f"smlad %[a{px}_1], %[t1], %[{x}], %[a{px}_1]"]
            return out

        steps = {1: step}
        end_in_memory = True
    elif lanes:
        if cols != 1 or group % 2:
            return None
        temps = ["t0", "t1", "t2", "t3"]

        def step() -> list[str]:
            out = ["ldr %[t2], [%[q]], #4"]
            for j in range(0, group // 2, 2):
                words = ["t0", "t1"][:min(2, group // 2 - j)]
                out += [f"ldr %[{t}], [%[w]], #4" for t in words]
                for t, pair in zip(words, range(j, j + 2)):
                    a, b = f"a0_{2 * pair}", f"a0_{2 * pair + 1}"
                    out += [f"smlad %[{a}], %[{t}], %[t2], %[{a}]",
                            f"sxtb16 %[{t}], %[{t}], ror #8",
                            f"smlad %[{b}], %[{t}], %[t2], %[{b}]"]
            return out

        steps = {1: step}
        end_in_memory = group > 4  # 8 accumulators, 3 temporaries, 2 pointers
    elif group == 2 and cols == 4 and not inter:
        off = 4 * kp  # bytes between the pixels' columns
        if 3 * off > 4095:
            return None
        temps = ["t0", "t1", "t2", "t3"]

        def step(first: bool = False) -> list[str]:
            out = ["ldr %[t0], [%[w]], #4", f"ldr %[t2], [%[q], #{off}]", "ldr %[t3], [%[q]], #4",
                   f"{ext} %[t1], %[t0]", f"{ext} %[t0], %[t0], ror #8"]
            out += _smlads(0, ("t3", "t2"), first)
            out += [f"ldr %[t3], [%[q], #{2 * off - 4}]", f"ldr %[t2], [%[q], #{3 * off - 4}]"]
            return out + _smlads(1, ("t3", "t2"), first)

        steps = {1: step}
        end_in_memory = True
    elif group == 2 and cols == 4:
        temps = ["t0", "t1", "t2", "t3"]

        def step(first: bool = False) -> list[str]:
            out = ["ldr %[t0], [%[w]], #4", "ldr %[t2], [%[q]], #4", "ldr %[t3], [%[q]], #4",
                   f"{ext} %[t1], %[t0]", f"{ext} %[t0], %[t0], ror #8"]
            out += _smlads(0, ("t2", "t3"), first)
            out += ["ldr %[t2], [%[q]], #4", "ldr %[t3], [%[q]], #4"]
            return out + _smlads(1, ("t2", "t3"), first)

        steps = {1: step}
        end_in_memory = True
    else:
        return None
    if whole:
        assert out is not None and not lanes and group == 2 and cols == 4
        return _gemm_whole(steps[1], kp, unroll, out, signed)
    big = max(steps)
    n = unroll // big  # steps of the loop body
    first = (kp // big) % n  # steps of the first, partial iteration
    # 2x4: t0 (r0) comes in holding the loop's end, pushed where no register is left for it,
    # with r7, the frame pointer of builds that keep one, which then serves as t3
    epilogue = out is not None and group == 2 and cols == 4 and end_in_memory
    saved = "%[t0], %[t1], r7" if epilogue else "%[t0], r7"
    lines: list[str] = [f"push {{{saved}}}"] if end_in_memory else []
    if kp % big:  # an odd column pair of the 2-pair steps
        lines += steps[1]()
    if kp >= big:
        if first:  # enter the loop at the step that leaves `first` steps to its end
            lines.append("b 2f")
        lines.append("1:")
        for i in range(n):
            if first and i == n - first:
                lines.append("2:")
            lines += steps[big]()
        lines += (["ldr %[t0], [sp]", "cmp %[q], %[t0]"] if end_in_memory else
                  ["cmp %[q], %[qe]"]) + ["bne 1b"]
    if epilogue:
        assert out is not None
        lines += _gemm_out(out, signed)
    if end_in_memory:
        lines.append(f"pop {{{saved}}}")
        lines = [line.replace("%[t3]", "r7") for line in lines]
        temps = temps[:3]
    nl = kp >= big
    accs = [f"a{k}_{c}" for k in range(cols) for c in range(group)]
    names = temps + accs + (["qe"] if nl and not end_in_memory else [])
    regs = dict(zip(names, GEMM_REGS), w="r12", q="lr")
    return dict(lines=lines, temps=temps, loop=bool(nl), end_in_memory=end_in_memory, regs=regs,
                epilogue=epilogue, whole=False, accs=accs)


def _gemm_whole(step: Callable[..., list[str]], kp: int, unroll: int, out: dict[str, Any],
                signed: bool) -> dict[str, Any]:
    """`gemm_asm`'s 2x4 tile over every channel pair of a pass (``whole``). Stack: the columns'
    end, the output address, the records' end, r7, the columns."""
    lines = ["push {%[t0], %[t1], %[t2], r7, %[q]}", "3:", "ldr %[q], [sp, #16]",
             "ldr %[a3_0], [%[w]], #4", "ldr %[a3_1], [%[w]], #4", *step(True)]
    rest = kp - 1
    if rest > unroll:
        head = rest % unroll  # steps of the first, partial iteration
        if head:
            lines.append("b 2f")
        lines.append("1:")
        for i in range(unroll):
            if head and i == unroll - head:
                lines.append("2:")
            lines += step()
        lines += ["ldr %[t0], [sp]", "cmp %[q], %[t0]", "bne 1b"]
    else:
        for _ in range(rest):
            lines += step()
    lines += _gemm_out(out, signed)
    if not out["sparse"]:  # the next pair's outputs (sparse: from the record, after t1)
        lines += ["add %[t1], %[t1], #2", "str %[t1], [sp, #4]"]
    lines += ["ldr %[t0], [sp, #8]", "cmp %[w], %[t0]", "bne 3b",
              "pop {%[t0], %[t1], %[t2], r7, %[q]}"]
    lines = [line.replace("%[t3]", "r7") for line in lines]
    temps = ["t0", "t1", "t2"]
    accs = [f"a{k}_{c}" for k in range(4) for c in range(2)]
    regs = dict(zip(temps + accs, GEMM_REGS), w="r12", q="lr")
    return dict(lines=lines, temps=temps, loop=True, end_in_memory=True, regs=regs,
                epilogue=True, whole=True, accs=accs)


class ChannelSubset:
    """A convolution or fully connected layer restricted to some output channels: what the GEMM
    lowering reads of it (requantization per channel, input and weight quantization)."""

    def __init__(self, sim: Conv2D | FullyConnected, keep: np.ndarray) -> None:
        rq = sim.requant
        n = int(keep.size)

        def per_channel(v: Any) -> Any:
            return None if v is None else np.broadcast_to(np.asarray(v), (n,))[keep]

        self.requant = SimpleNamespace(
            multiplier=per_channel(rq.multiplier), shift=per_channel(rq.shift),
            bias=per_channel(rq.bias), real_scale=per_channel(rq.real_scale), zp=rq.zp,
            lo=rq.lo, hi=rq.hi, rounding=rq.rounding, kind=rq.kind)
        self.dtype, self.qi, self.qw = sim.dtype, sim.qi, sim.qw
        self._extent = sim._input_extent()

    def _input_extent(self) -> int:
        return self._extent


def _gemm_kernel(ctx: Context, op: str, variant: str, wmat: np.ndarray, seg: int, nseg: int,
                 pixels: int, geometry: dict[str, Any], sparse: bool = True) -> LayerCode:
    sim: Any = ctx.sim
    dense = wmat
    k, n_out = wmat.shape
    # channels of one output value (e.g. all-zero weights) are not computed: every pass first
    # copies the constant outputs of its pixels, the GEMM then writes the other channels
    const = (constant_channels(sim, acc_bounds(sim, wmat))
             if sparse and sim.requant.kind != "float" else None)
    live = None
    if const is not None and const[0].any() and not const[0].all():
        live = ~const[0]
        sim, wmat = ChannelSubset(sim, live), wmat[:, live]
    n = wmat.shape[1]
    params, consts = requant_params(sim, n, acc_bound(sim, wmat), acc_bounds(sim, wmat))
    layout = column_layout(seg, nseg)
    w8 = weights8(sim, wmat, bias=params["bias_values"])
    # bytes: 2 channels x 4 pixels per pass (one widened pair feeds 4 columns), one pixel x 8
    # channels below 4 pixels; int16 pairs: 4 channels x 2 pixels
    # byte lanes: one pixel; 2 x 4 where the widenings saved (one per channel pair, column pair
    # and 4 pixels) outweigh each output's start and end terms and each column's sum (measured
    # on the Cortex-M4: from 128 column slots on; below, up to 8% slower)
    inter = nseg == 1 or seg % 2 == 0
    lanes = w8 is not None and (pixels < 4 or (inter and seg >= 4 and n >= 16
                                                and k >= LANES_MIN_K))
    if w8 is not None:
        group, cols = (2, 4) if pixels >= 4 else (GEMM_GROUP_LANES, 1)
    else:
        group, cols = GEMM_GROUP, min(pixels, 2)
    groups = channel_groups(n, group)
    passes = [cols] + [c for c in (2, 1) if c < cols and pixels % cols & c]
    # the requantization wants 2 acc: 8-bit weights get columns of 2 (x - zp) (one more SXTAB16
    # per two column slots, none for the odd last ones of a segment) and the doubled bias where
    # that costs less than doubling each output (per pixel N) and int32 still holds every sum
    x2 = (w8 is not None and params["acc_scale"] == 2 and 2 * (seg // 4) * nseg < n
          and weights8(sim, wmat, 2, params["bias_values"]) is not None)
    if w8 is not None:
        raw, zw, w_signed = w8
        words = pack_gemm_weights8(raw, layout, groups, lane_shift(w_signed) if lanes else (0, 0))
        if not x2:
            # the accumulator holds acc, doubled at the end where the requantization wants 2 acc
            consts[0] = Const("bias", wrap32(params["bias_values"]).astype(np.int32),
                              "bias (accumulator start)")
        wdesc = (f"{'int8' if w_signed else 'uint8'} weights, 4 to a word in loop order (per "
                 "channel pair and column pair: w[s][c], w[s][c+1], w[s+1][c], w[s+1][c+1])")
        if lanes:
            sa, sb = lane_shift(w_signed)
            wdesc += f", channel c's bytes {sa:+d} (unsigned), c+1's {sb:+d} (signed)"
    else:
        zw, w_signed = 0, True
        words = pack_gemm_weights(wmat * params["acc_scale"], layout, groups)
        wdesc = ("weights minus their zero point, int16 pairs in loop order (4 channels x "
                 "column pair)")
        variant += "w16"
    dtype = np.dtype(sim.dtype)
    zp_in = int(sim.qi.zp)
    params.update(
        N=n_out, K=k, K2=int(layout.size), KP=int(layout.size) // 2, P=pixels, seg=seg, G=group,
        passes=passes, full=n - n % group, tails=groups[n // group:], in_zp=zp_in,
        inter=inter, U=1,
        off=_words(-zp_in * (2 if x2 else 1), dtype == np.int8), weights8=w8 is not None,
        w_signed=w_signed, w_zp=zw, x2=x2, lanes=lanes,
        terms=lane_terms(w_signed, zw) if lanes else (0, 0),
        post=params["acc_scale"] if w8 is not None and not x2 else 1,
        helpers={"ld32", "st32", "wide"} if seg >= 4 else
        {"st32"} if geometry["mode"] == "im2col" else set(), **geometry,
    )
    if w8 is not None:
        unroll = GEMM_UNROLL if params["KP"] >= GEMM_UNROLL else GEMM_UNROLL_SHORT
        # the output stage in the 2x4 assembly too, for the records' per-channel constants
        out = (dict(N=n_out, post=params["post"], lanes=lanes, sparse=live is not None)
               if asm_output(ctx, params) and not params["uniform"] and 3 * n_out + 1 < 4096
               else None)
        # the loop over channel pairs too where accumulators start at the biases alone
        whole = out is not None and zw == 0 and not lanes
        params["asm"] = {
            f"{g}x{c}": a for c in passes for g in {size for _, size in groups}
            if (a := gemm_asm(g, c, params["KP"], unroll if c > 1 else GEMM_UNROLL_FC,
                              w_signed, params["inter"] or c == 1, lanes, out,
                              whole and g == 2 and c == 4)) is not None}
    consts.insert(0, Const("w", words, wdesc))
    params["rec"] = w8 is not None and params["kind"] == "mm" and not params["uniform"]
    if live is not None and not params["rec"]:  # the output channels come with the records
        return _gemm_kernel(ctx, op, variant, dense, seg, nseg, pixels, geometry, sparse=False)
    params["sparse"] = live is not None
    if live is not None:
        assert const is not None
        consts.append(Const("crow", np.where(live, 0, const[1]).astype(np.dtype(sim.dtype)),
                            "every channel's output where it is one value (the others: 0, "
                            "written by the GEMM)"))
    if params["rec"]:
        params["rec_rnd"] = params["mm"] not in ("dbl0", "smmulr")
        consts, params["rec_tail"] = gemm_records(
            consts, groups, params["KP"], params["rec_rnd"],
            None if live is None else np.flatnonzero(live))
        words = consts[0].values
    tile = f"{min(pixels, cols)}x{min(n, group)}"
    col_bytes = -(-passes[0] * int(layout.size) * 2 // 8) * 8
    stages = stage_weights(ctx, words.nbytes, -(-pixels // cols))
    room = max(ctx.scratch_budget, col_bytes + STAGE_FLOOR)
    params["stage"] = col_bytes if stages and room >= col_bytes + words.nbytes else 0
    params["NW"] = int(words.size)
    return LayerCode(template="dsp/gemm.c.j2", op=op, variant=variant, tile=tile, params=params,
                     consts=consts, scratch_grows=stages, work=n / n_out,
                     scratch_bytes=col_bytes + words.nbytes if params["stage"] else
                     passes[0] * int(layout.size) * 2)


def gemm_records(consts: list[Const], groups: list[tuple[int, int]], kp: int, rnd: bool,
                 channels: np.ndarray | None = None) -> tuple[list[Const], dict[int, int]]:
    """The 8-bit GEMM's weight words and per-channel constants as one array read through one
    pointer: per channel group its biases, its weight words, its multipliers, then (``rnd``) its
    rounding addends and its shifts as bytes, then (``channels``: the output channel of each
    GEMM channel) its output channels as uint16. Returns the constants without the separate
    bias, multiplier, rounding and shift arrays, and per group size the words after the
    weights."""
    by = {c.suffix: c for c in consts}
    words = by["w"].values
    tail = {size: size + ((size + -(-size // 4)) if rnd else 0)
            + (-(-size // 2) if channels is not None else 0) for _, size in groups}
    out, at = [], 0
    for c0, size in groups:
        nw = kp * ((size + 1) // 2)
        part = [by["bias"].values[c0:c0 + size].astype(np.int64), words[at:at + nw],
                by["mult"].values[c0:c0 + size]]
        at += nw
        if rnd:
            sh = np.zeros(-(-size // 4) * 4, np.int64)
            sh[:size] = by["shift"].values[c0:c0 + size]
            part += [by["rnd"].values[c0:c0 + size],
                     (sh & 0xFF).reshape(-1, 4) @ (np.int64(1) << np.arange(0, 32, 8))]
        if channels is not None:
            och = np.zeros(-(-size // 2) * 2, np.int64)
            och[:size] = channels[c0:c0 + size]
            part.append(och.reshape(-1, 2) @ np.array([1, 1 << 16], np.int64))
        out.append(np.concatenate([np.asarray(v, np.int64) for v in part]))
    rec = wrap32(np.concatenate(out) if out else np.zeros(0, np.int64)).astype(np.int32)
    desc = (by["w"].comment + "; per channel group: its biases, its weight words, its "
            "multipliers" + (", its rounding addends and its shifts (bytes)" if rnd else "")
            + (", its output channels (uint16)" if channels is not None else ""))
    keep = [c for c in consts if c.suffix not in ("w", "bias", "mult", "rnd", "shift")]
    return [Const("w", rec, desc), *keep], tail


def asm_output(ctx: Context, params: dict[str, Any]) -> bool:
    """Whether a kernel's assembly may requantize and store its outputs: on a single-issue core
    (the loads in runs; the dual-issue M7 schedules the C better), with MobileNet's output stage
    (``"dbl"`` with ties up and the zero point folded, a full-range clamp: SMMLAR, ASR, SSAT)."""
    cost = ctx.target.cost
    return ((cost is None or cost.issue_width == 1) and params["kind"] == "mm"
            and params.get("mm") == "dbl" and params["ties_up"] and params["zp_folded"]
            and params["full_range"])


def stage_weights(ctx: Context, nbytes: int, reads: int) -> bool:
    """Whether a kernel reading its ``nbytes`` of weights ``reads`` times runs faster copying them
    once into the arena's slack: on chips whose flash has wait states, where the weights do not
    fit the flash's data cache (`qlane.codegen.targets.CostModel`)."""
    cost = ctx.target.cost
    return bool(cost and cost.flash_wait_states and nbytes > cost.flash_cache_bytes
                and reads >= 2)


@lowering("CONV_2D", isa="dsp")
def conv2d_dsp(ctx: Context) -> LayerCode:
    """CONV_2D as a GEMM over int16 im2col columns of two output pixels at a time."""
    sim = ctx.sim
    assert isinstance(sim, Conv2D)
    win = sim.win
    x = sim.x
    b, h, w, c = x.shape
    kh, kw = win.kh, win.kw
    rows = win.is_identity()  # 1x1, stride 1, no padding: pixel p reads x + p*C
    geometry = dict(
        mode="rows" if rows else "im2col", B=b, H=h, W=w, C=c, OH=win.oh, OW=win.ow, KH=kh,
        KW=kw, rowseg=False, SH=win.sh, SW=win.sw, DH=win.dh, DW=win.dw, TOP=win.top,
        LEFT=win.left,
    )
    variant = window_tag(kh, kw, win.sh, win.sw, win.dh, win.dw)
    # a filter row of few channels as one segment: its taps are neighbouring input bytes
    rowseg = not rows and win.dw == 1 and kw > 1 and kw * c <= ROWSEG_MAX
    seg, nseg = (kw * c, kh) if rowseg else (c, kh * kw)
    if rowseg:
        layout = column_layout(seg, 1)
        geometry.update(rowseg=True, slot=[int(np.flatnonzero(layout == e)[0])
                                           for e in range(seg)])
    return _gemm_kernel(ctx, "conv2d", variant, sim.wmat_int, seg, nseg,
                        b * win.oh * win.ow, geometry)


@lowering("FULLY_CONNECTED", isa="dsp")
def fully_connected_dsp(ctx: Context) -> LayerCode:
    """FULLY_CONNECTED as the same GEMM: each input row is one column."""
    sim = ctx.sim
    assert isinstance(sim, FullyConnected)
    geometry = dict(mode="rows")
    return _gemm_kernel(ctx, "fc", f"n{sim.units}d{sim.depth}", sim.wmat_int, sim.depth, 1,
                        sim.rows, geometry)


# --------------------------------------------------------------------------------------------
# DEPTHWISE_CONV_2D: channel quads in SXTB16 lanes against int16-pair weights (SMLABB/SMLATT)


def pack_dw_weights(wt: np.ndarray) -> np.ndarray:
    """[T, C] offset weights (depth multiplier 1, C a multiple of 4) as int16 pairs in loop order.

    Per channel quad, per tap: (w[t][c0], w[t][c2]) then (w[t][c1], w[t][c3]), the lanes of
    SXTB16 of the input word and of the word rotated by 8.
    """
    t, c = wt.shape
    out = [pack_pairs(wt[:, [g, g + 1]], wt[:, [g + 2, g + 3]]).reshape(-1)
           for g in range(0, c, DW_GROUP)]
    return np.concatenate(out) if out else np.zeros(0, np.int32)


def pack_dw_pairs(wt: np.ndarray) -> np.ndarray:
    """[T, C] offset weights as words (w[t][c], w[t+1][c]) per channel, per tap pair; an odd
    last tap is (w, 0). Used by the channel tail and the depth-multiplier path."""
    t, c = wt.shape
    rows = [pack_pairs(wt[k], wt[k + 1]) for k in range(0, t - 1, 2)]
    if t % 2:
        rows.append(pack_pairs(wt[t - 1], np.zeros(c, np.int64)))
    return np.stack(rows, axis=1).reshape(-1)  # [C, pairs]


def dw_row_words(wt: np.ndarray, kh: int, kw: int) -> tuple[np.ndarray, list[str]]:
    """[T, C] weights as the halfword-pair words the row kernel keeps per channel, and their
    names: per filter row ky the tap pairs ``wp<ky>_<m>`` (w[ky][2m], w[ky][2m+1]), then for an
    odd width the last taps of two rows ``wo<j>`` (w[2j][kw-1], w[2j+1][kw-1]). [C, words]."""
    c = wt.shape[1]
    w = np.asarray(wt, np.int64).reshape(kh, kw, c)
    zero = np.zeros(c, np.int64)
    lo, hi, names = [], [], []
    for ky in range(kh):
        for m in range(kw // 2):
            lo.append(w[ky, 2 * m])
            hi.append(w[ky, 2 * m + 1])
            names.append(f"wp{ky}_{m}")
    if kw % 2:
        for j in range(0, kh, 2):
            lo.append(w[j, kw - 1])
            hi.append(w[j + 1, kw - 1] if j + 1 < kh else zero)
            names.append(f"wo{j // 2}")
    return np.stack([np.asarray(lo), np.asarray(hi)], axis=-1).transpose(1, 0, 2), names


def pack_dw_row_words(halves: np.ndarray, bytes8: bool) -> np.ndarray:
    """[C, words, 2] halfword pairs as flash words in loop order: one int32 per pair, or (bytes8)
    two pairs A, B per word as bytes (A.lo, B.lo, A.hi, B.hi), which SXTB16 of the word and of the
    word rotated by 8 widen back to A and B."""
    c, n, _ = halves.shape
    if not bytes8:
        return pack_pairs(halves[..., 0], halves[..., 1]).reshape(-1)
    if n % 2:
        halves = np.concatenate([halves, np.zeros((c, 1, 2), np.int64)], axis=1)
    a, b = halves[:, 0::2], halves[:, 1::2]
    word = ((a[..., 0] & 0xFF) | ((b[..., 0] & 0xFF) << 8) | ((a[..., 1] & 0xFF) << 16)
            | ((b[..., 1] & 0xFF) << 24))
    return wrap32(word).astype(np.int32).reshape(-1)


DW_PASS = 4
"""Output pixels per pass of the depthwise row kernel (1, 2 or 4)."""
DW_BAND_BYTES = 16 * 1024
DW_BAND_FLOOR = 4 * 1024
"""Scratch for a band of several output rows: what the arena has spare at the layer's step
(`Context.scratch_budget`) but at least `DW_BAND_FLOOR` (the arena may grow by that much; a
channel's weights and constants are loaded once per band) and at most `DW_BAND_BYTES`; at least
one output row's band."""


def dw_asm(sw: int, sp: int, c: int, signed: bool, passes: int, tails: list[int], sh: int,
           ow: int) -> list[str] | None:
    """The Thumb-2 assembly of one channel's output rows of a 3x3 filter in the row kernel:
    per row ``passes`` 4-pixel passes, then the ``tails`` (2 and / or 1 pixels); stride ``sw``
    across and ``sh`` down, band rows ``sp`` int16 apart, ``ow`` outputs a row, ``c`` bytes
    apart. None where an offset does not fit its instruction.

    Per filter row: LDR of the input words (one run), then per pixel SMLAD of a tap pair (SMLADX
    on PKHBT where the pair straddles two words, stride 1) and SMLA<x><y> of the third tap;
    the first row starts each accumulator at the bias. Per pass SMMLAR, ASR, SSAT / USAT and STRB
    of each output (the ``"dbl"`` form with ties up and the zero point folded, full range).
    Registers: accumulators r0-r3, input words r4-r6, tap pairs r8-r10 (rows 0-2), third taps
    r11 (rows 0, 1) and r7 (row 2, saved); band pointer r12, output pointer lr. They come in
    holding multiplier, rounding addend, shift, bias and the number of rows (r0-r4), pushed and
    read back per pass, and row 2's third tap (r5), whose stack slot then holds a row's end of
    passes.
    """
    row = 2 * sp  # bytes between band rows
    step = 2 * sh * sp - 2 * sw * ow  # from a row's end to the next row's start
    if (2 * row + 4 * (2 * sw + 1) > 4095 or 4 * c > 4095 or not 0 <= step <= 4095
            or 8 * sw * passes > 4095):
        return None
    sat = "ssat" if signed else "usat"
    wp = ["r8", "r9", "r10"]
    wo = ["r11", "r11", "r7"]
    half = ["b", "t", "b"]  # the half of wo holding row ky's third tap

    def taps(n: int) -> list[str]:
        """n pixels (4, 2 or 1) into r0.., the bias in r3."""
        out = ["ldr r3, [sp, #12]"]
        for ky in range(3):
            base = ky * row
            k, o, y = wp[ky], wo[ky], half[ky]

            def acc(a: int, first: bool = ky == 0) -> tuple[str, str]:
                return f"r{a}", ("r3" if first else f"r{a}")

            nw = ((n - 1) * sw + 2) // 2 + 1  # words of a filter row
            out += [f"ldr r{4 + i}, [r12, #{base + 4 * i}]" for i in range(min(nw, 3))]
            if sw == 1:
                d, a = acc(0)
                out.append(f"smlad {d}, r4, {k}, {a}")
                if n >= 2:
                    out.append("pkhbt r4, r5, r4")
                    d1, a1 = acc(1)
                    out.append(f"smladx {d1}, r4, {k}, {a1}")
                out.append(f"smlab{y} r0, r5, {o}, r0")
                if n >= 2:
                    out.append(f"smlat{y} r1, r5, {o}, r1")
                if n == 4:
                    d2, a2 = acc(2)
                    out += [f"smlad {d2}, r5, {k}, {a2}", "pkhbt r5, r6, r5"]
                    d3, a3 = acc(3)
                    out += [f"smladx {d3}, r5, {k}, {a3}", f"smlab{y} r2, r6, {o}, r2",
                            f"smlat{y} r3, r6, {o}, r3"]
            else:
                # words (x0 x1) .. (x8 x9): pixel t takes words t (pair) and t + 1 (low half)
                regs = ["r4", "r5", "r6", "r4", "r5"]
                for t in range(n):
                    if t >= 2:
                        out.append(f"ldr {regs[t + 1]}, [r12, #{base + 4 * (t + 1)}]")
                    d, a = acc(t)
                    out += [f"smlad {d}, {regs[t]}, {k}, {a}",
                            f"smlab{y} r{t}, {regs[t + 1]}, {o}, r{t}"]
        out += [f"add r12, r12, #{2 * n * sw}", "ldr r4, [sp]", "ldr r5, [sp, #4]",
                "ldr r6, [sp, #8]"]
        for t in range(n):
            out += [f"smmlar r{t}, r{t}, r4, r5", f"asr r{t}, r{t}, r6", f"{sat} r{t}, #8, r{t}",
                    f"strb r{t}, [lr, #{t * c}]" if t else f"strb r{t}, [lr]"]
        return [*out, f"addw lr, lr, #{n * c}"]

    lines = ["push {r0, r1, r2, r3, r4, r5, r7}", "mov r7, r5", "3:"]
    if passes:
        lines += [f"add r4, r12, #{8 * sw * passes}", "str r4, [sp, #20]", "1:", *taps(4),
                  "ldr r4, [sp, #20]", "cmp r12, r4", "bne 1b"]
    for n in tails:
        lines += taps(n)
    if step:
        lines.append(f"addw r12, r12, #{step}")
    lines += ["ldr r4, [sp, #16]", "subs r4, r4, #1", "str r4, [sp, #16]", "bne 3b",
              "add sp, sp, #24", "pop {r7}"]
    return lines


def thumb2_add_imm(v: int) -> bool:
    """Whether ADD Rd, Rn, #v assembles as one Thumb-2 instruction: ADDW (0..4095) or a
    modified immediate (8 significant bits shifted left, or a byte repeated as 0x00XY00XY,
    0xXY00XY00, 0xXYXYXYXY)."""
    if 0 <= v <= 4095:
        return True
    if not 0 < v < 2**32:
        return False
    lo, mid = v & 0xFF, (v >> 8) & 0xFF
    if v in (lo * 0x00010001, mid * 0x01000100, lo * 0x01010101):
        return True
    return v % (1 << (v.bit_length() - 8)) == 0


def widen_asm(c: int, cs: int, signed: bool, x2: bool) -> list[str] | None:
    """The Thumb-2 assembly of the depthwise band's widening: per step four pixels (LDR of
    each one's word of four channels, ``c`` bytes apart, one run) into the four channels' planes
    (``cs`` int16 apart): per channel pair SXTAB16 / UXTAB16 of two pixels' words (twice for
    2 (x - zp), ``x2``), PKHBT / PKHTB into each channel's two neighbouring columns, STR. None
    where an offset does not fit its instruction. Registers: words r0-r3, lanes r4-r6 and r8,
    the offset r9, input r10 (up to lr), planes of channels 0-1 r11 and 2-3 r12."""
    if 3 * c > 4095 or 2 * cs + 4 > 4095 or not thumb2_add_imm(4 * cs):
        return None
    ext = "sxtab16" if signed else "uxtab16"
    u, e = ["r0", "r1", "r2", "r3"], ["r4", "r5", "r6", "r8"]

    def wide(d: str, x: str, rot: str) -> list[str]:
        first = [f"{ext} {d}, r9, {x}{rot}"]
        return first + ([f"{ext} {d}, {d}, {x}{rot}"] if x2 else [])

    lines = ["1:", f"ldr {u[1]}, [r10, #{c}]", f"ldr {u[2]}, [r10, #{2 * c}]",
             f"ldr {u[3]}, [r10, #{3 * c}]", f"ldr {u[0]}, [r10], #4"]
    for rot, off in (("", 0), (", ror #8", 2 * cs)):
        for half in (0, 1):  # pixels 0-1, then 2-3
            a, b = 2 * half, 2 * half + 1
            lo, hi = (e[2], e[0]) if half == 0 else (e[1], e[2])
            ea, eb = (e[0], e[1]) if half == 0 else (e[2], e[3])
            lines += wide(ea, u[a], rot) + wide(eb, u[b], rot)
            lines += [f"pkhbt {lo}, {ea}, {eb}, lsl #16", f"pkhtb {hi}, {eb}, {ea}, asr #16",
                      f"str {lo}, [r11, #{off + 4 * half}]", f"str {hi}, [r12, #{off + 4 * half}]"]
    # the next four channels: r12 is r11 + 4 cs bytes
    return [*lines, f"add r11, r12, #{4 * cs}", f"add r12, r11, #{4 * cs}", "cmp r10, lr",
            "bne 1b"]


def rnd_from_shift(params: dict[str, Any], consts: list[Const]) -> list[Const]:
    """The constants without the per-channel rounding addends where each is K << (shift - 1)
    for one K (``params["rnd_k"]``: 2 zp + 1 with the zero point folded, else 1), as the
    ``"dbl"`` form's are but for channels of one output value: the kernel computes them from
    the shifts, once per channel, and the flash keeps 4 bytes a channel fewer."""
    by = {c.suffix: c for c in consts}
    if params.get("kind") != "mm" or params.get("mm") != "dbl" or "rnd" not in by:
        return consts
    k = 2 * params["zp"] + 1 if params["zp_folded"] else 1
    shift = np.asarray(by["shift"].values, np.int64)
    if np.any(shift < 1) or np.any(np.asarray(by["rnd"].values, np.int64)
                                   != wrap32(np.int64(k) << (shift - 1))):
        return consts
    params["rnd_k"] = k
    return [c for c in consts if c.suffix != "rnd"]


def _dw_band(oh: int, sh: int, kh: int, row_bytes: int, budget: int) -> tuple[int, int]:
    """(output rows per band, widened input rows it holds): the most output rows whose input
    rows fit the band's scratch (see `DW_BAND_BYTES`)."""
    budget = min(DW_BAND_BYTES, max(budget, DW_BAND_FLOOR))
    nb = 1
    while nb < oh and (nb * sh + kh) * row_bytes <= budget:
        nb += 1
    return nb, (nb - 1) * sh + kh


def _dw_rows(ctx: Context, sim: DepthwiseConv2D) -> LayerCode | None:
    """The row kernel (``templates/dsp/dwconv_rows.c.j2``) where it applies: depth multiplier 1,
    dilation 1, stride 1 or 2 across; None elsewhere."""
    win = sim.win
    if sim.mult != 1 or win.dh != 1 or win.dw != 1 or win.sw not in (1, 2) or win.sh > win.kh:
        return None
    b, h, w, c = sim.x.shape
    taps = win.kh * win.kw
    wt = np.asarray(sim.wrows[:, :, :c], np.int64).reshape(taps, c)
    params, consts = requant_params(sim, c, acc_bound(sim, wt), acc_bounds(sim, wt))
    halves, names = dw_row_words(wt, win.kh, win.kw)
    bytes8 = bool(halves.size) and int(halves.min()) >= -128 and int(halves.max()) <= 127
    if not bytes8 and (np.abs(halves).max(initial=0) > 32767 or win.sw > 1):
        # with int16 weights the quad kernel reads no more flash and widens a strided input
        # row's pixels only where a window uses them
        return None
    ow, sw, kw = win.ow, win.sw, win.kw
    px = DW_PASS
    nw = {n: ((n - 1) * sw + kw - 1) // 2 + 1 for n in (1, 2, 4)}  # words per filter row
    tails = [n for n in (2, 1) if n < px and (ow % px) & n]
    starts = [(i * px, px) for i in range(ow // px)]
    col = ow - ow % px
    for n in tails:
        starts.append((col, n))
        col += n
    reach = max(o * sw + 2 * nw[n] for o, n in starts)
    sp = max(win.left + w, reach)
    sp += sp % 2
    # input pixels widened in pairs from an even band column; an odd first / last one alone
    x0 = win.left % 2
    npair = (w - x0) // 2
    nb, held = _dw_band(win.oh, win.sh, win.kh, c * sp * 2, ctx.scratch_budget)
    dtype = np.dtype(sim.dtype)
    zp_in = int(sim.qi.zp)
    quads = c - c % DW_GROUP
    # acc_scale 2: the sums hold 2 acc; the weights are doubled (int8 ones by QADD16 once per
    # channel and band, int16 ones stored so where they fit), else the widened input holds
    # 2 (x - zp) (within int16, one more SXTAB16 per two input bytes)
    w2 = params["acc_scale"] == 2 and (bytes8 or 2 * int(np.abs(halves).max(initial=0)) < 2**15)
    x2 = params["acc_scale"] == 2 and not w2
    if w2 and not bytes8:
        halves = 2 * halves
    params.update(
        B=b, H=h, W=w, C=c, OH=win.oh, OW=ow, KH=win.kh, KW=kw, SH=win.sh, SW=sw, TOP=win.top,
        LEFT=win.left, SP=sp, CS=held * sp, PX=px, PASSES=ow // px, tails=tails, nw=nw,
        x2=x2, w2=w2 and bytes8,
        NB=nb, ADV=nb * win.sh, KEEP=max(held - nb * win.sh, 0),
        w8=bytes8, NB8=(len(names) + 1) // 2,
        wnames=names + [""] * (len(names) % 2 if bytes8 else 0),
        X0=x0, NPAIR=npair, singles_lo=list(range(x0)), singles_hi=list(range(x0 + 2 * npair, w)),
        quads=quads, in_zp=zp_in,
        off=_words(-(2 if x2 else 1) * zp_in, dtype == np.int8),
        helpers={"ld32", "st32"} | ({"wide"} if quads else set())
        | ({"pack16"} if quads < c else set()),
    )
    desc = ("weights minus their zero point per channel: per filter row its tap pairs, then the "
            "odd last taps of two rows; " + ("bytes, two int16 pairs to a word (SXTB16)"
                                             if bytes8 else "int16 pairs"))
    consts = rnd_from_shift(params, consts)
    # per channel one record, read through one pointer: its weight words, then its bias
    words = pack_dw_row_words(halves, bytes8).reshape(c, -1)
    bias = np.asarray(consts[0].values, np.int64).reshape(c, 1)
    consts[0] = Const("w", wrap32(np.concatenate([words, bias], axis=1)).astype(np.int32
                                                                              ).reshape(-1),
                      desc + "; then the bias" + (" (x 2)" if params["acc_scale"] == 2 else ""))
    params.update(NWW=words.shape[1], REC=words.shape[1] + 1)
    params["asm"] = (dw_asm(sw, sp, c, dtype == np.int8, ow // px, tails, win.sh, ow)
                     if asm_output(ctx, params) and (win.kh, kw, px) == (3, 3, 4) else None)
    cost = ctx.target.cost
    params["wasm"] = (widen_asm(c, held * sp, dtype == np.int8, x2)
                      if quads and (cost is None or cost.issue_width == 1) else None)
    variant = window_tag(win.kh, kw, win.sh, sw, win.dh, win.dw)
    return LayerCode(template="dsp/dwconv_rows.c.j2", op="dwconv2d", variant=variant,
                     tile=f"{px}x1", params=params, consts=consts,
                     scratch_bytes=2 * c * held * sp, scratch_grows=nb < win.oh,
                     rows_per_pass=nb)


@lowering("DEPTHWISE_CONV_2D", isa="dsp")
def depthwise_dsp(ctx: Context) -> LayerCode:
    """DEPTHWISE_CONV_2D: the row kernel where it applies, else four channels per pass over
    zero-point padded input rows."""
    sim = ctx.sim
    assert isinstance(sim, DepthwiseConv2D)
    win = sim.win
    taps = win.kh * win.kw
    if taps > MAX_DW_TAPS:
        raise Unsupported(f"{win.kh}x{win.kw} filter has more than {MAX_DW_TAPS} taps")
    rows = _dw_rows(ctx, sim)
    if rows is not None:
        return rows
    b, h, w, cin = sim.x.shape
    n = sim.n_out
    mult = sim.mult
    wt = np.asarray(sim.wrows[:, :, :n], np.int64).reshape(taps, n)  # [T, C_out]
    params, consts = requant_params(sim, n, acc_bound(sim, wt), acc_bounds(sim, wt))
    wt = wt * params["acc_scale"]
    dtype = np.dtype(sim.dtype)
    zp_in = int(sim.qi.zp)
    quads = cin - cin % DW_GROUP if mult == 1 else 0
    span = win.span[1]
    ncopy = min(w, span - win.left)
    params.update(
        B=b, H=h, W=w, C=cin, N=n, MULT=mult, OH=win.oh, OW=win.ow, KH=win.kh, KW=win.kw,
        SH=win.sh, SW=win.sw, DH=win.dh, DW=win.dw, TOP=win.top, LEFT=win.left, NT=taps,
        TP=(taps + 1) // 2, SPAN=span, NCOPY=ncopy, RIGHT=span - win.left - ncopy,
        ACC_OFS=(win.kh * span * cin + 3) // 4,
        quads=quads, in_zp=zp_in, zp_byte=zp_in & 0xFF, off=_words(-zp_in, dtype == np.int8),
        x2=False,
        helpers={"ld32", "st32"} | ({"wide", "lanes"} if quads else set())
        | ({"pack16"} if quads < n else set()),
    )
    if quads:
        consts.insert(0, Const("wq", pack_dw_weights(wt[:, :quads]),
                               "weights minus their zero point: per channel quad, per tap, "
                               "int16 pairs (w[c0], w[c2]), (w[c1], w[c3])"))
    if quads < n:
        consts.insert(1 if quads else 0, Const(
            "wp", pack_dw_pairs(wt[:, quads:]),
            "remaining channels: per channel, per tap pair, (w[t][c], w[t+1][c])"))
    variant = window_tag(win.kh, win.kw, win.sh, win.sw, win.dh, win.dw)
    if mult > 1:
        variant += f"m{mult}"
        tile = f"1x{mult}"
    else:
        tile = "1x4" if cin >= DW_GROUP else "1x1"
    return LayerCode(template="dsp/dwconv.c.j2", op="dwconv2d", variant=variant, tile=tile,
                  params=params, consts=consts,
                  scratch_bytes=4 * params["ACC_OFS"] + 4 * n, rows_per_pass=1)
