"""``circuitsketch demo``: the README's main job — sketch a small microgpt run, predict a deletion.

Trains microgpt (DESIGN §5) for ``--steps`` steps on the vendored names, sketches the run with
``--directions`` random complex directions at Taylor order ``--order``, predicts the loss on
``--measure-name`` after deleting every training name that contains ``--contains``, then really
retrains without them and prints the prediction per order (with standard errors) next to the
truth. Defaults are sized to finish in a few minutes on 2 CPU cores with the numba-cpu backend.
"""

from __future__ import annotations

import argparse
import sys
import time

from .cli import HelpFormatter, non_negative_int, positive_int
from .frontends.microgpt import build_task
from .frontends.microgpt_data import MicrogptConfig, encode, names_for_steps, prepare
from .sketch import evaluate_deletions, precompute


def run_demo(steps: int = 200, directions: int = 64, order: int = 3, contains: str = "x",
             measure_name: str = "max", seed: int = 0, backend: str = "numba-cpu",
             batch_size: int = 64, out=sys.stdout,
             config: MicrogptConfig | None = None) -> object:
    """Run the demo and print its table to ``out``; returns the DeletionReport.

    ``config``: the microgpt model (default: the paper's, DESIGN §5)."""
    started = time.perf_counter()
    config = config or MicrogptConfig()
    if steps < 1:
        raise ValueError(f"--steps must be at least 1, got {steps}")
    print(f"circuitsketch demo: microgpt, {steps} steps, {directions} directions, order {order}, "
          f"backend {backend}", file=out)
    # check the arguments on the data (milliseconds) before tracing the step (seconds)
    data = prepare(config)
    step_names = names_for_steps(data, steps)
    deleted = [i for i, name in enumerate(step_names) if contains in name]
    if not deleted:
        raise ValueError(f"no training name among the first {steps} contains {contains!r}")
    encode(measure_name, data)
    task = build_task(config, n_steps=steps)
    print(f"traced the step circuit: {len(task.program.step):,} nodes; deleting {len(deleted)} "
          f"names containing {contains!r}: {', '.join(task.example_labels[i] for i in deleted)}",
          file=out)
    measurement = task.loss_measurement(measure_name)
    sketch = precompute(task, directions=directions, order=order, seed=seed,
                        batch_size=batch_size, backend=backend)
    report = evaluate_deletions(sketch, task, measurement, deleted,
                                names=(f"loss on {measure_name!r}, names containing {contains!r}",),
                                backend=backend)
    print(report.table(), file=out)
    within = bool(report.within_error_bars(3.0)[0])
    print(f"prediction within 3 standard errors of retraining: {'yes' if within else 'no'}; "
          f"total time {time.perf_counter() - started:.0f} s", file=out)
    return report


def register_cli(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo", help="sketch a small microgpt run and predict a deletion (the main job)",
        description=__doc__.replace("``", ""),  # the module doc, without its reST markup
        formatter_class=HelpFormatter)
    parser.add_argument("--steps", type=positive_int, default=200, help="training steps = names")
    parser.add_argument("--directions", type=positive_int, default=64, help="random directions s")
    parser.add_argument("--order", type=positive_int, default=3, help="Taylor order k")
    parser.add_argument("--contains", default="x",
                        help="delete the training names containing this text")
    parser.add_argument("--measure-name", default="max",
                        help="measurement: the trained model's loss on this name")
    parser.add_argument("--seed", type=non_negative_int, default=0, help="direction seed")
    parser.add_argument("--backend", default="numba-cpu",
                        choices=("reference", "numba-cpu", "numba-cuda"),
                        help="execution backend")
    parser.add_argument("--batch-size", type=positive_int, default=64,
                        help="directions run together in one Taylor training run")
    parser.set_defaults(run=lambda args: run_demo(
        args.steps, args.directions, args.order, args.contains, args.measure_name, args.seed,
        args.backend, args.batch_size) and 0)
