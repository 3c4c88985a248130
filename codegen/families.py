"""Kernel families x chips: the one table the instruction budgets, the kernel bench and the
static-cost calibration iterate (in the manner of XNNPACK's kernel lists).

A family is one kind of generated kernel (op and variant of its symbol: pointwise, depthwise
stride 1 and 2, first conv, fully connected, average pool, add) with one small MobileNet-like layer
that exercises it. Each chip runs its families on one ISA (`CHIPS`); a family is measured on the
chips its budgets name: instructions per MAC (per window addition for pools, per output for ADD)
per (chip, dtype, output stage), emulated with zig `MEASURED_WITH_ZIG`
(tests/test_kernel_budget.py). Output stage "relu": zero point at the bottom of the range and
RELU6 over [0, 6], as every MobileNet v1 layer; "mid": zero point mid-range and RELU_N1_TO_1,
which clamps on both sides (the general output stage).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

CHIPS: dict[str, str] = {"cortex-m4": "dsp", "cortex-m7": "dsp", "cortex-a53": "neon",
                         "cortex-a72": "neon", "cortex-m55": "mve", "cortex-m85": "mve"}
"""Every chip with a cross build, and the ISA its kernels must run on."""
DTYPES = ("uint8", "int8")
CHIP_DTYPES: dict[str, tuple[str, ...]] = {"cortex-m55": ("int8",), "cortex-m85": ("int8",)}
"""The dtypes a chip's own ISA takes, where not both: the MVE convolutions take the int8 scheme
(uint8 layers run the DSP kernels there, budgeted on the Cortex-M4)."""
STAGES = ("relu", "mid")
"""Output stages, see the module docstring."""
MEASURED_WITH_ZIG = "0.17.1"
"""The compiler the budgets were measured with (the ``test`` extra pins it): instruction counts
depend on it, so the budget tests skip on another version."""
STALE = 0.85
"""A measurement below STALE x its budget means the budget was not lowered after a speed-up."""


@dataclass(frozen=True)
class KernelFamily:
    """One kernel family: what its layer computes, the symbol it must get, its budgets."""

    name: str
    group: str  # label in reports ("depthwise 3x3" covers both strides)
    opcode: str
    op: str  # op tag of the kernel symbol
    shape: tuple[int, ...]  # input of the budget layer (NHWC, or [rows, depth] for FC)
    units: int  # output channels / units (= input channels for depthwise, pool, add)
    window: tuple[int, int] = (1, 1)  # filter or pool window
    stride: int = 1
    padding: str = "SAME"
    variant: str | None = None  # variant of the symbol (None: any)
    budgets: Mapping[tuple[str, str, str], float] = field(default_factory=dict)
    """(chip, dtype, stage) -> instructions per unit of work; the measurement in comments."""

    @property
    def chips(self) -> tuple[str, ...]:
        """The chips the family is measured on, in `CHIPS` order."""
        return tuple(c for c in CHIPS if any(k[0] == c for k in self.budgets))

    @property
    def isas(self) -> tuple[str, ...]:
        """The ISAs with a kernel of this family (those of the chips it is measured on)."""
        return tuple(dict.fromkeys(CHIPS[c] for c in self.chips))

    def matches(self, op: str, variant: str) -> bool:
        """Whether a kernel symbol's op and variant belong to this family."""
        return op == self.op and self.variant in (None, variant)


# Budget = measured instructions per unit x 1.03, rounded up to 3 decimals; the measurement is
# the comment after each entry (Cortex-M4 and M55 2026-12-07, the M55 GEMM families
# 2026-12-08, others 2026-11-25; zig MEASURED_WITH_ZIG; the M55 on QEMU, int8 only
# (`CHIP_DTYPES`); "2w": depthwise weights doubled where the sums hold 2 acc). Lower a budget
# when its kernel gets faster: test_budget_is_not_stale fails once a measurement drops below
# STALE x it.
M4, A53, M55 = "cortex-m4", "cortex-a53", "cortex-m55"
FAMILIES: tuple[KernelFamily, ...] = (
    KernelFamily("pointwise", "pointwise", "CONV_2D", "conv2d", (1, 8, 8, 32), 32,
                 variant="k1x1s1", budgets={
                     (M4, "uint8", "relu"): 1.446,  # 1.4038 (LDR runs, records; was 1.2809)
                     (M4, "uint8", "mid"): 1.762,  # 1.7097 (LDR runs, records; was 1.5326)
                     (M4, "int8", "relu"): 1.265,  # 1.2276 (2x4 all pairs; was 1.2578)
                     (M4, "int8", "mid"): 1.583,  # 1.5359 (LDR runs, records; was 1.4472)
                     (A53, "uint8", "relu"): 0.364,  # 0.3530
                     (A53, "uint8", "mid"): 0.392,  # 0.3802
                     (A53, "int8", "relu"): 0.380,  # 0.3682
                     (A53, "int8", "mid"): 0.412,  # 0.3992
                     (M55, "int8", "relu"): 0.252,  # 0.2444 (MVE asm K loop; was 0.2718)
                     (M55, "int8", "mid"): 0.260,  # 0.2522 (MVE asm K loop; was 0.2796)
                 }),
    KernelFamily("depthwise_s1", "depthwise 3x3", "DEPTHWISE_CONV_2D", "dwconv2d",
                 (1, 8, 8, 32), 32, (3, 3), 1, variant="k3x3s1", budgets={
                     (M4, "uint8", "relu"): 2.554,  # 2.4788 (widening asm; was 2.4666)
                     (M4, "uint8", "mid"): 4.605,  # 4.4703 (widening asm; was 4.8107)
                     (M4, "int8", "relu"): 2.599,  # 2.5233 (widening asm; was 2.5303)
                     (M4, "int8", "mid"): 3.664,  # 3.5571 (widening asm; was 3.5768)
                     (A53, "uint8", "relu"): 0.461,  # 0.4471
                     (A53, "uint8", "mid"): 0.547,  # 0.5309
                     (A53, "int8", "relu"): 0.508,  # 0.4924
                     (A53, "int8", "mid"): 0.621,  # 0.6028
                     (M55, "int8", "relu"): 0.956,  # 0.9280 (MVE)
                     (M55, "int8", "mid"): 1.064,  # 1.0321 (MVE)
                 }),
    KernelFamily("depthwise_s2", "depthwise 3x3", "DEPTHWISE_CONV_2D", "dwconv2d",
                 (1, 16, 16, 32), 32, (3, 3), 2, variant="k3x3s2", budgets={
                     (M4, "uint8", "relu"): 3.701,  # 3.5929 (widening asm; was 3.7853)
                     (M4, "uint8", "mid"): 5.178,  # 5.0264 (widening asm; was 5.2589)
                     (M4, "int8", "relu"): 3.801,  # 3.6901 (widening asm; was 3.8143)
                     (M4, "int8", "mid"): 4.619,  # 4.4837 (widening asm; was 4.5922)
                     (A53, "uint8", "relu"): 0.612,  # 0.5932
                     (A53, "uint8", "mid"): 0.703,  # 0.6823
                     (A53, "int8", "relu"): 0.660,  # 0.6399
                     (A53, "int8", "mid"): 0.774,  # 0.7510
                     (M55, "int8", "relu"): 1.125,  # 1.0917 (MVE)
                     (M55, "int8", "mid"): 1.207,  # 1.1714 (MVE)
                 }),
    KernelFamily("first_conv", "first conv", "CONV_2D", "conv2d", (1, 16, 16, 3), 8, (3, 3), 2,
                 variant="k3x3s2", budgets={
                     (M4, "uint8", "relu"): 2.077,  # 2.0162 (2x4 all pairs; was 2.1253)
                     (M4, "uint8", "mid"): 2.411,  # 2.3403 (2x4 all pairs; was 2.4494)
                     (M4, "int8", "relu"): 1.740,  # 1.6887 (2x4 all pairs; was 1.7907)
                     (M4, "int8", "mid"): 2.127,  # 2.0647 (2x4 all pairs; was 2.1495)
                     (A53, "uint8", "relu"): 0.550,  # 0.5332
                     (A53, "uint8", "mid"): 0.584,  # 0.5663
                     (A53, "int8", "relu"): 0.557,  # 0.5405
                     (A53, "int8", "mid"): 0.587,  # 0.5694
                     (M55, "int8", "relu"): 0.510,  # 0.4950 (MVE asm K loop; was 0.5080)
                     (M55, "int8", "mid"): 0.508,  # 0.4932 (MVE asm K loop; was 0.6702)
                 }),
    KernelFamily("fc", "fully connected", "FULLY_CONNECTED", "fc", (1, 256), 64, budgets={
        (M4, "uint8", "relu"): 1.209,  # 1.1730 (1x8 byte lanes; was 1.3016)
        (M4, "uint8", "mid"): 1.243,  # 1.2062 (1x8 byte lanes; was 1.3348)
        (M4, "int8", "relu"): 1.205,  # 1.1697 (1x8 byte lanes; was 1.2983)
        (M4, "int8", "mid"): 1.246,  # 1.2092 (1x8 byte lanes; was 1.3296)
        (A53, "uint8", "relu"): 0.341,  # 0.3304
        (A53, "uint8", "mid"): 0.345,  # 0.3341
        (A53, "int8", "relu"): 0.294,  # 0.2847
        (A53, "int8", "mid"): 0.299,  # 0.2896
        (M55, "int8", "relu"): 0.157,  # 0.1520 (MVE, no VSHL by 0; was 0.1532)
        (M55, "int8", "mid"): 0.158,  # 0.1530 (MVE, no VSHL by 0; was 0.1540)
    }),
    KernelFamily("avgpool", "average pool", "AVERAGE_POOL_2D", "avgpool", (1, 4, 4, 256), 256,
                 (4, 4), 1, "VALID", variant="k4x4s1", budgets={
                     (A53, "uint8", "relu"): 0.299,  # 0.2903
                     (A53, "uint8", "mid"): 0.309,  # 0.2991
                     (A53, "int8", "relu"): 0.364,  # 0.3528
                     (A53, "int8", "mid"): 0.373,  # 0.3616
                     (M55, "int8", "relu"): 0.458,  # 0.4441 (MVE)
                     (M55, "int8", "mid"): 0.475,  # 0.4604 (MVE)
                 }),
    KernelFamily("add", "add", "ADD", "add", (1, 8, 8, 32), 32, budgets={
        (M4, "uint8", "relu"): 9.084,  # 8.8188 (DSP table kernel; was portable C)
        (M4, "uint8", "mid"): 11.659,  # 11.3193 (DSP table kernel; was portable C)
        (M4, "int8", "relu"): 9.084,  # 8.8193 (DSP table kernel; was portable C)
        (M4, "int8", "mid"): 11.659,  # 11.3193 (DSP table kernel; was portable C)
        (A53, "uint8", "relu"): 4.063,  # 3.9438
        (A53, "uint8", "mid"): 4.966,  # 4.8208
        (A53, "int8", "relu"): 4.191,  # 4.0688
        (A53, "int8", "mid"): 4.966,  # 4.8208
        (M55, "int8", "relu"): 3.871,  # 3.7573 (MVE)
        (M55, "int8", "mid"): 4.773,  # 4.6333 (MVE)
    }),
)
"""MobileNet-like layers, small enough to emulate in milliseconds: a 1x1 conv, 3x3 depthwise
stride 1 and 2, the first 3x3 stride-2 conv on 3 channels, a 256 -> 64 classifier, the global
average pool and a residual ADD (the pool has NEON and MVE kernels only)."""

BY_NAME: dict[str, KernelFamily] = {f.name: f for f in FAMILIES}


def budget_rows() -> list[tuple[str, str, str, str, float]]:
    """Every budget as (chip, family, dtype, stage, budget), chip by chip in `CHIPS` order."""
    return [(chip, f.name, dtype, stage, f.budgets[chip, dtype, stage])
            for chip in CHIPS for f in FAMILIES for dtype in DTYPES for stage in STAGES
            if (chip, dtype, stage) in f.budgets]


def dtypes_of(chip: str) -> tuple[str, ...]:
    """The dtypes whose kernels run on ``chip``'s own ISA (`CHIP_DTYPES`, else both)."""
    return CHIP_DTYPES.get(chip, DTYPES)


def budget_chips() -> tuple[str, ...]:
    """The chips any family is measured on."""
    return tuple(c for c in CHIPS if any(c in f.chips for f in FAMILIES))


def family_of(op: str, variant: str, input_channels: int | None = None
              ) -> KernelFamily | None:
    """The family of a kernel (op and variant of its symbol); a strided 3x3 conv is the first
    conv only on 3 input channels (when given)."""
    for f in FAMILIES:
        if f.matches(op, variant):
            if f.name == "first_conv" and input_channels not in (None, f.shape[-1]):
                continue
            return f
    return None
