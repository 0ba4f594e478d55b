"""A sketch on disk is either exactly what was written or refused (issue 15): meta.json fields
under checksums, a documented schema, files confined to the sketch directory; one precompute
per sketch path at a time; a failed start leaves nothing behind; an interrupted CLI run says
how to resume. Each test names the issue item it covers; the property test mutates sketch
directories at random and checks each is refused or predicts bit-identically."""

from __future__ import annotations

import importlib
import json
import os
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from circuitsketch import cli
from circuitsketch.sketch import (SketchFormatError, SketchMismatchError, load_sketch, precompute,
                                  predict, save_sketch)
from circuitsketch.sketch.store import (PartialSketch, SketchInUseError, SketchIntegrityWarning,
                                        SketchLock, run_header)
from test_sketch_tasks import point_loss_measurement, regression_task

store = importlib.import_module("circuitsketch.sketch.store")
precompute_module = importlib.import_module("circuitsketch.sketch.precompute")
SETTINGS = dict(directions=6, order=2, seed=0, batch_size=2, progress=False)


@pytest.fixture(scope="module")
def task():
    return regression_task(n_steps=6)


@pytest.fixture(scope="module")
def sketch(task):
    return precompute(task, **SETTINGS)


@pytest.fixture
def saved(sketch, tmp_path):
    path = tmp_path / "s.sketch"
    save_sketch(sketch, path, shard_size=2)
    return path


def _meta(path):
    return json.loads((path / "meta.json").read_text())


def _write_meta(path, meta, *, rechecksum: bool = False):
    """Write ``meta`` back; ``rechecksum`` recomputes the checksums (a writer's bug, not bit
    rot), so the schema check is what must catch the problem."""
    if rechecksum:
        meta["checksums"] = {k: store._field_sha256(v) for k, v in meta.items() if k != "checksums"}
    (path / "meta.json").write_text(json.dumps(meta))


def _estimate(sketch):
    return predict(sketch, point_loss_measurement(), lambda label: "1" in label).estimate


# ---------------------------------------------------------------- item 1: meta under checksums

def test_edited_meta_fields_are_refused_naming_the_field(task, saved):
    original = _meta(saved)

    def edited(change):
        meta = json.loads(json.dumps(original))
        change(meta)
        _write_meta(saved, meta)
        with pytest.raises(SketchFormatError) as error:
            load_sketch(saved, task=task)
        return str(error.value)

    assert "field 'seed'" in edited(lambda m: m.update(seed=1))
    assert "field 'example_labels'" in edited(lambda m: m["example_labels"].__setitem__(3, "ex13"))
    swapped = edited(lambda m: m["shards"].__setitem__(slice(0, 2), m["shards"][1::-1]))
    assert "field 'shards'" in swapped

    def drop_last(m):
        m["shards"].pop()
        m["directions"] -= 2
    assert "field 'directions'" in edited(drop_last)
    assert "field 'order' is missing" in edited(lambda m: m.pop("order"))
    assert "field 'note' has no checksum" in edited(lambda m: m.update(note="hi"))
    _write_meta(saved, original)
    assert _estimate(load_sketch(saved, task=task)) == _estimate(load_sketch(saved))


def test_format_version_1_loads_with_a_warning(sketch, saved):
    meta = _meta(saved)
    meta.pop("checksums")
    meta["format_version"] = 1
    _write_meta(saved, meta)
    with pytest.warns(SketchIntegrityWarning, match="version 1"):
        old = load_sketch(saved)
    assert _estimate(old) == _estimate(sketch)


# ---------------------------------------------------------------- item 10: malformed meta

@pytest.mark.parametrize("change, field", [
    (lambda m: m.update(order="3"), "order"),
    (lambda m: m.update(n=True), "n"),
    (lambda m: m.update(seed=-1), "seed"),
    (lambda m: m.update(states={"w": [3]}), "states"),
    (lambda m: m.update(shards=[]), "shards"),
    (lambda m: m["theta0"].update(file="../other/theta0.npz"), "theta0"),
    (lambda m: m["shards"][0].update(file="../s.sketch/shard-000000-000002.npz"), "shards"),
    (lambda m: m.update(info=[1]), "info"),
    (lambda m: m.update(example_labels=["a"]), "example_labels"),
    (lambda m: m.update(direction_rule="psi_j = e_j"), "direction_rule"),
])
def test_malformed_meta_is_a_format_error_naming_the_field(saved, change, field):
    meta = _meta(saved)
    change(meta)
    _write_meta(saved, meta, rechecksum=True)
    with pytest.raises(SketchFormatError, match=f"field '{field}'"):
        load_sketch(saved)


def test_meta_that_is_not_an_object_is_a_format_error(saved):
    (saved / "meta.json").write_text("[1, 2]")
    with pytest.raises(SketchFormatError, match="JSON list, not an object"):
        load_sketch(saved)
    (saved / "meta.json").write_bytes(b"\xff\xfe{")
    with pytest.raises(SketchFormatError, match="corrupt"):
        load_sketch(saved)


# ---------------------------------------------------------------- property: random mutations

@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_sketches_are_refused_or_predict_bit_identically(sketch, tmp_path_factory, data):
    path = tmp_path_factory.mktemp("m") / "s.sketch"
    save_sketch(sketch, path, shard_size=2)
    meta = _meta(path)
    kind = data.draw(st.sampled_from(["field", "shard order", "bytes", "rename"]))
    if kind == "field":
        name = data.draw(st.sampled_from(sorted(meta)))
        meta[name] = data.draw(st.one_of(st.none(), st.integers(-2, 7), st.text(max_size=3),
                                         st.just(meta[name]), st.lists(st.integers(0, 3))))
        _write_meta(path, meta)
    elif kind == "shard order":
        order = data.draw(st.permutations(range(len(meta["shards"]))))
        meta["shards"] = [meta["shards"][i] for i in order]
        _write_meta(path, meta, rechecksum=data.draw(st.booleans()))
    elif kind == "bytes":
        victim = path / data.draw(st.sampled_from(sorted(p.name for p in path.iterdir())))
        raw = bytearray(victim.read_bytes())
        at = data.draw(st.integers(0, len(raw) - 1))
        raw[at] ^= data.draw(st.integers(1, 255))
        victim.write_bytes(bytes(raw))
    else:
        files = sorted(p.name for p in path.iterdir() if p.suffix == ".npz")
        a, b = data.draw(st.permutations(files))[:2]
        os.replace(path / a, path / "tmp")
        os.replace(path / b, path / a)
        os.replace(path / "tmp", path / b)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            loaded = load_sketch(path)
    except (SketchFormatError, SketchMismatchError, SketchIntegrityWarning):
        return
    assert _estimate(loaded) == _estimate(sketch)
    for name in sketch.series:
        assert loaded.series[name].tobytes() == sketch.series[name].tobytes()


# ---------------------------------------------------------------- item 8: one run per path

def test_a_second_precompute_at_the_same_path_is_refused_while_the_first_runs(task, tmp_path):
    path = tmp_path / "s.sketch"
    with SketchLock(path):
        with pytest.raises(SketchInUseError, match=f"in use by process {os.getpid()}"):
            precompute(task, path=path, **SETTINGS)
        assert not (tmp_path / "s.sketch.partial").exists()  # the loser touched nothing
    header = run_header(task.fingerprint(), task.n_examples, 2, 0, {"w": (3,), "b": ()})
    with PartialSketch(path, header):
        with pytest.raises(SketchInUseError):
            PartialSketch(path, header)
    assert precompute(task, path=path, **SETTINGS).s == 6  # released: the next run goes ahead
    assert not (tmp_path / "s.sketch.lock").exists()


# ---------------------------------------------------------------- item 9: failed starts

def test_a_failed_start_leaves_no_partial_directory(task, tmp_path, monkeypatch):
    path = tmp_path / "s.sketch"
    with pytest.raises(ValueError, match="seed >= 0"):
        precompute(task, path=path, **{**SETTINGS, "seed": -1})

    def unavailable(*args, **kwargs):
        raise RuntimeError("no GPU")

    monkeypatch.setattr(precompute_module, "train_series", unavailable)
    with pytest.raises(RuntimeError, match="no GPU"):
        precompute(task, path=path, **SETTINGS)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_an_interrupted_cli_run_says_how_to_resume(monkeypatch, capsys):
    sketch_cli = importlib.import_module("circuitsketch.sketch.cli")

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(sketch_cli, "_run_precompute", interrupted)
    assert cli.main(["precompute", "--out", "s"]) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "rerun the same command to resume" in err
    assert "Traceback" not in err


# ---------------------------------------------------------------- item 7: atomic results

def test_a_result_file_is_replaced_whole_or_not_at_all(tmp_path, monkeypatch):
    path = tmp_path / "evaluate.json"
    store.write_json(path, {"estimate": 1.5})

    def dies_midway(f):
        f.write(b'{"estimate": ')
        raise KeyboardInterrupt("killed while writing")

    original = store._replace_atomically  # the real temporary file and rename, failing midway
    monkeypatch.setattr(store, "_replace_atomically",
                        lambda target, write: original(target, dies_midway))
    with pytest.raises(KeyboardInterrupt):
        store.write_json(path, {"estimate": 2.5})
    assert json.loads(path.read_text()) == {"estimate": 1.5}
    assert [p.name for p in tmp_path.iterdir()] == ["evaluate.json"]  # no temporary left
