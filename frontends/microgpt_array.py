"""microgpt (DESIGN §5) written with the array tracer: one circuit node per array operation.

The same model, loss, schedule and Adam as :mod:`.microgpt` (the scalar-traced version, whose
docstring states the semantics), the same parameter names and [out, in] shapes (so initial
states and trained states are interchangeable between the two), written the way numpy would:

* Positions are the rows of matrices ``[block_size, n_embd]``. Every name is padded to
  ``block_size`` positions; a padded position reads token 0 and target 0. Attention is causal,
  so a padded position (they all come after the real ones) never reaches a real one, and the
  position mask removes it from the loss: its contribution and its gradient are exactly 0.
* Token and target ids are per-step data, real arrays holding integer values (``tokens``,
  ``targets`` ``[n_steps, block_size]``). An embedding row is ``take`` (``wte[tokens]``), and
  the logit of the target is the row-wise dot ``x_p · lm_head[target_p]`` (``take`` again): no
  one-hot vectors anywhere.
* Attention scores of all heads are one ``einsum`` (one ``dot_general`` node) ``[head, query,
  key]``; the causal mask is a constant added to them, ``-1e30`` above the diagonal:
  ``exp(-1e30 - shift)`` underflows to exactly 0, so a future key gets weight 0 and, at every
  Taylor order, zero higher coefficients (the exp recurrence multiplies by the value 0).
* Every softmax subtracts its row max as a stop-gradient constant, exactly as the scalar version
  does, so a Taylor run never sees the kink of ``max`` (the masked entries never win the max:
  the diagonal is always unmasked).

Measurements (the loss on a name) are array circuits too: the name's ids are constants and its
positions are exactly its length (no padding), so :class:`MicrogptArrayTask` is a
:class:`~.microgpt.MicrogptTask` whose step and measurements are both array circuits.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Mapping

import numpy as np

from ..ir.circuit import Circuit, Program
from ..passes.simplify import simplify
from .microgpt import MicrogptTask, assemble_task
from .microgpt_data import MicrogptConfig, MicrogptData, encode, param_shapes, step_arrays
from .tracer import einsum, exp, gelu, grad, log, stop_gradient, trace, trace_program

#: added to the attention score of a future key: exp of it underflows to exactly 0.0
_MASKED = -1e30


def _rmsnorm(x, eps: float):
    """x · (mean(x²) + eps)^(-1/2) along the last axis (one scale per position)."""
    return x * ((x * x).mean(axis=-1, keepdims=True) + eps) ** -0.5


def _softmax_rows(scores):
    """softmax along the last axis, the row max subtracted as a constant (exact)."""
    weights = exp(scores - stop_gradient(scores.max(axis=-1, keepdims=True)))
    return weights / weights.sum(axis=-1, keepdims=True)


def _causal_mask(n_positions: int) -> np.ndarray:
    """[query, key]: 0 where key <= query, ``_MASKED`` above the diagonal."""
    return np.triu(np.full((n_positions, n_positions), _MASKED), k=1)


def _attention(x, layer: Mapping, config: MicrogptConfig):
    """Causal multi-head self-attention of the rows of x ([positions, n_embd]), then wo."""
    n, hd = x.shape[0], config.head_dim
    q, k, v = ((x @ layer[w].T).reshape(n, config.n_head, hd)
               for w in ("attn_wq", "attn_wk", "attn_wv"))
    scores = einsum("qhd,khd->hqk", q, k) / hd ** 0.5 + _causal_mask(n)
    attended = einsum("hqk,khd->qhd", _softmax_rows(scores), v)
    return attended.reshape(n, config.n_embd) @ layer["attn_wo"].T


def forward(params: Mapping, tokens, config: MicrogptConfig):
    """The last hidden state [positions, n_embd] of the token ids ``tokens`` ([positions])."""
    n = tokens.shape[0]
    x = _rmsnorm(params["wte"][tokens] + params["wpe"][:n], config.rms_eps)
    for li in range(config.n_layer):
        layer = {w: params[f"layer{li}.{w}"]
                 for w in ("attn_wq", "attn_wk", "attn_wv", "attn_wo", "mlp_fc1", "mlp_fc2")}
        x = x + _attention(_rmsnorm(x, config.rms_eps), layer, config)
        hidden = gelu(_rmsnorm(x, config.rms_eps) @ layer["mlp_fc1"].T)
        x = x + hidden @ layer["mlp_fc2"].T
    return x


def position_losses(params: Mapping, tokens, targets, config: MicrogptConfig):
    """Next-token cross entropy at every position ([positions]): logsumexp − target logit."""
    x = forward(params, tokens, config)
    logits = x @ params["lm_head"].T
    shift = stop_gradient(logits.max(axis=-1, keepdims=True))
    total = exp(logits - shift).sum(axis=-1)
    target_logit = (x * params["lm_head"][targets]).sum(axis=-1)
    return log(total) - (target_logit - shift[:, 0])


def _shapes(config: MicrogptConfig, vocab_size: int) -> dict[str, tuple[int, ...]]:
    return dict(param_shapes(config, vocab_size))


def trace_step_program_array(config: MicrogptConfig, vocab_size: int, n_steps: int) -> Program:
    """The traced (and simplified) array training program (down-weight input ``x``), looping
    ``n_steps`` times.

    Its carried state has the names and shapes of :func:`.microgpt.trace_step_program`'s; its
    per-step data is :func:`step_arrays_array`'s."""
    step = _traced_step(replace(config, n_steps=1), vocab_size)
    return Program(step.step, n_steps, step.carry, step.per_step, step.weight)


def _adam(param, m, v, g, lr, bias1, bias2, config: MicrogptConfig) -> tuple:
    """One Adam update with the analytic m̂ / sqrt(v̂ + eps) (DESIGN §5)."""
    b1, b2 = config.beta1, config.beta2
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * (g * g)
    return param - lr * (m / bias1) / (v / bias2 + config.adam_eps) ** 0.5, m, v


@lru_cache(maxsize=4)
def _traced_step(config: MicrogptConfig, vocab_size: int) -> Program:
    shapes = _shapes(config, vocab_size)
    state = {**shapes, **{f"m.{n}": s for n, s in shapes.items()},
             **{f"v.{n}": s for n, s in shapes.items()}}
    block = config.block_size
    per_step = {"tokens": (block,), "targets": (block,), "mask": (block,), "inv_n": (),
                "lr": (), "bias1": (), "bias2": ()}

    def step(x, tokens, targets, mask, inv_n, lr, bias1, bias2, **state_in):
        params = {n: state_in[n] for n in shapes}
        losses = position_losses(params, tokens, targets, config)
        loss = (mask * losses).sum() * inv_n * (1 - x[0])
        grads = grad(loss, params)
        new = {}
        for n in shapes:
            new[n], new[f"m.{n}"], new[f"v.{n}"] = _adam(
                params[n], state_in[f"m.{n}"], state_in[f"v.{n}"], grads[n], lr, bias1, bias2,
                config)
        return new

    return simplify(trace_program(step, n_steps=1, state=state, per_step=per_step, weight="x",
                                  inputs="tensors"))


def step_arrays_array(step_names: list[str], data: MicrogptData,
                      config: MicrogptConfig) -> dict[str, np.ndarray]:
    """Per-step data of the array step: :func:`.microgpt_data.step_arrays` with the one-hot
    tokens and targets replaced by their ids (``[S, block_size]`` floats; 0 at padding)."""
    arrays = step_arrays(step_names, data, config)
    # argmax of an all-zero (padded) row is 0: padded positions read token and target 0
    ids = {"tokens": arrays.pop("tokens_onehot").argmax(axis=-1).astype(np.float64),
           "targets": arrays.pop("targets_onehot").argmax(axis=-1).astype(np.float64)}
    return {**ids, **arrays}


@dataclass(frozen=True)
class MicrogptArrayTask(MicrogptTask):
    """The microgpt training task traced with the array tracer (step and measurements)."""

    def loss_measurement(self, name: str) -> Circuit:
        """Mean next-token loss of the trained model on ``name`` (inputs: the parameters)."""
        return loss_measurement_array(self.microgpt, self.config, name)


def loss_measurement_array(data: MicrogptData, config: MicrogptConfig, name: str) -> Circuit:
    """The loss on ``name`` as an array circuit over the parameters (ids are constants)."""
    if not name:
        raise ValueError("cannot measure the loss of an empty name")
    ids = encode(name, data)
    n = min(config.block_size, len(ids) - 1)
    tokens, targets = np.array(ids[:n]), np.array(ids[1: n + 1])

    def measure(**params):
        return {"loss": position_losses(params, tokens, targets, config).mean()}

    return simplify(trace(measure, inputs="tensors", **_shapes(config, data.vocab_size)))


def build_task_array(config: MicrogptConfig | None = None, n_steps: int | None = None,
                     names: list[str] | None = None) -> MicrogptArrayTask:
    """:func:`.microgpt.build_task` with the array-traced step: same names, init and schedule."""
    return assemble_task(MicrogptArrayTask, trace_step_program_array, step_arrays_array, config,
                         n_steps, names)