"""The tracer: values that record every operation into a circuit.

Two value types record into the same builder:

* :class:`Value`, a micrograd-like *scalar* (``+ - * / **``, ``.exp() .log() .sqrt() .tanh()
  .gelu() .relu()``, comparisons). Inputs arrive as numpy object arrays of Values, so
  ``W[i, j]``, ``W[i]`` and ``np.exp(W)`` all work; :func:`dot`, :func:`vsum` and :func:`matvec`
  record fused n-ary nodes instead of chains of binary gates. Every node is 0-d.
* :class:`Tensor`, a numpy-like *array* (``@``, broadcasting arithmetic, ``.sum(axis)``,
  ``.max(axis)``, ``.T``, ``reshape``, indexing by ints, slices and integer arrays): one node per
  array operation. ``trace(fn, inputs="tensors", ...)`` hands every input over as one Tensor.

They mix: a Value is a 0-d node, ``Value op Tensor`` is a Tensor, and a 0-d Tensor works wherever
a Value does. Plain numbers and numeric numpy arrays mix in as constants. :func:`trace` turns a
function into a :class:`~circuitsketch.ir.Circuit` and :func:`trace_program` turns a training
*step* into a :class:`~circuitsketch.ir.Program` (one step circuit plus a loop, never unrolled).

Data-dependent tokens: a step circuit is fixed, so per-step data such as "the token at position
p" enters either as integer-valued real data indexing a Tensor (``table[tokens]``, one ``take``
node) or, in scalar programs, as one-hot inputs with ``dot(onehot, column)``.

Anything that would make the circuit depend on traced values (``if value:``, ``float(value)``,
``math.exp(value)``) raises :class:`TraceError` naming the operation and the user's line; a shape
that does not fit raises :class:`~circuitsketch.ir.shapes.ShapeError`, also naming the line.
"""

from __future__ import annotations

import os
import sys
from math import prod
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from ..ir.circuit import Builder, Circuit, Program, Shape
from ..ir.ops import Op
from ..ir.shapes import ShapeError, broadcast_shapes
from ..ir.verify import verify, verify_program
from ..passes.grad import backprop


class TraceError(TypeError):
    """Python code that cannot be recorded as a fixed circuit."""


_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: frames skipped when looking for the user's line: the compiler, and numpy's Python wrappers
#: (``np.sum`` over Values calls ``+`` from inside numpy/_core/fromnumeric.py)
_INTERNAL_DIRS = tuple(
    [os.path.join(_PACKAGE_ROOT, d) + os.sep for d in ("ir", "passes", "backends")]
    + [os.path.dirname(os.path.abspath(np.__file__)) + os.sep])
_INTERNAL_FILES = {os.path.abspath(__file__)}

_NUMBER = (int, float, np.integer, np.floating)


def user_location() -> str | None:
    """``file.py:line`` of the innermost caller outside the tracer, the passes and numpy."""
    frame = sys._getframe(1)
    while frame is not None:
        filename = frame.f_code.co_filename
        if filename not in _INTERNAL_FILES and not filename.startswith(_INTERNAL_DIRS):
            return f"{os.path.basename(filename)}:{frame.f_lineno}"
        frame = frame.f_back
    return None


def _shape_error(what: str, message: str) -> ShapeError:
    return ShapeError(f"{what} at {user_location()}: {message}")


def _trace_error(what: str, message: str) -> TraceError:
    return TraceError(f"{what} at {user_location()}: {message}")


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
        """Input ``name`` as a numpy object array of 0-d Values (one node per element)."""
        nodes = self.builder.input(name, shape, user_location())
        out = np.empty(len(nodes), dtype=object)
        out[:] = [Value(self, n) for n in nodes]
        return out.reshape(shape) if shape else out[0]

    def input_tensor(self, name: str, shape: Shape) -> "Tensor":
        """Input ``name`` as one Tensor (one node reading the whole array)."""
        return Tensor(self, self.builder.input_array(name, shape, user_location()))

    def node_of(self, x: Any, what: str) -> int:
        """Node id of a Value or Tensor of this trace, or a new constant node for a plain number
        or numeric array; an object array (or list) of Values becomes one array node."""
        if isinstance(x, (Value, Tensor)):
            if x.trace.closed:
                raise TraceError(f"{what} at {user_location()}: uses a value of a finished trace")
            if x.trace is not self:
                raise TraceError(f"{what} at {user_location()}: mixes values of two different traces")
            return x.node
        if isinstance(x, (bool, np.bool_)):
            x = float(x)
        if isinstance(x, _NUMBER):
            return self.builder.const(float(x), user_location())
        if isinstance(x, (list, tuple)) and any(isinstance(y, Tensor) for y in x):
            return stack(x).node
        if isinstance(x, (list, tuple)):
            x = np.asarray(x, dtype=object if _holds_values(x) else None)
        if isinstance(x, np.ndarray):
            return self._node_of_array(x, what)
        raise TraceError(f"{what} at {user_location()}: cannot use a {type(x).__name__} in a circuit")

    def _node_of_array(self, x: np.ndarray, what: str) -> int:
        """A numeric array as one constant; an object array of 0-d values as one array node
        (their elements joined by reshape + concatenate)."""
        if x.dtype.kind in "biuf":
            return self.builder.const_array(x.astype(np.float64), user_location())
        if x.dtype != object:
            raise TraceError(f"{what} at {user_location()}: cannot use an array of dtype {x.dtype} "
                             "in a circuit")
        nodes = [self.node_of(v, what) for v in x.ravel()]
        if x.ndim == 0:
            return nodes[0]
        bad = [n for n in nodes if self.builder.eqns[n].shape != ()]
        if bad:
            raise _shape_error(what, f"an array of values holds a non-scalar node %{bad[0]}")
        if not nodes:
            return self.builder.const_array(np.zeros(x.shape), user_location())
        loc = user_location()
        rows = [self.builder.add(Op.RESHAPE, (n,), (("shape", (1,)),), loc) for n in nodes]
        flat = rows[0] if len(rows) == 1 else self.builder.add(
            Op.CONCATENATE, tuple(rows), (("axis", 0),), loc)
        if x.ndim == 1:
            return flat
        return self.builder.add(Op.RESHAPE, (flat,), (("shape", tuple(x.shape)),), loc)

    def record(self, op: Op, operands: Iterable[Any], **attrs: Any) -> "Value | Tensor":
        """Record ``op(operands)``: a Value when every operand is scalar and no Tensor, else a Tensor."""
        operands = list(operands)
        args = tuple(self.node_of(x, op.value) for x in operands)
        node = self.builder.add(op, args, tuple(sorted(attrs.items())), user_location())
        if self.builder.eqns[node].shape or any(isinstance(x, Tensor) for x in operands):
            return Tensor(self, node)
        return Value(self, node)


def _holds_values(xs: Any) -> bool:
    return any(isinstance(x, Value) or (isinstance(x, (list, tuple)) and _holds_values(x))
               or (isinstance(x, np.ndarray) and x.dtype == object) for x in xs)


def _trace_of(*xs: Any) -> Trace:
    for x in xs:
        if isinstance(x, (Value, Tensor)):
            return x.trace
    return Trace.current("an operation on plain numbers")


def _record(op: Op, *operands: Any, **attrs: Any) -> "Value | Tensor":
    return _trace_of(*operands).record(op, operands, **attrs)


def _binary(op: Op, a: Any, b: Any) -> "Value":
    # an array operand is numpy's business (it applies the op elementwise, object dtype); a
    # Tensor operand is the Tensor's (its reflected method records one array node)
    if isinstance(a, (np.ndarray, Tensor)) or isinstance(b, (np.ndarray, Tensor)):
        return NotImplemented
    return _record(op, a, b)


def _no_truth_value(self) -> bool:
    raise TraceError(f"data-dependent control flow at {user_location()}: the truth value of "
                     f"traced %{self.node} ({self.trace.builder.eqns[self.node].op.value}) is "
                     "unknown while tracing; use select(cond, a, b) instead of if/else")


def _no_conversion(self, *args: Any) -> Any:
    op = self.trace.builder.eqns[self.node].op.value
    raise TraceError(f"conversion of traced %{self.node} ({op}) to a Python number at "
                     f"{user_location()}: its value is unknown while "
                     "tracing; use circuitsketch functions (v.exp(), v.log(), ...) instead of "
                     "math.*, float() or int()")


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
        if isinstance(exponent, (Value, Tensor)):  # a traced exponent: a**b = exp(b log a)
            return (exponent * self.log()).exp()
        if not isinstance(exponent, _NUMBER):
            raise TraceError(f"** at {user_location()}: exponent must be a number or a Value")
        return _record(Op.POW, self, p=float(exponent))

    def __rpow__(self, base: Any) -> "Value":
        return (self * _trace_of(self).record(Op.LOG, [base])).exp()

    __bool__ = _no_truth_value
    __float__ = __int__ = __index__ = __complex__ = _no_conversion
    __hash__ = object.__hash__


# ---------------------------------------------------------------- the array tracer

def _axis(axis: Any, ndim: int, what: str) -> int:
    if not isinstance(axis, (int, np.integer)) or isinstance(axis, (bool, np.bool_)):
        raise _trace_error(what, f"axis must be an int, got {type(axis).__name__}")
    if not -ndim <= axis < ndim:
        raise _shape_error(what, f"axis {int(axis)} is out of range for a tensor of rank {ndim}")
    return int(axis) % ndim


def _axes(axis: Any, ndim: int, what: str) -> tuple[int, ...]:
    """Normalised, sorted axes: None is every axis, an int one axis, a tuple several."""
    if axis is None:
        return tuple(range(ndim))
    axes = [_axis(a, ndim, what) for a in (axis if isinstance(axis, (tuple, list)) else (axis,))]
    if len(set(axes)) != len(axes):
        raise _shape_error(what, f"axis {axis} repeats an axis")
    return tuple(sorted(axes))


def _shape_arg(args: tuple, what: str) -> tuple:
    """``f(2, 3)`` or ``f((2, 3))`` -> (2, 3)."""
    shape = tuple(args[0]) if len(args) == 1 and isinstance(args[0], (tuple, list)) else args
    if not all(isinstance(d, (int, np.integer)) and not isinstance(d, bool) for d in shape):
        raise _trace_error(what, f"sizes must be ints, got {shape!r}")
    return tuple(int(d) for d in shape)


def _tensor(trace: Trace, x: Any, what: str) -> "Tensor":
    return x if isinstance(x, Tensor) else Tensor(trace, trace.node_of(x, what))


class Tensor:
    """A traced real array. Operations follow numpy and record one node per array operation.

    ``shape``, ``ndim`` and ``size`` are known while tracing; the values are not, so ``if t:``,
    ``float(t)`` and ``np.asarray(t)`` raise :class:`TraceError`.
    """

    __slots__ = ("trace", "node")

    def __init__(self, trace: Trace, node: int) -> None:
        self.trace = trace
        self.node = node

    @property
    def shape(self) -> Shape:
        return self.trace.builder.eqns[self.node].shape

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return prod(self.shape)

    def __repr__(self) -> str:
        return f"Tensor(%{self.node}, shape={self.shape})"

    def _op(self, op: Op, *operands: Any, **attrs: Any) -> "Tensor":
        return self.trace.record(op, operands, **attrs)

    __add__ = lambda self, other: self._op(Op.ADD, self, other)
    __radd__ = lambda self, other: self._op(Op.ADD, other, self)
    __sub__ = lambda self, other: self._op(Op.SUB, self, other)
    __rsub__ = lambda self, other: self._op(Op.SUB, other, self)
    __mul__ = lambda self, other: self._op(Op.MUL, self, other)
    __rmul__ = lambda self, other: self._op(Op.MUL, other, self)
    __truediv__ = lambda self, other: self._op(Op.DIV, self, other)
    __rtruediv__ = lambda self, other: self._op(Op.DIV, other, self)
    __neg__ = lambda self: self._op(Op.NEG, self)
    __pos__ = lambda self: self
    __lt__ = lambda self, other: self._op(Op.LT, self, other)
    __le__ = lambda self, other: self._op(Op.LE, self, other)
    __gt__ = lambda self, other: self._op(Op.GT, self, other)
    __ge__ = lambda self, other: self._op(Op.GE, self, other)
    __matmul__ = lambda self, other: _matmul(self, _tensor(self.trace, other, "@"))
    __rmatmul__ = lambda self, other: _matmul(_tensor(self.trace, other, "@"), self)
    exp = lambda self: self._op(Op.EXP, self)
    log = lambda self: self._op(Op.LOG, self)
    sqrt = lambda self: self._op(Op.SQRT, self)
    tanh = lambda self: self._op(Op.TANH, self)
    erf = lambda self: self._op(Op.ERF, self)
    gelu = lambda self: self._op(Op.GELU, self)
    relu = lambda self: self._op(Op.RELU, self)

    def __pow__(self, exponent: Any) -> "Tensor":
        if isinstance(exponent, (Value, Tensor)):  # a traced exponent: a**b = exp(b log a)
            return (exponent * self.log()).exp()
        if not isinstance(exponent, _NUMBER):
            raise TraceError(f"** at {user_location()}: exponent must be a number, a Value or a Tensor")
        return self._op(Op.POW, self, p=float(exponent))

    def __rpow__(self, base: Any) -> "Tensor":
        return (self * self.trace.record(Op.LOG, [base])).exp()

    __bool__ = _no_truth_value
    __float__ = __int__ = __index__ = __complex__ = _no_conversion
    __hash__ = object.__hash__

    def __array__(self, *args: Any, **kwargs: Any) -> np.ndarray:
        raise TraceError(f"conversion of traced %{self.node} to a numpy array at {user_location()}: "
                         "its values are unknown while tracing; use Tensor operations instead")

    def __array_ufunc__(self, ufunc: Any, method: str, *operands: Any, **kwargs: Any) -> Any:
        """numpy ufuncs on a Tensor (``np.exp(t)``, ``array + t``) record the same nodes as the
        Tensor's own operations; anything else is not supported."""
        if method != "__call__" or kwargs:
            return NotImplemented
        if ufunc in _UFUNC_OPS:
            return self.trace.record(_UFUNC_OPS[ufunc], operands)
        if ufunc is np.matmul:
            a, b = (_tensor(self.trace, x, "@") for x in operands)
            return _matmul(a, b)
        if ufunc is np.power:
            base, exponent = operands
            return base.__pow__(exponent) if base is self else self.__rpow__(base)
        return NotImplemented

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError("len() of a 0-d Tensor")
        return self.shape[0]

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def __getitem__(self, key: Any) -> "Tensor":
        return _getitem(self, key)

    # ------------------------------------------------------------ reductions

    def sum(self, axis: Any = None, keepdims: bool = False) -> "Tensor":
        """Sum over ``axis`` (None: every axis) as one ``reduce_sum`` node."""
        return self._reduce(Op.REDUCE_SUM, axis, keepdims, "sum")

    def max(self, axis: Any = None, keepdims: bool = False) -> "Tensor":
        """Largest element over ``axis`` as one ``reduce_max`` node."""
        axes = _axes(axis, self.ndim, "max")
        if any(self.shape[a] == 0 for a in axes):
            raise _shape_error("max", f"max over an empty axis of shape {self.shape}")
        return self._reduce(Op.REDUCE_MAX, axis, keepdims, "max")

    def mean(self, axis: Any = None, keepdims: bool = False) -> "Tensor":
        """The sum over ``axis`` divided by the number of elements summed."""
        count = prod(self.shape[a] for a in _axes(axis, self.ndim, "mean"))
        if count == 0:
            raise _shape_error("mean", f"mean over an empty axis of shape {self.shape}")
        return self.sum(axis, keepdims) / float(count)

    def _reduce(self, op: Op, axis: Any, keepdims: bool, what: str) -> "Tensor":
        axes = _axes(axis, self.ndim, what)
        if not axes:
            return self
        out = self._op(op, self, axes=axes)
        if keepdims:
            out = out.reshape(tuple(1 if i in axes else d for i, d in enumerate(self.shape)))
        return out

    # ------------------------------------------------------------ structure

    @property
    def T(self) -> "Tensor":
        """The axes reversed (numpy's ``.T``)."""
        return self.transpose()

    def transpose(self, *perm: Any) -> "Tensor":
        """Axes permuted by ``perm`` (default: reversed), one ``transpose`` node."""
        if not perm or perm == (None,):
            perm = tuple(reversed(range(self.ndim)))
        perm = tuple(_axis(a, self.ndim, "transpose") for a in _shape_arg(perm, "transpose"))
        if sorted(perm) != list(range(self.ndim)):
            raise _shape_error("transpose", f"{perm} is not a permutation of the {self.ndim} axes "
                               f"of {self.shape}")
        return self if perm == tuple(range(self.ndim)) else self._op(Op.TRANSPOSE, self, perm=perm)

    def reshape(self, *shape: Any) -> "Tensor":
        """The same elements in row-major order under a new shape (one size may be -1)."""
        shape = _shape_arg(shape, "reshape")
        if shape.count(-1) > 1 or any(d < -1 for d in shape):
            raise _shape_error("reshape", f"bad target shape {shape}")
        if -1 in shape:
            known = prod(d for d in shape if d != -1)
            if known == 0 or self.size % known:
                raise _shape_error("reshape", f"cannot reshape {self.shape} to {shape}")
            shape = tuple(self.size // known if d == -1 else d for d in shape)
        if prod(shape) != self.size:
            raise _shape_error("reshape", f"cannot reshape {self.shape} ({self.size} elements) to {shape}")
        return self if shape == self.shape else self._op(Op.RESHAPE, self, shape=shape)

    def broadcast_to(self, *shape: Any) -> "Tensor":
        """numpy's ``broadcast_to`` as one ``broadcast`` node."""
        shape = _shape_arg(shape, "broadcast_to")
        return self if shape == self.shape else self._op(Op.BROADCAST, self, shape=shape)

    def ravel(self) -> "Tensor":
        return self.reshape(-1)


_UFUNC_OPS = {np.add: Op.ADD, np.subtract: Op.SUB, np.multiply: Op.MUL, np.true_divide: Op.DIV,
              np.negative: Op.NEG, np.exp: Op.EXP, np.log: Op.LOG, np.sqrt: Op.SQRT,
              np.tanh: Op.TANH, np.maximum: Op.MAX, np.less: Op.LT, np.less_equal: Op.LE,
              np.greater: Op.GT, np.greater_equal: Op.GE}


# ---------------------------------------------------------------- @ and contractions

def _matmul(a: Tensor, b: Tensor) -> Tensor:
    """numpy's matmul as one dot_general (batch axes broadcast first), transposed if needed."""
    if not a.ndim or not b.ndim:
        raise _shape_error("@", f"matmul needs operands of rank >= 1, got {a.shape} and {b.shape}")
    ca, cb = a.ndim - 1, max(b.ndim - 2, 0)
    if a.shape[ca] != b.shape[cb]:
        raise _shape_error("@", f"shapes {a.shape} and {b.shape} do not match: axis {ca} of the "
                           f"left (size {a.shape[ca]}) against axis {cb} of the right (size {b.shape[cb]})")
    batch_a, batch_b = a.shape[:-2], b.shape[:-2]
    if batch_a and batch_b:
        try:
            batch = broadcast_shapes(batch_a, batch_b)
        except ShapeError as exc:
            raise _shape_error("@", f"batch axes of {a.shape} and {b.shape}: {exc}") from None
        a, b = a.broadcast_to(batch + a.shape[-2:]), b.broadcast_to(batch + b.shape[-2:])
        axes = tuple(range(len(batch)))
        return dot_general(a, b, contract=((a.ndim - 1,), (b.ndim - 2,)), batch=(axes, axes))
    out = dot_general(a, b, contract=((ca,), (cb,)))
    if batch_b and a.ndim == 2:  # (m, batch..., n) -> (batch..., m, n)
        nb = len(batch_b)
        out = out.transpose((*range(1, nb + 1), 0, nb + 1))
    return out


def dot_general(a: Any, b: Any, contract: Any, batch: Any = ((), ())) -> Tensor:
    """jax.lax.dot_general: ``contract = (lhs axes, rhs axes)`` are summed over, ``batch`` pairs
    axes that are kept; result axes are batch, then lhs free, then rhs free."""
    trace = _trace_of(a, b)
    a, b = _tensor(trace, a, "dot_general"), _tensor(trace, b, "dot_general")
    dims = {}
    for key, value in (("contract", contract), ("batch", batch)):
        if not (isinstance(value, (tuple, list)) and len(value) == 2):
            raise _trace_error("dot_general", f"{key} must be a pair (lhs axes, rhs axes), got {value!r}")
        dims[key] = (tuple(_axis(x, a.ndim, "dot_general") for x in value[0]),
                     tuple(_axis(x, b.ndim, "dot_general") for x in value[1]))
    return trace.record(Op.DOT_GENERAL, (a, b), **dims)


def _einsum_spec(spec: str, ndims: tuple[int, int]) -> tuple[str, str, str]:
    spec = spec.replace(" ", "")
    if "." in spec:
        raise _trace_error("einsum", "'...' is not supported; name every axis")
    inputs, arrow, out = spec.partition("->")
    terms = inputs.split(",")
    if len(terms) != 2:
        raise _trace_error("einsum", f"{spec!r} must name exactly two operands")
    if not all(t.isalpha() for t in terms) or (arrow and out and not out.isalpha()):
        raise _trace_error("einsum", f"{spec!r}: axes are named by letters")
    for term, ndim in zip(terms, ndims):
        if len(term) != ndim or len(set(term)) != ndim:
            raise _shape_error("einsum", f"{term!r} must name each of the {ndim} axes of its "
                               "operand once (repeated letters are not supported)")
    a, b = terms
    if not arrow:
        out = "".join(sorted(c for c in a + b if (a + b).count(c) == 1))
    if len(set(out)) != len(out) or any(c not in a + b for c in out):
        raise _trace_error("einsum", f"output {out!r} must name axes of the operands, each once")
    return a, b, out


def einsum(spec: str, *operands: Any) -> Tensor:
    """``np.einsum`` for two operands: one dot_general (axes only one side sums over are
    summed first), then one transpose into the output order."""
    if len(operands) != 2:
        raise _trace_error("einsum", f"takes exactly two operands, got {len(operands)}")
    trace = _trace_of(*operands)
    a, b = (_tensor(trace, x, "einsum") for x in operands)
    sa, sb, out = _einsum_spec(spec, (a.ndim, b.ndim))
    for c in (c for c in sa if c in sb):
        if a.shape[sa.index(c)] != b.shape[sb.index(c)]:
            raise _shape_error("einsum", f"axis {c!r} has size {a.shape[sa.index(c)]} in the first "
                               f"operand and {b.shape[sb.index(c)]} in the second")
    a, sa = _sum_unused(a, sa, sb + out)
    b, sb = _sum_unused(b, sb, sa + out)
    batch = [c for c in sa if c in sb and c in out]
    contract = [c for c in sa if c in sb and c not in out]
    result = dot_general(a, b, contract=(tuple(sa.index(c) for c in contract),
                                         tuple(sb.index(c) for c in contract)),
                         batch=(tuple(sa.index(c) for c in batch), tuple(sb.index(c) for c in batch)))
    letters = batch + [c for c in sa if c not in sb] + [c for c in sb if c not in sa]
    return result.transpose(tuple(letters.index(c) for c in out))


def _sum_unused(x: Tensor, letters: str, elsewhere: str) -> tuple[Tensor, str]:
    unused = tuple(i for i, c in enumerate(letters) if c not in elsewhere)
    return x.sum(axis=unused), "".join(c for c in letters if c in elsewhere)


# ---------------------------------------------------------------- joining and gathering

def concatenate(seq: Any, axis: int = 0) -> Tensor:
    """numpy's concatenate of Tensors (Values, numbers, arrays mix in) as one node."""
    seq = list(seq)
    if not seq:
        raise _trace_error("concatenate", "needs at least one array")
    trace = _trace_of(*seq)
    parts = [_tensor(trace, x, "concatenate") for x in seq]
    if any(not p.ndim for p in parts):
        raise _shape_error("concatenate", "0-d arrays cannot be concatenated (use stack)")
    axis = _axis(axis, parts[0].ndim, "concatenate")
    return parts[0] if len(parts) == 1 else trace.record(Op.CONCATENATE, parts, axis=axis)


def stack(seq: Any, axis: int = 0) -> Tensor:
    """numpy's stack: the arrays joined along a new ``axis``."""
    seq = list(seq)
    if not seq:
        raise _trace_error("stack", "needs at least one array")
    trace = _trace_of(*seq)
    parts = [_tensor(trace, x, "stack") for x in seq]
    axis = _axis(axis, parts[0].ndim + 1, "stack")
    return concatenate([p.reshape(p.shape[:axis] + (1,) + p.shape[axis:]) for p in parts], axis)


def take(a: Any, indices: Any, axis: int | None = None) -> Tensor:
    """numpy's take: ``a`` indexed along ``axis`` (None: the flattened ``a``) by integer
    ``indices`` (constants, or a Tensor/Value of integer values such as per-step tokens)."""
    trace = _trace_of(a, indices)
    a = _tensor(trace, a, "take")
    if axis is None:
        a, axis = a.reshape(-1), 0
    axis = _axis(axis, a.ndim, "take")
    return trace.record(Op.TAKE, (a, _index_node(trace, indices, a.shape[axis], "take")), axis=axis)


def _index_node(trace: Trace, indices: Any, size: int, what: str) -> Tensor:
    """Integer indices into an axis of ``size`` as a node: constants are checked and their
    negative values normalised; traced indices are data whose values are checked at run time."""
    if isinstance(indices, (Value, Tensor)):
        eqn = trace.builder.eqns[trace.node_of(indices, what)]
        if eqn.op is not Op.CONST:
            return indices
        indices = np.asarray(eqn.attr("value")).reshape(eqn.shape)
    array = np.asarray(indices)
    if array.dtype.kind == "b":
        raise _trace_error(what, "boolean masks are not supported (their result shape depends on "
                           "the data); use where(mask, a, b)")
    if array.dtype.kind not in "iuf" or (array.dtype.kind == "f" and not np.all(array == np.round(array))):
        raise _trace_error(what, f"indices must be integers, got {array.dtype} values {array.ravel()[:4]}")
    bad = array[(array < -size) | (array >= size)]
    if bad.size:
        raise _shape_error(what, f"index {int(bad.ravel()[0])} is out of bounds for an axis of size {size}")
    return Tensor(trace, trace.builder.const_array(np.where(array < 0, array + size, array),
                                                    user_location()))


# ---------------------------------------------------------------- indexing

def _index_kind(k: Any) -> str:
    if k is None:
        return "new"
    if k is Ellipsis:
        return "ellipsis"
    if isinstance(k, slice):
        return "slice"
    if isinstance(k, (bool, np.bool_)):
        raise _trace_error("indexing", "boolean indices are not supported")
    if isinstance(k, (int, np.integer)):
        return "int"
    if isinstance(k, (Value, Tensor, list, np.ndarray)):
        return "array"
    raise _trace_error("indexing", f"cannot index by a {type(k).__name__}")


def _expand_key(x: Tensor, key: Any) -> list[tuple[str, Any]]:
    """The key as (kind, item) per position, Ellipsis and missing trailing axes as full slices."""
    items = [(_index_kind(k), k) for k in (key if isinstance(key, tuple) else (key,))]
    kinds = [kind for kind, _ in items]
    used = sum(kind in ("int", "slice", "array") for kind in kinds)
    if used > x.ndim:
        raise _shape_error("indexing", f"too many indices ({used}) for a tensor of shape {x.shape}")
    if kinds.count("ellipsis") > 1:
        raise _trace_error("indexing", "an index can only have a single ellipsis")
    if kinds.count("array") > 1:
        raise _trace_error("indexing", "only one integer-array index per indexing (index in steps)")
    fill = [("slice", slice(None))] * (x.ndim - used)
    if "ellipsis" in kinds:
        at = kinds.index("ellipsis")
        return items[:at] + fill + items[at + 1:]
    return items + fill


def _check_advanced_adjacent(items: list[tuple[str, Any]]) -> None:
    # numpy moves the indexed axes to the front when an array index and int indices are apart
    positions = [i for i, (kind, _) in enumerate(items) if kind in ("int", "array")]
    if any(kind == "array" for kind, _ in items) and positions[-1] - positions[0] + 1 != len(positions):
        raise _trace_error("indexing", "an integer-array index and int indices separated by slices "
                           "reorder axes in numpy; index in two steps")


def _slice_bounds(k: slice, size: int) -> tuple[int, int, int]:
    """(start, stop, step) of a slice with step >= 1 on an axis of ``size``, with
    0 <= start <= stop <= size (negative and missing bounds resolved as numpy does)."""
    if not all(b is None or isinstance(b, (int, np.integer, Value, Tensor))
               for b in (k.start, k.stop, k.step)):
        raise _trace_error("indexing", f"slice bounds must be ints or None, got {k}")
    if k.step is not None and (isinstance(k.step, (Value, Tensor)) or k.step < 1):
        raise _trace_error("indexing", f"slice step {k.step!r} is not supported (steps >= 1 only)")
    start, stop, step = k.indices(size)  # a traced bound raises TraceError through __index__
    return start, max(start, stop), step


def _getitem(x: Tensor, key: Any) -> Tensor:
    """Basic indexing as slice + reshape; one integer-array index as a take along its axis."""
    items = _expand_key(x, key)
    _check_advanced_adjacent(items)
    start, stop, step = [0] * x.ndim, list(x.shape), [1] * x.ndim
    layout: list[tuple[str, int]] = []  # the result's axes: ("new"|"keep"|"take", source axis)
    gather = None
    axis = 0
    for kind, k in items:
        if kind == "new":
            layout.append(("new", -1))
            continue
        d = x.shape[axis]
        if kind == "int":
            if not -d <= k < d:
                raise _shape_error("indexing", f"index {int(k)} is out of bounds for axis {axis} with size {d}")
            start[axis], stop[axis] = int(k) % d, int(k) % d + 1
        elif kind == "slice":
            start[axis], stop[axis], step[axis] = _slice_bounds(k, d)
            layout.append(("keep", axis))
        else:
            gather = (axis, k)
            layout.append(("take", axis))
        axis += 1
    if (start, stop, step) != ([0] * x.ndim, list(x.shape), [1] * x.ndim):
        x = x._op(Op.SLICE, x, start=tuple(start), stop=tuple(stop), step=tuple(step))
    sizes = list(x.shape)
    index_shape: Shape = ()
    if gather is not None:
        x = take(x, gather[1], gather[0])
        index_shape = x.shape[gather[0]: gather[0] + x.ndim - len(sizes) + 1]
    target: list[int] = []
    for kind, a in layout:
        target.extend((1,) if kind == "new" else (sizes[a],) if kind == "keep" else index_shape)
    return x.reshape(tuple(target))

# ---------------------------------------------------------------- functions over values

def stop_gradient(x: Any) -> Value | Tensor:
    """``x`` itself, treated as a constant by every derivative (grad and Taylor)."""
    return _record(Op.STOP_GRADIENT, x)


def select(cond: Any, if_true: Any, if_false: Any) -> Value | Tensor:
    """``if_true`` where ``cond != 0`` else ``if_false`` (broadcasting): traceable if/else."""
    return _record(Op.SELECT, cond, if_true, if_false)


#: numpy's name for :func:`select`
where = select


def maximum(a: Any, b: Any) -> Value | Tensor:
    """The elementwise larger of ``a`` and ``b`` (broadcasting)."""
    return _record(Op.MAX, a, b)


def eq(a: Any, b: Any) -> Value | Tensor:
    """1.0 where a == b else 0.0 (``==`` on Values keeps Python's identity meaning)."""
    return _record(Op.EQ, a, b)


def _unary(op: Op, doc: str) -> Callable[[Any], Value | Tensor]:
    def function(x: Any) -> Value | Tensor:
        return _record(op, x)
    function.__name__, function.__doc__ = op.value, doc
    return function


exp = _unary(Op.EXP, "e**x elementwise.")
log = _unary(Op.LOG, "Natural logarithm elementwise.")
sqrt = _unary(Op.SQRT, "Square root elementwise.")
tanh = _unary(Op.TANH, "Hyperbolic tangent elementwise.")
erf = _unary(Op.ERF, "The error function elementwise.")
gelu = _unary(Op.GELU, "x * Phi(x) elementwise (exact, erf-based GELU).")
relu = _unary(Op.RELU, "max(x, 0) elementwise.")


def rsqrt(x: Any) -> Value | Tensor:
    """1 / sqrt(x) elementwise, as one ``pow`` node with p = -0.5."""
    return _record(Op.POW, x, p=-0.5)


def _flat(xs: Any) -> list:
    return list(np.asarray(xs, dtype=object).ravel()) if not isinstance(xs, list) else [
        y for x in xs for y in (_flat(x) if isinstance(x, (list, np.ndarray)) else [x])]


def vsum(xs: Any) -> Value | Tensor:
    """Sum of all elements as one n-ary node (one ``reduce_sum`` for a Tensor)."""
    if isinstance(xs, Tensor):
        return xs.sum()
    flat = _flat(xs)
    if not flat:
        raise TraceError(f"vsum at {user_location()}: sum of an empty sequence")
    return _record(Op.SUM, *flat)


def dot(a: Any, b: Any) -> Value | Tensor:
    """sum_i a_i * b_i as one fused node (``(a * b).sum()`` when either is a Tensor)."""
    if isinstance(a, Tensor) or isinstance(b, Tensor):
        return (a * b).sum()
    a, b = _flat(a), _flat(b)
    if len(a) != len(b) or not a:
        raise TraceError(f"dot at {user_location()}: lengths {len(a)} and {len(b)} "
                         "must be equal and non-zero")
    return _record(Op.DOT, *a, *b)


def matvec(w: Any, x: Any) -> list[Value] | Tensor:
    """[dot(row, x) for row in w]: a linear layer with w of shape [out, in] (``w @ x`` for Tensors)."""
    if isinstance(w, Tensor) or isinstance(x, Tensor):
        return w @ x
    return [dot(row, x) for row in np.asarray(w, dtype=object)]


def vmax(xs: Any) -> Value | Tensor:
    """The largest element, as a chain of binary max nodes (one ``reduce_max`` for a Tensor)."""
    if isinstance(xs, Tensor):
        return xs.max()
    flat = _flat(xs)
    if not flat:
        raise TraceError(f"vmax at {user_location()}: max of an empty sequence")
    result = flat[0]
    for x in flat[1:]:
        result = maximum(result, x)
    return result


# ---------------------------------------------------------------- gradients

def _grad_leaves(trace: Trace, wrt: Any, nodes: list[int]) -> Callable[[Iterable[int]], Any]:
    """Append the nodes of every leaf of ``wrt`` to ``nodes``; returns the function that builds
    the same structure from an iterator over their gradient nodes."""
    if isinstance(wrt, Mapping):
        builders = {key: _grad_leaves(trace, value, nodes) for key, value in wrt.items()}
        return lambda grads: {key: build(grads) for key, build in builders.items()}
    if isinstance(wrt, (list, tuple)) and _is_structure(wrt):
        builders = [_grad_leaves(trace, value, nodes) for value in wrt]
        return lambda grads: type(wrt)(build(grads) for build in builders)
    if isinstance(wrt, Tensor):
        nodes.append(trace.node_of(wrt, "grad"))
        return lambda grads: Tensor(trace, next(grads))
    array = np.asarray(wrt, dtype=object)  # a Value, or an array (or list) of Values
    elements = list(array.ravel())
    nodes.extend(trace.node_of(v, "grad") for v in elements)

    def build(grads: Iterable[int]) -> Any:
        out = np.empty(len(elements), dtype=object)
        out[:] = [type(v)(trace, next(grads)) if isinstance(v, Tensor) else Value(trace, next(grads))
                  for v in elements]
        return out.reshape(array.shape) if array.shape else out[0]
    return build


def _is_structure(xs: list | tuple) -> bool:
    # a list of Values is one array of gradients (as before Tensors existed); a list holding a
    # Tensor, an array or a dict is a structure of leaves
    return any(isinstance(x, (Tensor, np.ndarray, Mapping, list, tuple)) for x in xs)


def grad(output: Value | Tensor, wrt: Any) -> Any:
    """Gradient of the scalar ``output`` with respect to ``wrt``, in the same structure.

    ``wrt`` is a Tensor, a Value, an array (or list) of Values, or a dict/list/tuple of those.
    The backward pass is recorded into the current circuit (reverse mode, ``passes.grad``), so
    a traced training step contains its own gradient computation.
    """
    if not isinstance(output, (Value, Tensor)):
        raise TraceError(f"grad at {user_location()}: the output must be a traced Value, got a "
                         f"{type(output).__name__}")
    if isinstance(output, Tensor) and output.ndim:
        raise _shape_error("grad", f"the output must be 0-d, got shape {output.shape}")
    trace = output.trace
    nodes: list[int] = []
    build = _grad_leaves(trace, wrt, nodes)
    return build(iter(backprop(trace.builder, trace.node_of(output, "grad"), nodes)))


# ---------------------------------------------------------------- tracing entry points

def _object_array(x: Any) -> np.ndarray:
    """A (nested) list of Values, numbers or 0-d Tensors as an object array (numpy would try
    to convert a Tensor element itself)."""
    if isinstance(x, np.ndarray):
        return x.astype(object)
    if isinstance(x, (list, tuple)):
        parts = [_object_array(y) for y in x]
        if len({p.shape for p in parts}) > 1:
            raise _shape_error("output", "a list of arrays of different shapes")
        out = np.empty((len(parts),) + (parts[0].shape if parts else ()), dtype=object)
        for i, part in enumerate(parts):
            out[i] = part
        return out
    out = np.empty(1, dtype=object)
    out[0] = x
    return out.reshape(())


def _record_outputs(trace: Trace, result: Any) -> None:
    if not isinstance(result, Mapping):
        result = {"out": result}
    for name, value in result.items():
        if isinstance(value, Tensor):
            trace.builder.output(name, [trace.node_of(value, f"output {name!r}")], value.shape)
            continue
        array = _object_array(value)
        nodes = [trace.node_of(v, f"output {name!r}") for v in array.ravel()]
        trace.builder.output(name, nodes, array.shape)


def _inputs(t: Trace, shapes: Mapping[str, Shape], kind: str) -> dict[str, Any]:
    if kind not in ("values", "tensors"):
        raise ValueError(f"inputs must be 'values' or 'tensors', got {kind!r}")
    make = t.input_array if kind == "values" else t.input_tensor
    for name, shape in shapes.items():
        if not isinstance(shape, (tuple, list)):
            raise ShapeError(f"input {name!r}: shape {shape!r} must be a tuple of dimensions "
                             "(() for a scalar)")
    return {name: make(name, tuple(shape)) for name, shape in shapes.items()}


def trace(fn: Callable[..., Any], /, *, inputs: str = "values", **input_shapes: Shape) -> Circuit:
    """Trace ``fn(**inputs)`` into a circuit. ``input_shapes`` maps each argument to a shape
    (``()`` for a scalar); with ``inputs="values"`` each argument is an object array of Values,
    with ``inputs="tensors"`` one Tensor. ``fn`` returns a Tensor, a Value, an array of Values,
    or a dict of them."""
    with Trace() as t:
        _record_outputs(t, fn(**_inputs(t, input_shapes, inputs)))
    return verify(t.builder.build())


def trace_program(step: Callable[..., Mapping[str, Any]], /, *, n_steps: int,
                  state: Mapping[str, Shape], per_step: Mapping[str, Shape] | None = None,
                  static: Mapping[str, Shape] | None = None, weight: str | None = None,
                  examples_per_step: int = 1, inputs: str = "values") -> Program:
    """Trace one training step into a :class:`Program` that loops ``n_steps`` times.

    ``step(**inputs)`` receives the carried ``state``, the ``per_step`` data slice, the
    ``static`` inputs and, if ``weight`` is given, the down-weights of this step's examples as
    an array of shape ``[examples_per_step]`` under that name (as Values or, with
    ``inputs="tensors"``, Tensors); it returns a dict holding the new value of every state
    entry (extra entries become extra outputs).
    """
    for what, value, least in (("n_steps", n_steps, 0),
                               ("examples_per_step", examples_per_step, 1)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < least:
            raise ValueError(f"trace_program: {what} must be an integer >= {least}, got {value!r}")
    per_step, static = dict(per_step or {}), dict(static or {})
    shapes: dict[str, Shape] = {**state, **per_step, **static}
    if weight is not None:
        if weight in shapes:
            raise ValueError(f"weight name {weight!r} clashes with another input")
        shapes[weight] = (examples_per_step,)
    with Trace() as t:
        result = step(**_inputs(t, shapes, inputs))
        if not isinstance(result, Mapping):
            raise TraceError("a traced training step must return a dict of new state values")
        missing = [name for name in state if name not in result]
        if missing:
            raise TraceError(f"the step did not return new values for state {missing}")
        _record_outputs(t, result)
    program = Program(t.builder.build(), n_steps, tuple(state), tuple(per_step), weight)
    return verify_program(program)
