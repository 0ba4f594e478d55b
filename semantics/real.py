"""The real meaning of every op: ``REAL_IMPL``, one entry per op, numpy float64.

Layout: a value of shape S is an array ``[*lead, *S]``. A real value has one leading axis (the
batch ``B`` of retrainings or directions; ``B`` may be 1 and broadcasts); the Taylor rules
(``semantics/series.py``) reuse the structural entries on series values, which lead with
``[k+1, B]``. Elementwise entries receive operands already aligned to the result's rank
(:func:`align`), so numpy broadcasting between them is the IR's broadcasting. An entry is
``impl(eqn, *operands, lead=1)`` and raises :class:`DomainError` outside its op's domain.

Index operands (take, scatter_add) hold integer values stored as floats; a non-integer or
out-of-range index is a DomainError, never a silent wrap-around.
"""

from __future__ import annotations

import math
import string
from typing import Callable

import numpy as np

from ..ir.circuit import Eqn
from ..ir.ops import ELEMENTWISE_OPS, Op
from .errors import DomainError

#: floating-point exceptions during evaluation: overflow and invalid results are errors, underflow
#: to zero is not (constant folding uses the same setting, so it never disagrees with execution)
FLOAT_ERRORS = dict(divide="raise", invalid="raise", over="raise", under="ignore")

_erf = np.frompyfunc(math.erf, 1, 1)
_erfc = np.frompyfunc(math.erfc, 1, 1)


def erf(a: np.ndarray) -> np.ndarray:
    """math.erf elementwise on a real array."""
    return _erf(np.asarray(a, dtype=np.float64)).astype(np.float64)


def std_normal_cdf(a: np.ndarray) -> np.ndarray:
    """Phi(a) = (1 + erf(a / sqrt 2)) / 2 = erfc(-a / sqrt 2) / 2, elementwise on a real array
    (the erfc form keeps full relative accuracy in the lower tail)."""
    return 0.5 * _erfc(-np.asarray(a, dtype=np.float64) / math.sqrt(2.0)).astype(np.float64)


def align(value: np.ndarray, shape: tuple[int, ...], rank: int) -> np.ndarray:
    """``value`` ([*lead, *shape]) with singleton axes inserted after the lead so its element
    part has ``rank`` axes: numpy broadcasting then matches the IR's trailing-axis rule."""
    missing = rank - len(shape)
    if missing <= 0:
        return value
    lead = value.ndim - len(shape)
    return value.reshape(value.shape[:lead] + (1,) * missing + value.shape[lead:])


# ---------------------------------------------------------------- elementwise

def _div(eqn: Eqn, a, b):
    if np.any(b == 0):
        raise DomainError("division by zero")
    return a / b


def _pow(eqn: Eqn, a):
    p = eqn.attr("p")
    if float(p).is_integer():
        if p < 0 and np.any(a == 0):
            raise DomainError(f"zero raised to the negative power {p}")
        return a ** int(p)
    if np.any(a < 0) or (p < 0 and np.any(a == 0)):
        raise DomainError(f"non-positive base raised to the non-integer power {p}")
    return a ** p


def _log(eqn: Eqn, a):
    if np.any(a <= 0):
        raise DomainError("log of a non-positive value")
    return np.log(a)


def _sqrt(eqn: Eqn, a):
    if np.any(a < 0):
        raise DomainError("sqrt of a negative value")
    return np.sqrt(a)


def _dot(eqn: Eqn, *args):
    half = len(args) // 2
    return sum(args[i] * args[half + i] for i in range(half))


def _const(eqn: Eqn):
    value = eqn.attr("value")
    if isinstance(value, tuple):
        return np.array(value, dtype=np.float64).reshape((1,) + tuple(eqn.attr("shape")))
    return np.array([value])


# ---------------------------------------------------------------- arrays

def _axes(eqn: Eqn, lead: int) -> tuple[int, ...]:
    return tuple(lead + a for a in eqn.attr("axes"))


def indices_of(index_value: np.ndarray, size: int) -> np.ndarray:
    """Integer indices from a real index operand, refusing non-integers and out-of-range ones."""
    as_int = np.rint(index_value)
    if not np.array_equal(as_int, index_value):
        raise DomainError("index operand holds a non-integer value")
    bad = (as_int < 0) | (as_int >= size)
    if np.any(bad):
        raise DomainError(f"index {int(as_int[bad].ravel()[0])} out of range for an axis of size {size}")
    return as_int.astype(np.int64)


def _take(eqn: Eqn, a, index_value, lead: int = 1):
    axis = lead + eqn.attr("axis")
    idx = indices_of(index_value, a.shape[axis])
    if idx.shape[0] == 1:  # one index array for the whole batch (per-step data, constants)
        return np.take(a, idx[0], axis=axis)
    batch_axis = lead - 1
    a = np.broadcast_to(a, a.shape[:batch_axis] + (max(a.shape[batch_axis], idx.shape[0]),)
                        + a.shape[batch_axis + 1:])
    parts = [np.take(np.take(a, b, axis=batch_axis), idx[min(b, idx.shape[0] - 1)], axis=axis - 1)
             for b in range(a.shape[batch_axis])]
    return np.stack(parts, axis=batch_axis)


def _scatter_add(eqn: Eqn, updates, index_value, lead: int = 1):
    axis, size = lead + eqn.attr("axis"), eqn.attr("size")
    idx = indices_of(index_value, size)
    rank_i = idx.ndim - 1
    out_shape = updates.shape[:axis] + (size,) + updates.shape[axis + rank_i:]
    if idx.shape[0] != 1:
        batch_axis = lead - 1
        width = max(updates.shape[batch_axis], idx.shape[0])
        updates = np.broadcast_to(updates, updates.shape[:batch_axis] + (width,)
                                  + updates.shape[batch_axis + 1:])
        out_shape = out_shape[:batch_axis] + (width,) + out_shape[batch_axis + 1:]
        out = np.zeros(out_shape, dtype=updates.dtype)
        for b in range(width):
            selector = (slice(None),) * batch_axis + (b,)
            inner = np.zeros(out_shape[:batch_axis] + out_shape[batch_axis + 1:], dtype=updates.dtype)
            np.add.at(inner, (slice(None),) * (axis - 1) + (idx[min(b, idx.shape[0] - 1)],),
                      updates[selector])
            out[selector] = inner
        return out
    out = np.zeros(out_shape, dtype=updates.dtype)
    np.add.at(out, (slice(None),) * axis + (idx[0],), updates)
    return out


def einsum_spec(eqn: Eqn, lhs_rank: int, rhs_rank: int) -> str:
    """The einsum subscripts of a dot_general, with ``...`` standing for the lead axes."""
    (lc, rc), (lb, rb) = eqn.attr("contract"), eqn.attr("batch")
    letters = iter(string.ascii_letters)
    lhs = [next(letters) for _ in range(lhs_rank)]
    rhs = [next(letters) for _ in range(rhs_rank)]
    for a, b in zip(lc + lb, rc + rb):
        rhs[b] = lhs[a]
    out = [lhs[a] for a in lb]
    out += [lhs[i] for i in range(lhs_rank) if i not in lc and i not in lb]
    out += [rhs[i] for i in range(rhs_rank) if i not in rc and i not in rb]
    return f"...{''.join(lhs)},...{''.join(rhs)}->...{''.join(out)}"


def _dot_general(eqn: Eqn, a, b, lead: int = 1, b_lead: int | None = None):
    """dot_general on values with any (broadcastable) lead axes (``b_lead`` defaults to ``lead``)."""
    b_lead = lead if b_lead is None else b_lead
    return np.einsum(einsum_spec(eqn, a.ndim - lead, b.ndim - b_lead), a, b)


def _broadcast(eqn: Eqn, a, lead: int = 1):
    shape = tuple(eqn.attr("shape"))
    element_rank = a.ndim - lead
    a = align(a, a.shape[lead:], len(shape)) if element_rank < len(shape) else a
    return np.broadcast_to(a, a.shape[:lead] + shape)


def _slice(eqn: Eqn, a, lead: int = 1):
    index = tuple(slice(s, e, st) for s, e, st in
                  zip(eqn.attr("start"), eqn.attr("stop"), eqn.attr("step")))
    return a[(slice(None),) * lead + index]


def _concatenate(eqn: Eqn, *args, lead: int = 1):
    width = tuple(max(a.shape[i] for a in args) for i in range(lead))
    args = [np.broadcast_to(a, width + a.shape[lead:]) for a in args]
    return np.concatenate(args, axis=lead + eqn.attr("axis"))


#: The meaning of every op on real values: fn(eqn, *operand_values) -> value (module doc).
REAL_IMPL: dict[Op, Callable] = {
    Op.CONST: _const,
    Op.ADD: lambda e, a, b: a + b,
    Op.SUB: lambda e, a, b: a - b,
    Op.NEG: lambda e, a: -a,
    Op.MUL: lambda e, a, b: a * b,
    Op.DIV: _div,
    Op.POW: _pow,
    Op.EXP: lambda e, a: np.exp(a),
    Op.LOG: _log,
    Op.SQRT: _sqrt,
    Op.TANH: lambda e, a: np.tanh(a),
    Op.ERF: lambda e, a: erf(a),
    Op.GELU: lambda e, a: a * std_normal_cdf(a),
    Op.RELU: lambda e, a: np.maximum(a, 0.0),
    Op.MAX: lambda e, a, b: np.maximum(a, b),
    Op.LT: lambda e, a, b: (a < b).astype(np.float64),
    Op.LE: lambda e, a, b: (a <= b).astype(np.float64),
    Op.GT: lambda e, a, b: (a > b).astype(np.float64),
    Op.GE: lambda e, a, b: (a >= b).astype(np.float64),
    Op.EQ: lambda e, a, b: (a == b).astype(np.float64),
    Op.SELECT: lambda e, c, a, b: np.where(c != 0, a, b),
    Op.STOP_GRADIENT: lambda e, a: a,
    Op.SUM: lambda e, *args: sum(args[1:], args[0]),
    Op.DOT: _dot,
    Op.DOT_GENERAL: _dot_general,
    Op.REDUCE_SUM: lambda e, a, lead=1: a.sum(axis=_axes(e, lead)),
    Op.REDUCE_MAX: lambda e, a, lead=1: a.max(axis=_axes(e, lead)),
    Op.RESHAPE: lambda e, a, lead=1: a.reshape(a.shape[:lead] + tuple(e.attr("shape"))),
    Op.TRANSPOSE: lambda e, a, lead=1: a.transpose(
        tuple(range(lead)) + tuple(lead + p for p in e.attr("perm"))),
    Op.BROADCAST: _broadcast,
    Op.SLICE: _slice,
    Op.CONCATENATE: _concatenate,
    Op.TAKE: _take,
    Op.SCATTER_ADD: _scatter_add,
}


def apply_real(eqn: Eqn, args: list[np.ndarray], arg_shapes: list[tuple[int, ...]]) -> np.ndarray:
    """The real value of ``eqn`` on real operand values (``[B, *shape]`` each)."""
    if eqn.op in ELEMENTWISE_OPS:
        rank = len(eqn.shape)
        args = [align(v, s, rank) for v, s in zip(args, arg_shapes)]
    return REAL_IMPL[eqn.op](eqn, *args)


__all__ = ["FLOAT_ERRORS", "REAL_IMPL", "align", "apply_real", "einsum_spec", "erf",
           "indices_of", "std_normal_cdf"]
