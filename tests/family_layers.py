"""The small single-layer model of each kernel family (`qlane.codegen.families`), per dtype and
output stage: the layers tests/test_kernel_budget.py budgets and bench/calibrate_static.py also
fits on. Each case draws from a seed of its own, so adding a case shifts no other."""

from __future__ import annotations

import math
import zlib
from typing import Any

import numpy as np

from peers import single_op_graph, spec
from qlane.codegen.families import BY_NAME, KernelFamily
from qlane.sim.graph import Graph
from qlane.sim.ops.conv import out_size
from qlane.sim.quant import QuantParams


def _activation_quant(dtype: str, clamp: str, rng: np.random.Generator
                      ) -> tuple[QuantParams, str]:
    """Output (or input) quantization and fused activation of a clamp style.

    ``relu``: the ReLU6 range [0, 6] over the whole 8-bit range (zero point 0 / -128), as every
    MobileNet v1 layer; ``mid``: zero point inside the range and RELU_N1_TO_1 at +-1 / 0.015,
    which clamps on both sides.
    """
    if clamp == "relu":
        return QuantParams(np.float32(6 / 255), 0 if dtype == "uint8" else -128), "RELU6"
    lo, hi = (100, 156) if dtype == "uint8" else (-28, 28)
    return QuantParams(np.float32(0.015), int(rng.integers(lo, hi))), "RELU_N1_TO_1"


def _weights(rng: np.random.Generator, shape: tuple[int, ...], dtype: str, axis: int
             ) -> tuple[np.ndarray, QuantParams]:
    """Gaussian filter values: uint8 per tensor around a zero point near 128 (about +-30), or
    int8 symmetric per channel along ``axis`` (each channel's largest magnitude 127)."""
    real = rng.normal(0.0, 1.0, shape)
    if dtype == "uint8":
        zp = int(rng.integers(110, 150))
        w = np.clip(np.round(zp + 30 * real), 0, 255).astype(np.uint8)
        return w, QuantParams(np.float32(0.02), zp)
    peak = np.abs(np.moveaxis(real, axis, -1)).reshape(-1, shape[axis]).max(axis=0)
    shape_b = [1] * len(shape)
    shape_b[axis] = shape[axis]
    w = np.round(127 * real / peak.reshape(shape_b)).astype(np.int8)
    scales = (0.02 * peak / peak.mean()).astype(np.float32)
    return w, QuantParams(scales, np.zeros(shape[axis], np.int64), axis)


def _weighted(fam: KernelFamily, dtype: str, clamp: str, rng: np.random.Generator) -> Graph:
    """CONV_2D, DEPTHWISE_CONV_2D or FULLY_CONNECTED: inputs of the clamp style (the first conv:
    an image in [-1, 1)), outputs spread over the range around its middle."""
    info = np.iinfo(np.dtype(dtype))
    if fam.opcode == "CONV_2D" and fam.shape[-1] == 3:  # image input: zero point mid-range
        qi = QuantParams(np.float32(1 / 128), 128 if dtype == "uint8" else 0)
    else:
        qi, _ = _activation_quant(dtype, clamp, rng)
    qo, act = _activation_quant(dtype, clamp, rng)
    cin, n = fam.shape[-1], fam.units
    if fam.opcode == "FULLY_CONNECTED":
        w_shape, axis, out_shape = (n, cin), 0, (fam.shape[0], n)
        options: dict[str, Any] = {}
    else:
        kh, kw = fam.window
        w_shape, axis = ((1, kh, kw, n), 3) if fam.opcode == "DEPTHWISE_CONV_2D" else \
            ((n, kh, kw, cin), 0)
        oh, ow = (out_size(fam.padding, fam.shape[i], fam.window[i - 1], fam.stride, 1)
                  for i in (1, 2))
        out_shape = (fam.shape[0], oh, ow, n)
        options = dict(padding=fam.padding, stride_h=fam.stride, stride_w=fam.stride,
                       dilation_h=1, dilation_w=1)
        if fam.opcode == "DEPTHWISE_CONV_2D":
            options["depth_multiplier"] = 1
    w, qw = _weights(rng, w_shape, dtype, axis)
    # accumulators of uniform inputs: mean and spread per channel; the bias centres them on
    # the middle of the output range and the output scale spreads them over about +-80 steps
    wo = np.moveaxis(w.astype(np.int64) - np.asarray(qw.zero_point).reshape(-1)[0], axis, 0)
    wo = wo.reshape(n, -1)
    x_mean = (info.max + info.min) / 2 - qi.zp
    acc_mean = x_mean * wo.sum(axis=1)
    acc_rms = math.sqrt(wo.shape[1] * ((info.max - info.min + 1) ** 2 - 1) / 12) * \
        float(np.sqrt(np.mean(np.square(wo.astype(np.float64)))))
    s_w = np.asarray(qw.scale, np.float64) * float(qo.s) * 80 / (float(qi.s) * 0.02 * acc_rms)
    qw = QuantParams(s_w.astype(np.float32), qw.zero_point, qw.axis)
    s_b = (np.float32(qi.s) * np.asarray(qw.scale, np.float32)).astype(np.float32)
    centre = (info.max + info.min + 1) / 2 - qo.zp  # output steps from the zero point
    bias = np.round(-acc_mean + centre * float(qo.s) / s_b.astype(np.float64)).astype(np.int64)
    bias += rng.integers(-int(acc_rms / 4) - 1, int(acc_rms / 4) + 2, n)
    qb = QuantParams(s_b.reshape(-1), np.zeros(s_b.size, np.int64), 0) if s_b.size > 1 else \
        QuantParams(s_b.reshape(1), 0)
    return single_op_graph(
        fam.opcode,
        [spec(fam.shape, dtype, qi), spec(w_shape, dtype, qw, w),
         spec((n,), np.int32, qb, bias.astype(np.int32))],
        [spec(out_shape, dtype, qo)], dict(options, activation=act))


def _pool(fam: KernelFamily, dtype: str, clamp: str, rng: np.random.Generator) -> Graph:
    """AVERAGE_POOL_2D with the same quantization in and out (MobileNet: no activation)."""
    q, act = _activation_quant(dtype, clamp, rng)
    oh, ow = (out_size(fam.padding, fam.shape[i], fam.window[i - 1], fam.stride, 1)
              for i in (1, 2))
    return single_op_graph(
        fam.opcode, [spec(fam.shape, dtype, q)], [spec((1, oh, ow, fam.units), dtype, q)],
        dict(padding=fam.padding, stride_h=fam.stride, stride_w=fam.stride,
             filter_h=fam.window[0], filter_w=fam.window[1],
             activation="NONE" if clamp == "relu" else act))


def _add(fam: KernelFamily, dtype: str, clamp: str, rng: np.random.Generator) -> Graph:
    """ADD of two same-shape tensors with different scales (a residual connection)."""
    qa, _ = _activation_quant(dtype, clamp, rng)
    qb = QuantParams(np.float32(float(qa.s) * 0.7), int(qa.zp) + (0 if clamp == "relu" else 9))
    qo, act = _activation_quant(dtype, clamp, rng)
    return single_op_graph(fam.opcode, [spec(fam.shape, dtype, qa), spec(fam.shape, dtype, qb)],
                           [spec(fam.shape, dtype, qo)], dict(activation=act))


def case_graph(family: str, dtype: str, clamp: str) -> Graph:
    """The single-layer model of a case, from a seed of its own (other cases do not shift it)."""
    fam = BY_NAME[family]
    rng = np.random.default_rng(zlib.crc32(f"{family}/{dtype}/{clamp}".encode()))
    build = {"AVERAGE_POOL_2D": _pool, "ADD": _add}.get(fam.opcode, _weighted)
    return build(fam, dtype, clamp, rng)
