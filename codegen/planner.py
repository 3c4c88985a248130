"""Static memory planning: every intermediate buffer gets a fixed offset in one arena."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Buffer:
    """A block that must stay valid from step ``first`` to step ``last`` (inclusive)."""

    key: str
    size: int
    first: int
    last: int


@dataclass(frozen=True)
class Plan:
    """Offsets per buffer key, the arena size, and the naive size (no reuse) for comparison."""

    offsets: dict[str, int]
    arena_bytes: int
    naive_bytes: int


def _align(n: int, a: int) -> int:
    return (n + a - 1) // a * a


def plan_arena(buffers: list[Buffer], alignment: int = 16) -> Plan:
    """Greedy by size: place the largest buffer first at the lowest offset free for its lifetime.

    Two buffers may share bytes only if their lifetimes do not overlap. Deterministic: ties are
    broken by first use and then by key.
    """
    order = sorted(buffers, key=lambda b: (-b.size, b.first, b.key))
    placed: list[tuple[int, int, Buffer]] = []
    offsets: dict[str, int] = {}
    for buf in order:
        size = _align(max(buf.size, 1), alignment)
        busy = sorted((off, end) for off, end, other in placed
                      if not (other.last < buf.first or buf.last < other.first))
        offset = 0
        for off, end in busy:
            if offset + size <= off:
                break
            offset = max(offset, end)
        offsets[buf.key] = offset
        placed.append((offset, offset + size, buf))
    arena = max((end for _, end, _ in placed), default=0)
    naive = sum(_align(max(b.size, 1), alignment) for b in buffers)
    return Plan(offsets, arena, naive)


def check_plan(buffers: list[Buffer], plan: Plan, alignment: int = 16) -> None:
    """Raise AssertionError if two live buffers overlap or an offset is misaligned."""
    for i, a in enumerate(buffers):
        oa = plan.offsets[a.key]
        assert oa % alignment == 0, f"{a.key} misaligned"
        assert oa + a.size <= plan.arena_bytes, f"{a.key} outside the arena"
        for b in buffers[i + 1:]:
            if a.last < b.first or b.last < a.first:
                continue
            ob = plan.offsets[b.key]
            assert oa + a.size <= ob or ob + b.size <= oa, f"{a.key} overlaps {b.key}"
