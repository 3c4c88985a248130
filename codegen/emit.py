"""Generate a C project for a model and a target: sources, headers, manifest, build files."""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import jinja2
import numpy as np

from qlane import __version__
from qlane.errors import QlaneError
from qlane.sim.fixedpoint import Rounding
from qlane.sim.graph import Graph
from qlane.sim.interpreter import Interpreter

from . import lowerings as _lowerings  # noqa: F401  (registers the lowerings)
from .cprims import header_files
from .isa import ISAS
from .lowering import C_TYPES, Context, Layer, lower_layer
from .names import c_comment, c_identifier, prefix_problem
from .placement import STACK_BYTES, deployment
from .planner import Buffer, Plan, plan_arena
from .schedule import (
    Schedule,
    ScheduleError,
    StageCode,
    buffers,
    in_place_offsets,
    lower_stage,
)
from .targets import Region, Target

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
ARENA_ALIGN = 16
MANIFEST = "manifest.json"


class GenerateError(QlaneError, ValueError):
    """The model cannot be generated for this target, or the output directory is unsafe."""


def _env() -> jinja2.Environment:
    from importlib import resources

    root = resources.files("qlane.templates")
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(root)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )
    env.filters["carray"] = _carray
    env.filters["comment"] = c_comment
    env.filters["cint"] = _cint
    env.filters["product"] = lambda xs: int(np.prod(list(xs), dtype=np.int64))
    return env


def _cint(v: Any) -> str:
    """An integer literal that is valid C for every int32 value (INT32_MIN included)."""
    v = int(v)
    if v == -(2**31):
        return "(-2147483647 - 1)"
    if -(2**31) < v < 2**31:
        return str(v)
    return f"{v}LL"


def _carray(values: np.ndarray, per_line: int = 16) -> str:
    flat = np.asarray(values).reshape(-1)
    if flat.dtype.kind == "f":
        items = [f"{float(v)!r}f" for v in flat]
    else:
        items = [_cint(v) for v in flat]
    lines = [", ".join(items[i:i + per_line]) for i in range(0, len(items), per_line)]
    return ",\n    ".join(lines) if lines else "0"


@dataclass(frozen=True)
class TemplateTarget:
    """The facts of a target that templates print."""

    name: str
    zig_target: str
    zig_cpu: str
    description: str = ""


@dataclass(frozen=True)
class TemplateRegion:
    """A memory of the chip as the board linker script names it."""

    name: str
    kind: str
    origin: int
    bytes: int


@dataclass(frozen=True)
class TemplateBoard:
    """The bare-metal example of a Cortex-M target: compiler flags, memories, placement."""

    flags: tuple[str, ...]
    flash: TemplateRegion
    main: TemplateRegion  # holds .data, .bss and the stack
    ram_regions: tuple[TemplateRegion, ...]  # main first
    all_regions: tuple[TemplateRegion, ...]
    arena_region: str
    regions: MappingProxyType  # buffer name (input0, output0) -> region name
    stack_bytes: int


@dataclass(frozen=True)
class TemplateConst:
    """A constant array as a template declares it; ``values`` is a read-only numeric array."""

    suffix: str
    ctype: str
    values: np.ndarray
    comment: str  # already escaped for a C comment


@dataclass(frozen=True)
class TemplateLayer:
    """One lowered layer as templates see it: sanitised names and plain kernel parameters."""

    index: int
    symbol: str
    comment: str
    isa: str
    isa_note: str  # already escaped for a C comment
    op: str  # the kernel's op tag (conv2d, add, ...), not the model's operator
    template: str
    scratch_bytes: int
    consts: tuple[TemplateConst, ...]
    params: dict[str, Any]


@dataclass(frozen=True)
class TemplatePlan:
    """The arena sizes templates print."""

    arena_bytes: int
    naive_bytes: int


@dataclass(frozen=True)
class TemplateCall:
    """One layer call of the invoke function: argument expressions in C."""

    layer: TemplateLayer
    ins: tuple[str, ...]
    outs: tuple[str, ...]
    scratch: str
    comment: str = ""


@dataclass(frozen=True)
class TemplateCopy:
    """A rectangle copied between a stage's whole tensor and a patch buffer (bytes, C
    expressions for the pointers)."""

    dst: str
    dst_stride: int
    src: str
    src_stride: int
    rows: int
    row_bytes: int
    comment: str = ""


def _readonly(values: np.ndarray) -> np.ndarray:
    view = np.asarray(values).view()
    view.flags.writeable = False
    return view


def template_layer(layer: Layer) -> TemplateLayer:
    """The plain, sanitised template view of a lowered layer."""
    kernel = layer.kernel
    consts = tuple(TemplateConst(c.suffix, c.ctype, _readonly(c.values), c_comment(c.comment))
                   for c in kernel.consts)
    return TemplateLayer(
        index=layer.index, symbol=layer.symbol, comment=layer.comment, isa=layer.spec.isa,
        isa_note=c_comment(layer.isa_note), op=kernel.op, template=kernel.template,
        scratch_bytes=kernel.scratch_bytes, consts=consts, params=dict(kernel.params))


@dataclass
class Project:
    """A generated project, in memory: file name -> text, plus facts for the manifest."""

    name: str
    target: Target
    rounding: Rounding
    layers: list[Layer]
    plan: Plan
    schedule: Schedule = field(default_factory=Schedule)
    stages: list[StageCode] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)
    manifest: dict[str, Any] = field(default_factory=dict)
    removed: list[str] = field(default_factory=list)
    """Stale files of the previous generation that the last `write_project` deleted."""
    schedule_note: str = ""
    """Why this schedule (the chooser's reason), for the manifest and `estimate`."""
    memory_budget: int | None = None
    """The arena budget the schedule was chosen for (None: none)."""
    in_place: dict[int, int] = field(default_factory=dict)
    """Depthwise layers that write over their input: layer index -> the input's distance after
    the output, bytes."""

    @property
    def patch_layers(self) -> list[tuple[int, Layer, Graph, StageCode]]:
        """Every stage's patch layers with the ``NAME_run_layer`` index that runs each (after
        the model's layers), their one-operator graphs and their stage."""
        out, slot = [], len(self.layers)
        for sc in self.stages:
            for layer, g in zip(sc.variants, sc.graphs):
                out.append((slot, layer, g, sc))
                slot += 1
        return out


def _grow_scratch(graph: Graph, layers: list[Layer], lower: Callable[[int, int], Layer],
                  stages: Sequence[StageCode] = (), in_place: bool = False
                  ) -> tuple[list[Layer], Plan, dict[int, int]]:
    """The layers, their arena plan and in-place offsets (`in_place_offsets`, if ``in_place``),
    each layer whose kernel runs faster with more scratch lowered again with the arena's slack
    at its step, kept where the arena does not grow (layers of patch stages keep theirs: they
    run as patches)."""
    layers = list(layers)
    staged = {i for sc in stages for i in sc.layers}

    def bufs(ls: list[Layer]) -> tuple[list[Buffer], dict[int, int]]:
        alias = in_place_offsets(graph, ls, stages) if in_place else {}
        return buffers(graph, ls, stages, alias), alias

    current, alias = bufs(layers)
    plan = plan_arena(current, ARENA_ALIGN)
    for step, layer in enumerate(layers):
        if not layer.kernel.scratch_grows or layer.index in staged:
            continue
        live = sum(b.size for b in current
                   if b.first <= step <= b.last and b.key != f"s{layer.index}")
        budget = plan.arena_bytes - live
        if budget <= layer.kernel.scratch_bytes:
            continue
        trial = [*layers[:step], lower(step, budget), *layers[step + 1:]]
        trial_bufs, trial_alias = bufs(trial)
        trial_plan = plan_arena(trial_bufs, ARENA_ALIGN)
        if trial_plan.arena_bytes <= plan.arena_bytes:
            layers, plan, current, alias = trial, trial_plan, trial_bufs, trial_alias
    return layers, plan, alias


BOARD_FILES = ("board.c", "startup.c", "qlane_rt.c")
"""Sources of the bare-metal example (not part of the library)."""
EXAMPLE_FILES = ("main.c", *BOARD_FILES)


def _board(target: Target, plan: Plan, inputs: list[dict[str, Any]],
           outputs: list[dict[str, Any]]) -> TemplateBoard | None:
    """The board example's facts, for Cortex-M targets whose memories are described."""
    flash = target.regions_of("flash")
    placement = deployment(target, plan.arena_bytes, [t["bytes"] for t in inputs],
                           [t["bytes"] for t in outputs])
    if not target.m_profile or not flash or placement is None:
        return None

    def view(r: Region) -> TemplateRegion:
        return TemplateRegion(c_identifier(r.name, "region"), r.kind, r.origin, r.bytes)

    ram = [u.region for u in placement.uses]  # the main region first
    placed = {i.name: u.region.name for u in placement.uses for i in u.items}
    return TemplateBoard(
        flags=tuple(f for f in target.cflags if not f.startswith(("-std", "-O"))),
        flash=view(flash[0]), main=view(ram[0]), ram_regions=tuple(view(r) for r in ram),
        all_regions=tuple(view(r) for r in sorted(target.regions, key=lambda r: r.origin)
                          if r.kind),
        arena_region=c_identifier(placed["arena"], "region"),
        regions=MappingProxyType({n: c_identifier(r, "region") for n, r in placed.items()
                                  if n.startswith(("input", "output"))}),
        stack_bytes=STACK_BYTES,
    )


def fnv1a(arrays: Sequence[np.ndarray]) -> int:
    """FNV-1a (32 bits) over the bytes of ``arrays`` in order: the examples' output checksum."""
    h = 2166136261
    for a in arrays:
        for byte in np.ascontiguousarray(a).tobytes():
            h = ((h ^ byte) * 16777619) & 0xFFFFFFFF
    return h


RESERVED_PREFIXES = MappingProxyType({Path(f).stem: f for f in (
    *EXAMPLE_FILES, *header_files("neon"), *header_files("dsp"))})
"""Prefix -> qlane's own file that ``<prefix>.c`` or ``<prefix>.h`` would clash with."""


def model_prefix(graph: Graph, name: str | None = None) -> str:
    """The C prefix of the generated API: ``name`` exactly as given, or derived from the model.

    A given name that is not a safe C prefix is refused with the reason; a derived one is
    sanitised (`c_identifier`) and moved off qlane's own names with an ``m_`` in front.
    """
    if name is not None:
        problem = prefix_problem(name)
        if problem is None and name.lower() in RESERVED_PREFIXES:
            problem = f"clashes with qlane's own {RESERVED_PREFIXES[name.lower()]}"
        if problem is not None:
            raise GenerateError(f"name {name!r} {problem}; choose another name")
        return name
    prefix = c_identifier(graph.name)
    if prefix in RESERVED_PREFIXES or prefix.split("_")[0] == "qlane":
        prefix = f"m_{prefix}"
    return prefix


def _io_entry(graph: Graph, index: int) -> dict[str, Any]:
    t = graph.tensors[index]
    q = t.quant
    return {
        "name": c_comment(t.name, 200),
        "index": index,
        "shape": list(t.shape),
        "dtype": np.dtype(t.dtype).name,
        "ctype": C_TYPES[np.dtype(t.dtype)],
        "count": int(t.size),
        "bytes": t.nbytes,
        "scale": None if q is None else float(q.s),
        "zero_point": None if q is None else q.zp,
    }


@dataclass
class Lowered:
    """A model's layers lowered for a target, with what lowers more (a layer with a scratch
    budget, a patch stage): the chooser and `generate` share it."""

    graph: Graph
    target: Target
    rounding: Rounding
    prefix: str
    interp: Interpreter
    layers: list[Layer]
    _stages: dict[object, StageCode] = field(default_factory=dict)
    _lowered: dict[tuple[int, int], Layer] = field(default_factory=dict)
    _plans: dict[Schedule, tuple[list[Layer], list[StageCode], Plan, dict[int, int]]] = \
        field(default_factory=dict)

    def lower(self, step: int, budget: int = 0) -> Layer:
        """Operator ``step`` lowered with ``budget`` bytes of scratch to spare (once)."""
        if (step, budget) not in self._lowered:
            self._lowered[step, budget] = self._lower(
                self.graph.operators[step], self.graph, self.interp.kernels[step], budget)
        return self._lowered[step, budget]

    def _lower(self, op: Any, graph: Graph, sim: Any, budget: int = 0) -> Layer:
        ctx = Context(op=op, graph=graph, sim=sim, target=self.target, rounding=self.rounding,
                      isa="c", scratch_budget=budget)
        try:
            return lower_layer(ctx, self.prefix)
        except NotImplementedError as e:
            raise GenerateError(str(e)) from None

    def stage(self, stage: Any) -> StageCode:
        """The stage lowered (once per stage)."""
        if stage not in self._stages:
            self._stages[stage] = lower_stage(
                self.graph, self.interp.kernels, stage,
                lambda g, sim: self._lower(g.operators[0], g, sim), self.rounding)
        return self._stages[stage]

    def plan(self, schedule: Schedule
             ) -> tuple[list[Layer], list[StageCode], Plan, dict[int, int]]:
        """The layers (scratch grown), the stages, the arena plan and the in-place layers'
        offsets under ``schedule``."""
        if schedule not in self._plans:
            stages = [self.stage(s) for s in schedule.stages]
            layers, plan, alias = _grow_scratch(self.graph, self.layers, self.lower, stages,
                                                schedule.in_place)
            self._plans[schedule] = (layers, stages, plan, alias)
        layers, stages, plan, alias = self._plans[schedule]
        return list(layers), list(stages), plan, dict(alias)


def lower_model(graph: Graph, target: Target, name: str | None = None,
                rounding: Rounding = "double") -> Lowered:
    """Every layer of ``graph`` lowered whole for ``target``."""
    prefix = model_prefix(graph, name)
    low = Lowered(graph, target, rounding, prefix, Interpreter(graph, rounding), [])
    low.layers = [low.lower(step) for step in range(len(graph.operators))]
    return low


def _shared_consts(views: Sequence[TemplateLayer], patch_views: Sequence[TemplateLayer]
                   ) -> dict[str, dict[str, str]]:
    """Constants a patch function shares with its whole layer's (same values): per symbol,
    suffix -> the C name, which the whole layer's file defines with external linkage."""
    by_index = {v.index: v for v in views}
    out: dict[str, dict[str, str]] = {}
    for pv in patch_views:
        full = by_index[pv.index]
        theirs = {c.suffix: c for c in full.consts}
        for c in pv.consts:
            f = theirs.get(c.suffix)
            if f is not None and f.ctype == c.ctype and np.array_equal(f.values, c.values):
                name = f"{full.symbol}_{c.suffix}"
                out.setdefault(full.symbol, {})[c.suffix] = name
                out.setdefault(pv.symbol, {})[c.suffix] = name
    return out


def _ptr(base: str, offset: int, const: bool) -> str:
    """``base`` (``inputs[k]``, ``outputs[k]`` or ``a + N``) moved on by ``offset`` bytes."""
    if not offset:
        return base
    if base.startswith("a + "):
        return f"a + {int(base[4:]) + offset}"
    return f"({'const ' if const else ''}uint8_t *){base} + {offset}"


def _stage_calls(graph: Graph, sc: StageCode, views: list[TemplateLayer], plan: Plan,
                 loc: Callable[[int], str]) -> list[TemplateCall | TemplateCopy]:
    """The invoke function's calls of one stage: per patch, each layer's patch function on the
    patch buffers, the stage input and output read and written in place where a patch spans
    whole rows and through a copy where it does not."""
    ops, s = graph.operators, sc.stage
    x, y = graph.tensors[ops[s.first].inputs[0]], graph.tensors[ops[s.last].outputs[0]]
    xi, yi = ops[s.first].inputs[0], ops[s.last].outputs[0]
    x_row = x.shape[2] * x.shape[3] * np.dtype(x.dtype).itemsize
    y_row = y.shape[2] * y.shape[3] * np.dtype(y.dtype).itemsize
    x_px = x.shape[3] * np.dtype(x.dtype).itemsize
    y_px = y.shape[3] * np.dtype(y.dtype).itemsize
    out: list[TemplateCall | TemplateCopy] = []
    n = len(sc.patches)
    for k, (patch, which) in enumerate(zip(sc.patches, sc.which)):
        head, tail = patch[0].span, patch[-1].span
        where = (f"{s.describe()}, patch {k + 1} of {n}: rows {tail.out_rows.lo}-"
                 f"{tail.out_rows.hi - 1}, columns {tail.out_cols.lo}-{tail.out_cols.hi - 1}")
        src_at = head.in_rows.lo * x_row + head.in_cols.lo * x_px
        if sc.full_width_in(graph, k):
            src = _ptr(loc(xi), src_at, True)
        else:
            src = f"a + {plan.offsets[f'c{s.first}']}"
            out.append(TemplateCopy(src, head.in_cols.size * x_px, _ptr(loc(xi), src_at, True),
                                    x_row, head.in_rows.size, head.in_cols.size * x_px,
                                    f"{where}: its input"))
        dst_at = tail.out_rows.lo * y_row + tail.out_cols.lo * y_px
        for pos, (part, v) in enumerate(zip(patch, which)):
            view = views[v]
            i = part.span.index
            if i == s.last:
                dst = (_ptr(loc(yi), dst_at, False) if sc.full_width_out(graph, k)
                       else f"a + {plan.offsets[f'd{s.last}']}")
            else:
                dst = f"a + {plan.offsets[f'p{i}']}"
            scratch = f"a + {plan.offsets[f's{i}']}" if view.scratch_bytes else "0"
            out.append(TemplateCall(view, (src,), (dst,), scratch,
                                    where if pos == 0 else ""))
            src = dst
        if not sc.full_width_out(graph, k):
            out.append(TemplateCopy(_ptr(loc(yi), dst_at, False), y_row, src,
                                    tail.out_cols.size * y_px, tail.out_rows.size,
                                    tail.out_cols.size * y_px, f"{where}: its output"))
    return out


def generate(graph: Graph, target: Target, name: str | None = None,
             rounding: Rounding = "double", sample: Sequence[np.ndarray] | None = None,
             sample_source: str = "", schedule: Schedule | None = None,
             memory_budget: int | None = None, lowered: Lowered | None = None) -> Project:
    """Lower every layer of ``graph`` for ``target`` and render the project's files.

    ``sample`` (one array per model input, of the input's shape) is embedded for the examples
    together with the simulator's checksum of its outputs. ``schedule`` runs the given patch
    stages; without one, the fastest schedule whose arena fits ``memory_budget`` bytes is
    chosen (`qlane.codegen.chooser`; default budget: the chip's RAM less what the board
    example reserves).
    """
    from .chooser import choose

    low = lowered or lower_model(graph, target, name, rounding)
    prefix = low.prefix
    interp = low.interp
    note, budget = "", memory_budget
    if schedule is None:
        schedule, note, budget = choose(low, memory_budget)
    try:
        schedule.check(graph)
    except ScheduleError as e:
        raise GenerateError(str(e)) from None
    layers, stages, plan, alias = low.plan(schedule)
    note = note or f"{schedule.describe()}: given"
    project = Project(prefix, target, rounding, layers, plan, schedule, stages,
                      schedule_note=note, memory_budget=budget, in_place=alias)
    env = _env()
    headers = header_files(target.preferred_isa)

    def loc(t: int) -> str:
        if t in graph.inputs:
            return f"inputs[{graph.inputs.index(t)}]"
        if t in graph.outputs:
            return f"outputs[{graph.outputs.index(t)}]"
        return f"a + {plan.offsets[f't{t}']}"

    views = [template_layer(layer) for layer in layers]
    patch_views = [template_layer(layer) for _, layer, _, _ in project.patch_layers]
    staged = {sc.stage.first: sc for sc in stages}
    inside = {i for sc in stages for i in sc.layers}
    calls: list[TemplateCall | TemplateCopy] = []
    base = 0
    firsts = {}
    for sc in stages:
        firsts[sc.stage.first] = base
        base += len(sc.variants)
    for layer, view in zip(layers, views):
        if layer.index in staged:
            sc = staged[layer.index]
            k0 = firsts[layer.index]
            calls += _stage_calls(graph, sc, patch_views[k0:k0 + len(sc.variants)], plan, loc)
        if layer.index in inside:
            continue
        scratch = f"a + {plan.offsets[f's{layer.index}']}" if view.scratch_bytes else "0"
        calls.append(TemplateCall(view, tuple(loc(t) for t in layer.inputs),
                                  tuple(loc(t) for t in layer.outputs), scratch))
    dispatch = [(v.index, v) for v in views] + \
        [(slot, v) for (slot, _, _, _), v in zip(project.patch_layers, patch_views)]
    inputs = [_io_entry(graph, i) for i in graph.inputs]
    outputs = [_io_entry(graph, i) for i in graph.outputs]
    common = dict(
        name=prefix, version=__version__, rounding=str(rounding),
        target=TemplateTarget(target.name, target.zig_target, target.zig_cpu,
                              c_comment(target.description)),
        layers=tuple(views), calls=tuple(calls), dispatch=tuple(dispatch),
        schedule=c_comment(schedule.describe(), 400),
        plan=TemplatePlan(plan.arena_bytes, plan.naive_bytes), headers=sorted(headers),
        arena_align=ARENA_ALIGN, inputs=inputs, outputs=outputs,
        model_comment=c_comment(graph.name),
    )
    files: dict[str, str] = dict(headers)
    files[f"{prefix}.h"] = env.get_template("model.h.j2").render(**common)
    files[f"{prefix}.c"] = env.get_template("model.c.j2").render(**common)
    requant = f"qlane_requant_{'single' if rounding == 'single' else 'double'}"
    shared = _shared_consts(views, patch_views)
    for view in views:
        fname = f"{prefix}_l{view.index:03d}.c"
        consts = {c.suffix: f"{view.symbol}_{c.suffix}" for c in view.consts}
        files[fname] = env.get_template("layer.c.j2").render(
            **common, layer=view, fn=view.symbol, k=view, p=view.params, c=consts,
            requant=requant, isa_headers=ISAS[view.isa].headers,
            exported=shared.get(view.symbol, {}), imported={},
        )
    for (slot, _, _, _), view in zip(project.patch_layers, patch_views):
        fname = f"{prefix}_l{view.index:03d}_v{slot:03d}.c"
        imported = shared.get(view.symbol, {})
        consts = {c.suffix: imported.get(c.suffix, f"{view.symbol}_{c.suffix}")
                  for c in view.consts}
        files[fname] = env.get_template("layer.c.j2").render(
            **common, layer=view, fn=view.symbol, k=view, p=view.params, c=consts,
            requant=requant, isa_headers=ISAS[view.isa].headers, exported={},
            imported=imported,
        )
    given, checksum = None, 0
    if sample is not None:
        given = _sample(graph, sample)
        outs = interp.run([x[None] for x in given]).outputs
        checksum = fnv1a([y[0] for y in outs])
    board = _board(target, plan, inputs, outputs)
    extra = dict(sample=tuple(x.reshape(-1) for x in given) if given else None,
                 sample_checksum=checksum, board=board,
                 sample_source=c_comment(sample_source or "the first sample given"))
    files[f"{prefix}_sample.h"] = env.get_template("sample.h.j2").render(**common, **extra)
    files["main.c"] = env.get_template("main.c.j2").render(**common, **extra)
    if board is not None:
        files["board.c"] = env.get_template("board.c.j2").render(**common, **extra)
        files["startup.c"] = env.get_template("board_startup.c.j2").render(**common, **extra)
        files[f"{prefix}.ld"] = env.get_template("board.ld.j2").render(**common, **extra)
        files["cmake/arm-none-eabi.cmake"] = env.get_template(
            "cmake/arm-none-eabi.cmake.j2").render(**common, **extra)
        files["qlane_rt.c"] = _plain_template("qlane_rt.c")
    if target.zig_target:
        files["cmake/zig.cmake"] = env.get_template("cmake/zig.cmake.j2").render(
            **common, **extra)
    sources = sorted(f for f in files if f.endswith(".c") and f not in EXAMPLE_FILES)
    files["CMakeLists.txt"] = env.get_template("CMakeLists.txt.j2").render(
        **common, **extra, sources=sources)
    files["Makefile"] = env.get_template("Makefile.j2").render(**common, **extra,
                                                                sources=sources)
    flash = sum(layer.const_bytes for layer in layers) + sum(  # patch constants not shared
        c.nbytes for _, layer, _, _ in project.patch_layers for c in layer.kernel.consts
        if c.suffix not in shared.get(layer.symbol, {}))
    project.manifest = {
        "generator": f"qlane {__version__}",
        "model": c_comment(graph.name, 200),
        "entry": f"{prefix}_invoke",
        "target": target.name,
        "rounding": rounding,
        "arena_bytes": plan.arena_bytes,
        "arena_naive_bytes": plan.naive_bytes,
        "arena_align": ARENA_ALIGN,
        "flash_bytes": flash,
        "flash_note": "constant data (weights, biases, multipliers, tables); code size is "
                      "measured by the cross-compiler",
        "sources": sources,
        "headers": sorted([f"{prefix}.h", *headers]),
        "include_dirs": ["."],
        "inputs": inputs,
        "outputs": outputs,
        "layers": [
            {
                "index": layer.index,
                "op": layer.op.opcode,
                "kernel": layer.symbol,
                "isa": layer.spec.isa,
                "isa_note": layer.isa_note,
                "macs": layer.macs,
                "const_bytes": layer.const_bytes,
                "scratch_bytes": layer.kernel.scratch_bytes,
                "input_shapes": [list(graph.tensors[t].shape) for t in layer.inputs],
                "output_shapes": [list(graph.tensors[t].shape) for t in layer.outputs],
            }
            for layer in layers
        ],
        "schedule": {
            "spec": schedule.spec(),
            "describe": schedule.describe(),
            "why": c_comment(note, 300),
            "memory_budget": budget,
            "in_place": [{"layer": i, "input_after_output_bytes": d}
                         for i, d in sorted(alias.items())],
            "stages": [
                {
                    "first": sc.stage.first, "last": sc.stage.last,
                    "grid": list(sc.stage.grid), "patches": len(sc.patches),
                    "macs": sc.plan.macs, "layer_macs": sc.plan.layer_macs,
                    "extra_macs": sc.plan.macs - sc.plan.layer_macs,
                }
                for sc in stages
            ],
        },
        "patch_layers": [
            {
                "run_layer_index": slot,
                "layer": layer.index,
                "kernel": layer.symbol,
                "isa": layer.spec.isa,
                "isa_note": layer.isa_note,
                "uses": sc.uses(k),
                "scratch_bytes": layer.kernel.scratch_bytes,
                "input_shape": list(g.tensors[layer.inputs[0]].shape),
                "output_shape": list(g.tensors[layer.outputs[0]].shape),
            }
            for slot, layer, g, sc in project.patch_layers
            for k in [sc.variants.index(layer)]
        ],
    }
    project.manifest["files"] = sorted([*files, MANIFEST])
    files[MANIFEST] = json.dumps(project.manifest, indent=1) + "\n"
    project.files = files
    return project


def _sample(graph: Graph, sample: Sequence[np.ndarray]) -> list[np.ndarray]:
    """One read-only array per model input, checked against the input's shape and dtype."""
    tensors = graph.input_tensors
    if len(sample) != len(tensors):
        raise GenerateError(f"the sample has {len(sample)} arrays; the model has "
                            f"{len(tensors)} inputs")
    out = []
    for k, (x, t) in enumerate(zip(sample, tensors)):
        x = np.asarray(x)
        if tuple(x.shape) != tuple(t.shape) or x.dtype != np.dtype(t.dtype):
            raise GenerateError(f"sample input {k} is {x.dtype.name} {list(x.shape)}; the model "
                                f"needs {np.dtype(t.dtype).name} {list(t.shape)}")
        x = np.ascontiguousarray(x).copy()
        x.flags.writeable = False
        out.append(x)
    return out


def _plain_template(name: str) -> str:
    from importlib import resources

    return (resources.files("qlane.templates") / name).read_text(encoding="utf-8")


def content_hash(project: Project) -> str:
    """SHA-256 over every file name and text: equal hashes mean byte-identical projects."""
    h = hashlib.sha256()
    for fname in sorted(project.files):
        h.update(fname.encode() + b"\0" + project.files[fname].encode() + b"\0")
    return h.hexdigest()


def write_project(project: Project, outdir: str | Path) -> list[Path]:
    """Write the files; refuse to replace any file that qlane did not write there before.

    Files of a previous qlane run (listed in its manifest.json) are replaced, or deleted if this
    project does not write them (named in ``project.removed``); every other file in the directory
    is left untouched; a name clash with a file qlane did not write is an error, raised before
    anything is written.
    """
    out = Path(outdir)
    if out.exists() and not out.is_dir():
        raise GenerateError(f"{out} exists and is not a directory")
    previous: set[str] = set()
    old_manifest = out / MANIFEST
    if old_manifest.exists():
        try:
            old = json.loads(old_manifest.read_text())
            listed = old.get("files", [])
            if not isinstance(listed, list):
                raise ValueError("files is not a list")
            previous = {f for f in listed if isinstance(f, str)}
        except (OSError, ValueError, AttributeError):
            raise GenerateError(f"{old_manifest} is not a qlane manifest; refusing to "
                                "overwrite it") from None
        if not str(old.get("generator", "")).startswith("qlane"):
            raise GenerateError(f"{old_manifest} was not written by qlane; refusing to "
                                "overwrite it")
    clashes = sorted(f for f in project.files if (out / f).exists() and f not in previous)
    if clashes:
        raise GenerateError(f"{out} already holds {', '.join(clashes[:5])}"
                            f"{' ...' if len(clashes) > 5 else ''} not written by qlane; "
                            "choose another directory or remove them")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for fname in sorted(project.files):
        path = out / fname
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(project.files[fname])
        written.append(path)
    project.removed = _remove_stale(out, previous - set(project.files))
    return written


def _remove_stale(out: Path, stale: set[str]) -> list[str]:
    """Delete the files a previous generation listed that this one did not write; their names.

    Only plain relative names inside ``out`` that are files are removed, then their folders if
    that left them empty.
    """
    root = out.resolve()
    removed = []
    for fname in sorted(stale):
        rel = Path(fname)
        path = out / rel
        if (rel.is_absolute() or ".." in rel.parts or not path.is_file()
                or not path.resolve().is_relative_to(root)):
            continue
        path.unlink()
        removed.append(fname)
        for parent in rel.parents[:-1]:
            with contextlib.suppress(OSError):  # not empty: keep it
                (out / parent).rmdir()
    return removed
