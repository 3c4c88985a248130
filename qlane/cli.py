"""The ``qlane`` command line: parses options, calls `qlane.api`, prints the results."""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

import qlane
from qlane import api
from qlane.errors import QlaneError
from qlane.sim import ROUNDINGS, Interpreter


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


def _print_table(info: api.ModelInfo) -> None:
    click.echo(f"model {info.model}  scheme {info.scheme}")
    for kind, tensors in (("input", info.inputs), ("output", info.outputs)):
        for t in tensors:
            q = "" if t.scale is None else f"  scale {t.scale[0]:.6g} zp {t.zero_point[0]}"
            click.echo(f"  {kind:6s} {t.name!r} {list(t.shape)} {t.dtype}{q}")
    head = (f"{'#':>3}  {'op':<18} {'input':<14} {'output':<14} {'dtype':<6} "
            f"{'in scale/zp':<18} {'out scale/zp':<18} {'weight scale/zp':<30} {'MACs':>11} "
            f"{'params':>8}")
    click.echo(head)
    click.echo("-" * len(head))
    for r in info.layers:
        inq = r.inputs[0].quant if r.inputs else "-"
        outq = r.outputs[0].quant if r.outputs else "-"
        dtype = r.outputs[0].dtype if r.outputs else "-"
        mark = "" if r.supported else "  (unsupported)"
        click.echo(f"{r.index:>3}  {r.op:<18} {_shapes(t.shape for t in r.inputs):<14} "
                   f"{_shapes(t.shape for t in r.outputs):<14} {dtype:<6} {inq:<18} {outq:<18} "
                   f"{r.weights:<30} {r.macs:>11,} {r.params:>8,}{mark}")
    t = info.total
    click.echo("-" * len(head))
    click.echo(f"total: {t.layers} layers, {t.macs:,} MACs, {t.params:,} parameters "
               f"({t.param_bytes:,} bytes)")
    if t.unsupported:
        click.echo(f"unsupported operators: {', '.join(t.unsupported)}")


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
    """List the chips qlane generates code for."""
    click.echo(f"{'target':<12} {'kernels':<10} {'clock':>9} {'SRAM':>9} {'flash':>9}  chip")
    for t in api.targets():
        clock = f"{t.clock_hz / 1e6:.0f} MHz" if t.clock_hz else "-"
        sram = f"{t.sram_bytes // 1024} KB" if t.sram_bytes else "-"
        flash = f"{t.flash_bytes // 1024} KB" if t.flash_bytes else "-"
        click.echo(f"{t.name:<12} {'+'.join(t.isa):<10} {clock:>9} {sram:>9} {flash:>9}  "
                   f"{t.description}")


@main.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--target", "target_name", required=True, help="Chip, see `qlane targets`.")
@click.option("-o", "--output", "outdir", required=True, type=click.Path(file_okay=False),
              help="Directory for the generated project.")
@click.option("--name", help="C prefix of the generated API (default: from the model file).")
@click.option("--rounding", type=click.Choice(ROUNDINGS), default="double", show_default=True)
@click.option("--inputs", "inputs_path", type=click.Path(dir_okay=False),
              help="NPZ whose first sample the examples run (with the simulator's checksum).")
def generate(model: str, target_name: str, outdir: str, name: str | None, rounding: str,
             inputs_path: str | None) -> None:
    """Generate C99 sources for MODEL on a target chip."""
    with _errors():
        graph = api.load_model(model)
        target = api.load_target(target_name)
        project = api.generate(graph, target, name=name, rounding=rounding, out=outdir,
                               sample=inputs_path)
    m = project.manifest
    isas: dict[str, int] = {}
    for layer in m["layers"]:
        isas[layer["isa"]] = isas.get(layer["isa"], 0) + 1
    click.echo(f"generated {m['entry']} for {target.name} ({rounding} rounding) in {outdir}: "
               f"{len(m['layers'])} layers ({', '.join(f'{n} {k}' for k, n in isas.items())}), "
               f"{len(m['sources'])} sources")
    click.echo(f"arena {m['arena_bytes']:,} bytes (naive {m['arena_naive_bytes']:,}), "
               f"flash {m['flash_bytes']:,} bytes of constants")
    builds = "make example" + (" | make board | make zig-board" if "board.c" in m["files"]
                               else "")
    click.echo(f"build: {builds} (see {Path(outdir) / 'Makefile'})")


class _ProgressBars:
    """One progress bar per verification tier on stderr (none for fewer than 4 samples)."""

    def __init__(self) -> None:
        self.bar: Any = None
        self.label = ""
        self.done = 0

    def __call__(self, label: str, done: int, total: int) -> None:
        if total < 4:
            return
        if label != self.label:
            self.close()
            self.bar = click.progressbar(length=total, label=label, file=sys.stderr)
            self.bar.__enter__()
            self.label, self.done = label, 0
        self.bar.update(done - self.done)
        self.done = done

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None


def _mismatch_text(m: Any) -> str:
    return f"first: sample {m.sample} index {m.index} got {m.got} expected {m.expected}"


def _print_verify(report: Any, tier: str, counts: dict | None = None) -> None:
    click.echo(f"verify {report.model} on {report.target} ({report.rounding} rounding), "
               f"{report.samples} samples, {tier}")
    extra = f" {'instructions':>12}" if counts is not None else ""
    click.echo(f"{'#':>3}  {'op':<18} {'isa':<5} {'kernel':<58}{extra} result")
    for r in report.layers:
        res = "identical" if r.bit_exact else f"{r.differing} differ; {_mismatch_text(r.first)}"
        n = ""
        if counts is not None:
            c = counts.get(r.index)
            n = f" {c['instructions']:>12,}" if c else f" {'-':>12}"
        click.echo(f"{r.index:>3}  {r.op:<18} {r.isa:<5} {r.kernel:<58}{n} {res}")
    whole = "identical" if report.model_bit_exact else \
        f"differs; {_mismatch_text(report.model_first)}"
    click.echo(f"whole model through the invoke entry: {whole}")
    click.echo("BIT-EXACT" if report.bit_exact else "MISMATCH")


@main.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--target", "target_name", required=True, help="Chip, see `qlane targets`.")
@click.option("--inputs", "inputs_path", type=click.Path(dir_okay=False),
              help="NPZ with in0, in1, ... of shape [N, *input_shape].")
@click.option("--samples", default=2, show_default=True, type=click.IntRange(0, 100_000),
              help="Random samples added to --inputs.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--rounding", type=click.Choice(ROUNDINGS), default="double", show_default=True)
@click.option("--isa", "on_isa", is_flag=True,
              help="Also cross-compile with zig and run every layer in an emulator of the chip.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable report.")
def verify(model: str, target_name: str, inputs_path: str | None, samples: int, seed: int,
           rounding: str, on_isa: bool, as_json: bool) -> None:
    """Generate C for MODEL, compile it, and compare every layer with the simulator.

    The host tier compiles on this machine (NEON through SIMDe, DSP intrinsics through portable
    C); --isa adds the chip's own instruction set in an emulator. Exit status 0 only if every
    layer and the whole model are bit-exact in every tier.
    """
    bars = None if as_json else _ProgressBars()
    with _errors():
        graph = api.load_model(model)
        target = api.load_target(target_name)
        if on_isa and not target.zig_target:
            raise UserError(f"target {target.name} has no instruction set to emulate; "
                            "use a chip target with --isa")
        if inputs_path is None and not samples:
            raise UserError("nothing to verify: give --inputs or --samples > 0")
        try:
            result = api.verify(graph, target, inputs_path, samples=samples, seed=seed,
                                rounding=rounding, isa=on_isa, progress=bars)
        finally:
            if bars is not None:
                bars.close()
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=1))
    else:
        for label, report in result.tiers:
            _print_verify(report, label, getattr(report, "counts", None) or None)
    if not result.bit_exact:
        sys.exit(1)


# --- estimate ------------------------------------------------------------------------------

def _fit_text(used: int, cap: int, ok: bool, what: str) -> str:
    if not cap:
        return f"{used:,} bytes ({what}: no limit on this target)"
    if ok:
        return f"{used:,} of {cap:,} bytes {what} ({100 * used / cap:.0f}%): fits"
    return f"{used:,} of {cap:,} bytes {what}: does not fit, {used - cap:,} bytes over"


def _print_estimate(est: Any) -> None:
    t = est.to_json()["total"]
    click.echo(f"estimate {est.model} on {est.target} ({est.mode}), "
               f"{est.clock_hz / 1e6:g} MHz, peak {est.peak_macs_per_cycle:g} MACs/cycle")
    head = (f"{'#':>3}  {'op':<18} {'isa':<4} {'input -> output':<28} {'MACs':>11} "
            f"{'instr':>11} {'cycles':>12} {'cyc/MAC':>8} {'time us':>10} {'weights':>9} "
            f"{'act bytes':>10}")
    click.echo(head)
    click.echo("-" * len(head))
    for la in est.layers:
        shapes = (" ".join("x".join(map(str, s)) for s in la.input_shapes) + " -> "
                  + " ".join("x".join(map(str, s)) for s in la.output_shapes))
        cpm = f"{la.cycles / la.macs:8.3f}" if la.macs else f"{'-':>8}"
        click.echo(f"{la.index:>3}  {la.op:<18} {la.isa:<4} {shapes:<28} {la.macs:>11,} "
                   f"{la.instructions:>11,} {la.cycles:>12,.0f} {cpm} "
                   f"{la.cycles / est.clock_hz * 1e6:>10,.1f} {la.weight_bytes:>9,} "
                   f"{la.activation_bytes:>10,}")
    click.echo("-" * len(head))
    cpm = f"{t['cycles_per_mac']:.3f} cycles/MAC" if t["cycles_per_mac"] else "no MACs"
    click.echo(f"total: {t['macs']:,} MACs, {t['instructions']:,} instructions, "
               f"{t['cycles']:,.0f} cycles ({cpm}), {t['seconds'] * 1e3:.3f} ms")
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
@click.option("--json", "as_json", is_flag=True, help="Machine-readable estimate.")
@click.option("--report", "report_dir", type=click.Path(), default=None,
              help="Directory for a per-layer plot (PNG) and an HTML table.")
def estimate(model: str, target_name: str, mode: str, rounding: str, as_json: bool,
             report_dir: str | None) -> None:
    """Cycles, time and memory per layer of MODEL on a target chip."""
    with _errors():
        graph = api.load_model(model)
        target = api.load_target(target_name)
        if report_dir is not None and Path(report_dir).exists() and not Path(report_dir).is_dir():
            raise UserError(f"--report {report_dir}: exists and is not a directory")
        try:
            est = api.estimate(graph, target, mode=mode, rounding=rounding)
        except (qlane.EmulationError, qlane.BuildError) as e:
            raise UserError(f"emulation failed: {e}") from None
        written = list(api.write_report(est, report_dir)) if report_dir is not None else []
    if as_json:
        click.echo(json.dumps(est.to_json(), indent=1))
    else:
        _print_estimate(est)
        for p in written:
            click.echo(f"wrote {p}")


if __name__ == "__main__":
    main()
