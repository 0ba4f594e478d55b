"""Hypothesis strategies for random circuits shared by the IR, grad, Taylor and backend tests.

Two families:

* :func:`random_circuits`: *scalar* circuits (every node 0-d) over one input vector ``x``, drawn
  only from today's elementwise ops (:data:`SCALAR_OPS`);
* :func:`random_array_circuits`: *array* circuits over whole-array inputs ``x`` and ``w`` of
  small random shapes, mixing elementwise ops with broadcasting, reductions, dot_general,
  reshape, transpose, broadcast, slice, concatenate, take and scatter_add (constant indices).

Both keep every op inside its domain by construction: log, sqrt and non-integer powers read
``a*a + 0.5``, divisors are ``b*b + 1``, and exp reads ``tanh(a)`` so values stay bounded.
Kinks (relu, max, reduce_max, comparisons) are hit only with probability zero on random inputs,
except where a broadcast copies a value (pass ``kinks=False`` for the Taylor pass).
"""

from __future__ import annotations

from math import prod

import numpy as np
from hypothesis import strategies as st

from circuitsketch.ir import Builder, Circuit, Op, make_attrs, verify
from circuitsketch.ir.ops import ELEMENTWISE_OPS, INDEX_OPERANDS
from circuitsketch.ir.shapes import ShapeError, broadcast_shapes

#: the op set of scalar circuits: every elementwise op (sources excluded), in Op order
SCALAR_OPS = tuple(op for op in Op if op in ELEMENTWISE_OPS)
SMOOTH_OPS = (Op.ADD, Op.SUB, Op.NEG, Op.MUL, Op.DIV, Op.POW, Op.EXP, Op.LOG, Op.SQRT, Op.TANH,
              Op.ERF, Op.GELU, Op.SUM, Op.DOT)
KINK_OPS = (Op.RELU, Op.MAX, Op.SELECT)


def _positive(b: Builder, a: int) -> int:
    return b.add(Op.ADD, (b.add(Op.MUL, (a, a)), b.const(0.5)))


def _emit(b: Builder, op: Op, pick) -> int:
    if op in (Op.ADD, Op.SUB, Op.MUL, Op.MAX):
        return b.add(op, (pick(), pick()))
    if op in (Op.NEG, Op.TANH, Op.ERF, Op.GELU, Op.RELU):
        return b.add(op, (pick(),))
    if op is Op.DIV:
        return b.add(op, (pick(), b.add(Op.ADD, (b.add(Op.MUL, (pick(),) * 2), b.const(1.0)))))
    if op is Op.POW:
        p = pick.exponent()
        base = pick() if float(p).is_integer() and p >= 0 else _positive(b, pick())
        return b.add(op, (base,), make_attrs(p=float(p)))
    if op is Op.EXP:
        return b.add(op, (b.add(Op.TANH, (pick(),)),))
    if op in (Op.LOG, Op.SQRT):
        return b.add(op, (_positive(b, pick()),))
    if op is Op.SUM:
        return b.add(op, tuple(pick() for _ in range(3)))
    if op is Op.DOT:
        return b.add(op, tuple(pick() for _ in range(4)))
    if op is Op.SELECT:
        a, c = pick(), pick()
        return b.add(op, (b.add(Op.GT, (a, c)), pick(), pick()))
    raise ValueError(op)


@st.composite
def random_circuits(draw, ops=SMOOTH_OPS, max_nodes: int = 12, n_inputs: int = 3) -> Circuit:
    """A verified circuit with one input vector ``x`` of ``n_inputs`` and output ``y`` (scalar)
    plus ``z`` (the last few nodes), built from ``ops`` (scalar ops only: see :data:`SCALAR_OPS`)."""
    if not set(ops) <= set(SCALAR_OPS):
        raise ValueError(f"random_circuits draws scalar ops only, not {set(ops) - set(SCALAR_OPS)}")
    b = Builder()
    nodes = b.input("x", (n_inputs,))

    class Pick:
        def __call__(self) -> int:
            return nodes[draw(st.integers(0, len(nodes) - 1))]

        def exponent(self) -> float:
            return draw(st.sampled_from([2.0, 3.0, -1.0, 0.5, -0.5, 1.5]))

    pick = Pick()
    for _ in range(draw(st.integers(1, max_nodes))):
        nodes.append(_emit(b, draw(st.sampled_from(ops)), pick))
    b.output("y", [nodes[-1]], ())
    b.output("z", nodes[-3:], (len(nodes[-3:]),))
    return verify(b.build())


def random_point(seed: int, n: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1.5, 1.5, size=n)


# ---------------------------------------------------------------- array circuits

#: ops an array circuit draws; ``kinks=False`` drops the non-analytic ones
ARRAY_OPS = ("unary", "binary", "reduce_sum", "reduce_max", "dot_general", "matmul", "reshape",
             "transpose", "broadcast", "slice", "concatenate", "take", "scatter_add", "sum", "dot",
             "select")
_KINKED = {"reduce_max", "select"}
_UNARY = (Op.NEG, Op.TANH, Op.ERF, Op.GELU, Op.EXP, Op.LOG, Op.SQRT, Op.POW, Op.RELU,
          Op.STOP_GRADIENT)
_BINARY = (Op.ADD, Op.SUB, Op.MUL, Op.DIV, Op.MAX)
_MAX_RANK = 4


def small_shapes(max_rank: int = 3, max_side: int = 4):
    """Shapes of rank 0..max_rank with sides 1..max_side."""
    return st.lists(st.integers(1, max_side), max_size=max_rank).map(tuple)


class _ArrayPool:
    """The nodes built so far and the hypothesis ``draw`` that picks among them."""

    def __init__(self, draw, b: Builder, nodes: list[int], kinks: bool, index: int | None) -> None:
        self.draw, self.b, self.nodes, self.kinks = draw, b, nodes, kinks
        self.index = index  # the integer-valued input node take may read, if any

    def shape(self, node: int) -> tuple[int, ...]:
        return self.b.eqns[node].shape

    def pick(self, where=lambda shape: True) -> int | None:
        fits = [n for n in self.nodes if where(self.shape(n))]
        return self.draw(st.sampled_from(fits)) if fits else None

    def const(self, shape: tuple[int, ...]) -> int:
        values = self.draw(st.lists(st.floats(-2, 2, allow_nan=False, width=32),
                                    min_size=prod(shape), max_size=prod(shape)))
        return self.b.const_array(np.array(values, dtype=np.float64).reshape(shape))

    def partner(self, shape: tuple[int, ...]) -> int:
        """A node or a constant whose shape broadcasts against ``shape``."""
        def broadcasts(other):
            try:
                return len(broadcast_shapes(other, shape)) <= _MAX_RANK
            except ShapeError:
                return False
        found = self.pick(broadcasts) if self.draw(st.booleans()) else None
        if found is not None:
            return found
        keep = self.draw(st.integers(0, len(shape)))
        return self.const(tuple(d if self.draw(st.booleans()) else 1
                                for d in shape[len(shape) - keep:]))

    def partners(self, a: int, count: int) -> tuple[int, ...]:
        """``a`` and ``count`` nodes that all broadcast together."""
        nodes, shape = [a], self.shape(a)
        for _ in range(count):
            nodes.append(self.partner(shape))
            shape = broadcast_shapes(shape, self.shape(nodes[-1]))
        return tuple(nodes)

    def axes(self, rank: int, min_size: int = 0) -> tuple[int, ...]:
        chosen = self.draw(st.sets(st.integers(0, rank - 1), min_size=min_size, max_size=rank))
        return tuple(sorted(chosen))


def _positive_array(p: _ArrayPool, a: int) -> int:
    return p.b.add(Op.ADD, (p.b.add(Op.MUL, (a, a)), p.b.const(0.5)))


def _array_unary(p: _ArrayPool) -> int:
    b, a = p.b, p.pick()
    op = p.draw(st.sampled_from([o for o in _UNARY if p.kinks or o is not Op.RELU]))
    if op is Op.EXP:
        return b.add(op, (b.add(Op.TANH, (a,)),))
    if op in (Op.LOG, Op.SQRT):
        return b.add(op, (_positive_array(p, a),))
    if op is Op.POW:
        power = p.draw(st.sampled_from([2.0, 3.0, -1.0, 0.5, -0.5, 1.5]))
        base = a if power.is_integer() and power >= 0 else _positive_array(p, a)
        return b.add(op, (base,), make_attrs(p=power))
    return b.add(op, (a,))


def _array_binary(p: _ArrayPool) -> int:
    b, a = p.b, p.pick()
    op = p.draw(st.sampled_from([o for o in _BINARY if p.kinks or o is not Op.MAX]))
    other = p.partner(p.shape(a))
    if op is Op.DIV:
        return b.add(op, (a, b.add(Op.ADD, (b.add(Op.MUL, (other, other)), b.const(1.0)))))
    pair = (a, other) if p.draw(st.booleans()) else (other, a)
    return b.add(op, pair)


def _array_reduce(p: _ArrayPool, op: Op) -> int:
    a = p.pick(lambda s: len(s) >= 1)
    if a is None:
        return p.pick()
    return p.b.add(op, (a,), make_attrs(axes=p.axes(len(p.shape(a)), min_size=1)))


def _array_dot_general(p: _ArrayPool) -> int:
    """lhs against a node of the same shape: some axes batched, some contracted, the rest free."""
    a = p.pick(lambda s: len(s) >= 1)
    if a is None:
        return p.pick()
    shape = p.shape(a)
    rhs = p.pick(lambda s: s == shape)
    order = p.draw(st.permutations(range(len(shape))))
    n_batch = p.draw(st.integers(0, len(shape)))
    # result rank = batch + 2 * free: contract enough axes to stay within _MAX_RANK
    least = max(0, len(shape) - n_batch - (_MAX_RANK - n_batch) // 2)
    n_contract = p.draw(st.integers(least, len(shape) - n_batch))
    batch = tuple(order[:n_batch])
    contract = tuple(order[n_batch:n_batch + n_contract])
    return p.b.add(Op.DOT_GENERAL, (a, rhs), make_attrs(batch=(batch, batch),
                                                        contract=(contract, contract)))


def _array_matmul(p: _ArrayPool) -> int:
    """``a @ W`` with a constant W: the last axis of ``a`` contracted with W's first."""
    a = p.pick(lambda s: 1 <= len(s) <= _MAX_RANK - 1)
    if a is None:
        return p.pick()
    shape = p.shape(a)
    w = p.const((shape[-1], p.draw(st.integers(1, 3))))
    return p.b.add(Op.DOT_GENERAL, (a, w), make_attrs(batch=((), ()),
                                                      contract=((len(shape) - 1,), (0,))))


def _array_reshape(p: _ArrayPool) -> int:
    a = p.pick()
    size = prod(p.shape(a))
    divisor = p.draw(st.sampled_from([d for d in range(1, size + 1) if size % d == 0]))
    target = p.draw(st.sampled_from([(size,), (divisor, size // divisor), (1, size), ()]
                                    if size == 1 else [(size,), (divisor, size // divisor), (1, size)]))
    return p.b.add(Op.RESHAPE, (a,), make_attrs(shape=target))


def _array_transpose(p: _ArrayPool) -> int:
    a = p.pick()
    perm = tuple(p.draw(st.permutations(range(len(p.shape(a))))))
    return p.b.add(Op.TRANSPOSE, (a,), make_attrs(perm=perm))


def _array_broadcast(p: _ArrayPool) -> int:
    a = p.pick(lambda s: len(s) < _MAX_RANK)
    shape = p.shape(a)
    stretched = tuple(p.draw(st.integers(1, 3)) if d == 1 else d for d in shape)
    lead = tuple(p.draw(st.lists(st.integers(1, 3), max_size=_MAX_RANK - len(shape))))
    return p.b.add(Op.BROADCAST, (a,), make_attrs(shape=lead + stretched))


def _array_slice(p: _ArrayPool) -> int:
    a = p.pick()
    start, stop, step = [], [], []
    for d in p.shape(a):
        lo = p.draw(st.integers(0, d - 1))
        start.append(lo)
        stop.append(p.draw(st.integers(lo + 1, d)))
        step.append(p.draw(st.integers(1, 2)))
    return p.b.add(Op.SLICE, (a,), make_attrs(start=tuple(start), step=tuple(step), stop=tuple(stop)))


def _array_concatenate(p: _ArrayPool) -> int:
    a = p.pick(lambda s: len(s) >= 1)
    if a is None:
        return p.pick()
    shape = p.shape(a)
    axis = p.draw(st.integers(0, len(shape) - 1))
    fits = lambda s: len(s) == len(shape) and all(  # noqa: E731
        x == y for i, (x, y) in enumerate(zip(s, shape)) if i != axis)
    others = [p.pick(fits) for _ in range(p.draw(st.integers(1, 2)))]
    return p.b.add(Op.CONCATENATE, (a, *others), make_attrs(axis=axis))


def _array_take(p: _ArrayPool) -> int:
    a = p.pick(lambda s: 1 <= len(s) <= _MAX_RANK - 1)
    if a is None:
        return p.pick()
    shape = p.shape(a)
    axis = p.draw(st.integers(0, len(shape) - 1))
    if p.index is not None and p.draw(st.integers(0, 3)):
        return p.b.add(Op.TAKE, (a, p.index), make_attrs(axis=axis))  # per-step data indices
    index_shape = p.draw(st.sampled_from([(), (2,), (3,), (2, 2)]))
    values = p.draw(st.lists(st.integers(0, shape[axis] - 1), min_size=prod(index_shape),
                             max_size=prod(index_shape)))
    indices = p.b.const_array(np.array(values, dtype=np.float64).reshape(index_shape))
    return p.b.add(Op.TAKE, (a, indices), make_attrs(axis=axis))


def _array_scatter_add(p: _ArrayPool) -> int:
    a = p.pick(lambda s: len(s) >= 1)
    if a is None:
        return p.pick()
    shape = p.shape(a)
    axis = p.draw(st.integers(0, len(shape) - 1))
    size = p.draw(st.integers(1, 4))
    values = p.draw(st.lists(st.integers(0, size - 1), min_size=shape[axis], max_size=shape[axis]))
    indices = p.b.const_array(np.array(values, dtype=np.float64))
    return p.b.add(Op.SCATTER_ADD, (a, indices), make_attrs(axis=axis, size=size))


def _array_variadic(p: _ArrayPool, op: Op) -> int:
    a = p.pick()
    count = 3 if op is Op.SUM else 4
    return p.b.add(op, p.partners(a, count - 1))


def _array_select(p: _ArrayPool) -> int:
    a, c, yes, no = p.partners(p.pick(), 3)
    return p.b.add(Op.SELECT, (p.b.add(Op.GT, (a, c)), yes, no))


_ARRAY_EMITTERS = {
    "unary": _array_unary, "binary": _array_binary,
    "reduce_sum": lambda p: _array_reduce(p, Op.REDUCE_SUM),
    "reduce_max": lambda p: _array_reduce(p, Op.REDUCE_MAX),
    "dot_general": _array_dot_general, "matmul": _array_matmul, "reshape": _array_reshape,
    "transpose": _array_transpose, "broadcast": _array_broadcast, "slice": _array_slice,
    "concatenate": _array_concatenate, "take": _array_take, "scatter_add": _array_scatter_add,
    "sum": lambda p: _array_variadic(p, Op.SUM), "dot": lambda p: _array_variadic(p, Op.DOT),
    "select": _array_select,
}


@st.composite
def random_array_circuits(draw, ops=ARRAY_OPS, max_nodes: int = 10, kinks: bool = True,
                          x_shape=None, w_shape=None, index_input: bool = False) -> Circuit:
    """A verified array circuit over whole-array inputs ``x`` and ``w`` (small random shapes
    unless given), with outputs ``y`` (the last node, whole) and ``total`` (its sum, 0-d).

    ``ops`` names the kinds of node drawn (:data:`ARRAY_OPS`); ``kinks=False`` leaves out relu,
    max, reduce_max and select, whose series are undefined at ties (broadcasts make ties).
    ``index_input`` adds an input ``idx`` [2] that ``take`` may read as its indices (per-step
    data); :func:`random_array_inputs` fills it with integers in range for every reader.
    """
    unknown = set(ops) - set(_ARRAY_EMITTERS)
    if unknown:
        raise ValueError(f"unknown array op kinds {sorted(unknown)}; known: {ARRAY_OPS}")
    b = Builder()
    nodes = [b.input_array("x", x_shape if x_shape is not None else draw(small_shapes())),
             b.input_array("w", w_shape if w_shape is not None else draw(small_shapes()))]
    index = b.input_array("idx", (2,)) if index_input else None
    pool = _ArrayPool(draw, b, nodes, kinks, index)
    choices = [k for k in ops if kinks or k not in _KINKED]
    for _ in range(draw(st.integers(1, max_nodes))):
        nodes.append(_ARRAY_EMITTERS[draw(st.sampled_from(choices))](pool))
    last = nodes[-1]
    b.output("y", [last], b.eqns[last].shape)
    rank = len(b.eqns[last].shape)
    total = b.add(Op.REDUCE_SUM, (last,), make_attrs(axes=tuple(range(rank)))) if rank else last
    b.output("total", [total], ())
    return verify(b.build())


def every_array_op_circuit() -> Circuit:
    """Each array op once (tuple attributes of every kind), broadcasting, an array constant
    holding infinities, a per-step index input, and outputs whole and by element."""
    b = Builder()
    x = b.input_array("x", (2, 3), loc="model.py:1")
    w = b.input_array("w", (3, 4), loc="model.py:1")
    tokens = b.input_array("tokens", (2,))
    attrs = make_attrs
    xw = b.add(Op.DOT_GENERAL, (x, w), attrs(batch=((), ()), contract=((1,), (0,))), "model.py:2")
    row = b.const_array([1.0, -np.inf, 0.25])
    shifted = b.add(Op.ADD, (b.add(Op.MAX, (x, row)), b.const(0.5)))  # max([2,3], [3]) + 0-d
    batched = b.add(Op.DOT_GENERAL, (shifted, x), attrs(batch=((0,), (0,)), contract=((1,), (1,))))
    total = b.add(Op.REDUCE_SUM, (xw,), attrs(axes=(1,)))
    peak = b.add(Op.REDUCE_MAX, (xw,), attrs(axes=(0, 1)))
    flipped = b.add(Op.TRANSPOSE, (b.add(Op.RESHAPE, (xw,), attrs(shape=(4, 2))),), attrs(perm=(1, 0)))
    spread = b.add(Op.BROADCAST, (total,), attrs(shape=(4, 2)))
    part = b.add(Op.SLICE, (x,), attrs(start=(0, 1), step=(1, 2), stop=(2, 3)))
    stacked = b.add(Op.CONCATENATE, (flipped, xw, b.add(Op.TRANSPOSE, (spread,), attrs(perm=(1, 0)))),
                    attrs(axis=1))
    columns = b.add(Op.TAKE, (w, tokens), attrs(axis=1))
    fixed = b.add(Op.TAKE, (w, b.const_array([2.0, 0.0])), attrs(axis=1))
    scattered = b.add(Op.SCATTER_ADD, (b.add(Op.MUL, (columns, fixed)), tokens), attrs(axis=1, size=4))
    smooth = b.add(Op.EXP, (b.add(Op.TANH, (stacked,)),))
    b.output("stacked", [smooth])
    b.output("scattered", [scattered])
    b.output("small", [peak, b.add(Op.REDUCE_SUM, (batched,), attrs(axes=(0,))), peak, peak], (2, 2))
    b.output("part", [part])
    return b.build()


def random_array_inputs(circuit: Circuit, seed: int, batch: int | None = None) -> dict:
    """Values for every input of ``circuit`` (``[batch, *shape]`` if batched): uniform in
    (-1.5, 1.5), except inputs read as take/scatter_add indices, which get integers in range
    for every node reading them."""
    rng = np.random.default_rng(seed)
    lead = () if batch is None else (batch,)
    bounds = _index_bounds(circuit)
    values = {}
    for name, shape in circuit.inputs:
        if name in bounds:
            values[name] = rng.integers(0, bounds[name], size=lead + shape).astype(np.float64)
        else:
            values[name] = rng.uniform(-1.5, 1.5, size=lead + shape)
    return values


def _index_bounds(circuit: Circuit) -> dict[str, int]:
    """Input name -> the smallest index range of the take/scatter_add nodes that read it."""
    bounds: dict[str, int] = {}
    for eqn in circuit.eqns:
        for position in INDEX_OPERANDS.get(eqn.op, ()):
            source = circuit.eqns[eqn.args[position]]
            if source.op is not Op.INPUT:
                continue
            axis = eqn.attr("axis")
            size = eqn.attr("size") if eqn.op is Op.SCATTER_ADD else \
                circuit.eqns[eqn.args[0]].shape[axis]
            name = source.attr("name")
            bounds[name] = min(bounds.get(name, size), size)
    return bounds
