"""StABlE fine-tuning configuration: a YAML file with four sections, every key checked.

Example (``mlpot stable train config.yaml``; keys not given take the defaults below)::

    parent: runs/ethanol/model.pt        # model file (or checkpoint.pt of ``mlpot train``) to fine-tune
    data:
      system: ethanol                    # its shipped DFT frames (or file: my.extxyz)
    simulation:
      replicas: 16
      temperature_K: 500
      segment_fs: 250
    learning:
      lr: 0.0005
      energy_force_weight: 10            # λ
    run:
      cycles: 3
    out: runs/ethanol-stable

``--set learning.lr=0.001`` overrides any single key. Units are in the key names (fs, ps, K, Å).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict

import yaml

from mlpot.config import checked_setting, config_section, read_yaml_config
from mlpot.md.stability import EVALUATION_BOND_THRESHOLD_A, MINIMUM_CONTACT_DISTANCE_A, TRAINING_BOND_THRESHOLD_A
from mlpot.validation import optional_positive_number, positive_number

OBSERVABLE_LOSSES = ("mse", "mae")
# ranges of the keys that :meth:`StableConfig.validate` does not check one by one (syntax of mlpot.train.config.LIMITS)
LIMITS = {"data.val_fraction": "[0, 1)", "data.test_fraction": "[0, 1)", "run.threads": ">= 1"}


@dataclass
class StableDataConfig:
    """Where the DFT frames come from: a shipped system's reference data, or ``file``.

    The parent model's own train/test split of that file is used when its provenance records it;
    otherwise a random split with ``val_fraction``/``test_fraction`` and ``split_seed``.
    The reference h(r) is that of the file's non-test frames, or of every frame of
    ``observable_file`` when given (e.g. reference MD at the simulation temperature, when the
    training frames come from another one); its molecule must be the data's.
    """

    system: str = "ethanol"
    file: str | None = None
    observable_file: str | None = None
    val_fraction: float = 0.05
    test_fraction: float = 0.1
    split_seed: int = 0


@dataclass
class SimulationConfig:
    """The simulation phase: Nosé–Hoover replicas from training frames, checked segment by segment."""

    replicas: int = 16
    temperature_K: float = 500.0
    timestep_fs: float = 0.5
    thermostat_time_constant_fs: float = 100.0  # τ; StABlE used 20 timesteps (10 fs), which hid the instabilities here
    segment_fs: float = 250.0
    record_every_fs: float = 10.0
    threshold_A: float = TRAINING_BOND_THRESHOLD_A
    contact_A: float | None = MINIMUM_CONTACT_DISTANCE_A  # two atoms closer than this: unstable (None: bonds only)
    unstable_fraction_to_learn: float = 0.75
    max_simulation_ps: float = 3.0  # per cycle: learn after this long even below the trigger


@dataclass
class LearningConfig:
    """The learning phase: Boltzmann-estimator gradient of the h(r) loss + λ × energy/force gradient."""

    optimizer: str = "adam"
    lr: float = 5e-4
    observable_loss: str = "mse"  # mse: Σ (⟨h⟩ − h_ref)² over bins; mae: ∫|⟨h⟩ − h_ref| dr
    energy_force_weight: float = 10.0  # λ
    # after each step, least-squares re-fit of the per-species reference energies on the step's DFT frames: the
    # observable gradient cannot see a constant energy offset, which otherwise drifts (ethanol: 40 -> 97 meV/atom)
    refit_energy_references: bool = True
    qm_frames_per_step: int | None = 64  # random training frames per step (None: all)
    qm_batch_size: int = 32
    grad_clip: float | None = 1.0
    max_steps_per_cycle: int = 10
    stop_unstable_fraction: float = 0.0  # the phase ends once the re-simulation has at most this fraction unstable
    sample_max_deviation_A: float = EVALUATION_BOND_THRESHOLD_A  # frames beyond this are not samples
    r_max_A: float = 10.0
    bin_width_A: float = 0.02
    sigma_A: float = 0.01


@dataclass
class RunConfig:
    RENAMED_KEYS = {"max_time_minutes": "max_minutes"}  # old name: still read from YAML and older runs' configs
    cycles: int = 3
    seed: int = 0
    device: str = "cpu"
    threads: int | None = None
    max_minutes: float | None = None  # wall-time limit


_SECTIONS = (("data", StableDataConfig), ("simulation", SimulationConfig), ("learning", LearningConfig),
             ("run", RunConfig))


@dataclass
class StableConfig:
    parent: str = ""
    data: StableDataConfig = field(default_factory=StableDataConfig)
    simulation: SimulationConfig = field(default_factory=SimulationConfig)
    learning: LearningConfig = field(default_factory=LearningConfig)
    run: RunConfig = field(default_factory=RunConfig)
    out: str = "runs/stable"

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: Dict[str, Any]) -> StableConfig:
        if raw is not None and not isinstance(raw, dict):
            raise ValueError("a StABlE config must be a mapping with the sections data, simulation, learning, run")
        raw = dict(raw or {})
        sections = {name: config_section(kind, raw.pop(name, None) or {}, name) for name, kind in _SECTIONS}
        parent = raw.pop("parent", "")
        out = raw.pop("out", "runs/stable")
        if raw:
            raise ValueError(f"unknown top-level config key(s) {sorted(raw)}; known: parent, "
                             f"{', '.join(name for name, _ in _SECTIONS)}, out")
        return cls(parent=str(parent or ""), out=str(out), **sections)

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad setting."""
        if not self.parent:
            raise ValueError("no parent model: set parent (a model file or a checkpoint.pt of mlpot train)")
        simulation, learning, run = self.simulation, self.learning, self.run
        positive = {
            "simulation.temperature_K": simulation.temperature_K, "simulation.timestep_fs": simulation.timestep_fs,
            "simulation.segment_fs": simulation.segment_fs,
            "simulation.thermostat_time_constant_fs": simulation.thermostat_time_constant_fs,
            "simulation.record_every_fs": simulation.record_every_fs,
            "simulation.threshold_A": simulation.threshold_A,
            "simulation.max_simulation_ps": simulation.max_simulation_ps,
            "learning.lr": learning.lr, "learning.sample_max_deviation_A": learning.sample_max_deviation_A,
            "learning.r_max_A": learning.r_max_A, "learning.bin_width_A": learning.bin_width_A,
            "learning.sigma_A": learning.sigma_A,
        }
        for name, value in positive.items():
            positive_number(name, value)
        integers = {"simulation.replicas": (simulation.replicas, 2),
                    "learning.qm_batch_size": (learning.qm_batch_size, 1),
                    "learning.max_steps_per_cycle": (learning.max_steps_per_cycle, 1), "run.cycles": (run.cycles, 0)}
        for name, (value, least) in integers.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")
        if learning.qm_frames_per_step is not None and (not isinstance(learning.qm_frames_per_step, int)
                                                        or learning.qm_frames_per_step < 1):
            raise ValueError(f"learning.qm_frames_per_step must be a positive integer or null, got "
                             f"{learning.qm_frames_per_step!r}")
        for name, value in (("simulation.unstable_fraction_to_learn", simulation.unstable_fraction_to_learn),
                            ("learning.stop_unstable_fraction", learning.stop_unstable_fraction)):
            if not isinstance(value, (int, float)) or not 0 <= value <= 1:
                raise ValueError(f"{name} must be a fraction in [0, 1], got {value!r}")
        if isinstance(learning.energy_force_weight, bool) \
                or not isinstance(learning.energy_force_weight, (int, float)) \
                or not learning.energy_force_weight >= 0:
            raise ValueError(f"learning.energy_force_weight (λ) must be a non-negative number, "
                             f"got {learning.energy_force_weight!r}")
        if not isinstance(learning.refit_energy_references, bool):
            raise ValueError(f"learning.refit_energy_references must be true or false, got "
                             f"{learning.refit_energy_references!r}")
        if learning.observable_loss not in OBSERVABLE_LOSSES:
            raise ValueError(f"unknown learning.observable_loss {learning.observable_loss!r}; "
                             f"choose one of {list(OBSERVABLE_LOSSES)}")
        if learning.optimizer not in ("adam", "sgd"):
            raise ValueError(f"unknown learning.optimizer {learning.optimizer!r}; choose adam or sgd")
        optional_positive_number("learning.grad_clip", learning.grad_clip, none="null")
        if simulation.record_every_fs < simulation.timestep_fs or simulation.segment_fs < simulation.record_every_fs:
            raise ValueError("need timestep_fs <= record_every_fs <= segment_fs in section simulation")
        optional_positive_number("simulation.contact_A", simulation.contact_A, "Å", none="null")
        optional_positive_number("run.max_minutes", run.max_minutes, none="null")
        self._check_types_and_ranges()

    def _check_types_and_ranges(self) -> None:
        """Every key of every section has its declared type (a bool or a string is not a number) and the
        keys of :data:`LIMITS` their range; ``ValueError`` naming ``section.key`` otherwise."""
        if not isinstance(self.parent, str) or not isinstance(self.out, str) or not self.out:
            raise ValueError(f"parent and out must be file/folder names, got {self.parent!r} and {self.out!r}")
        for section_name, section_type in _SECTIONS:
            section = getattr(self, section_name)
            for item in dataclasses.fields(section_type):
                name = f"{section_name}.{item.name}"
                checked_setting(name, str(item.type), getattr(section, item.name), LIMITS.get(name))


def load_stable_config(path: str | Path) -> StableConfig:
    """Read a YAML StABlE config; errors name the file."""
    return read_yaml_config(path, StableConfig.from_dict)


def save_stable_config(config: StableConfig, path: Path) -> None:
    path.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
