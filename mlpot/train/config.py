"""Training configuration: a YAML file with three sections, every key checked.

Example (``mlpot train config.yaml``; the keys not given take the defaults below)::

    data:
      files: [systems/ethanol/dft.extxyz]   # extxyz / ASE db / MD17-style npz
      energy_unit: eV                        # forces in energy_unit / length_unit
      val_fraction: 0.05
      test_fraction: 0.1
    model:
      arch: nequip                           # or egnn
      cutoff: 5.0
    training:
      epochs: 200
      batch_size: 5
      lr: 0.01
    out: runs/ethanol

``mlpot train --data FILE --arch nequip --out DIR`` builds the same thing from flags, and
``--set training.lr=0.005`` overrides any single key.

Every assignment to a key, from YAML, ``--set``, a flag or Python, is checked against the key's type
(a bool is not a number, a string is not a number) and its range (:data:`LIMITS`); a bad value is a
``ValueError`` naming ``section.key``, the value and what is expected.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List

import yaml

if TYPE_CHECKING:
    from mlpot.data import DataSpec

from mlpot.config import (  # noqa: F401  (re-exported: the train config's public names)
    apply_override,
    checked_setting,
    config_section,
    parse_assignment,
    read_yaml_config,
    renamed_key,
)

# Allowed ranges of the numeric keys: ">= a", "> a" or an interval "[a, b)" (brackets as in maths).
LIMITS: Dict[str, str] = {
    "data.val_fraction": "[0, 1)", "data.test_fraction": "[0, 1)",
    "model.cutoff": "> 0",
    "training.epochs": ">= 1", "training.batch_size": ">= 1", "training.lr": "> 0", "training.weight_decay": ">= 0",
    "training.huber_delta": "> 0", "training.energy_weight": ">= 0", "training.forces_weight": ">= 0",
    "training.stress_weight": ">= 0", "training.ema_decay": "[0, 1)", "training.grad_clip": "> 0",
    "training.warmup_steps": ">= 0", "training.plateau_factor": "(0, 1)", "training.plateau_patience": ">= 0",
    "training.min_lr": ">= 0", "training.early_stopping_patience": ">= 1", "training.max_minutes": "> 0",
    "training.threads": ">= 1",
}


class _CheckedSection:
    """A config section whose every field assignment goes through :func:`checked_setting`."""

    SECTION = ""

    def __setattr__(self, key: str, value: Any) -> None:
        key = renamed_key(type(self), key)
        annotation = _FIELD_TYPES.get(type(self).__name__, {}).get(key)
        if annotation is not None:
            if key == "files" and isinstance(value, str):
                value = [value]
            name = f"{self.SECTION}.{key}"
            value = checked_setting(name, annotation, value, LIMITS.get(name))
        super().__setattr__(key, value)

    def __getattr__(self, key: str) -> Any:  # called only for names not found: the old names in RENAMED_KEYS
        new = renamed_key(type(self), key)
        if new == key:
            raise AttributeError(f"{type(self).__name__} has no key {key!r}")
        return getattr(self, new)


@dataclass
class DataConfig(_CheckedSection):
    SECTION = "data"
    files: List[str] = field(default_factory=list)
    energy_key: str = "energy"
    forces_key: str = "forces"
    stress_key: str = "stress"
    energy_unit: str = "eV"
    length_unit: str = "Angstrom"
    index: str = ":"
    val_fraction: float = 0.05
    test_fraction: float = 0.1
    split_seed: int = 0
    train_indices: str | None = None  # index files (text/json/npy) instead of random fractions
    val_indices: str | None = None
    test_indices: str | None = None
    check_units: bool = True

    def spec(self) -> DataSpec:
        """The reader settings (keys, units, frame index) as a :class:`mlpot.data.DataSpec`."""
        from mlpot.data import DataSpec

        return DataSpec(**{f.name: getattr(self, f.name) for f in dataclasses.fields(DataSpec)})


@dataclass
class ModelConfig(_CheckedSection):
    SECTION = "model"
    arch: str = "nequip"
    size: str = "default"
    cutoff: float = 5.0
    dtype: str = "float32"
    species: List[str] | None = None  # default: the elements in the data
    hyperparameters: Dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    # fine-tuning (mlpot.train.finetune): start from this model file's network and weights; the file then defines
    # the network, and arch / cutoff, where set to other than their defaults, must agree with it
    init_from: str | None = None
    refit_references: bool | None = None  # refit per-species energies: None = when the data's level of theory differs


@dataclass
class TrainingConfig(_CheckedSection):
    SECTION = "training"
    RENAMED_KEYS = {"max_time_minutes": "max_minutes"}  # old name: still read from YAML and older runs' configs
    epochs: int = 100
    batch_size: int = 5
    lr: float = 0.005
    optimizer: str = "adam"  # adam | adamw
    weight_decay: float = 0.0
    amsgrad: bool = True
    loss: str = "mse"  # mse | huber
    huber_delta: float = 0.01
    energy_weight: float = 1.0
    forces_weight: float = 10.0
    stress_weight: float | None = None  # None: from the data when it has stress labels (trainer.stress_weight_for)
    ema_decay: float = 0.99
    grad_clip: float | None = 10.0
    warmup_steps: int = 100
    plateau_factor: float = 0.5
    plateau_patience: int = 10
    min_lr: float = 1e-6
    early_stopping_patience: int | None = 50
    max_minutes: float | None = None  # wall-time limit, final evaluation included (mlpot train --max-minutes)
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:1 ...
    threads: int | None = None


_FIELD_TYPES: Dict[str, Dict[str, str]] = {
    section.__name__: {f.name: str(f.type) for f in dataclasses.fields(section)}
    for section in (DataConfig, ModelConfig, TrainingConfig)
}


@dataclass
class TrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    out: str = "runs/train"

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: Dict[str, Any]) -> TrainConfig:
        raw = dict(raw or {})
        sections = {}
        for name, section_type in (("data", DataConfig), ("model", ModelConfig), ("training", TrainingConfig)):
            sections[name] = config_section(section_type, raw.pop(name, None) or {}, name)
        out = raw.pop("out", "runs/train")
        if raw:
            raise ValueError(f"unknown top-level config key(s) {sorted(raw)}; known: data, model, training, out")
        if not isinstance(out, str) or not out:
            raise ValueError(f"out must be a folder name, got {out!r}")
        return cls(out=out, **sections)


def load_config(path: str | Path) -> TrainConfig:
    """Read a YAML training config; errors name the file."""
    return read_yaml_config(path, TrainConfig.from_dict)


def save_config(config: TrainConfig, path: Path) -> None:
    path.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
