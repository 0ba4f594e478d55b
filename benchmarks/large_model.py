"""A large microgpt (about 0.8M parameters) end to end on the array path: trace, sketch, predict.

    python benchmarks/large_model.py --steps 20 --directions 16 --order 3

Builds microgpt with ``--n-embd 128 --n-layer 4 --mlp-width 512`` (issue 13's example size),
traces the step (array IR), sketches ``--steps`` training steps with ``--directions`` random
complex directions at order ``--order`` on numba-cpu (direction batches chosen by the engine
from its memory budget), predicts the loss on "max" after deleting the names containing "a",
retrains without them, and prints the parameter count, node count, trace time, time per real
step, time per order-k direction·step, the projection to 1000 steps, the peak resident memory
and the prediction against retraining.
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np

from circuitsketch.frontends.microgpt_array import build_task_array
from circuitsketch.frontends.microgpt_data import MicrogptConfig
from circuitsketch.sketch import precompute, predict


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-embd", type=int, default=128)
    parser.add_argument("--n-layer", type=int, default=4)
    parser.add_argument("--mlp-width", type=int, default=512)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--directions", type=int, default=16)
    parser.add_argument("--order", type=int, default=3)
    parser.add_argument("--contains", default="a")
    parser.add_argument("--measure-name", default="max")
    args = parser.parse_args()
    config = MicrogptConfig(n_embd=args.n_embd, n_layer=args.n_layer, mlp_width=args.mlp_width,
                            n_steps=args.steps)
    started = time.perf_counter()
    task = build_task_array(config, n_steps=args.steps)
    traced = time.perf_counter() - started
    n_params = sum(int(np.prod(task.init[name].shape)) for name in task.param_names)
    print(f"microgpt n_embd={args.n_embd} n_layer={args.n_layer} mlp_width={args.mlp_width}: "
          f"{n_params:,} parameters, step {len(task.program.step)} nodes, built in {traced:.2f} s")
    measurement = task.loss_measurement(args.measure_name)
    deleted = [i for i, name in enumerate(task.example_labels) if args.contains in name]

    started = time.perf_counter()
    task.retrain(backend="numba-cpu")  # compiles the real kernels
    warm = time.perf_counter()
    truths = task.retrain(np.stack([np.zeros(task.n_examples), task.deletion_vector(deleted)]),
                          batch=2, backend="numba-cpu")
    real_step = (time.perf_counter() - warm) / (2 * args.steps)
    print(f"real training: first run {warm - started:.1f} s (compiling), then "
          f"{real_step * 1e3:.2f} ms per model-step (2 retrainings batched)")

    started = time.perf_counter()
    sketch = precompute(task, directions=args.directions, order=args.order,
                        batch_size=args.directions, backend="numba-cpu", progress=False)
    sketch_seconds = time.perf_counter() - started
    per = sketch_seconds / (args.directions * args.steps)
    print(f"sketch: {args.directions} directions x {args.steps} steps at order {args.order} in "
          f"{sketch_seconds:.1f} s (with compilation): {per * 1e3:.1f} ms per direction-step; "
          f"1000 steps would take about {per * args.directions * 1000 / 60:.0f} min")
    prediction = predict(sketch, measurement, [deleted], task=task, backend="numba-cpu")[0]
    retrained = float(np.asarray(_measure(task, measurement, truths))[1])
    print(f"deleting {len(deleted)} of {args.steps} names containing {args.contains!r}: "
          f"f(0) = {prediction.f0:.5f}, sketch f(1_D) = {prediction.estimate:.5f} +- "
          f"{prediction.stderr:.3f}, retrained {retrained:.5f}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20
    print(f"peak resident memory {peak:.2f} GiB")


def _measure(task, measurement, states) -> np.ndarray:
    from circuitsketch.backends import evaluate

    inputs = {name: states[name] for name in measurement.input_shapes}
    out = evaluate(measurement, inputs, batch=2, backend="numba-cpu")
    return next(iter(out.values()))


if __name__ == "__main__":
    main()
