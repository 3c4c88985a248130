"""Estimate cycles per layer of a model on a target chip (`qlane estimate`).

The cycle model and both modes live in `qlane.codegen.cost`; this is its entry point.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from qlane.sim.graph import Graph

from .compare import Progress
from .cost import Estimate, EstimateError, LayerEstimate, cost_model
from .cost.emulated import estimate_emulated
from .cost.static import estimate_static
from .targets import Target

MODES = ("static", "emulated")

__all__ = ["MODES", "Estimate", "EstimateError", "LayerEstimate", "estimate"]


def estimate(graph: Graph, target: Target, mode: str = "emulated", rounding: str = "double",
             name: str | None = None, build_root: str | Path | None = None, *,
             on_layer: Callable[[LayerEstimate], None] | None = None,
             progress: Progress | None = None, cc: str = "zig", schedule: Any = None,
             memory_budget: int | None = None) -> Estimate:
    """Estimate every layer of ``graph`` on ``target`` in ``mode`` (``static``/``emulated``).

    ``on_layer`` gets each layer's estimate as soon as it is costed, in order; ``progress``
    the emulated mode's stages ("compile", "emulate": see `emulate_layers`). ``cc`` is the
    compiler of the emulated mode's cross build (``zig`` or ``gcc``; checked in either mode).
    ``schedule`` and ``memory_budget``: see `qlane.codegen.emit.generate`.
    """
    from .cross import check_cc

    if mode not in MODES:
        raise EstimateError(f"unknown mode {mode!r}; choose static or emulated")
    cost_model(target)  # fail early on targets without a model
    check_cc(cc, target)
    if mode == "static" and cc != "zig":
        raise EstimateError(f"--cc {cc} needs --mode emulated: the static mode compiles nothing "
                            "(its coefficients were fitted on zig builds)")
    if mode == "static":
        return estimate_static(graph, target, rounding, name, on_layer=on_layer,
                               schedule=schedule, memory_budget=memory_budget)
    return estimate_emulated(graph, target, rounding, name, build_root, on_layer=on_layer,
                             progress=progress, cc=cc, schedule=schedule,
                             memory_budget=memory_budget)
