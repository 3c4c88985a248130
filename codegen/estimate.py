"""Cycles per layer on a target chip: a cycle model per target, applied in two modes.

``emulated``: the generated C is cross-compiled and every layer runs once in the emulator
(`qlane.codegen.emulate`); each real basic block the layer executed is disassembled and costed by
the target's pipeline model (issue width, execution units, cycles per instruction class, MAC and
load latencies with accumulator forwarding, steady state of the block as a loop), plus the
branch penalty of every taken branch and flash wait states for loads that read flash.

``static``: no compiler, no emulator. Each layer's cycles and instructions come from its shapes
(MACs, outputs, inputs, tile passes) through per-kernel-family coefficients (op + ISA of the
kernel symbol) that ``bench/calibrate_static.py`` fits against the emulated mode and stores in
``targets/<chip>.toml`` ``[cost.static]``.

Every estimate respects the chip's peak: cycles >= MACs / ``peak_macs_per_cycle``.
`mca_check` compares the per-block model with llvm-mca's scheduling models.
"""

from __future__ import annotations

import math
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from qlane.sim.graph import Graph

from .names import DTYPES, parse_symbol
from .targets import CostModel, Target, cost_model_of

MODES = ("static", "emulated")
FEATURES = ("calls", "macs", "outputs", "inputs", "tiles", "pixels")
"""Shape features of the static model, in the order of the coefficient lists."""
ITERATIONS = 6
"""Back-to-back executions of a block simulated to find its steady state (more for blocks of
fewer than 32 instructions); the steady state is measured over the second half."""


class EstimateError(ValueError):
    """The estimate cannot be made: no cycle model, no toolchain, or a failed build or run."""


# --- the cycle model of a target -----------------------------------------------------------

def cost_model(target: Target) -> CostModel:
    """The cycle model of ``target`` (its TOML ``[cost]`` table, checked when it was read)."""
    model = cost_model_of(target)
    if model is None or not target.clock_hz:
        raise EstimateError(f"target {target.name} has no cycle model (no [cost] parameters or "
                            "clock); estimate for a chip such as cortex-m4 or cortex-a53")
    return model


# --- instructions as the pipeline model sees them --------------------------------------------

@dataclass(frozen=True)
class Op:
    """One instruction, reduced to what the pipeline model needs."""

    address: int
    size: int
    text: str
    cls: str  # emulate.CLASSES
    kind: str  # alu mul vmac vec load store branch
    occupancy: int  # cycles it holds its unit(s)
    latency: int  # cycles until its results can be used
    reads: tuple[str, ...]
    writes: tuple[str, ...]
    fast_writes: tuple[str, ...]  # written back after one cycle (post-indexed base registers)
    nbytes: int  # bytes moved by a load or store
    single_load: bool  # LDR-type load of one register (Cortex-M address/data pipelining)
    accumulates: bool  # a MAC that reads its own destination (accumulator forwarding)
    branch: str  # "" | "cond" | "always" | "call"
    target: int | None
    base: str | None  # base register of a load/store
    pc_relative: bool


_COND = r"(?:eq|ne|cs|hs|cc|lo|mi|pl|vs|vc|hi|ls|ge|lt|gt|le)"
_THUMB_CBRANCH = re.compile(rf"^b{_COND}(?:\.[wn])?$")
_VEC_Q = re.compile(r"\bv\d+\.(?:16b|8h|4s|2d)\b|\bq\d+\b")
_VEC_ANY = re.compile(r"\bv\d+\.|\b[qdsbh]\d+\b")
_BRACES = re.compile(r"\{([^}]*)\}")
_LONG_ACC = ("umlal", "smlal", "umaal", "smlald", "smlsld")
_A64_MERGE = re.compile(r"^(?:[su]?q?r?shr(?:u?n)|[su]?q?xtu?n|r?(?:add|sub)hn|fcvtx?n)2$|^ins$")
"""AArch64 instructions that write half (or one lane) of a vector and keep the rest."""
_ACCUMULATE = re.compile(r"^(?:v?f?n?ml[as]|v?fm[as]|s?mla|smla|smls|umla|umaal|smml[as]|"
                         r"sqr?dml[as]|[su]ml[as]l|[su]?dot|usdot|sudot|bfml|[su]mmla)")
"""Mnemonics whose destination is an accumulator (multiply-accumulate forwarding applies)."""
_A64_CMP = ("cmp", "cmn", "tst", "ccmp", "ccmn", "fcmp", "fcmpe")


def _norm_reg(name: str, arch: str) -> tuple[str, ...]:
    """Physical register(s) behind an architectural name (w5 -> x5, s3 -> d1, q2 -> d4, d5)."""
    if arch == "aarch64":
        if name in ("wzr", "xzr") or not name:
            return ()
        if name == "nzcv":
            return ("flags",)
        if name in ("sp", "wsp"):
            return ("sp",)
        m = re.fullmatch(r"([wx])(\d+)", name)
        if m:
            return (f"x{m.group(2)}",)
        m = re.fullmatch(r"[bhsdqv](\d+)", name)
        if m:
            return (f"v{m.group(1)}",)
        return (name,)
    alias = {"sb": "r9", "sl": "r10", "fp": "r11", "ip": "r12", "cpsr": "flags",
             "apsr": "flags", "apsr_nzcv": "flags"}
    if name in ("itstate", "pc", ""):
        return ()
    name = alias.get(name, name)
    m = re.fullmatch(r"s(\d+)", name)
    if m:
        return (f"d{int(m.group(1)) // 2}",)
    m = re.fullmatch(r"q(\d+)", name)
    if m:
        q = int(m.group(1))
        return (f"d{2 * q}", f"d{2 * q + 1}")
    return (name,)


def _reg_bytes(name: str, arch: str) -> int:
    name = name.strip().split(".")[0].split("[")[0]
    if arch == "aarch64":
        return {"x": 8, "w": 4, "q": 16, "d": 8, "s": 4, "h": 2, "b": 1}.get(name[:1], 8)
    return {"s": 4, "d": 8, "q": 16}.get(name[:1], 4) if re.fullmatch(r"[sdq]\d+", name) else 4


def _transfer_bytes(mnemonic: str, ops: str, arch: str) -> int:
    """Bytes moved by a load or store (from its mnemonic and register operands)."""
    m = mnemonic.split(".")[0]
    braces = _BRACES.search(ops)
    if arch == "aarch64":
        if braces:  # ld1/st1 ... {v0.16b, v1.16b}: whole registers, or one lane
            regs = [r for r in braces.group(1).split(",") if r.strip()]
            if "-" in braces.group(1) and len(regs) == 1:
                lo, hi = (int(re.sub(r"\D", "", x.split(".")[0])) for x in regs[0].split("-"))
                regs = [regs[0]] * (hi - lo + 1)
            lane = re.search(r"\}\[\d+\]", ops) or m.endswith("r")
            width = 16 if _VEC_Q.search(braces.group(1)) else 8
            if lane:
                width = {"b": 1, "h": 2, "s": 4, "d": 8}.get(
                    re.search(r"\.(\d*)([bhsd])", braces.group(1)).group(2), 4)
            return width * len(regs)
        first = ops.split(",")[0].strip()
        size = _reg_bytes(first, arch)
        if m.endswith("b") and not m.startswith(("ldp", "stp")):
            size = 1
        elif m.endswith("h"):
            size = 2
        elif m in ("ldrsw", "ldursw"):
            size = 4
        return size * (2 if m.startswith(("ldp", "stp", "ldnp", "stnp", "ldpsw")) else 1)
    if braces:  # ldm/stm/push/pop/vldm/vpush
        regs = [r.strip() for r in braces.group(1).split(",") if r.strip()]
        total = 0
        for r in regs:
            if "-" in r:
                lo, hi = (int(re.sub(r"\D", "", x)) for x in r.split("-"))
                total += (hi - lo + 1) * _reg_bytes(r.split("-")[0], arch)
            else:
                total += _reg_bytes(r, arch)
        return total
    if m.startswith(("ldrd", "strd")):
        return 8
    if re.match(r"^(?:ld|st)r(?:ex)?s?b", m) or m in ("ldrsb", "ldrbt"):
        return 1
    if re.match(r"^(?:ld|st)r(?:ex)?s?h", m):
        return 2
    if m.startswith(("vldr", "vstr")):
        return _reg_bytes(ops.split(",")[0], arch)
    return 4


def make_op(insn: Any, cls: str, arch: str, model: CostModel) -> Op:
    """Timing facts of one capstone instruction (``detail`` on) under ``model``."""
    import capstone

    mnemonic = insn.mnemonic
    ops = insn.op_str
    name = insn.insn_name() or mnemonic.split(".")[0]
    try:
        r_ids, w_ids = insn.regs_access()
    except capstone.CsError:
        r_ids, w_ids = [], []
    reads = [insn.reg_name(r) for r in r_ids]
    writes = [insn.reg_name(w) for w in w_ids]
    if arch == "aarch64" and name in _A64_CMP:  # capstone lists the compared register as written
        reads += [w for w in writes if w != "nzcv"]
        writes = [w for w in writes if w == "nzcv"]
    if arch == "thumb" and name.startswith(_LONG_ACC):  # 64-bit accumulator is also read
        reads += writes
    if arch == "aarch64" and (_A64_MERGE.match(mnemonic) or re.search(r"\}?\[\d+\]", ops.split(
            ",")[0]) and cls != "store"):  # writes part of its destination: reads the rest
        reads += [w for w in writes if re.fullmatch(r"[bhsdqv]\d+", w)]
    mem_type = capstone.arm64.ARM64_OP_MEM if arch == "aarch64" else capstone.arm.ARM_OP_MEM
    mem = [o for o in insn.operands if o.type == mem_type]
    base = insn.reg_name(mem[0].mem.base) if mem and mem[0].mem.base else None
    pc_relative = base == "pc" or (arch == "aarch64" and cls == "load" and not mem)
    vector = bool(_VEC_ANY.search(ops)) if arch == "aarch64" else bool(
        re.search(r"\bq\d+\b", ops))
    q_form = bool(_VEC_Q.search(ops))
    branch = ""
    target = None
    if cls == "branch":
        if name in ("bl", "blx"):
            branch = "call"
        elif (arch == "aarch64" and (mnemonic.startswith("b.") or name in (
                "cbz", "cbnz", "tbz", "tbnz"))) or (arch == "thumb" and (
                _THUMB_CBRANCH.match(mnemonic) or name in ("cbz", "cbnz")
                or insn.cc not in (0, capstone.arm.ARM_CC_AL))):
            branch = "cond"
        else:
            branch = "always"
        imm_type = capstone.arm64.ARM64_OP_IMM if arch == "aarch64" else capstone.arm.ARM_OP_IMM
        if insn.operands and insn.operands[-1].type == imm_type:
            target = int(insn.operands[-1].imm)
    if cls == "branch":
        kind = "branch"
    elif cls in ("load", "store"):
        kind = cls
    elif cls == "mac":
        kind = "vmac" if vector else "mul"
    elif arch == "aarch64" and (cls == "simd" or vector):
        kind = "vec"
    else:
        kind = "alu"
    lat = model.latency
    occupancy = model.cycles.get(cls, 1)
    latency = {"alu": lat.get("alu", 1), "mul": lat.get("mul", 1), "vmac": lat.get("vmac", 1),
               "vec": lat.get("vec", 1), "load": lat.get("load", 2), "store": 1,
               "branch": 1}[kind]
    nbytes = 0
    single_load = False
    if cls in ("load", "store") or (cls == "branch" and name in ("pop", "ldm")):
        nbytes = _transfer_bytes(mnemonic, ops, arch)
        occupancy += max(0, math.ceil(nbytes / model.bus_bytes) - 1)
        single_load = cls == "load" and "{" not in ops and nbytes <= 4
    if kind in ("vmac", "vec") and q_form:
        occupancy = max(occupancy, model.q_occupancy)
    if kind in ("vmac", "vec") and q_form and cls in ("load", "store"):
        occupancy = max(occupancy, model.q_occupancy)
    norm_r = tuple(dict.fromkeys(r for x in reads for r in _norm_reg(x, arch)))
    norm_w = tuple(dict.fromkeys(r for x in writes for r in _norm_reg(x, arch)))
    fast: tuple[str, ...] = ()
    if cls in ("load", "store") and base and base not in ("pc",):
        b = _norm_reg(base, arch)
        fast = tuple(r for r in norm_w if r in b and (insn.writeback or cls == "store"))
    accumulates = (kind in ("mul", "vmac") and bool(_ACCUMULATE.match(name))
                   and any(w in norm_r for w in norm_w))
    return Op(insn.address, insn.size, f"{mnemonic} {ops}".rstrip(), cls, kind, max(1, occupancy),
              max(1, latency), norm_r, norm_w, fast, nbytes, single_load, accumulates, branch,
              target, base, pc_relative)


_POOLS = {"alu": ("alu",), "mul": ("mul",), "vmac": ("neon", "neon_mac"), "vec": ("neon",),
          "load": ("load",), "store": ("store",), "branch": ("branch",)}
"""Unit pools each kind of instruction needs (a pool the target does not define is skipped)."""


class _Unit:
    """One execution unit's busy cycles, with a skip list to the next free cycle."""

    def __init__(self) -> None:
        self.next: dict[int, int] = {}

    def free_from(self, t: int) -> int:
        """The first free cycle >= t."""
        path = []
        while t in self.next:
            path.append(t)
            t = self.next[t]
        for c in path:
            self.next[c] = t
        return t

    def start(self, t: int, occ: int) -> int:
        """The first cycle >= t from which the unit is free for ``occ`` cycles."""
        while True:
            t = self.free_from(t)
            blocked = next((c for c in range(t + 1, t + occ) if c in self.next), None)
            if blocked is None:
                return t
            t = blocked

    def take(self, t: int, occ: int) -> None:
        for c in range(t, t + occ):
            self.next[c] = c + 1


def _start(pools: list[list[_Unit]], t: int, occ: int) -> tuple[int, list[_Unit]]:
    """Earliest cycle >= t at which every pool has a unit free for ``occ`` cycles."""
    while True:
        picks = []
        latest = t
        for pool in pools:
            s, unit = min(((u.start(t, occ), k) for k, u in enumerate(pool)))
            picks.append(pool[unit])
            latest = max(latest, s)
        if latest == t:
            return t, picks
        t = latest


def schedule(ops: Sequence[Op], model: CostModel, iterations: int = ITERATIONS) -> list[int]:
    """Simulate ``iterations`` back-to-back executions of a block; end cycle of each.

    In-order cores issue in program order, up to ``issue_width`` per cycle, each instruction
    once its operands are ready and a unit of its pool is free (single-issue cores also wait
    for the previous instruction's issue cycles). Out-of-order cores dispatch in order and
    issue as soon as operands and a unit allow, within ``window`` instructions in flight.
    """
    in_order = model.pipeline != "out-of-order"
    width = max(1, model.issue_width)
    ready: dict[str, int] = {}
    acc_ready: dict[str, int] = {}
    units = {p: [_Unit() for _ in range(n)] for p, n in model.units.items() if n > 0}
    t_prev, n_same, block_until = 0, 0, 0
    disp, n_disp = 0, 0
    retire: list[int] = []
    ends: list[int] = []
    prev: Op | None = None
    lat_acc = model.latency.get("mac_accumulate", 1)
    for _ in range(iterations):
        last = 0
        for op in ops:
            t = 0
            for r in op.reads:
                if op.accumulates and r in op.writes and r in acc_ready:
                    t = max(t, acc_ready[r])
                else:
                    t = max(t, ready.get(r, 0))
            occ = op.occupancy
            if (model.memory_pipelining and prev is not None and prev.single_load
                    and op.cls in ("load", "store") and op.nbytes <= 4):
                occ = max(1, occ - 1)
            if in_order:
                t = max(t, t_prev, block_until)
                if t == t_prev and n_same >= width:
                    t += 1
            else:
                if n_disp >= width:
                    disp, n_disp = disp + 1, 0
                if model.window and len(retire) >= model.window:
                    disp = max(disp, retire[-model.window])
                t = max(t, disp)
                n_disp += 1
            pools = [units[p] for p in _POOLS[op.kind] if p in units]
            t, picks = _start(pools, t, occ)
            for u in picks:
                u.take(t, occ)
            if in_order:
                n_same = n_same + 1 if t == t_prev else 1
                t_prev = t
                if width == 1:
                    block_until = t + occ
            for w in op.writes:
                ready[w] = t + (1 if w in op.fast_writes else op.latency)
                if op.accumulates:
                    acc_ready[w] = t + lat_acc
                else:
                    acc_ready.pop(w, None)
            end = t + (occ if width == 1 else 1)
            if not in_order:
                retire.append(max(retire[-1] if retire else 0, t + op.latency))
            last = max(last, end)
            prev = op
        ends.append(last)
    return ends


def block_cycles(ops: Sequence[Op], model: CostModel) -> tuple[float, float]:
    """(first execution, steady-state execution) cycles of a block, without branch penalties."""
    if not ops:
        return 0.0, 0.0
    ends = schedule(ops, model, max(ITERATIONS, 2 * math.ceil(32 / len(ops))))
    half = len(ends) // 2
    steady = (ends[-1] - ends[half - 1]) / (len(ends) - half)
    return float(ends[0]), float(steady)


def taken_branches(blocks: dict[int, tuple[int, int]], last: dict[int, Op]) -> dict[int, float]:
    """Times the branch ending each block was taken: every execution for calls, returns and
    unconditional branches; for conditional ones the executions minus those of the
    fall-through block (a lower bound where the fall-through block is a join point)."""
    out: dict[int, float] = {}
    for start, (_, execs) in blocks.items():
        op = last.get(start)
        if op is None or not op.branch:
            continue
        if op.branch in ("always", "call"):
            out[start] = float(execs)
        else:
            ft = blocks.get(op.address + op.size)
            out[start] = float(max(0, execs - (ft[1] if ft else 0)))
    return out


# --- emulated mode -----------------------------------------------------------------------------

@dataclass
class LayerEstimate:
    """One layer's estimate; the cycles include ``branch_cycles`` and ``memory_cycles``."""

    index: int
    op: str
    kernel: str
    isa: str
    input_shapes: list[list[int]]
    output_shapes: list[list[int]]
    macs: int
    instructions: int
    cycles: float
    weight_bytes: int
    activation_bytes: int
    core_cycles: float = 0.0
    branch_cycles: float = 0.0
    memory_cycles: float = 0.0
    flash_read_bytes: int = 0
    by_class: dict[str, int] = field(default_factory=dict)
    peak_bound: bool = False  # cycles were raised to MACs / peak

    def to_json(self, clock_hz: int) -> dict[str, Any]:
        return {
            "index": self.index, "op": self.op, "kernel": self.kernel, "isa": self.isa,
            "input_shapes": self.input_shapes, "output_shapes": self.output_shapes,
            "macs": self.macs, "instructions": self.instructions,
            "cycles": int(self.cycles),
            "cycles_per_mac": round(self.cycles / self.macs, 4) if self.macs else None,
            "instructions_per_mac": (round(self.instructions / self.macs, 4) if self.macs
                                     else None),
            "seconds": self.cycles / clock_hz,
            "weight_bytes": self.weight_bytes, "activation_bytes": self.activation_bytes,
            "core_cycles": round(self.core_cycles, 1),
            "branch_cycles": round(self.branch_cycles, 1),
            "memory_cycles": round(self.memory_cycles, 1),
            "flash_read_bytes": self.flash_read_bytes, "by_class": self.by_class,
            "peak_bound": self.peak_bound,
        }


@dataclass
class Estimate:
    """A whole-model estimate for one target and mode."""

    model: str
    target: str
    mode: str
    clock_hz: int
    layers: list[LayerEstimate]
    arena_bytes: int
    flash_bytes: int
    flash_note: str
    sram_capacity: int
    flash_capacity: int
    peak_macs_per_cycle: float
    notes: list[str] = field(default_factory=list)

    @property
    def macs(self) -> int:
        return sum(la.macs for la in self.layers)

    @property
    def cycles(self) -> float:
        return float(sum(la.cycles for la in self.layers))

    @property
    def instructions(self) -> int:
        return sum(la.instructions for la in self.layers)

    @property
    def seconds(self) -> float:
        return self.cycles / self.clock_hz

    @property
    def arena_fits(self) -> bool:
        return not self.sram_capacity or self.arena_bytes <= self.sram_capacity

    @property
    def flash_fits(self) -> bool:
        return not self.flash_capacity or self.flash_bytes <= self.flash_capacity

    @property
    def fits(self) -> bool:
        return self.arena_fits and self.flash_fits

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model, "target": self.target, "mode": self.mode,
            "clock_hz": self.clock_hz, "peak_macs_per_cycle": self.peak_macs_per_cycle,
            "layers": [la.to_json(self.clock_hz) for la in self.layers],
            "total": {
                "macs": self.macs, "instructions": self.instructions,
                "cycles": int(self.cycles),
                "cycles_per_mac": round(self.cycles / self.macs, 4) if self.macs else None,
                "seconds": self.seconds,
                "arena_bytes": self.arena_bytes, "sram_bytes": self.sram_capacity,
                "arena_fits": self.arena_fits,
                "flash_bytes": self.flash_bytes, "flash_capacity_bytes": self.flash_capacity,
                "flash_fits": self.flash_fits, "flash_note": self.flash_note,
                "fits": self.fits,
            },
            "notes": self.notes,
        }


def _layer_base(layer: Any, graph: Graph) -> dict[str, Any]:
    ins = [graph.tensors[t] for t in layer.inputs]
    outs = [graph.tensors[t] for t in layer.outputs]
    return {
        "index": layer.index, "op": layer.op.opcode, "kernel": layer.symbol,
        "isa": layer.spec.isa, "input_shapes": [list(t.shape) for t in ins],
        "output_shapes": [list(t.shape) for t in outs], "macs": int(layer.macs),
        "weight_bytes": int(layer.const_bytes),
        "activation_bytes": int(sum(t.nbytes for t in ins) + sum(t.nbytes for t in outs)),
    }


def _floor(est: LayerEstimate, model: CostModel) -> LayerEstimate:
    """Whole cycles, never fewer than MACs / peak MACs per cycle."""
    floor = est.macs / model.peak_macs_per_cycle
    if est.cycles < floor:
        est.cycles = floor
        est.peak_bound = True
    est.cycles = float(math.ceil(est.cycles - 1e-9))
    return est


class BlockCoster:
    """Decodes and costs the basic blocks of one emulated image (cached per block)."""

    def __init__(self, emu: Any, model: CostModel) -> None:
        self.emu = emu
        self.model = model
        self.arch = emu.arch
        self._ops: dict[tuple[int, int], list[Op]] = {}
        self._cycles: dict[tuple[int, int], tuple[float, float]] = {}

    def ops(self, start: int, n: int) -> list[Op]:
        """The ``n`` instructions of the block at ``start``."""
        key = (start, n)
        if key not in self._ops:
            sizes, a = [], start
            infos = []
            for _ in range(n):
                info = self.emu.instruction(a)
                if info is None:
                    break
                infos.append(info)
                sizes.append(info.size)
                a += info.size
            code = self.emu.read(start, sum(sizes))
            decoded = {d.address: d for d in self.emu.md.disasm(code, start)}
            out = []
            for info in infos:
                d = decoded.get(info.address)
                if d is None:
                    d = next(iter(self.emu.md.disasm(
                        code[info.address - start:info.address - start + info.size],
                        info.address, 1)), None)
                if d is None:
                    out.append(Op(info.address, info.size, info.text, info.cls, "alu", 1, 1,
                                  (), (), (), 0, False, False, "", None, None, False))
                else:
                    out.append(make_op(d, info.cls, self.arch, self.model))
            self._ops[key] = out
        return self._ops[key]

    def cycles(self, start: int, n: int) -> tuple[float, float]:
        """(first, steady) cycles of the block at ``start``."""
        key = (start, n)
        if key not in self._cycles:
            self._cycles[key] = block_cycles(self.ops(start, n), self.model)
        return self._cycles[key]

    def cost(self, counts: dict[str, Any], flash_sites: set[int], weight_bytes: int
             ) -> tuple[float, float, float, int]:
        """(core, branch, memory) cycles and flash bytes read for one call's counts."""
        blocks: dict[int, tuple[int, int]] = counts["blocks"]
        core = 0.0
        last: dict[int, Op] = {}
        flash_bytes = 0
        for start, (n, execs) in blocks.items():
            ops = self.ops(start, n)
            first, steady = self.cycles(start, n)
            core += first + steady * (execs - 1)
            if ops:
                last[start] = ops[-1]
            for op in ops:
                if op.nbytes and op.cls != "store" and (op.address in flash_sites
                                                        or op.pc_relative):
                    flash_bytes += op.nbytes * execs
        taken = taken_branches(blocks, last)
        branch = sum(taken.values()) * self.model.branch_taken_penalty
        memory = 0.0
        m = self.model
        if m.flash_wait_states and flash_bytes:
            footprint = max(weight_bytes, 1)
            if footprint <= m.flash_cache_bytes:
                lines = math.ceil(min(flash_bytes, footprint) / m.flash_line_bytes)
            else:
                lines = math.ceil(flash_bytes / m.flash_line_bytes)
            memory = float(lines * m.flash_wait_states)
        return core, branch, memory, flash_bytes


def _flash_sites(emu: Any, fn: Callable[[], Any], loads: Iterable[int]) -> set[int]:
    """Load instructions whose first execution read the flash region (one hook per site that
    removes itself after its first call, so the run keeps full speed)."""
    import capstone
    from unicorn import UC_HOOK_CODE, arm64_const, arm_const

    mem = emu.elf.memory
    lo, hi = mem.flash_origin, mem.flash_origin + mem.flash_bytes
    consts = arm64_const if emu.arch == "aarch64" else arm_const
    prefix = "UC_ARM64_REG_" if emu.arch == "aarch64" else "UC_ARM_REG_"
    mem_type = capstone.arm64.ARM64_OP_MEM if emu.arch == "aarch64" else capstone.arm.ARM_OP_MEM
    sites: dict[int, int] = {}
    for a in loads:
        info = emu.instruction(a)
        d = next(iter(emu.md.disasm(emu.read(a, info.size), a, 1)), None)
        if d is None:
            continue
        mops = [o for o in d.operands if o.type == mem_type]
        if not mops or not mops[0].mem.base:
            continue
        name = d.reg_name(mops[0].mem.base)
        if name in ("pc",):
            continue
        reg = getattr(consts, prefix + {"sb": "R9", "sl": "R10", "fp": "R11", "ip": "R12",
                                        "wsp": "SP"}.get(name, name.upper()), None)
        if reg is not None:
            sites[a] = reg
    found: set[int] = set()
    handles: dict[int, Any] = {}

    def on_load(uc: Any, address: int, _size: int, _data: Any) -> None:
        if address in handles:
            if lo <= uc.reg_read(sites[address]) < hi:
                found.add(address)
            uc.hook_del(handles.pop(address))

    for a in sites:
        handles[a] = emu.uc.hook_add(UC_HOOK_CODE, on_load, begin=a, end=a)
    emu.uc.ctl_flush_tb()
    try:
        fn()
    finally:
        for h in handles.values():
            emu.uc.hook_del(h)
        emu.uc.ctl_flush_tb()
    return found


@dataclass
class EmulatedRun:
    """What the emulated mode measured: the project, the emulator, counts and flash loads."""

    project: Any
    emu: Any
    counts: dict[int, dict[str, Any]]
    flash_sites: dict[int, set[int]]


def emulate_layers(graph: Graph, target: Target, rounding: str = "double",
                   name: str | None = None, build_root: str | Path | None = None,
                   project: Any = None, flash: bool = True) -> EmulatedRun:
    """Cross-compile, run every layer once (counting) and find its flash-reading loads."""
    from qlane.sim.interpreter import Interpreter

    from .cross import build_elf
    from .emit import generate
    from .emulate import Emulator

    project = project or generate(graph, target, name=name, rounding=rounding)
    elf = build_elf(project, target, build_root)
    emu = Emulator(elf, target, check_alignment=False)
    rng = np.random.default_rng(0)
    inputs = []
    for t in graph.input_tensors:
        dt = np.dtype(t.dtype)
        if dt.kind == "f":
            inputs.append(rng.uniform(-1, 1, (1, *t.shape)).astype(dt))
        else:
            info = np.iinfo(dt)
            inputs.append(rng.integers(info.min, info.max, (1, *t.shape), endpoint=True,
                                       dtype=dt))
    tensors = Interpreter(graph, rounding).run(inputs, keep=True).tensors
    counts: dict[int, dict[str, Any]] = {}
    sites: dict[int, set[int]] = {}
    for layer in project.layers:
        ins = [tensors[t] for t in layer.inputs]
        specs = [(tuple(graph.tensors[t].shape), graph.tensors[t].dtype) for t in layer.outputs]
        _, c = emu.run_layer(layer.index, ins, specs, count_samples=[0])
        counts[layer.index] = c[0]
        if flash:
            loads = [a for start, (n, _) in c[0]["blocks"].items()
                     for a in _addresses(emu, start, n)
                     if (i := emu.instruction(a)) is not None and i.cls == "load"]
            sites[layer.index] = _flash_sites(
                emu, lambda ins=ins, specs=specs, i=layer.index: emu.run_layer(i, ins, specs),
                loads)
        else:
            sites[layer.index] = set()
    return EmulatedRun(project, emu, counts, sites)


def _addresses(emu: Any, start: int, n: int) -> list[int]:
    out, a = [], start
    for _ in range(n):
        info = emu.instruction(a)
        if info is None:
            break
        out.append(a)
        a += info.size
    return out


def estimate_emulated(graph: Graph, target: Target, rounding: str = "double",
                      name: str | None = None, build_root: str | Path | None = None,
                      run: EmulatedRun | None = None) -> Estimate:
    """Emulated counts of every layer, costed block by block with the target's model."""
    model = cost_model(target)
    try:
        run = run or emulate_layers(graph, target, rounding, name, build_root)
    except ImportError as e:
        raise EstimateError(f"emulated mode needs unicorn, capstone, pyelftools and ziglang "
                            f"({e}); or use --mode static") from None
    coster = BlockCoster(run.emu, model)
    layers = []
    for layer in run.project.layers:
        c = run.counts[layer.index]
        base = _layer_base(layer, graph)
        core, branch, memory, fbytes = coster.cost(c, run.flash_sites[layer.index],
                                                   base["weight_bytes"])
        est = LayerEstimate(**base, instructions=int(c["instructions"]),
                            cycles=core + branch + memory, core_cycles=core,
                            branch_cycles=branch, memory_cycles=memory,
                            flash_read_bytes=fbytes, by_class=dict(c["by_class"]))
        layers.append(_floor(est, model))
    elf = run.emu.elf
    return Estimate(
        graph.name, target.name, "emulated", model.clock_hz, layers,
        run.project.plan.arena_bytes, int(elf.flash_bytes),
        "flash image of the cross build: code, constants (weights, biases, multipliers, "
        "tables) and initialised data", model.sram_bytes, model.flash_bytes,
        model.peak_macs_per_cycle, _notes(model))


def _notes(model: CostModel) -> list[str]:
    notes = [f"{model.pipeline} {model.issue_width}-wide pipeline model, "
             f"peak {model.peak_macs_per_cycle:g} MACs/cycle"]
    if model.flash_wait_states:
        notes.append(f"weights in flash: {model.flash_wait_states} wait states per "
                     f"{model.flash_line_bytes}-byte line miss; arena in zero-wait SRAM")
    else:
        notes.append("weights and arena assumed cache-resident (no memory stalls modelled)")
    return notes


# --- static mode -------------------------------------------------------------------------------

def layer_features(layer: Any, graph: Graph) -> dict[str, float]:
    """Shape features of a lowered layer (see FEATURES): ``macs`` counts a pool's window
    additions (outputs x kernel area) too; ``tiles`` are the kernel's tile passes
    (ceil(pixels / rows) x ceil(channels / lanes) for an ``RxT`` tile); ``pixels`` are the
    output positions (outputs / last dimension)."""
    outs = [graph.tensors[t] for t in layer.outputs]
    ins = [graph.tensors[t] for t in layer.inputs]
    n_out = sum(t.size for t in outs)
    n_in = sum(t.size for t in ins)
    spec = parse_symbol(layer.symbol)
    rows, cols = (int(x) for x in spec.tile.split("x"))
    shape = outs[0].shape if outs else (1,)
    channels = int(shape[-1]) if len(shape) else 1
    pixels = max(1, n_out // max(channels, 1))
    tiles = math.ceil(pixels / rows) * math.ceil(channels / cols)
    work = float(layer.macs)
    window = re.match(r"k(\d+)x(\d+)", spec.variant)
    if not work and window:
        work = float(n_out * int(window.group(1)) * int(window.group(2)))
    return {"calls": 1.0, "macs": work, "outputs": float(n_out), "inputs": float(n_in),
            "tiles": float(tiles), "pixels": float(pixels)}


def family(symbol: str) -> str:
    """Kernel family of a layer symbol: ``op.isa`` (``conv2d.dsp``, ``softmax.c``)."""
    spec = parse_symbol(symbol)
    return f"{spec.op}.{spec.isa}"


MAC_OPS = ("conv2d", "dwconv2d", "fc")
"""Kernel ops whose cost follows their MACs; the others (copies, requantizing elementwise ops,
pools, softmax) differ between uint8 and int8 and get per-dtype coefficients."""


def family_keys(symbol: str) -> list[str]:
    """Coefficient keys to try for a layer, most specific first: ``op.isa.1x1`` / ``op.isa.kxk``
    for convolutions (pointwise and spatial kernels differ), ``op.isa.dtype`` (qu8/qs8) for ops
    without MACs, then ``op.isa``, ``default.isa``, ``default``."""
    spec = parse_symbol(symbol)
    fam = f"{spec.op}.{spec.isa}"
    keys = [fam, f"default.{spec.isa}", "default"]
    if spec.op == "conv2d":
        return [f"{fam}.{'1x1' if spec.variant.startswith('k1x1') else 'kxk'}", *keys]
    return keys if spec.op in MAC_OPS else [f"{fam}.{DTYPES[spec.dtype]}", *keys]


def _coefficients(model: CostModel, metric: str, symbol: str) -> tuple[list[float], str]:
    table = model.static.get(metric, {})
    for key in family_keys(symbol):
        if key in table:
            return [float(x) for x in table[key]], key
    raise EstimateError(f"target {model.target} has no static coefficients for "
                        f"{family(symbol)} ({metric}); run bench/calibrate_static.py or use "
                        "--mode emulated")


def static_layer(layer: Any, graph: Graph, model: CostModel) -> LayerEstimate:
    """One layer's static estimate."""
    feats = layer_features(layer, graph)
    x = [feats[f] for f in model.static.get("features", FEATURES)]
    cyc, _ = _coefficients(model, "cycles", layer.symbol)
    ins, _ = _coefficients(model, "instructions", layer.symbol)
    cycles = float(sum(a * b for a, b in zip(cyc, x)))
    instructions = int(round(sum(a * b for a, b in zip(ins, x))))
    return _floor(LayerEstimate(**_layer_base(layer, graph), instructions=instructions,
                                cycles=cycles, core_cycles=cycles), model)


def estimate_static(graph: Graph, target: Target, rounding: str = "double",
                    name: str | None = None, project: Any = None) -> Estimate:
    """Per-layer cycles from shapes and fitted per-family coefficients; no compiler."""
    from .emit import generate

    model = cost_model(target)
    project = project or generate(graph, target, name=name, rounding=rounding)
    layers = [static_layer(layer, graph, model) for layer in project.layers]
    fitted = model.static.get("fitted", "")
    notes = _notes(model) + [f"static coefficients fitted {fitted} by bench/calibrate_static.py"]
    return Estimate(
        graph.name, target.name, "static", model.clock_hz, layers, project.plan.arena_bytes,
        int(project.manifest["flash_bytes"]),
        "constant data (weights, biases, multipliers, tables); code not included in static mode",
        model.sram_bytes, model.flash_bytes, model.peak_macs_per_cycle, notes)


def estimate(graph: Graph, target: Target, mode: str = "emulated", rounding: str = "double",
             name: str | None = None, build_root: str | Path | None = None) -> Estimate:
    """Estimate every layer of ``graph`` on ``target`` in ``mode`` (``static``/``emulated``)."""
    if mode not in MODES:
        raise EstimateError(f"unknown mode {mode!r}; choose static or emulated")
    cost_model(target)  # fail early on targets without a model
    if mode == "static":
        return estimate_static(graph, target, rounding, name)
    return estimate_emulated(graph, target, rounding, name, build_root)


def fit_nonnegative(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least squares on relative error with coefficients >= 0 (active set: drop the most
    negative feature and refit)."""
    w = 1.0 / np.maximum(np.abs(y), 1.0)
    a = x * w[:, None]
    b = y * w
    active = [j for j in range(x.shape[1]) if np.any(x[:, j])]
    coef = np.zeros(x.shape[1])
    while active:
        sol, *_ = np.linalg.lstsq(a[:, active], b, rcond=None)
        if np.all(sol >= 0):
            coef[:] = 0
            coef[active] = sol
            break
        active.pop(int(np.argmin(sol)))
    return coef


# --- llvm-mca validation -----------------------------------------------------------------------

@cache
def find_llvm_mca() -> tuple[str, int] | None:
    """(path, major version) of the best llvm-mca here: 16 preferred, then 14, else None."""
    found = []
    for exe in ("llvm-mca-16", "llvm-mca-15", "llvm-mca", "llvm-mca-14"):
        path = shutil.which(exe)
        if not path:
            continue
        try:
            out = subprocess.run([path, "--version"], capture_output=True, text=True,
                                 timeout=20).stdout
        except (OSError, subprocess.SubprocessError):
            continue
        m = re.search(r"LLVM version (\d+)", out)
        if m:
            found.append((int(m.group(1)), path))
    if not found:
        return None
    major, path = max(found)
    return path, major


_MCA_TRIPLE = {"thumb": "thumbv7em-none-eabi", "aarch64": "aarch64-none-elf"}
_COMMENT = {"thumb": "@", "aarch64": "#"}
_HEX_TARGET = re.compile(r"#?-?0x[0-9a-f]+$")


def _mca_line(op: Op, arch: str, label: str, strip_it: bool, in_it: bool) -> str | None:
    """An instruction in llvm-mca's syntax (branch and page targets become a local label)."""
    text = op.text
    mnemonic, _, ops = text.partition(" ")
    if strip_it and arch == "thumb":
        if re.fullmatch(r"it[te]{0,3}", mnemonic):
            return None
        if in_it:
            mnemonic = re.sub(rf"{_COND}(?=(?:\.[wn])?$)", "", mnemonic, count=1)
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
            iterations: int = 100) -> tuple[list[float | None], list[int]]:
    """llvm-mca cycles per iteration of each block (one run, one code region per block)."""
    found = find_llvm_mca()
    if found is None:
        raise EstimateError("llvm-mca not found (apt-get install llvm-16)")
    exe, _ = found
    c = _COMMENT[arch]
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
    cmd = [exe, f"-mtriple={_MCA_TRIPLE[arch]}", f"-mcpu={mcpu}", f"-iterations={iterations}",
           "-resource-pressure=0", "-instruction-info=0"]
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
    found = find_llvm_mca()
    if found is None:
        raise EstimateError("llvm-mca not found (apt-get install llvm-16)")
    model = cost_model(target)
    run = run or emulate_layers(graph, target, build_root=build_root, flash=False)
    coster = BlockCoster(run.emu, model)
    hot = hot_blocks(run.counts.values(), coverage)
    ops = [coster.ops(s, n) for s, n, _ in hot]
    mca, dropped = run_mca(ops, run.emu.arch, model.mca_cpu, model.mca_strip_it)
    blocks = [McaBlock(s, n, float(e), coster.cycles(s, n)[1], m, d)
              for (s, n, e), m, d in zip(hot, mca, dropped)]
    return McaResult(target.name, f"{Path(found[0]).name} (LLVM {found[1]})", model.mca_cpu,
                     blocks)
