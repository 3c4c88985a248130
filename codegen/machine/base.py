"""The machine interface: a cross-compiled image loaded into an instruction-set emulator.

A backend implements memory, calls (with optional counting) and load-site classification;
`Machine` derives from those the generated model's entry points (`Machine.run_layer`,
`Machine.invoke`), the decoded instructions of every executed address (one `Decoder` per
architecture) and the real basic blocks of a counted call.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from qlane.errors import QlaneError

from ..compare import Spec
from ..cross import SENTINEL, ElfImage, load_elf
from ..isa import ARCHES
from ..targets import Target
from .decode import CLASSES, Decoder, Insn, decoder_for

GUARD = 16
GUARD_BYTE = 0xE7
FILL_BYTE = 0xA5
STACK_FILL = 0xCD
"""Fills a backend's stack before a counted call; the bytes still holding it were not used."""

Counts = dict[str, Any]
"""``{"instructions": n, "by_class": {cls: n}, "blocks": {addr: (n_insns, execs)},
"stack_bytes": n}`` for one call."""


class EmulationError(QlaneError, RuntimeError):
    """The emulated code faulted, did not return, returned an error or broke a buffer."""


class Machine(ABC):
    """A linked image loaded into one emulated core of the target's model; call it many times.

    Backends implement the abstract methods; everything else is built on them.
    """

    memory_errors: tuple[type[Exception], ...] = ()
    """What the backend's `read` raises for unmapped memory."""

    def __init__(self, elf: ElfImage | str | Path, target: Target) -> None:
        self.elf = elf if isinstance(elf, ElfImage) else load_elf(elf, target)
        self.target = target
        self.arch = self.elf.arch
        self.spec = ARCHES[self.arch]
        self.decoder: Decoder = decoder_for(self.arch)
        self._insns: dict[int, Insn] = {}
        self._ranges: dict[tuple[int, int], tuple[Insn, ...]] = {}

    @property
    def cpu_label(self) -> str:
        """The compiled-for core and the emulated one, for reports."""
        return self.target.zig_cpu

    # backend ----------------------------------------------------------------------------------

    @abstractmethod
    def alloc(self, nbytes: int, align: int = 16) -> int:
        """Reserve ``nbytes`` of emulated RAM; returns its address."""

    @abstractmethod
    def free_all(self) -> None:
        """Forget every allocation (buffers are reused by the next calls)."""

    @abstractmethod
    def read(self, addr: int, nbytes: int) -> bytes:
        """Copy bytes out of emulated memory."""

    @abstractmethod
    def write(self, addr: int, data: bytes | np.ndarray) -> None:
        """Copy bytes (or an array's bytes) into emulated memory."""

    @abstractmethod
    def patch(self, addr: int, data: bytes) -> None:
        """Overwrite code or constants in the loaded image (forgets what was decoded there)."""

    @abstractmethod
    def call(self, fn: str | int, args: Sequence[int] = (), *, count: bool = False,
             exclude: Sequence[str] = (), check_alignment: bool | None = None
             ) -> tuple[int, Counts | None]:
        """Call ``fn(*args)`` (a symbol or an address; integers / pointers) and return its int32
        result and, with ``count``, its `Counts` (leaving out the functions in ``exclude``)."""

    @abstractmethod
    def flash_loads(self, loads: Iterable[int], run: Callable[[], object]) -> set[int]:
        """The load instructions among ``loads`` whose first execution during ``run()`` read the
        image's flash region."""

    stack_limit = 0
    stack_top = 0
    """The stack region of calls (set by a backend that measures stack use)."""

    def _stack_used(self, label: str) -> int:
        """Bytes of the `STACK_FILL`-filled stack a call wrote (from the top down)."""
        used = self.read(self.stack_limit, self.stack_top - self.stack_limit)
        first = len(used) - len(used.lstrip(bytes([STACK_FILL])))
        if first == 0:
            raise EmulationError(f"{self.target.name}: {label} used all "
                                 f"{len(used)} reserved stack bytes (stack overflow?)")
        return len(used) - first

    # decoded instructions ---------------------------------------------------------------------

    def describe(self, addr: int) -> str:
        """``0xADDR (function+0xOFF): mnemonic operands [bytes]`` for a code address."""
        where = self.elf.function_at(addr)
        loc = f"0x{addr:08x}" + (f" ({where[0]}+0x{where[1]:x})" if where else "")
        try:
            code = self.read(addr, 4)
        except self.memory_errors:
            return f"{loc}: <unmapped>"
        insn = self.decoder.decode_one(code, addr)
        if insn is None:
            return f"{loc}: <undecodable {code.hex()}>"
        return f"{loc}: {insn.text} [{code[:insn.size].hex()}]"

    def decode(self, address: int, size: int) -> tuple[Insn, ...]:
        """The instructions of ``size`` bytes at ``address``, each address decoded once."""
        key = (address, size)
        if key not in self._ranges:
            self._ranges[key] = tuple(self.decoder.decode(self.read(address, size), address,
                                                          self._insns))
        return self._ranges[key]

    def instruction(self, addr: int) -> Insn | None:
        """The decoded instruction at ``addr``, if it was ever counted."""
        return self._insns.get(addr)

    def block(self, start: int, n: int) -> list[Insn]:
        """The (up to) ``n`` instructions of the counted basic block at ``start``."""
        out, a = [], start
        for _ in range(n):
            insn = self._insns.get(a)
            if insn is None:
                break
            out.append(insn)
            a += insn.size
        return out

    def _forget(self, addr: int, nbytes: int) -> None:
        """Drop what was decoded around ``nbytes`` at ``addr`` (after a patch)."""
        for a in [a for a in self._insns if addr - 4 < a < addr + nbytes]:
            del self._insns[a]
        self._ranges.clear()

    # counts -----------------------------------------------------------------------------------

    def executions(self, ranges: Counter[tuple[int, int]]) -> Counter[int]:
        """Executions per instruction address from executions per (address, size) code range
        (the backend's translated blocks)."""
        per: Counter[int] = Counter()
        for (address, size), n in ranges.items():
            if address == SENTINEL or size <= 0:
                continue
            for insn in self.decode(address, size):
                per[insn.address] += n
        return per

    def summarize(self, per: Counter[int], exclude: Sequence[str] = ()) -> Counts:
        """Counts of a call from executions per (decoded) instruction address."""
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
                "blocks": self.basic_blocks(per)}

    def basic_blocks(self, per: Counter[int]) -> dict[int, tuple[int, int]]:
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

    # generated-model entry points -------------------------------------------------------------

    def _entry(self, what: str) -> str:
        if not self.elf.name:
            raise EmulationError("the image has no model name; build it with cross.build_elf")
        return f"{self.elf.name}_{what}"

    def _pointers(self, addrs: Sequence[int]) -> int:
        ptr = self.spec.pointer_bytes
        base = self.alloc(ptr * max(len(addrs), 1), ptr)
        self.write(base, b"".join(int(a).to_bytes(ptr, "little") for a in addrs) or bytes(ptr))
        return base

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

