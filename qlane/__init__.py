"""qlane: simulate, generate and estimate 8-bit quantized networks for DSPs and microcontrollers.

    import qlane
    info = qlane.inspect("model.tflite")
    outputs = qlane.simulate("model.tflite", [x]).outputs
    project = qlane.generate("model.tflite", "cortex-m7", out="build/")
    assert qlane.verify("model.tflite", "cortex-m7", samples=4).bit_exact
    cycles = qlane.estimate("model.tflite", "cortex-m7", mode="static").cycles
"""

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

# The package of target TOML files, loaded first: its import would otherwise rebind
# ``qlane.targets`` from the function below to the module at the first target lookup.
import_module("qlane.targets")

from qlane.api import (  # noqa: E402  (emit reads __version__ while this package loads)
    HOST_TIER,
    IOInfo,
    LayerInfo,
    ModelInfo,
    TensorFacts,
    Totals,
    VerifyResult,
    check_output,
    estimate,
    generate,
    inspect,
    load_model,
    load_target,
    output_checksum,
    random_inputs,
    read_inputs,
    save_npz,
    simulate,
    targets,
    verify,
    write,
    write_report,
)
from qlane.codegen.emit import GenerateError, Project  # noqa: E402
from qlane.codegen.schedule import Schedule, ScheduleError  # noqa: E402
from qlane.codegen.targets import Target, TargetError  # noqa: E402
from qlane.errors import InputError, QlaneError  # noqa: E402
from qlane.sim import (  # noqa: E402
    ROUNDINGS,
    Graph,
    Interpreter,
    ModelError,
    QuantParams,
    Result,
    load_tflite,
)

load = load_tflite

_LAZY = {
    "BuildError": "qlane.codegen.verify",
    "Report": "qlane.codegen.verify",
    "CrossError": "qlane.codegen.cross",
    "EmulationError": "qlane.codegen.emulate",
    "EmulationReport": "qlane.codegen.emulate",
    "EstimateError": "qlane.codegen.estimate",
    "Estimate": "qlane.codegen.estimate",
    "ReportError": "qlane.codegen.report",
}
"""Names whose modules load the compiler and emulator toolchains: imported on first use."""


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'qlane' has no attribute {name!r}")


__all__ = [
    "HOST_TIER",
    "ROUNDINGS",
    "BuildError",
    "CrossError",
    "EmulationError",
    "EmulationReport",
    "Estimate",
    "EstimateError",
    "GenerateError",
    "Graph",
    "IOInfo",
    "InputError",
    "Interpreter",
    "LayerInfo",
    "ModelError",
    "ModelInfo",
    "Project",
    "QlaneError",
    "QuantParams",
    "Report",
    "ReportError",
    "Result",
    "Schedule",
    "ScheduleError",
    "Target",
    "TargetError",
    "TensorFacts",
    "Totals",
    "VerifyResult",
    "check_output",
    "estimate",
    "generate",
    "output_checksum",
    "inspect",
    "load",
    "load_model",
    "load_target",
    "load_tflite",
    "random_inputs",
    "read_inputs",
    "save_npz",
    "simulate",
    "targets",
    "verify",
    "write",
    "write_report",
]
