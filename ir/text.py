"""Textual form of circuits and programs; ``parse(print_circuit(c)) == c`` for every circuit.

Grammar (one item per line, ``#`` starts a comment line)::

    circuit order=K
    input NAME [D0,D1,...]            (NAME: no whitespace or brackets; verify() checks this)
    %ID = OP [%ARG ...] [{KEY=VALUE, ...}] [: TYPE] [@ LOCATION]
    output NAME [D0,...] = %ID %ID ...

``TYPE`` says what the node holds: nothing for a real 0-d value (so scalar circuits print as
they always have), ``s`` for a 0-d series, ``[D0,D1]`` for a real array of that shape and
``s [D0,D1]`` for a series array, e.g. ``%3 = add %1 %2 : [4,16]`` and
``%7 = exp %6 : s [4,16]``. Attribute values are Python literals (``repr``), so floats
round-trip exactly and tuples (axes, perm, shape, dot_general's ``contract``/``batch`` pairs,
array const values) read back as tuples; ``@`` is followed by the source location of the traced
line. A program is

    program n_steps=N weight=NAME|-
    carry NAME ...
    per_step NAME ...
    <circuit text>

Parsing is syntax plus one consistency check: where a node's shape can be inferred from its
operands (``ir.shapes.infer_shape``), the printed shape must be that shape, else
:class:`ParseError` names the line. Everything else (operands used before they are defined,
shapes that do not fit) is left to ``verify``, which names the node and its traced line.
"""

from __future__ import annotations

import ast
import re

from .circuit import Circuit, Eqn, Output, Program
from .ops import ELEMENTWISE_OPS, OP_BY_NAME, OP_INFO, VARIADIC
from .shapes import Shape, ShapeError, infer_shape


class ParseError(ValueError):
    """Malformed circuit text; the message names the line."""


def _shape_text(shape: tuple[int, ...]) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


def _attrs_text(eqn: Eqn) -> str:
    if not eqn.attrs:
        return ""
    return " {" + ", ".join(f"{k}={v!r}" for k, v in eqn.attrs) + "}"


def type_text(eqn: Eqn) -> str:
    """`` : s``, `` : [4,16]``, `` : s [4,16]`` or ``""`` (a real 0-d node): the node's kind and shape."""
    parts = (["s"] if eqn.series else []) + ([_shape_text(eqn.shape)] if eqn.shape else [])
    return " : " + " ".join(parts) if parts else ""


def print_eqn(node: int, eqn: Eqn) -> str:
    args = "".join(f" %{a}" for a in eqn.args)
    loc = f" @ {eqn.loc}" if eqn.loc else ""
    return f"%{node} = {eqn.op.value}{args}{_attrs_text(eqn)}{type_text(eqn)}{loc}"


def print_circuit(circuit: Circuit) -> str:
    lines = [f"circuit order={circuit.order}"]
    lines += [f"input {name} {_shape_text(shape)}" for name, shape in circuit.inputs]
    lines += [print_eqn(i, e) for i, e in enumerate(circuit.eqns)]
    lines += [f"output {o.name} {_shape_text(o.shape)} =" + "".join(f" %{n}" for n in o.nodes)
              for o in circuit.outputs]
    return "\n".join(lines) + "\n"


def print_program(program: Program) -> str:
    head = [f"program n_steps={program.n_steps} weight={program.weight or '-'}",
            "carry" + "".join(f" {n}" for n in program.carry),
            "per_step" + "".join(f" {n}" for n in program.per_step)]
    return "\n".join(head) + "\n" + print_circuit(program.step)


#: input/output names: anything without whitespace or brackets (grad names outputs ``dloss/dw``)
_NAME = r"[^\s\[\]]+"
_DIMS = r"(?:\d+(?:,\d+)*)?"
_EQN = re.compile(
    r"^%(?P<id>\d+) = (?P<op>\w+)(?P<args>(?: %\d+)*)(?: \{(?P<attrs>.*?)\})?"
    rf"(?: : (?:(?P<series>s)|(?P<sarray>s )?\[(?P<shape>{_DIMS})\]))?"
    r"(?: @ (?P<loc>.+))?$")
_INPUT = re.compile(rf"^input (?P<name>{_NAME}) \[(?P<shape>{_DIMS})\]$")
_OUTPUT = re.compile(rf"^output (?P<name>{_NAME}) \[(?P<shape>{_DIMS})\] =(?P<nodes>(?: %\d+)*)$")
_KEY = re.compile(r"(\w+)=")


def _shape(text: str | None) -> tuple[int, ...]:
    return tuple(int(d) for d in text.split(",")) if text else ()


def _split_attrs(text: str) -> list[str]:
    """Split ``k=v, k=v`` at the commas outside brackets and quotes (values may be tuples)."""
    pieces, depth, quote, start, i = [], 0, None, 0, 0
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == "\\":
                i += 1
            elif ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0 and text.startswith(", ", i):
            pieces.append(text[start:i])
            start = i + 2
            i += 1
        i += 1
    pieces.append(text[start:])
    return pieces


class _NonFinite(ast.NodeTransformer):
    """repr() writes non-finite floats as the bare words inf and nan; read them as floats."""

    def visit_Name(self, node: ast.Name) -> ast.AST:
        if node.id in ("inf", "nan"):
            return ast.copy_location(ast.Constant(float(node.id)), node)
        return node


def _literal(raw: str):
    tree = _NonFinite().visit(ast.parse(raw.strip(), mode="eval"))
    return ast.literal_eval(tree.body)


def _parse_attrs(text: str, lineno: int) -> tuple:
    pairs = []
    for piece in _split_attrs(text):
        m = _KEY.match(piece)
        if not m:
            raise ParseError(f"line {lineno}: cannot read attributes {text!r}")
        raw = piece[m.end():]
        try:
            value = _literal(raw)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            raise ParseError(f"line {lineno}: bad attribute value {raw!r}") from None
        pairs.append((m.group(1), value))
    return tuple(pairs)


def parse_circuit(text: str) -> Circuit:
    """Parse the text written by :func:`print_circuit`."""
    return _parse_circuit_lines(_lines(text, "circuit"))


def _lines(text: str, what: str) -> list[tuple[int, str]]:
    if not isinstance(text, str):
        raise ParseError(f"{what} text must be a str, got {type(text).__name__}")
    return [(i + 1, line.rstrip()) for i, line in enumerate(text.splitlines())
            if line.strip() and not line.lstrip().startswith("#")]


def _parse_eqn(me: re.Match, lineno: int) -> Eqn:
    op = OP_BY_NAME.get(me.group("op"))
    if op is None:
        raise ParseError(f"line {lineno}: unknown op {me.group('op')!r}")
    args = tuple(int(a) for a in re.findall(r"%(\d+)", me.group("args")))
    attrs = _parse_attrs(me.group("attrs"), lineno) if me.group("attrs") else ()
    series = bool(me.group("series") or me.group("sarray"))
    return Eqn(op, args, attrs, me.group("loc"), series, _shape(me.group("shape")))


def _parse_circuit_lines(lines: list[tuple[int, str]]) -> Circuit:
    if not lines or not lines[0][1].startswith("circuit"):
        raise ParseError("circuit text must start with 'circuit order=K'")
    lineno, head = lines[0]
    m = re.fullmatch(r"circuit order=(\d+)", head)
    if not m:
        raise ParseError(f"line {lineno}: expected 'circuit order=K', got {head!r}")
    inputs, eqns, eqn_lines, outputs = [], [], [], []
    for lineno, line in lines[1:]:
        if (mi := _INPUT.match(line)):
            inputs.append((mi.group("name"), _shape(mi.group("shape"))))
        elif (mo := _OUTPUT.match(line)):
            nodes = tuple(int(a) for a in re.findall(r"%(\d+)", mo.group("nodes")))
            outputs.append(Output(mo.group("name"), _shape(mo.group("shape")), nodes))
        elif (me := _EQN.match(line)):
            if int(me.group("id")) != len(eqns):
                raise ParseError(f"line {lineno}: expected node %{len(eqns)}, got %{me.group('id')}")
            eqns.append(_parse_eqn(me, lineno))
            eqn_lines.append(lineno)
        else:
            raise ParseError(f"line {lineno}: cannot parse {line!r}")
    _check_printed_shapes(eqns, eqn_lines, dict(inputs))
    return Circuit(tuple(eqns), tuple(inputs), tuple(outputs), int(m.group(1)))


def _inferable_shape(eqns: list[Eqn], node: int, inputs: dict[str, Shape]) -> Shape | None:
    """The shape ``eqns[node]`` must have, or None where verify() is the one to complain."""
    eqn = eqns[node]
    arity = OP_INFO[eqn.op].arity
    if (arity != VARIADIC and len(eqn.args) != arity) or any(a >= node for a in eqn.args):
        return None
    shapes = [eqns[a].shape for a in eqn.args]
    if eqn.op in ELEMENTWISE_OPS and eqn.args and not any(shapes):
        return ()  # the scalar fast path: parsing 10^5 scalar gates
    try:
        return infer_shape(eqn.op, eqn.attrs, shapes, inputs)
    except (ShapeError, LookupError, TypeError, ValueError):
        return None


def _check_printed_shapes(eqns: list[Eqn], eqn_lines: list[int], inputs: dict[str, Shape]) -> None:
    for node, eqn in enumerate(eqns):
        want = _inferable_shape(eqns, node, inputs)
        if want is not None and want != eqn.shape:
            raise ParseError(f"line {eqn_lines[node]}: %{node} is printed with shape "
                             f"{_shape_text(eqn.shape)} but its operands give {_shape_text(want)}")


def parse_program(text: str) -> Program:
    """Parse the text written by :func:`print_program`."""
    lines = _lines(text, "program")
    if len(lines) < 3:
        raise ParseError("program text needs 'program', 'carry' and 'per_step' lines")
    m = re.fullmatch(rf"program n_steps=(\d+) weight=({_NAME}|-)", lines[0][1])
    if not m:
        raise ParseError(f"line {lines[0][0]}: expected 'program n_steps=N weight=NAME', got {lines[0][1]!r}")
    carry = lines[1][1].split()
    per_step = lines[2][1].split()
    if carry[:1] != ["carry"] or per_step[:1] != ["per_step"]:
        raise ParseError("program header must be followed by 'carry ...' and 'per_step ...' lines")
    weight = None if m.group(2) == "-" else m.group(2)
    return Program(_parse_circuit_lines(lines[3:]), int(m.group(1)), tuple(carry[1:]),
                   tuple(per_step[1:]), weight)
