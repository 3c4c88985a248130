"""One instruction decoder per architecture (capstone): every fact anyone needs, decoded once.

An `Insn` carries the emulator's view (class, whether it ends a basic block, its static target)
and the cost model's (mnemonic, operands, registers read and written, memory base register,
writeback, condition). Machines decode each executed address once and hand the same records to
the counts and to `qlane.codegen.cost`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from typing import Any

import capstone

from ..isa import ARCHES

CLASSES = ("mac", "simd", "load", "store", "branch", "other")
"""Instruction classes of the counts; every executed instruction is in exactly one."""


@dataclass(frozen=True)
class Insn:
    """One decoded instruction (``mnemonic`` is empty for bytes capstone cannot decode)."""

    address: int
    size: int
    text: str  # "mnemonic operands"
    cls: str  # one of CLASSES
    flow: bool  # ends a basic block (branch, call, return, write to pc)
    target: int | None  # static target of a flow instruction
    mnemonic: str = ""
    name: str = ""  # instruction name without condition and width suffixes
    ops: str = ""  # operands text
    reads: tuple[str, ...] = ()  # registers read (capstone names)
    writes: tuple[str, ...] = ()  # registers written (capstone names)
    mem: bool = False  # has a memory operand
    base: str | None = None  # base register of the memory operand
    writeback: bool = False  # updates its base register
    conditional: bool = False  # carries a condition other than always (IT block, Bcc)
    align_base: str | None = None  # base of a word-alignment-sensitive access (Cortex-M)

    @property
    def known(self) -> bool:
        """False for bytes the decoder could not decode."""
        return bool(self.mnemonic)


class Decoder:
    """Decodes code of one architecture into `Insn` records."""

    arch = ""

    def __init__(self) -> None:
        cs_arch, *modes = ARCHES[self.arch].capstone
        mode = 0
        for m in modes:
            mode |= getattr(capstone, f"CS_MODE_{m}")
        self.md = capstone.Cs(getattr(capstone, f"CS_ARCH_{cs_arch}"), mode)
        self.md.detail = True

    def decode(self, code: bytes, address: int, known: dict[int, Insn] | None = None
               ) -> list[Insn]:
        """Every instruction of ``code`` placed at ``address``.

        One pass over the code, so Thumb IT blocks set the conditions of what follows. Records
        already in ``known`` are reused; new ones are added to it.
        """
        known = {} if known is None else known
        out: list[Insn] = []
        a, end = address, address + len(code)
        decoded: dict[int, Any] | None = None
        while a < end:
            insn = known.get(a)
            if insn is None:
                if decoded is None:
                    decoded = {d.address: d for d in self.md.disasm(code, address)}
                dec = decoded.get(a) or next(iter(self.md.disasm(code[a - address:], a, 1)),
                                             None)
                if dec is None:
                    word = code[a - address:a - address + 4]
                    step = self._unknown_size(word)
                    insn = Insn(a, step, f"<unknown {word[:step].hex()}>", "other", False, None)
                else:
                    insn = self.record(dec)
                known[a] = insn
            out.append(insn)
            a += insn.size
        return out

    def decode_one(self, code: bytes, address: int) -> Insn | None:
        """The first instruction of ``code`` at ``address`` (None: undecodable)."""
        dec = next(iter(self.md.disasm(code, address, 1)), None)
        return None if dec is None else self.record(dec)

    def record(self, dec: Any) -> Insn:
        """The `Insn` of one capstone instruction (``detail`` on)."""
        name = dec.insn_name() or dec.mnemonic.split(".")[0]
        ops = dec.op_str
        groups = set(dec.groups)
        flow = bool(groups & {capstone.CS_GRP_JUMP, capstone.CS_GRP_CALL, capstone.CS_GRP_RET,
                              capstone.CS_GRP_BRANCH_RELATIVE}) or self._flow(name, ops)
        target = None
        if flow and dec.operands and dec.operands[-1].type == capstone.CS_OP_IMM:
            target = int(dec.operands[-1].imm)
        cls = "branch" if flow else self._cls(name, ops)
        try:
            r_ids, w_ids = dec.regs_access()
        except capstone.CsError:
            r_ids, w_ids = [], []
        mem = [o for o in dec.operands if o.type == capstone.CS_OP_MEM]
        base = dec.reg_name(mem[0].mem.base) if mem and mem[0].mem.base else None
        return Insn(dec.address, dec.size, f"{dec.mnemonic} {ops}".rstrip(), cls, flow, target,
                    mnemonic=dec.mnemonic, name=name, ops=ops,
                    reads=tuple(dec.reg_name(r) for r in r_ids),
                    writes=tuple(dec.reg_name(w) for w in w_ids), mem=bool(mem), base=base,
                    writeback=bool(dec.writeback), conditional=self._conditional(dec),
                    align_base=self._align_base(dec, mem))

    # per-architecture facts -------------------------------------------------------------------

    def _flow(self, name: str, ops: str) -> bool:
        """Ends a basic block although capstone puts it in no jump/call/return group."""
        return False

    def _cls(self, name: str, ops: str) -> str:
        raise NotImplementedError

    def _unknown_size(self, word: bytes) -> int:
        return 4

    def _conditional(self, dec: Any) -> bool:
        return False

    def _align_base(self, dec: Any, mem: list[Any]) -> str | None:
        return None


_ARM_MAC = ("mul", "mla", "mls", "smul", "smla", "smls", "smmul", "smmla", "smmls", "smua",
            "smus", "umul", "umla", "umaal", "vmul", "vmla", "vmls", "vfma", "vfms", "vfnma",
            "vfnms", "vnmul", "vnmla", "vnmls", "vqdmul", "vqrdmul", "vqdmla", "vqdmls",
            "vqrdmla", "vqrdmls", "vsdot", "vudot", "vusdot", "vsudot")
_ARM_SIMD32 = re.compile(r"^(?:[su]|q|sh|uq|uh)(?:add8|add16|sub8|sub16|asx|sax)$"
                         r"|^[su]xta?b16$|^[su]sat16$|^sel$|^pkh(?:bt|tb)$|^usada?8$")
_ALIGNED_M = re.compile(r"^(?:ldrd|strd|ldrex|strex|ldm|stm|vldr|vstr|vldm|vstm)")
"""Cortex-M loads/stores that fault on an address that is not word aligned (ARMv7-M A3.2)."""
_PC_LIST = re.compile(r"\{[^}]*\bpc\b[^}]*\}")


_MAC_MVE = ("vrmlaldavh", "vrmlsldavh", "vrmlalvh", "vrmulh")
"""Helium multiplies whose names _ARM_MAC's prefixes miss (capstone 5 never yields them)."""


def thumb_class(name: str, ops: str) -> str:
    """The class (`CLASSES`, branches aside) of a Thumb-2 instruction from its name (no condition
    or width suffix) and operands: scalar and Helium (q registers) alike."""
    if name.startswith(_ARM_MAC) or name.startswith(_MAC_MVE):
        return "mac"
    if name.startswith(("ld", "vld")) or name in ("pop", "vpop"):
        return "load"
    if name.startswith(("st", "vst")) or name in ("push", "vpush"):
        return "store"
    if _ARM_SIMD32.match(name) or (name.startswith("v") and re.search(r"\bq\d+\b", ops)):
        return "simd"
    return "other"


class ThumbDecoder(Decoder):
    """Thumb-2 (Armv7-M / Armv8-M with the DSP and FP extensions)."""

    arch = "thumb"

    def _flow(self, name: str, ops: str) -> bool:
        return (name in ("tbb", "tbh")
                or (name in ("pop", "ldm", "ldmdb", "ldmia") and bool(_PC_LIST.search(ops)))
                or (name in ("ldr", "mov", "add", "sub") and ops.startswith("pc,")))

    def _cls(self, name: str, ops: str) -> str:
        return thumb_class(name, ops)

    def _unknown_size(self, word: bytes) -> int:
        return 4 if word[1] >> 3 in (0x1D, 0x1E, 0x1F) else 2

    def _conditional(self, dec: Any) -> bool:
        return dec.cc not in (0, capstone.arm.ARM_CC_AL)

    def _align_base(self, dec: Any, mem: list[Any]) -> str | None:
        if not _ALIGNED_M.match(dec.insn_name() or ""):
            return None
        reg = mem[0].mem.base if mem else dec.operands[0].reg  # LDM/STM: the first operand
        name = dec.reg_name(reg) if reg else None
        return name if name and name not in ("sp", "pc") else None


_A64_MAC = ("mul", "madd", "msub", "mneg", "smaddl", "smsubl", "smnegl", "smul", "umaddl",
            "umsubl", "umnegl", "umul", "mla", "mls", "smla", "smls", "umla", "umls", "sqdmul",
            "sqrdmul", "sqdml", "sqrdml", "pmul", "fmul", "fmla", "fmls", "fmadd", "fmsub",
            "fnmadd", "fnmsub", "fnmul", "sdot", "udot", "usdot", "sudot", "smmla", "ummla",
            "usmmla", "bfdot", "bfmmla", "bfmla", "fdot")
_A64_VREG = re.compile(r"\bv\d+\.|\bz\d+\.")


class A64Decoder(Decoder):
    """AArch64 (Armv8-A with Advanced SIMD)."""

    arch = "aarch64"

    def _cls(self, name: str, ops: str) -> str:
        if name.startswith(_A64_MAC):
            return "mac"
        if name.startswith("ld"):
            return "load"
        if name.startswith("st"):
            return "store"
        if _A64_VREG.search(ops):
            return "simd"
        return "other"

    def _conditional(self, dec: Any) -> bool:
        return dec.cc not in (0, capstone.arm64.ARM64_CC_AL)


DECODERS: dict[str, type[Decoder]] = {"thumb": ThumbDecoder, "aarch64": A64Decoder}
"""The decoder of each `isa.ARCHES` entry."""


@cache
def decoder_for(arch: str) -> Decoder:
    """The (shared) decoder of the instruction set ``arch``."""
    try:
        return DECODERS[arch]()
    except KeyError:
        raise ValueError(f"no instruction decoder for {arch!r}") from None
