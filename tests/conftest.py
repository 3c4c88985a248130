"""Shared fixtures: the converter-made model zoo copied from ../shared/zoo."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

ZOO = Path(__file__).parent / "zoo"
ZOO_MODELS = sorted(p.stem for p in ZOO.glob("*.tflite"))


@pytest.fixture(scope="session")
def zoo() -> Path:
    return ZOO


def zoo_inputs(name: str) -> list[np.ndarray]:
    """``in0``, ``in1``, ... of a zoo model, each ``[N, *input_shape]``."""
    d = np.load(ZOO / f"{name}.npz")
    keys = sorted((k for k in d.files if k.startswith("in")), key=lambda k: int(k[2:]))
    return [d[k] for k in keys]


def zoo_reference(name: str) -> list[np.ndarray]:
    """The classic TFLite reference outputs (``NAME.tfl214.npz``) of a zoo model."""
    d = np.load(ZOO / f"{name}.tfl214.npz")
    return [d[f"out{k}"] for k in range(len(d.files))]
