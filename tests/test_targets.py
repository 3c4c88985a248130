"""Targets parsed once into typed objects, checked against a schema; the ISA / machine registry."""

from __future__ import annotations

import platform
from pathlib import Path

import pytest

from qlane.codegen import isa as isa_registry
from qlane.codegen.isa import ARCHES, ISAS
from qlane.codegen.names import ISAS as SYMBOL_ISAS
from qlane.codegen.names import KernelSpec, parse_symbol
from qlane.codegen.targets import (
    PROFILES,
    CostModel,
    LinkLayout,
    TargetError,
    alias_table,
    load_target,
    parse_target,
    target_aliases,
    target_names,
)

ROOT = Path(__file__).resolve().parents[1]


def _text(name: str) -> str:
    return (ROOT / "targets" / f"{name}.toml").read_text()


def test_every_bundled_target_is_typed() -> None:
    assert target_names() == ["cortex-a53", "cortex-a72", "cortex-m4", "cortex-m55",
                              "cortex-m7", "cortex-m85", "generic", "stm32l4r5"]
    for name in target_names():
        t = load_target(name)
        assert t.profile in PROFILES and t.isa[-1] == "c"
        assert all(i in ISAS for i in t.isa)
        if name == "generic":
            assert t.memory is None and t.cost is None and t.machine == ""
            continue
        assert t.core == (name if name.startswith("cortex") else "cortex-m4")
        assert isinstance(t.memory, LinkLayout)
        assert isinstance(t.cost, CostModel) and t.cost.peak_macs_per_cycle > 0
        assert t.machine == ("thumb" if t.m_profile else "aarch64")
        flash = t.regions_of("flash")
        assert sum(r.bytes for r in flash) == t.flash_bytes
        assert all(r.wait_states == t.cost.flash_wait_states for r in flash)
    m4 = load_target("cortex-m4")
    assert m4.region("flash").wait_states == 5 and m4.region("flash").line_bytes == 16
    assert m4.memory.ram_bytes == 196_608 and m4.memory.flash_origin == 0x0800_0000


def test_helium_targets() -> None:
    """The Helium cores run MVE kernels first (then DSP, then C), run their instruction-set
    tier on QEMU, and cost each MVE instruction as two 64-bit beats at 8 int8 MACs/cycle."""
    for name, clock, flash, sram in (("cortex-m55", 400_000_000, 5_767_168, 5_505_024),
                                     ("cortex-m85", 480_000_000, 2_097_152, 1_048_576)):
        t = load_target(name)
        assert t.isa == ("mve", "dsp", "c") and t.features["mve"] and t.features["dsp"]
        assert (t.emulator, t.machine, t.arch) == ("qemu", "thumb", "armv8.1-m.main")
        assert (t.clock_hz, t.flash_bytes, t.sram_bytes) == (clock, flash, sram)
        assert t.cost.q_occupancy == 2 and t.cost.peak_macs_per_cycle == 8
        assert t.cost.mca_cpu == name and "+mve" in t.zig_cpu
    bad = _text("cortex-m55").replace('emulator = "qemu"', 'emulator = "gem5"')
    with pytest.raises(TargetError, match="emulator must be one of unicorn, qemu"):
        parse_target("cortex-m55", bad)
    assert load_target("cortex-m7").emulator == ""


def test_chip_and_board_names_are_aliases() -> None:
    """A user finds their part by chip or board name, in any case; the core names stay."""
    assert target_aliases() == {"stm32f407": "cortex-m4", "stm32f746": "cortex-m7",
                                "disco-f746ng": "cortex-m7", "nucleo-l4r5zi": "stm32l4r5",
                                "alif-e7-hp": "cortex-m55", "ensemble-e7": "cortex-m55",
                                "ra8m1": "cortex-m85", "ek-ra8m1": "cortex-m85"}
    for alias, name in target_aliases().items():
        assert load_target(alias) is load_target(name) is load_target(alias.upper())
        assert alias in load_target(name).aliases and alias not in target_names()
    assert load_target("STM32L4R5").name == "stm32l4r5"
    with pytest.raises(TargetError, match=r"cortex-m4 \(stm32f407\), .*stm32l4r5 "
                                          r"\(nucleo-l4r5zi\)"):
        load_target("stm32h743")


@pytest.mark.parametrize("aliases, message", [
    ('["cortex-m4"]', "aliases must be distinct"),  # its own name
    ('["STM32F407"]', "aliases must be distinct"),  # lower case only
    ('["a", "a"]', "aliases must be distinct"),
    ('[""]', "aliases must be distinct"),
    ('"stm32f407"', "aliases must be list"),
    ("[1]", "aliases must be distinct"),
])
def test_bad_aliases_are_one_clear_error(aliases: str, message: str) -> None:
    text = _text("cortex-m4").replace('aliases = ["stm32f407"]', f"aliases = {aliases}", 1)
    with pytest.raises(TargetError, match=message):
        parse_target("cortex-m4", text)


def test_an_alias_names_one_target() -> None:
    m4 = parse_target("cortex-m4", _text("cortex-m4"))
    other = parse_target("my-m4", _text("cortex-m4").replace('name = "cortex-m4"',
                                                              'name = "my-m4"'))
    with pytest.raises(TargetError, match="alias 'stm32f407' is already .* 'cortex-m4'"):
        alias_table([m4, other])
    clash = parse_target("stm32f407", _text("cortex-m4").replace(
        'name = "cortex-m4"\naliases = ["stm32f407"]', 'name = "stm32f407"\naliases = []'))
    with pytest.raises(TargetError, match="already the name or an alias of target 'stm32f407'"):
        alias_table([m4, clash])


def test_stm32l4r5_is_the_m4_core_with_the_l4r5_memories() -> None:
    """Same pipeline model and static tables as cortex-m4; clock, memories and flash from the
    STM32L4R5 (RM0432): 5 wait states at 120 MHz, 64-bit reads, 256-byte ART data cache."""
    l4, m4 = load_target("stm32l4r5"), load_target("cortex-m4")
    assert (l4.core, l4.arch, l4.isa, l4.zig_cpu, l4.unicorn_cpu, l4.cflags) == \
        (m4.core, m4.arch, m4.isa, m4.zig_cpu, m4.unicorn_cpu, m4.cflags)
    assert (l4.clock_hz, l4.sram_bytes, l4.flash_bytes) == (120_000_000, 640 << 10, 2 << 20)
    assert [(r.name, r.kind, r.origin, r.bytes) for r in l4.regions] == [
        ("flash", "flash", 0x0800_0000, 2 << 20), ("sram", "ram", 0x2000_0000, 640 << 10)]
    assert l4.memory.ram_origin == 0x2000_0000 and l4.memory.ram_bytes == 640 << 10
    same = ("pipeline", "issue_width", "peak_macs_per_cycle", "branch_taken_penalty", "cycles",
            "latency", "units", "bus_bytes", "q_occupancy", "memory_pipelining", "window",
            "sram_wait_states", "mca_cpu", "mca_strip_it", "static")
    assert all(getattr(l4.cost, k) == getattr(m4.cost, k) for k in same)
    assert (l4.cost.flash_wait_states, l4.cost.flash_line_bytes, l4.cost.flash_cache_bytes) == \
        (5, 8, 256)
    flash = l4.region("flash")
    assert (flash.wait_states, flash.line_bytes, flash.cache_bytes) == (5, 8, 256)


def test_cli_lists_aliases() -> None:
    from click.testing import CliRunner

    from qlane.cli import main

    out = CliRunner().invoke(main, ["targets"])
    assert out.exit_code == 0, out.output
    lines = {line.split()[0]: line for line in out.output.splitlines()[1:]}
    assert set(lines) == set(target_names())
    assert "stm32f746, disco-f746ng" in lines["cortex-m7"] and "120 MHz" in lines["stm32l4r5"]


def test_loaded_once() -> None:
    assert load_target("cortex-m7") is load_target("cortex-m7")


@pytest.mark.parametrize("arch, profile", [
    ("armv7e-m", "M"), ("armv8-m.main", "M"), ("armv8.1-m.main", "M"), ("armv6-m", "M"),
    ("armv8-m.base", "M"), ("armv8-a", "A"), ("armv7-a", "A"), ("portable", "portable"),
])
def test_profile_from_arch(arch: str, profile: str) -> None:
    """Armv8-M cores (M33, M55) are M-profile: they get the one-row tiling of small cores."""
    text = _text("cortex-m4").replace('profile = "M"\n', "").replace(
        'arch = "armv7e-m"', f'arch = "{arch}"')
    assert parse_target("cortex-m4", text).profile == profile


@pytest.mark.parametrize("edit, message", [
    (("clock_hz = 168_000_000", 'clock_hz = "fast"'), "clock_hz must be int"),
    (("clock_hz = 168_000_000", "clock_hz = -1"), "must not be negative"),
    (('isa = ["dsp", "c"]', 'isa = ["dsp", "sse"]'), "unknown ISA 'sse'"),
    (('isa = ["dsp", "c"]', 'isa = ["dsp"]'), "must end with the portable 'c'"),
    (('profile = "M"', 'profile = "R"'), "profile must be one of"),
    (("issue_width = 1", "issue_wdith = 1"), "unknown key 'issue_wdith'"),
    (("issue_width = 1\n", ""), "missing key 'issue_width'"),
    (("load = 2\nstore = 2", 'load = "two"\nstore = 2'), "load must be int"),
    (("flash_wait_states = 5", "flash_wait_states = true"), "not a boolean"),
    (("ram_origin = 0x2000_0000", "ram_origin = 0x1000_0000"), "overlaps the emulator"),
    (('zig_target = "thumb-freestanding-eabihf"', 'zig_target = "riscv32-freestanding"'),
     "neither thumb-"),
    (('name = "cortex-m4"', 'name = "cortex-m3"'), "expected 'cortex-m4'"),
    (("[cost]", "[cost"), "not valid TOML"),
])
def test_malformed_target_is_one_clear_error(edit: tuple[str, str], message: str) -> None:
    old, new = edit
    text = _text("cortex-m4")
    assert old in text
    with pytest.raises(TargetError, match=message) as err:
        parse_target("cortex-m4", text.replace(old, new, 1))
    assert "cortex-m4.toml" in str(err.value) and "\n" not in str(err.value).strip()


def test_target_file_by_path(tmp_path: Path) -> None:
    path = tmp_path / "my-board.toml"
    path.write_text(_text("cortex-m7").replace('name = "cortex-m7"', 'name = "my-board"')
                    .replace("clock_hz = 216_000_000", "clock_hz = 400_000_000"))
    t = load_target(str(path))
    assert t.name == "my-board" and t.clock_hz == 400_000_000 and t.cost.clock_hz == 400_000_000
    with pytest.raises(TargetError, match="cannot read target file"):
        load_target(str(tmp_path / "missing.toml"))
    with pytest.raises(TargetError, match="unknown target 'nope'; choose one of"):
        load_target("nope")


def test_isa_registry_drives_symbols_and_headers() -> None:
    assert SYMBOL_ISAS == tuple(ISAS)
    for tag in ISAS:
        spec = KernelSpec("m", 1, "int8", "fc", "n10", "double", "1x4", tag)
        assert parse_symbol(spec.symbol).isa == tag
    from qlane.codegen.cprims import header_files

    for name, entry in ISAS.items():
        files = header_files(name)
        assert set(files) == {"qlane_fixedpoint.h", *entry.headers}
        for header in entry.headers:
            assert f'#include "{header}"' in files["qlane_fixedpoint.h"]
    assert {a.name for a in ARCHES.values()} == {"thumb", "aarch64"}
    assert all(m in ARCHES or m == "*" for entry in ISAS.values() for m in entry.machines)


def test_simde_only_where_the_host_lacks_neon(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    assert ISAS["neon"].host_include_dirs() == []
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    dirs = ISAS["neon"].host_include_dirs()
    assert len(dirs) == 1 and (Path(dirs[0]) / "simde" / "arm" / "neon.h").is_file()
    assert ISAS["dsp"].host_include_dirs() == [] and ISAS["c"].host_include_dirs() == []
    assert isa_registry.host_has_neon() is False
