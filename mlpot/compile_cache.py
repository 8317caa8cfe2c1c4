"""The fastest way to run a model file, with no extra step: its compiled ``.pt2`` twin, built once and cached.

    model = load_for_inference("model.pt")                 # compiles once (about a minute), then loads the cache
    model = load_for_inference("model.pt", compile="off")  # the TorchScript file as it is

A compiled file (:mod:`mlpot.compiled`) gives the TorchScript file's energies and forces 2.0-2.2x faster on one
CPU thread, from 22 to 1536 atoms (``benchmarks/results/compiled_speed.json``, ``peers_compiled.md``), but its
native code is tied to one torch version and one device, and compiling takes 50-200 s. So the ASE calculator,
StABlE's stability runs and PIPS with a learned potential call :func:`load_for_inference`, which in the default
mode ``"auto"``:

1. loads the compiled twin from the cache if one exists for this model, this torch and this device;
2. otherwise compiles it now, once, saying so on stderr, and caches it (all later processes load it in
   a second);
3. if compiling fails (no C++ compiler, a model torch.export cannot trace), warns once, in one line naming the
   reason (:class:`CompileFallbackWarning`), and runs the TorchScript file: the results are the same, only slower.

``compile="on"`` makes a failure an error; ``"off"`` never compiles. The environment variable ``MLPOT_COMPILE``
(``auto``, ``on``, ``off``) sets the default for a whole job (the test suite runs with ``off``); an explicit
argument wins. A ``.pt2`` file is loaded as it is, whatever the mode.

**The cache** is ``$MLPOT_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/mlpot/compiled`` (``~/.cache/mlpot/compiled``).
An entry is named by the source file's seal (the sha256 :mod:`mlpot.deploy` writes into every model file;
the file's own sha256 for an unsealed one), the torch version and the device, so an edited or retrained model
never meets a stale twin. An entry is loaded only after :func:`mlpot.compiled.load_compiled` has checked its seal,
torch version and device, and its recorded source equals this model's parameters (``content_hash``); a damaged or
stale entry is compiled again. Two processes that need the same entry at once compile it once: the second waits
on a lock file. Delete the folder to clear the cache.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import sys
import warnings
from pathlib import Path
from typing import Optional, Union

import torch

from mlpot.deploy import DeployedModel, ModelFileError, load_model, read_metadata

COMPILE_MODES = ("auto", "on", "off")
COMPILE_ENV = "MLPOT_COMPILE"
CACHE_ENV = "MLPOT_CACHE_DIR"


class CompileFallbackWarning(UserWarning):
    """``compile="auto"`` could not compile a model file and runs its TorchScript instead (same results, slower)."""


def compile_mode(compile: Optional[str] = None) -> str:
    """``compile`` if given, else ``$MLPOT_COMPILE``, else ``"auto"``; checked (ValueError in one line)."""
    mode = compile if compile is not None else os.environ.get(COMPILE_ENV, "auto")
    mode = str(mode).strip().lower()
    if mode not in COMPILE_MODES:
        source = "compile" if compile is not None else f"${COMPILE_ENV}"
        raise ValueError(f"{source}={mode!r} is not a compile mode; use one of {', '.join(COMPILE_MODES)}")
    return mode


def cache_dir() -> Path:
    """Where compiled twins are kept (module docstring)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mlpot" / "compiled"


def _source_key(path: Path, metadata: dict) -> str:
    seal = metadata.get("seal")
    if isinstance(seal, str) and re.fullmatch(r"[0-9a-f]{64}", seal):
        return seal
    return hashlib.sha256(path.read_bytes()).hexdigest()


def cached_compiled_path(model_file: Union[str, Path], device: Union[str, torch.device] = "cpu") -> Path:
    """The cache entry of ``model_file``'s compiled twin for ``device`` and this torch (it may not exist yet)."""
    path = Path(model_file)
    device = torch.device(device)
    key = _source_key(path, read_metadata(path))
    torch_version = re.sub(r"[^0-9A-Za-z.]+", "_", torch.__version__)
    stem = re.sub(r"[^0-9A-Za-z_-]+", "_", path.stem)[:40]
    return cache_dir() / f"{stem}-{key[:20]}-torch{torch_version}-{device.type}.pt2"


def _load_entry(entry: Path, device: torch.device, content_hash: str):
    """The cached twin, or None when it is missing, damaged, stale or of another model (then compiled again)."""
    from mlpot.compiled import load_compiled

    if not entry.is_file():
        return None
    try:
        compiled = load_compiled(entry, device=device)
    except ModelFileError:
        return None
    if compiled.metadata["compiled"].get("source", {}).get("content_hash") != content_hash:
        return None
    return compiled


def compiled_twin(model_file: Union[str, Path], device: Union[str, torch.device] = "cpu"):
    """The compiled twin of the TorchScript ``model_file`` for ``device``: from the cache, else compiled now and
    cached. Raises what :func:`mlpot.compiled.compile_model_file` raises when compiling fails."""
    from mlpot.compiled import compile_model_file

    path = Path(model_file)
    device = torch.device(device)
    content_hash = read_metadata(path)["content_hash"]
    entry = cached_compiled_path(path, device)
    compiled = _load_entry(entry, device, content_hash)
    if compiled is not None:
        return compiled
    entry.parent.mkdir(parents=True, exist_ok=True)
    with open(entry.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process compiling the same entry finishes first
        compiled = _load_entry(entry, device, content_hash)
        if compiled is not None:
            return compiled
        print(f"mlpot: compiling {path.name} for {device.type}, once (about a minute; then cached in {entry.parent}; "
              f"{COMPILE_ENV}=off skips this)", file=sys.stderr, flush=True)
        building = entry.with_name(f"{entry.stem}.{os.getpid()}.pt2")
        try:
            compile_model_file(path, building, device=device)
            building.replace(entry)
        finally:
            building.unlink(missing_ok=True)
    compiled = _load_entry(entry, device, content_hash)
    if compiled is None:
        raise ModelFileError(f"the compiled twin of {path} in {entry} could not be loaded after compiling it")
    return compiled


def load_for_inference(model_file: Union[str, Path], device: Union[str, torch.device] = "cpu",
                       compile: Optional[str] = None) -> DeployedModel:
    """The fastest loaded form of ``model_file`` for ``device`` (module docstring): a ``.pt2`` file as it is; a
    TorchScript file's compiled twin (``compile`` ``"auto"``/``"on"``) or the TorchScript file (``"off"``, or
    ``"auto"`` when compiling fails, with a :class:`CompileFallbackWarning`)."""
    from mlpot.compiled import is_compiled_file, load_compiled

    mode = compile_mode(compile)
    path = Path(model_file)
    if is_compiled_file(path):
        return load_compiled(path, device=device)
    deployed = load_model(path, device=device)  # checks the file (seal, versions) before anything is compiled
    if mode == "off":
        return deployed
    try:
        return compiled_twin(path, device)
    except (RuntimeError, ModelFileError, OSError) as error:
        reason = next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)
        if mode == "on":
            raise ModelFileError(f"{path} could not be compiled ({reason[:300]}); run it with compile='off' or "
                                 f"{COMPILE_ENV}=off") from None
        warnings.warn(f"mlpot: {path.name} could not be compiled ({reason[:300]}); running its TorchScript, which "
                      f"gives the same results more slowly ({COMPILE_ENV}=off skips trying)",
                      CompileFallbackWarning, stacklevel=2)
        return deployed
