"""The numpy-like Tensor tracer against plain numpy: every operation is traced with
``inputs="tensors"``, run by the reference interpreter and compared with numpy on the same data,
on random shapes (broadcasting, every axis choice, random index keys).

Tolerances: the interpreter runs the same float64 numpy operations, so elementwise ops,
slicing and gathering agree exactly; reductions and contractions may sum in another order
(einsum/tensordot vs matmul), so they are compared at 1e-12 relative to the summed magnitudes.
Errors are checked to name the user's line (``# <- marker`` comments, as in test_tracer.py)."""

from __future__ import annotations

import math
import pathlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import circuitsketch as cs
from circuitsketch import Op, TraceError
from circuitsketch.backends.reference import evaluate
from circuitsketch.ir.shapes import ShapeError

_SOURCE = pathlib.Path(__file__).read_text().splitlines()


def line_of(marker: str) -> str:
    """``test_tensor_tracer.py:N`` of the unique line carrying ``# <- marker``."""
    hits = [i + 1 for i, text in enumerate(_SOURCE) if text.rstrip().endswith(f"# <- {marker}")]
    assert len(hits) == 1, f"marker {marker!r} found {len(hits)} times"
    return f"test_tensor_tracer.py:{hits[0]}"


def run(fn, **arrays):
    """Trace ``fn`` over Tensors of the arrays' shapes and evaluate it on the arrays."""
    arrays = {k: np.asarray(v, dtype=np.float64) for k, v in arrays.items()}
    circuit = cs.trace(fn, inputs="tensors", **{k: v.shape for k, v in arrays.items()})
    return circuit, evaluate(circuit, arrays)


def data(shape, seed=0, low=-2.0, high=2.0):
    return np.random.default_rng(seed).uniform(low, high, size=shape)


def close(got, want, rtol=1e-12):
    want = np.asarray(want, dtype=np.float64)
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * max(1.0, float(np.abs(want).max(initial=0))))
    assert np.shape(got) == want.shape


def op_counts(circuit):
    return {op: n for op, n in circuit.op_counts().items() if op not in ("input", "const")}


# ---------------------------------------------------------------- elementwise with broadcasting

BINARY = {
    "add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b, "lt": lambda a, b: a < b, "le": lambda a, b: a <= b,
    "gt": lambda a, b: a > b, "ge": lambda a, b: a >= b,
}
NUMPY_BINARY = {**BINARY, **{k: (lambda f: lambda a, b: f(a, b).astype(np.float64))(BINARY[k])
                             for k in ("lt", "le", "gt", "ge")}}


@settings(max_examples=40, deadline=None)
@given(shapes=hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=3, max_side=3),
       name=st.sampled_from(sorted(BINARY)), seed=st.integers(0, 2**16))
def test_binary_ops_broadcast_like_numpy(shapes, name, seed):
    a, b = data(shapes.input_shapes[0], seed), data(shapes.input_shapes[1], seed + 1, 0.5, 2.0)
    circuit, got = run(lambda a, b: BINARY[name](a, b), a=a, b=b)
    want = NUMPY_BINARY[name](a, b)
    np.testing.assert_array_equal(got["out"], want)
    assert op_counts(circuit) == {name: 1} and circuit.output("out").shape == want.shape


@settings(max_examples=25, deadline=None)
@given(shapes=hnp.mutually_broadcastable_shapes(num_shapes=3, max_dims=3, max_side=3),
       seed=st.integers(0, 2**16))
def test_where_and_maximum_broadcast(shapes, seed):
    c, a, b = (data(s, seed + i) for i, s in enumerate(shapes.input_shapes))
    _, got = run(lambda c, a, b: {"w": cs.where(c > 0, a, b), "m": cs.maximum(a, b)}, c=c, a=a, b=b)
    np.testing.assert_array_equal(got["w"], np.where(c > 0, a, b))
    np.testing.assert_array_equal(got["m"], np.broadcast_to(np.maximum(a, b), got["m"].shape))


def test_numbers_and_numpy_arrays_mix_in_as_constants():
    x, k = data((2, 3)), np.array([1.0, -2.0, 0.5])
    _, got = run(lambda x: {"a": 2 * x - 1, "b": k * x + x / k, "c": 1 / (x + 3), "d": k - x,
                            "e": -x, "f": x ** 3, "g": 2.0 ** x, "h": np.exp(x) + k}, x=x)
    want = {"a": 2 * x - 1, "b": k * x + x / k, "c": 1 / (x + 3), "d": k - x, "e": -x,
            "f": x ** 3, "g": 2.0 ** x, "h": np.exp(x) + k}
    for name in want:
        close(got[name], want[name], 1e-15)


def test_unary_functions_and_methods():
    x = data((3, 2))
    pos = np.abs(x) + 0.1
    erf = np.vectorize(math.erf)
    _, got = run(lambda x, p: {"exp": cs.exp(x), "log": cs.log(p), "sqrt": p.sqrt(), "tanh": cs.tanh(x),
                               "erf": x.erf(), "gelu": cs.gelu(x), "relu": x.relu(), "rsqrt": cs.rsqrt(p),
                               "ufunc": np.tanh(x) + np.sqrt(p)}, x=x, p=pos)
    want = {"exp": np.exp(x), "log": np.log(pos), "sqrt": np.sqrt(pos), "tanh": np.tanh(x),
            "erf": erf(x), "gelu": x * 0.5 * (1 + erf(x / math.sqrt(2))), "relu": np.maximum(x, 0),
            "rsqrt": pos ** -0.5, "ufunc": np.tanh(x) + np.sqrt(pos)}
    for name in want:
        close(got[name], want[name], 1e-14)


# ---------------------------------------------------------------- reductions over every axis choice

@st.composite
def axis_choices(draw):
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=1, max_side=3))
    ndim = len(shape)
    kind = draw(st.sampled_from(["none", "int", "tuple"]))
    if kind == "none" or ndim == 0:
        return shape, None
    if kind == "int":
        return shape, draw(st.integers(-ndim, ndim - 1))
    axes = draw(st.lists(st.integers(0, ndim - 1), unique=True, max_size=ndim))
    return shape, tuple(a - ndim if draw(st.booleans()) else a for a in axes)


@settings(max_examples=60, deadline=None)
@given(choice=axis_choices(), keepdims=st.booleans(), how=st.sampled_from(["sum", "max", "mean"]),
       seed=st.integers(0, 2**16))
def test_reductions_match_numpy_for_every_axis_choice(choice, keepdims, how, seed):
    shape, axis = choice
    x = data(shape, seed)
    _, got = run(lambda x: getattr(x, how)(axis=axis, keepdims=keepdims), x=x)
    close(got["out"], getattr(x, how)(axis=axis, keepdims=keepdims))


def test_a_reduction_is_one_node():
    circuit, _ = run(lambda x: {"s": x.sum(axis=(0, 2)), "m": x.max(axis=-1, keepdims=True)},
                     x=data((2, 3, 4)))
    assert op_counts(circuit) == {"reduce_sum": 1, "reduce_max": 1, "reshape": 1}
    reduce = [e for e in circuit.eqns if e.op is Op.REDUCE_MAX][0]
    assert reduce.attr("axes") == (2,)  # the negative axis is normalised


# ---------------------------------------------------------------- matmul, dot_general, einsum

MATMUL_SHAPES = [((3,), (3,)), ((2, 3), (3,)), ((3,), (3, 4)), ((2, 3), (3, 4)),
                 ((5, 2, 3), (3, 4)), ((2, 3), (5, 3, 4)), ((3,), (5, 3, 4)), ((5, 2, 3), (3,)),
                 ((5, 2, 3), (5, 3, 4)), ((1, 2, 3), (5, 3, 4)), ((6, 1, 2, 3), (5, 3, 4))]


@pytest.mark.parametrize("sa, sb", MATMUL_SHAPES)
def test_matmul_follows_numpy_for_every_rank(sa, sb):
    a, b = data(sa, 1), data(sb, 2)
    circuit, got = run(lambda a, b: a @ b, a=a, b=b)
    close(got["out"], a @ b)
    counts = op_counts(circuit)
    assert counts.pop("dot_general") == 1
    assert set(counts) <= {"transpose", "broadcast"} and counts.get("transpose", 0) <= 1


def test_matmul_needs_a_transpose_only_for_an_unbatched_matrix_on_the_left():
    assert "transpose" not in op_counts(run(lambda a, b: a @ b, a=data((5, 2, 3)), b=data((3, 4)))[0])
    assert op_counts(run(lambda a, b: a @ b, a=data((2, 3)), b=data((5, 3, 4)))[0])["transpose"] == 1


def test_matmul_with_constants_on_either_side():
    x, w = data((2, 3)), data((3, 4), 5)
    _, got = run(lambda x: {"right": x @ w, "left": w.T @ x.T, "ufunc": np.matmul(x, w)}, x=x)
    close(got["right"], x @ w)
    close(got["left"], w.T @ x.T)
    close(got["ufunc"], x @ w)


@pytest.mark.parametrize("spec, sa, sb", [
    ("ij,jk->ik", (2, 3), (3, 4)), ("ij,jk->ki", (2, 3), (3, 4)), ("ij,jk", (2, 3), (3, 4)),
    ("bqd,bkd->bqk", (2, 3, 4), (2, 5, 4)), ("bqk,bkd->bqd", (2, 3, 5), (2, 5, 4)),
    ("i,j->ij", (3,), (4,)), ("ij,ij->", (2, 3), (2, 3)), ("ij,kj->jik", (2, 3), (4, 3)),
    ("ij,k->i", (2, 3), (4,)), ("hqd,khd->hqk", (2, 3, 4), (5, 2, 4)),
])
def test_einsum_is_one_dot_general(spec, sa, sb):
    a, b = data(sa, 3), data(sb, 4)
    circuit, got = run(lambda a, b: cs.einsum(spec, a, b), a=a, b=b)
    close(got["out"], np.einsum(spec, a, b))
    assert op_counts(circuit).get("dot_general") == 1


def test_dot_general_takes_dimension_numbers():
    a, b = data((4, 2, 3), 1), data((3, 4, 5), 2)
    _, got = run(lambda a, b: cs.dot_general(a, b, contract=((-1,), (0,)), batch=((0,), (1,))), a=a, b=b)
    close(got["out"], np.einsum("bij,jbk->bik", a, b))


# ---------------------------------------------------------------- structure

@settings(max_examples=30, deadline=None)
@given(shape=hnp.array_shapes(min_dims=1, max_dims=4, max_side=3), data_=st.data())
def test_transpose_and_reshape_like_numpy(shape, data_):
    x = data(shape)
    perm = data_.draw(st.permutations(range(len(shape))))
    target = data_.draw(st.sampled_from([(-1,), (x.size, 1), (1, -1, 1)]))
    _, got = run(lambda x: {"p": x.transpose(*perm), "t": x.T, "r": x.reshape(target),
                            "rt": x.transpose(perm).reshape(-1)}, x=x)
    np.testing.assert_array_equal(got["p"], x.transpose(*perm))
    np.testing.assert_array_equal(got["t"], x.T)
    np.testing.assert_array_equal(got["r"], x.reshape(target))
    np.testing.assert_array_equal(got["rt"], x.transpose(perm).reshape(-1))


def test_broadcast_to_and_identities_record_nothing_extra():
    x = data((3, 1))
    circuit, got = run(lambda x: {"b": x.broadcast_to((2, 3, 4)), "same": x.reshape(3, 1).transpose(0, 1)}, x=x)
    np.testing.assert_array_equal(got["b"], np.broadcast_to(x, (2, 3, 4)))
    assert op_counts(circuit) == {"broadcast": 1}


@st.composite
def index_keys(draw):
    """A random basic index (ints, slices with step >= 1, None, Ellipsis) for a random shape."""
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=4))
    items, used, ellipsis = [], 0, False
    for _ in range(draw(st.integers(0, len(shape) + 1))):
        kind = draw(st.sampled_from(["int", "slice", "none", "ellipsis"]))
        if kind == "none":
            items.append(None)
        elif kind == "ellipsis" and not ellipsis:
            items.append(Ellipsis)
            ellipsis = True
        elif kind in ("int", "slice") and used < len(shape):
            # an Ellipsis fills the axes left over, so later items index the last axes
            d = shape[used]
            if kind == "int":
                items.append(draw(st.integers(-d, d - 1)))
            else:
                bounds = st.none() | st.integers(-d - 2, d + 2)
                items.append(slice(draw(bounds), draw(bounds), draw(st.none() | st.integers(1, 3))))
            used += 1
    if ellipsis:  # keep the key valid: the items after the Ellipsis must fit the trailing axes
        at = items.index(Ellipsis)
        after = [k for k in items[at + 1:] if k is not None]
        if any(isinstance(k, int) and not -shape[len(shape) - len(after) + i] <= k
               < shape[len(shape) - len(after) + i] for i, k in enumerate(after)):
            items = items[:at]
    return shape, tuple(items)


@settings(max_examples=80, deadline=None)
@given(choice=index_keys(), seed=st.integers(0, 2**16))
def test_basic_indexing_matches_numpy(choice, seed):
    shape, key = choice
    x = data(shape, seed)
    circuit, got = run(lambda x: x[key], x=x)
    np.testing.assert_array_equal(got["out"], x[key])
    assert set(op_counts(circuit)) <= {"slice", "reshape"}


def test_scalar_int_index_is_a_slice_and_a_reshape():
    circuit, got = run(lambda x: x[1, -1], x=data((3, 4)))
    assert op_counts(circuit) == {"slice": 1, "reshape": 1} and got["out"].shape == ()


@pytest.mark.parametrize("key", [
    [2, 0, 2], np.array([[0, -1], [1, 1]]), (slice(None), [1, 0]), (0, [2, 1]), (Ellipsis, [0, 0]),
    (slice(1, None), None, np.array([1, 0])), ([1], 0, slice(None)),
])
def test_integer_array_index_is_one_take(key):
    x = data((3, 4, 2)) if isinstance(key, tuple) and len(key) == 3 else data((3, 4))
    circuit, got = run(lambda x: x[key], x=x)
    np.testing.assert_array_equal(got["out"], x[key])
    assert op_counts(circuit).get("take") == 1


def test_per_step_token_ids_index_an_embedding_table():
    table, tokens = data((5, 3)), np.array([4.0, 0.0, 4.0, 2.0])
    _, got = run(lambda table, tokens: {"rows": table[tokens], "take": cs.take(table, tokens, -2),
                                        "one": table[tokens[1]]}, table=table, tokens=tokens)
    ids = tokens.astype(int)
    np.testing.assert_array_equal(got["rows"], table[ids])
    np.testing.assert_array_equal(got["take"], table[ids])
    np.testing.assert_array_equal(got["one"], table[ids[1]])
    cols = data((3, 5))
    _, got = run(lambda cols, tokens: cs.take(cols, tokens, axis=-1), cols=cols, tokens=tokens)
    np.testing.assert_array_equal(got["out"], np.take(cols, ids, axis=-1))


def test_take_with_constant_indices_and_flattened_default():
    x = data((3, 4))
    _, got = run(lambda x: {"flat": cs.take(x, [11, 0, -1]), "axis1": cs.take(x, np.array([[3], [0]]), axis=1)}, x=x)
    np.testing.assert_array_equal(got["flat"], np.take(x, [11, 0, -1]))
    np.testing.assert_array_equal(got["axis1"], np.take(x, np.array([[3], [0]]), axis=1))


def test_concatenate_and_stack_mix_tensors_values_and_numbers():
    a, b = data((2, 3)), data((2, 1), 1)
    circuit, got = run(lambda a, b: {"cat": cs.concatenate([a, b, np.ones((2, 2))], axis=-1),
                                     "stack": cs.stack([a[0], a[1], 7.0 * a[1]], axis=1),
                                     "row": cs.concatenate([a[0], cs.stack([a[1, 0], 2.0])])}, a=a, b=b)
    np.testing.assert_array_equal(got["cat"], np.concatenate([a, b, np.ones((2, 2))], axis=-1))
    np.testing.assert_array_equal(got["stack"], np.stack([a[0], a[1], 7.0 * a[1]], axis=1))
    np.testing.assert_array_equal(got["row"], np.concatenate([a[0], [a[1, 0]], [2.0]]))


def test_iteration_and_len_follow_the_first_axis():
    x = data((3, 2))
    _, got = run(lambda x: cs.stack([row * float(i) for i, row in enumerate(x)] + [len(x) * x[0]]), x=x)
    np.testing.assert_array_equal(got["out"], np.stack([x[0] * 0, x[1], 2 * x[2], 3 * x[0]]))


# ---------------------------------------------------------------- mixing with Values, programs, outputs

def test_values_and_tensors_mix():
    def f(w):  # w arrives as an object array of scalar Values
        t = cs.stack(list(w))  # a Tensor built from Values
        s = w[0]
        return {"vt": s * t - t / s, "tv": t[1] + s, "sel": cs.select(t[0] > s, t, s),
                "obj": w + t, "max": cs.maximum(s, t), "exp": cs.exp(s) * t, "pow": t ** s,
                "dot": cs.dot(t, t), "vsum": cs.vsum(t), "vmax": cs.vmax(t)}
    w = np.array([0.5, 1.5, 2.0])
    circuit = cs.trace(f, w=(3,))
    got = evaluate(circuit, {"w": w})
    s = w[0]
    want = {"vt": s * w - w / s, "tv": w[1] + s, "sel": np.where(w[0] > s, w, s), "obj": 2 * w,
            "max": np.maximum(s, w), "exp": np.exp(s) * w, "pow": w ** s, "dot": w @ w,
            "vsum": w.sum(), "vmax": w.max()}
    for name in want:
        close(got[name], want[name], 1e-15)


def test_value_operations_still_return_values():
    with cs.frontends.Trace() as t:
        x = t.input_array("x", ())
        t0 = t.input_tensor("v", (2,)).sum()
        assert type(x + 1.0) is cs.Value and type(cs.select(x, x, 0.0)) is cs.Value
        assert type(cs.exp(x)) is cs.Value and type(cs.stop_gradient(x)) is cs.Value
        assert type(x + t0) is cs.Tensor and type(cs.maximum(t0, x)) is cs.Tensor
        assert (x + t0).shape == ()


def test_outputs_take_tensors_values_and_lists_of_0d_tensors():
    circuit, got = run(lambda x: {"t": x, "v": x.sum(), "list": [x[0, 0], x[1, 1]], "n": 2.5}, x=data((2, 2)))
    assert [(o.name, o.shape, len(o.nodes)) for o in circuit.outputs] == [
        ("t", (2, 2), 1), ("v", (), 1), ("list", (2,), 2), ("n", (), 1)]
    np.testing.assert_array_equal(got["list"], np.diag(data((2, 2))))


def test_trace_program_with_tensor_state_matches_a_numpy_loop():
    def step(w, X, y, lr):
        r = X @ w - y
        loss = (r * r).mean()
        return {"w": w - lr * cs.grad(loss, w), "loss": loss}
    program = cs.trace_program(step, n_steps=4, state={"w": (3,)}, per_step={"X": (5, 3), "y": (5,)},
                               static={"lr": ()}, inputs="tensors")
    assert len(program.step) < 25  # array nodes, not one per element
    X, y = data((4, 5, 3), 1), data((4, 5), 2)
    got = cs.run_program(program, {"w": np.zeros(3)}, data={"X": X, "y": y}, static={"lr": np.array(0.1)})
    w = np.zeros(3)
    for t in range(4):
        w = w - 0.1 * 2 * X[t].T @ (X[t] @ w - y[t]) / 5
    close(got["w"], w)


def test_inputs_must_be_values_or_tensors():
    with pytest.raises(ValueError, match="inputs must be 'values' or 'tensors'"):
        cs.trace(lambda x: x, inputs="arrays", x=(2,))


# ---------------------------------------------------------------- bad input names the user's line

def _shape_mismatch(x):
    return x + x.T  # <- shape mismatch


def _matmul_mismatch(x):
    return x @ x  # <- matmul mismatch


def _bad_axis(x):
    return x.sum(axis=2)  # <- bad axis


def _out_of_range(x):
    return x[3]  # <- out of range


def _out_of_range_take(x):
    return x[[0, -4]]  # <- out of range take


def _non_integer_index(x):
    return x[np.array([0.5, 1.0])]  # <- non-integer index


def _non_integer_index_tensor(x):
    return cs.take(x, x[0, :2] * 0.0 + 0.5, axis=0)  # <- computed index


def _boolean_index(x):
    return x[np.array([True, False, True])]  # <- boolean index


def _negative_step(x):
    return x[::-1]  # <- negative step


def _too_many_indices(x):
    return x[0, 0, 0]  # <- too many indices


def _bad_reshape(x):
    return x.reshape(4, -1)  # <- bad reshape


def _einsum_mismatch(x):
    return cs.einsum("ij,ij->i", x, x.T)  # <- einsum mismatch


def _truth_value(x):
    return x if x.sum() else -x  # <- truth value


def _to_float(x):
    return float(x[0, 0])  # <- float


def _to_numpy(x):
    return np.asarray(x) * 2  # <- numpy conversion


def _apart_array_and_int(x):
    return x[None][[0], :, 0]  # <- apart


def _concatenate_scalars(x):
    return cs.concatenate([x[0], x[0, 0]])  # <- concatenate scalars


def _bad_permutation(x):
    return x.transpose(0, 0)  # <- bad permutation


def _grad_of_an_array(x):
    return cs.grad(x * 2.0, x)  # <- grad of an array


@pytest.mark.parametrize("fn, error, words, marker", [
    (_shape_mismatch, ShapeError, "do not broadcast", "shape mismatch"),
    (_matmul_mismatch, ShapeError, "do not match", "matmul mismatch"),
    (_bad_axis, ShapeError, "axis 2 is out of range", "bad axis"),
    (_out_of_range, ShapeError, "index 3 is out of bounds for axis 0 with size 3", "out of range"),
    (_out_of_range_take, ShapeError, "index -4 is out of bounds", "out of range take"),
    (_non_integer_index, TraceError, "indices must be integers", "non-integer index"),
    (_boolean_index, TraceError, "boolean", "boolean index"),
    (_negative_step, TraceError, "slice step -1", "negative step"),
    (_too_many_indices, ShapeError, "too many indices", "too many indices"),
    (_bad_reshape, ShapeError, "cannot reshape", "bad reshape"),
    (_einsum_mismatch, ShapeError, "axis 'i' has size 3", "einsum mismatch"),
    (_truth_value, TraceError, "data-dependent control flow", "truth value"),
    (_to_float, TraceError, "conversion of traced", "float"),
    (_to_numpy, TraceError, "to a numpy array", "numpy conversion"),
    (_apart_array_and_int, TraceError, "index in two steps", "apart"),
    (_concatenate_scalars, ShapeError, "0-d arrays cannot be concatenated", "concatenate scalars"),
    (_bad_permutation, ShapeError, "not a permutation", "bad permutation"),
    (_grad_of_an_array, ShapeError, "must be 0-d", "grad of an array"),
])
def test_bad_input_names_the_user_line(fn, error, words, marker):
    with pytest.raises(error) as info:
        cs.trace(fn, inputs="tensors", x=(3, 2))
    message = str(info.value)
    assert words in message and line_of(marker) in message, message


def test_a_computed_index_is_data_but_a_constant_one_is_checked():
    # a traced index's values are known only at run time (the interpreter checks them there);
    # constant indices are checked while tracing
    circuit = cs.trace(_non_integer_index_tensor, inputs="tensors", x=(3, 2))
    assert op_counts(circuit)["take"] == 1

    def constant_index(x):
        return cs.take(x, [0.0, 2.5], axis=0)  # <- constant index list
    with pytest.raises(TraceError, match="indices must be integers") as info:
        cs.trace(constant_index, inputs="tensors", x=(3, 2))
    assert line_of("constant index list") in str(info.value)


def test_slice_bounds_must_be_ints():
    def float_bound(x):
        return x[0.5:]  # <- float bound

    def traced_bound(x):
        return x[: x[0, 0]]  # <- traced bound
    with pytest.raises(TraceError, match="slice bounds must be ints") as info:
        cs.trace(float_bound, inputs="tensors", x=(3, 2))
    assert line_of("float bound") in str(info.value)
    with pytest.raises(TraceError, match="conversion of traced") as info:
        cs.trace(traced_bound, inputs="tensors", x=(3, 2))
    assert line_of("traced bound") in str(info.value)


def test_bad_traced_indices_are_caught_at_run_time_naming_the_line():
    """A Tensor index is data: its values are checked when the circuit runs."""
    from circuitsketch.backends.reference import EvaluationError

    def lookup(table, tokens):
        return table[tokens]  # <- traced lookup
    circuit = cs.trace(lookup, inputs="tensors", table=(3, 2), tokens=(2,))
    for tokens, words in (([0.5, 1.0], "non-integer"), ([3.0, 0.0], "out of range")):
        with pytest.raises(EvaluationError, match=words) as info:
            evaluate(circuit, {"table": data((3, 2)), "tokens": np.array(tokens)})
        assert line_of("traced lookup") in str(info.value)
