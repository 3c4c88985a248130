"""Run a graph on batches of samples with the reference kernels; keep intermediates on request."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .fixedpoint import ROUNDINGS, Rounding
from .graph import Graph, ModelError
from .ops import KERNELS, Kernel


@dataclass
class Result:
    """Outputs of a run (``[S, *shape]`` each) and, if kept, every tensor by index."""

    outputs: list[np.ndarray]
    tensors: dict[int, np.ndarray] | None = None


def check_supported(graph: Graph) -> None:
    """Raise ModelError naming the first operator that has no reference kernel."""
    for op in graph.operators:
        if op.opcode not in KERNELS:
            raise ModelError(f"{op.describe()}: operator {op.opcode} is not supported")


class Interpreter:
    """A graph prepared for one rounding scheme; call ``run`` on batches of samples."""

    def __init__(self, graph: Graph, rounding: Rounding = "double") -> None:
        if rounding not in ROUNDINGS:
            raise ValueError(f"unknown rounding {rounding!r}; choose one of {', '.join(ROUNDINGS)}")
        check_supported(graph)
        self.graph = graph
        self.rounding = rounding
        self.kernels: list[Kernel] = [
            KERNELS[op.opcode](op, graph, rounding) for op in graph.operators
        ]

    def _check_inputs(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        g = self.graph
        if len(inputs) != len(g.inputs):
            raise ModelError(f"model takes {len(g.inputs)} input(s), got {len(inputs)}")
        arrays = []
        for k, (x, t) in enumerate(zip(inputs, g.input_tensors)):
            x = np.asarray(x)
            if tuple(x.shape[1:]) != tuple(t.shape):
                raise ModelError(
                    f"input {k} ({t.describe()}): expected samples of shape {list(t.shape)}, "
                    f"got array of shape {list(x.shape)} (want [N, {', '.join(map(str, t.shape))}])"
                )
            if x.dtype != t.dtype:
                raise ModelError(f"input {k} ({t.describe()}): expected dtype "
                                 f"{np.dtype(t.dtype).name}, got {x.dtype.name}")
            arrays.append(x)
        if len({a.shape[0] for a in arrays}) > 1:
            raise ModelError("all inputs must hold the same number of samples")
        return arrays

    def run(self, inputs: Sequence[np.ndarray], keep: bool = False) -> Result:
        """Run on ``inputs[k]`` of shape ``[S, *input_shape]``; outputs are ``[S, *shape]``."""
        g = self.graph
        values: dict[int, np.ndarray] = dict(zip(g.inputs, self._check_inputs(inputs)))
        last_use = self._last_use() if not keep else {}
        for step, (op, kernel) in enumerate(zip(g.operators, self.kernels)):
            args = []
            for i in op.inputs:
                if i < 0:
                    args.append(None)
                elif i in values:
                    args.append(values[i])
                elif g.tensors[i].data is not None:
                    args.append(g.tensors[i].data[None])
                else:
                    raise ModelError(f"{op.describe()}: input {g.tensors[i].describe()} is "
                                     "neither a model input, a constant nor computed earlier")
            outs = kernel(*args)
            for i, y in zip(op.outputs, outs):
                values[i] = y
            for i in [i for i, s in last_use.items() if s == step]:
                if i not in g.outputs:
                    values.pop(i, None)
        return Result([values[i] for i in g.outputs], values if keep else None)

    def _last_use(self) -> dict[int, int]:
        last: dict[int, int] = {}
        for step, op in enumerate(self.graph.operators):
            for i in op.inputs:
                if i >= 0:
                    last[i] = step
        return last


def simulate(
    graph: Graph,
    inputs: Sequence[np.ndarray],
    rounding: Rounding = "double",
    keep: bool = False,
) -> Result:
    """One-shot: prepare ``graph`` and run it on ``inputs`` (each ``[S, *input_shape]``)."""
    return Interpreter(graph, rounding).run(inputs, keep=keep)
