"""FileCheck-style pass tests: IR text in, ``CHECK:`` lines expected in the printed output.

Each ``tests/filecheck/*.txt`` case is a circuit or program in IR text (``#`` lines are comments
to the parser) with directives in its comments:

* ``# RUN: opt -p PASSES [OPTIONS]`` — the ``circuitsketch opt`` arguments (the case file is
  the input);
* ``# EXIT: N`` — the expected exit status (default 0); with a non-zero status the checks are
  matched against standard error instead of standard output;
* ``# CHECK: PATTERN`` — the next line at or after the current position containing PATTERN;
* ``# CHECK-NEXT: PATTERN`` — the line right after the previous match contains PATTERN;
* ``# CHECK-NOT: PATTERN`` — no line between the previous match and the next one (or the end)
  contains PATTERN.

A PATTERN is literal text, except ``{{regex}}`` (a regular expression), ``[[NAME:regex]]``
(match and remember as NAME) and ``[[NAME]]`` (what NAME matched), as in LLVM's FileCheck, so
node ids need not be hard-coded. A successful output must also parse and verify (every pass's
contract). Expectations never hold line numbers of test files.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from circuitsketch.cli import main
from circuitsketch.ir import Circuit, VerifyError, verify, verify_program
from circuitsketch.ir.circuit import Program
from circuitsketch.passes import cse, dce, fold_constants, taylor
from circuitsketch.passes.registry import PASSES, PassError, read_ir, run_pipeline

CASES = Path(__file__).parent / "filecheck"
_DIRECTIVE = re.compile(r"^#\s*(RUN|EXIT|CHECK|CHECK-NEXT|CHECK-NOT):\s?(.*)$")


class CheckFailure(AssertionError):
    """A CHECK directive that the output does not satisfy; the message shows where."""


@dataclass(frozen=True)
class Check:
    kind: str  # CHECK, CHECK-NEXT or CHECK-NOT
    pattern: str
    lineno: int


def _compile(pattern: str, variables: dict[str, str]) -> tuple[re.Pattern, list[str]]:
    """The regex of a pattern and the variable names its groups define, in order."""
    parts, names, pos = [], [], 0
    token = re.compile(r"\{\{(.+?)\}\}|\[\[(\w+):(.+?)\]\]|\[\[(\w+)\]\]")
    for m in token.finditer(pattern):
        parts.append(re.escape(pattern[pos:m.start()]))
        if m.group(1) is not None:
            parts.append(f"(?:{m.group(1)})")
        elif m.group(2) is not None:
            parts.append(f"({m.group(3)})")
            names.append(m.group(2))
        else:
            if m.group(4) not in variables:
                raise CheckFailure(f"[[{m.group(4)}]] used before it is defined")
            parts.append(re.escape(variables[m.group(4)]))
        pos = m.end()
    parts.append(re.escape(pattern[pos:]))
    return re.compile("".join(parts)), names


def _search(check: Check, line: str, variables: dict[str, str]) -> bool:
    regex, names = _compile(check.pattern, variables)
    m = regex.search(line)
    if m and check.kind != "CHECK-NOT":
        variables.update(zip(names, m.groups()))
    return m is not None


def _fail(check: Check, message: str, lines: list[str], at: int) -> CheckFailure:
    shown = "\n".join(f"  {i + 1:4}| {lines[i]}" for i in range(max(0, at - 2), min(len(lines), at + 3)))
    return CheckFailure(f"directive line {check.lineno}: {check.kind}: {check.pattern!r} {message}"
                        f"\noutput near line {at + 1}:\n{shown}")


def match_checks(checks: list[Check], output: str) -> None:
    """Match ``checks`` in order against ``output``; raise :class:`CheckFailure` on a mismatch."""
    lines = output.splitlines()
    variables: dict[str, str] = {}
    pos, last, pending_not = 0, -1, []
    for check in checks:
        if check.kind == "CHECK-NOT":
            pending_not.append(check)
            continue
        if check.kind == "CHECK-NEXT":
            found = last + 1 if last + 1 < len(lines) and _search(check, lines[last + 1], variables) \
                else None
            if found is None:
                raise _fail(check, "is not on the line after the previous match", lines, last + 1)
        else:
            found = next((i for i in range(pos, len(lines)) if _search(check, lines[i], variables)), None)
            if found is None:
                raise _fail(check, "not found", lines, pos)
        _check_absent(pending_not, lines, pos, found, variables)
        pending_not, last, pos = [], found, found + 1
    _check_absent(pending_not, lines, pos, len(lines), variables)


def _check_absent(checks: list[Check], lines: list[str], start: int, stop: int,
                  variables: dict[str, str]) -> None:
    for check in checks:
        for i in range(start, stop):
            if _search(check, lines[i], variables):
                raise _fail(check, "found where it must not be", lines, i)


@dataclass(frozen=True)
class Case:
    path: Path
    args: list[str]
    exit_code: int
    checks: list[Check]


def read_case(path: Path) -> Case:
    run, exit_code, checks = None, 0, []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        m = _DIRECTIVE.match(line.strip())
        if not m:
            continue
        kind, rest = m.groups()
        if kind == "RUN":
            run = shlex.split(rest)
        elif kind == "EXIT":
            exit_code = int(rest)
        else:
            checks.append(Check(kind, rest.rstrip(), lineno))
    if not run or run[0] != "opt":
        raise ValueError(f"{path.name}: needs a '# RUN: opt -p ...' line")
    if not any(c.kind != "CHECK-NOT" for c in checks):
        raise ValueError(f"{path.name}: needs at least one CHECK or CHECK-NEXT")
    return Case(path, run[1:], exit_code, checks)


def run_opt(case: Case) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["opt", str(case.path), *case.args])
    return code, out.getvalue(), err.getvalue()


CASE_FILES = sorted(CASES.glob("*.txt"))


@pytest.mark.parametrize("path", CASE_FILES, ids=lambda p: p.stem)
def test_filecheck_case(path):
    case = read_case(path)
    code, out, err = run_opt(case)
    assert code == case.exit_code, err or out
    match_checks(case.checks, err if case.exit_code else out)
    if case.exit_code == 0:
        result = read_ir(out)
        verify_program(result) if isinstance(result, Program) else verify(result)
    else:
        assert not out and len(err.strip().splitlines()) == 1, err  # one line, no traceback


def test_every_registered_pass_has_scalar_and_array_cases():
    covered: dict[str, set[str]] = {}
    for path in CASE_FILES:
        case = read_case(path)
        if case.exit_code:
            continue
        passes = case.args[case.args.index("-p") + 1].split(",")
        target = read_ir(path.read_text())
        step = target.step if isinstance(target, Program) else target
        kind = "array" if any(e.shape for e in step.eqns) else "scalar"
        for name in passes:
            covered.setdefault(name, set()).add(kind)
    assert {name: covered.get(name, set()) for name in PASSES} == \
        {name: {"scalar", "array"} for name in PASSES}


def test_the_installed_command_runs_a_case():
    """The same pipeline through ``python -m circuitsketch.cli`` in a fresh interpreter."""
    case = read_case(CASES / "taylor_array.txt")
    result = subprocess.run([sys.executable, "-m", "circuitsketch.cli", "opt", str(case.path),
                             *case.args], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout == run_opt(case)[1]


# ---------------------------------------------------------------- the matcher itself

OUTPUT = "circuit order=0\n%0 = input {name='x'} : [3]\n%1 = exp %0 : [3]\n%2 = neg %1 : [3]\n"


def _checks(*pairs: tuple[str, str]) -> list[Check]:
    return [Check(kind, pattern, i) for i, (kind, pattern) in enumerate(pairs)]


@pytest.mark.parametrize("checks", [
    _checks(("CHECK", "%1 = exp"), ("CHECK-NEXT", "neg %1")),
    _checks(("CHECK", "input"), ("CHECK-NOT", "mul"), ("CHECK", "neg")),
    _checks(("CHECK", "[[X:%[0-9]+]] = exp"), ("CHECK", "neg [[X]] : [3]")),
    _checks(("CHECK", "= {{input|const}} {name='x'}"), ("CHECK-NOT", "input")),
    _checks(("CHECK", "neg"), ("CHECK-NOT", ": [3]")),  # nothing after the last match
])
def test_matcher_accepts(checks):
    match_checks(checks, OUTPUT)


@pytest.mark.parametrize("checks, message", [
    (_checks(("CHECK", "mul")), "'mul' not found"),
    (_checks(("CHECK", "exp"), ("CHECK", "input")), "'input' not found"),  # order matters
    (_checks(("CHECK", "input"), ("CHECK-NEXT", "neg")), "is not on the line after"),
    (_checks(("CHECK", "input"), ("CHECK-NOT", "exp"), ("CHECK", "neg")), "found where it must not be"),
    (_checks(("CHECK", "exp"), ("CHECK-NOT", "neg")), "found where it must not be"),
    (_checks(("CHECK", "[[X:%[0-9]+]] = neg"), ("CHECK", "exp [[X]]")), "not found"),
    (_checks(("CHECK", "[[Y]]")), "used before it is defined"),
])
def test_matcher_refuses(checks, message):
    with pytest.raises(CheckFailure, match=re.escape(message)):
        match_checks(checks, OUTPUT)


# ---------------------------------------------------------------- the registry and the command

def _array_step() -> Circuit:
    return read_ir((CASES / "pipeline_fold_cse_taylor.txt").read_text())


def test_run_pipeline_is_the_passes_applied_in_order():
    circuit = _array_step()
    want = taylor(cse(fold_constants(circuit)), 3, {"x"})
    assert run_pipeline(circuit, "fold,cse,taylor", order=3, seeds="x") == want
    assert run_pipeline(circuit, ["fold", "cse", "taylor"], order=3, seeds=["x"]) == want


def test_every_registered_pass_is_a_named_frozen_pass_whose_result_verifies():
    circuit = _array_step()
    options = {"grad": dict(output="y", wrt="v"), "taylor": dict(order=2, seeds="x")}
    for name, p in PASSES.items():
        assert p.name == name and p.doc
        with pytest.raises(dataclasses.FrozenInstanceError):
            p.name = "other"
        assert hash(p) == hash(dataclasses.replace(p))  # immutable all the way down
        if name == "grad":  # a vector output: grad needs a scalar one
            target = read_ir((CASES / "grad_array.txt").read_text())
        else:
            target = circuit
        snapshot = (target.eqns, target.inputs, target.outputs)
        result = p.apply(target, **options.get(name, {}))
        assert verify(result) is result
        assert (target.eqns, target.inputs, target.outputs) == snapshot  # passes are pure


@pytest.mark.parametrize("call, message", [
    (lambda c: run_pipeline(c, "fold,inline"), "unknown pass 'inline'; registered passes: fold, cse"),
    (lambda c: run_pipeline(c, ""), "a pipeline is a comma-separated list of pass names"),
    (lambda c: run_pipeline(c, "fold,,cse"), "a pipeline is a comma-separated list"),
    (lambda c: run_pipeline(c, "fold", order=3), "option(s) ['order'] are taken by no pass in 'fold'"),
    (lambda c: PASSES["cse"].apply(c, order=3), "pass 'cse' takes no option(s) ['order']; it takes none"),
    (lambda c: PASSES["taylor"].apply(c, seeds="x"), "pass 'taylor' needs option 'order'"),
    (lambda c: PASSES["grad"].apply(c), "pass 'grad' needs option 'output'"),
    (lambda c: PASSES["grad"].apply(c, output="nope"), "circuit has no output 'nope'"),
    (lambda c: PASSES["fold"].apply("circuit order=0\n"), "the input must be a Circuit or a Program"),
    (lambda c: PASSES["grad"].apply(Program(c, 1, (), ())), "pass 'grad' takes a circuit, not a program"),
])
def test_registry_errors_are_clear(call, message):
    with pytest.raises(PassError, match=re.escape(message)):
        call(_array_step())


def test_a_pass_refuses_input_that_does_not_verify():
    circuit = _array_step()
    broken = Circuit(circuit.eqns[:3], circuit.inputs, circuit.outputs)  # outputs of missing nodes
    with pytest.raises(VerifyError, match="refers to missing node"):
        run_pipeline(broken, "dce")


def _opt(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(["opt", *argv])
        except SystemExit as exc:  # argparse: --help, a missing argument
            code = exc.code
    return code, out.getvalue(), err.getvalue()


def test_opt_writes_out_and_reads_standard_input(tmp_path, monkeypatch):
    source = CASES / "dce_array.txt"
    target = tmp_path / "out.ir"
    assert _opt(str(source), "-p", "dce", "-o", str(target)) == (0, "", "")
    monkeypatch.setattr(sys, "stdin", io.StringIO(source.read_text()))
    code, out, _ = _opt("-", "-p", "dce")
    assert code == 0 and out == target.read_text()
    assert read_ir(out) == dce(read_ir(source.read_text()))


@pytest.mark.parametrize("argv, message", [
    (["missing.ir", "-p", "fold"], "cannot read 'missing.ir': No such file or directory"),
    (["{case}", "-p", "taylor", "--order", "three"], "--order must be an integer, got 'three'"),
    (["{case}", "-p", "taylor", "--order", "-1"], "order must be a non-negative integer, got -1"),
    (["{case}", "-p", "taylor", "--order", "2", "--seed", "q"], "seed(s) ['q'] are not inputs"),
    (["{case}", "-p", "grad", "--output", "y", "--wrt", "q"], "grad: ['q'] are not inputs"),
    (["{case}", "-p", "fold", "-o", "/nonexistent/dir/out.ir"], "cannot write --out"),
    (["{binary}", "-p", "fold"], "cannot read"),
    (["{garbage}", "-p", "fold"], "circuit text must start with 'circuit order=K'"),
])
def test_opt_errors_are_one_line_with_status_2(argv, message, tmp_path):
    binary = tmp_path / "binary.ir"
    binary.write_bytes(b"\xff\xfe\x00 not text")
    garbage = tmp_path / "garbage.ir"
    garbage.write_text("hello\n")
    paths = {"case": str(CASES / "grad_scalar.txt"), "binary": str(binary), "garbage": str(garbage)}
    code, out, err = _opt(*[a.format(**paths) for a in argv])
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("circuitsketch opt: error: ") and message in err, err


def test_opt_help_lists_every_pass_and_its_options():
    code, out, _ = _opt("--help")
    assert code == 0
    for name in PASSES:
        assert f"\n  {name} " in out
    for flag in ("--order", "--seed", "--output", "--wrt", "-p P1,P2,..."):
        assert flag in out
    assert "circuitsketch opt step.ir -p fold,cse,taylor --order 3 --seed x" in out
