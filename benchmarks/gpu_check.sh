#!/usr/bin/env bash
# One short GPU slot for the CUDA array engine (issue 14). Not part of CI: run it by hand on a
# machine with a CUDA GPU, from anywhere:
#
#     bash benchmarks/gpu_check.sh            # figures -> $OUT/gpu_figures.json (or ./)
#
# It (1) installs the project with its test extra, (2) runs tests/test_array_cuda.py and the
# CUDA checks of tests/test_backends.py on the real GPU, (3) times
#   (a) Fig. 3's set-up: the array microgpt (frontends.microgpt_array.build_task_array),
#       500 directions at order 3, over GPU_CHECK_STEPS steps (default 1000; a short run first,
#       and the full run only if its projection fits GPU_CHECK_BUDGET_S, else the projection),
#   (b) GPU_CHECK_RETRAININGS (default 1000) real retrainings batched (order 0),
#   (c) GPU_CHECK_MANY_DIRECTIONS (default 50,000) directions at order 3: 10 steps, projected,
# and checks a few directions of each against numba-cpu. Each section has its own time limit so
# that a failure still leaves the figures of the others in the JSON.
#
# Offline (no package index): the install step fails and is logged; point PYTHON at an
# interpreter that already has the project's dependencies (numba-cuda, pytest, hypothesis).
#
# Smoke test without a GPU (tiny sizes, Numba's CUDA simulator):
#     NUMBA_ENABLE_CUDASIM=1 GPU_CHECK_SMOKE=1 bash benchmarks/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR="${OUT:-.}"
mkdir -p "$OUT_DIR"
FIGURES="$OUT_DIR/gpu_figures.json"
LOG="$OUT_DIR/gpu_check.log"
PY="${PYTHON:-python}"
: > "$LOG"

if [ -z "${GPU_CHECK_SMOKE:-}" ]; then
    echo "== install" | tee -a "$LOG"
    timeout 300 "$PY" -m pip install -q -e '.[test]' >>"$LOG" 2>&1 || echo "pip install failed (see log)" | tee -a "$LOG"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >>"$LOG" 2>&1 || true
    echo "== tests on the real GPU" | tee -a "$LOG"
    timeout 240 "$PY" -m pytest tests/test_array_cuda.py -p no:cacheprovider -rs -vv \
        -k "not under_the_cuda_simulator" >>"$LOG" 2>&1
    echo "tests/test_array_cuda.py rc=$?" | tee -a "$LOG"
    # CIRCUITSKETCH_TEST_CUDASIM=1 without NUMBA_ENABLE_CUDASIM: test_backends' numba-cuda
    # selection (the one test_cuda_simulator runs) on the real device
    CIRCUITSKETCH_TEST_CUDASIM=1 timeout 240 "$PY" -m pytest tests/test_backends.py -p no:cacheprovider -rs -x \
        -k "every_op_agrees and (exp or dot or div or gelu or max or pow) or mixed_real or random or training_program or domain_errors or kink_errors or overflow or straight_line" \
        >>"$LOG" 2>&1
    echo "tests/test_backends.py (numba-cuda) rc=$?" | tee -a "$LOG"
fi

echo "== timings" | tee -a "$LOG"
timeout "${GPU_CHECK_TIMEOUT_S:-420}" "$PY" - "$FIGURES" <<'EOF' 2>&1 | tee -a "$LOG"
import json, os, platform, sys, time, traceback
import numpy as np

path = sys.argv[1]
smoke = bool(os.environ.get("GPU_CHECK_SMOKE"))
steps = int(os.environ.get("GPU_CHECK_STEPS", 3 if smoke else 1000))
directions = int(os.environ.get("GPU_CHECK_DIRECTIONS", 2 if smoke else 500))
retrainings = int(os.environ.get("GPU_CHECK_RETRAININGS", 2 if smoke else 1000))
big = int(os.environ.get("GPU_CHECK_MANY_DIRECTIONS", 3 if smoke else 50000))
budget = float(os.environ.get("GPU_CHECK_BUDGET_S", 150))
short = min(steps, 3 if smoke else 50)
figures = {"smoke": smoke, "python": platform.python_version(), "cpu_count": os.cpu_count(),
           "steps": steps, "directions": directions, "retrainings": retrainings,
           "many_directions": big}


def save():
    with open(path, "w") as f:
        json.dump(figures, f, indent=2)


try:
    from numba import cuda
    figures["simulator"] = bool(os.environ.get("NUMBA_ENABLE_CUDASIM"))
    if cuda.is_available() and not figures["simulator"]:
        dev = cuda.get_current_device()
        figures["device"] = dev.name.decode() if isinstance(dev.name, bytes) else str(dev.name)
        free, total = cuda.current_context().get_memory_info()
        figures["device_memory_gb"] = round(total / 2**30, 1)
except Exception as exc:
    figures["device_error"] = repr(exc)
save()

from circuitsketch.backends import numba_cpu, numba_cuda
from circuitsketch.frontends.microgpt_array import build_task_array
from circuitsketch.frontends.microgpt_data import MicrogptConfig
from circuitsketch.passes.taylor import taylor

config = MicrogptConfig(n_embd=4, n_head=2, block_size=8, mlp_width=16) if smoke else None


def task_of(n):
    return build_task_array(config, n_steps=n)


def weights(task, width, order, rng):
    n_examples = int(task.example_ids.max()) + 1
    if order == 0:  # real retrainings: delete one example each (down-weight 1)
        x = np.zeros((width, n_examples))
        x[np.arange(width), rng.integers(0, n_examples, width)] = 1.0
        return x
    x = np.zeros((width, order + 1, n_examples), dtype=complex)
    x[:, 1] = rng.choice([-1.0, 1.0], size=(width, n_examples))  # random sign directions
    return x


def timed(backend, task, order, width, rng):
    program = taylor(task.program, order) if order else task.program
    x = weights(task, width, order, rng)
    start = time.perf_counter()
    out = backend.run_program(program, task.init, data=task.data, x=x,
                              example_ids=task.example_ids, batch=width)
    return time.perf_counter() - start, out, x


def agree(task, order, out, x, picks):
    """max relative difference of the GPU result to numba-cpu on a few directions."""
    program = taylor(task.program, order) if order else task.program
    want = numba_cpu.run_program(program, task.init, data=task.data, x=x[picks],
                                 example_ids=task.example_ids, batch=len(picks))
    worst = 0.0
    for name, value in want.items():
        scale = max(1.0, float(np.abs(value).max()))
        worst = max(worst, float(np.abs(out[name][picks] - value).max()) / scale)
    return worst


def section(name, order, width, short=short, full=True, cpu=True):
    rng = np.random.default_rng(0)
    fig = figures.setdefault(name, {"order": order, "width": width})
    try:
        t_short = task_of(short)
        first, _, _ = timed(numba_cuda, t_short, order, width, rng)  # compiles every kernel
        fig["first_run_s_incl_compile"] = round(first, 3)
        again, out, x = timed(numba_cuda, t_short, order, width, rng)
        per_step = again / short
        fig.update(short_steps=short, short_run_s=round(again, 3), per_step_ms=round(1e3 * per_step, 4),
                   projected_full_s=round(per_step * steps, 2))
        fig["max_rel_diff_vs_numba_cpu"] = agree(t_short, order, out, x, [0, width - 1])
        save()
        if full and steps > short and per_step * steps <= budget:
            full_s, _, _ = timed(numba_cuda, task_of(steps), order, width, rng)
            fig["full_run_s"] = round(full_s, 2)
        if not cpu:
            return save()
        cpu_width = min(width, 8)  # the CPU reference figure: a few directions, projected
        cpu_s, _, _ = timed(numba_cpu, t_short, order, cpu_width, rng)
        fig["numba_cpu_per_direction_step_ms"] = round(1e3 * cpu_s / (short * cpu_width), 4)
        fig["numba_cpu_projected_full_s"] = round(cpu_s / cpu_width * width * steps / short, 1)
    except Exception:
        fig["error"] = traceback.format_exc()[-2000:]
    save()


section("fig3_order3", 3, directions)
section("retrainings_real", 0, retrainings)
# the issue's 50,000 directions (s.e. ~0.017 on the loss change): a short run, projected
section("fig3_many_directions_projection", 3, big, short=min(short, 10), full=False, cpu=False)
print(json.dumps(figures, indent=2))
EOF
echo "figures: $FIGURES (log: $LOG)"
