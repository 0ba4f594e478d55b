"""The sketch and its on-disk format: a directory of ``.npz`` arrays described by ``meta.json``.

A :class:`Sketch` holds what DESIGN §4 keeps after precomputation: the real trained model
theta(0), the series-valued trained models theta_j(z) (k+1 complex coefficients per parameter,
one model per direction psi_j), and enough to regenerate psi_j (``seed``; see directions.py).

Layout (format version 2)::

    SKETCH/
      meta.json                  written last; a directory without it is not a sketch
      theta0.npz                 float64, one array per stored state name, its declared shape
      shard-000000-000032.npz    directions j in [0, 32): one complex128 array per state name,
      shard-000032-000064.npz    shape [count, k+1, *state_shape]; coefficient 0 is theta(0)
      ...

``meta.json``::

    format          "circuitsketch-sketch"        format_version  2 (1 still loads, with a warning)
    fingerprint     TrainingTask.fingerprint() of the program the sketch was made for
    n, order, directions, seed                    (k = order, s = directions)
    direction_rule  how psi_j is regenerated from (seed, j)
    dtype           "complex128"
    states          [[name, shape], ...]          the stored state (e.g. microgpt's parameters)
    theta0          {"file", "sha256"}
    shards          [{"file", "first", "count", "sha256"}, ...] covering j = 0 .. s-1 in order
    example_labels  one label per training example, or null (for predicates over examples)
    info            free-form JSON (e.g. how to rebuild the task; used by the CLI)
    checksums       {field: sha256 of its canonical JSON} for every other field (version 2)

Integrity: arrays are written with ``np.savez`` and read with ``allow_pickle=False``; every
file's sha256 is checked on load, and so is every field of ``meta.json`` against ``checksums``
(canonical JSON: sorted keys, no spaces), so a corrupt or truncated file, a hand-edited field
(seed, labels, shard order, direction count, ...) or a dropped or renamed field is a
:class:`SketchFormatError` naming the file or the field. ``meta.json`` must also have the
documented schema (types and ranges), and every file it names is the one name the layout
gives it (``theta0.npz``, ``shard-FIRST-END.npz``) inside the sketch directory. Format
version 1 (no ``checksums``) still loads, with a :class:`SketchIntegrityWarning`.

Atomicity: a sketch directory only ever appears by renaming a complete temporary directory
(``meta.json`` written last) to its final name. Precomputation works in ``SKETCH.partial``,
where each finished batch of directions is a shard written to a temporary file and moved into
place with ``os.replace``, followed by its sha256 in ``shard-....npz.sha256``; ``partial.json``
there records which run the shards belong to, so an interrupted precompute resumes by skipping
them. A shard whose checksum file is missing or does not match is recomputed, never merged.
Neither ``SKETCH.partial`` nor a crashed temporary directory loads as a sketch. A
precompute holds ``SKETCH.lock`` (an exclusive ``flock`` that the system releases when the
process dies) from start-up to the final rename, so a second run at the same path fails at once
with :class:`SketchInUseError` naming the first run's process id.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
import shutil
import uuid
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .directions import directions

FORMAT = "circuitsketch-sketch"
FORMAT_VERSION = 2
#: versions this code reads (1: without meta checksums, loaded with a warning)
READABLE_VERSIONS = (1, 2)
DIRECTION_RULE = ("psi_j = g / |g|, g = (a + i b) / sqrt(2), (a, b) = "
                  "numpy.random.default_rng([seed, j]).standard_normal((2, n))")
META_FILE = "meta.json"
PARTIAL_FILE = "partial.json"
THETA0_FILE = "theta0.npz"
LOCK_SUFFIX = ".lock"


class SketchFormatError(ValueError):
    """A sketch directory is missing, incomplete, corrupt, or of an unknown format version."""


class SketchMismatchError(ValueError):
    """A sketch was made for another program, order or state than the one it is used with."""


class SketchInUseError(ValueError):
    """Another process is writing a sketch at this path (it holds ``PATH.lock``)."""


class SketchIntegrityWarning(UserWarning):
    """A sketch of format version 1 was loaded: its meta.json fields carry no checksums."""


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
        for name, least in (("n", 1), ("order", 0), ("seed", 0)):
            if not _is_int(getattr(self, name), least):
                raise SketchFormatError(f"sketch field {name} must be an integer >= {least}, got "
                                        f"{getattr(self, name)!r}")
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


def json_safe(obj: Any) -> Any:
    """``obj`` as plain JSON values: numpy scalars and arrays become Python numbers and lists,
    tuples lists, and a non-finite float (NaN, +-Inf; e.g. the standard error of one sample)
    becomes ``None``, since JSON has no literal for it."""
    if isinstance(obj, Mapping):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, np.generic):
        return json_safe(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def json_text(obj: Any) -> str:
    """Valid JSON for ``obj`` (see :func:`json_safe`; never a ``NaN`` or ``Infinity`` literal)."""
    return json.dumps(json_safe(obj), indent=1, allow_nan=False)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as valid JSON (:func:`json_text`) to ``path`` atomically: readers see the
    old file or the whole new one. Every JSON file circuitsketch writes goes through here."""
    text = json_text(obj).encode()
    _replace_atomically(Path(path), lambda f: f.write(text))



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
    meta = json_safe(meta)
    meta["checksums"] = {name: _field_sha256(value) for name, value in meta.items()}
    write_json(workdir / META_FILE, meta)
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


class SketchLock:
    """An exclusive lock on the sketch path ``PATH``: the file ``PATH.lock`` holding the owner's
    process id, locked with ``flock`` (released by the system if the process dies, so a crash
    never leaves a stale lock). A second holder gets :class:`SketchInUseError` at once."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.file = self.path.with_name(self.path.name + LOCK_SUFFIX)
        self._fd: int | None = None

    def acquire(self) -> "SketchLock":
        self.file.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.file, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise SketchInUseError(f"{self.path} is in use by process {owner} (another "
                                       f"precompute holds {self.file}); wait for it to finish or "
                                       "stop it, then rerun") from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.file).st_ino
            except FileNotFoundError:
                same = False
            if same:  # else the previous holder removed the file while we opened it: retry
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            self.file.unlink(missing_ok=True)  # while still locked: no one can hold the old inode
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "SketchLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


class PartialSketch:
    """The resumable work directory ``PATH.partial`` of a precomputation in progress.

    ``header`` (see :func:`run_header`) identifies the run; shards of another run are never
    reused: resuming with a different header is an error naming both. The run holds
    :class:`SketchLock` on ``PATH`` from construction to :meth:`finish` or :meth:`close`; use it
    as a context manager (``with PartialSketch(...) as work``): leaving the block by an error
    releases the lock and removes a work directory that holds no finished shard yet (nothing to
    resume), so a run that fails at start-up leaves nothing behind.
    """

    def __init__(self, path: str | os.PathLike, header: Mapping[str, Any], *, resume: bool = True):
        self.path = Path(path)
        self.workdir = self.path.with_name(self.path.name + ".partial")
        self.header = dict(header)
        self.lock = SketchLock(self.path).acquire()
        try:
            self._open(resume)
        except BaseException:
            self.lock.release()
            raise

    def _open(self, resume: bool) -> None:
        if self.path.exists():
            raise FileExistsError(f"{self.path} was finished by another run meanwhile; rerun to "
                                  "load it, or remove it")
        if self.workdir.exists() and (not resume or not (self.workdir / PARTIAL_FILE).exists()):
            shutil.rmtree(self.workdir)  # partial.json is written before any shard
        if self.workdir.exists():
            try:
                found = json.loads((self.workdir / PARTIAL_FILE).read_text())
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise SketchFormatError(f"{self.workdir / PARTIAL_FILE} is corrupt ({exc}): its "
                                        "shards cannot be matched to this run; remove "
                                        f"{self.workdir} or pass resume=False") from None
            if found != self.header:
                raise SketchMismatchError(
                    f"{self.workdir} holds an unfinished precompute of another run "
                    f"({_header_difference(found, self.header)}); remove it or pass resume=False")
        else:
            self.workdir.mkdir(parents=True)
            write_json(self.workdir / PARTIAL_FILE, self.header)
        self.names = [name for name, _ in self.header["states"]]

    def close(self, *, keep: bool = True) -> None:
        """Release the lock; without ``keep``, or when no shard is finished, remove the work
        directory too."""
        try:
            if self.workdir.exists() and (not keep or not any(self.workdir.glob("shard-*.npz"))):
                shutil.rmtree(self.workdir)
        finally:
            self.lock.release()

    def __enter__(self) -> "PartialSketch":
        return self

    def __exit__(self, kind, exc, tb) -> None:
        if kind is not None:  # on success the lock is kept until finish()
            self.close(keep=True)

    def __del__(self) -> None:
        if hasattr(self, "lock"):
            self.lock.release()

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
        try:
            return _finalize(self.workdir, self.path, sketch, shards)
        finally:
            self.lock.release()


def _checksum_path(shard: Path) -> Path:
    return shard.with_name(shard.name + ".sha256")


def _header_difference(found: Mapping[str, Any], wanted: Mapping[str, Any]) -> str:
    keys = [k for k in sorted(set(found) | set(wanted)) if found.get(k) != wanted.get(k)]
    return "; ".join(f"{k}: {found.get(k)!r} there vs {wanted.get(k)!r} now" for k in keys)


# ---------------------------------------------------------------- loading

def load_sketch(path: str | os.PathLike, *, task=None) -> Sketch:
    """Read a sketch, checking its format version, the schema and checksums of ``meta.json``
    and every file's checksum (module doc: Integrity); with ``task``, also that the sketch was
    made for ``task``'s program (fingerprint). Raises :class:`SketchFormatError` naming what is
    wrong, :class:`SketchMismatchError` for another program."""
    path = Path(path)
    meta = _read_meta(path)
    names = [name for name, _ in meta["states"]]
    theta0 = _read_arrays(path / THETA0_FILE, meta["theta0"]["sha256"], names)
    parts: dict[str, list[np.ndarray]] = {name: [] for name in names}
    for shard in meta["shards"]:
        arrays = _read_arrays(path / shard["file"], shard["sha256"], names)
        for name in names:
            parts[name].append(arrays[name])
    labels = meta["example_labels"]
    sketch = Sketch(fingerprint=meta["fingerprint"], n=meta["n"], order=meta["order"],
                    seed=meta["seed"], theta0=theta0,
                    series={name: np.concatenate(parts[name]) for name in names},
                    example_labels=tuple(labels) if labels is not None else None,
                    info=meta["info"])
    if sketch.state_shapes != {name: tuple(shape) for name, shape in meta["states"]}:
        raise SketchFormatError(f"{path}: theta0.npz holds states of shapes {sketch.state_shapes}, "
                                f"meta.json declares {meta['states']}")
    if task is not None:
        check_task(sketch, task, where=str(path))
    return sketch


def _field_sha256(value: Any) -> str:
    """sha256 of a meta field's canonical JSON (sorted keys, no spaces)."""
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _read_meta(path: Path) -> dict[str, Any]:
    """meta.json parsed, version-checked, checksum-checked and schema-checked."""
    meta_path = path / META_FILE
    if not meta_path.is_file():
        hint = (f"; {path}.partial holds an unfinished precompute: run precompute again to resume"
                if path.with_name(path.name + ".partial").exists() else "")
        raise SketchFormatError(f"{path} is not a sketch: it has no {META_FILE}{hint}")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SketchFormatError(f"{meta_path} is corrupt: {exc}") from None
    if not isinstance(meta, dict):
        raise SketchFormatError(f"{meta_path} is corrupt: it holds a JSON {type(meta).__name__}, "
                                "not an object")
    if meta.get("format") != FORMAT or meta.get("format_version") not in READABLE_VERSIONS:
        raise SketchFormatError(f"{path}: format {meta.get('format')!r} version "
                                f"{meta.get('format_version')!r}; this circuitsketch reads "
                                f"{FORMAT!r} versions {list(READABLE_VERSIONS)}")
    if meta["format_version"] >= 2:
        _check_meta_checksums(meta_path, meta)
    else:
        warnings.warn(f"{path} is a format version 1 sketch: the fields of its {META_FILE} carry no "
                      "checksums, so an edit there would go unnoticed; load and save_sketch it "
                      "again to add them", SketchIntegrityWarning, stacklevel=3)
    _check_meta_schema(meta_path, meta)
    return meta


def _check_meta_checksums(meta_path: Path, meta: dict[str, Any]) -> None:
    checksums = meta.get("checksums")
    if not isinstance(checksums, dict):
        raise SketchFormatError(f"{meta_path}: field 'checksums' is missing or not an object")
    fields = set(meta) - {"checksums"}
    for name in sorted(fields | set(checksums)):
        if name not in checksums:
            raise SketchFormatError(f"{meta_path}: field {name!r} has no checksum (added by hand?)")
        if name not in fields:
            raise SketchFormatError(f"{meta_path}: field {name!r} is missing")
        if _field_sha256(meta[name]) != checksums[name]:
            raise SketchFormatError(f"{meta_path}: field {name!r} does not match its checksum: "
                                    "the file was edited or is corrupt")


def _is_int(value: Any, least: int) -> bool:
    return (isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))
            and value >= least)


def _is_sha(value: Any) -> bool:
    return isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)


def _check_meta_schema(meta_path: Path, meta: dict[str, Any]) -> None:
    """Every field has the documented type and range, and names only the layout's files."""
    def need(ok: bool, name: str, expected: str) -> None:
        if not ok:
            raise SketchFormatError(f"{meta_path}: field {name!r} must be {expected}, got "
                                    f"{json.dumps(meta.get(name))[:200]}")

    need(isinstance(meta.get("fingerprint"), str), "fingerprint", "a string")
    for name, least in (("n", 1), ("order", 0), ("seed", 0), ("directions", 1)):
        need(_is_int(meta.get(name), least), name, f"an integer >= {least}")
    need(meta.get("direction_rule") == DIRECTION_RULE, "direction_rule",
         f"the rule this circuitsketch regenerates directions with ({DIRECTION_RULE!r})")
    need(meta.get("dtype") == "complex128", "dtype", "'complex128'")
    states = meta.get("states")
    need(isinstance(states, list) and bool(states) and all(
        isinstance(s, list) and len(s) == 2 and isinstance(s[0], str) and isinstance(s[1], list)
        and all(_is_int(d, 0) for d in s[1]) for s in states), "states",
        "a non-empty list of [name, [dims]]")
    need(len({s[0] for s in states}) == len(states), "states", "a list of distinct state names")
    theta0 = meta.get("theta0")
    need(isinstance(theta0, dict) and theta0.get("file") == THETA0_FILE
         and _is_sha(theta0.get("sha256")), "theta0", f'{{"file": "{THETA0_FILE}", "sha256": HEX}}')
    _check_shards(meta_path, meta, need)
    labels = meta.get("example_labels")
    need(labels is None or (isinstance(labels, list) and len(labels) == meta["n"]
                            and all(isinstance(x, str) for x in labels)),
         "example_labels", f"null or a list of n = {meta['n']} strings")
    need(isinstance(meta.get("info"), dict), "info", "an object")


def _check_shards(meta_path: Path, meta: dict[str, Any], need) -> None:
    """Shards cover j = 0 .. directions-1 in order, each under its layout name."""
    shards = meta.get("shards")
    need(isinstance(shards, list) and bool(shards), "shards", "a non-empty list")
    first = 0
    for shard in shards:
        need(isinstance(shard, dict) and shard.get("first") == first and _is_int(shard.get("count"), 1)
             and _is_sha(shard.get("sha256")), "shards",
             f'a list of {{"file", "first", "count", "sha256"}} covering the directions in order '
             f"(the entry after {first} directions is wrong)")
        need(shard.get("file") == shard_name(first, shard["count"]), "shards",
             f"entries whose file is the layout's name, here {shard_name(first, shard['count'])!r}")
        first += shard["count"]
    need(first == meta["directions"], "directions",
         f"the {first} directions the shards hold")


def check_task(sketch: Sketch, task, *, where: str = "the sketch") -> None:
    """Refuse a sketch made for another program than ``task``'s (or another n)."""
    fingerprint = task.fingerprint()
    if sketch.fingerprint != fingerprint:
        raise SketchMismatchError(f"{where} was made for program fingerprint {sketch.fingerprint}, "
                                  f"but this task's program has fingerprint {fingerprint}: "
                                  "recompute the sketch for this program (the fingerprint is "
                                  "of the traced program: a microgpt sketch made with the "
                                  "scalar-traced step, the default before the array IR, "
                                  "needs recomputing too)")
    if sketch.n != task.n_examples:
        raise SketchMismatchError(f"{where} has n = {sketch.n} examples, the task "
                                  f"{task.n_examples}")


__all__ = ["FORMAT", "FORMAT_VERSION", "PartialSketch", "READABLE_VERSIONS", "Sketch",
           "SketchFormatError", "SketchInUseError", "SketchIntegrityWarning", "SketchLock",
           "SketchMismatchError", "batch_ranges", "check_task", "json_safe", "json_text",
           "load_sketch", "run_header", "save_sketch", "shard_name", "write_arrays", "write_json"]
