"""Circuits, programs and the builder that creates them.

A :class:`Circuit` is a flat SSA list of scalar equations ``%i = op %a %b {attrs}``; node ``i`` is
the i-th equation and may only read nodes ``< i``. Named inputs and outputs are arrays of
scalars: ``inputs`` maps a name to a shape, INPUT nodes read one flat element of it, and each
output names a shape plus the node ids of its elements (row-major).

A value is *real* (one float per batch member) or, after the Taylor pass, a *series*
(``order + 1`` complex coefficients per batch member); ``Eqn.series`` says which.

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

from .ops import Op

Attrs = tuple[tuple[str, Any], ...]
Shape = tuple[int, ...]


@dataclass(frozen=True)
class Eqn:
    """One scalar gate: ``op`` applied to the nodes ``args``."""

    op: Op
    args: tuple[int, ...] = ()
    attrs: Attrs = ()
    loc: str | None = None
    series: bool = False

    def attr(self, name: str) -> Any:
        for key, value in self.attrs:
            if key == name:
                return value
        raise KeyError(f"{self.op.value} node has no attribute {name!r}")


def make_attrs(**kwargs: Any) -> Attrs:
    """Attributes in canonical (sorted, hashable) form."""
    return tuple(sorted(kwargs.items()))


@dataclass(frozen=True)
class Output:
    name: str
    shape: Shape
    nodes: tuple[int, ...]


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
        eqn = self.eqns[node]
        where = f" (traced at {eqn.loc})" if eqn.loc else ""
        return f"node %{node} = {eqn.op.value}{where}"

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
        key = (op, args, attrs, series)
        found = self._interned.get(key)
        if found is not None:
            return found
        self.eqns.append(Eqn(op, tuple(args), attrs, loc, series))
        node = len(self.eqns) - 1
        self._interned[key] = node
        return node

    def const(self, value: float, loc: str | None = None) -> int:
        return self.add(Op.CONST, (), make_attrs(value=float(value)), loc)

    def input(self, name: str, shape: Shape = (), loc: str | None = None) -> list[int]:
        """Declare input ``name`` of ``shape``; returns its element nodes in row-major order."""
        shape = tuple(int(d) for d in shape)
        if name in self.inputs:
            raise ValueError(f"input {name!r} declared twice")
        self.inputs[name] = shape
        return [self.add(Op.INPUT, (), make_attrs(name=name, index=i), loc) for i in range(prod(shape))]

    def output(self, name: str, nodes: list[int], shape: Shape | None = None) -> None:
        if any(out.name == name for out in self.outputs):
            raise ValueError(f"output {name!r} declared twice")
        shape = (len(nodes),) if shape is None else tuple(shape)
        if prod(shape) != len(nodes):
            raise ValueError(f"output {name!r}: shape {shape} does not hold {len(nodes)} nodes")
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
           "make_attrs"]
