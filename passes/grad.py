"""Reverse-mode differentiation as a circuit-to-circuit transformation.

For a scalar node y, the cotangent of node v is dy/dv = sum over users u of v of
(du/dv) * (dy/du). Walking nodes from y down to 0, every user of v has been visited before v,
so v's cotangent is complete when it is reached. ``VJP_RULES`` holds, per op, the local partial
derivatives as new nodes; each contribution is kept as a pair (partial, cotangent) and all
pairs of a node are emitted as ONE fused ``dot`` node (plus a ``sum`` for partials equal to 1),
so the backward pass of a linear layer is a dot per input, not a chain of binary gates.

Comparisons and stop_gradient have zero derivative; relu and max take the branch the forward
pass took (the derivative at the kink is the branch's, as in every autodiff system; the Taylor
pass, not grad, is where kinks are rejected).
"""

from __future__ import annotations

import math
from typing import Callable

from ..ir.circuit import Builder, Circuit, Eqn, copy_into, make_attrs
from ..ir.ops import NON_DIFFERENTIABLE, Op
from ..ir.verify import verify

# A contribution: (partial node or None meaning 1.0, cotangent node)
Contribution = tuple[int | None, int]
VjpRule = Callable[["_Emitter", Eqn, int, int], list[Contribution | None]]


class _Emitter:
    """Adds backward nodes carrying the source location of the forward node they differentiate."""

    def __init__(self, builder: Builder, loc: str | None) -> None:
        self.builder, self.loc = builder, loc

    def __call__(self, op: Op, *args: int, **attrs) -> int:
        return self.builder.add(op, args, make_attrs(**attrs), self.loc)

    def const(self, value: float) -> int:
        return self.builder.const(value, self.loc)


def _div_rule(emit: _Emitter, eqn: Eqn, out: int, g: int):
    a, b = eqn.args
    inv_b = emit(Op.DIV, emit.const(1.0), b)
    return [(inv_b, g), (emit(Op.NEG, emit(Op.MUL, out, inv_b)), g)]


def _pow_rule(emit: _Emitter, eqn: Eqn, out: int, g: int):
    p = eqn.attr("p")
    if p == 0.0:
        return [None]
    if p == 1.0:
        return [(None, g)]
    power = eqn.args[0] if p == 2.0 else emit(Op.POW, eqn.args[0], p=p - 1.0)
    return [(emit(Op.MUL, emit.const(p), power), g)]


def _gelu_rule(emit: _Emitter, eqn: Eqn, out: int, g: int):
    (a,) = eqn.args
    # GELU'(a) = Phi(a) + a phi(a),  Phi(a) = (1 + erf(a/sqrt2))/2,  phi(a) = exp(-a^2/2)/sqrt(2 pi)
    cdf = emit(Op.MUL, emit.const(0.5),
               emit(Op.ADD, emit.const(1.0), emit(Op.ERF, emit(Op.MUL, a, emit.const(1 / math.sqrt(2))))))
    density = emit(Op.MUL, emit.const(1 / math.sqrt(2 * math.pi)),
                   emit(Op.EXP, emit(Op.MUL, emit.const(-0.5), emit(Op.MUL, a, a))))
    return [(emit(Op.ADD, cdf, emit(Op.MUL, a, density)), g)]


def _select_rule(emit: _Emitter, eqn: Eqn, out: int, g: int):
    c, _, _ = eqn.args
    zero = emit.const(0.0)
    return [None, (None, emit(Op.SELECT, c, g, zero)), (None, emit(Op.SELECT, c, zero, g))]


def _dot_rule(emit: _Emitter, eqn: Eqn, out: int, g: int):
    half = len(eqn.args) // 2
    a, b = eqn.args[:half], eqn.args[half:]
    return [(bi, g) for bi in b] + [(ai, g) for ai in a]


VJP_RULES: dict[Op, VjpRule] = {
    Op.ADD: lambda emit, e, y, g: [(None, g), (None, g)],
    Op.SUB: lambda emit, e, y, g: [(None, g), (emit.const(-1.0), g)],
    Op.NEG: lambda emit, e, y, g: [(emit.const(-1.0), g)],
    Op.MUL: lambda emit, e, y, g: [(e.args[1], g), (e.args[0], g)],
    Op.DIV: _div_rule,
    Op.POW: _pow_rule,
    Op.EXP: lambda emit, e, y, g: [(y, g)],
    Op.LOG: lambda emit, e, y, g: [(emit(Op.DIV, emit.const(1.0), e.args[0]), g)],
    Op.SQRT: lambda emit, e, y, g: [(emit(Op.DIV, emit.const(0.5), y), g)],
    Op.TANH: lambda emit, e, y, g: [(emit(Op.SUB, emit.const(1.0), emit(Op.MUL, y, y)), g)],
    Op.ERF: lambda emit, e, y, g: [(emit(Op.MUL, emit.const(2 / math.sqrt(math.pi)), emit(
        Op.EXP, emit(Op.NEG, emit(Op.MUL, e.args[0], e.args[0])))), g)],
    Op.GELU: _gelu_rule,
    Op.RELU: lambda emit, e, y, g: [(emit(Op.GT, e.args[0], emit.const(0.0)), g)],
    Op.MAX: lambda emit, e, y, g: [(emit(Op.GE, *e.args), g), (emit(Op.LT, *e.args), g)],
    Op.SELECT: _select_rule,
    Op.SUM: lambda emit, e, y, g: [(None, g)] * len(e.args),
    Op.DOT: _dot_rule,
}


def _accumulate(builder: Builder, contributions: list[Contribution], loc: str | None) -> int:
    """One node for sum_i partial_i * cotangent_i: a dot over the products, a sum over the rest."""
    plain = [g for partial, g in contributions if partial is None]
    pairs = [(p, g) for p, g in contributions if p is not None]
    terms = list(plain)
    if len(pairs) == 1:
        terms.append(builder.add(Op.MUL, pairs[0], (), loc))
    elif pairs:
        terms.append(builder.add(Op.DOT, tuple(p for p, _ in pairs) + tuple(g for _, g in pairs), (), loc))
    return terms[0] if len(terms) == 1 else builder.add(Op.SUM, tuple(terms), (), loc)


def backprop(builder: Builder, output: int, wrt: list[int]) -> list[int]:
    """Append the backward pass of scalar node ``output`` to ``builder``; returns d output/d wrt.

    A node the output does not depend on gets the constant 0. Cotangents are built only for
    nodes on a path from a ``wrt`` node to the output (no derivatives w.r.t. data).
    """
    eqns = builder.eqns
    # only nodes on a path from some wrt node to the output need a cotangent
    targets = set(wrt)
    relevant = [False] * (output + 1)
    for node in range(output + 1):
        relevant[node] = node in targets or any(relevant[a] for a in eqns[node].args)
    pending: dict[int, list[Contribution]] = {output: [(None, builder.const(1.0))]}
    cotangent: dict[int, int] = {}
    for node in range(output, -1, -1):
        contributions = pending.pop(node, None)
        if contributions is None:
            continue
        eqn = eqns[node]
        g = _accumulate(builder, contributions, eqn.loc)
        cotangent[node] = g
        if eqn.op in NON_DIFFERENTIABLE or not eqn.args:
            continue
        rule = VJP_RULES.get(eqn.op)
        if rule is None:
            raise NotImplementedError(f"no reverse-mode rule for op {eqn.op.value}")
        for arg, contribution in zip(eqn.args, rule(_Emitter(builder, eqn.loc), eqn, node, g)):
            if contribution is not None and relevant[arg]:
                pending.setdefault(arg, []).append(contribution)
    zero = None
    result = []
    for node in wrt:
        if node not in cotangent:
            zero = builder.const(0.0) if zero is None else zero
        result.append(cotangent.get(node, zero))
    return result


def grad(circuit: Circuit, output: str, wrt: list[str] | None = None) -> Circuit:
    """The pass form: ``circuit`` plus outputs ``d<output>/d<name>`` for each input in ``wrt``.

    ``output`` must name a scalar output; ``wrt`` defaults to every input.
    """
    out = circuit.output(output)
    if len(out.nodes) != 1:
        raise ValueError(f"grad needs a scalar output; {output!r} has shape {out.shape}")
    shapes = circuit.input_shapes
    wrt = list(shapes) if wrt is None else list(wrt)
    unknown = [n for n in wrt if n not in shapes]
    if unknown:
        raise ValueError(f"grad: {unknown} are not inputs of the circuit")
    builder = Builder()
    builder.inputs = dict(shapes)
    remap = copy_into(builder, circuit)
    builder.outputs = [type(o)(o.name, o.shape, tuple(remap[n] for n in o.nodes)) for o in circuit.outputs]
    nodes = circuit.input_nodes()
    elements = {name: [nodes.get((name, i)) for i in range(math.prod(shapes[name]))] for name in wrt}
    present = [remap[n] for name in wrt for n in elements[name] if n is not None]
    grads = iter(backprop(builder, remap[out.nodes[0]], present))
    zero = builder.const(0.0)
    for name in wrt:  # an input element no node reads has derivative 0
        builder.output(f"d{output}/d{name}",
                       [next(grads) if n is not None else zero for n in elements[name]], shapes[name])
    return verify(builder.build(circuit.order))

