"""verify() and verify_program() reject hand-made malformed circuits and programs with messages
that name the node, its op and the traced source line; well-formed ones pass unchanged."""

from __future__ import annotations

import re

import pytest

import circuitsketch as cs
from circuitsketch.ir import (Builder, Circuit, Eqn, Op, Output, Program, VerifyError, make_attrs,
                              verify, verify_program)

LOC = "model.py:7"
X0 = Eqn(Op.INPUT, (), make_attrs(name="x", index=0), "model.py:1")
X1 = Eqn(Op.INPUT, (), make_attrs(name="x", index=1), "model.py:1")


def _circuit(*eqns: Eqn, inputs=(("x", (2,)),), outputs=None, order: int = 0) -> Circuit:
    if outputs is None:
        outputs = (Output("y", (), (len(eqns) - 1,)),)
    return Circuit(tuple(eqns), tuple(inputs), tuple(outputs), order)


def _series_input(index: int) -> Eqn:
    return Eqn(Op.INPUT, (), make_attrs(name="x", index=index), None, True)


MALFORMED = {
    "use before def": (
        _circuit(X0, Eqn(Op.ADD, (0, 2), (), LOC), X1),
        "node %1 = add (traced at model.py:7): uses %2 before it is defined"),
    "reads itself": (
        _circuit(X0, Eqn(Op.NEG, (1,), (), LOC)),
        "node %1 = neg (traced at model.py:7): uses %1 before it is defined"),
    "negative operand": (
        _circuit(X0, Eqn(Op.NEG, (-1,), (), LOC)),
        "node %1 = neg (traced at model.py:7): operand -1 is not a node id"),
    "wrong arity": (
        _circuit(X0, X1, Eqn(Op.ADD, (0, 1, 1), (), LOC)),
        "node %2 = add (traced at model.py:7): expects 2 operand(s), got 3"),
    "unary with two operands": (
        _circuit(X0, X1, Eqn(Op.EXP, (0, 1), (), LOC)),
        "node %2 = exp (traced at model.py:7): expects 1 operand(s), got 2"),
    "odd dot": (
        _circuit(X0, X1, Eqn(Op.DOT, (0, 1, 1), (), LOC)),
        "node %2 = dot (traced at model.py:7): dot needs an even number of operands, got 3"),
    "empty sum": (
        _circuit(X0, Eqn(Op.SUM, (), (), LOC)),
        "node %1 = sum (traced at model.py:7): needs at least one operand"),
    "missing attribute": (
        _circuit(X0, Eqn(Op.POW, (0,), (), LOC)),
        "node %1 = pow (traced at model.py:7): missing attribute(s) ['p']"),
    "const without value": (
        _circuit(Eqn(Op.CONST, (), ())),
        "node %0 = const: missing attribute(s) ['value']"),
    "unexpected attribute": (
        _circuit(X0, X1, Eqn(Op.ADD, (0, 1), make_attrs(p=2.0), LOC)),
        "node %2 = add (traced at model.py:7): unexpected attribute(s) ['p']"),
    "integer exponent": (
        _circuit(X0, Eqn(Op.POW, (0,), make_attrs(p=2), LOC)),
        "node %1 = pow (traced at model.py:7): pow exponent p must be a float"),
    "integer constant": (
        _circuit(Eqn(Op.CONST, (), make_attrs(value=1))),
        "node %0 = const: const value must be a float"),
    "unsorted attributes": (
        _circuit(Eqn(Op.INPUT, (), (("name", "x"), ("index", 0)))),
        "node %0 = input: attributes must be unique and sorted"),
    "undeclared input": (
        _circuit(Eqn(Op.INPUT, (), make_attrs(name="w", index=0), "model.py:2")),
        "node %0 = input (traced at model.py:2): reads undeclared input 'w'"),
    "input index out of range": (
        _circuit(Eqn(Op.INPUT, (), make_attrs(name="x", index=2))),
        "node %0 = input: index 2 out of range for input 'x' of shape (2,)"),
    "duplicate input element": (
        _circuit(X0, X1, X0),
        "node %2 = input (traced at model.py:1): input element ('x', 0) read by two nodes"),
    "series in an order-0 circuit": (
        _circuit(X0, Eqn(Op.NEG, (0,), (), LOC, True)),
        "node %1 = neg (traced at model.py:7): series value in an order-0 (real) circuit"),
    "real node reading a series": (
        _circuit(_series_input(0), Eqn(Op.EXP, (0,), (), LOC), order=2),
        "node %1 = exp (traced at model.py:7): reads a series operand but is typed real"),
    "series constant": (
        _circuit(Eqn(Op.CONST, (), make_attrs(value=1.0), LOC, True), order=2),
        "node %0 = const (traced at model.py:7): constants are real, never series"),
    "input half series": (
        _circuit(_series_input(0), X1, order=2),
        "node %1 = input (traced at model.py:1): input 'x' has both series and real elements"),
    "negative order": (
        _circuit(X0, order=-1), "circuit order must be >= 0, got -1"),
    "output of a missing node": (
        _circuit(X0, outputs=(Output("y", (), (5,)),)), "output 'y' refers to missing node %5"),
    "output shape mismatch": (
        _circuit(X0, outputs=(Output("y", (2,), (0,)),)), "output 'y': shape (2,) does not hold 1 nodes"),
    "duplicate output": (
        _circuit(X0, outputs=(Output("y", (), (0,)), Output("y", (), (0,)))),
        "duplicate output names in ['y', 'y']"),
    "duplicate input": (
        _circuit(X0, inputs=(("x", (2,)), ("x", (2,)))), "duplicate input names in ['x', 'x']"),
    "name with a space": (
        _circuit(Eqn(Op.INPUT, (), make_attrs(name="a b", index=0)), inputs=(("a b", ()),)),
        "input name 'a b' must be a non-empty string without whitespace or brackets"),
    "empty output name": (
        _circuit(X0, outputs=(Output("", (), (0,)),)),
        "output name '' must be a non-empty string without whitespace or brackets"),
    "negative shape": (
        _circuit(X0, inputs=(("x", (-2,)),)), "input 'x': shape (-2,) must be a tuple of non-negative ints"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_verify_rejects_malformed_circuit(case):
    circuit, message = MALFORMED[case]
    with pytest.raises(VerifyError, match=f"^{re.escape(message)}$"):
        verify(circuit)


def test_verify_error_names_the_traced_line_of_the_user():
    """A real traced circuit, broken by hand, reports the line of this file that traced the node."""
    circuit = cs.trace(lambda x: x.exp() * 2.0, x=())  # the traced line
    line = test_verify_error_names_the_traced_line_of_the_user.__code__.co_firstlineno + 2
    exp_node = next(i for i, e in enumerate(circuit.eqns) if e.op is Op.EXP)
    broken = list(circuit.eqns)
    broken[exp_node] = Eqn(Op.EXP, (exp_node,), (), broken[exp_node].loc)
    with pytest.raises(VerifyError, match=re.escape(f"node %{exp_node} = exp (traced at "
                                                    f"test_verify.py:{line}): uses %{exp_node}")):
        verify(Circuit(tuple(broken), circuit.inputs, circuit.outputs))


def test_verify_accepts_and_returns_well_formed_circuits():
    b = Builder()
    x = b.input("x", (2,))
    b.output("y", [b.add(Op.DOT, (x[0], x[1], x[1], x[0]))], ())
    circuit = b.build()
    assert verify(circuit) is circuit
    lowered = cs.taylor(circuit, order=2, seeds={"x"})
    assert verify(lowered) is lowered


def test_series_reading_ops_that_give_reals_are_allowed():
    """Comparisons and stop_gradient read only the constant term, so they may be real."""
    for op in (Op.LT, Op.LE, Op.GT, Op.GE, Op.EQ):
        verify(_circuit(_series_input(0), _series_input(1), Eqn(op, (0, 1)), order=1))
    verify(_circuit(_series_input(0), _series_input(1), Eqn(Op.STOP_GRADIENT, (0,)), order=1))


# ---------------------------------------------------------------- programs

def _step() -> Circuit:
    def step(w, data, weight, lr):
        return {"w": w - lr * data * (1.0 - weight[0]), "loss": cs.vsum(w)}
    return cs.trace(step, w=(2,), data=(2,), weight=(1,), lr=())


def _program(**changes) -> Program:
    fields = dict(step=_step(), n_steps=3, carry=("w",), per_step=("data",), weight="weight")
    fields.update(changes)
    return Program(**fields)


BAD_PROGRAMS = {
    "negative n_steps": (_program(n_steps=-1), "program n_steps must be >= 0, got -1"),
    "carry not an input": (_program(carry=("loss",)),
                           "carried state 'loss' is not an input of the step circuit"),
    "carry not an output": (_program(carry=("lr",)),
                            "carried state 'lr' is not an output of the step circuit"),
    "carry shape mismatch": (
        _program(step=cs.trace(lambda w, data, weight, lr: {"w": w[0] + lr}, w=(2,), data=(2,),
                               weight=(1,), lr=())),
        "carried state 'w': input shape (2,) != output shape ()"),
    "per_step not an input": (_program(per_step=("tokens",)),
                              "per-step data 'tokens' is not an input of the step circuit"),
    "weight not an input": (_program(weight="x"), "weight input 'x' is not an input of the step circuit"),
    "weight not a vector": (_program(weight="lr"), "weight input 'lr' must be a vector, has shape ()"),
    "two roles": (_program(per_step=("data", "w")),
                  "an input has two loop roles: ['w', 'data', 'w', 'weight']"),
    "weight also per step": (_program(per_step=("data", "weight")),
                             "an input has two loop roles: ['w', 'data', 'weight', 'weight']"),
}


@pytest.mark.parametrize("case", sorted(BAD_PROGRAMS))
def test_verify_program_rejects(case):
    program, message = BAD_PROGRAMS[case]
    with pytest.raises(VerifyError, match=f"^{re.escape(message)}$"):
        verify_program(program)


def test_carried_series_state_must_be_series_at_the_input():
    """After the Taylor pass a carried value that is a series at the output must also be one at
    the input; typing only the output (a hand-made half-lowered program) is rejected."""
    program = _program()
    lowered = cs.taylor(program, order=2, seeds={"weight"})
    assert verify_program(lowered) is lowered
    eqns = list(lowered.step.eqns)
    w_inputs = [i for i, e in enumerate(eqns) if e.op is Op.INPUT and e.attr("name") == "w"]
    for i in w_inputs:
        eqns[i] = Eqn(Op.INPUT, eqns[i].args, eqns[i].attrs, eqns[i].loc, False)
    # the users of w keep their series type (they also read the series weight), so the step itself
    # is well typed and only the loop's carry is inconsistent
    half = Program(Circuit(tuple(eqns), lowered.step.inputs, lowered.step.outputs, 2), 3, ("w",),
                   ("data",), "weight")
    verify(half.step)
    with pytest.raises(VerifyError, match=re.escape(
            f"carried state 'w' is a series at the step output but real at its input (%{w_inputs[0]})")):
        verify_program(half)


def test_verify_program_checks_the_step_circuit():
    step = _step()
    broken = Circuit(step.eqns + (Eqn(Op.NEG, (len(step.eqns),)),), step.inputs, step.outputs)
    with pytest.raises(VerifyError, match="uses %.* before it is defined"):
        verify_program(_program(step=broken))
