"""The unicorn backend: an `ElfImage` in a unicorn CPU of the target's exact model.

Cortex-M4/M7 run in Thumb mode and Cortex-A53/A72 in AArch64, so an instruction the chip lacks
faults and is named. Calls return to a sentinel address. With counting on, a native block hook
records unicorn's translated blocks, turned into per-instruction counts, classes and real basic
blocks by `Machine`; on Cortex-M the call is then rerun with every executed alignment-sensitive
load/store checked (unicorn does not fault where the chip does).
"""

from __future__ import annotations

import importlib
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import unicorn
from unicorn import (
    UC_ERR_EXCEPTION,
    UC_ERR_INSN_INVALID,
    UC_HOOK_CODE,
    UC_HOOK_MEM_INVALID,
    UC_PROT_ALL,
    UC_PROT_EXEC,
    UC_PROT_READ,
    UC_PROT_WRITE,
    Uc,
    UcError,
)

from ..cross import SENTINEL, ElfImage
from ..targets import Target
from .base import STACK_FILL, Counts, EmulationError, Machine
from .hooks import AlignChecker, BlockCounter

PAGE = 0x1000
EXT_RAM = 0x6000_0000
"""Emulator-only memory for buffers that do not fit the chip's RAM (like external SDRAM)."""
EXT_CHUNK = 1 << 20
_REG_ALIAS = {"sb": "r9", "sl": "r10", "fp": "r11", "ip": "r12", "wsp": "sp"}
"""Capstone register names unicorn spells differently."""


def _page_down(a: int) -> int:
    return a & ~(PAGE - 1)


def _page_up(a: int) -> int:
    return (a + PAGE - 1) & ~(PAGE - 1)


class UnicornMachine(Machine):
    """A linked image loaded into one unicorn CPU of the target's model; call it many times."""

    memory_errors = (UcError,)

    def __init__(self, elf: ElfImage | str | Path, target: Target, *,
                 timeout_s: float = 0.0, check_alignment: bool = True) -> None:
        super().__init__(elf, target)
        spec = self.spec
        uc_arch, uc_mode = spec.unicorn
        self._consts = importlib.import_module(f"unicorn.{uc_arch.lower()}_const")
        self._reg_prefix = f"UC_{uc_arch}_REG_"
        self.code_bit = spec.code_bit
        self._args = tuple(self._reg(r) for r in spec.arg_regs)
        self._sp, self._lr, self._pc, self._ret = (
            self._reg(r) for r in (spec.stack_reg, spec.link_reg, spec.pc_reg, spec.return_reg))
        self.timeout_us = int(timeout_s * 1e6)
        self.check_alignment = check_alignment
        self.cpu = target.unicorn_cpu
        self.uc = Uc(getattr(unicorn, f"UC_ARCH_{uc_arch}"), getattr(unicorn, f"UC_MODE_{uc_mode}"))
        model = getattr(self._consts, f"UC_CPU_{uc_arch}_{self.cpu}", None)
        if model is None:
            raise EmulationError(f"target {target.name}: unicorn has no CPU model "
                                 f"{self.cpu!r} for {self.arch}")
        self.uc.ctl_set_cpu_model(model)
        self._bad_access: tuple[int, int, int] | None = None
        self._map()
        self.uc.hook_add(UC_HOOK_MEM_INVALID, self._on_bad_access)
        self._counter = BlockCounter(self.uc)

    @property
    def cpu_label(self) -> str:
        """The compiled-for core and the emulated one, for reports."""
        return f"{self.target.zig_cpu} / unicorn {self.cpu}"

    def reg_id(self, name: str) -> int | None:
        """Unicorn's id of a register named as capstone names it (None: unicorn has none)."""
        reg = getattr(self._consts, self._reg_prefix + _REG_ALIAS.get(name, name).upper(), None)
        return None if reg is None else int(reg)

    def _reg(self, name: str) -> int:
        reg = self.reg_id(name)
        if reg is None:
            raise EmulationError(f"unicorn has no {self.arch} register {name!r}")
        return reg

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
        self._heap = self.heap_start
        self._ext = EXT_RAM

    def write(self, addr: int, data: bytes | np.ndarray) -> None:
        if isinstance(data, np.ndarray):
            data = np.ascontiguousarray(data).tobytes()
        self.uc.mem_write(addr, bytes(data))

    def read(self, addr: int, nbytes: int) -> bytes:
        return bytes(self.uc.mem_read(addr, nbytes))

    def patch(self, addr: int, data: bytes) -> None:
        self.uc.mem_write(addr, data)
        self.uc.ctl_remove_cache(addr, addr + len(data))
        self._forget(addr, len(data))

    # calls ----------------------------------------------------------------------------------

    def _on_bad_access(self, uc: Uc, access: int, address: int, size: int, value: int,
                       data: Any) -> bool:
        self._bad_access = (access, address, size)
        return False

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
        if len(args) > len(self._args):
            raise EmulationError(f"{label}: only {len(self._args)} register arguments")
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
            per = self.executions(tbs)
            counts = self.summarize(per, exclude)
            counts["stack_bytes"] = self._stack_used(label)
            if self.check_alignment if check_alignment is None else check_alignment:
                self._check_alignment(addr, args, label, per)
        else:
            self._run(addr, args, label)
        ret = self.uc.reg_read(self._ret) & 0xFFFF_FFFF
        return (ret - (1 << 32) if ret & 0x8000_0000 else ret), counts

    def _run(self, addr: int, args: Sequence[int], label: str,
             stopped: Callable[[], bool] | None = None) -> None:
        uc = self.uc
        mask = (1 << (8 * self.spec.pointer_bytes)) - 1
        for reg, value in zip(self._args, args):
            uc.reg_write(reg, int(value) & mask)
        uc.reg_write(self._sp, self.stack_top)
        uc.reg_write(self._lr, SENTINEL | self.code_bit)
        self._bad_access = None
        try:
            uc.emu_start(addr | self.code_bit, SENTINEL, timeout=self.timeout_us)
        except UcError as e:
            raise self._fault(e, label) from None
        pc = uc.reg_read(self._pc)
        if pc != SENTINEL and not (stopped and stopped()):
            raise EmulationError(f"{self.target.name}: {label} did not return (timeout); "
                                 f"stopped at {self.describe(pc)}")

    def _check_alignment(self, addr: int, args: Sequence[int], label: str,
                         executed: Counter[int]) -> None:
        """Rerun the call with every executed alignment-sensitive access checked."""
        sites = {a: reg for a in executed
                 if (insn := self._insns.get(a)) is not None and insn.align_base
                 and (reg := self.reg_id(insn.align_base)) is not None}
        if not sites:
            return
        with AlignChecker(self.uc, sites) as checker:
            self._run(addr, args, label, checker.stopped)
        if checker.bad:
            at, base = checker.bad[0]
            raise EmulationError(
                f"{self.target.name}: {label}: unaligned access at {self.describe(at)} (base "
                f"0x{base:08x}); a real {self.target.name} raises a UsageFault there (unicorn "
                "does not)")

    def _fault(self, err: UcError, label: str) -> EmulationError:
        pc = self.uc.reg_read(self._pc)
        msg = f"{self.target.name} (unicorn {self.cpu}): {err} in {label} at {self.describe(pc)}"
        if self._bad_access is not None:
            _, address, size = self._bad_access
            msg += f"; bad {size}-byte access at 0x{address:08x}"
        elif err.errno in (UC_ERR_INSN_INVALID, UC_ERR_EXCEPTION):
            msg += f" (an instruction this {self.target.name} does not implement, or a trap)"
        return EmulationError(msg)

    # load sites -----------------------------------------------------------------------------

    def flash_loads(self, loads: Iterable[int], run: Callable[[], object]) -> set[int]:
        """Loads among ``loads`` whose first execution during ``run()`` read the flash region
        (one hook per site that removes itself after its first call, so the run keeps full
        speed)."""
        mem = self.elf.memory
        lo, hi = mem.flash_origin, mem.flash_origin + mem.flash_bytes
        sites: dict[int, int] = {}
        for a in loads:
            insn = self._insns.get(a)
            if insn is None or not insn.base or insn.base == "pc":
                continue
            reg = self.reg_id(insn.base)
            if reg is not None:
                sites[a] = reg
        found: set[int] = set()
        handles: dict[int, Any] = {}

        def on_load(uc: Uc, address: int, _size: int, _data: Any) -> None:
            if address in handles:
                if lo <= uc.reg_read(sites[address]) < hi:
                    found.add(address)
                uc.hook_del(handles.pop(address))

        for a in sites:
            handles[a] = self.uc.hook_add(UC_HOOK_CODE, on_load, begin=a, end=a)
        self.uc.ctl_flush_tb()
        try:
            run()
        finally:
            for h in handles.values():
                self.uc.hook_del(h)
            self.uc.ctl_flush_tb()
        return found


MACHINE = UnicornMachine
"""The backend class `qlane.codegen.machine.machine_for` instantiates."""
