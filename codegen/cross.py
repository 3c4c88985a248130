"""Cross-compile a generated project into a freestanding ELF for its chip.

The compiler is ``zig cc`` (clang; every target) or ``arm-none-eabi-gcc`` (Cortex-M targets),
with the same linker script, runtime and string.h shim.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from string import Template

from elftools.elf.constants import SH_FLAGS
from elftools.elf.elffile import ELFFile

from qlane.errors import QlaneError

from .emit import Project, content_hash, write_project
from .isa import ARCHES
from .targets import SENTINEL, LinkLayout, Target  # noqa: F401  (SENTINEL re-exported)

CFLAGS = ("-std=c99", "-O2", "-g0", "-fomit-frame-pointer", "-ffreestanding",
          "-fno-unwind-tables", "-fno-asynchronous-unwind-tables")
"""Flags of every cross build; the target adds ``-target`` and ``-mcpu``."""

RT_SOURCE = "qlane_rt.c"
"""Freestanding memcpy & co.; -ffreestanding (implies -fno-builtin) keeps its loops loops."""

STRING_H = """\
/* string.h for qlane's freestanding cross builds (written by qlane.codegen.cross): the mem*
 * functions map to the compiler builtins, which inline small constant sizes; calls the compiler
 * still emits link against qlane_rt.c. */
#ifndef QLANE_RT_STRING_H
#define QLANE_RT_STRING_H
#include <stddef.h>
void *memcpy(void *restrict dst, const void *restrict src, size_t n);
void *memmove(void *dst, const void *src, size_t n);
void *memset(void *dst, int c, size_t n);
int memcmp(const void *a, const void *b, size_t n);
#define memcpy(d, s, n) __builtin_memcpy((d), (s), (n))
#define memmove(d, s, n) __builtin_memmove((d), (s), (n))
#define memset(d, c, n) __builtin_memset((d), (c), (n))
#define memcmp(a, b, n) __builtin_memcmp((a), (b), (n))
#endif
"""

CCS = ("zig", "gcc")
"""Compilers of the cross build: zig's clang, or arm-none-eabi-gcc (Thumb targets only)."""

GCC = "arm-none-eabi-gcc"
GCC_PACKAGE = "gcc-arm-none-eabi"
GCC_FLAGS = ("-ffunction-sections", "-nostdlib")
"""Added to `CFLAGS` under GCC: one section per function for the link's garbage collection,
and no C library or startup files (the link adds libgcc alone, for 64-bit division)."""

PCH_HEADER = "#include <arm_neon.h>\n"
"""Precompiled once per AArch64 build: parsing arm_neon.h costs ~0.7 s per file otherwise."""

class CrossError(QlaneError, RuntimeError):
    """The project could not be cross-compiled or linked for the target."""

    def __init__(self, message: str, log: str = "") -> None:
        super().__init__(message)
        self.log = log


Memory = LinkLayout
"""Where code and data live (the target's `LinkLayout`)."""


@dataclass(frozen=True)
class Segment:
    """A loadable piece of the image: address, bytes from the file, size in memory."""

    vaddr: int
    data: bytes
    memsz: int
    flags: int


@dataclass(frozen=True)
class Symbol:
    """A symbol of the image; ``addr`` has the Thumb bit cleared."""

    name: str
    addr: int
    size: int
    kind: str


@dataclass
class ElfImage:
    """A linked freestanding ELF and the facts the emulator and reports need."""

    path: Path
    target: str
    arch: str
    name: str
    entry: int
    segments: list[Segment]
    symbols: dict[str, Symbol]
    sections: dict[str, tuple[int, int]]
    memory: Memory
    text_bytes: int
    rodata_bytes: int
    data_bytes: int
    bss_bytes: int
    flash_bytes: int
    layer_symbols: list[str] = field(default_factory=list)
    command: list[str] = field(default_factory=list)
    cached: bool = False
    compiler: str = ""
    """The compiler that built the image and its version (``zig 0.17.1``)."""

    @property
    def thumb(self) -> bool:
        """True for Thumb-2 code (function addresses need bit 0 set when called)."""
        return self.arch == "thumb"

    def address(self, name: str) -> int:
        """Address of a symbol (Thumb bit cleared)."""
        try:
            return self.symbols[name].addr
        except KeyError:
            raise CrossError(f"{self.path.name} has no symbol {name!r}") from None

    def function_at(self, addr: int) -> tuple[str, int] | None:
        """The function containing ``addr`` and the offset into it, if known."""
        for s in self.symbols.values():
            if s.kind == "STT_FUNC" and s.addr <= addr < s.addr + max(s.size, 1):
                return s.name, addr - s.addr
        return None

    def sizes(self) -> dict[str, int]:
        """Code and data sizes in bytes, for reports."""
        return {"text": self.text_bytes, "rodata": self.rodata_bytes, "data": self.data_bytes,
                "bss": self.bss_bytes, "flash": self.flash_bytes}


def arch_of(target: Target) -> str:
    """``thumb`` or ``aarch64``: the instruction set the target's cross build emits."""
    if not target.machine:
        raise CrossError(f"target {target.name} has no supported cross-compiler target "
                         f"(zig_target={target.zig_target!r}); use one of "
                         + ", ".join(f"{a.zig_prefix}-*" for a in ARCHES.values()))
    return target.machine


def memory_of(target: Target) -> LinkLayout:
    """The target's link layout (``[memory]``, parsed and checked with the target)."""
    arch_of(target)
    assert target.memory is not None  # parse_target sets it for every target with a machine
    return target.memory


@cache
def zig_command() -> tuple[str, ...]:
    """How to run zig: the ``ziglang`` package's binary, else ``python -m ziglang``."""
    try:
        import ziglang

        exe = Path(ziglang.__file__ or "").parent / "zig"
        if exe.is_file() and os.access(exe, os.X_OK):
            return (str(exe),)
    except ImportError:
        pass
    return (sys.executable, "-m", "ziglang")


@cache
def zig_version() -> str:
    """Version of the ``ziglang`` package's compiler."""
    out = subprocess.run([*zig_command(), "version"], capture_output=True, text=True,
                         check=False)
    if out.returncode != 0:
        raise CrossError("python -m ziglang is not usable (pip install ziglang): "
                         + (out.stderr.strip().splitlines() or ["no output"])[-1])
    return out.stdout.strip()


@cache
def gcc_command() -> str:
    """Path of arm-none-eabi-gcc; a `CrossError` naming the Debian package if absent."""
    exe = shutil.which(GCC)
    if exe is None:
        raise CrossError(f"{GCC} is not installed (Debian: apt-get install {GCC_PACKAGE})")
    return exe


@cache
def gcc_version() -> str:
    """Version of arm-none-eabi-gcc with its package's build (``12.2.1 (15:12.2.rel1-1)``)."""
    out = subprocess.run([gcc_command(), "--version"], capture_output=True, text=True,
                         check=False)
    first = (out.stdout.splitlines() or [""])[0]
    if out.returncode != 0 or not first:
        raise CrossError(f"{GCC} --version failed: "
                         + (out.stderr.strip().splitlines() or ["no output"])[-1])
    m = re.match(r"\S+ (\(.*\)) (\S+)", first)
    return f"{m.group(2)} {m.group(1)}" if m else first


def check_cc(cc: str, target: Target) -> None:
    """Raise a one-line `CrossError` unless ``cc`` can build for ``target``."""
    if cc not in CCS:
        raise CrossError(f"unknown compiler {cc!r}; choose {' or '.join(CCS)}")
    if cc == "gcc":
        if arch_of(target) != "thumb":
            raise CrossError(f"--cc gcc builds Cortex-M (Thumb) targets only; {target.name} is "
                             f"{arch_of(target)}: use --cc zig")
        gcc_command()


def compiler_version(cc: str) -> str:
    """``zig 0.17.1`` or ``arm-none-eabi-gcc 12.2.1 (...)``: what a report names."""
    return f"zig {zig_version()}" if cc == "zig" else f"{GCC} {gcc_version()}"


def gcc_cpu_flags(target: Target, cpu: str | None = None) -> list[str]:
    """The target's CPU flags from its TOML ``cflags`` (``-mthumb -mcpu=... -mfpu=...``);
    ``cpu`` replaces its ``-mcpu``."""
    flags = [f for f in target.cflags if f.startswith("-m")]
    if cpu is not None:
        flags = [f for f in flags if not f.startswith("-mcpu=")] + [f"-mcpu={cpu}"]
    if not any(f.startswith("-mcpu=") for f in flags):
        raise CrossError(f"target {target.name} has no -mcpu in its cflags")
    return flags


def _template(name: str) -> str:
    return (resources.files("qlane.templates") / name).read_text()


def _first_error(log: str) -> str:
    for line in log.splitlines():
        if re.search(r"\berror\b", line):
            return line.strip()
    lines = [ln.strip() for ln in log.splitlines() if ln.strip()]
    return lines[0] if lines else "no compiler output"


def _sections(elf: ELFFile) -> tuple[dict[str, tuple[int, int]], dict[str, int]]:
    secs: dict[str, tuple[int, int]] = {}
    sizes = {"text": 0, "rodata": 0, "data": 0, "bss": 0, "flash": 0}
    for sec in elf.iter_sections():
        flags = sec["sh_flags"]
        if not flags & SH_FLAGS.SHF_ALLOC or sec["sh_size"] == 0:
            continue
        size = int(sec["sh_size"])
        secs[sec.name] = (int(sec["sh_addr"]), size)
        nobits = sec["sh_type"] == "SHT_NOBITS"
        if flags & SH_FLAGS.SHF_EXECINSTR:
            sizes["text"] += size
        elif nobits:
            sizes["bss"] += size
        elif flags & SH_FLAGS.SHF_WRITE:
            sizes["data"] += size
        elif sec.name.startswith(".rodata"):
            sizes["rodata"] += size
        if not nobits:
            sizes["flash"] += size
    return secs, sizes


def load_elf(path: str | Path, target: Target, name: str = "",
             layer_symbols: Sequence[str] = ()) -> ElfImage:
    """Read a linked image: loadable segments, symbols, section sizes."""
    path = Path(path)
    arch = arch_of(target)
    with path.open("rb") as fh:
        elf = ELFFile(fh)
        segments = [Segment(int(s["p_vaddr"]), s.data(), int(s["p_memsz"]), int(s["p_flags"]))
                    for s in elf.iter_segments()
                    if s["p_type"] == "PT_LOAD" and s["p_memsz"] > 0]
        symbols: dict[str, Symbol] = {}
        symtab = elf.get_section_by_name(".symtab")
        for s in symtab.iter_symbols() if symtab is not None else ():
            kind = s["st_info"]["type"]
            if not s.name or s.name.startswith("$") or kind in ("STT_FILE", "STT_SECTION"):
                continue
            addr = int(s["st_value"])
            if arch == "thumb" and kind == "STT_FUNC":
                addr &= ~1
            if s.name not in symbols or symbols[s.name].kind != "STT_FUNC":
                symbols[s.name] = Symbol(s.name, addr, int(s["st_size"]), kind)
        secs, sizes = _sections(elf)
        entry = int(elf.header["e_entry"]) & (~1 if arch == "thumb" else ~0)
    return ElfImage(path, target.name, arch, name, entry, segments, symbols, secs,
                    memory_of(target), sizes["text"], sizes["rodata"], sizes["data"],
                    sizes["bss"], sizes["flash"], list(layer_symbols))


def build_elf(project: Project, target: Target | None = None,
              build_root: str | Path | None = None, *, cpu: str | None = None,
              extra_cflags: Sequence[str] = (),
              extra_sources: Mapping[str, str] | None = None,
              keep: Sequence[str] = (), cc: str = "zig") -> ElfImage:
    """Cross-compile and link ``project`` into ``build_root/<hash>/NAME.elf`` (cached).

    ``cc`` is ``zig`` (zig's clang) or ``gcc`` (arm-none-eabi-gcc, Thumb targets only). ``cpu``
    overrides the target's CPU (``zig_cpu``, or under GCC the ``-mcpu`` of its ``cflags``), e.g.
    to build for a richer chip than the one emulated; ``extra_sources`` adds C or assembly files
    (name -> text) to the link and ``keep`` names functions of theirs the link must keep.
    """
    target = target or project.target
    arch = arch_of(target)
    check_cc(cc, target)
    if cc == "zig" and not target.zig_cpu and cpu is None:
        raise CrossError(f"target {target.name} has no zig_cpu")
    mem = memory_of(target)
    root = Path(build_root) if build_root else Path(tempfile.gettempdir()) / "qlane-cross"
    extra = dict(extra_sources or {})
    script = Template(_template(ARCHES[arch].linker_script)).substitute(
        {k: hex(v) for k, v in vars(mem).items()})
    rt = _template(RT_SOURCE)
    if cc == "zig":
        mcpu = cpu or target.zig_cpu
        flags = [*CFLAGS, "-target", target.zig_target, f"-mcpu={mcpu}", *extra_cflags]
        version = zig_version()
    else:
        cpu_flags = gcc_cpu_flags(target, cpu)
        mcpu = next(f for f in cpu_flags if f.startswith("-mcpu="))[len("-mcpu="):]
        flags = [*CFLAGS, *GCC_FLAGS, *cpu_flags, *extra_cflags]
        version = gcc_version()
    compiler = compiler_version(cc)
    name = project.name
    keep = [f"{name}_invoke", f"{name}_run_layer", f"{name}_layer_scratch_bytes",
            *(layer.symbol for layer in project.layers), *keep]
    h = hashlib.sha256()
    parts = [content_hash(project), json.dumps(flags), version, script, rt, STRING_H, PCH_HEADER,
             json.dumps(sorted(extra.items())), json.dumps(keep)]
    if cc != "zig":  # zig's key stays what it was before there was a choice
        parts.append(cc)
    for part in parts:
        h.update(part.encode() + b"\0")
    digest = h.hexdigest()[:24]
    out_dir = root / digest
    elf_path = out_dir / f"{name}.elf"
    layer_symbols = [layer.symbol for layer in project.layers]
    if elf_path.exists():
        img = load_elf(elf_path, target, name, layer_symbols)
        img.cached = True
        img.command = json.loads((out_dir / "build.json").read_text())["command"]
        img.compiler = compiler
        return img

    work = out_dir.with_name(f"{digest}.tmp{os.getpid()}")
    shutil.rmtree(work, ignore_errors=True)
    write_project(project, work / "src")
    (work / "rt").mkdir()
    (work / "rt" / "string.h").write_text(STRING_H)
    (work / RT_SOURCE).write_text(rt)
    (work / "link.ld").write_text(script)
    for fname, text in extra.items():
        (work / fname).write_text(text)

    # paths relative to the build directory, so build.json stays valid after the rename below
    sources = [f"src/{s}" for s in project.manifest["sources"]] + list(extra)
    link = ["-T", "link.ld", f"-Wl,--entry={name}_invoke", *(f"-Wl,-u,{s}" for s in keep)]
    if cc == "zig":
        pch: list[str] = []
        only_c = all(f.endswith(".c") for f in extra)
        if arch == "aarch64" and only_c and any("arm_neon.h" in text for text in
                                                [*project.files.values(), *extra.values()]):
            (work / "rt" / "qlane_pch.h").write_text(PCH_HEADER)
            res = subprocess.run([*zig_command(), "cc", *flags, "-x", "c-header",
                                  "rt/qlane_pch.h", "-o", "rt/qlane_pch.h.pch"], cwd=work,
                                 capture_output=True, text=True, check=False)
            if res.returncode == 0:
                pch = ["-include-pch", "rt/qlane_pch.h.pch"]
        steps = [[*zig_command(), "cc", *flags, *pch, "-I", "src", "-I", "rt", *link, *sources,
                  RT_SOURCE, "-o", elf_path.name]]
    else:
        steps = [[gcc_command(), *flags, "-I", "src", "-I", "rt", *link, "-Wl,--gc-sections",
                  *sources, RT_SOURCE, "-lgcc", "-o", elf_path.name]]
    for cmd in steps:
        res = subprocess.run(cmd, cwd=work, capture_output=True, text=True, check=False)
        if res.returncode != 0:
            log = res.stderr + res.stdout
            where = target.zig_target if cc == "zig" else GCC
            raise CrossError(f"cross build of {name} for {target.name} ({where}, -mcpu={mcpu}) "
                             f"failed: {_first_error(log)} (sources in {work})", log)
    info = ({"zig": version} if cc == "zig" else {"cc": cc, "compiler": compiler})
    (work / "build.json").write_text(json.dumps(
        {**info, "target": target.name, "cpu": mcpu, "flags": flags,
         "command": cmd}, indent=1) + "\n")
    try:
        work.rename(out_dir)
    except OSError:  # another process finished the same build first
        shutil.rmtree(work, ignore_errors=True)
    img = load_elf(elf_path, target, name, layer_symbols)
    img.command = cmd
    img.compiler = compiler
    return img
