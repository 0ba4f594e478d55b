"""The reference interpreter: numpy, float64 and complex128. It *defines* the semantics.

A loop over the circuit applying the semantics tables: ``semantics.real.REAL_IMPL`` for nodes
whose operands are all real, ``semantics.series.SERIES_RULES`` for nodes reading a series.
Every other backend is tested against this module.

Batching: every value carries a leading batch axis (retrainings, or Taylor directions).
Internally a real value of shape S is a float64 array ``[B, *S]`` and a series a complex128
array ``[k+1, B, *S]``; ``B`` may be 1 and broadcasts. Scalar-traced circuits read inputs one
element at a time (INPUT with ``index``) and keep element lists, array circuits whole arrays.
At the API boundary an input is either unbatched (its declared shape, with a leading ``k+1``
axis for series inputs) or batched (one more leading axis of size ``batch``); outputs are
returned batched iff ``batch`` is given.
"""

from __future__ import annotations

from typing import Callable, Mapping, Union

import numpy as np

from ..ir.circuit import Circuit, Program
from ..ir.ops import Op
from ..semantics.errors import DomainError, EvaluationError
from ..semantics.real import FLOAT_ERRORS, REAL_IMPL, apply_real
from ..semantics.series import apply_series, lift
from . import checks

#: an input as the interpreter holds it: one internal array, or the list of its elements' values
Stored = Union[np.ndarray, list]


def _element(stored: Stored, index: int, lead: int) -> np.ndarray:
    if isinstance(stored, list):
        return stored[index]
    return stored.reshape(stored.shape[:lead] + (-1,))[..., index]


def _whole(stored: Stored, shape: tuple[int, ...], series: bool) -> np.ndarray:
    if not isinstance(stored, list):
        return stored
    parts = np.broadcast_arrays(*stored)
    stacked = np.stack(parts, axis=-1)
    return stacked.reshape(stacked.shape[:-1] + tuple(shape))


def execute(circuit: Circuit, input_values: Mapping[str, Stored], *,
            ignore_kinks: bool = False) -> list[np.ndarray]:
    """Evaluate every node; inputs are internal values (module doc). Returns all node values."""
    k = circuit.order
    eqns = circuit.eqns
    shapes = circuit.input_shapes
    values: list[np.ndarray] = []
    with np.errstate(**FLOAT_ERRORS):
        for node, eqn in enumerate(eqns):
            try:
                if eqn.op is Op.INPUT:
                    stored = input_values[eqn.attr("name")]
                    lead = 2 if eqn.series else 1
                    if any(key == "index" for key, _ in eqn.attrs):
                        value = _element(stored, eqn.attr("index"), lead)
                    else:
                        value = _whole(stored, shapes[eqn.attr("name")], eqn.series)
                elif eqn.op is Op.CONST:
                    value = REAL_IMPL[Op.CONST](eqn)
                else:
                    args = [values[a] for a in eqn.args]
                    arg_shapes = [eqns[a].shape for a in eqn.args]
                    kinds = [eqns[a].series for a in eqn.args]
                    if k > 0 and any(kinds):
                        value = apply_series(eqn, k, args, arg_shapes, kinds, ignore_kinks)
                    else:
                        value = apply_real(eqn, args, arg_shapes)
            except (DomainError, FloatingPointError) as exc:
                # an error that is already an EvaluationError (the Taylor pass's KinkError) keeps its type
                located = type(exc) if isinstance(exc, EvaluationError) else EvaluationError
                raise located(f"{circuit.describe(node)}: {exc}") from None
            values.append(value)
    return values


def to_internal(circuit: Circuit, name: str, array, shape, series: bool,
                    batch: int | None, elements: bool) -> Stored:
    """External array -> internal value (a list of element values for scalar-read inputs)."""
    k1 = circuit.order + 1
    array = checks.input_array(f"input {name!r}", array, series=series)
    core = ((k1,) if series else ()) + tuple(shape)
    if array.shape == core:
        array = array[None]
    elif batch is not None and array.shape == (batch,) + core:
        pass
    else:
        expect = f"{core}" + (f" or {(batch,) + core}" if batch is not None else "")
        raise ValueError(f"input {name!r}: expected shape {expect}, got {array.shape}")
    if series:  # [B, k+1, *S] -> [k+1, B, *S]
        checks.check_real_constant_terms(f"input {name!r}", array, 1)
        array = np.ascontiguousarray(np.swapaxes(array, 0, 1))
    if not elements:
        return array
    lead = 2 if series else 1
    flat = array.reshape(array.shape[:lead] + (-1,))
    return [flat[..., i].copy() for i in range(flat.shape[-1])]


def _reads_elements(circuit: Circuit) -> set[str]:
    """Inputs read element by element (INPUT nodes with an index: scalar-traced circuits)."""
    return {e.attr("name") for e in circuit.eqns
            if e.op is Op.INPUT and any(key == "index" for key, _ in e.attrs)}


def _lift_stored(stored: Stored, series: bool, k: int) -> Stored:
    if not series:
        return stored
    if isinstance(stored, list):
        return [lift(v, False, k) for v in stored]
    return lift(stored, False, k)


def series_inputs(circuit: Circuit) -> set[str]:
    """Names of the inputs whose elements are series-typed."""
    return {e.attr("name") for e in circuit.eqns if e.op is Op.INPUT and e.series}


def _output_value(circuit: Circuit, values: list[np.ndarray], out) -> Stored:
    """The internal value of an output: the node's array, or the list of its element values."""
    if out.is_array(circuit.eqns):
        return values[out.nodes[0]]
    return [values[n] for n in out.nodes]


def to_external(stored: Stored, shape, series: bool, batch: int | None, k1: int) -> np.ndarray:
    """Internal value -> external array ``[batch, (k+1,) *shape]`` (or unbatched)."""
    if isinstance(stored, list):
        any_series = series or any(v.ndim == 2 for v in stored)
        parts = [v if v.ndim == 2 else lift(v, False, k1 - 1) for v in stored] if any_series else stored
        width = max([batch or 1] + [v.shape[-1] for v in parts])
        lead = (k1, width) if any_series else (width,)
        out = np.stack([np.broadcast_to(v, lead) for v in parts], axis=-1).reshape(lead + tuple(shape))
        series = any_series
    else:
        out = stored
        lead = out.ndim - len(shape)
        width = max(batch or 1, out.shape[lead - 1])
        out = np.broadcast_to(out, out.shape[:lead - 1] + (width,) + out.shape[lead:])
        series = lead == 2
    if series:
        out = np.swapaxes(out, 0, 1)
    out = np.array(out)
    return out if batch is not None else out[0]


def evaluate(circuit: Circuit, inputs: Mapping[str, np.ndarray], *, batch: int | None = None,
             ignore_kinks: bool = False) -> dict[str, np.ndarray]:
    """Run ``circuit`` on named input arrays; returns named output arrays (see module doc)."""
    checks.require_verified(circuit)
    checks.check_batch(batch)
    check_circuit_inputs(circuit, inputs)
    checks.check_budget(circuit, width=batch or 1, backend="reference")
    shapes = circuit.input_shapes
    series, elements = series_inputs(circuit), _reads_elements(circuit)
    internal = {name: to_internal(circuit, name, inputs[name], shape, name in series, batch,
                                      name in elements)
                for name, shape in shapes.items()}
    values = execute(circuit, internal, ignore_kinks=ignore_kinks)
    k1 = circuit.order + 1
    return {o.name: to_external(_output_value(circuit, values, o), o.shape,
                              circuit.eqns[o.nodes[0]].series if o.nodes else False, batch, k1)
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
                progress: Callable[[int], None] | None = None,
                n_examples: int | None = None) -> dict[str, np.ndarray]:
    """Run the training loop; returns the final carried state.

    ``init``: carried state (real; unbatched or batched). ``data[name]``: ``[n_steps, *shape]``.
    ``x``: per-example down-weights, real ``[n]`` / ``[B, n]`` or, for a series weight input,
    ``[k+1, n]`` / ``[B, k+1, n]``. ``example_ids``: ``[n_steps, m]`` indices into ``x`` of the
    examples trained on at each step (default: step t trains example t). ``n_examples``: the
    number of down-weights ``x`` must hold (``backends.checks.check_down_weights`` has the rule).
    """
    data, static = checks.check_program_arguments(program, init, data, static, x, batch)
    step = program.step
    shapes = step.input_shapes
    series, elements = series_inputs(step), _reads_elements(step)
    if program.weight is not None:
        x, example_ids = checks.check_down_weights(program, x, example_ids, n_examples,
                                                   series=program.weight in series)
    checks.check_budget(step, width=batch or 1, n_steps=program.n_steps, backend="reference")

    def internal(name: str, array, batch_size: int | None) -> Stored:
        return to_internal(step, name, array, shapes[name], name in series, batch_size,
                               name in elements)

    # carried state enters real (x = 0 is the unperturbed run) and becomes a series at the output
    state = {name: _lift_stored(to_internal(step, name, init[name], shapes[name], False, batch,
                                                name in elements), name in series, step.order)
             for name in program.carry}
    fixed = {name: internal(name, static[name], batch) for name in program.static_inputs}
    outputs = {name: step.output(name) for name in program.carry}
    for t in range(program.n_steps):
        inputs = dict(fixed)
        inputs.update(state)
        for name in program.per_step:
            inputs[name] = internal(name, data[name][t], None)
        if program.weight is not None:
            weights = gather_weights(x, example_ids, t)
            inputs[program.weight] = internal(program.weight, weights, batch)
        values = execute(step, inputs, ignore_kinks=ignore_kinks)
        state = {name: _output_value(step, values, out) for name, out in outputs.items()}
        if progress is not None:
            progress(t + 1)
    k1 = step.order + 1
    return {name: to_external(state[name], shapes[name], step.eqns[outputs[name].nodes[0]].series,
                            batch, k1) for name in program.carry}
