"""Reverse mode (``grad`` pass and ``cs.grad`` inside a trace) against two independent oracles:
sympy's ``diff`` of an expression built from the circuit's equations, and central finite
differences of the interpreter. Also the structure it promises: one fused dot per cotangent,
no cotangents for data-only nodes, zero derivative through stop_gradient and comparisons.

Tolerances: the sympy oracle is exact, so agreement is to float64 rounding amplified by the
circuit (1e-9 relative). Central differences with step h have truncation error ~h^2 |f'''| / 6
and rounding error ~eps |f| / h; h = 1e-5 balances them near 1e-10 for O(1) values, so they are
compared at 1e-6."""

from __future__ import annotations

import math

import numpy as np
import pytest
import sympy
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import KINK_OPS, SMOOTH_OPS, random_circuits, random_point

import circuitsketch as cs
from circuitsketch.ir import OP_INFO, Builder, Op, make_attrs, verify
from circuitsketch.ir.ops import ELEMENTWISE_OPS
from circuitsketch.passes import grad

# ---------------------------------------------------------------- the sympy oracle


def _step(condition, then, otherwise=sympy.Integer(0)):
    return sympy.Piecewise((then, condition), (otherwise, True))


SYMPY_OPS = {
    Op.ADD: lambda a, b: a + b,
    Op.SUB: lambda a, b: a - b,
    Op.NEG: lambda a: -a,
    Op.MUL: lambda a, b: a * b,
    Op.DIV: lambda a, b: a / b,
    Op.EXP: sympy.exp,
    Op.LOG: sympy.log,
    Op.SQRT: sympy.sqrt,
    Op.TANH: sympy.tanh,
    Op.ERF: sympy.erf,
    Op.GELU: lambda a: a * (1 + sympy.erf(a / sympy.sqrt(2))) / 2,
    Op.RELU: lambda a: _step(a > 0, a),
    Op.MAX: lambda a, b: _step(a >= b, a, b),
    Op.LT: lambda a, b: _step(a < b, sympy.Integer(1)),
    Op.LE: lambda a, b: _step(a <= b, sympy.Integer(1)),
    Op.GT: lambda a, b: _step(a > b, sympy.Integer(1)),
    Op.GE: lambda a, b: _step(a >= b, sympy.Integer(1)),
    Op.EQ: lambda a, b: _step(sympy.Eq(a, b), sympy.Integer(1)),
    Op.SELECT: lambda c, a, b: _step(sympy.Ne(c, 0), a, b),
    Op.SUM: lambda *xs: sympy.Add(*xs),
    Op.DOT: lambda *xs: sympy.Add(*(xs[i] * xs[len(xs) // 2 + i] for i in range(len(xs) // 2))),
}


class SympyCircuit:
    """The circuit as sympy expressions in symbols ``name_index``. A stop_gradient node becomes a
    fresh symbol (a constant to ``diff``) whose numeric value is its operand's value."""

    def __init__(self, circuit):
        self.frozen: dict[sympy.Symbol, sympy.Expr] = {}
        self.symbols: dict[tuple[str, int], sympy.Symbol] = {}
        exprs = []
        for node, eqn in enumerate(circuit.eqns):
            if eqn.op is Op.INPUT:
                key = (eqn.attr("name"), eqn.attr("index"))
                exprs.append(self.symbols.setdefault(key, sympy.Symbol(f"{key[0]}_{key[1]}", real=True)))
            elif eqn.op is Op.CONST:
                exprs.append(sympy.Float(eqn.attr("value"), 30))
            elif eqn.op is Op.POW:
                exprs.append(exprs[eqn.args[0]] ** sympy.nsimplify(eqn.attr("p")))
            elif eqn.op is Op.STOP_GRADIENT:
                frozen = sympy.Symbol(f"frozen_{node}", real=True)
                self.frozen[frozen] = exprs[eqn.args[0]]
                exprs.append(frozen)
            else:
                exprs.append(SYMPY_OPS[eqn.op](*(exprs[a] for a in eqn.args)))
        self.outputs = {o.name: [exprs[n] for n in o.nodes] for o in circuit.outputs}

    def derivative(self, output: str, name: str, index: int, point: dict[str, np.ndarray]) -> float:
        subs = {s: sympy.Float(float(np.ravel(point[n])[i]), 30) for (n, i), s in self.symbols.items()}
        for frozen, expr in self.frozen.items():  # in node order, so earlier frozen values are known
            subs[frozen] = expr.xreplace(subs).evalf(30)
        (expr,) = self.outputs[output]
        symbol = self.symbols.get((name, index))
        if symbol is None:
            return 0.0
        return float(sympy.diff(expr, symbol).xreplace(subs).evalf(30))


def test_sympy_oracle_covers_every_op():
    # array ops (reductions, dot_general, structure) are checked in test_array_grad.py
    assert set(SYMPY_OPS) | {Op.POW, Op.STOP_GRADIENT} == set(ELEMENTWISE_OPS)


def _grads(circuit, point, output="y"):
    lowered = grad(circuit, output)
    return {name: cs.evaluate(lowered, point)[f"d{output}/d{name}"] for name in circuit.input_shapes}


def _sympy_grads(circuit, point, output="y"):
    oracle = SympyCircuit(circuit)
    return {name: np.array([oracle.derivative(output, name, i, point) for i in range(math.prod(shape))]
                           ).reshape(shape) for name, shape in circuit.input_shapes.items()}


# ---------------------------------------------------------------- one op at a time

def _single_op_circuit(op: Op, n_args: int, **attrs):
    b = Builder()
    xs = b.input("x", (n_args,))
    b.output("y", [b.add(op, tuple(xs), make_attrs(**attrs))], ())
    return b.build()


@pytest.mark.parametrize("op", sorted(ELEMENTWISE_OPS - {Op.POW}, key=lambda op: op.value))
def test_each_vjp_rule_matches_sympy(op):
    arity = OP_INFO[op].arity
    circuit = _single_op_circuit(op, {-1: 6}.get(arity, arity))
    rng = np.random.default_rng(3)
    for _ in range(4):
        shape = circuit.input_shapes["x"]
        point = rng.uniform(0.2, 2.0, size=shape) * rng.choice([-1, 1], size=shape)
        if op in (Op.LOG, Op.SQRT):
            point = np.abs(point)
        if op is Op.SELECT:
            point[0] = rng.choice([0.0, 1.0])
        got, want = _grads(circuit, {"x": point}), _sympy_grads(circuit, {"x": point})
        np.testing.assert_allclose(got["x"], want["x"], rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("p", [0.0, 1.0, 2.0, 3.0, -1.0, 0.5, -0.5, 1.5, -2.5])
def test_pow_vjp_matches_sympy(p):
    circuit = _single_op_circuit(Op.POW, 1, p=p)
    for value in (0.3, 1.7, 2.9):
        point = {"x": np.array([value])}
        np.testing.assert_allclose(_grads(circuit, point)["x"], _sympy_grads(circuit, point)["x"], rtol=1e-13)


def test_kinks_take_the_branch_of_the_forward_pass():
    """relu'(0) = 0 and at a tie max gives the whole derivative to its first operand."""
    relu = _single_op_circuit(Op.RELU, 1)
    assert _grads(relu, {"x": np.array([0.0])})["x"][0] == 0.0
    maximum = _single_op_circuit(Op.MAX, 2)
    np.testing.assert_array_equal(_grads(maximum, {"x": np.array([1.5, 1.5])})["x"], [1.0, 0.0])


# ---------------------------------------------------------------- random circuits

@settings(max_examples=40, deadline=None, derandomize=True)
@given(random_circuits(ops=SMOOTH_OPS + KINK_OPS, max_nodes=10), st.integers(0, 2**31))
def test_random_circuits_grad_matches_sympy(circuit, seed):
    point = {"x": random_point(seed)}
    np.testing.assert_allclose(_grads(circuit, point)["x"], _sympy_grads(circuit, point)["x"],
                               rtol=1e-9, atol=1e-11)


def _central_difference(circuit, point, h=1e-5, output="y"):
    x = point["x"]
    out = np.zeros_like(x)
    for i in range(len(x)):
        step = np.zeros_like(x)
        step[i] = h
        up = cs.evaluate(circuit, {"x": x + step})[output]
        down = cs.evaluate(circuit, {"x": x - step})[output]
        out[i] = (up - down) / (2 * h)
    return out


@settings(max_examples=60, deadline=None, derandomize=True)
@given(random_circuits(ops=SMOOTH_OPS, max_nodes=16), st.integers(0, 2**31))
def test_random_circuits_grad_matches_finite_differences(circuit, seed):
    point = {"x": random_point(seed)}
    got = _grads(circuit, point)["x"]
    np.testing.assert_allclose(got, _central_difference(circuit, point), rtol=1e-6,
                               atol=1e-6 * (1 + np.max(np.abs(got))))


@settings(max_examples=40, deadline=None, derandomize=True)
@given(random_circuits(ops=SMOOTH_OPS + KINK_OPS, max_nodes=16))
def test_grad_pass_is_pure_and_verifies(circuit):
    before = circuit.eqns
    lowered = verify(grad(circuit, "y"))
    assert circuit.eqns is before
    assert lowered.eqns[:len(circuit.eqns)] == circuit.eqns  # the forward pass is kept as is
    assert [o.name for o in lowered.outputs] == ["y", "z", "dy/dx"]


# ---------------------------------------------------------------- inside a traced function

def _mlp_loss(w1, w2, x):
    hidden = [cs.dot(row, x).gelu() for row in w1]
    logits = [cs.dot(row, hidden) for row in w2]
    shift = cs.stop_gradient(cs.vmax(logits))
    return (cs.vsum([(v - shift).exp() for v in logits])).log() + shift - logits[0]


def test_traced_grad_of_a_network_matches_finite_differences():
    shapes = {"w1": (4, 3), "w2": (3, 4), "x": (3,)}
    def f(w1, w2, x):
        loss = _mlp_loss(w1, w2, x)
        return {"loss": loss, "g1": cs.grad(loss, w1), "g2": cs.grad(loss, w2)}
    circuit = cs.trace(f, **shapes)
    rng = np.random.default_rng(11)
    point = {k: rng.normal(size=s) for k, s in shapes.items()}
    got = cs.evaluate(circuit, point)
    h = 1e-5
    for name, out in (("w1", "g1"), ("w2", "g2")):
        assert got[out].shape == shapes[name]
        for index in np.ndindex(shapes[name]):
            up, down = {k: v.copy() for k, v in point.items()}, {k: v.copy() for k, v in point.items()}
            up[name][index] += h
            down[name][index] -= h
            fd = (cs.evaluate(circuit, up)["loss"] - cs.evaluate(circuit, down)["loss"]) / (2 * h)
            assert abs(got[out][index] - fd) < 1e-8, (name, index)


def test_traced_second_derivative_matches_sympy():
    """grad of a gradient: the backward pass is itself differentiable."""
    circuit = cs.trace(lambda x: cs.grad(cs.grad(x ** 3 * x.tanh().exp(), x), x), x=())
    t = sympy.Symbol("t")
    want = sympy.diff(t ** 3 * sympy.exp(sympy.tanh(t)), t, 2)
    for value in (-1.3, 0.4, 2.0):
        got = cs.evaluate(circuit, {"x": value})["out"]
        assert got == pytest.approx(float(want.subs(t, value)), rel=1e-12)


def test_stop_gradient_and_comparisons_have_zero_derivative():
    def f(x):
        frozen = cs.stop_gradient(x * x)
        step = (x > 0.5) * 1.0
        return {"g_frozen": cs.grad(frozen * x, x), "g_step": cs.grad(step, x),
                "g_select": cs.grad(cs.select(x > 0, 3.0 * x, x * x), x)}
    circuit = cs.trace(f, x=())
    got = cs.evaluate(circuit, {"x": np.array([0.7, -2.0])}, batch=2)
    np.testing.assert_array_equal(got["g_frozen"], [0.7 * 0.7, 4.0])  # d/dx (c * x), c = x^2 frozen
    np.testing.assert_array_equal(got["g_step"], [0.0, 0.0])
    np.testing.assert_array_equal(got["g_select"], [3.0, -4.0])


def test_grad_of_an_independent_value_is_zero():
    circuit = cs.trace(lambda x, w: {"g": cs.grad(x.exp(), w), "gx": cs.grad(x.exp(), [x, w[0]])},
                       x=(), w=(2,))
    got = cs.evaluate(circuit, {"x": 0.0, "w": np.ones(2)})
    np.testing.assert_array_equal(got["g"], [0.0, 0.0])
    np.testing.assert_array_equal(got["gx"], [1.0, 0.0])


# ---------------------------------------------------------------- structure

def test_cotangents_are_accumulated_by_one_fused_dot():
    """x feeds 5 rows of a linear layer, so dloss/dx_j is ONE dot of 5 partials (w_ij) times 5
    cotangents, not a chain of 5 multiplies and 4 adds."""
    def f(w, x):
        y = cs.matvec(w, x)
        return cs.grad(cs.dot(y, y), x)
    circuit = cs.trace(f, w=(5, 4), x=(4,))
    gradient_nodes = [circuit.eqns[n] for n in circuit.output("out").nodes]
    assert [e.op for e in gradient_nodes] == [Op.DOT] * 4
    assert all(len(e.args) == 10 for e in gradient_nodes)
    counts = circuit.op_counts()
    assert counts.get("add", 0) == 0 and counts.get("sum", 0) == 0


def test_contributions_with_unit_partials_are_one_sum():
    circuit = cs.trace(lambda x: cs.grad(cs.vsum([x.exp(), x.tanh(), x, x * 2.0]) + x, x), x=())
    (out,) = circuit.output("out").nodes
    # x has two unit partials (from + and from vsum; both cotangents are the seed 1.0) and three
    # proper ones (exp, tanh, the product with 2.0) fused into one dot: sum(1.0, 1.0, dot)
    assert circuit.eqns[out].op is Op.SUM
    assert sorted(circuit.eqns[a].op.value for a in circuit.eqns[out].args) == ["const", "const", "dot"]
    value = cs.evaluate(circuit, {"x": 0.3})["out"]
    assert value == pytest.approx(math.exp(0.3) + 1 - math.tanh(0.3) ** 2 + 1 + 2 + 1, rel=1e-15)


def test_no_cotangents_for_data_only_nodes():
    """Differentiating w.r.t. w must not differentiate the expensive data-only branch f(x)."""
    def f(w, x):
        features = [(xi.exp() + xi.tanh()).log() for xi in x]
        return cs.grad(cs.dot(w, features), w)
    circuit = cs.trace(f, w=(3,), x=(3,))
    forward = cs.trace(lambda w, x: cs.dot(w, [(xi.exp() + xi.tanh()).log() for xi in x]), w=(3,), x=(3,))
    # backward = the seed 1.0 plus, per w_i, its partial (the feature itself, already computed)
    # times the cotangent: three muls
    assert len(circuit.eqns) - len(forward.eqns) == 4


def test_grad_pass_errors():
    circuit = cs.trace(lambda x: {"v": x, "s": x[0] * x[1]}, x=(2,))
    with pytest.raises(ValueError, match=r"grad needs a scalar output; 'v' has shape \(2,\)"):
        grad(circuit, "v")
    with pytest.raises(ValueError, match=r"grad: \['w'\] are not inputs of the circuit"):
        grad(circuit, "s", ["w"])
    with pytest.raises(KeyError, match="circuit has no output 'loss'"):
        grad(circuit, "loss")


def test_grad_pass_for_unread_input_elements_is_zero():
    b = Builder()
    x = b.input("x", (3,))
    b.input("unused", (2,))
    b.output("y", [b.add(Op.MUL, (x[0], x[2]))], ())
    got = cs.evaluate(grad(b.build(), "y"), {"x": np.array([2.0, 5.0, 7.0]), "unused": np.zeros(2)})
    np.testing.assert_array_equal(got["dy/dx"], [7.0, 0.0, 2.0])
    np.testing.assert_array_equal(got["dy/dunused"], [0.0, 0.0])
