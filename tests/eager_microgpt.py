"""Independent eager reference for one-name-per-step microgpt training (DESIGN §5).

Why this exists: the product trains microgpt as a *fixed-shape* step circuit (every name padded
to block_size positions, masked attention, masked loss).  This file recomputes the same training
the way the reference program does it — plain Python floats, a tiny scalar reverse-mode autograd,
variable-length names with a growing KV cache and no padding at all — so a disagreement between
the two exposes a padding/masking/ordering bug in the circuit.  To stay independent it does not
use the circuit code nor ``microgpt_data.encode``; it only takes the hyper-parameters from
``MicrogptConfig`` (and numpy only to accept/return parameter arrays, never in the model math).

Semantics (the paper's variant of Karpathy's microgpt):
    x = rmsnorm(wte[tok] + wpe[pos]); per layer: attention block (pre-rmsnorm, q/k/v linear,
    causal attention over positions 0..pos, per-head logits q·k/sqrt(head_dim), softmax that
    subtracts max(logits) as a constant, heads concatenated, wo, + residual), MLP block
    (pre-rmsnorm, fc1, exact GELU x·Φ(x), fc2, + residual); logits = lm_head·x (no final norm).
    rmsnorm(x) = x·(mean(x²) + rms_eps)^(-1/2).  Name loss = mean over its n positions of
    −log softmax(logits)[target]; step loss = (1 − w_s)·name loss.  Adam with
    lr_s = lr·(1 − s/N), bias corrections 1 − β^(s+1), update m̂/sqrt(v̂ + adam_eps).
    A deleted step (w_s = 1) has zero gradient but still decays the moments and moves params.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from circuitsketch.frontends.microgpt_data import MicrogptConfig

_INV_SQRT2 = 1.0 / math.sqrt(2.0)
_INV_SQRT2PI = 1.0 / math.sqrt(2.0 * math.pi)


class Value:
    """A scalar node of a reverse-mode autograd graph (micrograd style).

    Each node stores its value, its accumulated gradient, its children and the local partial
    derivatives d(self)/d(child), so backward is one generic loop.
    """

    __slots__ = ("data", "grad", "_children", "_local")

    def __init__(self, data: float, children: tuple = (), local: tuple = ()):
        self.data = data
        self.grad = 0.0
        self._children = children
        self._local = local

    def __add__(self, other):
        if isinstance(other, Value):
            return Value(self.data + other.data, (self, other), (1.0, 1.0))
        return Value(self.data + other, (self,), (1.0,))

    __radd__ = __add__

    def __mul__(self, other):
        if isinstance(other, Value):
            return Value(self.data * other.data, (self, other), (other.data, self.data))
        return Value(self.data * other, (self,), (float(other),))

    __rmul__ = __mul__

    def __pow__(self, p: float):
        # Only constant exponents are needed (rsqrt in rmsnorm, reciprocal in softmax).
        return Value(self.data ** p, (self,), (p * self.data ** (p - 1),))

    def __neg__(self):
        return self * -1.0

    def __sub__(self, other):
        return self + (-other)

    def __truediv__(self, other):
        return self * other ** -1.0

    def exp(self):
        e = math.exp(self.data)
        return Value(e, (self,), (e,))

    def log(self):
        return Value(math.log(self.data), (self,), (1.0 / self.data,))

    def gelu(self):
        # Exact GELU x·Φ(x), Φ the standard normal CDF via erf (not the tanh approximation);
        # d/dx = Φ(x) + x·φ(x).
        x = self.data
        cdf = 0.5 * (1.0 + math.erf(x * _INV_SQRT2))
        pdf = _INV_SQRT2PI * math.exp(-0.5 * x * x)
        return Value(x * cdf, (self,), (cdf + x * pdf,))

    def backward(self) -> None:
        """Accumulate d(self)/d(node) into every node's ``grad``."""
        # Iterative post-order DFS: a recursive one overflows Python's stack on ~10^5 nodes.
        topo: list[Value] = []
        visited: set[Value] = set()
        stack: list[tuple[Value, bool]] = [(self, False)]
        while stack:
            node, done = stack.pop()
            if done:
                topo.append(node)
                continue
            if node in visited:
                continue
            visited.add(node)
            stack.append((node, True))
            for c in node._children:
                if c not in visited:
                    stack.append((c, False))
        self.grad = 1.0
        for node in reversed(topo):
            g = node.grad
            for c, lg in zip(node._children, node._local):
                c.grad += lg * g


# ----------------------------------------------------------------------------- model


def _vsum(xs):
    """Sum of Values as ONE n-ary addition node (local derivative 1 for every term).

    Mathematically the same as a chain of binary +; one node instead of len(xs) - 1 roughly
    halves the graph of every dot product and so the eager step time.
    """
    xs = tuple(xs)
    return Value(sum(x.data for x in xs),
                 xs, (1.0,) * len(xs))


def _linear(x, w):
    # w is [out][in]: y[o] = sum_i w[o][i] * x[i]
    return [_vsum(wi * xi for wi, xi in zip(row, x)) for row in w]


def _rmsnorm(x, eps):
    ms = _vsum(xi * xi for xi in x) * (1.0 / len(x))
    scale = (ms + eps) ** -0.5
    return [xi * scale for xi in x]


def _softmax(logits):
    # The max is subtracted as a plain float constant: it carries no gradient (analytic form).
    mx = max(v.data for v in logits)
    exps = [(v - mx).exp() for v in logits]
    inv_total = _vsum(exps) ** -1.0
    return [e * inv_total for e in exps]


def _forward_position(P, cfg: MicrogptConfig, tok: int, pos: int, keys, values):
    """Logits at one position; appends this position's k, v to the per-layer caches."""
    x = [t + p for t, p in zip(P["wte"][tok], P["wpe"][pos])]
    x = _rmsnorm(x, cfg.rms_eps)
    hd = cfg.head_dim
    inv_sqrt_hd = 1.0 / math.sqrt(hd)
    for li in range(cfg.n_layer):
        res = x
        x = _rmsnorm(x, cfg.rms_eps)
        q = _linear(x, P[f"layer{li}.attn_wq"])
        k = _linear(x, P[f"layer{li}.attn_wk"])
        v = _linear(x, P[f"layer{li}.attn_wv"])
        keys[li].append(k)
        values[li].append(v)
        att = []
        for h in range(cfg.n_head):
            lo, hi = h * hd, (h + 1) * hd
            qh = q[lo:hi]
            # causal: the cache holds exactly positions 0..pos
            logits = [_vsum(a * b for a, b in zip(qh, kt[lo:hi])) * inv_sqrt_hd
                      for kt in keys[li]]
            wts = _softmax(logits)
            for j in range(lo, hi):
                att.append(_vsum(wts[t] * values[li][t][j] for t in range(len(wts))))
        x = _linear(att, P[f"layer{li}.attn_wo"])
        x = [a + b for a, b in zip(x, res)]
        res = x
        x = _rmsnorm(x, cfg.rms_eps)
        x = _linear(x, P[f"layer{li}.mlp_fc1"])
        x = [xi.gelu() for xi in x]
        x = _linear(x, P[f"layer{li}.mlp_fc2"])
        x = [a + b for a, b in zip(x, res)]
    return _linear(x, P["lm_head"])


def _encode(name: str, chars: Sequence[str]) -> list[int]:
    # Local re-implementation (independence from microgpt_data.encode): BOS = len(chars) on
    # both ends.
    bos = len(chars)
    index = {c: i for i, c in enumerate(chars)}
    ids = [bos]
    for c in name:
        if c not in index:
            raise ValueError(f"character {c!r} of name {name!r} is not in the vocabulary")
        ids.append(index[c])
    return ids + [bos]


def _name_loss(P, cfg: MicrogptConfig, name: str, chars: Sequence[str]) -> Value:
    """Mean next-token cross-entropy of one name, variable length, truncated to block_size."""
    tokens = _encode(name, chars)
    n = min(cfg.block_size, len(tokens) - 1)
    keys = [[] for _ in range(cfg.n_layer)]
    values = [[] for _ in range(cfg.n_layer)]
    losses = []
    for pos in range(n):
        logits = _forward_position(P, cfg, tokens[pos], pos, keys, values)
        probs = _softmax(logits)
        losses.append(-probs[tokens[pos + 1]].log())
    return _vsum(losses) * (1.0 / n)


def _to_values(params: dict[str, np.ndarray]) -> dict[str, list[list[Value]]]:
    return {k: [[Value(float(a)) for a in row] for row in np.asarray(arr, dtype=np.float64)]
            for k, arr in params.items()}


def _to_arrays(P: dict[str, list[list[Value]]]) -> dict[str, np.ndarray]:
    return {k: np.array([[v.data for v in row] for row in mat], dtype=np.float64)
            for k, mat in P.items()}


# ----------------------------------------------------------------------------- public API


def loss_eager(params: dict[str, np.ndarray], name: str, config: MicrogptConfig,
               chars: Sequence[str]) -> float:
    """Mean next-token loss of ``name`` under ``params`` (forward only)."""
    return float(_name_loss(_to_values(params), config, name, chars).data)


def train_eager(init_params: dict[str, np.ndarray], names: Sequence[str], config: MicrogptConfig,
                chars: Sequence[str], down_weights: Sequence[float] | None = None,
                n_steps: int | None = None) -> dict[str, np.ndarray]:
    """Train microgpt eagerly, one name per step, and return the trained parameters.

    Step s (0..N-1, N = ``n_steps`` or ``config.n_steps``) trains on ``names[s % len(names)]``
    with loss multiplied by (1 − down_weights[s]) (``down_weights`` has one entry per step;
    None means all zero).  N also sets the lr schedule lr·(1 − s/N), as in the reference.
    Returns a new dict with the same keys and shapes as ``init_params`` (inputs untouched).
    """
    N = config.n_steps if n_steps is None else int(n_steps)
    if N < 0:
        raise ValueError(f"n_steps must be >= 0, got {N}")
    if not names:
        raise ValueError("names is empty")
    if down_weights is None:
        down_weights = [0.0] * N
    if len(down_weights) != N:
        raise ValueError(f"down_weights has {len(down_weights)} entries, expected one per step ({N})")

    P = _to_values(init_params)
    flat = [p for mat in P.values() for row in mat for p in row]
    m = [0.0] * len(flat)
    v = [0.0] * len(flat)
    b1, b2, eps = config.beta1, config.beta2, config.adam_eps
    for s in range(N):
        # The forward/backward runs even for w_s = 1: the gradient is then exactly zero
        # (0·finite), and Adam below still decays the moments and advances the schedule.
        loss = _name_loss(P, config, names[s % len(names)], chars) * (1.0 - float(down_weights[s]))
        loss.backward()
        lr_t = config.learning_rate * (1 - s / N)
        c1 = 1 - b1 ** (s + 1)
        c2 = 1 - b2 ** (s + 1)
        for i, p in enumerate(flat):
            g = p.grad
            m[i] = b1 * m[i] + (1 - b1) * g
            v[i] = b2 * v[i] + (1 - b2) * g * g
            p.data -= lr_t * (m[i] / c1) / math.sqrt(v[i] / c2 + eps)
            p.grad = 0.0
    return _to_arrays(P)
