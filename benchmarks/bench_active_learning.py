"""Regularity tangents and active learning (issue 6): slow-down factor and active vs random.

1. Slow-down factor of training with the regularity tangent (one order-1 Taylor run along s)
   over plain real training, same backend, best of ``--repeats``: polynomial ridge regression
   (degree 5, 10 examples, 1500 heavy-ball steps) and a tanh MLP (8 hidden units, 10 examples,
   500 steps), on each backend that imports (reference, numba-cpu).
2. Pool-based active learning of sin(3u) with degree-5 polynomial ridge regression (s by
   leave-one-out, label noise 0.05, pool 100, 6 initial labels, 6 rounds of 1 query): curiosity
   scores against random queries (4 random draws per seed), ``--seeds`` seeds. Writes
   ``docs/figures/active_learning.png`` and prints the held-out error per round.

    python benchmarks/bench_active_learning.py [--seeds 32] [--backend numba-cpu] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from circuitsketch.active.loop import (STRATEGIES, ActiveLearningProblem, noisy_sample,
                                       plot_learning_curves, run_active_learning)
from circuitsketch.active.models import PolynomialRidge, TanhMLP
from circuitsketch.active.regularity import measure_slowdown, regression_task, regularity_tangent
from circuitsketch.backends import get_backend

FIGURE = Path(__file__).resolve().parent.parent / "docs" / "figures" / "active_learning.png"


def _available(backend: str) -> bool:
    try:
        get_backend(backend)
    except ImportError:
        return False
    return True


def slowdowns(backends: list[str], repeats: int) -> list[dict]:
    u, y = noisy_sample("sin", 10, 0.05, np.random.default_rng(0))
    cases = [("poly degree 5", PolynomialRidge(degree=5), 1500),
             ("tanh MLP, 8 hidden", TanhMLP(hidden=8), 500)]
    rows = []
    for label, model, steps in cases:
        task = regression_task(model, u, y, model.hyperparameters(u, y), n_steps=steps)
        for backend in backends:
            regularity_tangent(task, backend=backend)  # compile / warm up
            task.retrain(backend=backend)
            result = measure_slowdown(task, backend=backend, repeats=repeats)
            rows.append({"model": label, "steps": steps, "gates": len(task.program.step),
                         "backend": backend, "real_seconds": result.real_seconds,
                         "tangent_seconds": result.tangent_seconds, "factor": result.factor})
            print(f"{label:>20} {steps:5d} steps {rows[-1]['gates']:4d} gates  {backend:>10}: "
                  f"real {result.real_seconds * 1e3:9.1f} ms  with tangent "
                  f"{result.tangent_seconds * 1e3:9.1f} ms  slow-down {result.factor:.2f}x")
    return rows


def comparison(seeds: int, backend: str, steps: int) -> dict:
    model = PolynomialRidge(degree=5)
    problem = ActiveLearningProblem(target="sin", noise_std=0.05, pool_size=100, n_initial=6)
    start = time.perf_counter()
    run = run_active_learning(model, problem, seeds=range(seeds), n_rounds=6, n_steps=steps,
                              random_draws=4, backend=backend)
    seconds = time.perf_counter() - start
    FIGURE.parent.mkdir(parents=True, exist_ok=True)
    plot_learning_curves(run, str(FIGURE), title=f"degree-5 ridge on sin(3u), noise 0.05, "
                                                 f"{seeds} seeds")
    print(f"active learning, {seeds} seeds, backend {backend}, {steps} steps per training: "
          f"{seconds:.1f} s ({run.training_seconds:.1f} s training)")
    for strategy in STRATEGIES:
        print(f"  {strategy:>9} held-out MSE (geometric mean) per round: " +
              " ".join(f"{e:.2e}" for e in run.geometric_mean_error(strategy)))
    ratios = run.final_log10_ratios()
    print(f"  final log10(MSE_random / MSE_curiosity): mean {ratios.mean():.2f} "
          f"(x{10 ** ratios.mean():.1f}), median {np.median(ratios):.2f}, "
          f"curiosity better on {np.mean(ratios > 0):.0%} of seeds; wrote {FIGURE}")
    return {"seeds": seeds, "backend": backend, "steps": steps, "seconds": seconds,
            "geometric_mean_error": {s: run.geometric_mean_error(s).tolist() for s in STRATEGIES},
            "final_log10_ratios": ratios.tolist(), "win_fraction": run.win_fraction()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=32)
    parser.add_argument("--steps", type=int, default=1500, help="training steps per round")
    parser.add_argument("--backend", default=None,
                        help="backend of the comparison (default: numba-cpu if it imports)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    backends = [b for b in ("reference", "numba-cpu") if _available(b)]
    results = {"slowdown": slowdowns(backends, args.repeats)}
    backend = args.backend or ("numba-cpu" if "numba-cpu" in backends else "reference")
    results["active_learning"] = comparison(args.seeds, backend, args.steps)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
