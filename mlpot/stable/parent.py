"""The model StABlE fine-tunes: read from a model file or from a ``mlpot train`` checkpoint, as an eager
(trainable) :class:`~mlpot.models.potential.Potential`, with what is known about how it was trained.

A model file's network is rebuilt from its metadata (:func:`mlpot.models.build_model`) and given the
compiled module's parameters; a training checkpoint gives its best EMA weights (the ones
``mlpot train`` exports), else its current EMA weights. A checkpoint is read with ``weights_only=True``
(:func:`mlpot.runs.safe_torch_load`): a file holding other Python objects is refused, never unpickled.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

from mlpot.models import build_model
from mlpot.models.potential import Potential
from mlpot.runs import UnsafeCheckpointError, checkpoint_kind, file_digest, safe_torch_load


@dataclass
class ParentModel:
    """A model to fine-tune.

    Attributes:
        model: the eager network (float dtype of the description), on the CPU.
        description: its :func:`mlpot.models.describe` dict.
        provenance: the provenance it carried (``{"training": ...}`` for models from ``mlpot train``), or {}.
        path: the file it came from; sha256: that file's digest.
        split: its train/val/test frame indices of ``split_file`` when known, else None.
        split_file: the data file the split refers to.
    """

    model: Potential
    description: Dict[str, Any]
    provenance: Dict[str, Any]
    path: Path
    sha256: str
    split: Optional[Dict[str, List[int]]] = None
    split_file: Optional[str] = None


def load_parent(path: str | Path) -> ParentModel:
    """Read a model file or a training checkpoint (``checkpoint.pt`` of ``mlpot train``).

    Raises:
        FileNotFoundError: no such file.
        UnsafeCheckpointError: a checkpoint that holds Python objects beyond tensors and plain types (not loaded).
        ValueError: neither a model file nor a training checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"parent model {path} not found (give a model file or a checkpoint.pt of mlpot train)")
    if _is_model_file(path):
        return _from_model_file(path)
    return _from_checkpoint(path)


def _is_model_file(path: Path) -> bool:
    from mlpot.deploy import METADATA_ENTRY

    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith("/extra/" + METADATA_ENTRY) for name in archive.namelist())
    except zipfile.BadZipFile:
        return False


def _from_model_file(path: Path) -> ParentModel:
    from mlpot.deploy import load_model, rebuild_model

    deployed = load_model(path)
    model, description = rebuild_model(deployed)
    provenance = dict(deployed.metadata.get("provenance") or {})
    training = provenance.get("training") or {}
    files = training.get("data_files") or []
    return ParentModel(model, description, provenance, path, file_digest(str(path)),
                       split_file=files[0]["path"] if len(files) == 1 else None)


def _from_checkpoint(path: Path) -> ParentModel:
    try:
        state = safe_torch_load(path)
    except UnsafeCheckpointError as error:
        raise UnsafeCheckpointError(f"parent: {error}") from None
    except ValueError:
        raise ValueError(f"parent {path} is neither an mlpot model file nor a readable training checkpoint") from None
    if not isinstance(state, dict) or "description" not in state or "ema" not in state:
        kind = checkpoint_kind(state) if isinstance(state, dict) else None
        found = f" (it is a {kind} checkpoint)" if kind else ""
        raise ValueError(f"parent {path} is neither an mlpot model file nor a checkpoint of mlpot train{found}")
    description = state["description"]
    model = build_model(description)
    if state.get("best_ema") is not None:
        model.load_state_dict(state["best_ema"])
    else:
        model.load_state_dict(state["ema"]["module"])
    files = (state.get("config") or {}).get("data", {}).get("files") or []
    provenance = {"training": {"config": state.get("config"), "checkpoint": str(path),
                               "data_files": [{"path": f} for f in files]}}
    return ParentModel(model, description, provenance, path, file_digest(str(path)), split=state.get("split"),
                       split_file=files[0] if len(files) == 1 else None)
