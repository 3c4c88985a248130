"""Pooling: AVERAGE_POOL_2D and MAX_POOL_2D (``reference/pooling.h``, ``integer_ops/pooling.h``).

Windows are clipped to the input: padded positions are neither summed nor counted. The average
rounds half away from zero, ``sign(s) * ((|s| + n/2) / n)`` in integers (uint8 sums are never
negative, so both reference versions agree). Neither pool rescales: input and output must share
their quantization.
"""

from __future__ import annotations

import numpy as np

from ..fixedpoint import Rounding, dtype_range
from ..graph import Graph, Operator
from ..quant import activation_range
from .base import Kernel, register
from .conv import check_activation_option, check_io, window_of


class _Pool(Kernel):
    """Shared checks and geometry of the two pools."""

    def __init__(self, op: Operator, graph: Graph, rounding: Rounding = "double") -> None:
        super().__init__(op, graph, rounding)
        x, qi, y, qo = check_io(self, (1,))
        self.x, self.y = x, y
        self.dtype = np.dtype(x.dtype)
        self.need(abs(float(qi.s) - float(qo.s)) <= 1e-6 and qi.zp == qo.zp,
                  f"input and output quantization differ ({qi} vs {qo}); pooling does not "
                  "rescale")
        o = op.options
        self.win = window_of(self, (o.get("filter_h", 1), o.get("filter_w", 1)), None,
                             dilated=False)
        self.lo, self.hi = activation_range(check_activation_option(self), qo, self.dtype)

    def _batch(self, x: np.ndarray) -> np.ndarray:
        return x.reshape((-1,) + tuple(self.x.shape[1:]))

    def _valid_counts(self) -> np.ndarray:
        """Number of input elements under each output window, [OH, OW]."""
        w, (h, wd) = self.win, self.x.shape[1:3]

        def counts(o: int, k: int, s: int, pad: int, size: int) -> np.ndarray:
            start = np.arange(o) * s - pad
            return np.minimum(start + k, size) - np.maximum(start, 0)

        return np.outer(counts(w.oh, w.kh, w.sh, w.top, h), counts(w.ow, w.kw, w.sw, w.left, wd))


@register("AVERAGE_POOL_2D")
class AveragePool2D(_Pool):
    """AVERAGE_POOL_2D: rounded mean over the valid part of each window."""

    def __init__(self, op: Operator, graph: Graph, rounding: Rounding = "double") -> None:
        super().__init__(op, graph, rounding)
        n = self._valid_counts()
        self.need(bool(np.all(n > 0)), "a pooling window lies entirely in the padding")
        self.count = n[:, :, None].astype(np.int64)
        self.half = self.count // 2

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        xb, win = self._batch(x), self.win
        xp = win.pad(xb, 0, np.dtype(np.int64))
        acc = win.tap(xp, 0, 0).copy()
        for ky in range(win.kh):
            for kx in range(win.kw):
                if ky or kx:
                    acc += win.tap(xp, ky, kx)
        mag = (np.abs(acc) + self.half) // self.count
        out = np.where(acc < 0, -mag, mag)
        out = np.clip(out, self.lo, self.hi).astype(self.dtype)
        return [out.reshape(x.shape[:1] + tuple(self.y.shape))]


@register("MAX_POOL_2D")
class MaxPool2D(_Pool):
    """MAX_POOL_2D: maximum over the valid part of each window, then the activation clamp."""

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        xb, win = self._batch(x), self.win
        lowest = dtype_range(self.dtype)[0]
        xp = win.pad(xb, lowest, self.dtype)
        out = win.tap(xp, 0, 0).copy()
        for ky in range(win.kh):
            for kx in range(win.kw):
                if ky or kx:
                    np.maximum(out, win.tap(xp, ky, kx), out=out)
        np.clip(out, self.lo, self.hi, out=out)
        return [out.reshape(x.shape[:1] + tuple(self.y.shape))]
