"""microgpt data set, hyper-parameters and initialisation (DESIGN §5).

Contract
--------
This module reproduces, bit for bit, the data order and the initial weights of Karpathy's
microgpt reference program as used in the paper's §5.2 experiments, so that results computed
with circuitsketch are comparable with the paper's:

* The data set is the vendored ``data/names.txt``: each line stripped, blank lines dropped,
  file order kept (:func:`load_names`) — 32,033 names (``wc -l`` says 32,032 because the last
  line, "zzyzx", has no trailing newline; Karpathy's script also reports 32,033 docs).
* :func:`prepare` does what the reference does at module level —
  ``random.seed(42); random.shuffle(docs)`` and then one ``random.gauss(0, 0.08)`` per weight —
  using a private ``random.Random(seed)`` instance.  That is the same stream: the module-level
  ``random`` functions are bound methods of one hidden ``Random`` instance, so a fresh instance
  seeded identically yields identical shuffles and draws (and we never touch the global state).
* Weights are drawn in the order ``wte`` [vocab, n_embd], ``wpe`` [block_size, n_embd],
  ``lm_head`` [vocab, n_embd], then per layer ``i``: ``layer{i}.attn_wq``, ``attn_wk``,
  ``attn_wv``, ``attn_wo`` (all [n_embd, n_embd]), ``layer{i}.mlp_fc1`` [mlp_width, n_embd],
  ``layer{i}.mlp_fc2`` [n_embd, mlp_width]; every matrix is [out, in] and filled row by row.
  The default configuration has 4,192 parameters and a vocabulary of 27 (26 letters + BOS).
* The vocabulary is the sorted set of characters over *all* names; token id ``len(chars)`` is
  BOS, which both opens and closes every name (:func:`encode`).
* Training takes one name per step: step ``s`` uses ``names[s % len(names)]``
  (:func:`names_for_steps`).  :func:`step_arrays` turns those names into the fixed-shape,
  padded per-step arrays a step circuit reads (see its docstring for the exact layout).

Everything here is plain data (Python lists and float64 numpy arrays); the model, its backward
pass and Adam live in the step circuit built elsewhere (and, independently, in
``tests/eager_microgpt.py``).
"""

from __future__ import annotations

import math
import pathlib
import random
from dataclasses import dataclass
from typing import Sequence

import numpy as np

__all__ = [
    "NAMES_PATH",
    "MicrogptConfig",
    "MicrogptData",
    "load_names",
    "prepare",
    "encode",
    "names_for_steps",
    "step_arrays",
]

#: The vendored names data set (one name per line; see data/names.LICENSE).
NAMES_PATH = pathlib.Path(__file__).parent / "data" / "names.txt"


def load_names(path: str | pathlib.Path | None = None) -> list[str]:
    """Return the names of the data set in file order.

    Each line is stripped and blank lines are dropped, exactly like the reference's
    ``[l.strip() for l in ... if l.strip()]``.  ``path`` defaults to the vendored
    ``frontends/data/names.txt``.
    """
    p = NAMES_PATH if path is None else pathlib.Path(path)
    with open(p, encoding="utf-8") as fh:
        return [line.strip() for line in fh if line.strip()]


def _check_pos_int(name: str, value: object) -> None:
    # bool is an int subclass; a True size is almost certainly a bug, so refuse it.
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"MicrogptConfig.{name} must be a positive int, got {value!r}")


def _check_finite(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"MicrogptConfig.{name} must be a finite number, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class MicrogptConfig:
    """Hyper-parameters of microgpt as in the paper (defaults = DESIGN §5).

    Model: ``n_layer`` transformer layers of width ``n_embd`` with ``n_head`` heads
    (head_dim = n_embd // n_head), context ``block_size``, MLP width ``mlp_width`` (4·n_embd),
    RMSNorm epsilon ``rms_eps``, weights drawn N(0, init_std²) from ``seed``.
    Optimiser: ``n_steps`` Adam steps, lr ``learning_rate``·(1 − s/n_steps), betas
    ``beta1``/``beta2``, update m̂ / sqrt(v̂ + adam_eps) (epsilon inside the root).
    """

    n_embd: int = 16
    n_head: int = 4
    n_layer: int = 1
    block_size: int = 16
    mlp_width: int = 64
    init_std: float = 0.08
    seed: int = 42
    n_steps: int = 1000
    learning_rate: float = 0.01
    beta1: float = 0.85
    beta2: float = 0.99
    adam_eps: float = 1e-3
    rms_eps: float = 1e-5

    def __post_init__(self) -> None:
        for name in ("n_embd", "n_head", "n_layer", "block_size", "mlp_width", "n_steps"):
            _check_pos_int(name, getattr(self, name))
        if self.n_embd % self.n_head != 0:
            raise ValueError(
                f"MicrogptConfig.n_embd ({self.n_embd}) must be divisible by "
                f"n_head ({self.n_head})"
            )
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"MicrogptConfig.seed must be an int, got {self.seed!r}")
        if _check_finite("init_std", self.init_std) < 0:
            raise ValueError(f"MicrogptConfig.init_std must be >= 0, got {self.init_std!r}")
        if _check_finite("learning_rate", self.learning_rate) < 0:
            raise ValueError(
                f"MicrogptConfig.learning_rate must be >= 0, got {self.learning_rate!r}"
            )
        for name in ("beta1", "beta2"):
            b = _check_finite(name, getattr(self, name))
            # beta = 1 would make the bias correction 1 - beta**(s+1) zero (division by zero).
            if not 0.0 <= b < 1.0:
                raise ValueError(f"MicrogptConfig.{name} must lie in [0, 1), got {b!r}")
        for name in ("adam_eps", "rms_eps"):
            # Both epsilons keep a square root / reciprocal square root analytic: must be > 0.
            if _check_finite(name, getattr(self, name)) <= 0:
                raise ValueError(
                    f"MicrogptConfig.{name} must be > 0, got {getattr(self, name)!r}"
                )

    @property
    def head_dim(self) -> int:
        """Width of one attention head (n_embd // n_head)."""
        return self.n_embd // self.n_head


@dataclass
class MicrogptData:
    """The prepared data set and initial parameters.

    Attributes:
        names: the names after the seeded shuffle (training order).
        chars: sorted unique characters over all names; token id i is ``chars[i]``.
        bos: the BOS token id (= len(chars)).
        vocab_size: len(chars) + 1.
        init_params: parameter name -> float64 array of shape [out, in].
        param_order: parameter names in the order their weights were drawn (the reference's
            flattening order: matrices in this order, each row-major).
    """

    names: list[str]
    chars: list[str]
    bos: int
    vocab_size: int
    init_params: dict[str, np.ndarray]
    param_order: tuple[str, ...]

    @property
    def n_params(self) -> int:
        """Total number of scalar parameters."""
        return sum(int(self.init_params[k].size) for k in self.param_order)


def param_shapes(config: MicrogptConfig, vocab_size: int) -> list[tuple[str, tuple[int, int]]]:
    """Parameter names and [out, in] shapes in the reference's draw order."""
    e = config.n_embd
    shapes = [
        ("wte", (vocab_size, e)),
        ("wpe", (config.block_size, e)),
        ("lm_head", (vocab_size, e)),
    ]
    for i in range(config.n_layer):
        shapes += [
            (f"layer{i}.attn_wq", (e, e)),
            (f"layer{i}.attn_wk", (e, e)),
            (f"layer{i}.attn_wv", (e, e)),
            (f"layer{i}.attn_wo", (e, e)),
            (f"layer{i}.mlp_fc1", (config.mlp_width, e)),
            (f"layer{i}.mlp_fc2", (e, config.mlp_width)),
        ]
    return shapes


def prepare(config: MicrogptConfig | None = None, names: Sequence[str] | None = None) -> MicrogptData:
    """Shuffle the names and draw the initial weights exactly as the reference does.

    ``rng = random.Random(config.seed)``; a copy of ``names`` (default: :func:`load_names`, in
    file order) is ``rng.shuffle``d; then the same ``rng`` draws every weight with
    ``rng.gauss(0, config.init_std)`` in the order of the module docstring.  The caller's list
    is never mutated and the global ``random`` state is never touched.
    """
    if config is None:
        config = MicrogptConfig()
    docs = list(load_names() if names is None else names)
    if not docs:
        raise ValueError("prepare: the names list is empty")
    for d in docs:
        if not isinstance(d, str) or not d:
            raise ValueError(f"prepare: every name must be a non-empty str, got {d!r}")

    rng = random.Random(config.seed)
    rng.shuffle(docs)  # same call, same stream position as the reference's random.shuffle(docs)

    chars = sorted(set("".join(docs)))
    bos = len(chars)
    vocab_size = len(chars) + 1

    init_params: dict[str, np.ndarray] = {}
    order: list[str] = []
    for pname, (n_out, n_in) in param_shapes(config, vocab_size):
        # Nested comprehension = row by row, one gauss per entry, as in the reference's matrix().
        rows = [[rng.gauss(0, config.init_std) for _ in range(n_in)] for _ in range(n_out)]
        init_params[pname] = np.array(rows, dtype=np.float64).reshape(n_out, n_in)
        order.append(pname)

    return MicrogptData(
        names=docs,
        chars=chars,
        bos=bos,
        vocab_size=vocab_size,
        init_params=init_params,
        param_order=tuple(order),
    )


def encode(name: str, data: MicrogptData) -> list[int]:
    """Token ids of ``name``: ``[bos] + [chars.index(c) for c in name] + [bos]``.

    Raises ValueError naming the character and the name if a character is not in the
    vocabulary.
    """
    index = {c: i for i, c in enumerate(data.chars)}
    ids = [data.bos]
    for c in name:
        try:
            ids.append(index[c])
        except KeyError:
            raise ValueError(
                f"encode: character {c!r} of name {name!r} is not in the vocabulary"
            ) from None
    ids.append(data.bos)
    return ids


def names_for_steps(data: MicrogptData, n_steps: int) -> list[str]:
    """The name each training step reads: step s uses ``data.names[s % len(data.names)]``."""
    if isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < 0:
        raise ValueError(f"names_for_steps: n_steps must be an int >= 0, got {n_steps!r}")
    k = len(data.names)
    return [data.names[s % k] for s in range(n_steps)]


def step_arrays(
    names_for_steps: Sequence[str], data: MicrogptData, config: MicrogptConfig
) -> dict[str, np.ndarray]:
    """Per-step data arrays for a fixed-shape (padded) step circuit.

    Step s (s = 0..S-1, S = len(names_for_steps)) trains on one name.  With
    ``tokens = encode(name)`` and ``n = min(block_size, len(tokens) - 1)`` (the number of
    next-token predictions; names longer than block_size - 1 characters are truncated, as in
    the reference), the arrays are (all float64; B = block_size, V = vocab_size):

    ``tokens_onehot`` [S, B, V]
        one-hot of the input token ``tokens[p]`` at position p < n; all-zero rows for p >= n.
    ``targets_onehot`` [S, B, V]
        one-hot of the target ``tokens[p + 1]`` for p < n; all-zero rows for p >= n.
    ``mask`` [S, B]
        1.0 for p < n, else 0.0 (padded positions must not be attended to or scored).
    ``inv_n`` [S]
        1 / n, so the step loss is ``inv_n · Σ_p mask_p · (−log softmax(logits_p)·target_p)``.
    ``lr`` [S]
        ``learning_rate · (1 − s / config.n_steps)`` (linear decay to 0 over n_steps).
    ``bias1`` [S], ``bias2`` [S]
        Adam bias corrections ``1 − beta1**(s+1)`` and ``1 − beta2**(s+1)``.

    Because the padded positions come after the real ones and attention is causal, they never
    influence the real positions; with mask and zero targets they contribute nothing to the loss.
    """
    B = config.block_size
    V = data.vocab_size
    S = len(names_for_steps)
    tok = np.zeros((S, B, V), dtype=np.float64)
    tgt = np.zeros((S, B, V), dtype=np.float64)
    mask = np.zeros((S, B), dtype=np.float64)
    inv_n = np.zeros(S, dtype=np.float64)
    for s, name in enumerate(names_for_steps):
        tokens = encode(name, data)
        n = min(B, len(tokens) - 1)  # len(tokens) >= 2, so n >= 1
        for p in range(n):
            tok[s, p, tokens[p]] = 1.0
            tgt[s, p, tokens[p + 1]] = 1.0
        mask[s, :n] = 1.0
        inv_n[s] = 1.0 / n
    # Python floats for the powers (not numpy **) so the values equal the reference's
    # beta ** (step + 1) exactly.
    lr = np.array([config.learning_rate * (1 - s / config.n_steps) for s in range(S)],
                  dtype=np.float64)
    bias1 = np.array([1 - config.beta1 ** (s + 1) for s in range(S)], dtype=np.float64)
    bias2 = np.array([1 - config.beta2 ** (s + 1) for s in range(S)], dtype=np.float64)
    return {
        "tokens_onehot": tok,
        "targets_onehot": tgt,
        "mask": mask,
        "inv_n": inv_n,
        "lr": lr,
        "bias1": bias1,
        "bias2": bias2,
    }
