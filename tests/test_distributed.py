"""Precompute and evaluation on a Dask cluster (a LocalCluster of 2 worker processes): the sketch
and the retrained values are bitwise the local run's, whatever the completion order or batch
size; a worker killed mid-task, an interrupted driver and corrupt shards cost only their batches;
without Dask the error names the extra. The independent reference throughout is the local,
single-process run (itself checked against numpy training and retraining in test_sketch_*.py)."""

import importlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from circuitsketch.cluster import INSTALL_HINT, connect
from circuitsketch.sketch import (SketchFormatError, linear_datamodeling_score, load_sketch,
                                  precompute, retrained_values)
from test_sketch_cli import run  # noqa: F401  (the CLI fixture, on a logistic task)
from test_sketch_store import SETTINGS, reference, task  # noqa: F401  (the shared fixtures)
from test_sketch_tasks import point_loss_measurement

pytest.importorskip("dask.distributed")
cloudpickle = pytest.importorskip("cloudpickle")  # a dependency of dask.distributed
precompute_module = importlib.import_module("circuitsketch.sketch.precompute")
store_module = importlib.import_module("circuitsketch.sketch.store")

BATCHES = [(0, 3), (3, 3), (6, 3), (9, 1)]


@pytest.fixture(scope="module")
def client():
    with connect(2) as client:
        yield client


@pytest.fixture
def todo(monkeypatch):
    """Records the batches the driver sends to the cluster; ``reverse`` yields them backwards."""
    record = {"batches": [], "reverse": False}
    original = precompute_module.batches_on_cluster

    def spy(cluster, task, order, seed, keep, backend, batches, bar):
        record["batches"].append(sorted(batches))
        finished = original(cluster, task, order, seed, keep, backend, batches, bar)
        yield from (reversed(list(finished)) if record["reverse"] else finished)

    monkeypatch.setattr(precompute_module, "batches_on_cluster", spy)
    return record


def _same(a, b):
    """Bitwise: same shapes, dtypes and bytes (so -0.0 differs from 0.0)."""
    assert (a.fingerprint, a.n, a.order, a.seed, a.s) == (b.fingerprint, b.n, b.order, b.seed, b.s)
    assert list(a.series) == list(b.series)
    for name in a.series:
        for x, y in ((a.series[name], b.series[name]), (a.theta0[name], b.theta0[name])):
            assert (x.shape, x.dtype) == (y.shape, y.dtype) and x.tobytes() == y.tobytes(), name


def test_cluster_sketch_is_bitwise_the_local_sketch(task, reference, client, todo, tmp_path):
    path = tmp_path / "run.sketch"
    sketch = precompute(task, path=path, cluster=client, **SETTINGS)
    assert todo["batches"] == [BATCHES]
    _same(sketch, reference)
    _same(load_sketch(path, task=task), reference)
    meta = json.loads((path / "meta.json").read_text())
    assert [(s["first"], s["count"]) for s in meta["shards"]] == BATCHES
    assert sorted(p.name for p in path.iterdir()) == sorted(
        ["meta.json", "theta0.npz"] + [s["file"] for s in meta["shards"]])
    todo["reverse"] = True  # completion order does not matter
    _same(precompute(task, cluster=client, **SETTINGS), reference)
    _same(precompute(task, cluster=client, **{**SETTINGS, "batch_size": 4}), reference)


@pytest.mark.parametrize("frontend", ["scalar", "array"])
def test_tiny_microgpt_on_the_cluster_is_bitwise_the_local_sketch(client, frontend):
    """The MicrogptTask travels by pickle (workers do not trace it) and sketches the same bits,
    scalar-traced (the tape) and array-traced (the array engine, numba-cpu on the workers)."""
    from circuitsketch.frontends.microgpt import build_task
    from circuitsketch.frontends.microgpt_array import build_task_array
    from circuitsketch.frontends.microgpt_data import MicrogptConfig

    build = build_task if frontend == "scalar" else build_task_array
    task = build(MicrogptConfig(n_embd=8, n_head=2, block_size=8, mlp_width=32), 2)
    settings = dict(directions=4, order=2, seed=1, batch_size=2, progress=False,
                    backend="numba-cpu")
    _same(precompute(task, cluster=client, **settings), precompute(task, **settings))


def test_batch_size_does_not_change_the_sketch(task, reference):
    """Reference backend: a batch of one direction is padded to two (numpy would otherwise sum
    it in another order; see sketch/precompute.py), so every batch size gives the same bits."""
    for batch_size in (1, 2, 10):
        _same(precompute(task, **{**SETTINGS, "batch_size": batch_size}), reference)


def _crash_first_batch(marker, log):
    """Run on every worker: the first batch to start on any worker kills its worker process;
    every start is logged."""
    import importlib
    import os

    module = importlib.import_module("circuitsketch.sketch.precompute")
    original = module.train_series

    def crashing(*args, **kwargs):
        with open(log, "a") as f:
            f.write(f"{os.getpid()}\n")
        try:
            os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return original(*args, **kwargs)
        os._exit(1)

    module.train_series = crashing


def test_worker_killed_mid_task_costs_only_its_batch(task, reference, client, tmp_path):
    marker, log = tmp_path / "crashed", tmp_path / "starts"
    pids_before = set(client.run(os.getpid).values())
    module = sys.modules[__name__]
    cloudpickle.register_pickle_by_value(module)  # workers cannot import this test file
    try:
        client.run(_crash_first_batch, str(marker), str(log))
    finally:
        cloudpickle.unregister_pickle_by_value(module)
    sketch = precompute(task, path=tmp_path / "run.sketch", cluster=client, **SETTINGS)
    assert marker.exists()
    assert len(log.read_text().split()) >= len(BATCHES) + 1  # the killed batch ran again
    _same(sketch, reference)
    _same(load_sketch(tmp_path / "run.sketch", task=task), reference)
    client.wait_for_workers(2, timeout=60)
    assert len(pids_before - set(client.run(os.getpid).values())) == 1  # one process died


def test_interrupted_driver_resumes_and_corrupt_shards_are_recomputed(task, reference, client,
                                                                      todo, tmp_path,
                                                                      monkeypatch):
    path = tmp_path / "run.sketch"
    original_write = store_module.PartialSketch.write_shard
    written = []

    def driver_dies_after_three(self, first, count, arrays):
        if len(written) == 3:
            raise KeyboardInterrupt("simulated driver crash")
        original_write(self, first, count, arrays)
        written.append((first, count))

    monkeypatch.setattr(store_module.PartialSketch, "write_shard", driver_dies_after_three)
    with pytest.raises(KeyboardInterrupt):
        precompute(task, path=path, cluster=client, **SETTINGS)
    monkeypatch.setattr(store_module.PartialSketch, "write_shard", original_write)
    assert not path.exists() and len(written) == 3
    partial = tmp_path / "run.sketch.partial"
    flipped, replaced, intact = (partial / store_module.shard_name(*batch) for batch in written)
    data = bytearray(flipped.read_bytes())
    data[len(data) // 2] ^= 0xFF  # a flipped bit: the file no longer matches its checksum
    flipped.write_bytes(bytes(data))
    with np.load(replaced) as shard:  # a valid shard file with other numbers in it
        np.savez(replaced, **{name: shard[name] + 1 for name in shard.files})
    resumed = precompute(task, path=path, cluster=client, **SETTINGS)
    assert todo["batches"][-1] == sorted(set(BATCHES) - {written[2]})
    _same(resumed, reference)
    _same(load_sketch(path, task=task), reference)


def test_shard_changed_before_the_final_rename_is_not_merged(task, reference, tmp_path,
                                                            monkeypatch):
    path = tmp_path / "run.sketch"
    original_finish = store_module.PartialSketch.finish

    def tamper_then_finish(self, sketch, shards):
        shard = self.workdir / store_module.shard_name(*shards[0])
        shard.write_bytes(shard.read_bytes()[:-8])
        return original_finish(self, sketch, shards)

    monkeypatch.setattr(store_module.PartialSketch, "finish", tamper_then_finish)
    with pytest.raises(SketchFormatError, match="changed on disk"):
        precompute(task, path=path, **SETTINGS)
    monkeypatch.undo()
    trained = []
    original_train = precompute_module.train_series
    monkeypatch.setattr(precompute_module, "train_series",
                        lambda *a, **k: trained.append(1) or original_train(*a, **k))
    _same(precompute(task, path=path, **SETTINGS), reference)
    assert len(trained) == 1  # only the tampered shard is recomputed


def test_retraining_on_the_cluster_gives_the_local_values(task, reference, client):
    measurement = point_loss_measurement()
    xs = np.random.default_rng(5).uniform(0, 1, size=(7, task.n_examples))
    local = retrained_values(task, measurement, xs, batch_size=3, progress=False)
    remote = retrained_values(task, measurement, xs, batch_size=3, progress=False, cluster=client)
    assert remote.tobytes() == local.tobytes()
    lds = linear_datamodeling_score(reference, task, measurement, n_subsets=5, fraction=0.25,
                                    batch_size=2, progress=False, cluster=client)
    assert lds.truths.tobytes() == linear_datamodeling_score(
        reference, task, measurement, n_subsets=5, fraction=0.25, batch_size=2,
        progress=False).truths.tobytes()


def test_cli_runs_precompute_and_evaluate_on_a_scheduler(run, client, tmp_path, capsys):
    address = client.scheduler.address
    sketch_path = tmp_path / "s.sketch"
    assert run("precompute", "--task", "logistic", "--directions", 12, "--order", 2,
               "--batch-size", 5, "--out", sketch_path, "--quiet", "--scheduler", address) == 0
    _same(load_sketch(sketch_path), precompute(run.task, directions=12, order=2, batch_size=5,
                                               progress=False))
    assert run("evaluate", "--sketch", sketch_path, "--delete-indices", "0,5", "--weights", "0,1",
               "--lds-subsets", 4, "--out", tmp_path / "e", "--quiet", "--scheduler", address) == 0
    report = json.loads((tmp_path / "e" / "evaluate.json").read_text())
    v = np.isin(np.arange(run.task.n_examples), [0, 5]) * 1.0
    truths = retrained_values(run.task, point_loss_measurement(), np.outer([0, 1], v),
                              progress=False)
    assert report["sets"][0]["truth"] == truths[1]
    assert report["curves"][0]["truths"] == truths.tolist()
    with pytest.raises(SystemExit):
        run("precompute", "--task", "logistic", "--out", tmp_path / "x", "--workers", 2,
            "--scheduler", address)
    assert "not allowed with argument" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # the parser checks the count
        run("precompute", "--task", "logistic", "--out", tmp_path / "x", "--workers", 0)
    assert "--workers: 0 is less than 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run("evaluate", "--help")
    assert "--scheduler ADDRESS" in capsys.readouterr().out


def test_without_dask_the_error_names_the_extra(task, monkeypatch):
    monkeypatch.setitem(sys.modules, "dask.distributed", None)  # import dask.distributed fails
    for call in (lambda: precompute(task, cluster=2, **SETTINGS),
                 lambda: retrained_values(task, point_loss_measurement(),
                                          np.zeros((1, task.n_examples)), cluster=2,
                                          progress=False),
                 lambda: connect(2).__enter__()):
        with pytest.raises(ImportError) as error:
            call()
        assert INSTALL_HINT in str(error.value)
    monkeypatch.undo()
    with pytest.raises(TypeError, match="number of local worker processes"):
        connect(2.5).__enter__()
    code = ("import sys; sys.modules['dask'] = None\n"
            "import circuitsketch, circuitsketch.cluster, circuitsketch.sketch.cli\n"
            "print('imported without dask')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "imported without dask" in result.stdout


def test_the_task_service_is_generic_and_checks_digests(client, monkeypatch):
    """run_tasks runs any function: results come back labelled, the prepared context is
    computed once on a worker, and a result whose contents changed in transit is refused."""
    from circuitsketch.cluster import TaskIntegrityError, digest, run_tasks
    from circuitsketch.cluster import tasks as tasks_module

    calls = {i: (np.arange(3.0) * i,) for i in range(4)}
    results = dict(run_tasks(client, np.multiply, calls, shared=(2.0,), name="test"))
    assert sorted(results) == [0, 1, 2, 3]
    for i, value in results.items():
        np.testing.assert_array_equal(value, 2.0 * np.arange(3.0) * i)
    prepared = dict(run_tasks(client, np.add, {0: (1.0,)}, shared=(3.0, 4.0),
                              prepare=lambda a, b: (a * b,), name="test"))
    assert prepared == {0: 13.0}
    assert digest({"a": np.zeros(2)}) != digest({"a": -np.zeros(2)})  # bytes, not values
    monkeypatch.setattr(tasks_module, "digest", lambda value: "driver-side digest")
    with pytest.raises(TaskIntegrityError, match="arrived changed"):
        list(run_tasks(client, np.multiply, {0: (1.0,)}, shared=(2.0,), name="test"))
