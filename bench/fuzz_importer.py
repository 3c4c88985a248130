"""Fuzz load_tflite and Interpreter preparation with mutated zoo models.

Every mutated file must either load (and then prepare, or raise ModelError) or raise ModelError;
any other exception, or a case over the time bound, is a failure. Usage::

    python bench/fuzz_importer.py --count 10000 --seed 1

Prints the counts per outcome and exits non-zero on any failure.
"""

from __future__ import annotations

import argparse
import resource
import signal
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qlane.sim import Graph, Interpreter, ModelError, QuantParams, Tensor, load_tflite
from qlane.sim.importer import DOCUMENTED_OPS
from qlane.sim.writer import write_tflite

ZOO = Path(__file__).resolve().parent.parent / "tests" / "zoo"
_INTERESTING = (0, 1, 2, 3, 4, 8, 0x7F, 0x80, 0xFF, 0x100, 0xFFFF, 0x10000, 0x7FFFFFFF,
                0x80000000, 0xFFFFFFFE, 0xFFFFFFFF)

OK_OUTCOMES = ("prepared", "rejected_at_load", "rejected_at_prepare")


class CaseTimeout(Exception):
    """A case ran past its time bound."""


@dataclass
class Outcome:
    kind: str  # one of OK_OUTCOMES, "other" or "timeout"
    mutation: str
    seconds: float
    detail: str = ""


def corpus(max_bytes: int | None = None) -> list[bytes]:
    """The zoo models, smallest first; ``max_bytes`` drops larger ones."""
    files = sorted(ZOO.glob("*.tflite"), key=lambda p: (p.stat().st_size, p.name))
    return [p.read_bytes() for p in files if max_bytes is None or p.stat().st_size <= max_bytes]


def _flip_bytes(data: bytearray, rng: np.random.Generator) -> None:
    for _ in range(int(rng.integers(1, 9))):
        data[int(rng.integers(len(data)))] ^= int(rng.integers(1, 256))


def _set_word(data: bytearray, rng: np.random.Generator) -> None:
    for _ in range(int(rng.integers(1, 4))):
        pos = int(rng.integers(0, max(len(data) - 4, 1))) & ~3
        value = (int(rng.choice(_INTERESTING)) if rng.random() < 0.7
                 else int(rng.integers(0, 1 << 32)))
        data[pos:pos + 4] = value.to_bytes(4, "little")


def _truncate(data: bytearray, rng: np.random.Generator) -> None:
    del data[int(rng.integers(0, len(data))):]


def _delete_or_duplicate(data: bytearray, rng: np.random.Generator) -> None:
    start = int(rng.integers(0, len(data)))
    length = int(rng.integers(1, 65))
    if rng.random() < 0.5:
        del data[start:start + length]
    else:
        data[start:start] = data[start:start + length]


def _random_bytes(data: bytearray, rng: np.random.Generator) -> None:
    size = int(rng.integers(0, 2048))
    data[:] = rng.bytes(size)
    if size >= 8 and rng.random() < 0.7:
        data[4:8] = b"TFL3"
        data[0:4] = int(rng.integers(0, size)).to_bytes(4, "little")


MUTATIONS: dict[str, Callable[[bytearray, np.random.Generator], None]] = {
    "flip": _flip_bytes,
    "word": _set_word,
    "truncate": _truncate,
    "chunk": _delete_or_duplicate,
    "random": _random_bytes,
}


def _mutate_graph(graph: Graph, rng: np.random.Generator) -> str:
    """Change one property of a well-formed graph in place; returns what changed."""
    pick = int(rng.integers(len(graph.tensors)))
    t = graph.tensors[pick]
    what = str(rng.choice(["shape", "scale", "zero_point", "dtype", "option", "opcode", "wire",
                           "data", "axis"]))
    if what == "shape" and t.shape:
        dims = list(t.shape)
        dims[int(rng.integers(len(dims)))] = int(rng.choice([0, 1, 2, 3, 7, 1 << 20,
                                                              dims[0] + 1]))
        data = t.data
        if data is not None and rng.random() < 0.5:  # keep the buffer consistent
            data = np.resize(data, dims)
        graph.tensors[pick] = Tensor(t.index, t.name, tuple(dims), t.dtype, t.quant, data)
    elif what in ("scale", "zero_point", "axis") and t.quant is not None:
        scale, zp, axis = t.quant.scale.copy(), t.quant.zero_point.copy(), t.quant.axis
        k = int(rng.integers(scale.size))
        if what == "scale":
            scale[k] = rng.choice([1e-19, 1e19, 1e-9, 1e-6, 100.0, 3.0e4])
        elif what == "zero_point":
            zp[k] = rng.choice([-(1 << 31), (1 << 31) - 1, -129, 256, 300, -128, 255])
        else:
            axis = int(rng.integers(-1, 5))
        graph.tensors[pick] = Tensor(t.index, t.name, t.shape, t.dtype,
                                     QuantParams(scale, zp, axis), t.data)
    elif what == "dtype":
        dtype = np.dtype(rng.choice(["uint8", "int8", "int16", "int32", "float32", "int64"]))
        data = None if t.data is None else np.resize(t.data.astype(dtype), t.shape)
        graph.tensors[pick] = Tensor(t.index, t.name, t.shape, dtype, t.quant, data)
    elif what == "data" and t.data is not None:
        info = np.iinfo(t.dtype) if t.dtype.kind in "iu" else np.finfo(t.dtype)
        value = info.min if rng.random() < 0.5 else info.max
        graph.tensors[pick] = Tensor(t.index, t.name, t.shape, t.dtype, t.quant,
                                     np.full(t.shape, value, t.dtype))
    elif graph.operators:
        op = graph.operators[int(rng.integers(len(graph.operators)))]
        if what == "opcode":
            op.opcode = str(rng.choice(sorted(DOCUMENTED_OPS)))
        elif what == "wire" and op.inputs:
            ins = list(op.inputs)
            ins[int(rng.integers(len(ins)))] = int(rng.integers(-1, len(graph.tensors)))
            op.inputs = tuple(ins)
        elif op.options:
            key = str(rng.choice(sorted(op.options)))
            value = op.options[key]
            if isinstance(value, bool) or value is None:
                op.options[key] = not value
            elif isinstance(value, int):
                op.options[key] = int(rng.choice([1, 2, 3, 5, 100, -1, -4]))
            elif isinstance(value, float):
                op.options[key] = float(rng.choice([1e-3, 0.5, 2.0, 1e6]))
            elif key == "padding":
                op.options[key] = "VALID" if value == "SAME" else "SAME"
            elif key == "activation":
                op.options[key] = str(rng.choice(["NONE", "RELU", "RELU6", "RELU_N1_TO_1",
                                                  "TANH", "SIGN_BIT"]))
            elif isinstance(value, tuple):
                op.options[key] = tuple(int(v) for v in rng.integers(-2, 10, len(value) + 1))
    return f"graph-{what}"


def mutate(models: list[bytes], rng: np.random.Generator) -> tuple[bytes, str]:
    """One mutated model and the name of the mutation."""
    base = models[int(rng.integers(len(models)))]
    data = bytearray(base)
    roll = rng.random()
    if roll < 0.1:
        other = models[int(rng.integers(len(models)))]
        cut_a, cut_b = int(rng.integers(len(data))), int(rng.integers(len(other)))
        data[cut_a:] = other[cut_b:]
        return bytes(data), "splice"
    if roll < 0.35:
        graph = load_tflite(base)
        name = _mutate_graph(graph, rng)
        return write_tflite(graph), name
    name = str(rng.choice(list(MUTATIONS)))
    MUTATIONS[name](data, rng)
    return bytes(data), name


def _alarm(signum: int, frame: object) -> None:
    raise CaseTimeout()


def check(data: bytes, mutation: str, time_bound: float) -> Outcome:
    """Load and prepare one file under a time bound; classify what happened."""
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, time_bound)
    start = time.perf_counter()
    stage = "load"
    try:
        graph = load_tflite(data)
        stage = "prepare"
        Interpreter(graph)
        kind, detail = "prepared", ""
    except ModelError as e:
        kind, detail = f"rejected_at_{stage}", str(e)
    except CaseTimeout:
        kind, detail = "timeout", f"over {time_bound} s in {stage}"
    except Exception as e:  # anything else is the failure being looked for
        kind = "other"
        detail = f"{stage}: {type(e).__name__}: {e}\n{traceback.format_exc(limit=-4)}"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    return Outcome(kind, mutation, time.perf_counter() - start, detail)


def case(models: list[bytes], seed: int, index: int, time_bound: float = 10.0) -> Outcome:
    """Fuzz case ``index`` of run ``seed``: deterministic, independent of the other cases."""
    rng = np.random.default_rng([seed, index])
    data, mutation = mutate(models, rng)
    return check(data, mutation, time_bound)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--time-bound", type=float, default=10.0, help="seconds per case")
    parser.add_argument("--memory-gib", type=float, default=4.0,
                        help="address-space limit, so that a blow-up fails fast")
    args = parser.parse_args(argv)
    limit = int(args.memory_gib * (1 << 30))
    resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))

    models = corpus()
    counts: Counter[str] = Counter()
    by_mutation: Counter[tuple[str, str]] = Counter()
    failures: list[tuple[int, Outcome]] = []
    slowest = (0.0, -1)
    start = time.perf_counter()
    for i in range(args.count):
        outcome = case(models, args.seed, i, args.time_bound)
        counts[outcome.kind] += 1
        by_mutation[(outcome.mutation, outcome.kind)] += 1
        slowest = max(slowest, (outcome.seconds, i))
        if outcome.kind not in OK_OUTCOMES:
            failures.append((i, outcome))
            print(f"case {i} ({outcome.mutation}): {outcome.kind}: {outcome.detail}",
                  file=sys.stderr)
    elapsed = time.perf_counter() - start

    loaded = counts["prepared"] + counts["rejected_at_prepare"]
    print(f"{args.count} cases, seed {args.seed}, {elapsed:.1f} s "
          f"(slowest case {slowest[1]}: {slowest[0] * 1000:.0f} ms)")
    print(f"loaded {loaded} (prepared {counts['prepared']}, rejected at prepare "
          f"{counts['rejected_at_prepare']}), rejected at load {counts['rejected_at_load']}, "
          f"other {counts['other']}, timeout {counts['timeout']}")
    for mutation in sorted({m for m, _ in by_mutation}):
        row = ", ".join(f"{k} {by_mutation[(mutation, k)]}" for k in (*OK_OUTCOMES, "other",
                                                                      "timeout")
                        if by_mutation[(mutation, k)])
        print(f"  {mutation}: {row}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
