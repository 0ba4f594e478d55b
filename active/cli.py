"""The ``circuitsketch curiosity`` subcommands: ``score`` and ``compare``.

* ``curiosity score``: train a model on a synthetic 1-D data set (``--target``, ``--n``,
  ``--noise``, ``--seed``) with its regularity tangent, report the slow-down factor of the
  tangent run over plain training (same backend) and the expected curiosity of candidate
  inputs on a grid, most curious first.
* ``curiosity compare``: pool-based active learning with curiosity scores against random
  queries over several seeds (``active.loop``); prints the held-out error per round and, with
  ``--out DIR``, writes ``active_learning.json`` and ``active_learning.png``.

Models: ``--model poly`` (polynomial ridge regression, s by leave-one-out) or ``--model mlp``
(one-hidden-layer tanh MLP with a fixed ``--strength``).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..backends import BACKENDS
from ..cli import (HelpFormatter, finite_float, non_negative_int, output_dir, plot_dir,
                   positive_float, positive_int)
from ..sketch.store import write_json
from .curiosity import expected_curiosity
from .loop import (STRATEGIES, TARGETS, ActiveLearningProblem, noisy_sample, plot_learning_curves,
                   run_active_learning)
from .models import PolynomialRidge, TanhMLP
from .regularity import OPTIMIZERS, measure_slowdown, regression_task, regularity_tangent


def _model(args: argparse.Namespace):
    if args.model == "poly":
        return PolynomialRidge(degree=args.degree)
    return TanhMLP(hidden=args.hidden, strength=args.strength, lr=args.lr, momentum=args.momentum,
                   noise_std=args.noise)


def _common_options(parser: argparse.ArgumentParser, *, plots: bool) -> None:
    model = parser.add_argument_group("model and training")
    model.add_argument("--model", choices=("poly", "mlp"), default="poly",
                       help="polynomial ridge regression (s by leave-one-out) or tanh MLP")
    model.add_argument("--degree", type=non_negative_int, default=5,
                       help="polynomial degree (poly)")
    model.add_argument("--hidden", type=positive_int, default=8, help="hidden units (mlp)")
    model.add_argument("--strength", type=positive_float, default=1e-3, help="regularity s (mlp)")
    model.add_argument("--lr", type=positive_float, default=0.02, help="learning rate (mlp)")
    model.add_argument("--momentum", type=finite_float, default=0.9,
                       help="heavy-ball momentum (mlp)")
    model.add_argument("--optimizer", choices=sorted(OPTIMIZERS), default="gd",
                       help="gd = heavy-ball gradient descent (poly: settings from the Hessian)")
    model.add_argument("--steps", type=positive_int, default=1500, help="full-batch training steps")
    data = parser.add_argument_group("data: y = target(u) + N(0, noise^2), u uniform in [-1, 1]")
    data.add_argument("--target", choices=sorted(TARGETS), default="sin", help="function to learn")
    data.add_argument("--noise", type=_non_negative_float, default=0.05,
                      help="label noise standard deviation")
    parser.add_argument("--backend", choices=sorted(BACKENDS), default="numba-cpu",
                        help="execution backend")
    parser.add_argument("--out", type=plot_dir if plots else output_dir, metavar="DIR",
                        help="write JSON (and plots) here (checked before any work)")


def _non_negative_float(text: str) -> float:
    value = finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative")
    return value


def _write_json(out: Path | None, name: str, obj: Any) -> None:
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / name, obj)  # valid JSON (no NaN literal), written atomically
        print(f"wrote {out / name}")


def _run_score(args: argparse.Namespace) -> int:
    model = _model(args)
    inputs, targets = noisy_sample(args.target, args.n, args.noise, np.random.default_rng(args.seed))
    hyper = model.hyperparameters(inputs, targets)
    task = regression_task(model, inputs, targets, hyper, n_steps=args.steps,
                           optimizer=args.optimizer, seed=args.seed)
    trained = regularity_tangent(task, backend=args.backend)
    slowdown = measure_slowdown(task, backend=args.backend, repeats=args.repeats)
    candidates = np.linspace(-1.0, 1.0, args.candidates)
    scores = expected_curiosity(model, trained.theta, trained.t, candidates, hyper.noise_std,
                                backend=args.backend)
    print(f"{args.model} model, {len(targets)} examples, s = {hyper.strength:.4g}, "
          f"{args.steps} steps ({args.optimizer}), backend {args.backend}")
    print(f"theta = {np.array2string(trained.theta, precision=4)}")
    print(f"t = d theta / d s = {np.array2string(trained.t, precision=4)}")
    print(f"slow-down of the tangent run over plain training: {slowdown.factor:.2f}x "
          f"({slowdown.tangent_seconds:.3f} s vs {slowdown.real_seconds:.3f} s, best of {args.repeats})")
    print("most curious candidates (u, E[score^2]):")
    for i in np.argsort(-scores, kind="stable")[: args.top]:
        print(f"  {candidates[i]:+.3f}  {scores[i]:.4g}")
    _write_json(args.out, "curiosity_scores.json", {
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                     if k != "run"},
        "strength": hyper.strength, "theta": trained.theta.tolist(), "tangent": trained.t.tolist(),
        "slowdown": {"factor": slowdown.factor, "real_seconds": slowdown.real_seconds,
                     "tangent_seconds": slowdown.tangent_seconds},
        "candidates": candidates.tolist(), "expected_curiosity": scores.tolist()})
    return 0


def _run_compare(args: argparse.Namespace) -> int:
    model = _model(args)
    problem = ActiveLearningProblem(target=args.target, noise_std=args.noise,
                                    pool_size=args.pool, n_initial=args.initial)
    start = time.perf_counter()
    run = run_active_learning(model, problem, seeds=range(args.seed, args.seed + args.seeds),
                              n_rounds=args.rounds, per_round=args.per_round, n_steps=args.steps,
                              random_draws=args.random_draws, optimizer=args.optimizer,
                              backend=args.backend)
    seconds = time.perf_counter() - start
    print(f"held-out MSE, geometric mean over {args.seeds} seeds ({args.random_draws} random "
          f"draws each), after each round of {args.per_round} queries:")
    for strategy in STRATEGIES:
        curve = run.geometric_mean_error(strategy)
        print(f"  {strategy:>9}: " + " ".join(f"{e:.2e}" for e in curve))
    margin = run.final_log10_margin()
    print(f"final: curiosity beats random by {margin:+.2f} in log10 MSE (x{10 ** margin:.2f}) "
          f"on average, on {run.win_fraction():.0%} of seeds; {seconds:.1f} s "
          f"({run.training_seconds:.1f} s training)")
    if args.out is not None:
        _write_json(args.out, "active_learning.json", {
            "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                         if k != "run"},
            "seeds": list(run.seeds), "final_log10_margin": margin,
            "win_fraction": run.win_fraction(), "seconds": seconds,
            "geometric_mean_error": {s: run.geometric_mean_error(s).tolist() for s in STRATEGIES},
            "errors": {s: run.errors[s].tolist() for s in STRATEGIES}})
        plot_learning_curves(run, str(args.out / "active_learning.png"),
                             title=f"{args.model}, target {args.target}, noise {args.noise}")
        print(f"wrote {args.out / 'active_learning.png'}")
    return 0


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    """Add ``curiosity`` with its two subcommands; each sets ``run`` (args -> exit code)."""
    formatter = {"formatter_class": HelpFormatter}
    parser = subparsers.add_parser(
        "curiosity", help="regularity tangents and curiosity scores for active learning",
        description="Regularity tangents t = d theta / d s computed alongside training, "
                    "curiosity scores <t, grad loss> and active learning with them (Eaton, "
                    "arXiv 2411.15292).", **formatter)
    parser.set_defaults(run=lambda args: parser.print_help() or 2)
    commands = parser.add_subparsers(dest="curiosity_command", metavar="SUBCOMMAND")

    p = commands.add_parser(
        "score", help="train with the regularity tangent and score candidate inputs",
        description="Train on a synthetic data set with the tangent, report the slow-down over "
                    "plain training and the expected curiosity of a grid of candidates.",
        **formatter)
    _common_options(p, plots=False)
    p.add_argument("--n", type=positive_int, default=10, help="labelled examples")
    p.add_argument("--seed", type=non_negative_int, default=0, help="data seed")
    p.add_argument("--candidates", type=positive_int, default=41,
                   help="candidate inputs on [-1, 1]")
    p.add_argument("--top", type=positive_int, default=5, help="candidates to print")
    p.add_argument("--repeats", type=positive_int, default=3, help="timing repeats (best of)")
    p.set_defaults(run=_run_score)

    p = commands.add_parser(
        "compare", help="active learning with curiosity scores against random queries",
        description="Pool-based active learning: each round retrain (with the tangent), score "
                    "the pool, query the most curious points; the same with random queries.",
        **formatter)
    _common_options(p, plots=True)
    p.add_argument("--seeds", type=positive_int, default=16, help="number of seeds (data sets)")
    p.add_argument("--seed", type=non_negative_int, default=0, help="first seed")
    p.add_argument("--rounds", type=positive_int, default=6, help="query rounds")
    p.add_argument("--per-round", type=positive_int, default=1, help="queries per round")
    p.add_argument("--random-draws", type=positive_int, default=4,
                   help="independent random query sequences per seed")
    p.add_argument("--pool", type=positive_int, default=100, help="pool size")
    p.add_argument("--initial", type=positive_int, default=6, help="initial labelled examples")
    p.set_defaults(run=_run_compare)
