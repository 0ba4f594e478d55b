"""Our backends on the real microgpt training step, next to the JAX peer (issue 4, DESIGN §9).

    python benchmarks/bench_backends.py                 # everything, JAX included if installed
    python benchmarks/bench_backends.py --no-jax --steps 3 --directions 1 64

For each configuration a short run of the real step Program (``build_task``) is timed after a
warm-up run (which compiles): the real step for one model and for a batch of 16 retrainings,
and order-k steps (k = 1, 3, 6) along 1, 64 and 512 random complex unit directions
(x = z psi, psi uniform on the complex sphere, as the sketch draws them). Reported: compile time
(the tape, and the first run: kernel compile or cache load plus setup), setup time of a run,
ms per step, ms per step and direction, ns per
gate*direction (gates: the step's computing nodes), peak traced memory, the order-k cost per
direction relative to the real step against the flop-count limit (k+1)(k+2)/2, and the projected
time of the paper's Fig. 3 (500 directions, k = 3, 1000 steps). With JAX importable
(``pip install -e '.[bench]'``), ``benchmarks/jax_microgpt.py`` is timed in the same run and the
ratios ours/JAX printed. ``--cold`` compiles kernels into a fresh cache directory.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import tracemalloc

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def _arguments() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backend", default="numba-cpu", choices=["numba-cpu", "numba-cuda", "reference"])
    p.add_argument("--steps", type=int, default=3, help="timed training steps per configuration")
    p.add_argument("--orders", type=int, nargs="*", default=[1, 3, 6])
    p.add_argument("--directions", type=int, nargs="*", default=[1, 64, 512])
    p.add_argument("--retrainings", type=int, default=16)
    p.add_argument("--no-jax", action="store_true", help="skip the JAX peer")
    p.add_argument("--cold", action="store_true", help="compile kernels into a fresh cache")
    return p.parse_args()


def main() -> None:
    args = _arguments()
    if args.cold:
        os.environ["CIRCUITSKETCH_CACHE"] = tempfile.mkdtemp(prefix="circuitsketch-bench-")
    import circuitsketch as cs
    from circuitsketch.backends import get_backend
    from circuitsketch.backends.tape import compile_tape
    from circuitsketch.frontends.microgpt import build_task
    from circuitsketch.ir import Op, Program

    backend = get_backend(args.backend)
    task = build_task(n_steps=args.steps + 1)
    step = task.program.step
    gates = sum(e.op not in (Op.INPUT, Op.CONST) for e in step.eqns)
    macs = sum(len(e.args) // 2 if e.op is Op.DOT else e.op is Op.MUL for e in step.eqns)
    print(f"microgpt step: {len(step)} nodes, {gates} computing gates, {macs} multiply(-add)s; "
          f"backend {args.backend}; {args.steps} timed steps after 1 warm-up step")
    rows, results = [], {}

    tapes: dict[int, tuple[float, dict]] = {}

    def timed(program: Program, x, batch: int | None) -> dict:
        """A warm-up run of one step (compiles), then runs of 1 and 1 + ``args.steps`` steps:
        their difference is the time of ``args.steps`` steps without the setup."""
        def run(steps: int) -> float:
            p = Program(program.step, steps, program.carry, program.per_step, program.weight)
            start = time.perf_counter()
            backend.run_program(p, task.init, data=task.data, static=task.static, x=x,
                                example_ids=task.example_ids[:steps], batch=batch)
            return time.perf_counter() - start
        if program.order not in tapes:
            t0 = time.perf_counter()
            stats = compile_tape(program.step, program).stats
            tapes[program.order] = (time.perf_counter() - t0, stats)
        first = run(1)
        base = run(1)
        tracemalloc.start()
        total = run(1 + args.steps)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return {"tape_s": tapes[program.order][0], "first_s": first, "setup_s": base,
                "step_s": (total - base) / args.steps, "peak_mb": peak / 2**20}

    def row(what: str, r: dict, directions: int) -> None:
        per = r["step_s"] / directions
        rows.append(f"{what:28s} {r['tape_s']:7.2f} {r['first_s']:8.2f} {r['setup_s']:8.2f} {r['step_s'] * 1e3:11.2f} "
                    f"{per * 1e3:11.3f} {per / gates * 1e9:9.2f} {r['peak_mb']:9.1f}")
        print(rows[-1], flush=True)

    print(f"{'configuration':28s} {'tape s':>7s} {'first s':>8s} {'setup s':>8s} {'ms/step':>11s} {'ms/step/dir':>11s} "
          f"{'ns/gate/dir':>9s} {'peak MB':>9s}")
    zeros = np.zeros(task.n_examples)
    results["real"] = timed(task.program, zeros, None)
    row("real, 1 model", results["real"], 1)
    xs = (np.random.default_rng(0).uniform(size=(args.retrainings, task.n_examples)) < 0.1).astype(float)
    results["retrain"] = timed(task.program, xs, args.retrainings)
    row(f"real, {args.retrainings} retrainings", results["retrain"], args.retrainings)
    rng = np.random.default_rng(1)
    for k in args.orders:
        lowered = cs.taylor(task.program, k)
        for n in args.directions:
            psi = rng.normal(size=(n, task.n_examples)) + 1j * rng.normal(size=(n, task.n_examples))
            x = np.zeros((n, k + 1, task.n_examples), dtype=complex)
            x[:, 1] = psi / np.linalg.norm(psi, axis=1, keepdims=True)
            results[k, n] = timed(lowered, x, n)
            row(f"order {k}, {n} direction{'s' if n > 1 else ''}", results[k, n], n)

    real = results["real"]["step_s"]
    print("\norder-k cost per direction / real step (flop limit (k+1)(k+2)/2):")
    for k in args.orders:
        best = min(results[k, n]["step_s"] / n for n in args.directions)
        print(f"  k={k}: {best / real:7.1f}   limit {(k + 1) * (k + 2) // 2}")
    if 3 in args.orders:
        n = max(args.directions)
        fig3 = results[3, n]["step_s"] / n * 500 * 1000
        print(f"projected Fig. 3 (500 directions, k=3, 1000 steps) at {n} directions per batch: "
              f"{fig3 / 60:.1f} min")
    if not args.no_jax:
        _compare_with_jax(args, results)


def _compare_with_jax(args: argparse.Namespace, results: dict) -> None:
    sys.path.insert(0, HERE)
    try:
        from jax_microgpt import jax_timings
    except ImportError as err:
        print(f"\nJAX peer not importable ({err}); pip install -e '.[bench]' for the comparison")
        return
    print("\ntiming the JAX peer (compiles jet at each order: minutes) ...", flush=True)
    jax = jax_timings(n_steps_warm=max(args.steps, 3), orders=tuple(args.orders),
                      directions=tuple(args.directions))
    print(f"JAX {jax['jax_version']} on {jax['backend']}; ours / JAX (below 1: we are faster)")
    print(f"  real step:            {results['real']['step_s'] / jax['real']['step_s']:8.2f}   "
          f"(JAX {jax['real']['step_s'] * 1e3:.3f} ms; lax.scan {jax['real_scan']['step_s'] * 1e3:.3f} ms)")
    ours = results["retrain"]["step_s"] / args.retrainings
    print(f"  per retraining:       {ours / jax['retrain_batch']['per_retraining_s']:8.2f}")
    for k in args.orders:
        for n in args.directions:
            theirs = jax["jet"].get(k, {}).get(n, {})
            if "per_direction_s" in theirs:
                ours = results[k, n]["step_s"] / n
                print(f"  order {k}, {n:3d} directions, per direction: {ours / theirs['per_direction_s']:8.2f}"
                      f"   (JAX {theirs['per_direction_s'] * 1e3:.3f} ms)")


if __name__ == "__main__":
    main()
