"""Reading a run's checkpoint for ``--resume``: one place for the errors a missing, corrupt or foreign
checkpoint gives (training, StABlE and PIPS runs all keep ``checkpoint.pt`` dicts with a
``checkpoint_version``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

import torch


def read_checkpoint(path: Path, version: int, kind: str) -> Dict[str, Any]:
    """The checkpoint dict at ``path``, written by a ``kind`` run (e.g. "StABlE") of format ``version``.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is not a readable torch file, or not a ``kind`` checkpoint of ``version``.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"--resume: no checkpoint at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:
        raise ValueError(f"--resume: {path} is not a readable checkpoint ({type(error).__name__}: {error})") from None
    if not isinstance(state, dict) or state.get("checkpoint_version") != version:
        found = state.get("checkpoint_version") if isinstance(state, dict) else None
        raise ValueError(f"--resume: {path} is not a {kind} checkpoint of version {version} (found version {found})")
    return state
