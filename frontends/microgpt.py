"""microgpt (the paper's variant, DESIGN §5) written with the tracer: one step circuit + a loop.

One name per step. The step circuit has FIXED shapes: every name is padded to ``block_size``
positions; per-step data gives one-hot tokens and targets, a position mask and 1/n, so padded
positions contribute exactly 0 to the loss and (through the causal mask) nothing to the real
positions. Model: x = RMSNorm(wte[tok] + wpe[pos]); per layer: RMSNorm -> causal multi-head
attention (softmax subtracting the max as a constant) -> wo -> residual; RMSNorm -> fc1 ->
exact GELU -> fc2 -> residual; logits = lm_head x (no final norm). Loss = mean next-token cross
entropy over the name, times (1 - x_step). Adam with linear lr decay, bias correction and the
analytic update m_hat / sqrt(v_hat + eps). A deleted step still runs: zero gradient, moments
decay, parameters move with the momentum.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import lru_cache

import numpy as np

from ..ir.circuit import Circuit, Program
from ..passes.simplify import simplify
from .microgpt_data import (MicrogptConfig, MicrogptData, encode, param_shapes,
                            names_for_steps, prepare, step_arrays)
from .task import TrainingTask
from .tracer import dot, grad, matvec, stop_gradient, trace, trace_program, vmax, vsum


def _rmsnorm(x: list, eps: float) -> list:
    scale = (dot(x, x) / len(x) + eps) ** -0.5
    return [xi * scale for xi in x]


def _constant_max(values: list) -> object:
    """max as a constant: taken over stop_gradient-ed values, so a Taylor run compares real
    constant terms only (no series max, no spurious kink at a tie of two logits)."""
    return vmax([stop_gradient(v) for v in values])


def _log_softmax_at(logits: list, target_onehot) -> object:
    """-log softmax(logits)[target], with the max subtracted as a constant (exact)."""
    shift = _constant_max(logits)
    total = vsum([(logit - shift).exp() for logit in logits])
    return total.log() - (dot(target_onehot, logits) - shift)


def forward_losses(params: dict, tokens_onehot, targets_onehot, n_positions: int,
                   config: MicrogptConfig) -> list:
    """Per-position next-token losses for positions 0..n_positions-1 (causal, KV-cached)."""
    hd = config.head_dim
    keys: list[list[list]] = [[] for _ in range(config.n_layer)]
    values: list[list[list]] = [[] for _ in range(config.n_layer)]
    wte_columns = params["wte"].T  # [n_embd, vocab]: embedding row = onehot . column
    losses = []
    for pos in range(n_positions):
        x = [dot(tokens_onehot[pos], wte_columns[d]) + params["wpe"][pos, d]
             for d in range(config.n_embd)]
        x = _rmsnorm(x, config.rms_eps)
        for li in range(config.n_layer):
            layer = lambda name: params[f"layer{li}.{name}"]  # noqa: E731
            residual = x
            x = _rmsnorm(x, config.rms_eps)
            q, k, v = (matvec(layer(w), x) for w in ("attn_wq", "attn_wk", "attn_wv"))
            keys[li].append(k)
            values[li].append(v)
            attended = []
            for h in range(config.n_head):
                lo, hi = h * hd, (h + 1) * hd
                scores = [dot(q[lo:hi], key[lo:hi]) / hd ** 0.5 for key in keys[li]]
                shift = _constant_max(scores)
                weights = [(s - shift).exp() for s in scores]
                total = vsum(weights)
                weights = [w / total for w in weights]
                attended += [dot(weights, [val[j] for val in values[li]]) for j in range(lo, hi)]
            x = [a + r for a, r in zip(matvec(layer("attn_wo"), attended), residual)]
            residual = x
            hidden = [h.gelu() for h in matvec(layer("mlp_fc1"), _rmsnorm(x, config.rms_eps))]
            x = [a + r for a, r in zip(matvec(layer("mlp_fc2"), hidden), residual)]
        logits = matvec(params["lm_head"], x)
        losses.append(_log_softmax_at(logits, targets_onehot[pos]))
    return losses


def _shapes(config: MicrogptConfig, vocab_size: int) -> dict[str, tuple[int, ...]]:
    return dict(param_shapes(config, vocab_size))


def trace_step_program(config: MicrogptConfig, vocab_size: int, n_steps: int) -> Program:
    """The traced (and simplified) training program; the down-weight input is ``x``.

    The step circuit does not depend on the number of steps, so it is traced once per model
    shape and reused (tracing the default model takes seconds)."""
    step = _traced_step(replace(config, n_steps=1), vocab_size)
    return Program(step.step, n_steps, step.carry, step.per_step, step.weight)


@lru_cache(maxsize=4)
def _traced_step(config: MicrogptConfig, vocab_size: int) -> Program:
    shapes = _shapes(config, vocab_size)
    state = {**shapes, **{f"m.{n}": s for n, s in shapes.items()},
             **{f"v.{n}": s for n, s in shapes.items()}}
    block, vocab = config.block_size, vocab_size
    per_step = {"tokens_onehot": (block, vocab), "targets_onehot": (block, vocab),
                "mask": (block,), "inv_n": (), "lr": (), "bias1": (), "bias2": ()}

    def step(x, tokens_onehot, targets_onehot, mask, inv_n, lr, bias1, bias2, **state_in):
        params = {n: state_in[n] for n in shapes}
        losses = forward_losses(params, tokens_onehot, targets_onehot, block, config)
        loss = dot(mask, losses) * inv_n * (1 - x[0])
        flat = np.concatenate([params[n].ravel() for n in shapes])
        grads = grad(loss, flat)
        new, offset = {}, 0
        b1, b2 = config.beta1, config.beta2
        for name, shape in shapes.items():
            size = int(np.prod(shape))
            g = grads[offset: offset + size]
            offset += size
            m = b1 * state_in[f"m.{name}"].ravel() + (1 - b1) * g
            v = b2 * state_in[f"v.{name}"].ravel() + (1 - b2) * (g * g)
            p = params[name].ravel() - lr * (m / bias1) / (v / bias2 + config.adam_eps) ** 0.5
            new[name], new[f"m.{name}"], new[f"v.{name}"] = (a.reshape(shape) for a in (p, m, v))
        return new

    return simplify(trace_program(step, n_steps=1, state=state, per_step=per_step, weight="x"))


@dataclass(frozen=True)
class MicrogptTask(TrainingTask):
    """The microgpt training task; ``example_labels`` are the names trained on, one per step."""

    config: MicrogptConfig = field(default_factory=MicrogptConfig)
    microgpt: MicrogptData | None = None

    def loss_measurement(self, name: str) -> Circuit:
        """Mean next-token loss of the trained model on ``name`` (inputs: the parameters)."""
        return loss_measurement(self.microgpt, self.config, name)

    @property
    def param_names(self) -> tuple[str, ...]:
        return self.microgpt.param_order


def loss_measurement(data: MicrogptData, config: MicrogptConfig, name: str) -> Circuit:
    tokens = _encode_checked(name, data)
    n = min(config.block_size, len(tokens) - 1)
    onehot = np.eye(data.vocab_size)

    def measure(**params):
        losses = forward_losses(params, onehot[tokens[:n]], onehot[tokens[1: n + 1]], n, config)
        return {"loss": vsum(losses) / n}

    return simplify(trace(measure, **_shapes(config, data.vocab_size)))


def _encode_checked(name: str, data: MicrogptData) -> list[int]:
    if not name:
        raise ValueError("cannot measure the loss of an empty name")
    return encode(name, data)


def build_task(config: MicrogptConfig | None = None, n_steps: int | None = None,
               names: list[str] | None = None) -> MicrogptTask:
    """microgpt on the vendored names (or ``names``), ``n_steps`` steps (default config.n_steps)."""
    return assemble_task(MicrogptTask, trace_step_program, step_arrays, config, n_steps, names)


def assemble_task(task_class: type, trace_program, make_arrays, config: MicrogptConfig | None,
                  n_steps: int | None, names: list[str] | None):
    """A microgpt ``task_class`` whose step is ``trace_program(config, vocab_size, n_steps)``
    reading the per-step data ``make_arrays(step_names, data, config)``: the names, init, Adam
    state and schedule every microgpt frontend shares."""
    config = config or MicrogptConfig()
    if n_steps is not None:  # the lr schedule decays over the run actually trained
        config = replace(config, n_steps=n_steps)
    data = prepare(config, names)
    step_names = names_for_steps(data, config.n_steps)
    init = dict(data.init_params)
    init.update({f"m.{n}": np.zeros_like(a) for n, a in data.init_params.items()})
    init.update({f"v.{n}": np.zeros_like(a) for n, a in data.init_params.items()})
    return task_class(program=trace_program(config, data.vocab_size, config.n_steps), init=init,
                      data=make_arrays(step_names, data, config), static={},
                      n_examples=config.n_steps,
                      example_ids=np.arange(config.n_steps).reshape(-1, 1),
                      example_labels=step_names, config=config, microgpt=data)