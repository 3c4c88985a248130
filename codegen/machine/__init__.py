"""Machines that run cross-compiled images: one interface, backends picked from `isa.ARCHES`.

`base` defines `Machine` (memory, calls, counts, load sites, the model's entry points), `decode`
the one instruction decoder per architecture, `hooks` the host-compiled unicorn callbacks, and
each backend module (``unicorn``; ``qemu`` for Cortex-M55/M85, with `rsp`, its gdbstub client,
and `llvm_decode`, its MVE decoder) one `Machine` subclass exported as ``MACHINE``. A new backend
is one module here plus the ``backend`` of its `isa.Arch` entries, or a target's ``emulator``.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from ..cross import ElfImage, load_elf
from ..isa import ARCHES
from ..targets import Target
from .base import Counts, EmulationError, Machine, Spec
from .decode import CLASSES, Decoder, Insn, decoder_for

__all__ = ["CLASSES", "Counts", "Decoder", "EmulationError", "Insn", "Machine", "Spec",
           "backend_class", "decoder_for", "machine_for"]


def backend_class(arch: str, emulator: str = "") -> type[Machine]:
    """The `Machine` class of backend ``emulator`` (a target's ``emulator``), or of the one
    registered for the instruction set ``arch``."""
    module = importlib.import_module(f"{__name__}.{emulator or ARCHES[arch].backend}")
    return module.MACHINE


def machine_for(elf: ElfImage | str | Path, target: Target, **options: Any) -> Machine:
    """Load ``elf`` (an image or a path) into the backend registered for ``target``'s machine.

    ``options`` go to the backend (``timeout_s``, ``check_alignment``).
    """
    image = elf if isinstance(elf, ElfImage) else load_elf(elf, target)
    return backend_class(image.arch, target.emulator)(image, target, **options)
