"""circuitsketch: learning algorithms as arithmetic circuits, sketched in truncated-Taylor
arithmetic to answer data-deletion questions without retraining.

The public API in one place::

    import circuitsketch as cs
    circuit = cs.trace(fn, w=(3,), x=(3,))            # trace a function into IR
    program = cs.trace_program(step, n_steps=..., state=..., weight="x")
    lowered = cs.taylor(program, order=3, seeds={"x"})  # truncated-Taylor rewrite
    final = cs.run_program(lowered, init, x=seed, backend="numba-cpu")
"""

from .backends import evaluate, get_backend, run_program
from .frontends.tracer import (Tensor, TraceError, Value, concatenate, dot, dot_general, einsum,
                               eq, erf, exp, gelu, grad, log, matvec, maximum, relu, rsqrt, select,
                               sqrt, stack, stop_gradient, take, tanh, trace, trace_program, vmax,
                               vsum, where)
from .ir import (Builder, Circuit, Op, Program, parse_circuit, parse_program, print_circuit,
                 print_program, to_dot, to_networkx, verify, verify_program)
from .passes import KinkError, simplify, taylor

__version__ = "0.1.0"

__all__ = ["Builder", "Circuit", "KinkError", "Op", "Program", "Tensor", "TraceError", "Value",
           "concatenate", "dot", "dot_general", "einsum", "eq", "erf", "exp", "gelu", "log",
           "relu", "rsqrt", "sqrt", "stack", "take", "tanh", "where", "evaluate", "get_backend", "grad", "matvec", "maximum", "parse_circuit",
           "parse_program", "print_circuit", "print_program", "run_program", "select",
           "simplify", "stop_gradient", "taylor", "to_dot", "to_networkx", "trace",
           "trace_program", "verify", "verify_program", "vmax", "vsum"]
