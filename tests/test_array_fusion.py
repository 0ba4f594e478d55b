"""Fused groups of series elementwise ops (``backends/array_fusion``) against the reference.

Random same-shape chains of series ops with real leaves, broadcast operands (a row vector: a
gathered leaf; a 0-d input and constants: element stride 0) and real sub-chains inside, at
orders 1, 3 and 6 (every coefficient a scalar) and 9 (coefficients in scratch rows) over 3
directions; the array microgpt trained at order 3; errors inside a
fused group name the member's node and line; and the plan of the order-3 microgpt step has
fewer series kernels than with series fusion off. Tolerance as in test_array_backend: rtol
1e-12 plus 1e-12 of the output's scale (the fused kernel runs the unfused kernels' rules, in
the same order per element).
"""

from __future__ import annotations

import numpy as np
import pytest

from circuitsketch.backends import array_engine, array_fusion, numba_cpu, reference
from circuitsketch.ir import Builder, Op, make_attrs, verify
from circuitsketch.passes.taylor import taylor
from circuitsketch.semantics.errors import EvaluationError, KinkError

from test_array_backend import _close, _series_inputs

SHAPE = (2, 3)


def _positive(b: Builder, v: int) -> int:
    return b.add(Op.ADD, (b.add(Op.MUL, (v, v)), b.const(0.5)))


#: one step of a random chain: (builder, current value, a leaf) -> the new value
STEPS = (
    lambda b, v, leaf: b.add(Op.ADD, (v, leaf)),
    lambda b, v, leaf: b.add(Op.SUB, (leaf, v)),
    lambda b, v, leaf: b.add(Op.MUL, (v, leaf)),
    lambda b, v, leaf: b.add(Op.NEG, (v,)),
    lambda b, v, leaf: b.add(Op.DIV, (v, _positive(b, leaf))),
    lambda b, v, leaf: b.add(Op.DIV, (leaf, _positive(b, v))),
    lambda b, v, leaf: b.add(Op.POW, (_positive(b, v),), make_attrs(p=0.5)),
    lambda b, v, leaf: b.add(Op.POW, (_positive(b, v),), make_attrs(p=-1.5)),
    lambda b, v, leaf: b.add(Op.POW, (v,), make_attrs(p=3.0)),
    lambda b, v, leaf: b.add(Op.SQRT, (_positive(b, v),)),
    lambda b, v, leaf: b.add(Op.LOG, (_positive(b, v),)),
    lambda b, v, leaf: b.add(Op.EXP, (b.add(Op.TANH, (v,)),)),
    lambda b, v, leaf: b.add(Op.GELU, (v,)),
    lambda b, v, leaf: b.add(Op.ERF, (v,)),
    lambda b, v, leaf: b.add(Op.RELU, (b.add(Op.ADD, (v, b.const(0.25))),)),
    lambda b, v, leaf: b.add(Op.MAX, (v, leaf)),
    lambda b, v, leaf: b.add(Op.SELECT, (b.add(Op.GT, (leaf, b.const(0.1))), v, leaf)),
)


def random_chain(seed: int | None, length: int = 10):
    """A same-shape chain over series ``x`` [2, 3], ``w`` [3] (broadcast along rows), real
    ``r`` [2, 3], real 0-d ``s`` and constants; a real sub-chain (``r * s - 0.7``) feeds it.
    Seed None: every step of STEPS once, in order."""
    rng = np.random.default_rng(seed)
    order = iter(range(len(STEPS))) if seed is None else None
    b = Builder()
    x, w = b.input_array("x", SHAPE), b.input_array("w", (3,))
    r, s = b.input_array("r", SHAPE), b.input_array("s", ())
    real = b.add(Op.SUB, (b.add(Op.MUL, (r, s)), b.const(0.7)))
    leaves = [x, w, r, s, b.const(0.7)]
    v = b.add(Op.MUL, (b.add(Op.ADD, (x, w)), real))
    for _ in range(length if seed is not None else len(STEPS)):
        step = next(order) if seed is None else rng.integers(len(STEPS))
        v = STEPS[step](b, v, leaves[rng.integers(len(leaves))])
        v = b.add(Op.TANH, (v,)) if rng.random() < 0.3 else v  # keep the values moderate
    b.output("y", [v])
    return verify(b.build())


def _fused_series(the_plan) -> list:
    return [e for e in the_plan.entries if e.kernel.startswith("fused_s_")]


# Every chain compiles its own fused kernels (~10-30 s cold each), so CI's cold suite time
# limits them: the every-op chain at orders 1, 3, 9, random chains at 3 (two) and 9 (one).
@pytest.mark.parametrize("order, seed", [(1, None), (3, None), (9, None), (3, 0), (3, 1), (9, 0)])
def test_random_series_chains_match_the_reference(order, seed):
    circuit = taylor(random_chain(seed), order, {"x", "w"})
    the_plan = array_engine.plan(circuit)
    fused = _fused_series(the_plan)
    assert fused and max(len(e.members) for e in fused) >= 8  # the chain runs as one group
    readers = {}
    for node, eqn in enumerate(circuit.eqns):
        for a in eqn.args:
            readers.setdefault(a, set()).add(node)
    for entry in fused:  # every member but the root has exactly one reader, in the group
        for node in entry.members[:-1]:
            assert len(readers[node]) == 1 and readers[node] <= set(entry.members)
        assert len({circuit.eqns[n].shape for n in entry.members}) == 1
    inputs = _series_inputs(circuit, seed or 0, 3, seeds=("x", "w"))
    _close(numba_cpu.evaluate(circuit, inputs, batch=3),
           reference.evaluate(circuit, inputs, batch=3))


def test_a_value_read_twice_stays_unfused():
    b = Builder()
    x = b.input_array("x", (4,))
    shared = b.add(Op.EXP, (b.add(Op.MUL, (x, b.const(0.5))),))
    b.output("y", [b.add(Op.MUL, (b.add(Op.ADD, (shared, x)), b.add(Op.TANH, (shared,))))])
    circuit = taylor(verify(b.build()), 2, {"x"})
    groups = [e.members for e in array_engine.plan(circuit).entries]
    assert groups == [(2, 3), (4, 5, 6)]  # mul by 0.5 and exp (read twice: a root); the rest
    inputs = _series_inputs(circuit, 4, 2)
    _close(numba_cpu.evaluate(circuit, inputs, batch=2),
           reference.evaluate(circuit, inputs, batch=2))


def _chain_of(op_of, series=("x",), order: int = 2):
    """y = op_of(b, 2 * x) + 1 traced at model.py lines, Taylor-lowered along ``series``."""
    b = Builder()
    x = b.input_array("x", (3,), loc="model.py:1")
    scaled = b.add(Op.MUL, (x, b.const(2.0)), loc="model.py:2")
    value = op_of(b, scaled)
    b.output("y", [b.add(Op.ADD, (value, b.const(1.0)), loc="model.py:4")])
    return taylor(verify(b.build()), order, set(series))


def _x(a0, order: int = 2) -> np.ndarray:
    x = np.zeros((order + 1, 3))
    x[0], x[1] = a0, [0.5, -0.25, 1.0]
    return x


@pytest.mark.parametrize("order", [2, 9])  # scalar coefficients, and rows
def test_log_of_a_non_positive_constant_term_names_the_log(order):
    circuit = _chain_of(lambda b, v: b.add(Op.LOG, (v,), loc="model.py:3"), order=order)
    assert [e.members for e in array_engine.plan(circuit).entries] == [(2, 3, 5)]
    good = _x([1.0, 2.0, 3.0], order)
    _close(numba_cpu.evaluate(circuit, {"x": good}), reference.evaluate(circuit, {"x": good}))
    with pytest.raises(EvaluationError, match=r"node %3 = log .*model.py:3.*log of a non-positive"):
        numba_cpu.evaluate(circuit, {"x": _x([1.0, 0.0, 3.0], order)})


def test_division_by_a_zero_series_names_the_div():
    def divide(b, v):
        return b.add(Op.DIV, (b.const(1.0), b.add(Op.SUB, (v, b.const(2.0)), loc="model.py:2")),
                     loc="model.py:3")
    circuit = _chain_of(divide)
    (entry,) = array_engine.plan(circuit).entries
    div = next(n for n in entry.members if circuit.eqns[n].op is Op.DIV)
    with pytest.raises(EvaluationError, match=rf"node %{div} = div .*model.py:3.*constant term is zero"):
        numba_cpu.evaluate(circuit, {"x": _x([1.0, 0.5, 3.0])})


@pytest.mark.parametrize("op, order", [(Op.RELU, 2), (Op.MAX, 2), (Op.RELU, 9)])
def test_a_kink_inside_a_group_names_the_member_unless_ignored(op, order):
    def kinked(b, v):
        operands = (v,) if op is Op.RELU else (v, b.const(0.0))
        return b.add(op, operands, loc="model.py:3")
    circuit = _chain_of(kinked, order=order)
    (entry,) = array_engine.plan(circuit).entries
    node = next(n for n in entry.members if circuit.eqns[n].op is op)
    at_kink = _x([1.0, 0.0, -3.0], order)
    with pytest.raises(KinkError, match=rf"node %{node} = {op.value} .*model.py:3.*not analytic"):
        numba_cpu.evaluate(circuit, {"x": at_kink})
    _close(numba_cpu.evaluate(circuit, {"x": at_kink}, ignore_kinks=True),
           reference.evaluate(circuit, {"x": at_kink}, ignore_kinks=True))


def test_an_overflow_names_the_member_where_it_happens():
    circuit = _chain_of(lambda b, v: b.add(Op.EXP, (v,), loc="model.py:3"))
    with pytest.raises(EvaluationError, match=r"node %3 = exp .*model.py:3.*non-finite"):
        numba_cpu.evaluate(circuit, {"x": _x([1.0, 400.0, 3.0])})


# ---------------------------------------------------------------- the array microgpt

def _microgpt(config=None, n_steps: int = 12):
    from circuitsketch.frontends.microgpt_array import build_task_array
    return build_task_array(config, n_steps=n_steps)


def test_microgpt_order_3_matches_the_reference():
    from circuitsketch.frontends.microgpt_data import MicrogptConfig

    task = _microgpt(MicrogptConfig(n_embd=4, n_head=2, block_size=8, mlp_width=16))
    program = taylor(task.program, 3)
    assert _fused_series(array_engine.plan_program(program))
    rng = np.random.default_rng(5)
    x = np.zeros((2, 4, task.n_examples), complex)
    x[:, 1] = rng.normal(size=(2, task.n_examples))
    x[1, 0, :3] = 1.0  # and some examples deleted
    options = dict(data=task.data, static=task.static, x=x, example_ids=task.example_ids, batch=2)
    _close(numba_cpu.run_program(program, task.init, **options),
           reference.run_program(program, task.init, **options))


def _series_kernel_calls(the_plan) -> int:
    """Plan entries that are series elementwise kernels (fused or not)."""
    return sum(1 for e in the_plan.entries
               if e.kernel.startswith("fused_s_") or (e.kernel.startswith("ew_")
                                                       and "s" in e.kernel.rsplit("_", 1)[1]))


def test_the_microgpt_step_plan_has_fewer_series_kernels(monkeypatch):
    program = taylor(_microgpt(n_steps=2).program, 3)
    fused = array_engine.plan_program(program)
    monkeypatch.setattr(array_fusion, "SERIES_FUSABLE", frozenset())
    unfused = array_engine.plan_program(program)
    assert not _fused_series(unfused)
    assert _series_kernel_calls(fused) < 0.5 * _series_kernel_calls(unfused)
    assert len(fused.entries) < len(unfused.entries)
