"""The on-disk sketch: round trip, atomic writes (simulated crashes), resumable precompute,
corruption and mismatch detection."""

import importlib
import json

import numpy as np
import pytest

from circuitsketch.sketch import (SketchFormatError, SketchMismatchError, load_sketch, precompute,
                                  predict, save_sketch)
from test_sketch_tasks import point_loss_measurement, regression_task

precompute_module = importlib.import_module("circuitsketch.sketch.precompute")
store_module = importlib.import_module("circuitsketch.sketch.store")

SETTINGS = dict(directions=10, order=2, seed=4, batch_size=3, progress=False)


@pytest.fixture(scope="module")
def task():
    return regression_task(n_steps=8)


@pytest.fixture(scope="module")
def reference(task):
    return precompute(task, **SETTINGS)


@pytest.fixture
def counted(monkeypatch):
    """Counts the batches actually trained; ``fail_at`` makes batch number fail_at crash."""
    calls = {"n": 0, "fail_at": None}
    original = precompute_module.train_series

    def wrapper(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == calls["fail_at"]:
            raise KeyboardInterrupt("simulated crash")
        return original(*args, **kwargs)

    monkeypatch.setattr(precompute_module, "train_series", wrapper)
    return calls


def _same(a, b):
    assert (a.fingerprint, a.n, a.order, a.seed, a.s) == (b.fingerprint, b.n, b.order, b.seed, b.s)
    assert a.example_labels == b.example_labels
    for name in a.series:
        np.testing.assert_array_equal(a.series[name], b.series[name])
        np.testing.assert_array_equal(a.theta0[name], b.theta0[name])


def test_round_trip_and_documented_layout(task, reference, tmp_path, counted):
    path = tmp_path / "run.sketch"
    sketch = precompute(task, path=path, info={"note": "test"}, **SETTINGS)
    assert counted["n"] == 4  # batches of 3, 3, 3, 1
    loaded = load_sketch(path, task=task)
    _same(sketch, reference)
    _same(loaded, reference)
    assert loaded.info == {"note": "test"}
    meta = json.loads((path / "meta.json").read_text())
    assert meta["format_version"] == 2 and meta["fingerprint"] == task.fingerprint()
    assert (meta["n"], meta["order"], meta["directions"], meta["seed"]) == (24, 2, 10, 4)
    assert meta["states"] == [["w", [3]], ["b", []]] and meta["dtype"] == "complex128"
    assert [(s["first"], s["count"]) for s in meta["shards"]] == [(0, 3), (3, 3), (6, 3), (9, 1)]
    with np.load(path / meta["shards"][1]["file"], allow_pickle=False) as shard:
        np.testing.assert_array_equal(shard["w"], reference.series["w"][3:6])
    assert sorted(p.name for p in path.iterdir()) == sorted(
        ["meta.json", "theta0.npz"] + [s["file"] for s in meta["shards"]])
    assert not (tmp_path / "run.sketch.partial").exists()
    measurement = point_loss_measurement()
    assert predict(loaded, measurement, [1, 2]).estimate == predict(reference, measurement, [1, 2]).estimate
    again = tmp_path / "copy.sketch"
    save_sketch(loaded, again, shard_size=4)
    _same(load_sketch(again), reference)


def test_precompute_again_reuses_a_finished_sketch(task, tmp_path, counted):
    path = tmp_path / "run.sketch"
    precompute(task, path=path, **SETTINGS)
    counted["n"] = 0
    precompute(task, path=path, **SETTINGS)
    assert counted["n"] == 0
    with pytest.raises(SketchMismatchError, match="another run"):
        precompute(task, path=path, **{**SETTINGS, "order": 3})
    with pytest.raises(FileExistsError):
        precompute(task, path=path, resume=False, **SETTINGS)


def test_interrupted_precompute_leaves_nothing_loadable_and_resumes(task, reference, tmp_path,
                                                                    counted):
    path = tmp_path / "run.sketch"
    counted["fail_at"] = 3
    with pytest.raises(KeyboardInterrupt):
        precompute(task, path=path, **SETTINGS)
    assert not path.exists()
    with pytest.raises(SketchFormatError, match="unfinished precompute"):
        load_sketch(path)
    assert len(list((tmp_path / "run.sketch.partial").glob("shard-*.npz"))) == 2
    counted.update(n=0, fail_at=None)
    resumed = precompute(task, path=path, **SETTINGS)
    assert counted["n"] == 2  # only the two unfinished batches are trained
    _same(resumed, reference)
    _same(load_sketch(path), reference)


def test_crash_while_writing_a_shard_or_the_metadata(task, reference, tmp_path, monkeypatch, counted):
    path = tmp_path / "run.sketch"
    original_savez = np.savez

    def half_written(file, **arrays):  # the process dies in the middle of a shard
        file.write(b"PK\x03\x04 partial")
        raise KeyboardInterrupt("simulated crash")

    monkeypatch.setattr(store_module.np, "savez", half_written)
    with pytest.raises(KeyboardInterrupt):
        precompute(task, path=path, **SETTINGS)
    partial = tmp_path / "run.sketch.partial"
    assert not partial.exists()  # no shard was finished: nothing to resume, nothing left behind
    monkeypatch.setattr(store_module.np, "savez", original_savez)
    monkeypatch.setattr(store_module.os, "rename", lambda *a: (_ for _ in ()).throw(OSError("crash")))
    with pytest.raises(OSError):
        precompute(task, path=path, **SETTINGS)
    assert not path.exists()
    with pytest.raises(SketchFormatError):
        load_sketch(path)
    monkeypatch.undo()
    target = tmp_path / "saved.sketch"
    calls = []

    def crash_on_third(path_, arrays):
        calls.append(path_)
        if len(calls) == 3:
            raise KeyboardInterrupt("simulated crash")
        original_write(path_, arrays)

    original_write = store_module.write_arrays
    monkeypatch.setattr(store_module, "write_arrays", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        save_sketch(reference, target, shard_size=3)
    assert not target.exists() and list(tmp_path.glob(".saved.sketch.tmp-*")) == []


def test_corrupt_truncated_or_missing_files_are_detected(task, reference, tmp_path):
    path = tmp_path / "run.sketch"
    save_sketch(reference, path, shard_size=4)
    meta = json.loads((path / "meta.json").read_text())
    shard = path / meta["shards"][1]["file"]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(SketchFormatError, match="corrupt or truncated"):
        load_sketch(path)
    shard.write_bytes(bytes(data[: len(data) // 3]))
    with pytest.raises(SketchFormatError, match="corrupt or truncated"):
        load_sketch(path)
    shard.unlink()
    with pytest.raises(SketchFormatError, match="missing"):
        load_sketch(path)
    (path / "meta.json").write_text(json.dumps({**meta, "format_version": 99}))
    with pytest.raises(SketchFormatError, match="version 99"):
        load_sketch(path)
    (path / "meta.json").write_text("{not json")
    with pytest.raises(SketchFormatError, match="corrupt"):
        load_sketch(path)


def test_sketch_of_another_program_is_refused(task, reference, tmp_path, counted):
    path = tmp_path / "run.sketch"
    save_sketch(reference, path)
    other = regression_task(n_steps=8, lr=0.4)
    with pytest.raises(SketchMismatchError) as error:
        load_sketch(path, task=other)
    assert task.fingerprint() in str(error.value) and other.fingerprint() in str(error.value)
    counted["fail_at"] = 2
    with pytest.raises(KeyboardInterrupt):
        precompute(task, path=tmp_path / "x.sketch", **SETTINGS)
    with pytest.raises(SketchMismatchError, match="unfinished precompute of another run.*order"):
        precompute(task, path=tmp_path / "x.sketch", **{**SETTINGS, "order": 3})
    counted.update(n=0, fail_at=None)
    precompute(task, path=tmp_path / "x.sketch", resume=False, **SETTINGS)
    assert counted["n"] == 4  # resume=False discarded the old shards


def test_keep_selects_the_stored_state(task):
    sketch = precompute(task, keep=["w"], **SETTINGS)
    assert list(sketch.series) == ["w"] and sketch.series["w"].shape == (10, 3, 3)
    with pytest.raises(ValueError, match="cannot keep"):
        precompute(task, keep=["moments"], **SETTINGS)


def test_fingerprint_ignores_source_locations_but_not_the_program(task):
    """Editing the file that traced a program (its line numbers move) keeps its sketches valid;
    changing an op does not."""
    import dataclasses

    from circuitsketch.ir import Op

    step = task.program.step
    moved = dataclasses.replace(step, eqns=tuple(dataclasses.replace(e, loc="elsewhere.py:1")
                                                 for e in step.eqns))
    relocated = dataclasses.replace(task, program=dataclasses.replace(task.program, step=moved))
    assert relocated.fingerprint() == task.fingerprint()
    node = next(i for i, e in enumerate(step.eqns) if e.op is Op.ADD)
    changed = list(step.eqns)
    changed[node] = dataclasses.replace(changed[node], op=Op.SUB)
    other = dataclasses.replace(task, program=dataclasses.replace(
        task.program, step=dataclasses.replace(step, eqns=tuple(changed))))
    assert other.fingerprint() != task.fingerprint()
