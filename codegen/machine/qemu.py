"""The QEMU backend: an `ElfImage` on QEMU's Cortex-M55 (``mps3-an547``), driven over gdbstub.

Cortex-M55/M85 code uses Helium (MVE) and the Armv8.1-M loops, which unicorn and capstone do not
know. One ``qemu-system-arm -S`` process per machine loads the image (code and constants in the
board's DDR, data and stack in its DTCM) and stops; `rsp.Rsp` then writes memory and registers,
continues and waits for a breakpoint at the return address (``call``). A small stub in the ITCM
holds the return address, a fault trap every exception vector points at, and an init routine
that enables the FPU/MVE (CPACR) and points VTOR at the stub's vector table.

Counts come from the TCG plugin ``qemu_count.c`` in its ``shm=FILE`` mode: its per-translation
counters live in a file both processes map, so a call's counts are the difference of two
snapshots taken while the core is stopped, exact per translated block; the blocks are expanded
into instructions with the image's LLVM disassembly (`llvm_decode.LlvmDecoder`).
"""

from __future__ import annotations

import mmap
import shutil
import struct
import subprocess
import tempfile
import time
import weakref
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .. import qemu as qemu_tier
from ..cross import ElfImage
from ..targets import Target
from .base import STACK_FILL, Counts, EmulationError, Machine
from .llvm_decode import DecoderMissing, LlvmDecoder
from .rsp import Rsp, RspError, RspTimeout

VECTORS = 0x0000_0000
"""The stub's vector table (ITCM; VTOR is pointed here)."""
TRAP = 0x0000_0400
"""Every exception vector leads here: a breakpoint stops the core on any fault."""
RETURN = 0x0000_0404
"""The return address of every call (a breakpoint)."""
INIT = 0x0000_0408
STUB_CODE = bytes.fromhex("fee700bffee700bf0648016841f470010160054800210160bff34f8fbff36f8f"
                          "7047000088ed00e008ed00e0")
"""trap: b . ; nop; return: b . ; nop; init: CPACR |= 0xF << 20; VTOR = 0; dsb; isb; bx lr
(assembled with llvm-mc for thumbv8.1m.main)."""
STUB_END = 0x0000_1000

DDR_END = 0x7000_0000
"""End of the board's DDR (256 MB at 0x6000_0000): buffers past the image's flash region."""
DEFAULT_TIMEOUT_S = 300.0
"""Bound on one call when the caller gives none (a hang must not stall forever)."""
COUNTER_CAPACITY = 1 << 18
"""Translation records the shared counter file holds (24 bytes each, sparse)."""
SHM_HEADER = 64
SHM_MAGIC = b"QLCNT001"
RECORD = np.dtype([("vaddr", "<u8"), ("n", "<u8"), ("execs", "<u8")])
XPSR_T = 1 << 24

_EXCEPTIONS = {2: "NMI", 3: "HardFault", 4: "MemManage", 5: "BusFault", 6: "UsageFault",
               7: "SecureFault", 11: "SVCall", 12: "DebugMonitor", 14: "PendSV", 15: "SysTick"}
_CFSR_BITS = {0: "IACCVIOL", 1: "DACCVIOL", 3: "MUNSTKERR", 4: "MSTKERR", 5: "MLSPERR",
              8: "IBUSERR", 9: "PRECISERR", 10: "IMPRECISERR", 11: "UNSTKERR", 12: "STKERR",
              13: "LSPERR", 16: "UNDEFINSTR", 17: "INVSTATE", 18: "INVPC", 19: "NOCP",
              20: "STKOF", 24: "UNALIGNED", 25: "DIVBYZERO"}
"""Configurable Fault Status Register bits (Armv8-M ARM, CFSR) named in fault messages."""
CFSR, BFAR = 0xE000_ED28, 0xE000_ED38
_GPR = {**{f"r{i}": i for i in range(13)}, "sp": 13, "lr": 14}


def missing(target: Target) -> str | None:
    """Why the QEMU backend cannot run ``target``'s images here (one line), or None."""
    if qemu_tier.qemu_binary() is None:
        return (f"the instruction-set tier of {target.name} needs qemu-system-arm "
                "(Debian: apt install qemu-system-arm)")
    reason = qemu_tier.available()
    if reason is not None:
        return f"the instruction-set tier of {target.name} cannot run QEMU here: {reason}"
    return None


def _shutdown(proc: subprocess.Popen[bytes], rsp: Rsp | None, tmp: str) -> None:
    if rsp is not None:
        rsp.close()
    if proc.poll() is None:
        proc.kill()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
    shutil.rmtree(tmp, ignore_errors=True)


class QemuMachine(Machine):
    """A linked image on one QEMU Cortex-M55 core (one process); call it many times."""

    memory_errors = (RspError,)

    def __init__(self, elf: ElfImage | str | Path, target: Target, *,
                 timeout_s: float = 0.0, check_alignment: bool = True) -> None:
        super().__init__(elf, target)
        why = missing(target)
        if why is not None:
            raise EmulationError(why)
        try:
            self.decoder = LlvmDecoder(self.elf.path)
        except DecoderMissing as e:
            raise EmulationError(str(e)) from None
        self.timeout_s = timeout_s if timeout_s > 0 else DEFAULT_TIMEOUT_S
        self.cpu = f"QEMU {qemu_tier.BOARD} {qemu_tier.QEMU_CPU}"
        self._tbs: dict[tuple[int, int], tuple[int, ...]] = {}
        self._sites: dict[int, int] = {}
        self._on_site: Callable[[int, int], None] | None = None
        self.rsp: Rsp | None = None
        self._layout()
        self._start()

    @property
    def cpu_label(self) -> str:
        """The compiled-for core and the emulated one, for reports."""
        version = qemu_tier.qemu_version().split("(")[0].replace("QEMU emulator version", "")
        return f"{self.target.zig_cpu} / QEMU {version.strip()} {qemu_tier.BOARD} " \
               f"{qemu_tier.QEMU_CPU}"

    # process --------------------------------------------------------------------------------

    def _layout(self) -> None:
        mem = self.elf.memory
        for seg in self.elf.segments:
            if seg.vaddr < STUB_END:
                raise EmulationError(f"{self.elf.path.name}: a segment at 0x{seg.vaddr:08x} "
                                     "overlaps the QEMU backend's stub in the ITCM")
        syms = self.elf.symbols
        ram_lo, ram_hi = mem.ram_origin, mem.ram_origin + mem.ram_bytes
        self.stack_top = syms["__stack_top"].addr if "__stack_top" in syms else ram_hi
        self.stack_limit = (syms["__stack_limit"].addr if "__stack_limit" in syms
                            else self.stack_top - mem.stack_bytes)
        ram_end = max([s.vaddr + s.memsz for s in self.elf.segments
                       if ram_lo <= s.vaddr < ram_hi] or [ram_lo])
        self.heap_start = (syms["__heap_start"].addr if "__heap_start" in syms
                           else (ram_end + 15) & ~15)
        self.ext_start = mem.flash_origin + mem.flash_bytes
        self._heap = self.heap_start
        self._ext = self.ext_start
        self._stack_fill = bytes([STACK_FILL]) * (self.stack_top - self.stack_limit)

    def _start(self) -> None:
        """Start QEMU stopped, connect, load the stub and the RAM segments, enable MVE."""
        tmp = tempfile.mkdtemp(prefix="qlane-qemu-machine-")
        sock, counters, log = (str(Path(tmp) / n) for n in ("gdb.sock", "counts.bin", "log"))
        with open(counters, "wb") as f:
            f.write(SHM_MAGIC + struct.pack("<QQQ", COUNTER_CAPACITY, 0, 0))
            f.truncate(SHM_HEADER + COUNTER_CAPACITY * RECORD.itemsize)
        exe = qemu_tier.qemu_binary()
        assert exe is not None
        cmd = [exe, "-M", qemu_tier.BOARD, "-cpu", qemu_tier.QEMU_CPU, "-display", "none",
               "-monitor", "none", "-serial", "none", "-S",
               "-chardev", f"socket,id=qlanegdb,path={sock},server=on,wait=off",
               "-gdb", "chardev:qlanegdb",
               "-plugin", f"{qemu_tier.plugin_path()},shm={counters}",
               "-kernel", str(self.elf.path)]
        with open(log, "wb") as errf:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=errf, stderr=errf)
        self.proc = proc
        self._finalizer = weakref.finalize(self, _shutdown, proc, None, tmp)
        try:
            deadline = time.monotonic() + 30
            while not Path(sock).exists():
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RspError("no gdbstub socket")
                time.sleep(0.005)
            self.rsp = Rsp.connect_unix(sock)
        except RspError:
            text = Path(log).read_text(errors="replace").strip().splitlines()
            self.close()
            raise EmulationError(f"QEMU did not start for {self.elf.path.name}: "
                                 + (text[0] if text else "no output")) from None
        self._finalizer.detach()
        self._finalizer = weakref.finalize(self, _shutdown, proc, self.rsp, tmp)
        fh = open(counters, "r+b")  # noqa: SIM115 (mapped for the machine's lifetime)
        self._map = mmap.mmap(fh.fileno(), 0)
        fh.close()
        self._records = np.frombuffer(self._map, RECORD, COUNTER_CAPACITY, SHM_HEADER)
        rsp = self.rsp
        vectors = struct.pack("<2I", self.stack_top, RETURN | 1) + struct.pack(
            "<14I", *([TRAP | 1] * 14))
        rsp.write(VECTORS, vectors)
        rsp.write(TRAP, STUB_CODE)
        mem = self.elf.memory
        for seg in self.elf.segments:  # -kernel loads at the load address: place .data too
            if not (mem.flash_origin <= seg.vaddr < mem.flash_origin + mem.flash_bytes):
                rsp.write(seg.vaddr, seg.data + bytes(max(0, seg.memsz - len(seg.data))))
        rsp.breakpoint(TRAP)
        rsp.breakpoint(RETURN)
        self._dead = False
        self._run(INIT, (), "the MVE/FPU init stub")

    def close(self) -> None:
        """Stop the QEMU process (the machine cannot be used afterwards)."""
        self._finalizer()

    def _restart(self) -> None:
        self.close()
        self._start()

    def _header(self) -> tuple[int, int]:
        count, lost = struct.unpack_from("<QQ", self._map, 16)
        return count, lost

    # memory ---------------------------------------------------------------------------------

    def alloc(self, nbytes: int, align: int = 16) -> int:
        """Reserve ``nbytes`` of RAM (the DTCM first, then DDR past the image's region)."""
        nbytes = max(int(nbytes), 1)
        a = (self._heap + align - 1) & ~(align - 1)
        if a + nbytes <= self.stack_limit:
            self._heap = a + nbytes
            return a
        a = (self._ext + align - 1) & ~(align - 1)
        if a + nbytes > DDR_END:
            raise EmulationError(f"QEMU machine: {nbytes} bytes do not fit the board's DDR")
        self._ext = a + nbytes
        return a

    def free_all(self) -> None:
        self._heap = self.heap_start
        self._ext = self.ext_start

    def _live(self) -> Rsp:
        if self._dead or self.rsp is None:
            self._restart()
        assert self.rsp is not None
        return self.rsp

    def write(self, addr: int, data: bytes | np.ndarray) -> None:
        if isinstance(data, np.ndarray):
            data = np.ascontiguousarray(data).tobytes()
        self._live().write(addr, bytes(data))

    def read(self, addr: int, nbytes: int) -> bytes:
        return self._live().read(addr, nbytes)

    def patch(self, addr: int, data: bytes) -> None:
        self._live().write(addr, data)  # gdbstub writes invalidate QEMU's translations
        assert isinstance(self.decoder, LlvmDecoder)
        self.decoder.forget(addr, len(data))
        self._forget(addr, len(data))
        self._tbs.clear()

    # calls ----------------------------------------------------------------------------------

    def call(self, fn: str | int, args: Sequence[int] = (), *, count: bool = False,
             exclude: Sequence[str] = (), check_alignment: bool | None = None
             ) -> tuple[int, Counts | None]:
        """Call ``fn(*args)`` (integers / pointers) and return its int32 result and counts.

        QEMU raises the core's own alignment faults, so ``check_alignment`` is not needed.
        """
        addr = self.elf.address(fn) if isinstance(fn, str) else int(fn)
        label = fn if isinstance(fn, str) else f"0x{addr:08x}"
        if len(args) > 4:
            raise EmulationError(f"{label}: only 4 register arguments")
        rsp = self._live()
        if not count:
            return self._run(addr, args, label), None
        rsp.write(self.stack_limit, self._stack_fill)
        n0, _ = self._header()
        before = self._records["execs"][:n0].copy()
        ret = self._run(addr, args, label)
        n1, lost = self._header()
        if lost:
            raise EmulationError(f"QEMU machine: the counter file is full ({COUNTER_CAPACITY} "
                                 "translations); counts would be incomplete")
        delta = self._records["execs"][:n1].astype(np.int64)
        delta[:n0] -= before.astype(np.int64)
        per: Counter[int] = Counter()
        for i in np.flatnonzero(delta):
            rec = self._records[i]
            for a in self._tb_insns(int(rec["vaddr"]), int(rec["n"])):
                per[a] += int(delta[i])
        counts = self.summarize(per, exclude)
        counts["stack_bytes"] = self._stack_used(label)
        return ret, counts

    def _tb_insns(self, vaddr: int, n: int) -> tuple[int, ...]:
        """Addresses of the ``n`` instructions of the translated block at ``vaddr``."""
        key = (vaddr, n)
        if key not in self._tbs:
            out, a = [], vaddr
            for _ in range(n):
                insn = self._insns.get(a)
                if insn is None:
                    insn = self.decoder.decode(self.read(a, 4), a)[0]
                    self._insns[a] = insn
                out.append(a)
                a += insn.size
            self._tbs[key] = tuple(out)
        return self._tbs[key]

    def _run(self, addr: int, args: Sequence[int], label: str) -> int:
        rsp = self._live()
        regs = [0] * 16
        for k, v in enumerate(args):
            regs[k] = int(v) & 0xFFFF_FFFF
        regs[13], regs[14], regs[15] = self.stack_top, RETURN | 1, addr & ~1
        rsp.set_registers(struct.pack("<16I", *regs) + bytes(100) + struct.pack("<I", XPSR_T))
        deadline = time.monotonic() + self.timeout_s
        while True:
            try:
                reply = rsp.resume(max(0.001, deadline - time.monotonic()))
            except RspTimeout:
                pc = struct.unpack_from("<16I", rsp.registers())[15]
                raise EmulationError(f"{self.target.name}: {label} did not return within "
                                     f"{self.timeout_s:g} s on QEMU; stopped at "
                                     f"{self.describe(pc)}") from None
            except RspError as e:
                self._dead = True
                raise EmulationError(f"{self.target.name}: QEMU stopped during {label}: "
                                     f"{e}") from None
            if reply[:1] in (b"W", b"X"):
                self._dead = True
                raise EmulationError(f"{self.target.name}: QEMU exited during {label} "
                                     f"({reply.decode(errors='replace')})")
            block = rsp.registers()
            r = struct.unpack_from("<16I", block)
            pc = r[15]
            if pc == RETURN:
                ret = r[0]
                return ret - (1 << 32) if ret & 0x8000_0000 else ret
            if pc == TRAP:
                raise self._fault(label, block)
            if pc in self._sites and self._on_site is not None:
                self._on_site(pc, r[self._sites[pc]])
                continue
            raise EmulationError(f"{self.target.name}: {label} stopped unexpectedly on QEMU "
                                 f"({reply.decode(errors='replace')}) at {self.describe(pc)}")

    def _fault(self, label: str, block: bytes) -> EmulationError:
        """The error of a fault (the core is in its handler: the process is restarted later)."""
        rsp = self.rsp
        assert rsp is not None
        xpsr = struct.unpack_from("<I", block, 164)[0]
        sp = struct.unpack_from("<I", block, 13 * 4)[0]
        exc = xpsr & 0x1FF
        name = _EXCEPTIONS.get(exc, f"exception {exc}")
        where = "unknown pc"
        detail = ""
        try:
            frame = struct.unpack("<8I", rsp.read(sp, 32))
            where = self.describe(frame[6])
            cfsr = struct.unpack("<I", rsp.read(CFSR, 4))[0]
            bits = [n for b, n in _CFSR_BITS.items() if cfsr >> b & 1]
            if bits:
                detail = f" ({', '.join(bits)}"
                if cfsr >> 15 & 1:
                    detail += f", address 0x{struct.unpack('<I', rsp.read(BFAR, 4))[0]:08x}"
                detail += ")"
        except RspError:
            pass
        self._dead = True
        return EmulationError(f"{self.target.name} ({self.cpu}): {label} raised a {name}"
                              f"{detail} at {where}")

    # load sites -----------------------------------------------------------------------------

    def flash_loads(self, loads: Iterable[int], run: Callable[[], object]) -> set[int]:
        """Loads among ``loads`` whose first execution during ``run()`` had its base register
        in the flash region: a breakpoint per load site (base r0-r12/sp/lr), removed at its
        first hit. PC-relative literal loads are left out (the cost model counts them as flash
        reads already); vector-base gathers are not checked."""
        mem = self.elf.memory
        lo, hi = mem.flash_origin, mem.flash_origin + mem.flash_bytes
        rsp = self._live()
        sites: dict[int, int] = {}
        for a in loads:
            insn = self._insns.get(a)
            if insn is not None and insn.base in _GPR:
                sites[a] = _GPR[insn.base]
        found: set[int] = set()

        def on_site(pc: int, base: int) -> None:
            if lo <= base < hi:
                found.add(pc)
            rsp.breakpoint(pc, insert=False)
            del self._sites[pc]

        for a in sites:
            rsp.breakpoint(a)
        self._sites, self._on_site = sites, on_site
        try:
            run()
        finally:
            if not self._dead:
                for a in list(self._sites):
                    rsp.breakpoint(a, insert=False)
            self._sites, self._on_site = {}, None
        return found

    def __enter__(self) -> QemuMachine:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


MACHINE = QemuMachine
"""The backend class `qlane.codegen.machine.machine_for` instantiates."""
