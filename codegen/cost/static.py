"""Static mode: cycles and instructions from layer shapes through fitted per-family coefficients."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from qlane.sim.graph import Graph

from ..names import DTYPES, parse_symbol
from ..targets import CostModel, Target
from .model import (
    Estimate,
    EstimateError,
    LayerEstimate,
    cost_model,
    floor_peak,
    layer_base,
    memory_view,
    model_notes,
    ram_of,
    schedule_notes,
    scheduled,
    skipped_note,
)

if TYPE_CHECKING:
    from ..emit import Project
    from ..schedule import Schedule

FEATURES = ("calls", "macs", "outputs", "inputs", "tiles", "pixels")
"""Shape features of the static model, in the order of the coefficient lists."""


def layer_features(layer: Any, graph: Graph) -> dict[str, float]:
    """Shape features of a lowered layer (see FEATURES): ``macs`` counts a pool's window
    additions (outputs x kernel area) too; ``tiles`` are the kernel's tile passes
    (ceil(pixels / rows) x ceil(channels / lanes) for an ``RxT`` tile); ``pixels`` are the
    output positions (outputs / last dimension)."""
    outs = [graph.tensors[t] for t in layer.outputs]
    ins = [graph.tensors[t] for t in layer.inputs]
    n_out = sum(t.size for t in outs)
    n_in = sum(t.size for t in ins)
    spec = parse_symbol(layer.symbol)
    rows, cols = (int(x) for x in spec.tile.split("x"))
    shape = outs[0].shape if outs else (1,)
    channels = int(shape[-1]) if len(shape) else 1
    pixels = max(1, n_out // max(channels, 1))
    tiles = math.ceil(pixels / rows) * math.ceil(channels / cols)
    work = float(layer.computed_macs)
    window = re.match(r"k(\d+)x(\d+)", spec.variant)
    if not work and window:
        work = float(n_out * int(window.group(1)) * int(window.group(2)))
    return {"calls": 1.0, "macs": work, "outputs": float(n_out), "inputs": float(n_in),
            "tiles": float(tiles), "pixels": float(pixels)}


def family(symbol: str) -> str:
    """Kernel family of a layer symbol: ``op.isa`` (``conv2d.dsp``, ``softmax.c``)."""
    spec = parse_symbol(symbol)
    return f"{spec.op}.{spec.isa}"


MAC_OPS = ("conv2d", "dwconv2d", "fc")
"""Kernel ops whose cost follows their MACs; the others (copies, requantizing elementwise ops,
pools, softmax) differ between uint8 and int8 and get per-dtype coefficients."""


def family_keys(symbol: str) -> list[str]:
    """Coefficient keys to try for a layer, most specific first: ``op.isa.1x1`` / ``op.isa.kxk``
    for convolutions (pointwise and spatial kernels differ), ``op.isa.dtype`` (qu8/qs8) for ops
    without MACs, then ``op.isa``, ``default.isa``, ``default``. A SIMD convolution whose tile is
    one pixel (``1xN``: a 1x1 convolution of a single pixel) runs the fully connected kernel
    path, so ``fc.isa`` comes first for it."""
    spec = parse_symbol(symbol)
    fam = f"{spec.op}.{spec.isa}"
    keys = [fam, f"default.{spec.isa}", "default"]
    if spec.op == "conv2d":
        conv = [f"{fam}.{'1x1' if spec.variant.startswith('k1x1') else 'kxk'}", *keys]
        gemv = spec.isa != "c" and spec.tile.startswith("1x")
        return [f"fc.{spec.isa}", *conv] if gemv else conv
    return keys if spec.op in MAC_OPS else [f"{fam}.{DTYPES[spec.dtype]}", *keys]


def _coefficients(model: CostModel, metric: str, symbol: str) -> tuple[list[float], str]:
    table = model.static.get(metric, {})
    for key in family_keys(symbol):
        if key in table:
            return [float(x) for x in table[key]], key
    raise EstimateError(f"target {model.target} has no static coefficients for "
                        f"{family(symbol)} ({metric}); run bench/calibrate_static.py or use "
                        "--mode emulated")


def static_layer(layer: Any, graph: Graph, model: CostModel) -> LayerEstimate:
    """One layer's static estimate."""
    feats = layer_features(layer, graph)
    x = [feats[f] for f in model.static.get("features", FEATURES)]
    cyc, _ = _coefficients(model, "cycles", layer.symbol)
    ins, _ = _coefficients(model, "instructions", layer.symbol)
    cycles = float(sum(a * b for a, b in zip(cyc, x)))
    instructions = int(round(sum(a * b for a, b in zip(ins, x))))
    return floor_peak(LayerEstimate(**layer_base(layer, graph), instructions=instructions,
                                cycles=cycles, core_cycles=cycles), model)


def estimate_static(graph: Graph, target: Target, rounding: str = "double",
                    name: str | None = None, project: Project | None = None, *,
                    on_layer: Callable[[LayerEstimate], None] | None = None,
                    schedule: Schedule | None = None,
                    memory_budget: int | None = None) -> Estimate:
    """Per-layer cycles from shapes and fitted per-family coefficients; no compiler.

    ``on_layer`` gets each layer's estimate as soon as it is made. ``schedule`` and
    ``memory_budget``: see `qlane.codegen.emit.generate`."""
    from ..emit import generate

    model = cost_model(target)
    project = project or generate(graph, target, name=name, rounding=rounding,
                                  schedule=schedule, memory_budget=memory_budget)
    whole = {layer.index: static_layer(layer, graph, model) for layer in project.layers}
    parts = {slot: static_layer(layer, g, model) for slot, layer, g, _ in project.patch_layers}
    layers, stages = scheduled(project, graph, whole, parts, model)
    for la in layers:
        if on_layer:
            on_layer(la)
    fitted = model.static.get("fitted", "")
    notes = [*model_notes(model), *skipped_note(layers),
             f"static coefficients fitted {fitted} by bench/calibrate_static.py",
             *schedule_notes(project, stages)]
    return Estimate(
        graph.name, target.name, "static", model.clock_hz, layers, project.plan.arena_bytes,
        int(project.manifest["flash_bytes"]),
        "constant data (weights, biases, multipliers, tables); code not included in static mode",
        model.sram_bytes, model.flash_bytes, model.peak_macs_per_cycle, notes,
        ram=ram_of(graph, target, project.plan.arena_bytes), stages=stages,
        memory=memory_view(project, graph))


def fit_nonnegative(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least squares on relative error with coefficients >= 0 (active set: drop the most
    negative feature and refit)."""
    w = 1.0 / np.maximum(np.abs(y), 1.0)
    a = x * w[:, None]
    b = y * w
    active = [j for j in range(x.shape[1]) if np.any(x[:, j])]
    coef = np.zeros(x.shape[1])
    while active:
        sol, *_ = np.linalg.lstsq(a[:, active], b, rcond=None)
        if np.all(sol >= 0):
            coef[:] = 0
            coef[active] = sol
            break
        active.pop(int(np.argmin(sol)))
    return coef
