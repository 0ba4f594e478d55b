"""Clean-up passes: dead-code elimination, common-subexpression elimination, constant folding.

Each is a pure ``Circuit -> Circuit`` function (the input is never mutated) whose result
verifies and computes the same outputs, on scalar and on array circuits. ``simplify`` runs
fold -> cse -> dce. A :class:`~circuitsketch.ir.Program` is simplified through its step circuit,
keeping every input (the loop feeds them by name) and every output.

``dce`` and ``cse`` are structural (cse sorts the operands of the commutative add, mul, max and
eq, which stay commutative under broadcasting). Constant folding evaluates nodes whose operands
are all constants with the semantics layer's own table (``semantics.real.apply_real``, so folding
can never disagree with execution) when the result has at most :data:`FOLD_LIMIT` elements (so
the printed circuit stays readable), and applies the identities x*1 = x, x+0 = x, x-0 = x,
x/1 = x, x*0 = 0, pow(x, 1) = x, drops zero terms of sums and dot products, composes a
transpose of a transpose into one and drops identity transposes (the VJP of a transposed
matmul transposes twice). A constant
counts as 0 or 1 when every element is; an identity applies only where the result keeps the
node's shape (``x[3] * ones[4,3]`` is a broadcast, not ``x``). Folding never touches inputs, so
it never changes what a circuit reads, and leaves a node whose evaluation fails (log of a
negative constant, overflow) for the interpreter to report with its source line.
"""

from __future__ import annotations

from math import prod

import numpy as np

from ..ir.circuit import Builder, Circuit, Eqn, Output, Program, make_attrs
from ..ir.ops import Op
from ..ir.shapes import Shape, broadcast_shapes
from ..ir.verify import verify, verify_program
from ..semantics.errors import DomainError
from ..semantics.real import FLOAT_ERRORS, apply_real

#: the largest constant (in elements) that folding creates
FOLD_LIMIT = 4096

_CONST, _POW, _TRANSPOSE = Op.CONST, Op.POW, Op.TRANSPOSE  # module constants: Enum attribute lookup is slow in hot loops


def _builder_for(circuit: Circuit) -> Builder:
    builder = Builder()
    builder.inputs = dict(circuit.inputs)  # before any node: input nodes look up their shapes
    return builder


def _rebuild(circuit: Circuit, builder: Builder, remap: list[int]) -> Circuit:
    builder.outputs = [Output(o.name, o.shape, tuple(remap[n] for n in o.nodes)) for o in circuit.outputs]
    return builder.build(circuit.order)


def dce(circuit: Circuit) -> Circuit:
    """Drop nodes no output depends on (input nodes are kept: they are the circuit's interface)."""
    return verify(_dce(circuit))


def _dce(circuit: Circuit) -> Circuit:
    live = [False] * len(circuit.eqns)
    for out in circuit.outputs:
        for n in out.nodes:
            live[n] = True
    for node in range(len(circuit.eqns) - 1, -1, -1):
        if live[node]:
            for a in circuit.eqns[node].args:
                live[a] = True
    eqns, remap = [], [-1] * len(circuit.eqns)
    for node, eqn in enumerate(circuit.eqns):
        if live[node] or eqn.op is Op.INPUT:
            remap[node] = len(eqns)
            eqns.append(Eqn(eqn.op, tuple(remap[a] for a in eqn.args), eqn.attrs, eqn.loc,
                            eqn.series, eqn.shape))
    outputs = tuple(Output(o.name, o.shape, tuple(remap[n] for n in o.nodes)) for o in circuit.outputs)
    return Circuit(tuple(eqns), circuit.inputs, outputs, circuit.order)


def cse(circuit: Circuit) -> Circuit:
    """Share identical (op, operands, attrs) nodes; commutative add/mul/max/eq operands sorted."""
    return verify(_cse(circuit))


def _cse(circuit: Circuit) -> Circuit:
    builder, remap = _builder_for(circuit), []
    for eqn in circuit.eqns:
        args = tuple(remap[a] for a in eqn.args)
        if eqn.op in (Op.ADD, Op.MUL, Op.MAX, Op.EQ):
            args = tuple(sorted(args))
        remap.append(builder.add(eqn.op, args, eqn.attrs, eqn.loc, eqn.series))
    return _rebuild(circuit, builder, remap)


def fold_constants(circuit: Circuit) -> Circuit:
    """Evaluate all-constant nodes and apply the algebraic identities listed in the module doc."""
    return verify(_fold_constants(circuit))


def _fold_constants(circuit: Circuit) -> Circuit:
    folder = _Folder(_builder_for(circuit))
    remap: list[int] = []
    for eqn in circuit.eqns:
        remap.append(folder.fold(eqn, tuple(remap[a] for a in eqn.args)))
    return _rebuild(circuit, folder.builder, remap)


class _Folder:
    """Adds each node of a circuit to ``builder`` folded: a constant, an operand, or itself."""

    def __init__(self, builder: Builder) -> None:
        self.builder = builder

    def value(self, node: int) -> np.ndarray | None:
        """The value of a constant node as an array of its shape; None for other nodes."""
        eqn = self.builder.eqns[node]
        if eqn.op is not _CONST:
            return None
        return np.asarray(eqn.attr("value"), dtype=np.float64).reshape(eqn.shape)

    def shape(self, node: int) -> Shape:
        return self.builder.eqns[node].shape

    def const(self, value: np.ndarray, loc: str | None) -> int | None:
        """A constant node holding ``value``, or None when it is too big to print readably."""
        if value.size > FOLD_LIMIT:
            return None
        return self.builder.const_array(value, loc)

    def fold(self, eqn: Eqn, args: tuple[int, ...]) -> int:
        eqns = self.builder.eqns
        if eqn.op is _TRANSPOSE and eqns[args[0]].op is not _CONST:  # constants fold below
            return self.transpose(eqn, args[0])
        if eqn.op is not _POW and all(eqns[a].op is not _CONST for a in args):
            # the common case (no constant operand): nothing to fold; 10^5-node circuits
            return self.builder.add(eqn.op, args, eqn.attrs, eqn.loc, eqn.series)
        consts = [self.value(a) for a in args]
        if args and not eqn.series and all(c is not None for c in consts):
            folded = self._evaluate(eqn, consts)
            if folded is not None:
                return folded
        found = _IDENTITIES.get(eqn.op)
        kept = found(self, eqn, args, [_uniform(c) for c in consts]) if found else None
        if kept is not None:
            return kept
        return self.builder.add(eqn.op, args, eqn.attrs, eqn.loc, eqn.series)

    def transpose(self, eqn: Eqn, operand: int) -> int:
        """A transpose of a transpose is one transpose (perms compose: axis i of the result is
        axis p1[p2[i]] of the inner operand); the identity permutation is its operand."""
        perm = tuple(eqn.attr("perm"))
        inner = self.builder.eqns[operand]
        if inner.op is _TRANSPOSE:
            first = tuple(inner.attr("perm"))
            perm, operand = tuple(first[i] for i in perm), inner.args[0]
        if perm == tuple(range(len(perm))):
            return operand
        return self.builder.add(_TRANSPOSE, (operand,), make_attrs(perm=perm), eqn.loc, eqn.series)

    def _evaluate(self, eqn: Eqn, consts: list[np.ndarray]) -> int | None:
        if prod(eqn.shape) > FOLD_LIMIT:
            return None
        try:
            with np.errstate(**FLOAT_ERRORS):
                result = apply_real(eqn, [c[None] for c in consts], [c.shape for c in consts])
        except (DomainError, FloatingPointError, ZeroDivisionError):
            return None  # left for the interpreter to report with its source line
        result = np.asarray(result, dtype=np.float64).reshape(eqn.shape)
        return self.const(result, eqn.loc) if np.all(np.isfinite(result)) else None

    def keep(self, eqn: Eqn, node: int) -> int | None:
        """``node`` in place of ``eqn`` when it has the same shape (no hidden broadcast)."""
        return node if self.shape(node) == eqn.shape else None

    def zeros(self, eqn: Eqn) -> int | None:
        return self.const(np.zeros(eqn.shape), eqn.loc)

    def add(self, eqn: Eqn, op: Op, args: tuple[int, ...]) -> int | None:
        """``op(args)`` in place of ``eqn`` when it broadcasts to the same shape."""
        if broadcast_shapes(*(self.shape(a) for a in args)) != eqn.shape:
            return None
        if len(args) == 1:
            return args[0]
        return self.builder.add(op, args, (), eqn.loc, eqn.series)


def _uniform(value: np.ndarray | None) -> float | None:
    """The one value every element of a constant holds, or None."""
    if value is None or value.size == 0:
        return None
    first = float(value.flat[0])
    return first if np.all(value == first) else None


def _mul(f: _Folder, eqn: Eqn, args, consts) -> int | None:
    for i, c in enumerate(consts):
        if c == 1.0 and (kept := f.keep(eqn, args[1 - i])) is not None:
            return kept
        if c == 0.0:
            return f.zeros(eqn)
    return None


def _add(f: _Folder, eqn: Eqn, args, consts) -> int | None:
    for i, c in enumerate(consts):
        if c == 0.0 and (kept := f.keep(eqn, args[1 - i])) is not None:
            return kept
    return None


def _sub_div(f: _Folder, eqn: Eqn, args, consts) -> int | None:
    if consts[1] == (0.0 if eqn.op is Op.SUB else 1.0):
        return f.keep(eqn, args[0])
    return None


def _pow(f: _Folder, eqn: Eqn, args, consts) -> int | None:
    return args[0] if eqn.attr("p") == 1.0 else None


def _sum(f: _Folder, eqn: Eqn, args, consts) -> int | None:
    kept = tuple(a for a, c in zip(args, consts) if c != 0.0)
    if len(kept) == len(args):
        return None
    return f.add(eqn, Op.SUM, kept) if kept else f.zeros(eqn)


def _dot(f: _Folder, eqn: Eqn, args, consts) -> int | None:
    half = len(args) // 2
    pairs = [(a, b) for a, b, ca, cb in zip(args[:half], args[half:], consts[:half], consts[half:])
             if ca != 0.0 and cb != 0.0]
    if len(pairs) == half:
        return None
    if not pairs:
        return f.zeros(eqn)
    if len(pairs) == 1:
        return f.add(eqn, Op.MUL, pairs[0])
    return f.add(eqn, Op.DOT, tuple(a for a, _ in pairs) + tuple(b for _, b in pairs))


_IDENTITIES = {Op.MUL: _mul, Op.ADD: _add, Op.SUB: _sub_div, Op.DIV: _sub_div, Op.POW: _pow,
               Op.SUM: _sum, Op.DOT: _dot}


def simplify(target: Circuit | Program) -> Circuit | Program:
    """fold_constants, cse and dce, to a fixed point of node count."""
    if isinstance(target, Program):
        step = simplify(target.step)
        return verify_program(Program(step, target.n_steps, target.carry, target.per_step, target.weight))
    circuit = target
    while True:  # the parts skip their own verify; the result is verified once
        smaller = _dce(_cse(_fold_constants(circuit)))
        if len(smaller.eqns) == len(circuit.eqns):
            return verify(smaller)
        circuit = smaller


__all__ = ["FOLD_LIMIT", "cse", "dce", "fold_constants", "simplify"]
