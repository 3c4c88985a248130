"""Cycles per layer on a target chip: a cycle model per target, applied in two modes.

``emulated`` (`emulated`): the generated C is cross-compiled and every layer runs once on the
target's machine (`qlane.codegen.machine`); each real basic block the layer executed is costed by
the target's pipeline model (`pipeline`: issue width, execution units, cycles per instruction
class, MAC and load latencies with accumulator forwarding, steady state of the block as a loop),
plus the branch penalty of every taken branch and flash wait states for loads that read flash.

``static`` (`static`): no compiler, no emulator. Each layer's cycles and instructions come from
its shapes through per-kernel-family coefficients that ``bench/calibrate_static.py`` fits against
the emulated mode and stores in ``targets/<chip>.toml`` ``[cost.static]``.

Every estimate respects the chip's peak (`model`); `mca` compares the per-block model with
llvm-mca's scheduling models.
"""

from __future__ import annotations

from .emulated import BlockCoster, EmulatedRun, emulate_layers, estimate_emulated
from .mca import McaBlock, McaResult, find_llvm_mca, hot_blocks, mca_check, run_mca
from .model import Estimate, EstimateError, LayerEstimate, cost_model
from .pipeline import ITERATIONS, Op, block_cycles, make_op, schedule, taken_branches
from .static import (
    FEATURES,
    MAC_OPS,
    estimate_static,
    family,
    family_keys,
    fit_nonnegative,
    layer_features,
    static_layer,
)

__all__ = ["FEATURES", "ITERATIONS", "MAC_OPS", "BlockCoster", "EmulatedRun", "Estimate",
           "EstimateError", "LayerEstimate", "McaBlock", "McaResult", "Op", "block_cycles",
           "cost_model", "emulate_layers", "estimate_emulated", "estimate_static", "family",
           "family_keys", "find_llvm_mca", "fit_nonnegative", "hot_blocks", "layer_features",
           "make_op", "mca_check", "run_mca", "schedule", "static_layer", "taken_branches"]
