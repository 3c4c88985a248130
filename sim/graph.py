"""The model graph: tensors, operators and their options, independent of any file format.

Operator options use these keys (absent keys take the default in parentheses):

- CONV_2D: ``padding`` ("SAME"/"VALID"; "EXPLICIT": ``pad_top`` and ``pad_left`` rows and
  columns before the input, the output shape says where the windows stop - a patch of a larger
  layer), ``stride_h``, ``stride_w``, ``dilation_h``, ``dilation_w`` (1), ``activation`` ("NONE")
- DEPTHWISE_CONV_2D: as CONV_2D plus ``depth_multiplier``
- FULLY_CONNECTED: ``activation``, ``keep_num_dims`` (False)
- AVERAGE_POOL_2D, MAX_POOL_2D: ``padding``, ``stride_h``, ``stride_w``, ``filter_h``,
  ``filter_w``, ``activation``
- ADD, SUB, MUL: ``activation``
- CONCATENATION: ``axis``, ``activation``
- SOFTMAX: ``beta`` (1.0)
- MEAN: ``keep_dims`` (False); the axes are the second input
- RESHAPE: ``new_shape`` (tuple or None); the shape input, if any, wins
- PAD, PADV2, LOGISTIC, TANH, HARD_SWISH, QUANTIZE, DEQUANTIZE, RELU, RELU6, RELU_N1_TO_1: none
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from qlane.errors import QlaneError

from .quant import QuantParams


class ModelError(QlaneError, ValueError):
    """A model qlane cannot read or run; the message names the tensor or operator."""


@dataclass
class Tensor:
    """A tensor of the graph; ``data`` is set for constants (weights, biases, shapes)."""

    index: int
    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    quant: QuantParams | None = None
    data: np.ndarray | None = field(default=None, repr=False)

    @property
    def is_constant(self) -> bool:
        return self.data is not None

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        return self.size * np.dtype(self.dtype).itemsize

    def describe(self) -> str:
        """Short human label: name, shape and dtype."""
        return f"tensor {self.index} '{self.name}' {list(self.shape)} {np.dtype(self.dtype).name}"


@dataclass
class Operator:
    """One operator: its builtin name, input and output tensor indices (-1 = absent), options."""

    index: int
    opcode: str
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    options: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        return f"operator {self.index} ({self.opcode})"


@dataclass
class Graph:
    """A single-subgraph model: tensors, operators in execution order, graph inputs/outputs."""

    tensors: list[Tensor]
    operators: list[Operator]
    inputs: list[int]
    outputs: list[int]
    name: str = "model"

    def tensor(self, index: int) -> Tensor | None:
        return None if index < 0 else self.tensors[index]

    @property
    def input_tensors(self) -> list[Tensor]:
        return [self.tensors[i] for i in self.inputs]

    @property
    def output_tensors(self) -> list[Tensor]:
        return [self.tensors[i] for i in self.outputs]

    @property
    def scheme(self) -> str:
        """'uint8', 'int8' or 'mixed', from the graph inputs' dtypes."""
        kinds = {np.dtype(t.dtype).name for t in self.input_tensors}
        return kinds.pop() if len(kinds) == 1 else "mixed"
