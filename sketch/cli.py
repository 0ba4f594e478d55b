"""The deletion-scheme subcommands: ``precompute | predict | exact | stability | evaluate |
scores``.

They run on a training task picked by ``--task`` from :data:`CLI_TASKS` (``microgpt``: the
paper's §5.2 program on the vendored names; a deletion set is given by substrings of the names
trained on or by step indices, a measurement by ``--measure-name NAME``: the loss on NAME).
A sketch records its task and settings (``info`` in meta.json), so ``predict`` and ``evaluate``
rebuild everything from ``--sketch PATH`` alone. ``predict``, ``exact`` and ``evaluate`` take
several measurements (``--measure-name max,zoe,kristopher``): every training run is measured by
all of them, and each gets its own table (JSON: ``{"measurements": [...]}``). Results are
printed as tables and, with ``--out DIR``, written as JSON and PNG plots (matplotlib, imported
only when plotting).
``precompute`` and ``evaluate`` run on Dask with ``--workers N`` (local worker processes) or
``--scheduler ADDRESS`` (an existing cluster); see docs/distributed.md.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from ..backends import BACKENDS, default_backend
from ..cli import (HelpFormatter, finite_float, fraction, int_at_least_2, non_negative_int,
                   output_dir, plot_dir, positive_int)
from ..cluster import connect
from ..frontends.microgpt_array import build_task_array, loss_measurement_array
from ..frontends.microgpt_data import MicrogptConfig, names_for_steps, prepare
from ..ir.circuit import Circuit
from .evaluate import (deletion_curve, evaluate_deletions, linear_datamodeling_score,
                       plot_curves, plot_deletion_curve, plot_stderr_by_s, retrained_values)
from .exact import exact_series
from .precompute import precompute
from .predict import predict
from .scores import influence_scores
from .stability import plot_stability, stability_profile
from .store import load_sketch, write_json


@dataclass(frozen=True)
class CliTask:
    """How the CLI builds one kind of task. ``settings`` are JSON-able and stored in sketches."""

    add_options: Callable[[argparse.ArgumentParser], None]
    settings: Callable[[argparse.Namespace], dict[str, Any]]
    build: Callable[[dict[str, Any]], Any]
    #: (settings, --measure-name or None) -> (measurement circuit, description)
    measurement: Callable[[dict[str, Any], str | None], tuple[Circuit, str]]


# ---------------------------------------------------------------- microgpt

def _microgpt_options(parser: argparse.ArgumentParser) -> None:
    defaults = MicrogptConfig()
    group = parser.add_argument_group("microgpt model (defaults: the paper's, DESIGN §5)")
    group.add_argument("--steps", type=positive_int, default=defaults.n_steps,
                       help="training steps, one name each; n = steps down-weights")
    for name, help_text in (("n_embd", "embedding width"), ("n_head", "attention heads"),
                            ("n_layer", "transformer layers"), ("block_size", "context length"),
                            ("mlp_width", "MLP hidden width")):
        group.add_argument("--" + name.replace("_", "-"), type=positive_int,
                           default=getattr(defaults, name), help=help_text)
    group.add_argument("--data-seed", type=non_negative_int, default=defaults.seed,
                       help="seed of the names shuffle and the initial weights")


def _microgpt_settings(args: argparse.Namespace) -> dict[str, Any]:
    return {"n_steps": args.steps, "n_embd": args.n_embd, "n_head": args.n_head,
            "n_layer": args.n_layer, "block_size": args.block_size, "mlp_width": args.mlp_width,
            "seed": args.data_seed}


def _microgpt_config(settings: dict[str, Any]):
    known = {f.name for f in fields(MicrogptConfig)}
    return MicrogptConfig(**{k: v for k, v in settings.items() if k in known})


def _microgpt_build(settings: dict[str, Any]):
    config = _microgpt_config(settings)
    return build_task_array(config, config.n_steps)


def _microgpt_measurement(settings: dict[str, Any], name: str | None) -> tuple[Circuit, str]:
    config = _microgpt_config(settings)
    data = prepare(config)
    if name is None:
        name = names_for_steps(data, 1)[0]
    if len(name) >= config.block_size:  # name + BOS predicts len(name) + 1 tokens
        raise ValueError(f"--measure-name {name!r} has {len(name)} characters; the model reads "
                         f"at most block_size - 1 = {config.block_size - 1}, so its loss would "
                         "silently cover only a prefix")
    return loss_measurement_array(data, config, name), f"loss on {name!r}"


#: task kinds the CLI can run (``--task``); tests add small ones
CLI_TASKS: dict[str, CliTask] = {
    "microgpt": CliTask(_microgpt_options, _microgpt_settings, _microgpt_build,
                        _microgpt_measurement),
}


# ---------------------------------------------------------------- shared options

def _task_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", choices=sorted(CLI_TASKS), default="microgpt",
                        help="the training task")
    for kind in CLI_TASKS.values():
        kind.add_options(parser)


def _run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", choices=sorted(BACKENDS), default=default_backend(),
                        help="execution backend (default: the fastest installed)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _cluster_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("Dask cluster (optional extra circuitsketch[distributed]; "
                                      "default: this process only)")
    where = group.add_mutually_exclusive_group()
    where.add_argument("--workers", type=positive_int, default=None, metavar="N",
                       help="run the tasks on N local Dask worker processes")
    where.add_argument("--scheduler", default=None, metavar="ADDRESS",
                       help="run the tasks on the Dask cluster at ADDRESS (tcp://host:8786)")


@contextlib.contextmanager
def _cluster(args: argparse.Namespace) -> Iterator[Any]:
    """A Dask client for ``--workers`` / ``--scheduler`` (shared by all of a command's runs),
    or None."""
    if args.workers is None and args.scheduler is None:
        yield None
        return
    if args.workers is not None and args.workers < 1:
        raise ValueError(f"--workers must be at least 1, got {args.workers}")
    with connect(args.scheduler or args.workers) as client:
        yield client


def _contains(substring: str) -> tuple[str, Callable[[str], bool]]:
    return f"examples containing {substring!r}", lambda label: substring in label


def _indices(text: str) -> tuple[str, list[int]]:
    try:
        return f"indices {text}", [int(i) for i in text.split(",") if i.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated integers") from None


def _deletion_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("deletion sets (repeat the options for several sets, kept in "
                                      "command-line order; default: --delete-contains x)")
    group.add_argument("--delete-contains", dest="deletions", action="append", type=_contains,
                       metavar="SUBSTRING", help="delete the training examples whose label "
                                                 "(microgpt: the name) contains SUBSTRING")
    group.add_argument("--delete-indices", dest="deletions", action="append", type=_indices,
                       metavar="I,J,...", help="delete the training examples with these indices "
                                               "(microgpt: steps)")


def _measure_options(parser: argparse.ArgumentParser, default: str | None = "max",
                     several: bool = False) -> None:
    what = ("measurements: the trained model's loss on each NAME (one training for all; one "
            "table each)" if several else "measurement: the trained model's loss on NAME")
    parser.add_argument("--measure-name", default=default,
                        metavar="NAME,NAME,..." if several else "NAME",
                        help=f"{what} (default "
                             + (repr(default) if default else "the first training name") + ")")


def _measurements(kind: CliTask, settings: dict[str, Any], text: str | None
                  ) -> list[tuple[Circuit, str]]:
    """(circuit, description) for each name of a comma-separated ``--measure-name``."""
    if text is None:
        return [kind.measurement(settings, None)]
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise ValueError(f"--measure-name {text!r}: give at least one name")
    return [kind.measurement(settings, name) for name in names]


def _one_or_all(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The JSON of one measurement as before; several as ``{"measurements": [...]}``."""
    return results[0] if len(results) == 1 else {"measurements": results}


def _out_option(parser: argparse.ArgumentParser, what: str, plots: bool = False) -> None:
    parser.add_argument("--out", type=plot_dir if plots else output_dir, metavar="DIR",
                        help=f"write {what} into DIR (checked before any work)")


def _deletion_sets(args: argparse.Namespace) -> list[tuple[str, Any]]:
    return args.deletions or [_contains("x")]


def _weight_list(text: str) -> np.ndarray:
    """argparse type of ``--weights``: comma-separated finite numbers."""
    try:
        return np.array([finite_float(w) for w in text.split(",")])
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated finite "
                                         "numbers") from None


def _lds_subsets(text: str) -> int:
    """argparse type of ``--lds-subsets``: 0 (skip) or at least 2 (a rank correlation)."""
    value = non_negative_int(text)
    if value == 1:
        raise argparse.ArgumentTypeError("the LDS is a rank correlation: give 0 (skip) or >= 2")
    return value


def _weights(given: np.ndarray | None, default: np.ndarray) -> np.ndarray:
    return default if given is None else given


def _sketch_task(sketch) -> tuple[CliTask, dict[str, Any]]:
    kind = sketch.info.get("task")
    if kind not in CLI_TASKS:
        raise ValueError(f"the sketch was not made by the CLI for a known task (info.task = "
                         f"{kind!r}; known: {sorted(CLI_TASKS)})")
    return CLI_TASKS[kind], sketch.info["settings"]


def _write_json(out: Path | None, name: str, obj: Any) -> None:
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / name, obj)  # valid JSON (no NaN literal), written atomically
        print(f"wrote {out / name}")


# ---------------------------------------------------------------- the commands

def _run_precompute(args: argparse.Namespace) -> int:
    kind = CLI_TASKS[args.task]
    settings = kind.settings(args)
    task = kind.build(settings)
    start = time.perf_counter()
    with _cluster(args) as cluster:
        sketch = precompute(task, directions=args.directions, order=args.order, seed=args.seed,
                            batch_size=args.batch_size, backend=args.backend, path=args.out,
                            progress=not args.quiet, resume=not args.no_resume,
                            info={"task": args.task, "settings": settings}, cluster=cluster)
    print(f"sketch: s = {sketch.s} directions, order {sketch.order}, n = {sketch.n} examples, "
          f"states {list(sketch.state_shapes)} -> {args.out} "
          f"({time.perf_counter() - start:.1f} s)")
    return 0


def _run_predict(args: argparse.Namespace) -> int:
    sketch = load_sketch(args.sketch)
    kind, settings = _sketch_task(sketch)
    measured = _measurements(kind, settings, args.measure_name)
    sets = _deletion_sets(args)
    start = time.perf_counter()
    found = predict(sketch, [m for m, _ in measured], [d for _, d in sets], delta=args.delta,
                    order=args.order, backend=args.backend)
    seconds = time.perf_counter() - start
    results = []
    for (_, what), predictions in zip(measured, found):
        print(f"measurement: {what}; {seconds:.2f} s for {len(sets)} set(s) and "
              f"{len(measured)} measurement(s)")
        for (name, _), prediction in zip(sets, predictions):
            print(f"{name}: {prediction}")
        results.append({"measurement": what, "sets": [
            {"name": name, **p.to_dict()} for (name, _), p in zip(sets, predictions)]})
    _write_json(args.out, "predict.json", _one_or_all(results))
    return 0


def _run_exact(args: argparse.Namespace) -> int:
    kind = CLI_TASKS[args.task]
    settings = kind.settings(args)
    task = kind.build(settings)
    measured = _measurements(kind, settings, args.measure_name)
    circuits = [m for m, _ in measured]
    sets = _deletion_sets(args)
    found = exact_series(task, [d for _, d in sets], args.order, circuits, backend=args.backend,
                         batch_size=args.batch_size, progress=not args.quiet)
    weights = _weights(args.weights, np.linspace(0.0, 1.0, 11))
    xs = weights[None, :, None] * found[0].indicators[:, None, :]  # [set, w, n]
    truths = retrained_values(task, circuits, xs.reshape(-1, task.n_examples),
                              backend=args.backend, batch_size=args.batch_size,
                              progress=not args.quiet).reshape(len(sets), len(weights), -1)
    results = []
    for column, (series, (_, what)) in enumerate(zip(found, measured)):
        print(f"measurement: {what}")
        plot = None if len(measured) == 1 else column  # exact-I.png, or exact-M-I.png
        results.append({"measurement": what, "sets": [
            _exact_table(args, series, i, name, weights, truths[i, :, column], what, plot)
            for i, (name, _) in enumerate(sets)]})
    _write_json(args.out, "exact.json", _one_or_all(results))
    return 0


def _exact_table(args: argparse.Namespace, series, i: int, name: str, weights: np.ndarray,
                 truths: np.ndarray, what: str, plot: int | None) -> dict[str, Any]:
    """Print set ``i``'s coefficients and errors per order at each weight (and plot them)."""
    sums = np.array([series.partial_sums(w)[i] for w in weights])  # [W, k+1]
    deleted = np.flatnonzero(series.indicators[i])
    print(f"{name} (|D| = {deleted.size}): coefficients "
          f"{np.array2string(series.coefficients[i], precision=4)}")
    header = "  ".join(f"err order {r}" for r in range(series.order + 1))
    print(f"  w      retrained   {header}")
    for w, truth, row in zip(weights, truths, sums):
        print(f"  {w:4.2f}  {truth:11.6g}  " + "  ".join(f"{e:+11.3g}" for e in row - truth))
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        grid = np.linspace(0.0, max(1.0, weights.max()), 101)
        fine = np.array([series.partial_sums(w)[i] for w in grid])
        stem = f"exact-{i}" if plot is None else f"exact-{plot}-{i}"
        plot_curves(str(args.out / f"{stem}.png"), grid,
                    {f"order {r}": (fine[:, r], None) for r in range(1, series.order + 1)},
                    weights, truths, title=f"exact series, {name}", ylabel=what)
    return {"name": name, "deleted": deleted.tolist(),
            "coefficients": series.coefficients[i].tolist(), "weights": weights.tolist(),
            "retrained": truths.tolist(), "partial_sums": sums.tolist()}


def _run_stability(args: argparse.Namespace) -> int:
    kind = CLI_TASKS[args.task]
    settings = kind.settings(args)
    task = kind.build(settings)
    measurement, what = kind.measurement(settings, args.measure_name)
    sketch = precompute(task, directions=args.directions, order=args.order, seed=args.seed,
                        batch_size=args.directions, backend=args.backend, path=None,
                        progress=not args.quiet)
    profile = stability_profile(sketch, measurement, backend=args.backend)
    print(f"measurement: {what}; log2 sqrt(C(n+r-1, r)) |c_r| over {sketch.s} directions")
    for r, value in enumerate(profile.median()):
        print(f"  r = {r:3d}: median {value:9.3f}   range [{profile.log2_norms[:, r].min():.3f}, "
              f"{profile.log2_norms[:, r].max():.3f}]")
    print(f"growth: {profile.growth_bits_per_order():.3f} bits per order")
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        plot_stability(profile, str(args.out / "stability.png"), title=f"stability, {what}")
    _write_json(args.out, "stability.json", {"measurement": what, **profile.to_dict()})
    return 0


def _run_evaluate(args: argparse.Namespace) -> int:
    sketch = load_sketch(args.sketch)
    kind, settings = _sketch_task(sketch)
    task = kind.build(settings)
    measured = _measurements(kind, settings, args.measure_name)
    sets = _deletion_sets(args)
    with _cluster(args) as cluster:
        return _evaluate_with(args, sketch, task, measured, sets, cluster)


def _evaluate_with(args: argparse.Namespace, sketch, task, measured: list[tuple[Circuit, str]],
                   sets: list[tuple[str, Any]], cluster: Any) -> int:
    """Reports, curves and LDS for every measurement, each retraining shared by all of them."""
    common = dict(backend=args.backend, batch_size=args.batch_size, progress=not args.quiet,
                  cluster=cluster)
    circuits = [m for m, _ in measured]
    reports = evaluate_deletions(sketch, task, circuits, [d for _, d in sets],
                                 names=[name for name, _ in sets], delta=args.delta, **common)
    results: list[dict[str, Any]] = []
    for report, (_, what) in zip(reports, measured):
        print(f"measurement: {what}")
        print(report.table())
        results.append({"measurement": what, **report.to_dict()})
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        for column, report in enumerate(reports):
            for i, (name, _) in enumerate(sets):
                stem = f"stderr-{i}" if len(measured) == 1 else f"stderr-{column}-{i}"
                plot_stderr_by_s(report, i, str(args.out / f"{stem}.png"),
                                 title=f"term standard errors by s, {name}")
    weights = _weights(args.weights, np.array([]))
    if len(weights):
        for result in results:
            result["curves"] = []
        for i, (name, deleted) in enumerate(sets):
            curves = deletion_curve(sketch, task, circuits, deleted, weights, **common)
            for column, (curve, result) in enumerate(zip(curves, results)):
                result["curves"].append({"name": name, **curve.to_dict()})
                if args.out is not None:
                    args.out.mkdir(parents=True, exist_ok=True)
                    stem = f"curve-{i}" if len(measured) == 1 else f"curve-{column}-{i}"
                    plot_deletion_curve(curve, str(args.out / f"{stem}.png"),
                                        title=f"s = {sketch.s}, {name}",
                                        ylabel=measured[column][1])
    if args.lds_subsets:
        found = linear_datamodeling_score(sketch, task, circuits, n_subsets=args.lds_subsets,
                                          fraction=args.lds_fraction, seed=args.seed, **common)
        for lds, result in zip(found, results):
            print(f"{result['measurement']}: LDS over {args.lds_subsets} random deletion sets of "
                  f"{args.lds_fraction:.0%}: {lds.lds:.3f} (first-order baseline "
                  f"{lds.lds_first_order:.3f})")
            result["lds"] = lds.to_dict()
    _write_json(args.out, "evaluate.json", _one_or_all(results))
    return 0


def _run_scores(args: argparse.Namespace) -> int:
    kind = CLI_TASKS[args.task]
    settings = kind.settings(args)
    task = kind.build(settings)
    measured = _measurements(kind, settings, args.measure_name)
    start = time.perf_counter()
    result = influence_scores(task, [m for m, _ in measured], backend=args.backend,
                              checkpoint_every=args.checkpoint_every, progress=not args.quiet)
    print(f"scores of {task.n_examples} examples for {len(measured)} measurement(s) in "
          f"{time.perf_counter() - start:.1f} s (first-order change of the measurement when the "
          "example is deleted)")
    report = []
    for j, (_, what) in enumerate(measured):
        top = result.top(j, args.top_k, task.example_labels)
        print(f"{what}: f(0) = {result.f0[j]:.6g}")
        for row in top:
            label = "" if row["label"] is None else f" {row['label']!r}"
            print(f"  {row['direction']:5s} {row['score']:+11.4g}  example {row['index']}{label}")
        report.append({"measurement": what, "f0": float(result.f0[j]), "top": top})
    args.out.mkdir(parents=True, exist_ok=True)
    np.save(args.out / "scores.npy", result.values)
    print(f"wrote {args.out / 'scores.npy'} (float64 [n_train, n_test] = {list(result.values.shape)})")
    _write_json(args.out, "scores.json", {
        "layout": "scores.npy[i, j] = d measurement_j / d x_i at x = 0 (x_i: down-weight of "
                  "training example i); [n_train, n_test] as dattri's lds metric takes",
        "n_train": task.n_examples, "measurements": report})
    return 0


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    """Add the six subcommands; each sets ``run`` (args -> exit code)."""
    formatter = {"formatter_class": HelpFormatter}
    p = subparsers.add_parser(
        "precompute",
        help="sketch a training run: s random directions in order-k Taylor arithmetic",
        description="Train once per random direction psi_j in truncated-Taylor arithmetic and "
                    "store the series-valued models (resumable: rerun the same command after an "
                    "interruption).", **formatter)
    _task_options(p)
    p.add_argument("--directions", type=positive_int, default=64,
                   help="number s of random directions")
    p.add_argument("--order", type=positive_int, default=3, help="Taylor order k")
    p.add_argument("--seed", type=non_negative_int, default=0,
                   help="direction seed: psi_j depends on (seed, j)")
    p.add_argument("--batch-size", type=positive_int, default=32, help="directions trained per run")
    p.add_argument("--out", type=output_dir, required=True, metavar="PATH",
                   help="sketch directory to write")
    p.add_argument("--no-resume", action="store_true",
                   help="discard the shards of an interrupted run at PATH.partial")
    _run_options(p)
    _cluster_options(p)
    p.set_defaults(run=_run_precompute)

    p = subparsers.add_parser(
        "predict", help="estimate a measurement after deleting sets of training examples",
        description="Predict f(1_D) for each deletion set D from a sketch: each order's term "
                    "with its standard error and a median-of-means interval.", **formatter)
    p.add_argument("--sketch", type=Path, required=True, metavar="PATH", help="sketch directory")
    _deletion_options(p)
    _measure_options(p, several=True)
    p.add_argument("--delta", type=float, default=0.05,
                   help="failure probability of the median-of-means interval")
    p.add_argument("--order", type=positive_int, default=None,
                   help="use orders 1..ORDER (default: all)")
    _out_option(p, "predict.json")
    _run_options(p)
    p.set_defaults(run=_run_predict)

    p = subparsers.add_parser(
        "exact", help="exact Taylor series along known deletion sets vs retraining (paper Fig. 2)",
        description="One Taylor run along the real directions 1_D gives the exact coefficients of "
                    "w -> f(w 1_D); compare each truncation order with retrainings at the "
                    "weights.", **formatter)
    _task_options(p)
    _deletion_options(p)
    _measure_options(p, several=True)
    p.add_argument("--order", type=positive_int, default=6, help="Taylor order k")
    p.add_argument("--weights", type=_weight_list, default=None, metavar="W,W,...",
                   help="down-weights w to retrain at (default 0,0.1,...,1)")
    p.add_argument("--batch-size", type=positive_int, default=16, help="sets / retrainings per run")
    _out_option(p, "exact.json and one exact-I.png per set", plots=True)
    _run_options(p)
    p.set_defaults(run=_run_exact)

    p = subparsers.add_parser(
        "stability", help="Taylor-norm growth against the order (paper Fig. 1)",
        description="For a few random directions at a high order, print and plot "
                    "log2(sqrt(C(n+r-1, r)) |c_r|), an estimate of log2 ||grad^r f(0) / r!||_F; "
                    "linear growth or less means the stability assumption holds.", **formatter)
    _task_options(p)
    _measure_options(p, default=None)
    p.add_argument("--directions", type=positive_int, default=12,
                   help="number of random directions")
    p.add_argument("--order", type=int_at_least_2, default=30,
                   help="Taylor order k, at least 2 to fit a growth rate (the paper uses 100)")
    p.add_argument("--seed", type=non_negative_int, default=0, help="direction seed")
    _out_option(p, "stability.json and stability.png", plots=True)
    _run_options(p)
    p.set_defaults(run=_run_stability)

    p = subparsers.add_parser(
        "evaluate", help="compare a sketch's predictions with real retraining",
        description="Retrain with each deletion set removed and report predicted vs true change "
                    "per order and per number of directions, the first-order baseline, optional "
                    "deletion curves (paper Fig. 3) and the Linear Datamodeling Score.",
        **formatter)
    p.add_argument("--sketch", type=Path, required=True, metavar="PATH", help="sketch directory")
    _deletion_options(p)
    _measure_options(p, several=True)
    p.add_argument("--delta", type=float, default=0.05, help="failure probability of the interval")
    p.add_argument("--weights", type=_weight_list, default=None, metavar="W,W,...",
                   help="also retrain at these down-weights w and plot the curve f(w 1_D)")
    p.add_argument("--lds-subsets", type=_lds_subsets, default=0,
                   help="number of random deletion sets for the LDS (0: skip; else >= 2)")
    p.add_argument("--lds-fraction", type=fraction, default=0.1,
                   help="size of each LDS set / n, in (0, 1]")
    p.add_argument("--seed", type=non_negative_int, default=0, help="seed of the LDS subsets")
    p.add_argument("--batch-size", type=positive_int, default=16, help="retrainings per run")
    _out_option(p, "evaluate.json and curve-I.png", plots=True)
    _run_options(p)
    _cluster_options(p)
    p.set_defaults(run=_run_evaluate)

    p = subparsers.add_parser(
        "scores", help="exact per-example scores: d measurement / d down-weight of each example",
        description="Reverse mode through the whole training run (checkpointed): for each "
                    "measurement, the derivative with respect to every training example's "
                    "down-weight at x = 0, i.e. the first-order change when the example is "
                    "deleted. Writes scores.npy [n_train, n_test] and scores.json (top "
                    "examples per measurement).", **formatter)
    _task_options(p)
    _measure_options(p, several=True)
    p.add_argument("--top-k", type=positive_int, default=10,
                   help="examples listed per measurement and direction")
    p.add_argument("--checkpoint-every", type=positive_int, default=None, metavar="C",
                   help="store every C-th state of the forward run (default ceil(sqrt(steps)))")
    p.add_argument("--out", type=output_dir, required=True, metavar="DIR",
                   help="write scores.npy and scores.json into DIR")
    _run_options(p)
    p.set_defaults(run=_run_scores)


__all__ = ["CLI_TASKS", "CliTask", "register_cli"]
