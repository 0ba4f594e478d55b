"""Result shapes of every op: the one table (``SHAPE_RULES``) that says how shapes propagate.

``infer_shape(op, attrs, operand_shapes, input_shapes)`` returns the node's shape or raises
:class:`ShapeError` with a message saying what does not fit. The builder calls it for every new
node (so tracing reports a bad shape at the user's line) and ``verify`` re-checks parsed
circuits against it. Axes are non-negative ints (the tracer normalises negative ones).
"""

from __future__ import annotations

from math import prod
from typing import Any, Callable, Mapping

from .ops import OP_INFO, Op, ELEMENTWISE

Shape = tuple[int, ...]


class ShapeError(ValueError):
    """Operand shapes or shape attributes that an op cannot take."""


def broadcast_shapes(*shapes: Shape) -> Shape:
    """numpy's broadcasting rule (trailing axes aligned; size 1 stretches)."""
    rank = max((len(s) for s in shapes), default=0)
    out = []
    for axis in range(rank):
        sizes = {s[axis - rank + len(s)] for s in shapes if axis - rank + len(s) >= 0}
        sizes.discard(1)
        if len(sizes) > 1:
            raise ShapeError(f"shapes {', '.join(map(str, shapes))} do not broadcast")
        out.append(sizes.pop() if sizes else 1)
    return tuple(out)


def _is_shape(value: Any) -> bool:
    return isinstance(value, tuple) and all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in value)


def _axes(value: Any, rank: int, what: str) -> tuple[int, ...]:
    if not isinstance(value, tuple) or not all(isinstance(a, int) and not isinstance(a, bool)
                                               for a in value):
        raise ShapeError(f"{what} must be a tuple of ints, got {value!r}")
    bad = [a for a in value if not 0 <= a < rank]
    if bad:
        raise ShapeError(f"{what} {value} out of range for rank {rank}")
    if len(set(value)) != len(value):
        raise ShapeError(f"{what} {value} repeats an axis")
    return value


def _const(attrs, shapes, inputs) -> Shape:
    value = attrs["value"]
    if "shape" not in attrs:
        if not isinstance(value, float):
            raise ShapeError(f"a scalar const value must be a float, got {type(value).__name__}")
        return ()
    shape = attrs["shape"]
    if not _is_shape(shape):
        raise ShapeError(f"const shape {shape!r} must be a tuple of non-negative ints")
    if not isinstance(value, tuple) or not all(isinstance(v, float) for v in value):
        raise ShapeError("an array const value must be a tuple of floats (row-major)")
    if len(value) != prod(shape):
        raise ShapeError(f"const of shape {shape} needs {prod(shape)} values, got {len(value)}")
    return shape


def _input(attrs, shapes, inputs) -> Shape:
    name = attrs["name"]
    if name not in inputs:
        raise ShapeError(f"reads undeclared input {name!r}")
    if "index" not in attrs:
        return inputs[name]
    index = attrs["index"]
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < prod(inputs[name]):
        raise ShapeError(f"index {index!r} out of range for input {name!r} of shape {inputs[name]}")
    return ()


def _elementwise(attrs, shapes, inputs) -> Shape:
    return broadcast_shapes(*shapes)


def _reduce(attrs, shapes, inputs) -> Shape:
    (shape,) = shapes
    axes = _axes(attrs["axes"], len(shape), "axes")
    return tuple(d for i, d in enumerate(shape) if i not in axes)


def _dot_general(attrs, shapes, inputs) -> Shape:
    lhs, rhs = shapes
    pairs = {}
    for key in ("contract", "batch"):
        value = attrs[key]
        if not (isinstance(value, tuple) and len(value) == 2):
            raise ShapeError(f"{key} must be a pair (lhs axes, rhs axes), got {value!r}")
        la = _axes(value[0], len(lhs), f"{key} lhs axes")
        ra = _axes(value[1], len(rhs), f"{key} rhs axes")
        if len(la) != len(ra):
            raise ShapeError(f"{key} pairs {len(la)} lhs axes with {len(ra)} rhs axes")
        for a, b in zip(la, ra):
            if lhs[a] != rhs[b]:
                raise ShapeError(f"{key} axis {a} of lhs {lhs} (size {lhs[a]}) against axis {b} of "
                                 f"rhs {rhs} (size {rhs[b]})")
        pairs[key] = (la, ra)
    (lc, rc), (lb, rb) = pairs["contract"], pairs["batch"]
    if set(lc) & set(lb) or set(rc) & set(rb):
        raise ShapeError("an axis is both contracted and batched")
    lfree = [d for i, d in enumerate(lhs) if i not in lc and i not in lb]
    rfree = [d for i, d in enumerate(rhs) if i not in rc and i not in rb]
    return tuple(lhs[a] for a in lb) + tuple(lfree) + tuple(rfree)


def _reshape(attrs, shapes, inputs) -> Shape:
    (shape,) = shapes
    new = attrs["shape"]
    if not _is_shape(new):
        raise ShapeError(f"reshape target {new!r} must be a tuple of non-negative ints")
    if prod(new) != prod(shape):
        raise ShapeError(f"cannot reshape {shape} ({prod(shape)} elements) to {new}")
    return new


def _transpose(attrs, shapes, inputs) -> Shape:
    (shape,) = shapes
    perm = _axes(attrs["perm"], len(shape), "perm")
    if len(perm) != len(shape):
        raise ShapeError(f"perm {perm} is not a permutation of the {len(shape)} axes of {shape}")
    return tuple(shape[a] for a in perm)


def _broadcast(attrs, shapes, inputs) -> Shape:
    (shape,) = shapes
    new = attrs["shape"]
    if not _is_shape(new):
        raise ShapeError(f"broadcast target {new!r} must be a tuple of non-negative ints")
    if len(new) < len(shape) or broadcast_shapes(shape, new) != new:
        raise ShapeError(f"cannot broadcast {shape} to {new}")
    return new


def _slice(attrs, shapes, inputs) -> Shape:
    (shape,) = shapes
    start, stop, step = attrs["start"], attrs["stop"], attrs["step"]
    for name, value in (("start", start), ("stop", stop), ("step", step)):
        if not (isinstance(value, tuple) and len(value) == len(shape)
                and all(isinstance(v, int) and not isinstance(v, bool) for v in value)):
            raise ShapeError(f"slice {name} must be {len(shape)} ints (one per axis), got {value!r}")
    out = []
    for axis, (d, a, b, s) in enumerate(zip(shape, start, stop, step)):
        if s < 1 or not 0 <= a <= b <= d:
            raise ShapeError(f"slice [{a}:{b}:{s}] of axis {axis} (size {d}) needs "
                             "0 <= start <= stop <= size and step >= 1")
        out.append(len(range(a, b, s)))
    return tuple(out)


def _concatenate(attrs, shapes, inputs) -> Shape:
    axis = attrs["axis"]
    first = shapes[0]
    if not isinstance(axis, int) or isinstance(axis, bool) or not 0 <= axis < len(first):
        raise ShapeError(f"axis {axis!r} out of range for rank {len(first)}")
    for s in shapes[1:]:
        if len(s) != len(first) or any(a != b for i, (a, b) in enumerate(zip(s, first)) if i != axis):
            raise ShapeError(f"cannot concatenate {first} and {s} along axis {axis}")
    return first[:axis] + (sum(s[axis] for s in shapes),) + first[axis + 1:]


def _take(attrs, shapes, inputs) -> Shape:
    operand, indices = shapes
    axis = attrs["axis"]
    if not isinstance(axis, int) or isinstance(axis, bool) or not 0 <= axis < len(operand):
        raise ShapeError(f"take axis {axis!r} out of range for operand of shape {operand}")
    return operand[:axis] + indices + operand[axis + 1:]


def _scatter_add(attrs, shapes, inputs) -> Shape:
    updates, indices = shapes
    axis, size = attrs["axis"], attrs["size"]
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ShapeError(f"scatter_add size must be a non-negative int, got {size!r}")
    if not isinstance(axis, int) or isinstance(axis, bool) or not 0 <= axis <= len(updates) - len(indices):
        raise ShapeError(f"scatter_add axis {axis!r} does not fit updates {updates} with indices {indices}")
    if updates[axis: axis + len(indices)] != indices:
        raise ShapeError(f"scatter_add updates {updates} must hold the index shape {indices} at axis {axis}")
    return updates[:axis] + (size,) + updates[axis + len(indices):]


ShapeRule = Callable[[Mapping[str, Any], list[Shape], Mapping[str, Shape]], Shape]

SHAPE_RULES: dict[Op, ShapeRule] = {
    Op.CONST: _const,
    Op.INPUT: _input,
    Op.REDUCE_SUM: _reduce,
    Op.REDUCE_MAX: _reduce,
    Op.DOT_GENERAL: _dot_general,
    Op.RESHAPE: _reshape,
    Op.TRANSPOSE: _transpose,
    Op.BROADCAST: _broadcast,
    Op.SLICE: _slice,
    Op.CONCATENATE: _concatenate,
    Op.TAKE: _take,
    Op.SCATTER_ADD: _scatter_add,
}
SHAPE_RULES.update({op: _elementwise for op, info in OP_INFO.items() if info.kind == ELEMENTWISE})


def infer_shape(op: Op, attrs: tuple, operand_shapes: list[Shape],
                input_shapes: Mapping[str, Shape]) -> Shape:
    """The result shape of ``op`` on operands of ``operand_shapes`` (raises ShapeError)."""
    attr_map = dict(attrs)
    missing = [a for a in OP_INFO[op].attrs if a not in attr_map]
    if missing:
        raise ShapeError(f"missing attribute(s) {missing}")
    try:
        return SHAPE_RULES[op](attr_map, list(operand_shapes), input_shapes)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ShapeError):
            raise
        raise ShapeError(f"bad attributes {attr_map}: {exc}") from None


__all__ = ["SHAPE_RULES", "Shape", "ShapeError", "broadcast_shapes", "infer_shape"]
