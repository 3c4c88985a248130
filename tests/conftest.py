"""Shared fixtures: the converter-made model zoo copied from ../shared/zoo."""

from __future__ import annotations

from pathlib import Path

import pytest

ZOO = Path(__file__).parent / "zoo"
ZOO_MODELS = sorted(p.stem for p in ZOO.glob("*.tflite"))


@pytest.fixture(scope="session")
def zoo() -> Path:
    return ZOO
