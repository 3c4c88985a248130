"""An Armv8.1-M decoder (Helium/MVE, low-overhead loops) built on LLVM's disassembler.

Capstone 5 cannot decode MVE or the v8.1-M loop and conditional-select instructions, so the
QEMU backend decodes its images with ``llvm-objdump`` (once per image) and unknown bytes (patched
code) with ``llvm-mc --disassemble``. The records follow `decode.ThumbDecoder`'s conventions:
classes from `CLASSES`, capstone-like instruction names without condition, predicate and width
suffixes, registers as LLVM prints them (``r12``, ``cpsr`` for the flags, ``vpr`` for the MVE
predicate).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from functools import cache
from pathlib import Path

from qlane.errors import QlaneError

from .decode import _ALIGNED_M, Decoder, Insn, thumb_class

TRIPLE = "thumbv8.1m.main-none-eabi"
MATTR = "+mve.fp,+fp64"
VERSIONS = tuple(range(25, 12, -1))
"""llvm-objdump versions tried (``llvm-objdump-N``) before a plain ``llvm-objdump``; MVE needs
LLVM 13 or later."""
MISSING = "the QEMU tier needs llvm-objdump (Debian: apt install llvm-19)"


class DecoderMissing(QlaneError, RuntimeError):
    """No usable llvm-objdump / llvm-mc on this machine."""


def _version_ok(exe: str) -> bool:
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, check=False,
                             timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    m = re.search(r"LLVM version (\d+)", out)
    return bool(m) and int(m.group(1)) >= 13


@cache
def llvm_tool(name: str) -> str:
    """Path of LLVM's ``name`` (``objdump``, ``mc``): the newest ``llvm-NAME-N``, else
    ``llvm-NAME`` of LLVM 13 or later; a one-line `DecoderMissing` otherwise."""
    for v in VERSIONS:
        exe = shutil.which(f"llvm-{name}-{v}")
        if exe:
            return exe
    exe = shutil.which(f"llvm-{name}")
    if exe and _version_ok(exe):
        return exe
    raise DecoderMissing(MISSING)


def available() -> str | None:
    """None when llvm-objdump can decode MVE here, else why not (one line)."""
    try:
        llvm_tool("objdump")
    except DecoderMissing as e:
        return str(e)
    return None


# --- one instruction from its text ------------------------------------------------------------

_CONDS = ("eq", "ne", "cs", "hs", "cc", "lo", "mi", "pl", "vs", "vc", "hi", "ls", "ge", "lt",
          "gt", "le", "al")
_INVERSE = {"eq": "ne", "ne": "eq", "cs": "cc", "hs": "lo", "cc": "cs", "lo": "hs", "mi": "pl",
            "pl": "mi", "vs": "vc", "vc": "vs", "hi": "ls", "ls": "hi", "ge": "lt", "lt": "ge",
            "gt": "le", "le": "gt", "al": "al"}
_BCOND = re.compile(r"^b(" + "|".join(_CONDS) + r")$")
_REG = re.compile(r"(?<![\w#])(r1[0-2]|r\d|sp|lr|pc|s[12]?\d|s3[01]|d1[0-5]|d\d|q[0-7]|"
                  r"apsr_nzcv|fpscr|vpr|p0)(?![\w])")
_FLAG_OPS = {"add", "adc", "sub", "sbc", "rsb", "and", "orr", "orn", "eor", "bic", "mov", "mvn",
             "lsl", "lsr", "asr", "ror", "rrx", "mul", "neg"}
_COMPARE = {"cmp", "cmn", "tst", "teq", "vcmp", "vcmpe", "vpt", "vpst", "vctp"}
_FLOW = {"b", "bl", "blx", "bx", "cbz", "cbnz", "tbb", "tbh", "le", "letp", "wls", "wlstp"}
_LOOP = {"dls", "dlstp", "wls", "wlstp", "le", "letp", "lctp"}
_PAIR_DST = re.compile(r"^(?:[us]mull|[us]mlal|umaal|smlal[bt][bt]|smlald|smlsld|smlaldx|"
                       r"smlsldx|v(?:r?ml[as]ldav|rml[as]ldavh|addlv)\w*|asrl|lsll|lsrl|"
                       r"sqrshrl|uqrshll|sqshll|uqshll|srshrl|urshrl)$")
"""Instructions whose first two operands are written (64-bit results, pairs)."""
_READS_DST = re.compile(
    r"^(?:[us]mlal\w*|umaal|smlald\w*|smlsld\w*|asrl|lsll|lsrl|sqrshrl?|uqrshll?|sqshll?|"
    r"uqshll?|srshrl?|urshrl?|sqshl|uqshl|bfi|movt|vmov|"
    r"v(?:ml[as]l?(?:d?av|v)ax?|rml[as]ldavha|rmlalvha|addva|addlva|abav|(?:max|min)(?:nm)?a?v)|"
    r"vml[as]s?|vfm[as]s?|vfnm[as]|vnml[as]|vq(?:r?dml(?:a|s)s?h|r?dml[as]dhx?)|vsli|vsri|"
    r"vq?r?shrun?[bt]|vq?movun?[bt]|vmovn[bt]|vcvt[bt])$")
"""Instructions that also read what they write: accumulators, inserts, partial writes."""
_TWO_OP = {"add", "adc", "sub", "sbc", "and", "orr", "orn", "eor", "bic", "lsl", "lsr", "asr",
           "ror", "mul"}
"""Data-processing names whose two-operand forms (``asrs r2, r5``) read their destination."""
_LINK = re.compile(r"\s*<[^>]*>")


def _split_ops(ops: str) -> list[str]:
    """Top-level operands (commas inside [] and {} kept)."""
    out, depth, cur = [], 0, ""
    for ch in ops:
        if ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        if ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
    if cur.strip():
        out.append(cur.strip())
    return out


def _regs(text: str) -> list[str]:
    out = []
    for m in re.finditer(r"\{([^}]*)\}", text):  # ranges in register lists
        for part in m.group(1).split(","):
            r = re.fullmatch(r"\s*([rdsq])(\d+)\s*-\s*[rdsq](\d+)\s*", part)
            if r:
                out += [f"{r.group(1)}{k}" for k in range(int(r.group(2)), int(r.group(3)) + 1)]
    return out + _REG.findall(text)


def _uniq(regs: list[str]) -> tuple[str, ...]:
    alias = {"apsr_nzcv": "cpsr", "p0": "vpr"}
    return tuple(dict.fromkeys(alias.get(r, r) for r in regs))


def make_insn(address: int, size: int, mnemonic: str, ops: str, cond: str = "",
              vpred: bool = False) -> Insn:
    """The `Insn` of one disassembled instruction; ``cond`` is its IT-block condition,
    ``vpred`` whether a VPT block predicates it."""
    mnemonic = mnemonic.lower()
    ops = _LINK.sub("", ops.split("@")[0]).strip()
    text = f"{mnemonic} {ops}".rstrip()  # as capstone's records: no "<symbol+offset>"
    if mnemonic.startswith(".") or mnemonic == "<unknown>":
        return Insn(address, size, text, "other", False, None)
    base = mnemonic.split(".")[0]
    name, conditional = base, False
    if cond and cond != "al" and base.endswith(cond) and base != "it":
        name, conditional = base[:-len(cond)], True
    elif (m := _BCOND.match(base)) and m.group(1) != "al":
        name, conditional = "b", True
    if vpred and name.startswith("v") and name[-1] in "te" and not name.startswith("vpst"):
        name, conditional = name[:-1], True
    reads: list[str] = []
    writes: list[str] = []
    if name.endswith("s") and name[:-1] in _FLAG_OPS:
        name = name[:-1]
        writes.append("cpsr")
    if conditional:
        reads.append("cpsr" if not vpred else "vpr")
    operands = _split_ops(ops)
    mem_op = next((o for o in operands if o.startswith("[")), None)
    base_reg = None
    writeback = "!" in ops or bool(re.search(r"\]\s*,", ops))
    if mem_op is not None:
        base_reg = (_REG.findall(mem_op) or [None])[0]
    elif name.startswith(("ldm", "stm", "vldm", "vstm")) and operands:
        base_reg = operands[0].rstrip("!").strip()
    is_load = name.startswith(("ld", "vld")) or name in ("pop", "vpop")
    is_store = name.startswith(("st", "vst")) or name in ("push", "vpush")
    flow = (name in _FLOW and name not in ("dls", "dlstp")
            or (name in ("pop", "ldm", "ldmia", "ldmdb") and bool(re.search(r"\bpc\b", ops)))
            or (name in ("ldr", "mov", "add", "sub") and ops.startswith("pc,")))
    target = None
    if flow:
        m = re.search(r"(?:^|,\s*)(0x[0-9a-f]+)\s*$", ops)
        target = int(m.group(1), 16) if m else None
    # registers read and written
    if name in ("push", "vpush"):
        reads += _regs(ops) + ["sp"]
        writes += ["sp"]
    elif name in ("pop", "vpop"):
        reads.append("sp")
        writes += _regs(ops) + ["sp"]
    elif name.startswith(("ldm", "vldm", "stm", "vstm")):
        reads += [base_reg] if base_reg else []
        listed = _regs(ops[ops.find("{"):]) if "{" in ops else []
        (writes if is_load else reads).extend(listed)
        if writeback and base_reg:
            writes.append(base_reg)
    elif is_load or is_store:
        dst_ops = [o for o in operands if not o.startswith("[") and o is not mem_op]
        mem_regs = _regs(mem_op or "")
        after = operands[operands.index(mem_op) + 1:] if mem_op in operands else []
        reads += mem_regs + [r for o in after for r in _regs(o)]
        before = dst_ops[:len(dst_ops) - len(after)] if after else dst_ops
        if is_load:
            writes += [r for o in before for r in _regs(o)]
            if name.startswith(("vld2", "vld4")):
                reads += [r for o in before for r in _regs(o)]
        elif name.startswith("strex"):
            writes += _regs(before[0]) if before else []
            reads += [r for o in before[1:] for r in _regs(o)]
        else:
            reads += [r for o in before for r in _regs(o)]
        if writeback and base_reg:
            writes.append(base_reg)
        if conditional:
            reads += [w for w in writes if w != base_reg]
    elif name in ("b", "bx", "cbz", "cbnz", "tbb", "tbh"):
        reads += _regs(ops)
    elif name in ("bl", "blx"):
        reads += _regs(ops)
        writes.append("lr")
    elif name in _LOOP:
        if name in ("le", "letp"):
            reads += ["lr"] if ops.startswith("lr") else []
            writes += ["lr"] if ops.startswith("lr") else []
        elif name == "lctp":
            writes.append("vpr")
        else:  # dls, dlstp, wls, wlstp: lr = count
            writes.append("lr")
            reads += [r for o in operands[1:] for r in _regs(o)]
        if name.endswith("tp"):
            writes.append("vpr")
    elif name in _COMPARE:
        reads += _regs(ops)
        writes.append("vpr" if name.startswith("v") else "cpsr")
    elif name in ("vmrs",) and operands and operands[0] in ("apsr_nzcv", "APSR_nzcv"):
        reads.append("fpscr")
        writes.append("cpsr")
    else:
        n_dst = 2 if _PAIR_DST.match(name) or (
            name == "vmov" and len(operands) >= 3 and all(
                re.fullmatch(r"r\d+|lr|sp", o) for o in operands[:2])) else 1
        dst = [r for o in operands[:n_dst] for r in _regs(o)]
        writes += dst
        reads += [r for o in operands[n_dst:] for r in _regs(o)]
        if _READS_DST.match(name) and not (name == "vmov" and "[" not in ops.split(",")[0]):
            reads += dst
        if name in _TWO_OP and len(operands) == 2:
            reads += dst
        if name.startswith(("cs", "cinc", "cinv", "cneg")) and name not in ("csdb",):
            reads.append("cpsr")
        if (conditional or (vpred and name.startswith("v"))) and dst:
            reads += dst
    if name in ("adc", "sbc", "rrx") or (name in ("mov", "add") and "rrx" in ops):
        reads.append("cpsr")
    cls = "branch" if flow or name in _LOOP else thumb_class(name, ops)
    align_base = None
    if _ALIGNED_M.match(name) and name[:4] not in ("vldr", "vstr") or name in ("vldr", "vstr"):
        align_base = base_reg if base_reg not in (None, "sp", "pc") else None
    reads_t = _uniq([r for r in reads if r and r != "zr"])
    writes_t = _uniq([w for w in writes if w and w != "zr"])
    return Insn(address, size, text, cls, flow, target, mnemonic=mnemonic, name=name, ops=ops,
                reads=reads_t, writes=writes_t, mem=mem_op is not None, base=base_reg,
                writeback=writeback and base_reg is not None, conditional=conditional,
                align_base=align_base)


# --- whole listings ---------------------------------------------------------------------------

_LINE = re.compile(r"^\s*([0-9a-f]+):\s+((?:[0-9a-f]{2,8} )+)\s*\t([^\t]+)(?:\t(.*))?$")


class _Blocks:
    """IT and VPT block state while reading a listing in address order."""

    def __init__(self) -> None:
        self.it: list[str] = []
        self.vpt = 0

    def step(self, mnemonic: str, ops: str) -> tuple[str, bool]:
        """(IT condition, VPT-predicated) of this instruction; then advance."""
        cond = self.it.pop(0) if self.it else ""
        vpred = self.vpt > 0
        if vpred:
            self.vpt -= 1
        base = mnemonic.lower().split(".")[0]
        if re.fullmatch(r"it[te]{0,3}", base):
            first = ops.strip().split()[0].lower() if ops.strip() else "al"
            self.it = [first if c == "t" else _INVERSE.get(first, first) for c in "t" + base[2:]]
        elif re.fullmatch(r"vpst[te]{0,3}", base):
            self.vpt = len(base) - 3
        elif re.fullmatch(r"vpt[te]{0,3}", base):
            self.vpt = len(base) - 2
        return cond, vpred


def parse_listing(text: str) -> tuple[dict[int, Insn], dict[int, bytes]]:
    """Instructions and their encodings from ``llvm-objdump -d`` output."""
    insns: dict[int, Insn] = {}
    raw: dict[int, bytes] = {}
    blocks = _Blocks()
    for line in text.splitlines():
        if line.endswith(">:"):  # a new symbol: no IT/VPT block crosses it
            blocks = _Blocks()
            continue
        m = _LINE.match(line)
        if m is None:
            continue
        addr = int(m.group(1), 16)
        groups = m.group(2).split()
        data = b"".join(bytes.fromhex(g)[::-1] if len(g) == 4 else bytes.fromhex(g)
                        for g in groups)
        mnemonic, ops = m.group(3).strip(), (m.group(4) or "")
        if mnemonic.startswith(".") or mnemonic == "<unknown>":
            blocks = _Blocks()
            cond, vpred = "", False
        else:
            cond, vpred = blocks.step(mnemonic, ops)
        insns[addr] = make_insn(addr, len(data), mnemonic, ops, cond, vpred)
        raw[addr] = data
    return insns, raw


def _mc_decode(code: bytes, address: int) -> list[Insn]:
    """Decode loose bytes with ``llvm-mc --disassemble`` (patched code; slow, rare)."""
    try:
        exe = llvm_tool("mc")
    except DecoderMissing:
        return []
    res = subprocess.run([exe, "--disassemble", f"-triple={TRIPLE}", f"-mattr={MATTR}",
                          "--show-encoding"], input=" ".join(f"0x{b:02x}" for b in code),
                         capture_output=True, text=True, check=False)
    out: list[Insn] = []
    blocks = _Blocks()
    a = address
    for line in res.stdout.splitlines():
        m = re.match(r"^\s+(\S+)(?:\s+(.*?))?\s*@ encoding: \[([^\]]*)\]", line)
        if m is None:
            continue
        size = len(m.group(3).split(","))
        mnemonic, ops = m.group(1), m.group(2) or ""
        rel = re.search(r"#(-?\d+)\s*$", ops)
        if mnemonic.split(".")[0] in _FLOW | {"bl", "blx"} | _LOOP and rel:
            ops = ops[:rel.start()] + hex(a + 4 + int(rel.group(1)))
        cond, vpred = blocks.step(mnemonic, ops)
        out.append(make_insn(a, size, mnemonic, ops, cond, vpred))
        a += size
    return out


class LlvmDecoder(Decoder):
    """Armv8.1-M with MVE: one image's code decoded once by llvm-objdump."""

    arch = "thumb"

    def __init__(self, elf: str | Path | None = None) -> None:
        super().__init__()
        self.table: dict[int, Insn] = {}
        self.raw: dict[int, bytes] = {}
        if elf is not None:
            self.load(elf)

    def load(self, elf: str | Path) -> None:
        """Disassemble every code section of the image ``elf``."""
        res = subprocess.run([llvm_tool("objdump"), "-d", f"--triple={TRIPLE}",
                              f"--mattr={MATTR}", str(elf)], capture_output=True, text=True,
                             check=False)
        if res.returncode != 0:
            first = (res.stderr.strip().splitlines() or ["no output"])[0]
            raise DecoderMissing(f"llvm-objdump could not disassemble {elf}: {first}")
        insns, raw = parse_listing(res.stdout)
        self.table.update(insns)
        self.raw.update(raw)

    def forget(self, addr: int, nbytes: int) -> None:
        """Drop the records around ``nbytes`` at ``addr`` (the code there changed)."""
        for a in [a for a in self.table if addr - 4 < a < addr + nbytes]:
            del self.table[a]
            self.raw.pop(a, None)

    def decode(self, code: bytes, address: int, known: dict[int, Insn] | None = None
               ) -> list[Insn]:
        known = {} if known is None else known
        out: list[Insn] = []
        a, end = address, address + len(code)
        while a < end:
            insn = known.get(a) or self.table.get(a)
            if insn is not None:
                have = code[a - address:a - address + insn.size]
                if self.raw.get(a, have)[:len(have)] != have:
                    insn = None  # the code changed since the image was disassembled
            if insn is None:
                fresh = {i.address: i for i in _mc_decode(code[a - address:], a)}
                self.table.update(fresh)
                insn = fresh.get(a)
                if insn is None:
                    word = code[a - address:a - address + 4]
                    step = self._unknown_size(word) if len(word) >= 2 else max(len(word), 1)
                    insn = Insn(a, step, f"<unknown {word[:step].hex()}>", "other", False,
                                None)
            known[a] = insn
            out.append(insn)
            a += insn.size
        return out

    def decode_one(self, code: bytes, address: int) -> Insn | None:
        insn = self.table.get(address)
        if insn is not None and self.raw.get(address) == code[:insn.size]:
            return insn
        got = _mc_decode(code, address)
        return got[0] if got else None

    def _unknown_size(self, word: bytes) -> int:
        return 4 if word[1] >> 3 in (0x1D, 0x1E, 0x1F) else 2
