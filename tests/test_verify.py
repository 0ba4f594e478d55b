"""verify() and verify_program() reject hand-made malformed circuits and programs with messages
that name the node, its op, its shape and the traced source line; well-formed ones pass
unchanged, and random array circuits verify while random corruptions of them are refused."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import every_array_op_circuit, random_array_circuits

import circuitsketch as cs
from circuitsketch.ir import (Builder, Circuit, Eqn, Op, Output, ParseError, Program, VerifyError,
                              make_attrs, parse_circuit, print_circuit, verify, verify_program)

LOC = "model.py:7"
X0 = Eqn(Op.INPUT, (), make_attrs(name="x", index=0), "model.py:1")
X1 = Eqn(Op.INPUT, (), make_attrs(name="x", index=1), "model.py:1")


def _circuit(*eqns: Eqn, inputs=(("x", (2,)),), outputs=None, order: int = 0) -> Circuit:
    if outputs is None:
        outputs = (Output("y", (), (len(eqns) - 1,)),)
    return Circuit(tuple(eqns), tuple(inputs), tuple(outputs), order)


def _series_input(index: int) -> Eqn:
    return Eqn(Op.INPUT, (), make_attrs(name="x", index=index), None, True)


def _whole(name: str, shape: tuple, series: bool = False) -> Eqn:
    return Eqn(Op.INPUT, (), make_attrs(name=name), "model.py:1", series, shape)


_M = ((("m", (2, 3)), ("v", (3,))))
_OUT = lambda node, shape: (Output("y", shape, (node,)),)  # noqa: E731
_M0, _V0 = _whole("m", (2, 3)), _whole("v", (3,))

#: malformed array circuits: (eqns, inputs, outputs, message)
ARRAY_MALFORMED = {
    "node shape differs from the inferred one": (
        (_M0, _V0, Eqn(Op.ADD, (0, 1), (), LOC, False, (3,))), _M, _OUT(2, (3,)),
        "node %2 = add [3] (traced at model.py:7): has shape (3,) but its operands give (2, 3)"),
    "shapes that do not broadcast": (
        (_M0, _whole("w", (2,)), Eqn(Op.MUL, (0, 1), (), LOC, False, (2, 3))),
        (("m", (2, 3)), ("w", (2,))), _OUT(2, (2, 3)),
        "node %2 = mul [2, 3] (traced at model.py:7): shapes (2, 3), (2,) do not broadcast"),
    "input shape differs from the declaration": (
        (_whole("m", (3, 2)),), _M, _OUT(0, (3, 2)),
        "node %0 = input [3, 2] (traced at model.py:1): has shape (3, 2) but its operands give (2, 3)"),
    "bad reduction axis": (
        (_M0, Eqn(Op.REDUCE_SUM, (0,), make_attrs(axes=(2,)), LOC, False, (2,))), _M, _OUT(1, (2,)),
        "node %1 = reduce_sum [2] (traced at model.py:7): axes (2,) out of range for rank 2"),
    "axes not a tuple": (
        (_M0, Eqn(Op.REDUCE_SUM, (0,), make_attrs(axes=1), LOC, False, (2,))), _M, _OUT(1, (2,)),
        "node %1 = reduce_sum [2] (traced at model.py:7): axes must be a tuple of ints, got 1"),
    "contraction sizes differ": (
        (_M0, _V0, Eqn(Op.DOT_GENERAL, (0, 1), make_attrs(batch=((), ()), contract=((0,), (0,))),
                       LOC, False, (3,))), _M, _OUT(2, (3,)),
        "node %2 = dot_general [3] (traced at model.py:7): contract axis 0 of lhs (2, 3) (size 2) "
        "against axis 0 of rhs (3,) (size 3)"),
    "reshape changes the size": (
        (_M0, Eqn(Op.RESHAPE, (0,), make_attrs(shape=(4,)), LOC, False, (4,))), _M, _OUT(1, (4,)),
        "node %1 = reshape [4] (traced at model.py:7): cannot reshape (2, 3) (6 elements) to (4,)"),
    "float reshape target": (
        (_M0, Eqn(Op.RESHAPE, (0,), make_attrs(shape=(2.5,)), LOC, False, (6,))), _M, _OUT(1, (6,)),
        "node %1 = reshape [6] (traced at model.py:7): reshape target (2.5,) must be a tuple of "
        "non-negative ints"),
    "malformed node shape": (
        (_M0, Eqn(Op.NEG, (0,), (), LOC, False, (2.5,))), _M, _OUT(0, (2, 3)),
        "node %1 = 'neg': shape (2.5,) must be a tuple of non-negative ints"),
    "input read whole and by element": (
        (_M0, Eqn(Op.INPUT, (), make_attrs(index=0, name="m"), LOC)), _M, _OUT(0, (2, 3)),
        "node %1 = input (traced at model.py:7): input 'm' is read both whole and by element"),
    "input read whole twice": (
        (_M0, _M0), _M, _OUT(0, (2, 3)),
        "node %1 = input [2, 3] (traced at model.py:1): input 'm' is read both whole and by element"),
    "scatter_add index beyond size": (
        (_V0, Eqn(Op.CONST, (), make_attrs(shape=(3,), value=(0.0, 1.0, 2.0)), None, False, (3,)),
         Eqn(Op.SCATTER_ADD, (0, 1), make_attrs(axis=0, size=2), LOC, False, (2,))), _M, _OUT(2, (2,)),
        "node %2 = scatter_add [2] (traced at model.py:7): index 2.0 is not an integer in [0, 2) "
        "(axis 0)"),
    "constant index out of range": (
        (_M0, Eqn(Op.CONST, (), make_attrs(shape=(2,), value=(0.0, 3.0)), None, False, (2,)),
         Eqn(Op.TAKE, (0, 1), make_attrs(axis=1), LOC, False, (2, 2))), _M, _OUT(2, (2, 2)),
        "node %2 = take [2, 2] (traced at model.py:7): index 3.0 is not an integer in [0, 3) (axis 1)"),
    "non-integer constant index": (
        (_M0, Eqn(Op.CONST, (), make_attrs(value=0.5)),
         Eqn(Op.TAKE, (0, 1), make_attrs(axis=0), LOC, False, (3,))), _M, _OUT(2, (3,)),
        "node %2 = take [3] (traced at model.py:7): index 0.5 is not an integer in [0, 2) (axis 0)"),
    "array constant of the wrong size": (
        (Eqn(Op.CONST, (), make_attrs(shape=(3,), value=(1.0, 2.0)), LOC, False, (3,)),), _M,
        _OUT(0, (3,)),
        "node %0 = const [3] (traced at model.py:7): const of shape (3,) needs 3 values, got 2"),
    "element output reading an array node": (
        (_M0, _V0), _M, (Output("y", (2,), (0, 1)),),
        "output 'y' of shape (2,) lists elements, but node %0 = input [2, 3] (traced at model.py:1) "
        "is not 0-d"),
    "whole output of the wrong shape": (
        (_M0,), _M, _OUT(0, (3, 2)),
        "output 'y' of shape (3, 2) cannot be node %0 = input [2, 3] (traced at model.py:1), which "
        "has shape (2, 3)"),
}

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
    "input name not a string": (
        _circuit(Eqn(Op.INPUT, (), make_attrs(name=["x"], index=0))),
        "node %0 = input: input name ['x'] must be a str"),
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
        _circuit(X0, outputs=(Output("y", (2,), (0,)),)),
        "output 'y' of shape (2,) cannot be node %0 = input (traced at model.py:1), which has shape ()"),
    "output with too few elements": (
        _circuit(X0, X1, outputs=(Output("y", (3,), (0, 1)),)), "output 'y': shape (3,) does not hold 2 nodes"),
    "empty output": (
        _circuit(X0, outputs=(Output("out", (0,), ()),)), "output 'out' of shape (0,) has no nodes"),
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
    "float shape": (
        _circuit(X0, inputs=(("x", (2.5,)),)), "input 'x': shape (2.5,) must be a tuple of non-negative ints"),
    "float output shape": (
        _circuit(X0, outputs=(Output("y", (2.5,), (0,)),)),
        "output 'y': shape (2.5,) must be a tuple of non-negative ints"),
    **{name: (_circuit(*eqns, inputs=inputs, outputs=outputs), message)
       for name, (eqns, inputs, outputs, message) in ARRAY_MALFORMED.items()},
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


def test_index_operands_must_be_real():
    eqns = (_whole("m", (2, 3), True), _whole("v", (3,), True),
            Eqn(Op.TAKE, (0, 1), make_attrs(axis=1), LOC, True, (2, 3)))
    with pytest.raises(VerifyError, match=re.escape(
            "node %2 = take [2, 3] (traced at model.py:7): index operand %1 is a series; indices "
            "must be real")):
        verify(_circuit(*eqns, inputs=_M, outputs=_OUT(2, (2, 3)), order=1))


def test_a_series_take_with_a_real_index_is_allowed():
    """The gathered operand may be a series (take is linear in it); only the index must be real."""
    eqns = (_whole("m", (2, 3), True), _whole("v", (3,)),
            Eqn(Op.TAKE, (0, 1), make_attrs(axis=1), LOC, True, (2, 3)))
    verify(_circuit(*eqns, inputs=_M, outputs=_OUT(2, (2, 3)), order=1))


@settings(max_examples=80, deadline=None, derandomize=True)
@given(random_array_circuits(max_nodes=10), st.data())
def test_random_array_circuits_verify_and_a_wrong_shape_is_refused(circuit, data):
    assert verify(circuit) is circuit
    node = data.draw(st.integers(0, len(circuit.eqns) - 1))
    eqn = circuit.eqns[node]
    wrong = data.draw(st.sampled_from([eqn.shape + (2,), eqn.shape[1:] if eqn.shape else (5,)]))
    broken = list(circuit.eqns)
    broken[node] = Eqn(eqn.op, eqn.args, eqn.attrs, eqn.loc, eqn.series, wrong)
    # the corrupted node is named, or (had its shape been consistent) the first node it misleads
    with pytest.raises(VerifyError, match=r"node %\d+ = |output "):
        verify(Circuit(tuple(broken), circuit.inputs, circuit.outputs))


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


def test_array_program_with_whole_array_state_verifies():
    b = Builder()
    w = b.input_array("w", (2, 3))
    data = b.input_array("data", (3,))
    weight = b.input_array("weight", (1,))
    step = b.add(Op.MUL, (b.add(Op.MUL, (w, data)), weight))
    b.output("w", [b.add(Op.SUB, (w, step))])
    program = Program(b.build(), 4, ("w",), ("data",), "weight")
    assert verify_program(program) is program
    lowered = cs.taylor(program, order=2)
    assert verify_program(lowered) is lowered
    with pytest.raises(VerifyError, match=re.escape("program n_steps must be an int, got 2.5")):
        verify_program(Program(program.step, 2.5, ("w",), ("data",), "weight"))


def test_verify_program_checks_the_step_circuit():
    step = _step()
    broken = Circuit(step.eqns + (Eqn(Op.NEG, (len(step.eqns),)),), step.inputs, step.outputs)
    with pytest.raises(VerifyError, match="uses %.* before it is defined"):
        verify_program(_program(step=broken))


# ---------------------------------------------------------------- mutated array IR text

_TOKENS = list("0123456789%=[](),.-:s {}'") + ["axes=", "name=", "shape=", "None", "1e400", "(1, 2)",
                                               "[[1]]", "'x'", "\n", " : [2,3]", " : s", "%99"]


@settings(max_examples=300, deadline=None, derandomize=True)
@given(random_array_circuits(max_nodes=8), st.data())
def test_mutated_array_text_gives_only_parse_or_verify_errors(circuit, data):
    """Text edits (delete, insert, replace a character or a token) either parse and verify, or
    raise ParseError / VerifyError: never a raw TypeError, KeyError or IndexError."""
    text = print_circuit(circuit)
    for _ in range(data.draw(st.integers(1, 3))):
        where = data.draw(st.integers(0, len(text)))
        token = data.draw(st.sampled_from(_TOKENS))
        cut = data.draw(st.integers(0, 3))
        text = text[:where] + data.draw(st.sampled_from(["", token])) + text[where + cut:]
    try:
        parsed = parse_circuit(text)
        verify(parsed)
    except (ParseError, VerifyError):
        return
    assert parse_circuit(print_circuit(parsed)) == parsed  # what verifies also round-trips


_WEIRD = [None, -1, 0, 1, 7, 2.5, True, "x", (), (0,), (1, 0), (5,), ((0,), (0,)), ((), ()), [1],
          (0.5,), (-1,), (1.0, 2.0), float("nan"), ("a", "b"), {"x": 1}]


def _corruptions(eqn: Eqn, node: int):
    """Every single-field corruption of one node: each attribute, the operands, the shape."""
    for key, _ in eqn.attrs:
        for weird in _WEIRD:
            yield Eqn(eqn.op, eqn.args, tuple((k, weird if k == key else v) for k, v in eqn.attrs),
                      eqn.loc, eqn.series, eqn.shape)
    for args in [(), (node,), (-1,), (0, 0, 0), ("0",), (0.0,), None]:
        yield Eqn(eqn.op, args, eqn.attrs, eqn.loc, eqn.series, eqn.shape)
    for shape in _WEIRD:
        yield Eqn(eqn.op, eqn.args, eqn.attrs, eqn.loc, eqn.series, shape)
    yield Eqn(eqn.op, eqn.args, (("zz", 1),) + eqn.attrs, eqn.loc, eqn.series, eqn.shape)


def test_every_corruption_of_every_array_node_gives_a_verify_error():
    """Each node of a circuit holding every array op, each field replaced by odd Python values:
    verify raises VerifyError (never a raw TypeError, KeyError or IndexError) or, where the
    value happens to fit, accepts."""
    circuit = every_array_op_circuit()
    refused = accepted = 0
    for node, eqn in enumerate(circuit.eqns):
        for bad in _corruptions(eqn, node):
            eqns = circuit.eqns[:node] + (bad,) + circuit.eqns[node + 1:]
            try:
                verify(Circuit(eqns, circuit.inputs, circuit.outputs))
                accepted += 1
            except VerifyError:
                refused += 1
    assert refused > 10 * accepted  # nearly every corruption is caught
