"""Arena and cycles per schedule: layer by layer, the chooser's pick at budgets below it, and the
smallest arena qlane finds, beside the layer-by-layer bound and TFLite Micro's arena.

For each model and Cortex-M target: the layer-by-layer bound (the largest input + output of one
layer), then one row per schedule with its arena (and as a share of the bound), the estimated
cycles (static mode; ``--mode emulated`` counts every layer and patch function in the emulator)
and their change against layer by layer, the MACs computed (halos of the patches included) and
instructions per MAC (model-free). TFLite Micro's arena is measured live: its recording
allocator's total for the same .tflite (its "head", the tensors, beside it); TFLM does not run
the classic uint8 models. TFLM's arena holds the model's input and output; qlane's does not (they
are the caller's buffers), so each row also gives qlane's arena plus them ("+ I/O").

    python bench/memory_schedules.py [--targets cortex-m4,cortex-m7] [--mode static]
                                     [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

from qlane.codegen.chooser import smallest_schedule  # noqa: E402
from qlane.codegen.emit import GenerateError, generate, lower_model  # noqa: E402
from qlane.codegen.schedule import Schedule, layer_bound  # noqa: E402
from qlane.codegen.targets import load_target  # noqa: E402
from qlane.sim import load_tflite  # noqa: E402

MODELS = {
    "MobileNet v1 0.25/128 uint8": ROOT / "examples" / "mobilenet_v1_0.25_128_u8.tflite",
    "MobileNet v1 0.25/128 int8": ROOT / "tests" / "zoo" / "i8_mobilenet_v1_0.25_128.tflite",
    "MLPerf Tiny VWW": ROOT / "examples" / "mlperf_tiny" / "vww_96_int8.tflite",
    "MLPerf Tiny KWS": ROOT / "examples" / "mlperf_tiny" / "kws_ref_model.tflite",
}
SHARES = (0.5, 0.4, 0.33)

_TFLM = """
import sys
from tflite_micro import runtime
interp = runtime.Interpreter.from_bytes(open(sys.argv[1], "rb").read(), arena_size=8 << 20)
sys.stdout.flush()
interp.print_allocations()
sys.stdout.flush()
"""


def tflm_arena(path: Path) -> tuple[int, int] | None:
    """TFLite Micro's arena for ``path``: (total, head: the tensors), or None if it cannot run
    the model. Measured in a child process (TFLM logs from C)."""
    run = subprocess.run([sys.executable, "-c", _TFLM, str(path)], capture_output=True,
                         text=True, timeout=300)
    text = run.stdout + run.stderr  # TFLM logs to stderr
    total = re.search(r"Arena allocation total (\d+) bytes", text)
    head = re.search(r"Arena allocation head (\d+) bytes", text)
    if run.returncode != 0 or not total or not head:
        return None
    return int(total.group(1)), int(head.group(1))


def io_bytes(graph: Any) -> int:
    """The model's inputs and outputs: the caller's buffers in qlane, in the arena in TFLM."""
    return sum(t.nbytes for t in (*graph.input_tensors, *graph.output_tensors))


def rows_for(graph: Any, target: str, mode: str) -> list[dict[str, Any]]:
    chip = load_target(target)
    low = lower_model(graph, chip)
    bound = layer_bound(graph)
    picks: list[tuple[str, Schedule | None, int | None]] = [("layer by layer", Schedule(), None)]
    picks += [(f"budget {share:g} x bound", None, int(share * bound)) for share in SHARES]
    smallest, _ = smallest_schedule(low)
    picks.append(("smallest found", smallest, None))
    out: list[dict[str, Any]] = []
    base = None
    for label, schedule, budget in picks:
        try:
            project = generate(graph, chip, schedule=schedule, memory_budget=budget,
                               lowered=low)
        except GenerateError as e:
            out.append({"label": label, "budget": budget, "error": str(e)})
            continue
        est = _estimate(graph, chip, mode, project)
        base = base or est
        out.append({
            "label": label, "budget": budget, "schedule": project.schedule.describe(),
            "arena": project.plan.arena_bytes, "share": project.plan.arena_bytes / bound,
            "arena_with_io": project.plan.arena_bytes + io_bytes(graph),
            "cycles": est.cycles, "vs_layers": est.cycles / base.cycles - 1,
            "macs": est.macs, "computed_macs": sum(la.computed_macs or la.macs
                                                   for la in est.layers),
            "instructions_per_mac": est.instructions / est.macs,
            "stages": [st.to_json() for st in est.stages],
        })
    return out


def _estimate(graph: Any, chip: Any, mode: str, project: Any) -> Any:
    from qlane.codegen.cost.emulated import emulate_layers, estimate_emulated
    from qlane.codegen.cost.static import estimate_static

    if mode == "static":
        return estimate_static(graph, chip, project=project)
    run = emulate_layers(graph, chip, project=project)
    return estimate_emulated(graph, chip, run=run)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--targets", default="cortex-m4,cortex-m7")
    ap.add_argument("--mode", choices=["static", "emulated"], default="static")
    ap.add_argument("--json", dest="json_out")
    args = ap.parse_args()
    report: dict[str, Any] = {}
    for label, path in MODELS.items():
        graph = load_tflite(str(path))
        bound = layer_bound(graph)
        tflm = tflm_arena(path)
        tflm_text = (f"TFLite Micro arena {tflm[0]:,} B (tensors {tflm[1]:,} B, inputs and "
                     "outputs included)" if tflm
                     else "TFLite Micro does not run this model (classic uint8)")
        print(f"\n{label}: layer-by-layer bound {bound:,} B; {tflm_text}")
        report[label] = {"bound": bound, "tflm": tflm, "targets": {}}
        for target in args.targets.split(","):
            t0 = time.time()
            rows = rows_for(graph, target, args.mode)
            report[label]["targets"][target] = rows
            print(f"  {target} ({args.mode} estimate, {time.time() - t0:.0f} s)")
            print(f"    {'schedule':<22} {'arena B':>9} {'x bound':>8} {'+ I/O B':>9} "
                  f"{'cycles':>12} {'vs lbl':>7} {'MACs computed':>14} {'instr/MAC':>9}  "
                  "stages")
            for r in rows:
                if "error" in r:
                    print(f"    {r['label']:<22} {r['error']}")
                    continue
                print(f"    {r['label']:<22} {r['arena']:>9,} {r['share']:>8.3f} "
                      f"{r['arena_with_io']:>9,} {r['cycles']:>12,.0f} "
                      f"{100 * r['vs_layers']:>+6.1f}% "
                      f"{r['computed_macs']:>14,} {r['instructions_per_mac']:>9.3f}  "
                      f"{r['schedule']}")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
