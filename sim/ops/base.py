"""Kernel base class and the registry that maps builtin operator names to kernels."""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import numpy as np

from ..fixedpoint import Rounding
from ..graph import Graph, ModelError, Operator, Tensor

KERNELS: dict[str, type[Kernel]] = {}


def register(*opcodes: str) -> Callable[[type[Kernel]], type[Kernel]]:
    """Class decorator: the kernel implements these builtin operators."""

    def deco(cls: type[Kernel]) -> type[Kernel]:
        for code in opcodes:
            KERNELS[code] = cls
        return cls

    return deco


class Kernel:
    """One operator, prepared once for a graph and a rounding scheme, then called on batches.

    ``__init__`` checks dtypes and quantization (raising ModelError naming the operator) and folds
    every constant: multipliers, shifts, offset weights. ``__call__`` takes one array per operator
    input, each with a leading *sample* axis (length S, or 1 for constants; None for an absent
    optional input) and returns one array per output with the sample axis first.
    """

    dtypes: ClassVar[tuple[str, ...]] = ("uint8", "int8")

    def __init__(self, op: Operator, graph: Graph, rounding: Rounding = "double") -> None:
        self.op = op
        self.graph = graph
        self.rounding = rounding
        self.inputs: list[Tensor | None] = [graph.tensor(i) for i in op.inputs]
        self.outputs: list[Tensor] = [graph.tensors[i] for i in op.outputs]

    def __call__(self, *inputs: np.ndarray | None) -> list[np.ndarray]:
        raise NotImplementedError

    @classmethod
    def macs(cls, op: Operator, graph: Graph) -> int:
        """Multiply-accumulates of one inference (0 for data movement)."""
        return 0

    def fail(self, message: str) -> ModelError:
        """A ModelError naming this operator."""
        return ModelError(f"{self.op.describe()}: {message}")

    def need(self, cond: bool, message: str) -> None:
        """Raise a ModelError naming this operator unless ``cond``."""
        if not cond:
            raise self.fail(message)
