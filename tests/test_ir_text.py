"""The text form: ``parse(print(c)) == c`` for every fixture, for random scalar and array
circuits (real and series-typed) and for programs; golden snapshots pin the printed format (0-d
nodes print as they did before shapes existed); malformed text, a printed shape that its
operands contradict and non-text input raise ParseError naming the line."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import (KINK_OPS, SMOOTH_OPS, every_array_op_circuit, random_array_circuits,
                        random_circuits)

import circuitsketch as cs
from circuitsketch.ir import (Builder, Circuit, Eqn, Op, Output, ParseError, Program, make_attrs,
                              parse_circuit, parse_program, print_circuit, print_program, verify,
                              verify_program)
from circuitsketch.passes import cse, dce, fold_constants, grad


def _every_op(x, w):
    a, b = x[0], x[1]
    positive = a * a + 1.0
    smooth = [a + b, a - b, -a, a * b, a / positive, b ** 3, positive ** 0.5, positive ** -1.5,
              a.exp(), positive.log(), positive.sqrt(), a.tanh(), a.erf(), a.gelu()]
    kinks = [a.relu(), cs.maximum(a, b), a < b, a <= b, a > b, a >= b, cs.eq(a, b),
             cs.select(a > b, a, b), cs.stop_gradient(a) * b]
    fused = [cs.vsum(x), cs.dot(x, w)]
    return {"smooth": smooth, "kinks": kinks, "fused": fused, "scalar": cs.vsum(smooth + fused)}


def every_op_circuit() -> Circuit:
    return cs.trace(_every_op, x=(2,), w=(2,))


def _logistic_step(w, features, label, weight):
    p = 1.0 / (1.0 + (-cs.dot(w, features)).exp())
    loss = -(label * p.log() + (1.0 - label) * (1.0 - p).log()) * (1.0 - weight[0])
    return {"w": w - 0.5 * cs.grad(loss, w), "loss": loss}


def logistic_program() -> Program:
    return cs.trace_program(_logistic_step, n_steps=7, state={"w": (3,)},
                            per_step={"features": (3,), "label": ()}, weight="weight")


def special_values_circuit() -> Circuit:
    """Constants whose text form is delicate, a 2-d and a scalar input, an output naming a node twice."""
    b = Builder()
    m = b.input("m", (2, 3), loc="<ipython-input-3-1f2e>:1")
    (s,) = b.input("s", ())
    consts = [b.const(v) for v in (math.inf, -math.inf, -2.5, 1e-300, 1 / 3, 6.02e23, 5e-324)]
    total = b.add(Op.SUM, tuple(consts[2:]) + tuple(m), loc="model.py:12")
    b.output("total", [total, s, total, total], (2, 2))
    b.output("big", [consts[0], consts[1]])
    return b.build()


def quoted_names_circuit() -> Circuit:
    """Names whose attribute repr needs double quotes, escaped quotes, or holds a slash."""
    b = Builder()
    (a,) = b.input("it's", ())
    (q,) = b.input('say"hi', ())
    b.output("d/dx", [b.add(Op.MUL, (a, q))], ())
    return b.build()


def empty_circuit() -> Circuit:
    return Builder().build()


FIXTURES = {
    "every_op": every_op_circuit,
    "every_op_grad": lambda: grad(every_op_circuit(), "scalar", ["x", "w"]),
    "every_op_taylor": lambda: cs.taylor(every_op_circuit(), order=3, seeds={"x"}),
    "every_op_folded": lambda: dce(cse(fold_constants(every_op_circuit()))),
    "special_values": special_values_circuit,
    "quoted_names": quoted_names_circuit,
    "empty": empty_circuit,
    "logistic_step": lambda: logistic_program().step,
    "every_array_op": every_array_op_circuit,
    "every_array_op_taylor": lambda: cs.taylor(every_array_op_circuit(), order=2, seeds={"x"}),
    "every_array_op_folded": lambda: dce(cse(fold_constants(every_array_op_circuit()))),
}

PROGRAMS = {
    "logistic": logistic_program,
    "logistic_taylor": lambda: cs.taylor(logistic_program(), order=4, seeds={"weight"}),
    "logistic_simplified": lambda: cs.simplify(logistic_program()),
    "no_weight": lambda: Program(every_op_circuit(), n_steps=0, carry=(), per_step=("x",)),
}


def test_fixtures_cover_the_whole_op_set():
    scalar = {e.op for e in every_op_circuit().eqns}
    array = {e.op for e in every_array_op_circuit().eqns}
    assert scalar | array == set(Op)
    assert all(e.shape == () for e in every_op_circuit().eqns)


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_fixture_round_trips(name):
    circuit = verify(FIXTURES[name]())
    text = print_circuit(circuit)
    parsed = parse_circuit(text)
    assert parsed == circuit
    assert print_circuit(parsed) == text


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_program_round_trips(name):
    program = verify_program(PROGRAMS[name]())
    text = print_program(program)
    assert parse_program(text) == program
    assert print_program(parse_program(text)) == text


def test_series_typing_survives_the_round_trip():
    lowered = FIXTURES["every_op_taylor"]()
    parsed = parse_circuit(print_circuit(lowered))
    assert parsed.order == 3
    assert [e.series for e in parsed.eqns] == [e.series for e in lowered.eqns]
    assert any(e.series for e in parsed.eqns) and not all(e.series for e in parsed.eqns)


def test_parsed_special_values_are_the_same_floats():
    parsed = parse_circuit(print_circuit(special_values_circuit()))
    values = [e.attr("value") for e in parsed.eqns if e.op is Op.CONST]
    assert values == [math.inf, -math.inf, -2.5, 1e-300, 1 / 3, 6.02e23, 5e-324]
    assert all(type(v) is float for v in values)


def test_golden_text():
    b = Builder()
    x = b.input("x", (2,), loc="model.py:3")
    prod = b.add(Op.MUL, (x[0], x[1]), loc="model.py:4")
    y = b.add(Op.POW, (prod,), make_attrs(p=0.5), loc="model.py:4")
    b.output("y", [b.add(Op.DOT, (x[0], x[1], y, y))], ())
    golden = (
        "circuit order=0\n"
        "input x [2]\n"
        "%0 = input {index=0, name='x'} @ model.py:3\n"
        "%1 = input {index=1, name='x'} @ model.py:3\n"
        "%2 = mul %0 %1 @ model.py:4\n"
        "%3 = pow %2 {p=0.5} @ model.py:4\n"
        "%4 = dot %0 %1 %3 %3\n"
        "output y [] = %4\n")
    assert print_circuit(b.build()) == golden
    assert parse_circuit(golden) == b.build()


def test_golden_array_text():
    """Arrays print their shape after ``:`` (``s`` first for series); 0-d nodes print no type."""
    b = Builder()
    x = b.input_array("x", (4, 16), loc="model.py:3")
    w = b.input_array("w", (16,))
    y = b.add(Op.ADD, (x, w), loc="model.py:4")
    total = b.add(Op.REDUCE_SUM, (y,), make_attrs(axes=(0, 1)))
    m = b.add(Op.DOT_GENERAL, (x, w), make_attrs(batch=((), ()), contract=((1,), (0,))))
    b.output("y", [b.add(Op.EXP, (y,))])
    b.output("total", [total], ())
    b.output("m", [m])
    golden = (
        "circuit order=2\n"
        "input x [4,16]\n"
        "input w [16]\n"
        "%0 = input {name='x'} : s [4,16] @ model.py:3\n"
        "%1 = input {name='w'} : [16]\n"
        "%2 = add %0 %1 : s [4,16] @ model.py:4\n"
        "%3 = reduce_sum %2 {axes=(0, 1)} : s\n"
        "%4 = dot_general %0 %1 {batch=((), ()), contract=((1,), (0,))} : s [4]\n"
        "%5 = exp %2 : s [4,16]\n"
        "output y [4,16] = %5\n"
        "output total [] = %3\n"
        "output m [4] = %4\n")
    lowered = cs.taylor(b.build(), order=2, seeds={"x"})
    assert print_circuit(lowered) == golden
    assert parse_circuit(golden) == lowered
    real = print_circuit(b.build())
    assert "%2 = add %0 %1 : [4,16] @ model.py:4\n" in real and "%3 = reduce_sum %2 {axes=(0, 1)}\n" in real


def test_golden_program_header():
    text = print_program(logistic_program())
    assert text.startswith("program n_steps=7 weight=weight\ncarry w\nper_step features label\n"
                           "circuit order=0\ninput w [3]\ninput features [3]\ninput label []\n"
                           "input weight [1]\n")


def test_comments_and_blank_lines_are_ignored():
    text = "# a comment\ncircuit order=0\n\ninput x []\n  # another\n%0 = input {index=0, name='x'}\n" \
           "%1 = neg %0\noutput y [] = %1\n"
    circuit = parse_circuit(text)
    assert [e.op for e in circuit.eqns] == [Op.INPUT, Op.NEG]
    assert circuit.outputs == (Output("y", (), (1,)),)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(random_circuits(ops=SMOOTH_OPS + KINK_OPS, max_nodes=20))
def test_random_circuits_round_trip(circuit):
    assert parse_circuit(print_circuit(circuit)) == circuit


@settings(max_examples=60, deadline=None, derandomize=True)
@given(random_circuits(ops=SMOOTH_OPS + KINK_OPS), st.integers(1, 6))
def test_random_series_circuits_round_trip(circuit, order):
    lowered = cs.taylor(circuit, order=order, seeds={"x"})
    assert parse_circuit(print_circuit(lowered)) == lowered


@settings(max_examples=60, deadline=None, derandomize=True)
@given(random_circuits(ops=SMOOTH_OPS + KINK_OPS), st.integers(0, 1000))
def test_random_programs_round_trip(circuit, n_steps):
    program = verify_program(Program(circuit, n_steps, carry=(), per_step=("x",)))
    assert parse_program(print_program(program)) == program


@settings(max_examples=150, deadline=None, derandomize=True)
@given(random_array_circuits(max_nodes=12))
def test_random_array_circuits_round_trip(circuit):
    text = print_circuit(circuit)
    assert parse_circuit(text) == circuit
    assert print_circuit(parse_circuit(text)) == text


@settings(max_examples=60, deadline=None, derandomize=True)
@given(random_array_circuits(kinks=False), st.integers(1, 4), st.sampled_from(["x", "w"]))
def test_random_array_series_circuits_round_trip(circuit, order, seed):
    lowered = cs.taylor(circuit, order=order, seeds={seed})
    assert parse_circuit(print_circuit(lowered)) == lowered


def test_array_attribute_values_read_back_with_their_types():
    parsed = parse_circuit(print_circuit(every_array_op_circuit()))
    attrs = {e.op: dict(e.attrs) for e in parsed.eqns}
    assert attrs[Op.SLICE] == {"start": (0, 1), "step": (1, 2), "stop": (2, 3)}
    assert attrs[Op.DOT_GENERAL]["contract"] in (((1,), (0,)), ((1,), (1,)))
    row = next(e for e in parsed.eqns if e.op is Op.CONST and e.attr("shape") == (3,))
    assert row.attr("value") == (1.0, -math.inf, 0.25)
    assert all(type(v) is float for v in row.attr("value"))


def test_printed_array_circuit_evaluates_like_the_original():
    circuit = every_array_op_circuit()
    rng = np.random.default_rng(0)
    inputs = {"x": rng.normal(size=(2, 3)), "w": rng.normal(size=(3, 4)), "tokens": np.array([3.0, 1.0])}
    before = cs.evaluate(circuit, inputs)
    after = cs.evaluate(parse_circuit(print_circuit(circuit)), inputs)
    assert before.keys() == after.keys()
    for name in before:
        np.testing.assert_array_equal(before[name], after[name])
    # and against numpy directly, for the output that exercises take and scatter_add
    w = inputs["w"]
    want = np.zeros((3, 4))
    np.add.at(want, (slice(None), [3, 1]), w[:, [3, 1]] * w[:, [2, 0]])
    np.testing.assert_allclose(before["scattered"], want, rtol=1e-15)


def test_printed_circuit_evaluates_like_the_original():
    circuit = every_op_circuit()
    inputs = {"x": np.array([0.3, -0.7]), "w": np.array([1.5, 2.0])}
    before = cs.evaluate(circuit, inputs)
    after = cs.evaluate(parse_circuit(print_circuit(circuit)), inputs)
    for name in before:
        np.testing.assert_array_equal(before[name], after[name])


@pytest.mark.parametrize("text, message", [
    ("input x []\n", "must start with 'circuit order=K'"),
    ("circuit order=two\n", "line 1: expected 'circuit order=K'"),
    ("circuit order=0\ninput x []\n%0 = input {index=0, name='x'}\n%2 = neg %0\n",
     "line 4: expected node %1, got %2"),
    ("circuit order=0\n%0 = cosh\n", "line 2: unknown op 'cosh'"),
    ("circuit order=0\n%0 = const {value=1.0.0}\n", "line 2: bad attribute value '1.0.0'"),
    ("circuit order=0\n%0 = const {value}\n", "line 2: cannot read attributes 'value'"),
    ("circuit order=0\n\n\nthis is not IR\n", "line 4: cannot parse 'this is not IR'"),
    ("circuit order=0\noutput y [] = 0\n", "line 2: cannot parse"),
    ("circuit order=0\ninput x [3]\n%0 = input {name='x'} : [4]\n",
     "line 3: %0 is printed with shape [4] but its operands give [3]"),
    ("circuit order=0\ninput x [2,3]\n%0 = input {name='x'} : [2,3]\n%1 = exp %0\n",
     "line 4: %1 is printed with shape [] but its operands give [2,3]"),
    ("circuit order=0\ninput x [2,3]\n%0 = input {name='x'} : [2,3]\n"
     "%1 = reduce_sum %0 {axes=(1,)} : [3]\n", "line 4: %1 is printed with shape [3] but its operands give [2]"),
    ("circuit order=0\n%0 = const {value=1.0} :\n", "line 2: cannot parse"),
    ("circuit order=0\n%0 = const {value=1.0} : x\n", "line 2: cannot parse"),
    ("circuit order=0\n%0 = const {shape=(2,), value=(1.0, 2.0}\n", "line 2: bad attribute value"),
])
def test_parse_errors_name_the_line(text, message):
    with pytest.raises(ParseError, match=re.escape(message)):
        parse_circuit(text)


@pytest.mark.parametrize("text", [None, b"circuit order=0\n", 3, ["circuit order=0"]])
def test_non_text_is_a_parse_error(text):
    with pytest.raises(ParseError, match="text must be a str, got"):
        parse_circuit(text)
    with pytest.raises(ParseError, match="text must be a str, got"):
        parse_program(text)


@pytest.mark.parametrize("text, message", [
    ("program n_steps=3 weight=-\ncarry\n", "needs 'program', 'carry' and 'per_step' lines"),
    ("program steps=3 weight=-\ncarry\nper_step\ncircuit order=0\n", "line 1: expected 'program"),
    ("program n_steps=3 weight=-\nper_step\ncarry\ncircuit order=0\n",
     "must be followed by 'carry ...' and 'per_step ...'"),
])
def test_program_parse_errors(text, message):
    with pytest.raises(ParseError, match=re.escape(message)):
        parse_program(text)


def test_parser_does_not_verify():
    """Parsing is syntax only: a use-before-def parses, and verify() is what rejects it."""
    text = "circuit order=0\n%0 = neg %1\n%1 = const {value=1.0}\noutput y [] = %0\n"
    circuit = parse_circuit(text)
    assert circuit.eqns[0] == Eqn(Op.NEG, (1,))
    with pytest.raises(cs.ir.VerifyError, match="uses %1 before it is defined"):
        verify(circuit)


def test_shapes_that_cannot_be_inferred_are_left_to_verify():
    """A shape misfit parses (with the printed shapes) and verify names the node and its line."""
    text = ("circuit order=0\ninput x [2]\ninput w [3]\n%0 = input {name='x'} : [2]\n"
            "%1 = input {name='w'} : [3]\n%2 = add %0 %1 : [3] @ model.py:9\noutput y [3] = %2\n")
    circuit = parse_circuit(text)
    assert circuit.eqns[2].shape == (3,)
    with pytest.raises(cs.ir.VerifyError, match=re.escape(
            "node %2 = add [3] (traced at model.py:9): shapes (2,), (3,) do not broadcast")):
        verify(circuit)
