"""Tests for benchmarks/bench_array.py (issue 12's one-run report) and its JAX peer's timed form.

(1) The quick mode's logic, on a tiny microgpt and without JAX, measures every row it claims
    and prints every target row of issue 12 (those that need JAX as "n/a"), and --json writes
    the same figures.
(2) The target arithmetic against a made-up peer: ratios, bounds (0.5 × JAX per real direction,
    the Fig. 1 / Fig. 3 projections) and met flags, computed here by hand.
(3) The timed JAX Taylor run (``make_jet_scan``: the steps as one lax.scan, vmapped over
    directions) equals ``make_jet_step`` applied step by step (skipped without jax).
"""

from __future__ import annotations

import json
import math
import pathlib
import sys

import numpy as np
import pytest

from circuitsketch.frontends.microgpt_data import MicrogptConfig

# pytest runs with --import-mode=importlib: put benchmarks/ on sys.path.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "benchmarks"))
import bench_array  # noqa: E402
import bench_array_report as report  # noqa: E402

TINY = MicrogptConfig(n_embd=8, n_head=2, block_size=8, mlp_width=32, n_steps=40)
TARGETS = ["real step ≤ JAX lax.scan",
           "order 3, 64 dir: per complex dir ≤ 0.5 × JAX jet per real dir",
           "order 3, 512 dir: per complex dir ≤ 0.5 × JAX jet per real dir",
           "Fig. 1 projection (12 dir × 1000 steps, order 100) ≤ 30 min",
           "cold compile, real microgpt step ≤ 10 s",
           "cold compile, order-3 microgpt step ≤ 10 s",
           "Fig. 3 projection (500 dir × 1000 steps, order 3) ≤ 5 min"]


def _tiny_options(**kw) -> bench_array.Options:
    quick = {**bench_array.QUICK, "directions": (1, 2), "high_orders": (), "steps": 1,
             "retrainings": 2, "jax": False, "config": TINY, **kw}
    return bench_array.Options(**quick)


def test_quick_logic_on_tiny_config_reports_every_target(tmp_path):
    opts = _tiny_options()
    ours = bench_array.measure_ours(opts)
    lines, rows = bench_array.report(opts, ours, None)
    text = "\n".join(lines)
    assert [r["name"][:len(t)] for r, t in zip(rows, TARGETS)] == TARGETS
    table = text[text.index("target "):]
    for t in TARGETS:
        assert t in table
    by = {r["name"]: r for r in rows}
    # Without JAX (and with neither 64 nor 512 directions nor order 100) those rows are n/a...
    assert all(r["met"] is None for r in rows if not r["name"].startswith(("cold", "Fig. 3")))
    # ...the others are measured: positive, and the Fig. 3 projection is 500 x 1000 x the
    # per-direction step time at the largest direction count timed (2 here).
    step = ours["taylor"][3][2]["step_s"]
    assert 0 < step < 10 and ours["taylor"][3][2]["per_direction_s"] == step / 2
    fig3 = next(r for r in rows if r["name"].startswith("Fig. 3"))
    assert fig3["measured_s"] == pytest.approx(500 * 1000 * step / 2)
    assert fig3["met"] == (fig3["measured_s"] <= 300)
    assert "WARM" in by[next(n for n in by if n.startswith("cold compile, real"))]["name"]
    # the memory plan grows with the directions: 2 directions take at least one's arena
    assert ours["taylor"][3][2]["arena_bytes"] >= ours["taylor"][3][1]["arena_bytes"] > 0
    path = tmp_path / "figures.json"
    bench_array.write_json(str(path), opts, {"threads": ours["threads"]}, ours, None, rows)
    doc = json.loads(path.read_text())
    assert [r["name"] for r in doc["targets"]] == [r["name"] for r in rows]
    assert doc["ours"]["taylor"]["3"]["2"]["step_s"] == step


def _made_up(per_dir: dict, high: float, real: float, compile3: float) -> dict:
    taylor = {3: {n: {"per_direction_s": t, "step_s": t * n, "compile_s": compile3,
                      "taylor_s": 0.5, "arena_bytes": 1, "blocks": 1, "block_width": n,
                      "peak_rss_bytes": 1} for n, t in per_dir.items()}}
    return {"real": {"step_s": real, "per_direction_s": real, "compile_s": 2.0},
            "retrain": {"per_direction_s": real / 4, "compile_s": 1.0},
            "reference_real": {"step_s": 1e-3}, "taylor": taylor,
            "high": {100: {2: {**taylor[3][64], "per_direction_s": high, "step_s": 2 * high}}},
            "scalar_taylor": {}, "threads": 2, "trace_s": 0.1, "peak_rss_start_bytes": 1}


def test_target_arithmetic_against_a_made_up_peer():
    ours = _made_up({64: 0.4e-3, 512: 0.3e-3}, high=0.2, real=0.5e-3, compile3=11.0)
    jax = {"real_scan": {"step_s": 0.25e-3}, "real": {"step_s": 0.3e-3, "compile_s": 1.0},
           "retrain_batch": {"per_retraining_s": 0.1e-3, "compile_s": 1.0},
           "jet": {3: {64: {"per_direction_s": 1.0e-3, "compile_s": 9.0},
                       512: {"per_direction_s": 0.5e-3, "compile_s": 9.0}}},
           "jax_version": "x", "backend": "cpu"}
    rows = {r["name"]: r for r in report.targets(ours, jax, cold=True)}
    got = [(r["measured_s"], r["bound_s"], r["met"]) for r in rows.values()]
    want = [(0.5e-3, 0.25e-3, False),                 # real: 2x JAX's scan
            (0.4e-3, 0.5e-3, True), (0.3e-3, 0.25e-3, False),   # 0.5 x JAX per real dir
            (12 * 1000 * 0.2, 1800.0, False),          # Fig. 1: 40 min
            (3.0, 10.0, True),                         # compile: 1 model + the batch
            (0.5 + 2 * 11.0, 10.0, False),             # Taylor pass + both direction counts
            (500 * 1000 * 0.3e-3, 300.0, True)]         # Fig. 3 from 512 directions: 2.5 min
    for (m, b, met), (wm, wb, wmet) in zip(got, want):
        assert m == pytest.approx(wm) and b == pytest.approx(wb) and met is wmet
    assert all(math.isclose(r["ratio"], r["measured_s"] / r["bound_s"]) for r in rows.values())
    # JAX per complex direction is (k+1) = 4 x per real direction in the Taylor table
    line = next(s for s in report.taylor_table(ours, jax) if s.split()[:2] == ["3", "64"])
    assert line.split()[3:6] == ["0.400", "1.000", "4.000"]


def test_timed_jet_scan_equals_the_jet_step_by_step():
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp
    from jax.flatten_util import ravel_pytree
    import jax_microgpt as J

    old = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)  # compiles ~2x faster
    try:
        order, steps = 2, J._per_step_data(TINY, 3)
        flat = tuple(ravel_pytree(s)[0] for s in J.init_state(TINY))
        psi = np.random.default_rng(1).standard_normal((3, 2))
        terms = tuple([jnp.zeros((2,) + flat[0].shape)] * order for _ in range(3))
        scanned = J.make_jet_scan(TINY, order, batched=True)(
            flat, terms, J._stack(steps), jnp.zeros(3), jnp.asarray(psi))
        step, carry = J.make_jet_step(TINY, order, batched=True), (flat, terms)
        for t, d in enumerate(steps):
            carry = step(*carry, d, jnp.asarray(0.0), [jnp.asarray(psi[t]), jnp.zeros(2)])
    finally:
        jax.config.update("jax_disable_most_optimizations", old)
    a, b = jax.tree.leaves(scanned), jax.tree.leaves(carry)
    assert len(a) == len(b) == 3 + 3 * order
    assert max(float(jnp.max(jnp.abs(x - y))) for x, y in zip(a, b)) < 1e-13
    assert float(jnp.max(jnp.abs(b[3]))) > 1e-6  # the first-order terms moved: not vacuous


def test_timed_real_scans_equal_training_step_by_step():
    pytest.importorskip("jax")
    import jax
    import jax_microgpt as J

    x = np.array([[0.0, 1.0, 0.3], [0.5, 0.0, 0.0]])
    stacked = J._stack(J._per_step_data(TINY, 3))
    state = J.init_state(TINY)
    one = J.make_scan(TINY)(*state, stacked, jax.numpy.asarray(x[0]))[0]
    batch = J._broadcast(state, (2,))
    both = J.make_scan(TINY, batched=True)(*batch, stacked, jax.numpy.asarray(x.T))[0]
    want = J.train(TINY, 3, x)  # vmapped over the 2 retrainings, one jitted call per step
    assert max(float(np.max(np.abs(np.asarray(one[k]) - want[k][0]))) for k in want) < 1e-14
    assert max(float(np.max(np.abs(np.asarray(both[k]) - want[k]))) for k in want) < 1e-14
    assert max(float(np.max(np.abs(want[k][0] - want[k][1]))) for k in want) > 1e-6
