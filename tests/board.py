"""Run a generated bare-metal example ELF (board.c + startup.c + the model) on an emulated
Cortex-M core: the chip's memories mapped from the target, the image loaded at its load
addresses, reset handler to the idle loop after main; returns the qlane_result_* globals."""

from __future__ import annotations

from pathlib import Path

import capstone
from elftools.elf.elffile import ELFFile
from unicorn import UC_ARCH_ARM, UC_MODE_THUMB, Uc, arm_const

from qlane.codegen.targets import Target

RESULTS = ("status", "checksum", "top1", "match")


def run_board_elf(path: Path, target: Target, max_instructions: int = 2_000_000_000
                  ) -> dict[str, int]:
    uc = Uc(UC_ARCH_ARM, UC_MODE_THUMB)
    uc.ctl_set_cpu_model(getattr(arm_const, f"UC_CPU_ARM_{target.unicorn_cpu}"))
    for r in target.regions:
        if r.kind:
            uc.mem_map(r.origin, (r.bytes + 0xFFF) & ~0xFFF)
    uc.mem_map(0xE000E000, 0x1000)  # the system control space: the startup's CPACR write
    with Path(path).open("rb") as fh:
        elf = ELFFile(fh)
        for seg in elf.iter_segments():
            if seg["p_type"] == "PT_LOAD" and seg["p_filesz"]:
                uc.mem_write(seg["p_paddr"], seg.data())  # .data at its flash load address
        symtab = elf.get_section_by_name(".symtab")
        syms = {s.name: int(s["st_value"]) for s in symtab.iter_symbols() if s.name}
    reset = syms["qlane_reset_handler"] & ~1
    md = capstone.Cs(capstone.CS_ARCH_ARM, capstone.CS_MODE_THUMB | capstone.CS_MODE_MCLASS)
    code = bytes(uc.mem_read(reset, 512))
    called = False
    idle = None
    for insn in md.disasm(code, reset):  # the branch-to-self after `bl main`
        called |= insn.mnemonic == "bl" and insn.op_str == f"#{hex(syms['main'] & ~1)}"
        if called and insn.mnemonic.startswith("b") and insn.op_str == f"#{hex(insn.address)}":
            idle = insn.address
            break
    assert idle is not None, "no idle loop after main in the reset handler"
    uc.reg_write(arm_const.UC_ARM_REG_SP, syms["__stack_top"])
    uc.emu_start(reset | 1, idle, count=max_instructions)
    assert uc.reg_read(arm_const.UC_ARM_REG_PC) == idle, "the example did not return from main"

    def read(name: str) -> int:
        return int.from_bytes(uc.mem_read(syms[f"qlane_result_{name}"], 4), "little",
                              signed=name != "checksum")

    return {name: read(name) for name in RESULTS}
