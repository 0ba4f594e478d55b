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

Array nodes: the cotangent of a node has the node's shape. An elementwise rule's contribution
has the broadcast result's shape and is *unbroadcast* to its operand (summed over the axes
broadcasting added or stretched); structural rules are the transposes of their linear maps
(reduce_sum <-> broadcast, take <-> scatter_add, slice -> scatter_add into zeros, concatenate ->
slices, dot_general -> two dot_generals). Contributions to an array node are added with
elementwise ``add``/``sum``; the fused ``dot`` above is kept for 0-d nodes, so scalar circuits
get exactly the nodes they always got.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from ..ir.circuit import Builder, Circuit, Eqn, copy_into, make_attrs
from ..ir.ops import NON_DIFFERENTIABLE, Op
from ..ir.shapes import Shape
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

    def const_array(self, value) -> int:
        return self.builder.const_array(value, self.loc)

    def shape(self, node: int) -> Shape:
        return self.builder.eqns[node].shape

    def reshape(self, node: int, shape: Shape) -> int:
        return node if self.shape(node) == shape else self(Op.RESHAPE, node, shape=shape)

    def transpose(self, node: int, perm: tuple[int, ...]) -> int:
        return node if perm == tuple(range(len(perm))) else self(Op.TRANSPOSE, node, perm=perm)

    def reduce_sum(self, node: int, axes: tuple[int, ...]) -> int:
        return self(Op.REDUCE_SUM, node, axes=axes) if axes else node

    def broadcast(self, node: int, shape: Shape) -> int:
        return node if self.shape(node) == shape else self(Op.BROADCAST, node, shape=shape)

    def zeros(self, shape: Shape) -> int:
        return self.broadcast(self.const(0.0), shape)

    def unbroadcast(self, node: int, shape: Shape) -> int:
        """``node`` summed down to ``shape``: over the leading axes broadcasting added and the
        size-1 axes of ``shape`` it stretched (the transpose of numpy broadcasting)."""
        have = self.shape(node)
        if have == shape:
            return node
        lead = len(have) - len(shape)
        stretched = tuple(lead + i for i, d in enumerate(shape) if d == 1 and have[lead + i] != 1)
        return self.reshape(self.reduce_sum(node, tuple(range(lead)) + stretched), shape)

    def fit(self, contribution: "Contribution", shape: Shape) -> "Contribution":
        """An elementwise contribution as one cotangent node of the operand's ``shape``."""
        partial, g = contribution
        product = g if partial is None else self(Op.MUL, partial, g)
        return (None, self.unbroadcast(product, shape))


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


# ---------------------------------------------------------------- array ops: the transposes

def _kept_shape(shape: Shape, axes: tuple[int, ...]) -> Shape:
    """``shape`` with the reduced ``axes`` kept as size 1 (numpy's keepdims)."""
    return tuple(1 if i in axes else d for i, d in enumerate(shape))


def _reduce_sum_rule(emit: _Emitter, eqn: Eqn, out: int, g: int):
    shape, axes = emit.shape(eqn.args[0]), eqn.attr("axes")
    if axes != tuple(range(len(axes))):  # broadcasting aligns trailing axes: leading ones need no reshape
        g = emit.reshape(g, _kept_shape(shape, axes))
    return [(None, emit.broadcast(g, shape))]


def _reduce_max_rule(emit: _Emitter, eqn: Eqn, out: int, g: int):
    # the cotangent is shared equally by the elements that attain the max (ties split it)
    (a,) = eqn.args
    axes = eqn.attr("axes")
    kept = _kept_shape(emit.shape(a), axes)
    mask = emit(Op.EQ, a, emit.reshape(out, kept))
    share = emit(Op.DIV, g, emit.reduce_sum(mask, axes))
    return [(None, emit(Op.MUL, mask, emit.reshape(share, kept)))]


def _dot_general_operand(emit: _Emitter, g: int, other: int, mine: tuple, theirs: tuple, rank: int,
                         g_axes: tuple[tuple, tuple, tuple]) -> int:
    """The cotangent of one dot_general operand: ``g`` contracted with the ``other`` operand
    over the other's free axes, then transposed into this operand's axis order.

    ``mine`` / ``theirs`` are (contract, batch, free) axes of this and the other operand;
    ``g_axes`` are g's (batch, my free, their free) axes."""
    (my_contract, my_batch, my_free), (their_contract, their_batch, their_free) = mine, theirs
    g_batch, _, g_their_free = g_axes
    node = emit(Op.DOT_GENERAL, g, other, contract=(g_their_free, their_free),
                batch=(g_batch, their_batch))
    # result axes: batch, my free axes, then the other's contracted axes in the other's order
    source = list(my_batch) + list(my_free) + [
        my_contract[their_contract.index(a)] for a in sorted(their_contract)]
    return emit.transpose(node, tuple(source.index(i) for i in range(rank)))


def _dot_general_rule(emit: _Emitter, eqn: Eqn, out: int, g: int):
    lhs, rhs = eqn.args
    (lc, rc), (lb, rb) = eqn.attr("contract"), eqn.attr("batch")
    lrank, rrank = len(emit.shape(lhs)), len(emit.shape(rhs))
    lfree = tuple(i for i in range(lrank) if i not in lc and i not in lb)
    rfree = tuple(i for i in range(rrank) if i not in rc and i not in rb)
    nb, nl = len(lb), len(lfree)
    g_batch = tuple(range(nb))
    g_lfree, g_rfree = tuple(range(nb, nb + nl)), tuple(range(nb + nl, nb + nl + len(rfree)))
    left, right = (lc, lb, lfree), (rc, rb, rfree)
    return [(None, _dot_general_operand(emit, g, rhs, left, right, lrank, (g_batch, g_lfree, g_rfree))),
            (None, _dot_general_operand(emit, g, lhs, right, left, rrank, (g_batch, g_rfree, g_lfree)))]


def _transpose_rule(emit: _Emitter, eqn: Eqn, out: int, g: int):
    perm = eqn.attr("perm")
    return [(None, emit.transpose(g, tuple(perm.index(i) for i in range(len(perm)))))]


def _slice_rule(emit: _Emitter, eqn: Eqn, out: int, g: int):
    # scatter the cotangent back into zeros, one sliced axis at a time
    shape = emit.shape(eqn.args[0])
    bounds = zip(eqn.attr("start"), eqn.attr("stop"), eqn.attr("step"))
    for axis, (size, (start, stop, step)) in enumerate(zip(shape, bounds)):
        rows = np.arange(start, stop, step)
        if len(rows) != size:
            g = emit(Op.SCATTER_ADD, g, emit.const_array(rows), axis=axis, size=size)
    return [(None, g)]


def _concatenate_rule(emit: _Emitter, eqn: Eqn, out: int, g: int):
    axis, shape = eqn.attr("axis"), emit.shape(out)
    contributions, offset = [], 0
    for arg in eqn.args:
        width = emit.shape(arg)[axis]
        start = tuple(offset if i == axis else 0 for i in range(len(shape)))
        stop = tuple(offset + width if i == axis else d for i, d in enumerate(shape))
        contributions.append((None, emit(Op.SLICE, g, start=start, stop=stop, step=(1,) * len(shape))))
        offset += width
    return contributions


def _take_rule(emit: _Emitter, eqn: Eqn, out: int, g: int):
    operand, indices = eqn.args
    axis = eqn.attr("axis")
    return [(None, emit(Op.SCATTER_ADD, g, indices, axis=axis, size=emit.shape(operand)[axis])), None]


def _scatter_add_rule(emit: _Emitter, eqn: Eqn, out: int, g: int):
    return [(None, emit(Op.TAKE, g, eqn.args[1], axis=eqn.attr("axis"))), None]


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
    Op.REDUCE_SUM: _reduce_sum_rule,
    Op.REDUCE_MAX: _reduce_max_rule,
    Op.DOT_GENERAL: _dot_general_rule,
    Op.RESHAPE: lambda emit, e, y, g: [(None, emit.reshape(g, emit.shape(e.args[0])))],
    Op.TRANSPOSE: _transpose_rule,
    Op.BROADCAST: lambda emit, e, y, g: [(None, emit.unbroadcast(g, emit.shape(e.args[0])))],
    Op.SLICE: _slice_rule,
    Op.CONCATENATE: _concatenate_rule,
    Op.TAKE: _take_rule,
    Op.SCATTER_ADD: _scatter_add_rule,
}


def _accumulate(builder: Builder, contributions: list[Contribution], loc: str | None) -> int:
    """One node for sum_i partial_i * cotangent_i: a dot over the products, a sum over the rest.
    Array contributions arrive fitted (no partial) and are added elementwise."""
    plain = [g for partial, g in contributions if partial is None]
    pairs = [(p, g) for p, g in contributions if p is not None]
    terms = list(plain)
    if len(pairs) == 1:
        terms.append(builder.add(Op.MUL, pairs[0], (), loc))
    elif pairs:
        terms.append(builder.add(Op.DOT, tuple(p for p, _ in pairs) + tuple(g for _, g in pairs), (), loc))
    if len(terms) == 1:
        return terms[0]
    if builder.eqns[terms[0]].shape and len(terms) == 2:
        return builder.add(Op.ADD, tuple(terms), (), loc)
    return builder.add(Op.SUM, tuple(terms), (), loc)


def _is_array(builder: Builder, eqn: Eqn) -> bool:
    eqns = builder.eqns
    return bool(eqn.shape) or any(eqns[a].shape for a in eqn.args)


def backprop(builder: Builder, output: int, wrt: list[int]) -> list[int]:
    """Append the backward pass of 0-d node ``output`` to ``builder``; returns d output/d wrt
    (one node per ``wrt`` node, of its shape).

    A node the output does not depend on gets zeros. Cotangents are built only for nodes on a
    path from a ``wrt`` node to the output (no derivatives w.r.t. data).
    """
    eqns = builder.eqns
    if eqns[output].shape:
        raise ValueError(f"backprop needs a 0-d output; %{output} has shape {eqns[output].shape}")
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
        emit = _Emitter(builder, eqn.loc)
        array = _is_array(builder, eqn)
        for arg, contribution in zip(eqn.args, rule(emit, eqn, node, g)):
            if contribution is not None and relevant[arg]:
                if array:
                    contribution = emit.fit(contribution, eqns[arg].shape)
                pending.setdefault(arg, []).append(contribution)
    zeros: dict[Shape, int] = {}
    result = []
    for node in wrt:
        if node not in cotangent:
            shape = eqns[node].shape
            if shape not in zeros:
                zeros[shape] = _Emitter(builder, None).zeros(shape)
            result.append(zeros[shape])
        else:
            result.append(cotangent[node])
    return result


def _input_reads(circuit: Circuit) -> dict[str, list[int | None]]:
    """Per input, the nodes reading it: one node reading the whole array, or one per flat
    element (None for an element no node reads)."""
    whole: dict[str, list[int]] = {}
    elements: dict[str, dict[int, int]] = {}
    for i, e in enumerate(circuit.eqns):
        if e.op is Op.INPUT:
            index = dict(e.attrs).get("index")
            if index is None:
                whole.setdefault(e.attr("name"), []).append(i)
            else:
                elements.setdefault(e.attr("name"), {})[index] = i
    return {name: whole[name] if name in whole else
            [elements.get(name, {}).get(i) for i in range(math.prod(shape))]
            for name, shape in circuit.inputs}


def grad(circuit: Circuit, output: str, wrt: list[str] | None = None) -> Circuit:
    """The pass form: ``circuit`` plus outputs ``d<output>/d<name>`` for each input in ``wrt``.

    ``output`` must name a scalar output; ``wrt`` defaults to every input.
    """
    out = circuit.output(output)
    if len(out.nodes) != 1 or circuit.eqns[out.nodes[0]].shape:
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
    reads = _input_reads(circuit)
    elements = {name: reads[name] for name in wrt}
    present = [remap[n] for name in wrt for n in elements[name] if n is not None]
    grads = iter(backprop(builder, remap[out.nodes[0]], present))
    zero = builder.const(0.0)
    for name in wrt:  # an input element no node reads has derivative 0
        builder.output(f"d{output}/d{name}",
                       [next(grads) if n is not None else zero for n in elements[name]], shapes[name])
    return verify(builder.build(circuit.order))
