"""Structural checks for circuits and programs.

``verify`` raises :class:`VerifyError` on the first violation, naming the equation, its op and
the user's source line where it was traced. Every pass must return a circuit that verifies.
"""

from __future__ import annotations

import re
from math import prod

from .circuit import Circuit, Program
from .ops import NON_DIFFERENTIABLE, OP_INFO, VARIADIC, Op

#: names the text form can hold: non-empty, no whitespace, no brackets
_VALID_NAME = re.compile(r"[^\s\[\]]+")


class VerifyError(ValueError):
    """A circuit or program is malformed."""


def _fail(circuit: Circuit, node: int, message: str) -> VerifyError:
    return VerifyError(f"{circuit.describe(node)}: {message}")


def _check_attrs(circuit: Circuit, node: int, sizes: dict[str, int]) -> None:
    eqn = circuit.eqns[node]
    if not eqn.attrs and not OP_INFO[eqn.op].attrs:
        return
    names = [key for key, _ in eqn.attrs]
    if names != sorted(names) or len(set(names)) != len(names):
        raise _fail(circuit, node, "attributes must be unique and sorted")
    missing = [a for a in OP_INFO[eqn.op].attrs if a not in names]
    if missing:
        raise _fail(circuit, node, f"missing attribute(s) {missing}")
    unexpected = [a for a in names if a not in OP_INFO[eqn.op].attrs]
    if unexpected:
        raise _fail(circuit, node, f"unexpected attribute(s) {unexpected}")
    if eqn.op is Op.CONST and not isinstance(eqn.attr("value"), float):
        raise _fail(circuit, node, "const value must be a float")
    if eqn.op is Op.POW and not isinstance(eqn.attr("p"), float):
        raise _fail(circuit, node, "pow exponent p must be a float")
    if eqn.op is Op.INPUT:
        name, index = eqn.attr("name"), eqn.attr("index")
        if name not in sizes:
            raise _fail(circuit, node, f"reads undeclared input {name!r}")
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < sizes[name]:
            raise _fail(circuit, node, f"index {index!r} out of range for input {name!r} of shape "
                                       f"{circuit.input_shapes[name]}")


def verify(circuit: Circuit) -> Circuit:
    """Check SSA form, operand counts, attributes, input/output declarations and series typing.

    Returns the circuit so it can be used inline: ``verify(pass_(c))``.
    """
    if circuit.order < 0:
        raise VerifyError(f"circuit order must be >= 0, got {circuit.order}")
    for name, shape in circuit.inputs:
        _check_name("input", name, shape)
    for out in circuit.outputs:
        _check_name("output", out.name, out.shape)
    seen_inputs: set[tuple[str, int]] = set()
    input_series: dict[str, bool] = {}
    sizes = {name: prod(shape) for name, shape in circuit.inputs}
    series = [eqn.series for eqn in circuit.eqns]
    for node, eqn in enumerate(circuit.eqns):
        if not isinstance(eqn.op, Op):
            raise VerifyError(f"node %{node}: unknown op {eqn.op!r}")
        arity = OP_INFO[eqn.op].arity
        if arity == VARIADIC:
            if not eqn.args:
                raise _fail(circuit, node, "needs at least one operand")
            if eqn.op is Op.DOT and len(eqn.args) % 2:
                raise _fail(circuit, node, f"dot needs an even number of operands, got {len(eqn.args)}")
        elif len(eqn.args) != arity:
            raise _fail(circuit, node, f"expects {arity} operand(s), got {len(eqn.args)}")
        for arg in eqn.args:
            if not isinstance(arg, int) or arg < 0:
                raise _fail(circuit, node, f"operand {arg!r} is not a node id")
            if arg >= node:
                raise _fail(circuit, node, f"uses %{arg} before it is defined")
        _check_attrs(circuit, node, sizes)
        if eqn.op is Op.INPUT:
            key = (eqn.attr("name"), eqn.attr("index"))
            if key in seen_inputs:
                raise _fail(circuit, node, f"input element {key} read by two nodes")
            seen_inputs.add(key)
            if input_series.setdefault(key[0], eqn.series) != eqn.series:
                raise _fail(circuit, node, f"input {key[0]!r} has both series and real elements")
        if eqn.series and circuit.order == 0:
            raise _fail(circuit, node, "series value in an order-0 (real) circuit")
        if eqn.series and eqn.op is Op.CONST:
            raise _fail(circuit, node, "constants are real, never series")
        if circuit.order and not eqn.series and eqn.op not in NON_DIFFERENTIABLE and any(
                series[a] for a in eqn.args):
            raise _fail(circuit, node, "reads a series operand but is typed real")
    names = [name for name, _ in circuit.inputs]
    if len(set(names)) != len(names):
        raise VerifyError(f"duplicate input names in {names}")
    out_names = [out.name for out in circuit.outputs]
    if len(set(out_names)) != len(out_names):
        raise VerifyError(f"duplicate output names in {out_names}")
    for out in circuit.outputs:
        if prod(out.shape) != len(out.nodes):
            raise VerifyError(f"output {out.name!r}: shape {out.shape} does not hold {len(out.nodes)} nodes")
        for n in out.nodes:
            if not 0 <= n < len(circuit.eqns):
                raise VerifyError(f"output {out.name!r} refers to missing node %{n}")
    return circuit


def _check_name(kind: str, name: object, shape: object) -> None:
    if not isinstance(name, str) or not _VALID_NAME.fullmatch(name):
        raise VerifyError(f"{kind} name {name!r} must be a non-empty string without whitespace "
                          "or brackets")
    if not isinstance(shape, tuple) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise VerifyError(f"{kind} {name!r}: shape {shape!r} must be a tuple of non-negative ints")


def verify_program(program: Program) -> Program:
    """Check the step circuit and that the loop's carry, per-step and weight inputs are consistent."""
    step = verify(program.step)
    if program.n_steps < 0:
        raise VerifyError(f"program n_steps must be >= 0, got {program.n_steps}")
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
    carried_series = {name for name in program.carry
                      if any(step.eqns[n].series for n in step.output(name).nodes)}
    for (name, _), node in step.input_nodes().items():
        if name in carried_series and not step.eqns[node].series:
            raise VerifyError(f"carried state {name!r} is a series at the step output but real at "
                              f"its input (%{node})")
    return program
