"""Shared fixtures (the converter-made model zoo copied from ../shared/zoo) and the test tiers.

Every test gets exactly one tier marker (`TIERS`), from its module, or from a tier marker of its
own where a module mixes tiers (``@pytest.mark.isa``) or from `OVERRIDES`:

- ``fast``: pure Python, no C build (``make test-fast``);
- ``slow``: pure Python, but seconds each (the schedule chooser's searches, lowering every
  chip's kernels, generating in two processes);
- ``hostc``: compiles generated C on the host;
- ``isa``: cross-compiles with zig and runs in the instruction-set emulator;
- ``peers``: runs live LiteRT or TFLite Micro;
- ``deep``: the exhaustive sweeps: every sanitizer build, every schedule on every
  instruction set, the sibling chips of a kernel family (``make test-deep``; CI runs it after
  ``make test``, which leaves it out to stay within 15 minutes on two cores).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

ZOO = Path(__file__).parent / "zoo"
ZOO_MODELS = sorted(p.stem for p in ZOO.glob("*.tflite"))


@pytest.fixture(scope="session")
def zoo() -> Path:
    return ZOO


def deep(*values: Any) -> Any:
    """A parameter set in the ``deep`` tier (its test's other parameter sets stay in theirs)."""
    return pytest.param(*values, marks=pytest.mark.deep)


def deep_for(values: list[str], *chosen: str) -> list[Any]:
    """``values`` as parameters, those in ``chosen`` in the ``deep`` tier."""
    return [deep(v) if v in chosen else v for v in values]


def zoo_inputs(name: str) -> list[np.ndarray]:
    """``in0``, ``in1``, ... of a zoo model, each ``[N, *input_shape]``."""
    d = np.load(ZOO / f"{name}.npz")
    keys = sorted((k for k in d.files if k.startswith("in")), key=lambda k: int(k[2:]))
    return [d[k] for k in keys]


def zoo_reference(name: str) -> list[np.ndarray]:
    """The classic TFLite reference outputs (``NAME.tfl214.npz``) of a zoo model."""
    d = np.load(ZOO / f"{name}.tfl214.npz")
    return [d[f"out{k}"] for k in range(len(d.files))]


TIER_NAMES = ("fast", "slow", "hostc", "isa", "peers", "deep")
TIERS: dict[str, str] = {
    "test_api": "fast",
    "test_cli": "fast",
    "test_codegen_broadcast": "hostc",
    "test_codegen_c_conv": "hostc",
    "test_codegen_c_misc": "hostc",
    "test_codegen_cli": "fast",
    "test_codegen_dsp": "hostc",
    "test_codegen_mve": "hostc",
    "test_codegen_framework": "fast",
    "test_codegen_neon": "hostc",
    "test_codegen_project": "hostc",
    "test_codegen_sanitize": "deep",
    "test_codegen_zoo": "hostc",
    "test_determinism": "slow",
    "test_cprims": "hostc",
    "test_emulate": "isa",
    "test_estimate": "isa",
    "test_fixedpoint": "fast",
    "test_gcc": "isa",
    "test_importer": "fast",
    "test_importer_fuzz": "fast",
    "test_kernel_budget": "isa",
    "test_mlperf_tiny": "fast",
    "test_mve_prims": "hostc",
    "test_ops_activation": "fast",
    "test_ops_conv": "fast",
    "test_ops_misc": "fast",
    "test_peer_activation": "peers",
    "test_peer_conv": "peers",
    "test_peer_misc": "peers",
    "test_progress": "hostc",
    "test_qemu": "isa",
    "test_qemu_machine": "isa",
    "test_patches": "fast",
    "test_schedule": "hostc",
    "test_quant": "fast",
    "test_report": "fast",
    "test_requant": "fast",
    "test_simd": "fast",
    "test_targets": "fast",
    "test_writer": "fast",
    "test_zoo": "fast",
}
"""Tier of each test module: the tier of most of its tests."""
OVERRIDES: dict[str, dict[str, str]] = {
    "test_schedule": {"test_random_chains_patch_by_patch_in_the_simulator": "fast",
                      "test_schedule_text_round_trips_and_bad_text_is_named": "fast",
                      "test_anchored_buffers_share_bytes_and_move_together": "fast",
                      "test_in_place_offset_by_hand": "fast",
                      "test_half_the_bound_within_fifteen_percent_more_cycles": "slow",
                      "test_walking_the_budget_down_costs_more_cycles": "slow",
                      "test_nothing_fits_names_the_smallest_arena": "slow",
                      "test_default_budget_is_the_chips_ram": "slow",
                      "test_manifest_and_estimate_record_the_schedule": "fast",
                      "test_cli_memory_budget_and_schedule": "slow",
                      "test_patch_functions_share_the_layer_constants": "fast"},
    "test_api": {"test_verify_host_tier_agrees_with_cli": "hostc",
                 "test_verify_on_the_instruction_set": "isa", "test_estimate_emulated": "isa"},
    "test_cli": {"test_estimate_and_verify_tables_fit_long_names_and_two_input_adds": "hostc"},
    "test_codegen_broadcast": {"test_patterns_cover_every_axis_and_rank": "fast",
                               "test_broadcast_instruction_set": "isa"},
    "test_codegen_c_conv": {"test_weight_packing_and_interior_ranges": "fast"},
    "test_codegen_c_misc": {"test_kernel_choices_and_constants": "fast",
                            "test_merge_helpers": "fast",
                            "test_softmax_table_model_equals_simulator": "fast"},
    "test_codegen_cli": {"test_verify_cli_table_and_json": "hostc",
                         "test_hostile_names_never_reach_c_as_code": "hostc",
                         "test_generated_makefile_builds_and_runs_the_example": "hostc",
                         "test_generate_keeps_the_given_name": "hostc",
                         "test_generated_makefile_cross_compiles_with_zig": "isa"},
    "test_codegen_dsp": {"test_kernel_symbols_name_variant_and_tile": "fast",
                         "test_depthwise_bands_take_the_arena_slack_only": "fast",
                         "test_random_layers_bit_exact_on_emulated_cortex_m": "isa",
                         "test_relu_outputs_drop_the_tie_fixup_and_stay_exact": "isa",
                         "test_instructions_per_mac_on_emulated_cortex_m4": "isa"},
    "test_codegen_framework": {"test_interrupted_host_build_cache_is_rebuilt": "hostc",
                               "test_parallel_verifies_share_a_cache": "hostc"},
    "test_codegen_neon": {"test_pool_reciprocals_are_exact": "fast",
                          "test_symbols_name_variant_and_tile": "fast",
                          "test_unsupported_layers_say_why": "fast",
                          "test_zoo_fallbacks_are_explicit": "fast",
                          "test_emulated_cortex_a72": "deep",
                          "test_relu_outputs_drop_the_tie_fixup_and_stay_exact": "isa"},
    "test_codegen_project": {"test_placement_first_fit_and_overflow": "fast",
                             "test_board_example_with_zig_runs_on_the_core": "isa",
                             "test_board_example_with_arm_gcc_runs_and_its_map_matches_the_"
                             "placement": "isa"},
    "test_codegen_zoo": {"test_zoo_on_the_chip_instruction_set": "deep"},
    "test_cprims": {"test_every_primitive_has_a_c_spelling_per_isa": "fast",
                    "test_header_text": "fast", "test_neon_header_switches_on_arm_macros": "fast",
                    "test_simde_include_dir": "fast", "test_unknown_isa": "fast"},
    "test_emulate": {"test_generic_target_has_no_cross_build": "fast"},
    "test_estimate": {"test_bad_input_one_line": "fast", "test_block_model": "fast",
                      "test_cli_text_table": "fast", "test_estimate_error_names_the_fix": "fast",
                      "test_fits_by_how_much": "fast", "test_garbage_model_one_line": "fast",
                      "test_peak_floor": "fast", "test_report_png_and_html": "fast",
                      "test_sixteen_macs_per_smlal_pair_reach_the_a53_peak": "fast"},
    "test_kernel_budget": {"test_budget_table_is_well_formed": "fast",
                           "test_measured_with_the_pinned_zig": "fast",
                           "test_cases_have_both_output_stages": "fast",
                           "test_every_chip_gets_the_family_kernels": "slow"},
    "test_progress": {"test_estimate_static_rows_are_the_estimate_layers": "fast",
                      "test_cli_estimate_json_stays_clean_with_bars": "isa"},
    "test_qemu_machine": {"test_missing_tools_are_one_line": "fast",
                          "test_llvm_listing_facts": "fast"},
    "test_writer": {"test_litert_runs_rewritten_mobilenet_identically": "peers",
                    "test_tflm_runs_rewritten_int8_models": "peers"},
}
"""Per module, the tests whose tier differs from the module's (every test of that name; a test
that needs several tiers gets its costliest). Found by running the suite with the host compiler,
zig and the peers disabled: what passes is ``fast``."""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Give every test its tier; a module missing from `TIERS`, an override naming no test of
    its module or a test with two tiers is a usage error."""
    problems: list[str] = []
    for name, tests in OVERRIDES.items():
        module = next((i.module for i in items if i.module.__name__ == name), None)
        if module is not None:
            problems += [f"OVERRIDES[{name!r}] names {t}, which {name} does not define"
                         for t in tests if not hasattr(module, t) or tests[t] not in TIER_NAMES]
    for item in items:
        module = item.module.__name__
        own = [m.name for m in item.iter_markers() if m.name in TIER_NAMES]
        if "deep" in own and len(set(own)) > 1:  # a `deep` parameter set leaves its test's tier
            item.own_markers = [m for m in item.own_markers
                                if m.name not in TIER_NAMES or m.name == "deep"]
            own = ["deep"]
        if not own:
            if module not in TIERS:
                problems.append(f"{module}: give the module a tier in TIERS in tests/conftest.py")
                continue
            name = getattr(item, "originalname", item.name)
            tier = OVERRIDES.get(module, {}).get(name, TIERS[module])
            item.add_marker(tier)
        elif len(set(own)) > 1:
            problems.append(f"{item.nodeid}: one tier only, not {', '.join(sorted(set(own)))}")
    if problems:
        raise pytest.UsageError("test tiers:\n" + "\n".join(sorted(set(problems))))


def merged_zoo(names: list[str], name: str) -> tuple[Any, list[np.ndarray]]:
    """Zoo models merged into one graph (independent subgraphs) and their inputs, in order."""
    from peers import merge_graphs
    from qlane.sim import load_tflite

    graph, _ = merge_graphs([load_tflite(ZOO / f"{n}.tflite") for n in names], name=name)
    return graph, [x for n in names for x in zoo_inputs(n)]
