"""The Taylor pass on whole circuits and programs, against independent references.

* Random composite circuits (``tests/strategies.py``), seed x = x0 + z v: the order-1 coefficient
  equals the complex-step derivative Im f(x0 + i h v) / h computed by an mpmath interpreter of the
  circuit at 50 digits (h = 1e-30, so the reference is exact to ~1e-60); order 2 equals the
  central second difference (f(x0 + tv) - 2 f(x0) + f(x0 - tv)) / (2 t^2) at 50 digits
  (t = 1e-12: truncation ~1e-24, rounding ~1e-26); orders 0..4 equal the series obtained by
  mapping every equation to sympy (``MpSeries`` of ``test_taylor_rules``: sympy's Taylor
  coefficients of each op composed along the circuit); order 1 equals the reverse-mode gradient
  (``passes.grad``) dotted with v. Tolerance 1e-12 relative to the larger of the value's size
  and 1: double rounding through <= 40 composed gates of bounded inputs (measured worst over 300
  random circuits: 9e-16), with headroom for their condition numbers.
* Order 0 is the real computation; the constant term at any order is the real run.
* Batched directions: s directions in one run equal s separate runs (circuit and program).
* Kinks and domain errors name the node and the traced source line and never give NaN.
* A traced weighted training loop (logistic regression, SGD and Adam, 100 steps) lowered at
  order 6 along the real direction 1_D: see ``test_order_6_series_predicts_retraining``.
"""

from __future__ import annotations

import re
from pathlib import Path

import mpmath as mp
import numpy as np
import pytest
import sympy as sp
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import circuitsketch as cs
from circuitsketch.backends.checks import InputError
from circuitsketch.backends.reference import EvaluationError
from circuitsketch.ir import Op, print_program
from circuitsketch.passes import SERIES_RULES, grad
from strategies import KINK_OPS, SMOOTH_OPS, random_circuits, random_point
from test_taylor_rules import GELU_X, X, MpSeries

# ---------------------------------------------------------------- independent interpreters

MP_IMPL = {
    Op.CONST: lambda e: mp.mpf(e.attr("value")),
    Op.ADD: lambda e, a, b: a + b,
    Op.SUB: lambda e, a, b: a - b,
    Op.NEG: lambda e, a: -a,
    Op.MUL: lambda e, a, b: a * b,
    Op.DIV: lambda e, a, b: a / b,
    Op.POW: lambda e, a: mp.power(a, int(e.attr("p")) if e.attr("p").is_integer() else e.attr("p")),
    Op.EXP: lambda e, a: mp.exp(a),
    Op.LOG: lambda e, a: mp.log(a),
    Op.SQRT: lambda e, a: mp.sqrt(a),
    Op.TANH: lambda e, a: mp.tanh(a),
    Op.ERF: lambda e, a: mp.erf(a),
    Op.GELU: lambda e, a: a * (1 + mp.erf(a / mp.sqrt(2))) / 2,
    Op.RELU: lambda e, a: a if mp.re(a) > 0 else 0 * a,
    Op.MAX: lambda e, a, b: a if mp.re(a) >= mp.re(b) else b,
    Op.GT: lambda e, a, b: mp.mpf(mp.re(a) > mp.re(b)),
    Op.SELECT: lambda e, c, a, b: a if mp.re(c) != 0 else b,
    Op.SUM: lambda e, *args: mp.fsum(args),
    Op.DOT: lambda e, *args: mp.fsum(a * b for a, b in zip(args[: len(args) // 2], args[len(args) // 2:])),
}


def mp_evaluate(circuit, x) -> dict[str, list]:
    """Evaluate ``circuit`` at the (mp real or complex) point ``x`` in mpmath."""
    values = []
    for eqn in circuit.eqns:
        if eqn.op is Op.INPUT:
            values.append(x[eqn.attr("index")])
        else:
            values.append(MP_IMPL[eqn.op](eqn, *(values[a] for a in eqn.args)))
    return {out.name: [values[n] for n in out.nodes] for out in circuit.outputs}


SYMPY_OF = {Op.EXP: sp.exp(X), Op.LOG: sp.log(X), Op.SQRT: sp.sqrt(X), Op.TANH: sp.tanh(X),
            Op.ERF: sp.erf(X), Op.GELU: GELU_X}


def sympy_series(circuit, x0, v, k: int) -> dict[str, list]:
    """Every equation mapped to sympy: its series from its operands' series (``MpSeries``)."""
    def apply(eqn, args):
        op = eqn.op
        if op in SYMPY_OF:
            return args[0].apply(SYMPY_OF[op])
        if op is Op.POW:
            return args[0].apply(X ** sp.nsimplify(eqn.attr("p")))
        if op is Op.DIV:
            return args[0] * args[1].apply(1 / X)
        if op is Op.DOT:
            half = len(args) // 2
            products = [a * b for a, b in zip(args[:half], args[half:])]
            return sum(products[1:], products[0])
        if op is Op.GT:
            return zero.constant(float(args[0].const > args[1].const))
        branches = {Op.RELU: lambda a: a if a.const > 0 else zero,
                    Op.MAX: lambda a, b: a if a.const >= b.const else b,
                    Op.SELECT: lambda c, a, b: a if c.const != 0 else b,
                    Op.ADD: lambda a, b: a + b, Op.SUB: lambda a, b: a - b, Op.NEG: lambda a: -a,
                    Op.MUL: lambda a, b: a * b, Op.SUM: lambda *a: sum(a[1:], a[0])}
        return branches[op](*args)

    zero = MpSeries([0] * (k + 1))
    values = []
    with mp.workdps(40):
        for eqn in circuit.eqns:
            if eqn.op is Op.INPUT:
                i = eqn.attr("index")
                values.append(MpSeries([x0[i], v[i]] + [0] * (k - 1)))
            elif eqn.op is Op.CONST:
                values.append(zero.constant(eqn.attr("value")))
            else:
                values.append(apply(eqn, [values[a] for a in eqn.args]))
        return {out.name: [[complex(c) for c in values[n].c] for n in out.nodes]
                for out in circuit.outputs}


# ---------------------------------------------------------------- helpers

def seed_series(x0: np.ndarray, v: np.ndarray, k: int) -> np.ndarray:
    """The input series x0 + z v as a (k+1, n) array."""
    series = np.zeros((k + 1, len(x0)), dtype=complex)
    series[0], series[1] = x0, v
    return series


def taylor_outputs(circuit, x0, v, k: int) -> dict[str, np.ndarray]:
    """Each output as [k+1, n_elements] coefficients."""
    out = cs.evaluate(cs.taylor(circuit, order=k, seeds={"x"}), {"x": seed_series(x0, v, k)})
    return {name: np.asarray(value).reshape(k + 1, -1) for name, value in out.items()}


def assert_close(ours, reference, what: str, rtol: float = 1e-12) -> None:
    ours, reference = np.asarray(ours, dtype=complex), np.asarray(reference, dtype=complex)
    scale = np.maximum(np.abs(reference), 1.0)
    error = np.abs(ours - reference) / scale
    assert error.max() < rtol, f"{what}: relative error {error.max():.2e}\nours {ours}\nref  {reference}"


def usable(circuit, x0) -> bool:
    """The real run stays in range (random x^3 chains can overflow): keeps hypothesis honest."""
    try:
        values = cs.evaluate(circuit, {"x": x0})
    except EvaluationError:
        return False
    return all(np.all(np.abs(np.asarray(v)) < 1e6) for v in values.values())


CIRCUITS = random_circuits(ops=SMOOTH_OPS + KINK_OPS, max_nodes=14)
HYPOTHESIS = settings(max_examples=40, deadline=None, derandomize=True,
                      suppress_health_check=[HealthCheck.filter_too_much])


# ---------------------------------------------------------------- random composite circuits

@HYPOTHESIS
@given(CIRCUITS, st.integers(0, 10 ** 6))
def test_order_1_equals_complex_step(circuit, seed):
    x0, v = random_point(seed), random_point(seed + 1)
    assume(usable(circuit, x0))
    ours = taylor_outputs(circuit, x0, v, 1)
    h = mp.mpf(10) ** -30
    with mp.workdps(50):
        shifted = mp_evaluate(circuit, [mp.mpc(a, h * b) for a, b in zip(x0, v)])
        for name, values in shifted.items():
            assert_close(ours[name][0], [complex(mp.re(y)) for y in values], f"{name} value")
            assert_close(ours[name][1], [complex(mp.im(y) / h) for y in values], f"{name} order 1")


@HYPOTHESIS
@given(CIRCUITS, st.integers(0, 10 ** 6))
def test_order_2_equals_central_second_difference(circuit, seed):
    x0, v = random_point(seed), random_point(seed + 1)
    assume(usable(circuit, x0))
    ours = taylor_outputs(circuit, x0, v, 2)
    t = mp.mpf(10) ** -12
    with mp.workdps(50):
        at = {s: mp_evaluate(circuit, [mp.mpf(a) + s * t * mp.mpf(b) for a, b in zip(x0, v)])
              for s in (-1, 0, 1)}
        for name in at[0]:
            second = [(p - 2 * c + m) / (2 * t * t)
                      for p, c, m in zip(at[1][name], at[0][name], at[-1][name])]
            assert_close(ours[name][2], [complex(y) for y in second], f"{name} order 2")


@HYPOTHESIS
@given(CIRCUITS, st.integers(0, 10 ** 6), st.integers(1, 4))
def test_coefficients_equal_sympy_along_the_circuit(circuit, seed, k):
    x0, v = random_point(seed), random_point(seed + 1)
    assume(usable(circuit, x0))
    ours = taylor_outputs(circuit, x0, v, k)
    for name, series in sympy_series(circuit, x0, v, k).items():
        assert_close(ours[name], np.array(series).T, f"{name} orders 0..{k}")


@HYPOTHESIS
@given(random_circuits(ops=SMOOTH_OPS, max_nodes=14), st.integers(0, 10 ** 6))
def test_order_1_equals_reverse_mode_gradient_times_direction(circuit, seed):
    x0, v = random_point(seed), random_point(seed + 1)
    assume(usable(circuit, x0))
    gradient = cs.evaluate(grad(circuit, "y", ["x"]), {"x": x0})["dy/dx"]
    assert_close(taylor_outputs(circuit, x0, v, 1)["y"][1], [gradient @ v], "order 1 vs grad")


# ---------------------------------------------------------------- order 0, constant terms, batches

def smooth_and_kinked(x, y):
    hidden = cs.matvec(np.array([[0.5, -1.0, 0.25], [1.5, 0.3, -0.7]]), x)
    return {"out": [(hidden[0].gelu() + hidden[1].tanh() * y).exp(), (x[0] * x[0] + 1.0).log(),
                    cs.maximum(hidden[0], hidden[1]).relu() / (x[2] ** 2 + 0.5).sqrt(),
                    cs.select(x[1] > x[2], x[0].erf(), y ** 1.5), cs.stop_gradient(x[0]) * x[1]]}


SMOOTH_AND_KINKED = cs.trace(smooth_and_kinked, x=(3,), y=())
X0, Y0 = np.array([0.4, -0.3, 0.9]), 0.8


def test_order_0_is_the_real_computation():
    assert cs.taylor(SMOOTH_AND_KINKED, order=0, seeds={"x"}) is SMOOTH_AND_KINKED


@pytest.mark.parametrize("k", [1, 3, 8])
def test_constant_term_is_the_real_run(k):
    direction = np.array([1.0 + 0.5j, -0.3j, 2.0])
    series = cs.evaluate(cs.taylor(SMOOTH_AND_KINKED, order=k, seeds={"x"}),
                         {"x": seed_series(X0, direction, k), "y": Y0})["out"]
    real = cs.evaluate(SMOOTH_AND_KINKED, {"x": X0, "y": Y0})["out"]
    np.testing.assert_allclose(series[0], real, rtol=1e-15)
    assert np.all(series[0].imag == 0)


def test_directions_in_one_batch_equal_separate_runs():
    k, rng = 4, np.random.default_rng(5)
    lowered = cs.taylor(SMOOTH_AND_KINKED, order=k, seeds={"x"})
    directions = rng.normal(size=(5, 3)) + 1j * rng.normal(size=(5, 3))
    batch = np.stack([seed_series(X0, d, k) for d in directions])
    together = cs.evaluate(lowered, {"x": batch, "y": Y0}, batch=5)["out"]
    assert together.shape == (5, k + 1, 5)
    for d, direction in enumerate(directions):
        alone = cs.evaluate(lowered, {"x": seed_series(X0, direction, k), "y": Y0})["out"]
        np.testing.assert_allclose(together[d], alone, rtol=1e-15, atol=1e-300)


def test_the_pass_keeps_the_graph_and_types_only_what_the_seed_reaches():
    lowered = cs.taylor(SMOOTH_AND_KINKED, order=2, seeds={"x"})
    assert [(e.op, e.args, e.attrs, e.loc) for e in lowered.eqns] == \
           [(e.op, e.args, e.attrs, e.loc) for e in SMOOTH_AND_KINKED.eqns]
    assert lowered.order == 2 and SMOOTH_AND_KINKED.order == 0
    typed = {e.op: e.series for e in lowered.eqns if e.op in (Op.CONST, Op.GT, Op.STOP_GRADIENT)}
    assert typed == {Op.CONST: False, Op.GT: False, Op.STOP_GRADIENT: False}
    y_only = [e for e in lowered.eqns if e.op is Op.POW and e.attr("p") == 1.5]
    assert len(y_only) == 1 and not y_only[0].series  # y ** 1.5 does not depend on x


@pytest.mark.parametrize("kwargs, message", [
    ({"order": -1, "seeds": {"x"}}, "order must be a non-negative integer, got -1"),
    ({"order": 2.0, "seeds": {"x"}}, "order must be a non-negative integer, got 2.0"),
    ({"order": 2, "seeds": {"w"}}, "seed(s) ['w'] are not inputs; inputs are ['x', 'y']"),
    ({"order": 2}, "taylor needs seeds="),
])
def test_bad_arguments_are_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        cs.taylor(SMOOTH_AND_KINKED, **kwargs)


def test_lowering_twice_is_an_error():
    lowered = cs.taylor(SMOOTH_AND_KINKED, order=1, seeds={"x"})
    with pytest.raises(ValueError, match="already lowered to order 1"):
        cs.taylor(lowered, order=2, seeds={"x"})


def test_an_op_without_a_rule_is_named_when_lowering(monkeypatch):
    monkeypatch.delitem(SERIES_RULES, Op.TANH)
    with pytest.raises(NotImplementedError, match=r"node %\d+ = tanh \(traced at "
                                                  r"test_taylor_pass.py:\d+\): no Taylor rule"):
        cs.taylor(SMOOTH_AND_KINKED, order=2, seeds={"x"})


# ---------------------------------------------------------------- kinks and domain errors

ERROR_CIRCUITS = {
    "relu": lambda x, y: x[0].relu() + x[1],  # <- relu
    "max": lambda x, y: cs.maximum(x[0], x[1]) * y,  # <- max
    "lt": lambda x, y: cs.select(x[0] < x[1], x[2], y),  # <- lt
    "select": lambda x, y: cs.select(x[0], x[1], x[2]),  # <- select
    "log": lambda x, y: (x[0] * y).log(),  # <- log
    "pow": lambda x, y: (x[0] + x[1]) ** 1.5,  # <- pow
    "sqrt": lambda x, y: (x[0] + x[1]).sqrt(),  # <- sqrt
    "div": lambda x, y: y / x[0],  # <- div
    "div by real": lambda x, y: x[0] / y,  # <- div by real
    "exp": lambda x, y: (x[0] * 1000.0).exp(),  # <- exp
}
SOURCE = Path(__file__).read_text().splitlines()


def traced_at(name: str) -> str:
    line = next(i for i, text in enumerate(SOURCE, 1) if text.endswith(f"# <- {name}"))
    op = name.split()[0]
    return re.escape(f"= {op} (traced at {Path(__file__).name}:{line}): ")


def run_error_circuit(name: str, x0, v, y=1.0, k: int = 2, **options):
    circuit = cs.trace(ERROR_CIRCUITS[name], x=(3,), y=())
    return cs.evaluate(cs.taylor(circuit, order=k, seeds={"x"}),
                       {"x": seed_series(np.array(x0, float), np.array(v, complex), k), "y": y},
                       **options)["out"]


KINKS = {  # name: (x0, direction, the branch the real computation takes at the tie)
    "relu": ([0.0, 0.5, 0.0], [1.0, 0.0, 0.0], [0.5, 0, 0]),
    "max": ([0.7, 0.7, 0.0], [1.0, -1.0, 0.0], [0.7, 1.0, 0]),
    "lt": ([0.7, 0.7, 2.0], [1.0, -1.0, 3.0], [1.0, 0, 0]),
    "select": ([0.0, 0.5, 0.25], [1.0, 1.0, 1.0], [0.25, 1.0, 0]),
}


@pytest.mark.parametrize("name", list(KINKS))
def test_kink_raises_naming_the_node_and_line(name):
    x0, v, _ = KINKS[name]
    with pytest.raises(cs.KinkError, match=traced_at(name) + ".*ignore_kinks=True"):
        run_error_circuit(name, x0, v)


@pytest.mark.parametrize("name", list(KINKS))
def test_ignore_kinks_takes_the_branch_of_the_real_computation(name):
    x0, v, expected = KINKS[name]
    np.testing.assert_array_equal(run_error_circuit(name, x0, v, ignore_kinks=True), expected)
    real = cs.evaluate(cs.trace(ERROR_CIRCUITS[name], x=(3,), y=()), {"x": x0, "y": 1.0})["out"]
    assert real == expected[0]


@pytest.mark.parametrize("name", ["relu", "max", "lt"])
def test_a_tie_along_the_whole_path_is_no_kink(name):
    """Both sides agree for every z (relu of an identically-zero series; max and lt of two equal
    series): the function is analytic along this path, so there is no kink to report."""
    x0 = [0.0, 0.5, 0.0] if name == "relu" else [0.7, 0.7, 2.0]
    v = [0.0, 1.0, 0.0] if name == "relu" else [1.0, 1.0, 3.0]
    got = run_error_circuit(name, x0, v)
    expected = {"relu": [0.5, 1.0, 0], "max": [0.7, 1.0, 0], "lt": [1.0, 0, 0]}[name]
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("name, x0, y, message", [
    ("log", [-0.5, 0, 0], 1.0, "log of a non-positive constant term"),
    ("log", [0.5, 0, 0], 0.0, "log of a non-positive constant term"),
    ("pow", [-0.5, 0.25, 0], 1.0, "non-integer power 1.5 of a negative constant term"),
    ("pow", [-0.5, 0.5, 0], 1.0, "power 1.5 of a series whose constant term is zero"),
    ("sqrt", [0.0, 0.0, 0], 1.0, "power 0.5 of a series whose constant term is zero"),
    ("div", [0.0, 1.0, 0], 1.0, "division by a series whose constant term is zero"),
    ("div by real", [1.0, 1.0, 0], 0.0, "division by zero"),
    ("exp", [0.8, 0, 0], 1.0, "overflow"),
])
def test_domain_errors_name_the_node_and_never_give_nan(name, x0, y, message):
    with pytest.raises(EvaluationError, match=traced_at(name) + ".*" + re.escape(message)) as info:
        run_error_circuit(name, x0, [1.0, 0.5, 0.0], y=y)
    assert not isinstance(info.value, cs.KinkError)


def test_a_seed_with_a_complex_constant_term_is_rejected():
    circuit = cs.taylor(cs.trace(lambda x: x.exp(), x=()), order=2, seeds={"x"})
    with pytest.raises(InputError, match=r"input 'x': the constant term .* is not real"):
        cs.evaluate(circuit, {"x": np.array([0.5 + 0.1j, 1.0, 0.0])})


# ---------------------------------------------------------------- a traced weighted training loop

N_EXAMPLES, DIM, ORDER = 100, 3, 6
SGD_LR, ADAM_LR, BETA1, BETA2, EPS = 0.5, 0.05, 0.9, 0.99, 1e-6
DELETED = [3, 11, 17, 25, 38, 44, 59, 66, 80, 97]
W0, B0 = np.array([0.1, -0.2, 0.05]), 0.0


def _logistic_loss(w, b, features, label):
    """log(1 + exp(-s z)) for the margin s z, s = 2 label - 1."""
    margin = (2.0 * label - 1.0) * (cs.dot(w, features) + b)
    return (1.0 + (-margin).exp()).log()


def sgd_step(w, b, features, label, x):
    loss = (1.0 - x[0]) * _logistic_loss(w, b, features, label)
    return {"w": w - SGD_LR * cs.grad(loss, w), "b": b - SGD_LR * cs.grad(loss, b)}


def adam_step(w, b, m, v, decay1, decay2, features, label, x):
    """Adam with bias correction (decay_i = beta_i^t carried) and eps inside the root."""
    loss = (1.0 - x[0]) * _logistic_loss(w, b, features, label)
    g = np.append(cs.grad(loss, w), cs.grad(loss, b))
    m, v = BETA1 * m + (1 - BETA1) * g, BETA2 * v + (1 - BETA2) * g * g
    decay1, decay2 = decay1 * BETA1, decay2 * BETA2
    params = np.append(w, b) - np.array([ADAM_LR * (mi / (1 - decay1)) / (vi / (1 - decay2) + EPS).sqrt()
                                         for mi, vi in zip(m, v)], dtype=object)
    return {"w": params[:DIM], "b": params[DIM], "m": m, "v": v, "decay1": decay1, "decay2": decay2}


OPTIMIZERS = {
    "sgd": (sgd_step, {"w": W0, "b": B0}),
    "adam": (adam_step, {"w": W0, "b": B0, "m": np.zeros(DIM + 1), "v": np.zeros(DIM + 1),
                         "decay1": 1.0, "decay2": 1.0}),
}


def numpy_retrain(optimizer: str, features, labels, x) -> np.ndarray:
    """The same training written directly in numpy with the hand-derived gradient
    d/dz log(1 + exp(-s z)) = -s / (1 + exp(s z)); returns (w, b)."""
    params, m, v = np.append(W0, B0), np.zeros(DIM + 1), np.zeros(DIM + 1)
    for t in range(N_EXAMPLES):
        s = 2.0 * labels[t] - 1.0
        dz = (1.0 - x[t]) * -s / (1.0 + np.exp(s * (features[t] @ params[:DIM] + params[DIM])))
        g = dz * np.append(features[t], 1.0)
        if optimizer == "sgd":
            params = params - SGD_LR * g
        else:
            m, v = BETA1 * m + (1 - BETA1) * g, BETA2 * v + (1 - BETA2) * g * g
            m_hat, v_hat = m / (1 - BETA1 ** (t + 1)), v / (1 - BETA2 ** (t + 1))
            params = params - ADAM_LR * m_hat / np.sqrt(v_hat + EPS)
    return params


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(2024)
    features = rng.normal(size=(N_EXAMPLES, DIM))
    labels = (features @ np.array([1.5, -2.0, 0.5]) + 0.3 * rng.normal(size=N_EXAMPLES) > 0)
    return {"features": features, "label": labels.astype(float)}


@pytest.fixture(scope="module", params=list(OPTIMIZERS))
def trained(request, data):
    """(optimizer, real program, lowered program, coefficients [k+1, DIM+1] along 1_D)."""
    step, init = OPTIMIZERS[request.param]
    program = cs.trace_program(step, n_steps=N_EXAMPLES, state={n: np.shape(a) for n, a in init.items()},
                               per_step={"features": (DIM,), "label": ()}, weight="x")
    lowered = cs.taylor(program, order=ORDER)
    x = np.zeros((ORDER + 1, N_EXAMPLES))
    x[1, DELETED] = 1.0  # x = z 1_D
    final = cs.run_program(lowered, init, data=data, x=x)
    coefficients = np.concatenate([final["w"], final["b"][:, None]], axis=1)
    return request.param, program, lowered, coefficients


def test_lowered_program_is_the_step_plus_the_same_loop(trained):
    optimizer, program, lowered, _ = trained
    assert len(lowered.step) == len(program.step) and lowered.n_steps == program.n_steps
    assert (lowered.carry, lowered.per_step, lowered.weight) == (program.carry, program.per_step, "x")
    series_inputs = {e.attr("name") for e in lowered.step.eqns if e.op is Op.INPUT and e.series}
    expected = {"x", "w", "b"} | ({"m", "v"} if optimizer == "adam" else set())
    assert series_inputs == expected  # decay1/decay2 and the data stay real
    assert cs.parse_program(print_program(lowered)) == lowered


def test_constant_term_is_plain_training(trained, data):
    optimizer, _, _, coefficients = trained
    real = numpy_retrain(optimizer, data["features"], data["label"], np.zeros(N_EXAMPLES))
    np.testing.assert_allclose(coefficients[0], real, rtol=1e-12)


def test_order_1_coefficient_is_the_derivative_of_retraining(trained, data):
    """Central difference of numpy retraining at x = +-h 1_D, h = 1e-4: truncation
    h^2 |c_3| < 1e-10, rounding 1e-16 / h = 1e-12."""
    optimizer, _, _, coefficients = trained
    h, indicator = 1e-4, np.isin(np.arange(N_EXAMPLES), DELETED).astype(float)
    plus, minus = (numpy_retrain(optimizer, data["features"], data["label"], s * h * indicator)
                   for s in (1, -1))
    np.testing.assert_allclose(coefficients[1].real, (plus - minus) / (2 * h), rtol=1e-7, atol=1e-9)


def test_order_6_series_predicts_retraining(trained, data):
    """f(w 1_D) = sum_j c_j w^j + R_6(w). Tolerance for R_6: under the stability assumption the
    coefficients grow at most geometrically, so with rho the largest ratio |c_j|/|c_{j-1}|
    (j = 3..6, max-norms over the parameters) the tail is about |c_6| w^6 q/(1-q), q = rho w; we
    allow 3 times that, plus 1e-12 for rounding. Lower truncations must be worse."""
    optimizer, _, _, coefficients = trained
    assert np.all(coefficients.imag == 0)  # a real direction gives real coefficients
    c = coefficients.real
    size = np.abs(c).max(axis=1)
    rho = max(size[j] / size[j - 1] for j in range(3, ORDER + 1))
    indicator = np.isin(np.arange(N_EXAMPLES), DELETED).astype(float)
    for w in (0.1, 0.3, 0.5):
        retrained = numpy_retrain(optimizer, data["features"], data["label"], w * indicator)
        error = [np.abs(c[: k + 1].T @ w ** np.arange(k + 1) - retrained).max() for k in range(ORDER + 1)]
        q = rho * w
        tolerance = 3 * size[ORDER] * w ** ORDER * q / (1 - q) + 1e-12
        assert error[ORDER] < tolerance, f"{optimizer} w={w}: error {error[ORDER]:.2e} > {tolerance:.2e}"
        assert error[ORDER] < error[4] < error[2] < error[0], f"{optimizer} w={w}: errors {error}"


def test_directions_in_one_batch_equal_separate_runs_of_a_program(trained, data):
    optimizer, _, _, _ = trained
    step, init = OPTIMIZERS[optimizer]
    program = cs.trace_program(step, n_steps=20, state={n: np.shape(a) for n, a in init.items()},
                               per_step={"features": (DIM,), "label": ()}, weight="x")
    lowered, k, rng = cs.taylor(program, order=3), 3, np.random.default_rng(9)
    psi = rng.normal(size=(4, 20)) + 1j * rng.normal(size=(4, 20))
    psi /= np.linalg.norm(psi, axis=1, keepdims=True)
    x = np.zeros((4, k + 1, 20), complex)
    x[:, 1] = psi
    together = cs.run_program(lowered, init, data=data, x=x, batch=4)
    for d in range(4):
        alone = cs.run_program(lowered, init, data=data, x=x[d])
        for name in init:
            np.testing.assert_allclose(together[name][d], alone[name], rtol=1e-14, atol=1e-300)
