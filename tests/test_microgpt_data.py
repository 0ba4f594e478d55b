"""Tests for frontends/microgpt_data.py and the independent eager reference tests/eager_microgpt.py.

The data/initialisation tests recompute the reference's ``random.seed(42)`` stream with the
module-level ``random`` functions (as Karpathy's script does) and compare, so a change of draw
order, shape or seed handling fails here.  The eager tests check the scalar autograd against
finite differences and that short training behaves (loss goes down; full deletion = no motion).
"""

from __future__ import annotations

import math
import pathlib
import random
import sys

import numpy as np
import pytest

from circuitsketch.frontends.microgpt_data import (
    MicrogptConfig,
    MicrogptData,
    encode,
    load_names,
    names_for_steps,
    prepare,
    step_arrays,
)

# pytest runs with --import-mode=importlib, which does not put tests/ on sys.path.
sys.path.insert(0, str(pathlib.Path(__file__).parent))
import eager_microgpt  # noqa: E402

TINY = MicrogptConfig(n_embd=8, n_head=2, block_size=8, mlp_width=32, n_steps=30)


@pytest.fixture(scope="module")
def default_data() -> MicrogptData:
    return prepare(MicrogptConfig())


@pytest.fixture(scope="module")
def tiny_data() -> MicrogptData:
    return prepare(TINY)


# ----------------------------------------------------------------------------- names


def test_load_names_count_and_cleanliness():
    names = load_names()
    # 32,033 names: the file has 32,032 newlines (`wc -l`) but no trailing newline after the
    # last name, "zzyzx".  The reference loader (strip + drop blanks) keeps it, and Karpathy's
    # microgpt reports "num docs: 32033"; DESIGN §5's "32,032" is the `wc -l` count.
    assert len(names) == 32033
    assert names[-1] == "zzyzx"
    assert all(n and n == n.strip() for n in names)
    assert names[0] == "emma"  # file order kept
    assert max(len(n) for n in names) == 15  # the reference's block_size 16 comment relies on it


# ----------------------------------------------------------------------------- config


def test_config_defaults_match_design():
    c = MicrogptConfig()
    assert (c.n_embd, c.n_head, c.n_layer, c.block_size, c.mlp_width) == (16, 4, 1, 16, 64)
    assert c.head_dim == 4
    assert (c.init_std, c.seed, c.n_steps) == (0.08, 42, 1000)
    assert (c.learning_rate, c.beta1, c.beta2, c.adam_eps, c.rms_eps) == (0.01, 0.85, 0.99, 1e-3, 1e-5)


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        (dict(n_embd=10, n_head=4), "divisible"),
        (dict(n_embd=0), "n_embd"),
        (dict(n_head=-1), "n_head"),
        (dict(block_size=0), "block_size"),
        (dict(n_layer=0), "n_layer"),
        (dict(mlp_width=0), "mlp_width"),
        (dict(n_steps=0), "n_steps"),
        (dict(beta1=1.0), "beta1"),
        (dict(beta2=-0.1), "beta2"),
        (dict(adam_eps=0.0), "adam_eps"),
        (dict(rms_eps=float("nan")), "rms_eps"),
        (dict(init_std=-0.1), "init_std"),
    ],
)
def test_config_validation(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        MicrogptConfig(**kwargs)


# ----------------------------------------------------------------------------- prepare


def test_default_sizes(default_data):
    d = default_data
    assert d.n_params == 4192
    assert d.vocab_size == 27
    assert d.chars == [chr(ord("a") + i) for i in range(26)]
    assert d.bos == 26
    assert d.param_order == (
        "wte", "wpe", "lm_head",
        "layer0.attn_wq", "layer0.attn_wk", "layer0.attn_wv", "layer0.attn_wo",
        "layer0.mlp_fc1", "layer0.mlp_fc2",
    )
    shapes = {k: v.shape for k, v in d.init_params.items()}
    assert shapes == {
        "wte": (27, 16), "wpe": (16, 16), "lm_head": (27, 16),
        "layer0.attn_wq": (16, 16), "layer0.attn_wk": (16, 16),
        "layer0.attn_wv": (16, 16), "layer0.attn_wo": (16, 16),
        "layer0.mlp_fc1": (64, 16), "layer0.mlp_fc2": (16, 64),
    }
    assert all(v.dtype == np.float64 for v in d.init_params.values())
    assert sorted(d.names) == sorted(load_names())  # a permutation, nothing lost


def test_matches_reference_random_stream(default_data):
    """Recompute the reference's module-level random stream and compare every weight."""
    saved = random.getstate()
    try:
        random.seed(42)
        docs = [l.strip() for l in open(pathlib.Path(__file__).parents[1] / "frontends" / "data"
                                         / "names.txt").read().strip().split("\n") if l.strip()]
        random.shuffle(docs)
        draws = [random.gauss(0, 0.08) for _ in range(4192)]
    finally:
        random.setstate(saved)
    d = default_data
    assert d.names[0] == docs[0]
    assert d.names == docs
    # The first wte row is the first 16 draws, in order (row-major).
    assert d.init_params["wte"][0, :4].tolist() == draws[:4]
    flat = np.concatenate([d.init_params[k].ravel() for k in d.param_order])
    assert flat.tolist() == draws  # exact equality: same stream, same order
    # The global random state is not touched by prepare().
    before = random.getstate()
    prepare(TINY)
    assert random.getstate() == before


def test_prepare_with_given_names_does_not_mutate():
    names = ["bob", "alice", "eve", "zed"]
    copy = list(names)
    d = prepare(TINY, names)
    assert names == copy
    assert sorted(d.names) == sorted(names)
    assert d.chars == sorted(set("bobaliceevezed"))
    assert d.vocab_size == len(d.chars) + 1
    assert d.init_params["wte"].shape == (d.vocab_size, 8)
    assert d.init_params["layer0.mlp_fc1"].shape == (32, 8)
    with pytest.raises(ValueError):
        prepare(TINY, [])


def test_encode(default_data):
    assert encode("max", default_data) == [26, 12, 0, 23, 26]
    with pytest.raises(ValueError, match=r"'Q'.*'maQx'"):
        encode("maQx", default_data)


def test_names_for_steps_wraps():
    d = prepare(TINY, ["aa", "bb", "cc"])
    steps = names_for_steps(d, 7)
    assert steps == [d.names[s % 3] for s in range(7)]
    assert steps[3] == steps[0] and steps[6] == steps[0]


# ----------------------------------------------------------------------------- step arrays


def test_step_arrays_padding_and_masks(default_data):
    cfg = MicrogptConfig()
    d = default_data
    long_name = "abcdefghijklmnopqrstu"  # 21 chars: no real name is > 15, so a synthetic one
    batch = ["max", "ava", "yuheng", long_name]
    arr = step_arrays(batch, d, cfg)
    B, V = cfg.block_size, d.vocab_size
    assert arr["tokens_onehot"].shape == (4, B, V)
    assert arr["targets_onehot"].shape == (4, B, V)
    assert arr["mask"].shape == (4, B)
    for key in ("inv_n", "lr", "bias1", "bias2"):
        assert arr[key].shape == (4,)
    assert all(a.dtype == np.float64 for a in arr.values())

    expected_n = [4, 4, 7, 16]  # 3-letter name: BOS + 3 chars -> 4 predictions; long: truncated
    for s, (name, n) in enumerate(zip(batch, expected_n)):
        tokens = encode(name, d)
        tok, tgt, mask = arr["tokens_onehot"][s], arr["targets_onehot"][s], arr["mask"][s]
        assert mask.sum() == n
        assert np.array_equal(mask, (np.arange(B) < n).astype(float))
        assert arr["inv_n"][s] == 1.0 / n
        # real positions: exactly one 1 per row, at the right token; padded rows all zero
        assert np.array_equal(tok.sum(axis=1), mask)
        assert np.array_equal(tgt.sum(axis=1), mask)
        assert tok[:n].argmax(axis=1).tolist() == tokens[:n]
        assert tgt[:n].argmax(axis=1).tolist() == tokens[1:n + 1]
        assert not tok[n:].any() and not tgt[n:].any()
        # the target at p is the input at p+1 (teacher forcing)
        assert np.array_equal(tgt[: n - 1], tok[1:n])
    # the truncated name never reaches its closing BOS target; the short ones end on it
    assert arr["targets_onehot"][3, 15].argmax() == encode(long_name, d)[16] != d.bos
    assert arr["targets_onehot"][0, 3].argmax() == d.bos

    for s in range(4):
        assert arr["lr"][s] == 0.01 * (1 - s / 1000)
        assert arr["bias1"][s] == 1 - 0.85 ** (s + 1)
        assert arr["bias2"][s] == 1 - 0.99 ** (s + 1)


def test_step_arrays_schedule_runs_to_zero(tiny_data):
    arr = step_arrays(names_for_steps(tiny_data, 30), tiny_data, TINY)
    assert arr["lr"][0] == TINY.learning_rate
    assert arr["lr"][-1] == pytest.approx(TINY.learning_rate / 30)
    assert np.all(np.diff(arr["lr"]) < 0)


# ----------------------------------------------------------------------------- eager reference


def test_eager_gelu_is_exact_erf_form():
    V = eager_microgpt.Value
    h = 1e-6
    for x0 in (-2.0, -0.3, 0.0, 0.7, 2.5):
        x = V(x0)
        y = x.gelu()
        assert y.data == pytest.approx(x0 * 0.5 * (1 + math.erf(x0 / math.sqrt(2))), abs=1e-15)
        y.backward()
        fd = (V(x0 + h).gelu().data - V(x0 - h).gelu().data) / (2 * h)
        assert x.grad == pytest.approx(fd, rel=1e-7, abs=1e-9)
    # x·Φ(x) at 1 is 0.841344746...; the tanh approximation gives 0.841191990 (off by 1.5e-4).
    assert V(1.0).gelu().data == pytest.approx(0.8413447460685429, abs=1e-12)


def test_eager_gradient_matches_finite_differences(tiny_data):
    """The scalar autograd of the whole name loss agrees with central differences."""
    E = eager_microgpt
    name = tiny_data.names[0]
    P = E._to_values(tiny_data.init_params)
    loss = E._name_loss(P, TINY, name, tiny_data.chars)
    loss.backward()
    rng = np.random.default_rng(0)
    h = 1e-6
    for key in tiny_data.param_order:
        arr = tiny_data.init_params[key]
        for _ in range(2):
            i, j = (int(rng.integers(s)) for s in arr.shape)
            if key == "wte" and i not in E._encode(name, tiny_data.chars):
                i = tiny_data.bos  # make sure the probed embedding row is actually used
            plus = {k: v.copy() for k, v in tiny_data.init_params.items()}
            minus = {k: v.copy() for k, v in tiny_data.init_params.items()}
            plus[key][i, j] += h
            minus[key][i, j] -= h
            fd = (E.loss_eager(plus, name, TINY, tiny_data.chars)
                  - E.loss_eager(minus, name, TINY, tiny_data.chars)) / (2 * h)
            assert P[key][i][j].grad == pytest.approx(fd, rel=1e-5, abs=1e-9), (key, i, j)


def test_eager_training_reduces_loss(tiny_data):
    E = eager_microgpt
    train = tiny_data.names[:10]
    before = np.mean([E.loss_eager(tiny_data.init_params, n, TINY, tiny_data.chars) for n in train])
    trained = E.train_eager(tiny_data.init_params, train, TINY, tiny_data.chars, n_steps=30)
    after = np.mean([E.loss_eager(trained, n, TINY, tiny_data.chars) for n in train])
    assert set(trained) == set(tiny_data.init_params)
    assert all(trained[k].shape == tiny_data.init_params[k].shape for k in trained)
    assert after < before - 0.05, (before, after)
    # inputs untouched
    assert not any(trained[k] is tiny_data.init_params[k] for k in trained)


def test_eager_full_deletion_leaves_params_exactly_at_init(tiny_data):
    """Down-weight 1 everywhere: zero gradients, zero moments, zero updates — bit for bit."""
    E = eager_microgpt
    train = tiny_data.names[:5]
    out = E.train_eager(tiny_data.init_params, train, TINY, tiny_data.chars,
                        down_weights=[1.0] * 12, n_steps=12)
    for k, v in tiny_data.init_params.items():
        assert np.array_equal(out[k], v), k


def test_eager_deleted_step_is_not_skipped(tiny_data):
    """Deleting step 0 differs from dropping it: the schedule still advances (DESIGN §5)."""
    E = eager_microgpt
    names = tiny_data.names[:4]
    deleted = E.train_eager(tiny_data.init_params, names, TINY, tiny_data.chars,
                            down_weights=[1.0, 0.0, 0.0, 0.0], n_steps=4)
    skipped = E.train_eager(tiny_data.init_params, names[1:], TINY, tiny_data.chars, n_steps=3)
    zeros = E.train_eager(tiny_data.init_params, names, TINY, tiny_data.chars,
                          down_weights=[0.0] * 4, n_steps=4)
    plain = E.train_eager(tiny_data.init_params, names, TINY, tiny_data.chars, n_steps=4)
    assert not np.allclose(deleted["wte"], skipped["wte"])
    assert not np.allclose(deleted["wte"], plain["wte"])
    for k in plain:
        assert np.array_equal(zeros[k], plain[k])
    with pytest.raises(ValueError):
        E.train_eager(tiny_data.init_params, names, TINY, tiny_data.chars,
                      down_weights=[0.0] * 3, n_steps=4)


def test_eager_deleted_step_still_moves_with_momentum(tiny_data):
    """Steps [keep, delete]: recompute both Adam updates by hand from the step-0 gradient.

    The deleted step has zero gradient, yet m, v decay, the bias corrections use s = 1 and the
    lr is lr·(1 − 1/2), so the parameters move again by the leftover momentum.
    """
    E = eager_microgpt
    cfg = TINY
    names = tiny_data.names[:2]
    P = E._to_values(tiny_data.init_params)
    E._name_loss(P, cfg, names[0], tiny_data.chars).backward()
    b1, b2, eps, lr = cfg.beta1, cfg.beta2, cfg.adam_eps, cfg.learning_rate
    out = E.train_eager(tiny_data.init_params, names, cfg, tiny_data.chars,
                        down_weights=[0.0, 1.0], n_steps=2)
    for k, p0 in tiny_data.init_params.items():
        g = np.array([[v.grad for v in row] for row in P[k]])
        m1, v1 = (1 - b1) * g, (1 - b2) * g * g
        p1 = p0 - lr * (m1 / (1 - b1)) / np.sqrt(v1 / (1 - b2) + eps)
        m2, v2 = b1 * m1, b2 * v1
        p2 = p1 - lr * 0.5 * (m2 / (1 - b1 ** 2)) / np.sqrt(v2 / (1 - b2 ** 2) + eps)
        np.testing.assert_allclose(out[k], p2, rtol=1e-12, atol=1e-15, err_msg=k)
        if k == "lm_head":
            assert not np.allclose(p2, p1)  # the deleted step really moved the parameters
