r"""Pool-based active learning with curiosity scores, against random queries.

A problem (:class:`ActiveLearningProblem`) is a 1-D function observed with Gaussian noise: a
pool of candidate inputs drawn uniformly from [-1, 1] whose labels are revealed only when
queried, a noiseless held-out grid, and a small random initial labelled set (all from a seed).
Each round, for every strategy and seed:

1. set the hyperparameters from the labelled set (``model.hyperparameters``: for polynomial
   ridge regression s by leave-one-out, the optimizer from the Hessian),
2. train with the regularity tangent (``regularity_tangent``: one order-1 Taylor run gives the
   trained theta and t = d theta / d s),
3. record the held-out mean squared error of the trained model,
4. query ``per_round`` pool points: the largest expected squared curiosity scores
   (``expected_curiosity``, Gaussian label model with the LOO noise estimate) for
   ``"curiosity"``, uniformly at random for ``"random"``.

All (strategy, seed) trainings of a round have the same size, so they run as ONE batched
training of the same program. Both strategies start from the same initial set and train
identically; only the choice of queries differs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from .curiosity import expected_curiosity
from .models import Hyperparameters, RegressionModel, predict
from .regularity import regression_task, regularity_tangent

#: the functions to learn, keyed by name
TARGETS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "sin": lambda u: np.sin(3.0 * u),
    "cubic": lambda u: u ** 3 - 0.5 * u,
    "tanh": lambda u: np.tanh(4.0 * u),
    "runge": lambda u: 1.0 / (1.0 + 10.0 * u ** 2),
}


def noisy_sample(target: str, n: int, noise_std: float, rng: np.random.Generator
                 ) -> tuple[np.ndarray, np.ndarray]:
    """n inputs uniform on [-1, 1] and their labels target(u) + N(0, noise_std^2)."""
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; choose one of {sorted(TARGETS)}")
    inputs = rng.uniform(-1.0, 1.0, n)
    return inputs, TARGETS[target](inputs) + noise_std * rng.normal(size=n)


@dataclass(frozen=True)
class ActiveLearningProblem:
    """y = target(u) + N(0, noise_std^2) on u in [-1, 1]; held-out error on a noiseless grid."""

    target: str = "sin"
    noise_std: float = 0.1
    pool_size: int = 100
    test_size: int = 201
    n_initial: int = 6

    def __post_init__(self) -> None:
        if self.target not in TARGETS:
            raise ValueError(f"unknown target {self.target!r}; choose one of {sorted(TARGETS)}")
        if not 0 < self.n_initial < self.pool_size:
            raise ValueError(f"n_initial must be in 1..{self.pool_size - 1}, got {self.n_initial}")

    def sample(self, seed: int) -> "PoolData":
        rng = np.random.default_rng(seed)
        pool, labels = noisy_sample(self.target, self.pool_size, self.noise_std, rng)
        test = np.linspace(-1.0, 1.0, self.test_size)
        initial = rng.choice(self.pool_size, self.n_initial, replace=False)
        return PoolData(pool, labels, test, TARGETS[self.target](test),
                        tuple(int(i) for i in initial))


@dataclass(frozen=True)
class PoolData:
    pool: np.ndarray
    labels: np.ndarray
    test: np.ndarray
    test_targets: np.ndarray
    initial: tuple[int, ...]


STRATEGIES = ("curiosity", "random")


@dataclass
class ActiveLearningRun:
    """Held-out MSE per strategy: ``errors[strategy]`` is [seeds, draws, rounds + 1] (after each
    training, the first on the initial set; curiosity is deterministic, so it has one draw,
    random has ``random_draws``); ``queries[strategy][i][d]`` the pool indices queried for seed
    i in draw d; ``strengths[strategy]`` the chosen s, shaped like ``errors``."""

    seeds: tuple[int, ...]
    per_round: int = 1
    errors: dict[str, np.ndarray] = field(default_factory=dict)
    queries: dict[str, list[list[list[int]]]] = field(default_factory=dict)
    strengths: dict[str, np.ndarray] = field(default_factory=dict)
    training_seconds: float = 0.0

    def geometric_mean_error(self, strategy: str) -> np.ndarray:
        """exp(mean over seeds and draws of log MSE), per round: [rounds + 1]."""
        return np.exp(np.mean(np.log(self.errors[strategy]), axis=(0, 1)))

    def final_log10_ratios(self, better: str = "curiosity", worse: str = "random") -> np.ndarray:
        """Per seed, after the last round: mean log10 MSE of ``worse`` minus that of ``better``
        (> 0 where ``better`` wins): [seeds]."""
        final = {name: np.log10(self.errors[name][:, :, -1]).mean(axis=1) for name in (better, worse)}
        return final[worse] - final[better]

    def final_log10_margin(self, better: str = "curiosity", worse: str = "random") -> float:
        """Mean over seeds of :meth:`final_log10_ratios` (0.3 = a factor 2 in MSE)."""
        return float(np.mean(self.final_log10_ratios(better, worse)))

    def win_fraction(self, better: str = "curiosity", worse: str = "random") -> float:
        return float(np.mean(self.final_log10_ratios(better, worse) > 0))


def run_active_learning(model: RegressionModel, problem: ActiveLearningProblem, *,
                        seeds: Sequence[int], n_rounds: int, per_round: int = 1,
                        n_steps: int = 300, strategies: Sequence[str] = STRATEGIES,
                        random_draws: int = 1, optimizer: str = "gd",
                        backend: str = "reference",
                        progress: Callable[[int], None] | None = None) -> ActiveLearningRun:
    """Run every strategy for every seed for ``n_rounds`` rounds of ``per_round`` queries;
    random querying is repeated with ``random_draws`` independent draws per seed."""
    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown:
        raise ValueError(f"unknown strategies {unknown}; choose from {STRATEGIES}")
    seeds = tuple(int(s) for s in seeds)
    data = {seed: problem.sample(seed) for seed in seeds}
    draws = {"curiosity": 1, "random": random_draws}
    members = [(st, seed, d) for st in strategies for seed in seeds for d in range(draws[st])]
    labelled = {m: list(data[m[1]].initial) for m in members}
    rngs = {m: np.random.default_rng([m[1], m[2] + 1]) for m in members}
    errors: dict[tuple, list[float]] = {m: [] for m in members}
    strengths: dict[tuple, list[float]] = {m: [] for m in members}
    run = ActiveLearningRun(seeds, per_round)
    for round_ in range(n_rounds + 1):
        inputs = np.stack([data[m[1]].pool[labelled[m]] for m in members])
        targets = np.stack([data[m[1]].labels[labelled[m]] for m in members])
        hypers = [model.hyperparameters(u, y) for u, y in zip(inputs, targets)]
        batched = Hyperparameters(*(np.array([getattr(h, f) for h in hypers]) for f in
                                    ("strength", "lr", "momentum", "noise_std")))
        init = np.stack([model.initial_params(m[1]) for m in members])
        task = regression_task(model, inputs, targets, batched, n_steps=n_steps,
                               optimizer=optimizer, init=init, batch=len(members))
        trained = regularity_tangent(task, backend=backend, batch=len(members))
        run.training_seconds += trained.seconds
        for b, member in enumerate(members):
            pool = data[member[1]]
            fit = predict(model, trained.theta[b], pool.test, backend=backend)
            errors[member].append(float(np.mean((fit - pool.test_targets) ** 2)))
            strengths[member].append(hypers[b].strength)
            if round_ == n_rounds:
                continue
            candidates = np.setdiff1d(np.arange(len(pool.pool)), labelled[member])
            if member[0] == "curiosity":
                scores = expected_curiosity(model, trained.theta[b], trained.t[b],
                                            pool.pool[candidates], hypers[b].noise_std,
                                            backend=backend)
                chosen = candidates[np.argsort(-scores, kind="stable")[:per_round]]
            else:
                chosen = rngs[member].choice(candidates, per_round, replace=False)
            labelled[member].extend(int(i) for i in chosen)
        if progress is not None:
            progress(round_)
    for st in strategies:
        grid = [[(st, seed, d) for d in range(draws[st])] for seed in seeds]
        run.errors[st] = np.array([[errors[m] for m in row] for row in grid])
        run.strengths[st] = np.array([[strengths[m] for m in row] for row in grid])
        run.queries[st] = [[labelled[m][problem.n_initial:] for m in row] for row in grid]
    return run


def plot_learning_curves(run: ActiveLearningRun, path: str, *, title: str = "") -> None:
    """Held-out MSE against the number of queries: geometric mean over seeds and each seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    colors = {"curiosity": "tab:red", "random": "tab:blue"}
    for strategy, errors in run.errors.items():
        queried = np.arange(errors.shape[-1]) * run.per_round
        for row in errors.reshape(-1, errors.shape[-1]):
            ax.plot(queried, row, color=colors[strategy], alpha=0.1, linewidth=0.7)
        runs = f"{errors.shape[0]} seeds" + (f" x {errors.shape[1]} draws" if errors.shape[1] > 1 else "")
        ax.plot(queried, run.geometric_mean_error(strategy), color=colors[strategy], linewidth=2.2,
                label=f"{strategy}: geometric mean over {runs}")
    ax.set_yscale("log")
    ax.set_xlabel("labels queried")
    ax.set_ylabel("held-out mean squared error")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
