"""Issue 12's figures in one run: the array engine on the array microgpt step, against JAX.

One process measures, then prints (and with ``--json FILE`` writes):

* the real step, 1 model and 16 retrainings, of
  :func:`circuitsketch.frontends.microgpt_array.build_task_array` on ``numba-cpu`` (the array
  engine), next to the JAX peer's jitted step, ``lax.scan`` and ``vmap`` over retrainings;
  the array program on ``reference`` (and with ``--scalar`` the Values-traced model on the
  scalar tape) for scale;
* orders 1, 3, 6 per complex direction at 1, 64 and 512 directions, next to JAX ``jet`` per
  real direction and per complex direction (k + 1 real jets by polarization);
* orders 16 and 100 per direction·step (ours only), at one direction per thread;
* compile time: the first run minus one step (plan, Numba compile or cache load; plus the
  Taylor pass for a Taylor step), in a fresh kernel cache unless ``--warm-cache``;
* memory: the planned arena bytes (``array_engine.arena_bytes`` per block of
  ``block_width`` directions, times the blocks) and the process's peak RSS after each row;
* a final table "target | bound | measured | ratio | met?" for issue 12's targets, with the Fig. 1
  and Fig. 3 figures as projections from the measured per-direction·step times.

    .venv/bin/python benchmarks/bench_array.py [--json FILE] [--quick] [--no-jax] [--scalar]

A step's time is the median gap between successive steps of one run (``progress`` callbacks),
after a first run of one step; JAX's is the median whole ``lax.scan`` call per step, after
its first call (``jax_microgpt._timed_calls``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import resource
import sys
import tempfile
import time
from dataclasses import dataclass

import numba
import numpy as np

import circuitsketch as cs
from circuitsketch.backends import array_engine, get_backend
from circuitsketch.frontends.microgpt import build_task
from circuitsketch.frontends.microgpt_array import build_task_array
from circuitsketch.ir import Program

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bench_array_report import (compile_memory_table, real_table, target_table,  # noqa: E402
                                targets, taylor_table)

#: at and above this many directions a configuration gets ``big_steps`` timed steps
BIG = 256
#: timed real steps (cheap: well under a ms each), as many as the JAX peer's lax.scan call
REAL_STEPS = 20
#: the user's kernel cache setting, restored after the cold rows
_USER_CACHE = os.environ.get("CIRCUITSKETCH_CACHE")


@dataclass
class Options:
    """What one run measures (the defaults are the full run, about 6 min on 2 cores)."""

    steps: int = 5                        # timed steps below BIG directions
    big_steps: int = 2                    # timed steps at BIG or more directions
    orders: tuple[int, ...] = (1, 3, 6)
    directions: tuple[int, ...] = (1, 64, 512)
    high_orders: tuple[int, ...] = (16, 100)
    high_steps: int = 2
    high_directions: int = 0              # 0: one per thread
    retrainings: int = 16
    cold: bool = True                     # real and order-3 rows compile in fresh caches
    scalar: bool = False                  # scalar-tape rows (real; order 3 below BIG directions)
    jax: bool = True
    jax_directions: tuple[int, ...] | None = None  # None: as ``directions``
    jax_budget_s: float = 3.0
    config: object = None                 # a MicrogptConfig; None: the default model


#: ``--quick``: a smoke run of under a minute (warm kernel cache after its first run)
QUICK = dict(steps=2, big_steps=1, orders=(3,), directions=(1, 64), high_orders=(16,),
             high_steps=1, cold=False, scalar=False, jax_directions=(64,), jax_budget_s=1.0)


def _arguments(argv=None) -> tuple[Options, str | None]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run, under a minute")
    p.add_argument("--json", metavar="FILE", help="also write every figure to FILE as JSON")
    p.add_argument("--steps", type=int, help="timed steps below %d directions" % BIG)
    p.add_argument("--big-steps", type=int, help="timed steps at %d+ directions" % BIG)
    p.add_argument("--orders", type=int, nargs="+")
    p.add_argument("--directions", type=int, nargs="+")
    p.add_argument("--high-orders", type=int, nargs="*", help="orders timed per direction·step")
    p.add_argument("--warm-cache", action="store_true",
                   help="the real and order-3 rows too use the user's kernel cache (not cold)")
    p.add_argument("--no-jax", action="store_true", help="skip the JAX peer")
    p.add_argument("--scalar", action="store_true",
                   help="add the scalar tape rows (real; order 3 below %d directions; ~30 s)" % BIG)
    a = p.parse_args(argv)
    opts = Options(**(QUICK if a.quick else {}))
    for name in ("steps", "big_steps", "orders", "directions", "high_orders"):
        if getattr(a, name) is not None:
            value = getattr(a, name)
            setattr(opts, name, tuple(value) if isinstance(value, list) else value)
    if min(opts.steps, opts.big_steps, *opts.orders, *opts.directions, *opts.high_orders) < 1:
        p.error("--steps, --big-steps, --orders, --directions and --high-orders must be positive")
    opts.cold &= not a.warm_cache
    opts.jax &= not a.no_jax
    opts.scalar |= a.scalar
    return opts, a.json


# ---------------------------------------------------------------- our measurements

def _timer(backend: str, task):
    """``timed(program, x, batch, n_steps) -> (first run s, s per step, fastest step s)``."""
    module = get_backend(backend)

    def run(program, x, batch, n: int) -> list[float]:
        """Run ``n`` steps; the times at which each step finished (progress callbacks)."""
        p = Program(program.step, n, program.carry, program.per_step, program.weight)
        marks = [time.perf_counter()]
        module.run_program(p, task.init, data=task.data, static=task.static, x=x,
                           example_ids=task.example_ids[:n], batch=batch,
                           progress=lambda t: marks.append(time.perf_counter()))
        return marks

    def timed(program, x, batch, n_steps: int) -> tuple[float, float, float]:
        """(first run, per step, fastest step): the first run compiles (or loads the cache); a
        step's time is the median gap between the progress calls of a run of 1 + ``n_steps``
        steps (the first gap, which includes the setup, left out); the fastest gap is the one
        least disturbed by other processes on a shared machine."""
        marks = run(program, x, batch, 1)
        first = marks[-1] - marks[0]
        gaps = np.diff(run(program, x, batch, 1 + n_steps)[1:])
        return first, float(np.median(gaps)), float(np.min(gaps))
    return timed


def _directions(rng, n: int, k: int, n_examples: int) -> np.ndarray:
    """``n`` random complex unit directions as order-``k`` series of the down-weights."""
    psi = rng.normal(size=(n, n_examples)) + 1j * rng.normal(size=(n, n_examples))
    x = np.zeros((n, k + 1, n_examples), dtype=complex)
    x[:, 1] = psi / np.linalg.norm(psi, axis=1, keepdims=True)
    return x


def _use_cache(fresh: bool) -> str:
    """Point the kernel cache at a new empty directory (the next compile is cold) or back at
    the user's (warm if these kernels were compiled before); returns "fresh" or "user"."""
    if fresh:
        os.environ["CIRCUITSKETCH_CACHE"] = tempfile.mkdtemp(prefix="circuitsketch-bench-")
    elif _USER_CACHE is None:
        os.environ.pop("CIRCUITSKETCH_CACHE", None)
    else:
        os.environ["CIRCUITSKETCH_CACHE"] = _USER_CACHE
    return "fresh" if fresh else "user"


def _peak_rss() -> int:
    """Peak resident set size of this process so far, bytes (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _record(first: float, step: float, best: float, n: int, extra: dict | None = None) -> dict:
    return {"first_s": first, "step_s": step, "best_step_s": best, "per_direction_s": step / n,
            "directions": n, "compile_s": max(first - step, 0.0), "peak_rss_bytes": _peak_rss(),
            **(extra or {})}


def _print_row(what: str, r: dict) -> None:
    print(f"{what:36s} {r['first_s']:8.2f} {r['step_s'] * 1e3:11.3f} {r['best_step_s'] * 1e3:9.3f} "
          f"{r['per_direction_s'] * 1e3:12.3f} {r['peak_rss_bytes'] / 2**20:9.0f}", flush=True)


def _memory(lowered, n: int) -> dict:
    """The engine's memory plan for ``n`` directions: block width, blocks, arena bytes."""
    plan = array_engine.plan_program(lowered)
    nb = array_engine.block_width(plan, n)
    blocks = math.ceil(n / nb)
    per_block = array_engine.arena_bytes(plan, nb)
    return {"block_width": nb, "blocks": blocks, "arena_bytes_per_block": per_block,
            "arena_bytes": per_block * blocks}


def measure_ours(opts: Options) -> dict:
    """Every row of our side (see the module docstring); times in seconds."""
    n_steps = 2 + max(opts.steps, opts.big_steps, opts.high_steps, REAL_STEPS)
    t0 = time.perf_counter()
    task = build_task_array(opts.config, n_steps=n_steps)
    out: dict = {"trace_s": time.perf_counter() - t0, "array_nodes": len(task.program.step),
                 "threads": numba.get_num_threads(), "peak_rss_start_bytes": _peak_rss(),
                 "taylor": {}, "high": {}, "scalar_taylor": {}}
    print(f"array microgpt step: {out['array_nodes']} array nodes, traced in "
          f"{out['trace_s']:.1f} s; {out['threads']} threads; kernel cache: "
          f"{'fresh for the real and order-3 rows (cold compile), ' if opts.cold else ''}"
          f"the user's for the rest")
    print(f"{'configuration':36s} {'first s':>8s} {'ms/step':>11s} {'best ms':>9s} "
          f"{'ms/step/dir':>12s} {'peak MiB':>9s}")
    timed = _timer("numba-cpu", task)
    zeros = np.zeros(task.n_examples)
    cache = _use_cache(opts.cold)
    out["real"] = _record(*timed(task.program, zeros, None, REAL_STEPS), 1, {"cache": cache})
    _print_row("real, array engine", out["real"])
    weights = np.random.default_rng(2).uniform(size=(opts.retrainings, task.n_examples)) < 0.1
    out["retrain"] = _record(*timed(task.program, weights * 1.0, opts.retrainings, REAL_STEPS),
                             opts.retrainings)
    _print_row(f"real, {opts.retrainings} retrainings, array engine", out["retrain"])
    out["reference_real"] = _record(*_timer("reference", task)(task.program, zeros, None, 1), 1)
    _print_row("real, reference (numpy)", out["reference_real"])
    rng = np.random.default_rng(0)
    # order 3 first: its compile, like the real step's, is a target (cold with opts.cold)
    for k in sorted(set(opts.orders) | set(opts.high_orders), key=lambda k: (k != 3, k)):
        cache = _use_cache(opts.cold and k == 3)
        t0 = time.perf_counter()
        lowered = cs.taylor(task.program, k)
        taylor_s = time.perf_counter() - t0
        high = k not in opts.orders
        counts = [opts.high_directions or out["threads"]] if high else opts.directions
        for n in sorted(counts):
            steps = opts.high_steps if high else opts.big_steps if n >= BIG else opts.steps
            x = _directions(rng, n, k, task.n_examples)
            r = _record(*timed(lowered, x, n, steps), n, {"taylor_s": taylor_s, "order": k,
                                                          "timed_steps": steps, "cache": cache,
                                                          **_memory(lowered, n)})
            (out["high"] if high else out["taylor"]).setdefault(k, {})[n] = r
            _print_row(f"order {k}, {n} dir, array engine", r)
            print(f"{'':36s} arena {r['arena_bytes'] / 2**20:.1f} MiB: {r['blocks']} block(s) "
                  f"of {r['block_width']} direction(s)")
    _use_cache(False)
    if opts.scalar:
        _scalar_rows(opts, out, build_task(opts.config, n_steps=n_steps), rng)
    return out


def _scalar_rows(opts: Options, out: dict, scalar_task, rng) -> None:
    """The same model traced with Values on the scalar tape: real, and order 3 below BIG."""
    timed = _timer("numba-cpu", scalar_task)
    out["scalar_real"] = _record(*timed(scalar_task.program, np.zeros(scalar_task.n_examples),
                                        None, REAL_STEPS), 1)
    _print_row("real, scalar tape", out["scalar_real"])
    if 3 in opts.orders:
        lowered = cs.taylor(scalar_task.program, 3)
        for n in (n for n in opts.directions if n < BIG):
            x = _directions(rng, n, 3, scalar_task.n_examples)
            out["scalar_taylor"][n] = _record(*timed(lowered, x, n, opts.steps), n)
            _print_row(f"order 3, {n} dir, scalar tape", out["scalar_taylor"][n])


def measure_jax(opts: Options, ours: dict) -> dict | None:
    """The JAX peer (``jax_microgpt.jax_timings``) in this process, or None without JAX."""
    try:
        from jax_microgpt import jax_timings
    except ImportError as err:
        print(f"\nJAX peer not importable ({err}): pip install -e '.[bench]' for the comparison")
        return None
    directions = opts.jax_directions or opts.directions
    print(f"\ntiming the JAX peer (jit, lax.scan, vmap; jet orders {opts.orders} at "
          f"{directions} directions) ...", flush=True)
    kw = {} if opts.config is None else {"config": opts.config}
    # REAL_STEPS real steps per lax.scan call: the call's fixed cost (tens of µs) spread thin
    return jax_timings(n_steps_warm=max(opts.steps, REAL_STEPS), orders=opts.orders,
                       directions=directions, budget_s=opts.jax_budget_s,
                       jet_steps={n: opts.big_steps if n >= BIG else opts.steps
                                  for n in directions}, **kw)


def report(opts: Options, ours: dict, jax: dict | None) -> tuple[list[str], list[dict]]:
    """Every table of the run, and the target rows."""
    rows = targets(ours, jax, opts.cold)
    head = ("no JAX" if jax is None else
            f"JAX {jax['jax_version']} on {jax['backend']} (jet: lax.scan, vmap over directions, "
            f"real part shared)")
    lines = ["", head, *real_table(ours, jax), "", *taylor_table(ours, jax), "",
             *compile_memory_table(ours, jax), "", *target_table(rows)]
    return lines, rows


def main(argv=None) -> None:
    opts, json_path = _arguments(argv)
    started, load = time.time(), os.getloadavg()
    ours = measure_ours(opts)
    jax = measure_jax(opts, ours) if opts.jax else None
    lines, rows = report(opts, ours, jax)
    print("\n".join(lines))
    machine = {"cpus": os.cpu_count(), "threads": ours["threads"], "python": platform.python_version(),
               "load_avg_start": load, "load_avg_end": os.getloadavg(),
               "wall_s": time.time() - started, "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    print(f"\nwall {machine['wall_s']:.0f} s; load average at start {load[0]:.2f}, at end "
          f"{machine['load_avg_end'][0]:.2f} (a shared machine moves timings by ±30%)")
    if json_path:
        write_json(json_path, opts, machine, ours, jax, rows)
        print(f"figures written to {json_path}")


def write_json(path: str, opts: Options, machine: dict, ours: dict, jax: dict | None,
               rows: list[dict]) -> None:
    """Every figure of the run (seconds, bytes; dict keys such as orders become strings)."""
    doc = {"options": {k: v for k, v in dataclasses.asdict(opts).items() if k != "config"},
           "config": str(opts.config), "machine": machine, "ours": ours, "jax": jax,
           "targets": rows}
    with open(path, "w") as f:
        json.dump(doc, f, indent=1, default=lambda o: dataclasses.asdict(o)
                  if dataclasses.is_dataclass(o) else str(o))


if __name__ == "__main__":
    main()
