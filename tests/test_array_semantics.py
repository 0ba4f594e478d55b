"""Array ops in the reference interpreter against plain numpy, real and series.

Real values: every array op (reductions, dot_general, structure ops, take/scatter_add) on random
shapes and axis choices, unbatched and batched, against the numpy expression it means. Series:
linear ops must act on each coefficient alike, dot_general of two series is the Cauchy product
of contractions, reduce_max picks the series of the largest constant term; and a composite
array program's Taylor coefficients match central finite differences of the real program along
the same direction.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import circuitsketch as cs
from circuitsketch.backends.reference import EvaluationError
from circuitsketch.ir.circuit import Builder, make_attrs
from circuitsketch.ir.ops import Op
from circuitsketch.ir.shapes import ShapeError
from circuitsketch.passes.taylor import taylor

RNG = np.random.default_rng(7)


def one_op(op: Op, shapes, data=(), **attrs):
    """A circuit applying ``op`` to inputs a0, a1, ... of ``shapes`` (``data`` names index inputs)."""
    b = Builder()
    nodes = [b.input_array(f"a{i}", s) for i, s in enumerate(shapes)]
    out = b.add(op, tuple(nodes), make_attrs(**attrs))
    b.output("out", [out], b.eqns[out].shape)
    return b.build()


def run(circuit, inputs, **kw):
    return cs.evaluate(circuit, inputs, backend="reference", **kw)["out"]


shape_st = st.lists(st.integers(1, 4), min_size=0, max_size=3).map(tuple)


@settings(max_examples=40, deadline=None)
@given(shape=st.lists(st.integers(1, 4), min_size=1, max_size=4).map(tuple), data=st.data())
def test_reductions_match_numpy(shape, data):
    axes = tuple(sorted(data.draw(st.sets(st.integers(0, len(shape) - 1)))))
    a = RNG.normal(size=shape)
    for op, fn in ((Op.REDUCE_SUM, np.sum), (Op.REDUCE_MAX, np.max)):
        got = run(one_op(op, [shape], axes=axes), {"a0": a})
        np.testing.assert_allclose(got, fn(a, axis=axes), rtol=1e-14, atol=1e-14)


@settings(max_examples=40, deadline=None)
@given(shape=st.lists(st.integers(1, 4), min_size=1, max_size=3).map(tuple), data=st.data())
def test_structure_ops_match_numpy(shape, data):
    a = RNG.normal(size=shape)
    perm = tuple(data.draw(st.permutations(range(len(shape)))))
    np.testing.assert_array_equal(run(one_op(Op.TRANSPOSE, [shape], perm=perm), {"a0": a}),
                                  a.transpose(perm))
    new = (int(np.prod(shape)),)
    np.testing.assert_array_equal(run(one_op(Op.RESHAPE, [shape], shape=new), {"a0": a}),
                                  a.reshape(new))
    target = (2,) + tuple(1 if d == 1 and data.draw(st.booleans()) else d for d in shape)
    target = target[:1] + tuple(3 if d == 1 else d for d in shape)
    np.testing.assert_array_equal(run(one_op(Op.BROADCAST, [shape], shape=target), {"a0": a}),
                                  np.broadcast_to(a, target))
    start = tuple(data.draw(st.integers(0, d)) for d in shape)
    stop = tuple(data.draw(st.integers(s, d)) for s, d in zip(start, shape))
    step = tuple(data.draw(st.integers(1, 3)) for _ in shape)
    got = run(one_op(Op.SLICE, [shape], start=start, stop=stop, step=step), {"a0": a})
    np.testing.assert_array_equal(got, a[tuple(slice(*t) for t in zip(start, stop, step))])
    axis = data.draw(st.integers(0, len(shape) - 1))
    other = shape[:axis] + (2,) + shape[axis + 1:]
    b = RNG.normal(size=other)
    np.testing.assert_array_equal(run(one_op(Op.CONCATENATE, [shape, other], axis=axis),
                                      {"a0": a, "a1": b}), np.concatenate([a, b], axis=axis))


@settings(max_examples=30, deadline=None)
@given(shape=st.lists(st.integers(1, 4), min_size=1, max_size=3).map(tuple),
       index_shape=st.lists(st.integers(1, 3), min_size=0, max_size=2).map(tuple), data=st.data())
def test_take_and_scatter_add_match_numpy(shape, index_shape, data):
    axis = data.draw(st.integers(0, len(shape) - 1))
    a = RNG.normal(size=shape)
    idx = RNG.integers(0, shape[axis], size=index_shape).astype(float)
    got = run(one_op(Op.TAKE, [shape, index_shape], axis=axis), {"a0": a, "a1": idx})
    np.testing.assert_array_equal(got, np.take(a, idx.astype(int), axis=axis))
    updates = np.asarray(RNG.normal(size=got.shape))
    expected = np.zeros(shape)
    for position in np.ndindex(*index_shape):  # each update row added at its index, one by one
        expected[(slice(None),) * axis + (int(idx[position]),)] += updates[(slice(None),) * axis + position]
    scattered = run(one_op(Op.SCATTER_ADD, [got.shape, index_shape], axis=axis, size=shape[axis]),
                    {"a0": updates, "a1": idx})
    np.testing.assert_allclose(scattered, expected, rtol=1e-14, atol=1e-14)


DOT_CASES = [  # (lhs shape, rhs shape, contract, batch, numpy einsum)
    ((3,), (3,), ((0,), (0,)), ((), ()), "i,i->"),
    ((2, 3), (3,), ((1,), (0,)), ((), ()), "ij,j->i"),
    ((2, 3), (3, 4), ((1,), (0,)), ((), ()), "ij,jk->ik"),
    ((2, 3), (4, 3), ((1,), (1,)), ((), ()), "ij,kj->ik"),
    ((5, 2, 3), (5, 3, 4), ((2,), (1,)), ((0,), (0,)), "bij,bjk->bik"),
    ((4, 5, 2), (5, 3, 2), ((2,), (2,)), ((1,), (0,)), "ibh,bjh->bij"),
    ((2, 3), (4,), ((), ()), ((), ()), "ij,k->ijk"),
]


@pytest.mark.parametrize("lhs,rhs,contract,batch,spec", DOT_CASES)
def test_dot_general_matches_einsum(lhs, rhs, contract, batch, spec):
    a, b = RNG.normal(size=lhs), RNG.normal(size=rhs)
    circuit = one_op(Op.DOT_GENERAL, [lhs, rhs], contract=contract, batch=batch)
    np.testing.assert_allclose(run(circuit, {"a0": a, "a1": b}), np.einsum(spec, a, b), rtol=1e-13)
    batched = run(circuit, {"a0": np.stack([a, 2 * a]), "a1": b}, batch=2)
    np.testing.assert_allclose(batched[1], 2 * np.einsum(spec, a, b), rtol=1e-13)


def test_elementwise_broadcasting_matches_numpy():
    b = Builder()
    x, y, c = b.input_array("x", (4, 1, 3)), b.input_array("y", (2, 1)), b.input_array("c", ())
    out = b.add(Op.SELECT, (b.add(Op.GT, (x, y)), b.add(Op.MUL, (x, c)), y))
    b.output("out", [out])
    xv, yv = RNG.normal(size=(4, 1, 3)), RNG.normal(size=(2, 1))
    got = run(b.build(), {"x": xv, "y": yv, "c": 2.5})
    np.testing.assert_array_equal(got, np.where(xv > yv, xv * 2.5, yv))


def test_shape_errors_name_the_op():
    with pytest.raises(ShapeError, match="dot_general.*contract"):
        one_op(Op.DOT_GENERAL, [(2, 3), (4, 5)], contract=((1,), (0,)), batch=((), ()))
    with pytest.raises(ShapeError, match="add.*broadcast"):
        one_op(Op.ADD, [(2, 3), (4,)])
    with pytest.raises(ShapeError, match="reduce_sum.*out of range"):
        one_op(Op.REDUCE_SUM, [(2, 3)], axes=(2,))


def test_take_refuses_bad_indices_naming_the_node():
    circuit = one_op(Op.TAKE, [(3, 2), (2,)], axis=0)
    with pytest.raises(EvaluationError, match=r"%2 = take.*out of range"):
        run(circuit, {"a0": np.ones((3, 2)), "a1": np.array([0.0, 3.0])})
    with pytest.raises(EvaluationError, match=r"take.*non-integer"):
        run(circuit, {"a0": np.ones((3, 2)), "a1": np.array([0.0, 1.5])})


# ---------------------------------------------------------------- series

K = 3


def random_series(shape, k=K):
    """A series input (k+1, *shape) with a real constant term."""
    s = RNG.normal(size=(k + 1,) + shape) + 1j * RNG.normal(size=(k + 1,) + shape)
    s[0] = s[0].real
    return s


LINEAR_CASES = [  # (op, operand shape, attrs, numpy on one coefficient)
    (Op.REDUCE_SUM, (2, 3, 4), dict(axes=(0, 2)), lambda a: a.sum(axis=(0, 2))),
    (Op.TRANSPOSE, (2, 3, 4), dict(perm=(2, 0, 1)), lambda a: a.transpose(2, 0, 1)),
    (Op.RESHAPE, (2, 3, 4), dict(shape=(6, 4)), lambda a: a.reshape(6, 4)),
    (Op.BROADCAST, (3, 1), dict(shape=(2, 3, 5)), lambda a: np.broadcast_to(a, (2, 3, 5))),
    (Op.SLICE, (5, 4), dict(start=(1, 0), stop=(5, 3), step=(2, 1)), lambda a: a[1:5:2, 0:3]),
]


@pytest.mark.parametrize("op,shape,attrs,fn", LINEAR_CASES, ids=lambda v: getattr(v, "value", ""))
def test_linear_op_series_act_on_each_coefficient(op, shape, attrs, fn):
    lowered = taylor(one_op(op, [shape], **attrs), order=K, seeds={"a0"})
    s = random_series(shape)
    got = run(lowered, {"a0": s})
    np.testing.assert_allclose(got, np.stack([fn(s[j]) for j in range(K + 1)]), rtol=1e-14)


def test_take_series_with_real_indices_and_concatenate_with_a_real_operand():
    lowered = taylor(one_op(Op.TAKE, [(4, 3), (2, 2)], axis=0), order=K, seeds={"a0"})
    s, idx = random_series((4, 3)), np.array([[3.0, 0.0], [1.0, 1.0]])
    got = run(lowered, {"a0": s, "a1": idx})
    np.testing.assert_array_equal(got, s[:, idx.astype(int)])
    lowered = taylor(one_op(Op.CONCATENATE, [(2, 3), (1, 3)], axis=0), order=K, seeds={"a0"})
    real = RNG.normal(size=(1, 3))
    got = run(lowered, {"a0": s[:, :2], "a1": real})
    expected = np.concatenate([s[:, :2], np.concatenate([real[None], np.zeros((K, 1, 3))])], axis=1)
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("lhs,rhs,contract,batch,spec", DOT_CASES[1:6])
def test_dot_general_of_two_series_is_the_cauchy_product(lhs, rhs, contract, batch, spec):
    circuit = one_op(Op.DOT_GENERAL, [lhs, rhs], contract=contract, batch=batch)
    a, b = random_series(lhs), random_series(rhs)
    both = run(taylor(circuit, order=K, seeds={"a0", "a1"}), {"a0": a, "a1": b})
    expected = [sum(np.einsum(spec, a[i], b[r - i]) for i in range(r + 1)) for r in range(K + 1)]
    np.testing.assert_allclose(both, np.stack(expected), rtol=1e-12, atol=1e-12)
    real_b = RNG.normal(size=rhs)
    one = run(taylor(circuit, order=K, seeds={"a0"}), {"a0": a, "a1": real_b})
    np.testing.assert_allclose(one, np.stack([np.einsum(spec, a[j], real_b) for j in range(K + 1)]),
                               rtol=1e-12, atol=1e-12)


def test_reduce_max_series_follows_the_largest_constant_term_and_refuses_ties():
    lowered = taylor(one_op(Op.REDUCE_MAX, [(2, 3)], axes=(1,)), order=K, seeds={"a0"})
    s = random_series((2, 3))
    got = run(lowered, {"a0": s})
    winners = np.argmax(s[0].real, axis=1)
    np.testing.assert_array_equal(got, s[:, [0, 1], winners])
    s[0, 0, 1] = s[0, 0, 2] = s[0, 0].real.max() + 1.0
    with pytest.raises(cs.KinkError, match="reduce_max"):
        run(lowered, {"a0": s})
    assert run(lowered, {"a0": s}, ignore_kinks=True).shape == (K + 1, 2)


def _composite(b: Builder, x: int, w: int, idx: int) -> int:
    """sum(exp(take(W, idx) @ x) * reduce_max(x)) + sum(gelu(x)): every array op kind at once."""
    rows = b.add(Op.TAKE, (w, idx), make_attrs(axis=0))                 # [2, 3]
    h = b.add(Op.DOT_GENERAL, (rows, x), make_attrs(contract=((1,), (0,)), batch=((), ())))
    scaled = b.add(Op.MUL, (b.add(Op.EXP, (h,)), b.add(Op.REDUCE_MAX, (x,), make_attrs(axes=(0,)))))
    first = b.add(Op.REDUCE_SUM, (scaled,), make_attrs(axes=(0,)))
    second = b.add(Op.REDUCE_SUM, (b.add(Op.GELU, (x,)),), make_attrs(axes=(0,)))
    return b.add(Op.ADD, (first, second))


def test_composite_array_program_series_matches_finite_differences():
    b = Builder()
    x, w, idx = b.input_array("x", (3,)), b.input_array("w", (4, 3)), b.input_array("idx", (2,))
    b.output("out", [_composite(b, x, w, idx)])
    circuit = b.build()
    x0, v = np.array([0.3, -0.2, 0.1]), RNG.normal(size=3)
    w0, i0 = RNG.normal(size=(4, 3)) * 0.5, np.array([2.0, 0.0])
    seed = np.zeros((3, 3)); seed[0], seed[1] = x0, v
    c = run(taylor(circuit, order=2, seeds={"x"}), {"x": seed, "w": w0, "idx": i0})
    f = lambda t: run(circuit, {"x": x0 + t * v, "w": w0, "idx": i0})  # noqa: E731
    h = 1e-4
    d1 = (f(h) - f(-h)) / (2 * h)
    d2 = (f(h) - 2 * f(0) + f(-h)) / h ** 2
    np.testing.assert_allclose(c[0].real, f(0), rtol=1e-14)
    np.testing.assert_allclose(c[1], d1, rtol=1e-7)          # central difference error O(h^2)
    np.testing.assert_allclose(c[2], d2 / 2, rtol=1e-5)      # second difference error O(h^2) + roundoff
