"""Cross-check of the pipeline model against llvm-mca's scheduling models, block by block."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from qlane.sim.graph import Graph

from ..isa import ARCHES
from ..targets import Target
from .emulated import BlockCoster, EmulatedRun, emulate_layers
from .model import EstimateError, cost_model
from .pipeline import COND, Op


@cache
def find_llvm_mca(llvm: int = 16) -> tuple[str, int] | None:
    """(path, major version) of the llvm-mca for a core that LLVM ``llvm`` models, or None.

    16 (the release the Cortex-M4/M7/A53/A72 figures were measured with): 16 preferred, then
    15, an unversioned one, 14. Newer (19 for the Helium cores, which older releases cannot
    parse): exactly that release, or an unversioned or later one.
    """
    if llvm > 16:
        names = [f"llvm-mca-{v}" for v in range(llvm, llvm + 6)] + ["llvm-mca"]
        found = [f for f in map(_mca_version, names) if f and f[0] >= llvm]
        if not found:
            return None
        major, path = min(found)
        return path, major
    found = [f for f in map(_mca_version, ("llvm-mca-16", "llvm-mca-15", "llvm-mca",
                                           "llvm-mca-14")) if f]
    if not found:
        return None
    major, path = max(found)
    return path, major


def _mca_version(exe: str) -> tuple[int, str] | None:
    """(major version, path) of the llvm-mca called ``exe`` on PATH."""
    path = shutil.which(exe)
    if not path:
        return None
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True,
                             timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"LLVM version (\d+)", out)
    return (int(m.group(1)), path) if m else None


_LOOP_END = re.compile(r"^(?:le|letp)$")
_LOOP_START = re.compile(r"^(?:dls|wls|dlstp|wlstp)(?:\.\d+)?$")
"""Armv8.1-M low-overhead loops: llvm-mca's M55 model rejects LETP and its M85 model makes it a
102-cycle barrier, so a block's closing LE/LETP is left out (our model costs the loop branch
separately) and DLS/WLS become the MOV into LR they perform."""


_HEX_TARGET = re.compile(r"#?-?0x[0-9a-f]+$")


def _mca_line(op: Op, arch: str, label: str, strip_it: bool, in_it: bool) -> str | None:
    """An instruction in llvm-mca's syntax (branch and page targets become a local label)."""
    mnemonic, _, ops = op.text.partition(" ")
    if arch == "thumb" and _LOOP_END.match(mnemonic):
        return None
    if arch == "thumb" and _LOOP_START.match(mnemonic):
        regs = [r.strip() for r in ops.split(",")]
        return f"mov {regs[0]}, {regs[1]}" if len(regs) >= 2 else None
    if strip_it and arch == "thumb":
        if re.fullmatch(r"it[te]{0,3}", mnemonic):
            return None
        if in_it:
            mnemonic = re.sub(rf"{COND}(?=(?:\.[wn])?$)", "", mnemonic, count=1)
    if op.branch == "call":
        return f"b {label}"
    if op.branch or mnemonic in ("adr", "adrp") or (op.cls == "load" and op.pc_relative
                                                      and arch == "aarch64"):
        ops = _HEX_TARGET.sub(label, ops.strip())
    return f"{mnemonic} {ops}".rstrip()


@dataclass
class McaBlock:
    """One block of the llvm-mca comparison."""

    start: int
    insns: int
    weight: float  # executions
    ours: float  # steady-state cycles per execution, our model
    mca: float | None  # llvm-mca cycles per iteration
    dropped: int = 0  # lines llvm-mca could not parse


@dataclass
class McaResult:
    """Per-block comparison with llvm-mca for one target."""

    target: str
    mca: str
    mcpu: str
    blocks: list[McaBlock]

    @property
    def compared(self) -> list[McaBlock]:
        return [b for b in self.blocks if b.mca and not b.dropped]

    @property
    def ratio(self) -> float:
        """Execution-weighted ours / llvm-mca over the compared blocks."""
        cs = self.compared
        return (sum(b.ours * b.weight for b in cs) / sum(b.mca * b.weight for b in cs)
                if cs else float("nan"))

    @property
    def block_ratios(self) -> list[float]:
        return [b.ours / b.mca for b in self.compared]

    @property
    def coverage(self) -> float:
        """Share of the selected blocks' executed instructions that could be compared."""
        total = sum(b.weight * b.insns for b in self.blocks)
        return sum(b.weight * b.insns for b in self.compared) / total if total else 0.0


def run_mca(blocks: Sequence[Sequence[Op]], arch: str, mcpu: str, strip_it: bool = False,
            iterations: int = 100, llvm: int = 16, triple: str = ""
            ) -> tuple[list[float | None], list[int]]:
    """llvm-mca cycles per iteration of each block (one run, one code region per block), with
    the llvm-mca of LLVM ``llvm`` (or later) and ``-mtriple`` ``triple`` (default: the
    architecture's)."""
    found = find_llvm_mca(llvm)
    if found is None:
        raise EstimateError(f"llvm-mca {llvm} not found (apt-get install llvm-{llvm})")
    exe, _ = found
    c = ARCHES[arch].comment
    lines: list[str] = []
    owner: dict[int, int] = {}
    for k, ops in enumerate(blocks):
        lines.append(f"{c} LLVM-MCA-BEGIN b{k}")
        label = f".Lq{k}"
        it_left = 0
        for op in ops:
            mnemonic = op.text.split(" ")[0]
            in_it = it_left > 0
            line = _mca_line(op, arch, label, strip_it, in_it)
            if arch == "thumb" and re.fullmatch(r"it[te]{0,3}", mnemonic):
                it_left = len(mnemonic) - 1
            elif in_it:
                it_left -= 1
            if line is not None:
                owner[len(lines)] = k
                lines.append(line)
        lines.append(f"{label}:")
        lines.append(f"{c} LLVM-MCA-END")
    dropped = [0] * len(blocks)
    cmd = [exe, f"-mtriple={triple or ARCHES[arch].mca_triple}", f"-mcpu={mcpu}",
           f"-iterations={iterations}", "-resource-pressure=0", "-instruction-info=0"]
    with tempfile.TemporaryDirectory(prefix="qlane-mca-") as tmp:
        src = Path(tmp) / "blocks.s"
        for _ in range(40):
            src.write_text("\n".join(lines) + "\n")
            res = subprocess.run([*cmd, str(src)], capture_output=True, text=True, timeout=300)
            bad = {int(m.group(1)) - 1 for m in re.finditer(
                r"blocks\.s:(\d+):\d+: error", res.stderr)}
            if res.returncode == 0 and not bad:
                break
            if not bad:
                unsupported = re.search(r"unsupported instruction.*?\n\s*(\S.*)", res.stderr)
                if not unsupported:
                    raise EstimateError(f"llvm-mca failed: {res.stderr.strip()[:300]}")
                text = unsupported.group(1).strip()
                bad = {i for i, ln in enumerate(lines) if i in owner
                       and re.sub(r"\s+", "", ln).lower() == re.sub(r"\s+", "", text).lower()}
                if not bad:
                    bad = {i for i, ln in enumerate(lines) if i in owner
                           and ln.split(" ")[0] == text.split()[0]}
                if not bad:
                    raise EstimateError(f"llvm-mca failed: {res.stderr.strip()[:300]}")
            for i in bad:
                if i in owner:
                    dropped[owner[i]] += 1
                    lines[i] = f"{c} dropped: {lines[i]}"
                    del owner[i]
                else:
                    lines[i] = f"{c} {lines[i]}"
        else:
            raise EstimateError("llvm-mca kept rejecting the blocks")
    cycles: list[float | None] = [None] * len(blocks)
    for m in re.finditer(r"Code Region - b(\d+)\s+Iterations:\s+(\d+)\s+Instructions:\s+\d+"
                         r"\s+Total Cycles:\s+(\d+)", res.stdout):
        k, its, total = int(m.group(1)), int(m.group(2)), int(m.group(3))
        cycles[k] = total / its
    return cycles, dropped


def hot_blocks(counts: Iterable[dict[str, Any]], coverage: float = 0.9
               ) -> list[tuple[int, int, int]]:
    """(start, instructions, executions) of the blocks that execute ``coverage`` of the
    instructions, hottest first (summed over several calls)."""
    merged: dict[tuple[int, int], int] = {}
    for c in counts:
        for start, (n, execs) in c["blocks"].items():
            merged[(start, n)] = merged.get((start, n), 0) + execs
    order = sorted(merged.items(), key=lambda kv: -kv[0][1] * kv[1])
    total = sum(n * e for (_, n), e in order)
    out, acc = [], 0
    for (start, n), e in order:
        if acc >= coverage * total:
            break
        out.append((start, n, e))
        acc += n * e
    return out


def mca_check(graph: Graph, target: Target, coverage: float = 0.9,
              build_root: str | Path | None = None, run: EmulatedRun | None = None
              ) -> McaResult:
    """Our steady-state cycles vs llvm-mca's for the hot blocks of every layer of ``graph``."""
    model = cost_model(target)
    found = find_llvm_mca(model.mca_llvm)
    if found is None:
        raise EstimateError(f"llvm-mca {model.mca_llvm} not found "
                            f"(apt-get install llvm-{model.mca_llvm})")
    run = run or emulate_layers(graph, target, build_root=build_root, flash=False)
    coster = BlockCoster(run.emu, model)
    hot = hot_blocks(run.counts.values(), coverage)
    ops = [coster.ops(s, n) for s, n, _ in hot]
    mca, dropped = run_mca(ops, run.emu.arch, model.mca_cpu, model.mca_strip_it,
                           llvm=model.mca_llvm, triple=model.mca_triple)
    blocks = [McaBlock(s, n, float(e), coster.cycles(s, n)[1], m, d)
              for (s, n, e), m, d in zip(hot, mca, dropped)]
    return McaResult(target.name, f"{Path(found[0]).name} (LLVM {found[1]})", model.mca_cpu,
                     blocks)
