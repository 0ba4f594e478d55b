"""The progress bar: counts, ETA from the computed (not skipped) work, output throttling."""

import io

from circuitsketch.sketch.progress import ProgressBar, format_seconds


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_eta_uses_only_computed_work(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr("circuitsketch.sketch.progress.time.monotonic", clock)
    stream = io.StringIO()
    bar = ProgressBar(100, label="job", stream=stream, log_interval=0.0)
    bar.skip(50)                      # resumed work: instant, not part of the rate
    clock.now += 3.0
    bar.advance(1)                    # the first step: one-off costs, not part of the rate
    clock.now += 9.0
    bar.advance(9)                    # 9 units in 9 s -> 1 unit/s, 40 left
    assert bar.eta_seconds() == 40.0
    assert "job [" in stream.getvalue() and "60/100 steps" in stream.getvalue()
    assert "ETA 0:40" in stream.getvalue().splitlines()[-1]
    bar.close()


def test_eta_leaves_out_the_slow_first_step(monkeypatch):
    """A 200-step job whose first step compiles for 37 s and whose other steps take 0.2 s: the
    ETA is the remaining steps at 0.2 s, not hours; unknown before a second step."""
    clock = FakeClock()
    monkeypatch.setattr("circuitsketch.sketch.progress.time.monotonic", clock)
    stream = io.StringIO()
    bar = ProgressBar(200, label="job", stream=stream, log_interval=0.0,
                      note="compiling kernels (first run on this machine)")
    first = stream.getvalue().splitlines()
    assert len(first) == 1 and first[0].endswith("0/200 steps elapsed 0:00 compiling kernels "
                                                 "(first run on this machine)")
    clock.now += 37.0
    bar.advance(1)
    assert bar.eta_seconds() != bar.eta_seconds()  # NaN: no rate yet
    assert stream.getvalue().splitlines()[-1].endswith("ETA ?")
    for _ in range(9):
        clock.now += 0.2
        bar.advance(1)
    assert abs(bar.eta_seconds() - 190 * 0.2) < 1e-9
    assert "compiling" not in stream.getvalue().splitlines()[-1]
    bar.close()


def test_terminal_redraw_covers_the_longer_note(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr("circuitsketch.sketch.progress.time.monotonic", clock)

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    stream = Terminal()
    bar = ProgressBar(10, label="job", stream=stream, min_interval=0.0, note="compiling kernels")
    clock.now += 1.0
    bar.advance(1)
    first, second = stream.getvalue().split("\r")[1:3]
    assert first.endswith("compiling kernels") and "ETA ?" in second
    assert len(second) == len(first)  # blanks over the note's tail
    bar.close()


def test_compile_note_follows_the_kernel_cache(monkeypatch, tmp_path):
    from circuitsketch.sketch.progress import COMPILING, compile_note

    assert compile_note("reference", series=True) is None       # nothing to compile
    monkeypatch.setenv("CIRCUITSKETCH_CACHE", str(tmp_path))     # a machine with no kernels
    assert compile_note("numba-cpu", series=True, width=64) == COMPILING
    assert compile_note("numba-cpu", series=False, width=3) == COMPILING


def test_disabled_bar_writes_nothing_and_log_output_is_throttled(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr("circuitsketch.sketch.progress.time.monotonic", clock)
    quiet = io.StringIO()
    with ProgressBar(5, stream=quiet, enabled=False) as bar:
        bar.advance(5)
    assert quiet.getvalue() == ""
    log = io.StringIO()
    with ProgressBar(100, stream=log, log_interval=5.0) as bar:
        for _ in range(100):
            clock.now += 0.1
            bar.advance(1)            # 10 s in all: a line at the start, every 5 s, and at close
    assert 2 <= len(log.getvalue().splitlines()) <= 4
    assert log.getvalue().splitlines()[-1].count("100/100") == 1


def test_format_seconds():
    assert format_seconds(65) == "1:05"
    assert format_seconds(3725) == "1:02:05"
    assert format_seconds(float("nan")) == "?"


def test_precompute_reports_progress_per_batch_on_stderr(capsys):
    from circuitsketch.sketch import precompute
    from test_sketch_tasks import regression_task

    precompute(regression_task(n_steps=4), directions=4, order=1, batch_size=2, progress=True)
    err = capsys.readouterr().err
    assert "precompute k=1 batch 2/2" in err and "8/8 steps" in err and "ETA" in err
