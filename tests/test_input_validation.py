"""Bad input is refused at the boundary, naming what is wrong (issue 15): non-finite, complex
or object inputs, down-weight indexing, unverified circuits, batch sizes, memory and time
budgets, and the command line's arguments. Each test names the issue item it covers.

Backends: the checks live once in ``backends/checks.py``; ``CHECKED`` lists the backends that
call them at their entry: every backend."""

from __future__ import annotations

import json
import string

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import SMOOTH_OPS, random_circuits

import circuitsketch as cs
from circuitsketch import cli
from circuitsketch.backends import checks, get_backend, numba_cpu, reference
from circuitsketch.backends.checks import BackendUnavailableError, BudgetError, InputError
from circuitsketch.backends.reference import EvaluationError
from circuitsketch.ir import Builder, Circuit, Eqn, Op, Output, ParseError
from circuitsketch.ir.shapes import ShapeError
from circuitsketch.ir.verify import VerifyError
from circuitsketch.passes.taylor import KinkError

CHECKED = ["reference", "numba-cpu"]


def _program(n_steps: int = 4, m: int = 1):
    """w <- w - 0.1 * sum_i (1 - x_i) * (w - d_i): one weight slot per example of the step."""
    def step(w, d, x):
        return {"w": w - 0.1 * cs.vsum([(1 - x[i]) * (w - d[i]) for i in range(m)])}
    return cs.trace_program(step, n_steps=n_steps, state={"w": ()}, per_step={"d": (m,)},
                            weight="x", examples_per_step=m)


# ---------------------------------------------------------------- item 2: non-finite inputs

@pytest.mark.parametrize("backend", CHECKED)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_inputs_are_refused_naming_the_input(backend, bad):
    run = get_backend(backend)
    circuit = cs.trace(lambda a, b: {"y": a * b + 1.0}, a=(2,), b=())
    with pytest.raises(InputError, match=r"input 'a' holds a non-finite value .* at index \(1,\)"):
        run.evaluate(circuit, {"a": np.array([1.0, bad]), "b": 2.0})
    program, good = _program(), dict(data={"d": np.ones((4, 1))}, x=np.zeros(4))
    with pytest.raises(InputError, match="input 'w'"):
        run.run_program(program, {"w": np.array(bad)}, **good)
    with pytest.raises(InputError, match=r"per-step data 'd' .* at index \(2, 0\)"):
        run.run_program(program, {"w": np.array(1.0)}, data={"d": [[1.0], [1.0], [bad], [1.0]]},
                        x=np.zeros(4))
    with pytest.raises(InputError, match=r"x \(the down-weights\) .* at index \(3,\)"):
        run.run_program(program, {"w": np.array(1.0)}, data=good["data"], x=[0, 0, 0, bad])
    lowered = cs.taylor(program, order=2)
    series_x = np.zeros((3, 4), dtype=complex)
    series_x[2, 1] = complex(0.0, bad)  # a series coefficient, not only the constant term
    with pytest.raises(InputError, match=r"x \(the down-weights\) .* at index \(2, 1\)"):
        run.run_program(lowered, {"w": np.array(1.0)}, data=good["data"], x=series_x)


@pytest.mark.parametrize("backend", CHECKED)
def test_nan_constants_are_refused_naming_the_node(backend):
    b = Builder()
    (a,) = b.input("a", ())
    b.output("y", [b.add(Op.MUL, (a, b.const(float("nan"), loc="train.py:7")))])
    with pytest.raises(VerifyError, match=r"%1 = const.*train.py:7.*not a number"):
        get_backend(backend).evaluate(b.build(), {"a": 1.0})
    masked = cs.trace(lambda a: {"y": cs.maximum(a, -np.inf) * 2.0}, a=())  # a mask, not an error
    assert get_backend(backend).evaluate(masked, {"a": 1.5})["y"] == 3.0
    overflowing = cs.trace(lambda a: {"y": a * np.inf - a * np.inf}, a=())
    with pytest.raises(EvaluationError, match=r"sub"):
        get_backend(backend).evaluate(overflowing, {"a": 1.5})


@pytest.mark.parametrize("backend", CHECKED)
def test_a_non_finite_value_made_inside_a_run_names_the_node(backend):
    circuit = cs.trace(lambda a: {"y": (a * 800.0).exp() - (a * 800.0).exp()}, a=())
    with pytest.raises(EvaluationError, match=r"= exp .*test_input_validation.py.*overflow"):
        get_backend(backend).evaluate(circuit, {"a": 1.0})


# ---------------------------------------------------------------- item 3: down-weight indexing

@pytest.mark.parametrize("backend", CHECKED)
def test_down_weights_are_one_per_example_and_ids_are_integers_in_range(backend):
    run = get_backend(backend).run_program
    program = _program()
    common = dict(data={"d": np.arange(4.0)[:, None]})
    with pytest.raises(InputError, match="x holds 10 down-weights .* 4 steps need exactly 4"):
        run(program, {"w": np.array(1.0)}, x=np.zeros(10), **common)
    ids = np.arange(4).reshape(4, 1)
    for bad, message in ((ids - 1, r"example_ids\[0, 0\] = -1: .*negative"),
                         (ids + 0.0, "must be integers"),
                         (ids + 1, r"example_ids\[3, 0\] = 4 is out of range for 4 examples")):
        with pytest.raises(InputError, match=message):
            run(program, {"w": np.array(1.0)}, x=np.zeros(4), example_ids=bad, **common)
    with pytest.raises(InputError, match="x holds 4 down-weights per run, the task has n_examples = 5"):
        run(program, {"w": np.array(1.0)}, x=np.zeros(4), example_ids=ids, n_examples=5, **common)
    # accepted: 6 examples of which two are never trained on, with n_examples saying so
    x = np.array([0.5, 0.0, 1.0, 0.25, 7.0, 7.0])
    ours = run(program, {"w": np.array(1.0)}, x=x, example_ids=ids, n_examples=6, **common)
    w = 1.0
    for t in range(4):  # the same SGD by hand
        w -= 0.1 * (1 - x[t]) * (w - t)
    assert ours["w"] == pytest.approx(w, rel=1e-14)


# ---------------------------------------------------------------- item 4: verify before running

@pytest.mark.parametrize("backend", CHECKED)
def test_an_unverified_circuit_is_refused_before_it_runs(backend):
    # what parse_circuit makes of "%1 = exp %0 %0": exp with two operands
    eqns = (Eqn(Op.INPUT, (), (("index", 0), ("name", "a"))), Eqn(Op.EXP, (0, 0)))
    circuit = Circuit(eqns, (("a", (1,)),), (Output("y", (), (1,)),))
    with pytest.raises(VerifyError, match="exp.*expects 1 operand"):
        get_backend(backend).evaluate(circuit, {"a": np.ones(1)})
    program = cs.Program(circuit, 2, ("a",))  # carried state without a matching output
    with pytest.raises(VerifyError):
        get_backend(backend).run_program(program, {"a": np.ones(1)})


# ---------------------------------------------------------------- item 5 and batch sizes

@pytest.mark.parametrize("backend", CHECKED)
def test_inputs_that_cannot_mean_a_number_are_refused(backend):
    run = get_backend(backend).evaluate
    circuit = cs.trace(lambda a: {"y": a * 2.0}, a=(2,))
    for value, message in (([1.0 + 2.0j, 1.0], "complex, but the circuit reads it as real"),
                           ([1.0, None], "holds object values"),
                           (["1", "2"], "holds <U1 values"),
                           (None, "is None"),
                           ([[1.0], [1.0, 2.0]], "not an array of numbers")):
        with pytest.raises(InputError, match=message):
            run(circuit, {"a": value})
    for batch in (0, -1, 2.5, True):
        with pytest.raises(InputError, match="batch must be a positive integer"):
            run(circuit, {"a": np.ones(2)}, batch=batch)


# ---------------------------------------------------------------- item 6: memory and time

def _fan_out(order: int, outputs: int) -> Circuit:
    """``outputs`` series values alive at once (every one is an output): y_i = x * (i + 1)."""
    b = Builder()
    (x,) = b.input("x", ())
    b.output("y", [b.add(Op.MUL, (x, b.const(i + 1.0))) for i in range(outputs)])
    return cs.taylor(b.build(), order, {"x"})


def test_a_run_that_cannot_fit_in_memory_is_refused_before_it_starts(monkeypatch):
    monkeypatch.setattr(checks, "MEMORY_LIMIT_BYTES", 2 ** 30)
    order = 100_000
    circuit = _fan_out(order, 1000)
    tape = numba_cpu._CPU.compiled(circuit)
    expected = 8 * tape.n_real + 16 * (order + 1) * (tape.n_series + 3)  # the kernel's slots
    x = np.zeros(order + 1, dtype=complex)
    with pytest.raises(BudgetError) as error:
        numba_cpu.evaluate(circuit, {"x": x})
    assert f"{expected / 2 ** 30:,.2f} GiB" in str(error.value)
    assert "limit of 1.00 GiB" in str(error.value)


def test_a_run_that_would_take_too_long_is_refused_before_it_starts(monkeypatch):
    b = Builder()
    (x,) = b.input("x", ())
    b.output("y", [b.add(Op.EXP, (b.add(Op.EXP, (x,)),))])
    order = 200_000
    circuit = cs.taylor(b.build(), order, {"x"})
    madds = 2 * (order + 1) * (order + 2) / 2  # two exp recurrences dominate
    assert checks.madds_per_direction(circuit) == pytest.approx(madds, rel=1e-4)
    monkeypatch.setenv("CIRCUITSKETCH_TIME_LIMIT", "30")
    with pytest.raises(BudgetError, match=r"at least [\d,]+ s on numba-cpu .* limit of 30 s"):
        numba_cpu.evaluate(circuit, {"x": np.zeros(order + 1, dtype=complex)})


# ---------------------------------------------------------------- property: mutated IR text

_DOCUMENTED = (ParseError, VerifyError, InputError, EvaluationError, KinkError, BudgetError)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(circuit=random_circuits(ops=SMOOTH_OPS, max_nodes=8), data=st.data())
def test_mutated_ir_text_lets_only_documented_errors_escape(circuit, data):
    text = cs.print_circuit(circuit)
    where = data.draw(st.integers(0, len(text)))
    kind = data.draw(st.sampled_from(["delete", "insert", "replace"]))
    char = data.draw(st.sampled_from(list(string.digits + "%=[](),.-e ") + ["exp", "\n"]))
    mutated = {"delete": text[:where] + text[where + 1:], "insert": text[:where] + char + text[where:],
               "replace": text[:where] + char + text[where + 1:]}[kind]
    point = {name: np.full(shape, 0.5) for name, shape in circuit.inputs}
    for backend in CHECKED:
        try:  # straight to the backend, which must verify (or refuse) on its own
            parsed = cs.parse_circuit(mutated)
            get_backend(backend).evaluate(parsed, {n: point.get(n, np.full(s, 0.5))
                                                   for n, s in parsed.inputs})
        except _DOCUMENTED:
            pass


# ---------------------------------------------------------------- the command line's arguments

@pytest.mark.parametrize("argv, option", [
    (["evaluate", "--sketch", "s", "--batch-size", "0"], "--batch-size"),
    (["evaluate", "--sketch", "s", "--lds-subsets", "-2"], "--lds-subsets"),
    (["evaluate", "--sketch", "s", "--lds-subsets", "1"], "--lds-subsets"),
    (["evaluate", "--sketch", "s", "--lds-fraction", "0"], "--lds-fraction"),
    (["evaluate", "--sketch", "s", "--weights", "0,nan"], "--weights"),
    (["stability", "--order", "1"], "--order"),
    (["precompute", "--out", "s", "--seed", "-1"], "--seed"),
    (["precompute", "--out", "s", "--directions", "0"], "--directions"),
    (["exact", "--weights", "inf"], "--weights"),
    (["curiosity", "score", "--n", "0"], "--n"),
    (["curiosity", "score", "--degree", "-1"], "--degree"),
    (["curiosity", "score", "--top", "-1"], "--top"),
    (["curiosity", "score", "--repeats", "0"], "--repeats"),
    (["curiosity", "compare", "--rounds", "-1"], "--rounds"),
    (["demo", "--steps", "0"], "--steps"),
    (["exact", "--n-embd", "0"], "--n-embd"),
    (["precompute", "--out", "s", "--steps", "-3"], "--steps"),
    (["emit", "f.py:f", "--shape", "a=2.5"], "--shape"),
])
def test_bad_arguments_are_refused_by_the_parser_naming_the_option(argv, option, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.build_parser().parse_args(argv)
    assert exit_.value.code == 2
    assert f"argument {option}" in capsys.readouterr().err


def test_out_must_be_a_writable_directory_before_any_work(tmp_path, capsys):
    taken = tmp_path / "taken"
    taken.write_text("a file")
    for command in (["predict", "--sketch", "s"], ["evaluate", "--sketch", "s"], ["stability"]):
        with pytest.raises(SystemExit):
            cli.build_parser().parse_args(command + ["--out", str(taken)])
        assert "exists and is not a directory" in capsys.readouterr().err
    assert cli.build_parser().parse_args(["stability", "--out", str(tmp_path / "new" / "dir")])


def test_emit_names_a_missing_function_and_missing_shapes(tmp_path, capsys):
    source = tmp_path / "f.py"
    source.write_text("def f(a, b):\n    return {'y': a * b}\n")
    assert cli.main(["emit", f"{source}:missing"]) == 1
    assert "defines no function 'missing'" in capsys.readouterr().err
    assert cli.main(["emit", f"{source}:f", "--shape", "a="]) == 1
    assert "takes inputs ['b'] with no --shape" in capsys.readouterr().err


def _help_entries(parser) -> dict[str, str]:
    """Each option's help text, from the parser's own actions."""
    formatter = parser._get_formatter()
    return {action.option_strings[-1]: formatter._expand_help(action) if action.help else ""
            for action in parser._actions if action.option_strings}


def _commands(parser):
    for action in parser._subparsers._group_actions:
        for name, sub in action.choices.items():
            yield name, sub
            if sub._subparsers is not None:
                yield from _commands(sub)


def test_help_texts_state_each_default_once_and_describe_every_option():
    for name, parser in _commands(cli.build_parser()):
        for option, text in _help_entries(parser).items():
            if option == "--help":
                continue
            assert text.strip(), f"{name} {option} has no help"
            assert text.lower().count("default") <= 1, f"{name} {option}: {text}"
    demo = dict(_commands(cli.build_parser()))["demo"].format_help()
    assert "``" not in demo and "--steps" in demo


def test_json_written_by_the_cli_is_valid_json(tmp_path):
    from circuitsketch.sketch.store import write_json

    path = tmp_path / "r.json"
    write_json(path, {"a": float("nan"), "b": [np.float64(np.inf), np.int64(3)], "c": np.ones(2)})

    def refuse(constant):
        raise AssertionError(f"invalid JSON literal {constant}")

    assert json.loads(path.read_text(), parse_constant=refuse) == {"a": None, "b": [None, 3],
                                                                   "c": [1.0, 1.0]}


def test_trace_program_refuses_a_fractional_step_count_or_no_examples():
    step = lambda w, x: {"w": w * (1 - x[0])}  # noqa: E731
    with pytest.raises(ValueError, match="n_steps must be an integer >= 0, got 2.5"):
        cs.trace_program(step, n_steps=2.5, state={"w": ()}, weight="x")
    with pytest.raises(ValueError, match="examples_per_step must be an integer >= 1, got 0"):
        cs.trace_program(step, n_steps=2, state={"w": ()}, weight="x", examples_per_step=0)


def test_numba_cuda_without_a_gpu_is_refused_before_any_work():
    from numba import cuda

    if cuda.is_available():
        pytest.skip("this machine has a GPU (or the simulator is on)")
    circuit = cs.trace(lambda a: {"y": a * 2.0}, a=())
    with pytest.raises(BackendUnavailableError, match="no CUDA GPU"):
        get_backend("numba-cuda").evaluate(circuit, {"a": 1.0})


def test_an_order_that_cannot_fit_is_refused_before_the_run_allocates_it(monkeypatch):
    from circuitsketch.sketch import exact_series
    from test_sketch_tasks import point_loss_measurement, regression_task

    task = regression_task(n_steps=4)
    monkeypatch.setenv("CIRCUITSKETCH_TIME_LIMIT", "60")  # the estimate is ~400 s here
    with pytest.raises(BudgetError, match="order 100000"):
        exact_series(task, [[0, 1]], 100_000, point_loss_measurement(), progress=False)


def test_plotting_commands_need_matplotlib_before_any_work(monkeypatch, tmp_path, capsys):
    import importlib.util

    found = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "matplotlib" else found(name, *a))
    for command in (["stability"], ["curiosity", "compare"], ["evaluate", "--sketch", "s"]):
        with pytest.raises(SystemExit):
            cli.build_parser().parse_args(command + ["--out", str(tmp_path)])
        assert "circuitsketch[plot]" in capsys.readouterr().err
    assert cli.build_parser().parse_args(["predict", "--sketch", "s", "--out", str(tmp_path)])


@pytest.mark.parametrize("shape", [(2.5,), (-1,), 3, (True,), "ab"])
def test_input_shapes_must_be_tuples_of_non_negative_ints(shape):
    """Smaller validation gaps: a shape such as (2.5,) is refused, never truncated to (2,)."""
    with pytest.raises(ShapeError, match="input 'a': shape"):
        cs.trace(lambda a: a, a=shape)
