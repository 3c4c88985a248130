"""Simulator speed against LiteRT's reference kernels on the uint8 MobileNet, in one run.

Prints seconds per sample for LiteRT (BUILTIN_REF, one thread) and for qlane's simulator, both
on the same inputs, and the ratio qlane / LiteRT (<= 1.0 means qlane is not slower). Also checks
that both produced identical outputs.

    python bench/bench_simulator.py [--samples 32] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from ai_edge_litert.interpreter import Interpreter as LiteRT
from ai_edge_litert.interpreter import OpResolverType

from qlane.sim import Interpreter, load_tflite

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "examples" / "mobilenet_v1_0.25_128_u8.tflite"


def litert_run(x: np.ndarray) -> tuple[float, np.ndarray]:
    it = LiteRT(model_path=str(MODEL), num_threads=1,
                experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
    it.allocate_tensors()
    i, o = it.get_input_details()[0]["index"], it.get_output_details()[0]["index"]
    outs = []
    start = time.perf_counter()
    for sample in x:
        it.set_tensor(i, sample)
        it.invoke()
        outs.append(it.get_tensor(o).copy())
    return time.perf_counter() - start, np.stack(outs)


def qlane_run(interp: Interpreter, x: np.ndarray, batch: int) -> tuple[float, np.ndarray]:
    outs = []
    start = time.perf_counter()
    for k in range(0, len(x), batch):
        outs.append(interp.run([x[k:k + batch]]).outputs[0])
    return time.perf_counter() - start, np.concatenate(outs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--samples", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3, help="best of this many runs")
    args = ap.parse_args()
    graph = load_tflite(MODEL)
    shape = graph.input_tensors[0].shape
    x = np.random.default_rng(0).integers(0, 256, (args.samples, *shape), dtype=np.uint8)
    interp = Interpreter(graph)
    qlane_run(interp, x[:2], 2)  # warm up BLAS and caches

    t_ref, y_ref = min((litert_run(x) for _ in range(args.repeats)), key=lambda r: r[0])
    n = len(x)
    print(f"uint8 MobileNet v1 0.25/128, {n} samples, best of {args.repeats}")
    print(f"{'runner':<34} {'ms/sample':>10} {'ratio vs LiteRT':>16} {'identical':>10}")
    print(f"{'LiteRT BUILTIN_REF (1 thread)':<34} {t_ref / n * 1e3:>10.2f} {1.0:>16.3f} "
          f"{'-':>10}")
    worst = 0.0
    for batch in (1, n):
        t, y = min((qlane_run(interp, x, batch) for _ in range(args.repeats)), key=lambda r: r[0])
        same = bool(np.array_equal(y, y_ref))
        ratio = t / t_ref
        worst = max(worst, ratio if batch == 1 else 0.0)
        label = f"qlane simulator, batch {batch}"
        print(f"{label:<34} {t / n * 1e3:>10.2f} {ratio:>16.3f} {str(same):>10}")
    print(f"ratio (one sample at a time) = {worst:.3f}  -> "
          f"{'OK: not slower than LiteRT' if worst <= 1.0 else 'SLOWER than LiteRT'}")


if __name__ == "__main__":
    main()
