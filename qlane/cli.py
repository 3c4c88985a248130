"""The ``qlane`` command line: parses options, calls `qlane.api`, prints the results."""

from __future__ import annotations

import contextlib
import json
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import click
from tqdm import tqdm

import qlane
from qlane import api
from qlane.codegen.isa import ISAS
from qlane.errors import QlaneError
from qlane.sim import ROUNDINGS, Interpreter

QUIET_HELP = "No progress bars (shown on stderr only when it is a terminal)."


class UserError(click.ClickException):
    """A one-line error for the user; exit code 1."""


@contextlib.contextmanager
def _errors() -> Iterator[None]:
    """Report qlane's typed errors as one-line user errors."""
    try:
        yield
    except QlaneError as e:
        raise UserError(str(e).splitlines()[0] if str(e) else type(e).__name__) from None


def _shapes(shapes: Any) -> str:
    return " ".join("x".join(map(str, s)) or "scalar" for s in shapes)


def _table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Header, rule and rows, each column as wide as its widest cell.

    A title starting with ``>`` right-aligns its column (the ``>`` is not printed).
    """
    titles = [c.removeprefix(">") for c in columns]
    widths = [max(len(str(cell)) for cell in col) for col in zip(titles, *rows)]
    aligns = [">" if c.startswith(">") else "<" for c in columns]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(f"{cell:{a}{w}}" for cell, a, w in zip(cells, aligns, widths)).rstrip()

    head = line(titles)
    return [head, "-" * len(head), *(line(r) for r in rows)]


def _print_table(info: api.ModelInfo) -> None:
    click.echo(f"model {info.model}  scheme {info.scheme}")
    for kind, tensors in (("input", info.inputs), ("output", info.outputs)):
        for t in tensors:
            q = "" if t.scale is None else f"  scale {t.scale[0]:.6g} zp {t.zero_point[0]}"
            click.echo(f"  {kind:6s} {t.name!r} {list(t.shape)} {t.dtype}{q}")
    rows = []
    for r in info.layers:
        rows.append([
            str(r.index), r.op, _shapes(t.shape for t in r.inputs),
            _shapes(t.shape for t in r.outputs), r.outputs[0].dtype if r.outputs else "-",
            " ".join(t.quant for t in r.inputs) or "-", r.outputs[0].quant if r.outputs else "-",
            r.weights, f"{r.macs:,}", f"{r.params:,}", "" if r.supported else "(unsupported)"])
    lines = _table([">#", "op", "input", "output", "dtype", "in scale/zp", "out scale/zp",
                    "weight scale/zp", ">MACs", ">params", ""], rows)
    click.echo("\n".join(lines))
    t = info.total
    click.echo(lines[1])
    click.echo(f"total: {t.layers} layers, {t.macs:,} MACs, {t.params:,} parameters "
               f"({t.param_bytes:,} bytes)")
    refused = [r for r in info.layers if not r.supported]
    if refused:
        more = f" (and {len(refused) - 1} more layers)" if len(refused) > 1 else ""
        click.echo(f"unsupported: {refused[0].reason}{more}; simulate, generate, verify and "
                   "estimate refuse this model")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="qlane")
def main() -> None:
    """Simulate 8-bit quantized .tflite networks bit-exactly, for DSPs and microcontrollers."""


@main.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def inspect(model: str, as_json: bool) -> None:
    """Per-layer op, shapes, dtypes, scales/zero points, MACs and parameters of MODEL."""
    with _errors():
        info = api.inspect(model)
    if as_json:
        click.echo(json.dumps(info.to_json(), indent=1))
    else:
        _print_table(info)


@main.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--inputs", "inputs_path", type=click.Path(dir_okay=False),
              help="NPZ with in0, in1, ... of shape [N, *input_shape]. Default: random.")
@click.option("--output", "output_path", required=True, help="NPZ to write out0, out1, ...")
@click.option("--rounding", type=click.Choice(ROUNDINGS), default="double", show_default=True,
              help="double: classic TFLite/TFLM; single: TFLITE_SINGLE_ROUNDING (CMSIS-NN); "
                   "litert: LiteRT's float-requantized FULLY_CONNECTED.")
@click.option("--tensors", "tensors_path", help="Also write every tensor as t{index} to this NPZ.")
@click.option("--samples", default=4, show_default=True, type=click.IntRange(1, 1_000_000),
              help="Number of random samples when --inputs is not given.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of random inputs.")
def simulate(model: str, inputs_path: str | None, output_path: str, rounding: str,
             tensors_path: str | None, samples: int, seed: int) -> None:
    """Run MODEL bit-exactly on every sample and write the outputs."""
    with _errors():
        graph = api.load_model(model)
        out = api.check_output(output_path, (model, inputs_path))
        tens = (api.check_output(tensors_path, (model, inputs_path, output_path))
                if tensors_path else None)
        if tens is not None and tens.resolve() == out.resolve():
            raise UserError("--tensors and --output must be different files")
        inputs = (api.read_inputs(inputs_path, graph) if inputs_path
                  else api.random_inputs(graph, samples, seed))
        interp = Interpreter(graph, rounding)
        start = time.perf_counter()
        result = interp.run(inputs, keep=tens is not None)
        seconds = time.perf_counter() - start
    n = inputs[0].shape[0]
    api.save_npz(out, {f"out{k}": y for k, y in enumerate(result.outputs)})
    source = inputs_path or f"{n} random samples (seed {seed})"
    click.echo(f"simulated {graph.name} ({rounding} rounding) on {source}: "
               f"{seconds * 1e3:.1f} ms, {seconds * 1e3 / n:.2f} ms/sample")
    for k, y in enumerate(result.outputs):
        line = f"  out{k} {list(y.shape)} {y.dtype.name} range [{y.min()}, {y.max()}]"
        flat = y.reshape(n, -1)
        if flat.shape[1] > 1:
            line += f"  argmax per sample {flat.argmax(axis=1).tolist()[:8]}"
        click.echo(line)
    sums = [f"0x{api.output_checksum([y[s] for y in result.outputs]):08x}"
            for s in range(min(n, 8))]
    click.echo(f"  checksum per sample (FNV-1a of every output byte, as the generated examples "
               f"print it): {' '.join(sums)}{' ...' if n > 8 else ''}")
    click.echo(f"wrote {out}")
    if tens is not None:
        api.save_npz(tens, {f"t{i}": v for i, v in sorted(result.tensors.items())})
        click.echo(f"wrote {tens} ({len(result.tensors)} tensors)")


@main.command()
def targets() -> None:
    """List the chips qlane generates code for, with the other names each answers to."""
    rows = [(t, ", ".join(t.aliases) or "-") for t in api.targets()]
    width = max(len("aliases"), *(len(a) for _, a in rows))
    click.echo(f"{'target':<12} {'aliases':<{width}} {'kernels':<10} {'clock':>9} {'SRAM':>9} "
               f"{'flash':>9}  chip")
    for t, aliases in rows:
        clock = f"{t.clock_hz / 1e6:.0f} MHz" if t.clock_hz else "-"
        sram = f"{t.sram_bytes // 1024} KB" if t.sram_bytes else "-"
        flash = f"{t.flash_bytes // 1024} KB" if t.flash_bytes else "-"
        click.echo(f"{t.name:<12} {aliases:<{width}} {'+'.join(t.isa):<10} {clock:>9} "
                   f"{sram:>9} {flash:>9}  {t.description}")


def _schedule_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """--memory-budget and --schedule."""
    fn = click.option(
        "--schedule", default=None, metavar="SPEC",
        help="Run these layers as patch stages instead of choosing: FIRST-LAST:ROWSxCOLS, "
             "comma-separated (e.g. 0-3:4x1,4-7:2x3), or 'layers' for layer by layer.")(fn)
    return click.option(
        "--memory-budget", type=click.IntRange(min=0), default=None, metavar="BYTES",
        help="Arena bytes to fit: the fastest schedule that fits is chosen (patch stages when "
             "layer by layer does not fit). Default: the chip's RAM less what the board "
             "example reserves.")(fn)


@main.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--target", "target_name", required=True, help="Chip, see `qlane targets`.")
@click.option("-o", "--output", "outdir", required=True, type=click.Path(file_okay=False),
              help="Directory for the generated project.")
@click.option("--name", help="C prefix of the generated API and files, kept exactly (a C "
              "identifier; default: derived from the model file).")
@click.option("--rounding", type=click.Choice(ROUNDINGS), default="double", show_default=True)
@click.option("--inputs", "inputs_path", type=click.Path(dir_okay=False),
              help="NPZ whose first sample the examples run (with the simulator's checksum).")
@_schedule_options
def generate(model: str, target_name: str, outdir: str, name: str | None, rounding: str,
             inputs_path: str | None, memory_budget: int | None, schedule: str | None) -> None:
    """Generate C99 sources for MODEL on a target chip."""
    with _errors():
        graph = api.load_model(model)
        target = api.load_target(target_name)
        project = api.generate(graph, target, name=name, rounding=rounding, out=outdir,
                               sample=inputs_path, memory_budget=memory_budget,
                               schedule=schedule)
    m = project.manifest
    isas: dict[str, int] = {}
    for layer in m["layers"]:
        isas[layer["isa"]] = isas.get(layer["isa"], 0) + 1
    click.echo(f"generated {m['entry']} for {target.name} ({rounding} rounding) in {outdir}: "
               f"{len(m['layers'])} layers ({', '.join(f'{n} {k}' for k, n in isas.items())}), "
               f"{len(m['sources'])} sources")
    click.echo(f"arena {m['arena_bytes']:,} bytes (naive {m['arena_naive_bytes']:,}), "
               f"flash {m['flash_bytes']:,} bytes of constants")
    sched = m["schedule"]
    click.echo(f"schedule: {sched['why'] or sched['describe']}")
    for st in sched["stages"]:
        click.echo(f"  layers {st['first']}-{st['last']}: {st['patches']} patches, "
                   f"{st['extra_macs']:,} MACs computed again "
                   f"(+{100 * st['extra_macs'] / max(st['layer_macs'], 1):.1f}%)")
    builds = "make example" + (" | make board | make zig-board" if "board.c" in m["files"]
                               else "")
    click.echo(f"build: {builds} (see {Path(outdir) / 'Makefile'})")
    if project.removed:
        click.echo(f"removed {len(project.removed)} stale files of the previous generation: "
                   f"{', '.join(project.removed)}")


def _stderr_is_tty() -> bool:
    return sys.stderr.isatty()


class _Progress:
    """`api.Progress` as tqdm bars on stderr, one per stage; a no-op unless ``enabled``.

    A stage of one step (a build) shows its elapsed time, refreshed by a ticker thread. Lines
    printed through `echo` clear the bar first, so rows on stdout and the bar never mix.
    """

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.bar: Any = None
        self.stage = ""
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.ticker: threading.Thread | None = None

    def __enter__(self) -> _Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        if self.ticker is not None:
            self.ticker.join()
        with self.lock:
            self._close()

    def __call__(self, stage: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        with self.lock:
            if stage != self.stage or self.bar is None:
                self._close()
                self.stage = stage
                fmt = ("{desc}: {elapsed}" if total <= 1 else
                       "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} "
                       "[{elapsed}<{remaining}]")
                self.bar = tqdm(total=total, desc=stage, file=sys.stderr, leave=False,
                                dynamic_ncols=True, bar_format=fmt)
                if self.ticker is None:
                    self.ticker = threading.Thread(target=self._tick, daemon=True)
                    self.ticker.start()
            self.bar.update(done - self.bar.n)
            if done >= total:
                self._close()

    def echo(self, line: str) -> None:
        """Print ``line`` on stdout without breaking the bar."""
        with self.lock:
            if self.bar is not None:
                self.bar.clear()
            click.echo(line)
            if self.bar is not None:
                self.bar.refresh()

    def _tick(self) -> None:
        while not self.stop.wait(0.5):
            with self.lock:
                if self.bar is not None:
                    self.bar.refresh()

    def _close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _progress(quiet: bool) -> _Progress:
    """Bars on stderr when it is a terminal, unless --quiet."""
    return _Progress(not quiet and _stderr_is_tty())


class _Rows:
    """A `_table` printed one row at a time: columns as wide as the ``widest`` cells expected."""

    def __init__(self, columns: Sequence[str], widest: Sequence[str],
                 echo: Callable[[str], None]) -> None:
        self.columns, self.widest, self.echo = columns, widest, echo
        self.rule = _table(columns, [widest])[1]

    def head(self) -> None:
        for line in _table(self.columns, [self.widest])[:2]:
            self.echo(line)

    def row(self, cells: Sequence[str]) -> None:
        self.echo(_table(self.columns, [self.widest, cells])[3])


def _mismatch_text(m: Any) -> str:
    return f"first: sample {m.sample} index {m.index} got {m.got} expected {m.expected}"


class _VerifyTables:
    """Each tier's per-layer table, printed row by row as `api.verify` compares the layers."""

    def __init__(self, graph: Any, target: str, rounding: str, samples: int,
                 echo: Callable[[str], None]) -> None:
        self.title = f"verify {graph.name} on {target} ({rounding} rounding), {samples} samples"
        self.echo = echo
        self.widest = [str(max(len(graph.operators) - 1, 0)),
                       max((op.opcode for op in graph.operators), key=len, default=""),
                       max(ISAS, key=len), "999,999,999", "identical", ""]
        self.tier = ""
        self.rows: _Rows | None = None

    def _start(self, tier: str) -> _Rows:
        if tier != self.tier or self.rows is None:
            self.tier = tier
            counted = tier != api.HOST_TIER
            columns = [">#", "op", "isa", *([">instructions"] if counted else []), "result",
                       "kernel"]
            widest = self.widest if counted else self.widest[:3] + self.widest[4:]
            self.rows = _Rows(columns, widest, self.echo)
            self.echo(f"{self.title}, {tier}")
            self.rows.head()
        return self.rows

    def layer(self, tier: str, r: Any) -> None:
        """One layer's row (kernel last; a mismatch's details after it)."""
        rows = self._start(tier)
        n = [] if tier == api.HOST_TIER else ["-" if r.instructions is None
                                               else f"{r.instructions:,}"]
        detail = "" if r.bit_exact else f"  {r.differing} differ; {_mismatch_text(r.first)}"
        rows.row([str(r.index), r.op, r.isa, *n, "identical" if r.bit_exact else "MISMATCH",
                  r.kernel + detail])

    def done(self, tier: str, report: Any) -> None:
        """The tier's whole-model line and verdict."""
        self._start(tier)
        whole = "identical" if report.model_bit_exact else \
            f"differs; {_mismatch_text(report.model_first)}"
        self.echo(f"whole model through the invoke entry: {whole}")
        self.echo("BIT-EXACT" if report.bit_exact else "MISMATCH")
        self.rows = None


@main.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--target", "target_name", required=True, help="Chip, see `qlane targets`.")
@click.option("--inputs", "inputs_path", type=click.Path(dir_okay=False),
              help="NPZ with in0, in1, ... of shape [N, *input_shape].")
@click.option("--samples", default=2, show_default=True, type=click.IntRange(0, 100_000),
              help="Seeded random samples verified in addition to those of --inputs "
                   "(0: only --inputs).")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--rounding", type=click.Choice(ROUNDINGS), default="double", show_default=True)
@click.option("--isa", "on_isa", is_flag=True,
              help="Also cross-compile (zig, or --cc gcc) and run every layer in an emulator of "
                   "the chip.")
@click.option("--cc", type=click.Choice(["zig", "gcc"]), default=None,
              help="Compiler of the --isa tier: zig (clang, default) or gcc (arm-none-eabi-gcc, "
                   "Cortex-M only).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable report.")
@click.option("-q", "--quiet", is_flag=True, help=QUIET_HELP)
@_schedule_options
def verify(model: str, target_name: str, inputs_path: str | None, samples: int, seed: int,
           rounding: str, on_isa: bool, cc: str | None, as_json: bool, quiet: bool,
           memory_budget: int | None, schedule: str | None) -> None:
    """Generate C for MODEL, compile it, and compare every layer with the simulator.

    The host tier compiles on this machine (NEON through SIMDe, DSP intrinsics through portable
    C); --isa adds the chip's own instruction set in an emulator. Exit status 0 only if every
    layer and the whole model are bit-exact in every tier.
    """
    with _errors(), _progress(quiet) as bars:
        graph = api.load_model(model)
        target = api.load_target(target_name)
        if on_isa and not target.zig_target:
            raise UserError(f"target {target.name} has no instruction set to emulate; "
                            "use a chip target with --isa")
        if cc is not None and not on_isa:
            raise UserError(f"--cc {cc} compiles the instruction-set tier: add --isa")
        if inputs_path is None and not samples:
            raise UserError("nothing to verify: give --inputs or --samples > 0")
        arrays = api.read_inputs(inputs_path, graph) if inputs_path else None
        n = (len(arrays[0]) if arrays else 0) + samples
        tables = None if as_json else _VerifyTables(graph, target.name, rounding, n, bars.echo)
        result = api.verify(graph, target, arrays, samples=samples, seed=seed,
                            rounding=rounding, isa=on_isa, progress=bars, cc=cc or "zig",
                            memory_budget=memory_budget, schedule=schedule,
                            on_layer=tables.layer if tables else None,
                            on_tier=tables.done if tables else None)
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=1))
    if not result.bit_exact:
        sys.exit(1)


# --- estimate ------------------------------------------------------------------------------

def _fit_text(used: int, cap: int, ok: bool, what: str) -> str:
    if not cap:
        return f"{used:,} bytes ({what}: no limit on this target)"
    if ok:
        return f"{used:,} of {cap:,} bytes {what} ({100 * used / cap:.0f}%): fits"
    return f"{used:,} of {cap:,} bytes {what}: does not fit, {used - cap:,} bytes over"


class _EstimateTable:
    """The per-layer estimate table, printed row by row as `api.estimate` costs the layers."""

    COLUMNS = (">#", "op", "isa", "input -> output", ">MACs", ">instr", ">cycles", ">cyc/MAC",
               ">time us", ">weights", ">act bytes")

    def __init__(self, graph: Any, target: Any, mode: str, echo: Callable[[str], None]) -> None:
        self.target, self.mode, self.echo = target, mode, echo
        self.title = f"estimate {graph.name} on {target.name} ({mode})"
        info = api.inspect(graph)
        shapes = max((f"{_shapes(t.shape for t in la.inputs)} -> "
                      f"{_shapes(t.shape for t in la.outputs)}" for la in info.layers),
                     key=len, default="")
        widest = [str(max(len(info.layers) - 1, 0)),
                  max((la.op for la in info.layers), key=len, default=""), max(ISAS, key=len),
                  shapes, f"{max((la.macs for la in info.layers), default=0):,}",
                  "999,999,999", "9,999,999,999", "99.999", "99,999.9", "9,999,999",
                  "9,999,999"]
        self.rows = _Rows(self.COLUMNS, widest, echo)
        self.started = False

    def _start(self) -> None:
        if not self.started:
            self.started = True
            self.echo(f"{self.title}, {self.target.clock_hz / 1e6:g} MHz, "
                      f"peak {self.target.cost.peak_macs_per_cycle:g} MACs/cycle")
            self.rows.head()

    def layer(self, la: Any) -> None:
        """One layer's row."""
        self._start()
        clock = self.target.clock_hz
        self.rows.row([str(la.index), la.op, la.isa,
                       f"{_shapes(la.input_shapes)} -> {_shapes(la.output_shapes)}",
                       f"{la.macs:,}", f"{la.instructions:,}", f"{la.cycles:,.0f}",
                       f"{la.cycles / la.macs:.3f}" if la.macs else "-",
                       f"{la.cycles / clock * 1e6:,.1f}", f"{la.weight_bytes:,}",
                       f"{la.activation_bytes:,}"])

    def done(self, est: Any) -> None:
        """The totals, memory fit and notes under the rows."""
        self._start()
        self.echo(self.rows.rule)
        _print_estimate_totals(est)


def _print_estimate_totals(est: Any) -> None:
    t = est.to_json()["total"]
    cpm = f"{t['cycles_per_mac']:.3f} cycles/MAC" if t["cycles_per_mac"] else "no MACs"
    click.echo(f"total: {t['macs']:,} MACs, {t['instructions']:,} instructions, "
               f"{t['cycles']:,.0f} cycles ({cpm}), {t['seconds'] * 1e3:.3f} ms")
    mem = est.memory
    if mem is not None and mem.bound:
        budget = f", budget {mem.budget:,}" if mem.budget is not None else ""
        click.echo(f"memory: arena {mem.arena:,} bytes, {mem.arena / mem.bound:.2f}x the "
                   f"layer-by-layer bound {mem.bound:,} (layer by layer: {mem.arena_layers:,}"
                   f"{budget}); schedule: {mem.schedule}")
    if est.ram is None:
        fit = _fit_text(est.arena_bytes, est.sram_capacity, est.arena_fits, "SRAM")
        click.echo(f"arena: {fit}")
    for use in est.ram.uses if est.ram is not None else ():
        fit = _fit_text(use.used, use.region.bytes, use.fits, f"{use.region.name}")
        parts = ", ".join(f"{i.name} {i.bytes:,}" for i in use.items) or "nothing"
        click.echo(f"ram: {fit} <- {parts}")
    click.echo(f"flash: {_fit_text(est.flash_bytes, est.flash_capacity, est.flash_fits, 'flash')}"
               f" ({est.flash_note})")
    for note in est.notes:
        click.echo(f"note: {note}")


@main.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--target", "target_name", required=True, help="Chip, see `qlane targets`.")
@click.option("--mode", type=click.Choice(["static", "emulated"]), default="emulated",
              show_default=True, help="emulated: cross-compile and count every layer in the "
              "emulator, then cost its basic blocks; static: from shapes only, no compiler.")
@click.option("--rounding", type=click.Choice(ROUNDINGS), default="double", show_default=True)
@click.option("--cc", type=click.Choice(["zig", "gcc"]), default="zig", show_default=True,
              help="Compiler of the emulated build: zig (clang) or gcc (arm-none-eabi-gcc, "
                   "Cortex-M only).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable estimate.")
@click.option("--report", "report_dir", type=click.Path(), default=None,
              help="Directory for a per-layer plot (PNG) and an HTML table.")
@click.option("-q", "--quiet", is_flag=True, help=QUIET_HELP)
@_schedule_options
def estimate(model: str, target_name: str, mode: str, rounding: str, cc: str, as_json: bool,
             report_dir: str | None, quiet: bool, memory_budget: int | None,
             schedule: str | None) -> None:
    """Cycles, time and memory per layer of MODEL on a target chip."""
    with _errors(), _progress(quiet) as bars:
        graph = api.load_model(model)
        target = api.load_target(target_name)
        if report_dir is not None and Path(report_dir).exists() and not Path(report_dir).is_dir():
            raise UserError(f"--report {report_dir}: exists and is not a directory")
        table = None if as_json else _EstimateTable(graph, target, mode, bars.echo)
        try:
            est = api.estimate(graph, target, mode=mode, rounding=rounding, cc=cc, progress=bars,
                               on_layer=table.layer if table else None,
                               memory_budget=memory_budget, schedule=schedule)
        except (qlane.EmulationError, qlane.BuildError) as e:
            raise UserError(f"emulation failed: {e}") from None
        written = list(api.write_report(est, report_dir)) if report_dir is not None else []
    if as_json:
        click.echo(json.dumps(est.to_json(), indent=1))
    else:
        assert table is not None
        table.done(est)
        for p in written:
            click.echo(f"wrote {p}")


if __name__ == "__main__":
    main()
