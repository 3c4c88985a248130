"""One requantization plan: every exact way qlane turns an int32 sum into an 8-bit output.

``mul_by_quantized_multiplier`` (`qlane.sim.fixedpoint`) defines the result. Each *form* below
computes the same map with fewer or cheaper operations under a condition that the plan checks,
and is defined once here: its numpy semantics, when it is exact, and where the C spells it on
each ISA (`FORMS`). The simulator's fast path, the lowerings and the templates all take their
constants from a `RequantPlan`; tests check every form against the reference where it applies.

Notation: ``a`` is the accumulator with the bias (an int32), ``M`` the Q31 multiplier, ``s`` the
shift, ``l = max(s, 0)`` and ``e = max(-s, 0)``; the output is ``clamp(zp + r, lo, hi)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .fixedpoint import INT32_MAX, Rounding, mul_by_quantized_multiplier, ties_up_exact


@dataclass(frozen=True)
class Form:
    """One exact spelling of requantization: meaning, condition, and its C per ISA."""

    name: str
    meaning: str
    exact_when: str
    spellings: dict[str, str] = field(default_factory=dict)  # ISA -> where the C spells it


FORMS: dict[str, Form] = {f.name: f for f in (
    Form("reference", "SRDHM(a * 2^l, M) then RDBPOT by e (double), or one rounding of a*M / "
         "2^(31-s) (single): TFLite's MultiplyByQuantizedMultiplier",
         "always (a * 2^l wraps in int32 as in C)",
         {"c": "qlane_requant_double / qlane_requant_single (qlane_fixedpoint.h)",
          "dsp": "qlane_requant_double / qlane_requant_single (qlane_fixedpoint.h, SMLAL leaves)",
          "neon": "qlane_requant_double_s32x4 / qlane_requant_single_s32x4 (qlane_fixedpoint.h)"}),
    Form("ties_up", "the reference with RDBPOT's negative ties rounded toward +infinity",
         "double rounding under a clamp whose lower bound is >= the output zero point",
         {"c": "qlane_requant_double_up (qlane_fixedpoint.h)",
          "neon": "qlane_requant_double_up_s32x4 (qlane_fixedpoint.h): VQRDMULH + VRSHL"}),
    Form("folded", "one floor: (a * M * 2^l + k - [a < 0] * c) >> d in 64 bits",
         "|a| * 2^l fits int32 (no left-shift wrap); c = 0 under a ReLU-like clamp",
         {"c": "c/_conv_common.j2 out_helper (q.ml, q.k, q.c, q.d)",
          "sim": "Requantizer f64 / i64 paths (sim/ops/conv.py)"}),
    Form("fused", "the folded floor with every shift <= -1: the high word of a*M + k (SMLAL) "
         "shifted right by e - 1",
         "every shift <= -1 (a zero multiplier takes e = 1)",
         {"dsp": "dsp/_common.c.j2 dsp_out (p.kind == 'fused')"}),
    Form("high_mul", "SRDHM(a, M) = SMMULR(2a, M), then RDBPOT by e as (h + 2^(e-1) - [h < 0]) "
         ">> e (double); (SMMUL(a, M) + 2^(e-2)) >> (e-1), or SMMULR(a, M) for e = 1 (single)",
         "double: |a| < 2^30 and every shift <= 0 (all zero or all negative); single: every "
         "shift <= -1",
         {"dsp": "dsp/_common.c.j2 dsp_out (p.kind == 'mm')"}),
    Form("lanes", "the reference on four int32 lanes: VSHL, VQRDMULH, fix-up, VRSHL (double); "
         "VQDMULH + VRSHL (single, every shift <= -1) or 64-bit products",
         "always; without the fix-up (ties_up) under a ReLU-like clamp",
         {"neon": "neon/_common.c.j2 rq_apply (modes double, double_up, single_neg, single)"}),
    Form("float", "round(double(a) * real_scale), ties away from zero: LiteRT >= 2.20's "
         "FULLY_CONNECTED", "rounding 'litert' on FULLY_CONNECTED (not a fixed-point form)",
         {"c": "c/_conv_common.j2 out_helper (q.kind == 'float')",
          "dsp": "dsp/_common.c.j2 dsp_out (p.kind == 'float')",
          "sim": "Requantizer._float (sim/ops/conv.py)"}),
)}
"""Every requantization form, by name."""


def _per_channel(v: object, n: int) -> np.ndarray:
    return np.broadcast_to(np.asarray(v, np.int64), (n,)).copy()


@dataclass(frozen=True)
class Folded:
    """``r = (a * m + k - [a < 0] * c) >> d`` per channel: the ``folded`` and ``fused`` forms."""

    m: np.ndarray  # M * 2^l
    k: np.ndarray
    c: np.ndarray  # 0 where negative ties need no fix-up
    d: np.ndarray

    def apply(self, a: np.ndarray) -> np.ndarray:
        """The form's value of int32 sums ``a`` (channel = last axis), exact in Python ints."""
        a = np.asarray(a, object)
        return ((a * self.m + self.k - (a < 0) * self.c) >> self.d).astype(np.int64)


@dataclass(frozen=True)
class HighMul:
    """The ``high_mul`` form: ``variant`` is dbl / dbl0 (double, e >= 1 / e = 0), smmul / smmulr
    (single, e >= 2 / e = 1); per channel multiplier, rounding addend and final shift."""

    variant: str
    m: np.ndarray
    rnd: np.ndarray
    shift: np.ndarray

    def apply(self, a: np.ndarray) -> np.ndarray:
        """The form's value, instruction by instruction (SMMULR rounds, SMMUL truncates)."""
        a = np.asarray(a, object)
        if self.variant in ("dbl", "dbl0"):
            h = (2 * a * self.m + (1 << 31)) >> 32  # SMMULR(2a, M)
            if self.variant == "dbl0":
                return h.astype(np.int64)
            return ((h + self.rnd - (h < 0)) >> self.shift).astype(np.int64)
        if self.variant == "smmulr":
            return ((a * self.m + (1 << 31)) >> 32).astype(np.int64)
        h = (a * self.m) >> 32  # SMMUL
        return ((h + self.rnd) >> self.shift).astype(np.int64)


@dataclass(frozen=True)
class Lanes:
    """The ``lanes`` form (NEON): mode, and left / right shift operands per channel.

    Modes: ``double`` (VSHL by ``left``, VQRDMULH, fix-up, VRSHL by ``right`` <= 0),
    ``double_up`` (the same without the fix-up), ``single_neg`` (VQDMULH, VRSHL by the shift,
    every shift <= -1) and ``single`` (64-bit products; ``left`` holds the shift).
    """

    mode: str
    m: np.ndarray
    left: np.ndarray
    right: np.ndarray

    @property
    def needs_left(self) -> bool:
        """False when the double modes shift nothing left (VSHL disappears)."""
        return not self.mode.startswith("double") or bool(np.any(self.left != 0))


class RequantPlan:
    """How one layer requantizes: its constants, and which exact forms apply.

    ``bound`` bounds ``|a|``, the accumulator with its bias (``None``: any int32). ``kind`` is
    ``"fixed"`` or ``"float"`` (LiteRT FULLY_CONNECTED, with ``real_scale`` per channel).
    """

    def __init__(self, multiplier: object, shift: object, zp: int, lo: int, hi: int,
                 rounding: Rounding, bound: int | None = None, channels: int | None = None,
                 kind: str = "fixed", real_scale: object = None) -> None:
        m = np.atleast_1d(np.asarray(multiplier, np.int64))
        n = channels or max(m.size, np.atleast_1d(np.asarray(shift)).size)
        self.multiplier = _per_channel(multiplier, n)
        self.shift = _per_channel(shift, n)
        self.zp, self.lo, self.hi = int(zp), int(lo), int(hi)
        self.rounding = rounding
        self.bound = 2**31 if bound is None else int(bound)
        self.kind = kind
        self.real_scale = None if real_scale is None else np.asarray(real_scale, np.float64)

    @property
    def channels(self) -> int:
        return int(self.multiplier.size)

    @property
    def uniform(self) -> bool:
        """One multiplier and one shift for every channel."""
        return bool(np.all(self.multiplier == self.multiplier[0])
                    and np.all(self.shift == self.shift[0]))

    @property
    def ties_up(self) -> bool:
        """Negative ties may round up (`ties_up` form): double rounding under a clamp whose
        lower bound is at or above the zero point."""
        return self.rounding != "single" and ties_up_exact(self.lo, self.zp)

    @property
    def wraps(self) -> bool:
        """The accumulator plus bias may leave int32 (and wraps as in C)."""
        return self.bound > INT32_MAX

    def reference(self, a: object) -> np.ndarray:
        """The classic requantization of int32 sums ``a`` (channel = last axis), unclamped."""
        return mul_by_quantized_multiplier(a, self.multiplier, self.shift, self.rounding)

    def output(self, r: object) -> np.ndarray:
        """A requantized value plus the zero point, clamped."""
        return np.clip(np.asarray(r, np.int64) + self.zp, self.lo, self.hi)

    def folded(self, ties_up: bool | None = None) -> Folded | None:
        """The ``folded`` form, or None when ``a * 2^l`` could wrap (double rounding).

        Double rounding, SRDHM ``floor((a*M*2^l + 2^30) / 2^31)`` then RDBPOT ``floor((h +
        2^(e-1) - [h < 0]) / 2^e)``, nests into one floor of ``(a*M*2^l + 2^30 + 2^(30+e) -
        2^31*[a < 0]) / 2^(31+e)``; single rounding is ``floor((a*M + 2^(30-s)) / 2^(31-s))``.
        ``ties_up`` (default: the plan's) drops the ``[a < 0]`` term.
        """
        m, s = self.multiplier, self.shift
        if self.rounding == "single":
            return Folded(m.copy(), np.left_shift(np.int64(1), 30 - s), np.zeros_like(s),
                          31 - s)
        left, e = np.maximum(s, 0), np.maximum(-s, 0)
        lmax = int(left.max(initial=0))
        if lmax and min(self.bound, 2**31) << lmax > INT32_MAX:
            return None
        k = (np.int64(1) << 30) + np.where(e >= 1, np.left_shift(np.int64(1), 30 + e), 0)
        c = np.where(e >= 1, np.int64(1) << 31, 0)
        if self.ties_up if ties_up is None else ties_up:
            c = np.zeros_like(c)
        return Folded(m << left, k, c, 31 + e)

    def fused(self) -> Folded | None:
        """The ``fused`` form (d >= 32: SMLAL's high word shifted by d - 32), or None when a
        shift is >= 0. A zero multiplier gives 0 under any exponent: it takes e = 1."""
        m, s = self.multiplier, self.shift
        e = np.where(m == 0, 1, -s)
        if np.any(e < 1) or np.any(e > 31):
            return None
        k = np.left_shift(np.int64(1), 30 + e)
        c = np.zeros_like(e)
        if self.rounding != "single":
            k = k + (np.int64(1) << 30)
            if not self.ties_up:
                c = c + (np.int64(1) << 31)
        return Folded(m.copy(), k, c, 31 + e)

    def high_mul(self) -> HighMul | None:
        """The ``high_mul`` form (SMMULR / SMMUL), or None where it is not exact."""
        m = self.multiplier
        e = np.where(m == 0, 2, -self.shift)
        if self.rounding == "single":
            if np.all(e == 1):
                return HighMul("smmulr", m.copy(), np.zeros_like(e), np.zeros_like(e))
            if np.any(e < 2) or np.any(e > 31):
                return None
            return HighMul("smmul", m.copy(), np.left_shift(np.int64(1), e - 2), e - 1)
        if (self.bound >= 2**30 or np.any(e > 31) or np.any(e < 0)
                or (np.any(e == 0) and np.any(e))):
            return None
        rnd = np.where(e > 0, np.left_shift(np.int64(1), np.maximum(e - 1, 0)), 0)
        return HighMul("dbl" if np.all(e[m != 0] >= 1) else "dbl0", m.copy(), rnd, e)

    def lanes(self, ties_up: bool | None = None) -> Lanes:
        """The ``lanes`` form; ValueError when a shift is outside what the instructions take.
        ``ties_up`` (default: the plan's) selects ``double_up`` for double rounding."""
        m, s = self.multiplier, self.shift
        if self.rounding == "single":
            if np.any((s < -31) | (s > 30)):
                raise ValueError("single-rounding shift outside [-31, 30]")
            mode = "single_neg" if bool(np.all(s <= -1)) else "single"
            return Lanes(mode, m.copy(), s.copy(), np.zeros_like(s))
        if self.rounding not in ("double", "litert"):
            raise ValueError(f"rounding {self.rounding!r}")
        if np.any((s < -31) | (s > 31)):
            raise ValueError("shift outside [-31, 31]")
        up = self.ties_up if ties_up is None else ties_up
        return Lanes("double_up" if up else "double", m.copy(), np.maximum(s, 0),
                     np.minimum(s, 0))
