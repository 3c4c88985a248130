"""Test helpers: run .tflite bytes on peer runtimes, build small graphs, draw random tensors.

- :func:`run_litert`: LiteRT with the reference kernels (``OpResolverType.BUILTIN_REF``).
- :func:`run_tflm`: TFLite Micro's python runtime (int8; classic fixed-point FULLY_CONNECTED).
- :func:`spec`, :func:`single_op_graph`, :class:`GraphBuilder`: graphs for :func:`write_tflite`.
- ``random_*``: scales, zero points, activations, per-channel int8 weights, int32 biases.

Every runner takes and returns arrays with a leading sample axis, like ``Interpreter.run``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import tflite

from qlane.sim.graph import Graph, Operator, Tensor
from qlane.sim.interpreter import Interpreter
from qlane.sim.quant import QuantParams
from qlane.sim.writer import write_tflite

__all__ = [
    "assert_graphs_equal",
    "GraphBuilder",
    "random_activation_quant",
    "random_bias",
    "random_input",
    "random_scale",
    "random_weights",
    "run_litert",
    "run_tflm",
    "single_op_graph",
    "spec",
    "write_tflite",
    "merge_graphs",
]


def _samples(inputs: Sequence[np.ndarray]) -> int:
    counts = {int(np.asarray(x).shape[0]) for x in inputs}
    if len(counts) != 1:
        raise ValueError(f"inputs must share the leading sample axis, got counts {counts}")
    return counts.pop()


def run_litert(model_bytes: bytes, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Outputs of LiteRT's reference kernels, one invoke per sample: ``[S, *shape]`` each."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interp = Interpreter(model_content=bytes(model_bytes),
                         experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
    interp.allocate_tensors()
    ins = interp.get_input_details()
    outs = interp.get_output_details()
    results: list[list[np.ndarray]] = [[] for _ in outs]
    for s in range(_samples(inputs)):
        for detail, x in zip(ins, inputs):
            interp.set_tensor(detail["index"], np.ascontiguousarray(x[s]))
        interp.invoke()
        for k, detail in enumerate(outs):
            results[k].append(interp.get_tensor(detail["index"]).copy())
    return [np.stack(r) for r in results]


def run_tflm(model_bytes: bytes, inputs: Sequence[np.ndarray],
             arena_size: int | None = None) -> list[np.ndarray]:
    """Outputs of TFLite Micro's reference kernels, one invoke per sample."""
    from tflite_micro import runtime

    arena = arena_size or max(10 * len(model_bytes), 8 << 20)
    interp = runtime.Interpreter.from_bytes(bytes(model_bytes), arena_size=arena)
    n_outputs = tflite.Model.GetRootAsModel(model_bytes, 0).Subgraphs(0).OutputsLength()
    results: list[list[np.ndarray]] = [[] for _ in range(n_outputs)]
    for s in range(_samples(inputs)):
        for k, x in enumerate(inputs):
            interp.set_input(np.ascontiguousarray(x[s]), k)
        interp.invoke()
        for k in range(n_outputs):
            results[k].append(np.array(interp.get_output(k), copy=True))
    return [np.stack(r) for r in results]


def spec(shape: Sequence[int], dtype: Any, quant: QuantParams | None = None,
         data: np.ndarray | None = None, name: str = "") -> Tensor:
    """A tensor not yet placed in a graph (index -1); ``data`` makes it a constant."""
    if data is not None:
        data = np.asarray(data, dtype).reshape(tuple(shape))
    return Tensor(-1, name, tuple(int(d) for d in shape), np.dtype(dtype), quant, data)


class GraphBuilder:
    """Collects tensors and operators; :meth:`build` makes the Graph."""

    def __init__(self) -> None:
        self.tensors: list[Tensor] = []
        self.operators: list[Operator] = []

    def add(self, t: Tensor) -> int:
        """Place a tensor spec in the graph; returns its index."""
        index = len(self.tensors)
        self.tensors.append(dataclasses.replace(t, index=index, name=t.name or f"t{index}"))
        return index

    def op(self, opcode: str, inputs: Sequence[int], outputs: Sequence[int],
           **options: Any) -> int:
        """Append an operator; returns its index."""
        index = len(self.operators)
        self.operators.append(Operator(index, opcode, tuple(inputs), tuple(outputs), options))
        return index

    def build(self, inputs: Sequence[int], outputs: Sequence[int], name: str = "model") -> Graph:
        return Graph(list(self.tensors), list(self.operators), list(inputs), list(outputs), name)


def single_op_graph(opcode: str, inputs: Sequence[Tensor | None], outputs: Sequence[Tensor],
                    options: dict[str, Any] | None = None) -> Graph:
    """A one-operator graph; its inputs are the non-constant operator inputs, in order."""
    g = GraphBuilder()
    ins = [-1 if t is None else g.add(t) for t in inputs]
    outs = [g.add(t) for t in outputs]
    g.op(opcode, ins, outs, **(options or {}))
    graph_inputs = [i for i, t in zip(ins, inputs) if t is not None and t.data is None]
    return g.build(graph_inputs, outs, name=opcode.lower())


def random_scale(rng: np.random.Generator, lo: float = 1e-3, hi: float = 0.2,
                 size: int | None = None) -> np.ndarray:
    """Log-uniform float32 scale(s) in [lo, hi)."""
    return np.exp(rng.uniform(np.log(lo), np.log(hi), size)).astype(np.float32)


def random_activation_quant(rng: np.random.Generator, dtype: Any, lo: float = 1e-3,
                            hi: float = 0.2) -> QuantParams:
    """Per-tensor params of an activation: random scale, zero point anywhere in the range."""
    info = np.iinfo(np.dtype(dtype))
    return QuantParams(random_scale(rng, lo, hi), int(rng.integers(info.min, info.max + 1)))


def random_input(rng: np.random.Generator, shape: Sequence[int], dtype: Any,
                 samples: int) -> np.ndarray:
    """``samples`` uniformly random activations of ``shape``: ``[samples, *shape]``."""
    info = np.iinfo(np.dtype(dtype))
    return rng.integers(info.min, info.max + 1, (samples, *shape)).astype(dtype)


def random_weights(rng: np.random.Generator, shape: Sequence[int], dtype: Any,
                   axis: int = 0, lo: float = 1e-3, hi: float = 0.1) -> tuple[np.ndarray,
                                                                             QuantParams]:
    """Constant weights: int8 symmetric per-channel along ``axis`` in [-127, 127], or uint8
    per-tensor with a random zero point."""
    shape = tuple(shape)
    if np.dtype(dtype) == np.int8:
        data = rng.integers(-127, 128, shape).astype(np.int8)
        n = shape[axis]
        return data, QuantParams(random_scale(rng, lo, hi, n), np.zeros(n, np.int64), axis)
    data = rng.integers(0, 256, shape).astype(np.uint8)
    return data, QuantParams(random_scale(rng, lo, hi), int(rng.integers(0, 256)))


def random_bias(rng: np.random.Generator, n: int, input_scale: float,
                weight_scale: np.ndarray, magnitude: int = 1 << 14,
                offset: np.ndarray | None = None) -> tuple[np.ndarray, QuantParams]:
    """int32 bias of ``n`` channels with scale ``input_scale * weight_scale`` (zero point 0):
    ``offset`` (e.g. minus the mean accumulator) plus uniform noise in ±``magnitude``."""
    scales = (np.float32(input_scale) * np.asarray(weight_scale, np.float32)).astype(np.float32)
    if scales.size == 1 and n > 1:
        quant = QuantParams(scales.reshape(1), 0)
    else:
        quant = QuantParams(scales, np.zeros(scales.size, np.int64), 0)
    bias = rng.integers(-magnitude, magnitude + 1, n).astype(np.int64)
    if offset is not None:
        bias += np.round(np.asarray(offset, np.float64)).astype(np.int64)
    return np.clip(bias, -(1 << 31), (1 << 31) - 1).astype(np.int32), quant


def assert_graphs_equal(a: Graph, b: Graph) -> None:
    """Same tensors (name, shape, dtype, quantization, data), operators, inputs and outputs."""
    assert len(a.tensors) == len(b.tensors), (len(a.tensors), len(b.tensors))
    for x, y in zip(a.tensors, b.tensors):
        where = x.describe()
        assert (x.index, x.name, x.shape, np.dtype(x.dtype)) == \
            (y.index, y.name, y.shape, np.dtype(y.dtype)), (where, y.describe())
        assert (x.quant is None) == (y.quant is None), where
        if x.quant is not None:
            assert x.quant.axis == y.quant.axis, where
            np.testing.assert_array_equal(x.quant.scale, y.quant.scale, err_msg=where)
            np.testing.assert_array_equal(x.quant.zero_point, y.quant.zero_point, err_msg=where)
        assert (x.data is None) == (y.data is None), where
        if x.data is not None:
            assert x.data.dtype == y.data.dtype and x.data.shape == y.data.shape, where
            np.testing.assert_array_equal(x.data, y.data, err_msg=where)
    assert len(a.operators) == len(b.operators), (len(a.operators), len(b.operators))
    for x, y in zip(a.operators, b.operators):
        assert x == y, (x, y)
    assert (a.inputs, a.outputs) == (b.inputs, b.outputs)


def merge_graphs(graphs: Sequence[Graph], name: str = "merged") -> tuple[Graph, list[int]]:
    """Independent graphs side by side in one graph (so one C build covers them all).

    Returns the merged graph and, per source graph, the index of its first operator.
    """
    tensors: list[Tensor] = []
    ops: list[Operator] = []
    inputs: list[int] = []
    outputs: list[int] = []
    first_op = []
    for g in graphs:
        base = len(tensors)
        first_op.append(len(ops))
        for t in g.tensors:
            tensors.append(dataclasses.replace(t, index=base + t.index))
        for op in g.operators:
            ops.append(dataclasses.replace(
                op, index=len(ops), inputs=tuple(i + base if i >= 0 else i for i in op.inputs),
                outputs=tuple(i + base for i in op.outputs)))
        inputs += [i + base for i in g.inputs]
        outputs += [i + base for i in g.outputs]
    return Graph(tensors, ops, inputs, outputs, name=name), first_op


def tie_graph() -> tuple[Graph, list[np.ndarray]]:
    """FULLY_CONNECTED and DEPTHWISE_CONV_2D layers whose requantization multiplier is exactly
    1/4 (ADD: an output multiplier of 2^-22 on sums of 2^19 steps), so that many negative results
    are ties; each with RELU (lower clamp at the zero point: the kernels drop the tie fix-up) and
    without (they must keep it)."""
    rng = np.random.default_rng(11)
    g = GraphBuilder()
    ins: list[int] = []
    outs: list[int] = []
    for dt, zi, zw, zo in ((np.uint8, 130, 120, 100), (np.int8, -3, 0, -20)):
        qi = QuantParams(np.float32(0.5), zi)
        qo = QuantParams(np.float32(1.0), zo)
        for act in ("RELU", "NONE"):
            for op in ("FULLY_CONNECTED", "DEPTHWISE_CONV_2D", "ADD"):
                if op == "ADD":  # inputs x 1/2 each (exact), the sum x 2^-22 at the output
                    a = g.add(spec((1, 2, 5, 16), dt, qi))
                    b = g.add(spec((1, 2, 5, 16), dt, qi))
                    y = g.add(spec((1, 2, 5, 16), dt, QuantParams(np.float32(4.0), zo)))
                    g.op(op, [a, b], [y], activation=act)
                    ins += [a, b]
                    outs.append(y)
                    continue
                xshape = (4, 16) if op == "FULLY_CONNECTED" else (2, 5, 16)
                wshape = (16, 16) if op == "FULLY_CONNECTED" else (1, 3, 3, 16)
                if dt == np.uint8:
                    qw = QuantParams(np.float32(0.5), zw)
                    qb = QuantParams(np.float32(0.25), 0)
                else:
                    n = 16
                    axis = 0 if op == "FULLY_CONNECTED" else 3
                    qw = QuantParams(np.full(n, 0.5, np.float32), np.zeros(n, np.int64), axis)
                    qb = QuantParams(np.full(n, 0.25, np.float32), np.zeros(n, np.int64), 0)
                w = (zw + rng.integers(-3, 4, wshape)).astype(dt)
                fc = op == "FULLY_CONNECTED"
                x = g.add(spec(xshape if fc else (1, *xshape), dt, qi))
                wi = g.add(spec(wshape, dt, qw, w))
                bi = g.add(spec((16,), np.int32, qb, rng.integers(-9, 10, 16)))
                y = g.add(spec((*xshape[:-1], 16) if fc else (1, *xshape[:-1], 16), dt, qo))
                if op == "FULLY_CONNECTED":
                    g.op(op, [x, wi, bi], [y], activation=act)
                else:
                    g.op(op, [x, wi, bi], [y], padding="SAME", stride_h=1, stride_w=1,
                         dilation_h=1, dilation_w=1, depth_multiplier=1, activation=act)
                ins.append(x)
                outs.append(y)
    graph = g.build(ins, outs, "ties")
    xs = [(graph.tensors[i].quant.zp + rng.integers(-3, 4, (3, *graph.tensors[i].shape)))
          .astype(graph.tensors[i].dtype) for i in ins]
    outs = Interpreter(graph, "double").run(xs).outputs
    below = sum(int(np.count_nonzero(y < graph.tensors[t].quant.zp))
                for y, t, op in zip(outs, graph.outputs, graph.operators)
                if op.options["activation"] == "NONE")
    assert below > 100  # without a clamp, negative results (and their ties) reach the output
    return graph, xs
