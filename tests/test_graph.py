"""to_networkx and to_dot show exactly the circuit: every node with its op, attributes, source line
and series flag, every operand edge (with its operand slots), the outputs."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest
from hypothesis import given, settings
from strategies import KINK_OPS, SMOOTH_OPS, random_circuits

import circuitsketch as cs
from circuitsketch.ir import Builder, Op, make_attrs, to_dot, to_networkx


def small_circuit():
    b = Builder()
    x = b.input("x", (2,), loc="model.py:1")
    square = b.add(Op.MUL, (x[0], x[0]), loc="model.py:2")
    root = b.add(Op.POW, (square,), make_attrs(p=0.5), loc="model.py:3")
    b.output("y", [b.add(Op.DOT, (x[0], x[1], root, x[1]), loc="model.py:4")], ())
    b.output("pair", [root, x[1]])
    return b.build()


def test_networkx_nodes_carry_the_equations():
    graph = to_networkx(small_circuit())
    assert list(graph.nodes) == [0, 1, 2, 3, 4]
    assert graph.nodes[0] == {"op": "input", "attrs": {"index": 0, "name": "x"}, "loc": "model.py:1",
                              "series": False}
    assert graph.nodes[3] == {"op": "pow", "attrs": {"p": 0.5}, "loc": "model.py:3", "series": False}
    assert [graph.nodes[n]["op"] for n in graph] == ["input", "input", "mul", "pow", "dot"]


def test_networkx_edges_go_operand_to_user_with_slots():
    graph = to_networkx(small_circuit())
    assert sorted(graph.edges) == [(0, 2), (0, 4), (1, 4), (2, 3), (3, 4)]
    assert graph.edges[0, 2]["positions"] == [0, 1]  # mul %0 %0: one edge, both slots
    assert graph.edges[1, 4]["positions"] == [1, 3]  # dot %0 %1 %3 %1
    assert graph.edges[3, 4]["positions"] == [2]


def test_networkx_graph_attributes():
    graph = to_networkx(small_circuit())
    assert graph.graph == {"order": 0, "outputs": {"y": (4,), "pair": (3, 1)}, "inputs": {"x": (2,)}}


@settings(max_examples=60, deadline=None, derandomize=True)
@given(random_circuits(ops=SMOOTH_OPS + KINK_OPS, max_nodes=16))
def test_networkx_is_a_dag_in_node_order_that_rebuilds_the_operands(circuit):
    graph = to_networkx(circuit)
    assert nx.is_directed_acyclic_graph(graph)
    assert graph.number_of_nodes() == len(circuit)
    for node, eqn in enumerate(circuit.eqns):
        slots = [None] * len(eqn.args)
        for arg, _, data in graph.in_edges(node, data=True):
            assert arg < node
            for position in data["positions"]:
                slots[position] = arg
        assert tuple(slots) == eqn.args


def test_networkx_ancestors_answer_what_an_output_depends_on():
    circuit = cs.trace(lambda w, x: {"a": (w[0] * x[0]).exp(), "b": x[1].tanh()}, w=(2,), x=(2,))
    graph = to_networkx(circuit)
    (a,) = circuit.output("a").nodes
    inputs = {graph.nodes[n]["attrs"]["name"] + str(graph.nodes[n]["attrs"]["index"])
              for n in nx.ancestors(graph, a) if graph.nodes[n]["op"] == "input"}
    assert inputs == {"w0", "x0"}


def test_series_flag_is_exported():
    lowered = cs.taylor(cs.trace(lambda x, w: (x * w).exp() + w, x=(), w=()), order=2, seeds={"x"})
    graph = to_networkx(lowered)
    assert graph.graph["order"] == 2
    assert [graph.nodes[n]["series"] for n in graph] == [e.series for e in lowered.eqns]
    assert "%2 mul : s" in to_dot(lowered)


def test_dot_text():
    text = to_dot(small_circuit())
    assert text.startswith("digraph circuit {\n")
    assert text.endswith("}\n")
    for line in ['  n0 [label="%0 input {index=0, name=\'x\'}"];',
                 '  n3 [label="%3 pow {p=0.5}"];',
                 '  n4 [label="%4 dot"];',
                 "  n0 -> n2;",
                 "  n3 -> n4;",
                 '  "out:y" [shape=ellipse, label="y"];',
                 '  n4 -> "out:y";',
                 '  n3 -> "out:pair";',
                 '  n1 -> "out:pair";']:
        assert line in text.splitlines(), line
    assert text.count(" -> n2;") == 2  # mul %0 %0 draws both operand edges
    assert text.count("->") == 2 + 1 + 4 + 3  # operand edges + output edges


def test_dot_escapes_quotes():
    b = Builder()
    x = b.input('say"hi', ())
    b.output("y", x, ())
    text = to_dot(b.build())
    assert '''n0 [label="%0 input {index=0, name='say\\"hi'}"];''' in text


@pytest.mark.parametrize("circuit_fn", [small_circuit,
                                        lambda: cs.trace(lambda x: cs.vsum(np.exp(x)), x=(3,))])
def test_dot_has_one_box_per_node(circuit_fn):
    circuit = circuit_fn()
    text = to_dot(circuit)
    boxes = [line for line in text.splitlines() if line.startswith("  n") and "[label=" in line]
    assert len(boxes) == len(circuit)
