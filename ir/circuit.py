"""Circuits, programs and the builder that creates them.

A :class:`Circuit` is a flat SSA list of equations ``%i = op %a %b {attrs}``; node ``i`` is the
i-th equation and may only read nodes ``< i``. Every node is an array operation with a shape
(``Eqn.shape``, ``()`` for a scalar) and a kind: *real* (float64) or, after the Taylor pass, a
*series* (``order + 1`` complex coefficients per element); ``Eqn.series`` says which. Shapes are
derived from the operands by ``ir/shapes.py`` when a node is added.

``inputs`` maps a name to a shape. An INPUT node reads the whole array, or with an ``index``
attribute one flat element of it as a 0-d value (how scalar-traced programs read inputs).
An output names a shape plus either one node of that shape or the 0-d nodes of its elements
in row-major order (scalar-traced programs).

A :class:`Program` is a training loop kept as a loop: one step circuit applied ``n_steps``
times. ``carry`` names step inputs that are fed back from the step output of the same name;
``per_step`` names inputs that read slice ``t`` of a data array at step ``t``; ``weight``
names the step input holding the down-weights of the examples trained on at that step,
which the runtime gathers from the per-example vector ``x`` as ``x[example_ids[t]]``. All
other inputs are the same at every step.

Circuits are immutable; :class:`Builder` creates them and hash-conses nodes, so identical
(op, operands, attrs) are shared (common subexpression elimination for free).
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod
from typing import Any, Iterator

import numpy as np

from .ops import ELEMENTWISE_OPS as _ELEMENTWISE
from .ops import Op
from .shapes import Shape, ShapeError, infer_shape

Attrs = tuple[tuple[str, Any], ...]


@dataclass(frozen=True)
class Eqn:
    """One array operation: ``op`` applied to the nodes ``args``, giving a value of ``shape``."""

    op: Op
    args: tuple[int, ...] = ()
    attrs: Attrs = ()
    loc: str | None = None
    series: bool = False
    shape: Shape = ()

    def attr(self, name: str) -> Any:
        for key, value in self.attrs:
            if key == name:
                return value
        raise KeyError(f"{self.op.value} node has no attribute {name!r}")


def describe_eqn(node: int, eqn: Eqn) -> str:
    """``node %i = op [shape] (traced at file:line)``: how errors name a node."""
    where = f" (traced at {eqn.loc})" if eqn.loc else ""
    shape = f" {list(eqn.shape)}" if eqn.shape else ""
    return f"node %{node} = {eqn.op.value}{shape}{where}"


def make_attrs(**kwargs: Any) -> Attrs:
    """Attributes in canonical (sorted, hashable) form."""
    return tuple(sorted(kwargs.items()))


@dataclass(frozen=True)
class Output:
    """A named output: one node of ``shape``, or ``prod(shape)`` 0-d element nodes."""

    name: str
    shape: Shape
    nodes: tuple[int, ...]

    def is_array(self, eqns: tuple[Eqn, ...] | list[Eqn]) -> bool:
        """True when the output is one node holding the whole array (not a list of elements)."""
        return len(self.nodes) == 1 and eqns[self.nodes[0]].shape == self.shape and self.shape != ()


@dataclass(frozen=True)
class Circuit:
    """An immutable flat SSA circuit. ``order`` is 0 for real circuits, k after the Taylor pass."""

    eqns: tuple[Eqn, ...]
    inputs: tuple[tuple[str, Shape], ...]
    outputs: tuple[Output, ...]
    order: int = 0

    def __len__(self) -> int:
        return len(self.eqns)

    def __iter__(self) -> Iterator[Eqn]:
        return iter(self.eqns)

    @property
    def input_shapes(self) -> dict[str, Shape]:
        return dict(self.inputs)

    def output(self, name: str) -> Output:
        for out in self.outputs:
            if out.name == name:
                return out
        raise KeyError(f"circuit has no output {name!r}; outputs: {[o.name for o in self.outputs]}")

    def input_nodes(self) -> dict[tuple[str, int], int]:
        """Map (input name, flat index) -> node id."""
        return {
            (e.attr("name"), e.attr("index")): i for i, e in enumerate(self.eqns) if e.op is Op.INPUT
        }

    def describe(self, node: int) -> str:
        """A one-line description of a node for error messages: id, op and source line."""
        return describe_eqn(node, self.eqns[node])

    @property
    def is_scalar(self) -> bool:
        """True when every node is 0-d (a circuit of scalar gates, as the scalar tracer makes)."""
        return all(e.shape == () for e in self.eqns) and all(
            len(o.nodes) == prod(o.shape) for o in self.outputs)

    def op_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for eqn in self.eqns:
            counts[eqn.op.value] = counts.get(eqn.op.value, 0) + 1
        return counts


@dataclass(frozen=True)
class Program:
    """A training loop: ``step`` applied ``n_steps`` times, carrying the ``carry`` inputs."""

    step: Circuit
    n_steps: int
    carry: tuple[str, ...]
    per_step: tuple[str, ...] = ()
    weight: str | None = None

    @property
    def order(self) -> int:
        return self.step.order

    @property
    def static_inputs(self) -> tuple[str, ...]:
        loop_fed = set(self.carry) | set(self.per_step) | {self.weight}
        return tuple(name for name, _ in self.step.inputs if name not in loop_fed)


class Builder:
    """Appends equations, sharing identical ones, and freezes them into a :class:`Circuit`."""

    def __init__(self) -> None:
        self.eqns: list[Eqn] = []
        self._interned: dict[tuple, int] = {}
        self.inputs: dict[str, Shape] = {}
        self.outputs: list[Output] = []

    def add(self, op: Op, args: tuple[int, ...] = (), attrs: Attrs = (), loc: str | None = None,
            series: bool = False) -> int:
        """Append (or find) ``op(args)``; its shape is inferred, a misfit raises ShapeError."""
        key = (op, args, attrs, series)
        found = self._interned.get(key)
        if found is not None:
            return found
        eqns = self.eqns
        if op is Op.INPUT or op is Op.CONST or args:
            try:
                if op in _ELEMENTWISE and all(eqns[a].shape == () for a in args):
                    shape: Shape = ()  # the scalar fast path: tracing 10^5 scalar gates
                elif op is Op.INPUT and any(key == "index" for key, _ in attrs):
                    shape = ()  # one element (verify checks the index against the declaration)
                else:
                    shape = infer_shape(op, attrs, [eqns[a].shape for a in args], self.inputs)
            except ShapeError as exc:
                where = f" (traced at {loc})" if loc else ""
                raise ShapeError(f"{op.value}{where}: {exc}") from None
        else:
            shape = ()
        eqns.append(Eqn(op, tuple(args), attrs, loc, series, shape))
        node = len(eqns) - 1
        self._interned[key] = node
        return node

    def const(self, value: float, loc: str | None = None) -> int:
        return self.add(Op.CONST, (), make_attrs(value=float(value)), loc)

    def const_array(self, value: Any, loc: str | None = None) -> int:
        """An array constant (a float for 0-d values)."""
        array = np.asarray(value, dtype=np.float64)
        if array.ndim == 0:
            return self.const(float(array), loc)
        return self.add(Op.CONST, (), make_attrs(value=tuple(float(v) for v in array.ravel()),
                                                 shape=tuple(array.shape)), loc)

    def declare_input(self, name: str, shape: Shape = ()) -> Shape:
        """Declare input ``name`` of ``shape`` (non-negative integer dimensions)."""
        try:
            dims = tuple(shape)
        except TypeError:
            raise ShapeError(f"input {name!r}: shape {shape!r} is not a tuple of dimensions") from None
        if not all(isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d >= 0
                   for d in dims):
            raise ShapeError(f"input {name!r}: shape {shape!r} must hold non-negative integers")
        shape = tuple(int(d) for d in dims)
        if name in self.inputs:
            raise ValueError(f"input {name!r} declared twice")
        self.inputs[name] = shape
        return shape

    def input(self, name: str, shape: Shape = (), loc: str | None = None) -> list[int]:
        """Declare input ``name`` of ``shape``; returns its element nodes in row-major order."""
        shape = self.declare_input(name, shape)
        return [self.add(Op.INPUT, (), make_attrs(name=name, index=i), loc) for i in range(prod(shape))]

    def input_array(self, name: str, shape: Shape = (), loc: str | None = None) -> int:
        """Declare input ``name`` of ``shape``; returns the one node holding the whole array."""
        self.declare_input(name, shape)
        return self.add(Op.INPUT, (), make_attrs(name=name), loc)

    def output(self, name: str, nodes: list[int], shape: Shape | None = None) -> None:
        """Output ``name``: one node of ``shape``, or the 0-d nodes of its elements (row-major)."""
        if any(out.name == name for out in self.outputs):
            raise ValueError(f"output {name!r} declared twice")
        nodes = list(nodes)
        if shape is None:
            shape = self.eqns[nodes[0]].shape if len(nodes) == 1 and self.eqns[nodes[0]].shape \
                else (len(nodes),)
        shape = tuple(shape)
        whole = len(nodes) == 1 and self.eqns[nodes[0]].shape == shape
        if not whole:
            if prod(shape) != len(nodes):
                raise ValueError(f"output {name!r}: shape {shape} does not hold {len(nodes)} nodes")
            bad = [n for n in nodes if self.eqns[n].shape != ()]
            if bad:
                raise ShapeError(f"output {name!r} of shape {shape}: element node %{bad[0]} has shape "
                                 f"{self.eqns[bad[0]].shape}, not ()")
        self.outputs.append(Output(name, shape, tuple(nodes)))

    def build(self, order: int = 0) -> Circuit:
        return Circuit(tuple(self.eqns), tuple(self.inputs.items()), tuple(self.outputs), order)


def copy_into(builder: Builder, circuit: Circuit, *, keep_series: bool = True) -> list[int]:
    """Re-add every equation of ``circuit`` to ``builder``; returns old id -> new id."""
    remap: list[int] = []
    for eqn in circuit.eqns:
        remap.append(builder.add(eqn.op, tuple(remap[a] for a in eqn.args), eqn.attrs, eqn.loc,
                                 eqn.series and keep_series))
    return remap


__all__ = ["Attrs", "Builder", "Circuit", "Eqn", "Output", "Program", "Shape", "copy_into",
           "describe_eqn", "make_attrs"]
