"""Kernel symbols that name their spec and parse back, and C-safe identifiers and comments.

A generated layer function is called ``<model>_l<index>_<dtype>_<op>_<variant>_<rounding>_<tile>
__<isa>``, e.g. ``mnet_l003_qu8_dwconv2d_k3x3s2_rnddbl_4x16__neon``: layer 3 of model ``mnet``,
uint8 depthwise 3x3 stride 2, double rounding, four pixels by sixteen channels per pass, NEON.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .isa import ISAS as _ISA_REGISTRY

DTYPES = {"uint8": "qu8", "int8": "qs8"}
ROUNDING_TAGS = {"double": "rnddbl", "single": "rndsgl", "litert": "rndflt"}
ISAS = tuple(_ISA_REGISTRY)
"""Kernel ISA tags, from the registry (`qlane.codegen.isa`)."""

_SYMBOL = re.compile(
    r"^(?P<prefix>[A-Za-z_][A-Za-z0-9_]*?)_l(?P<index>\d{3,})_(?P<dtype>qu8|qs8)_(?P<op>[a-z0-9]+)"
    r"_(?P<variant>[a-z0-9]+)_(?P<rounding>rnddbl|rndsgl|rndflt)_(?P<tile>\d+x\d+)"
    r"__(?P<isa>" + "|".join(ISAS) + r")$"
)


@dataclass(frozen=True)
class KernelSpec:
    """What a generated layer function computes, and how."""

    prefix: str
    index: int
    dtype: str  # "uint8" | "int8"
    op: str  # short op tag: conv2d, dwconv2d, fc, add, ...
    variant: str  # shape facts that select the code: k3x3s2, 1x1, ...
    rounding: str  # "double" | "single" | "litert"
    tile: str  # "MxN": outputs (rows x channels) computed per inner pass
    isa: str  # a tag of `qlane.codegen.isa.ISAS`

    @property
    def symbol(self) -> str:
        return (f"{self.prefix}_l{self.index:03d}_{DTYPES[self.dtype]}_{self.op}_{self.variant}_"
                f"{ROUNDING_TAGS[self.rounding]}_{self.tile}__{self.isa}")


def window_tag(kh: int, kw: int, sh: int, sw: int, dh: int = 1, dw: int = 1) -> str:
    """Variant of a windowed kernel: ``k3x3s2``, ``k3x2s1x2``, ``k3x3s1d2`` (dilation if not 1)."""

    def pair(a: int, b: int) -> str:
        return f"{a}" if a == b else f"{a}x{b}"

    return f"k{kh}x{kw}s{pair(sh, sw)}" + (f"d{pair(dh, dw)}" if (dh, dw) != (1, 1) else "")


def parse_symbol(symbol: str) -> KernelSpec:
    """Inverse of :attr:`KernelSpec.symbol`."""
    m = _SYMBOL.match(symbol)
    if not m:
        raise ValueError(f"not a qlane kernel symbol: {symbol!r}")
    d = m.groupdict()
    return KernelSpec(
        prefix=d["prefix"], index=int(d["index"]),
        dtype={v: k for k, v in DTYPES.items()}[d["dtype"]], op=d["op"], variant=d["variant"],
        rounding={v: k for k, v in ROUNDING_TAGS.items()}[d["rounding"]], tile=d["tile"],
        isa=d["isa"],
    )


_C_KEYWORDS = frozenset("""
auto break case char const continue default do double else enum extern float for goto if inline
int long register restrict return short signed sizeof static struct switch typedef union unsigned
void volatile while _Bool _Complex _Imaginary main
alignas alignof bool constexpr false nullptr static_assert thread_local true typeof typeof_unqual
""".split())
"""C99 to C23 keywords, and ``main``."""
MAX_PREFIX = 40
"""Longest model prefix: kernel symbols append up to about 45 characters to it."""
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def c_identifier(text: str, fallback: str = "model") -> str:
    """A C identifier derived from untrusted text: [a-z0-9_], not a keyword, not leading digit."""
    ident = re.sub(r"[^0-9a-zA-Z]+", "_", text).strip("_").lower()[:MAX_PREFIX]
    if not ident:
        ident = fallback
    if ident[0].isdigit():
        ident = f"m_{ident}"
    if ident in _C_KEYWORDS or ident.startswith("__"):
        ident = f"{ident}_"
    return ident


def prefix_problem(name: str) -> str | None:
    """Why ``name``, given by the user, cannot be a C prefix kept exactly as is; None if it can."""
    if not _IDENTIFIER.fullmatch(name):
        return "is not a C identifier (letters, digits and _, not starting with a digit)"
    if name.startswith("_"):
        return "starts with _ (reserved for the C implementation)"
    if name in _C_KEYWORDS:
        return "is a C keyword" if name != "main" else "is the C entry point main"
    if len(name) > MAX_PREFIX:
        return f"is {len(name)} characters long (at most {MAX_PREFIX})"
    if name.lower() == "qlane" or name.lower().startswith("qlane_"):
        return "uses qlane's own C prefix qlane_"
    return None


def c_comment(text: str, limit: int = 120) -> str:
    """Untrusted text made safe inside a ``/* ... */`` comment: printable ASCII, no delimiters."""
    clean = "".join(ch if 32 <= ord(ch) < 127 else "?" for ch in text).replace("\\", "/")
    while any(s in clean for s in ("*/", "/*", "??")):  # no delimiters, no trigraphs
        clean = clean.replace("*/", "* /").replace("/*", "/ *").replace("??", "? ?")
    return clean[:limit]
