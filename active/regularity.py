r"""Regularity tangents: t = d theta / d s computed alongside training (Eaton, arXiv 2411.15292).

Training minimises the regularised objective of a model (``active.models``)

    L(theta; s) = sum_i (1 - x_i) l(z_i; theta) + s Omega(theta)

by full-batch gradient descent, so the trained parameters theta_N(s) are a deterministic
function of the regularity strength s, a STATIC scalar input of the traced program. Lowering
that program with ``taylor(program, order=1, seeds={"s"})`` and running it once with s given as
the series (s0, 1) carries, through every step (forward pass, gradient, optimizer update),
values a_0 + a_1 z with a_0 the ordinary run at s0 and a_1 its derivative in s: the order-1
coefficient of the final state is the regularity tangent t = d theta_N / d s (DESIGN §6). No
separate differentiation code: the step's gradient is ``grad``'s reverse mode recorded into
the circuit, and the Taylor pass differentiates it (and the optimizer) in s.

At a minimum theta* of L, differentiating grad L(theta*(s); s) = 0 gives the fixed point

    H t + grad Omega(theta*) = 0,   i.e.   t = -H^-1 grad Omega(theta*),   H = d^2 L / d theta^2,

which a converged run reproduces; the run gives t for whatever the optimizer actually did.

Optimizers (``OPTIMIZERS``, keyed by name):

* ``"gd"``: heavy-ball momentum, v <- momentum v + grad L, theta <- theta - lr v (momentum 0 is
  plain gradient descent); lr and momentum are static inputs.
* ``"adam"``: m <- b1 m + (1-b1) g, v <- b2 v + (1-b2) g^2,
  theta <- theta - lr (m / c1_t) / sqrt(v / c2_t + eps) with bias corrections c1_t = 1 - b1^(t+1),
  c2_t = 1 - b2^(t+1) as per-step data (eps inside the root keeps the update analytic);
  lr is a static input, ``momentum`` is unused.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

import numpy as np

from ..backends import run_program
from ..frontends.task import TrainingTask
from ..frontends.tracer import grad, trace_program, vsum
from ..ir.circuit import Program
from ..passes.simplify import simplify
from ..passes.taylor import taylor
from .models import Hyperparameters, RegressionModel, half_squared_norm, squared_loss

#: name of the static scalar input holding the regularity strength
STRENGTH = "s"
#: name of the carried parameter vector
PARAMS = "theta"

ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8


@dataclass(frozen=True)
class Optimizer:
    """One optimizer: its extra state per parameter, its inputs, and its traced update."""

    slots: tuple[str, ...]
    per_step: tuple[str, ...]
    #: update(theta, gradient, slots, inputs) -> (new theta, new slots); all object arrays
    update: Callable[..., tuple[np.ndarray, dict[str, np.ndarray]]]
    #: schedule(n_steps) -> the per-step data arrays
    schedule: Callable[[int], dict[str, np.ndarray]]


def _heavy_ball(theta, gradient, slots, inputs):
    velocity = inputs["momentum"] * slots["velocity"] + gradient
    return theta - inputs["lr"] * velocity, {"velocity": velocity}


def _adam(theta, gradient, slots, inputs):
    b1, b2 = ADAM_BETAS
    m = b1 * slots["m"] + (1 - b1) * gradient
    v = b2 * slots["v"] + (1 - b2) * gradient * gradient
    step = (m / inputs["bias1"]) / (v / inputs["bias2"] + ADAM_EPS) ** 0.5
    return theta - inputs["lr"] * step, {"m": m, "v": v}


def _adam_schedule(n_steps: int) -> dict[str, np.ndarray]:
    t = np.arange(1, n_steps + 1)
    return {"bias1": 1.0 - ADAM_BETAS[0] ** t, "bias2": 1.0 - ADAM_BETAS[1] ** t}


OPTIMIZERS: dict[str, Optimizer] = {
    "gd": Optimizer(("velocity",), (), _heavy_ball, lambda n_steps: {}),
    "adam": Optimizer(("m", "v"), ("bias1", "bias2"), _adam, _adam_schedule),
}


def _optimizer(name: str) -> Optimizer:
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; choose one of {sorted(OPTIMIZERS)}")
    return OPTIMIZERS[name]


@lru_cache(maxsize=64)
def regularised_program(model: RegressionModel, n_examples: int, n_steps: int,
                        optimizer: str = "gd") -> Program:
    """The traced full-batch training program minimising sum_i (1 - x_i) l_i + s Omega.

    State: ``theta`` [p] and the optimizer's slots; static: ``inputs`` [n, input_dim],
    ``targets`` [n], ``s``, ``lr``, ``momentum``; per-step: the optimizer's schedule; the
    down-weight input ``x`` [n] reads every example at every step (see :func:`full_batch_ids`).
    """
    opt = _optimizer(optimizer)
    p = model.n_params

    def step(theta, inputs, targets, s, lr, momentum, x, **rest):
        losses = [(1 - x[i]) * squared_loss(model.predict(theta, inputs[i]), targets[i])
                  for i in range(n_examples)]
        objective = vsum(losses) + s * half_squared_norm(theta)
        hyper = {"lr": lr, "momentum": momentum, **{name: rest[name] for name in opt.per_step}}
        new_theta, new_slots = opt.update(theta, grad(objective, theta),
                                          {name: rest[name] for name in opt.slots}, hyper)
        return {PARAMS: new_theta, **new_slots}

    state = {PARAMS: (p,), **{name: (p,) for name in opt.slots}}
    static = {"inputs": (n_examples, model.input_dim), "targets": (n_examples,),
              STRENGTH: (), "lr": (), "momentum": ()}
    program = trace_program(step, n_steps=n_steps, state=state, static=static,
                            per_step={name: () for name in opt.per_step}, weight="x",
                            examples_per_step=n_examples)
    return simplify(program)


def full_batch_ids(n_steps: int, n_examples: int) -> np.ndarray:
    """example_ids for full-batch training: every step reads all n down-weights."""
    return np.tile(np.arange(n_examples), (n_steps, 1))


@dataclass(frozen=True)
class RegressionTask(TrainingTask):
    """A regularised regression training task; ``static[STRENGTH]`` is the regularity s."""

    model: RegressionModel | None = None
    optimizer: str = "gd"


def regression_task(model: RegressionModel, inputs: np.ndarray, targets: np.ndarray,
                    hyper: Hyperparameters, *, n_steps: int, optimizer: str = "gd",
                    init: np.ndarray | None = None, seed: int = 0,
                    batch: int | None = None) -> RegressionTask:
    """Train ``model`` on (inputs, targets) with the settings ``hyper``, for ``n_steps`` steps.

    With ``batch`` = B, every array argument (and each field of ``hyper``) may carry a
    leading axis of size B: B independent trainings of the same size, run as one batch.
    """
    inputs = np.asarray(inputs, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.float64)
    n = targets.shape[-1]
    if inputs.ndim == targets.ndim:  # scalar inputs given as [.., n]
        inputs = inputs[..., None]
    opt = _optimizer(optimizer)
    program = regularised_program(model, n, n_steps, optimizer)
    theta0 = model.initial_params(seed) if init is None else np.asarray(init, dtype=np.float64)
    state = {PARAMS: theta0, **{name: np.zeros(theta0.shape) for name in opt.slots}}
    static = {"inputs": inputs, "targets": targets,
              STRENGTH: np.asarray(hyper.strength, dtype=np.float64),
              "lr": np.asarray(hyper.lr, dtype=np.float64),
              "momentum": np.asarray(hyper.momentum, dtype=np.float64)}
    return RegressionTask(program=program, init=state, data=opt.schedule(n_steps), static=static,
                          n_examples=n, example_ids=full_batch_ids(n_steps, n),
                          model=model, optimizer=optimizer)


@dataclass(frozen=True)
class RegularityTangent:
    """The trained state at s0 and its derivative in s (both real; batched like the run)."""

    state: dict[str, np.ndarray]
    tangent: dict[str, np.ndarray]
    strength: np.ndarray
    seconds: float

    @property
    def theta(self) -> np.ndarray:
        return self.state[PARAMS]

    @property
    def t(self) -> np.ndarray:
        return self.tangent[PARAMS]


def regularity_tangent(task: TrainingTask, s0: float | np.ndarray | None = None, *,
                       strength: str = STRENGTH, backend: str = "reference",
                       batch: int | None = None) -> RegularityTangent:
    """Train once in order-1 Taylor arithmetic along s: the final state and t = d state / d s.

    ``s0`` defaults to ``task.static[strength]``; with ``batch`` it may be [B] (one s per run).
    Down-weights are 0 (normal training).
    """
    if strength not in task.program.static_inputs or task.program.step.input_shapes[strength] != ():
        raise ValueError(f"the training program has no static scalar input {strength!r}; its static "
                         f"inputs are {list(task.program.static_inputs)}")
    s0 = np.asarray(task.static[strength] if s0 is None else s0, dtype=np.float64)
    series = np.stack([s0, np.ones_like(s0)], axis=-1)  # s = s0 + z: [2] or [B, 2]
    lowered = taylor(task.program, order=1, seeds={strength})
    start = time.perf_counter()
    final = run_program(lowered, task.init, data=task.data,
                        static={**task.static, strength: series}, x=np.zeros(task.n_examples),
                        example_ids=task.example_ids, batch=batch, backend=backend)
    seconds = time.perf_counter() - start
    state, tangent = {}, {}
    for name, value in final.items():
        if not _is_series_state(lowered, name):  # a state that does not depend on s
            state[name], tangent[name] = value, np.zeros_like(value)
            continue
        coefficients = np.moveaxis(value, 0 if batch is None else 1, 0)  # [2, (B,) *shape]
        state[name], tangent[name] = coefficients[0].real.copy(), coefficients[1].real.copy()
    return RegularityTangent(state, tangent, s0, seconds)


def _is_series_state(program: Program, name: str) -> bool:
    return any(program.step.eqns[n].series for n in program.step.output(name).nodes)


@dataclass(frozen=True)
class Slowdown:
    """Wall time of plain training and of training with the tangent, same backend."""

    real_seconds: float
    tangent_seconds: float

    @property
    def factor(self) -> float:
        return self.tangent_seconds / self.real_seconds


def measure_slowdown(task: TrainingTask, *, backend: str = "reference", repeats: int = 3,
                     batch: int | None = None) -> Slowdown:
    """Best-of-``repeats`` times of ``task.retrain()`` and :func:`regularity_tangent`."""
    real, tangent = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        task.retrain(backend=backend, batch=batch)
        real.append(time.perf_counter() - start)
        tangent.append(regularity_tangent(task, backend=backend, batch=batch).seconds)
    return Slowdown(min(real), min(tangent))
