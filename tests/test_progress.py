"""Streaming progress: per-layer callbacks of `qlane.verify` / `qlane.estimate` arrive in order,
each before the next layer runs, and the command line prints rows as they come, with progress
bars on stderr only when it is a terminal and not --quiet."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

import qlane
import qlane.cli
from peers import spec, write_tflite
from qlane.cli import main
from qlane.codegen.machine.base import Machine
from qlane.codegen.verify import HostBuild
from qlane.sim import Graph, Operator, QuantParams

LAYERS = 3


def _chain() -> Graph:
    """Three ADDs in a row, each on the previous output: a small multi-layer model."""
    tensors = [spec([1, 4, 4, 3], np.int8, QuantParams(np.float32(0.05 * (k + 1)), k - 2),
                    name=f"t{k}") for k in range(LAYERS + 2)]
    for k, t in enumerate(tensors):
        t.index = k
    ops = [Operator(0, "ADD", (0, 1), (2,), {"activation": "NONE"})]
    ops += [Operator(k, "ADD", (k + 1, 1), (k + 2,), {"activation": "NONE"})
            for k in range(1, LAYERS)]
    return Graph(tensors, ops, [0, 1], [LAYERS + 1], name="chain")


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("progress") / "chain.tflite"
    path.write_bytes(write_tflite(_chain()))
    return path


def _record_runs(monkeypatch: pytest.MonkeyPatch, cls: type, events: list[Any],
                 extra: Callable[[], Any] = lambda: None) -> None:
    """Log ("run", layer index, extra()) whenever ``cls.run_layer`` runs a layer."""
    original = cls.run_layer

    def run_layer(self: Any, index: int, *args: Any, **kwargs: Any) -> Any:
        events.append(("run", index, extra()))
        return original(self, index, *args, **kwargs)

    monkeypatch.setattr(cls, "run_layer", run_layer)


def _check_streamed(events: list[Any], rows: str = "row") -> list[int]:
    """Every layer's runs precede its row, and its row precedes the next layer's first run."""
    order = [(kind, ev[1]) for ev in events if (kind := ev[0]) in ("run", rows)]
    layers = []
    for kind, index in order:
        if kind == rows:
            layers.append(index)
        else:
            assert index == len(layers), f"layer {index} ran before row {len(layers)}: {order}"
    return layers


# --- the library ---------------------------------------------------------------------------------

def test_verify_rows_arrive_before_the_next_layer_runs(model: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[Any] = []
    _record_runs(monkeypatch, HostBuild, events)
    steps: list[tuple[str, int, int]] = []
    result = qlane.verify(model, "generic", samples=3,
                          on_layer=lambda tier, r: events.append(("row", r.index, tier)),
                          on_tier=lambda tier, rep: events.append(("tier", tier, rep)),
                          progress=lambda *a: steps.append(a))
    assert result.bit_exact
    assert _check_streamed(events) == list(range(LAYERS))
    assert events[-1] == ("tier", qlane.HOST_TIER, result.host)
    assert sum(ev[0] == "run" for ev in events) == 3 * LAYERS  # every layer on every sample
    compare = [s for s in steps if s[0] == f"{qlane.HOST_TIER}: compare"]
    assert [d for _, d, _ in compare] == list(range(3 * (LAYERS + 1) + 1))


@pytest.mark.isa
def test_verify_host_table_is_complete_before_the_isa_tier_starts(
        model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("unicorn")
    pytest.importorskip("ziglang")
    import qlane.codegen.emulate as emulate

    events: list[Any] = []
    build_elf = emulate.build_elf

    def logged_build(*args: Any, **kwargs: Any) -> Any:
        events.append(("cross build",))
        return build_elf(*args, **kwargs)

    monkeypatch.setattr(emulate, "build_elf", logged_build)
    _record_runs(monkeypatch, Machine, events)
    isa_tier = "emulated cortex-m4"
    result = qlane.verify(model, "cortex-m4", samples=2, isa=True,
                          on_layer=lambda tier, r: events.append(("row", r.index, tier, r)),
                          on_tier=lambda tier, rep: events.append(("tier", tier)))
    assert result.bit_exact and result.isa is not None
    kinds = [ev[0] if ev[0] != "tier" else ev for ev in events]
    assert kinds.index(("tier", qlane.HOST_TIER)) < kinds.index("cross build")
    isa_events = events[kinds.index("cross build"):]
    assert _check_streamed(isa_events) == list(range(LAYERS))
    assert isa_events[-1] == ("tier", isa_tier)
    rows = [ev[3] for ev in isa_events if ev[0] == "row"]
    assert all(ev[2] == isa_tier for ev in isa_events if ev[0] == "row")
    assert [r.instructions for r in rows] == [result.isa.counts[r.index]["instructions"]
                                              for r in rows]
    assert all("instructions" not in la for la in result.to_json()["isa"]["layers"])


@pytest.mark.isa
def test_estimate_emulated_rows_arrive_before_the_next_layer_runs(
        model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("unicorn")
    pytest.importorskip("ziglang")
    events: list[Any] = []
    _record_runs(monkeypatch, Machine, events)
    steps: list[tuple[str, int, int]] = []
    est = qlane.estimate(model, "cortex-m4", on_layer=lambda la: events.append(("row", la.index)),
                         progress=lambda *a: steps.append(a))
    # each layer runs twice (counted, then to find flash loads), both before its row
    assert _check_streamed(events) == list(range(LAYERS))
    assert steps[:2] == [("compile", 0, 1), ("compile", 1, 1)]
    assert steps[2:] == [("emulate", k, LAYERS) for k in range(LAYERS + 1)]
    assert [la.index for la in est.layers] == list(range(LAYERS))


def test_estimate_static_rows_are_the_estimate_layers(model: Path) -> None:
    seen: list[Any] = []
    est = qlane.estimate(model, "cortex-m7", mode="static", on_layer=seen.append)
    assert seen == est.layers and [la.index for la in seen] == list(range(LAYERS))


# --- the command line ----------------------------------------------------------------------------

def test_cli_prints_each_row_before_the_next_layer_runs(
        model: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    printed: list[str] = []

    def stdout_so_far() -> str:
        printed.append(capsys.readouterr().out)
        return "".join(printed)

    events: list[Any] = []
    _record_runs(monkeypatch, HostBuild, events, stdout_so_far)
    main.main(["verify", str(model), "--target", "generic", "--samples", "1"],
              standalone_mode=False)
    out = stdout_so_far()
    assert [ev[1] for ev in events] == list(range(LAYERS))
    for _, index, seen in events:
        rows = [ln.split()[0] for ln in seen.splitlines() if ln.split()[:1] in
                [[str(k)] for k in range(LAYERS)]]
        assert rows == [str(k) for k in range(index)], seen
    assert out.splitlines()[0] == ("verify chain on generic (double rounding), 1 samples, "
                                   "host build")
    assert "identical  chain_l002_" in out and out.rstrip().endswith("BIT-EXACT")


@pytest.fixture
def tty(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the command line believe stderr is a terminal."""
    monkeypatch.setattr(qlane.cli, "_stderr_is_tty", lambda: True)


def _invoke(*args: Any) -> Any:
    res = CliRunner().invoke(main, [str(a) for a in args])
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exc_info
    assert res.exit_code == 0, res.output
    return res


def test_cli_json_stays_clean_with_bars(model: Path, tty: None) -> None:
    res = _invoke("verify", model, "--target", "generic", "--samples", 2, "--json")
    assert json.loads(res.stdout)["bit_exact"] is True
    assert "host build: compile" in res.stderr and "host build: compare" in res.stderr
    assert "BIT-EXACT" not in res.stdout and "%|" not in res.stdout


@pytest.mark.isa
def test_cli_estimate_json_stays_clean_with_bars(model: Path, tty: None) -> None:
    pytest.importorskip("unicorn")
    pytest.importorskip("ziglang")
    res = _invoke("estimate", model, "--target", "cortex-m4", "--json")
    assert len(json.loads(res.stdout)["layers"]) == LAYERS
    assert "compile" in res.stderr and "emulate" in res.stderr


def test_cli_quiet_silences_the_bars(model: Path, tty: None) -> None:
    res = _invoke("verify", model, "--target", "generic", "--samples", 2, "--quiet")
    assert res.stderr == "" and "BIT-EXACT" in res.stdout
    res = _invoke("estimate", model, "--target", "cortex-m7", "--mode", "static", "-q")
    assert res.stderr == "" and "total:" in res.stdout


def test_cli_no_bars_when_stderr_is_not_a_terminal(model: Path) -> None:
    assert not qlane.cli._stderr_is_tty()  # CliRunner's stderr is a buffer
    res = _invoke("verify", model, "--target", "generic", "--samples", 2)
    assert res.stderr == "" and "BIT-EXACT" in res.stdout
    res = _invoke("estimate", model, "--target", "cortex-m7", "--mode", "static")
    assert res.stderr == ""
    lines = res.stdout.splitlines()
    assert [ln.split()[0] for ln in lines[3:3 + LAYERS]] == [str(k) for k in range(LAYERS)]
