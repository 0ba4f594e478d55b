"""Frontends: the tracer and the programs written with it (microgpt, small models)."""

from .tracer import (Tensor, Trace, TraceError, Value, concatenate, dot, dot_general, einsum, eq,
                     erf, exp, gelu, grad, log, matvec, maximum, relu, rsqrt, select, sqrt, stack,
                     stop_gradient, take, tanh, trace, trace_program, vmax, vsum, where)

__all__ = ["Tensor", "Trace", "TraceError", "Value", "concatenate", "dot", "dot_general", "einsum",
           "eq", "erf", "exp", "gelu", "grad", "log", "matvec", "maximum", "relu", "rsqrt",
           "select", "sqrt", "stack", "stop_gradient", "take", "tanh", "trace", "trace_program",
           "vmax", "vsum", "where"]
