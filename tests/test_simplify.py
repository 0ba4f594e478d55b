"""fold_constants, cse, dce and simplify: each is pure, verifies, computes the same outputs on
random scalar and array circuits (exactly: folding uses the interpreter's own table, the identities x*1, x+0, ...
are exact in IEEE arithmetic, and dropping a +0.0 term does not change a sum), and shrinks the
known cases it promises to."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import (KINK_OPS, SMOOTH_OPS, random_array_circuits, random_array_inputs,
                        random_circuits, random_point)

import circuitsketch as cs
from circuitsketch.backends.reference import EvaluationError
from circuitsketch.ir import Builder, Circuit, Eqn, Op, Output, Program, make_attrs, verify
from circuitsketch.passes import cse, dce, fold_constants, simplify
from circuitsketch.passes.simplify import FOLD_LIMIT

PASSES = {"fold_constants": fold_constants, "cse": cse, "dce": dce, "simplify": simplify}


@st.composite
def circuits_with_constants(draw, max_nodes: int = 14) -> Circuit:
    """Random circuits whose operands are often the constants 0, 1, -1, 2, so that folding,
    the identities and dead code all occur; exp and division are guarded to stay finite."""
    b = Builder()
    pool = b.input("x", (3,)) + [b.const(v) for v in (0.0, 1.0, -1.0, 2.0)]
    pick = lambda: pool[draw(st.integers(0, len(pool) - 1))]  # noqa: E731
    for _ in range(draw(st.integers(1, max_nodes))):
        op = draw(st.sampled_from([Op.ADD, Op.SUB, Op.MUL, Op.DIV, Op.NEG, Op.POW, Op.EXP, Op.SUM,
                                   Op.DOT, Op.MAX]))
        if op is Op.DIV:
            node = b.add(op, (pick(), b.add(Op.ADD, (b.add(Op.MUL, (pick(),) * 2), b.const(1.0)))))
        elif op is Op.POW:
            node = b.add(op, (pick(),), make_attrs(p=draw(st.sampled_from([1.0, 2.0, 3.0]))))
        elif op is Op.EXP:
            node = b.add(op, (b.add(Op.TANH, (pick(),)),))
        elif op is Op.NEG:
            node = b.add(op, (pick(),))
        elif op in (Op.SUM, Op.DOT):
            node = b.add(op, tuple(pick() for _ in range(4)))
        else:
            node = b.add(op, (pick(), pick()))
        pool.append(node)
    b.output("last", [pool[-1]], ())  # the newest node is live, earlier ones only maybe
    b.output("y", draw(st.lists(st.sampled_from(pool[3:]), min_size=1, max_size=3)))
    return verify(b.build())


def _agree(before: Circuit, after: Circuit, inputs: dict, batch: int | None = None) -> None:
    want = cs.evaluate(before, inputs, batch=batch)
    got = cs.evaluate(after, inputs, batch=batch)
    assert set(got) == set(want)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name])


def _same_outputs(before: Circuit, after: Circuit, seed: int) -> None:
    points = np.stack([random_point(seed + i) for i in range(4)])
    _agree(before, after, {"x": points}, batch=4)


@pytest.mark.parametrize("name", sorted(PASSES))
@settings(max_examples=80, deadline=None, derandomize=True)
@given(circuit=circuits_with_constants(), seed=st.integers(0, 2**31))
def test_pass_preserves_outputs_with_constants(name, circuit, seed):
    after = verify(PASSES[name](circuit))
    assert after.inputs == circuit.inputs
    _same_outputs(circuit, after, seed)


@pytest.mark.parametrize("name", sorted(PASSES))
@settings(max_examples=30, deadline=None, derandomize=True)
@given(circuit=random_circuits(ops=SMOOTH_OPS + KINK_OPS, max_nodes=16), seed=st.integers(0, 2**31))
def test_pass_preserves_outputs_on_random_circuits(name, circuit, seed):
    _same_outputs(circuit, verify(PASSES[name](circuit)), seed)


@settings(max_examples=50, deadline=None, derandomize=True)
@given(circuits_with_constants())
def test_simplify_is_idempotent_and_never_grows(circuit):
    once = simplify(circuit)
    assert simplify(once) == once
    assert len(once) <= len(circuit)


@settings(max_examples=30, deadline=None, derandomize=True)
@given(circuits_with_constants())
def test_passes_do_not_mutate_their_input(circuit):
    snapshot = (circuit.eqns, circuit.inputs, circuit.outputs, circuit.order)
    for fn in PASSES.values():
        fn(circuit)
    assert (circuit.eqns, circuit.inputs, circuit.outputs, circuit.order) == snapshot


# ---------------------------------------------------------------- known shrinks

def _unary(build) -> Circuit:
    """A circuit y = build(b, x) over one scalar input x."""
    b = Builder()
    (x,) = b.input("x", ())
    b.output("y", [build(b, x)], ())
    return b.build()


@pytest.mark.parametrize("name, build", [
    ("x*1", lambda b, x: b.add(Op.MUL, (x, b.const(1.0)))),
    ("1*x", lambda b, x: b.add(Op.MUL, (b.const(1.0), x))),
    ("x+0", lambda b, x: b.add(Op.ADD, (x, b.const(0.0)))),
    ("0+x", lambda b, x: b.add(Op.ADD, (b.const(0.0), x))),
    ("x-0", lambda b, x: b.add(Op.SUB, (x, b.const(0.0)))),
    ("x/1", lambda b, x: b.add(Op.DIV, (x, b.const(1.0)))),
    ("x**1", lambda b, x: b.add(Op.POW, (x,), make_attrs(p=1.0))),
    ("sum(x, 0)", lambda b, x: b.add(Op.SUM, (x, b.const(0.0)))),
    ("dot with a zero", lambda b, x: b.add(Op.DOT, (x, b.const(0.0), b.const(1.0), x))),
    ("(x*1)+0 nested", lambda b, x: b.add(Op.ADD, (b.add(Op.MUL, (x, b.const(1.0))), b.const(0.0)))),
])
def test_identities_fold_to_the_operand(name, build):
    simplified = simplify(_unary(build))
    assert [e.op for e in simplified.eqns] == [Op.INPUT]
    assert simplified.outputs == (Output("y", (), (0,)),)


@pytest.mark.parametrize("build, value", [
    (lambda b, x: b.add(Op.MUL, (x, b.const(0.0))), 0.0),
    (lambda b, x: b.add(Op.SUM, (b.const(0.0), b.const(0.0))), 0.0),
    (lambda b, x: b.add(Op.DOT, (x, b.const(0.0), b.const(0.0), x)), 0.0),
    (lambda b, x: b.add(Op.EXP, (b.add(Op.LOG, (b.const(2.0),)),)), 2.0),
    (lambda b, x: b.add(Op.SELECT, (b.add(Op.GT, (b.const(1.0), b.const(2.0))), b.const(3.0),
                                    b.const(4.0))), 4.0),
    (lambda b, x: b.add(Op.DOT, (b.const(2.0), b.const(3.0), b.const(5.0), b.const(7.0))), 31.0),
])
def test_constant_subcircuits_fold_to_one_constant(build, value):
    simplified = simplify(_unary(build))
    (out,) = simplified.outputs[0].nodes
    assert simplified.eqns[out].op is Op.CONST
    assert simplified.eqns[out].attr("value") == pytest.approx(value, rel=1e-15)
    assert len(simplified) == 2  # the input (kept: it is the interface) and the constant


def test_dot_with_one_live_pair_becomes_a_mul():
    b = Builder()
    x, w = b.input("x", (2,)), b.input("w", (2,))
    b.output("y", [b.add(Op.DOT, (x[0], x[1], b.const(0.0), w[1]))], ())
    simplified = simplify(b.build())
    (out,) = simplified.outputs[0].nodes
    assert simplified.eqns[out] == Eqn(Op.MUL, (1, 3))  # x0*0 + x1*w1 -> x1*w1


def test_cse_shares_duplicate_and_commuted_subexpressions():
    """A hand-built circuit (no builder, so no hash-consing) with a repeated subexpression and a
    commuted copy: cse keeps one of each."""
    x0 = Eqn(Op.INPUT, (), make_attrs(name="x", index=0))
    x1 = Eqn(Op.INPUT, (), make_attrs(name="x", index=1))
    eqns = (x0, x1, Eqn(Op.MUL, (0, 1)), Eqn(Op.MUL, (1, 0)), Eqn(Op.EXP, (2,)), Eqn(Op.EXP, (3,)),
            Eqn(Op.SUB, (4, 5)), Eqn(Op.SUB, (5, 4)), Eqn(Op.ADD, (6, 7)))
    circuit = verify(Circuit(eqns, (("x", (2,)),), (Output("y", (), (8,)),)))
    shared = cse(circuit)
    assert [e.op for e in shared.eqns] == [Op.INPUT, Op.INPUT, Op.MUL, Op.EXP, Op.SUB, Op.ADD]
    assert shared.eqns[4].args == (3, 3)  # sub is not commutative: exp - exp of the SAME node
    _agree(circuit, shared, {"x": np.array([[0.3, -1.2], [2.0, 0.5]])}, batch=2)


def test_cse_keeps_operand_order_of_non_commutative_ops():
    b = Builder()
    x = b.input("x", (2,))
    b.output("y", [b.add(Op.SUB, (x[0], x[1])), b.add(Op.SUB, (x[1], x[0])), b.add(Op.DIV, (x[1], x[0]))])
    assert len(cse(b.build())) == 5


def test_dce_removes_dead_nodes_but_keeps_inputs():
    b = Builder()
    x = b.input("x", (3,))
    dead = b.add(Op.EXP, (b.add(Op.MUL, (x[0], x[1])),))
    b.add(Op.LOG, (dead,))
    live = b.add(Op.TANH, (x[2],))
    b.output("y", [live], ())
    pruned = dce(b.build())
    assert [e.op for e in pruned.eqns] == [Op.INPUT] * 3 + [Op.TANH]
    assert pruned.outputs == (Output("y", (), (3,)),)


def test_simplify_shrinks_the_backward_pass_of_a_traced_step():
    """A traced loss with its gradient contains seeds 1.0 and multiplications by them."""
    circuit = cs.trace(lambda w, x: cs.grad((cs.dot(w, x) * 1.0 + 0.0).tanh(), w), w=(4,), x=(4,))
    simplified = simplify(circuit)
    assert len(simplified) < len(circuit)
    rng = np.random.default_rng(5)
    _agree(circuit, simplified, {"w": rng.normal(size=4), "x": rng.normal(size=4)})


def test_domain_errors_are_not_folded_away():
    """log(-1) of constants stays a node, so evaluation reports it with its traced line."""
    circuit = cs.trace(lambda x: x + cs.stop_gradient(-1.0).log(), x=())
    simplified = simplify(circuit)
    assert Op.LOG in {e.op for e in simplified.eqns}
    with pytest.raises(EvaluationError,
                       match=r"= log \(traced at test_simplify\.py:\d+\): log of a non-positive"):
        cs.evaluate(simplified, {"x": 1.0})


def test_overflow_is_not_folded(recwarn):
    circuit = _unary(lambda b, x: b.add(Op.ADD, (x, b.add(Op.EXP, (b.const(1000.0),)))))
    assert Op.EXP in {e.op for e in fold_constants(circuit).eqns}
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


def test_simplify_program_keeps_its_interface():
    def step(w, data, lr, wt):
        loss = ((cs.dot(w, data) - 1.0) ** 2) * (1.0 - wt[0])
        return {"w": w - lr * cs.grad(loss, w), "unused": w[0] * 0.0}
    program = cs.trace_program(step, n_steps=4, state={"w": (2,)}, per_step={"data": (2,)},
                               static={"lr": ()}, weight="wt")
    simplified = simplify(program)
    assert isinstance(simplified, Program)
    assert simplified.step.inputs == program.step.inputs
    assert [o.name for o in simplified.step.outputs] == ["w", "unused"]
    assert (simplified.carry, simplified.per_step, simplified.weight, simplified.n_steps) == \
        (program.carry, program.per_step, program.weight, program.n_steps)
    assert len(simplified.step) < len(program.step)
    args = dict(init={"w": np.array([0.5, -0.5])}, data={"data": np.arange(8.0).reshape(4, 2) / 8},
                static={"lr": 0.1}, x=np.array([0.0, 1.0, 0.5, 0.0]))
    np.testing.assert_array_equal(cs.run_program(simplified, **args)["w"],
                                  cs.run_program(program, **args)["w"])


# ---------------------------------------------------------------- array circuits

def _agree_exactly(before: Circuit, after: Circuit, inputs: dict) -> None:
    want, got = cs.evaluate(before, inputs), cs.evaluate(after, inputs)
    assert set(got) == set(want)
    for name in want:
        assert got[name].shape == want[name].shape, name
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)


@pytest.mark.parametrize("name", sorted(PASSES))
@settings(max_examples=40, deadline=None, derandomize=True)
@given(circuit=random_array_circuits(max_nodes=10, index_input=True), seed=st.integers(0, 2**31))
def test_pass_preserves_outputs_on_random_array_circuits(name, circuit, seed):
    """Unbatched evaluation runs every op at the same batch size as folding does, so folded
    constants are bitwise the values the interpreter computes."""
    after = verify(PASSES[name](circuit))
    assert after.inputs == circuit.inputs
    assert [o.shape for o in after.outputs] == [o.shape for o in circuit.outputs]
    _agree_exactly(circuit, after, random_array_inputs(circuit, seed))


def _array_circuit(build, shape=(2, 3)) -> Circuit:
    b = Builder()
    x = b.input_array("x", shape)
    b.output("y", [build(b, x)])
    return b.build()


def test_constant_array_subgraphs_fold_to_one_array_constant():
    def build(b, x):
        m = b.const_array(np.arange(6.0).reshape(2, 3))
        mt = b.add(Op.TRANSPOSE, (m,), make_attrs(perm=(1, 0)))
        prod_ = b.add(Op.DOT_GENERAL, (m, mt), make_attrs(batch=((), ()), contract=((1,), (0,))))
        wide = b.add(Op.CONCATENATE, (prod_, prod_), make_attrs(axis=1))
        part = b.add(Op.SLICE, (wide,), make_attrs(start=(0, 0), step=(1, 1), stop=(2, 3)))
        return b.add(Op.ADD, (x, part))
    simplified = simplify(_array_circuit(build))
    assert [e.op for e in simplified.eqns] == [Op.INPUT, Op.CONST, Op.ADD]
    m = np.arange(6.0).reshape(2, 3)
    want = np.concatenate([m @ m.T, m @ m.T], axis=1)[:, :3]
    const = simplified.eqns[1]
    assert const.shape == (2, 3)
    np.testing.assert_array_equal(np.reshape(const.attr("value"), const.shape), want)


def test_big_constant_results_are_not_folded():
    def build(b, x):
        big = b.add(Op.BROADCAST, (b.const(2.0),), make_attrs(shape=(1000, 2, 3)))
        return b.add(Op.REDUCE_SUM, (b.add(Op.MUL, (big, x)),), make_attrs(axes=(0,)))
    circuit = _array_circuit(build)
    folded = fold_constants(circuit)
    assert Op.BROADCAST in {e.op for e in folded.eqns}
    assert max(np.size(e.attr("value")) for e in folded.eqns if e.op is Op.CONST) <= FOLD_LIMIT
    _agree_exactly(circuit, folded, {"x": np.arange(6.0).reshape(2, 3)})


@pytest.mark.parametrize("name, build", [
    ("x*ones", lambda b, x: b.add(Op.MUL, (x, b.const_array(np.ones((2, 3)))))),
    ("ones-row*x", lambda b, x: b.add(Op.MUL, (b.const_array(np.ones(3)), x))),
    ("x+0", lambda b, x: b.add(Op.ADD, (x, b.const(0.0)))),
    ("x/ones", lambda b, x: b.add(Op.DIV, (x, b.const_array(np.ones((1, 3)))))),
    ("sum(x, zeros)", lambda b, x: b.add(Op.SUM, (x, b.const_array(np.zeros(3))))),
])
def test_array_identities_fold_to_the_operand(name, build):
    simplified = simplify(_array_circuit(build))
    assert [e.op for e in simplified.eqns] == [Op.INPUT]
    assert simplified.outputs == (Output("y", (2, 3), (0,)),)


@pytest.mark.parametrize("name, build, shape", [
    ("x[3] * ones[2,3] broadcasts x", lambda b, x: b.add(Op.MUL, (x, b.const_array(np.ones((2, 3))))), (3,)),
    ("x[3] + zeros[2,3] broadcasts x", lambda b, x: b.add(Op.ADD, (b.const_array(np.zeros((2, 3))), x)), (3,)),
    ("sum(x[3], zeros[2,3])", lambda b, x: b.add(Op.SUM, (x, b.const_array(np.zeros((2, 3))))), (3,)),
])
def test_identities_that_would_lose_a_broadcast_are_not_applied(name, build, shape):
    circuit = _array_circuit(build, shape)
    simplified = simplify(circuit)
    out = simplified.outputs[0]
    assert simplified.eqns[out.nodes[0]].shape == (2, 3)
    _agree_exactly(circuit, simplified, {"x": np.array([0.5, -1.0, 2.0])})


def test_x_times_zeros_folds_to_zeros_of_the_result_shape():
    simplified = simplify(_array_circuit(lambda b, x: b.add(Op.MUL, (x, b.const(0.0))), (3,)))
    (node,) = simplified.outputs[0].nodes
    assert simplified.eqns[node].op is Op.CONST and simplified.eqns[node].shape == (3,)
    assert simplified.eqns[node].attr("value") == (0.0, 0.0, 0.0)


def test_cse_and_dce_keep_array_shapes():
    """Hand-built (no hash-consing): two identical transposes are shared, a dead reduction goes."""
    x = Eqn(Op.INPUT, (), make_attrs(name="x"), shape=(2, 3))
    t = Eqn(Op.TRANSPOSE, (0,), make_attrs(perm=(1, 0)), shape=(3, 2))
    dead = Eqn(Op.REDUCE_SUM, (1,), make_attrs(axes=(0,)), shape=(2,))
    eqns = (x, t, t, dead, Eqn(Op.ADD, (1, 2), shape=(3, 2)))
    circuit = verify(Circuit(eqns, (("x", (2, 3)),), (Output("y", (3, 2), (4,)),)))
    shared = dce(cse(circuit))
    assert [(e.op, e.shape) for e in shared.eqns] == [(Op.INPUT, (2, 3)), (Op.TRANSPOSE, (3, 2)),
                                                      (Op.ADD, (3, 2))]
    assert shared.eqns[2].args == (1, 1)
    _agree_exactly(circuit, shared, {"x": np.arange(6.0).reshape(2, 3)})


@pytest.mark.parametrize("first, second", [((1, 0), (1, 0)), ((2, 0, 1), (1, 2, 0)),
                                           ((1, 2, 0), (1, 0, 2)), ((0, 2, 1), (2, 1, 0))])
def test_a_transpose_of_a_transpose_is_one_transpose(first, second):
    b = Builder()
    x = b.input_array("x", (2, 3, 4)[: len(first)])
    inner = b.add(Op.TRANSPOSE, (x,), make_attrs(perm=first))
    b.output("y", [b.add(Op.TANH, (b.add(Op.TRANSPOSE, (inner,), make_attrs(perm=second)),))])
    circuit = verify(b.build())
    simpler = simplify(circuit)
    transposes = [e for e in simpler.eqns if e.op is Op.TRANSPOSE]
    composed = tuple(first[i] for i in second)
    identity = composed == tuple(range(len(first)))
    assert len(transposes) == (0 if identity else 1)
    value = np.random.default_rng(0).normal(size=(2, 3, 4)[: len(first)])
    np.testing.assert_array_equal(cs.evaluate(simpler, {"x": value})["y"],
                                  np.tanh(np.transpose(np.transpose(value, first), second)))
