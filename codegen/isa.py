"""The registry of kernel ISAs and of the machines that run them.

An `Isa` is what a kernel is written in (portable C, Cortex-M DSP, Helium, NEON): its tag in
kernel symbols, the headers its projects carry, how a host build compiles it (the host shim and
its include directories), whether its primitives have vector spellings, and the machines whose
instruction set runs it. An `Arch` is an instruction set of a cross build (Thumb-2, AArch64): the
zig target prefix, the linker script, the emulator backend and its register conventions, the
instruction decoder, and llvm-mca's triple. Adding an ISA is one entry here plus its lowerings and
templates; nothing else lists ISAs.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Isa:
    """A kernel instruction set: how its code is named, shipped, and built on a host."""

    name: str  # the tag in kernel symbols (``..._rnddbl_4x16__neon``)
    description: str
    headers: tuple[str, ...]  # plain headers from templates/ copied into every project using it
    host_shim: str  # how a host build compiles it where the instructions are missing
    vector: bool  # qlane_fixedpoint.h also spells every primitive on int32x4_t
    machines: tuple[str, ...]  # `ARCHES` whose instruction set runs it ("*": any)
    native_macro: str = ""  # predefined macro of compilers that target it natively

    def host_include_dirs(self) -> list[str]:
        """Include directories a host build of this ISA's code needs on this machine."""
        if self.name == "neon" and not host_has_neon():
            return [simde_include_dir()]
        return []


@dataclass(frozen=True)
class Arch:
    """An instruction set of cross builds and the machine backend that runs them."""

    name: str  # "thumb" | "aarch64"
    zig_prefix: str  # a target's zig_target starts with this
    linker_script: str  # template under templates/
    backend: str  # machine backend (`qlane.codegen.machine`)
    pointer_bytes: int
    mca_triple: str  # llvm-mca -mtriple
    comment: str  # assembler comment character (llvm-mca input)
    capstone: tuple[str, ...] = ()  # decoder: capstone CS_ARCH_<first>, CS_MODE_<rest> or'd
    unicorn: tuple[str, str] = ("", "")  # emulator: unicorn UC_ARCH_<arch>, UC_MODE_<mode>
    arg_regs: tuple[str, ...] = ()  # integer/pointer argument registers, in order
    return_reg: str = ""  # int32 result
    link_reg: str = ""  # return address
    stack_reg: str = "sp"
    pc_reg: str = "pc"
    code_bit: int = 0  # or'd into a code address to run it in this state (Thumb: 1)


ISAS: dict[str, Isa] = {
    "mve": Isa("mve", "Helium (M-profile Vector Extension, Armv8.1-M: Cortex-M55/M85): 128-bit "
               "vectors, VMLADAVA dot products, tail predication",
               headers=("qlane_acle.h", "qlane_mve.h"),
               host_shim="portable C versions in qlane_acle.h and qlane_mve.h", vector=True,
               machines=("thumb",), native_macro="__ARM_FEATURE_MVE"),
    "dsp": Isa("dsp", "Cortex-M DSP extension: SIMD32 (SMLAD, SXTB16, QADD8), SSAT/USAT",
               headers=("qlane_acle.h",), host_shim="portable C versions in qlane_acle.h",
               vector=False, machines=("thumb",), native_macro="__ARM_FEATURE_DSP"),
    "neon": Isa("neon", "Advanced SIMD (NEON), AArch64", headers=("qlane_neon.h",),
                host_shim="SIMDe (cmeel-simde) on non-Arm hosts", vector=True,
                machines=("aarch64",), native_macro="__ARM_NEON"),
    "c": Isa("c", "portable C99", headers=(), host_shim="none needed", vector=False,
             machines=("*",)),
}
"""Every kernel ISA; a target lists the ones it runs, best first, ``c`` last."""

ARCHES: dict[str, Arch] = {
    "thumb": Arch("thumb", "thumb", "link_thumb.ld", "unicorn", 4, "thumbv7em-none-eabi", "@",
                  capstone=("ARM", "THUMB", "MCLASS", "V8"), unicorn=("ARM", "THUMB"),
                  arg_regs=("r0", "r1", "r2", "r3"), return_reg="r0", link_reg="lr",
                  code_bit=1),
    "aarch64": Arch("aarch64", "aarch64", "link_aarch64.ld", "unicorn", 8, "aarch64-none-elf",
                    "#", capstone=("ARM64", "ARM"), unicorn=("ARM64", "ARM"),
                    arg_regs=tuple(f"x{i}" for i in range(8)), return_reg="x0",
                    link_reg="x30"),
}
"""Every instruction set qlane cross-compiles for and runs in a machine backend."""


def isa(name: str) -> Isa:
    """The registered ISA called ``name``."""
    try:
        return ISAS[name]
    except KeyError:
        raise ValueError(f"unknown ISA {name!r}; choose one of {', '.join(ISAS)}") from None


def arch(name: str) -> Arch:
    """The registered machine instruction set called ``name``."""
    try:
        return ARCHES[name]
    except KeyError:
        raise ValueError(f"unknown architecture {name!r}; choose one of "
                         f"{', '.join(ARCHES)}") from None


def host_has_neon() -> bool:
    """True when this machine compiles arm_neon.h natively (AArch64 or 32-bit Arm)."""
    machine = platform.machine().lower()
    return machine in ("aarch64", "arm64") or machine.startswith("arm")


def simde_include_dir() -> str:
    """Absolute include directory of the installed SIMDe headers (``cmeel-simde``).

    ``QLANE_SIMDE_INCLUDE`` overrides it. Raises RuntimeError when SIMDe is not installed.
    """
    override = os.environ.get("QLANE_SIMDE_INCLUDE")
    if override:
        if not (Path(override) / "simde" / "arm" / "neon.h").is_file():
            raise RuntimeError(f"QLANE_SIMDE_INCLUDE={override} holds no simde/arm/neon.h")
        return str(Path(override).resolve())
    try:
        dist = importlib.metadata.distribution("cmeel-simde")
    except importlib.metadata.PackageNotFoundError:
        dist = None
    for f in (dist.files or ()) if dist else ():
        if str(f).replace("\\", "/").endswith("include/simde/arm/neon.h"):
            header = Path(str(dist.locate_file(f))).resolve()
            if header.is_file():
                return str(header.parents[2])
    raise RuntimeError(
        "SIMDe headers not found: NEON code needs them on non-Arm hosts. "
        "Install them with `pip install cmeel-simde` or set QLANE_SIMDE_INCLUDE."
    )
