"""Host-compiled unicorn hook callbacks: a native block counter and an alignment checker.

Both are compiled for the host with ``zig cc`` once (cached by the source's hash) and registered
through unicorn's C API, so a counted run never calls back into Python per block or instruction.
Without a compiler, `native` is None and the machine falls back to Python callbacks.
"""

from __future__ import annotations

import ctypes
import hashlib
import subprocess
import tempfile
from collections import Counter
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from unicorn import UC_HOOK_BLOCK, UC_HOOK_CODE, Uc, UcError

from ..cross import zig_command

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


class AlignState(ctypes.Structure):
    _fields_ = [("reg_read", ctypes.c_void_p), ("emu_stop", ctypes.c_void_p),
                ("bad_address", ctypes.c_uint64), ("bad_base", ctypes.c_uint64),
                ("checked", ctypes.c_uint64)]


class AlignSite(ctypes.Structure):
    _fields_ = [("reg", ctypes.c_int32), ("pad", ctypes.c_uint32), ("state", ctypes.c_void_p)]


@dataclass(frozen=True)
class Native:
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
def native() -> Native | None:
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

        return Native(addr(lib.qlane_count_block), addr(lib.qlane_check_align), uclib,
                      uc_hook_h)
    except (OSError, subprocess.CalledProcessError, ImportError, AttributeError):
        return None


class BlockCounter:
    """Counts executions of unicorn's translated blocks during one call."""

    def __init__(self, uc: Uc, bits: int = 16) -> None:
        self.uc = uc
        self.native = native()
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


class AlignChecker:
    """While open, stops the run at the first of ``sites`` (address -> unicorn register id of
    the access's base) whose base register is not word aligned."""

    def __init__(self, uc: Uc, sites: dict[int, int]) -> None:
        self.uc = uc
        self.sites = sites
        self.native = native()
        self.bad: list[tuple[int, int]] = []  # (address, base)
        self._handles: list[Any] = []
        self._state: AlignState | None = None
        self._cells: Any = None

    def __enter__(self) -> AlignChecker:
        nat = self.native
        if nat is not None:
            self._state = AlignState(ctypes.cast(nat.uclib.uc_reg_read, ctypes.c_void_p).value,
                                     ctypes.cast(nat.uclib.uc_emu_stop, ctypes.c_void_p).value,
                                     0, 0, 0)
            state = ctypes.addressof(self._state)
            self._cells = (AlignSite * len(self.sites))(
                *(AlignSite(reg, 0, state) for reg in self.sites.values()))
            self._handles = [nat.hook_add(self.uc, UC_HOOK_CODE, nat.check_align,
                                          ctypes.addressof(self._cells[i]), a, a)
                             for i, a in enumerate(self.sites)]
        else:
            sites, bad = self.sites, self.bad

            def on_insn(uc: Uc, address: int, _size: int, _data: Any) -> None:
                base = uc.reg_read(sites[address])
                if base & 3 and not bad:
                    bad.append((address, base))
                    uc.emu_stop()

            self._handles = [self.uc.hook_add(UC_HOOK_CODE, on_insn, begin=a, end=a)
                             for a in self.sites]
        self.uc.ctl_flush_tb()
        return self

    def stopped(self) -> bool:
        """True once a misaligned access stopped the run."""
        if self._state is not None:
            return self._state.bad_address != 0
        return bool(self.bad)

    def __exit__(self, *exc: object) -> None:
        for h in self._handles:
            if self.native is not None:
                self.native.hook_del(self.uc, h)
            else:
                self.uc.hook_del(h)
        self._handles = []
        if self._state is not None and self._state.bad_address:
            self.bad.append((int(self._state.bad_address), int(self._state.bad_base)))
        self.uc.ctl_flush_tb()
