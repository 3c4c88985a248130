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
    """File name stem of a report: ``<model>_<target>_<mode>``, each part reduced to a C
    identifier (``mobilenet_v1_0_25_128_u8_cortex_m7_emulated``)."""
    return f"{c_identifier(est.model)}_{c_identifier(est.target)}_{est.mode}"


COMPONENTS = (("core", "#4C72B0"), ("taken branches", "#DD8452"),
              ("flash wait states", "#C44E52"))
"""The parts of a layer's cycles, in stacking order, with their plot colours."""


def cycle_components(est: Estimate) -> dict[str, list[float]]:
    """Cycles per layer split as in `COMPONENTS`; core is the rest (it holds any peak floor)."""
    return {
        "core": [la.cycles - la.branch_cycles - la.memory_cycles for la in est.layers],
        "taken branches": [la.branch_cycles for la in est.layers],
        "flash wait states": [la.memory_cycles for la in est.layers],
    }


def nonzero_components(est: Estimate) -> list[str]:
    """The components of `COMPONENTS` that some layer has cycles of (the plot's legend)."""
    parts = cycle_components(est)
    return [name for name, _ in COMPONENTS if any(parts[name])]


def thousands(value: float, _pos: int | None = None) -> str:
    """A tick label: whole number with thousands separators (``1,234,567``)."""
    return f"{value:,.0f}"


def plot_figure(est: Estimate) -> Any:
    """The report's figure: cycles per layer (nonzero components stacked) above cycles per MAC
    against the chip's peak."""
    plt = _pyplot()
    from matplotlib.ticker import FuncFormatter, ScalarFormatter

    layers = est.layers
    x = list(range(len(layers)))
    labels = [f"{la.index} {parse_symbol(la.kernel).op}" for la in layers]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(max(8.0, 0.32 * len(layers) + 3), 7.5),
                                      sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    parts = cycle_components(est)
    colours = dict(COMPONENTS)
    base = [0.0] * len(layers)
    for name in nonzero_components(est):
        top.bar(x, parts[name], bottom=base, color=colours[name], label=name)
        base = [b + v for b, v in zip(base, parts[name])]
    top.set_ylabel("cycles")
    top.yaxis.set_major_formatter(FuncFormatter(thousands))
    top.set_title(f"{est.model} on {est.target} ({est.mode}): {est.cycles:,.0f} cycles, "
                  f"{est.seconds * 1e3:.2f} ms at {est.clock_hz / 1e6:g} MHz", fontsize=10)
    if top.get_legend_handles_labels()[0]:
        top.legend(fontsize=8)
    cpm = [la.cycles / la.macs if la.macs else 0.0 for la in layers]
    bottom.bar(x, cpm, color="#55A868", label="cycles / MAC (layers with MACs)")
    bottom.axhline(1.0 / est.peak_macs_per_cycle, color="black", linestyle="--", linewidth=1,
                   label=f"peak: {1.0 / est.peak_macs_per_cycle:g} cycles/MAC")
    bottom.set_ylabel("cycles / MAC")
    bottom.yaxis.set_major_formatter(ScalarFormatter(useOffset=False))
    bottom.set_xlabel("layer (index, op)")
    bottom.legend(fontsize=8)
    bottom.set_xticks(x)
    bottom.set_xticklabels(labels, rotation=70, fontsize=7, ha="right")
    fig.tight_layout()
    return fig


def write_plot(est: Estimate, path: Path, figure: Any = None) -> Path:
    """Save ``figure(est)`` (default `plot_figure`) as a PNG."""
    plt = _pyplot()
    fig = (figure or plot_figure)(est)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def memory_figure(est: Estimate) -> Any:
    """The memory view: arena bytes live at each step of the schedule, the layer-by-layer
    schedule beside it, against the budget and the layer-by-layer bound."""
    plt = _pyplot()
    from matplotlib.ticker import FuncFormatter

    mem = est.memory
    assert mem is not None
    x = list(range(len(mem.steps)))
    fig, ax = plt.subplots(figsize=(max(8.0, 0.32 * len(x) + 3), 4.2))
    width = 0.4
    ax.bar([i - width / 2 for i in x], [s[3] for s in mem.steps], width, color="#BBBBBB",
           label=f"layer by layer (arena {mem.arena_layers:,} B)")
    staged = {i for st in est.stages for i in range(st.first, st.last + 1)}
    ax.bar([i + width / 2 for i in x], [s[2] for s in mem.steps], width,
           color=["#DD8452" if s[0] in staged else "#4C72B0" for s in mem.steps],
           label=f"{mem.schedule} (arena {mem.arena:,} B)")
    ax.axhline(mem.bound, color="black", linestyle=":", linewidth=1,
               label=f"layer-by-layer bound {mem.bound:,} B")
    if mem.budget is not None:
        ax.axhline(mem.budget, color="#C44E52", linestyle="--", linewidth=1.2,
                   label=f"budget {mem.budget:,} B")
    for st in est.stages:
        ax.axvspan(st.first - 0.5, st.last + 0.5, color="#DD8452", alpha=0.08)
    top = max([mem.bound, *(s[3] for s in mem.steps), *([mem.budget] if mem.budget else [])])
    ax.set_ylim(0, 1.45 * top)  # room for the legend above the bars
    ax.set_ylabel("live arena bytes")
    ax.yaxis.set_major_formatter(FuncFormatter(thousands))
    ax.set_xticks(x)
    ax.set_xticklabels([f"{s[0]} {s[1].lower().replace('_2d', '')}" for s in mem.steps],
                       rotation=70, fontsize=7, ha="right")
    ax.set_xlabel("step (layer index, op); shaded: patch stages")
    ax.set_title(f"{est.model} on {est.target}: memory view", fontsize=10)
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    return fig


def _num(v: float | int | None, fmt: str = ",.0f") -> str:
    return "-" if v is None else format(v, fmt)


COLUMNS = (("#", "num"), ("op", "text"), ("kernel", "text"), ("isa", "text"),
           ("shapes", "text"), ("MACs", "num"), ("instructions", "num"), ("cycles", "num"),
           ("core", "num"), ("taken branches", "num"), ("flash wait states", "num"),
           ("cycles / MAC", "num"), ("&micro;s", "num"), ("weight bytes", "num"),
           ("activation bytes", "num"))
"""The HTML table's columns: title and class (``num`` right-aligned, ``text`` left)."""

STYLE = """\
body { font-family: sans-serif; margin: 1.5em; max-width: 100%; }
img { max-width: 100%; height: auto; }
.table-wrap { overflow-x: auto; max-width: 100%; }
table { border-collapse: collapse; font-size: 0.8em; }
td, th { border: 1px solid #ccc; padding: 2px 5px; vertical-align: top; }
th { background: #f4f4f4; }
.num { text-align: right; font-variant-numeric: tabular-nums; }
td.num { white-space: nowrap; }
.text { text-align: left; }
th { vertical-align: bottom; }
td.kernel { min-width: 15em; }
td.kernel code { overflow-wrap: anywhere; font-size: 0.9em; }
tfoot th { border-top: 2px solid #888; }
"""


def _cells(cells: list[str], tag: str = "td") -> str:
    out = []
    for (title, cls), c in zip(COLUMNS, cells):
        extra = " kernel" if title == "kernel" and tag == "td" else ""
        out.append(f'<{tag} class="{cls}{extra}">{c}</{tag}>')
    return "<tr>" + "".join(out) + "</tr>"


def _memory_html(est: Estimate, png_name: str | None) -> str:
    """The memory view section: the plot, the stages' overhead and live bytes per step."""
    e = html.escape
    mem = est.memory
    if mem is None:
        return ""
    budget = f", budget {mem.budget:,} B" if mem.budget is not None else ""
    stages = "".join(
        f"<li>layers {st.first}-{st.last} in {st.grid[0]}x{st.grid[1]} patches: "
        f"{st.extra_macs:,} more MACs, {st.extra_cycles:,.0f} more cycles</li>"
        for st in est.stages)
    rows = "".join(f'<tr><td class="num">{i}</td><td class="text">{e(op)}</td>'
                   f'<td class="num">{live:,}</td><td class="num">{lbl:,}</td></tr>'
                   for i, op, live, lbl in mem.steps)
    img = f'<img src="{e(png_name)}" alt="memory view">' if png_name else ""
    return f"""<h2>Memory view</h2>
<p>Schedule: {e(mem.schedule)} ({e(mem.why)}). Arena {mem.arena:,} B,
{mem.arena / max(mem.bound, 1):.2f} x the layer-by-layer bound {mem.bound:,} B (layer by layer:
{mem.arena_layers:,} B{budget}).</p>
<ul>{stages}</ul>
{img}
<div class="table-wrap"><table>
<thead><tr><th class="num">#</th><th class="text">op</th><th class="num">live bytes</th>
<th class="num">layer by layer</th></tr></thead>
<tbody>{rows}</tbody></table></div>
"""


def render_html(est: Estimate, png_name: str, memory_png: str | None = None) -> str:
    """A self-contained HTML page: totals, memory fit, the plot and the per-layer table (in a
    horizontally scrolling container; numbers right-aligned, text left, headers likewise)."""
    e = html.escape
    t = est.to_json()["total"]
    parts = cycle_components(est)
    rows = []
    for k, la in enumerate(est.layers):
        shapes = " ".join("x".join(map(str, s)) for s in la.input_shapes)
        shapes += "<br>&rarr;&nbsp;" + " ".join("x".join(map(str, s)) for s in la.output_shapes)
        rows.append(_cells([
            str(la.index), e(la.op), f"<code>{e(la.kernel)}</code>", e(la.isa), shapes,
            _num(la.macs), _num(la.instructions), _num(la.cycles),
            *(_num(parts[name][k]) for name, _ in COMPONENTS),
            _num(la.cycles / la.macs, ".3f") if la.macs else "-",
            _num(la.cycles / est.clock_hz * 1e6, ",.1f"), _num(la.weight_bytes),
            _num(la.activation_bytes)]))
    total = _cells(["", "total", "", "", "", _num(t["macs"]), _num(t["instructions"]),
                    _num(t["cycles"]), *(_num(sum(parts[name])) for name, _ in COMPONENTS),
                    _num(t["cycles_per_mac"], ".3f"), _num(t["seconds"] * 1e6, ",.1f"),
                    "", ""], "th")

    def fit(used: int, cap: int, ok: bool) -> str:
        if not cap:
            return f"{used:,} bytes (no limit: DRAM)"
        how = "fits" if ok else f"does not fit: {used - cap:,} bytes over"
        return f"{used:,} of {cap:,} bytes ({100 * used / cap:.0f}%): {how}"

    head = "<tr>" + "".join(f'<th class="{cls}">{h}</th>' for h, cls in COLUMNS) + "</tr>"
    notes = "".join(f"<li>{e(n)}</li>" for n in est.notes)
    body = "\n".join(rows)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>qlane estimate: {e(est.model)} on {e(est.target)}</title>
<style>
{STYLE}</style></head><body>
<h1>{e(est.model)} on {e(est.target)} ({e(est.mode)})</h1>
<p>{t['macs']:,} MACs, {t['instructions']:,} instructions, {t['cycles']:,.0f} cycles
({_num(t['cycles_per_mac'], '.3f')} cycles/MAC), {t['seconds'] * 1e3:.3f} ms at
{est.clock_hz / 1e6:g} MHz; peak {est.peak_macs_per_cycle:g} MACs/cycle.</p>
<p>Arena: {fit(est.arena_bytes, est.sram_capacity, est.arena_fits)}.<br>
Flash: {fit(est.flash_bytes, est.flash_capacity, est.flash_fits)} ({e(est.flash_note)}).</p>
<ul>{notes}</ul>
<img src="{e(png_name)}" alt="cycles per layer">
<div class="table-wrap"><table>
<thead>{head}</thead>
<tbody>
{body}
</tbody>
<tfoot>{total}</tfoot>
</table></div>
{_memory_html(est, memory_png)}</body></html>
"""


def write_report(est: Estimate, outdir: str | Path) -> tuple[Path, ...]:
    """Write ``<stem>.png``, ``<stem>_memory.png`` (the memory view) and ``<stem>.html`` into
    ``outdir`` (created if missing)."""
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
    memory = (write_plot(est, out / f"{stem}_memory.png", memory_figure) if est.memory
              else None)
    page = out / f"{stem}.html"
    page.write_text(render_html(est, png.name, memory.name if memory else None))
    return (png, *([memory] if memory else []), page)
