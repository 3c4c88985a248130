"""The pipeline model: instructions reduced to timing facts, scheduled as a loop in steady state.

`make_op` turns a decoded instruction (`qlane.codegen.machine.decode.Insn`) into an `Op` under a
target's `CostModel`; `schedule` simulates back-to-back executions of a block on the target's
issue width and execution units; `block_cycles` gives a block's first and steady-state cycles;
`taken_branches` how often each block's closing branch was taken.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..targets import CostModel

if TYPE_CHECKING:
    from ..machine.decode import Insn

ITERATIONS = 6
"""Back-to-back executions of a block simulated to find its steady state (more for blocks of
fewer than 32 instructions); the steady state is measured over the second half."""


@dataclass(frozen=True)
class Op:
    """One instruction, reduced to what the pipeline model needs."""

    address: int
    size: int
    text: str
    cls: str  # machine.CLASSES
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
    pools: tuple[str, ...] = ()  # unit pools it needs, when not its kind's (`_POOLS`)
    issue: int = 0  # cycles before a single-issue core issues the next one (0: occupancy)


COND = r"(?:eq|ne|cs|hs|cc|lo|mi|pl|vs|vc|hi|ls|ge|lt|gt|le)"
"""An Arm condition suffix (regular expression)."""
_THUMB_CBRANCH = re.compile(rf"^b{COND}(?:\.[wn])?$")
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
_MVE_MEM = re.compile(r"^v(?:ldr|str)([bhwd])[te]?$")
"""MVE contiguous vector loads/stores (VLDRB.U16 q0: eight bytes widened into 16-bit lanes)."""
_LOOP_SETUP = ("dls", "dlstp", "lctp")
"""Armv8.1-M low-overhead loop set-up: no branch taken."""
_LOOP_BRANCH = ("le", "letp", "wls", "wlstp")
"""Armv8.1-M loop ends (taken while iterations remain) and while-loop starts."""


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
    mve = _MVE_MEM.match(m)
    if mve and re.match(r"q\d+\b", ops.strip()):  # contiguous MVE: 16 bytes, less if widening
        lane = re.search(r"\.[usif]?(\d+)$", mnemonic)
        lane_bits = int(lane.group(1)) if lane else 0
        mem_bits = {"b": 8, "h": 16, "w": 32, "d": 64}[mve.group(1)]
        return 16 * mem_bits // lane_bits if lane_bits > mem_bits else 16
    if re.match(r"^v(?:ld|st)[24][0-3]$", m):  # VLD2x/VLD4x, VST2x/VST4x: 16 bytes each
        return 16
    if m.startswith(("vldr", "vstr")):
        return _reg_bytes(ops.split(",")[0], arch)
    return 4


def make_op(insn: Insn, arch: str, model: CostModel) -> Op:
    """Timing facts of one decoded instruction of ``arch`` under ``model``."""
    cls = insn.cls
    if not insn.known:
        return Op(insn.address, insn.size, insn.text, cls, "alu", 1, 1, (), (), (), 0, False,
                  False, "", None, None, False)
    mnemonic = insn.mnemonic
    ops = insn.ops
    name = insn.name
    reads = list(insn.reads)
    writes = list(insn.writes)
    if arch == "aarch64" and name in _A64_CMP:  # capstone lists the compared register as written
        reads += [w for w in writes if w != "nzcv"]
        writes = [w for w in writes if w == "nzcv"]
    if arch == "thumb" and name.startswith(_LONG_ACC):  # 64-bit accumulator is also read
        reads += writes
    if arch == "aarch64" and (_A64_MERGE.match(mnemonic) or re.search(r"\}?\[\d+\]", ops.split(
            ",")[0]) and cls != "store"):  # writes part of its destination: reads the rest
        reads += [w for w in writes if re.fullmatch(r"[bhsdqv]\d+", w)]
    base = insn.base
    pc_relative = base == "pc" or (arch == "aarch64" and cls == "load" and not insn.mem)
    vector = bool(_VEC_ANY.search(ops)) if arch == "aarch64" else bool(
        re.search(r"\bq\d+\b", ops))
    q_form = bool(_VEC_Q.search(ops))
    branch = ""
    if cls == "branch":
        if name in ("bl", "blx"):
            branch = "call"
        elif arch == "thumb" and name in _LOOP_SETUP:
            branch = ""
        elif arch == "thumb" and name in _LOOP_BRANCH:
            branch = "cond" if name != "le" or ops.startswith("lr") else "always"
        elif (arch == "aarch64" and (mnemonic.startswith("b.") or name in (
                "cbz", "cbnz", "tbz", "tbnz"))) or (arch == "thumb" and (
                _THUMB_CBRANCH.match(mnemonic) or name in ("cbz", "cbnz") or insn.conditional)):
            branch = "cond"
        else:
            branch = "always"
    if cls == "branch":
        kind = "branch"
    elif cls in ("load", "store"):
        kind = cls
    elif cls == "mac":
        kind = "vmac" if vector else "mul"
    elif arch == "aarch64" and (cls == "simd" or vector):
        kind = "vec"
    elif arch == "thumb" and cls == "simd" and vector:  # Helium (MVE) on q registers
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
    pools: tuple[str, ...] = ()
    issue = 0
    if model.beats and arch == "thumb":
        vector_mem = kind in ("load", "store") and q_form
        if vector_mem:
            occupancy = model.q_occupancy
            latency = lat.get("vload", latency) if kind == "load" else latency
        if vector_mem or (kind in ("vmac", "vec") and q_form):
            issue = 1
        if kind == "vmac" and any(re.fullmatch(r"r\d+|ip|lr", w) for w in writes):
            latency = lat.get("vreduce", latency)  # across the vector into a core register
        pools = {"vmac": ("neon_mac",), "load": ("load",) if vector_mem else ("alu",),
                 "store": ("load",) if vector_mem else ("alu",)}.get(kind, ())
    norm_r = tuple(dict.fromkeys(r for x in reads for r in _norm_reg(x, arch)))
    norm_w = tuple(dict.fromkeys(r for x in writes for r in _norm_reg(x, arch)))
    fast: tuple[str, ...] = ()
    if cls in ("load", "store") and base and base not in ("pc",):
        b = _norm_reg(base, arch)
        fast = tuple(r for r in norm_w if r in b and (insn.writeback or cls == "store"))
    accumulates = (kind in ("mul", "vmac") and bool(_ACCUMULATE.match(name))
                   and any(w in norm_r for w in norm_w))
    return Op(insn.address, insn.size, insn.text, cls, kind, max(1, occupancy), max(1, latency),
              norm_r, norm_w, fast, nbytes, single_load, accumulates, branch, insn.target, base,
              pc_relative, pools, issue)


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
            pools = [units[p] for p in (op.pools or _POOLS[op.kind]) if p in units]
            t, picks = _start(pools, t, occ)
            for u in picks:
                u.take(t, occ)
            if in_order:
                n_same = n_same + 1 if t == t_prev else 1
                t_prev = t
                if width == 1:
                    block_until = t + (op.issue or occ)
            for w in op.writes:
                ready[w] = t + (1 if w in op.fast_writes else op.latency)
                if op.accumulates:
                    acc_ready[w] = t + lat_acc
                else:
                    acc_ready.pop(w, None)
            end = t + ((op.issue or occ) if width == 1 else 1)
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
