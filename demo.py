"""``circuitsketch demo``: the README's main job — sketch a small microgpt run, predict a deletion.

Trains microgpt (DESIGN §5) for ``--steps`` steps on the vendored names, sketches the run with
``--directions`` random complex directions at Taylor order ``--order``, predicts the loss on
``--measure-name`` after deleting every training name that contains ``--contains``, then really
retrains without them and prints, per order, the sketch's prediction (with standard errors)
next to the truth, the first-order baseline, and the exact series: the same Taylor polynomial
computed without sampling noise by one more Taylor run along the deleted set (what the sketch
estimates). ``--plot`` saves prediction against retraining, with error bars, as a PNG.

The defaults (50 steps, 128 directions, deleting the 2 names containing 'ma', loss on 'emma')
are chosen so that the change is large against the estimate's standard error (the order-3
estimate resolves it) and the first-order baseline visibly misses it, in about 35 s of CPU time
on 2 cores once the kernels are compiled.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

import numpy as np

from .backends import default_backend, resolve_backend
from .cli import HelpFormatter, non_negative_int, positive_int
from .frontends.microgpt_array import build_task_array
from .frontends.microgpt_data import MicrogptConfig, encode, names_for_steps, prepare
from .sketch import ExactSeries, Prediction, exact_series, precompute, predict, retrained_values
from .sketch.evaluate import DeletionReport, default_s_values

#: down-weights w at which the demo retrains to draw f(w 1_D) (w = 1 is the deletion itself)
CURVE_WEIGHTS = (0.25, 0.5, 0.75, 1.0)
DEFAULT_PLOT = "circuitsketch-demo.png"


@dataclass(frozen=True)
class DemoResult:
    """What the demo computed: the sketch's report against retraining, the exact series along
    the deleted set, the retrained f(w 1_D) at ``weights``, and the plot's path (or None)."""

    report: DeletionReport
    exact: ExactSeries
    weights: np.ndarray
    truths: np.ndarray
    plot: str | None

    @property
    def prediction(self) -> Prediction:
        return self.report.predictions[0]

    @property
    def truth(self) -> float:
        return float(self.report.truths[0])


def run_demo(steps: int = 50, directions: int = 128, order: int = 3, contains: str = "ma",
             measure_name: str = "emma", seed: int = 0, backend: str | None = None,
             batch_size: int = 128, out=sys.stdout, config: MicrogptConfig | None = None,
             plot: str | None = None) -> DemoResult:
    """Run the demo, print its table to ``out`` and, with ``plot`` (a path), save the PNG.

    ``config``: the microgpt model (default: the paper's, DESIGN §5); ``backend``: None is the
    fastest installed."""
    started = time.perf_counter()
    config = config or MicrogptConfig()
    backend = resolve_backend(backend)
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
    task = build_task_array(config, n_steps=steps)
    print(f"traced the step circuit: {len(task.program.step):,} nodes; deleting {len(deleted)} of "
          f"{steps} names, those containing {contains!r}: "
          f"{', '.join(task.example_labels[i] for i in deleted)}", file=out)
    measurement = task.loss_measurement(measure_name)
    sketch = precompute(task, directions=directions, order=order, seed=seed,
                        batch_size=batch_size, backend=backend)
    prediction = predict(sketch, measurement, deleted, task=task, backend=backend)
    exact = exact_series(task, deleted, order, measurement, backend=backend)
    weights = np.array(CURVE_WEIGHTS)
    truths = retrained_values(task, measurement, weights[:, None] * task.deletion_vector(deleted),
                              backend=backend, batch_size=len(weights))
    name = f"loss on {measure_name!r}, names containing {contains!r}"
    report = DeletionReport((prediction,), truths[-1:], default_s_values(sketch.s), (name,))
    result = DemoResult(report, exact, weights, truths, None)
    print(_table(result), file=out)
    if plot:
        result = DemoResult(report, exact, weights, truths, _save_plot(result, plot, name, out))
    print(f"total time {time.perf_counter() - started:.0f} s", file=out)
    return result


def _table(result: DemoResult) -> str:
    """The per-order table (sketch with s.e., exact series, each against retraining) and the
    change each method predicts."""
    p, truth, exact = result.prediction, result.truth, result.exact.partial_sums(1.0)[0]
    lines = [f"{result.report.names[0]} (|D| = {len(p.deleted)}): f(0) = {p.f0:.6g}, retrained "
             f"f(1_D) = {truth:.6g}, true change {truth - p.f0:+.4g}",
             "  order   sketch    +- s.e.     error   exact series     error"]
    for r in range(p.order + 1):
        note = "  (first-order baseline)" if r == 1 else ""
        lines.append(f"  {r:5d}  {p.partial(r):9.6g}  {p.partial_stderr(r):7.2g}  "
                     f"{p.partial(r) - truth:+8.3g}  {exact[r]:12.6g}  {exact[r] - truth:+8.3g}"
                     f"{note}")
    lo, hi = p.interval
    lines.append(f"  median-of-means {1 - p.delta:.0%} interval [{lo:.6g}, {hi:.6g}]")
    lines.append("  error by number of directions: " + ", ".join(
        f"s={s}: {e:+.3g}" for s, e in zip(result.report.s_values, result.report.s_errors()[0])))
    k, resolved = p.order, abs(p.change) / p.stderr
    lines += [f"change on deleting D: retrained {truth - p.f0:+.4g}",
              f"  sketch, order {k}:       {p.change:+.4g} +- {p.stderr:.2g}   ({resolved:.1f} "
              f"standard errors from no change)",
              f"  first-order baseline:  {p.first_order - p.f0:+.4g} +- {p.first_order_stderr:.2g}",
              f"  exact series, order {k}: {exact[k] - p.f0:+.4g}   (no sampling noise: what the "
              "sketch estimates)"]
    within = abs(p.estimate - truth) <= 3 * p.stderr
    lines.append(f"prediction within 3 standard errors of retraining: {'yes' if within else 'no'}")
    return "\n".join(lines)


def _save_plot(result: DemoResult, path: str, title: str, out) -> str | None:
    """Write the PNG (matplotlib, the ``plot`` extra); say where, or why not."""
    try:
        import matplotlib
    except ImportError:
        print("plot skipped: matplotlib is not installed (pip install 'circuitsketch[plot]')",
              file=out)
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (by_order, curve) = plt.subplots(1, 2, figsize=(11, 4.4))
    _plot_orders(by_order, result)
    _plot_curve(curve, result)
    by_order.set_ylabel("loss on the measured name")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"plot: {path} (prediction vs retraining, error bars +-1 standard error)", file=out)
    return str(path)


def _plot_orders(ax, result: DemoResult) -> None:
    """Each order's partial sum from the sketch (+-1 s.e.) and exactly, against retraining."""
    p = result.prediction
    orders = np.arange(p.order + 1)
    ax.errorbar(orders, [p.partial(r) for r in orders], [p.partial_stderr(r) for r in orders],
                fmt="o-", capsize=4, label=f"sketch, s = {p.s} (+-1 s.e.)")
    ax.plot(orders, result.exact.partial_sums(1.0)[0], "s--", mfc="none",
            label="exact series (no sampling noise)")
    ax.axhline(result.truth, color="k", label="retrained without D")
    ax.axhline(p.f0, color="0.6", ls=":", label="trained on everything")
    ax.set_xticks(orders)
    ax.set_xlabel("Taylor order of the prediction (1: first-order baseline)")
    ax.set_title("deleting D (w = 1), order by order", fontsize="medium")
    ax.legend(fontsize="small", loc="lower right")


def _plot_curve(ax, result: DemoResult) -> None:
    """f(w 1_D) over w: order k and order 1 from the sketch (+-1 s.e. at the retrained w), the
    exact series, and the retrained points."""
    p, k = result.prediction, result.prediction.order
    grid = np.linspace(0.0, 1.0, 101)
    scaled = [p.at_weight(w) for w in grid]
    at = [p.at_weight(w) for w in result.weights]
    for r, style in ((k, "-"), (1, "--")):
        line, = ax.plot(grid, [q.partial(r) for q in scaled], style,
                        label=f"sketch, order {r}" + (" (baseline)" if r == 1 else ""))
        ax.errorbar(result.weights, [q.partial(r) for q in at],
                    [q.partial_stderr(r) for q in at], fmt="none", capsize=4,
                    color=line.get_color())
    exact = result.exact
    ax.plot(grid, [exact.value(w)[0] for w in grid], "k:", lw=1.5,
            label=f"exact series, order {k}")
    ax.plot(np.r_[0.0, result.weights], np.r_[p.f0, result.truths], "ko", label="retrained")
    ax.set_xlabel("w (down-weight of the deleted names; 1 = deleted)")
    ax.set_title("f(w 1_D): prediction vs retraining", fontsize="medium")
    ax.legend(fontsize="small")


def register_cli(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo", help="sketch a small microgpt run and predict a deletion (the main job)",
        description=__doc__.replace("``", ""),  # the module doc, without its reST markup
        formatter_class=HelpFormatter)
    parser.add_argument("--steps", type=positive_int, default=50, help="training steps = names")
    parser.add_argument("--directions", type=positive_int, default=128,
                        help="random directions s")
    parser.add_argument("--order", type=positive_int, default=3, help="Taylor order k")
    parser.add_argument("--contains", default="ma",
                        help="delete the training names containing this text")
    parser.add_argument("--measure-name", default="emma",
                        help="measurement: the trained model's loss on this name")
    parser.add_argument("--seed", type=non_negative_int, default=0, help="direction seed")
    parser.add_argument("--backend", default=default_backend(),
                        choices=("reference", "numba-cpu", "numba-cuda"),
                        help="execution backend (default: the fastest installed)")
    parser.add_argument("--batch-size", type=positive_int, default=128,
                        help="directions run together in one Taylor training run")
    parser.add_argument("--plot", default=DEFAULT_PLOT, metavar="PATH",
                        help="write prediction vs retraining as a PNG here")
    parser.add_argument("--no-plot", dest="plot", action="store_const", const=None,
                        help="do not write the PNG")
    parser.set_defaults(run=lambda args: run_demo(
        args.steps, args.directions, args.order, args.contains, args.measure_name, args.seed,
        args.backend, args.batch_size, plot=args.plot) and 0)
