"""The Numba backends against the reference interpreter (the definition of every op's meaning).

Differential tests: every op and hypothesis random circuits, real and Taylor-lowered at orders
0, 1, 3, 6, with one and several directions; a traced training program (weighted logistic
regression with Adam) real and at order 2; errors (domain, kink, overflow) raised with the
reference's type and message; the memory plan; straight-line kernels. The CUDA backend runs
the same checks under Numba's CUDA simulator in a subprocess (the simulator must be switched on
before Numba is imported, and must not leak into the CPU tests).

Tolerance: relative 1e-12 of each output's largest magnitude. Both sides compute the same
formulas in float64/complex128 operation by operation; what differs is the order of the terms
of a fused ``dot`` (the reference groups pairs by kind), libm versus numpy's SIMD
transcendentals (an ulp or two) and, for programs, 30 steps that can amplify that. A real bug
(a wrong coefficient, a mis-assigned slot) is off by far more.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import KINK_OPS, SCALAR_OPS, SMOOTH_OPS, random_circuits, random_point

import circuitsketch as cs
from circuitsketch.backends import emit, numba_cpu, reference
from circuitsketch.backends.checks import InputError
from circuitsketch.backends.reference import EvaluationError
from circuitsketch.backends.tape import compile_tape
from circuitsketch.ir import Builder, Op, make_attrs
from circuitsketch.passes.taylor import KinkError

CUDASIM = os.environ.get("CIRCUITSKETCH_TEST_CUDASIM") == "1"
if CUDASIM:  # the subprocess of test_cuda_simulator: the same tests against numba-cuda
    from circuitsketch.backends import numba_cuda as backend
else:
    backend = numba_cpu

RTOL = 1e-12


def assert_agrees(ours: dict, ref: dict, rtol: float = RTOL) -> None:
    assert ours.keys() == ref.keys()
    for name in ref:
        assert ours[name].shape == ref[name].shape, name
        assert ours[name].dtype.kind == ref[name].dtype.kind, name
        finite = np.abs(ref[name][np.isfinite(ref[name])])
        scale = max(1.0, float(finite.max()) if finite.size else 1.0)
        np.testing.assert_allclose(ours[name], ref[name], rtol=rtol, atol=rtol * scale, err_msg=name)


def series_input(rng, point: np.ndarray, k: int, directions: int | None) -> np.ndarray:
    """A seed series: constant term the real point, higher terms random complex directions."""
    shape = (directions or 1, k + 1) + point.shape
    value = rng.normal(size=shape) + 1j * rng.normal(size=shape)
    value[:, 0] = point
    return value if directions else value[0]


def both(circuit, inputs, **kwargs):
    return backend.evaluate(circuit, inputs, **kwargs), reference.evaluate(circuit, inputs, **kwargs)


# ---------------------------------------------------------------- every op

def _op_circuit(op: Op, n_args: int, **attrs) -> cs.Circuit:
    b = Builder()
    xs = b.input("x", (n_args,))
    args = list(xs)
    if op is Op.SELECT:
        args[0] = b.add(Op.GT, (xs[0], b.const(0.0)))
    b.output("y", [b.add(op, tuple(args), make_attrs(**attrs))], ())
    return b.build()


_POINT = np.array([0.7, -0.4, 1.3, 0.2])
_OPS = [(op, 2 if op in (Op.ADD, Op.SUB, Op.MUL, Op.DIV, Op.MAX, Op.LT, Op.LE, Op.GT, Op.GE, Op.EQ)
         else 3 if op in (Op.SELECT, Op.SUM) else 4 if op is Op.DOT else 1, {})
        for op in SCALAR_OPS if op is not Op.POW]  # scalar gates: array ops need shapes and attrs
_OPS += [(Op.POW, 1, {"p": p}) for p in (2.0, 3.0, -1.0, 0.5, -1.5, 0.0)]


def _positive_point(op: Op, n: int) -> np.ndarray:
    point = _POINT[:n].copy()
    if op in (Op.LOG, Op.SQRT, Op.POW):
        point = np.abs(point) + 0.1
    return point


@pytest.mark.parametrize("op, n, attrs", _OPS, ids=lambda v: getattr(v, "value", str(v)))
@pytest.mark.parametrize("order", [0, 1, 3, 6])
def test_every_op_agrees(op, n, attrs, order):
    circuit = _op_circuit(op, n, **attrs)
    point = _positive_point(op, n)
    rng = np.random.default_rng(7)
    if order == 0:
        assert_agrees(*both(circuit, {"x": point}))
        batch = point + rng.uniform(-0.05, 0.05, size=(3, n))
        assert_agrees(*both(circuit, {"x": batch}, batch=3))
        return
    lowered = cs.taylor(circuit, order, {"x"})
    assert_agrees(*both(lowered, {"x": series_input(rng, point, order, None)}))
    assert_agrees(*both(lowered, {"x": series_input(rng, point, order, 5)}, batch=5))


@pytest.mark.parametrize("order", range(1, 8))
@pytest.mark.parametrize("directions", [None, 3, 17])
def test_dot_of_series_pairs_agrees_at_every_order(order, directions):
    # orders 1, 3 and 6 run the hand-vectorised pairs (cpu_native), the others the snippet's
    # loop; 1, 3 and 17 directions take the 1-, 4- and 16-direction blocks (odd counts included)
    circuit = _op_circuit(Op.DOT, 6)
    lowered = cs.taylor(circuit, order, {"x"})
    rng = np.random.default_rng(order)
    point = rng.uniform(-1.0, 1.0, 6)
    assert_agrees(*both(lowered, {"x": series_input(rng, point, order, directions)},
                        batch=directions))


@pytest.mark.parametrize("op", [Op.ADD, Op.SUB, Op.MUL, Op.DIV, Op.MAX, Op.LT, Op.SELECT, Op.DOT, Op.SUM])
@pytest.mark.parametrize("series_args", [(0,), (1,), (0, 1)])
def test_mixed_real_and_series_operands(op, series_args):
    """Ops reading a real and a series operand (the tape swaps, lifts or scales them)."""
    b = Builder()
    s = b.input("s", (2,))
    r = b.input("r", (2,))
    pick = [s[0] if 0 in series_args else r[0], s[1] if 1 in series_args else r[1]]
    if op is Op.SELECT:
        args = (b.add(Op.GT, (r[0], b.const(0.0))), *pick)
    elif op is Op.DOT:
        args = (pick[0], r[1], pick[1], s[0])
    elif op is Op.SUM:
        args = (pick[0], r[1], pick[1])
    else:
        args = tuple(pick)
    b.output("y", [b.add(op, args)], ())
    lowered = cs.taylor(b.build(), 3, {"s"})
    rng = np.random.default_rng(3)
    inputs = {"s": series_input(rng, np.array([0.6, 1.7]), 3, 4), "r": np.array([[0.9, -1.2]] * 4)}
    assert_agrees(*both(lowered, inputs, batch=4))


# ---------------------------------------------------------------- random circuits

_SETTINGS = settings(max_examples=10 if CUDASIM else 40, deadline=None,
                     suppress_health_check=[HealthCheck.too_slow])


@_SETTINGS
@given(circuit=random_circuits(ops=SMOOTH_OPS + KINK_OPS, max_nodes=14), seed=st.integers(0, 10**6),
       batch=st.sampled_from([None, 3]))
def test_random_real_circuits_agree(circuit, seed, batch):
    rng = np.random.default_rng(seed)
    point = random_point(seed)
    x = point if batch is None else point + rng.uniform(-0.1, 0.1, size=(batch, 3))
    assert_agrees(*both(circuit, {"x": x}, batch=batch))


@_SETTINGS
@given(circuit=random_circuits(ops=SMOOTH_OPS + KINK_OPS, max_nodes=14), seed=st.integers(0, 10**6),
       order=st.sampled_from([1, 3, 6]), directions=st.sampled_from([None, 1, 4]))
def test_random_lowered_circuits_agree(circuit, seed, order, directions):
    lowered = cs.taylor(circuit, order, {"x"})
    rng = np.random.default_rng(seed)
    x = series_input(rng, random_point(seed), order, directions) * np.r_[1.0, [0.3] * order][:, None]
    assert_agrees(*both(lowered, {"x": x}, batch=directions))


# ---------------------------------------------------------------- a training program

N_STEPS, DIM = 30, 3


def _adam_logistic_step(w, m, v, t, features, label, x):
    """One Adam step (bias-corrected, epsilon inside the root) on example t's logistic loss,
    down-weighted by (1 - x)."""
    z = cs.dot(w, features)
    loss = (1.0 - x[0]) * ((1.0 + (-z).exp()).log() + (1.0 - label) * z)
    g = cs.grad(loss, w)
    m = 0.9 * m + 0.1 * g
    v = 0.99 * v + 0.01 * g * g
    t = t + 1.0
    step = 0.05 * (m / (1.0 - 0.9 ** t)) / ((v / (1.0 - 0.99 ** t) + 1e-3) ** 0.5)
    return {"w": w - step, "m": m, "v": v, "t": t, "loss": loss}


@pytest.fixture(scope="module")
def training():
    program = cs.trace_program(_adam_logistic_step, n_steps=N_STEPS,
                               state={"w": (DIM,), "m": (DIM,), "v": (DIM,), "t": ()},
                               per_step={"features": (DIM,), "label": ()}, weight="x")
    rng = np.random.default_rng(11)
    features = rng.normal(size=(N_STEPS, DIM))
    labels = (features @ np.array([1.0, -2.0, 0.5]) > 0).astype(float)
    init = {"w": rng.normal(scale=0.1, size=DIM), "m": np.zeros(DIM), "v": np.zeros(DIM), "t": 0.0}
    return program, init, {"features": features, "label": labels}


def test_training_program_real(training):
    program, init, data = training
    x = np.zeros(N_STEPS)
    x[[2, 5, 17]] = 1.0
    ours = backend.run_program(program, init, data=data, x=x)
    ref = reference.run_program(program, init, data=data, x=x)
    assert_agrees(ours, ref, rtol=1e-11)
    assert np.max(np.abs(ours["w"] - init["w"])) > 0.3  # it really trained
    xs = np.random.default_rng(1).uniform(0, 1, size=(4, N_STEPS))  # a batch of retrainings
    assert_agrees(backend.run_program(program, init, data=data, x=xs, batch=4),
                  reference.run_program(program, init, data=data, x=xs, batch=4), rtol=1e-11)


def test_training_program_order_2_directions(training):
    program, init, data = training
    lowered = cs.taylor(program, 2)
    rng = np.random.default_rng(5)
    psi = rng.normal(size=(3, N_STEPS)) + 1j * rng.normal(size=(3, N_STEPS))
    x = np.zeros((3, 3, N_STEPS), dtype=complex)
    x[:, 1] = psi / np.linalg.norm(psi, axis=1, keepdims=True)  # x = z psi
    steps = []
    ours = backend.run_program(lowered, init, data=data, x=x, batch=3, progress=steps.append)
    ref = reference.run_program(lowered, init, data=data, x=x, batch=3)
    assert_agrees(ours, ref, rtol=1e-11)
    assert steps == list(range(1, N_STEPS + 1))
    assert ours["w"].shape == (3, 3, DIM) and np.max(np.abs(ours["w"][:, 1:])) > 1e-4


def test_program_corner_cases(training):
    """Example ids, no steps, a memory budget that forces several direction chunks."""
    program, init, data = training
    ids = np.random.default_rng(2).integers(0, 7, size=(N_STEPS, 1))
    x = np.linspace(0, 1, 7)
    assert_agrees(backend.run_program(program, init, data=data, x=x, example_ids=ids),
                  reference.run_program(program, init, data=data, x=x, example_ids=ids), rtol=1e-11)
    empty = cs.Program(program.step, 0, program.carry, program.per_step, program.weight)
    assert_agrees(backend.run_program(empty, init, data=data, x=x),
                  reference.run_program(empty, init, data=data, x=x))
    budget = numba_cpu.MEMORY_BUDGET
    numba_cpu.MEMORY_BUDGET = 1  # one direction per chunk
    try:
        xs = np.random.default_rng(4).uniform(0, 1, size=(3, N_STEPS))
        assert_agrees(backend.run_program(program, init, data=data, x=xs, batch=3),
                      reference.run_program(program, init, data=data, x=xs, batch=3), rtol=1e-11)
    finally:
        numba_cpu.MEMORY_BUDGET = budget


# ---------------------------------------------------------------- errors


def _traced(fn, **shapes):
    return cs.trace(fn, **shapes)


def _same_error(circuit, inputs, kind, **kwargs):
    with pytest.raises(kind) as ref:
        reference.evaluate(circuit, inputs, **kwargs)
    with pytest.raises(kind) as ours:
        backend.evaluate(circuit, inputs, **kwargs)
    assert type(ours.value) is type(ref.value)
    assert str(ours.value) == str(ref.value)
    assert "test_backends.py:" in str(ours.value)  # names the traced source line


@pytest.mark.parametrize("fn, value", [
    (lambda a: (a - 1.0).log(), 0.5), (lambda a: (a - 1.0).sqrt(), 0.5),
    (lambda a: 1.0 / (a - 1.0), 1.0), (lambda a: (a - 1.0) ** -1.0, 1.0),
    (lambda a: (a - 1.0) ** 0.5, 0.5)])
def test_domain_errors_match_reference(fn, value):
    circuit = _traced(lambda a: fn(a) * 2.0, a=())
    _same_error(circuit, {"a": value}, EvaluationError)
    _same_error(circuit, {"a": np.array([2.0, value, 3.0])}, EvaluationError, batch=3)


@pytest.mark.parametrize("fn", [lambda a: (a - 1.0).log(), lambda a: 1.0 / (a - 1.0),
                                lambda a: (a - 1.0) ** 1.5])
def test_series_domain_errors_match_reference(fn):
    lowered = cs.taylor(_traced(lambda a: fn(a) + 1.0, a=()), 2, {"a"})
    x = np.array([[1.0, 0.5, 0.1], [2.0, 0.5, 0.1]], dtype=complex)
    _same_error(lowered, {"a": x}, EvaluationError, batch=2)


@pytest.mark.parametrize("fn", [lambda a, b: (a - 1.0).relu(), lambda a, b: cs.maximum(a, b),
                                lambda a, b: cs.select(a > b, a, b), lambda a, b: cs.select(a - 1.0, a, b)])
def test_kink_errors_match_reference(fn):
    lowered = cs.taylor(_traced(lambda a, b: fn(a, b) * 3.0, a=(), b=()), 2, {"a"})
    inputs = {"a": np.array([1.0, 0.3, 0.0], dtype=complex), "b": 1.0}
    _same_error(lowered, inputs, KinkError)
    assert_agrees(*both(lowered, inputs, ignore_kinks=True))


def test_overflow_is_located_like_the_reference():
    circuit = _traced(lambda a: (a * 800.0).exp() * 0.0 + a, a=())
    _same_error(circuit, {"a": 1.0}, EvaluationError)
    assert_agrees(*both(circuit, {"a": 0.5}))


def test_overflow_in_a_program_step_is_located_like_the_reference():
    """The state overflows at step 2; the kernel's in-place updates overwrote step 2's inputs,
    so the backend re-runs steps 0-1 and lets the reference evaluate step 2."""
    program = cs.trace_program(lambda w, d: {"w": w * d + 1.0}, n_steps=4, state={"w": (2,)},
                               per_step={"d": ()})
    data = {"d": np.array([1e150, 1e150, 1e150, 1.0])}
    with pytest.raises(EvaluationError) as ref:
        reference.run_program(program, {"w": np.ones(2)}, data=data)
    with pytest.raises(EvaluationError) as ours:
        backend.run_program(program, {"w": np.ones(2)}, data=data)
    assert str(ours.value) == str(ref.value) and "overflow" in str(ours.value)


@pytest.mark.parametrize("backend", ["reference", "numba-cpu"])
def test_non_finite_inputs_are_refused_naming_the_input(backend):
    circuit = _traced(lambda a: a * 2.0 + 1.0, a=())
    with pytest.raises(InputError, match=r"input 'a' holds a non-finite value inf at index \(0,\)"):
        cs.evaluate(circuit, {"a": np.array([np.inf, 1.0])}, batch=2, backend=backend)


# ---------------------------------------------------------------- memory plan and kernels

@settings(max_examples=30, deadline=None)
@given(circuit=random_circuits(max_nodes=20), order=st.sampled_from([0, 2]))
def test_memory_plan_never_overwrites_a_live_value(circuit, order):
    """Simulate the tape symbolically: every operand slot still holds the node it should."""
    circuit = cs.taylor(circuit, order, {"x"}) if order else circuit
    tape = compile_tape(circuit)
    holds = {int(tape.node_slots[n]): ("node", n) for n, e in enumerate(circuit.eqns)
             if e.op in (Op.INPUT, Op.CONST)}
    for n in range(len(tape)):
        node = int(tape.node[n])
        variant = tape.variant(n)
        if variant.key[0] == "check":  # reads the outputs, writes nothing
            continue
        read = {holds.get(int(v)) for v in tape.arg[tape.ptr[n]: tape.ptr[n + 1]]}
        assert read <= {("node", a) for a in circuit.eqns[node].args} | {("lift", node)}, variant.name
        written = int(tape.out[n]) * 2 + (variant.key[1] == "s")
        holds[written] = ("lift", node) if variant.key[0] == "lift" else ("node", node)
    for out in circuit.outputs:
        for n in out.nodes:
            assert holds[int(tape.node_slots[n])] == ("node", n)


def _chain(w, x):
    h = x[0]
    for i in range(1, 50):
        h = (h * w[i] + x[i]).tanh()
    return h


def test_slot_reuse_shrinks_memory():
    """A chain of 49 (mul, add, tanh) keeps 2 or 3 temporaries live, not 147."""
    stats = compile_tape(cs.taylor(_traced(_chain, w=(50,), x=(50,)), 3, {"x"})).stats
    assert stats["series_slots_before"] == 50 + 3 * 49
    assert stats["series_slots"] <= 50 + 3


def _small_circuit():
    return _traced(lambda w, x: (cs.dot(w, x)).tanh() / (x[0] * x[0] + 1.0), w=(2,), x=(2,))


def test_straight_line_kernel_has_one_block_per_node():
    lowered = cs.taylor(_small_circuit(), 2, {"x"})
    target = backend.CUDA_TARGET if CUDASIM else numba_cpu.CPU_TARGET
    source = emit.kernel_module_source(target, compile_tape(lowered))
    computed = [n for n, e in enumerate(lowered.eqns) if e.op not in (Op.INPUT, Op.CONST)]
    for node in computed:
        assert source.count(f"# %{node} = {lowered.eqns[node].op.value}") == 1
    assert "for n in range" not in source  # no interpreter loop


# Numba compiles straight-line code slowly (seconds per series node), so on the CPU it runs a
# real circuit only; the simulator (no compilation) runs a series one too.
@pytest.mark.parametrize("order", [0, 2] if CUDASIM else [0])
def test_straight_line_kernel_agrees(order, monkeypatch):
    monkeypatch.setattr(numba_cpu, "STRAIGHT_LINE_MAX", 10**6)
    lowered = cs.taylor(_small_circuit(), order, {"x"}) if order else _small_circuit()
    rng = np.random.default_rng(0)
    point = np.array([0.5, 1.5])
    x = series_input(rng, point, order, 3) if order else point + rng.uniform(-0.1, 0.1, size=(3, 2))
    inputs = {"w": np.array([0.3, -0.8]), "x": x}
    assert_agrees(*both(lowered, inputs, batch=3))
    engine = backend._CUDA if CUDASIM else numba_cpu._CPU
    module = engine.kernel(engine.compiled(lowered), 3)
    assert "straight-line kernel" in module.run_block.__source__


# ---------------------------------------------------------------- the CUDA simulator

@pytest.mark.skipif(CUDASIM, reason="this is the simulator run itself")
def test_cuda_simulator():
    """This file's small tests again against numba-cuda on Numba's CUDA simulator."""
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1", CIRCUITSKETCH_TEST_CUDASIM="1")
    here = pathlib.Path(__file__)
    selected = ("every_op_agrees and (exp or dot or div or gelu or max or pow) or mixed_real or random "
                "or training_program or domain_errors or kink_errors or overflow or straight_line")
    result = subprocess.run([sys.executable, "-m", "pytest", str(here), "-x", "-p", "no:cacheprovider",
                             "-k", selected], cwd=here.parent.parent, env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert " passed" in result.stdout


def test_numba_cuda_refuses_array_circuits_by_name():
    """The CUDA tape runs scalar circuits; an array circuit is refused before any work, naming
    where it can run instead (the module's ``evaluate`` sends it to ``array_cuda``)."""
    from circuitsketch.backends import numba_cuda

    circuit = cs.trace(lambda W, x: {"y": (W @ x).sum()}, inputs="tensors", W=(2, 3), x=(3,))
    with pytest.raises(NotImplementedError, match="numba-cuda runs scalar-traced circuits only"):
        numba_cuda._CUDA.evaluate(circuit, {"W": np.ones((2, 3)), "x": np.ones(3)})
