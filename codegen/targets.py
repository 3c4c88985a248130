"""Target chips: one TOML file per chip in ``targets/`` (ISA features, clock, memories, flags)."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from importlib import resources
from typing import Any


class TargetError(ValueError):
    """An unknown target name or a malformed target file."""


@dataclass(frozen=True)
class Target:
    """A chip qlane generates code for."""

    name: str
    description: str
    arch: str
    isa: tuple[str, ...]
    features: dict[str, bool]
    clock_hz: int
    sram_bytes: int
    flash_bytes: int
    cflags: tuple[str, ...]
    zig_target: str
    zig_cpu: str
    unicorn_cpu: str
    cost: dict[str, Any] = field(default_factory=dict)

    @property
    def preferred_isa(self) -> str:
        """The first (fastest) kernel ISA this chip runs; ``c`` is always last."""
        return self.isa[0]


def _files() -> dict[str, Any]:
    return {p.name[:-5]: p for p in resources.files("qlane.targets").iterdir()
            if p.name.endswith(".toml")}


def target_names() -> list[str]:
    """Names of all bundled targets, sorted."""
    return sorted(_files())


def load_target(name: str) -> Target:
    """Load a bundled target by name."""
    files = _files()
    if name not in files:
        raise TargetError(f"unknown target {name!r}; choose one of {', '.join(sorted(files))}")
    try:
        data = tomllib.loads(files[name].read_text())
        return Target(
            name=data["name"], description=data["description"], arch=data["arch"],
            isa=tuple(data["isa"]), features=dict(data["features"]),
            clock_hz=int(data["clock_hz"]), sram_bytes=int(data["sram_bytes"]),
            flash_bytes=int(data["flash_bytes"]), cflags=tuple(data["cflags"]),
            zig_target=data["zig_target"], zig_cpu=data["zig_cpu"],
            unicorn_cpu=data["unicorn_cpu"], cost=dict(data.get("cost", {})),
        )
    except (KeyError, TypeError, ValueError, tomllib.TOMLDecodeError) as e:
        raise TargetError(f"target file {name}.toml is malformed: {e}") from None
