"""qlane's Python API: inspect, simulate, generate, verify and estimate a model on a target.

Every function takes the model as a ``.tflite`` path or a loaded `Graph`, and the target as a
name (``"cortex-m7"``, or a ``.toml`` path) or a `Target`. Failures raise a subclass of
`QlaneError` whose message is one line (further detail, if any, is attached as a note).
"""

from __future__ import annotations

import functools
import os
import tempfile
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, ParamSpec, TypeVar

import numpy as np

from qlane.codegen import emit
from qlane.codegen import targets as _targets
from qlane.codegen.emit import Project
from qlane.codegen.schedule import Schedule, ScheduleError, parse_schedule
from qlane.codegen.targets import Target, TargetError
from qlane.errors import InputError, QlaneError
from qlane.sim import Graph, Result, Rounding, load_tflite
from qlane.sim import simulate as _simulate
from qlane.sim.graph import ModelError, Tensor
from qlane.sim.ops import KERNELS

if TYPE_CHECKING:
    from qlane.codegen.compare import LayerResult
    from qlane.codegen.cost import LayerEstimate
    from qlane.codegen.emulate import EmulationReport
    from qlane.codegen.estimate import Estimate
    from qlane.codegen.verify import Report

ModelLike = str | os.PathLike[str] | Graph
"""A ``.tflite`` path or a loaded `Graph`."""
TargetLike = str | Target
"""A bundled target name, a target ``.toml`` path, or a loaded `Target`."""
Progress = Callable[[str, int, int], None]
"""Called with (stage, steps done, steps in all) as a long command advances. Stages: "compile"
(one step: generating and building, with a compiler run of unknown length), "compare" (runner
calls: every layer on every batch, then the whole model) and "emulate" (layers), prefixed by
the tier label in `verify` ("host build: compile")."""

HOST_TIER = "host build"

_P = ParamSpec("_P")
_R = TypeVar("_R")


def _one_line_errors(fn: Callable[_P, _R]) -> Callable[_P, _R]:
    """Cut a multi-line `QlaneError` to its first line; the rest becomes a note."""

    @functools.wraps(fn)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return fn(*args, **kwargs)
        except QlaneError as e:
            first, _, rest = str(e).partition("\n")
            if rest:
                e.args = (first,)
                e.add_note(rest)
            raise

    return wrapper


def load_model(model: ModelLike) -> Graph:
    """The `Graph` of ``model``: loaded from a ``.tflite`` path, or ``model`` itself."""
    return model if isinstance(model, Graph) else load_tflite(model)


def load_target(target: TargetLike) -> Target:
    """A `Target` by bundled name or ``.toml`` path (a `Target` is returned as is)."""
    return target if isinstance(target, Target) else _targets.load_target(target)


def targets() -> list[Target]:
    """Every bundled target, sorted by name."""
    return [_targets.load_target(name) for name in _targets.target_names()]


# --- inspect -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class TensorFacts:
    """A tensor of a layer: shape, dtype and quantization, as numbers and as text."""

    shape: tuple[int, ...]
    dtype: str
    quant: str  # "scale/zero_point", "per-axis[n] lo..hi", or "-"
    scale: float | tuple[float, ...] | None = None  # a tuple when quantized per axis
    zero_point: int | tuple[int, ...] | None = None
    axis: int | None = None  # the quantized dimension, when per axis

    def to_json(self) -> dict[str, Any]:
        many = isinstance(self.scale, tuple)
        return {"shape": list(self.shape), "dtype": self.dtype,
                "scale": list(self.scale) if many else self.scale,
                "zero_point": list(self.zero_point) if many else self.zero_point,
                "axis": self.axis}


@dataclass(frozen=True)
class IOInfo:
    """A model input or output: name, tensor index, shape, dtype, scales and zero points."""

    name: str
    index: int
    shape: tuple[int, ...]
    dtype: str
    scale: tuple[float, ...] | None
    zero_point: tuple[int, ...] | None

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "index": self.index, "shape": list(self.shape),
                "dtype": self.dtype,
                "scale": None if self.scale is None else list(self.scale),
                "zero_point": None if self.zero_point is None else list(self.zero_point)}


@dataclass(frozen=True)
class LayerInfo:
    """One operator: activations in and out, weight quantization, MACs and parameters."""

    index: int
    op: str
    supported: bool
    inputs: tuple[TensorFacts, ...]
    outputs: tuple[TensorFacts, ...]
    weights: str  # quantization of the first weight tensor as text, or "-"
    macs: int
    params: int
    param_bytes: int
    options: dict[str, Any]
    weight_tensor: TensorFacts | None = None  # the first weight tensor
    reason: str | None = None  # why the simulator refuses the layer (its error), if it does

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "op": self.op, "supported": self.supported,
                "reason": self.reason,
                "inputs": [t.to_json() for t in self.inputs],
                "outputs": [t.to_json() for t in self.outputs],
                "weights": None if self.weight_tensor is None else self.weight_tensor.to_json(),
                "macs": self.macs, "params": self.params,
                "param_bytes": self.param_bytes, "options": dict(self.options)}


@dataclass(frozen=True)
class Totals:
    """Sums over the model; parameters shared by several layers are counted once."""

    layers: int
    macs: int
    params: int
    param_bytes: int
    unsupported: tuple[str, ...]  # operators of the layers the simulator refuses

    def to_json(self) -> dict[str, Any]:
        return {"layers": self.layers, "macs": self.macs, "params": self.params,
                "param_bytes": self.param_bytes, "unsupported": list(self.unsupported)}


@dataclass(frozen=True)
class ModelInfo:
    """What `inspect` reports about a model."""

    model: str
    scheme: str
    inputs: tuple[IOInfo, ...]
    outputs: tuple[IOInfo, ...]
    layers: tuple[LayerInfo, ...]
    total: Totals

    def to_json(self) -> dict[str, Any]:
        """The ``qlane inspect --json`` document."""
        return {"model": self.model, "scheme": self.scheme,
                "inputs": [t.to_json() for t in self.inputs],
                "outputs": [t.to_json() for t in self.outputs],
                "layers": [la.to_json() for la in self.layers],
                "total": self.total.to_json()}


def _quant_text(t: Tensor | None) -> str:
    if t is None or t.quant is None:
        return "-"
    q = t.quant
    if q.per_axis:
        return f"per-axis[{q.scale.size}] {float(q.scale.min()):.3g}..{float(q.scale.max()):.3g}"
    return f"{float(q.s):.6g}/{q.zp}"


def _is_param(t: Tensor) -> bool:
    """Weights and biases: quantized constants (shape and axis operands are not parameters)."""
    return t.is_constant and t.quant is not None


def _facts(t: Tensor) -> TensorFacts:
    shape, dtype, q = tuple(int(d) for d in t.shape), np.dtype(t.dtype).name, t.quant
    if q is None:
        return TensorFacts(shape, dtype, "-")
    if q.per_axis:
        return TensorFacts(shape, dtype, _quant_text(t), tuple(float(s) for s in q.scale),
                           tuple(int(z) for z in q.zero_point), q.axis)
    return TensorFacts(shape, dtype, _quant_text(t), float(q.s), q.zp)


def _refusal(graph: Graph, op: Any) -> str | None:
    """The simulator's error for ``op`` (unknown operator, dtypes, quantization), or None."""
    kernel = KERNELS.get(op.opcode)
    if kernel is None:
        return f"{op.describe()}: operator {op.opcode} is not supported"
    try:
        kernel(op, graph)
    except ModelError as e:
        return str(e).partition("\n")[0]
    return None


def _io_info(t: Tensor) -> IOInfo:
    q = t.quant
    return IOInfo(t.name, t.index, tuple(int(d) for d in t.shape), np.dtype(t.dtype).name,
                  None if q is None else tuple(float(s) for s in q.scale),
                  None if q is None else tuple(int(z) for z in q.zero_point))


def _layer_info(graph: Graph, op: Any) -> LayerInfo:
    kernel = KERNELS.get(op.opcode)
    ins = [graph.tensor(i) for i in op.inputs]
    acts = [t for t in ins if t is not None and not t.is_constant]
    consts = [t for t in ins if t is not None and _is_param(t)]
    reason = _refusal(graph, op)
    return LayerInfo(
        index=op.index, op=op.opcode, supported=reason is None,
        inputs=tuple(_facts(t) for t in acts),
        outputs=tuple(_facts(graph.tensors[i]) for i in op.outputs),
        weights=_quant_text(consts[0]) if consts else "-",
        macs=kernel.macs(op, graph) if kernel else 0,
        params=sum(t.size for t in consts), param_bytes=sum(t.nbytes for t in consts),
        options={k: v for k, v in op.options.items() if v is not None},
        weight_tensor=_facts(consts[0]) if consts else None, reason=reason,
    )


@_one_line_errors
def inspect(model: ModelLike) -> ModelInfo:
    """Per-layer op, shapes, dtypes, quantization, MACs and parameters of ``model``, and totals."""
    graph = load_model(model)
    layers = tuple(_layer_info(graph, op) for op in graph.operators)
    params = [graph.tensors[i] for i in sorted({i for op in graph.operators for i in op.inputs
                                                if i >= 0 and _is_param(graph.tensors[i])})]
    total = Totals(
        layers=len(layers), macs=sum(la.macs for la in layers),
        params=sum(t.size for t in params), param_bytes=sum(t.nbytes for t in params),
        unsupported=tuple(sorted({la.op for la in layers if not la.supported})),
    )
    return ModelInfo(graph.name, graph.scheme, tuple(_io_info(t) for t in graph.input_tensors),
                     tuple(_io_info(t) for t in graph.output_tensors), layers, total)


# --- inputs and outputs ------------------------------------------------------------------------

def _need(t: Tensor) -> str:
    return f"[N, {', '.join(map(str, t.shape))}]"


def _check_arrays(arrays: Sequence[np.ndarray], labels: Sequence[str], graph: Graph
                  ) -> list[np.ndarray]:
    out = []
    for k, (x, label, t) in enumerate(zip(arrays, labels, graph.input_tensors)):
        x = np.asarray(x)
        if tuple(x.shape[1:]) != tuple(t.shape):
            raise InputError(f"{label} has shape {list(x.shape)}, model input {k} needs "
                             f"{_need(t)}")
        if x.dtype != t.dtype:
            raise InputError(f"{label} has dtype {x.dtype.name}, model input {k} needs "
                             f"{np.dtype(t.dtype).name}")
        out.append(x)
    if len({x.shape[0] for x in out}) > 1:
        raise InputError(f"{', '.join(labels)} hold different numbers of samples "
                         f"{[x.shape[0] for x in out]}")
    return out


@_one_line_errors
def read_inputs(path: str | os.PathLike[str], model: ModelLike) -> list[np.ndarray]:
    """``in0``, ``in1``, ... of an NPZ, each checked against ``[N, *input_shape]`` and dtype."""
    graph = load_model(model)
    try:
        with open(path, "rb") as f:
            magic = f.read(6)
    except OSError as e:
        raise InputError(f"cannot read inputs {path}: {e.strerror or e}") from None
    if magic == b"\x93NUMPY":
        raise InputError(f"{path} is a .npy array; give an .npz with in0, in1, ... "
                         "(np.savez('inputs.npz', in0=x))")
    if not magic.startswith(b"PK"):
        raise InputError(f"{path} is not an NPZ archive; give one with in0, in1, ... "
                         "(np.savez('inputs.npz', in0=x))")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except zipfile.BadZipFile as e:
        raise InputError(f"{path} is not an NPZ archive (damaged or truncated: {e})") from None
    except (OSError, ValueError, EOFError) as e:
        raise InputError(f"cannot read inputs {path}: {str(e).splitlines()[0]}") from None
    for k, t in enumerate(graph.input_tensors):
        if f"in{k}" not in arrays:
            raise InputError(f"{path}: missing array 'in{k}' for model input {k} "
                             f"('{t.name}', shape {_need(t)})")
    n = len(graph.inputs)
    return _check_arrays([arrays[f"in{k}"] for k in range(n)],
                         [f"{path}: 'in{k}'" for k in range(n)], graph)


@_one_line_errors
def random_inputs(model: ModelLike, samples: int = 1, seed: int = 0) -> list[np.ndarray]:
    """Seeded uniform random inputs, ``[samples, *shape]`` per model input."""
    graph = load_model(model)
    if samples < 0:
        raise InputError(f"samples must be >= 0, got {samples}")
    rng = np.random.default_rng(seed)
    out = []
    for t in graph.input_tensors:
        dt = np.dtype(t.dtype)
        if dt.kind == "f":
            out.append(rng.uniform(-1, 1, (samples, *t.shape)).astype(dt))
        else:
            info = np.iinfo(dt)
            out.append(rng.integers(info.min, info.max, (samples, *t.shape), endpoint=True,
                                    dtype=dt))
    return out


def check_output(path: str | os.PathLike[str],
                 protect: Sequence[str | os.PathLike[str] | None] = ()) -> Path:
    """``path`` as an NPZ to write: not a directory, ends in ``.npz``, none of ``protect``."""
    p = Path(path)
    if p.is_dir():
        raise InputError(f"{path} is a directory; give a file name ending in .npz")
    if p.suffix != ".npz":
        raise InputError(f"{path}: output file name must end in .npz")
    for other in protect:
        if other and p.exists() and p.resolve() == Path(other).resolve():
            raise InputError(f"refusing to overwrite {other} with results")
    return p


def save_npz(path: str | os.PathLike[str], arrays: Mapping[str, np.ndarray]) -> Path:
    """Write ``arrays`` to an NPZ atomically: a failure leaves an existing file untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".npz", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return path


@_one_line_errors
def simulate(model: ModelLike, inputs: Sequence[np.ndarray], rounding: Rounding = "double",
             keep: bool = False) -> Result:
    """Run ``model`` bit-exactly on ``inputs[k]`` of shape ``[S, *input_shape]``."""
    return _simulate(load_model(model), inputs, rounding, keep=keep)


# --- generate ----------------------------------------------------------------------------------

@_one_line_errors
def _schedule(schedule: Schedule | str | None, memory_budget: int | None) -> Schedule | None:
    if schedule is not None and memory_budget is not None:
        raise ScheduleError("give a schedule or a memory budget, not both")
    if memory_budget is not None and memory_budget < 0:
        raise ScheduleError(f"memory budget {memory_budget} is negative")
    return parse_schedule(schedule) if isinstance(schedule, str) else schedule


@_one_line_errors
def generate(model: ModelLike, target: TargetLike, name: str | None = None,
             rounding: Rounding = "double", out: str | os.PathLike[str] | None = None,
             sample: Sequence[np.ndarray] | str | os.PathLike[str] | None = None, *,
             memory_budget: int | None = None, schedule: Schedule | str | None = None
             ) -> Project:
    """The C project of ``model`` for ``target``; also written to ``out`` if given.

    ``name``: the C prefix of files and symbols, kept exactly or refused (`GenerateError`) if it
    is no safe C identifier; by default derived from the model and sanitised. Writing to ``out``
    deletes the stale files of a previous generation there (``Project.removed``).
    ``sample``: inputs for the examples (one array per model input, or an NPZ path whose first
    sample is taken); the project embeds it with the simulator's checksum of its outputs.
    ``memory_budget``: the arena's bytes; the fastest schedule that fits is chosen (patch stages
    where layer by layer does not fit; default budget: the chip's RAM less the board example's
    reserve). ``schedule`` instead gives the schedule (`parse_schedule` text such as
    ``"0-7:2x2"``, or ``"layers"``).
    """
    graph = load_model(model)
    source = ""
    if isinstance(sample, str | os.PathLike):
        source = f"sample 0 of {Path(sample).name}"
        sample = [x[0] for x in read_inputs(sample, graph)]
    project = emit.generate(graph, load_target(target), name=name, rounding=rounding,
                            sample=sample, sample_source=source,
                            schedule=_schedule(schedule, memory_budget),
                            memory_budget=memory_budget)
    if out is not None:
        emit.write_project(project, out)
    return project


def output_checksum(outputs: Sequence[np.ndarray]) -> int:
    """FNV-1a (32 bits) of every byte of one sample's outputs, in order: the number the
    generated examples print (and the board example stores) for that sample."""
    return emit.fnv1a(outputs)


@_one_line_errors
def write(project: Project, outdir: str | os.PathLike[str]) -> list[Path]:
    """Write ``project`` into ``outdir``; files qlane did not write there are never replaced."""
    return emit.write_project(project, outdir)


# --- verify ------------------------------------------------------------------------------------

@dataclass
class VerifyResult:
    """The host tier's report and, with ``isa=True``, the instruction-set emulator's."""

    host: Report
    isa: EmulationReport | None = None

    @property
    def bit_exact(self) -> bool:
        """Every layer and the whole model identical to the simulator in every tier."""
        return self.host.bit_exact and (self.isa is None or self.isa.bit_exact)

    @property
    def tiers(self) -> list[tuple[str, Report]]:
        """(label, report) per tier, in the order they ran."""
        out: list[tuple[str, Report]] = [(HOST_TIER, self.host)]
        if self.isa is not None:
            out.append((f"emulated {self.isa.target}", self.isa))
        return out

    def to_json(self) -> dict[str, Any]:
        """The ``qlane verify --json`` document: the host report, ``isa``, ``bit_exact``."""
        out = self.host.to_json()
        if self.isa is not None:
            out["isa"] = self.isa.to_json()
        out["bit_exact"] = self.bit_exact
        return out


@_one_line_errors
def verify(model: ModelLike, target: TargetLike,
           inputs: Sequence[np.ndarray] | str | os.PathLike[str] | None = None, *,
           samples: int = 0, seed: int = 0, rounding: Rounding = "double", isa: bool = False,
           name: str | None = None, progress: Progress | None = None,
           on_layer: Callable[[str, LayerResult], None] | None = None,
           on_tier: Callable[[str, Report], None] | None = None,
           cc: Literal["zig", "gcc"] = "zig", memory_budget: int | None = None,
           schedule: Schedule | str | None = None) -> VerifyResult:
    """Generate, compile on the host and compare every layer and the model with the simulator.

    ``inputs`` are arrays ``[N, *input_shape]`` or an NPZ path (see `read_inputs`); ``samples``
    seeded random samples are appended. With ``isa``, the chip's instruction set is verified too,
    cross-compiled and run in an emulator. As it runs, ``on_layer`` gets (tier label, layer
    result) for each layer as soon as it is compared, in order, ``on_tier`` (tier label, report)
    when a tier is complete, before the next starts, and ``progress`` (see `Progress`) steps.
    ``cc`` compiles the instruction-set tier: ``zig`` (clang) or ``gcc`` (arm-none-eabi-gcc,
    Cortex-M targets only). ``memory_budget`` and ``schedule``: see `generate`; both tiers
    verify the same generated project.
    """
    from qlane.codegen.cross import check_cc
    from qlane.codegen.verify import verify as host_verify

    graph = load_model(model)
    chip = load_target(target)
    plan = _schedule(schedule, memory_budget)
    if isa and not chip.zig_target:
        raise TargetError(f"target {chip.name} has no instruction set to emulate; isa=True "
                          "needs a chip target")
    if isa:
        check_cc(cc, chip)
    if isinstance(inputs, str | os.PathLike):
        arrays = read_inputs(inputs, graph)
    elif inputs is not None:
        if len(inputs) != len(graph.inputs):
            raise InputError(f"model takes {len(graph.inputs)} input(s), got {len(inputs)}")
        arrays = _check_arrays(inputs, [f"inputs[{k}]" for k in range(len(inputs))], graph)
    else:
        arrays = []
    if samples:
        rand = random_inputs(graph, samples, seed)
        arrays = [np.concatenate([a, b]) for a, b in zip(arrays, rand)] if arrays else rand
    if not arrays or not arrays[0].shape[0]:
        raise InputError("nothing to verify: give inputs or samples > 0")

    project = emit.generate(graph, chip, name=name, rounding=rounding, schedule=plan,
                            memory_budget=memory_budget)

    def tier(label: str, fn: Callable[..., Any]) -> Any:
        def stage(name: str, done: int, total: int) -> None:
            assert progress is not None
            progress(f"{label}: {name}", done, total)

        def layer(res: LayerResult) -> None:
            assert on_layer is not None
            on_layer(label, res)

        report = fn(graph, chip, arrays, rounding=rounding, name=name, project=project,
                    progress=stage if progress else None, on_layer=layer if on_layer else None)
        if on_tier:
            on_tier(label, report)
        return report

    result = VerifyResult(tier(HOST_TIER, host_verify))
    if isa:
        from qlane.codegen.emulate import emulate_verify

        result.isa = tier(f"emulated {chip.name}", functools.partial(emulate_verify, cc=cc))
    return result


# --- estimate ----------------------------------------------------------------------------------

@_one_line_errors
def estimate(model: ModelLike, target: TargetLike,
             mode: Literal["emulated", "static"] = "emulated", rounding: Rounding = "double",
             name: str | None = None, *,
             on_layer: Callable[[LayerEstimate], None] | None = None,
             progress: Progress | None = None, cc: Literal["zig", "gcc"] = "zig",
             memory_budget: int | None = None, schedule: Schedule | str | None = None
             ) -> Estimate:
    """Cycles, instructions, time and memory per layer of ``model`` on ``target``.

    ``emulated`` cross-compiles and runs every layer in the emulator, then costs the executed
    basic blocks; ``static`` uses the target's fitted per-kernel-family coefficients only.
    ``on_layer`` gets each layer's estimate as soon as it is costed, in order; ``progress``
    (see `Progress`) the emulated mode's "compile" and "emulate" steps. ``cc`` is the compiler
    of the emulated mode's build: ``zig`` (clang) or ``gcc`` (arm-none-eabi-gcc, Cortex-M only).
    ``memory_budget`` and ``schedule``: see `generate`; the estimate reports each patch
    stage's recompute overhead and the memory view (``Estimate.memory``).
    """
    from qlane.codegen.emulate import EmulationError
    from qlane.codegen.estimate import estimate as run_estimate

    graph = load_model(model)
    chip = load_target(target)
    plan = _schedule(schedule, memory_budget)
    try:
        return run_estimate(graph, chip, mode=mode, rounding=rounding, name=name,
                            on_layer=on_layer, progress=progress, cc=cc, schedule=plan,
                            memory_budget=memory_budget)
    except QlaneError:
        raise
    except RuntimeError as e:  # a fault of the emulated code or of the host harness
        raise EmulationError(str(e)) from e


@_one_line_errors
def write_report(est: Estimate, outdir: str | os.PathLike[str]) -> tuple[Path, ...]:
    """Write a per-layer plot and the memory view (PNGs, need matplotlib) and an HTML table of
    ``est``."""
    from qlane.codegen.report import write_report as _write_report

    return _write_report(est, outdir)


__all__ = [
    "HOST_TIER", "IOInfo", "LayerInfo", "ModelInfo", "ModelLike", "Progress", "TargetLike",
    "TensorFacts", "Totals", "VerifyResult", "check_output", "estimate", "generate", "inspect",
    "load_model", "load_target", "random_inputs", "read_inputs", "save_npz", "simulate",
    "targets", "verify", "write", "write_report",
]
