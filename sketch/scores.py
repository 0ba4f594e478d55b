r"""Exact per-example scores: the derivative of each measurement with respect to every example's
down-weight, through the whole training run (the order-1 term of the series, MAGIC's quantity).

For a deterministic run the final state is theta_N = S_{N-1}(... S_0(theta_0, w_0) ..., w_{N-1})
with S_t the step circuit at step t and w_t = x[example_ids[t]] the down-weights it reads. For a
measurement f = phi(theta_N) the chain rule run backwards (the adjoint of the loop) gives

    lambda_N = d phi / d theta_N,
    lambda_t = (d S_t / d theta_t)^T lambda_{t+1},   g_t = (d S_t / d w_t)^T lambda_{t+1},
    score_i  = d f / d x_i = sum over (t, slot) with example_ids[t, slot] = i of g_t[slot],

all at x = 0 (normal training). One backward sweep gives the scores of all n examples for one
measurement; several measurements are a batch of adjoints in the same sweep (the backends'
batch axis). The step's vector-Jacobian product is itself a circuit (:func:`step_vjp`): the step
with an adjoint input per carried state, differentiated by the ``grad`` pass.

The backward sweep reads theta_t in reverse order. Checkpointing keeps memory at
O(sqrt(N) * state): the forward run stores every c-th state (c = ``checkpoint_every``, default
ceil(sqrt N)); the sweep recomputes the c states of each segment from its checkpoint, then runs
the segment backwards. The recomputed states are the same evaluations on the same inputs as the
forward run's, so the result is bitwise independent of c (c = 1 stores the whole trajectory).

Relation to the series: along a set D the order-1 coefficient of w -> f(w 1_D) (exact.py) is
c_1 = sum_{i in D} score_i. The output layout [n_train, n_test] is the score matrix dattri's
``lds`` metric takes.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..backends import evaluate, resolve_backend
from ..ir.circuit import Builder, Circuit, Output, Program, copy_into, make_attrs
from ..ir.ops import Op
from ..passes.grad import grad
from ..passes.simplify import dce
from .predict import check_measurement
from .progress import ProgressBar

#: name prefix of the adjoint (cotangent) inputs and outputs of :func:`step_vjp`
ADJOINT = "adjoint."


def choose_backend(program: Program, backend: str | None) -> str:
    """``backend`` checked, or by default :func:`~circuitsketch.backends.default_backend` (the
    fastest installed) for a scalar step and ``reference`` for an array step: the sweep runs
    one ``evaluate`` per step, where the array engine's per-kernel-call overhead loses to numpy
    (microgpt, 30 steps, 2 measurements: reference 0.6 s, numba-cpu 1.3 s warm)."""
    if backend is None and not program.step.is_scalar:
        return "reference"
    return resolve_backend(backend)


# ---------------------------------------------------------------- the circuits

def step_vjp(program: Program) -> Circuit:
    """The vector-Jacobian product of the step as a circuit.

    Inputs: the step's inputs plus ``adjoint.<state>`` (shape of the state) per carried state.
    Outputs: ``adjoint.<state>`` = (d new_state / d state)^T adjoint for every carried state and
    ``adjoint.<weight>`` = (d new_state / d weight)^T adjoint, i.e. the gradient of the pairing
    sum_s <adjoint_s, new_state_s> with respect to the state and the down-weights (``grad`` of a
    copy of the step extended by the pairing, keeping only those outputs). Scalar-traced and
    array steps alike (an adjoint input reads as its state's output is written).
    """
    step = program.step
    if program.weight is None:
        raise ValueError("the program has no down-weight input: there is nothing to score")
    shapes = step.input_shapes
    builder = Builder()
    builder.inputs = dict(shapes)
    remap = copy_into(builder, step)
    builder.output("pairing", [_pairing(builder, step, program.carry, remap)], ())
    wrt = list(program.carry) + [program.weight]
    full = grad(builder.build(), "pairing", wrt=wrt)
    outputs = tuple(Output(ADJOINT + name, shapes[name], full.output(f"dpairing/d{name}").nodes)
                    for name in wrt)
    return dce(Circuit(full.eqns, full.inputs, outputs))


_VJPS: dict[tuple, tuple[weakref.ref, Circuit]] = {}


def _cached_vjp(program: Program) -> Circuit:
    """:func:`step_vjp` once per step circuit object and loop roles (building and verifying it
    takes seconds for microgpt, and the backends compile a circuit once per object)."""
    key = (id(program.step), program.carry, program.weight)
    hit = _VJPS.get(key)
    if hit is not None and hit[0]() is program.step:
        return hit[1]
    vjp = step_vjp(program)
    _VJPS[key] = (weakref.ref(program.step, lambda _, key=key: _VJPS.pop(key, None)), vjp)
    return vjp


def _pairing(builder: Builder, step: Circuit, carry: Sequence[str], remap: list[int]) -> int:
    """sum_s <adjoint_s, new_state_s> over fresh ``adjoint.<s>`` inputs: one fused dot over the
    0-d element nodes of scalar-traced states, a multiply and a full reduce_sum per array node."""
    pairs, terms = [], []
    for name in carry:
        out, shape = step.output(name), step.input_shapes[name]
        if out.is_array(step.eqns):
            adjoint = builder.input_array(ADJOINT + name, shape)
            product = builder.add(Op.MUL, (adjoint, remap[out.nodes[0]]))
            terms.append(builder.add(Op.REDUCE_SUM, (product,),
                                     make_attrs(axes=tuple(range(len(shape))))))
        else:
            adjoint = builder.input(ADJOINT + name, shape)
            pairs += zip(adjoint, (remap[node] for node in out.nodes))
    if pairs:
        terms.append(builder.add(Op.DOT, tuple(a for a, _ in pairs) + tuple(b for _, b in pairs)))
    return terms[0] if len(terms) == 1 else builder.add(Op.SUM, tuple(terms))


def _measurement_gradient(measurement: Circuit, output: str) -> Circuit:
    return grad(measurement, output, wrt=list(measurement.input_shapes))


# ---------------------------------------------------------------- the sweep

@dataclass
class _Loop:
    """Runs step t forwards (the real step) and backwards (its VJP) on one backend."""

    task: Any
    vjp: Circuit
    backend: str
    x: np.ndarray

    def __post_init__(self) -> None:
        ids = self.task.example_ids
        self.ids = np.arange(self.task.program.n_steps).reshape(-1, 1) if ids is None else ids

    def inputs(self, state: dict[str, np.ndarray], t: int) -> dict[str, np.ndarray]:
        program = self.task.program
        inputs = dict(self.task.static)
        inputs.update(state)
        for name in program.per_step:
            inputs[name] = self.task.data[name][t]
        inputs[program.weight] = self.x[self.ids[t]]
        return inputs

    def forward(self, state: dict[str, np.ndarray], t: int) -> dict[str, np.ndarray]:
        out = evaluate(self.task.program.step, self.inputs(state, t), backend=self.backend)
        return {name: np.asarray(out[name]) for name in self.task.program.carry}

    def backward(self, state: dict[str, np.ndarray], t: int, adjoint: dict[str, np.ndarray]
                 ) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """(adjoint before step t, [M, slots] weight gradients) from the adjoint after it."""
        inputs = self.inputs(state, t)
        inputs.update({ADJOINT + name: value for name, value in adjoint.items()})
        batch = next(iter(adjoint.values())).shape[0]
        out = evaluate(self.vjp, inputs, batch=batch, backend=self.backend)
        carry = self.task.program.carry
        return ({name: out[ADJOINT + name] for name in carry},
                np.asarray(out[ADJOINT + self.task.program.weight]))


def _forward_checkpoints(loop: _Loop, every: int, bar: ProgressBar) -> tuple[dict, dict]:
    """Checkpoints {t: state before step t} for t = 0, c, 2c, ... and the final state."""
    state = {name: np.asarray(value, dtype=np.float64) for name, value in loop.task.init.items()}
    checkpoints = {}
    for t in range(loop.task.program.n_steps):
        if t % every == 0:
            checkpoints[t] = state
        state = loop.forward(state, t)
        bar.advance(1)
    return checkpoints, state


def _backward_sweep(loop: _Loop, checkpoints: dict, every: int, adjoint: dict,
                    n_examples: int, bar: ProgressBar) -> np.ndarray:
    """The adjoint run backwards over all steps, segment by segment; returns scores [n, M]."""
    n_steps = loop.task.program.n_steps
    batch = next(iter(adjoint.values())).shape[0]
    result = np.zeros((n_examples, batch))
    for start in reversed(range(0, n_steps, every)):
        stop = min(start + every, n_steps)
        states = [checkpoints[start]]
        for t in range(start, stop - 1):  # recompute the segment's states from its checkpoint
            states.append(loop.forward(states[-1], t))
            bar.advance(1)
        for t in reversed(range(start, stop)):
            adjoint, weight_grad = loop.backward(states[t - start], t, adjoint)
            np.add.at(result, loop.ids[t], weight_grad.T)
            bar.advance(1)
    return result


def _initial_adjoints(task, measurements: Sequence[Circuit], outputs: Sequence[str | None],
                      final: dict[str, np.ndarray], backend: str
                      ) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """d phi / d theta_N for every measurement, stacked: {state: [M, *shape]}; and phi(theta_N)."""
    shapes = {name: task.program.step.input_shapes[name] for name in task.state_names}
    adjoint = {name: np.zeros((len(measurements),) + shapes[name]) for name in shapes}
    values = np.empty(len(measurements))
    for j, (measurement, output) in enumerate(zip(measurements, outputs)):
        output = check_measurement(measurement, shapes, output)
        gradient = _measurement_gradient(measurement, output)
        out = evaluate(gradient, {name: final[name] for name in measurement.input_shapes},
                       backend=backend)
        values[j] = float(np.asarray(out[output]).reshape(()))
        for name in measurement.input_shapes:
            adjoint[name][j] = np.asarray(out[f"d{output}/d{name}"]).reshape(shapes[name])
    return adjoint, values


# ---------------------------------------------------------------- the API

@dataclass(frozen=True)
class Scores:
    """Per-example scores ``values`` [n_train, n_test] (d f_j / d x_i at x = 0) and ``f0`` [n_test]
    (each measurement of the normally trained model)."""

    values: np.ndarray
    f0: np.ndarray

    def top(self, j: int, k: int = 10, labels: Sequence[str] | None = None) -> list[dict]:
        """The ``k`` examples whose deletion raises measurement ``j`` most (largest scores), then
        the ``k`` that lower it most, each ``{index, score, label}``."""
        column = self.values[:, j]
        order = np.argsort(-column, kind="stable")
        picks = {"raise": order[:k], "lower": order[::-1][:k]}

        def row(i: int) -> dict:
            return {"index": int(i), "score": float(column[i]),
                    "label": None if labels is None else str(labels[i])}
        return [{"direction": key, **row(i)} for key, idx in picks.items() for i in idx]


def influence_scores(task, measurements: Circuit | Sequence[Circuit], *,
                     outputs: Sequence[str | None] | None = None, backend: str | None = None,
                     checkpoint_every: int | None = None, progress: bool = False) -> Scores:
    """The exact order-1 scores of every training example for every measurement (module doc),
    with f(0) for each measurement. See :func:`scores`."""
    measurements = [measurements] if isinstance(measurements, Circuit) else list(measurements)
    if not measurements:
        raise ValueError("no measurements given")
    outputs = [None] * len(measurements) if outputs is None else list(outputs)
    if len(outputs) != len(measurements):
        raise ValueError(f"{len(outputs)} output names for {len(measurements)} measurements")
    backend = choose_backend(task.program, backend)
    n_steps = task.program.n_steps
    every = max(1, math.ceil(math.sqrt(n_steps))) if checkpoint_every is None \
        else int(checkpoint_every)
    if every < 1:
        raise ValueError(f"checkpoint_every must be a positive number of steps, got {checkpoint_every}")
    shapes = {name: task.program.step.input_shapes[name] for name in task.state_names}
    for measurement, output in zip(measurements, outputs):  # before any training
        check_measurement(measurement, shapes, output)
    loop = _Loop(task, _cached_vjp(task.program), backend, np.zeros(task.n_examples))
    recomputed = n_steps - math.ceil(n_steps / every)  # every segment's step but its last
    with ProgressBar(2 * n_steps + recomputed, label="scores", enabled=progress) as bar:
        checkpoints, final = _forward_checkpoints(loop, every, bar)
        adjoint, f0 = _initial_adjoints(task, measurements, outputs, final, backend)
        values = _backward_sweep(loop, checkpoints, every, adjoint, task.n_examples, bar)
    return Scores(values, f0)


def scores(task, measurements: Circuit | Sequence[Circuit], *, backend: str | None = None,
           checkpoint_every: int | None = None, outputs: Sequence[str | None] | None = None,
           progress: bool = False) -> np.ndarray:
    """Per-example scores d f_j / d x_i at x = 0 for every example i and measurement j:
    float64 ``[n_train, n_test]`` (dattri's score layout).

    ``measurements``: one measurement circuit or a list (each reads the carried state and has a
    scalar output; ``outputs`` picks an output per measurement where there are several).
    ``backend``: default :func:`choose_backend` (numba-cpu where installed). ``checkpoint_every``: store every c-th state
    in the forward run (default ceil(sqrt(n_steps)); 1 stores the whole trajectory); the result
    does not depend on it. A positive score means deleting the example raises the measurement.
    """
    return influence_scores(task, measurements, outputs=outputs, backend=backend,
                            checkpoint_every=checkpoint_every, progress=progress).values


__all__ = ["ADJOINT", "Scores", "choose_backend", "influence_scores", "scores", "step_vjp"]
