"""The requantization plan: every exact form equals the classic primitive where it applies."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from qlane.codegen.cprims import C_FUNCTIONS
from qlane.codegen.isa import ISAS
from qlane.sim.fixedpoint import (
    mul_by_quantized_multiplier,
    mul_by_quantized_multiplier_double_ties_up,
    quantize_multiplier,
)
from qlane.sim.requant import FORMS, RequantPlan

ROOT = Path(__file__).resolve().parents[1]
ROUNDINGS = ("double", "single")


def _cases(rounding: str, seed: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Multipliers and shifts of real scales 1e-9..40 (left shifts included), and sums."""
    rng = np.random.default_rng(seed)
    real = np.concatenate([np.exp(rng.uniform(np.log(1e-9), np.log(40.0), 300)), [0.0, 0.5]])
    m, s = quantize_multiplier(real, rounding)
    a = np.concatenate([rng.integers(-(2**31), 2**31, 2000), rng.integers(-(2**12), 2**12, 500),
                        [-(2**31), 2**31 - 1, -(2**30), 2**30 - 1, 0, -1, 1]])
    return m, s, a


@pytest.mark.parametrize("rounding", ROUNDINGS)
def test_every_form_equals_the_reference(rounding: str) -> None:
    m, s, a = _cases(rounding)
    used = {"folded": 0, "fused": 0, "high_mul": 0}
    for mi, si in zip(m, s):
        for bound in (2**31 - 1, 2**30 - 1, 2**12):
            x = a[np.abs(a) <= bound]
            plan = RequantPlan(mi, si, 0, -128, 127, rounding, bound=bound)
            want = mul_by_quantized_multiplier(x, mi, si, rounding)
            np.testing.assert_array_equal(plan.reference(x), want)
            folded = plan.folded()
            if folded is not None:
                if rounding == "double" and int(si) > 0:  # while a * 2^shift cannot wrap
                    assert bound << int(si) <= 2**31 - 1
                used["folded"] += 1
                # single rounding saturates results outside int32 (the clamp to 8 bits follows)
                got = np.clip(folded.apply(x), -(2**31), 2**31 - 1)
                np.testing.assert_array_equal(got, want, err_msg=f"{mi} {si}")
            fused = plan.fused()
            if fused is not None:
                used["fused"] += 1
                assert np.all(fused.d >= 32)
                np.testing.assert_array_equal(fused.apply(x), want, err_msg=f"{mi} {si}")
            high = plan.high_mul()
            if high is not None:
                used["high_mul"] += 1
                np.testing.assert_array_equal(high.apply(x), want, err_msg=f"{mi} {si}")
    assert all(n > 50 for n in used.values()), used


def test_ties_up_forms_equal_the_ties_up_primitive_and_agree_after_a_relu_clamp() -> None:
    m, s, a = _cases("double", seed=5)
    for mi, si in zip(m, s):
        if int(si) > 0:
            continue
        relu = RequantPlan(mi, si, -20, -20, 127, "double", bound=2**31 - 1)
        assert relu.ties_up and relu.lanes().mode == "double_up"
        up = mul_by_quantized_multiplier_double_ties_up(a, mi, si)
        np.testing.assert_array_equal(relu.folded().apply(a), up)
        np.testing.assert_array_equal(relu.fused().apply(a) if relu.fused() else up, up)
        # the clamp hides the difference from the classic rounding
        np.testing.assert_array_equal(relu.output(up), relu.output(relu.reference(a)))
    plain = RequantPlan(m[0], s[0], 5, -128, 127, "double")
    assert not plain.ties_up and plain.lanes().mode == "double"
    assert not RequantPlan(m[0], s[0], -20, -20, 127, "single").ties_up


def test_a_tie_that_the_fix_up_changes() -> None:
    """M = 2^30 (0.5), shift -2: a = -4 is -0.5 exactly: away from zero -1, ties-up 0."""
    plan = RequantPlan(1 << 30, -2, 0, -128, 127, "double")
    assert int(plan.reference(np.array([-4]))[0]) == -1
    assert int(plan.folded().apply(np.array([-4]))[0]) == -1
    assert int(plan.folded(ties_up=True).apply(np.array([-4]))[0]) == 0


def test_lanes_modes_and_limits() -> None:
    assert RequantPlan([7, 9], [-3, -1], 0, 0, 255, "single").lanes().mode == "single_neg"
    lanes = RequantPlan([7, 9], [-3, 2], 0, 0, 255, "double").lanes()
    assert lanes.mode == "double_up" and lanes.left.tolist() == [0, 2]
    assert lanes.right.tolist() == [-3, 0] and lanes.needs_left
    assert not RequantPlan(7, -3, 0, -128, 127, "double").lanes().needs_left
    with pytest.raises(ValueError, match="outside"):
        RequantPlan(7, 31, 0, 0, 255, "single").lanes()


def test_every_form_names_a_spelling_that_exists() -> None:
    """FORMS say where the C spells them; those functions, templates and macros exist."""
    functions = {f.name for f in C_FUNCTIONS}
    assert set(FORMS) == {"reference", "ties_up", "folded", "fused", "high_mul", "lanes", "float"}
    for form in FORMS.values():
        assert form.spellings, form.name
        for isa, where in form.spellings.items():
            assert isa in ISAS or isa == "sim", (form.name, isa)
            for fn in re.findall(r"\bqlane_\w+(?!\.h)\b", where):
                assert fn in functions, (form.name, fn)
            for template, macro in re.findall(r"(\w+/\w+\.(?:c\.)?j2) (\w+)", where):
                text = (ROOT / "templates" / template).read_text()
                assert macro in text, (form.name, template, macro)
