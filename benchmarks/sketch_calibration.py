"""Are a sketch's standard errors calibrated? z-scores of each order's estimated term against the
exact Taylor coefficients (one exact-series run over all sets), for the names containing a
substring, each of those names alone, and random sets of the same size (docs/reproduce.md).

    python benchmarks/sketch_calibration.py fig3.sketch --contains x --random-sets 10

The sketch must come from `circuitsketch precompute` on microgpt (its settings are read back).
"""

from __future__ import annotations

import argparse

import numpy as np

from circuitsketch.sketch import exact_series, load_sketch, predict
from circuitsketch.sketch.cli import CLI_TASKS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sketch", help="sketch directory")
    parser.add_argument("--contains", default="x", help="the deletion set: names containing this")
    parser.add_argument("--measure-name", default="max", help="loss on this name")
    parser.add_argument("--random-sets", type=int, default=10, help="random sets of the same size")
    parser.add_argument("--seed", type=int, default=1, help="seed of the random sets")
    parser.add_argument("--backend", default="numba-cpu")
    args = parser.parse_args()

    info = load_sketch(args.sketch).info
    kind = CLI_TASKS[info["task"]]
    task = kind.build(info["settings"])
    measurement, _ = kind.measurement(info["settings"], args.measure_name)
    sketch = load_sketch(args.sketch, task=task)
    chosen = [i for i, name in enumerate(task.example_labels) if args.contains in name]
    rng = np.random.default_rng(args.seed)
    randoms = [sorted(rng.choice(task.n_examples, len(chosen), replace=False).tolist())
               for _ in range(args.random_sets)]
    sets = [chosen] + [[i] for i in chosen] + randoms
    exact = exact_series(task, sets, sketch.order, measurement, backend=args.backend,
                         batch_size=len(sets))
    predictions = predict(sketch, measurement, sets, backend=args.backend)
    orders = range(1, sketch.order + 1)
    z = np.array([[(p.terms[r - 1] - exact.coefficients[i][r]) / p.term_stderr[r - 1]
                   for r in orders] for i, p in enumerate(predictions)])
    np.set_printoptions(precision=2, suppress=True)
    print(f"z-scores of the terms of orders {list(orders)} (estimate - exact) / s.e.")
    print(f"names containing {args.contains!r} (|D| = {len(chosen)}): {z[0]}")
    for label, rows in ((f"{len(chosen)} single-name sets", z[1:1 + len(chosen)]),
                        (f"{len(randoms)} random sets of {len(chosen)}", z[1 + len(chosen):])):
        if len(rows):
            print(f"{label}: mean {rows.mean(0)}, r.m.s. {np.sqrt((rows ** 2).mean(0))}")


if __name__ == "__main__":
    main()
