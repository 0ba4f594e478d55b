"""Textual form of circuits and programs; ``parse(print_circuit(c)) == c`` for every circuit.

Grammar (one item per line, ``#`` starts a comment line)::

    circuit order=K
    input NAME [D0,D1,...]            (NAME: no whitespace or brackets; verify() checks this)
    %ID = OP [%ARG ...] [{KEY=VALUE, ...}] [: s] [@ LOCATION]
    output NAME [D0,...] = %ID %ID ...

Attribute values are Python literals (``repr``), so floats round-trip exactly; ``: s`` marks a
series-typed node; ``@`` is followed by the source location of the traced line. A program is

    program n_steps=N weight=NAME|-
    carry NAME ...
    per_step NAME ...
    <circuit text>
"""

from __future__ import annotations

import ast
import re

from .circuit import Circuit, Eqn, Output, Program
from .ops import OP_BY_NAME


class ParseError(ValueError):
    """Malformed circuit text; the message names the line."""


def _shape_text(shape: tuple[int, ...]) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


def _attrs_text(eqn: Eqn) -> str:
    if not eqn.attrs:
        return ""
    return " {" + ", ".join(f"{k}={v!r}" for k, v in eqn.attrs) + "}"


def print_eqn(node: int, eqn: Eqn) -> str:
    args = "".join(f" %{a}" for a in eqn.args)
    series = " : s" if eqn.series else ""
    loc = f" @ {eqn.loc}" if eqn.loc else ""
    return f"%{node} = {eqn.op.value}{args}{_attrs_text(eqn)}{series}{loc}"


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
_EQN = re.compile(
    r"^%(?P<id>\d+) = (?P<op>\w+)(?P<args>(?: %\d+)*)(?: \{(?P<attrs>.*?)\})?(?P<series> : s)?"
    r"(?: @ (?P<loc>.+))?$")
_INPUT = re.compile(rf"^input (?P<name>{_NAME}) \[(?P<shape>[\d,]*)\]$")
_OUTPUT = re.compile(rf"^output (?P<name>{_NAME}) \[(?P<shape>[\d,]*)\] =(?P<nodes>(?: %\d+)*)$")
_ATTR = re.compile(r"""(\w+)=('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|[^,]+)(?:, |$)""")


def _shape(text: str) -> tuple[int, ...]:
    return tuple(int(d) for d in text.split(",") if d)


def _parse_attrs(text: str, lineno: int) -> tuple:
    pairs = []
    pos = 0
    while pos < len(text):
        m = _ATTR.match(text, pos)
        if not m:
            raise ParseError(f"line {lineno}: cannot read attributes {text!r}")
        raw = m.group(2)
        try:
            # repr() writes non-finite floats as bare words, which literal_eval does not read
            value = float(raw) if raw in ("inf", "-inf", "nan") else ast.literal_eval(raw)
        except (ValueError, SyntaxError) as exc:
            raise ParseError(f"line {lineno}: bad attribute value {m.group(2)!r}") from exc
        pairs.append((m.group(1), value))
        pos = m.end()
    return tuple(pairs)


def parse_circuit(text: str) -> Circuit:
    """Parse the text written by :func:`print_circuit`."""
    return _parse_circuit_lines(_lines(text))


def _lines(text: str) -> list[tuple[int, str]]:
    return [(i + 1, line.rstrip()) for i, line in enumerate(text.splitlines())
            if line.strip() and not line.lstrip().startswith("#")]


def _parse_circuit_lines(lines: list[tuple[int, str]]) -> Circuit:
    if not lines or not lines[0][1].startswith("circuit"):
        raise ParseError("circuit text must start with 'circuit order=K'")
    lineno, head = lines[0]
    m = re.fullmatch(r"circuit order=(\d+)", head)
    if not m:
        raise ParseError(f"line {lineno}: expected 'circuit order=K', got {head!r}")
    order = int(m.group(1))
    inputs, eqns, outputs = [], [], []
    for lineno, line in lines[1:]:
        if (mi := _INPUT.match(line)):
            inputs.append((mi.group("name"), _shape(mi.group("shape"))))
        elif (mo := _OUTPUT.match(line)):
            nodes = tuple(int(a) for a in re.findall(r"%(\d+)", mo.group("nodes")))
            outputs.append(Output(mo.group("name"), _shape(mo.group("shape")), nodes))
        elif (me := _EQN.match(line)):
            if int(me.group("id")) != len(eqns):
                raise ParseError(f"line {lineno}: expected node %{len(eqns)}, got %{me.group('id')}")
            op = OP_BY_NAME.get(me.group("op"))
            if op is None:
                raise ParseError(f"line {lineno}: unknown op {me.group('op')!r}")
            args = tuple(int(a) for a in re.findall(r"%(\d+)", me.group("args")))
            attrs = _parse_attrs(me.group("attrs"), lineno) if me.group("attrs") else ()
            eqns.append(Eqn(op, args, attrs, me.group("loc"), bool(me.group("series"))))
        else:
            raise ParseError(f"line {lineno}: cannot parse {line!r}")
    return Circuit(tuple(eqns), tuple(inputs), tuple(outputs), order)


def parse_program(text: str) -> Program:
    """Parse the text written by :func:`print_program`."""
    lines = _lines(text)
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
