"""qlane's bit-exact reference: fixed-point primitives, quantization, kernels, interpreter."""

from .fixedpoint import ROUNDINGS, Rounding
from .graph import Graph, ModelError, Operator, Tensor
from .importer import load_tflite
from .interpreter import Interpreter, Result, simulate
from .quant import QuantParams

__all__ = [
    "ROUNDINGS",
    "Graph",
    "Interpreter",
    "ModelError",
    "Operator",
    "QuantParams",
    "Result",
    "Rounding",
    "Tensor",
    "load_tflite",
    "simulate",
]
