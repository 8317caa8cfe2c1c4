"""The one model-file format: a TorchScript archive with JSON metadata inside.

A model file is what ``torch.jit.save`` writes (a zip archive) plus one extra entry,
``mlpot_metadata.json``, holding everything needed to use the model without guessing:

    format, format_version      what this file is and which reader it needs
    arch, hyperparameters       how the network was built (enough to rebuild and retrain it)
    species, atomic_numbers     the elements, in species-index order
    cutoff                      Å
    units                       {"length": "Angstrom", "energy": "eV"}: what the model's inputs/outputs mean
    dtype                       float32 or float64
    energy_shift, energy_scale  per-species reference energies (eV) and global scale
    versions                    mlpot, torch, e3nn, vesin-torch, python at save time
    created                     UTC time stamp
    content_hash                sha256 of the parameters and buffers, checked on load
    provenance                  training information, when the model was trained (else null)

A second extra entry, ``mlpot_seal.json``, holds the **seal** (format 2): a sha256 over the metadata (as
canonical JSON) and every other entry of the archive (the TorchScript code, constants and tensors), so that
an edit of any of them (code that scales the energies, a changed cutoff or species list) is refused on
reading. Format-1 files (before the seal) still load, with a warning that they cannot be verified;
``mlpot rebuild MODEL -o NEW`` writes a sealed copy.

The compiled module is a :class:`mlpot.models.potential.Potential`: ``forward`` gives per-atom
energies, ``compute`` energies, forces and stress. It is an inference copy
(:func:`mlpot.models.for_inference`): its weights record no gradient and never change. Plugins only ever
go through :func:`load_model`.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import platform
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch

import mlpot
from mlpot import runtime
from mlpot.models import build_model, describe, for_inference

FORMAT_NAME = "mlpot-model"
FORMAT_VERSION = 2
METADATA_ENTRY = "mlpot_metadata.json"
SEAL_ENTRY = "mlpot_seal.json"
# the metadata section of a compiled (.pt2) file, which mlpot.compiled writes and loads
COMPILED_KEY = "compiled"
# entries the seal leaves out: itself, and the random id torch writes anew at every save
_UNSEALED_SUFFIXES = ("/extra/" + SEAL_ENTRY, "/.data/serialization_id")
MODEL_UNITS = {"length": "Angstrom", "energy": "eV"}

# keys every metadata dict must have (format_version 1)
REQUIRED_KEYS = (
    "format", "format_version", "arch", "hyperparameters", "species", "atomic_numbers", "cutoff",
    "units", "dtype", "energy_shift", "energy_scale", "versions", "created", "content_hash",
)


class ModelFileError(ValueError):
    """A model file is missing, corrupt, truncated, or incompatible with this mlpot."""


def _versions() -> Dict[str, str]:
    import importlib.metadata as md

    versions = {"mlpot": mlpot.__version__, "torch": torch.__version__, "python": platform.python_version()}
    for package in ("e3nn", "vesin-torch"):
        try:
            versions[package] = md.version(package)
        except md.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def content_hash(module: torch.nn.Module) -> str:
    """sha256 over every parameter and buffer (name, dtype, shape, bytes), in name order."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        data = tensor.detach().cpu().contiguous()
        digest.update(name.encode())
        digest.update(str(data.dtype).encode())
        digest.update(str(tuple(data.shape)).encode())
        digest.update(data.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def compile_model(model: torch.nn.Module) -> torch.jit.ScriptModule:
    """TorchScript-compile a :class:`Potential` (e3nn modules included); errors say so plainly."""
    from e3nn.util.jit import script

    runtime.configure()
    try:
        return script(model.eval())
    except Exception as error:  # re-raised with context: a model that cannot compile cannot be deployed
        raise RuntimeError(
            f"mlpot: the model could not be compiled to TorchScript, so it cannot be deployed: {error}"
        ) from error


def save_model(
    model: torch.nn.Module,
    description: Dict[str, Any],
    path: Union[str, Path],
    provenance: Optional[Dict[str, Any]] = None,
) -> Dict[str, Any]:
    """Compile ``model`` and write it with its metadata to ``path``; returns the metadata written.

    ``description`` is the dict from :func:`mlpot.models.describe` the model was built from
    (the current ``energy_shift`` and ``energy_scale`` are read back from the model itself).
    """
    path = Path(path)
    compiled = compile_model(for_inference(model))
    metadata = dict(description)
    metadata.update(
        {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "units": dict(MODEL_UNITS),
            "energy_shift": [float(x) for x in model.energy_shift.tolist()],
            "energy_scale": float(model.energy_scale),
            "versions": _versions(),
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "content_hash": content_hash(compiled),
            "provenance": provenance,
        }
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".partial")
    extra = {METADATA_ENTRY: json.dumps(metadata, indent=1)}
    torch.jit.save(compiled, str(temporary), _extra_files=extra)
    with zipfile.ZipFile(temporary) as archive:
        seal = _seal_of(archive, metadata)
    torch.jit.save(compiled, str(temporary), _extra_files={**extra, SEAL_ENTRY: json.dumps({"sha256": seal})})
    with zipfile.ZipFile(temporary) as archive:
        if _seal_of(archive, metadata) != seal:
            temporary.unlink()
            raise RuntimeError("mlpot: torch wrote the model file differently twice, so it cannot be sealed")
    temporary.replace(path)  # never leave a half-written model file under the final name
    return {**metadata, "seal": seal}


def _seal_of(archive: zipfile.ZipFile, metadata: Dict[str, Any]) -> str:
    """sha256 over the canonical metadata JSON and every sealed entry (name without the archive's top folder,
    size, bytes), in name order."""
    digest = hashlib.sha256()
    canonical = {key: value for key, value in metadata.items() if key != "seal"}
    digest.update(json.dumps(canonical, sort_keys=True, separators=(",", ":")).encode())
    entries = sorted(
        (name.split("/", 1)[-1], name) for name in archive.namelist()
        if not name.endswith(_UNSEALED_SUFFIXES) and not name.endswith("/extra/" + METADATA_ENTRY)
    )
    for inner_name, name in entries:
        data = archive.read(name)
        digest.update(inner_name.encode() + b"\0" + str(len(data)).encode() + b"\0")
        digest.update(data)
    return digest.hexdigest()


def _check_seal(archive: zipfile.ZipFile, metadata: Dict[str, Any], path: Path) -> Optional[str]:
    """The seal of a format-2 file, checked; None for a format-1 file (warned about once)."""
    names = [n for n in archive.namelist() if n.endswith("/extra/" + SEAL_ENTRY)]
    if metadata["format_version"] < 2:
        if names:
            raise ModelFileError(f"{path} claims model-file format 1 but carries a seal: it has been modified")
        _warn_unsealed(path)
        return None
    if not names:
        raise ModelFileError(f"{path} has no seal ({SEAL_ENTRY}), which format {metadata['format_version']} files "
                             "always carry: it has been modified or damaged")
    try:
        recorded = json.loads(archive.read(names[0]))["sha256"]
    except (ValueError, KeyError, TypeError) as error:
        raise ModelFileError(f"{path}: its seal entry is unreadable ({error})") from None
    if _seal_of(archive, metadata) != recorded:
        raise ModelFileError(
            f"{path} has been modified since it was saved: its seal does not match its code, weights and metadata "
            "(use the file as it was written, or train / export it again)"
        )
    return recorded


_WARNED_UNSEALED: set = set()


def _warn_unsealed(path: Path) -> None:
    import warnings

    if str(path) not in _WARNED_UNSEALED:
        _WARNED_UNSEALED.add(str(path))
        warnings.warn(f"{path} is a format-1 model file without a seal: its code and metadata cannot be verified "
                      f"(write a sealed copy with `mlpot rebuild {path} -o NEW.pt`)", UnsealedModelWarning,
                      stacklevel=3)


class UnsealedModelWarning(UserWarning):
    """A model file from before the seal (format 1): its code and metadata cannot be verified."""


def read_metadata(path: Union[str, Path]) -> Dict[str, Any]:
    """The metadata of a model file, validated and its seal checked (``metadata["seal"]``, format 2), without
    loading the network."""
    path = Path(path)
    if not path.exists():
        raise ModelFileError(f"model file {path} does not exist")
    try:
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if n.endswith("/extra/" + METADATA_ENTRY)]
            if not names:
                raise ModelFileError(
                    f"{path} is not an mlpot model file: it has no {METADATA_ENTRY} entry "
                    "(was it written with torch.save or by another package? make one with `mlpot new-model` "
                    "or mlpot.deploy.save_model)"
                )
            text = archive.read(names[0]).decode()
            try:
                metadata = json.loads(text)
            except json.JSONDecodeError as error:
                raise ModelFileError(f"{path}: its metadata is not valid JSON ({error})") from error
            _check_compatible(metadata, path)
            seal = _check_seal(archive, metadata, path)
    except zipfile.BadZipFile as error:
        raise ModelFileError(
            f"{path} is corrupt or truncated: it is not a readable TorchScript zip archive ({error})"
        ) from error
    except (OSError, zipfile.LargeZipFile, RuntimeError) as error:
        raise ModelFileError(f"{path} could not be read as a model file: {error}") from error
    if seal is not None:
        metadata["seal"] = seal
    return metadata


def _check_compatible(metadata: Dict[str, Any], path: Path) -> None:
    if metadata.get("format") != FORMAT_NAME:
        raise ModelFileError(f"{path}: metadata format is {metadata.get('format')!r}, expected {FORMAT_NAME!r}")
    version = metadata.get("format_version")
    if not isinstance(version, int) or version < 1:
        raise ModelFileError(f"{path}: invalid format_version {version!r}")
    if version > FORMAT_VERSION:
        raise ModelFileError(
            f"{path} uses model-file format version {version}, but this mlpot ({mlpot.__version__}) reads "
            f"versions up to {FORMAT_VERSION}: upgrade mlpot to use it"
        )
    missing = [key for key in REQUIRED_KEYS if key not in metadata]
    if missing:
        raise ModelFileError(f"{path}: metadata lacks required keys {missing}")
    if metadata["units"] != MODEL_UNITS:
        raise ModelFileError(f"{path}: unsupported units {metadata['units']}, expected {MODEL_UNITS}")


@dataclass
class DeployedModel:
    """A loaded model file: the compiled :class:`Potential` and its metadata."""

    module: torch.jit.ScriptModule
    metadata: Dict[str, Any]
    path: Path

    @property
    def cutoff(self) -> float:
        """Neighbour cutoff, Å."""
        return float(self.metadata["cutoff"])

    @property
    def species(self) -> List[str]:
        return list(self.metadata["species"])

    @property
    def atomic_numbers(self) -> List[int]:
        return list(self.metadata["atomic_numbers"])

    @property
    def dtype(self) -> torch.dtype:
        return torch.float64 if self.metadata["dtype"] == "float64" else torch.float32

    def compute(
        self,
        positions: torch.Tensor,
        atomic_numbers: torch.Tensor,
        cell: torch.Tensor,
        pbc: torch.Tensor,
        forces: bool = True,
        stress: bool = False,
    ) -> Dict[str, torch.Tensor]:
        """Run the compiled model's ``compute`` (Å, eV; see :class:`Potential`).

        An input the model refuses (NaN positions, a box too small for the cutoff, an unknown element)
        raises ``ValueError`` with the model's message rather than TorchScript's traceback.
        """
        try:
            return self.module.compute(positions, atomic_numbers, cell, pbc, forces, stress, False)
        except (RuntimeError, torch.jit.Error) as error:
            message = _user_message(error)
            if message is None:
                raise
            raise ValueError(message) from None

    def check_elements(self, atomic_numbers: Sequence[int]) -> None:
        """Raise ``ValueError`` naming every element the model does not know."""
        from ase.data import chemical_symbols

        unknown = sorted(set(int(z) for z in atomic_numbers) - set(self.atomic_numbers))
        if unknown:
            names = ", ".join(chemical_symbols[z] if 0 < z < len(chemical_symbols) else str(z) for z in unknown)
            raise ValueError(
                f"element(s) {names} not supported by model {self.path.name}, which knows only "
                f"{', '.join(self.species)}"
            )


def _user_message(error: Exception) -> Optional[str]:
    """The ``mlpot: ...`` message a compiled model raised, without TorchScript's traceback around it."""
    for line in reversed(str(error).splitlines()):
        if "mlpot: " in line:
            return line[line.index("mlpot: ") + len("mlpot: "):]
    return None


def load_model(path: Union[str, Path], device: Union[str, torch.device] = "cpu") -> DeployedModel:
    """Load a model file onto ``device`` after validating it.

    Raises :class:`ModelFileError` for a missing, corrupt, truncated, foreign or too-new file, and when
    the parameters do not match the content hash recorded at save time.
    """
    import vesin_torch  # noqa: F401  registers the neighbour-list class the compiled model calls

    path = Path(path)
    metadata = read_metadata(path)
    if COMPILED_KEY in metadata:
        raise ModelFileError(
            f"{path} is a compiled model file (.pt2), which only mlpot.compiled.load_compiled and MLPotCalculator "
            f"load; OpenMM and training need the TorchScript file it was compiled from "
            f"({metadata[COMPILED_KEY]['source']['file']})"
        )
    runtime.configure()
    try:
        module = torch.jit.load(str(path), map_location=torch.device(device))
    except RuntimeError as error:
        raise ModelFileError(f"{path} is corrupt or incompatible: TorchScript could not load it ({error})") from error
    if content_hash(module) != metadata["content_hash"]:
        raise ModelFileError(
            f"{path} is corrupt: its parameters do not match the content hash recorded when it was saved"
        )
    return DeployedModel(module=module.eval(), metadata=metadata, path=path)


def rebuild_model(
    deployed: DeployedModel, changes: Optional[Dict[str, Any]] = None
) -> Tuple[torch.nn.Module, Dict[str, Any]]:
    """The trainable model a model file holds, and its description: built again from the file's description, with
    ``changes`` to its hyperparameters (e.g. ``{"edge_chunk_size": 4096}``), and loaded with the file's weights.

    Raises ``ValueError`` for an unknown hyperparameter and for a change the weights do not fit (one that changes
    the network's shape).
    """
    stored = deployed.metadata
    description = describe(
        stored["arch"], stored["atomic_numbers"], stored["cutoff"], dtype=stored["dtype"],
        hyperparameters={**stored["hyperparameters"], **(changes or {})}, energy_shift=stored["energy_shift"],
        energy_scale=stored["energy_scale"],
    )
    model = build_model(description)
    # a compiled module lists its non-persistent buffers too (caches and index tables built from the weights)
    derived = {f"{prefix}.{name}".lstrip(".") for prefix, module in model.named_modules()
               for name in module._non_persistent_buffers_set}
    weights = {k: v for k, v in deployed.module.state_dict().items() if k not in derived}
    try:
        model.load_state_dict(weights)
    except RuntimeError as error:
        lines = str(error).splitlines()  # a header, then one line per mismatched tensor
        raise ValueError(
            f"the weights of {deployed.path.name} do not fit the model with hyperparameters {changes}: only "
            f"changes that keep the network's shape can be applied to a trained model ({lines[-1].strip()})"
        ) from None
    return model, description
