"""The array engine on the array microgpt step, against the scalar tape, the reference and JAX.

One run prints, per configuration, milliseconds per training step (and per direction):

* the real step (1 model, and 16 retrainings) of :func:`circuitsketch.frontends.microgpt_array.build_task_array` on
  ``numba-cpu`` (the array engine), the same model traced with Values
  (:func:`circuitsketch.frontends.microgpt.build_task`) on ``numba-cpu`` (the scalar tape), and
  the array program on ``reference`` (numpy);
* orders ``--orders`` (default 3) per complex direction at 1 and 64 directions (array engine
  and scalar tape);
* the time of the first run in this process (compilation, or loading compiled code from the
  kernel cache: ``--cold`` points the cache at a fresh directory, so it is the cold compile)
  and the arena bytes per direction of the memory plan;
* with JAX importable, ``benchmarks/jax_microgpt.py`` in the same process (``jit`` +
  ``lax.scan`` real step, ``vmap`` over retrainings, ``jet`` per real direction).

    .venv/bin/python benchmarks/bench_array.py [--steps 5] [--cold] [--no-jax]

A step's time is the median gap between successive steps of one run (``progress`` callbacks),
after a warm-up run.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def _arguments() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=5, help="timed training steps per configuration")
    p.add_argument("--directions", type=int, nargs="+", default=[1, 64])
    p.add_argument("--orders", type=int, nargs="+", default=[3], help="Taylor orders timed")
    p.add_argument("--cold", action="store_true", help="compile into a fresh kernel cache")
    p.add_argument("--no-jax", action="store_true", help="skip the JAX peer")
    p.add_argument("--no-scalar", action="store_true", help="skip the scalar tape rows")
    return p.parse_args()


def _timer(backend: str, task, steps: int):
    """``timed(program, x, batch) -> (first run s, s per step)``."""
    from circuitsketch.backends import get_backend
    from circuitsketch.ir import Program

    module = get_backend(backend)

    def run(program, x, batch, n: int) -> list[float]:
        """Run ``n`` steps; the times at which each step finished (progress callbacks)."""
        p = Program(program.step, n, program.carry, program.per_step, program.weight)
        marks = [time.perf_counter()]
        module.run_program(p, task.init, data=task.data, static=task.static, x=x,
                           example_ids=task.example_ids[:n], batch=batch,
                           progress=lambda t: marks.append(time.perf_counter()))
        return marks

    def timed(program, x, batch, n_steps: int = steps) -> tuple[float, float]:
        """(first run, per step): the first run compiles (or loads the cache); a step's time
        is the median gap between the progress calls of a run of 1 + ``n_steps`` steps (the
        first gap, which includes the setup, left out)."""
        marks = run(program, x, batch, 1)
        first = marks[-1] - marks[0]
        marks = run(program, x, batch, 1 + n_steps)
        return first, float(np.median(np.diff(marks[1:])))
    return timed


def _directions(rng, n: int, k: int, n_examples: int) -> np.ndarray:
    psi = rng.normal(size=(n, n_examples)) + 1j * rng.normal(size=(n, n_examples))
    x = np.zeros((n, k + 1, n_examples), dtype=complex)
    x[:, 1] = psi / np.linalg.norm(psi, axis=1, keepdims=True)
    return x


def main() -> None:
    args = _arguments()
    if args.cold:
        os.environ["CIRCUITSKETCH_CACHE"] = tempfile.mkdtemp(prefix="circuitsketch-bench-")
    import circuitsketch as cs
    from circuitsketch.backends import array_engine
    from circuitsketch.frontends.microgpt import build_task
    from circuitsketch.frontends.microgpt_array import build_task_array

    n_steps = max(args.steps, 2) + 1  # the reference row times 2 steps
    array_task, scalar_task = build_task_array(n_steps=n_steps), build_task(n_steps=n_steps)
    print(f"array microgpt step: {len(array_task.program.step)} array nodes (scalar: "
          f"{len(scalar_task.program.step)} nodes); {args.steps} timed steps after a warm-up")
    print(f"{'configuration':34s} {'first s':>8s} {'ms/step':>10s} {'ms/step/dir':>12s}")
    results: dict = {}

    def row(key, what: str, first: float, step: float, n: int) -> None:
        results[key] = step / n
        print(f"{what:34s} {first:8.2f} {step * 1e3:10.3f} {step / n * 1e3:12.3f}", flush=True)

    zeros = np.zeros(array_task.n_examples)
    array_timed = _timer("numba-cpu", array_task, args.steps)
    row("array real", "real, array engine", *array_timed(array_task.program, zeros, None), 1)
    retrain = (np.random.default_rng(2).uniform(size=(16, array_task.n_examples)) < 0.1) * 1.0
    row("array retrain", "real, 16 retrainings, array engine",
        *array_timed(array_task.program, retrain, 16), 16)
    if not args.no_scalar:
        scalar_timed = _timer("numba-cpu", scalar_task, args.steps)
        row("scalar real", "real, scalar tape", *scalar_timed(scalar_task.program, zeros, None), 1)
    reference_timed = _timer("reference", array_task, 2)
    row("reference real", "real, reference (numpy)",
        *reference_timed(array_task.program, zeros, None, 2), 1)
    rng = np.random.default_rng(0)
    for k in args.orders:
        lowered_array = cs.taylor(array_task.program, k)
        lowered_scalar = cs.taylor(scalar_task.program, k)
        for n in args.directions:
            x = _directions(rng, n, k, array_task.n_examples)
            row(("array", k, n), f"order {k}, {n} dir, array engine",
                *array_timed(lowered_array, x, n), n)
            plan = array_engine.plan_program(lowered_array)
            nb = array_engine.block_width(plan, n)
            print(f"{'':34s} arena {array_engine.arena_bytes(plan, nb) / 2**20:.1f} MiB per "
                  f"block of {nb} direction(s)")
            if not args.no_scalar:
                row(("scalar", k, n), f"order {k}, {n} dir, scalar tape",
                    *scalar_timed(lowered_scalar, x, n), n)
    _ratios(args, results)
    if not args.no_jax:
        _jax(args, results)


def _ratios(args, results: dict) -> None:
    print("\narray engine / scalar tape (below 1: the array engine is faster):")
    if "scalar real" in results:
        print(f"  real step:        {results['array real'] / results['scalar real']:8.2f}")
        for k in args.orders:
            for n in args.directions:
                print(f"  order {k}, {n:3d} dir: "
                      f"{results['array', k, n] / results['scalar', k, n]:8.2f}")
    print(f"array engine / reference, real step: "
          f"{results['array real'] / results['reference real']:8.3f}")


def _jax(args, results: dict) -> None:
    sys.path.insert(0, HERE)
    try:
        from jax_microgpt import jax_timings
    except ImportError as err:
        print(f"\nJAX peer not importable ({err}); pip install jax for the comparison")
        return
    print("\ntiming the JAX peer (jit, lax.scan, vmap, jet) ...", flush=True)
    jax = jax_timings(n_steps_warm=max(args.steps, 3), orders=tuple(args.orders),
                      directions=tuple(args.directions))
    print(f"JAX {jax['jax_version']} on {jax['backend']}: ours / JAX (below 1: we are faster)")
    print(f"  real step vs jit:      {results['array real'] / jax['real']['step_s']:8.2f}   "
          f"(JAX {jax['real']['step_s'] * 1e3:.3f} ms, compile {jax['real']['compile_s']:.1f} s)")
    print(f"  real step vs lax.scan: {results['array real'] / jax['real_scan']['step_s']:8.2f}   "
          f"(JAX {jax['real_scan']['step_s'] * 1e3:.3f} ms)")
    print(f"  per retraining vs vmap: "
          f"{results['array retrain'] / jax['retrain_batch']['per_retraining_s']:8.2f}   "
          f"(JAX {jax['retrain_batch']['per_retraining_s'] * 1e3:.3f} ms)")
    for k in args.orders:
        for n in args.directions:
            theirs = jax["jet"].get(k, {}).get(n, {})
            if "per_direction_s" in theirs:
                print(f"  order {k}, {n:3d} dir, per complex direction vs jet per real direction: "
                      f"{results['array', k, n] / theirs['per_direction_s']:8.2f}   (JAX "
                      f"{theirs['per_direction_s'] * 1e3:.3f} ms; a complex direction needs "
                      f"k+1 = {k + 1} real jets by polarization)")
            elif theirs:
                print(f"  order {k}, {n} dir: JAX failed: {theirs['error']}")


if __name__ == "__main__":
    main()
