"""The JAX peer of the microgpt training step (DESIGN §5, §9; issue 4).

What a user would write instead of circuitsketch: the same microgpt step in JAX, float64,
jitted, with ``jax.grad`` for the backward pass and ``jax.experimental.jet`` for truncated
Taylor arithmetic.  ``benchmarks/bench_array.py`` (and ``bench_backends.py``) time it next to
our backends, in the same process.

The step is padded to FIXED shapes exactly like our step circuit, reading the per-step arrays of
:func:`circuitsketch.frontends.microgpt_data.step_arrays` (B = block_size, V = vocab_size,
E = n_embd, H = n_head, d = E / H):

    h0    = rmsnorm(tokens_onehot @ wte + wpe)                         [B, E]
    per layer:  a = rmsnorm(h);  q, k, v = a wqᵀ, a wkᵀ, a wvᵀ           [B, H, d]
                s_hpt = q_hp · k_ht / sqrt(d)  for t <= p (causal)
                w_hpt = exp(s_hpt − sg(max_t s_hpt)) / Σ_t (same)      (sg = stop_gradient)
                h    += (Σ_t w_hpt v_ht) woᵀ
                h    += gelu(rmsnorm(h) fc1ᵀ) fc2ᵀ,   gelu(u) = u·Φ(u) = u·(1 + erf(u/√2))/2
    logits = h lm_headᵀ                                                  (no final norm)
    loss   = inv_n · Σ_p mask_p · (−log softmax(logits_p) · targets_onehot_p) · (1 − x_t)
    rmsnorm(u) = u · (mean(u²) + rms_eps)^(−1/2)
    g = ∇loss;  m = β1 m + (1−β1) g;  v = β2 v + (1−β2) g²;
    θ −= lr_t · (m / bias1_t) / sqrt(v / bias2_t + adam_eps)

Padded positions p >= n come after the real ones; with the causal mask they are never attended
to by a real position, and mask_p = 0 drops their loss, so padding changes nothing.

The Taylor step is ``jet`` of the step as a function of the carried state AND x_t: along a
direction ψ the run has x_t = z·ψ_t, so the state (θ, m, v) is itself a truncated series in z
and every step maps series to series.  ``jet`` takes arrays only, so the Taylor step works on
the state flattened to three vectors (``jax.flatten_util.ravel_pytree`` order).  Coefficients
are plain (``factorial_scaled=False``: a_j = f⁽ʲ⁾/j!), as DESIGN §3 asks.  Directions here are
real (as in the exact-series mode of DESIGN §4).  The sketch's directions are complex: JAX gets
the order-≤k coefficients along a complex ψ = a + ib from k + 1 real jets by polarization (the
order-r coefficient along a + t·b is a polynomial of degree r in t: k + 1 real directions
a + t_j·b determine it, then t = i), so a complex direction costs JAX (k + 1) real ones.
The timed form (:func:`make_jet_scan`) runs the steps as one ``lax.scan``, vmapped over the
directions with the real part shared.
"""

from __future__ import annotations

import functools
import math
import statistics
import time
from typing import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental.jet import jet
from jax.flatten_util import ravel_pytree

from circuitsketch.frontends.microgpt_data import (MicrogptConfig, names_for_steps, prepare,
                                                   step_arrays)

jax.config.update("jax_enable_x64", True)

__all__ = ["step_loss", "make_step", "make_scan", "make_jet_step", "make_jet_scan", "init_state", "train",
           "train_taylor", "jax_timings", "main"]

Params = dict[str, jax.Array]
StepData = dict[str, jax.Array]

#: Number of down-weight vectors in the vmapped "batch of retrainings" timing.
RETRAIN_BATCH = 16


# ----------------------------------------------------------------------------- the model


def _rmsnorm(u: jax.Array, eps: float) -> jax.Array:
    return u * jax.lax.rsqrt(jnp.mean(u * u, axis=-1, keepdims=True) + eps)


def _gelu(u: jax.Array) -> jax.Array:
    # Exact GELU u·Φ(u) through erf, not the tanh approximation.
    return u * 0.5 * (1.0 + jax.lax.erf(u / math.sqrt(2.0)))


def _log_softmax(logits: jax.Array, allowed: jax.Array | None = None) -> jax.Array:
    """log softmax over the last axis, subtracting stop_gradient(max) as a constant.

    ``allowed`` (0/1, broadcastable) restricts the softmax to those entries: the max is taken
    over them and the others get weight exp(·)·0 = 0 (their log is meaningless; callers only
    use the exponentiated weights or allowed entries).
    """
    if allowed is None:
        mx = jnp.max(logits, axis=-1, keepdims=True)
        total = jnp.sum(jnp.exp(logits - jax.lax.stop_gradient(mx)), axis=-1, keepdims=True)
    else:
        mx = jnp.max(jnp.where(allowed > 0, logits, -jnp.inf), axis=-1, keepdims=True)
        total = jnp.sum(jnp.exp(logits - jax.lax.stop_gradient(mx)) * allowed, axis=-1,
                        keepdims=True)
    return logits - jax.lax.stop_gradient(mx) - jnp.log(total)


def _attention(a: jax.Array, params: Params, layer: int, config: MicrogptConfig) -> jax.Array:
    B, H, d = config.block_size, config.n_head, config.head_dim
    q = (a @ params[f"layer{layer}.attn_wq"].T).reshape(B, H, d)
    k = (a @ params[f"layer{layer}.attn_wk"].T).reshape(B, H, d)
    v = (a @ params[f"layer{layer}.attn_wv"].T).reshape(B, H, d)
    causal = jnp.tril(jnp.ones((B, B), dtype=a.dtype))  # [p, t]: 1 where t <= p
    scores = jnp.einsum("phd,thd->hpt", q, k) / math.sqrt(d)
    weights = jnp.exp(_log_softmax(scores, causal)) * causal
    mixed = jnp.einsum("hpt,thd->phd", weights, v).reshape(B, H * d)
    return mixed @ params[f"layer{layer}.attn_wo"].T


def step_loss(params: Params, step_data: StepData, x_t: jax.Array,
              config: MicrogptConfig) -> jax.Array:
    """The down-weighted loss of one padded step (module docstring), a scalar."""
    eps = config.rms_eps
    h = _rmsnorm(step_data["tokens_onehot"] @ params["wte"] + params["wpe"], eps)
    for i in range(config.n_layer):
        h = h + _attention(_rmsnorm(h, eps), params, i, config)
        mlp = _gelu(_rmsnorm(h, eps) @ params[f"layer{i}.mlp_fc1"].T)
        h = h + mlp @ params[f"layer{i}.mlp_fc2"].T
    logp = _log_softmax(h @ params["lm_head"].T)
    nll = -jnp.sum(step_data["targets_onehot"] * logp, axis=-1)
    return step_data["inv_n"] * jnp.sum(step_data["mask"] * nll) * (1.0 - x_t)


def _train_step(params: Params, m: Params, v: Params, step_data: StepData, x_t: jax.Array,
                config: MicrogptConfig) -> tuple[Params, Params, Params]:
    g = jax.grad(step_loss)(params, step_data, x_t, config)
    b1, b2 = config.beta1, config.beta2
    m = jax.tree.map(lambda mi, gi: b1 * mi + (1 - b1) * gi, m, g)
    v = jax.tree.map(lambda vi, gi: b2 * vi + (1 - b2) * gi * gi, v, g)
    params = jax.tree.map(
        lambda p, mi, vi: p - step_data["lr"] * (mi / step_data["bias1"])
        / jnp.sqrt(vi / step_data["bias2"] + config.adam_eps),
        params, m, v)
    return params, m, v


def make_step(config: MicrogptConfig, batched: bool = False) -> Callable:
    """Jitted ``step(params, m, v, step_data, x_t) -> (params, m, v)``: one Adam step.

    ``batched``: a batch of retrainings, vmapped over a leading axis of params, m, v and x_t
    (each retraining its own state and down-weight; the step's data is shared).
    """
    def step(params, m, v, step_data, x_t):
        return _train_step(params, m, v, step_data, x_t, config)

    return jax.jit(jax.vmap(step, in_axes=(0, 0, 0, None, 0)) if batched else step)


def make_scan(config: MicrogptConfig, batched: bool = False) -> Callable:
    """Jitted ``run(params, m, v, stacked_data, xs) -> (params, m, v)``: the Adam steps of
    :func:`make_step` as one ``lax.scan`` over the step data stacked on a leading axis and
    ``xs`` [T] (no Python dispatch per step).  ``batched``: vmapped over retrainings (a leading
    axis of params, m, v; ``xs`` [T, R]), the step data shared.
    """
    def one(p, m, v, d, x):
        return _train_step(p, m, v, d, x, config)
    if batched:
        one = jax.vmap(one, in_axes=(0, 0, 0, None, 0))

    def run(params, m, v, stacked_data, xs):
        return jax.lax.scan(lambda s, dx: (one(*s, dx[0], dx[1]), None), (params, m, v),
                            (stacked_data, xs))[0]
    return jax.jit(run)


def make_jet_step(config: MicrogptConfig, order: int, batched: bool = False) -> Callable:
    """Jitted order-``order`` Taylor step on the flattened state.

    ``jstep(state, state_terms, step_data, x_t, x_terms) -> (state, state_terms)`` where
    ``state = (theta, m, v)`` are flat float64 vectors, ``state_terms`` is a 3-tuple of lists
    of ``order`` arrays (coefficients of z¹..zᵏ), ``x_t`` the real down-weight and
    ``x_terms`` a list of ``order`` scalars (ψ_t, 0, …, 0 along a direction ψ).
    ``batched``: the terms (and x_terms) carry a leading directions axis and the jet is
    vmapped over it; the real part ``state`` is shared by all directions (computed once).
    """
    if order < 1:
        raise ValueError(f"make_jet_step: order must be >= 1, got {order}")
    unravel = ravel_pytree(prepare(config).init_params)[1]

    def flat_step(theta, m, v, step_data, x_t):
        out = _train_step(unravel(theta), unravel(m), unravel(v), step_data, x_t, config)
        return tuple(ravel_pytree(o)[0] for o in out)

    def jstep(state, state_terms, step_data, x_t, x_terms):
        return jet(lambda th, m, v, x: flat_step(th, m, v, step_data, x),
                   (*state, x_t), (*state_terms, x_terms), factorial_scaled=False)

    if not batched:
        return jax.jit(jstep)
    return jax.jit(_vmapped(jstep))


def _vmapped(jstep: Callable) -> Callable:
    """``jstep`` over a leading directions axis of the terms; the real part stays shared."""
    return jax.vmap(jstep, in_axes=(None, 0, None, None, 0), out_axes=(None, 0))


def make_jet_scan(config: MicrogptConfig, order: int, batched: bool = False) -> Callable:
    """Jitted order-``order`` Taylor training over many steps as one ``lax.scan``.

    ``run(state, state_terms, stacked_data, xs, psis) -> (state, state_terms)``: as
    :func:`make_jet_step` applied for every step t, with ``stacked_data`` the step data stacked
    on a leading steps axis, ``xs`` [T] the real down-weights and ``psis`` [T] (or [T, n]
    batched) the direction's first coefficient per step (higher ones are zero).  No Python
    dispatch per step: the strongest form of the JAX Taylor run, the one timed.
    """
    jstep = make_jet_step(config, order).__wrapped__
    one = _vmapped(jstep) if batched else jstep

    def body(carry, inputs):
        data, x_t, psi_t = inputs
        x_terms = [psi_t] + [jnp.zeros_like(psi_t)] * (order - 1)
        return one(*carry, data, x_t, x_terms), None

    def run(state, state_terms, stacked_data, xs, psis):
        return jax.lax.scan(body, (state, state_terms), (stacked_data, xs, psis))[0]
    return jax.jit(run)


# ----------------------------------------------------------------------------- training


# train/train_taylor reuse one compiled step per configuration; make_step and make_jet_step
# themselves return fresh jitted functions, so jax_timings measures a real compile.
_cached_step = functools.lru_cache(maxsize=None)(make_step)
_cached_jet_step = functools.lru_cache(maxsize=None)(make_jet_step)


def init_state(config: MicrogptConfig) -> tuple[Params, Params, Params]:
    """(params, m, v) at step 0: ``prepare(config).init_params`` and zero Adam moments."""
    params = {k: jnp.asarray(a) for k, a in prepare(config).init_params.items()}
    zeros = jax.tree.map(jnp.zeros_like, params)
    return params, zeros, zeros


def _per_step_data(config: MicrogptConfig, n_steps: int) -> list[StepData]:
    """Device arrays for steps 0..n_steps−1 (lr decays over config.n_steps, as in step_arrays)."""
    data = prepare(config)
    arrays = step_arrays(names_for_steps(data, n_steps), data, config)
    return [{k: jnp.asarray(a[s]) for k, a in arrays.items()} for s in range(n_steps)]


def _per_step_vectors(x: Sequence | np.ndarray | None, n_steps: int, what: str) -> np.ndarray:
    """x as float64 [n_steps] or [batch, n_steps] (None: zeros [n_steps])."""
    if x is None:
        return np.zeros(n_steps)
    x = np.asarray(x, dtype=np.float64)
    if x.ndim not in (1, 2) or x.shape[-1] != n_steps:
        raise ValueError(f"{what} must hold one value per step: shape ({n_steps},) or "
                         f"(batch, {n_steps}), got {x.shape}")
    return x


def _broadcast(tree, lead: tuple[int, ...]):
    return jax.tree.map(lambda a: jnp.broadcast_to(a, lead + a.shape), tree)


def train(config: MicrogptConfig, n_steps: int, x: Sequence | np.ndarray | None = None
          ) -> dict[str, np.ndarray]:
    """Train ``n_steps`` steps (one name each, step t down-weighted by x[t]); final params.

    ``x`` [n_steps] (None: zeros), or [R, n_steps] for R retrainings run together (vmapped;
    the returned arrays then have a leading R axis).  The lr schedule decays over
    ``config.n_steps`` (these are the first n_steps of the full run).
    """
    x = _per_step_vectors(x, n_steps, "x")
    lead = x.shape[:-1]
    step = _cached_step(config, batched=bool(lead))
    params, m, v = _broadcast(init_state(config), lead)
    for t, d in enumerate(_per_step_data(config, n_steps)):
        params, m, v = step(params, m, v, d, x[..., t])
    return {k: np.asarray(a) for k, a in params.items()}


def train_taylor(config: MicrogptConfig, n_steps: int, direction: Sequence | np.ndarray,
                 order: int) -> list[dict[str, np.ndarray]]:
    """Train in order-``order`` Taylor arithmetic along x = z·direction (from x = 0).

    Returns the final params' coefficients ``[θ_0, θ_1, …, θ_k]`` (θ_r = dʳθ/dzʳ / r!), each a
    dict like ``prepare(config).init_params``.  ``direction`` [n_steps] runs one jet;
    [n, n_steps] runs the vmapped jet over n directions and every coefficient gets a leading
    n axis (θ_0, the real run, is the same for all).
    """
    psi = _per_step_vectors(direction, n_steps, "direction")
    lead = psi.shape[:-1]
    params, m, v = init_state(config)
    theta, unravel = ravel_pytree(params)
    state = (theta, ravel_pytree(m)[0], ravel_pytree(v)[0])
    terms = tuple([jnp.zeros(lead + theta.shape) for _ in range(order)] for _ in range(3))
    jstep = _cached_jet_step(config, order, batched=bool(lead))
    zero = jnp.zeros(lead)
    for t, d in enumerate(_per_step_data(config, n_steps)):
        x_terms = [jnp.asarray(psi[..., t])] + [zero] * (order - 1)
        state, terms = jstep(state, terms, d, jnp.asarray(0.0), x_terms)
    coeffs = [jnp.broadcast_to(state[0], lead + theta.shape)] + list(terms[0])
    unravel_all = unravel
    for _ in lead:
        unravel_all = jax.vmap(unravel_all)
    return [{k: np.asarray(a) for k, a in unravel_all(c).items()} for c in coeffs]


# ----------------------------------------------------------------------------- timings


def _timed(compile_s: float, run_step: Callable[[int], object],
           n_steps: int, budget_s: float) -> dict:
    """Time ``run_step(t)`` for t = 0, 1, … (each blocks until ready) after a compile.

    Returns ``compile_s``, ``step_s`` (median) and ``best_step_s`` (fastest: the least
    disturbed by other processes on a shared machine).  Stops once ``budget_s`` is spent,
    but times at least 3 steps.
    """
    times: list[float] = []
    start = time.perf_counter()
    for t in range(n_steps):
        t0 = time.perf_counter()
        jax.block_until_ready(run_step(t))
        times.append(time.perf_counter() - t0)
        if len(times) >= 3 and time.perf_counter() - start > budget_s:
            break
    return {"compile_s": compile_s, "step_s": statistics.median(times),
            "best_step_s": min(times)}


def _timed_calls(compile_s: float, call: Callable[[], object], steps_per_call: int,
                 budget_s: float, max_calls: int = 10) -> dict:
    """Time whole calls of a compiled ``lax.scan`` of ``steps_per_call`` steps, per step.

    The first call of a compiled XLA function carries a one-time cost (tens of ms on CPU), so
    ``step_s`` is the median of the calls after the first; ``best_step_s`` the fastest call.
    At least 2 calls, more (up to ``max_calls``) while ``budget_s`` lasts.
    """
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < max_calls and (len(times) < 2 or time.perf_counter() - start < budget_s):
        t0 = time.perf_counter()
        jax.block_until_ready(call())
        times.append((time.perf_counter() - t0) / steps_per_call)
    return {"compile_s": compile_s, "step_s": statistics.median(times[1:]),
            "best_step_s": min(times), "first_call_step_s": times[0],
            "steps_per_call": steps_per_call}


def _compile(fn: Callable, *args) -> tuple[Callable, float]:
    t0 = time.perf_counter()
    compiled = fn.lower(*args).compile()
    return compiled, time.perf_counter() - t0


def _stack(steps: list[StepData]) -> StepData:
    return jax.tree.map(lambda *a: jnp.stack(a), *steps)


def jax_timings(config: MicrogptConfig | None = None, n_steps_warm: int = 20,
                orders: Sequence[int] = (1, 3, 6),
                directions: Sequence[int] = (1, 64, 512), budget_s: float = 10.0,
                jet_steps: Mapping[int, int] | None = None) -> dict:
    """Time the JAX peer on the first ``n_steps_warm`` training steps; all figures in seconds.

    Every timed entry holds ``compile_s``, ``step_s`` (median per step) and ``best_step_s``:
    ``real`` (the jitted step, one call per step); ``real_scan`` (the steps as one
    ``lax.scan``, per step: no Python dispatch); ``retrain_batch`` (one vmapped step of
    ``RETRAIN_BATCH`` retrainings with their own down-weights; plus ``per_retraining_s``);
    ``retrain_scan`` (the same vmapped steps as one ``lax.scan``, per step);
    ``jet[k][n]`` (order-k jet steps along n real unit directions as one ``lax.scan``
    (:func:`make_jet_scan`) of ``jet_steps[n]`` steps (default ``min(n_steps_warm, 5)``),
    n = 1 plain, n > 1 vmapped with the real part shared; plus ``per_direction_s``).  A jet
    configuration that fails (e.g. out of memory) gets ``{"error": message}`` instead.
    ``budget_s`` caps the time spent running each entry (at least 2 calls or 3 steps).
    """
    config = MicrogptConfig() if config is None else config
    steps = _per_step_data(config, n_steps_warm)
    params, m, v = init_state(config)
    rng = np.random.default_rng(0)
    zero = jnp.asarray(0.0)
    out: dict = {"config": config, "n_steps_warm": n_steps_warm,
                 "backend": jax.default_backend(), "jax_version": jax.__version__}

    step, compile_s = _compile(make_step(config), params, m, v, steps[0], zero)
    state = [params, m, v]

    def real(t):
        state[:] = step(*state, steps[t], zero)
        return state
    out["real"] = _timed(compile_s, real, n_steps_warm, budget_s)

    stacked, xs = _stack(steps), jnp.zeros(n_steps_warm)
    scan, compile_s = _compile(make_scan(config), params, m, v, stacked, xs)
    out["real_scan"] = _timed_calls(compile_s, lambda: scan(params, m, v, stacked, xs),
                                    n_steps_warm, budget_s)

    batch = list(_broadcast((params, m, v), (RETRAIN_BATCH,)))
    x_batch = jnp.asarray(rng.uniform(size=(n_steps_warm, RETRAIN_BATCH)))
    vstep, compile_s = _compile(make_step(config, batched=True), *batch, steps[0], x_batch[0])

    def retrain(t):
        batch[:] = vstep(*batch, steps[t], x_batch[t])
        return batch
    out["retrain_batch"] = _timed(compile_s, retrain, n_steps_warm, budget_s)
    out["retrain_batch"]["per_retraining_s"] = out["retrain_batch"]["step_s"] / RETRAIN_BATCH

    vscan, compile_s = _compile(make_scan(config, batched=True), *batch, stacked, x_batch)
    out["retrain_scan"] = _timed_calls(compile_s, lambda: vscan(*batch, stacked, x_batch),
                                       n_steps_warm, budget_s)
    out["retrain_scan"]["per_retraining_s"] = out["retrain_scan"]["step_s"] / RETRAIN_BATCH

    flat = tuple(ravel_pytree(s)[0] for s in (params, m, v))
    jet_steps = jet_steps or {}
    out["jet"] = {}
    for k in orders:
        out["jet"][k] = {}
        for n in directions:
            n_jet = min(jet_steps.get(n, 5), n_steps_warm)
            try:
                out["jet"][k][n] = _time_jet(config, k, n, flat, steps[:n_jet], rng, budget_s)
            except Exception as err:  # noqa: BLE001 - e.g. XLA out of memory: report, go on
                out["jet"][k][n] = {"error": f"{type(err).__name__}: {err}"[:200]}
    return out


def _time_jet(config: MicrogptConfig, k: int, n: int, flat: tuple, steps: list[StepData],
              rng: np.random.Generator, budget_s: float) -> dict:
    """Order-k jet steps along n real unit directions (n = 1 unbatched, else vmapped), the
    ``len(steps)`` steps as one ``lax.scan``."""
    batched = n > 1
    lead = (n,) if batched else ()
    psi = rng.standard_normal((len(steps),) + lead)
    psi /= np.linalg.norm(psi, axis=0, keepdims=True)
    terms = tuple([jnp.zeros(lead + flat[0].shape) for _ in range(k)] for _ in range(3))
    stacked, xs, psis = _stack(steps), jnp.zeros(len(steps)), jnp.asarray(psi)
    run, compile_s = _compile(make_jet_scan(config, k, batched), flat, terms, stacked, xs, psis)
    timed = _timed_calls(compile_s, lambda: run(flat, terms, stacked, xs, psis), len(steps),
                         budget_s)
    timed["per_direction_s"] = timed["step_s"] / n
    return timed


def _row(what: str, t: dict, per: float | None = None) -> str:
    per_s = f"{per * 1e3:12.3f}" if per is not None else " " * 12
    return (f"{what:30s} {t['step_s'] * 1e3:10.3f} {t['best_step_s'] * 1e3:10.3f} {per_s} "
            f"{t['compile_s']:10.2f}")


def main() -> None:
    """Print the JAX peer's timings as a table (milliseconds per step, seconds to compile)."""
    r = jax_timings()
    print(f"JAX {r['jax_version']} on {r['backend']}, float64, microgpt default config, "
          f"first {r['n_steps_warm']} training steps")
    print(f"{'what':30s} {'median ms':>10s} {'best ms':>10s} {'ms per unit':>12s} "
          f"{'compile s':>10s}")
    print(_row("real step (jit)", r["real"]))
    print(_row("real step (lax.scan)", r["real_scan"]))
    print(_row(f"vmap {RETRAIN_BATCH} retrainings", r["retrain_batch"],
               r["retrain_batch"]["per_retraining_s"]))
    print(_row(f"vmap {RETRAIN_BATCH} (lax.scan)", r["retrain_scan"],
               r["retrain_scan"]["per_retraining_s"]))
    for k, by_n in r["jet"].items():
        for n, t in by_n.items():
            what = f"jet k={k}, {n} direction{'s' if n > 1 else ''}"
            print(f"{what:30s} failed: {t['error']}" if "error" in t
                  else _row(what, t, t["per_direction_s"]))


if __name__ == "__main__":
    main()
