"""Bounded fuzz: mutated zoo models load (then prepare or raise ModelError) or raise ModelError.

The mutations and the per-case time bound come from ``bench/fuzz_importer.py``, which runs the
same check for as many cases as asked.
"""

from __future__ import annotations

import importlib.util
import struct
import sys
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parent.parent / "bench" / "fuzz_importer.py"
_SPEC = importlib.util.spec_from_file_location("fuzz_importer", _PATH)
fuzz = importlib.util.module_from_spec(_SPEC)
sys.modules["fuzz_importer"] = fuzz
_SPEC.loader.exec_module(fuzz)

SEED = 20240611
CASES = 300
TIME_BOUND = 10.0
# Small models keep the run short; MobileNet is covered by the word sweep and the bench script.
MODELS = fuzz.corpus(max_bytes=64 << 10)


@pytest.mark.parametrize("index", range(CASES), ids=[f"case{i:03d}" for i in range(CASES)])
def test_mutated_model_loads_or_raises_model_error(index: int) -> None:
    outcome = fuzz.case(MODELS, SEED, index, TIME_BOUND)
    assert outcome.kind in fuzz.OK_OUTCOMES, f"{outcome.mutation}: {outcome.detail}"


@pytest.mark.parametrize("name", ["i8_conv_7x9x3_k3s2_same_relu6", "u8_fc_3x13_to5"])
def test_every_word_set_to_extreme_values(name: str) -> None:
    """Each aligned 32-bit word in turn replaced by values that make huge offsets or lengths."""
    data = (fuzz.ZOO / f"{name}.tflite").read_bytes()
    failures, outcomes = [], set()
    for pos in range(0, len(data) - 3, 4):
        for value in (0x7FFFFFFF, 0xFFFFFFFF, 0x80000000, 0x00010000):
            mutated = bytearray(data)
            struct.pack_into("<I", mutated, pos, value)
            outcome = fuzz.check(bytes(mutated), f"word@{pos}={value:#x}", TIME_BOUND)
            outcomes.add(outcome.kind)
            if outcome.kind not in fuzz.OK_OUTCOMES:
                failures.append(f"{outcome.mutation}: {outcome.kind}: {outcome.detail}")
    assert not failures, f"{len(failures)} failures; first: {failures[0]}"
    assert {"prepared", "rejected_at_load"} <= outcomes


def test_outcomes_cover_all_paths() -> None:
    """The mutations reach the loader's rejections, preparation errors and clean loads."""
    kinds = {fuzz.case(MODELS, SEED, i, TIME_BOUND).kind for i in range(CASES)}
    assert kinds == set(fuzz.OK_OUTCOMES)
