"""Estimate reports: a per-layer plot (PNG, matplotlib) and an HTML table next to it."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from qlane.errors import QlaneError

from .estimate import Estimate
from .names import c_identifier, parse_symbol


class ReportError(QlaneError, RuntimeError):
    """The report cannot be written (matplotlib missing, or the directory is unusable)."""


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ReportError("--report needs matplotlib: pip install matplotlib "
                          "(or qlane[report])") from None
    return plt


def report_stem(est: Estimate) -> str:
    """File name stem of a report: ``<model>_<target>_<mode>`` (C-identifier safe)."""
    return f"{c_identifier(est.model)}_{c_identifier(est.target)}_{est.mode}"


def write_plot(est: Estimate, path: Path) -> Path:
    """Cycles per layer (core, branch, memory stacked) and cycles per MAC against the peak."""
    plt = _pyplot()
    layers = est.layers
    x = list(range(len(layers)))
    labels = [f"{la.index} {parse_symbol(la.kernel).op}" for la in layers]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(max(8.0, 0.32 * len(layers) + 3), 7.5),
                                      sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    core = [la.cycles - la.branch_cycles - la.memory_cycles for la in layers]
    branch = [la.branch_cycles for la in layers]
    memory = [la.memory_cycles for la in layers]
    top.bar(x, core, color="#4C72B0", label="core")
    top.bar(x, branch, bottom=core, color="#DD8452", label="taken branches")
    top.bar(x, memory, bottom=[c + b for c, b in zip(core, branch)], color="#C44E52",
            label="flash wait states")
    top.set_ylabel("cycles")
    top.set_title(f"{est.model} on {est.target} ({est.mode}): {est.cycles:,.0f} cycles, "
                  f"{est.seconds * 1e3:.2f} ms at {est.clock_hz / 1e6:g} MHz", fontsize=10)
    top.legend(fontsize=8)
    cpm = [la.cycles / la.macs if la.macs else 0.0 for la in layers]
    bottom.bar(x, cpm, color="#55A868")
    bottom.axhline(1.0 / est.peak_macs_per_cycle, color="black", linestyle="--", linewidth=1,
                   label=f"peak: {1.0 / est.peak_macs_per_cycle:g} cycles/MAC")
    bottom.set_ylabel("cycles / MAC")
    bottom.legend(fontsize=8)
    bottom.set_xticks(x)
    bottom.set_xticklabels(labels, rotation=70, fontsize=7, ha="right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _num(v: float | int | None, fmt: str = ",.0f") -> str:
    return "-" if v is None else format(v, fmt)


def render_html(est: Estimate, png_name: str) -> str:
    """A self-contained HTML page: totals, memory fit and the per-layer table."""
    e = html.escape
    t = est.to_json()["total"]
    rows = []
    for la in est.layers:
        shapes = " ".join("x".join(map(str, s)) for s in la.input_shapes)
        shapes += " &rarr; " + " ".join("x".join(map(str, s)) for s in la.output_shapes)
        rows.append(
            "<tr>" + "".join(f"<td>{c}</td>" for c in (
                la.index, e(la.op), f"<code>{e(la.kernel)}</code>", e(la.isa), shapes,
                _num(la.macs), _num(la.instructions), _num(la.cycles),
                _num(la.cycles / la.macs, ".3f") if la.macs else "-",
                _num(la.cycles / est.clock_hz * 1e6, ",.1f"), _num(la.weight_bytes),
                _num(la.activation_bytes))) + "</tr>")

    def fit(used: int, cap: int, ok: bool) -> str:
        if not cap:
            return f"{used:,} bytes (no limit: DRAM)"
        how = "fits" if ok else f"does not fit: {used - cap:,} bytes over"
        return f"{used:,} of {cap:,} bytes ({100 * used / cap:.0f}%): {how}"

    head = ("#", "op", "kernel", "isa", "shapes", "MACs", "instructions", "cycles",
            "cycles/MAC", "&micro;s", "weight bytes", "activation bytes")
    notes = "".join(f"<li>{e(n)}</li>" for n in est.notes)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>qlane estimate: {e(est.model)} on {e(est.target)}</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; }}
table {{ border-collapse: collapse; font-size: 0.85em; }}
td, th {{ border: 1px solid #ccc; padding: 2px 6px; text-align: right; }}
td:nth-child(2), td:nth-child(3), td:nth-child(4), td:nth-child(5) {{ text-align: left; }}
</style></head><body>
<h1>{e(est.model)} on {e(est.target)} ({e(est.mode)})</h1>
<p>{t['macs']:,} MACs, {t['instructions']:,} instructions, {t['cycles']:,.0f} cycles
({_num(t['cycles_per_mac'], '.3f')} cycles/MAC), {t['seconds'] * 1e3:.3f} ms at
{est.clock_hz / 1e6:g} MHz; peak {est.peak_macs_per_cycle:g} MACs/cycle.</p>
<p>Arena: {fit(est.arena_bytes, est.sram_capacity, est.arena_fits)}.<br>
Flash: {fit(est.flash_bytes, est.flash_capacity, est.flash_fits)} ({e(est.flash_note)}).</p>
<ul>{notes}</ul>
<img src="{e(png_name)}" alt="cycles per layer">
<table><tr>{''.join(f'<th>{h}</th>' for h in head)}</tr>
{chr(10).join(rows)}
<tr><th></th><th>total</th><th></th><th></th><th></th><th>{t['macs']:,}</th>
<th>{t['instructions']:,}</th><th>{t['cycles']:,.0f}</th><th>{_num(t['cycles_per_mac'], '.3f')}</th>
<th>{t['seconds'] * 1e6:,.1f}</th><th></th><th></th></tr>
</table></body></html>
"""


def write_report(est: Estimate, outdir: str | Path) -> tuple[Path, Path]:
    """Write ``<stem>.png`` and ``<stem>.html`` into ``outdir`` (created if missing)."""
    out = Path(outdir)
    if out.exists() and not out.is_dir():
        raise ReportError(f"{out} exists and is not a directory")
    _pyplot()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ReportError(f"cannot create {out}: {e.strerror}") from None
    stem = report_stem(est)
    png = write_plot(est, out / f"{stem}.png")
    page = out / f"{stem}.html"
    page.write_text(render_html(est, png.name))
    return png, page
