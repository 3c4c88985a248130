"""Quantization parameters: per-tensor and per-axis, ranges, quantize and fake-quant.

``real = scale * (q - zero_point)``. Arithmetic that TensorFlow does in float32 is done in
float32 here, because the last bit of a scale decides the last bit of an output.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .fixedpoint import INT32_MIN, dtype_range, round_half_away, wrap_int32


@dataclass(frozen=True)
class QuantParams:
    """Scale(s) and zero point(s) of a tensor; one entry per tensor or one per slice of `axis`."""

    scale: np.ndarray = field(repr=False)
    zero_point: np.ndarray = field(repr=False)
    axis: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "scale", np.atleast_1d(np.asarray(self.scale, np.float32)))
        object.__setattr__(self, "zero_point", np.atleast_1d(np.asarray(self.zero_point, np.int64)))
        if self.scale.shape != self.zero_point.shape:
            raise ValueError("scale and zero_point must have the same length")

    @property
    def per_axis(self) -> bool:
        """True when there is more than one scale."""
        return self.scale.size > 1

    @property
    def s(self) -> np.float32:
        """The single scale of a per-tensor quantization."""
        return self.scale[0]

    @property
    def zp(self) -> int:
        """The single zero point of a per-tensor quantization."""
        return int(self.zero_point[0])

    def __repr__(self) -> str:
        if self.per_axis:
            return f"QuantParams(axis={self.axis}, {self.scale.size} scales)"
        return f"QuantParams(scale={float(self.s):.9g}, zero_point={self.zp})"

    def _broadcast(self, ndim: int) -> tuple[np.ndarray, np.ndarray]:
        if not self.per_axis:
            return self.scale[0], self.zero_point[0]
        shape = [1] * ndim
        shape[self.axis] = -1
        return self.scale.reshape(shape), self.zero_point.reshape(shape)


def quantize(x, params: QuantParams, dtype) -> np.ndarray:
    """Reference QUANTIZE (AffineQuantize): ``clamp((int32) roundf(x / scale) + zero_point)``.

    ``x / scale`` is a float32 division and ``roundf`` rounds ties away from zero. A quotient
    that does not fit int32 (or NaN) converts to INT32_MIN, as x86's ``cvttss2si`` does, and the
    zero point is then added with int32 wrap-around, as TFLite's C code does on such a machine.
    """
    x = np.asarray(x, np.float32)
    scale, zp = params._broadcast(x.ndim)
    r = round_half_away(x / np.float32(scale) if np.ndim(scale) == 0 else x / scale)
    with np.errstate(invalid="ignore"):
        fits = np.isfinite(r) & (r >= INT32_MIN) & (r < 2.0**31)
    as_int = np.where(fits, np.where(fits, r, 0).astype(np.int64), INT32_MIN)
    lo, hi = dtype_range(dtype)
    return np.clip(wrap_int32(as_int + zp), lo, hi).astype(dtype)


def dequantize(q, params: QuantParams) -> np.ndarray:
    """Reference DEQUANTIZE: ``scale * (q - zero_point)`` in float32."""
    q = np.asarray(q)
    scale, zp = params._broadcast(q.ndim)
    return (np.float32(scale) * (q.astype(np.int64) - zp).astype(np.float32)).astype(np.float32)


def nudge(rmin: float, rmax: float, num_bits: int = 8, narrow_range: bool = False):
    """TensorFlow's FakeQuant ``Nudge``: shift (min, max) so that 0.0 is exactly representable.

    Returns ``(nudged_min, nudged_max, scale, inv_scale, zero_point)``, all float32 but the
    integer zero point.
    """
    f = np.float32
    qmin = f(1 if narrow_range else 0)
    qmax = f((1 << num_bits) - 1)
    rmin, rmax = f(rmin), f(rmax)
    scale = (rmax - rmin) / (qmax - qmin)
    inv_scale = (qmax - qmin) / (rmax - rmin)
    zp_from_min = qmin - rmin / scale
    if zp_from_min < qmin:
        zp = int(qmin)
    elif zp_from_min > qmax:
        zp = int(qmax)
    else:
        zp = int(round_half_away(zp_from_min))
    nudged_min = (qmin - f(zp)) * scale
    nudged_max = (qmax - f(zp)) * scale
    return f(nudged_min), f(nudged_max), f(scale), f(inv_scale), zp


def params_from_min_max(
    rmin: float, rmax: float, dtype=np.uint8, narrow_range: bool = False
) -> QuantParams:
    """Per-tensor params of the seed's uint8 flow: the (min, max) range nudged onto the grid.

    For int8 the uint8 grid is shifted by -128 (same scale, zero point - 128).
    """
    rmin, rmax = min(float(rmin), 0.0), max(float(rmax), 0.0)
    if rmax == rmin:
        return QuantParams(np.float32(1.0), 0 if np.dtype(dtype) == np.uint8 else -128)
    _, _, scale, _, zp = nudge(rmin, rmax, 8, narrow_range)
    if np.dtype(dtype) == np.int8:
        zp -= 128
    elif np.dtype(dtype) != np.uint8:
        raise ValueError(f"params_from_min_max: dtype must be uint8 or int8, not {dtype}")
    return QuantParams(scale, zp)


def fake_quant(
    x,
    rmin: float,
    rmax: float,
    num_bits: int = 8,
    narrow_range: bool = False,
    variant: str = "multiply",
) -> np.ndarray:
    """TensorFlow's fake quantization of float32 values onto the nudged (min, max) grid.

    ``variant="multiply"`` scales by Nudge's recomputed ``inv_scale`` (FakeQuantWithMinMaxArgs
    and the per-channel kernel); ``"divide"`` divides by ``scale`` (FakeQuantWithMinMaxVars).
    Outputs are ``(q - quant_zero) * scale`` as in TensorFlow >= 2.5, so 0.0 maps to exactly 0.0;
    ``min == max == 0`` gives zeros.
    """
    f = np.float32
    x = np.asarray(x, f)
    if variant not in ("multiply", "divide"):
        raise ValueError(f"fake_quant variant must be 'multiply' or 'divide', not {variant!r}")
    if f(rmin) == 0 and f(rmax) == 0:
        return np.zeros_like(x)
    nmin, nmax, scale, inv_scale, _ = nudge(rmin, rmax, num_bits, narrow_range)
    quant_zero = np.floor(-nmin * inv_scale + f(0.5))
    shifted = np.clip(x, nmin, nmax) - nmin
    steps = shifted * inv_scale if variant == "multiply" else shifted / scale
    return (np.floor(steps - quant_zero + f(0.5)) * scale).astype(f)


ACTIVATIONS = ("NONE", "RELU", "RELU6", "RELU_N1_TO_1")


def activation_range(activation: str, params: QuantParams | None, dtype) -> tuple[int, int]:
    """CalculateActivationRangeQuantized: the integer clamp of a fused activation."""
    lo, hi = dtype_range(dtype)
    if activation == "NONE" or params is None:
        return lo, hi
    scale, zp = np.float32(params.s), params.zp

    def q(v: float) -> int:
        return zp + int(round_half_away(np.float32(v) / scale))

    if activation == "RELU":
        return max(lo, zp), hi
    if activation == "RELU6":
        return max(lo, zp), min(hi, q(6.0))
    if activation == "RELU_N1_TO_1":
        return max(lo, q(-1.0)), min(hi, q(1.0))
    raise ValueError(f"unsupported fused activation {activation}")
