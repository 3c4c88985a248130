"""Optional QEMU tier: bare-metal Cortex-M55 (Helium/MVE) images on QEMU's ``mps3-an547`` board,
with an exact count of the executed instructions.

`build_m55` compiles C with zig and links it with a small runtime (``qemu_m55/startup.c``: the
vector table, FPU/MVE enabled, semihosting, ``main()``'s return value as the exit code). `run`
starts ``qemu-system-arm`` on the image and, with ``count``, loads a TCG plugin
(``qemu_count.c``, built once by `plugin_path`) that counts every executed translation block.
`available` says why the tier cannot run here, or None. The same plugin, given ``shm=FILE``
instead of ``out=FILE``, keeps its counters in a shared file: the QEMU machine backend
(`qlane.codegen.machine.qemu`) reads them per call.

A program prints with ``void qlane_semihost_write0(const char *s)`` and may end early with
``void qlane_exit(int code)``; a fault prints ``qlane: fault: NAME at pc 0x...`` and exits
with `FAULT_EXIT`.
"""

from __future__ import annotations

import hashlib
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

from qlane.errors import QlaneError

from .cross import CrossError, zig_command, zig_version

QEMU = "qemu-system-arm"
QEMU_PACKAGE = "qemu-system-arm"
BOARD = "mps3-an547"
QEMU_CPU = "cortex-m55"
"""The board and its core (QEMU 7.2 models no Cortex-M85)."""

DEFAULT_CPU = "cortex_m55+mve_fp+fp_armv8d16"
"""zig's ``-mcpu`` for the M55 with MVE (integer and float) and the FPU; plain ``cortex_m55``
enables neither. M85-tuned code builds with ``cortex_m85+mve_fp+fp_armv8d16`` and still runs on
the M55 model."""

ZIG_TARGET = "thumb-freestanding-eabihf"
BASE_CFLAGS = ("-ffreestanding", "-fomit-frame-pointer", "-fno-unwind-tables",
               "-fno-asynchronous-unwind-tables")
"""Flags of every image build, before the caller's ``cflags``."""

FAULT_EXIT = 254
"""Exit code of an image that took a fault (the runtime prints which one first)."""

RUNTIME_DIR = Path(__file__).with_name("qemu_m55")
STARTUP = RUNTIME_DIR / "startup.c"
RUNTIME = Path(str(resources.files("qlane.templates") / "qlane_rt.c"))
"""memcpy, memmove, memset and memcmp: the runtime of the generated projects."""
LINK_SCRIPT = RUNTIME_DIR / "link.ld"
PLUGIN_SOURCE = Path(__file__).with_name("qemu_count.c")


class QemuError(QlaneError, RuntimeError):
    """The QEMU tier could not build or run an image; the message is one line."""

    def __init__(self, message: str, log: str = "") -> None:
        super().__init__(message)
        self.log = log


class QemuTimeout(QemuError):
    """The image did not exit within the time given to `run`."""


@dataclass
class QemuRun:
    """One run of an image: its exit code (0-255), its semihosting console output and, when
    counted, the executed translation blocks (start address -> (instructions, executions)) and
    the total number of executed instructions.

    An address translated with different lengths (rare) keeps its longest length and the sum of
    the executions; `instructions` counts every translation exactly."""

    exit_code: int
    console: str
    blocks: dict[int, tuple[int, int]]
    instructions: int
    seconds: float = 0.0
    """Wall time of the QEMU process."""

    @property
    def faulted(self) -> bool:
        """Whether the image ended in the runtime's fault handler."""
        return self.exit_code == FAULT_EXIT and "qlane: fault:" in self.console


def qemu_binary() -> str | None:
    """``$QLANE_QEMU``, else ``qemu-system-arm`` on the PATH; None when neither exists."""
    env = os.environ.get("QLANE_QEMU")
    if env:
        return env if Path(env).is_file() else None
    return shutil.which(QEMU)


@cache
def _probe(exe: str) -> tuple[str, str]:
    """The first line of ``exe --version`` and its ``-M help`` text (both cached)."""
    version = subprocess.run([exe, "--version"], capture_output=True, text=True, check=False,
                             timeout=30)
    machines = subprocess.run([exe, "-M", "help"], capture_output=True, text=True, check=False,
                              timeout=30)
    first = (version.stdout.strip().splitlines() or [""])[0]
    return first, machines.stdout


def _missing() -> str:
    env = os.environ.get("QLANE_QEMU")
    if env:
        return f"$QLANE_QEMU names no file: {env}"
    return f"{QEMU} not found (Debian: apt-get install {QEMU_PACKAGE})"


def qemu_version() -> str:
    """The QEMU binary's version line (``QEMU emulator version 7.2.22 (...)``)."""
    exe = qemu_binary()
    if exe is None:
        raise QemuError(_missing())
    return _probe(exe)[0]


def available() -> str | None:
    """None when this machine can build, run and count M55 images, else a one-line reason."""
    if not sys.platform.startswith("linux"):
        return f"the QEMU tier needs Linux (QEMU plugins are ELF objects), not {sys.platform}"
    exe = qemu_binary()
    if exe is None:
        return _missing()
    try:
        version, machines = _probe(exe)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"{exe} does not run: {exc}"
    m = re.search(r"version (\d+)\.(\d+)", version)
    if m is None:
        return f"{exe} --version printed no QEMU version: {version!r}"
    if int(m.group(1)) >= 9:
        return (f"{exe} is QEMU {m.group(1)}.{m.group(2)}: the counting plugin needs plugin "
                "API version 1 (QEMU 4.2 to 8.x)")
    if not re.search(rf"^{re.escape(BOARD)}\s", machines, re.M):
        return f"{exe} has no {BOARD} board (QEMU 6.2 or later models the Cortex-M55 on it)"
    try:
        zig_version()
    except CrossError as exc:
        return str(exc)
    return None


def _cache_dir() -> Path:
    """``$QLANE_CACHE/qemu``, else ``~/.cache/qlane/qemu``."""
    env = os.environ.get("QLANE_CACHE")
    return (Path(env) if env else Path.home() / ".cache" / "qlane") / "qemu"


def _host_zig_target() -> str:
    machine = platform.machine().lower()
    arch = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}
    return f"{arch[machine]}-linux-gnu.2.17" if machine in arch else "native"


_PLUGIN_LOCK = threading.Lock()


def plugin_path() -> Path:
    """The counting plugin's shared object, built with zig on first use into the cache directory
    (keyed by its source, the QEMU version and zig's version)."""
    source = PLUGIN_SOURCE.read_text()
    target = _host_zig_target()
    flags = ["-target", target, "-shared", "-fPIC", "-O2", "-fvisibility=hidden"]
    key = hashlib.sha256("\0".join([source, qemu_version(), zig_version(), *flags])
                         .encode()).hexdigest()[:20]
    path = _cache_dir() / f"libqemu_count-{key}.so"
    if path.is_file():
        return path
    with _PLUGIN_LOCK:
        if path.is_file():
            return path
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.tmp{os.getpid()}.{threading.get_ident()}")
        res = subprocess.run([*zig_command(), "cc", *flags, str(PLUGIN_SOURCE), "-o", str(tmp)],
                             capture_output=True, text=True, check=False)
        if res.returncode != 0:
            tmp.unlink(missing_ok=True)
            log = res.stderr + res.stdout
            raise QemuError(f"building the QEMU counting plugin failed: {_first_error(log)}", log)
        os.replace(tmp, path)  # atomic: a concurrent build of the same key writes the same file
    return path


def _first_error(log: str) -> str:
    lines = [ln.strip() for ln in log.splitlines() if ln.strip()]
    return next((ln for ln in lines if re.search(r"\berror\b", ln)), lines[0] if lines else
                "no compiler output")


def build_m55(sources: Sequence[Path | str], out: Path | str,
              cflags: Sequence[str] = ("-O2",), include_dirs: Sequence[Path | str] = (),
              cpu: str = DEFAULT_CPU) -> Path:
    """Compile C ``sources`` with the runtime and link them into the ELF ``out`` (zig, ``-mcpu``
    ``cpu``); the image's ``main()`` return value becomes QEMU's exit code."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    base = [*zig_command(), "cc", "-target", ZIG_TARGET, f"-mcpu={cpu}", *BASE_CFLAGS]
    # the generated projects' string.h runtime, without builtins (its loops must not become
    # calls to themselves)
    runtime = out.with_name(f"{out.stem}.qlane_rt.o")
    _build(out, cpu, [*base, "-O2", "-fno-builtin", "-c", str(RUNTIME), "-o", str(runtime)])
    _build(out, cpu, [*base, *cflags, *(f"-I{d}" for d in include_dirs), "-T", str(LINK_SCRIPT),
                      "-Wl,--entry=Reset_Handler", *(str(s) for s in sources), str(STARTUP),
                      str(runtime), "-o", str(out)])
    return out


def _build(out: Path, cpu: str, cmd: list[str]) -> None:
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        log = res.stderr + res.stdout
        raise QemuError(f"M55 build of {out.name} (-mcpu={cpu}) failed: {_first_error(log)}",
                        log)


def parse_counts(text: str) -> tuple[dict[int, tuple[int, int]], int]:
    """The plugin's ``hex_vaddr n_insns execs`` lines as blocks (address -> (instructions,
    executions)) and the total executed instruction count."""
    blocks: dict[int, tuple[int, int]] = {}
    total = 0
    for line in text.splitlines():
        if not line.strip():
            continue
        vaddr_s, n_s, execs_s = line.split()
        vaddr, n, execs = int(vaddr_s, 16), int(n_s), int(execs_s)
        total += n * execs
        old_n, old_execs = blocks.get(vaddr, (0, 0))
        blocks[vaddr] = (max(old_n, n), old_execs + execs)
    return blocks, total


def qemu_command(elf: Path | str, console: Path | str, counts: Path | str | None = None
                 ) -> list[str]:
    """The QEMU command line that runs ``elf``, with the semihosting console written to
    ``console`` and, given ``counts``, the counting plugin writing there."""
    exe = qemu_binary()
    if exe is None:
        raise QemuError(_missing())
    cmd = [exe, "-M", BOARD, "-cpu", QEMU_CPU, "-display", "none", "-monitor", "none",
           "-serial", "none", "-chardev", f"file,id=qlanecon,path={console}",
           "-semihosting-config", "enable=on,target=native,chardev=qlanecon"]
    if counts is not None:
        cmd += ["-plugin", f"{plugin_path()},out={counts}"]
    return [*cmd, "-kernel", str(elf)]


def run(elf: Path | str, timeout_s: float = 60, count: bool = True) -> QemuRun:
    """Run the image on the M55 model until it exits (semihosting); with ``count``, count the
    executed instructions. A `QemuTimeout` when it runs longer than ``timeout_s``."""
    elf = Path(elf)
    if not elf.is_file():
        raise QemuError(f"no image {elf}")
    with tempfile.TemporaryDirectory(prefix="qlane-qemu-") as tmp:
        console_file = Path(tmp) / "console.txt"
        counts_file = Path(tmp) / "counts.txt" if count else None
        cmd = qemu_command(elf, console_file, counts_file)
        start = time.perf_counter()
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, check=False,
                                 timeout=timeout_s)
        except subprocess.TimeoutExpired as exc:
            raise QemuTimeout(f"{elf.name} did not exit within {timeout_s:g} s on QEMU "
                              f"{BOARD} (a hang or a lockup; raise timeout_s if it is long)"
                              ) from exc
        seconds = time.perf_counter() - start
        console = console_file.read_text(errors="replace") if console_file.exists() else ""
        prog = Path(cmd[0]).name + ":"  # QEMU's own messages start with its name
        errors = [ln for ln in res.stderr.splitlines()
                  if ln.startswith(prog) and not ln.startswith(prog + " warning")]
        if errors or (counts_file is not None and not counts_file.exists()):
            why = errors[0] if errors else (res.stderr.strip().splitlines() or ["no output"])[-1]
            raise QemuError(f"QEMU could not run {elf.name} (exit {res.returncode}): {why}",
                            res.stderr)
        blocks: dict[int, tuple[int, int]] = {}
        total = 0
        if counts_file is not None:
            blocks, total = parse_counts(counts_file.read_text())
    return QemuRun(res.returncode, console, blocks, total, seconds)
