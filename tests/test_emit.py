"""``emit`` and ``circuitsketch emit``: the lowered IR and the generated kernel, readable.

The kernels' numbers are checked against the reference in test_backends.py; here: what the
emitted text contains (the IR that parses back, one block per node with its IR line, the
snippet of each op), golden text for two small blocks, and the command line."""

from __future__ import annotations

import textwrap

import pytest

import circuitsketch as cs
from circuitsketch.backends import kernel_source as ks
from circuitsketch.backends.emit import render
from circuitsketch.backends.emit_cli import emit
from circuitsketch.cli import main
from circuitsketch.ir import parse_circuit


def _mul_gelu():
    return cs.trace(lambda a, b: (a * b).gelu(), a=(), b=())


def _ir_part(text: str) -> str:
    return text.split("# lowered IR (order ")[1].split("\n", 1)[1].split("\n# tape:")[0]


def test_emit_shows_lowered_ir_and_one_block_per_node():
    text = emit(_mul_gelu(), order=2, seeds=["a"])
    lowered = parse_circuit(_ir_part(text))
    assert lowered == cs.taylor(_mul_gelu(), 2, {"a"})
    assert "straight-line kernel for a 4-node circuit of order 2" in text
    assert text.count("# %2 = mul %0 %1 : s @ test_emit.py:") == 1
    assert text.count("# %3 = gelu %2 : s @ test_emit.py:") == 1
    assert "def run_block(" in text and "for n in range(start" not in text


# Golden text: the CPU block of a series*series product and of a series+real sum. A change to
# the table or the emitter that changes generated code shows up here.
_GOLDEN_MUL = """\
# %2 = mul %0 %1 : s @ test_emit.py:LINE
n, o, p0, p1 = 0, 2, 0, 2
a, b = 0, 1
cauchy(S, o, S, a, S, b, K1, nd)"""

_GOLDEN_ADD = """\
# %2 = add %0 %1 : s @ test_emit.py:LINE
n, o, p0, p1 = 0, 1, 0, 2
a, b = 0, 0
copy(S, o, S, a, K1, nd)
for d in range(nd):
    S[o, 0, d] = S[a, 0, d] + R[b, d]"""


@pytest.mark.parametrize("fn, golden", [(lambda a, b: a * b, _GOLDEN_MUL), (lambda a, b: a + b, _GOLDEN_ADD)])
def test_golden_cpu_blocks(fn, golden):
    seeds = ["a", "b"] if golden is _GOLDEN_MUL else ["a"]
    text = emit(cs.trace(fn, a=(), b=()), order=1, seeds=seeds)
    body = text.split("    K1 = S.shape[1]\n", 1)[1].split("    # (check_", 1)[0]
    got = textwrap.dedent(body).strip()
    line = got.split("test_emit.py:", 1)[1].split("\n", 1)[0]
    assert got == golden.replace("LINE", line)


def test_emit_cuda_runs_one_direction_per_thread():
    text = emit(_mul_gelu(), order=1, seeds=["a", "b"], backend="numba-cuda")
    assert "@cuda.jit" in text and "cuda.atomic.min" in text
    assert "for d in range(nd)" not in text  # d is the thread's direction
    assert "cauchy_d(S, o, S, a, S, b, K1, d)" in text


def test_emit_large_circuit_shows_the_interpreter():
    circuit = cs.trace(lambda x: cs.vsum([(x[i] * x[i + 1]).tanh() for i in range(199)]), x=(200,))
    text = emit(circuit)
    assert "tape interpreter for real circuits" in text
    assert "for n in range(start, op.shape[0]):" in text


def test_emit_program():
    step = lambda w, x, d: {"w": w - 0.1 * (1.0 - x[0]) * d * w}  # noqa: E731
    program = cs.trace_program(step, n_steps=3, state={"w": ()}, per_step={"d": ()}, weight="x")
    text = emit(program, order=1)
    assert text.count("program n_steps=3 weight=x") == 1
    assert "load_weight_s" in text and "load_data_r" in text


def test_render_places_directions_and_checks():
    snippet = "! 4 R[a, d] <= 0.0\n@ R[o, d] = math.log(R[a, d])"
    block = render(snippet, True)
    assert "for d in range(nd):\n    R[o, d] = math.log(R[a, d])" in block
    assert "return n * 64 + 4" in block and block.index("bad = True") < block.index("math.log")
    assert render(snippet, False) == ("if R[a, d] <= 0.0:\n    return n * 64 + 4\n"
                                      "R[o, d] = math.log(R[a, d])")


def test_every_error_code_has_a_message_and_every_variant_a_unique_key():
    codes = {int(line.split()[1]) for v in ks.VARIANTS for part in (v.body,) + tuple(t for _, t in v.terms)
             for line in part.splitlines() if line.strip().startswith("! ")
             for line in [line.strip()]}
    assert codes <= set(ks.ERRORS)
    assert len(ks.VARIANT_ID) == len(ks.VARIANTS)


def test_emit_rejects_unknown_backend():
    with pytest.raises(ValueError, match="backend must be one of"):
        emit(_mul_gelu(), backend="numba-tpu")


def test_cli_builtin_example(capsys):
    assert main(["emit", "logistic", "--order", "1", "--seed", "w"]) == 0
    out = capsys.readouterr().out
    assert "circuit order=1" in out and "def run_block(" in out


def test_cli_user_function(tmp_path, capsys):
    model = tmp_path / "model.py"
    model.write_text("def loss(w, x):\n    return (w[0] * x[0] + w[1] * x[1]).tanh()\n")
    assert main(["emit", f"{model}:loss", "--shape", "w=2", "--shape", "x=2", "--order", "2",
                 "--seed", "x", "--backend", "numba-cuda"]) == 0
    out = capsys.readouterr().out
    assert "input w [2]" in out and "@ model.py:2" in out and "cuda.jit" in out


def test_cli_errors(capsys):
    assert main(["emit", "nofunction"]) == 1
    assert "expected FILE.py:FUNCTION" in capsys.readouterr().err
    assert main(["emit", "missing.py:f"]) == 1


def test_emit_shows_the_array_engine_plan_for_an_array_circuit():
    """An array circuit prints its lowered IR, then each kernel call under the IR line it
    computes; asking for numba-cuda's kernels says where they come from."""
    circuit = cs.trace(lambda W, x: {"loss": cs.log(1.0 + cs.exp(-(W @ x))).sum()},
                       inputs="tensors", W=(2, 3), x=(3,))
    text = emit(circuit, order=2, seeds={"x"})
    ir, _, engine = text.partition("# numba-cpu array engine\n")
    assert "dot_general %0 %1" in ir and ": s [2]" in ir
    lines = engine.splitlines()
    assert lines[0].startswith("# array engine plan: ")
    headed = [lines[i + 1] for i, line in enumerate(lines) if line.startswith("# %2 = dot_general")]
    assert headed and headed[0].startswith("dg_rs(")  # real W times series x
    assert "def dg_rs(" in engine  # each kernel's source, once
    with pytest.raises(ValueError, match="numba-cuda's array kernels are rewritten"):
        emit(circuit, order=2, seeds={"x"}, backend="numba-cuda")
