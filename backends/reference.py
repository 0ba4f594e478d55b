"""The reference interpreter: numpy, float64 and complex128. It *defines* the semantics.

``REAL_IMPL`` is the one table saying what each op means on real values; a node reading any
series operand is evaluated by the Taylor rule table (``passes.taylor.SERIES_RULES``) instead.
Every other backend is tested against this module.

Batching: every value carries a trailing batch axis (retrainings, or Taylor directions).
Internally a real value is a float64 array ``[B]`` and a series a complex128 array
``[k+1, B]``; ``B`` may be 1 and broadcasts. At the API boundary an input is either unbatched
(its declared shape, with a leading ``k+1`` axis for series inputs) or batched (one more leading
axis of size ``batch``); outputs are returned batched iff ``batch`` is given.
"""

from __future__ import annotations

import math
from typing import Callable, Mapping

import numpy as np

from ..ir.circuit import Circuit, Eqn, Program
from ..ir.ops import Op


class EvaluationError(ValueError):
    """A value left the domain of its op (log of 0, division by 0, ...); names the node."""


class DomainError(ValueError):
    """Raised by an op implementation; the interpreter adds which node it was."""


_erf = np.frompyfunc(math.erf, 1, 1)
_erfc = np.frompyfunc(math.erfc, 1, 1)


def erf(a: np.ndarray) -> np.ndarray:
    """math.erf elementwise on a real array."""
    return _erf(np.asarray(a, dtype=np.float64)).astype(np.float64)


def std_normal_cdf(a: np.ndarray) -> np.ndarray:
    """Phi(a) = (1 + erf(a / sqrt 2)) / 2 = erfc(-a / sqrt 2) / 2, elementwise on a real array
    (the erfc form keeps full relative accuracy in the lower tail)."""
    return 0.5 * _erfc(-np.asarray(a, dtype=np.float64) / math.sqrt(2.0)).astype(np.float64)


def _div(eqn: Eqn, a, b):
    if np.any(b == 0):
        raise DomainError("division by zero")
    return a / b


def _pow(eqn: Eqn, a):
    p = eqn.attr("p")
    if float(p).is_integer():
        if p < 0 and np.any(a == 0):
            raise DomainError(f"zero raised to the negative power {p}")
        return a ** int(p)
    if np.any(a < 0) or (p < 0 and np.any(a == 0)):
        raise DomainError(f"non-positive base raised to the non-integer power {p}")
    return a ** p


def _log(eqn: Eqn, a):
    if np.any(a <= 0):
        raise DomainError("log of a non-positive value")
    return np.log(a)


def _sqrt(eqn: Eqn, a):
    if np.any(a < 0):
        raise DomainError("sqrt of a negative value")
    return np.sqrt(a)


def _dot(eqn: Eqn, *args):
    half = len(args) // 2
    return sum(args[i] * args[half + i] for i in range(half))


#: The meaning of every op on real values: fn(eqn, *operand_values) -> value.
REAL_IMPL: dict[Op, Callable] = {
    Op.CONST: lambda e: np.array([e.attr("value")]),
    Op.ADD: lambda e, a, b: a + b,
    Op.SUB: lambda e, a, b: a - b,
    Op.NEG: lambda e, a: -a,
    Op.MUL: lambda e, a, b: a * b,
    Op.DIV: _div,
    Op.POW: _pow,
    Op.EXP: lambda e, a: np.exp(a),
    Op.LOG: _log,
    Op.SQRT: _sqrt,
    Op.TANH: lambda e, a: np.tanh(a),
    Op.ERF: lambda e, a: erf(a),
    Op.GELU: lambda e, a: a * std_normal_cdf(a),
    Op.RELU: lambda e, a: np.maximum(a, 0.0),
    Op.MAX: lambda e, a, b: np.maximum(a, b),
    Op.LT: lambda e, a, b: (a < b).astype(np.float64),
    Op.LE: lambda e, a, b: (a <= b).astype(np.float64),
    Op.GT: lambda e, a, b: (a > b).astype(np.float64),
    Op.GE: lambda e, a, b: (a >= b).astype(np.float64),
    Op.EQ: lambda e, a, b: (a == b).astype(np.float64),
    Op.SELECT: lambda e, c, a, b: np.where(c != 0, a, b),
    Op.STOP_GRADIENT: lambda e, a: a,
    Op.SUM: lambda e, *args: sum(args[1:], args[0]),
    Op.DOT: _dot,
}


#: floating-point exceptions during evaluation: overflow and invalid results are errors, underflow
#: to zero is not (constant folding uses the same setting, so it never disagrees with execution)
FLOAT_ERRORS = dict(divide="raise", invalid="raise", over="raise", under="ignore")


def _series_rules():
    from ..passes.taylor import SERIES_RULES  # the Taylor pass owns the series semantics

    return SERIES_RULES


def execute(circuit: Circuit, input_values: Mapping[str, list[np.ndarray]], *,
            ignore_kinks: bool = False) -> list[np.ndarray]:
    """Evaluate every node; inputs are per-element internal values. Returns all node values."""
    rules = _series_rules() if circuit.order > 0 else None
    values: list[np.ndarray] = []
    with np.errstate(**FLOAT_ERRORS):
        for node, eqn in enumerate(circuit.eqns):
            try:
                if eqn.op is Op.INPUT:
                    value = input_values[eqn.attr("name")][eqn.attr("index")]
                else:
                    args = [values[a] for a in eqn.args]
                    if rules is not None and any(values[a].ndim == 2 for a in eqn.args):
                        value = rules[eqn.op](eqn, circuit.order, *args, ignore_kinks=ignore_kinks)
                    else:
                        value = REAL_IMPL[eqn.op](eqn, *args)
            except (DomainError, FloatingPointError) as exc:
                # an error that is already an EvaluationError (the Taylor pass's KinkError) keeps its type
                located = type(exc) if isinstance(exc, EvaluationError) else EvaluationError
                raise located(f"{circuit.describe(node)}: {exc}") from None
            values.append(value)
    return values


def _split_input(circuit: Circuit, name: str, array, shape, series: bool, batch: int | None):
    """External array -> list of internal per-element values."""
    k1 = circuit.order + 1
    array = np.asarray(array, dtype=np.complex128 if series else np.float64)
    core = ((k1,) if series else ()) + tuple(shape)
    if array.shape == core:
        array = array[None]
    elif batch is not None and array.shape == (batch,) + core:
        pass
    else:
        expect = f"{core}" + (f" or {(batch,) + core}" if batch is not None else "")
        raise ValueError(f"input {name!r}: expected shape {expect}, got {array.shape}")
    flat = array.reshape(array.shape[0], *((k1,) if series else ()), -1)
    if series:  # [B, k+1, n] -> n values of [k+1, B]
        return [np.ascontiguousarray(flat[:, :, i].T) for i in range(flat.shape[-1])]
    return [flat[:, i].copy() for i in range(flat.shape[-1])]


def series_inputs(circuit: Circuit) -> set[str]:
    """Names of the inputs whose elements are series-typed."""
    return {e.attr("name") for e in circuit.eqns if e.op is Op.INPUT and e.series}


def _join_output(values: list[np.ndarray], shape, batch: int | None, k1: int) -> np.ndarray:
    width = max([batch or 1] + [v.shape[-1] for v in values])
    series = any(v.ndim == 2 for v in values)
    if series:
        parts = [np.broadcast_to(v if v.ndim == 2 else _lift(v, k1), (k1, width)) for v in values]
        out = np.stack(parts, axis=-1).transpose(1, 0, 2).reshape((width, k1) + tuple(shape))
    else:
        out = np.stack([np.broadcast_to(v, (width,)) for v in values], axis=-1)
        out = out.reshape((width,) + tuple(shape))
    return out if batch is not None else out[0]


def _lift(real: np.ndarray, k1: int) -> np.ndarray:
    series = np.zeros((k1, real.shape[-1]), dtype=np.complex128)
    series[0] = real
    return series


def evaluate(circuit: Circuit, inputs: Mapping[str, np.ndarray], *, batch: int | None = None,
             ignore_kinks: bool = False) -> dict[str, np.ndarray]:
    """Run ``circuit`` on named input arrays; returns named output arrays (see module doc)."""
    check_circuit_inputs(circuit, inputs)
    shapes = circuit.input_shapes
    series = series_inputs(circuit)
    internal = {name: _split_input(circuit, name, inputs[name], shape, name in series, batch)
                for name, shape in shapes.items()}
    values = execute(circuit, internal, ignore_kinks=ignore_kinks)
    return {o.name: _join_output([values[n] for n in o.nodes], o.shape, batch, circuit.order + 1)
            for o in circuit.outputs}


def check_circuit_inputs(circuit: Circuit, inputs: Mapping[str, np.ndarray]) -> None:
    """Every input of ``circuit`` is given, and nothing else."""
    shapes = circuit.input_shapes
    missing = [n for n in shapes if n not in inputs]
    unknown = [n for n in inputs if n not in shapes]
    if missing or unknown:
        raise ValueError(f"inputs: missing {missing}, unknown {unknown}; circuit takes {list(shapes)}")


def gather_weights(x: np.ndarray, example_ids: np.ndarray, step: int) -> np.ndarray:
    """Down-weights of the examples of ``step``: ``x[..., example_ids[step]]``."""
    return x[..., example_ids[step]]


def run_program(program: Program, init: Mapping[str, np.ndarray], *,
                data: Mapping[str, np.ndarray] | None = None,
                static: Mapping[str, np.ndarray] | None = None,
                x: np.ndarray | None = None, example_ids: np.ndarray | None = None,
                batch: int | None = None, ignore_kinks: bool = False,
                progress: Callable[[int], None] | None = None) -> dict[str, np.ndarray]:
    """Run the training loop; returns the final carried state.

    ``init``: carried state (real; unbatched or batched). ``data[name]``: ``[n_steps, *shape]``.
    ``x``: per-example down-weights, real ``[n]`` / ``[B, n]`` or, for a series weight input,
    ``[k+1, n]`` / ``[B, k+1, n]``. ``example_ids``: ``[n_steps, m]`` indices into ``x`` of the
    examples trained on at each step (default: step t trains example t).
    """
    data, static = dict(data or {}), dict(static or {})
    step = program.step
    shapes = step.input_shapes
    series = series_inputs(step)
    _check_names("initial state", init, program.carry)
    _check_names("static input", static, program.static_inputs)
    _check_data(program, data)
    check_weights_given(program, x)
    example_ids = _example_ids(program, example_ids)
    state = {name: _split_input(step, name, init[name], shapes[name], False, batch)
             for name in program.carry}
    fixed = {name: _split_input(step, name, static[name], shapes[name], name in series, batch)
             for name in program.static_inputs}
    for t in range(program.n_steps):
        inputs = dict(fixed)
        inputs.update(state)
        for name in program.per_step:
            inputs[name] = _split_input(step, name, data[name][t], shapes[name], name in series, None)
        if program.weight is not None:
            weights = gather_weights(np.asarray(x), example_ids, t)
            inputs[program.weight] = _split_input(step, program.weight, weights,
                                                  shapes[program.weight], program.weight in series, batch)
        values = execute(step, inputs, ignore_kinks=ignore_kinks)
        state = {name: [values[n] for n in step.output(name).nodes] for name in program.carry}
        if progress is not None:
            progress(t + 1)
    k1 = step.order + 1
    return {name: _join_output(state[name], shapes[name], batch, k1) for name in program.carry}


def check_weights_given(program: Program, x) -> None:
    """Down-weights are given exactly when the program reads them."""
    if program.weight is not None and x is None:
        raise ValueError(f"the program reads down-weights {program.weight!r}: pass x "
                         "(per-example down-weights; zeros for normal training)")
    if program.weight is None and x is not None:
        raise ValueError("x (per-example down-weights) was given, but the program has no weight "
                         "input: trace it with a weight input to down-weight examples")


def _example_ids(program: Program, example_ids) -> np.ndarray | None:
    if program.weight is None:
        return None
    width = program.step.input_shapes[program.weight][0]
    if example_ids is None:
        if width != 1:
            raise ValueError(f"weight input {program.weight!r} has {width} slots per step: pass "
                             "example_ids [n_steps, slots]")
        return np.arange(program.n_steps).reshape(-1, 1)
    example_ids = np.asarray(example_ids)
    if example_ids.shape != (program.n_steps, width):
        raise ValueError(f"example_ids must have shape {(program.n_steps, width)}, got {example_ids.shape}")
    return example_ids


def _check_names(what: str, given: Mapping[str, np.ndarray], expected) -> None:
    missing = [n for n in expected if n not in given]
    unknown = [n for n in given if n not in expected]
    if missing or unknown:
        raise ValueError(f"{what}: missing {missing}, unknown {unknown}; the program takes "
                         f"{list(expected)}")


def _check_data(program: Program, data: Mapping[str, np.ndarray]) -> None:
    _check_names("per-step data", data, program.per_step)
    for name in program.per_step:
        if len(data[name]) < program.n_steps:
            raise ValueError(f"per-step data {name!r} has {len(data[name])} rows for "
                             f"{program.n_steps} steps")
