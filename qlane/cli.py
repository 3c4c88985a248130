"""The ``qlane`` command line: inspect and simulate quantized .tflite models."""

from __future__ import annotations

import functools
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import click
import numpy as np

from qlane.sim import ROUNDINGS, Graph, Interpreter, ModelError, load_tflite
from qlane.sim.ops import KERNELS


class UserError(click.ClickException):
    """A one-line error for the user; exit code 1."""


def _load(path: str) -> Graph:
    try:
        return load_tflite(path)
    except ModelError as e:
        raise UserError(str(e)) from None


def _quant_text(t) -> str:
    if t is None or t.quant is None:
        return "-"
    q = t.quant
    if q.per_axis:
        return f"per-axis[{q.scale.size}] {float(q.scale.min()):.3g}..{float(q.scale.max()):.3g}"
    return f"{float(q.s):.6g}/{q.zp}"


def _is_param(t) -> bool:
    """Weights and biases: quantized constants (shape and axis operands are not parameters)."""
    return t.is_constant and t.quant is not None


def layer_table(graph: Graph) -> list[dict[str, Any]]:
    """Per-operator facts: op, shapes, dtypes, quantization, MACs and parameter count."""
    rows = []
    for op in graph.operators:
        kernel = KERNELS.get(op.opcode)
        ins = [graph.tensor(i) for i in op.inputs]
        acts = [t for t in ins if t is not None and not t.is_constant]
        consts = [t for t in ins if t is not None and _is_param(t)]
        outs = [graph.tensors[i] for i in op.outputs]
        rows.append({
            "index": op.index,
            "op": op.opcode,
            "supported": kernel is not None,
            "inputs": [{"shape": list(t.shape), "dtype": np.dtype(t.dtype).name,
                        "quant": _quant_text(t)} for t in acts],
            "outputs": [{"shape": list(t.shape), "dtype": np.dtype(t.dtype).name,
                         "quant": _quant_text(t)} for t in outs],
            "weights": _quant_text(consts[0]) if consts else "-",
            "macs": kernel.macs(op, graph) if kernel else 0,
            "params": sum(t.size for t in consts),
            "param_bytes": sum(t.nbytes for t in consts),
            "options": {k: v for k, v in op.options.items() if v is not None},
        })
    return rows


def _summary(graph: Graph, rows: list[dict[str, Any]]) -> dict[str, Any]:
    consts = {i for op in graph.operators for i in op.inputs
              if i >= 0 and _is_param(graph.tensors[i])}
    return {
        "model": graph.name,
        "scheme": graph.scheme,
        "inputs": [_io(t) for t in graph.input_tensors],
        "outputs": [_io(t) for t in graph.output_tensors],
        "layers": rows,
        "total": {
            "layers": len(rows),
            "macs": sum(r["macs"] for r in rows),
            "params": sum(graph.tensors[i].size for i in consts),
            "param_bytes": sum(graph.tensors[i].nbytes for i in consts),
            "unsupported": sorted({r["op"] for r in rows if not r["supported"]}),
        },
    }


def _io(t) -> dict[str, Any]:
    q = t.quant
    return {"name": t.name, "index": t.index, "shape": list(t.shape),
            "dtype": np.dtype(t.dtype).name,
            "scale": None if q is None else [float(s) for s in q.scale],
            "zero_point": None if q is None else [int(z) for z in q.zero_point]}


def _fmt_shapes(items: list[dict[str, Any]]) -> str:
    return " ".join("x".join(map(str, d["shape"])) or "scalar" for d in items)


def _print_table(info: dict[str, Any]) -> None:
    click.echo(f"model {info['model']}  scheme {info['scheme']}")
    for kind in ("inputs", "outputs"):
        for t in info[kind]:
            q = "" if t["scale"] is None else f"  scale {t['scale'][0]:.6g} zp {t['zero_point'][0]}"
            click.echo(f"  {kind[:-1]:6s} {t['name']!r} {t['shape']} {t['dtype']}{q}")
    head = (f"{'#':>3}  {'op':<18} {'input':<14} {'output':<14} {'dtype':<6} "
            f"{'in scale/zp':<18} {'out scale/zp':<18} {'weight scale/zp':<30} {'MACs':>11} "
            f"{'params':>8}")
    click.echo(head)
    click.echo("-" * len(head))
    for r in info["layers"]:
        inq = r["inputs"][0]["quant"] if r["inputs"] else "-"
        outq = r["outputs"][0]["quant"] if r["outputs"] else "-"
        dtype = r["outputs"][0]["dtype"] if r["outputs"] else "-"
        mark = "" if r["supported"] else "  (unsupported)"
        click.echo(f"{r['index']:>3}  {r['op']:<18} {_fmt_shapes(r['inputs']):<14} "
                   f"{_fmt_shapes(r['outputs']):<14} {dtype:<6} {inq:<18} {outq:<18} "
                   f"{r['weights']:<30} {r['macs']:>11,} {r['params']:>8,}{mark}")
    t = info["total"]
    click.echo("-" * len(head))
    click.echo(f"total: {t['layers']} layers, {t['macs']:,} MACs, {t['params']:,} parameters "
               f"({t['param_bytes']:,} bytes)")
    if t["unsupported"]:
        click.echo(f"unsupported operators: {', '.join(t['unsupported'])}")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="qlane")
def main() -> None:
    """Simulate 8-bit quantized .tflite networks bit-exactly, for DSPs and microcontrollers."""


@main.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def inspect(model: str, as_json: bool) -> None:
    """Per-layer op, shapes, dtypes, scales/zero points, MACs and parameters of MODEL."""
    graph = _load(model)
    info = _summary(graph, layer_table(graph))
    if as_json:
        click.echo(json.dumps(info, indent=1))
    else:
        _print_table(info)


def _read_inputs(path: str, graph: Graph) -> list[np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError) as e:
        raise UserError(f"cannot read inputs {path}: {str(e).splitlines()[0]}") from None
    out = []
    for k, t in enumerate(graph.input_tensors):
        key = f"in{k}"
        if key not in arrays:
            raise UserError(f"{path}: missing array '{key}' for model input {k} "
                            f"('{t.name}', shape [N, {', '.join(map(str, t.shape))}])")
        x = arrays[key]
        if tuple(x.shape[1:]) != tuple(t.shape):
            raise UserError(f"{path}: '{key}' has shape {list(x.shape)}, model input {k} needs "
                            f"[N, {', '.join(map(str, t.shape))}]")
        if x.dtype != t.dtype:
            raise UserError(f"{path}: '{key}' has dtype {x.dtype.name}, model input {k} needs "
                            f"{np.dtype(t.dtype).name}")
        out.append(x)
    return out


def random_inputs(graph: Graph, samples: int, seed: int) -> list[np.ndarray]:
    """Seeded uniform random inputs, ``[samples, *shape]`` per model input."""
    rng = np.random.default_rng(seed)
    out = []
    for t in graph.input_tensors:
        dt = np.dtype(t.dtype)
        if dt.kind == "f":
            out.append(rng.uniform(-1, 1, (samples, *t.shape)).astype(dt))
        else:
            info = np.iinfo(dt)
            out.append(rng.integers(info.min, info.max, (samples, *t.shape), endpoint=True,
                                    dtype=dt))
    return out


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write atomically: a failure leaves an existing file untouched."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".npz", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _check_target(out: str, *protected: str | None) -> Path:
    p = Path(out)
    if p.is_dir():
        raise UserError(f"{out} is a directory; give a file name ending in .npz")
    if p.suffix != ".npz":
        raise UserError(f"{out}: output file name must end in .npz")
    for other in protected:
        if other and p.exists() and p.resolve() == Path(other).resolve():
            raise UserError(f"refusing to overwrite {other} with results")
    return p


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
    graph = _load(model)
    out = _check_target(output_path, model, inputs_path)
    tens = _check_target(tensors_path, model, inputs_path, output_path) if tensors_path else None
    if tens is not None and tens.resolve() == out.resolve():
        raise UserError("--tensors and --output must be different files")
    inputs = (_read_inputs(inputs_path, graph) if inputs_path
              else random_inputs(graph, samples, seed))
    try:
        interp = Interpreter(graph, rounding)
        start = time.perf_counter()
        result = interp.run(inputs, keep=tens is not None)
        seconds = time.perf_counter() - start
    except ModelError as e:
        raise UserError(str(e)) from None
    n = inputs[0].shape[0]
    _save_npz(out, {f"out{k}": y for k, y in enumerate(result.outputs)})
    source = inputs_path or f"{n} random samples (seed {seed})"
    click.echo(f"simulated {graph.name} ({rounding} rounding) on {source}: "
               f"{seconds * 1e3:.1f} ms, {seconds * 1e3 / n:.2f} ms/sample")
    for k, y in enumerate(result.outputs):
        line = f"  out{k} {list(y.shape)} {y.dtype.name} range [{y.min()}, {y.max()}]"
        flat = y.reshape(n, -1)
        if flat.shape[1] > 1:
            line += f"  argmax per sample {flat.argmax(axis=1).tolist()[:8]}"
        click.echo(line)
    click.echo(f"wrote {out}")
    if tens is not None:
        _save_npz(tens, {f"t{i}": v for i, v in sorted(result.tensors.items())})
        click.echo(f"wrote {tens} ({len(result.tensors)} tensors)")


def _target(name: str):
    from qlane.codegen.targets import TargetError, load_target

    try:
        return load_target(name)
    except TargetError as e:
        raise UserError(str(e)) from None


@main.command()
def targets() -> None:
    """List the chips qlane generates code for."""
    from qlane.codegen.targets import load_target, target_names

    click.echo(f"{'target':<12} {'kernels':<10} {'clock':>9} {'SRAM':>9} {'flash':>9}  chip")
    for name in target_names():
        t = load_target(name)
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
def generate(model: str, target_name: str, outdir: str, name: str | None, rounding: str) -> None:
    """Generate C99 sources for MODEL on a target chip."""
    from qlane.codegen.emit import GenerateError, write_project
    from qlane.codegen.emit import generate as gen

    graph = _load(model)
    target = _target(target_name)
    try:
        project = gen(graph, target, name=name, rounding=rounding)
        write_project(project, outdir)
    except (GenerateError, ModelError) as e:
        raise UserError(str(e)) from None
    m = project.manifest
    isas: dict[str, int] = {}
    for layer in m["layers"]:
        isas[layer["isa"]] = isas.get(layer["isa"], 0) + 1
    click.echo(f"generated {m['entry']} for {target.name} ({rounding} rounding) in {outdir}: "
               f"{len(m['layers'])} layers ({', '.join(f'{n} {k}' for k, n in isas.items())}), "
               f"{len(m['sources'])} sources")
    click.echo(f"arena {m['arena_bytes']:,} bytes (naive {m['arena_naive_bytes']:,}), "
               f"flash {m['flash_bytes']:,} bytes of constants")


def _with_progress(label: str, n: int, run):
    """Call ``run(progress=...)`` under a progress bar of ``n`` samples on stderr."""
    with click.progressbar(length=n, label=label, file=sys.stderr) as bar:
        done = [0]

        def step(k: int) -> None:
            bar.update(k - done[0])
            done[0] = k

        return run(progress=step)


def _mismatch_text(m) -> str:
    return f"first: sample {m.sample} index {m.index} got {m.got} expected {m.expected}"


def _print_verify(report, tier: str, counts: dict | None = None) -> None:
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
    from qlane.codegen.cross import CrossError
    from qlane.codegen.emit import GenerateError
    from qlane.codegen.emulate import EmulationError, emulate_verify
    from qlane.codegen.verify import BuildError
    from qlane.codegen.verify import verify as run_verify

    graph = _load(model)
    target = _target(target_name)
    if on_isa and not target.zig_target:
        raise UserError(f"target {target.name} has no instruction set to emulate; "
                        "use a chip target with --isa")
    inputs = _read_inputs(inputs_path, graph) if inputs_path else None
    if samples:
        rand = random_inputs(graph, samples, seed)
        inputs = rand if inputs is None else [np.concatenate([a, b]) for a, b in
                                              zip(inputs, rand)]
    if inputs is None:
        raise UserError("nothing to verify: give --inputs or --samples > 0")
    n = inputs[0].shape[0]
    tiers = [("host build", run_verify)] + ([("emulated " + target.name, emulate_verify)]
                                            if on_isa else [])
    reports = []
    try:
        for label, fn in tiers:
            run = functools.partial(fn, graph, target, inputs, rounding=rounding)
            reports.append((label, run() if as_json or n < 4 else _with_progress(label, n, run)))
    except (GenerateError, ModelError, BuildError, CrossError, EmulationError) as e:
        raise UserError(str(e).splitlines()[0]) from None
    ok = all(r.bit_exact for _, r in reports)
    if as_json:
        out = reports[0][1].to_json()
        if on_isa:
            out["isa"] = reports[1][1].to_json()
        out["bit_exact"] = ok
        click.echo(json.dumps(out, indent=1))
    else:
        for label, report in reports:
            counts = None
            if getattr(report, "counts", None):
                counts = report.counts
            _print_verify(report, label, counts)
    if not ok:
        sys.exit(1)


# --- estimate ------------------------------------------------------------------------------

def _fit_text(used: int, cap: int, ok: bool, what: str) -> str:
    if not cap:
        return f"{used:,} bytes ({what}: no limit on this target)"
    if ok:
        return f"{used:,} of {cap:,} bytes {what} ({100 * used / cap:.0f}%): fits"
    return f"{used:,} of {cap:,} bytes {what}: does not fit, {used - cap:,} bytes over"


def _print_estimate(est) -> None:
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
    click.echo(f"arena: {_fit_text(est.arena_bytes, est.sram_capacity, est.arena_fits, 'SRAM')}")
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
    from qlane.codegen.cross import CrossError
    from qlane.codegen.emit import GenerateError
    from qlane.codegen.estimate import EstimateError
    from qlane.codegen.estimate import estimate as run_estimate

    graph = _load(model)
    target = _target(target_name)
    if report_dir is not None and Path(report_dir).exists() and not Path(report_dir).is_dir():
        raise UserError(f"--report {report_dir}: exists and is not a directory")
    try:
        est = run_estimate(graph, target, mode=mode, rounding=rounding)
    except (EstimateError, GenerateError, ModelError, CrossError) as e:
        raise UserError(str(e).splitlines()[0]) from None
    except RuntimeError as e:  # EmulationError and unicorn faults
        raise UserError(f"emulation failed: {str(e).splitlines()[0]}") from None
    written = []
    if report_dir is not None:
        from qlane.codegen.report import ReportError, write_report

        try:
            written = list(write_report(est, report_dir))
        except ReportError as e:
            raise UserError(str(e)) from None
    if as_json:
        click.echo(json.dumps(est.to_json(), indent=1))
    else:
        _print_estimate(est)
        for p in written:
            click.echo(f"wrote {p}")


if __name__ == "__main__":
    main()
