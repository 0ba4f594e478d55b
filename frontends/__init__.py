"""Frontends: the tracer and the programs written with it (microgpt, small models)."""

from .tracer import (Trace, TraceError, Value, dot, eq, grad, matvec, maximum, select,
                     stop_gradient, trace, trace_program, vmax, vsum)

__all__ = ["Trace", "TraceError", "Value", "dot", "eq", "grad", "matvec", "maximum", "select",
           "stop_gradient", "trace", "trace_program", "vmax", "vsum"]
