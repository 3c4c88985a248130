"""Convolutions and fully connected layers: CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED.

Semantics are those of the classic TFLite reference kernels (``reference/conv.h``,
``reference/integer_ops/conv.h``, ``reference/depthwiseconv_uint8.h``,
``reference/integer_ops/depthwise_conv.h``, ``reference/fully_connected.h`` and
``reference/integer_ops/fully_connected.h``) with the multipliers of ``kernel_util.cc``:

- uint8 (per-tensor, filter zero point applied): ``real = double(float(s_in * s_w)) / s_out``;
  the product of the two scales is rounded to float32 first.
- int8 (per-channel, symmetric filter): ``real[c] = double(s_in) * double(s_w[c]) / s_out``.
- FULLY_CONNECTED per-tensor (uint8 and int8) uses the float32 product like uint8 convolutions.

Accumulators are exact: float32 BLAS while every partial sum stays below 2^24, float64 below
2^53, int64 otherwise, decided when the kernel is prepared from the folded weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..fixedpoint import (
    INT32_MIN,
    Rounding,
    dtype_range,
    mul_by_quantized_multiplier,
    quantize_multiplier,
    wrap_int32,
)
from ..graph import Graph, Operator, Tensor
from ..quant import ACTIVATIONS, QuantParams, activation_range
from ..requant import RequantPlan
from .base import Kernel, register

F32_EXACT = 2**24
F64_EXACT = 2**53
# Elements of im2col / accumulator per chunk of samples: keeps the working set in the L2 cache.
_CONV_CHUNK = 1 << 16
_DW_CHUNK = 1 << 15


# --------------------------------------------------------------------------------------------
# Geometry


def out_size(padding: str, size: int, filt: int, stride: int, dilation: int = 1) -> int:
    """TFLite ComputeOutSize: output extent of one spatial axis."""
    eff = (filt - 1) * dilation + 1
    if padding == "SAME":
        return (size + stride - 1) // stride
    return (size + stride - eff) // stride


def pad_before(size: int, filt: int, stride: int, dilation: int, out: int) -> int:
    """TFLite ComputePaddingWithOffset: leading padding; the odd unit (offset) goes after."""
    eff = (filt - 1) * dilation + 1
    total = max((out - 1) * stride + eff - size, 0)
    return total // 2


@dataclass(frozen=True)
class Window:
    """Sliding-window geometry of one 2-D operator (NHWC)."""

    kh: int
    kw: int
    sh: int
    sw: int
    dh: int
    dw: int
    top: int
    left: int
    oh: int
    ow: int

    @classmethod
    def make(cls, padding: str, in_hw: tuple[int, int], k: tuple[int, int],
             s: tuple[int, int], d: tuple[int, int]) -> Window:
        oh = out_size(padding, in_hw[0], k[0], s[0], d[0])
        ow = out_size(padding, in_hw[1], k[1], s[1], d[1])
        top = pad_before(in_hw[0], k[0], s[0], d[0], oh)
        left = pad_before(in_hw[1], k[1], s[1], d[1], ow)
        return cls(k[0], k[1], s[0], s[1], d[0], d[1], top, left, oh, ow)

    @property
    def span(self) -> tuple[int, int]:
        """Rows and columns of the padded input that the windows touch."""
        return (self.oh - 1) * self.sh + (self.kh - 1) * self.dh + 1, \
            (self.ow - 1) * self.sw + (self.kw - 1) * self.dw + 1

    def is_identity(self) -> bool:
        return (self.kh, self.kw, self.sh, self.sw, self.top, self.left) == (1, 1, 1, 1, 0, 0)

    def pad(self, x: np.ndarray, fill: float | int, dtype: np.dtype,
            zp: int | None = None) -> np.ndarray:
        """``x`` [B, H, W, C] (minus ``zp`` if given) in a ``fill``-ed array covering every
        window, converted to ``dtype``."""
        hp, wp = self.span
        b, h, w, c = x.shape
        hh, ww = min(h, hp - self.top), min(w, wp - self.left)
        if self.top == 0 and self.left == 0 and hp <= h and wp <= w:
            out = np.empty((b, hp, wp, c), dtype)
        elif fill == 0:
            out = np.zeros((b, hp, wp, c), dtype)
        else:
            out = np.full((b, hp, wp, c), fill, dtype=dtype)
        inner = out[:, self.top:self.top + hh, self.left:self.left + ww]
        if zp is None:
            inner[...] = x[:, :hh, :ww]
        else:
            np.subtract(x[:, :hh, :ww], np.array(zp, dtype), out=inner, casting="unsafe")
        return out

    def row_taps(self, xp: np.ndarray):
        """Yield ``(ky, kx, view)`` with ``view`` [B, OH, OW*C] of the padded input under each
        tap; strided windows read from contiguous phase planes so that rows stay contiguous."""
        planes: dict[tuple[int, int], np.ndarray] = {}
        b, c = xp.shape[0], xp.shape[3]
        for ky in range(self.kh):
            oy, py = divmod(ky * self.dh, self.sh)
            for kx in range(self.kw):
                ox, px = divmod(kx * self.dw, self.sw)
                if (py, px) not in planes:
                    planes[py, px] = (xp if self.sh == self.sw == 1 else
                                      np.ascontiguousarray(xp[:, py::self.sh, px::self.sw]))
                view = planes[py, px][:, oy:oy + self.oh, ox:ox + self.ow]
                yield ky, kx, view.reshape(b, self.oh, self.ow * c)

    def tap(self, xp: np.ndarray, ky: int, kx: int) -> np.ndarray:
        """View [B, OH, OW, C] of the padded input under filter tap (ky, kx)."""
        y0, x0 = ky * self.dh, kx * self.dw
        return xp[:, y0:y0 + (self.oh - 1) * self.sh + 1:self.sh,
                  x0:x0 + (self.ow - 1) * self.sw + 1:self.sw]

    def patches(self, xp: np.ndarray) -> np.ndarray:
        """Strided view [B, OH, OW, KH, KW, C] of the padded input (no copy)."""
        sb, sy, sx, sc = xp.strides
        shape = (xp.shape[0], self.oh, self.ow, self.kh, self.kw, xp.shape[3])
        strides = (sb, sy * self.sh, sx * self.sw, sy * self.dh, sx * self.dw, sc)
        return np.lib.stride_tricks.as_strided(xp, shape, strides, writeable=False)


# --------------------------------------------------------------------------------------------
# Validation helpers shared with pool.py


def check_activation(k: Kernel, t: Tensor | None, role: str) -> QuantParams:
    """A uint8/int8 per-tensor quantized activation tensor; returns its parameters."""
    k.need(t is not None, f"{role} tensor is missing")
    assert t is not None
    dt = np.dtype(t.dtype)
    if dt == np.float32:
        raise k.fail(f"float32 {role} is not supported (float model?)")
    k.need(dt.name in ("uint8", "int8"),
           f"{role} dtype {dt.name} is not supported (uint8 or int8 expected)")
    k.need(t.quant is not None, f"{role} {t.describe()} has no quantization parameters")
    assert t.quant is not None
    k.need(not t.quant.per_axis, f"{role} {t.describe()} must be quantized per tensor")
    return t.quant


def check_activation_option(k: Kernel) -> str:
    act = k.op.options.get("activation", "NONE")
    k.need(act in ACTIVATIONS, f"fused activation {act} is not supported")
    return act


def check_io(k: Kernel, n_inputs: tuple[int, ...]) -> tuple[Tensor, QuantParams, Tensor,
                                                              QuantParams]:
    """Input 0 and output 0: same dtype, per-tensor quantized."""
    k.need(len(k.op.inputs) in n_inputs,
           f"expected {' or '.join(map(str, n_inputs))} inputs, got {len(k.op.inputs)}")
    k.need(len(k.outputs) == 1, f"expected 1 output, got {len(k.outputs)}")
    qi = check_activation(k, k.inputs[0], "input")
    qo = check_activation(k, k.outputs[0], "output")
    x, y = k.inputs[0], k.outputs[0]
    assert x is not None
    k.need(np.dtype(x.dtype) == np.dtype(y.dtype),
           f"input is {np.dtype(x.dtype).name} but output is {np.dtype(y.dtype).name}")
    return x, qi, y, qo


def window_of(k: Kernel, kernel_hw: tuple[int, int], n_out: int | None,
              dilated: bool = True) -> Window:
    """The operator's window over input 0, checked against the declared output shape
    (``n_out`` output channels; None: as many as the input)."""
    x, y, o = k.inputs[0], k.outputs[0], k.op.options
    assert x is not None
    k.need(len(x.shape) == 4, f"input must be 4-D NHWC, got {list(x.shape)}")
    s = o.get("stride_h", 1), o.get("stride_w", 1)
    d = (o.get("dilation_h", 1), o.get("dilation_w", 1)) if dilated else (1, 1)
    for name, v in zip(("kernel height", "kernel width", "stride_h", "stride_w", "dilation_h",
                        "dilation_w"), kernel_hw + s + d):
        k.need(v >= 1, f"{name} must be >= 1, got {v}")
    pad = o.get("padding", "SAME")
    k.need(pad in ("SAME", "VALID", "EXPLICIT"), f"unknown padding {pad}")
    if pad == "EXPLICIT":
        top, left = o.get("pad_top", 0), o.get("pad_left", 0)
        k.need(top >= 0 and left >= 0, f"explicit padding must be >= 0, got {top}, {left}")
        win = Window(*kernel_hw, *s, *d, top, left, y.shape[1], y.shape[2])
        reach = (win.oh - 1) * win.sh - top, (win.ow - 1) * win.sw - left
        k.need(reach[0] < x.shape[1] and reach[1] < x.shape[2],
               "the last window starts below or right of the input (explicit padding)")
    else:
        win = Window.make(pad, (x.shape[1], x.shape[2]), kernel_hw, s, d)
    k.need(win.oh > 0 and win.ow > 0, "filter larger than the input (VALID padding)")
    want = (x.shape[0], win.oh, win.ow, x.shape[3] if n_out is None else n_out)
    k.need(tuple(y.shape) == want,
           f"output shape {list(y.shape)} does not match the computed {list(want)}")
    return win


def _fixed_rounding(rounding: str) -> str:
    """Requantization rounding of the fixed-point kernels ("litert" only changes FC)."""
    return "single" if rounding == "single" else "double"


# --------------------------------------------------------------------------------------------
# Requantization


class Requantizer:
    """Requantizes int32 accumulators (channel = last axis) to clamped 8-bit outputs.

    ``kind="fixed"``: ``MultiplyByQuantizedMultiplier`` with ``rounding`` "double" or "single";
    ``kind="float"``: LiteRT's ``round(double(acc) * scale)`` with ``real_scale`` per channel.
    ``bound`` bounds ``|acc|`` without the bias and picks the exact path (``self.path``):

    - ``"f64"``: one float64 multiply-add and a floor, while every integer stays below 2^53;
    - ``"i64"``: the same map in int64 (a multiply, an add and a shift);
    - ``"reference"``: the int64 fixed-point primitives, when ``acc + bias`` (or its left shift)
      can leave int32 and wrap as in C.

    Double rounding, ``h = floor((a*M*2^l + 2^30) / 2^31)`` (SRDHM ties up) then
    ``floor((h + 2^(e-1) - [h < 0]) / 2^e)`` (RDBPOT ties away), nests into one floor of
    ``(a*M*2^l + 2^30 + 2^(30+e) - 2^31*[a < 0]) / 2^(31+e)`` with ``a = acc + bias``; single
    rounding is ``floor((a*M + 2^(30-s)) / 2^(31-s))``.
    """

    def __init__(self, multiplier: np.ndarray, shift: np.ndarray, bias: np.ndarray, zp: int,
                 lo: int, hi: int, dtype: np.dtype, rounding: str, bound: int,
                 kind: str = "fixed", real_scale: np.ndarray | None = None) -> None:
        self.multiplier = np.asarray(multiplier, np.int64)
        self.shift = np.asarray(shift, np.int64)
        self.bias = np.asarray(bias, np.int64)
        self.channels = self.bias.size
        self.zp, self.lo, self.hi = int(zp), int(lo), int(hi)
        self.dtype = np.dtype(dtype)
        self.rounding = rounding
        self.kind = kind
        self.real_scale = None if real_scale is None else np.asarray(real_scale, np.float64)
        self._rows: dict[int, tuple] = {}
        self._off = 128 if self.dtype == np.int8 else 0
        abound = int(bound) + int(np.abs(self.bias).max(initial=0))
        self.plan = RequantPlan(self.multiplier, self.shift, self.zp, self.lo, self.hi, rounding,
                                bound=abound, channels=self.channels, kind=kind,
                                real_scale=real_scale)
        self.wraps = self.plan.wraps
        if kind == "float":
            self.path = "float"
        elif self.wraps or not self._fold(abound):
            self.path = "reference"

    @property
    def fast(self) -> bool:
        return self.path in ("f64", "i64")

    def _fold(self, abound: int) -> bool:
        """The plan's ``folded`` form with the bias and zero point folded in; False if a left
        shift could wrap."""
        folded = self.plan.folded()
        if folded is None:
            return False
        m_left, k_num, corr, den = folded.m, folded.k, folded.c, folded.d
        n = self.channels
        z = self.zp + self._off
        worst = abound * int(m_left.max(initial=0)) + int(k_num.max(initial=0)) \
            + (abs(z) + 1) * 2 ** int(den.max(initial=0))
        if worst < F64_EXACT:
            self.path = "f64"
            mf = np.ldexp(m_left.astype(np.float64), -den)
            kf = np.ldexp(k_num.astype(np.float64), -den) + z
            self._c = dict(m=mf, bk=self.bias * mf + kf, thr=-(self.bias * mf),
                           corr=np.ldexp(corr.astype(np.float64), -den))
            self._int32_ok = float(np.max(abound * mf + np.abs(kf), initial=0.0)) < 2.0**30
        else:
            self.path = "i64"
            self._c = dict(m=m_left, bk=self.bias * m_left + k_num, thr=-self.bias,
                           corr=corr, den=den)
        self._c = {k: np.broadcast_to(v, (n,)) for k, v in self._c.items()}
        if not np.any(corr):
            self._c["corr"] = None
        return True

    def _row_constants(self, reps: int) -> dict:
        """Per-channel constants tiled ``reps`` times (scalars when uniform across channels)."""
        if reps not in self._rows:

            def row(v: np.ndarray | None) -> np.ndarray | float | int | None:
                if v is None:
                    return None
                if np.all(v == v[0]):
                    return v[0].item()
                return np.tile(np.ascontiguousarray(v), reps)

            self._rows[reps] = {k: row(v) for k, v in self._c.items()}
        return self._rows[reps]

    def __call__(self, acc: np.ndarray, reps: int | None = None,
                 out: np.ndarray | None = None) -> np.ndarray:
        """``acc`` (exact integers, float or int64) whose last axis is ``reps`` x channels;
        the result has ``acc``'s shape and goes to ``out`` if given."""
        if not self.fast:
            per_channel = np.asarray(acc).reshape(-1, self.channels)
            slow = self._float if self.kind == "float" else self._reference
            y = slow(per_channel).reshape(np.shape(acc))
            if out is None:
                return y
            out[...] = y.reshape(out.shape)
            return out
        if out is None:
            out = np.empty(acc.shape, self.dtype)
        if reps is None:
            rows, reps = _as_rows(acc.reshape(-1, self.channels))
        else:
            rows = acc.reshape(-1, reps * self.channels)
        dst = out.reshape(rows.shape).view(np.uint8)
        c = self._row_constants(reps)
        step = max(1, (1 << 15) // rows.shape[1])
        for i in range(0, rows.shape[0], step):
            if self.path == "f64":
                self._rows_f64(rows[i:i + step], c, dst[i:i + step])
            else:
                self._rows_i64(rows[i:i + step], c, dst[i:i + step])
        if self.dtype == np.int8:
            dst ^= 0x80
        return out

    def _rows_f64(self, rows: np.ndarray, c: dict, dst: np.ndarray) -> None:
        a = np.multiply(rows, c["m"], dtype=np.float64)
        if c["corr"] is not None:
            neg = a < c["thr"]
            a += c["bk"]
            a -= np.multiply(neg, c["corr"])
        else:
            a += c["bk"]
        lo, hi = self.lo + self._off, self.hi + self._off
        if self._int32_ok:
            # truncation equals floor here: values below 0 clamp to lo >= 0 either way
            i = a.astype(np.int32)
            np.clip(i, lo, hi, out=i)
            dst[...] = i
        else:
            np.floor(a, out=a)
            np.clip(a, lo, hi, out=a)
            dst[...] = a

    def _rows_i64(self, rows: np.ndarray, c: dict, dst: np.ndarray) -> None:
        a = rows.astype(np.int64)
        neg = a < c["thr"] if c["corr"] is not None else None
        a *= c["m"]
        a += c["bk"]
        if neg is not None:
            a -= neg * c["corr"]
        a >>= c["den"]
        np.clip(a, self.lo + self._off - (self.zp + self._off),
                self.hi + self._off - (self.zp + self._off), out=a)
        a += self.zp + self._off
        dst[...] = a

    def _reference(self, acc: np.ndarray) -> np.ndarray:
        a = wrap_int32(np.asarray(acc).astype(np.int64) + self.bias)
        y = mul_by_quantized_multiplier(a, self.multiplier, self.shift, self.rounding) + self.zp
        return np.clip(y, self.lo, self.hi).astype(self.dtype)

    def _float(self, acc: np.ndarray) -> np.ndarray:
        a = np.asarray(acc).astype(np.int64) + self.bias
        if self.wraps:
            a = wrap_int32(a)
        v = a.astype(np.float64) * self.real_scale
        t = np.trunc(v)
        r = t + np.where(np.abs(v - t) >= 0.5, np.sign(v), 0.0)
        # C's float -> int32 conversion of an out-of-range value gives INT32_MIN on x86
        r = np.where((r >= -(2.0**31)) & (r < 2.0**31), r, INT32_MIN).astype(np.int64)
        return np.clip(r + self.zp, self.lo, self.hi).astype(self.dtype)


def _as_rows(acc2d: np.ndarray) -> tuple[np.ndarray, int]:
    """View [P, C] as [P/r, r*C] with rows of about 1-2 thousand elements."""
    p, c = acc2d.shape
    r = 1
    while r * c < 1024 and p % (2 * r) == 0:
        r *= 2
    return acc2d.reshape(p // r, r * c), r


def _float32_product_multiplier(s_in: np.float32, s_w: np.float32, s_out: np.float32) -> float:
    """GetQuantizedConvolutionMultipler: float32 product of the scales, then double division."""
    return float(np.float64(np.float32(s_in) * np.float32(s_w)) / np.float64(s_out))


def _double_multipliers(s_in: np.float32, s_w: np.ndarray, s_out: np.float32) -> np.ndarray:
    """PopulateConvolutionQuantizationParams per channel: all in double."""
    return np.float64(s_in) * s_w.astype(np.float64) / np.float64(s_out)


def _bias_scale_matches(s_in: np.float32, s_w: np.float32, bias: Tensor | None) -> bool:
    """TFLite's ``|s_in*s_w - s_bias| <= 1e-6 * min(...)`` check (a missing scale counts 0)."""
    if bias is None:
        return True
    product = np.float64(np.float32(s_in) * np.float32(s_w))
    s_b = np.float64(bias.quant.s) if bias.quant is not None else 0.0
    return bool(abs(product - s_b) <= 1e-6 * min(product, s_b))


# --------------------------------------------------------------------------------------------
# Shared preparation of weighted operators


class _Weighted(Kernel):
    """Common checks and folding of CONV_2D, DEPTHWISE_CONV_2D and FULLY_CONNECTED."""

    filter_axis = 0  # quantized dimension of per-channel filter scales

    def _filter(self) -> Tensor | None:
        return self.inputs[1] if len(self.inputs) > 1 else None

    def _prepare(self, n_out: int) -> None:
        x, qi, y, qo = check_io(self, (2, 3))
        self.x, self.qi, self.y, self.qo = x, qi, y, qo
        self.dtype = np.dtype(x.dtype)
        w = self.inputs[1]
        self.need(w is not None, "filter tensor is missing")
        assert w is not None
        self.need(w.is_constant, f"non-constant filter {w.describe()} is not supported")
        self.need(np.dtype(w.dtype) == self.dtype,
                  f"{self.dtype.name} input needs {self.dtype.name} filter, got "
                  f"{np.dtype(w.dtype).name} ({w.describe()})")
        self.need(w.quant is not None, f"filter {w.describe()} has no quantization parameters")
        assert w.quant is not None
        self.w, self.qw = w, w.quant
        if w.quant.per_axis:
            self.need(self.dtype == np.int8, "per-channel filter quantization needs int8 "
                                             "input (uint8 filters are per tensor)")
            self.need(w.quant.axis == self.filter_axis and w.quant.scale.size == n_out,
                      f"per-channel filter scales must lie along dimension {self.filter_axis} "
                      f"with {n_out} entries, got {w.quant.scale.size} along {w.quant.axis}")
        b = self.inputs[2] if len(self.inputs) > 2 else None
        if b is not None:
            self.need(b.is_constant, f"non-constant bias {b.describe()} is not supported")
            self.need(np.dtype(b.dtype) == np.int32,
                      f"bias must be int32, got {np.dtype(b.dtype).name} ({b.describe()})")
            self.need(b.size == n_out, f"bias has {b.size} elements, expected {n_out}")
        self.b = b
        self.bias = (np.zeros(n_out, np.int64) if b is None
                     else np.asarray(b.data, np.int64).reshape(n_out))
        self.activation = check_activation_option(self)
        self.lo, self.hi = activation_range(self.activation, qo, self.dtype)

    def _check_bias_scale(self) -> None:
        self.need(_bias_scale_matches(self.qi.s, self.qw.s, self.b),
                  f"bias scale does not match input scale x filter scale "
                  f"({float(self.qi.s) * float(self.qw.s):.9g})")

    def _filter_zero_points_are_zero(self) -> None:
        self.need(not np.any(self.qw.zero_point),
                  f"int8 filter {self.w.describe()} must be symmetric (zero point 0)")

    def _input_extent(self) -> int:
        lo, hi = dtype_range(self.dtype)
        return max(hi - self.qi.zp, self.qi.zp - lo)

    def _make_requantizer(self, real: np.ndarray, n_out: int, bound: int,
                          rounding: str, quant_rounding: str,
                          kind: str = "fixed", real_scale: np.ndarray | None = None) -> None:
        m, s = quantize_multiplier(np.broadcast_to(real, (n_out,)), quant_rounding)
        self.multiplier, self.shift = m, s
        self.requant = Requantizer(m, s, self.bias, self.qo.zp, self.lo, self.hi, self.dtype,
                                   rounding, bound, kind, real_scale)

    def _chunked(self, xb: np.ndarray, per_sample: int, target: int) -> np.ndarray:
        """Run ``self._run(x_chunk, out_chunk)`` over chunks of about ``target`` elements."""
        win = self.win
        out = np.empty((xb.shape[0], win.oh, win.ow, self.n_out), self.dtype)
        step = max(1, target // max(per_sample, 1))
        for i in range(0, xb.shape[0], step):
            self._run(xb[i:i + step], out[i:i + step])
        return out

    @staticmethod
    def _acc_dtype(bound: int) -> np.dtype:
        if bound < F32_EXACT:
            return np.dtype(np.float32)
        if bound < F64_EXACT:
            return np.dtype(np.float64)
        return np.dtype(np.int64)


_BLAS_SERIAL_MACS = 1 << 18  # OpenBLAS runs GEMMs below m*n*k = 4 * 65536 on one thread


def matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` in row blocks small enough for a single-threaded BLAS call.

    Threads help little on cache-sized blocks and hurt badly on a shared, loaded machine.
    """
    k, n = b.shape
    step = max(1, _BLAS_SERIAL_MACS // max(k * n, 1) - 1)
    if a.shape[0] <= step or a.dtype == np.int64:
        return a @ b
    out = np.empty((a.shape[0], n), np.result_type(a, b))
    for i in range(0, a.shape[0], step):
        np.matmul(a[i:i + step], b, out=out[i:i + step])
    return out


def _offset_input(x: np.ndarray, zp: int, dtype: np.dtype) -> np.ndarray:
    return np.subtract(x, np.array(zp, dtype), dtype=dtype)


# --------------------------------------------------------------------------------------------
# CONV_2D


@register("CONV_2D")
class Conv2D(_Weighted):
    """CONV_2D: uint8 per-tensor or int8 per-channel, any stride, dilation and padding."""

    def __init__(self, op: Operator, graph: Graph, rounding: Rounding = "double") -> None:
        super().__init__(op, graph, rounding)
        w = self._filter()
        self.need(w is not None and len(w.shape) == 4,
                  "filter must be 4-D [out, kh, kw, in]")
        assert w is not None
        n_out, kh, kw, cin = w.shape
        self._prepare(n_out)
        x = self.x
        self.need(len(x.shape) == 4, f"input must be 4-D NHWC, got {list(x.shape)}")
        self.need(x.shape[3] == cin, f"filter expects {cin} input channels, input has "
                                     f"{x.shape[3]} (grouped convolution is not supported)")
        self.win = window_of(self, (kh, kw), n_out)

        wdata = w.data.astype(np.int64)
        if self.dtype == np.uint8:
            self._check_bias_scale()
            wdata = wdata - self.qw.zp
            real = np.float64(_float32_product_multiplier(self.qi.s, self.qw.s, self.qo.s))
        else:
            self._filter_zero_points_are_zero()
            real = _double_multipliers(self.qi.s, self.qw.scale, self.qo.s)
        self.wmat_int = wdata.reshape(n_out, kh * kw * cin).T.copy()
        bound = int(np.abs(self.wmat_int).sum(axis=0).max(initial=0)) * self._input_extent()
        self.acc_dtype = self._acc_dtype(bound)
        self.wmat = self.wmat_int.astype(self.acc_dtype)
        self.n_out = n_out
        self._make_requantizer(real, n_out, bound, _fixed_rounding(rounding), rounding)

    def __call__(self, x: np.ndarray, *_: np.ndarray | None) -> list[np.ndarray]:
        s = x.shape[0]
        xb = x.reshape((-1,) + tuple(self.x.shape[1:]))
        per_sample = self.win.oh * self.win.ow * max(self.wmat.shape[0], self.n_out)
        return [self._chunked(xb, per_sample, _CONV_CHUNK).reshape((s,) + tuple(self.y.shape))]

    def _run(self, xb: np.ndarray, out: np.ndarray) -> None:
        win, b, k = self.win, xb.shape[0], self.wmat.shape[0]
        if win.is_identity():
            cols = _offset_input(xb, self.qi.zp, self.acc_dtype).reshape(-1, xb.shape[3])
            self.requant(matmul(cols, self.wmat), out=out.reshape(-1, self.n_out))
            return
        patches = win.patches(win.pad(xb, 0, self.acc_dtype, self.qi.zp))
        # one sample's im2col can be large: then it goes in bands of output rows
        band = win.oh if b > 1 else max(1, _CONV_CHUNK // (win.ow * k))
        for r in range(0, win.oh, band):
            cols = patches[:, r:r + band].reshape(-1, k)
            self.requant(matmul(cols, self.wmat), out=out[:, r:r + band].reshape(-1, self.n_out))

    @classmethod
    def macs(cls, op: Operator, graph: Graph) -> int:
        w, y = graph.tensors[op.inputs[1]], graph.tensors[op.outputs[0]]
        return int(np.prod(y.shape, dtype=np.int64)) * int(np.prod(w.shape[1:], dtype=np.int64))


# --------------------------------------------------------------------------------------------
# DEPTHWISE_CONV_2D


@register("DEPTHWISE_CONV_2D")
class DepthwiseConv2D(_Weighted):
    """DEPTHWISE_CONV_2D with depth multiplier, stride, dilation and padding.

    Under ``rounding="single"`` the uint8 kernel still rounds twice: TFLite's
    ``DepthwiseConvRound<kAwayFromZero>`` spells out the double-rounding gemmlowp calls in its
    ``TFLITE_SINGLE_ROUNDING`` branch (only the multiplier's shift clamp changes).
    """

    filter_axis = 3

    def __init__(self, op: Operator, graph: Graph, rounding: Rounding = "double") -> None:
        super().__init__(op, graph, rounding)
        w = self._filter()
        self.need(w is not None and len(w.shape) == 4 and w.shape[0] == 1,
                  "filter must be 4-D [1, kh, kw, out]")
        assert w is not None
        _, kh, kw, n_out = w.shape
        self._prepare(n_out)
        x = self.x
        self.need(len(x.shape) == 4, f"input must be 4-D NHWC, got {list(x.shape)}")
        cin = x.shape[3]
        self.need(cin > 0 and n_out % cin == 0,
                  f"filter has {n_out} channels, not a multiple of the {cin} input channels")
        mult = n_out // cin
        opt_mult = op.options.get("depth_multiplier", mult)
        self.need(opt_mult in (mult, 0),
                  f"depth_multiplier {opt_mult} disagrees with {n_out} filter channels for "
                  f"{cin} input channels")
        self.mult = mult
        self.win = window_of(self, (kh, kw), n_out)

        wdata = w.data.astype(np.int64)[0]
        if self.dtype == np.uint8:
            self._check_bias_scale()
            wdata = wdata - self.qw.zp
            real = np.float64(_float32_product_multiplier(self.qi.s, self.qw.s, self.qo.s))
            req_rounding = "double"
        else:
            self._filter_zero_points_are_zero()
            real = _double_multipliers(self.qi.s, self.qw.scale, self.qo.s)
            req_rounding = _fixed_rounding(rounding)
        bound = int(np.abs(wdata).sum(axis=(0, 1)).max(initial=0)) * self._input_extent()
        self.acc_dtype = self._acc_dtype(bound)
        self.wrows = np.tile(wdata, (1, 1, self.win.ow)).astype(self.acc_dtype)  # [kh, kw, ow*out]
        self.n_out = n_out
        self._make_requantizer(real, n_out, bound, req_rounding, rounding)

    def __call__(self, x: np.ndarray, *_: np.ndarray | None) -> list[np.ndarray]:
        s = x.shape[0]
        xb = x.reshape((-1,) + tuple(self.x.shape[1:]))
        per_sample = self.win.oh * self.win.ow * self.n_out
        return [self._chunked(xb, per_sample, _DW_CHUNK).reshape((s,) + tuple(self.y.shape))]

    def _run(self, xb: np.ndarray, out: np.ndarray) -> None:
        win = self.win
        xp = win.pad(xb, 0, self.acc_dtype, self.qi.zp)
        if self.mult > 1:
            xp = np.repeat(xp, self.mult, axis=3)
        acc = np.empty((xb.shape[0], win.oh, win.ow * self.n_out), self.acc_dtype)
        tmp = np.empty_like(acc)
        for ky, kx, view in win.row_taps(xp):
            if ky == 0 and kx == 0:
                np.multiply(view, self.wrows[ky, kx], out=acc)
            else:
                np.multiply(view, self.wrows[ky, kx], out=tmp)
                acc += tmp
        self.requant(acc, win.ow, out=out.reshape(acc.shape))

    @classmethod
    def macs(cls, op: Operator, graph: Graph) -> int:
        w, y = graph.tensors[op.inputs[1]], graph.tensors[op.outputs[0]]
        return int(np.prod(y.shape, dtype=np.int64)) * int(w.shape[1] * w.shape[2])


# --------------------------------------------------------------------------------------------
# FULLY_CONNECTED


@register("FULLY_CONNECTED")
class FullyConnected(_Weighted):
    """FULLY_CONNECTED: input flattened to [size / depth, depth]; optional keep_num_dims.

    ``rounding="litert"`` reproduces LiteRT >= 2.20's reference kernel, which requantizes with
    ``std::round(double(acc) * (double(s_in) * double(s_w[c]) / double(s_out)))`` (ties away
    from zero) instead of the fixed-point multiplier, for uint8 and int8 alike.
    """

    def __init__(self, op: Operator, graph: Graph, rounding: Rounding = "double") -> None:
        super().__init__(op, graph, rounding)
        w = self._filter()
        self.need(w is not None and len(w.shape) == 2, "weights must be 2-D [units, depth]")
        assert w is not None
        units, depth = w.shape
        self._prepare(units)
        x, y = self.x, self.y
        size = x.size
        self.need(depth > 0 and size % depth == 0,
                  f"input of {size} elements cannot be flattened to rows of depth {depth}")
        if op.options.get("keep_num_dims", False):
            self.need(len(x.shape) >= 1 and x.shape[-1] == depth,
                      f"keep_num_dims needs the input's last dimension {list(x.shape)} to "
                      f"equal the weights' depth {depth}")
            want = tuple(x.shape[:-1]) + (units,)
        else:
            want = (size // depth, units)
        self.need(tuple(y.shape) == want,
                  f"output shape {list(y.shape)} does not match the computed {list(want)}")
        self.rows, self.depth, self.units = size // depth, depth, units

        wdata = w.data.astype(np.int64)
        if self.qw.per_axis:
            self._filter_zero_points_are_zero()
            real = _double_multipliers(self.qi.s, self.qw.scale, self.qo.s)
            w_scales = self.qw.scale
        else:
            self._check_bias_scale()
            wdata = wdata - self.qw.zp
            real = np.float64(_float32_product_multiplier(self.qi.s, self.qw.s, self.qo.s))
            w_scales = np.full(units, self.qw.s, np.float32)
        self.wmat_int = wdata.T.copy()
        bound = int(np.abs(self.wmat_int).sum(axis=0).max(initial=0)) * self._input_extent()
        self.acc_dtype = self._acc_dtype(bound)
        self.wmat = self.wmat_int.astype(self.acc_dtype)
        if rounding == "litert":
            real_scale = (np.float64(self.qi.s) * w_scales.astype(np.float64)
                          / np.float64(self.qo.s))
            self._make_requantizer(real, units, bound, "double", rounding, "float", real_scale)
        else:
            self._make_requantizer(real, units, bound, _fixed_rounding(rounding), rounding)

    def __call__(self, x: np.ndarray, *_: np.ndarray | None) -> list[np.ndarray]:
        s = x.shape[0]
        xo = _offset_input(x.reshape(s * self.rows, self.depth), self.qi.zp, self.acc_dtype)
        out = self.requant(matmul(xo, self.wmat))
        return [out.reshape((s,) + tuple(self.y.shape))]

    @classmethod
    def macs(cls, op: Operator, graph: Graph) -> int:
        w, y = graph.tensors[op.inputs[1]], graph.tensors[op.outputs[0]]
        return int(np.prod(y.shape, dtype=np.int64)) * int(w.shape[1])
