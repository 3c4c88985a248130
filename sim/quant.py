"""Quantization parameters: per-tensor and per-axis, ranges, quantize and fake-quant.

``real = scale * (q - zero_point)``. Arithmetic that TensorFlow does in float32 is done in
float32 here, because the last bit of a scale decides the last bit of an output.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .fixedpoint import dtype_range


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
    """Reference QUANTIZE: ``clamp(round(x / scale) + zero_point)``, ties away from zero."""
    x = np.asarray(x, np.float32)
    scale, zp = params._broadcast(x.ndim)
    q = np.sign(x / scale) * np.floor(np.abs(x / scale) + np.float32(0.5))
    lo, hi = dtype_range(dtype)
    return np.clip(q.astype(np.int64) + zp, lo, hi).astype(dtype)


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
        zp = int(np.floor(zp_from_min + f(0.5)))  # std::round on a non-negative float
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
    """TensorFlow's FakeQuantWithMinMaxVars on float32 values.

    ``variant="multiply"`` scales by the recomputed ``inv_scale`` (TensorFlow's kernel);
    ``"divide"`` divides by ``scale`` (TFLite Micro's test helpers and older TensorFlow).
    """
    f = np.float32
    x = np.asarray(x, f)
    nmin, nmax, scale, inv_scale, _ = nudge(rmin, rmax, num_bits, narrow_range)
    shifted = np.clip(x, nmin, nmax) - nmin
    if variant == "multiply":
        steps = np.floor(shifted * inv_scale + f(0.5))
    elif variant == "divide":
        steps = np.floor(shifted / scale + f(0.5))
    else:
        raise ValueError(f"fake_quant variant must be 'multiply' or 'divide', not {variant!r}")
    return (steps * scale + nmin).astype(f)


ACTIVATIONS = ("NONE", "RELU", "RELU6", "RELU_N1_TO_1")


def activation_range(activation: str, params: QuantParams | None, dtype) -> tuple[int, int]:
    """CalculateActivationRangeQuantized: the integer clamp of a fused activation."""
    lo, hi = dtype_range(dtype)
    if activation == "NONE" or params is None:
        return lo, hi
    scale, zp = np.float32(params.s), params.zp

    def q(v: float) -> int:
        r = np.float32(v) / scale
        return zp + int(np.sign(r) * np.floor(np.abs(r) + np.float32(0.5)))

    if activation == "RELU":
        return max(lo, zp), hi
    if activation == "RELU6":
        return max(lo, zp), min(hi, q(6.0))
    if activation == "RELU_N1_TO_1":
        return max(lo, q(-1.0)), min(hi, q(1.0))
    raise ValueError(f"unsupported fused activation {activation}")
