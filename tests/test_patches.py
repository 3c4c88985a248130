"""Receptive fields of patch-based execution (qlane.codegen.patches): a patch's input span holds
everything its outputs depend on, spans and MACs add up, and the full patch is the layer-by-layer
schedule."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from conftest import ZOO
from qlane.codegen.patches import (
    Span,
    Stage,
    chain,
    input_span,
    patch_spans,
    plan_patches,
    run_stage,
    split,
    stage_patches,
)
from qlane.sim import load_tflite
from qlane.sim.interpreter import Interpreter

MOBILENET = ZOO / "i8_mobilenet_v1_0.25_128.tflite"
RESNET = ZOO.parent.parent / "examples" / "mlperf_tiny" / "pretrainedResnet_quant.tflite"


@pytest.fixture(scope="module")
def mobilenet():  # type: ignore[no-untyped-def]
    graph = load_tflite(str(MOBILENET))
    return graph, Interpreter(graph)


def test_input_span_by_hand() -> None:
    # 3x3 stride 1, one padded row first: outputs 0..3 read rows -1..4, clipped to 0..4
    assert input_span(Span(0, 4), 3, 1, 1, 1, 8) == Span(0, 5)
    assert input_span(Span(4, 8), 3, 1, 1, 1, 8) == Span(3, 8)
    # 3x3 stride 2 on 128 rows, SAME: no padding first (TFLite puts the odd one last)
    assert input_span(Span(0, 2), 3, 2, 1, 0, 128) == Span(0, 5)
    assert input_span(Span(63, 64), 3, 2, 1, 0, 128) == Span(126, 128)
    # dilation 2: a 3-tap window spans 5 rows
    assert input_span(Span(2, 3), 3, 1, 2, 2, 10) == Span(0, 5)
    assert input_span(Span(3, 3), 3, 1, 1, 1, 8).size == 0


def test_patch_inputs_hold_everything_the_outputs_depend_on(mobilenet) -> None:  # type: ignore[no-untyped-def]
    """Randomize every input pixel outside a patch's input span: the patch's outputs stay."""
    graph, interp = mobilenet
    layers = chain(graph, 0, 4)  # conv 3x3 s2, dw 3x3, pw, dw 3x3 s2, pw
    last = graph.operators[layers[-1]].outputs[0]
    rng = np.random.default_rng(3)
    x = rng.integers(-128, 128, (1, *graph.tensors[graph.inputs[0]].shape), dtype=np.int8)
    want = interp.run([x], keep=True).tensors[last]  # [sample, 1, H, W, C]
    for rows, cols in ((Span(0, 4), Span(0, 4)), (Span(13, 19), Span(28, 32)),
                       (Span(31, 32), Span(5, 6))):
        spans = patch_spans(graph, interp.kernels, layers, rows, cols)
        first = spans[0]
        assert first.in_rows.size < x.shape[2] or first.in_cols.size < x.shape[3]
        inside = np.zeros(x.shape[2:4], bool)
        inside[first.in_rows.lo:first.in_rows.hi, first.in_cols.lo:first.in_cols.hi] = True
        x2 = np.where(inside[None, None, :, :, None], x,
                      rng.integers(-128, 128, x.shape, dtype=np.int8)).astype(np.int8)
        got = interp.run([x2], keep=True).tensors[last]
        assert np.array_equal(got[:, :, rows.lo:rows.hi, cols.lo:cols.hi],
                              want[:, :, rows.lo:rows.hi, cols.lo:cols.hi]), (rows, cols)
        assert not np.array_equal(got, want)  # outside the patch, the outputs did change
        # and each layer's input span is the previous layer's output span
        for a, b in zip(spans, spans[1:]):
            assert (a.out_rows, a.out_cols) == (b.in_rows, b.in_cols)


def test_full_patch_is_the_layer_by_layer_schedule(mobilenet) -> None:  # type: ignore[no-untyped-def]
    graph, interp = mobilenet
    full = plan_patches(graph, interp.kernels, Stage(0, 4, (1, 1)))
    assert full.macs == full.layer_macs and full.overhead == 0
    overheads = [plan_patches(graph, interp.kernels, Stage(0, 4, (g, g))).overhead
                 for g in (16, 8, 4, 2)]
    assert all(a >= b >= 0 for a, b in zip(overheads, overheads[1:])), overheads
    assert overheads[0] > 0.5 and 0 < overheads[-1] < 0.2, overheads
    small = plan_patches(graph, interp.kernels, Stage(0, 4, (8, 8)))
    assert small.buffer_bytes < full.buffer_bytes


def test_split_is_near_equal() -> None:
    assert split(10, 3) == [Span(0, 4), Span(4, 7), Span(7, 10)]
    assert split(4, 4) == [Span(k, k + 1) for k in range(4)]


@pytest.mark.parametrize("stage", [Stage(0, 7, (4, 4)), Stage(0, 3, (3, 2)), Stage(1, 5, (5, 1)),
                                   Stage(2, 2, (2, 7)), Stage(3, 9, (3, 3))],
                         ids=lambda s: s.describe().replace(" ", "_"))
def test_run_stage_is_the_layer_by_layer_result(mobilenet, stage: Stage) -> None:  # type: ignore[no-untyped-def]
    """Each patch computed alone on its spans, with the explicit padding its windows see, gives
    the layer-by-layer tensor bit for bit (the simulator's own check of the patch geometry)."""
    graph, interp = mobilenet
    rng = np.random.default_rng(stage.first)
    x = rng.integers(-128, 128, (2, *graph.tensors[graph.inputs[0]].shape), dtype=np.int8)
    tensors = interp.run([x], keep=True).tensors
    xin = tensors[graph.operators[stage.first].inputs[0]] if stage.first else x
    got = run_stage(graph, interp.kernels, stage, xin)
    assert np.array_equal(got, tensors[graph.operators[stage.last].outputs[0]])


def test_patch_layers_cover_their_layer(mobilenet) -> None:  # type: ignore[no-untyped-def]
    """Every output pixel of every stage layer is computed by some patch, and the padding of a
    patch is the image border's only where it touches the border."""
    graph, interp = mobilenet
    stage = Stage(0, 5, (3, 4))
    patches = stage_patches(graph, interp.kernels, stage)
    assert len(patches) == 12
    for pos, i in enumerate(stage.layers):
        shape = graph.tensors[graph.operators[i].outputs[0]].shape
        seen = np.zeros(shape[1:3], bool)
        for patch in patches:
            part = patch[pos]
            s = part.span
            seen[s.out_rows.lo:s.out_rows.hi, s.out_cols.lo:s.out_cols.hi] = True
            win = interp.kernels[i].win
            assert part.top == (win.top - s.out_rows.lo * win.sh if s.in_rows.lo == 0 else 0)
            assert part.left == (win.left - s.out_cols.lo * win.sw if s.in_cols.lo == 0 else 0)
        assert seen.all(), i


def test_chain_rejects_a_branch() -> None:
    graph = load_tflite(str(RESNET))
    add = next(i for i, op in enumerate(graph.operators) if op.opcode == "ADD")
    with pytest.raises(ValueError, match="read more than once|does not read"):
        chain(graph, 0, add)


def test_chain_rejects_an_inner_model_output(mobilenet) -> None:  # type: ignore[no-untyped-def]
    graph, _ = mobilenet
    exposed = dataclasses.replace(graph, outputs=[*graph.outputs, graph.operators[1].outputs[0]])
    chain(graph, 0, 3)
    with pytest.raises(ValueError, match="model output"):
        chain(exposed, 0, 3)
