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
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List

import yaml


@dataclass
class DataConfig:
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
class ModelConfig:
    arch: str = "nequip"
    size: str = "default"
    cutoff: float = 5.0
    dtype: str = "float32"
    species: List[str] | None = None  # default: the elements in the data
    hyperparameters: Dict[str, Any] = field(default_factory=dict)
    seed: int = 0


@dataclass
class TrainingConfig:
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
    stress_weight: float = 0.0
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
        config = cls(out=str(out), **sections)
        if isinstance(config.data.files, str):
            config.data.files = [config.data.files]
        return config


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
