"""The one run plumbing: atomic saves, safe checkpoint loads, interrupts, resume checks and folder locks.

Every command that keeps a run folder (``mlpot train``, ``mlpot stable``, ``mlpot pips train``, ``mlpot md``)
goes through these functions:

* :func:`atomic_save` / :func:`atomic_write_text` — a crash mid-write never leaves a half-written file
  under the final name, and never destroys the previous one;
* :func:`read_checkpoint` — loads a ``checkpoint.pt`` with ``torch.load(weights_only=True)``: a
  checkpoint holds only tensors and plain Python types, so a hostile file cannot run code;
* :func:`rng_state` / :func:`restore_rng_state` — the global random-number generators as plain data;
* :class:`StopRequests` — Ctrl-C and SIGTERM only *ask* the loop to stop; the loop stops at a point where
  its checkpoint is consistent (never between an optimiser step and the bookkeeping of that step);
* :class:`RunLock` — one process per run folder;
* :func:`setting_differences` — the list of settings a resume would change, for the error message.
"""

from __future__ import annotations

import csv
import hashlib
import os
import pickle
import random
import re
import signal
import socket
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Union

import numpy as np
import torch

PathLike = Union[str, Path]


class UnsafeCheckpointError(ValueError):
    """A checkpoint holds Python objects beyond tensors and plain types; it was not unpickled."""


class RunLockedError(RuntimeError):
    """Another process holds the lock on a run folder."""


# ------------------------------------------------------------------------------------------- saves
def _fsync_replace(temporary: Path, path: Path) -> None:
    with open(temporary, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def atomic_save(state: Dict[str, Any], path: PathLike) -> None:
    """``torch.save(state, path)`` through a temporary file and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".partial")
    torch.save(state, temporary)
    _fsync_replace(temporary, path)


def atomic_write_text(text: str, path: PathLike) -> None:
    """Write ``text`` (UTF-8) to ``path`` through a temporary file and an atomic rename."""
    atomic_write_bytes(text.encode(), path)


def atomic_write_bytes(data: bytes, path: PathLike) -> None:
    """Write ``data`` to ``path`` through a temporary file and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".partial")
    temporary.write_bytes(data)
    _fsync_replace(temporary, path)


# ------------------------------------------------------------------------------------------- loads
def _legacy_numpy_globals() -> List[Any]:
    """What checkpoints of mlpot before the safe format needed besides plain types: numpy arrays (the
    numpy RNG state). Rebuilding an array runs no user code, so these may be allowed."""
    import numpy.core.multiarray as multiarray

    allowed: List[Any] = [multiarray._reconstruct, np.ndarray, np.dtype]
    allowed += [type(np.dtype(name)) for name in ("uint32", "float64", "int64", "float32", "int32", "bool")]
    return allowed


def safe_torch_load(path: PathLike) -> Any:
    """``torch.load`` that runs no code from the file: tensors, plain types and numpy arrays only.

    Raises:
        UnsafeCheckpointError: the file needs other Python objects to unpickle (it was not loaded).
        ValueError: it is not a readable torch file (truncated, empty, foreign).
    """
    path = Path(path)
    try:
        with torch.serialization.safe_globals(_legacy_numpy_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        text = str(error)
        corrupt = "Unsupported operand" in text  # bytes that are no pickle at all, not a refused object
        if not corrupt and ("Weights only load failed" in text or "Unsupported global" in text or "GLOBAL" in text):
            named = re.search(r"GLOBAL ([\w.]+)", text)  # torch's text goes on to suggest allowing it: not shown
            culprit = f"it would call {named.group(1)}" if named else "a Python object"
            raise UnsafeCheckpointError(
                f"{path} holds Python objects besides tensors and plain data ({culprit[:160]}); mlpot does not "
                "unpickle such files, since unpickling can run code. It was not loaded"
            ) from None
        lines = text.splitlines()
        reason = next((line.strip() for line in lines if "Unsupported operand" in line), lines[0])
        raise ValueError(f"{path} is not a readable checkpoint (UnpicklingError: {reason[:200]})") from None
    except (RuntimeError, EOFError, OSError, ValueError, AttributeError, IndexError) as error:
        first = str(error).splitlines()[0][:200] if str(error) else ""
        raise ValueError(f"{path} is not a readable checkpoint ({type(error).__name__}: {first})") from None


# what a checkpoint written before checkpoints named their kind holds that no other kind does
_LEGACY_KIND_KEYS = {"statistics": "training", "parent_sha256": "StABlE", "generator": "PIPS"}


def checkpoint_kind(state: Dict[str, Any]) -> Optional[str]:
    """The run kind ("training", "StABlE", "PIPS", ...) a checkpoint dict was written by: its ``kind``
    entry, or for older checkpoints without one, the kind its keys give away (None if they do not)."""
    if "kind" in state:
        return state["kind"]
    return next((kind for key, kind in _LEGACY_KIND_KEYS.items() if key in state), None)


def read_checkpoint(path: PathLike, version: int, kind: str, purpose: str = "--resume") -> Dict[str, Any]:
    """The checkpoint dict at ``path``, written by a ``kind`` run (e.g. "StABlE") of format ``version``.
    ``purpose`` starts every error message (the option or command that reads the checkpoint).

    Raises:
        FileNotFoundError: no file at ``path``.
        UnsafeCheckpointError: the file would need code to unpickle (never loaded).
        ValueError: the file is not a readable torch file, or not a ``kind`` checkpoint of ``version``.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{purpose}: no checkpoint at {path}")
    if path.stat().st_size == 0:
        raise ValueError(f"{purpose}: {path} is empty (a run killed before its first checkpoint?)")
    try:
        state = safe_torch_load(path)
    except UnsafeCheckpointError as error:
        raise UnsafeCheckpointError(f"{purpose}: {error}") from None
    except ValueError as error:
        raise ValueError(f"{purpose}: {error}") from None
    found_kind = checkpoint_kind(state) if isinstance(state, dict) else None
    if found_kind is not None and found_kind != kind:
        raise ValueError(f"{purpose}: {path} is a {found_kind} checkpoint, not a {kind} one (a run folder of "
                         "another command)")
    if not isinstance(state, dict) or state.get("checkpoint_version") != version:
        found = state.get("checkpoint_version") if isinstance(state, dict) else None
        if isinstance(found, int) and found > version:
            raise ValueError(f"{purpose}: {path} was written by a newer mlpot (checkpoint version {found}; this "
                             f"mlpot reads version {version}): upgrade mlpot to continue it")
        raise ValueError(f"{purpose}: {path} is not a {kind} checkpoint of version {version} (found version {found})")
    return state


# --------------------------------------------------------------------------------------- RNG state
def rng_state() -> Dict[str, Any]:
    """The global torch, numpy and Python generators' states as tensors and plain types."""
    numpy_state = np.random.get_state(legacy=False)
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "numpy": {
            "bit_generator": numpy_state["bit_generator"],
            "key": torch.from_numpy(np.asarray(numpy_state["state"]["key"], dtype=np.int64)),
            "pos": int(numpy_state["state"]["pos"]),
            "has_gauss": int(numpy_state["has_gauss"]),
            "gauss": float(numpy_state["gauss"]),
        },
        "python": _python_state_as_lists(random.getstate()),
    }


def _python_state_as_lists(state: tuple) -> list:
    version, internal, gauss_next = state
    return [version, list(internal), gauss_next]


def restore_rng_state(state: Dict[str, Any]) -> None:
    """Set the global generators from :func:`rng_state` (also accepts the pre-safe-format layout)."""
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    numpy_state = state["numpy"]
    if isinstance(numpy_state, dict):
        key = numpy_state["key"]
        key = key.numpy() if isinstance(key, torch.Tensor) else np.asarray(key)
        np.random.set_state({
            "bit_generator": numpy_state["bit_generator"],
            "state": {"key": key.astype(np.uint32), "pos": int(numpy_state["pos"])},
            "has_gauss": int(numpy_state["has_gauss"]), "gauss": float(numpy_state["gauss"]),
        })
    else:  # legacy tuple ("MT19937", ndarray, pos, has_gauss, gauss)
        np.random.set_state(tuple(numpy_state))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))


# -------------------------------------------------------------------------------------- interrupts
class StopRequests:
    """Ctrl-C and SIGTERM set :attr:`requested` instead of interrupting whatever runs.

    A training loop checks ``stops.requested`` at points where its state is consistent, saves its
    checkpoint and stops. A second Ctrl-C raises ``KeyboardInterrupt`` at once (the checkpoint of the last
    consistent point is then still on disk). Use as a context manager; outside the main thread it does
    nothing (signals cannot be caught there).
    """

    def __init__(self) -> None:
        self.requested: Optional[str] = None
        self._previous: Dict[int, Any] = {}

    def _handler(self, signum, frame) -> None:
        if self.requested is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name

    def request(self, reason: str = "requested") -> None:
        """Ask for a stop from code (tests use this to stop at an exact point)."""
        self.requested = reason

    def __enter__(self) -> StopRequests:
        for signum in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[signum] = signal.signal(signum, self._handler)
            except ValueError:  # not the main thread
                pass
        return self

    def __exit__(self, *exc_info) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous.clear()


# ------------------------------------------------------------------------------------------- locks
class RunLock:
    """An exclusive lock on a run folder (``.mlpot.lock`` inside it), held while a process writes there.

    ``name`` picks another lock file in the folder, for outputs that share a folder but not files (``mlpot md``
    locks ``.traj.dcd.lock`` beside ``traj.dcd``, so two trajectories in one folder do not block each other).
    Uses ``fcntl.flock``, so the lock goes with the process: a killed run leaves no stale lock.

    Raises:
        RunLockedError: another process holds it; the message names its pid and host.
    """

    FILE_NAME = ".mlpot.lock"

    def __init__(self, folder: PathLike, name: str = FILE_NAME):
        self.folder = Path(folder)
        self.name = name
        self._handle = None

    def acquire(self) -> RunLock:
        import fcntl

        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / self.name
        handle = open(path, "a+")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            if self.name == self.FILE_NAME:
                raise RunLockedError(
                    f"{self.folder} is in use by {holder}: two runs must not write into one folder "
                    "(wait for it to finish, or choose another output folder)"
                ) from None
            raise RunLockedError(f"{path} is in use by {holder}: another run is writing the same output "
                                 "(wait for it to finish, or choose another output)") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}")
        handle.flush()
        self._handle = handle
        return self

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()  # closing drops the flock
            self._handle = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc_info) -> None:
        self.release()


# ---------------------------------------------------------------------------------- resume checks
def setting_differences(saved: Dict[str, Any], now: Dict[str, Any], ignore: Iterable[str] = ()) -> List[str]:
    """``["key: was A, now B", ...]`` for every key (``section.key`` for nested dicts) whose value differs
    between ``saved`` and ``now``, except those in ``ignore`` (bare or dotted names)."""
    ignored = set(ignore)
    differences: List[str] = []

    def walk(a: Any, b: Any, prefix: str) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) | set(b), key=str):
                name = f"{prefix}{key}"
                if key in ignored or name in ignored:
                    continue
                walk(a.get(key), b.get(key), name + ".")
        elif a != b:
            differences.append(f"{prefix.rstrip('.')}: was {a!r}, now {b!r}")

    walk(saved, now, "")
    return differences


def refuse_changed_settings(saved: Dict[str, Any], now: Dict[str, Any], what: str, ignore: Iterable[str] = ()) -> None:
    """Raise ``ValueError`` listing every setting that differs, when a resume would not continue ``what``."""
    differences = setting_differences(saved, now, ignore)
    if differences:
        raise ValueError(f"--resume: {what} was made with other settings, so it cannot be continued: "
                         + "; ".join(differences))


def file_digest(path: PathLike) -> str:
    """The sha256 of a file's bytes, hex: how run records and provenance name the files they used."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_csv(rows: Sequence[Dict[str, float]], path: Path) -> None:
    """One row per epoch; columns are the union of the rows' keys in first-seen order."""
    columns: List[str] = []
    for row in rows:
        columns.extend(key for key in row if key not in columns)
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
