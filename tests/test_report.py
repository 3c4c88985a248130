"""The estimate report (`qlane estimate --report`): HTML structure and alignment, the cycle
component columns, the plot's legend, tick labels and axis labels, and the file names."""

from __future__ import annotations

import dataclasses
from html.parser import HTMLParser
from pathlib import Path

import pytest

import qlane
from qlane.codegen.report import (
    COLUMNS,
    nonzero_components,
    plot_figure,
    render_html,
    report_stem,
    thousands,
    write_report,
)

pytest.importorskip("matplotlib")

ROOT = Path(__file__).resolve().parent.parent
MOBILENET = ROOT / "examples" / "mobilenet_v1_0.25_128_u8.tflite"


@pytest.fixture(scope="module")
def static() -> qlane.Estimate:
    """MobileNet on a Cortex-M4, static mode: every layer's cycles are core cycles."""
    return qlane.estimate(MOBILENET, "cortex-m4", mode="static")


def _split(est: qlane.Estimate, branch: bool, flash: bool) -> qlane.Estimate:
    """``est`` with a tenth of each layer's cycles moved to taken branches and/or flash."""
    layers = [dataclasses.replace(la, branch_cycles=la.cycles // 10 if branch else 0.0,
                                  memory_cycles=la.cycles // 10 if flash else 0.0)
              for la in est.layers]
    return dataclasses.replace(est, mode="emulated", layers=layers)


class _Cells(HTMLParser):
    """Rows of th/td cells as (tag, class, text); the classes of every div."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[tuple[str, str, str]]] = []
        self.divs: list[str] = []
        self.cell: list[str] | None = None
        self.path: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        cls = dict(attrs).get("class") or ""
        if tag == "div":
            self.divs.append(cls)
        if tag in ("table", "div"):
            self.path.append(tag)
        if tag == "tr":
            self.rows.append([])
        if tag in ("td", "th"):
            self.cell = [tag, cls, ""]

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self.cell is not None:
            self.rows[-1].append((self.cell[0], self.cell[1], self.cell[2].strip()))
            self.cell = None

    def handle_data(self, data: str) -> None:
        if self.cell is not None:
            self.cell[2] += data


def test_html_table_scrolls_and_aligns_headers_with_cells(static: qlane.Estimate) -> None:
    est = _split(static, branch=True, flash=True)
    page = render_html(est, "plot.png")
    parsed = _Cells()
    parsed.feed(page.split("<h2>Memory view</h2>")[0])
    memory = _Cells()
    memory.feed(page.split("<h2>Memory view</h2>")[1])
    assert len(memory.rows) == len(est.layers) + 1  # its head, one row per step
    assert "table-wrap" in parsed.divs and page.index('<div class="table-wrap"><table>') > 0
    assert ".table-wrap { overflow-x: auto;" in page and "img { max-width: 100%;" in page
    assert ".num { text-align: right;" in page and ".text { text-align: left; }" in page
    head, *body, total = parsed.rows
    assert len(body) == len(est.layers)
    expected = [cls for _, cls in COLUMNS]
    for row in (head, *body, total):
        assert [c[1].split()[0] for c in row] == expected  # header, cells, total alike
    titles = [c[2] for c in head]
    assert titles[8:11] == ["core", "taken branches", "flash wait states"]
    for la, row in zip(est.layers, body):
        num = {t: float(c[2].replace(",", "")) for t, c in zip(titles, row) if t in (
            "cycles", "core", "taken branches", "flash wait states")}
        assert num["taken branches"] == la.branch_cycles > 0
        assert num["flash wait states"] == la.memory_cycles > 0
        assert num["core"] + num["taken branches"] + num["flash wait states"] == num["cycles"]
    assert total[1][2] == "total" and total[7][2] == f"{est.cycles:,.0f}"


@pytest.mark.parametrize("branch,flash,legend", [
    (False, False, ["core"]),
    (False, True, ["core", "flash wait states"]),
    (True, True, ["core", "taken branches", "flash wait states"]),
])
def test_legend_lists_only_nonzero_components(static: qlane.Estimate, branch: bool,
                                              flash: bool, legend: list[str]) -> None:
    est = _split(static, branch, flash) if branch or flash else static
    assert nonzero_components(est) == legend
    fig = plot_figure(est)
    top = fig.axes[0]
    assert [t.get_text() for t in top.get_legend().get_texts()] == legend
    assert len(top.containers) == len(legend)


def test_plain_tick_labels_and_axis_labels(static: qlane.Estimate) -> None:
    assert thousands(1234567.0) == "1,234,567" and thousands(0.0) == "0"
    fig = plot_figure(static)
    fig.canvas.draw()
    top, bottom = fig.axes
    assert max(la.cycles for la in static.layers) > 1e6  # large enough for an offset
    assert top.yaxis.get_offset_text().get_text() == ""
    assert bottom.yaxis.get_offset_text().get_text() == ""
    labels = [t.get_text() for t in top.get_yticklabels() if t.get_text()]
    assert "1,000,000" in labels and all("e" not in t for t in labels)
    assert top.get_ylabel() == "cycles" and bottom.get_ylabel() == "cycles / MAC"
    assert bottom.get_xlabel() == "layer (index, op)"


def test_report_files_are_named_as_the_readme_says(static: qlane.Estimate,
                                                   tmp_path: Path) -> None:
    est = dataclasses.replace(static, target="cortex-m7", mode="emulated")
    stem = report_stem(est)
    assert stem == "mobilenet_v1_0_25_128_u8_cortex_m7_emulated"
    assert f"`{stem}.png`" in (ROOT / "README.md").read_text()
    png, memory, page = write_report(static, tmp_path / "rep")
    assert png.name == "mobilenet_v1_0_25_128_u8_cortex_m4_static.png"
    assert memory.name == "mobilenet_v1_0_25_128_u8_cortex_m4_static_memory.png"
    assert f"`{memory.name.replace('cortex_m4_static', 'cortex_m7_emulated')}`" in \
        (ROOT / "README.md").read_text()
    for p in (png, memory):
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert page == png.with_suffix(".html")
    text = page.read_text()
    assert f'src="{png.name}"' in text and f'src="{memory.name}"' in text
    assert "Memory view" in text and "layer by layer" in text
