"""The array engine of numba-cpu against the reference interpreter (which defines the meaning).

Differential: every array op (``every_array_op_circuit``), random array circuits (hypothesis)
real and at orders 1 and 3 over 1, 3 and 17 directions, the array microgpt trained 30 steps
real and at order 3, whole programs with carried state,
per-step data, down-weights and example ids; errors name the node. Tolerance: float64 sums
taken in another order differ by a few ulps of the largest term, so values are compared with
rtol 1e-12 plus an absolute 1e-12 of the output's scale.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from circuitsketch.backends import array_engine, numba_cpu, reference
from circuitsketch.ir import Builder, Op, Program, make_attrs, verify
from circuitsketch.passes.taylor import taylor
from circuitsketch.semantics.errors import EvaluationError, KinkError

from strategies import every_array_op_circuit, random_array_circuits, random_array_inputs


def _close(got: dict, want: dict) -> None:
    assert set(got) == set(want)
    for name in want:
        assert got[name].shape == want[name].shape, name
        scale = max(1.0, float(np.abs(want[name]).max())) if want[name].size else 1.0
        np.testing.assert_allclose(got[name], want[name], rtol=1e-12, atol=1e-12 * scale,
                                   err_msg=name)


def _series_inputs(circuit, seed: int, batch: int | None, seeds=("x",)) -> dict:
    """Real inputs, with each seed input a series (real a_0, complex higher terms)."""
    rng = np.random.default_rng(seed)
    values = random_array_inputs(circuit, seed, batch)
    k1 = circuit.order + 1
    for name in seeds:
        real = values[name]
        lead = real.shape[:1] if batch is not None else ()
        series = (rng.normal(size=lead + (k1,) + real.shape[len(lead):])
                  + 1j * rng.normal(size=lead + (k1,) + real.shape[len(lead):])) * 0.3
        series[(slice(None),) * len(lead) + (0,)] = real
        values[name] = series
    return values


def _both(circuit, inputs, batch, **options):
    want = reference.evaluate(circuit, inputs, batch=batch, **options)
    got = numba_cpu.evaluate(circuit, inputs, batch=batch, **options)
    _close(got, want)


def _every_op() -> "Circuit":
    """``every_array_op_circuit`` with its -inf constant made finite (backends refuse
    non-finite constants before running)."""
    circuit = every_array_op_circuit()
    eqns = tuple(replace(e, attrs=make_attrs(value=tuple(v if np.isfinite(v) else -3.0
                                                         for v in e.attr("value")),
                                             shape=e.attr("shape")))
                 if e.op is Op.CONST and e.shape else e for e in circuit.eqns)
    return verify(replace(circuit, eqns=eqns))


def test_every_array_op_real_batched():
    circuit = _every_op()
    inputs = random_array_inputs(circuit, 0, 3)
    inputs["tokens"] = np.array([[2.0, 0.0], [1.0, 1.0], [3.0, 2.0]])
    _both(circuit, inputs, 3)
    single = random_array_inputs(circuit, 1)
    single["tokens"] = np.array([1.0, 3.0])
    _both(circuit, single, None)


@pytest.mark.parametrize("order", [1, 3])
def test_every_array_op_series(order):
    circuit = taylor(_every_op(), order, {"x", "w"})
    inputs = _series_inputs(circuit, 1, 3, seeds=("x", "w"))
    inputs["tokens"] = np.array([[2.0, 0.0], [1.0, 1.0], [3.0, 2.0]])
    _both(circuit, inputs, 3)


_SETTINGS = settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))


@_SETTINGS
@given(random_array_circuits(max_nodes=8), st.sampled_from([None, 1, 3, 17]), st.integers(0, 99))
def test_random_array_circuits_real(circuit, batch, seed):
    _both(circuit, random_array_inputs(circuit, seed, batch), batch)


@_SETTINGS
@given(random_array_circuits(max_nodes=8, kinks=False), st.sampled_from([1, 3]),
       st.sampled_from([1, 3, 17]), st.integers(0, 99))
def test_random_array_circuits_series(circuit, order, batch, seed):
    lowered = taylor(circuit, order, {"x", "w"})
    _both(lowered, _series_inputs(lowered, seed, batch, seeds=("x", "w")), batch)


# ---------------------------------------------------------------- programs


@pytest.fixture(scope="module")
def microgpt():
    from circuitsketch.frontends.microgpt_array import build_task_array
    from circuitsketch.frontends.microgpt_data import MicrogptConfig

    return build_task_array(MicrogptConfig(n_embd=4, n_head=2, block_size=8, mlp_width=16),
                            n_steps=30)


def _program_both(program, task, x, batch):
    options = dict(data=task.data, x=x, example_ids=task.example_ids, batch=batch)
    _close(numba_cpu.run_program(program, task.init, **options),
           reference.run_program(program, task.init, **options))


def test_array_microgpt_program_real(microgpt):
    x = np.zeros((3, 30))
    x[1, 1], x[2, [0, 3, 17]] = 1.0, 0.5
    _program_both(microgpt.program, microgpt, x, 3)


def test_array_microgpt_program_order_3(microgpt):
    rng = np.random.default_rng(5)
    x = np.zeros((3, 4, 30), dtype=complex)
    x[:, 1] = rng.normal(size=(3, 30)) + 1j * rng.normal(size=(3, 30))
    _program_both(taylor(microgpt.program, 3), microgpt, x, 3)


def _loop_program() -> Program:
    """w <- w - lr * tanh(w * d_t + x_t) carried, d per-step data, x the down-weight, and a
    static offset; output carried whole."""
    b = Builder()
    w = b.input_array("w", (2, 3))
    d = b.input_array("d", (3,))
    x = b.input_array("x", (1,))
    off = b.input_array("off", ())
    step = b.add(Op.TANH, (b.add(Op.ADD, (b.add(Op.MUL, (w, d)), x)),))
    new = b.add(Op.SUB, (w, b.add(Op.MUL, (step, b.add(Op.ADD, (off, b.const(0.1)))))))
    b.output("w", [new])
    return Program(verify(b.build()), 5, ("w",), per_step=("d",), weight="x")


@pytest.mark.parametrize("order", [0, 1, 3])
def test_loop_program_with_data_weights_and_example_ids(order):
    program = _loop_program()
    program = taylor(program, order) if order else program
    rng = np.random.default_rng(order)
    init = {"w": rng.normal(size=(2, 3))}
    data = {"d": rng.normal(size=(5, 3))}
    ids = np.array([[2], [0], [1], [2], [0]])
    x = rng.normal(size=(17, 3))
    if order:
        x = np.stack([x] + [rng.normal(size=(17, 3)) for _ in range(order)], axis=1) + 0j
    options = dict(data=data, static={"off": np.array(0.5)}, x=x, example_ids=ids, batch=17)
    _close(numba_cpu.run_program(program, init, **options),
           reference.run_program(program, init, **options))


def _state_program() -> Program:
    """Carried (p, q, r, s, t) with the in-place hazards: p' = p + d x, then q' = 3 p (p's old
    value is read after the node computing p': p cannot be updated in place; q can), r' = s
    and s' = r r tanh(q') (a swap: the end-of-step copies read the old values), t' = t p' (a
    product of two series writes coefficient r before reading t's coefficient r: not in
    place)."""
    b = Builder()
    p, q, r, s, t = (b.input_array(name, (4,)) for name in "pqrst")
    d = b.input_array("d", (4,))
    x = b.input_array("x", (1,))
    new_p = b.add(Op.ADD, (p, b.add(Op.MUL, (d, x))))
    new_q = b.add(Op.MUL, (p, b.const(3.0)))
    new_s = b.add(Op.MUL, (b.add(Op.MUL, (r, r)), b.add(Op.TANH, (new_q,))))
    new_t = b.add(Op.MUL, (t, new_p))
    for name, node in (("p", new_p), ("q", new_q), ("r", s), ("s", new_s), ("t", new_t)):
        b.output(name, [node])
    return Program(verify(b.build()), 4, tuple("pqrst"), per_step=("d",), weight="x")


@pytest.mark.parametrize("order", [0, 3, 9])
def test_carried_state_in_place_only_where_safe(order):
    program = _state_program()
    program = taylor(program, order) if order else program
    rng = np.random.default_rng(order)
    init = {name: rng.normal(size=4) * 0.5 for name in "pqrst"}
    x = rng.normal(size=(3, 4))
    if order:
        x = np.stack([x] + [rng.normal(size=(3, 4)) for _ in range(order)], axis=1) + 0j
    options = dict(data={"d": rng.normal(size=(4, 4))}, x=x, example_ids=np.zeros((4, 1), int),
                   batch=3)
    _close(numba_cpu.run_program(program, init, **options),
           reference.run_program(program, init, **options))
    plan = array_engine.plan_program(program)
    arena = {"copy_r": "R", "copy_s": "S", "copy_rs": "S"}
    written = {(arena[e.kernel], e.args[2]) for e in plan.entries if e.kernel in arena}
    copied = {name for name in "pqrst"
              if (plan.inputs[name].arena, plan.inputs[name].off) in written}
    # q' is written in place; p is read after p'; r and s swap; t' = t p' is a series product
    assert copied == ({"p", "r", "s", "t"} if order else {"p", "r", "s"})


def test_microgpt_state_is_updated_in_place(microgpt):
    for program in (microgpt.program, taylor(microgpt.program, 3)):
        kernels = [e.kernel for e in array_engine.plan_program(program).entries]
        assert not [k for k in kernels if k.startswith("copy")]


# ---------------------------------------------------------------- errors


def _one_op(op: Op, **attrs):
    b = Builder()
    a = b.input_array("a", (3,), loc="model.py:7")
    b.output("y", [b.add(op, (a,), make_attrs(**attrs), loc="model.py:8")])
    return verify(b.build())


@pytest.mark.parametrize("op, value, words", [(Op.LOG, -1.0, "log of a non-positive"),
                                              (Op.SQRT, -2.0, "sqrt of a negative"),
                                              (Op.EXP, 1000.0, "non-finite")])
def test_domain_errors_name_the_node_and_line(op, value, words):
    circuit = _one_op(op)
    with pytest.raises(EvaluationError, match=rf"node %1 = {op.value} \[3\] \(traced at model.py:8\).*{words}"):
        numba_cpu.evaluate(circuit, {"a": np.array([1.0, value, 2.0])})
    with pytest.raises(EvaluationError, match=r"node %1"):
        reference.evaluate(circuit, {"a": np.array([1.0, value, 2.0])})


def test_kink_is_a_kink_error_unless_ignored():
    circuit = taylor(_one_op(Op.RELU), 2, {"a"})
    a = np.zeros((3, 3))
    a[1, 0] = 1.0  # element 0 sits at the kink with a moving series
    with pytest.raises(KinkError, match=r"node %1 = relu"):
        numba_cpu.evaluate(circuit, {"a": a})
    _close(numba_cpu.evaluate(circuit, {"a": a}, ignore_kinks=True),
           reference.evaluate(circuit, {"a": a}, ignore_kinks=True))


def test_bad_index_names_the_take_node():
    b = Builder()
    table = b.input_array("table", (3, 2))
    idx = b.input_array("idx", (2,))
    b.output("y", [b.add(Op.TAKE, (table, idx), make_attrs(axis=0), loc="model.py:3")])
    circuit = verify(b.build())
    for bad, words in ((3.0, "out of range"), (0.5, "non-integer")):
        with pytest.raises(EvaluationError, match=rf"node %2 = take.*model.py:3.*{words}"):
            numba_cpu.evaluate(circuit, {"table": np.ones((3, 2)), "idx": np.array([0.0, bad])})


def test_kernels_keep_their_source_on_a_real_file():
    from circuitsketch.backends import array_codegen

    lib = array_codegen.library(4)
    assert "K1 = K1C" in lib.ew_add_ss.__source__  # the order is a compile-time constant
    assert "K1 = 4\n" in lib.dg_ss.__source__  # written for its order (array_contract)
    assert "def ew_exp_s(" in lib.ew_exp_s.__source__
    with open(lib.__file__) as f:
        assert lib.dg_ss.__source__ in f.read()


def test_error_inside_a_fused_group_names_the_member():
    b = Builder()
    a = b.input_array("a", (4,), loc="model.py:1")
    scaled = b.add(Op.MUL, (a, b.const(2.0)), loc="model.py:2")
    logged = b.add(Op.LOG, (scaled,), loc="model.py:3")
    b.output("y", [b.add(Op.ADD, (logged, b.const(1.0)), loc="model.py:4")])
    circuit = verify(b.build())
    the_plan = array_engine.plan(circuit)
    assert [e.members for e in the_plan.entries] == [(2, 3, 5)]  # one kernel for the chain
    good = np.array([1.0, 2.0, 3.0, 4.0])
    _close(numba_cpu.evaluate(circuit, {"a": good}), reference.evaluate(circuit, {"a": good}))
    with pytest.raises(EvaluationError, match=r"node %3 = log \[4\] \(traced at model.py:3\): log of"):
        numba_cpu.evaluate(circuit, {"a": -good})


def test_a_fused_group_with_many_leaves():
    """Twelve inputs read by one chain: leaf 1's strides and leaf 10's value must not share a
    name in the generated kernel (they once did, and the kernel failed to compile)."""
    b = Builder()
    leaves = [b.input_array(f"a{i}", (5,)) for i in range(12)]
    chain = leaves[0]
    for i, leaf in enumerate(leaves[1:]):
        chain = b.add(Op.MUL if i % 2 else Op.ADD, (chain, leaf))
    b.output("y", [chain])
    circuit = verify(b.build())
    assert len(array_engine.plan(circuit).entries) == 1  # the whole chain is one kernel
    rng = np.random.default_rng(3)
    inputs = {f"a{i}": rng.normal(size=5) for i in range(12)}
    _close(numba_cpu.evaluate(circuit, inputs), reference.evaluate(circuit, inputs))


def test_waves_of_blocks_under_a_small_memory_budget(monkeypatch):
    program = taylor(_loop_program(), 2)
    rng = np.random.default_rng(3)
    x = np.stack([rng.normal(size=(9, 3)) for _ in range(3)], axis=1) + 0j
    options = dict(data={"d": rng.normal(size=(5, 3))}, static={"off": np.array(0.2)}, x=x,
                   example_ids=np.array([[1], [0], [2], [1], [0]]), batch=9)
    init = {"w": rng.normal(size=(2, 3))}
    want = reference.run_program(program, init, **options)
    the_plan = array_engine.plan_program(program)
    monkeypatch.setattr(array_engine, "MEMORY_BUDGET", array_engine.arena_bytes(the_plan, 2))
    steps = []
    _close(numba_cpu.run_program(program, init, progress=steps.append, **options), want)
    assert len(steps) > 5  # several waves, each running every step


def test_emit_text_heads_each_kernel_call_with_its_ir_line():
    program = taylor(_loop_program(), 1)
    text = array_engine.emit_text(program)
    assert "# %4 = mul %0 %1 : s [2,3]" in text
    assert "load_weights_s(" in text and "copy_s(" not in text  # the loop's loads; w in place
    # the series chain mul, add, tanh, mul, sub is one fused kernel (array_fusion), its source
    # once, running the table's tanh rule at the literal order
    assert text.count("# %6 = tanh %5 : s [2,3]") == 1 and text.count("def fused_s_") == 1
    assert "s_tanh(" in text and "K1 = K1C" in text


@pytest.mark.parametrize("order", [1, 3])
def test_unrolled_series_kernels(order):
    """pow (integer and fractional p), div (series / series, real / series) and exp, whose
    kernels are written out per order, against the reference."""
    b = Builder()
    a = b.input_array("a", (5,))
    c = b.input_array("c", (5,))
    positive = b.add(Op.ADD, (b.add(Op.MUL, (a, a)), b.const(0.5)))
    nodes = [b.add(Op.POW, (positive, ), make_attrs(p=p)) for p in (2.0, 3.0, 0.5, -1.5)]
    nodes += [b.add(Op.DIV, (a, positive)), b.add(Op.DIV, (c, positive)), b.add(Op.EXP, (a,))]
    b.output("y", [b.add(Op.SUM, tuple(nodes))])
    circuit = taylor(verify(b.build()), order, {"a"})
    _both(circuit, _series_inputs(circuit, order, 3, seeds=("a",)), 3)


def test_program_error_names_the_node_at_the_first_failing_step():
    """w <- sqrt(w - d_t) fails at step 2 (w - 3 < 0) in some directions only; the error names
    the sqrt node, as on the reference; a run that does not fail reports every step once."""
    b = Builder()
    w = b.input_array("w", (2,))
    d = b.input_array("d", ())
    b.output("w", [b.add(Op.SQRT, (b.add(Op.SUB, (w, d)),), loc="train.py:9")])
    program = Program(verify(b.build()), 4, ("w",), per_step=("d",))
    data = {"d": np.array([0.0, 0.0, 3.0, 0.0])}
    bad = {"w": np.array([[100.0, 120.0]] * 5 + [[4.0, 5.0]] * 4)}
    for backend in (numba_cpu, reference):
        with pytest.raises(EvaluationError, match=r"node %3 = sqrt \[2\] \(traced at train.py:9\)"):
            backend.run_program(program, bad, data=data, batch=9)
    steps = []
    good = {"w": np.array([[100.0, 120.0]] * 9)}
    _close(numba_cpu.run_program(program, good, data=data, batch=9, progress=steps.append),
           reference.run_program(program, good, data=data, batch=9))
    assert steps == [1, 2, 3, 4]
