"""The tracer records what the Python code computes, node by node, with the user's source line;
code that cannot become a fixed circuit raises TraceError naming the operation and the line.

Lines are found through marker comments (``# <- name``) so the tests do not hard-code numbers."""

from __future__ import annotations

import math
import pathlib
import re

import numpy as np
import pytest

import circuitsketch as cs
from circuitsketch import Op, TraceError

_SOURCE = pathlib.Path(__file__).read_text().splitlines()


def line_of(marker: str) -> str:
    """``test_tracer.py:N`` of the unique line carrying ``# <- marker``."""
    hits = [i + 1 for i, text in enumerate(_SOURCE) if text.rstrip().endswith(f"# <- {marker}")]
    assert len(hits) == 1, f"marker {marker!r} found {len(hits)} times"
    return f"test_tracer.py:{hits[0]}"


def ops(circuit) -> list[Op]:
    return [e.op for e in circuit.eqns if e.op is not Op.INPUT]


def node(circuit, i):
    return circuit.eqns[i]


# ---------------------------------------------------------------- what gets recorded

@pytest.mark.parametrize("fn, expected", [
    (lambda x: x + 1.0, [Op.CONST, Op.ADD]),
    (lambda x: 1.0 + x, [Op.CONST, Op.ADD]),
    (lambda x: x - 2, [Op.CONST, Op.SUB]),
    (lambda x: 2 - x, [Op.CONST, Op.SUB]),
    (lambda x: x * x, [Op.MUL]),
    (lambda x: 3 / x, [Op.CONST, Op.DIV]),
    (lambda x: -x, [Op.NEG]),
    (lambda x: x ** 2, [Op.POW]),
    (lambda x: x.exp().log().sqrt().tanh().erf().gelu().relu(),
     [Op.EXP, Op.LOG, Op.SQRT, Op.TANH, Op.ERF, Op.GELU, Op.RELU]),
    (lambda x: [x < 1, x <= 1, x > 1, x >= 1], [Op.CONST, Op.LT, Op.LE, Op.GT, Op.GE]),
    (lambda x: cs.select(cs.eq(x, 0.5), cs.stop_gradient(x), cs.maximum(x, 0.0)),
     [Op.CONST, Op.EQ, Op.STOP_GRADIENT, Op.CONST, Op.MAX, Op.SELECT]),
    (lambda x: 2 ** x, [Op.CONST, Op.LOG, Op.MUL, Op.EXP]),
    (lambda x: x ** x, [Op.LOG, Op.MUL, Op.EXP]),
])
def test_operations_record_their_ops(fn, expected):
    assert ops(cs.trace(fn, x=())) == expected


def test_operand_order_is_kept():
    c = cs.trace(lambda x: [x - 2.0, 2.0 - x, x / 4.0, 4.0 / x], x=())
    x, two = 0, 1
    assert node(c, 2).args == (x, two) and node(c, 3).args == (two, x)
    assert node(c, 5).args == (x, 4) and node(c, 6).args == (4, x)


def test_power_records_a_float_exponent():
    c = cs.trace(lambda x: x ** np.int64(3), x=())
    assert node(c, 1).attrs == (("p", 3.0),) and type(node(c, 1).attr("p")) is float


def test_python_numbers_mix_in_as_shared_constants():
    c = cs.trace(lambda x: (x * 2 + x * 2.0) * True, x=())
    assert ops(c) == [Op.CONST, Op.MUL, Op.ADD, Op.CONST, Op.MUL]
    assert node(c, 1).attr("value") == 2.0 and node(c, 4).attr("value") == 1.0


def test_fused_helpers_record_one_node():
    def f(w, x):
        return {"dot": cs.dot(w, x), "sum": cs.vsum(w), "mv": cs.matvec(w.reshape(2, 2), x[:2])}
    c = cs.trace(f, w=(4,), x=(4,))
    dots = [e for e in c.eqns if e.op is Op.DOT]
    assert [len(e.args) for e in dots] == [8, 4, 4]
    assert dots[0].args == (0, 1, 2, 3, 4, 5, 6, 7)  # first half times second half
    assert [e.args for e in c.eqns if e.op is Op.SUM] == [(0, 1, 2, 3)]
    assert c.output("mv").shape == (2,)


def test_nested_lists_flatten_in_order():
    c = cs.trace(lambda w: cs.vsum([[w[0], w[1]], [w[2]], np.array([w[3]])]), w=(4,))
    assert node(c, 4).args == (0, 1, 2, 3)


def test_numpy_object_arrays_work_as_tensors():
    def layer(w, x):
        return np.tanh(w @ x) + np.exp(w[:, 0])
    c = cs.trace(layer, w=(2, 3), x=(3,))
    assert c.output("out").shape == (2,)
    w, x = np.arange(6.0).reshape(2, 3) / 10, np.array([0.5, -1.0, 2.0])
    np.testing.assert_allclose(cs.evaluate(c, {"w": w, "x": x})["out"], layer(w, x), rtol=1e-15)


def test_outputs_keep_names_and_shapes():
    single = cs.trace(lambda x: x[0] * 2.0, x=(2,))
    assert [(o.name, o.shape) for o in single.outputs] == [("out", ())]
    array = cs.trace(lambda x: x.reshape(2, 1) * 2.0, x=(2,))
    assert [(o.name, o.shape) for o in array.outputs] == [("out", (2, 1))]
    named = cs.trace(lambda x: {"a": x, "b": x[1]}, x=(2,))
    assert [(o.name, o.shape, o.nodes) for o in named.outputs] == [("a", (2,), (0, 1)), ("b", (), (1,))]


def test_a_constant_output_is_a_const_node():
    c = cs.trace(lambda x: {"y": x, "c": 1.5}, x=())
    assert node(c, c.output("c").nodes[0]).attr("value") == 1.5


def test_source_locations_point_at_the_user_line():
    def model(x):
        y = x.exp()  # <- exp line
        return np.sum([y, x])  # <- numpy sum line
    c = cs.trace(model, x=())  # <- trace call
    assert node(c, 0).loc == line_of("trace call")
    assert node(c, 1).loc == line_of("exp line")
    assert node(c, 2).op is Op.ADD and node(c, 2).loc == line_of("numpy sum line")


def test_grad_records_the_backward_pass_in_the_same_circuit():
    def f(w):
        loss = (w[0] * w[1]).exp()
        return {"loss": loss, "g": cs.grad(loss, w), "gs": cs.grad(loss, w[0])}
    c = cs.trace(f, w=(2,))
    assert c.output("g").shape == (2,) and c.output("gs").shape == ()
    assert c.output("gs").nodes[0] == c.output("g").nodes[0]  # shared, not recomputed
    np.testing.assert_allclose(cs.evaluate(c, {"w": np.array([0.5, 2.0])})["g"],
                               np.exp(1.0) * np.array([2.0, 0.5]), rtol=1e-15)


# ---------------------------------------------------------------- programs

def test_trace_program_assigns_loop_roles():
    def step(w, tokens, lr, wt):
        return {"w": w - lr * tokens * (1 - wt[0]) * (1 - wt[1]), "norm": cs.dot(w, w)}
    p = cs.trace_program(step, n_steps=9, state={"w": (2,)}, per_step={"tokens": (2,)},
                         static={"lr": ()}, weight="wt", examples_per_step=2)
    assert (p.n_steps, p.carry, p.per_step, p.weight) == (9, ("w",), ("tokens",), "wt")
    assert p.static_inputs == ("lr",)
    assert p.step.input_shapes == {"w": (2,), "tokens": (2,), "lr": (), "wt": (2,)}
    assert [o.name for o in p.step.outputs] == ["w", "norm"]


def test_one_hot_lookup_is_one_fixed_circuit():
    """The embedding row of a data-dependent token is dot(one_hot, column): every token gives the
    same circuit and the evaluated row is the table's row for that token."""
    vocab, width = 5, 3

    def embed(table, one_hot):
        return [cs.dot(one_hot, table[:, j]) for j in range(width)]
    c = cs.trace(embed, table=(vocab, width), one_hot=(vocab,))
    assert ops(c) == [Op.DOT] * width
    table = np.random.default_rng(1).normal(size=(vocab, width))
    for token in range(vocab):
        row = cs.evaluate(c, {"table": table, "one_hot": np.eye(vocab)[token]})["out"]
        np.testing.assert_array_equal(row, table[token])


def test_trace_program_errors():
    state = {"w": ()}
    with pytest.raises(TraceError, match="must return a dict"):
        cs.trace_program(lambda w: w, n_steps=1, state=state)
    with pytest.raises(TraceError, match=re.escape("did not return new values for state ['v']")):
        cs.trace_program(lambda w, v: {"w": w}, n_steps=1, state={"w": (), "v": ()})
    with pytest.raises(ValueError, match="weight name 'w' clashes"):
        cs.trace_program(lambda w: {"w": w}, n_steps=1, state=state, weight="w")


# ---------------------------------------------------------------- untraceable Python

def _if_on_value(x):
    if x > 0:  # <- if
        return x
    return -x


def _float_of_value(x):
    return float(x) * 2  # <- float


def _math_exp(x):
    return math.exp(x)  # <- math.exp


def _index_with_value(x):
    return [1.0, 2.0][x]  # <- index


def _string_operand(x):
    return x + "1"  # <- string


def _empty_dot(x):
    return cs.dot([], [])  # <- empty dot


def _uneven_dot(x):
    return cs.dot([x, x], [x])  # <- uneven dot


def _empty_vmax(x):
    return cs.vmax([])  # <- empty vmax


def _empty_vsum(x):
    return cs.vsum([])  # <- empty vsum


def _bad_exponent(x):
    return x ** "2"  # <- bad exponent


def _grad_of_a_number(x):
    return cs.grad(1.0, x)  # <- grad of a number


@pytest.mark.parametrize("fn, operation, marker", [
    (_if_on_value, "data-dependent control flow", "if"),
    (_float_of_value, "conversion of traced %0 (input) to a Python number", "float"),
    (_math_exp, "conversion of traced %0 (input) to a Python number", "math.exp"),
    (_index_with_value, "conversion of traced %0 (input) to a Python number", "index"),
    (_string_operand, "add", "string"),
    (_empty_dot, "dot", "empty dot"),
    (_uneven_dot, "dot", "uneven dot"),
    (_empty_vmax, "vmax", "empty vmax"),
    (_empty_vsum, "vsum", "empty vsum"),
    (_bad_exponent, "**", "bad exponent"),
    (_grad_of_a_number, "grad", "grad of a number"),
])
def test_untraceable_code_names_operation_and_line(fn, operation, marker):
    with pytest.raises(TraceError) as info:
        cs.trace(fn, x=())
    message = str(info.value)
    assert message.startswith(operation), message
    assert f"at {line_of(marker)}" in message, message


def test_if_error_names_the_comparison_and_suggests_select():
    with pytest.raises(TraceError, match=r"traced %2 \(gt\) is unknown while tracing; use select"):
        cs.trace(_if_on_value, x=())


def test_mixing_two_live_traces():
    def outer(x):
        def inner(y):
            return x + y  # <- mix
        cs.trace(inner, y=())
        return x
    message = f"add at {line_of('mix')}: mixes values of two different traces"
    with pytest.raises(TraceError, match=re.escape(message)):
        cs.trace(outer, x=())


def test_value_used_after_its_trace_ended():
    kept = {}

    def f(x):
        kept["x"] = x
        return x
    cs.trace(f, x=())
    finished = "uses a value of a finished trace"
    with pytest.raises(TraceError, match=re.escape(f"exp at {line_of('after end')}: {finished}")):
        kept["x"].exp()  # <- after end
    with pytest.raises(TraceError, match=re.escape(f"mul at {line_of('in new trace')}: {finished}")):
        cs.trace(lambda y: y * kept["x"], y=())  # <- in new trace


def test_operation_on_plain_numbers_outside_a_trace():
    with pytest.raises(TraceError, match="outside trace"):
        cs.stop_gradient(1.0)


def test_trace_error_is_a_type_error():
    assert issubclass(TraceError, TypeError)


def test_a_failed_trace_leaves_no_active_trace():
    with pytest.raises(TraceError):
        cs.trace(_if_on_value, x=())
    with pytest.raises(TraceError, match="outside trace"):
        cs.select(1.0, 2.0, 3.0)
