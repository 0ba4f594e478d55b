"""Structural checks for circuits and programs.

``verify`` raises :class:`VerifyError` on the first violation, naming the node as
``circuit.describe`` does (id, op, shape and the user's source line where it was traced). It
checks SSA form and operand counts, attributes (unique, sorted, the op's own, of the right type),
input declarations (an input is read either whole, by one node, or element by element, never
both), every node's shape against ``ir.shapes.infer_shape`` (so broadcasting, axes, contraction
pairs and slices are re-checked on parsed circuits), series typing, that the index operands of
take/scatter_add are real (with constant indices in range), and that each output is either one
node of its shape or ``prod(shape)`` 0-d nodes. Every pass must return a circuit that verifies.
"""

from __future__ import annotations

import re
from math import prod

from .circuit import Circuit, Program
from .ops import (ELEMENTWISE_OPS, INDEX_OPERANDS, NON_DIFFERENTIABLE, OP_INFO, VARIADIC, Op)
from .shapes import ShapeError, infer_shape

#: names the text form can hold: non-empty, no whitespace, no brackets
_VALID_NAME = re.compile(r"[^\s\[\]]+")


class VerifyError(ValueError):
    """A circuit or program is malformed."""


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_shape(shape: object) -> bool:
    return isinstance(shape, tuple) and all(_is_int(d) and d >= 0 for d in shape)


def _fail(circuit: Circuit, node: int, message: str) -> VerifyError:
    eqn = circuit.eqns[node]
    if not _is_shape(eqn.shape) or not isinstance(eqn.op, Op):
        # describe() prints the shape; a malformed one is named here instead
        return VerifyError(f"node %{node} = {getattr(eqn.op, 'value', eqn.op)!r}: {message}")
    return VerifyError(f"{circuit.describe(node)}: {message}")


def _check_attrs(circuit: Circuit, node: int) -> None:
    eqn = circuit.eqns[node]
    info = OP_INFO[eqn.op]
    if not eqn.attrs and not info.attrs:
        return
    if not all(isinstance(pair, tuple) and len(pair) == 2 for pair in eqn.attrs):
        raise _fail(circuit, node, "attributes must be (name, value) pairs")
    names = [key for key, _ in eqn.attrs]
    if not all(isinstance(n, str) for n in names) or names != sorted(names) or \
            len(set(names)) != len(names):
        raise _fail(circuit, node, "attributes must be unique and sorted")
    missing = [a for a in info.attrs if a not in names]
    if missing:
        raise _fail(circuit, node, f"missing attribute(s) {missing}")
    unexpected = [a for a in names if a not in info.attrs and a not in info.optional_attrs]
    if unexpected:
        raise _fail(circuit, node, f"unexpected attribute(s) {unexpected}")
    if eqn.op is Op.CONST and "shape" not in names and not isinstance(eqn.attr("value"), float):
        raise _fail(circuit, node, "const value must be a float")
    if eqn.op is Op.POW and not isinstance(eqn.attr("p"), float):
        raise _fail(circuit, node, "pow exponent p must be a float")
    if eqn.op is Op.INPUT and not isinstance(eqn.attr("name"), str):
        raise _fail(circuit, node, f"input name {eqn.attr('name')!r} must be a str")


def _check_operands(circuit: Circuit, node: int) -> None:
    eqn = circuit.eqns[node]
    arity = OP_INFO[eqn.op].arity
    if not isinstance(eqn.args, tuple):
        raise _fail(circuit, node, f"operands {eqn.args!r} must be a tuple of node ids")
    if arity == VARIADIC:
        if not eqn.args:
            raise _fail(circuit, node, "needs at least one operand")
        if eqn.op is Op.DOT and len(eqn.args) % 2:
            raise _fail(circuit, node, f"dot needs an even number of operands, got {len(eqn.args)}")
    elif len(eqn.args) != arity:
        raise _fail(circuit, node, f"expects {arity} operand(s), got {len(eqn.args)}")
    for arg in eqn.args:
        if not _is_int(arg) or arg < 0:
            raise _fail(circuit, node, f"operand {arg!r} is not a node id")
        if arg >= node:
            raise _fail(circuit, node, f"uses %{arg} before it is defined")


def _check_shape(circuit: Circuit, node: int) -> None:
    eqn, eqns = circuit.eqns[node], circuit.eqns
    if not _is_shape(eqn.shape):
        raise _fail(circuit, node, f"shape {eqn.shape!r} must be a tuple of non-negative ints")
    shapes = [eqns[a].shape for a in eqn.args]
    if eqn.op in ELEMENTWISE_OPS and not any(shapes):
        want = ()  # the scalar fast path: verifying 10^5 scalar gates
    else:
        try:
            want = infer_shape(eqn.op, eqn.attrs, shapes, circuit.input_shapes)
        except ShapeError as exc:
            raise _fail(circuit, node, str(exc)) from None
    if want != eqn.shape:
        raise _fail(circuit, node, f"has shape {eqn.shape} but its operands give {want}")


def _check_indices(circuit: Circuit, node: int) -> None:
    """Index operands of take/scatter_add: real, and in range when they are constants."""
    eqn, eqns = circuit.eqns[node], circuit.eqns
    for position in INDEX_OPERANDS.get(eqn.op, ()):
        index = eqns[eqn.args[position]]
        if index.series:
            raise _fail(circuit, node, f"index operand %{eqn.args[position]} is a series; "
                                       "indices must be real")
        if index.op is not Op.CONST:
            continue
        value = index.attr("value")
        values = value if isinstance(value, tuple) else (value,)
        axis = eqn.attr("axis")
        size = eqn.attr("size") if eqn.op is Op.SCATTER_ADD else eqns[eqn.args[0]].shape[axis]
        bad = [v for v in values if not (float(v).is_integer() and 0 <= v < size)]
        if bad:
            raise _fail(circuit, node, f"index {bad[0]!r} is not an integer in [0, {size}) "
                                       f"(axis {axis})")


def _check_input(circuit: Circuit, node: int, reads: dict[str, set], input_series: dict) -> None:
    """An input is read whole by one node, or element by element (each element once)."""
    eqn = circuit.eqns[node]
    name = eqn.attr("name")
    index = dict(eqn.attrs).get("index")
    seen = reads.setdefault(name, set())
    if (index is None and seen) or (index is not None and None in seen):
        raise _fail(circuit, node, f"input {name!r} is read both whole and by element")
    if index in seen:
        raise _fail(circuit, node, f"input element {(name, index)} read by two nodes")
    seen.add(index)
    if input_series.setdefault(name, eqn.series) != eqn.series:
        raise _fail(circuit, node, f"input {name!r} has both series and real elements")


def _check_series(circuit: Circuit, node: int) -> None:
    eqn, eqns = circuit.eqns[node], circuit.eqns
    if eqn.series and circuit.order == 0:
        raise _fail(circuit, node, "series value in an order-0 (real) circuit")
    if eqn.series and eqn.op is Op.CONST:
        raise _fail(circuit, node, "constants are real, never series")
    if circuit.order and not eqn.series and eqn.op not in NON_DIFFERENTIABLE:
        index_positions = INDEX_OPERANDS.get(eqn.op, ())
        if any(eqns[a].series for i, a in enumerate(eqn.args) if i not in index_positions):
            raise _fail(circuit, node, "reads a series operand but is typed real")


def _check_node(circuit: Circuit, node: int, reads: dict[str, set], input_series: dict) -> None:
    eqn = circuit.eqns[node]
    if not isinstance(eqn.op, Op):
        raise VerifyError(f"node %{node}: unknown op {eqn.op!r}")
    _check_operands(circuit, node)
    _check_attrs(circuit, node)
    if eqn.op is Op.INPUT and eqn.attr("name") not in circuit.input_shapes:
        raise _fail(circuit, node, f"reads undeclared input {eqn.attr('name')!r}")
    _check_shape(circuit, node)
    if eqn.op is Op.INPUT:
        _check_input(circuit, node, reads, input_series)
    _check_indices(circuit, node)
    _check_series(circuit, node)


def _check_output(circuit: Circuit, out) -> None:
    for n in out.nodes:
        if not _is_int(n) or not 0 <= n < len(circuit.eqns):
            raise VerifyError(f"output {out.name!r} refers to missing node %{n}")
    shapes = [circuit.eqns[n].shape for n in out.nodes]
    if len(out.nodes) == 1 and shapes[0] == out.shape:
        return  # one node holding the whole value
    if not out.nodes:
        raise VerifyError(f"output {out.name!r} of shape {out.shape} has no nodes")
    if prod(out.shape) != len(out.nodes):
        if len(out.nodes) == 1:
            raise VerifyError(f"output {out.name!r} of shape {out.shape} cannot be "
                              f"{circuit.describe(out.nodes[0])}, which has shape {shapes[0]}")
        raise VerifyError(f"output {out.name!r}: shape {out.shape} does not hold {len(out.nodes)} nodes")
    bad = [n for n, s in zip(out.nodes, shapes) if s != ()]
    if bad:
        raise VerifyError(f"output {out.name!r} of shape {out.shape} lists elements, but "
                          f"{circuit.describe(bad[0])} is not 0-d")


def verify(circuit: Circuit) -> Circuit:
    """Check SSA form, operands, attributes, shapes, inputs, outputs and series typing.

    Returns the circuit so it can be used inline: ``verify(pass_(c))``.
    """
    if not _is_int(circuit.order):
        raise VerifyError(f"circuit order must be an int, got {circuit.order!r}")
    if circuit.order < 0:
        raise VerifyError(f"circuit order must be >= 0, got {circuit.order}")
    for name, shape in circuit.inputs:
        _check_name("input", name, shape)
    for out in circuit.outputs:
        _check_name("output", out.name, out.shape)
    names = [name for name, _ in circuit.inputs]
    if len(set(names)) != len(names):
        raise VerifyError(f"duplicate input names in {names}")
    reads: dict[str, set] = {}
    input_series: dict[str, bool] = {}
    for node in range(len(circuit.eqns)):
        _check_node(circuit, node, reads, input_series)
    out_names = [out.name for out in circuit.outputs]
    if len(set(out_names)) != len(out_names):
        raise VerifyError(f"duplicate output names in {out_names}")
    for out in circuit.outputs:
        _check_output(circuit, out)
    return circuit


def _check_name(kind: str, name: object, shape: object) -> None:
    if not isinstance(name, str) or not _VALID_NAME.fullmatch(name):
        raise VerifyError(f"{kind} name {name!r} must be a non-empty string without whitespace "
                          "or brackets")
    if not _is_shape(shape):
        raise VerifyError(f"{kind} {name!r}: shape {shape!r} must be a tuple of non-negative ints")


def _check_loop_inputs(program: Program, step: Circuit) -> None:
    shapes = step.input_shapes
    out_shapes = {out.name: out.shape for out in step.outputs}
    for name in program.carry:
        if name not in shapes:
            raise VerifyError(f"carried state {name!r} is not an input of the step circuit")
        if name not in out_shapes:
            raise VerifyError(f"carried state {name!r} is not an output of the step circuit")
        if shapes[name] != out_shapes[name]:
            raise VerifyError(f"carried state {name!r}: input shape {shapes[name]} != output shape "
                              f"{out_shapes[name]}")
    for name in program.per_step:
        if name not in shapes:
            raise VerifyError(f"per-step data {name!r} is not an input of the step circuit")
    roles = list(program.carry) + list(program.per_step) + ([program.weight] if program.weight else [])
    if len(set(roles)) != len(roles):
        raise VerifyError(f"an input has two loop roles: {roles}")
    if program.weight is not None:
        if program.weight not in shapes:
            raise VerifyError(f"weight input {program.weight!r} is not an input of the step circuit")
        if len(shapes[program.weight]) != 1:
            raise VerifyError(f"weight input {program.weight!r} must be a vector, has shape "
                              f"{shapes[program.weight]}")


def verify_program(program: Program) -> Program:
    """Check the step circuit and that the loop's carry, per-step and weight inputs are consistent."""
    step = verify(program.step)
    if not _is_int(program.n_steps):
        raise VerifyError(f"program n_steps must be an int, got {program.n_steps!r}")
    if program.n_steps < 0:
        raise VerifyError(f"program n_steps must be >= 0, got {program.n_steps}")
    _check_loop_inputs(program, step)
    carried_series = {name for name in program.carry
                      if any(step.eqns[n].series for n in step.output(name).nodes)}
    for node, eqn in enumerate(step.eqns):
        if eqn.op is Op.INPUT and eqn.attr("name") in carried_series and not eqn.series:
            raise VerifyError(f"carried state {eqn.attr('name')!r} is a series at the step output "
                              f"but real at its input (%{node})")
    return program
