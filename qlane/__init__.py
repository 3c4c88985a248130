"""qlane: simulate, generate and estimate 8-bit quantized networks for DSPs and microcontrollers.

    import qlane
    graph = qlane.load("model.tflite")
    outputs = qlane.simulate(graph, [x]).outputs
"""

from qlane.sim import (
    ROUNDINGS,
    Graph,
    Interpreter,
    ModelError,
    QuantParams,
    Result,
    load_tflite,
    simulate,
)

load = load_tflite
__version__ = "0.1.0"

__all__ = [
    "ROUNDINGS",
    "Graph",
    "Interpreter",
    "ModelError",
    "QuantParams",
    "Result",
    "load",
    "load_tflite",
    "simulate",
]
