"""Linear Datamodeling Score on microgpt: exact per-example scores, the sketch's order-1 and
order-3 predictions, each against real retraining (docs/sketch.md, "Per-example scores").

    python benchmarks/lds.py                      # 200 steps, 5 test names, 2 x 40 subsets
    python benchmarks/lds.py --steps 100 --subsets 20 --directions 64 --json lds.json

For each deletion fraction (50% and 5% of the n training names by default) draw random
deletion sets D_1..D_R, retrain without each (ground truth f_j(1_D) for every test name j), and
predict f_j(1_D) three ways: f(0) + sum_{i in D} score_i with the exact scores
(``circuitsketch.sketch.scores``), and the sketch's partial sums of orders 1 and 3. The LDS of
a method for test name j is the Spearman correlation over the R sets between its predictions
and the truths; as dattri reports it, the table gives it per test name and the mean over them.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from circuitsketch.backends import evaluate
from circuitsketch.frontends.microgpt import build_task
from circuitsketch.frontends.microgpt_data import MicrogptConfig
from circuitsketch.sketch import (influence_scores, measurement_coefficients, precompute, predict,
                                  spearman)
from circuitsketch.sketch.evaluate import random_subsets
from circuitsketch.sketch.predict import deletion_sets


def retrained(task, measurements, indicators: np.ndarray, backend: str, batch_size: int) -> np.ndarray:
    """f_j(x) for every row x of ``indicators`` and every measurement j, by retraining once per
    row (all measurements read the same retrained model): [R, M]."""
    blocks = []
    for first in range(0, len(indicators), batch_size):
        block = indicators[first: first + batch_size]
        final = task.retrain(block, batch=len(block), backend=backend)
        blocks.append(np.stack([np.asarray(evaluate(m, {n: final[n] for n in m.input_shapes},
                                                    batch=len(block), backend=backend)[
            m.outputs[0].name], dtype=np.float64).reshape(len(block)) for m in measurements], 1))
    return np.concatenate(blocks)


def predictions(task, measurements, exact, sketch, subsets, indicators, coefficients) -> dict:
    """Predicted f_j(1_D) per method: {method: [R, M]}."""
    by_method = {"exact scores (order 1)": exact.f0[None] + indicators @ exact.values}
    sketched = [predict(sketch, m, subsets, task=task, coefficients=c)
                for m, c in zip(measurements, coefficients)]
    for order in (1, sketch.order):
        by_method[f"sketch order {order}"] = np.array(
            [[p.partial(order) for p in column] for column in sketched]).T
    return by_method


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=200, help="training steps (one name each)")
    parser.add_argument("--names", default="max,zoe,kristopher,emma,liam",
                        help="test names: one measurement (loss on the name) each")
    parser.add_argument("--fractions", default="0.5,0.05", help="deletion set sizes / n")
    parser.add_argument("--subsets", type=int, default=40, help="random deletion sets per fraction")
    parser.add_argument("--directions", type=int, default=128, help="sketch directions s")
    parser.add_argument("--order", type=int, default=3, help="sketch order k")
    parser.add_argument("--seed", type=int, default=0, help="seed of the subsets and directions")
    parser.add_argument("--backend", default="numba-cpu")
    parser.add_argument("--json", default=None, metavar="PATH", help="also write the results")
    args = parser.parse_args()

    names = [n.strip() for n in args.names.split(",") if n.strip()]
    task = build_task(MicrogptConfig(), args.steps)
    measurements = [task.loss_measurement(name) for name in names]
    times = {}
    start = time.perf_counter()
    exact = influence_scores(task, measurements, backend=args.backend, progress=True)
    times["exact scores"] = time.perf_counter() - start
    start = time.perf_counter()
    sketch = precompute(task, directions=args.directions, order=args.order, seed=args.seed,
                        backend=args.backend)
    coefficients = [measurement_coefficients(sketch, m, backend=args.backend) for m in measurements]
    times[f"sketch (s={args.directions}, k={args.order})"] = time.perf_counter() - start
    results = []
    for fraction in (float(f) for f in args.fractions.split(",")):
        size = max(1, round(fraction * task.n_examples))
        subsets = random_subsets(task.n_examples, args.subsets, size, args.seed)
        indicators, _ = deletion_sets(subsets, task.n_examples, task.example_labels)
        start = time.perf_counter()
        truths = retrained(task, measurements, indicators, args.backend, batch_size=16)
        times[f"retraining {args.subsets} x {fraction:.0%}"] = time.perf_counter() - start
        for method, predicted in predictions(task, measurements, exact, sketch, subsets,
                                             indicators, coefficients).items():
            lds = [spearman(predicted[:, j], truths[:, j]) for j in range(len(names))]
            results.append({"method": method, "fraction": fraction, "size": size,
                            "lds": dict(zip(names, lds)), "mean": float(np.mean(lds))})
    print(f"microgpt, {args.steps} steps (n = {task.n_examples}), {args.subsets} random deletion "
          f"sets per fraction, sketch s = {args.directions}, k = {args.order}\n")
    print("| method | deleted | " + " | ".join(names) + " | mean |")
    print("|---|---|" + "---|" * (len(names) + 1))
    for row in results:
        cells = " | ".join(f"{row['lds'][n]:.3f}" for n in names)
        print(f"| {row['method']} | {row['fraction']:.0%} ({row['size']}) | {cells} | "
              f"{row['mean']:.3f} |")
    print("\n" + ", ".join(f"{what}: {seconds:.1f} s" for what, seconds in times.items()))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"settings": vars(args), "results": results, "seconds": times}, fh, indent=1)


if __name__ == "__main__":
    main()
