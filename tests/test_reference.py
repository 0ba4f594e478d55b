"""The reference interpreter against independent references: Python's ``math`` applied element by
element (single ops and hypothesis circuits) and eager evaluation of the same model functions on
floats, unbatched and batched; plus its argument checks and domain errors.

Tolerances: the interpreter (numpy) and the oracle (``math``) may round ``exp``, ``tanh``, ``erf``
differently in the last ulp, and a circuit of <= 20 gates amplifies that by a modest condition
number, so values agree to 1e-9 relative (1e-12 absolute near zero)."""

from __future__ import annotations

import math
import pathlib
import re
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import KINK_OPS, SMOOTH_OPS, random_circuits, random_point

import circuitsketch as cs
from circuitsketch.backends.reference import REAL_IMPL, EvaluationError
from circuitsketch.ir.ops import ELEMENTWISE_OPS
from circuitsketch.ir import OP_INFO, Builder, Op, make_attrs

RTOL, ATOL = 1e-9, 1e-12

# ---------------------------------------------------------------- the independent oracle


def _gelu(a: float) -> float:
    return a * 0.5 * (1.0 + math.erf(a / math.sqrt(2.0)))


#: what each op means, written with Python floats and the math module only
MATH_OPS = {
    Op.ADD: lambda a, b: a + b,
    Op.SUB: lambda a, b: a - b,
    Op.NEG: lambda a: -a,
    Op.MUL: lambda a, b: a * b,
    Op.DIV: lambda a, b: a / b,
    Op.EXP: math.exp,
    Op.LOG: math.log,
    Op.SQRT: math.sqrt,
    Op.TANH: math.tanh,
    Op.ERF: math.erf,
    Op.GELU: _gelu,
    Op.RELU: lambda a: a if a > 0 else 0.0,
    Op.MAX: lambda a, b: a if a >= b else b,
    Op.LT: lambda a, b: float(a < b),
    Op.LE: lambda a, b: float(a <= b),
    Op.GT: lambda a, b: float(a > b),
    Op.GE: lambda a, b: float(a >= b),
    Op.EQ: lambda a, b: float(a == b),
    Op.SELECT: lambda c, a, b: a if c != 0 else b,
    Op.STOP_GRADIENT: lambda a: a,
    Op.SUM: lambda *xs: math.fsum(xs),
    Op.DOT: lambda *xs: math.fsum(xs[i] * xs[len(xs) // 2 + i] for i in range(len(xs) // 2)),
}


def eager_circuit(circuit, inputs: dict[str, np.ndarray]) -> dict[str, list[float]]:
    """Evaluate a circuit node by node with MATH_OPS on Python floats (one batch member)."""
    values: list[float] = []
    for eqn in circuit.eqns:
        if eqn.op is Op.INPUT:
            values.append(float(np.ravel(inputs[eqn.attr("name")])[eqn.attr("index")]))
        elif eqn.op is Op.CONST:
            values.append(eqn.attr("value"))
        elif eqn.op is Op.POW:
            values.append(math.pow(values[eqn.args[0]], eqn.attr("p")))
        else:
            values.append(MATH_OPS[eqn.op](*(values[a] for a in eqn.args)))
    return {o.name: [values[n] for n in o.nodes] for o in circuit.outputs}


def test_oracle_and_interpreter_cover_every_computing_op():
    # the scalar oracle covers the elementwise ops; tests/test_array_semantics.py the array ops
    computing = ELEMENTWISE_OPS - {Op.POW}
    assert set(MATH_OPS) == computing
    assert set(REAL_IMPL) == set(Op) - {Op.INPUT}


def _single_op_circuit(op: Op, n_args: int, **attrs):
    b = Builder()
    xs = b.input("x", (n_args,))
    b.output("y", [b.add(op, tuple(xs), make_attrs(**attrs))], ())
    return b.build()


def _domain_points(op: Op, n_args: int, rng) -> np.ndarray:
    points = rng.uniform(-3, 3, size=(64, n_args))
    if op in (Op.LOG, Op.SQRT):
        points = np.abs(points) + 1e-3
    if op is Op.SELECT:
        points[::2, 0] = 0.0  # both branches of the condition
    if op in (Op.EQ, Op.LE, Op.GE, Op.MAX):
        points[::3, 1] = points[::3, 0]  # ties
    return points


@pytest.mark.parametrize("op", sorted(MATH_OPS, key=lambda op: op.value))
def test_each_op_matches_math(op):
    arity = OP_INFO[op].arity
    n_args = {-1: 6}.get(arity, arity)
    circuit = _single_op_circuit(op, n_args)
    points = _domain_points(op, n_args, np.random.default_rng(zlib.crc32(op.value.encode())))
    batched = cs.evaluate(circuit, {"x": points}, batch=len(points))["y"]
    expected = [MATH_OPS[op](*map(float, p)) for p in points]
    np.testing.assert_allclose(batched, expected, rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize("p", [2.0, 3.0, -1.0, -2.0, 0.5, -0.5, 1.5, 0.0, 1.0])
def test_pow_matches_math(p):
    circuit = _single_op_circuit(Op.POW, 1, p=p)
    rng = np.random.default_rng(int(10 * p) + 50)
    points = rng.uniform(0.1, 3, size=(32, 1))
    if float(p).is_integer():
        points[::2] *= -1  # integer powers of negative numbers are defined
    out = cs.evaluate(circuit, {"x": points}, batch=len(points))["y"]
    np.testing.assert_allclose(out, [math.pow(float(a), p) for a in points[:, 0]], rtol=1e-14)


@settings(max_examples=80, deadline=None, derandomize=True)
@given(random_circuits(ops=SMOOTH_OPS + KINK_OPS, max_nodes=16), st.integers(0, 2**31))
def test_random_circuits_match_eager_math(circuit, seed):
    point = random_point(seed)
    got = cs.evaluate(circuit, {"x": point})
    want = eager_circuit(circuit, {"x": point})
    np.testing.assert_allclose(got["y"], want["y"][0], rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(got["z"], want["z"], rtol=RTOL, atol=ATOL)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(random_circuits(ops=SMOOTH_OPS + KINK_OPS, max_nodes=16), st.integers(0, 2**31))
def test_random_circuits_batched_match_one_by_one(circuit, seed):
    points = np.stack([random_point(seed + i) for i in range(5)])
    got = cs.evaluate(circuit, {"x": points}, batch=5)
    assert got["y"].shape == (5,) and got["z"].shape == (5, circuit.output("z").shape[0])
    for i, point in enumerate(points):
        want = eager_circuit(circuit, {"x": point})
        np.testing.assert_allclose(got["z"][i], want["z"], rtol=RTOL, atol=ATOL)


# ---------------------------------------------------------------- the same model, eager and traced

def _both(traced, eager):
    """A function that records when given Values and computes with floats otherwise."""
    return lambda *args: traced(*args) if any(isinstance(a, cs.Value) for a in args) else eager(*args)


gelu = _both(lambda a: a.gelu(), _gelu)
erf = _both(lambda a: a.erf(), math.erf)
relu = _both(lambda a: a.relu(), lambda a: max(a, 0.0))
stop_gradient = _both(cs.stop_gradient, lambda a: a)
select = _both(cs.select, lambda c, a, b: a if c else b)


def dot(a, b):
    if any(isinstance(v, cs.Value) for v in [*a, *b]):
        return cs.dot(a, b)
    return sum(x * y for x, y in zip(a, b))


def vsum(xs):
    return cs.vsum(xs) if any(isinstance(v, cs.Value) for v in xs) else sum(xs)


def vmax(xs):
    return cs.vmax(xs) if any(isinstance(v, cs.Value) for v in xs) else max(xs)


def mlp_loss(w1, w2, x, target):
    """A two-layer GELU network with RMSNorm and a max-shifted log-softmax, micrograd style."""
    x = list(x)
    scale = (vsum([v * v for v in x]) / len(x) + 1e-5) ** -0.5
    x = [v * scale for v in x]
    hidden = [gelu(dot(row, x)) for row in w1]
    logits = [dot(row, hidden) for row in w2]
    shift = stop_gradient(vmax(logits))
    exps = [np.exp(v - shift) for v in logits]
    log_prob = [v - shift - np.log(vsum(exps)) for v in logits]
    return -dot(target, log_prob)


def misc_ops(a, b):
    """Every other op, each in its domain."""
    a, b = a[0], b[0]
    positive = a * a + 0.25
    return [a / positive, np.sqrt(positive) ** 1.5, np.tanh(a) - erf(b), relu(a - b) * 3.0,
            select(a > b, a, b * 2.0), positive ** -2, 2.0 ** a, positive ** b, (a <= b) * 1.0 + (a < b),
            np.log(positive) * np.exp(b)]


def _call_eager(fn, inputs):
    return fn(*(list(v) if np.ndim(v) == 1 else [list(r) for r in v] for v in inputs.values()))


MODELS = {
    "mlp": (mlp_loss, {"w1": (4, 3), "w2": (2, 4), "x": (3,), "target": (2,)}),
    "misc": (misc_ops, {"a": (1,), "b": (1,)}),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_traced_model_matches_eager_python(name):
    fn, shapes = MODELS[name]
    circuit = cs.trace(fn, **shapes)
    rng = np.random.default_rng(7)
    for _ in range(5):
        inputs = {k: rng.normal(size=s) for k, s in shapes.items()}
        got = cs.evaluate(circuit, inputs)["out"]
        np.testing.assert_allclose(got, _call_eager(fn, inputs), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_traced_model_batched_matches_eager_python(name):
    """A batch of 6 input sets at once; one input (the first) is shared unbatched."""
    fn, shapes = MODELS[name]
    circuit = cs.trace(fn, **shapes)
    rng = np.random.default_rng(8)
    names = list(shapes)
    shared = {names[0]: rng.normal(size=shapes[names[0]])}
    batched = {k: rng.normal(size=(6,) + shapes[k]) for k in names[1:]}
    got = cs.evaluate(circuit, {**shared, **batched}, batch=6)["out"]
    assert got.shape[0] == 6
    for i in range(6):
        one = {**shared, **{k: v[i] for k, v in batched.items()}}
        want = _call_eager(fn, {k: one[k] for k in names})
        np.testing.assert_allclose(got[i], want, rtol=1e-12, atol=1e-14)


def test_output_formats():
    circuit = cs.trace(lambda x: {"s": x[0] * 2.0, "v": x, "c": 3.0}, x=(2,))
    unbatched = cs.evaluate(circuit, {"x": np.array([1.0, 2.0])})
    assert np.shape(unbatched["s"]) == () and unbatched["v"].shape == (2,) and unbatched["c"] == 3.0
    batched = cs.evaluate(circuit, {"x": np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])}, batch=3)
    np.testing.assert_array_equal(batched["s"], [2.0, 6.0, 10.0])
    np.testing.assert_array_equal(batched["c"], [3.0, 3.0, 3.0])  # constants broadcast over the batch
    assert batched["v"].shape == (3, 2)


def test_series_inputs_and_outputs_shapes():
    """Series values cross the API as (k+1,)+shape, batched (B, k+1)+shape; coefficient 0 is the
    real run (the rules themselves are tested with the Taylor pass)."""
    circuit = cs.trace(lambda x, w: cs.dot(x, w).tanh(), x=(3,), w=(3,))
    lowered = cs.taylor(circuit, order=2, seeds={"x"})
    x, w = np.array([0.1, 0.2, 0.3]), np.array([1.0, -1.0, 0.5])
    series = np.zeros((3, 3), complex)
    series[0], series[1] = x, [1.0, 0.0, 0.0]
    one = cs.evaluate(lowered, {"x": series, "w": w})["out"]
    assert one.shape == (3,)
    np.testing.assert_allclose(one[0], cs.evaluate(circuit, {"x": x, "w": w})["out"], rtol=1e-15)
    np.testing.assert_allclose(one[1], w[0] * (1 - math.tanh(x @ w) ** 2), rtol=1e-13)
    batch = cs.evaluate(lowered, {"x": np.stack([series, series]), "w": w}, batch=2)["out"]
    assert batch.shape == (2, 3)
    np.testing.assert_array_equal(batch[1], one)


# ---------------------------------------------------------------- bad input

@pytest.fixture(scope="module")
def log_circuit():
    return cs.trace(lambda x, y: np.log(x * y), x=(2,), y=())  # <- log line


@pytest.mark.parametrize("inputs, kwargs, message", [
    ({"x": [1.0, 2.0]}, {}, "inputs: missing ['y'], unknown []; circuit takes ['x', 'y']"),
    ({"x": [1.0, 2.0], "y": 1.0, "z": 2.0}, {}, "inputs: missing [], unknown ['z']"),
    ({"x": [1.0, 2.0, 3.0], "y": 1.0}, {}, "input 'x': expected shape (2,), got (3,)"),
    ({"x": [[1.0, 2.0]], "y": 1.0}, {}, "input 'x': expected shape (2,), got (1, 2)"),
    ({"x": np.ones((3, 2)), "y": 1.0}, {"batch": 4}, "input 'x': expected shape (2,) or (4, 2), got (3, 2)"),
])
def test_evaluate_rejects_bad_inputs(log_circuit, inputs, kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        cs.evaluate(log_circuit, inputs, **kwargs)


def _line(marker: str) -> str:
    lines = pathlib.Path(__file__).read_text().splitlines()
    return f"test_reference.py:{next(i + 1 for i, t in enumerate(lines) if t.endswith(f'# <- {marker}'))}"


def test_domain_error_names_node_and_traced_line(log_circuit):
    with pytest.raises(EvaluationError) as info:
        cs.evaluate(log_circuit, {"x": np.array([1.0, -2.0]), "y": 1.0})
    node = [i for i, e in enumerate(log_circuit.eqns) if e.op is Op.LOG][1]  # log(x[1] * y)
    assert str(info.value) == (f"node %{node} = log (traced at {_line('log line')}): "
                               "log of a non-positive value")


def test_domain_error_in_one_batch_member_is_reported(log_circuit):
    with pytest.raises(EvaluationError, match="log of a non-positive value"):
        cs.evaluate(log_circuit, {"x": [[1.0, 2.0], [1.0, 2.0]], "y": [1.0, -1.0]}, batch=2)


@pytest.mark.parametrize("fn, op, reason", [
    (lambda x: 1.0 / (x - x), "div", "division by zero"),
    (lambda x: (x - 3.0).sqrt(), "sqrt", "sqrt of a negative value"),
    (lambda x: (x * 1000.0).exp(), "exp", "overflow encountered in exp"),
    (lambda x: (x - 3.0) ** 0.5, "pow", "non-positive base raised to the non-integer power 0.5"),
    (lambda x: (x - x) ** -1, "pow", "zero raised to the negative power -1.0"),
])
def test_other_domain_errors(fn, op, reason):
    circuit = cs.trace(fn, x=())
    with pytest.raises(EvaluationError, match=rf"^node %\d+ = {op} \(traced at test_reference\.py:\d+\): "
                                              f"{re.escape(reason)}$"):
        cs.evaluate(circuit, {"x": 1.0})


def test_unknown_backend():
    with pytest.raises(ValueError, match="unknown backend 'fast'"):
        cs.evaluate(cs.trace(lambda x: x, x=()), {"x": 1.0}, backend="fast")
