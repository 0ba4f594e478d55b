"""The CUDA array engine (``backends/array_cuda``) against the reference interpreter.

The device checks run where a device is: in a subprocess under Numba's CUDA simulator
(``test_under_the_cuda_simulator``: the simulator must be switched on before Numba is
imported), and in this process on a real GPU when one is available without the simulator
(skipped otherwise, with the reason). Shapes are tiny: the simulator runs every thread as a
Python thread. Tolerance as in test_array_backend (sums in another order differ by ulps).
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from circuitsketch.backends import array_engine as ae
from circuitsketch.backends import reference
from circuitsketch.ir import Builder, Op, Program, make_attrs, verify
from circuitsketch.passes.taylor import taylor
from circuitsketch.semantics.errors import EvaluationError, KinkError

from strategies import random_array_circuits, random_array_inputs
from test_array_backend import _close, _every_op, _series_inputs
from test_array_fusion import _chain_of, _x, random_chain

SIMULATED = os.environ.get("CIRCUITSKETCH_TEST_ARRAY_CUDA") == "sim"


def _real_gpu_reason() -> str | None:
    """None when a real GPU runs this process's CUDA code, else why not."""
    if SIMULATED:
        return None
    try:
        from numba import cuda
    except ImportError as exc:
        return f"numba.cuda does not import: {exc}"
    try:
        return None if cuda.is_available() else "no real CUDA GPU on this machine"
    except Exception as exc:  # a broken driver install is a reason to skip, not a failure
        return f"CUDA unavailable: {exc}"


NO_DEVICE = _real_gpu_reason()
if NO_DEVICE:
    print(f"test_array_cuda: device checks skipped in-process ({NO_DEVICE}); the simulator "
          "run covers them")
device = pytest.mark.skipif(NO_DEVICE is not None, reason=f"needs a device: {NO_DEVICE}")


def _cuda():
    from circuitsketch.backends import numba_cuda
    return numba_cuda


def _both(circuit, inputs, batch, **options):
    _close(_cuda().evaluate(circuit, inputs, batch=batch, **options),
           reference.evaluate(circuit, inputs, batch=batch, **options))


def _tokens(batch: int) -> np.ndarray:
    return np.array([[2.0, 0.0], [1.0, 1.0], [3.0, 2.0]])[:batch]


@device
def test_every_array_op_real():
    circuit = _every_op()
    inputs = random_array_inputs(circuit, 0, 2)
    inputs["tokens"] = _tokens(2)
    _both(circuit, inputs, 2)
    single = random_array_inputs(circuit, 1)
    single["tokens"] = np.array([1.0, 3.0])
    _both(circuit, single, None)


@device
def test_every_array_op_order_1():
    circuit = taylor(_every_op(), 1, {"x", "w"})
    inputs = _series_inputs(circuit, 1, 2, seeds=("x", "w"))
    inputs["tokens"] = _tokens(2)
    _both(circuit, inputs, 2)


_SETTINGS = settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck),
                     derandomize=True)


@device
@_SETTINGS
@given(random_array_circuits(max_nodes=6), st.sampled_from([None, 3]), st.integers(0, 99))
def test_random_array_circuits_real(circuit, batch, seed):
    _both(circuit, random_array_inputs(circuit, seed, batch), batch)


@device
@_SETTINGS
@given(random_array_circuits(max_nodes=6, kinks=False), st.integers(0, 99))
def test_random_array_circuits_order_1(circuit, seed):
    lowered = taylor(circuit, 1, {"x", "w"})
    _both(lowered, _series_inputs(lowered, seed, 2, seeds=("x", "w")), 2)


def _loop_program() -> Program:
    """w <- w - (off + 0.1) * tanh(w * d_t + x_t): per-step data d, down-weight x, static off."""
    b = Builder()
    w = b.input_array("w", (2, 3))
    d = b.input_array("d", (3,))
    x = b.input_array("x", (1,))
    off = b.input_array("off", ())
    step = b.add(Op.TANH, (b.add(Op.ADD, (b.add(Op.MUL, (w, d)), x)),))
    new = b.add(Op.SUB, (w, b.add(Op.MUL, (step, b.add(Op.ADD, (off, b.const(0.1)))))))
    b.output("w", [new])
    return Program(verify(b.build()), 4, ("w",), per_step=("d",), weight="x")


@device
@pytest.mark.parametrize("order", [0, 1])
def test_loop_program_with_data_and_weights(order):
    program = taylor(_loop_program(), order) if order else _loop_program()
    rng = np.random.default_rng(order)
    init = {"w": rng.normal(size=(2, 3))}
    data = {"d": rng.normal(size=(4, 3))}
    ids = np.array([[2], [0], [1], [2]])
    x = rng.normal(size=(3, 3))
    if order:
        x = np.stack([x, rng.normal(size=(3, 3))], axis=1) + 0j
    options = dict(data=data, static={"off": np.array(0.5)}, x=x, example_ids=ids, batch=3)
    steps = []
    got = _cuda().run_program(program, init, progress=steps.append, **options)
    _close(got, reference.run_program(program, init, **options))
    assert steps == [1, 2, 3, 4]  # once per step, as the CPU engine (precompute's progress bar)


@device
def test_blocks_of_directions_when_the_device_is_short_of_memory(monkeypatch):
    """A batch split into device blocks (here by ``MAX_BLOCK``; on a GPU by free memory) gives
    the one-block result, for a program and a circuit."""
    from circuitsketch.backends import array_cuda

    monkeypatch.setattr(array_cuda, "MAX_BLOCK", 2)
    program = taylor(_loop_program(), 1)
    rng = np.random.default_rng(7)
    x = np.stack([rng.normal(size=(5, 3)), rng.normal(size=(5, 3))], axis=1) + 0j
    options = dict(data={"d": rng.normal(size=(4, 3))}, static={"off": np.array(0.5)}, x=x,
                   example_ids=np.array([[2], [0], [1], [2]]), batch=5)
    init = {"w": rng.normal(size=(2, 3))}
    _close(_cuda().run_program(program, init, **options),
           reference.run_program(program, init, **options))
    circuit = _every_op()
    inputs = random_array_inputs(circuit, 3, 3)
    inputs["tokens"] = _tokens(3)
    _both(circuit, inputs, 3)


@device
def test_precompute_on_numba_cuda_matches_numba_cpu():
    """The deletion scheme's precompute (what ``circuitsketch precompute --backend numba-cuda``
    runs) on the array microgpt, tiny and 2 steps: the sketch's series agree with numba-cpu's."""
    from circuitsketch.frontends.microgpt_array import build_task_array
    from circuitsketch.frontends.microgpt_data import MicrogptConfig
    from circuitsketch.sketch.precompute import precompute

    task = build_task_array(MicrogptConfig(n_embd=4, n_head=2, block_size=8, mlp_width=16),
                            n_steps=2)
    options = dict(directions=2, order=1, batch_size=2, progress=False)
    got = precompute(task, backend="numba-cuda", **options)
    want = precompute(task, backend="numba-cpu", **options)
    _close(got.series, want.series)
    _close(got.theta0, want.theta0)


def _one_op(op: Op):
    b = Builder()
    a = b.input_array("a", (3,), loc="model.py:7")
    b.output("y", [b.add(op, (a,), make_attrs(), loc="model.py:8")])
    return verify(b.build())


@device
@pytest.mark.parametrize("op, value, words", [(Op.LOG, -1.0, "log of a non-positive"),
                                              (Op.EXP, 1000.0, "")])
def test_domain_error_names_the_node_and_line(op, value, words):
    with pytest.raises(EvaluationError, match=rf"node %1 = {op.value} \[3\] \(traced at model.py:8\).*{words}"):
        _cuda().evaluate(_one_op(op), {"a": np.array([1.0, value, 2.0])})


@device
def test_kink_is_a_kink_error_unless_ignored():
    circuit = taylor(_one_op(Op.RELU), 1, {"a"})
    a = np.zeros((2, 3))
    a[1, 0] = 1.0
    with pytest.raises(KinkError, match=r"node %1 = relu"):
        _cuda().evaluate(circuit, {"a": a})
    _both(circuit, {"a": a}, None, ignore_kinks=True)


@device
def test_program_error_names_the_first_failing_step():
    b = Builder()
    w = b.input_array("w", (2,))
    b.output("w", [b.add(Op.LOG, (b.add(Op.SUB, (w, b.const(0.5))),), loc="loop.py:3")])
    program = Program(verify(b.build()), 5, ("w",))
    with pytest.raises(EvaluationError, match=r"log .*traced at loop.py:3.*log of a non-positive"):
        _cuda().run_program(program, {"w": np.array([3.0, 40.0])})


@device
def test_fused_series_groups():
    """A random series chain (one fused kernel, array_fusion) and an error inside a group."""
    circuit = taylor(random_chain(1, length=6), 2, {"x", "w"})
    assert any(e.kernel.startswith("fused_s_") for e in ae.plan(circuit).entries)
    _both(circuit, _series_inputs(circuit, 1, 2, seeds=("x", "w")), 2)
    logged = _chain_of(lambda b, v: b.add(Op.LOG, (v,), loc="model.py:3"))
    with pytest.raises(EvaluationError, match=r"node %3 = log .*model.py:3.*log of a non-positive"):
        _cuda().evaluate(logged, {"x": _x([1.0, 0.0, 3.0])})


def test_generated_kernels_cover_the_table():
    """Every table kernel is either hand-written for CUDA or transformed from its CPU source,
    and the module compiles as Python (a transformation slip is a SyntaxError here)."""
    from circuitsketch.backends import array_codegen as cg
    from circuitsketch.backends import array_cuda

    source = array_cuda.library_source(2)
    compile(source, "cs_array_cuda", "exec")
    for name in cg.KERNELS:
        assert f"def {name}(" in source, name
    generated = array_cuda.cuda_source(cg.KERNELS["ew_log_s"].source)
    assert "cuda.grid(1)" in generated and "for d in range(nb)" not in generated
    assert "cuda.atomic.min(err, 0, base + (c))" in generated


# ---------------------------------------------------------------- compiled for a real GPU

def _ptx_reason() -> str | None:
    """None when Numba can compile CUDA code to PTX here (libNVVM and NVRTC found; no GPU or
    driver needed), else why not."""
    if SIMULATED:
        return "the simulator has no compiler"
    try:
        from numba import cuda, float64

        def double(a):
            a[cuda.grid(1)] *= 2.0
        cuda.compile_ptx(double, (float64[::1],), cc=(9, 0))
    except Exception as exc:
        return f"no CUDA compiler (libNVVM/NVRTC) here: {str(exc).splitlines()[0][:120]}"
    return None


def _ptx_types(name: str, fn) -> tuple:
    """A kernel's argument types from its parameter names (the launch's arguments)."""
    import inspect

    from numba import types

    arrays = {"R": types.float64[::1], "S": types.complex128[::1], "I": types.int64[::1],
              "err": types.int64[::1], "D": types.float64[:, ::1], "ids": types.int64[:, ::1],
              "X": types.complex128[:, :, ::1] if name.endswith("_s") else types.float64[:, ::1]}
    scalars = {"kinks": types.boolean, "p": types.float64}
    return tuple(arrays.get(p) or scalars.get(p, types.int64)
                 for p in inspect.signature(fn).parameters)


NO_PTX = _ptx_reason()


@pytest.mark.skipif(NO_PTX is not None, reason=str(NO_PTX))
def test_every_kernel_compiles_for_a_real_gpu(monkeypatch):
    """Every kernel of the order-3 library and a fused group compile to PTX for sm_90 (what a
    real GPU would run; the simulator runs the Python source and misses CUDA typing errors)."""
    import types as pytypes

    import numba.cuda.dispatcher as dispatcher
    from numba import cuda

    from circuitsketch.backends import array_codegen as cg
    from circuitsketch.backends import array_cuda
    from circuitsketch.backends import array_fusion as fu
    from circuitsketch.backends.emit import load_kernel_module

    # device functions ask the current device for its compute capability: there is none here
    monkeypatch.setattr(dispatcher, "get_current_device",
                        lambda: pytypes.SimpleNamespace(compute_capability=(9, 0)))
    module = load_kernel_module(array_cuda.library_source(4), "cs_array_cuda")
    chain = [fu.FusedMember(Op.LOG, (("leaf", 0),)),
             fu.FusedMember(Op.MUL, (("member", 0), ("leaf", 1)))]
    series_chain = chain + [fu.FusedMember(Op.POW, (("member", 1),), 0.5),
                            fu.FusedMember(Op.GELU, (("member", 2),))]
    kernels = [(name, getattr(module, name).py_func) for name in cg.KERNELS]
    for fused in (fu.fused_kernel(chain, 2), fu.fused_series_kernel(series_chain, "sr", 4)):
        fused_module = load_kernel_module(array_cuda.fused_source(fused, 4),
                                          "cs_array_cuda_fused")
        kernels.append((fused.name, getattr(fused_module, fused.name).py_func))
    for name, fn in kernels:
        ptx, _ = cuda.compile_ptx(fn, _ptx_types(name, fn), cc=(9, 0))
        assert ".entry" in ptx, name


# ---------------------------------------------------------------- the simulator run

@pytest.mark.skipif(SIMULATED, reason="this is the simulator run itself")
def test_under_the_cuda_simulator():
    """This file's device checks in a subprocess under Numba's CUDA simulator."""
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1", CIRCUITSKETCH_TEST_ARRAY_CUDA="sim")
    probe = subprocess.run([sys.executable, "-c", "from numba import cuda; assert cuda.is_available()"],
                           env=env, capture_output=True, text=True, timeout=120)
    if probe.returncode:
        pytest.skip(f"the CUDA simulator does not start: {probe.stderr[-500:]}")
    here = pathlib.Path(__file__)
    result = subprocess.run([sys.executable, "-m", "pytest", str(here), "-x", "-vv",
                             "-p", "no:cacheprovider"], cwd=here.parent.parent, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    host_only = ("under_the_cuda_simulator", "compiles_for_a_real_gpu")
    device_checks = [line for line in result.stdout.splitlines() if "::test_" in line
                     and not any(name in line for name in host_only)]
    assert len(device_checks) >= 11 and all("PASSED" in line for line in device_checks), \
        result.stdout[-3000:]
