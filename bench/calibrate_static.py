"""Refit the static cycle model against the emulated one; rerun after every kernel change.

For every chip target, every zoo model and the MobileNets are estimated in emulated mode
(`qlane.codegen.cost`); per kernel family (op.isa of the layer symbol) cycles and instructions
are fitted as non-negative combinations of the shape features (calls, MACs, outputs, inputs, tile
passes), minimising relative error, on the zoo without the MobileNets and on the small layer of
every kernel family (`qlane.codegen.families`, tests/family_layers.py) in each dtype and output
stage. The MobileNets (`HELD_OUT`) are held out of the fit, so the agreement printed for them,
and asserted by tests/test_estimate.py, is out of sample (also printed per kernel family). The
coefficients replace the ``[cost.static]`` tables at the end of ``targets/<chip>.toml`` (tables
that only differ by the date are left alone); the agreement is printed in sample,
leave-one-model-out and on the held-out MobileNets.

    python bench/calibrate_static.py [--targets cortex-m4,cortex-a53] [--dry-run] [--json OUT]
                                     [--reuse OUT]
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import re
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from family_layers import case_graph  # noqa: E402
from peers import merge_graphs  # noqa: E402
from qlane.codegen.cost import (  # noqa: E402
    FEATURES,
    emulate_layers,
    estimate_emulated,
    family,
    family_keys,
    fit_nonnegative,
    layer_features,
)
from qlane.codegen.cross import zig_version  # noqa: E402
from qlane.codegen.emit import generate  # noqa: E402
from qlane.codegen.families import CHIPS, DTYPES, FAMILIES, STAGES, family_of  # noqa: E402
from qlane.codegen.names import parse_symbol  # noqa: E402
from qlane.codegen.targets import load_target  # noqa: E402
from qlane.sim import Graph, load_tflite  # noqa: E402

TARGETS = tuple(CHIPS)
METRICS = ("cycles", "instructions")
MIN_LAYERS = 2
BIG_LAYER_MACS = 100_000
"""tests/test_estimate.py bands the held-out layers with at least this many MACs."""
"""Families (op.isa, op.isa.dtype) with fewer calibration layers are not fitted on their own:
their layers use the next key (op.isa, default.isa, default)."""


HELD_OUT = (ROOT / "examples" / "mobilenet_v1_0.25_128_u8.tflite",
            ROOT / "tests" / "zoo" / "i8_mobilenet_v1_0.25_128.tflite")
"""Never fitted on (nor their byte-identical copies in the zoo): the agreement on them is out of
sample."""


def _digest(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def family_layers() -> Graph:
    """Every kernel family's small layer, in each dtype and output stage, as one model."""
    cases = [case_graph(f.name, d, s) for f in FAMILIES for d in DTYPES for s in STAGES]
    return merge_graphs(cases, name="kernel_families")[0]


def models() -> tuple[list[tuple[str, Graph]], list[tuple[str, Graph]]]:
    """(fit, held out) as (name, graph): the zoo without the `HELD_OUT` models and duplicates
    plus `family_layers`, and the `HELD_OUT` models."""
    seen = {_digest(p) for p in HELD_OUT}
    fit_on = []
    for p in sorted((ROOT / "tests" / "zoo").glob("*.tflite")):
        h = _digest(p)
        if h not in seen:
            seen.add(h)
            fit_on.append((p.stem, load_tflite(str(p))))
    fit_on.append(("kernel_families", family_layers()))
    return fit_on, [(p.stem, load_tflite(str(p))) for p in HELD_OUT]


def collect(target_name: str, named: list[tuple[str, Graph]],
            reuse: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """One row per layer: model, family, features, emulated cycles and instructions (taken
    from ``reuse`` rows of an earlier run when given; the features are always recomputed)."""
    target = load_target(target_name)
    old = {(r["model"], r["index"]): r for r in reuse or []}
    rows = []
    for stem, graph in named:
        if reuse is not None:
            project = generate(graph, target)
            measured = [old[(stem, layer.index)] for layer in project.layers]
        else:
            run = emulate_layers(graph, target)
            project = run.project
            measured = [{"cycles": le.cycles, "instructions": le.instructions}
                        for le in estimate_emulated(graph, target, run=run).layers]
        for layer, m in zip(project.layers, measured):
            rows.append({"model": stem, "index": layer.index, "symbol": layer.symbol,
                         "family": family(layer.symbol),
                         "keys": family_keys(layer.symbol),
                         "features": layer_features(layer, graph), "cycles": m["cycles"],
                         "instructions": m["instructions"], "macs": int(layer.macs)})
    return rows


def _matrix(rows: list[dict[str, Any]]) -> np.ndarray:
    return np.array([[r["features"][f] for f in FEATURES] for r in rows], dtype=float)


def fit(rows: list[dict[str, Any]]) -> dict[str, dict[str, list[float]]]:
    """Coefficients per metric and family, plus ``default.<isa>`` and ``default``."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        for key in r["keys"]:
            groups[key].append(r)
    out: dict[str, dict[str, list[float]]] = {m: {} for m in METRICS}
    for key, grp in sorted(groups.items()):
        if len(grp) < MIN_LAYERS and not key.startswith("default"):
            continue
        x = _matrix(grp)
        for m in METRICS:
            y = np.array([r[m] for r in grp], dtype=float)
            out[m][key] = [float(f"{c:.6g}") for c in fit_nonnegative(x, y)]
    return out


def predict(coefs: dict[str, dict[str, list[float]]], row: dict[str, Any], metric: str
            ) -> float:
    table = coefs[metric]
    for key in row["keys"]:
        if key in table:
            return float(np.dot(table[key], [row["features"][f] for f in FEATURES]))
    return float("nan")


def agreement(rows: list[dict[str, Any]], coefs_for: Any) -> dict[str, Any]:
    """Static / emulated per layer (MAC layers and all) and per model, for cycles."""
    ratios, mac_ratios = [], []
    per_model: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for r in rows:
        s = predict(coefs_for(r), r, "cycles")
        e = r["cycles"]
        ratios.append(s / e)
        if r["macs"]:
            mac_ratios.append(s / e)
        per_model[r["model"]][0] += s
        per_model[r["model"]][1] += e
    model_ratios = {k: v[0] / v[1] for k, v in per_model.items()}

    def band(xs: list[float]) -> dict[str, float]:
        a = np.array(xs)
        return {"n": len(xs), "median": float(np.median(a)), "p05": float(np.quantile(a, 0.05)),
                "p95": float(np.quantile(a, 0.95)), "min": float(a.min()),
                "max": float(a.max())}

    return {"layers": band(ratios), "mac_layers": band(mac_ratios),
            "models": band(list(model_ratios.values())), "per_model": model_ratios}


def per_family(coefs: dict[str, dict[str, list[float]]], rows: list[dict[str, Any]]
               ) -> dict[str, float]:
    """Static / emulated cycles summed over the layers of each kernel family of the table."""
    sums: dict[str, list[float]] = {}
    for r in rows:
        spec = parse_symbol(r["symbol"])
        fam = family_of(spec.op, spec.variant)
        if fam is not None:
            acc = sums.setdefault(fam.name, [0.0, 0.0])
            acc[0] += predict(coefs, r, "cycles")
            acc[1] += r["cycles"]
    return {f.name: sums[f.name][0] / sums[f.name][1] for f in FAMILIES if f.name in sums}


def toml_section(coefs: dict[str, dict[str, list[float]]], rows: list[dict[str, Any]],
                 n_models: int) -> str:
    counts: dict[str, int] = defaultdict(int)
    for r in rows:
        counts[r["keys"][-3]] += 1
    today = datetime.date.today().isoformat()
    lines = [
        "[cost.static]",
        "# Written by bench/calibrate_static.py: per kernel family (op.isa of the layer symbol),",
        "# cycles or instructions = sum of coefficient x feature, fitted (non-negative, relative",
        "# error) on the emulated mode over the zoo without the MobileNets (held out) and the",
        "# kernel families' layers (qlane.codegen.families). Refit after kernel changes.",
        f'fitted = "{today}, {n_models} models, {len(rows)} layers, zig {zig_version()}"',
        "features = [" + ", ".join(f'"{f}"' for f in FEATURES) + "]",
    ]
    for m in METRICS:
        lines += ["", f"[cost.static.{m}]"]
        for key, c in coefs[m].items():
            lines.append(f'"{key}" = [' + ", ".join(repr(x) for x in c) + "]")
    lines += ["", "[cost.static.layers]               # calibration layers per family"]
    for key in sorted(counts):
        lines.append(f'"{key}" = {counts[key]}')
    return "\n".join(lines) + "\n"


_DATE = re.compile(r'^(fitted = ")\d{4}-\d{2}-\d{2}', re.MULTILINE)


def write_section(target_name: str, section: str) -> Path | None:
    """Replace the ``[cost.static]`` tables (at the end of the file) of a target; None (and no
    write) when they differ from the new ones only by the date."""
    path = ROOT / "targets" / f"{target_name}.toml"
    text = path.read_text()
    i = text.find("\n[cost.static]")
    old = text[i + 1:] if i >= 0 else ""
    if _DATE.sub(r"\1", old) == _DATE.sub(r"\1", section):
        return None
    if i >= 0:
        text = text[:i + 1]
    path.write_text(text.rstrip("\n") + "\n\n" + section)
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--targets", default=",".join(TARGETS))
    ap.add_argument("--dry-run", action="store_true", help="Fit and print; write no TOML.")
    ap.add_argument("--json", help="Also write the rows and agreement to this file.")
    ap.add_argument("--reuse", help="Take the emulated rows from an earlier --json file.")
    args = ap.parse_args(argv)
    paths, held_paths = models()
    report: dict[str, Any] = {}
    old = json.loads(Path(args.reuse).read_text()) if args.reuse else {}
    for name in args.targets.split(","):
        t0 = time.perf_counter()
        reuse = old[name]["rows"] + old[name].get("held_out_rows", []) if name in old else None
        rows = collect(name, paths, reuse)
        held_rows = collect(name, held_paths, reuse)
        coefs = fit(rows)
        fitted = agreement(rows, lambda r, c=coefs: c)
        loo: dict[str, Any] = {}
        for m in {r["model"] for r in rows}:
            loo[m] = fit([r for r in rows if r["model"] != m])
        loo_agreement = agreement(rows, lambda r, loo=loo: loo[r["model"]])
        held = agreement(held_rows, lambda r, c=coefs: c)
        report[name] = {"in_sample": fitted, "leave_one_model_out": loo_agreement,
                        "held_out": held, "coefficients": coefs, "rows": rows,
                        "held_out_rows": held_rows}
        print(f"{name}: fitted on {len(paths)} models, {len(rows)} layers; "
              f"{len(held_paths)} held out, {len(held_rows)} layers; "
              f"{time.perf_counter() - t0:.1f} s")
        for label, a in (("in sample", fitted), ("leave-one-model-out", loo_agreement),
                         ("held-out MobileNets", held)):
            lay, mod = a["mac_layers"], a["models"]
            print(f"  {label:>20}: static/emulated per MAC layer median {lay['median']:.3f} "
                  f"[p05 {lay['p05']:.3f}, p95 {lay['p95']:.3f}, min {lay['min']:.3f}, "
                  f"max {lay['max']:.3f}]; per model median {mod['median']:.3f} "
                  f"[{mod['min']:.3f}, {mod['max']:.3f}]")
        print("  held-out totals: " + ", ".join(
            f"{k} {v:.3f}" for k, v in sorted(held["per_model"].items())))
        big = [predict(coefs, r, "cycles") / r["cycles"] for r in held_rows
               if r["macs"] >= BIG_LAYER_MACS]
        print(f"  held-out layers of >= {BIG_LAYER_MACS:,} MACs: {len(big)}, "
              f"{min(big):.3f}-{max(big):.3f}")
        print("  held-out per kernel family (static / emulated cycles): " + ", ".join(
            f"{f} {r:.3f}" for f, r in per_family(coefs, held_rows).items()))
        if not args.dry_run:
            path = write_section(name, toml_section(coefs, rows, len(paths)))
            print(f"  wrote {path.relative_to(ROOT)} [cost.static]" if path else
                  "  [cost.static] unchanged but for the date: not rewritten")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
