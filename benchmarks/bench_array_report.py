"""The tables of ``bench_array.py``: ours against the JAX peer, compile, memory, and issue 12's
targets ("target | bound | measured | ratio | met?").

Every function reads the two dicts of one run: ``ours`` (``bench_array.measure_ours``) and
``jax`` (``jax_microgpt.jax_timings``, or None when JAX was not run: its columns print "—"
and the targets that need it are "n/a"). Times are seconds.
"""

from __future__ import annotations

#: the paper's Fig. 1 and Fig. 3 runs: (directions, order, training steps)
FIG1, FIG3 = (12, 100, 1000), (500, 3, 1000)


def _jet(jax: dict | None, k: int, n: int) -> float | None:
    """JAX's jet seconds per real direction·step, or None (not run, or failed)."""
    return ((jax or {}).get("jet", {}).get(k, {}).get(n) or {}).get("per_direction_s")


def _ms(s: float | None) -> str:
    return "—" if s is None else f"{s * 1e3:.3f}"


def _ratio(a: float | None, b: float | None) -> str:
    return "—" if a is None or b is None else f"{a / b:.2f}"


def real_table(ours: dict, jax: dict | None) -> list[str]:
    """Real step: ours against the JAX peer (ratio below 1: we are faster)."""
    lines = [f"{'real step, ms':36s} {'ours':>9s} {'JAX':>9s} {'ours/JAX':>9s}"]
    pairs = [("1 model vs jit (one call per step)", "real", "real", "step_s"),
             ("1 model vs lax.scan", "real", "real_scan", "step_s"),
             ("per retraining vs vmap (16)", "retrain", "retrain_batch", "per_retraining_s"),
             ("per retraining vs vmap in lax.scan", "retrain", "retrain_scan", "per_retraining_s")]
    for what, mine, theirs, key in pairs:
        them = (jax or {}).get(theirs, {}).get(key)
        per = ours[mine]["per_direction_s"]
        lines.append(f"{what:36s} {_ms(per):>9s} {_ms(them):>9s} {_ratio(per, them):>9s}")
    for what, key in (("scalar tape, 1 model", "scalar_real"), ("reference, 1 model", "reference_real")):
        if key in ours:
            lines.append(f"{what:36s} {_ms(ours[key]['step_s']):>9s}")
    return lines


def taylor_table(ours: dict, jax: dict | None) -> list[str]:
    """Orders × directions: ours per complex direction against JAX per real and per complex
    direction (a complex direction costs JAX k + 1 real jets, by polarization)."""
    lines = ["order k, per direction·step in ms. Ours: complex directions. JAX jet: real "
             "directions; a complex direction needs k+1 real jets (polarization), so JAX per "
             "complex direction = (k+1) × per real direction.",
             f"{'k':>3s} {'dirs':>5s} {'ours ms/step':>12s} {'ours/cdir':>10s} {'JAX/rdir':>10s} "
             f"{'JAX/cdir':>10s} {'ours/JAXr':>10s} {'ours/JAXc':>10s} {'tape/cdir':>10s}"]
    for k, by_n in sorted(ours["taylor"].items()):
        for n, r in sorted(by_n.items()):
            real = _jet(jax, k, n)
            cplx = None if real is None else (k + 1) * real
            tape = ours["scalar_taylor"].get(n, {}).get("per_direction_s") if k == 3 else None
            mine = r["per_direction_s"]
            lines.append(f"{k:3d} {n:5d} {_ms(r['step_s']):>12s} {_ms(mine):>10s} {_ms(real):>10s} "
                         f"{_ms(cplx):>10s} {_ratio(mine, real):>10s} {_ratio(mine, cplx):>10s} "
                         f"{_ms(tape):>10s}")
            error = ((jax or {}).get("jet", {}).get(k, {}).get(n) or {}).get("error")
            if error:
                lines.append(f"    JAX failed: {error}")
    for k, by_n in sorted(ours["high"].items()):
        for n, r in sorted(by_n.items()):
            lines.append(f"{k:3d} {n:5d} {_ms(r['step_s']):>12s} {_ms(r['per_direction_s']):>10s}"
                         f"   (ours only; {n} directions on {ours['threads']} threads)")
    return lines


def compile_s(ours: dict, k: int | None) -> float | None:
    """Compile seconds of the real step (k None: 1 model + the batch of retrainings) or of the
    order-k step: the Taylor pass plus, summed over every configuration timed, first run − one
    step (a later configuration may still compile kernels the first did not use)."""
    if k is None:
        return ours["real"]["compile_s"] + ours["retrain"]["compile_s"]
    by_n = ours["taylor"].get(k) or ours["high"].get(k)
    return None if not by_n else (next(iter(by_n.values()))["taylor_s"]
                                  + sum(r["compile_s"] for r in by_n.values()))


def compile_memory_table(ours: dict, jax: dict | None) -> list[str]:
    """Compile (first run − one step) and memory rows."""
    lines = ["compile, s (first run − one step: plan + Numba compile or cache load; + the "
             "Taylor pass for order k). Cache 'fresh': a new empty kernel cache (cold compile, "
             "in this process after the rows above); 'user': the user's (warm if run before)",
             f"  real step: {compile_s(ours, None):.2f}, cache {ours['real']['cache']}   (1 model "
             f"{ours['real']['compile_s']:.2f} + batch of retrainings "
             f"{ours['retrain']['compile_s']:.2f}; trace {ours['trace_s']:.2f})"]
    for k, by_n in sorted({**ours["taylor"], **ours["high"]}.items()):
        parts = ", ".join(f"{n} dir {r['compile_s']:.2f}" for n, r in by_n.items())
        lines.append(f"  order {k}: {compile_s(ours, k):.2f}, cache {by_n[min(by_n)]['cache']}   "
                     f"(Taylor pass {by_n[min(by_n)]['taylor_s']:.2f}; {parts})")
    if jax:
        lines.append(f"  JAX .lower().compile(): jit {jax['real']['compile_s']:.1f}, lax.scan "
                     f"{jax['real_scan']['compile_s']:.1f}, vmap {jax['retrain_batch']['compile_s']:.1f}"
                     f", vmap in lax.scan {jax['retrain_scan']['compile_s']:.1f}")
        for k, by_n in jax["jet"].items():
            lines.append(f"  JAX jet order {k}: " + ", ".join(
                f"{n} dir {t['compile_s']:.1f}" for n, t in by_n.items() if "compile_s" in t))
    lines.append("memory: planned arenas (all blocks of one run) and the process's peak RSS "
                 "after the row (getrusage ru_maxrss: monotone, includes Python, numpy, Numba)")
    lines.append(f"  peak RSS before any run: {ours['peak_rss_start_bytes'] / 2**20:.0f} MiB")
    for k, by_n in sorted({**ours["taylor"], **ours["high"]}.items()):
        for n, r in sorted(by_n.items()):
            lines.append(f"  order {k:3d}, {n:4d} dir: arenas {r['arena_bytes'] / 2**20:8.1f} MiB "
                         f"({r['blocks']} × {r['block_width']} dir), peak RSS "
                         f"{r['peak_rss_bytes'] / 2**20:.0f} MiB")
    return lines


def targets(ours: dict, jax: dict | None, cold: bool) -> list[dict]:
    """Issue 12's targets, one dict each: ``name``, ``unit`` (for printing), ``measured_s`` and
    ``bound_s`` (seconds), ``ratio`` = measured / bound and ``met`` (None where a figure is
    missing: JAX not run, or the configuration not timed)."""
    def per_dir(k: int, n: int | None = None) -> float | None:
        """Ours per direction·step at order k, n directions (None: the most timed)."""
        by_n = ours["taylor"].get(k) or ours["high"].get(k) or {}
        n = max(by_n, default=None) if n is None else n
        return by_n[n]["per_direction_s"] if n in by_n else None

    def scale(v, f):
        return None if v is None else v * f
    n1, k1, s1 = FIG1
    n3, k3, s3 = FIG3
    warm = "" if cold else " (WARM cache: not cold)"
    rows = [("real step ≤ JAX lax.scan per step", "ms", ours["real"]["step_s"],
             ((jax or {}).get("real_scan") or {}).get("step_s")),
            *[(f"order 3, {n} dir: per complex dir ≤ 0.5 × JAX jet per real dir", "ms",
               per_dir(3, n), scale(_jet(jax, 3, n), 0.5)) for n in (64, 512)],
            (f"Fig. 1 projection ({n1} dir × {s1} steps, order {k1}) ≤ 30 min", "min",
             scale(per_dir(k1), n1 * s1), 1800.0),
            ("cold compile, real microgpt step ≤ 10 s" + warm, "s", compile_s(ours, None), 10.0),
            ("cold compile, order-3 microgpt step ≤ 10 s" + warm, "s", compile_s(ours, 3), 10.0),
            (f"Fig. 3 projection ({n3} dir × {s3} steps, order {k3}) ≤ 5 min", "min",
             scale(per_dir(k3), n3 * s3), 300.0)]
    return [{"name": name, "unit": unit, "measured_s": m, "bound_s": b,
             "ratio": None if m is None or b is None else m / b,
             "met": None if m is None or b is None else bool(m <= b)} for name, unit, m, b in rows]


def target_table(rows: list[dict]) -> list[str]:
    scale = {"ms": 1e3, "s": 1.0, "min": 1 / 60}

    def fmt(v, unit):
        return "—" if v is None else f"{v * scale[unit]:.3f} {unit}"
    lines = [f"{'target':66s} | {'bound':>12s} | {'measured':>12s} | {'ratio':>6s} | met?"]
    for r in rows:
        met = {None: "n/a", True: "yes", False: "NO"}[r["met"]]
        ratio = "—" if r["ratio"] is None else f"{r['ratio']:.2f}"
        lines.append(f"{r['name']:66s} | {fmt(r['bound_s'], r['unit']):>12s} | "
                     f"{fmt(r['measured_s'], r['unit']):>12s} | {ratio:>6s} | {met}")
    lines.append("Fig. 1 and Fig. 3 rows are projections: directions × steps × the measured "
                 "time per direction·step at the largest direction count timed (order 100: one "
                 "direction per thread, so the threads are counted); Fig. 3 at full scale is a "
                 "separate run. Compile rows: the real step for 1 model and the "
                 "batch of retrainings; order 3: the Taylor pass and every direction count.")
    return lines
