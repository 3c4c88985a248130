"""Refit the static cycle model against the emulated one; rerun after every kernel change.

For every chip target, every zoo model and the bundled MobileNet are estimated in emulated mode
(`qlane.codegen.estimate`); per kernel family (op.isa of the layer symbol) cycles and
instructions are fitted as non-negative combinations of the shape features (calls, MACs,
outputs, inputs, tile passes), minimising relative error. The coefficients replace the
``[cost.static]`` tables at the end of ``targets/<chip>.toml``; the agreement is printed, in
sample and leave-one-model-out, with the whole-model totals.

    python bench/calibrate_static.py [--targets cortex-m4,cortex-a53] [--dry-run] [--json OUT]
                                     [--reuse OUT]
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from qlane.codegen.cross import zig_version  # noqa: E402
from qlane.codegen.emit import generate  # noqa: E402
from qlane.codegen.estimate import (  # noqa: E402
    FEATURES,
    emulate_layers,
    estimate_emulated,
    family,
    family_keys,
    fit_nonnegative,
    layer_features,
)
from qlane.codegen.targets import load_target  # noqa: E402
from qlane.sim import load_tflite  # noqa: E402

TARGETS = ("cortex-m4", "cortex-m7", "cortex-a53", "cortex-a72")
METRICS = ("cycles", "instructions")
MIN_LAYERS = 2
"""Families (op.isa, op.isa.dtype) with fewer calibration layers are not fitted on their own:
their layers use the next key (op.isa, default.isa, default)."""


def models() -> list[Path]:
    """The zoo and the bundled MobileNet, without byte-identical duplicates."""
    seen: set[str] = set()
    out = []
    for p in [*sorted((ROOT / "tests" / "zoo").glob("*.tflite")),
              ROOT / "examples" / "mobilenet_v1_0.25_128_u8.tflite"]:
        h = hashlib.sha256(p.read_bytes()).hexdigest()
        if h not in seen:
            seen.add(h)
            out.append(p)
    return out


def collect(target_name: str, paths: list[Path], reuse: list[dict[str, Any]] | None = None
            ) -> list[dict[str, Any]]:
    """One row per layer: model, family, features, emulated cycles and instructions (taken
    from ``reuse`` rows of an earlier run when given; the features are always recomputed)."""
    target = load_target(target_name)
    old = {(r["model"], r["index"]): r for r in reuse or []}
    rows = []
    for p in paths:
        graph = load_tflite(str(p))
        if reuse is not None:
            project = generate(graph, target)
            measured = [old[(p.stem, layer.index)] for layer in project.layers]
        else:
            run = emulate_layers(graph, target)
            project = run.project
            measured = [{"cycles": le.cycles, "instructions": le.instructions}
                        for le in estimate_emulated(graph, target, run=run).layers]
        for layer, m in zip(project.layers, measured):
            rows.append({"model": p.stem, "index": layer.index, "family": family(layer.symbol),
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
        "# error) on the emulated mode over the zoo and the MobileNet. Refit after kernel changes.",
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


def write_section(target_name: str, section: str) -> Path:
    """Replace the ``[cost.static]`` tables (at the end of the file) of a target."""
    path = ROOT / "targets" / f"{target_name}.toml"
    text = path.read_text()
    i = text.find("\n[cost.static]")
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
    paths = models()
    report: dict[str, Any] = {}
    old = json.loads(Path(args.reuse).read_text()) if args.reuse else {}
    for name in args.targets.split(","):
        t0 = time.perf_counter()
        rows = collect(name, paths, old[name]["rows"] if name in old else None)
        coefs = fit(rows)
        fitted = agreement(rows, lambda r, c=coefs: c)
        loo: dict[str, Any] = {}
        for m in {r["model"] for r in rows}:
            loo[m] = fit([r for r in rows if r["model"] != m])
        held = agreement(rows, lambda r, loo=loo: loo[r["model"]])
        report[name] = {"in_sample": fitted, "leave_one_model_out": held,
                        "coefficients": coefs, "rows": rows}
        print(f"{name}: {len(paths)} models, {len(rows)} layers, "
              f"{time.perf_counter() - t0:.1f} s")
        for label, a in (("in sample", fitted), ("leave-one-model-out", held)):
            lay, mod = a["mac_layers"], a["models"]
            print(f"  {label:>20}: static/emulated per MAC layer median {lay['median']:.3f} "
                  f"[p05 {lay['p05']:.3f}, p95 {lay['p95']:.3f}]; per model median "
                  f"{mod['median']:.3f} [{mod['min']:.3f}, {mod['max']:.3f}]")
        mn = {k: v for k, v in held["per_model"].items() if "mobilenet" in k}
        print("  mobilenet totals (held out): "
              + ", ".join(f"{k} {v:.3f}" for k, v in sorted(mn.items())))
        if not args.dry_run:
            path = write_section(name, toml_section(coefs, rows, len(paths)))
            print(f"  wrote {path.relative_to(ROOT)} [cost.static]")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
