"""Static memory planning: every intermediate buffer gets a fixed offset in one arena."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Buffer:
    """A block that must stay valid from step ``first`` to step ``last`` (inclusive).

    With an ``anchor`` (another buffer's key) the block sits ``delta`` bytes after that buffer's
    start, and the two may share bytes (a layer that writes its output over its input)."""

    key: str
    size: int
    first: int
    last: int
    anchor: str = ""
    delta: int = 0


@dataclass(frozen=True)
class Plan:
    """Offsets per buffer key, the arena size, and the naive size (no reuse) for comparison."""

    offsets: dict[str, int]
    arena_bytes: int
    naive_bytes: int


def _align(n: int, a: int) -> int:
    return (n + a - 1) // a * a


def _live_together(a: Buffer, b: Buffer) -> bool:
    return not (a.last < b.first or b.last < a.first)


def plan_arena(buffers: list[Buffer], alignment: int = 16) -> Plan:
    """Greedy by size: place the largest buffer first at the lowest offset free for its lifetime.

    Two buffers may share bytes only if their lifetimes do not overlap, or one is anchored to
    the other; an anchored buffer moves with its anchor (they are placed as one group).
    Deterministic: ties are broken by first use and then by key.
    """
    groups: dict[str, list[Buffer]] = {}
    for b in buffers:
        groups.setdefault(b.anchor or b.key, []).append(b)
    for key, members in groups.items():
        if any(m.anchor and m.anchor not in {n.key for n in members} for m in members):
            raise ValueError(f"buffer anchored to {key}, which is not planned")

    def extent(members: list[Buffer]) -> int:
        return max(m.delta + _align(max(m.size, 1), alignment) for m in members)

    order = sorted(groups.values(), key=lambda ms: (-extent(ms), min(m.first for m in ms),
                                                    min(m.key for m in ms)))
    placed: list[tuple[int, int, Buffer]] = []
    offsets: dict[str, int] = {}
    for members in order:
        sizes = [(m, m.delta, _align(max(m.size, 1), alignment)) for m in members]
        spots = {0}
        for _, end, other in placed:
            for m, delta, _ in sizes:
                if _live_together(m, other) and end - delta >= 0:
                    spots.add(end - delta)
        for base in sorted(spots):
            if all(not _live_together(m, other) or base + delta + size <= off
                   or end <= base + delta
                   for m, delta, size in sizes for off, end, other in placed):
                break
        for m, delta, size in sizes:
            offsets[m.key] = base + delta
            placed.append((base + delta, base + delta + size, m))
    arena = max((end for _, end, _ in placed), default=0)
    naive = sum(_align(max(b.size, 1), alignment) for b in buffers)
    return Plan(offsets, arena, naive)


def check_plan(buffers: list[Buffer], plan: Plan, alignment: int = 16) -> None:
    """Raise AssertionError if two live buffers overlap (but an anchored pair), an offset is
    misaligned or an anchored buffer is not where its anchor says."""
    where = {b.key: b for b in buffers}
    for i, a in enumerate(buffers):
        oa = plan.offsets[a.key]
        assert oa % alignment == 0, f"{a.key} misaligned"
        assert oa + a.size <= plan.arena_bytes, f"{a.key} outside the arena"
        if a.anchor:
            assert oa == plan.offsets[where[a.anchor].key] + a.delta, f"{a.key} off its anchor"
        for b in buffers[i + 1:]:
            if not _live_together(a, b) or a.anchor == b.key or b.anchor == a.key:
                continue
            ob = plan.offsets[b.key]
            assert oa + a.size <= ob or ob + b.size <= oa, f"{a.key} overlaps {b.key}"
