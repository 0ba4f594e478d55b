"""Golden text of what the Taylor pass emits: a few small traced circuits lowered at k = 2.

Each ``tests/golden/taylor_<name>.txt`` holds the printed lowered circuit or program (the same
graph, nodes typed ``: s``, ``order=2``, source lines kept). A change to the pass's typing, to
the tracer's emitted nodes or to the printer shows up here as a text diff in review. After an
intended change, regenerate and review the diff:

    python tests/test_taylor_golden.py --regen

The traced functions come first in this file, so edits further down keep their ``@ file:line``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

import circuitsketch as cs


def gelu_unit(x, w):
    return (cs.dot(w, x) + 0.5).gelu()


def softmax_with_constant_shift(x):
    shift = cs.stop_gradient(cs.vmax(x))
    e = np.exp(x - shift)
    return e / cs.vsum(e)


def partly_seeded(x, y):
    return {"mixed": (x * y).exp() + y.log(), "real_only": (y * y + 1.0).sqrt(),
            "kinked": cs.select(x > y, x.relu(), y ** 1.5)}


def weighted_sgd_step(w, features, label, x):
    p = 1.0 / (1.0 + (-cs.dot(w, features)).exp())
    loss = (1.0 - x[0]) * -(label * p.log() + (1.0 - label) * (1.0 - p).log())
    return {"w": w - 0.5 * cs.grad(loss, w)}


GOLDEN_DIR = Path(__file__).parent / "golden"
ORDER = 2


def lowered_texts() -> dict[str, str]:
    circuits = {
        "gelu_unit": (cs.trace(gelu_unit, x=(2,), w=(2,)), {"x"}),
        "softmax_with_constant_shift": (cs.trace(softmax_with_constant_shift, x=(3,)), {"x"}),
        "partly_seeded": (cs.trace(partly_seeded, x=(), y=()), {"x"}),
    }
    texts = {name: cs.print_circuit(cs.taylor(c, order=ORDER, seeds=seeds))
             for name, (c, seeds) in circuits.items()}
    program = cs.trace_program(weighted_sgd_step, n_steps=100, state={"w": (2,)},
                               per_step={"features": (2,), "label": ()}, weight="x")
    texts["weighted_sgd_step"] = cs.print_program(cs.taylor(program, order=ORDER))
    return texts


TEXTS = lowered_texts()


@pytest.mark.parametrize("name", sorted(TEXTS))
def test_lowered_ir_matches_golden_text(name):
    path = GOLDEN_DIR / f"taylor_{name}.txt"
    assert path.exists(), f"missing {path}: run python tests/test_taylor_golden.py --regen"
    assert TEXTS[name] == path.read_text(), (
        f"the lowered IR of {name} changed; if intended, regenerate with "
        "`python tests/test_taylor_golden.py --regen` and review the diff")


@pytest.mark.parametrize("name", sorted(TEXTS))
def test_golden_text_parses_verifies_and_prints_back(name):
    text = (GOLDEN_DIR / f"taylor_{name}.txt").read_text()
    if text.startswith("program"):
        parsed = cs.verify_program(cs.parse_program(text))
        assert cs.print_program(parsed) == text and parsed.order == ORDER
    else:
        parsed = cs.verify(cs.parse_circuit(text))
        assert cs.print_circuit(parsed) == text and parsed.order == ORDER


def test_golden_softmax_series_runs_like_its_derivative():
    """The pinned softmax evaluates: coefficient 1 is the softmax Jacobian times the direction
    (J = diag(s) - s s^T), an independent check that the golden IR means what it should."""
    lowered = cs.parse_circuit((GOLDEN_DIR / "taylor_softmax_with_constant_shift.txt").read_text())
    x0, v = np.array([0.2, -0.4, 1.1]), np.array([1.0, 0.5, -2.0])
    series = np.zeros((ORDER + 1, 3), complex)
    series[0], series[1] = x0, v
    out = cs.evaluate(lowered, {"x": series})["out"]
    s = np.exp(x0) / np.exp(x0).sum()
    np.testing.assert_allclose(out[0].real, s, rtol=1e-15)
    np.testing.assert_allclose(out[1], (np.diag(s) - np.outer(s, s)) @ v, rtol=1e-13)


def _regenerate() -> None:
    GOLDEN_DIR.mkdir(exist_ok=True)
    for name, text in TEXTS.items():
        (GOLDEN_DIR / f"taylor_{name}.txt").write_text(text)
        print(f"wrote {GOLDEN_DIR / f'taylor_{name}.txt'} ({text.count(chr(10))} lines)")


if __name__ == "__main__":
    if sys.argv[1:] != ["--regen"]:
        sys.exit("usage: python tests/test_taylor_golden.py --regen")
    _regenerate()
