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
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List

import yaml

# Allowed ranges of the numeric keys: ">= a", "> a" or an interval "[a, b)" (brackets as in maths).
LIMITS: Dict[str, str] = {
    "data.val_fraction": "[0, 1)", "data.test_fraction": "[0, 1)",
    "model.cutoff": "> 0",
    "training.epochs": ">= 1", "training.batch_size": ">= 1", "training.lr": "> 0", "training.weight_decay": ">= 0",
    "training.huber_delta": "> 0", "training.energy_weight": ">= 0", "training.forces_weight": ">= 0",
    "training.stress_weight": ">= 0", "training.ema_decay": "[0, 1)", "training.grad_clip": "> 0",
    "training.warmup_steps": ">= 0", "training.plateau_factor": "(0, 1)", "training.plateau_patience": ">= 0",
    "training.min_lr": ">= 0", "training.early_stopping_patience": ">= 1", "training.max_time_minutes": "> 0",
    "training.threads": ">= 1",
}


def _within(value: float, limit: str) -> bool:
    """Whether ``value`` satisfies a :data:`LIMITS` entry."""
    if limit.startswith(">="):
        return value >= float(limit[2:])
    if limit.startswith(">"):
        return value > float(limit[1:])
    low, high = (float(x) for x in limit[1:-1].split(","))
    above = value >= low if limit[0] == "[" else value > low
    below = value <= high if limit[-1] == "]" else value < high
    return above and below


def checked_setting(name: str, annotation: str, value: Any, limit: str | None = None) -> Any:
    """``value`` if it fits the field type ``annotation`` (as written in the dataclass, e.g. ``"int | None"``)
    and the range ``limit`` (written as in :data:`LIMITS`); else ``ValueError`` naming ``name``, the value and
    what is expected. Integers given for a float key become floats."""
    optional = annotation.endswith("| None")
    kind = annotation.replace("| None", "").strip()
    if value is None and optional:
        return None
    expected = {
        "int": "an integer", "float": "a number", "bool": "true or false", "str": "a string",
        "List[str]": "a list of strings", "Dict[str, Any]": "a mapping",
    }[kind]
    if limit:
        expected += f" {limit}" if limit[0] in "<>" else f" in {limit}"
    if optional:
        expected += " or null"
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    fits = {
        "int": isinstance(value, int) and not isinstance(value, bool),
        "float": is_number and math.isfinite(value),
        "bool": isinstance(value, bool),
        "str": isinstance(value, str),
        "List[str]": isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value),
        "Dict[str, Any]": isinstance(value, dict),
    }[kind]
    if not fits or (limit and not _within(value, limit)):
        raise ValueError(f"{name} must be {expected}, got {value!r}")
    return float(value) if kind == "float" else list(value) if kind == "List[str]" else value


class _CheckedSection:
    """A config section whose every field assignment goes through :func:`checked_setting`."""

    SECTION = ""

    def __setattr__(self, key: str, value: Any) -> None:
        annotation = _FIELD_TYPES.get(type(self).__name__, {}).get(key)
        if annotation is not None:
            if key == "files" and isinstance(value, str):
                value = [value]
            name = f"{self.SECTION}.{key}"
            value = checked_setting(name, annotation, value, LIMITS.get(name))
        super().__setattr__(key, value)


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

    def spec(self) -> "DataSpec":
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
    max_time_minutes: float | None = None
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
    def from_dict(cls, raw: Dict[str, Any]) -> "TrainConfig":
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


def config_section(section_type, values: Dict[str, Any], name: str):
    """The dataclass ``section_type`` built from a YAML mapping; unknown keys are refused by name."""
    if not isinstance(values, dict):
        raise ValueError(f"config section {name!r} must be a mapping")
    known = {f.name for f in dataclasses.fields(section_type)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} in config section {name!r}; known: {sorted(known)}")
    return section_type(**values)


def load_config(path: str | Path) -> TrainConfig:
    """Read a YAML training config; errors name the file."""
    return read_yaml_config(path, TrainConfig.from_dict)


def read_yaml_config(path: str | Path, from_dict: Callable[[Dict[str, Any]], Any]) -> Any:
    """Read a YAML file and build a config from it with ``from_dict``; errors name the file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"config file {path} not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ValueError(f"{path}: not valid YAML ({error})") from None
    try:
        return from_dict(raw)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{path}: {error}") from None


def parse_assignment(assignment: str, expected: str) -> tuple[str, Any]:
    """``NAME=VALUE`` → (NAME, VALUE parsed as YAML: numbers, lists, null, strings), the one parser of
    every command's ``--set``; a ValueError says the assignment must look like ``expected``."""
    name, separator, text = assignment.partition("=")
    if not separator or not name.strip():
        raise ValueError(f"override {assignment!r} must look like {expected}")
    return name.strip(), yaml.safe_load(text)


def apply_override(config: Any, assignment: str) -> None:
    """Apply ``section.key=value`` (value parsed as YAML) to ``config`` in place.

    ``config`` is any dataclass whose sections are dataclass fields (:class:`TrainConfig`,
    :class:`mlpot.stable.config.StableConfig`)."""
    expected = "section.key=value, e.g. training.lr=0.01"
    dotted, value = parse_assignment(assignment, expected)
    if "." not in dotted:
        raise ValueError(f"override {assignment!r} must look like {expected}")
    section_name, key = dotted.split(".", 1)
    sections = [f.name for f in dataclasses.fields(config) if dataclasses.is_dataclass(getattr(config, f.name))]
    if section_name not in sections:
        raise ValueError(f"override {assignment!r}: unknown section {section_name!r}; known: {sections}")
    section = getattr(config, section_name)
    if key not in {f.name for f in dataclasses.fields(section)}:
        raise ValueError(f"override {assignment!r}: unknown key {key!r} in section {section_name!r}")
    setattr(section, key, value)


def save_config(config: TrainConfig, path: Path) -> None:
    path.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
