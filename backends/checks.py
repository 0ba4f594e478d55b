"""What every backend checks before it executes anything: one implementation, called by all.

A backend's ``evaluate`` and ``run_program`` call these at their entry, so bad input fails
the same way on every backend, naming what is wrong, before any work starts:

* :func:`require_verified`: the circuit or program passes ``ir.verify`` (a parsed but
  unverified circuit such as ``%5 = exp %4 %3`` is refused with ``VerifyError``, never run),
  and no constant is NaN (an infinite constant is a legitimate mask: ``max(x, -inf)``). Cached per object, so a program pays once.
* :func:`input_array`: an input is a numeric array (not ``None``, not an object or string
  array), real where the circuit reads it as real (a complex array is refused instead of
  losing its imaginary part) and finite (NaN and +-Inf are refused naming the input and the
  first bad index). :class:`InputError`.
* :func:`check_batch`: ``batch`` is None or a positive integer.
* :func:`check_down_weights`: the down-weights ``x`` and ``example_ids``. Rule: the last axis
  of ``x`` holds one weight per example, ``n`` of them: exactly ``n_examples`` when the caller
  passes it (a task knows it: ``TrainingTask.n_examples``); exactly ``n_steps`` with the
  default ids (step t trains example t); otherwise at least ``max(example_ids) + 1`` (examples
  that are never trained on may exist, so only ``n_examples`` pins the count).
  ``example_ids`` has shape ``[n_steps, slots]``, an integer dtype, and every id is in
  ``0 .. n - 1`` (a negative id is refused, never counted from the end). :class:`InputError`.
* :func:`check_budget`: an estimate of the memory and the time the call needs, from the
  order, the circuit's size and the number of directions, against :data:`MEMORY_LIMIT_BYTES`
  and :func:`time_limit_seconds`; a call that cannot fit is refused with :class:`BudgetError`
  naming both numbers.

Non-finite values *produced* during a run are each backend's own business: the reference
interpreter raises on overflow and invalid operations at the node (``FLOAT_ERRORS``); the
Numba kernels check that every output of a step is finite and, when one is not, replay the
step on the reference interpreter, which names the node and its source line. With finite
inputs and constants, a NaN can only come from such an overflow or invalid operation.
"""

from __future__ import annotations

import os
import weakref
from math import prod
from typing import Any

import numpy as np

from ..ir.circuit import Circuit, Program
from ..ir.ops import Op
from ..ir.verify import VerifyError, verify, verify_program


class InputError(ValueError):
    """An input given to a backend cannot mean anything: wrong type, non-finite, out of range."""


class BudgetError(ValueError):
    """A run would need more memory or time than the limits allow (estimated before it starts)."""


class BackendUnavailableError(RuntimeError):
    """The chosen backend cannot run on this machine (e.g. numba-cuda without a GPU)."""


# ---------------------------------------------------------------- verification

_VERIFIED: dict[int, weakref.ref] = {}


def require_verified(target: Circuit | Program) -> None:
    """Verify ``target`` (``ir.verify`` / ``verify_program``) and check that its constants are
    finite; raises ``VerifyError``. A target that passed once is not checked again."""
    key = id(target)
    hit = _VERIFIED.get(key)
    if hit is not None and hit() is target:
        return
    if isinstance(target, Program):
        verify_program(target)
        circuit = target.step
    elif isinstance(target, Circuit):
        verify(target)
        circuit = target
    else:
        raise TypeError(f"expected a Circuit or a Program, got {type(target).__name__}")
    _check_constants(circuit)
    _VERIFIED[key] = weakref.ref(target, lambda _, key=key: _VERIFIED.pop(key, None))


def _check_constants(circuit: Circuit) -> None:
    # NaN never means a number; +-Inf may (a -inf mask under max or select gives finite
    # values), and an Inf that reaches arithmetic is an invalid operation named at its node
    for node, eqn in enumerate(circuit.eqns):
        if eqn.op is Op.CONST and np.any(np.isnan(np.asarray(eqn.attr("value"), float))):
            raise VerifyError(f"{circuit.describe(node)}: constant {eqn.attr('value')!r} is not "
                              "a number (NaN in a traced constant, e.g. a learning rate)")


# ---------------------------------------------------------------- inputs

def input_array(what: str, value: Any, *, series: bool, rows: int | None = None) -> np.ndarray:
    """``value`` as a float64 (``series``: complex128) array, refusing what cannot mean a number.

    ``what`` names the input in errors (``"input 'w'"``). ``rows``: only the first ``rows``
    entries along axis 0 are read (per-step data), so only they must be finite.
    """
    if value is None:
        raise InputError(f"{what} is None; expected an array of numbers")
    try:
        array = np.asarray(value)
    except (ValueError, TypeError) as exc:  # ragged nested lists
        raise InputError(f"{what} is not an array of numbers: {exc}") from None
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
        raise InputError(f"{what} holds {array.dtype} values (e.g. None or strings); expected "
                         "real numbers" + (" or complex series coefficients" if series else ""))
    if np.iscomplexobj(array) and not series:
        raise InputError(f"{what} is complex, but the circuit reads it as real: its imaginary "
                         "part would be dropped; pass real values (or lower the circuit with "
                         "taylor() along this input to give it series coefficients)")
    array = array.astype(np.complex128 if series else np.float64, copy=False)
    if rows is not None and array.ndim == 0:
        raise InputError(f"{what} is a scalar; expected one row per step")
    _check_finite(what, array if rows is None else array[:rows])
    return array


def check_real_constant_terms(what: str, coefficients: np.ndarray, axis: int) -> None:
    """Refuse series whose constant term (index 0 along ``axis``) has an imaginary part.

    Constant terms are the unperturbed real run (DESIGN §3): every op keeps them real, and the
    compiled contractions rely on it (a real A_0 halves their work), so a complex one in an
    input would give wrong numbers there instead of an error."""
    constant = np.take(coefficients, 0, axis=axis)
    if np.iscomplexobj(constant) and np.any(constant.imag != 0):
        index = tuple(int(i) for i in np.argwhere(constant.imag != 0)[0])
        raise InputError(f"{what}: the constant term (coefficient 0) at index {index} is "
                         f"{constant[index]}, which is not real; constant terms are the real "
                         "unperturbed run (a seed series is x_0 + x_1 z + ..., x_0 real)")


def _check_finite(what: str, array: np.ndarray) -> None:
    finite = np.isfinite(array)
    if not finite.all():
        index = tuple(int(i) for i in np.argwhere(~finite)[0])
        raise InputError(f"{what} holds a non-finite value {array[index]} at index {index}; "
                         "inputs must be finite (a NaN or Inf would silently spread to every "
                         "result)")


def check_batch(batch: Any) -> None:
    """``batch`` is None (unbatched) or a positive integer."""
    if batch is None:
        return
    if not _is_int(batch) or batch < 1:
        raise InputError(f"batch must be a positive integer (or None), got {batch!r}")


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def check_names(what: str, given: Any, expected: Any) -> None:
    """``given`` (a mapping) holds exactly the names ``expected``, naming what is missing or unknown."""
    missing = [n for n in expected if n not in given]
    unknown = [n for n in given if n not in expected]
    if missing or unknown:
        raise ValueError(f"{what}: missing {missing}, unknown {unknown}; the program takes "
                         f"{list(expected)}")


def checked_data(program: Program, data: Any, series: Any = ()) -> dict[str, np.ndarray]:
    """A program's per-step data as checked arrays (:func:`input_array`, finite in the rows the
    run reads), each with at least one row per step; ``series``: names read as series."""
    check_names("per-step data", data, program.per_step)
    checked = {}
    for name in program.per_step:
        array = input_array(f"per-step data {name!r}", data[name], series=name in series,
                            rows=program.n_steps)
        if len(array) < program.n_steps:
            raise ValueError(f"per-step data {name!r} has {len(array)} rows for "
                             f"{program.n_steps} steps")
        checked[name] = array
    return checked


def check_program_arguments(program: Program, init: Any, data: Any, static: Any, x: Any,
                            batch: Any) -> tuple[dict, dict]:
    """What every backend's ``run_program`` checks first: the program verifies, ``batch`` is
    valid, the initial state and static inputs are exactly the program's, the per-step data is
    checked (:func:`checked_data`) and down-weights are given exactly when the program reads
    them. Returns ``(checked data, static)``."""
    require_verified(program)
    check_batch(batch)
    static = dict(static or {})
    check_names("initial state", init, program.carry)
    check_names("static input", static, program.static_inputs)
    series = {e.attr("name") for e in program.step.eqns if e.op is Op.INPUT and e.series}
    checked = checked_data(program, dict(data or {}), series)
    check_weights_given(program, x)
    return checked, static


# ---------------------------------------------------------------- down-weights

def check_weights_given(program: Program, x: Any) -> None:
    """Down-weights are given exactly when the program reads them."""
    if program.weight is not None and x is None:
        raise InputError(f"the program reads down-weights {program.weight!r}: pass x "
                         "(per-example down-weights; zeros for normal training)")
    if program.weight is None and x is not None:
        raise InputError("x (per-example down-weights) was given, but the program has no weight "
                         "input: trace it with a weight input to down-weight examples")


def example_ids_of(program: Program, example_ids: Any) -> np.ndarray:
    """``example_ids`` checked (shape ``[n_steps, slots]``, integer, non-negative) as int64; the
    default when None is step t trains example t (one slot per step)."""
    width = program.step.input_shapes[program.weight][0]
    if example_ids is None:
        if width != 1:
            raise InputError(f"weight input {program.weight!r} has {width} slots per step: pass "
                             "example_ids [n_steps, slots]")
        return np.arange(program.n_steps, dtype=np.int64).reshape(-1, 1)
    ids = np.asarray(example_ids)
    if ids.shape != (program.n_steps, width):
        raise InputError(f"example_ids must have shape {(program.n_steps, width)} (steps, slots), "
                         f"got {ids.shape}")
    if ids.size and not np.issubdtype(ids.dtype, np.integer):
        raise InputError(f"example_ids must be integers (indices into x), got dtype {ids.dtype}")
    ids = ids.astype(np.int64)
    if ids.size and ids.min() < 0:
        step, slot = (int(i) for i in np.argwhere(ids < 0)[0])
        raise InputError(f"example_ids[{step}, {slot}] = {ids[step, slot]}: ids index x from 0 "
                         "(negative ids are refused, not counted from the end)")
    return ids


def check_down_weights(program: Program, x: Any, example_ids: Any, n_examples: int | None = None,
                       *, series: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Checked ``(x, example_ids)`` of a program with a weight input (module doc: the rule).

    ``x``: real ``[n]`` / ``[B, n]`` or, ``series``, ``[k+1, n]`` / ``[B, k+1, n]``; returned
    as float64 / complex128, ids as int64 ``[n_steps, slots]``.
    """
    ids = example_ids_of(program, example_ids)
    x = input_array("x (the down-weights)", x, series=series)
    if x.ndim == 0:
        raise InputError("x (the down-weights) must be an array with one weight per example, got "
                         "a scalar")
    if series and x.ndim >= 2:
        check_real_constant_terms("x (the down-weights)", x, x.ndim - 2)
    n = x.shape[-1]
    if n_examples is not None:
        if not _is_int(n_examples) or n_examples < 1:
            raise InputError(f"n_examples must be a positive integer, got {n_examples!r}")
        if n != n_examples:
            raise InputError(f"x holds {n} down-weights per run, the task has n_examples = "
                             f"{n_examples}")
    elif example_ids is None and program.n_steps and n != program.n_steps:
        raise InputError(f"x holds {n} down-weights per run, but without example_ids step t "
                         f"trains example t: {program.n_steps} steps need exactly "
                         f"{program.n_steps} weights")
    if ids.size and ids.max() >= n:
        step, slot = (int(i) for i in np.argwhere(ids >= n)[0])
        raise InputError(f"example_ids[{step}, {slot}] = {ids[step, slot]} is out of range for "
                         f"{n} examples")
    return x, ids


# ---------------------------------------------------------------- memory and time

#: memory one call may use: 80% of this machine's physical memory
MEMORY_LIMIT_BYTES = int(0.8 * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
#: default time one call may take, seconds; the environment variable CIRCUITSKETCH_TIME_LIMIT
#: (seconds) overrides it
TIME_LIMIT_SECONDS = 3600.0
#: seconds per complex multiply-add of the Taylor rules, per backend: a lower bound measured on
#: exp/mul chains at orders 500-2000 (reference ~5-50 ns, numba-cpu ~2 ns, one direction)
SECONDS_PER_MADD = {"reference": 5e-9, "numba-cpu": 1e-9, "numba-cuda": 1e-11}

#: ops whose series rule is a convolution of two series (work ~ (k+1)(k+2)/2 per element)
_PRODUCTS = {"mul", "dot", "dot_general"}
_NONLINEAR = {"div", "pow", "exp", "log", "sqrt", "tanh", "erf", "gelu"}
_COSTS: dict[int, tuple[weakref.ref, tuple[float, int]]] = {}


def time_limit_seconds() -> float:
    """:data:`TIME_LIMIT_SECONDS`, or the environment variable CIRCUITSKETCH_TIME_LIMIT."""
    text = os.environ.get("CIRCUITSKETCH_TIME_LIMIT")
    if text is None:
        return TIME_LIMIT_SECONDS
    try:
        return float(text)
    except ValueError:
        raise InputError(f"CIRCUITSKETCH_TIME_LIMIT={text!r}: expected a number of "
                         "seconds") from None


def madds_per_direction(circuit: Circuit) -> float:
    """Complex multiply-adds one evaluation of ``circuit`` takes per direction (a lower bound:
    series products and nonlinear series rules cost (k+1)(k+2)/2 per element, other series
    ops k+1, real ops 1)."""
    return _costs(circuit)[0]


def value_bytes(circuit: Circuit) -> int:
    """Bytes of every node's value for one direction (what an interpreter keeping all values
    of an evaluation holds): 16 (k+1) per series element, 8 per real element."""
    return _costs(circuit)[1]


def _costs(circuit: Circuit) -> tuple[float, int]:
    """(madds, value bytes) per direction, computed once per circuit object."""
    key = id(circuit)
    hit = _COSTS.get(key)
    if hit is not None and hit[0]() is circuit:
        return hit[1]
    k1 = circuit.order + 1
    quadratic, linear = k1 * (k1 + 1) / 2, float(k1)
    eqns = circuit.eqns
    madds, memory = 0.0, 0
    for eqn in eqns:
        size = max([prod(eqn.shape)] + [prod(eqns[a].shape) for a in eqn.args])
        name = eqn.op.value
        memory += prod(eqn.shape) * (16 * k1 if eqn.series else 8)
        if not eqn.series:
            madds += size
        elif (name in _PRODUCTS and sum(eqns[a].series for a in eqn.args) >= 2) or (
                name in _NONLINEAR and (name != "div" or eqns[eqn.args[1]].series)):
            madds += size * quadratic
        else:
            madds += size * linear
    _COSTS[key] = (weakref.ref(circuit, lambda _, key=key: _COSTS.pop(key, None)), (madds, memory))
    return madds, memory


def check_budget(circuit: Circuit, *, width: int, backend: str, n_steps: int = 1,
                 memory_bytes: int | None = None) -> None:
    """Refuse a call whose estimated memory or time exceeds the limits (module doc).

    ``width``: directions (or retrainings) run; ``n_steps``: evaluations of ``circuit`` (a
    program's steps); ``memory_bytes``: the backend's own estimate of what it allocates
    (default: :func:`value_bytes` times ``width``).
    """
    needed = value_bytes(circuit) * width if memory_bytes is None else memory_bytes
    if needed > MEMORY_LIMIT_BYTES:
        raise BudgetError(f"this run needs about {_gib(needed)} of memory (order {circuit.order}, "
                          f"{len(circuit.eqns):,} nodes, {width} direction(s)), more than the "
                          f"limit of {_gib(MEMORY_LIMIT_BYTES)} (80% of this machine's memory): "
                          "lower the order or the number of directions per run (batch size)")
    seconds = madds_per_direction(circuit) * width * max(n_steps, 1) * SECONDS_PER_MADD.get(
        backend, SECONDS_PER_MADD["reference"])
    limit = time_limit_seconds()
    if seconds > limit:
        raise BudgetError(f"this run would take at least {seconds:,.0f} s on {backend} (order "
                          f"{circuit.order}, {len(circuit.eqns):,} nodes, {width} direction(s), "
                          f"{max(n_steps, 1)} step(s)), more than the limit of {limit:,.0f} s: "
                          "lower the order, or set CIRCUITSKETCH_TIME_LIMIT (seconds) to allow it")


def _gib(n: float) -> str:
    return f"{n / 2 ** 30:,.2f} GiB"


__all__ = ["BackendUnavailableError", "BudgetError", "InputError", "MEMORY_LIMIT_BYTES",
           "SECONDS_PER_MADD", "TIME_LIMIT_SECONDS", "check_batch", "check_budget", "check_names",
           "check_program_arguments", "checked_data",
           "check_down_weights", "check_real_constant_terms", "check_weights_given", "example_ids_of", "input_array",
           "madds_per_direction", "require_verified", "time_limit_seconds", "value_bytes"]
