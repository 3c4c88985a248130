"""Where a deployed model's RAM lives: the arena, the I/O buffers, static data and the stack,
placed region by region in the chip's memories (`Target.regions`).

One placement serves the generated board example (its linker script and section attributes)
and `qlane estimate`'s fit check, so what the estimate says is what the linker is asked to do.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from .targets import Region, Target

STACK_BYTES = 8192
"""Stack reserved by the board example's linker script (main region, top of RAM)."""
STATIC_BYTES = 1024
"""RAM reserved in the main region for the program's other globals (the example's results, the
C library's): the board example built with arm-none-eabi-gcc and newlib uses a few dozen."""
ALIGN = 16


@dataclass(frozen=True)
class Item:
    """A block of RAM to place; ``main`` items stay in the region holding .data/.bss/stack."""

    name: str  # "arena", "input0", "output0", "static data", "stack"
    bytes: int
    main: bool = False


@dataclass
class RegionUse:
    """One RAM region and what was placed in it."""

    region: Region
    items: list[Item] = field(default_factory=list)

    @property
    def used(self) -> int:
        return sum(_aligned(i.bytes) for i in self.items)

    @property
    def fits(self) -> bool:
        return self.used <= self.region.bytes


@dataclass
class Placement:
    """Every item in a RAM region; ``fits`` is False when some region overflows."""

    uses: list[RegionUse]

    @property
    def fits(self) -> bool:
        return all(u.fits for u in self.uses)

    def region_of(self, item: str) -> str:
        """The region name an item was placed in."""
        for u in self.uses:
            if any(i.name == item for i in u.items):
                return u.region.name
        raise KeyError(item)

    def to_json(self) -> list[dict[str, object]]:
        return [{"region": u.region.name, "origin": u.region.origin,
                 "capacity": u.region.bytes, "used": u.used, "fits": u.fits,
                 "items": {i.name: i.bytes for i in u.items}} for u in self.uses]


def _aligned(n: int) -> int:
    return (max(n, 0) + ALIGN - 1) // ALIGN * ALIGN


def ram_regions(target: Target) -> tuple[Region, ...]:
    """The target's RAM regions, the main one (largest) first."""
    return target.regions_of("ram")


def place(items: Sequence[Item], regions: Sequence[Region]) -> Placement:
    """First fit, largest item first: main items in ``regions[0]`` (the one holding .data,
    .bss and the stack), each other item in the first region with room for it, else in the
    region with the most room left (which then overflows and says so)."""
    if not regions:
        raise ValueError("no RAM regions to place into")
    uses = [RegionUse(r) for r in regions]
    for item in sorted(items, key=lambda i: (not i.main, -i.bytes, i.name)):
        if item.main:
            uses[0].items.append(item)
            continue
        room = [u for u in uses if u.used + _aligned(item.bytes) <= u.region.bytes]
        best = room[0] if room else max(uses, key=lambda u: u.region.bytes - u.used)
        best.items.append(item)
    return Placement(uses)


def deployment(target: Target, arena: int, inputs: Sequence[int], outputs: Sequence[int]
               ) -> Placement | None:
    """Where a deployment of a model on ``target`` keeps its RAM (the board example's layout),
    or None for a target whose RAM is not described (DRAM-backed cores)."""
    regions = ram_regions(target)
    if not regions or not all(r.bytes for r in regions):
        return None
    return place(board_items(arena, inputs, outputs, STATIC_BYTES), regions)


def board_items(arena: int, inputs: Sequence[int], outputs: Sequence[int],
                static: int) -> list[Item]:
    """What the board example keeps in RAM: the arena, one buffer per model input and output,
    the program's other static data and the stack."""
    return [Item("arena", arena), *(Item(f"input{k}", n) for k, n in enumerate(inputs)),
            *(Item(f"output{k}", n) for k, n in enumerate(outputs)),
            Item("static data", static, main=True), Item("stack", STACK_BYTES, main=True)]
