"""Clean-up passes: dead-code elimination, common-subexpression elimination, constant folding.

Each is a pure ``Circuit -> Circuit`` function (the input is never mutated) whose result
verifies and computes the same outputs. ``simplify`` runs fold -> cse -> dce. A
:class:`~circuitsketch.ir.Program` is simplified through its step circuit, keeping every input
(the loop feeds them by name) and every output.

Constant folding evaluates nodes whose operands are all constants with the reference
interpreter's table (so folding can never disagree with execution) and applies the identities
x*1 = x, x+0 = x, x-0 = x, x/1 = x, x*0 = 0, pow(x, 1) = x, and drops zero terms of sums and
dot products. It does not fold inputs, so it never changes what a circuit reads.
"""

from __future__ import annotations

import numpy as np

from ..backends.reference import FLOAT_ERRORS, REAL_IMPL, DomainError
from ..ir.circuit import Builder, Circuit, Eqn, Output, Program
from ..ir.ops import Op
from ..ir.verify import verify, verify_program


def _rebuild(circuit: Circuit, builder: Builder, remap: list[int]) -> Circuit:
    builder.inputs = dict(circuit.inputs)
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
            eqns.append(Eqn(eqn.op, tuple(remap[a] for a in eqn.args), eqn.attrs, eqn.loc, eqn.series))
    outputs = tuple(Output(o.name, o.shape, tuple(remap[n] for n in o.nodes)) for o in circuit.outputs)
    return Circuit(tuple(eqns), circuit.inputs, outputs, circuit.order)


def cse(circuit: Circuit) -> Circuit:
    """Share identical (op, operands, attrs) nodes; commutative add/mul/max/eq operands sorted."""
    return verify(_cse(circuit))


def _cse(circuit: Circuit) -> Circuit:
    builder, remap = Builder(), []
    for eqn in circuit.eqns:
        args = tuple(remap[a] for a in eqn.args)
        if eqn.op in (Op.ADD, Op.MUL, Op.MAX, Op.EQ):
            args = tuple(sorted(args))
        remap.append(builder.add(eqn.op, args, eqn.attrs, eqn.loc, eqn.series))
    return _rebuild(circuit, builder, remap)


def _const_value(circuit_eqns: list[Eqn], node: int) -> float | None:
    eqn = circuit_eqns[node]
    return eqn.attr("value") if eqn.op is Op.CONST else None


def fold_constants(circuit: Circuit) -> Circuit:
    """Evaluate all-constant nodes and apply the algebraic identities listed in the module doc."""
    return verify(_fold_constants(circuit))


def _fold_constants(circuit: Circuit) -> Circuit:
    builder, remap = Builder(), []
    for eqn in circuit.eqns:
        args = tuple(remap[a] for a in eqn.args)
        remap.append(_fold_one(builder, eqn, args, lambda node: _const_value(builder.eqns, node)))
    return _rebuild(circuit, builder, remap)


def _fold_one(builder: Builder, eqn: Eqn, args: tuple[int, ...], value) -> int:
    add = lambda op, a, attrs=(): builder.add(op, a, attrs, eqn.loc, eqn.series)  # noqa: E731
    consts = [value(a) for a in args]
    if args and all(c is not None for c in consts) and not eqn.series:
        try:
            with np.errstate(**FLOAT_ERRORS):
                result = REAL_IMPL[eqn.op](eqn, *[np.array([c]) for c in consts])
        except (DomainError, FloatingPointError, ZeroDivisionError):
            result = None  # leave it for the interpreter to report with its source line
        if result is not None and np.all(np.isfinite(result)):
            return builder.const(float(np.asarray(result).ravel()[0]), eqn.loc)
    op = eqn.op
    if op is Op.MUL:
        for i, c in enumerate(consts):
            if c == 1.0:
                return args[1 - i]
            if c == 0.0:
                return builder.const(0.0, eqn.loc)
    if op is Op.ADD:
        for i, c in enumerate(consts):
            if c == 0.0:
                return args[1 - i]
    if op in (Op.SUB, Op.DIV) and consts[1] == (0.0 if op is Op.SUB else 1.0):
        return args[0]
    if op is Op.POW and eqn.attr("p") == 1.0:
        return args[0]
    if op is Op.SUM:
        kept = tuple(a for a, c in zip(args, consts) if c != 0.0)
        if not kept:
            return builder.const(0.0, eqn.loc)
        return kept[0] if len(kept) == 1 else add(Op.SUM, kept)
    if op is Op.DOT:
        half = len(args) // 2
        pairs = [(a, b) for a, b, ca, cb in zip(args[:half], args[half:], consts[:half], consts[half:])
                 if ca != 0.0 and cb != 0.0]
        if not pairs:
            return builder.const(0.0, eqn.loc)
        if len(pairs) == 1:
            return add(Op.MUL, pairs[0])
        return add(Op.DOT, tuple(a for a, _ in pairs) + tuple(b for _, b in pairs))
    return add(op, args, eqn.attrs)


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


__all__ = ["cse", "dce", "fold_constants", "simplify"]
