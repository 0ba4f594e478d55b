"""A large microgpt (about 0.8M parameters) end to end on the array path: trace, sketch, predict.

    python benchmarks/large_model.py --steps 1000 --directions 8 --order 3 --contains x

Builds microgpt with ``--n-embd 128 --n-layer 4 --mlp-width 512`` (issue 13's example size),
traces the step (array IR), retrains without the names containing ``--contains`` (ground
truth), computes the exact order-k series along 1_D (``exact_series``: no sampling noise, so
its partial sums show the truncation error alone), sketches ``--steps`` training steps with
``--directions`` random complex directions at order ``--order`` on numba-cpu (direction
batches chosen by the engine from its memory budget) and predicts the loss on "max" after the
deletion. Prints the parameter count, node count, trace time, time per real step, time per
order-k direction·step, the projection to 1000 steps, the peak resident memory and the
prediction against retraining; ``--json PATH`` writes the figures.

Learning rate: by default the paper's 0.01 scaled by 16 / n_embd (the paper's width over this
one, the usual Adam rule for wider models; 0.00125 at width 128). With the paper's 0.01 at width
128 the training is so sensitive to its early examples that the series has no useful
convergence region: at 50 steps the exact coefficients along one early example grow by
~10^4 per order (docs/reproduce.md).
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import numpy as np

from circuitsketch.frontends.microgpt_array import build_task_array
from circuitsketch.frontends.microgpt_data import MicrogptConfig
from circuitsketch.sketch import exact_series, precompute, predict

PAPER_WIDTH, PAPER_LEARNING_RATE = 16, 0.01


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-embd", type=int, default=128)
    parser.add_argument("--n-layer", type=int, default=4)
    parser.add_argument("--mlp-width", type=int, default=512)
    parser.add_argument("--learning-rate", type=float, default=None,
                        help="Adam learning rate (default: 0.01 * 16 / n_embd)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--directions", type=int, default=16)
    parser.add_argument("--order", type=int, default=3)
    parser.add_argument("--contains", default="a")
    parser.add_argument("--measure-name", default="max")
    parser.add_argument("--json", default=None, help="write the figures to this JSON file")
    args = parser.parse_args()
    learning_rate = (PAPER_LEARNING_RATE * PAPER_WIDTH / args.n_embd
                     if args.learning_rate is None else args.learning_rate)
    config = MicrogptConfig(n_embd=args.n_embd, n_layer=args.n_layer, mlp_width=args.mlp_width,
                            n_steps=args.steps, learning_rate=learning_rate)
    figures: dict = {"n_embd": args.n_embd, "n_layer": args.n_layer,
                     "mlp_width": args.mlp_width, "learning_rate": learning_rate,
                     "steps": args.steps, "directions": args.directions, "order": args.order}
    started = time.perf_counter()
    task = build_task_array(config, n_steps=args.steps)
    figures["build_seconds"] = traced = time.perf_counter() - started
    figures["parameters"] = n_params = sum(int(np.prod(task.init[name].shape))
                                           for name in task.param_names)
    figures["step_nodes"] = len(task.program.step)
    print(f"microgpt n_embd={args.n_embd} n_layer={args.n_layer} mlp_width={args.mlp_width} "
          f"lr={learning_rate:g}: {n_params:,} parameters, step {len(task.program.step)} nodes, "
          f"built in {traced:.2f} s", flush=True)
    measurement = task.loss_measurement(args.measure_name)
    deleted = [i for i, name in enumerate(task.example_labels) if args.contains in name]
    figures["deleted"] = deleted

    started = time.perf_counter()
    task.retrain(backend="numba-cpu")  # compiles the real kernels
    warm = time.perf_counter()
    truths = task.retrain(np.stack([np.zeros(task.n_examples), task.deletion_vector(deleted)]),
                          batch=2, backend="numba-cpu")
    figures["real_ms_per_model_step"] = real_step = (time.perf_counter() - warm) / (2 * args.steps) * 1e3
    f0, retrained = (float(v) for v in np.asarray(_measure(task, measurement, truths)))
    figures.update(f0=f0, retrained=retrained)
    print(f"real training: first run {warm - started:.1f} s (compiling), then "
          f"{real_step:.2f} ms per model-step (2 retrainings batched); deleting {len(deleted)} "
          f"names containing {args.contains!r}: f(0) = {f0:.5f}, retrained {retrained:.5f}",
          flush=True)

    started = time.perf_counter()
    exact = exact_series(task, deleted, args.order, measurement, backend="numba-cpu",
                         progress=False)
    figures["exact_seconds"] = time.perf_counter() - started
    figures["exact_coefficients"] = exact.coefficients[0].tolist()
    figures["exact_partial_sums"] = exact.partial_sums(1.0)[0].tolist()
    print(f"exact series along 1_D in {figures['exact_seconds']:.1f} s: coefficients "
          + ", ".join(f"{c:+.5g}" for c in exact.coefficients[0]) + "; partial sums "
          + ", ".join(f"{c:.5f}" for c in exact.partial_sums(1.0)[0]), flush=True)

    started = time.perf_counter()
    sketch = precompute(task, directions=args.directions, order=args.order,
                        batch_size=args.directions, backend="numba-cpu", progress=False)
    figures["sketch_seconds"] = sketch_seconds = time.perf_counter() - started
    per = sketch_seconds / (args.directions * args.steps)
    figures["ms_per_direction_step"] = per * 1e3
    print(f"sketch: {args.directions} directions x {args.steps} steps at order {args.order} in "
          f"{sketch_seconds:.1f} s (with compilation): {per * 1e3:.1f} ms per direction-step; "
          f"1000 steps would take about {per * args.directions * 1000 / 60:.0f} min", flush=True)
    prediction = predict(sketch, measurement, [deleted], task=task, backend="numba-cpu")[0]
    figures["sketch_partial_sums"] = [prediction.partial(r) for r in range(args.order + 1)]
    figures["sketch_partial_stderr"] = [prediction.partial_stderr(r)
                                        for r in range(args.order + 1)]
    for r in range(args.order + 1):
        print(f"  order {r}: sketch {prediction.partial(r):.5f} +- "
              f"{prediction.partial_stderr(r):.3f}, exact partial sum "
              f"{figures['exact_partial_sums'][r]:.5f}, retrained {retrained:.5f}")
    figures["peak_rss_gib"] = peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20
    print(f"peak resident memory {peak:.2f} GiB")
    if args.json:
        with open(args.json, "w") as file:
            json.dump(figures, file, indent=1)


def _measure(task, measurement, states) -> np.ndarray:
    from circuitsketch.backends import evaluate

    inputs = {name: states[name] for name in measurement.input_shapes}
    out = evaluate(measurement, inputs, batch=2, backend="numba-cpu")
    return next(iter(out.values()))


if __name__ == "__main__":
    main()
