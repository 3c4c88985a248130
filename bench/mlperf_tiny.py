"""qlane's estimate for the MLPerf Tiny int8 models against the best published silicon results.

Per model and chip (the boards of the published results: STM32L4R5 for Cortex-M4, STM32F746 for
Cortex-M7): the emulated-mode estimate (cycles, ms at the chip's clock, instructions and cycles
per MAC), the best published MLPerf Tiny closed-division result on that board (submitter, round,
ms, cycles), the ratio estimate / published, flash (the cross build's image) and arena bytes and
whether the deployment fits; then instructions and cycles per MAC per layer family. With a ``cc``
option on `qlane.api.estimate` and arm-none-eabi-gcc on PATH, both compilers side by side.

    python bench/mlperf_tiny.py [--targets stm32l4r5,cortex-m7] [--cc zig,gcc] [--json OUT]

The estimate is the cycle model of `qlane estimate`, not a measurement: on CMSIS-NN GCC builds
the Cortex-M4 model came out 2-9% below silicon (see the README).
"""

from __future__ import annotations

import argparse
import inspect
import json
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

from qlane import api  # noqa: E402
from qlane.codegen.families import family_of  # noqa: E402
from qlane.codegen.names import parse_symbol  # noqa: E402
from qlane.codegen.targets import Target  # noqa: E402

MODELS_DIR = ROOT / "examples" / "mlperf_tiny"
MODELS = {"VWW": "vww_96_int8", "KWS": "kws_ref_model", "IC": "pretrainedResnet_quant",
          "AD": "ad01_int8"}
"""Benchmark -> model file stem (mlcommons/tiny reference models, int8)."""
TARGETS = ("stm32l4r5", "cortex-m7")


@dataclass(frozen=True)
class Published:
    """One published MLPerf Tiny result: median throughput on a board at a clock."""

    submitter: str
    round: str
    board: str
    clock_hz: int
    inferences_per_s: float
    note: str = ""

    @property
    def ms(self) -> float:
        return 1e3 / self.inferences_per_s

    @property
    def cycles(self) -> float:
        return self.clock_hz / self.inferences_per_s


SOURCE = ("mlcommons/tiny_results_v1.0 ... v1.3, closed/<submitter>/results/<system>/<benchmark>/"
          "performance/results.txt (median inferences/s) and closed/<submitter>/systems/"
          "<system>.json (clock); cycles = clock / throughput (collected in "
          "../shared/mlperf-tiny/README.md)")
L4R5, F746 = "NUCLEO-L4R5ZI", "DISCO-F746NG"
BEST: dict[str, dict[str, Published]] = {
    "cortex-m4": {
        "VWW": Published("ST X-CUBE-AI", "v1.2", L4R5, 120_000_000, 11.245),
        "KWS": Published("ST X-CUBE-AI", "v1.2", L4R5, 120_000_000, 23.142),
        "IC": Published("ST X-CUBE-AI", "v1.2", L4R5, 120_000_000, 6.056),
        "AD": Published("Bosch", "v1.2", L4R5, 120_000_000, 211.492, "max_performance"),
    },
    "cortex-m7": {
        "VWW": Published("Plumerai", "v1.0", F746, 216_000_000, 17.535),
        "KWS": Published("Bosch", "v1.1", F746, 216_000_000, 54.293),
        "IC": Published("Bosch", "v1.1", F746, 216_000_000, 16.242),
        "AD": Published("Bosch", "v1.2", F746, 216_000_000, 701.804, "max_performance"),
    },
}
"""Best published latency per core and benchmark (closed division), from `SOURCE`."""


def cc_support() -> tuple[list[str], str]:
    """The compilers the bench can compare, and why gcc is missing if it is."""
    if "cc" not in inspect.signature(api.estimate).parameters:
        return ["zig"], "zig only: qlane.api.estimate has no cc option yet"
    if shutil.which("arm-none-eabi-gcc") is None:
        return ["zig"], "zig only: arm-none-eabi-gcc is not installed"
    return ["zig", "gcc"], ""


def compiler_name(cc: str) -> str:
    """``zig 0.17.1`` or the arm-none-eabi-gcc version, as the cross build names it."""
    from qlane.codegen import cross

    name = getattr(cross, "compiler_version", None)
    return name(cc) if name else f"{cc} {cross.zig_version()}"


def family(la: Any) -> str:
    """The layer's kernel family (`qlane.codegen.families`), else op and variant of its symbol."""
    spec = parse_symbol(la.kernel)
    shape = la.input_shapes[0] if la.input_shapes else []
    fam = family_of(spec.op, spec.variant, shape[-1] if shape else None)
    if fam is not None:
        return fam.name
    return f"{spec.op} {spec.variant}".strip() if la.macs else "no MACs"


def measure(target: Target, bench: str, cc: str) -> dict[str, Any]:
    """One estimate, reduced to what the tables print."""
    path = MODELS_DIR / f"{MODELS[bench]}.tflite"
    kwargs = {"cc": cc} if cc != "zig" else {}
    t0 = time.perf_counter()
    est = api.estimate(str(path), target, **kwargs)
    families: dict[str, dict[str, int]] = {}
    for la in est.layers:
        f = families.setdefault(family(la), {"layers": 0, "macs": 0, "instructions": 0,
                                             "cycles": 0})
        f["layers"] += 1
        f["macs"] += la.macs
        f["instructions"] += la.instructions
        f["cycles"] += int(la.cycles)
    params = sum(t.nbytes for t in api.load_model(str(path)).tensors if t.data is not None)
    return {"bench": bench, "target": target.name, "cc": cc, "clock_hz": est.clock_hz,
            "macs": est.macs, "instructions": est.instructions, "cycles": int(est.cycles),
            "seconds": est.seconds, "flash_bytes": est.flash_bytes,
            "flash_capacity": est.flash_capacity, "arena_bytes": est.arena_bytes,
            "sram_capacity": est.sram_capacity, "fits": est.fits, "param_bytes": params,
            "families": families, "wall_s": round(time.perf_counter() - t0, 1)}


def _kb(n: int) -> str:
    return f"{n / 1024:,.0f} KB"


def _per(num: float, macs: int) -> str:
    return f"{num / macs:.2f}" if macs else "-"


def summary(rows: list[dict[str, Any]]) -> None:
    """The main table: estimate against the best published result, memory and fit."""
    print("| bench | chip | cc | est. Mcycles | est. ms | instr/MAC | cycles/MAC | best published "
          "(round, board) | pub. ms | pub. Mcycles | est. / pub. | flash: image / params | "
          "arena | fits |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        pub = BEST[r["core"]][r["bench"]]
        note = f" {pub.note}" if pub.note else ""
        clock = "" if pub.clock_hz == r["clock_hz"] else f" @ {pub.clock_hz / 1e6:.0f} MHz"
        print(f"| {r['bench']} | {r['target']} @ {r['clock_hz'] / 1e6:.0f} MHz | {r['cc']} | "
              f"{r['cycles'] / 1e6:.2f} | {r['seconds'] * 1e3:.1f} | "
              f"{_per(r['instructions'], r['macs'])} | {_per(r['cycles'], r['macs'])} | "
              f"{pub.submitter}{note} ({pub.round}, {pub.board}{clock}) | "
              f"{pub.ms:.1f} | {pub.cycles / 1e6:.2f} | {r['cycles'] / pub.cycles:.2f} | "
              f"{_kb(r['flash_bytes'])} / {_kb(r['param_bytes'])} "
              f"({r['flash_bytes'] / r['param_bytes']:.2f}x) of {_kb(r['flash_capacity'])} | "
              f"{_kb(r['arena_bytes'])} of {_kb(r['sram_capacity'])} | "
              f"{'yes' if r['fits'] else 'no'} |")


def family_table(rows: list[dict[str, Any]]) -> None:
    """Instructions / cycles per MAC of each layer family, per model, chip and compiler."""
    cols = list(dict.fromkeys((r["target"], r["cc"]) for r in rows))
    by = {(r["bench"], r["target"], r["cc"]): r for r in rows}
    print("\n| bench | layer family | layers | MACs | "
          + " | ".join(f"{t} {cc} instr/MAC (cycles/MAC)" for t, cc in cols) + " |")
    print("|---|---|---|---|" + "---|" * len(cols))
    for bench in dict.fromkeys(r["bench"] for r in rows):
        first = next(by[bench, t, cc] for t, cc in cols if (bench, t, cc) in by)
        fams = sorted(first["families"].items(), key=lambda kv: -kv[1]["macs"])
        for name, f in fams:
            cells = []
            for t, cc in cols:
                g = by.get((bench, t, cc), {}).get("families", {}).get(name)
                if g is None:
                    cells.append("-")
                elif g["macs"]:
                    cells.append(f"{_per(g['instructions'], g['macs'])} "
                                 f"({_per(g['cycles'], g['macs'])})")
                else:
                    cells.append(f"{g['instructions']:,} instr ({g['cycles']:,} cycles)")
            print(f"| {bench} | {name} | {f['layers']} | {f['macs']:,} | " + " | ".join(cells)
                  + " |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--targets", default=",".join(TARGETS),
                    help="Chips (names or aliases) with a Cortex-M4 or M7 core.")
    ap.add_argument("--cc", help="Compilers to compare (default: zig, and gcc when available).")
    ap.add_argument("--json", help="Also write the rows to this file.")
    args = ap.parse_args(argv)
    ccs, why = cc_support()
    if args.cc:
        wanted = args.cc.split(",")
        missing = [c for c in wanted if c not in ccs]
        if missing:
            ap.error(f"cannot build with {', '.join(missing)}: {why}")
        ccs = wanted
    targets = [api.load_target(t) for t in args.targets.split(",")]
    bad = [t.name for t in targets if t.core not in BEST]
    if bad:
        ap.error(f"no published results for the core of {', '.join(bad)} "
                 f"(known: {', '.join(BEST)})")
    t0 = time.perf_counter()
    rows = []
    for bench in MODELS:
        for target in targets:
            for cc in ccs:
                print(f"estimating {bench} on {target.name} with {cc} ...", file=sys.stderr)
                rows.append({**measure(target, bench, cc), "core": target.core})
    print(f"# MLPerf Tiny int8 models: qlane's estimate (emulated mode) against the best "
          f"published silicon ({time.perf_counter() - t0:.0f} s)\n")
    summary(rows)
    family_table(rows)
    print(f"\nPublished: {SOURCE}.  ")
    print("est. / pub.: estimated cycles over the published cycles (< 1: the estimate is faster). "
          "The estimate is qlane's emulated cycle model (generated C cross-compiled, every layer "
          "run once in the emulator, each executed basic block costed by the target's pipeline "
          "and flash model), not a measurement on the board.  ")
    print("flash: the cross build's image (code, constants and initialised data) / the "
          "model's parameter bytes; arena: the planned activation arena; fits: the RAM "
          "placement region by region and the image in the chip's flash.  ")
    print(f"Compilers: {'; '.join(compiler_name(cc) for cc in ccs)}" + (f" ({why})." if why
                                                                          else "."))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
