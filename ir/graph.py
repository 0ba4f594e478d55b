"""Views of a circuit as a graph: a networkx DiGraph for analysis, DOT text for looking at it."""

from __future__ import annotations

import networkx as nx

from .circuit import Circuit
from .text import _attrs_text, type_text


def to_networkx(circuit: Circuit) -> nx.DiGraph:
    """Nodes are node ids (with ``op``, ``attrs``, ``loc``, ``series``, and ``shape`` for arrays);
    edges go operand -> user.

    An operand used twice by one node (``mul %1 %1``) gives one edge whose ``positions`` lists
    both operand slots. Outputs are recorded on the graph as ``graph.graph["outputs"]``.
    """
    graph = nx.DiGraph(order=circuit.order,
                       outputs={o.name: o.nodes for o in circuit.outputs},
                       inputs=dict(circuit.inputs))
    for node, eqn in enumerate(circuit.eqns):
        data = dict(op=eqn.op.value, attrs=dict(eqn.attrs), loc=eqn.loc, series=eqn.series)
        if eqn.shape:  # 0-d nodes keep the scalar IR's node data
            data["shape"] = eqn.shape
        graph.add_node(node, **data)
        for position, arg in enumerate(eqn.args):
            if graph.has_edge(arg, node):
                graph.edges[arg, node]["positions"].append(position)
            else:
                graph.add_edge(arg, node, positions=[position])
    return graph


def to_dot(circuit: Circuit) -> str:
    """Graphviz DOT text: one box per node labelled ``%id op {attrs} : type`` (the type as in
    the text form: ``s`` for series, the shape of arrays), outputs as ellipses."""
    lines = ["digraph circuit {", "  rankdir=TB;", "  node [shape=box, fontname=monospace];"]
    for node, eqn in enumerate(circuit.eqns):
        label = f"%{node} {eqn.op.value}{_attrs_text(eqn)}{type_text(eqn)}"
        lines.append(f'  n{node} [label="{_escape(label)}"];')
        lines += [f"  n{arg} -> n{node};" for arg in eqn.args]
    for out in circuit.outputs:
        lines.append(f'  "out:{out.name}" [shape=ellipse, label="{_escape(out.name)}"];')
        lines += [f'  n{n} -> "out:{out.name}";' for n in out.nodes]
    lines.append("}")
    return "\n".join(lines) + "\n"


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')
