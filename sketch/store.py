"""The sketch and its on-disk format: a directory of ``.npz`` arrays described by ``meta.json``.

A :class:`Sketch` holds what DESIGN §4 keeps after precomputation: the real trained model
theta(0), the series-valued trained models theta_j(z) (k+1 complex coefficients per parameter,
one model per direction psi_j), and enough to regenerate psi_j (``seed``; see directions.py).

Layout (format version 1)::

    SKETCH/
      meta.json                  written last; a directory without it is not a sketch
      theta0.npz                 float64, one array per stored state name, its declared shape
      shard-000000-000032.npz    directions j in [0, 32): one complex128 array per state name,
      shard-000032-000064.npz    shape [count, k+1, *state_shape]; coefficient 0 is theta(0)
      ...

``meta.json``::

    format          "circuitsketch-sketch"        format_version  1
    fingerprint     TrainingTask.fingerprint() of the program the sketch was made for
    n, order, directions, seed                    (k = order, s = directions)
    direction_rule  how psi_j is regenerated from (seed, j)
    dtype           "complex128"
    states          [[name, shape], ...]          the stored state (e.g. microgpt's parameters)
    theta0          {"file", "sha256"}
    shards          [{"file", "first", "count", "sha256"}, ...] covering j = 0 .. s-1 in order
    example_labels  one label per training example, or null (for predicates over examples)
    info            free-form JSON (e.g. how to rebuild the task; used by the CLI)

Arrays are written with ``np.savez`` and read with ``allow_pickle=False``; every file's sha256
is checked on load, so a corrupt or truncated file is a clear :class:`SketchFormatError`.

Atomicity: a sketch directory only ever appears by renaming a complete temporary directory
(``meta.json`` written last) to its final name. Precomputation works in ``SKETCH.partial``,
where each finished batch of directions is a shard written to a temporary file and moved into
place with ``os.replace``, followed by its sha256 in ``shard-....npz.sha256``; ``partial.json``
there records which run the shards belong to, so an interrupted precompute resumes by skipping
them. A shard whose checksum file is missing or does not match is recomputed, never merged.
Neither ``SKETCH.partial`` nor a crashed temporary directory loads as a sketch.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .directions import directions

FORMAT = "circuitsketch-sketch"
FORMAT_VERSION = 1
DIRECTION_RULE = ("psi_j = g / |g|, g = (a + i b) / sqrt(2), (a, b) = "
                  "numpy.random.default_rng([seed, j]).standard_normal((2, n))")
META_FILE = "meta.json"
PARTIAL_FILE = "partial.json"
THETA0_FILE = "theta0.npz"


class SketchFormatError(ValueError):
    """A sketch directory is missing, incomplete, corrupt, or of an unknown format version."""


class SketchMismatchError(ValueError):
    """A sketch was made for another program, order or state than the one it is used with."""


@dataclass(frozen=True)
class Sketch:
    """Real model theta(0) plus ``s`` series-valued models, each ``[k+1, *shape]`` per state."""

    fingerprint: str
    n: int
    order: int
    seed: int
    theta0: Mapping[str, np.ndarray]
    #: state name -> complex128 [s, k+1, *shape]: coefficients of theta_j(z) = theta(z psi_j)
    series: Mapping[str, np.ndarray]
    example_labels: tuple[str, ...] | None = None
    info: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if set(self.theta0) != set(self.series) or not self.series:
            raise SketchFormatError(f"theta0 has states {sorted(self.theta0)} but the series "
                                    f"have {sorted(self.series)}; both must name the same states")
        s = next(iter(self.series.values())).shape[0]
        for name, array in self.series.items():
            expected = (s, self.order + 1) + tuple(np.shape(self.theta0[name]))
            if array.shape != expected or array.dtype != np.complex128:
                raise SketchFormatError(f"state {name!r}: series of shape {array.shape} and dtype "
                                        f"{array.dtype}, expected complex128 {expected} "
                                        "(s directions, k+1 coefficients, state shape)")
        if self.example_labels is not None and len(self.example_labels) != self.n:
            raise SketchFormatError(f"{len(self.example_labels)} example labels for n = {self.n}")

    @property
    def s(self) -> int:
        """Number of directions."""
        return next(iter(self.series.values())).shape[0]

    @property
    def state_shapes(self) -> dict[str, tuple[int, ...]]:
        return {name: tuple(np.shape(a)) for name, a in self.theta0.items()}

    def psi(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """The directions psi_j, j in [start, stop), regenerated from the seed: [count, n]."""
        return directions(self.seed, range(start, self.s if stop is None else stop), self.n)

    def header(self) -> dict[str, Any]:
        """What identifies the run that made this sketch (everything but s and the arrays)."""
        return run_header(self.fingerprint, self.n, self.order, self.seed, self.state_shapes)


def run_header(fingerprint: str, n: int, order: int, seed: int,
               state_shapes: Mapping[str, Sequence[int]]) -> dict[str, Any]:
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "fingerprint": fingerprint,
            "n": int(n), "order": int(order), "seed": int(seed),
            "states": [[name, [int(d) for d in shape]] for name, shape in state_shapes.items()]}


# ---------------------------------------------------------------- low-level atomic file writes

def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _replace_atomically(path: Path, write) -> None:
    """Write ``path`` through a temporary file in the same directory and ``os.replace`` it."""
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_arrays(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """``np.savez`` of named arrays, atomically (no pickled objects: plain numeric arrays)."""
    for name in arrays:
        if "/" in name or "\\" in name or not name:
            raise SketchFormatError(f"state name {name!r} cannot be stored (no slashes, non-empty)")
    _replace_atomically(Path(path), lambda f: np.savez(f, **arrays))


def _write_json(path: Path, obj: Any) -> None:
    _replace_atomically(Path(path), lambda f: f.write(json.dumps(obj, indent=1).encode()))


def _read_arrays(path: Path, expected_sha: str | None,
                 names: Sequence[str]) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise SketchFormatError(f"sketch file {path} is missing")
    if expected_sha is not None:
        actual = _sha256(path)
        if actual != expected_sha:
            raise SketchFormatError(f"sketch file {path} is corrupt or truncated: sha256 {actual} "
                                    f"does not match {expected_sha} recorded in {META_FILE}")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise SketchFormatError(f"sketch file {path} cannot be read: {exc}") from None
    if sorted(arrays) != sorted(names):
        raise SketchFormatError(f"sketch file {path} holds arrays {sorted(arrays)}, expected "
                                f"{sorted(names)}")
    return arrays


def batch_ranges(total: int, size: int) -> list[tuple[int, int]]:
    """(first, count) of consecutive batches of ``size`` covering 0..total-1."""
    return [(first, min(size, total - first)) for first in range(0, total, size)]


def shard_name(first: int, count: int) -> str:
    return f"shard-{first:06d}-{first + count:06d}.npz"


# ---------------------------------------------------------------- writing whole sketches

def _finalize(workdir: Path, path: Path, sketch: Sketch, shards: Sequence[tuple[int, int]]) -> Path:
    """Write theta0 and meta.json (last) into ``workdir`` and rename it to ``path``."""
    write_arrays(workdir / THETA0_FILE,
                 {name: np.asarray(a, np.float64) for name, a in sketch.theta0.items()})
    meta = sketch.header()
    meta.update({
        "directions": sketch.s, "direction_rule": DIRECTION_RULE, "dtype": "complex128",
        "theta0": {"file": THETA0_FILE, "sha256": _sha256(workdir / THETA0_FILE)},
        "shards": [{"file": shard_name(first, count), "first": first, "count": count,
                    "sha256": _sha256(workdir / shard_name(first, count))}
                   for first, count in shards],
        "example_labels": None if sketch.example_labels is None else list(sketch.example_labels),
        "info": dict(sketch.info),
    })
    _write_json(workdir / META_FILE, meta)
    if path.exists():
        raise FileExistsError(f"{path} already exists; remove it or choose another path")
    os.rename(workdir, path)
    return path


def save_sketch(sketch: Sketch, path: str | os.PathLike, *, shard_size: int = 64) -> Path:
    """Write ``sketch`` to the directory ``path`` (which must not exist), atomically."""
    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path} already exists; remove it or choose another path")
    workdir = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex}")
    workdir.mkdir(parents=True)
    try:
        shards = batch_ranges(sketch.s, shard_size)
        for first, count in shards:
            write_arrays(workdir / shard_name(first, count),
                         {name: a[first: first + count] for name, a in sketch.series.items()})
        return _finalize(workdir, path, sketch, shards)
    finally:
        if workdir.exists():
            shutil.rmtree(workdir)


class PartialSketch:
    """The resumable work directory ``PATH.partial`` of a precomputation in progress.

    ``header`` (see :func:`run_header`) identifies the run; shards of another run are never
    reused: resuming with a different header is an error naming both.
    """

    def __init__(self, path: str | os.PathLike, header: Mapping[str, Any], *, resume: bool = True):
        self.path = Path(path)
        self.workdir = self.path.with_name(self.path.name + ".partial")
        self.header = dict(header)
        if self.workdir.exists() and (not resume or not (self.workdir / PARTIAL_FILE).exists()):
            shutil.rmtree(self.workdir)  # partial.json is written before any shard
        if self.workdir.exists():
            found = json.loads((self.workdir / PARTIAL_FILE).read_text())
            if found != self.header:
                raise SketchMismatchError(
                    f"{self.workdir} holds an unfinished precompute of another run "
                    f"({_header_difference(found, self.header)}); remove it or pass resume=False")
        else:
            self.workdir.mkdir(parents=True)
            _write_json(self.workdir / PARTIAL_FILE, self.header)
        self.names = [name for name, _ in self.header["states"]]

    def shard(self, first: int, count: int) -> dict[str, np.ndarray] | None:
        """The arrays of a finished shard, or None if it is absent, unreadable or fails its
        checksum (the caller recomputes it)."""
        path = self.workdir / shard_name(first, count)
        if not self._intact(path):
            return None
        try:
            arrays = _read_arrays(path, None, self.names)
        except SketchFormatError:
            return None
        k1 = self.header["order"] + 1
        shapes = dict((name, tuple(shape)) for name, shape in self.header["states"])
        if any(a.shape != (count, k1) + shapes[name] for name, a in arrays.items()):
            return None
        return arrays

    def write_shard(self, first: int, count: int, arrays: Mapping[str, np.ndarray]) -> None:
        """Write the shard, then its sha256 (a shard without a matching checksum is not done)."""
        path = self.workdir / shard_name(first, count)
        write_arrays(path, arrays)
        _replace_atomically(_checksum_path(path), lambda f: f.write(_sha256(path).encode()))

    @staticmethod
    def _intact(path: Path) -> bool:
        checksum = _checksum_path(path)
        return (path.is_file() and checksum.is_file()
                and checksum.read_text().strip() == _sha256(path))

    def finish(self, sketch: Sketch, shards: Sequence[tuple[int, int]]) -> Path:
        """Check every shard against its checksum, drop unused files, write theta0 and
        meta.json, and rename to the final path."""
        for first, count in shards:
            if not self._intact(self.workdir / shard_name(first, count)):
                raise SketchFormatError(
                    f"{self.workdir / shard_name(first, count)} is missing or changed on disk "
                    "after it was written (sha256 mismatch); run precompute again to recompute it")
        keep = {shard_name(first, count) for first, count in shards} | {PARTIAL_FILE}
        for entry in self.workdir.iterdir():
            if entry.name not in keep:
                entry.unlink()
        (self.workdir / PARTIAL_FILE).unlink()
        return _finalize(self.workdir, self.path, sketch, shards)


def _checksum_path(shard: Path) -> Path:
    return shard.with_name(shard.name + ".sha256")


def _header_difference(found: Mapping[str, Any], wanted: Mapping[str, Any]) -> str:
    keys = [k for k in sorted(set(found) | set(wanted)) if found.get(k) != wanted.get(k)]
    return "; ".join(f"{k}: {found.get(k)!r} there vs {wanted.get(k)!r} now" for k in keys)


# ---------------------------------------------------------------- loading

def load_sketch(path: str | os.PathLike, *, task=None) -> Sketch:
    """Read a sketch, checking format version and every checksum; with ``task``, also that the
    sketch was made for ``task``'s program (fingerprint)."""
    path = Path(path)
    meta_path = path / META_FILE
    if not meta_path.is_file():
        hint = (f"; {path}.partial holds an unfinished precompute: run precompute again to resume"
                if path.with_name(path.name + ".partial").exists() else "")
        raise SketchFormatError(f"{path} is not a sketch: it has no {META_FILE}{hint}")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as exc:
        raise SketchFormatError(f"{meta_path} is corrupt: {exc}") from None
    if meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
        raise SketchFormatError(f"{path}: format {meta.get('format')!r} version "
                                f"{meta.get('format_version')!r}; this circuitsketch reads "
                                f"{FORMAT!r} version {FORMAT_VERSION}")
    names = [name for name, _ in meta["states"]]
    theta0 = _read_arrays(path / meta["theta0"]["file"], meta["theta0"]["sha256"], names)
    parts: dict[str, list[np.ndarray]] = {name: [] for name in names}
    expected_first = 0
    for shard in meta["shards"]:
        if shard["first"] != expected_first:
            raise SketchFormatError(f"{path}: shards do not cover the directions contiguously "
                                    f"(expected one starting at {expected_first}, got "
                                    f"{shard['first']})")
        arrays = _read_arrays(path / shard["file"], shard["sha256"], names)
        for name in names:
            parts[name].append(arrays[name])
        expected_first += shard["count"]
    if expected_first != meta["directions"]:
        raise SketchFormatError(f"{path}: shards hold {expected_first} directions, meta says "
                                f"{meta['directions']}")
    labels = meta.get("example_labels")
    sketch = Sketch(fingerprint=meta["fingerprint"], n=meta["n"], order=meta["order"],
                    seed=meta["seed"], theta0=theta0,
                    series={name: np.concatenate(parts[name]) for name in names},
                    example_labels=tuple(labels) if labels is not None else None,
                    info=meta.get("info") or {})
    if task is not None:
        check_task(sketch, task, where=str(path))
    return sketch


def check_task(sketch: Sketch, task, *, where: str = "the sketch") -> None:
    """Refuse a sketch made for another program than ``task``'s (or another n)."""
    fingerprint = task.fingerprint()
    if sketch.fingerprint != fingerprint:
        raise SketchMismatchError(f"{where} was made for program fingerprint {sketch.fingerprint}, "
                                  f"but this task's program has fingerprint {fingerprint}: "
                                  "recompute the sketch for this program")
    if sketch.n != task.n_examples:
        raise SketchMismatchError(f"{where} has n = {sketch.n} examples, the task "
                                  f"{task.n_examples}")


__all__ = ["FORMAT", "FORMAT_VERSION", "PartialSketch", "Sketch", "SketchFormatError",
           "SketchMismatchError", "batch_ranges", "check_task", "load_sketch", "run_header",
           "save_sketch", "shard_name", "write_arrays"]
