r"""Evaluation against ground truth (DESIGN §8): real retraining, error per order and per s, the
first-order baseline, deletion curves and the Linear Datamodeling Score.

* Ground truth f(x) is the measurement of the model really trained at down-weights x
  (``task.retrain``); ``batch_size`` retrainings run together in one batched run, and with
  ``cluster=`` (a Dask Client, scheduler address or number of local workers) each such block
  is one Dask task (``circuitsketch.cluster``), giving the same values.
* Per order: error of the partial sum f(0) + sum_{r<=R} mean_j X_{j,r} for R = 0..k; R = 1 is
  the first-order baseline (trajectory influence, MAGIC's quantity).
* Per s: error of the estimate from the first s directions only (prefix subsets of the sketch,
  which is what a smaller sketch with the same seed would have given).
* Deletion curve (paper Fig. 3): predictions of f(w 1_D), w in [0, 1], against retrainings.
  The estimator's order-r term is homogeneous of degree r in v = w 1_D, so one set of samples
  gives every w (``Prediction.at_weight``).
* LDS: for R random deletion sets of size round(fraction n), the Spearman rank correlation
  between predicted and retrained f(1_D) (dattri/TRAK report its mean over test measurements;
  here it is for one measurement). Spearman = Pearson correlation of the ranks, ties given
  their average rank (written with numpy, no scipy).
* Several measurements (a list of circuits): every retraining is measured by all of them (one
  training per block of down-weights, whatever the number of measurements), and each function
  returns one result per measurement, in order.
* ``backend=None`` is the fastest installed backend (``numba-cpu`` when Numba imports).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..backends import evaluate, resolve_backend
from ..cluster import run_tasks
from ..ir.circuit import Circuit
from .predict import Prediction, check_measurement, deletion_sets, measurement_list, predict
from .progress import ProgressBar, compile_note
from .store import Sketch, check_task


def retrained_values(task, measurement: Circuit | Sequence[Circuit], xs: np.ndarray, *,
                     output: Any = None, backend: str | None = None, batch_size: int = 16,
                     progress: bool = True, cluster: Any = None) -> np.ndarray:
    """f(x) for every row x of ``xs`` ([R, n]) by really training: [R] for one measurement,
    [R, M] for a list of M measurements (each retraining measured by all of them)."""
    backend = resolve_backend(backend)
    measurements, outputs, single = measurement_list(measurement, output)
    shapes = {name: task.program.step.input_shapes[name] for name in task.state_names}
    outputs = [check_measurement(m, shapes, o) for m, o in zip(measurements, outputs)]
    xs = np.atleast_2d(np.asarray(xs, dtype=np.float64))
    blocks = [xs[first: first + batch_size] for first in range(0, len(xs), batch_size)]
    values: list[np.ndarray] = [np.empty((0, len(measurements)))] * len(blocks)
    with ProgressBar(len(blocks) * task.program.n_steps, label="retrain",
                     enabled=progress, note=None if cluster is not None else
                     compile_note(backend, series=False, width=min(batch_size, len(xs)))) as bar:
        if cluster is None:
            finished = ((i, measure_retrained(task, measurements, block, outputs, backend=backend,
                                              progress=lambda step: bar.advance(1)))
                        for i, block in enumerate(blocks))
        else:
            finished = _blocks_on_cluster(cluster, task, measurements, blocks, outputs, backend,
                                          bar)
        with contextlib.closing(finished):  # stops the cluster's tasks if the driver stops
            for i, block_values in finished:
                values[i] = block_values
    found = np.concatenate(values)
    return found[:, 0] if single else found


def _blocks_on_cluster(cluster: Any, task, measurements: Sequence[Circuit],
                       blocks: Sequence[np.ndarray], outputs: Sequence[str], backend: str,
                       bar: ProgressBar):
    """(i, measured values of blocks[i]) for every block, each one task on ``cluster`` (the task
    and measurements shared once), as they finish; the caller puts them back in block order."""
    bar.label = "retrain on dask"
    calls = {i: (block, outputs) for i, block in enumerate(blocks)}
    for i, values in run_tasks(cluster, measure_retrained, calls, shared=(task, measurements),
                               kwargs={"backend": backend}, name="retrain"):
        bar.advance(task.program.n_steps)
        yield i, values


def measure_retrained(task, measurement: Circuit | Sequence[Circuit], block: np.ndarray,
                      output: Any, *, backend: str | None = None,
                      progress: Callable[[int], None] | None = None) -> np.ndarray:
    """f(x) for the rows x of ``block`` ([B, n]) in one batched retraining: float64 [B], or
    [B, M] for a list of M measurements (``output``: one name per measurement)."""
    measurements, outputs, single = measurement_list(measurement, output)
    final = task.retrain(block, batch=len(block), backend=backend, progress=progress)
    columns = []
    for m, name in zip(measurements, outputs):
        inputs = {state: final[state] for state in m.input_shapes}
        out = evaluate(m, inputs, batch=len(block), backend=backend)[name]
        columns.append(np.asarray(out, dtype=np.float64).reshape(len(block)))
    return columns[0] if single else np.stack(columns, axis=1)


def default_s_values(s: int) -> tuple[int, ...]:
    """8, 16, 32, ... below s, then s itself."""
    values, v = [], 8
    while v < s:
        values.append(v)
        v *= 2
    return tuple(values) + (s,)


@dataclass(frozen=True)
class DeletionReport:
    """Predictions for deletion sets next to their retrained truths f(1_D)."""

    predictions: tuple[Prediction, ...]
    truths: np.ndarray
    s_values: tuple[int, ...]
    names: tuple[str, ...]

    def order_errors(self) -> np.ndarray:
        """[m, k+1]: partial sum of orders 0..R minus the truth."""
        return np.array([[p.partial(r) for r in range(p.order + 1)] for p in self.predictions]
                        ) - self.truths[:, None]

    def s_errors(self) -> np.ndarray:
        """[m, len(s_values)]: estimate from the first s directions minus the truth."""
        return np.array([[p.prefix(s).estimate for s in self.s_values] for p in self.predictions]
                        ) - self.truths[:, None]

    def s_term_stderr(self) -> np.ndarray:
        """[m, len(s_values), k]: each order's term standard error from the first s directions."""
        return np.array([[p.prefix(s).term_stderr for s in self.s_values]
                         for p in self.predictions])

    def stderr_slopes(self) -> np.ndarray:
        """[m, k]: least-squares slope of log(term s.e.) against log(s) over ``s_values``.

        Independent directions give -1/2 (s.e. = sd / sqrt(s)); a clearly different slope means
        the samples' spread has not settled (heavy tails) at these s."""
        usable = [i for i, s in enumerate(self.s_values) if s >= 2]
        if len(usable) < 2:
            return np.full((len(self.predictions), self.predictions[0].order), np.nan)
        logs = np.log(np.asarray(self.s_values, dtype=float)[usable])
        with np.errstate(divide="ignore"):
            errors = np.log(self.s_term_stderr()[:, usable, :])
        centred = logs - logs.mean()
        return np.einsum("s,msk->mk", centred, errors - errors.mean(axis=1, keepdims=True)
                         ) / (centred ** 2).sum()

    def within_error_bars(self, z: float = 3.0) -> np.ndarray:
        """Whether |estimate - truth| <= z standard errors, per set."""
        return np.array([abs(p.estimate - t) <= z * p.stderr
                         for p, t in zip(self.predictions, self.truths)])

    def table(self) -> str:
        lines = []
        order_errors, s_errors = self.order_errors(), self.s_errors()
        term_stderr, slopes = self.s_term_stderr(), self.stderr_slopes()
        for i, (p, truth) in enumerate(zip(self.predictions, self.truths)):
            lines.append(f"{self.names[i]} (|D| = {len(p.deleted)}): f(0) = {p.f0:.6g}, retrained "
                         f"f(1_D) = {truth:.6g}, true change {truth - p.f0:+.4g}")
            lines.append("  order  prediction   +- s.e.     error")
            for r in range(p.order + 1):
                note = "  (first-order baseline)" if r == 1 else ""
                lines.append(f"  {r:5d}  {p.partial(r):11.6g}  {p.partial_stderr(r):9.2g}  "
                             f"{order_errors[i, r]:+9.3g}{note}")
            lo, hi = p.interval
            lines.append(f"  median-of-means {1 - p.delta:.0%} interval [{lo:.6g}, {hi:.6g}]")
            lines.append("  error by number of directions: " + ", ".join(
                f"s={s}: {e:+.3g}" for s, e in zip(self.s_values, s_errors[i])))
            for r, slope in enumerate(slopes[i], start=1):
                lines.append(f"  order {r} term s.e. by s (log-log slope {slope:+.2f}, 1/sqrt(s) "
                             "is -0.50): " + ", ".join(
                                 f"{e:.2g}" for e in term_stderr[i, :, r - 1]))
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"sets": [{"name": name, "truth": float(t), **p.to_dict(),
                          "order_errors": oe.tolist(), "s_values": list(self.s_values),
                          "s_errors": se.tolist(), "s_term_stderr": ts.tolist(),
                          "stderr_slopes": slope.tolist()}
                         for name, p, t, oe, se, ts, slope in zip(
                             self.names, self.predictions, self.truths, self.order_errors(),
                             self.s_errors(), self.s_term_stderr(), self.stderr_slopes())]}


def evaluate_deletions(sketch: Sketch, task, measurement: Circuit | Sequence[Circuit],
                       deleted: Any, *, names: Sequence[str] | None = None,
                       s_values: Sequence[int] | None = None, delta: float = 0.05,
                       order: int | None = None, output: Any = None, backend: str | None = None,
                       batch_size: int = 16, progress: bool = True,
                       cluster: Any = None) -> DeletionReport | list[DeletionReport]:
    """Predict f(1_D) for each set and retrain to compare (``deleted`` as in ``predict``);
    ``cluster``: run the retrainings on Dask (see :func:`retrained_values`). A list of
    measurements gives one report each from the same retrainings."""
    check_task(sketch, task)
    backend = resolve_backend(backend)
    measurements, outputs, single = measurement_list(measurement, output)
    # the predictions first: they are cheap and check every argument before any retraining
    predicted = [predict(sketch, m, deleted, delta=delta, order=order, output=name, task=task,
                         backend=backend) for m, name in zip(measurements, outputs)]
    indicators, _ = deletion_sets(deleted, task.n_examples, task.example_labels)
    truths = retrained_values(task, measurements, indicators, output=outputs, backend=backend,
                              batch_size=batch_size, progress=progress, cluster=cluster)
    s_values = tuple(s_values) if s_values is not None else default_s_values(sketch.s)
    names = tuple(names) if names is not None else tuple(f"set {i}" for i in range(len(truths)))
    reports = [DeletionReport((p,) if isinstance(p, Prediction) else tuple(p), truths[:, column],
                              s_values, names) for column, p in enumerate(predicted)]
    return reports[0] if single else reports


@dataclass(frozen=True)
class DeletionCurve:
    """The prediction for deleting D (w = 1) and the retrained f(w 1_D) at each weight w."""

    prediction: Prediction
    weights: np.ndarray
    truths: np.ndarray

    @property
    def predictions(self) -> tuple[Prediction, ...]:
        """The predictions of f(w 1_D) at the retrained weights."""
        return tuple(self.prediction.at_weight(w) for w in self.weights)

    def to_dict(self) -> dict[str, Any]:
        return {"weights": self.weights.tolist(), "truths": self.truths.tolist(),
                "predictions": [p.to_dict() for p in self.predictions]}


def deletion_curve(sketch: Sketch, task, measurement: Circuit | Sequence[Circuit], deleted: Any,
                   weights: Sequence[float], *, output: Any = None, backend: str | None = None,
                   batch_size: int = 16, progress: bool = True,
                   cluster: Any = None) -> DeletionCurve | list[DeletionCurve]:
    """f(w 1_D) predicted from the sketch and retrained, for one set D and each w in weights
    (a list of measurements: one curve each from the same retrainings)."""
    check_task(sketch, task)
    backend = resolve_backend(backend)
    measurements, outputs, single = measurement_list(measurement, output)
    weights = np.asarray(weights, dtype=np.float64)
    indicator, one = deletion_sets(deleted, task.n_examples, task.example_labels)
    if not one:
        raise ValueError("a deletion curve is for one deletion set; got a list of sets")
    predicted = [predict(sketch, m, deleted, output=name, task=task, backend=backend)
                 for m, name in zip(measurements, outputs)]
    truths = retrained_values(task, measurements, weights[:, None] * indicator, output=outputs,
                              backend=backend, batch_size=batch_size, progress=progress,
                              cluster=cluster)
    curves = [DeletionCurve(p, weights, truths[:, column]) for column, p in enumerate(predicted)]
    return curves[0] if single else curves


# ---------------------------------------------------------------- Linear Datamodeling Score

def _ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 0..m-1, ties sharing their average rank."""
    values = np.asarray(values, dtype=np.float64)
    order = np.argsort(values, kind="mergesort")
    _, first, counts = np.unique(values[order], return_index=True, return_counts=True)
    ranks = np.empty(len(values))
    ranks[order] = np.repeat(first + (counts - 1) / 2.0, counts)
    return ranks


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman rank correlation (Pearson correlation of average ranks)."""
    ra, rb = _ranks(a), _ranks(b)
    if len(ra) != len(rb) or len(ra) < 2:
        raise ValueError(f"spearman needs two equally long samples of >= 2 values, got {len(ra)} "
                         f"and {len(rb)}")
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denominator = np.sqrt((ra * ra).sum() * (rb * rb).sum())
    return float((ra * rb).sum() / denominator) if denominator > 0 else float("nan")


@dataclass(frozen=True)
class LdsResult:
    """Predicted and retrained f(1_D) over random deletion sets, and their rank correlations."""

    subsets: tuple[tuple[int, ...], ...]
    truths: np.ndarray
    predicted: np.ndarray
    first_order: np.ndarray

    @property
    def lds(self) -> float:
        return spearman(self.predicted, self.truths)

    @property
    def lds_first_order(self) -> float:
        return spearman(self.first_order, self.truths)

    def to_dict(self) -> dict[str, Any]:
        return {"lds": self.lds, "lds_first_order": self.lds_first_order,
                "subsets": [list(s) for s in self.subsets], "truths": self.truths.tolist(),
                "predicted": self.predicted.tolist(), "first_order": self.first_order.tolist()}


def random_subsets(n: int, count: int, size: int, seed: int = 0) -> list[list[int]]:
    """``count`` random subsets of 0..n-1 of ``size`` elements each (reproducible from seed)."""
    if not 1 <= size <= n:
        raise ValueError(f"subset size {size} out of 1..{n}")
    rng = np.random.default_rng(seed)
    return [sorted(rng.choice(n, size=size, replace=False).tolist()) for _ in range(count)]


def linear_datamodeling_score(sketch: Sketch, task, measurement: Circuit | Sequence[Circuit], *,
                              n_subsets: int = 32, fraction: float = 0.1, seed: int = 0,
                              order: int | None = None, output: Any = None,
                              backend: str | None = None, batch_size: int = 16,
                              progress: bool = True, coefficients: np.ndarray | None = None,
                              cluster: Any = None) -> LdsResult | list[LdsResult]:
    """LDS of the sketch (and of the first-order baseline) over random deletion sets (a list of
    measurements: one result each, from the same retrainings)."""
    check_task(sketch, task)
    backend = resolve_backend(backend)
    measurements, outputs, single = measurement_list(measurement, output)
    if coefficients is not None and not single:
        raise ValueError("coefficients= is for one measurement; got a list of measurements")
    size = max(1, int(round(fraction * task.n_examples)))
    subsets = random_subsets(task.n_examples, n_subsets, size, seed)
    predicted = [predict(sketch, m, subsets, order=order, output=name, task=task,
                         backend=backend, coefficients=coefficients)
                 for m, name in zip(measurements, outputs)]
    indicators, _ = deletion_sets(subsets, task.n_examples, task.example_labels)
    truths = retrained_values(task, measurements, indicators, output=outputs, backend=backend,
                              batch_size=batch_size, progress=progress, cluster=cluster)
    results = [LdsResult(tuple(tuple(s) for s in subsets), truths[:, column],
                         np.array([p.estimate for p in predictions]),
                         np.array([p.first_order for p in predictions]))
               for column, predictions in enumerate(predicted)]
    return results[0] if single else results


# ---------------------------------------------------------------- plots

def plot_curves(path: str, grid: np.ndarray,
                curves: Mapping[str, tuple[np.ndarray, np.ndarray | None]],
                weights: np.ndarray, truths: np.ndarray, *, title: str = "",
                ylabel: str = "measurement") -> None:
    """PNG of predicted curves over ``grid`` (label -> (values, s.e. or None), drawn with +-1
    s.e. bands) and the retrained f(w 1_D) at ``weights`` (points)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for label, (values, stderr) in curves.items():
        line, = ax.plot(grid, values, label=label)
        if stderr is not None:
            ax.fill_between(grid, values - stderr, values + stderr, alpha=0.2,
                            color=line.get_color())
    ax.plot(weights, truths, "ko", label="retrained")
    ax.set_xlabel("w (down-weight of the deleted set)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_deletion_curve(curve: DeletionCurve, path: str, *, title: str = "",
                        ylabel: str = "measurement") -> None:
    """Paper Fig. 3: each order's prediction with +-1 s.e. against the retrained points."""
    grid = np.linspace(min(0.0, curve.weights.min()), max(1.0, curve.weights.max()), 101)
    scaled = [curve.prediction.at_weight(w) for w in grid]
    curves = {f"order {r}": (np.array([p.partial(r) for p in scaled]),
                             np.array([p.partial_stderr(r) for p in scaled]))
              for r in range(1, curve.prediction.order + 1)}
    plot_curves(path, grid, curves, curve.weights, curve.truths, title=title, ylabel=ylabel)


def plot_stderr_by_s(report: DeletionReport, index: int, path: str, *, title: str = "") -> None:
    """PNG, log-log: each order's term standard error against the number of directions s for
    set ``index`` of ``report``, with the 1/sqrt(s) line through the largest s."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s_values = np.asarray(report.s_values, dtype=float)
    errors = report.s_term_stderr()[index]
    slopes = report.stderr_slopes()[index]
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for r in range(errors.shape[1]):
        line, = ax.loglog(s_values, errors[:, r], "o-", label=f"order {r + 1} "
                          f"(slope {slopes[r]:+.2f})")
        ax.loglog(s_values, errors[-1, r] * np.sqrt(s_values[-1] / s_values), ":",
                  color=line.get_color())
    ax.set_xlabel("number of directions s")
    ax.set_ylabel("standard error of the term")
    ax.set_title(title or "term standard errors; dotted: 1/sqrt(s)")
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


__all__ = ["DeletionCurve", "DeletionReport", "LdsResult", "default_s_values", "deletion_curve",
           "evaluate_deletions", "linear_datamodeling_score", "measure_retrained", "plot_curves",
           "plot_deletion_curve", "plot_stderr_by_s", "random_subsets", "retrained_values", "spearman"]
