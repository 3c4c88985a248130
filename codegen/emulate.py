"""Run a cross-compiled project on an emulated Arm core (unicorn) and count what it executes.

The emulator tier of verification: `Emulator` loads an `ElfImage` into a unicorn CPU of the
target's exact model (Cortex-M4/M7 in Thumb mode, Cortex-A53/A72 in AArch64), so an instruction
the chip lacks faults and is named. Layers and whole-model calls return to a sentinel address; one
`Emulator` serves any number of calls. With counting on, a block hook records unicorn's translated
blocks, which are turned into per-instruction counts, capstone classes and real basic blocks.
`emulate_verify` compares every layer and the whole model with the simulator.
"""

from __future__ import annotations

import ctypes
import hashlib
import re
import subprocess
import tempfile
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import capstone
import numpy as np
from unicorn import (
    UC_ARCH_ARM,
    UC_ARCH_ARM64,
    UC_ERR_EXCEPTION,
    UC_ERR_INSN_INVALID,
    UC_HOOK_BLOCK,
    UC_HOOK_CODE,
    UC_HOOK_MEM_INVALID,
    UC_MODE_ARM,
    UC_MODE_THUMB,
    UC_PROT_ALL,
    UC_PROT_EXEC,
    UC_PROT_READ,
    UC_PROT_WRITE,
    Uc,
    UcError,
    arm64_const,
    arm_const,
)

from qlane.sim.graph import Graph
from qlane.sim.interpreter import Interpreter

from .cross import SENTINEL, ElfImage, build_elf, load_elf, zig_command
from .emit import Project, generate
from .targets import Target
from .verify import LayerResult, Mismatch, Report

PAGE = 0x1000
EXT_RAM = 0x6000_0000
"""Emulator-only memory for buffers that do not fit the chip's RAM (like external SDRAM)."""
EXT_CHUNK = 1 << 20
GUARD = 16
GUARD_BYTE = 0xE7
FILL_BYTE = 0xA5
STACK_FILL = 0xCD
CLASSES = ("mac", "simd", "load", "store", "branch", "other")
"""Instruction classes of the counts; every executed instruction is in exactly one."""

Spec = tuple[tuple[int, ...], Any]
"""An output's (shape, dtype)."""
Counts = dict[str, Any]
"""``{"instructions": n, "by_class": {cls: n}, "blocks": {addr: (n_insns, execs)},
"stack_bytes": n}`` for one call."""


class EmulationError(RuntimeError):
    """The emulated code faulted, did not return, returned an error or broke a buffer."""


# --- instruction classes -------------------------------------------------------------------

_ARM_MAC = ("mul", "mla", "mls", "smul", "smla", "smls", "smmul", "smmla", "smmls", "smua",
            "smus", "umul", "umla", "umaal", "vmul", "vmla", "vmls", "vfma", "vfms", "vfnma",
            "vfnms", "vnmul", "vnmla", "vnmls", "vqdmul", "vqrdmul", "vqdmla", "vqdmls",
            "vqrdmla", "vqrdmls", "vsdot", "vudot", "vusdot", "vsudot")
_ARM_SIMD32 = re.compile(r"^(?:[su]|q|sh|uq|uh)(?:add8|add16|sub8|sub16|asx|sax)$"
                         r"|^[su]xta?b16$|^[su]sat16$|^sel$|^pkh(?:bt|tb)$|^usada?8$")
_A64_MAC = ("mul", "madd", "msub", "mneg", "smaddl", "smsubl", "smnegl", "smul", "umaddl",
            "umsubl", "umnegl", "umul", "mla", "mls", "smla", "smls", "umla", "umls", "sqdmul",
            "sqrdmul", "sqdml", "sqrdml", "pmul", "fmul", "fmla", "fmls", "fmadd", "fmsub",
            "fnmadd", "fnmsub", "fnmul", "sdot", "udot", "usdot", "sudot", "smmla", "ummla",
            "usmmla", "bfdot", "bfmmla", "bfmla", "fdot")
_A64_VREG = re.compile(r"\bv\d+\.|\bz\d+\.")
_ALIGNED_M = re.compile(r"^(?:ldrd|strd|ldrex|strex|ldm|stm|vldr|vstr|vldm|vstm)")
"""Cortex-M loads/stores that fault on an address that is not word aligned (ARMv7-M A3.2)."""
_PC_LIST = re.compile(r"\{[^}]*\bpc\b[^}]*\}")


@dataclass(frozen=True)
class Insn:
    """One decoded instruction: size, class, whether it ends a basic block, static target."""

    address: int
    size: int
    text: str
    cls: str
    flow: bool
    target: int | None


def _classify(insn: Any, arch: str) -> tuple[str, bool, int | None]:
    name = insn.insn_name() or insn.mnemonic.split(".")[0]
    groups = set(insn.groups)
    ops = insn.op_str
    flow = bool(groups & {capstone.CS_GRP_JUMP, capstone.CS_GRP_CALL, capstone.CS_GRP_RET,
                          capstone.CS_GRP_BRANCH_RELATIVE})
    if arch == "thumb" and not flow:
        if name in ("tbb", "tbh"):
            flow = True
        elif name in ("pop", "ldm", "ldmdb", "ldmia") and _PC_LIST.search(ops):
            flow = True
        elif name in ("ldr", "mov", "add", "sub") and ops.startswith("pc,"):
            flow = True
    target = None
    if flow and insn.operands and insn.operands[-1].type == capstone.CS_OP_IMM:
        target = int(insn.operands[-1].imm)
    if flow:
        return "branch", True, target
    if arch == "thumb":
        if name.startswith(_ARM_MAC):
            cls = "mac"
        elif name.startswith(("ld", "vld")) or name in ("pop", "vpop"):
            cls = "load"
        elif name.startswith(("st", "vst")) or name in ("push", "vpush"):
            cls = "store"
        elif _ARM_SIMD32.match(name) or (name.startswith("v") and re.search(r"\bq\d+\b", ops)):
            cls = "simd"
        else:
            cls = "other"
    else:
        if name.startswith(_A64_MAC):
            cls = "mac"
        elif name.startswith("ld"):
            cls = "load"
        elif name.startswith("st"):
            cls = "store"
        elif _A64_VREG.search(ops):
            cls = "simd"
        else:
            cls = "other"
    return cls, False, None


def _capstone(arch: str) -> capstone.Cs:
    if arch == "thumb":
        md = capstone.Cs(capstone.CS_ARCH_ARM,
                         capstone.CS_MODE_THUMB | capstone.CS_MODE_MCLASS | capstone.CS_MODE_V8)
    else:
        md = capstone.Cs(capstone.CS_ARCH_ARM64, capstone.CS_MODE_ARM)
    md.detail = True
    return md


# --- native block counter ------------------------------------------------------------------

_COUNTER_C = r"""
#include <stdint.h>
/* Open-addressing table of (translated block address, size) -> executions, filled by unicorn's
 * UC_HOOK_BLOCK without a trip through Python. */
typedef struct {
    uint64_t *keys;
    uint64_t *counts;
    uint64_t mask;
    uint64_t used;
    uint64_t lost;
} qlane_tb_table;

void qlane_count_block(void *uc, uint64_t address, uint32_t size, void *user)
{
    qlane_tb_table *t = (qlane_tb_table *)user;
    const uint64_t key = ((address << 16) | (size & 0xFFFFu)) + 1u;
    uint64_t i = (key * 0x9E3779B97F4A7C15ull) >> 20;
    (void)uc;
    for (;;) {
        i &= t->mask;
        if (t->keys[i] == key) {
            t->counts[i]++;
            return;
        }
        if (t->keys[i] == 0u) {
            if (4u * (t->used + 1u) > 3u * (t->mask + 1u)) {
                t->lost++;
                return;
            }
            t->keys[i] = key;
            t->counts[i] = 1u;
            t->used++;
            return;
        }
        i++;
    }
}

/* UC_HOOK_CODE on one alignment-sensitive load/store: stop at the first base register that is
 * not word aligned (Cortex-M faults there; unicorn does not). */
typedef int (*qlane_reg_read_fn)(void *uc, int regid, void *value);
typedef int (*qlane_emu_stop_fn)(void *uc);
typedef struct {
    qlane_reg_read_fn reg_read;
    qlane_emu_stop_fn emu_stop;
    uint64_t bad_address;
    uint64_t bad_base;
    uint64_t checked;
} qlane_align_state;
typedef struct {
    int32_t reg;
    uint32_t pad;
    qlane_align_state *state;
} qlane_align_site;

void qlane_check_align(void *uc, uint64_t address, uint32_t size, void *user)
{
    const qlane_align_site *site = (const qlane_align_site *)user;
    qlane_align_state *st = site->state;
    uint64_t base = 0u;
    (void)size;
    st->checked++;
    if (st->bad_address != 0u || st->reg_read(uc, site->reg, &base) != 0) {
        return;
    }
    if ((base & 3u) != 0u) {
        st->bad_address = address;
        st->bad_base = base & 0xFFFFFFFFu;
        st->emu_stop(uc);
    }
}
"""


class _Table(ctypes.Structure):
    _fields_ = [("keys", ctypes.c_void_p), ("counts", ctypes.c_void_p), ("mask", ctypes.c_uint64),
                ("used", ctypes.c_uint64), ("lost", ctypes.c_uint64)]


class _AlignState(ctypes.Structure):
    _fields_ = [("reg_read", ctypes.c_void_p), ("emu_stop", ctypes.c_void_p),
                ("bad_address", ctypes.c_uint64), ("bad_base", ctypes.c_uint64),
                ("checked", ctypes.c_uint64)]


class _AlignSite(ctypes.Structure):
    _fields_ = [("reg", ctypes.c_int32), ("pad", ctypes.c_uint32), ("state", ctypes.c_void_p)]


@dataclass(frozen=True)
class _Native:
    """Host-compiled hook callbacks and the unicorn C API they are registered through."""

    count_block: int
    check_align: int
    uclib: Any
    hook_h: Any

    def hook_add(self, uc: Uc, kind: int, fn: int, user: int, begin: int = 1,
                 end: int = 0) -> Any:
        handle = self.hook_h()
        err = self.uclib.uc_hook_add(uc._uch, ctypes.byref(handle), kind, ctypes.c_void_p(fn),
                                     ctypes.c_void_p(user), ctypes.c_uint64(begin),
                                     ctypes.c_uint64(end))
        if err:
            raise UcError(err)
        return handle

    def hook_del(self, uc: Uc, handle: Any) -> None:
        self.uclib.uc_hook_del(uc._uch, handle)


@cache
def _native() -> _Native | None:
    """The hooks compiled for the host with zig cc (None: fall back to Python callbacks)."""
    digest = hashlib.sha256(_COUNTER_C.encode()).hexdigest()[:16]
    out = Path(tempfile.gettempdir()) / "qlane-cross" / f"emuhooks-{digest}.so"
    try:
        if not out.exists():
            out.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(prefix=".emuhooks-", dir=out.parent) as work:
                src, tmp = Path(work) / "emuhooks.c", Path(work) / out.name
                src.write_text(_COUNTER_C)
                subprocess.run([*zig_command(), "cc", "-shared", "-fPIC", "-O2", "-nostdlib",
                                str(src), "-o", str(tmp)], check=True, capture_output=True)
                tmp.replace(out)  # atomic: concurrent builders agree
        lib = ctypes.CDLL(str(out))
        from unicorn.unicorn_py3.unicorn import uc_hook_h, uclib

        def addr(f: Any) -> int:
            return int(ctypes.cast(f, ctypes.c_void_p).value or 0)

        return _Native(addr(lib.qlane_count_block), addr(lib.qlane_check_align), uclib,
                       uc_hook_h)
    except (OSError, subprocess.CalledProcessError, ImportError, AttributeError):
        return None


class _BlockCounter:
    """Counts executions of unicorn's translated blocks during one call."""

    def __init__(self, uc: Uc, bits: int = 16) -> None:
        self.uc = uc
        self.native = _native()
        self.handle: Any = None
        self.py: Counter[tuple[int, int]] = Counter()
        self._alloc(bits)

    def _alloc(self, bits: int) -> None:
        self.keys = np.zeros(1 << bits, np.uint64)
        self.counts = np.zeros(1 << bits, np.uint64)
        self.table = _Table(self.keys.ctypes.data, self.counts.ctypes.data, (1 << bits) - 1, 0, 0)

    def start(self) -> None:
        if self.native is not None:
            self.handle = self.native.hook_add(self.uc, UC_HOOK_BLOCK, self.native.count_block,
                                               ctypes.addressof(self.table))
        else:
            py = self.py

            def on_block(_uc: Uc, address: int, size: int, _data: Any) -> None:
                py[(address, size)] += 1

            self.handle = self.uc.hook_add(UC_HOOK_BLOCK, on_block)
        self.uc.ctl_flush_tb()  # code translated without the hook would not report its blocks

    def stop(self) -> None:
        if self.handle is None:
            return
        if self.native is not None:
            self.native.hook_del(self.uc, self.handle)
        else:
            self.uc.hook_del(self.handle)
        self.handle = None
        self.uc.ctl_flush_tb()  # retranslate without the hook: full speed again

    def take(self) -> Counter[tuple[int, int]] | None:
        """The counts since ``start`` (None if the table overflowed; it is enlarged)."""
        if self.native is None:
            out, self.py = self.py, Counter()
            return out
        if self.table.lost:
            self._alloc(int(self.keys.size).bit_length() + 1)
            return None
        idx = np.flatnonzero(self.keys)
        keys = self.keys[idx] - np.uint64(1)
        out = Counter({(int(k) >> 16, int(k) & 0xFFFF): int(n)
                       for k, n in zip(keys, self.counts[idx])})
        self.keys[idx] = 0
        self.counts[idx] = 0
        self.table.used = 0
        return out


# --- the emulator --------------------------------------------------------------------------

@dataclass(frozen=True)
class _Regs:
    args: tuple[int, ...]
    sp: int
    lr: int
    pc: int
    ret: int
    ptr: int


_THUMB_REGS = _Regs((arm_const.UC_ARM_REG_R0, arm_const.UC_ARM_REG_R1, arm_const.UC_ARM_REG_R2,
                     arm_const.UC_ARM_REG_R3), arm_const.UC_ARM_REG_SP,
                    arm_const.UC_ARM_REG_LR, arm_const.UC_ARM_REG_PC, arm_const.UC_ARM_REG_R0, 4)
_A64_REGS = _Regs(tuple(getattr(arm64_const, f"UC_ARM64_REG_X{i}") for i in range(8)),
                  arm64_const.UC_ARM64_REG_SP, arm64_const.UC_ARM64_REG_X30,
                  arm64_const.UC_ARM64_REG_PC, arm64_const.UC_ARM64_REG_X0, 8)


def _page_down(a: int) -> int:
    return a & ~(PAGE - 1)


def _page_up(a: int) -> int:
    return (a + PAGE - 1) & ~(PAGE - 1)


class Emulator:
    """A linked image loaded into one unicorn CPU of the target's model; call it many times."""

    def __init__(self, elf: ElfImage | str | Path, target: Target, *,
                 timeout_s: float = 0.0, check_alignment: bool = True) -> None:
        self.elf = elf if isinstance(elf, ElfImage) else load_elf(elf, target)
        self.target = target
        self.arch = self.elf.arch
        self.thumb = 1 if self.arch == "thumb" else 0
        self.regs = _THUMB_REGS if self.thumb else _A64_REGS
        self.timeout_us = int(timeout_s * 1e6)
        self.check_alignment = check_alignment
        self._align_sites: dict[int, int | None] = {}
        self.cpu = target.unicorn_cpu
        if self.thumb:
            self.uc = Uc(UC_ARCH_ARM, UC_MODE_THUMB)
            model = getattr(arm_const, f"UC_CPU_ARM_{self.cpu}", None)
        else:
            self.uc = Uc(UC_ARCH_ARM64, UC_MODE_ARM)
            model = getattr(arm64_const, f"UC_CPU_ARM64_{self.cpu}", None)
        if model is None:
            raise EmulationError(f"target {target.name}: unicorn has no CPU model "
                                 f"{self.cpu!r} for {self.arch}")
        self.uc.ctl_set_cpu_model(model)
        self.md = _capstone(self.arch)
        self._insns: dict[int, Insn] = {}
        self._tb_decoded: dict[tuple[int, int], tuple[Insn, ...]] = {}
        self._bad_access: tuple[int, int, int] | None = None
        self._map()
        self.uc.hook_add(UC_HOOK_MEM_INVALID, self._on_bad_access)
        self._counter = _BlockCounter(self.uc)

    # memory ---------------------------------------------------------------------------------

    def _map(self) -> None:
        mem = self.elf.memory
        uc = self.uc
        ram_lo, ram_hi = mem.ram_origin, _page_up(mem.ram_origin + mem.ram_bytes)
        flash_lo = mem.flash_origin
        flash_hi = flash_lo
        other: list[tuple[int, int]] = []
        for seg in self.elf.segments:
            lo, hi = seg.vaddr, seg.vaddr + seg.memsz
            if flash_lo <= lo and hi <= flash_lo + mem.flash_bytes:
                flash_hi = max(flash_hi, hi)
            elif not (ram_lo <= lo and hi <= ram_hi):
                other.append((_page_down(lo), _page_up(hi)))
        uc.mem_map(flash_lo, max(_page_up(flash_hi) - flash_lo, PAGE),
                   UC_PROT_READ | UC_PROT_EXEC)
        uc.mem_map(ram_lo, ram_hi - ram_lo, UC_PROT_READ | UC_PROT_WRITE)
        for lo, hi in other:
            uc.mem_map(lo, hi - lo, UC_PROT_ALL)
        uc.mem_map(SENTINEL, PAGE, UC_PROT_READ | UC_PROT_EXEC)
        for seg in self.elf.segments:
            uc.mem_write(seg.vaddr, seg.data)
        syms = self.elf.symbols
        self.stack_top = syms["__stack_top"].addr if "__stack_top" in syms else ram_hi
        self.stack_limit = (syms["__stack_limit"].addr if "__stack_limit" in syms
                            else self.stack_top - mem.stack_bytes)
        ram_end = max([s.vaddr + s.memsz for s in self.elf.segments
                       if ram_lo <= s.vaddr < ram_hi] or [ram_lo])
        self.heap_start = (syms["__heap_start"].addr if "__heap_start" in syms
                           else (ram_end + 15) & ~15)
        self._heap = self.heap_start
        self._ext = EXT_RAM
        self._ext_mapped = EXT_RAM
        self._stack_fill = bytes([STACK_FILL]) * (self.stack_top - self.stack_limit)

    def alloc(self, nbytes: int, align: int = 16) -> int:
        """Reserve ``nbytes`` of RAM (chip RAM first, then emulator-only memory)."""
        nbytes = max(int(nbytes), 1)
        a = (self._heap + align - 1) & ~(align - 1)
        if a + nbytes <= self.stack_limit:
            self._heap = a + nbytes
            return a
        a = (self._ext + align - 1) & ~(align - 1)
        end = a + nbytes
        if end > self._ext_mapped:
            grow = (end - self._ext_mapped + EXT_CHUNK - 1) // EXT_CHUNK * EXT_CHUNK
            self.uc.mem_map(self._ext_mapped, grow, UC_PROT_READ | UC_PROT_WRITE)
            self._ext_mapped += grow
        self._ext = end
        return a

    def free_all(self) -> None:
        """Forget every allocation (buffers are reused by the next calls)."""
        self._heap = self.heap_start
        self._ext = EXT_RAM

    def write(self, addr: int, data: bytes | np.ndarray) -> None:
        """Copy bytes (or an array's bytes) into emulated memory."""
        if isinstance(data, np.ndarray):
            data = np.ascontiguousarray(data).tobytes()
        self.uc.mem_write(addr, bytes(data))

    def read(self, addr: int, nbytes: int) -> bytes:
        """Copy bytes out of emulated memory."""
        return bytes(self.uc.mem_read(addr, nbytes))

    def patch(self, addr: int, data: bytes) -> None:
        """Overwrite code or constants in the loaded image (drops translated code there)."""
        self.uc.mem_write(addr, data)
        self.uc.ctl_remove_cache(addr, addr + len(data))
        for cache_ in (self._insns, self._align_sites):
            for a in [a for a in cache_ if addr - 4 < a < addr + len(data)]:
                del cache_[a]
        self._tb_decoded.clear()

    def _pointers(self, addrs: Sequence[int]) -> int:
        ptr = self.regs.ptr
        base = self.alloc(ptr * max(len(addrs), 1), ptr)
        self.write(base, b"".join(int(a).to_bytes(ptr, "little") for a in addrs) or bytes(ptr))
        return base

    # calls ----------------------------------------------------------------------------------

    def _on_bad_access(self, uc: Uc, access: int, address: int, size: int, value: int,
                       data: Any) -> bool:
        self._bad_access = (access, address, size)
        return False

    def describe(self, addr: int) -> str:
        """``0xADDR (function+0xOFF): mnemonic operands`` for a code address."""
        where = self.elf.function_at(addr)
        loc = f"0x{addr:08x}" + (f" ({where[0]}+0x{where[1]:x})" if where else "")
        try:
            code = self.read(addr, 4)
        except UcError:
            return f"{loc}: <unmapped>"
        for insn in self.md.disasm(code, addr, 1):
            return f"{loc}: {insn.mnemonic} {insn.op_str}".rstrip() + f" [{insn.bytes.hex()}]"
        return f"{loc}: <undecodable {code.hex()}>"

    def call(self, fn: str | int, args: Sequence[int] = (), *, count: bool = False,
             exclude: Sequence[str] = (), check_alignment: bool | None = None
             ) -> tuple[int, Counts | None]:
        """Call ``fn(*args)`` (integers / pointers) and return its int32 result and counts.

        With ``count``, instructions inside the functions named in ``exclude`` are left out of
        the counts, and (on Cortex-M, unless ``check_alignment`` is False) the call is run once
        more with every executed alignment-sensitive load/store checked.
        """
        addr = self.elf.address(fn) if isinstance(fn, str) else int(fn)
        label = fn if isinstance(fn, str) else f"0x{addr:08x}"
        if len(args) > len(self.regs.args):
            raise EmulationError(f"{label}: only {len(self.regs.args)} register arguments")
        counts = None
        if count:
            tbs = None
            while tbs is None:  # None: the block table overflowed and was enlarged
                self.uc.mem_write(self.stack_limit, self._stack_fill)
                self._counter.start()
                try:
                    self._run(addr, args, label)
                finally:
                    self._counter.stop()
                tbs = self._counter.take()
            per = self._per_insn(tbs)
            counts = self._counts(per, exclude)
            counts["stack_bytes"] = self._stack_used(label)
            check = self.check_alignment if check_alignment is None else check_alignment
            if check and self.thumb:
                self._check_alignment(addr, args, label, per)
        else:
            self._run(addr, args, label)
        ret = self.uc.reg_read(self.regs.ret) & 0xFFFF_FFFF
        return (ret - (1 << 32) if ret & 0x8000_0000 else ret), counts

    def _run(self, addr: int, args: Sequence[int], label: str,
             stopped: Callable[[], bool] | None = None) -> None:
        uc, regs = self.uc, self.regs
        for reg, value in zip(regs.args, args):
            uc.reg_write(reg, int(value) & ((1 << (8 * regs.ptr)) - 1))
        uc.reg_write(regs.sp, self.stack_top)
        uc.reg_write(regs.lr, SENTINEL | self.thumb)
        self._bad_access = None
        try:
            uc.emu_start(addr | self.thumb, SENTINEL, timeout=self.timeout_us)
        except UcError as e:
            raise self._fault(e, label) from None
        pc = uc.reg_read(regs.pc)
        if pc != SENTINEL and not (stopped and stopped()):
            raise EmulationError(f"{self.target.name}: {label} did not return (timeout); "
                                 f"stopped at {self.describe(pc)}")

    def _align_base(self, addr: int) -> int | None:
        """Unicorn register id of the base of an alignment-sensitive access at ``addr``."""
        if addr not in self._align_sites:
            code = self.read(addr, 4)
            dec = next(iter(self.md.disasm(code, addr, 1)), None)
            reg = None
            if dec is not None and _ALIGNED_M.match(dec.insn_name() or ""):
                mem = [o for o in dec.operands if o.type == capstone.CS_OP_MEM]
                base = mem[0].mem.base if mem else dec.operands[0].reg
                name = dec.reg_name(base) if base else None
                if name and name not in ("sp", "pc"):
                    reg = getattr(arm_const, f"UC_ARM_REG_{name.upper()}", None)
            self._align_sites[addr] = reg
        return self._align_sites[addr]

    def _check_alignment(self, addr: int, args: Sequence[int], label: str,
                         executed: Counter[int]) -> None:
        sites = {a: r for a in executed if (r := self._align_base(a)) is not None}
        if not sites:
            return
        bad: list[tuple[int, int]] = []
        native = self._counter.native
        if native is not None:
            state = _AlignState(
                ctypes.cast(native.uclib.uc_reg_read, ctypes.c_void_p).value,
                ctypes.cast(native.uclib.uc_emu_stop, ctypes.c_void_p).value, 0, 0, 0)
            cells = (_AlignSite * len(sites))(
                *(_AlignSite(reg, 0, ctypes.addressof(state)) for reg in sites.values()))
            hooks = [native.hook_add(self.uc, UC_HOOK_CODE, native.check_align,
                                     ctypes.addressof(cells[i]), a, a)
                     for i, a in enumerate(sites)]

            def stopped() -> bool:
                return state.bad_address != 0

            def remove() -> None:
                for h in hooks:
                    native.hook_del(self.uc, h)
                if state.bad_address:
                    bad.append((int(state.bad_address), int(state.bad_base)))
        else:
            def on_insn(uc: Uc, address: int, _size: int, _data: Any) -> None:
                base = uc.reg_read(sites[address])
                if base & 3 and not bad:
                    bad.append((address, base))
                    uc.emu_stop()

            py_hooks = [self.uc.hook_add(UC_HOOK_CODE, on_insn, begin=a, end=a) for a in sites]

            def stopped() -> bool:
                return bool(bad)

            def remove() -> None:
                for h in py_hooks:
                    self.uc.hook_del(h)

        self.uc.ctl_flush_tb()
        try:
            self._run(addr, args, label, stopped)
        finally:
            remove()
            self.uc.ctl_flush_tb()
        if bad:
            at, base = bad[0]
            raise EmulationError(
                f"{self.target.name}: {label}: unaligned access at {self.describe(at)} (base "
                f"0x{base:08x}); a real {self.target.name} raises a UsageFault there (unicorn "
                "does not)")

    def _fault(self, err: UcError, label: str) -> EmulationError:
        pc = self.uc.reg_read(self.regs.pc)
        msg = f"{self.target.name} (unicorn {self.cpu}): {err} in {label} at {self.describe(pc)}"
        if self._bad_access is not None:
            _, address, size = self._bad_access
            msg += f"; bad {size}-byte access at 0x{address:08x}"
        elif err.errno in (UC_ERR_INSN_INVALID, UC_ERR_EXCEPTION):
            msg += f" (an instruction this {self.target.name} does not implement, or a trap)"
        return EmulationError(msg)

    def _stack_used(self, label: str) -> int:
        used = self.read(self.stack_limit, self.stack_top - self.stack_limit)
        first = len(used) - len(used.lstrip(bytes([STACK_FILL])))
        if first == 0:
            raise EmulationError(f"{self.target.name}: {label} used all "
                                 f"{len(used)} reserved stack bytes (stack overflow?)")
        return len(used) - first

    # counting -------------------------------------------------------------------------------

    def _decode_tb(self, address: int, size: int) -> tuple[Insn, ...]:
        key = (address, size)
        if key in self._tb_decoded:
            return self._tb_decoded[key]
        out: list[Insn] = []
        a, end = address, address + size
        code = self.read(address, size)
        # one pass over the block, so capstone sees IT instructions and the conditions they set
        decoded = {d.address: d for d in self.md.disasm(code, address)}
        while a < end:
            insn = self._insns.get(a)
            if insn is None:
                dec = decoded.get(a) or next(iter(self.md.disasm(code[a - address:], a, 1)),
                                             None)
                if dec is None:
                    word = code[a - address:a - address + 4]
                    step = 4 if not self.thumb or word[1] >> 3 in (0x1D, 0x1E, 0x1F) else 2
                    insn = Insn(a, step, f"<unknown {word[:step].hex()}>", "other", False, None)
                else:
                    cls, flow, target = _classify(dec, self.arch)
                    insn = Insn(a, dec.size, f"{dec.mnemonic} {dec.op_str}".rstrip(), cls, flow,
                                target)
                self._insns[a] = insn
            out.append(insn)
            a += insn.size
        self._tb_decoded[key] = tuple(out)
        return self._tb_decoded[key]

    def instruction(self, addr: int) -> Insn | None:
        """The decoded instruction at ``addr``, if it was ever counted."""
        return self._insns.get(addr)

    def _per_insn(self, tbs: Counter[tuple[int, int]]) -> Counter[int]:
        """Executions per instruction address from executions per translated block."""
        per: Counter[int] = Counter()
        for (address, size), n in tbs.items():
            if address == SENTINEL or size <= 0:
                continue
            for insn in self._decode_tb(address, size):
                per[insn.address] += n
        return per

    def _counts(self, per: Counter[int], exclude: Sequence[str]) -> Counts:
        skip = []
        for name in exclude:
            s = self.elf.symbols.get(name)
            if s is not None:
                skip.append((s.addr, s.addr + max(s.size, 1)))
        per = Counter(per)
        if skip:
            for a in [a for a in per if any(lo <= a < hi for lo, hi in skip)]:
                del per[a]
        by_class = dict.fromkeys(CLASSES, 0)
        for a, n in per.items():
            by_class[self._insns[a].cls] += n
        return {"instructions": sum(per.values()), "by_class": by_class,
                "blocks": self._basic_blocks(per)}

    def _basic_blocks(self, per: Counter[int]) -> dict[int, tuple[int, int]]:
        """Real basic blocks from per-instruction counts: {start: (instructions, executions)}."""
        targets = {i.target for a in per if (i := self._insns[a]).target is not None}
        blocks: dict[int, tuple[int, int]] = {}
        start = prev = None
        length = 0
        for a in sorted(per):
            insn = self._insns[a]
            new = (prev is None or prev.address + prev.size != a or prev.flow
                   or per[prev.address] != per[a] or a in targets)
            if new:
                if start is not None:
                    blocks[start] = (length, per[start])
                start, length = a, 0
            length += 1
            prev = insn
        if start is not None:
            blocks[start] = (length, per[start])
        return blocks

    # generated-model entry points -----------------------------------------------------------

    def _entry(self, what: str) -> str:
        if not self.elf.name:
            raise EmulationError("the image has no model name; build it with cross.build_elf")
        return f"{self.elf.name}_{what}"

    def layer_scratch_bytes(self, index: int) -> int:
        """``NAME_layer_scratch_bytes(index)`` run on the emulated core."""
        return self.call(self._entry("layer_scratch_bytes"), [index])[0]

    def _batch(self, fn: str, lead: Sequence[int], inputs: Sequence[np.ndarray],
               out_specs: Sequence[Spec], tail_bytes: int, count_samples: Sequence[int],
               exclude: Sequence[str]) -> tuple[list[np.ndarray], dict[int, Counts]]:
        samples = int(inputs[0].shape[0]) if inputs else 1
        self.free_all()
        in_addrs = [self.alloc(max(x[0].nbytes, 1)) for x in inputs]
        specs = [(tuple(shape), np.dtype(dtype)) for shape, dtype in out_specs]
        out_bytes = [int(np.prod(shape, dtype=np.int64)) * dt.itemsize for shape, dt in specs]
        out_addrs = [self.alloc(n + 2 * GUARD) + GUARD for n in out_bytes]
        tail = self.alloc(max(tail_bytes, 1))
        args = [*lead, self._pointers(in_addrs), self._pointers(out_addrs), tail]
        tail_fill = bytes([FILL_BYTE]) * max(tail_bytes, 1)
        outs = [np.zeros((samples, *shape), dt) for shape, dt in specs]
        counts: dict[int, Counts] = {}
        guard = bytes([GUARD_BYTE]) * GUARD
        for s in range(samples):
            for addr, x in zip(in_addrs, inputs):
                self.write(addr, x[s])
            for addr, n in zip(out_addrs, out_bytes):
                self.write(addr - GUARD, guard + bytes([FILL_BYTE]) * n + guard)
            self.write(tail, tail_fill)
            status, c = self.call(fn, args, count=s in count_samples, exclude=exclude)
            if status != 0:
                raise EmulationError(f"{self.target.name}: {fn} returned {status} "
                                     f"(sample {s})")
            if c is not None:
                counts[s] = c
            for k, (addr, n) in enumerate(zip(out_addrs, out_bytes)):
                raw = self.read(addr - GUARD, n + 2 * GUARD)
                if raw[:GUARD] != guard or raw[GUARD + n:] != guard:
                    side = "before" if raw[:GUARD] != guard else "past the end of"
                    raise EmulationError(f"{self.target.name}: {fn} wrote {side} output {k} "
                                         f"(sample {s})")
                outs[k][s] = np.frombuffer(raw[GUARD:GUARD + n], specs[k][1]).reshape(
                    specs[k][0])
            for addr, x in zip(in_addrs, inputs):
                if self.read(addr, x[s].nbytes) != np.ascontiguousarray(x[s]).tobytes():
                    raise EmulationError(f"{self.target.name}: {fn} modified a const input "
                                         f"(sample {s})")
        return outs, counts

    def run_layer(self, index: int, inputs: Sequence[np.ndarray], out_specs: Sequence[Spec],
                  *, count_samples: Sequence[int] = (),
                  dispatch: bool = False) -> tuple[list[np.ndarray], dict[int, Counts]]:
        """Run layer ``index`` through ``NAME_run_layer`` on every sample of ``inputs``.

        ``inputs[k]`` has shape ``[S, *shape]``; returns outputs ``[S, *shape]`` and counts for
        the samples in ``count_samples``, without ``NAME_run_layer``'s own dispatch instructions
        unless ``dispatch``.
        """
        fn = self._entry("run_layer")
        scratch = self.layer_scratch_bytes(index)
        if scratch < 0:
            raise EmulationError(f"{fn}: no layer {index}")
        return self._batch(fn, [index], inputs, out_specs, scratch, count_samples,
                           () if dispatch else (fn,))

    def invoke(self, inputs: Sequence[np.ndarray], out_specs: Sequence[Spec], arena_bytes: int,
               *, count_samples: Sequence[int] = ()) -> tuple[list[np.ndarray], dict[int, Counts]]:
        """Run the whole model through ``NAME_invoke`` on every sample (fresh 16-aligned arena)."""
        return self._batch(self._entry("invoke"), [], inputs, out_specs, arena_bytes,
                           count_samples, ())


# --- verification --------------------------------------------------------------------------

@dataclass
class EmulationReport(Report):
    """A `Report` from the emulator tier, with instruction counts and image sizes."""

    cpu: str = ""
    elf: str = ""
    sizes: dict[str, int] = field(default_factory=dict)
    counts: dict[int, Counts] = field(default_factory=dict, repr=False)
    invoke_counts: Counts | None = field(default=None, repr=False)
    counts_data_independent: bool = True

    def to_json(self) -> dict[str, Any]:
        d = super().to_json()
        d["counts"] = {str(k): _json_counts(c) for k, c in self.counts.items()}
        d["invoke_counts"] = _json_counts(self.invoke_counts) if self.invoke_counts else None
        return d


def _json_counts(c: Counts) -> dict[str, Any]:
    return {**c, "blocks": {f"0x{a:x}": list(v) for a, v in c["blocks"].items()}}


def _compare(got: np.ndarray, want: np.ndarray, sample: int, output: int
             ) -> tuple[int, Mismatch | None]:
    diff = np.flatnonzero(got.reshape(-1) != want.reshape(-1))
    if diff.size == 0:
        return 0, None
    i = int(diff[0])
    g, w = got.reshape(-1)[i], want.reshape(-1)[i]
    num = float if got.dtype.kind == "f" else int
    return int(diff.size), Mismatch(sample, output, i, num(g), num(w))


def emulate_verify(graph: Graph, target: Target, inputs: Sequence[np.ndarray],
                   rounding: str = "double", name: str | None = None,
                   build_root: str | Path | None = None,
                   progress: Callable[[int], None] | None = None,
                   project: Project | None = None, count: bool = True,
                   check_alignment: bool = True, timeout_s: float = 0.0) -> EmulationReport:
    """Cross-compile, run every layer and the whole model in the emulator, compare with the sim.

    Like `verify.verify`, but on the target's instruction set. ``project`` verifies a given
    (possibly edited) generated project instead of generating one. With ``count``, the first and
    last samples of every layer and of the whole model are counted (and, on Cortex-M, checked for
    unaligned LDRD/LDM/VLDR... unless ``check_alignment`` is False); the report keeps the first
    sample's counts. ``timeout_s`` bounds each call (costs ~0.1 ms per call; 0 = none).
    """
    project = project or generate(graph, target, name=name, rounding=rounding)
    elf = build_elf(project, target, build_root)
    emu = Emulator(elf, target, timeout_s=timeout_s, check_alignment=check_alignment)
    sim = Interpreter(graph, rounding).run(inputs, keep=True)
    tensors = sim.tensors
    samples = int(inputs[0].shape[0])
    which = sorted({0, samples - 1}) if count else []
    specs = {i: (tuple(t.shape), np.dtype(t.dtype)) for i, t in enumerate(graph.tensors)}
    results = []
    counts: dict[int, Counts] = {}
    same = True
    for layer in project.layers:
        res = LayerResult(layer.index, layer.op.opcode, layer.symbol, layer.spec.isa)
        got, c = emu.run_layer(layer.index, [tensors[t] for t in layer.inputs],
                               [specs[t] for t in layer.outputs], count_samples=which)
        for k, t in enumerate(layer.outputs):
            for s in range(samples):
                n, mm = _compare(got[k][s], tensors[t][s], s, k)
                if n:
                    res.bit_exact = False
                    res.differing += n
                    res.first = res.first or mm
        if c:
            counts[layer.index] = c[which[0]]
            same &= all(_same(c[which[0]], v) for v in c.values())
        results.append(res)
    outs, ic = emu.invoke(list(inputs), [specs[t] for t in graph.outputs],
                          project.plan.arena_bytes, count_samples=which)
    model_ok, model_first = True, None
    for k, t in enumerate(graph.outputs):
        for s in range(samples):
            n, mm = _compare(outs[k][s], tensors[t][s], s, k)
            if n:
                model_ok = False
                model_first = model_first or mm
    if ic:
        same &= all(_same(ic[which[0]], v) for v in ic.values())
    if progress:
        progress(samples)
    return EmulationReport(
        graph.name, target.name, rounding, samples, results, model_ok, model_first,
        arena_bytes=project.plan.arena_bytes, outputs=outs, cpu=f"{target.zig_cpu} / unicorn "
        f"{target.unicorn_cpu}", elf=str(elf.path), sizes=elf.sizes(), counts=counts,
        invoke_counts=ic[which[0]] if ic else None, counts_data_independent=same)


def _same(a: Counts, b: Counts) -> bool:
    return a["instructions"] == b["instructions"] and a["blocks"] == b["blocks"]
