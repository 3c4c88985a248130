"""Target chips: one TOML file per chip in ``targets/``, parsed once into a typed `Target`.

A target names its core and profile, the kernel ISAs it runs (best first, portable C last), its
clock, the chip's memories (capacity, flash wait states), how to cross-compile and emulate it, and
its cycle model (`CostModel`). Every table is checked against a schema when the file is read: a
malformed file is one clear `TargetError`, never a late KeyError.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from qlane.errors import QlaneError

from .isa import ARCHES, ISAS

PROFILES = ("A", "M", "portable")
"""Architecture profiles: application (A-class), microcontroller (M-class), or no chip."""


class TargetError(QlaneError, ValueError):
    """An unknown target name or a malformed target file."""


@dataclass(frozen=True)
class Region:
    """One memory of the chip: kind, address range, and the wait states of a read that misses
    its cache."""

    name: str  # "flash", "sram", "ccm", ...
    bytes: int  # 0: unbounded (DRAM-backed cores)
    wait_states: int = 0
    line_bytes: int = 0  # bytes one access fetches (flash line)
    cache_bytes: int = 0  # read cache in front of it (e.g. the STM32 ART accelerator)
    kind: str = ""  # "flash" (code, constants) | "ram" (data, stack) | "" (not placed)
    origin: int = 0
    note: str = ""  # what the datasheet says about it (contiguity, DMA, ...)


@dataclass(frozen=True)
class LinkLayout:
    """Where the cross build puts code and data: the linker script's regions and the stack.

    The flash region may be larger than the chip's flash so that ``verify --isa`` also runs
    models that do not fit; `qlane estimate` compares the image with the real capacity.
    """

    flash_origin: int
    flash_bytes: int
    ram_origin: int
    ram_bytes: int
    stack_bytes: int


@dataclass(frozen=True)
class CostModel:
    """A target's ``[cost]`` table: the pipeline, memory and static-fit parameters."""

    target: str
    clock_hz: int
    sram_bytes: int
    flash_bytes: int
    pipeline: str  # "in-order" | "out-of-order"
    issue_width: int
    peak_macs_per_cycle: float
    branch_taken_penalty: int
    cycles: dict[str, int]  # issue cycles per instruction class
    latency: dict[str, int]  # result latency per kind: alu mul vmac mac_accumulate vec load
    # (Helium: vload, vreduce - VMLADAV and other reductions into a core register)
    units: dict[str, int]  # execution units per pool: alu mul neon neon_mac load store branch
    bus_bytes: int  # bytes a load/store moves per cycle (LDM, LDRD, LDP, LD1 take longer)
    q_occupancy: int  # cycles a 128-bit NEON operation holds its unit (A53: 2)
    memory_pipelining: bool  # Cortex-M: a load/store after a single LDR takes one cycle less
    window: int  # out-of-order: instructions in flight (0: unbounded)
    flash_wait_states: int
    flash_line_bytes: int
    flash_cache_bytes: int
    sram_wait_states: int
    mca_cpu: str
    mca_strip_it: bool
    static: dict[str, Any] = field(default_factory=dict)
    beats: bool = False
    """Helium: a 128-bit instruction holds its one pipe (integer, multiply, load/store) for
    ``q_occupancy`` beats while issue moves on after the first, so the next instruction overlaps
    it on another pipe; scalar loads and stores use the integer unit."""
    mca_llvm: int = 16
    """The LLVM release whose llvm-mca models this core (the M55/M85 with MVE: 19)."""
    mca_triple: str = ""
    """llvm-mca's ``-mtriple`` when the architecture's default (`isa.Arch.mca_triple`) does not
    describe the core (Armv8.1-M)."""

    @property
    def min_cycles_per_mac(self) -> float:
        """1 / peak MACs per cycle: no layer can do better."""
        return 1.0 / self.peak_macs_per_cycle


@dataclass(frozen=True)
class Target:
    """A chip qlane generates code for."""

    name: str
    description: str
    core: str  # e.g. "cortex-m4"; "" for portable C
    arch: str  # architecture version, e.g. "armv7e-m", "armv8.1-m.main", "armv8-a"
    profile: str  # one of PROFILES
    isa: tuple[str, ...]  # kernel ISAs, best first; "c" is always last
    features: dict[str, bool]
    clock_hz: int
    sram_bytes: int
    flash_bytes: int
    cflags: tuple[str, ...]
    zig_target: str
    zig_cpu: str
    unicorn_cpu: str
    memory: LinkLayout | None = None
    emulator: str = ""
    """Machine backend of the instruction-set tier (`qlane.codegen.machine`); "" is the
    architecture's default (`isa.Arch.backend`)."""
    regions: tuple[Region, ...] = ()
    cost: CostModel | None = None
    aliases: tuple[str, ...] = ()  # other names of the chip or board ("stm32f407")

    @property
    def preferred_isa(self) -> str:
        """The first (fastest) kernel ISA this chip runs; ``c`` is always last."""
        return self.isa[0]

    @property
    def m_profile(self) -> bool:
        """A microcontroller core (Armv6-M, Armv7-M, Armv8-M, Armv8.1-M): few registers."""
        return self.profile == "M"

    @property
    def machine(self) -> str:
        """The instruction set of the cross build and the emulator (`isa.ARCHES`), or ""."""
        for name, arch in ARCHES.items():
            if self.zig_target.startswith(arch.zig_prefix):
                return name
        return ""

    def region(self, name: str) -> Region | None:
        """The chip memory called ``name`` ("flash", "sram"), if described."""
        return next((r for r in self.regions if r.name == name), None)

    def regions_of(self, kind: str) -> tuple[Region, ...]:
        """The chip's memories of one kind ("flash" or "ram"), largest first."""
        return tuple(sorted((r for r in self.regions if r.kind == kind),
                            key=lambda r: (-r.bytes, r.origin)))


# --- schema ----------------------------------------------------------------------------------

_INT = (int,)
_NUM = (int, float)
_TOP = {
    "name": str, "description": str, "core": str, "arch": str, "profile": str, "isa": list,
    "features": dict, "clock_hz": _INT, "sram_bytes": _INT, "flash_bytes": _INT,
    "cflags": list, "zig_target": str, "zig_cpu": str, "unicorn_cpu": str,
    "memory": dict, "cost": dict, "regions": list, "aliases": list, "emulator": str,
}
_OPTIONAL_TOP = {"core", "profile", "memory", "cost", "regions", "aliases", "emulator"}
EMULATORS = ("unicorn", "qemu")
"""Machine backends a target may name (`qlane.codegen.machine`)."""
_REGION = {"name": str, "kind": str, "origin": _INT, "bytes": _INT, "note": str}
_MEMORY = {"flash_origin", "flash_bytes", "ram_origin", "ram_bytes", "stack_bytes"}
_COST = {
    "pipeline": str, "issue_width": _INT, "peak_macs_per_cycle": _NUM,
    "branch_taken_penalty": _INT, "bus_bytes": _INT, "q_occupancy": _INT,
    "memory_pipelining": bool, "window": _INT, "mca_cpu": str, "mca_strip_it": bool,
    "mca_llvm": _INT, "mca_triple": str, "beats": bool,
    "cycles": dict, "latency": dict, "units": dict, "memory": dict, "static": dict,
}
_COST_REQUIRED = {"pipeline", "issue_width", "peak_macs_per_cycle", "branch_taken_penalty",
                  "cycles", "latency"}
_COST_MEMORY = {"flash_wait_states", "flash_line_bytes", "flash_cache_bytes", "sram_wait_states"}
_CLASSES = {"mac", "simd", "load", "store", "branch", "other"}
_LATENCIES = {"alu", "mul", "mac_accumulate", "vmac", "vec", "load", "vload", "vreduce"}
_UNITS = {"alu", "mul", "neon", "neon_mac", "load", "store", "branch"}
_DEFAULT_LAYOUT = {
    "thumb": LinkLayout(0x0800_0000, 1 << 20, 0x2000_0000, 256 << 10, 8 << 10),
    "aarch64": LinkLayout(0x0800_0000, 64 << 20, 0x2000_0000, 64 << 20, 1 << 20),
}
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*")
SENTINEL = 0x1000_0000
"""Return address of emulated calls: must stay outside flash and RAM."""


def _check_keys(where: str, table: dict[str, Any], allowed: Any, required: Any = ()) -> None:
    unknown = sorted(set(table) - set(allowed))
    if unknown:
        raise TargetError(f"{where}: unknown key {unknown[0]!r} (allowed: "
                          f"{', '.join(sorted(allowed))})")
    missing = sorted(set(required) - set(table))
    if missing:
        raise TargetError(f"{where}: missing key {missing[0]!r}")


def _typed(where: str, key: str, value: Any, kind: Any) -> Any:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds:
        raise TargetError(f"{where}: {key} must be {kinds[0].__name__}, not a boolean")
    if not isinstance(value, kinds):
        raise TargetError(f"{where}: {key} must be {kinds[0].__name__}, got {value!r}")
    if kinds[0] in (int, float) and value < 0:
        raise TargetError(f"{where}: {key} must not be negative, got {value!r}")
    return value


def _int_table(where: str, table: Any, allowed: set[str]) -> dict[str, int]:
    if not isinstance(table, dict):
        raise TargetError(f"{where} must be a table")
    _check_keys(where, table, allowed)
    return {k: int(_typed(where, k, v, _INT)) for k, v in table.items()}


def _profile_of(arch: str) -> str:
    if arch == "portable":
        return "portable"
    a = arch.lower()
    return "M" if a.endswith(("-m", "-m.main", "-m.base")) or "armv6" in a else "A"


def _cost(name: str, data: dict[str, Any], clock: int, sram: int, flash: int) -> CostModel | None:
    where = f"target file {name}.toml [cost]"
    c = data.get("cost", {})
    if not isinstance(c, dict):
        raise TargetError(f"{where} must be a table")
    if not c:
        return None
    _check_keys(where, c, _COST, _COST_REQUIRED)
    for k, v in c.items():
        _typed(where, k, v, _COST[k])
    if c["pipeline"] not in ("in-order", "out-of-order"):
        raise TargetError(f"{where}: pipeline must be 'in-order' or 'out-of-order'")
    if not c["peak_macs_per_cycle"] or not c["issue_width"]:
        raise TargetError(f"{where}: peak_macs_per_cycle and issue_width must be positive")
    if not clock:
        raise TargetError(f"{where}: a cycle model needs clock_hz")
    mem = _int_table(f"{where} memory", c.get("memory", {}), _COST_MEMORY)
    static = c.get("static", {})
    return CostModel(
        target=name, clock_hz=clock, sram_bytes=sram, flash_bytes=flash,
        pipeline=c["pipeline"], issue_width=int(c["issue_width"]),
        peak_macs_per_cycle=float(c["peak_macs_per_cycle"]),
        branch_taken_penalty=int(c["branch_taken_penalty"]),
        cycles=_int_table(f"{where} cycles", c["cycles"], _CLASSES),
        latency=_int_table(f"{where} latency", c["latency"], _LATENCIES),
        units=_int_table(f"{where} units", c.get("units", {}), _UNITS),
        bus_bytes=int(c.get("bus_bytes", 4)) or 4, q_occupancy=int(c.get("q_occupancy", 1)),
        memory_pipelining=bool(c.get("memory_pipelining", False)),
        window=int(c.get("window", 0)),
        flash_wait_states=mem.get("flash_wait_states", 0),
        flash_line_bytes=mem.get("flash_line_bytes", 16) or 16,
        flash_cache_bytes=mem.get("flash_cache_bytes", 0),
        sram_wait_states=mem.get("sram_wait_states", 0),
        mca_cpu=str(c.get("mca_cpu", name)), mca_strip_it=bool(c.get("mca_strip_it", False)),
        static=dict(static), mca_llvm=int(c.get("mca_llvm", 16)), beats=bool(c.get("beats", False)),
        mca_triple=str(c.get("mca_triple", "")),
    )


def _regions(where: str, table: list[Any], cost: CostModel | None, flash: int,
             sram: int) -> tuple[Region, ...]:
    """The chip's memories: ``[[regions]]`` when given (each placed at an address), else one
    flash and one SRAM region of ``flash_bytes`` / ``sram_bytes``."""
    ws = dict(wait_states=cost.flash_wait_states, line_bytes=cost.flash_line_bytes,
              cache_bytes=cost.flash_cache_bytes) if cost else {}
    if not table:
        return (Region("flash", flash, **ws, kind="flash" if flash else ""),
                Region("sram", sram, cost.sram_wait_states if cost else 0,
                       kind="ram" if sram else ""))
    out = []
    for k, r in enumerate(table):
        at = f"{where} [[regions]] #{k + 1}"
        if not isinstance(r, dict):
            raise TargetError(f"{at} must be a table")
        _check_keys(at, r, _REGION, {"name", "kind", "origin", "bytes"})
        for key, v in r.items():
            _typed(at, key, v, _REGION[key])
        if r["kind"] not in ("flash", "ram"):
            raise TargetError(f"{at}: kind must be 'flash' or 'ram'")
        extra = ws if r["kind"] == "flash" else {}
        out.append(Region(r["name"], int(r["bytes"]), **extra, kind=r["kind"],
                          origin=int(r["origin"]), note=r.get("note", "")))
    names = [r.name for r in out]
    if len(set(names)) != len(names):
        raise TargetError(f"{where}: [[regions]] names must be unique")
    spans = sorted((r.origin, r.origin + r.bytes, r.name) for r in out)
    for (_, end, a), (lo, _, b) in zip(spans, spans[1:]):
        if lo < end:
            raise TargetError(f"{where}: [[regions]] {a} and {b} overlap")
    if sum(r.bytes for r in out if r.kind == "flash") != flash:
        raise TargetError(f"{where}: flash_bytes must equal the flash regions' sum")
    if sum(r.bytes for r in out if r.kind == "ram") != sram:
        raise TargetError(f"{where}: sram_bytes must equal the RAM regions' sum")
    return tuple(out)


def parse_target(name: str, text: str) -> Target:
    """A `Target` from the text of ``targets/<name>.toml``; `TargetError` names what is wrong."""
    where = f"target file {name}.toml"
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise TargetError(f"{where} is not valid TOML: {e}") from None
    _check_keys(where, data, _TOP, set(_TOP) - _OPTIONAL_TOP)
    for k, v in data.items():
        _typed(where, k, v, _TOP[k])
    if data["name"] != name:
        raise TargetError(f"{where}: name is {data['name']!r}, expected {name!r}")
    aliases = tuple(data.get("aliases", []))
    bad = [a for a in aliases if not isinstance(a, str) or not _NAME.fullmatch(a) or a == name]
    if bad or len(set(aliases)) != len(aliases):
        raise TargetError(f"{where}: aliases must be distinct lower-case names other than the "
                          f"target's (letters, digits, '-', '_'), got {aliases!r}")
    isa = tuple(data["isa"])
    unknown = [i for i in isa if i not in ISAS]
    if unknown:
        raise TargetError(f"{where}: unknown ISA {unknown[0]!r} (known: {', '.join(ISAS)})")
    if not isa or isa[-1] != "c":
        raise TargetError(f"{where}: isa must end with the portable 'c'")
    profile = data.get("profile", _profile_of(data["arch"]))
    if profile not in PROFILES:
        raise TargetError(f"{where}: profile must be one of {', '.join(PROFILES)}")
    for k in ("cflags",):
        if not all(isinstance(x, str) for x in data[k]):
            raise TargetError(f"{where}: {k} must be a list of strings")
    features = data["features"]
    if not all(isinstance(v, bool) for v in features.values()):
        raise TargetError(f"{where}: features must be booleans")
    machine = next((m for m, a in ARCHES.items()
                    if data["zig_target"].startswith(a.zig_prefix)), "")
    if data["zig_target"] and not machine:
        raise TargetError(f"{where}: zig_target {data['zig_target']!r} is neither "
                          + " nor ".join(f"{a.zig_prefix}-*" for a in ARCHES.values()))
    layout = None
    if machine:
        merged = dict(vars(_DEFAULT_LAYOUT[machine]))
        merged.update(_int_table(f"{where} [memory]", data.get("memory", {}), _MEMORY))
        layout = LinkLayout(**merged)
        for lo, size, what in ((layout.flash_origin, layout.flash_bytes, "flash"),
                               (layout.ram_origin, layout.ram_bytes, "RAM")):
            if lo <= SENTINEL < lo + size:
                raise TargetError(f"{where}: [memory] {what} region overlaps the emulator's "
                                  f"return address 0x{SENTINEL:08x}")
    elif data.get("memory"):
        raise TargetError(f"{where}: [memory] needs a zig_target to link for")
    emulator = data.get("emulator", "")
    if emulator and emulator not in EMULATORS:
        raise TargetError(f"{where}: emulator must be one of {', '.join(EMULATORS)}, "
                          f"got {emulator!r}")
    clock, sram, flash = int(data["clock_hz"]), int(data["sram_bytes"]), int(data["flash_bytes"])
    cost = _cost(name, data, clock, sram, flash)
    regions = _regions(where, data.get("regions", []), cost, flash, sram)
    return Target(
        name=name, description=data["description"], core=data.get("core", ""),
        arch=data["arch"], profile=profile, isa=isa, features=dict(features), clock_hz=clock,
        sram_bytes=sram, flash_bytes=flash, cflags=tuple(data["cflags"]),
        zig_target=data["zig_target"], zig_cpu=data["zig_cpu"],
        unicorn_cpu=data["unicorn_cpu"], memory=layout, regions=regions, cost=cost,
        aliases=aliases, emulator=emulator,
    )


def _files() -> dict[str, Any]:
    return {p.name[:-5]: p for p in resources.files("qlane.targets").iterdir()
            if p.name.endswith(".toml")}


def target_names() -> list[str]:
    """Names of all bundled targets, sorted."""
    return sorted(_files())


@cache
def _load_bundled(name: str) -> Target:
    return parse_target(name, _files()[name].read_text(encoding="utf-8"))


def alias_table(targets: Iterable[Target]) -> dict[str, str]:
    """Alias -> target name over ``targets``; an alias that is another target's name or alias
    is a `TargetError`."""
    targets = sorted(targets, key=lambda x: x.name)
    names = {x.name for x in targets}
    table: dict[str, str] = {}
    for target in targets:
        for alias in target.aliases:
            if alias in names or alias in table:
                other = alias if alias in names else table[alias]
                raise TargetError(f"target file {target.name}.toml: alias {alias!r} is already "
                                  f"the name or an alias of target {other!r}")
            table[alias] = target.name
    return table


@cache
def target_aliases() -> dict[str, str]:
    """Every alias of a bundled target (a chip or board name) and the target it names."""
    return alias_table(_load_bundled(name) for name in _files())


def resolve_target_name(name: str) -> str | None:
    """The bundled target that ``name`` (its name or an alias, any case) names, or None."""
    files = _files()
    for key in dict.fromkeys((name, name.lower())):
        if key in files:
            return key
        if key in target_aliases():
            return target_aliases()[key]
    return None


def load_target(name: str) -> Target:
    """A bundled target by name or alias (``stm32f407`` is ``cortex-m4``), or a target file
    given by path (``my-board.toml``)."""
    if name.endswith(".toml"):
        path = Path(name)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as e:
            raise TargetError(f"cannot read target file {name}: {e.strerror}") from None
        return parse_target(path.stem, text)
    found = resolve_target_name(name)
    if found is None:
        known = [f"{n} ({', '.join(_load_bundled(n).aliases)})" if _load_bundled(n).aliases
                 else n for n in target_names()]
        raise TargetError(f"unknown target {name!r}; choose one of {', '.join(known)}")
    return _load_bundled(found)


def cost_model_of(target: Target) -> CostModel | None:
    """The target's cycle model with its clock and capacities as the target states them now."""
    if target.cost is None:
        return None
    return replace(target.cost, target=target.name, clock_hz=target.clock_hz,
                   sram_bytes=target.sram_bytes, flash_bytes=target.flash_bytes)
