"""Compile a generated project on the host with cffi and compare every layer with the simulator."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from qlane.errors import QlaneError
from qlane.sim.graph import Graph

from .compare import LayerResult, Progress, Report, Spec, compare
from .cprims import build_cffi_module
from .emit import Project, content_hash, generate, write_project
from .isa import ISAS
from .targets import Target


class BuildError(QlaneError, RuntimeError):
    """The generated C did not compile on the host."""


class HostBuild:
    """A generated project compiled into a Python extension; call layers or the whole model."""

    def __init__(self, project: Project, build_root: str | Path | None = None,
                 extra_args: Sequence[str] = ()) -> None:
        self.project = project
        root = Path(build_root) if build_root else Path(tempfile.gettempdir()) / "qlane-build"
        digest = content_hash(project)[:20]
        src_dir = publish_project(project, root / f"{project.name}-{digest}" / "src")
        name = project.name
        include_dirs = [str(src_dir.resolve())]
        # the project's headers are those of the target's preferred ISA, plus each layer's own
        for isa in sorted({project.target.preferred_isa, *(la.spec.isa for la in project.layers)}):
            include_dirs += ISAS[isa].host_include_dirs()
        cdef = f"""
            int {name}_invoke(const void *const inputs[], void *const outputs[], void *arena);
            int {name}_run_layer(int index, const void *const in[], void *const out[],
                                 void *scratch);
            int32_t {name}_layer_scratch_bytes(int index);
        """
        sources = [str((src_dir / s).resolve()) for s in project.manifest["sources"]]
        try:
            self.ffi, self.lib = build_cffi_module(
                f"_qlane_{name}_{digest}", cdef, f'#include "{name}.h"', include_dirs,
                root / f"{project.name}-{digest}", [*extra_args], sources=sources)
        except Exception as e:  # cffi and distutils raise several unrelated types here
            if type(e).__name__ not in ("VerificationError", "CompileError", "LinkError"):
                raise
            raise BuildError(f"the generated C for {project.target.name} did not compile on "
                             f"this host (compiler output above; sources in {src_dir})") from None
        self.name = name

    def _ptrs(self, arrays: Sequence[np.ndarray], const: bool) -> Any:
        kind = "const void *[]" if const else "void *[]"
        return self.ffi.new(kind, [self.ffi.from_buffer(a) for a in arrays])

    def run_layer(self, index: int, inputs: Sequence[np.ndarray],
                  out_specs: Sequence[tuple[tuple[int, ...], np.dtype]]) -> list[np.ndarray]:
        """Run one layer on contiguous inputs; returns freshly allocated outputs."""
        ins = [np.ascontiguousarray(x) for x in inputs]
        outs = [np.zeros(shape, dtype) for shape, dtype in out_specs]
        scratch = np.zeros(max(int(getattr(self.lib, f"{self.name}_layer_scratch_bytes")(index)),
                               1) + 64, np.uint8)
        status = getattr(self.lib, f"{self.name}_run_layer")(
            index, self._ptrs(ins, True), self._ptrs(outs, False),
            self.ffi.from_buffer(_aligned(scratch)))
        if status != 0:
            raise RuntimeError(f"{self.name}_run_layer({index}) returned {status}")
        return outs

    def invoke(self, inputs: Sequence[np.ndarray],
               out_specs: Sequence[tuple[tuple[int, ...], np.dtype]]) -> list[np.ndarray]:
        """Run the whole model on one sample through NAME_invoke with a fresh arena."""
        ins = [np.ascontiguousarray(x) for x in inputs]
        outs = [np.zeros(shape, dtype) for shape, dtype in out_specs]
        arena = np.full(self.project.plan.arena_bytes + 64, 0xA5, np.uint8)
        status = getattr(self.lib, f"{self.name}_invoke")(
            self._ptrs(ins, True), self._ptrs(outs, False), self.ffi.from_buffer(_aligned(arena)))
        if status != 0:
            raise RuntimeError(f"{self.name}_invoke returned {status}")
        return outs


def _complete(project: Project, directory: Path) -> bool:
    """True when ``directory`` holds every file of ``project`` with the same text."""
    try:
        return all((directory / f).read_text() == text for f, text in project.files.items())
    except (OSError, UnicodeDecodeError):
        return False


def publish_project(project: Project, directory: Path) -> Path:
    """Make ``directory`` hold exactly ``project``'s files, atomically (a cache entry).

    The files are written into a private temporary folder beside it and renamed into place, so
    an interrupted run never leaves a half-written entry that a later run would trust, and
    concurrent runs (same or different projects) never see each other's partial files. An
    entry that is incomplete (left by an older qlane, or damaged) is replaced.
    """
    if _complete(project, directory):
        return directory
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        write_project(project, tmp / "files")
        for _ in range(3):
            try:
                os.rename(tmp / "files", directory)
                return directory
            except OSError:  # taken: complete (another run won) or stale (set it aside)
                if _complete(project, directory):
                    return directory
                with contextlib.suppress(OSError):
                    os.rename(directory, tmp / "stale")
        raise BuildError(f"cannot publish the generated sources into {directory}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _aligned(buf: np.ndarray, align: int = 16) -> np.ndarray:
    off = (-buf.ctypes.data) % align
    return buf[off:]


class _HostRunner:
    """A host build as a comparison runner: one sample per call."""

    batch = 1

    def __init__(self, build: HostBuild) -> None:
        self.build = build

    def run_layer(self, index: int, inputs: Sequence[np.ndarray],
                  out_specs: Sequence[Spec]) -> list[np.ndarray]:
        return [o[None] for o in self.build.run_layer(index, [x[0] for x in inputs], out_specs)]

    def invoke(self, inputs: Sequence[np.ndarray], out_specs: Sequence[Spec]) -> list[np.ndarray]:
        return [o[None] for o in self.build.invoke([x[0] for x in inputs], out_specs)]


def verify(graph: Graph, target: Target, inputs: Sequence[np.ndarray],
           rounding: str = "double", name: str | None = None,
           build_root: str | Path | None = None, progress: Progress | None = None, *,
           on_layer: Callable[[LayerResult], None] | None = None,
           project: Project | None = None) -> Report:
    """Generate, compile on the host, and compare each layer and the model with the simulator.

    ``inputs[k]`` has shape ``[S, *input_shape]``. Each layer is fed the simulator's own input
    tensors, so a wrong layer is reported alone rather than polluting every later one.
    ``progress`` gets the stages "compile" (0 of 1, then 1 of 1) and "compare" (see `compare`);
    ``on_layer`` each layer's result as soon as it is compared. ``project`` verifies a given
    generated project (a chosen schedule) instead of generating one.
    """
    if progress:
        progress("compile", 0, 1)
    project = project or generate(graph, target, name=name, rounding=rounding)
    build = HostBuild(project, build_root)
    if progress:
        progress("compile", 1, 1)
    return compare(graph, project, target.name, rounding, inputs, _HostRunner(build), progress,
                   on_layer=on_layer)
