"""Reverse mode through array ops: ``cs.grad`` inside a traced Tensor function against central
finite differences of the same circuit's loss, both run by the reference interpreter; and the
array form of a model against its scalar (Value) form, whose reverse mode test_grad.py checks
against sympy.

Tolerances: central differences with step h = 1e-5 have truncation error ~h^2 |f'''| / 6 ~ 1e-10
and rounding error ~eps |f| / h ~ 1e-11 for the O(1) losses used here, so gradients are compared
at 1e-6 (relative to the gradient's magnitude). The array and scalar forms compute the same sums
in different orders: they agree to float64 rounding, 1e-12.

Every loss is ``sum(f(x) * R)`` with a fixed random R, so each output element has its own weight
and a transposed or misplaced cotangent cannot cancel out."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import circuitsketch as cs
from circuitsketch import Op
from circuitsketch.backends.reference import evaluate
from circuitsketch.passes import grad as grad_pass

H, RTOL = 1e-5, 1e-6


def data(shape, seed=0, low=-2.0, high=2.0):
    return np.random.default_rng(seed).uniform(low, high, size=shape)


def weighted(y, seed=99):
    """``sum(y * R)`` for a fixed random R of y's shape: a 0-d loss sensitive to every element."""
    return y if y.shape == () else (y * data(y.shape, seed, 0.5, 1.5)).sum()


def finite_differences(circuit, arrays, name):
    """Central differences of output ``loss`` w.r.t. every element of input ``name`` (one
    batched evaluation of all 2n perturbed points)."""
    x = arrays[name]
    steps = np.eye(x.size).reshape((x.size,) + x.shape) * H
    points = np.concatenate([x + steps, x - steps])
    loss = evaluate(circuit, {**arrays, name: points}, batch=len(points))["loss"]
    return ((loss[: x.size] - loss[x.size:]) / (2 * H)).reshape(x.shape)


def check_grad(fn, wrt=None, **arrays):
    """Trace ``loss = fn(**tensors)`` with its gradients and compare them with central differences."""
    arrays = {k: np.asarray(v, dtype=np.float64) for k, v in arrays.items()}
    wrt = list(arrays) if wrt is None else wrt

    def traced(**inputs):
        loss = fn(**inputs)
        grads = cs.grad(loss, {name: inputs[name] for name in wrt})
        return {"loss": loss, **{f"d_{name}": g for name, g in grads.items()}}
    circuit = cs.trace(traced, inputs="tensors", **{k: v.shape for k, v in arrays.items()})
    got = evaluate(circuit, arrays)
    for name in wrt:
        want = finite_differences(circuit, arrays, name)
        scale = max(1.0, float(np.abs(want).max(initial=0)))
        np.testing.assert_allclose(got[f"d_{name}"], want, rtol=RTOL, atol=RTOL * scale)
    return circuit, got


# ---------------------------------------------------------------- elementwise with broadcasting

BINARY = {
    "add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b, "max": cs.maximum, "pow": lambda a, b: b ** a,
    "select": lambda a, b: cs.where(a > 0, a * b, b * b), "dot": lambda a, b: cs.dot(a, b),
}


@settings(max_examples=40, deadline=None)
@given(shapes=hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=3, max_side=3),
       name=st.sampled_from(sorted(BINARY)), seed=st.integers(0, 2**16))
def test_binary_vjps_unbroadcast_to_each_operand(shapes, name, seed):
    # b is kept in [0.5, 2]: a valid base for pow and a divisor away from zero
    a, b = data(shapes.input_shapes[0], seed), data(shapes.input_shapes[1], seed + 1, 0.5, 2.0)
    check_grad(lambda a, b: weighted(BINARY[name](a, b)), a=a, b=b)


@pytest.mark.parametrize("name", ["exp", "log", "sqrt", "tanh", "erf", "gelu", "relu", "rsqrt",
                                  "pow", "neg"])
def test_unary_vjps(name):
    fn = {"pow": lambda x: x ** 3, "neg": lambda x: -x}.get(name) or getattr(cs, name)
    check_grad(lambda x: weighted(fn(x)), x=data((2, 3), 1, 0.2, 2.0))


def test_scalars_and_constants_broadcast_against_arrays():
    k = data((3,), 5)
    check_grad(lambda s, x: weighted(s * x + k / (1.0 + s * s) - x * k), s=np.array(0.7), x=data((2, 3)))


def test_comparisons_and_stop_gradient_have_zero_derivative():
    # not a finite-difference check: differences see through stop_gradient, grad does not
    circuit = cs.trace(lambda x: cs.grad(weighted((x > 0.1) * 3.0 + cs.stop_gradient(x) * x), x),
                       inputs="tensors", x=(4,))
    x = data((4,))
    np.testing.assert_allclose(evaluate(circuit, {"x": x})["out"], x * data((4,), 99, 0.5, 1.5),
                               rtol=1e-15)


# ---------------------------------------------------------------- reductions

@st.composite
def axis_choices(draw):
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=3))
    ndim = len(shape)
    axis = draw(st.none() | st.integers(-ndim, ndim - 1)
                | st.lists(st.integers(0, ndim - 1), unique=True, max_size=ndim).map(tuple))
    return shape, axis


@settings(max_examples=40, deadline=None)
@given(choice=axis_choices(), keepdims=st.booleans(), how=st.sampled_from(["sum", "max", "mean"]),
       seed=st.integers(0, 2**16))
def test_reduction_vjps_for_every_axis_choice(choice, keepdims, how, seed):
    shape, axis = choice
    # distinct values a perturbation of H cannot reorder: reduce_max's winner is stable
    x = np.random.default_rng(seed).permutation(np.prod(shape)).reshape(shape) * 0.1
    check_grad(lambda x: weighted(getattr(x, how)(axis=axis, keepdims=keepdims)), x=x)


def test_reduce_max_splits_the_cotangent_between_ties():
    circuit = cs.trace(lambda x: cs.grad(x.max(axis=1).sum(), x), inputs="tensors", x=(2, 3))
    got = evaluate(circuit, {"x": np.array([[1.0, 3.0, 3.0], [5.0, 5.0, 5.0]])})["out"]
    np.testing.assert_array_equal(got, [[0.0, 0.5, 0.5], [1 / 3, 1 / 3, 1 / 3]])


# ---------------------------------------------------------------- contractions

@pytest.mark.parametrize("sa, sb", [
    ((3,), (3,)), ((2, 3), (3,)), ((3,), (3, 4)), ((2, 3), (3, 4)), ((5, 2, 3), (3, 4)),
    ((2, 3), (5, 3, 4)), ((3,), (5, 3, 4)), ((5, 2, 3), (5, 3, 4)), ((1, 2, 3), (5, 3, 4)),
])
def test_matmul_vjp(sa, sb):
    check_grad(lambda a, b: weighted(a @ b), a=data(sa, 1), b=data(sb, 2))


@pytest.mark.parametrize("spec, sa, sb", [
    ("ij,jk->ki", (2, 3), (3, 4)), ("bqd,bkd->bqk", (2, 3, 4), (2, 5, 4)),
    ("hqd,khd->hqk", (2, 3, 4), (5, 2, 4)), ("ij,kj->jik", (2, 3), (4, 3)), ("ij,ij->", (2, 3), (2, 3)),
    ("i,j->ij", (3,), (4,)), ("ij,k->i", (2, 3), (4,)),
])
def test_einsum_vjp(spec, sa, sb):
    check_grad(lambda a, b: weighted(cs.einsum(spec, a, b)), a=data(sa, 1), b=data(sb, 2))


def test_dot_general_vjp_with_interleaved_batch_and_contracting_axes():
    check_grad(lambda a, b: weighted(cs.dot_general(a, b, contract=((2, 0), (0, 3)), batch=((1,), (2,)))),
               a=data((3, 4, 2, 5), 1), b=data((2, 6, 4, 3), 2))


# ---------------------------------------------------------------- structure

@pytest.mark.parametrize("name, fn", [
    ("reshape", lambda x: x.reshape(3, -1, 2)),
    ("transpose", lambda x: x.transpose(2, 0, 1)),
    ("T", lambda x: x.T),
    ("broadcast", lambda x: x[:, :1].broadcast_to((5, 2, 1, 3))),
    ("slice", lambda x: x[1:, ::2, -2:]),
    ("int index", lambda x: x[1, -1]),
    ("newaxis", lambda x: x[None, 0, ..., None]),
    ("concatenate", lambda x: cs.concatenate([x, x[:, :1] * 2.0, x], axis=1)),
    ("stack", lambda x: cs.stack([x[0], x[1] * x[0]], axis=-1)),
    ("take repeats", lambda x: x[[1, 0, 1, 1]]),
    ("take axis", lambda x: cs.take(x, np.array([[2, 0], [2, 2]]), axis=2)),
])
def test_structural_vjps(name, fn):
    check_grad(lambda x: weighted(fn(x)), x=data((2, 3, 3), 4))


def test_take_by_per_step_tokens_differentiates_the_table_only():
    tokens = np.array([3.0, 0.0, 3.0, 1.0])
    circuit, _ = check_grad(lambda table, tokens: weighted(table[tokens].tanh()), wrt=["table"],
                            table=data((4, 2)), tokens=tokens)
    assert Op.SCATTER_ADD in {e.op for e in circuit.eqns}


def test_scatter_add_vjp_is_a_take():
    def fn(u):
        indices = np.array([0.0, 2.0, 0.0])
        return weighted(u.trace.record(Op.SCATTER_ADD, (u, indices), axis=1, size=4).exp())
    circuit, _ = check_grad(fn, u=data((2, 3), 3))
    assert Op.TAKE in {e.op for e in circuit.eqns}


def test_second_order_through_array_ops():
    """A Hessian-vector product (grad of a grad) against differences of the first gradient."""
    v = data((2, 3), 7)

    def directional(w, x):
        loss = ((x @ w).tanh() ** 2).sum() + w.max(axis=0).sum()
        return (cs.grad(loss, w) * v).sum()
    check_grad(directional, wrt=["w"], w=data((2, 3), 1), x=data((4, 2), 2))


# ---------------------------------------------------------------- the grad pass, structures, scalar agreement

def test_grad_pass_on_an_array_circuit():
    circuit = cs.trace(lambda w, x: {"y": weighted((x @ w).gelu()), "h": x @ w}, inputs="tensors",
                       w=(3, 2), x=(4, 3))
    lowered = grad_pass(circuit, "y")
    arrays = {"w": data((3, 2), 1), "x": data((4, 3), 2)}
    got = evaluate(lowered, arrays)
    renamed = cs.trace(lambda w, x: {"loss": weighted((x @ w).gelu())}, inputs="tensors", w=(3, 2), x=(4, 3))
    for name in arrays:
        assert got[f"dy/d{name}"].shape == arrays[name].shape
        np.testing.assert_allclose(got[f"dy/d{name}"], finite_differences(renamed, arrays, name),
                                   rtol=RTOL, atol=RTOL)


def test_grad_returns_the_structure_of_wrt():
    def traced(w, b):
        s = w[0, 0]  # a 0-d Tensor
        loss = weighted((w * b).exp()) + s * s
        g = cs.grad(loss, {"params": [w, (b,)], "s": s})
        assert type(g["params"]) is list and type(g["params"][1]) is tuple
        return {"dw": g["params"][0], "db": g["params"][1][0], "ds": g["s"]}
    circuit = cs.trace(traced, inputs="tensors", w=(2, 2), b=(2,))
    assert [(o.name, o.shape) for o in circuit.outputs] == [("dw", (2, 2)), ("db", (2,)), ("ds", ())]
    w, b = data((2, 2), 1), data((2,), 2)
    got = evaluate(circuit, {"w": w, "b": b})
    r = data((2, 2), 99, 0.5, 1.5)
    dw = r * b * np.exp(w * b)
    dw[0, 0] += 2 * w[0, 0]  # through s
    np.testing.assert_allclose(got["dw"], dw, rtol=1e-14)
    np.testing.assert_allclose(got["db"], (r * w * np.exp(w * b)).sum(0), rtol=1e-14)
    np.testing.assert_allclose(got["ds"], 2 * w[0, 0], rtol=1e-15)


def test_grad_of_an_unused_tensor_is_zeros_of_its_shape():
    circuit = cs.trace(lambda w, u: cs.grad(w.sum(), u), inputs="tensors", w=(2,), u=(3, 2))
    np.testing.assert_array_equal(evaluate(circuit, {"w": np.ones(2), "u": np.ones((3, 2))})["out"],
                                  np.zeros((3, 2)))


def _mlp_loss_tensors(w1, w2, x, y):
    h = (x @ w1).tanh()
    logits = h @ w2
    shifted = logits - cs.stop_gradient(logits.max(axis=1, keepdims=True))
    logp = shifted - shifted.exp().sum(axis=1, keepdims=True).log()
    return -(logp * y).sum() / x.shape[0]


def _mlp_loss_values(w1, w2, x, y):
    total = 0.0
    for i in range(x.shape[0]):
        h = [cs.dot(x[i], w1[:, j]).tanh() for j in range(w1.shape[1])]
        logits = [cs.dot(h, w2[:, k]) for k in range(w2.shape[1])]
        top = cs.stop_gradient(cs.vmax(logits))
        shifted = [z - top for z in logits]
        norm = cs.vsum([s.exp() for s in shifted]).log()
        total = total - cs.dot([s - norm for s in shifted], y[i])
    return total / x.shape[0]


def test_array_model_gradients_agree_with_the_scalar_model():
    shapes = {"w1": (3, 4), "w2": (4, 2), "x": (5, 3), "y": (5, 2)}
    arrays = {"w1": data((3, 4), 1), "w2": data((4, 2), 2), "x": data((5, 3), 3),
              "y": np.eye(2)[[0, 1, 1, 0, 1]]}

    def traced(loss_fn):
        def fn(w1, w2, x, y):
            loss = loss_fn(w1, w2, x, y)
            g1, g2 = cs.grad(loss, [w1, w2]) if isinstance(w1, cs.Tensor) else (
                cs.grad(loss, w1), cs.grad(loss, w2))
            return {"loss": loss, "g1": g1, "g2": g2}
        return fn
    arrays_c = cs.trace(traced(_mlp_loss_tensors), inputs="tensors", **shapes)
    scalar_c = cs.trace(traced(_mlp_loss_values), **shapes)
    assert len(arrays_c) * 5 < len(scalar_c)
    got, want = evaluate(arrays_c, arrays), evaluate(scalar_c, arrays)
    for name in ("loss", "g1", "g2"):
        np.testing.assert_allclose(got[name], want[name], rtol=1e-12, atol=1e-14)
    assert math.isfinite(float(got["loss"]))
