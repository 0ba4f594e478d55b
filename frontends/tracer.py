"""The tracer: micrograd-like scalar values that record every operation into a circuit.

Write a model with :class:`Value` s the way micrograd or microgpt writes it (``+ - * / **``,
``.exp() .log() .sqrt() .tanh() .gelu() .relu()``, comparisons); plain Python numbers mix in as
constants. :func:`trace` turns a function into a :class:`~circuitsketch.ir.Circuit` and
:func:`trace_program` turns a training *step* into a :class:`~circuitsketch.ir.Program` (one
step circuit plus a loop, never unrolled). Inputs arrive as numpy object arrays of Values, so
``W[i, j]``, ``W[i]`` and ``np.exp(W)`` all work; :func:`dot`, :func:`vsum` and :func:`matvec`
record fused n-ary nodes instead of chains of binary gates.

Data-dependent tokens: a step circuit is fixed, so per-step data such as "the token at
position p" enters as *one-hot* real inputs and an embedding row is ``dot(onehot, column)``.
This keeps every op arithmetic (no gather op whose derivative would be a scatter) at the cost
of vocab-size multiply-adds per lookup.

Anything that would make the circuit depend on traced values (``if value:``, ``float(value)``,
``math.exp(value)``) raises :class:`TraceError` naming the operation and the user's line.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from ..ir.circuit import Builder, Circuit, Program, Shape
from ..ir.ops import Op
from ..ir.verify import verify, verify_program


class TraceError(TypeError):
    """Python code that cannot be recorded as a fixed circuit."""


_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: frames skipped when looking for the user's line: the compiler, and numpy's Python wrappers
#: (``np.sum`` over Values calls ``+`` from inside numpy/_core/fromnumeric.py)
_INTERNAL_DIRS = tuple(
    [os.path.join(_PACKAGE_ROOT, d) + os.sep for d in ("ir", "passes", "backends")]
    + [os.path.dirname(os.path.abspath(np.__file__)) + os.sep])
_INTERNAL_FILES = {os.path.abspath(__file__)}


def user_location() -> str | None:
    """``file.py:line`` of the innermost caller outside the tracer, the passes and numpy."""
    frame = sys._getframe(1)
    while frame is not None:
        filename = frame.f_code.co_filename
        if filename not in _INTERNAL_FILES and not filename.startswith(_INTERNAL_DIRS):
            return f"{os.path.basename(filename)}:{frame.f_lineno}"
        frame = frame.f_back
    return None


class Trace:
    """An active recording: a builder plus the bookkeeping that catches misuse."""

    _active: list["Trace"] = []

    def __init__(self) -> None:
        self.builder = Builder()
        self.closed = False

    def __enter__(self) -> "Trace":
        Trace._active.append(self)
        return self

    def __exit__(self, *exc) -> None:
        Trace._active.remove(self)
        self.closed = True

    @classmethod
    def current(cls, what: str) -> "Trace":
        if not cls._active:
            raise TraceError(f"{what} outside trace(): there is no circuit to record into")
        return cls._active[-1]

    def input_array(self, name: str, shape: Shape) -> np.ndarray:
        nodes = self.builder.input(name, shape, user_location())
        out = np.empty(len(nodes), dtype=object)
        out[:] = [Value(self, n) for n in nodes]
        return out.reshape(shape) if shape else out[0]

    def node_of(self, x: Any, what: str) -> int:
        """Node id of a Value of this trace, or a new constant node for a plain number."""
        if isinstance(x, Value):
            if x.trace.closed:
                raise TraceError(f"{what} at {user_location()}: uses a value of a finished trace")
            if x.trace is not self:
                raise TraceError(f"{what} at {user_location()}: mixes values of two different traces")
            return x.node
        if isinstance(x, (bool, np.bool_)):
            x = float(x)
        if isinstance(x, (int, float, np.integer, np.floating)):
            return self.builder.const(float(x), user_location())
        raise TraceError(f"{what} at {user_location()}: cannot use a {type(x).__name__} in a circuit")

    def record(self, op: Op, operands: Iterable[Any], **attrs: Any) -> "Value":
        operands = list(operands)
        args = tuple(self.node_of(x, op.value) for x in operands)
        node = self.builder.add(op, args, tuple(sorted(attrs.items())), user_location())
        return Value(self, node)


def _trace_of(*xs: Any) -> Trace:
    for x in xs:
        if isinstance(x, Value):
            return x.trace
    return Trace.current("an operation on plain numbers")


def _record(op: Op, *operands: Any, **attrs: Any) -> "Value":
    return _trace_of(*operands).record(op, operands, **attrs)


def _binary(op: Op, a: Any, b: Any) -> "Value":
    # an array operand is numpy's business: it applies the op elementwise (object dtype)
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return NotImplemented
    return _record(op, a, b)


class Value:
    """A traced scalar. Arithmetic records nodes; control flow on it is an error."""

    __slots__ = ("trace", "node")

    def __init__(self, trace: Trace, node: int) -> None:
        self.trace = trace
        self.node = node

    def __repr__(self) -> str:
        return f"Value(%{self.node})"

    __add__ = lambda self, other: _binary(Op.ADD, self, other)
    __radd__ = lambda self, other: _binary(Op.ADD, other, self)
    __sub__ = lambda self, other: _binary(Op.SUB, self, other)
    __rsub__ = lambda self, other: _binary(Op.SUB, other, self)
    __mul__ = lambda self, other: _binary(Op.MUL, self, other)
    __rmul__ = lambda self, other: _binary(Op.MUL, other, self)
    __truediv__ = lambda self, other: _binary(Op.DIV, self, other)
    __rtruediv__ = lambda self, other: _binary(Op.DIV, other, self)
    __neg__ = lambda self: _record(Op.NEG, self)
    __lt__ = lambda self, other: _binary(Op.LT, self, other)
    __le__ = lambda self, other: _binary(Op.LE, self, other)
    __gt__ = lambda self, other: _binary(Op.GT, self, other)
    __ge__ = lambda self, other: _binary(Op.GE, self, other)
    exp = lambda self: _record(Op.EXP, self)
    log = lambda self: _record(Op.LOG, self)
    sqrt = lambda self: _record(Op.SQRT, self)
    tanh = lambda self: _record(Op.TANH, self)
    erf = lambda self: _record(Op.ERF, self)
    gelu = lambda self: _record(Op.GELU, self)
    relu = lambda self: _record(Op.RELU, self)

    def __pow__(self, exponent: Any) -> "Value":
        if isinstance(exponent, Value):  # a traced exponent: a**b = exp(b log a)
            return (exponent * self.log()).exp()
        if not isinstance(exponent, (int, float, np.integer, np.floating)):
            raise TraceError(f"** at {user_location()}: exponent must be a number or a Value")
        return _record(Op.POW, self, p=float(exponent))

    def __rpow__(self, base: Any) -> "Value":
        return (self * _trace_of(self).record(Op.LOG, [base])).exp()

    def __bool__(self) -> bool:
        raise TraceError(f"data-dependent control flow at {user_location()}: the truth value of "
                         f"traced %{self.node} ({self.trace.builder.eqns[self.node].op.value}) is "
                         "unknown while tracing; use select(cond, a, b) instead of if/else")

    def _no_conversion(self, *args: Any) -> Any:
        op = self.trace.builder.eqns[self.node].op.value
        raise TraceError(f"conversion of traced %{self.node} ({op}) to a Python number at "
                         f"{user_location()}: its value is unknown while "
                         "tracing; use circuitsketch functions (v.exp(), v.log(), ...) instead of "
                         "math.*, float() or int()")

    __float__ = __int__ = __index__ = __complex__ = _no_conversion
    __hash__ = object.__hash__


# ---------------------------------------------------------------- functions over values

def stop_gradient(x: Any) -> Value:
    """``x`` itself, treated as a constant by every derivative (grad and Taylor)."""
    return _record(Op.STOP_GRADIENT, x)


def select(cond: Any, if_true: Any, if_false: Any) -> Value:
    """``if_true`` where ``cond != 0`` else ``if_false``: the traceable form of if/else."""
    return _record(Op.SELECT, cond, if_true, if_false)


def maximum(a: Any, b: Any) -> Value:
    return _record(Op.MAX, a, b)


def eq(a: Any, b: Any) -> Value:
    """1.0 where a == b else 0.0 (``==`` on Values keeps Python's identity meaning)."""
    return _record(Op.EQ, a, b)


def _flat(xs: Any) -> list:
    return list(np.asarray(xs, dtype=object).ravel()) if not isinstance(xs, list) else [
        y for x in xs for y in (_flat(x) if isinstance(x, (list, np.ndarray)) else [x])]


def vsum(xs: Any) -> Value:
    """Sum of all elements as one n-ary node."""
    flat = _flat(xs)
    if not flat:
        raise TraceError(f"vsum at {user_location()}: sum of an empty sequence")
    return _record(Op.SUM, *flat)


def dot(a: Any, b: Any) -> Value:
    """sum_i a_i * b_i as one fused node."""
    a, b = _flat(a), _flat(b)
    if len(a) != len(b) or not a:
        raise TraceError(f"dot at {user_location()}: lengths {len(a)} and {len(b)} "
                         "must be equal and non-zero")
    return _record(Op.DOT, *a, *b)


def matvec(w: Any, x: Any) -> list[Value]:
    """[dot(row, x) for row in w]: a linear layer with w of shape [out, in]."""
    return [dot(row, x) for row in np.asarray(w, dtype=object)]


def vmax(xs: Any) -> Value:
    """The largest element, as a chain of binary max nodes."""
    flat = _flat(xs)
    if not flat:
        raise TraceError(f"vmax at {user_location()}: max of an empty sequence")
    result = flat[0]
    for x in flat[1:]:
        result = maximum(result, x)
    return result


def grad(output: Value, wrt: Any) -> Any:
    """Gradient of the scalar ``output`` with respect to each Value in ``wrt`` (same structure).

    The backward pass is recorded into the current circuit (reverse mode, ``passes.grad``), so
    a traced training step contains its own gradient computation.
    """
    from ..passes.grad import backprop

    if not isinstance(output, Value):
        raise TraceError(f"grad at {user_location()}: the output must be a traced Value, got a "
                         f"{type(output).__name__}")
    trace = output.trace
    array = np.asarray(wrt, dtype=object)
    nodes = [trace.node_of(v, "grad") for v in array.ravel()]
    grads = backprop(trace.builder, trace.node_of(output, "grad"), nodes)
    out = np.empty(len(grads), dtype=object)
    out[:] = [Value(trace, g) for g in grads]
    return out.reshape(array.shape) if array.shape else out[0]


# ---------------------------------------------------------------- tracing entry points

def _record_outputs(trace: Trace, result: Any) -> None:
    if not isinstance(result, Mapping):
        result = {"out": result}
    for name, value in result.items():
        array = np.asarray(value, dtype=object)
        nodes = [trace.node_of(v, f"output {name!r}") for v in array.ravel()]
        trace.builder.output(name, nodes, array.shape)


def trace(fn: Callable[..., Any], /, **input_shapes: Shape) -> Circuit:
    """Trace ``fn(**inputs)`` into a circuit. ``input_shapes`` maps each argument to a shape
    (``()`` for a scalar); ``fn`` returns a Value, an array of Values, or a dict of them."""
    with Trace() as t:
        inputs = {name: t.input_array(name, tuple(shape)) for name, shape in input_shapes.items()}
        _record_outputs(t, fn(**inputs))
    return verify(t.builder.build())


def trace_program(step: Callable[..., Mapping[str, Any]], /, *, n_steps: int,
                  state: Mapping[str, Shape], per_step: Mapping[str, Shape] | None = None,
                  static: Mapping[str, Shape] | None = None, weight: str | None = None,
                  examples_per_step: int = 1) -> Program:
    """Trace one training step into a :class:`Program` that loops ``n_steps`` times.

    ``step(**inputs)`` receives the carried ``state``, the ``per_step`` data slice, the
    ``static`` inputs and, if ``weight`` is given, the down-weights of this step's examples as
    an array of shape ``[examples_per_step]`` under that name; it returns a dict holding the new
    value of every state entry (extra entries become extra outputs).
    """
    per_step, static = dict(per_step or {}), dict(static or {})
    shapes: dict[str, Shape] = {**state, **per_step, **static}
    if weight is not None:
        if weight in shapes:
            raise ValueError(f"weight name {weight!r} clashes with another input")
        shapes[weight] = (examples_per_step,)
    with Trace() as t:
        inputs = {name: t.input_array(name, tuple(shape)) for name, shape in shapes.items()}
        result = step(**inputs)
        if not isinstance(result, Mapping):
            raise TraceError("a traced training step must return a dict of new state values")
        missing = [name for name in state if name not in result]
        if missing:
            raise TraceError(f"the step did not return new values for state {missing}")
        _record_outputs(t, result)
    program = Program(t.builder.build(), n_steps, tuple(state), tuple(per_step), weight)
    return verify_program(program)
