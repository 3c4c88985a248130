"""Lowering: each operator of a graph becomes one specialised C function for a target.

A *lowering* is a function registered for an (opcode, isa) pair. It receives the operator's
prepared reference kernel from the simulator (whose folded constants - multipliers, shifts,
offsets, padding - are the single source of truth) and returns a :class:`LayerCode`: the template
to render, its parameters, and the constant arrays it needs. The simulator is the definition of
what the rendered C computes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from qlane.sim.fixedpoint import Rounding
from qlane.sim.graph import Graph, Operator, Tensor
from qlane.sim.ops.base import Kernel as SimKernel

from .names import KernelSpec, c_comment
from .targets import Target


@dataclass
class Const:
    """A constant array placed in flash next to the layer function (``static const``)."""

    suffix: str  # the C name is <symbol>_<suffix>
    values: np.ndarray
    comment: str = ""

    @property
    def ctype(self) -> str:
        return C_TYPES[np.dtype(self.values.dtype)]

    @property
    def nbytes(self) -> int:
        return int(self.values.nbytes)


C_TYPES = {
    np.dtype(np.int8): "int8_t",
    np.dtype(np.uint8): "uint8_t",
    np.dtype(np.int16): "int16_t",
    np.dtype(np.uint16): "uint16_t",
    np.dtype(np.int32): "int32_t",
    np.dtype(np.uint32): "uint32_t",
    np.dtype(np.int64): "int64_t",
    np.dtype(np.float32): "float",
}


@dataclass
class LayerCode:
    """What a lowering returns: the template, its parameters, constants and scratch size
    (the simulator's per-op class is `qlane.sim.ops.base.Kernel`)."""

    template: str  # path under templates/, e.g. "c/add.c.j2"
    op: str  # short op tag in the symbol: conv2d, dwconv2d, fc, add, ...
    variant: str  # shape facts in the symbol: k3x3s2, 1x1, n1001, ...
    tile: str = "1x1"
    params: dict[str, Any] = field(default_factory=dict)
    consts: list[Const] = field(default_factory=list)
    scratch_bytes: int = 0
    scratch_grows: bool = False
    """Whether the kernel runs faster given more scratch (`Context.scratch_budget`)."""
    work: float = 1.0
    """The share of the layer's MACs the kernel computes (channels of one output value are
    written, not computed)."""
    rows_per_pass: int = 0
    """A depthwise kernel that may run in place: output rows it writes in one pass, in any order
    within the pass, before reading the input rows the next pass needs (passes run top to
    bottom; channels keep their byte offset). 0: not known to, never run in place."""


@dataclass
class Context:
    """Everything a lowering may read."""

    op: Operator
    graph: Graph
    sim: SimKernel
    target: Target
    rounding: Rounding
    isa: str
    scratch_budget: int = 0
    """Scratch bytes the arena can give this layer without growing (0 on the first lowering, or
    none spare: the kernel takes what it needs, e.g. the depthwise band's floor)."""

    @property
    def inputs(self) -> list[Tensor | None]:
        return [self.graph.tensor(i) for i in self.op.inputs]

    @property
    def outputs(self) -> list[Tensor]:
        return [self.graph.tensors[i] for i in self.op.outputs]

    @property
    def activations(self) -> list[Tensor]:
        """Non-constant inputs, in order: the ``in[]`` array of the layer function."""
        return [t for t in self.inputs if t is not None and not t.is_constant]


Lowering = Callable[[Context], LayerCode]
LOWERINGS: dict[tuple[str, str], Lowering] = {}


class Unsupported(Exception):
    """This lowering cannot handle this particular layer; the next ISA in line is tried."""


def lowering(*opcodes: str, isa: str = "c") -> Callable[[Lowering], Lowering]:
    """Decorator: register a lowering for these opcodes on one ISA."""

    def deco(fn: Lowering) -> Lowering:
        for code in opcodes:
            LOWERINGS[(code, isa)] = fn
        return fn

    return deco


@dataclass
class Layer:
    """One lowered operator, ready to render."""

    index: int
    op: Operator
    spec: KernelSpec
    kernel: LayerCode
    isa_note: str  # why this ISA was chosen (e.g. "no neon kernel for MEAN: portable C")
    macs: int
    inputs: list[int]  # tensor indices of non-constant inputs
    outputs: list[int]

    @property
    def symbol(self) -> str:
        return self.spec.symbol

    @property
    def computed_macs(self) -> int:
        """The MACs the kernel computes (`LayerCode.work` of ``macs``)."""
        return round(self.macs * self.kernel.work)

    @property
    def const_bytes(self) -> int:
        return sum(c.nbytes for c in self.kernel.consts)

    @property
    def comment(self) -> str:
        return c_comment(f"layer {self.index}: {self.op.opcode}")


def lower_layer(ctx: Context, prefix: str) -> Layer:
    """Lower one operator: the target's ISAs are tried in order, portable C last."""
    if not ctx.activations:
        raise NotImplementedError(f"{ctx.op.describe()}: every input is a constant; fold the "
                                  "layer when converting the model")
    notes = []
    for isa in (*[i for i in ctx.target.isa if i != "c"], "c"):
        fn = LOWERINGS.get((ctx.op.opcode, isa))
        if fn is None:
            if isa != "c":
                notes.append(f"no {isa} kernel for {ctx.op.opcode}")
            continue
        ctx.isa = isa
        try:
            kernel = fn(ctx)
        except Unsupported as e:
            notes.append(f"{isa} kernel does not apply: {e}")
            continue
        dtype = np.dtype(ctx.outputs[0].dtype).name
        if dtype not in ("int8", "uint8"):
            dtype = np.dtype(ctx.activations[0].dtype).name
        spec = KernelSpec(prefix=prefix, index=ctx.op.index, dtype=dtype, op=kernel.op,
                          variant=kernel.variant, rounding=ctx.rounding, tile=kernel.tile,
                          isa=isa)
        note = "; ".join(notes) + ("; portable C" if notes else "")
        return Layer(
            index=ctx.op.index, op=ctx.op, spec=spec, kernel=kernel, isa_note=note,
            macs=type(ctx.sim).macs(ctx.op, ctx.graph),
            inputs=[i for i in ctx.op.inputs if i >= 0 and not ctx.graph.tensors[i].is_constant],
            outputs=list(ctx.op.outputs),
        )
    raise NotImplementedError(f"{ctx.op.describe()}: no C kernel for {ctx.op.opcode}")
