"""Train/validation/test splits: by seeded random fractions or by explicit index files.

A split is a dict ``{"train": [...], "val": [...], "test": [...]}`` of frame indices into the
concatenated dataset; training saves it as ``split.json`` in the run directory so a run can be
resumed or evaluated on exactly the same frames.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List

import numpy as np

from mlpot.data.frames import DataError

SPLIT_NAMES = ("train", "val", "test")


def random_split(n_frames: int, val_fraction: float, test_fraction: float, seed: int) -> Dict[str, List[int]]:
    """Shuffle ``range(n_frames)`` with ``seed`` and cut off validation and test fractions."""
    for name, fraction in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= fraction < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {fraction}")
    n_val = int(round(val_fraction * n_frames))
    n_test = int(round(test_fraction * n_frames))
    if n_val + n_test >= n_frames:
        raise ValueError(f"the split leaves no training frames ({n_frames} frames, {n_val} val, {n_test} test)")
    if val_fraction > 0 and n_val == 0:
        n_val = 1
    order = np.random.default_rng(seed).permutation(n_frames).tolist()
    return {"test": sorted(order[:n_test]), "val": sorted(order[n_test:n_test + n_val]),
            "train": sorted(order[n_test + n_val:])}


def read_index_file(path: str | Path) -> List[int]:
    """Frame indices from a text file (whitespace/comma separated), ``.npy`` or ``.json`` list."""
    path = Path(path)
    if not path.exists():
        raise DataError(str(path), None, "index file not found")
    if path.suffix == ".npy":
        return [int(i) for i in np.load(path).reshape(-1)]
    text = path.read_text()
    if path.suffix == ".json":
        return [int(i) for i in json.loads(text)]
    try:
        return [int(token) for token in text.replace(",", " ").split()]
    except ValueError:
        raise DataError(str(path), None, "index file must hold integers") from None


def check_split(split: Dict[str, List[int]], n_frames: int) -> None:
    """Indices in range, no frame in two splits, a non-empty training set."""
    seen: Dict[int, str] = {}
    for name in SPLIT_NAMES:
        for index in split.get(name, []):
            if not 0 <= index < n_frames:
                raise ValueError(f"split {name!r} has frame index {index}, outside 0..{n_frames - 1}")
            if index in seen:
                raise ValueError(f"frame {index} is in both the {seen[index]!r} and the {name!r} split")
            seen[index] = name
    if not split.get("train"):
        raise ValueError("the training split is empty")


def save_split(split: Dict[str, List[int]], path: Path) -> None:
    path.write_text(json.dumps({name: split.get(name, []) for name in SPLIT_NAMES}))


def load_split(path: Path) -> Dict[str, List[int]]:
    data = json.loads(Path(path).read_text())
    return {name: [int(i) for i in data.get(name, [])] for name in SPLIT_NAMES}
