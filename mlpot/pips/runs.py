"""Starting and continuing PIPS training runs by system name: toy systems train in torch
(:class:`~mlpot.pips.toy.trainer.ToyTrainer`), molecules in OpenMM
(:class:`~mlpot.pips.molecular.trainer.MolecularTrainer`).

A run is described by :class:`PipsRunConfig`, the YAML of ``mlpot pips train CONFIG``::

    system: alanine-dipeptide     # a toy (double-well, mueller-brown) or a molecule of mlpot.pips.molecular.peptides
    out: runs/ad                  # the run folder (checkpoint.pt)
    potential: null               # molecules: an mlpot model file as the physical potential (null: the force field)
    training:                     # fields of ToyTrainConfig / MolecularTrainConfig; unset ones take the defaults
      lam: 2.0e-05
      iterations: 1000
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional

from mlpot.config import config_section, parse_assignment, read_yaml_config
from mlpot.pips.toy.systems import TOY_SYSTEMS
from mlpot.pips.toy.trainer import ToyTrainConfig, ToyTrainer
from mlpot.pips.trainer import CHECKPOINT_KIND, CHECKPOINT_NAME, CHECKPOINT_VERSION, PiceTrainer, refuse_exported
from mlpot.runs import read_checkpoint

TRAINING_SECTION = "training"
TOP_LEVEL_SETTINGS = ("system", "potential")  # fields of the train configs that the YAML holds at its top level


def system_kind(system: str) -> str:
    """``"toy"`` for the 2D toy systems (torch), ``"molecular"`` for the rest (OpenMM peptides)."""
    return "toy" if system in TOY_SYSTEMS else "molecular"


def train_config_type(system: str) -> type:
    """The configuration dataclass of ``system``'s runs: ToyTrainConfig or MolecularTrainConfig."""
    if system_kind(system) == "toy":
        return ToyTrainConfig
    from mlpot.pips.molecular.trainer import MolecularTrainConfig

    return MolecularTrainConfig


def training_keys(system: str) -> list[str]:
    """The keys of the ``training`` section for ``system`` (its train config's fields but system and potential)."""
    return [f.name for f in dataclasses.fields(train_config_type(system)) if f.name not in TOP_LEVEL_SETTINGS]


@dataclass
class PipsRunConfig:
    """A PIPS run: ``system``, ``out`` (run folder), ``potential`` (mlpot model file; molecules only,
    None: the system's force field) and ``training``, the settings of the system's train config
    (:func:`train_config_type`) other than system and potential; unset ones take the system's
    defaults (a molecule's ``run_defaults`` in :mod:`mlpot.pips.molecular.peptides`), then the
    dataclass's."""

    system: str = "double-well"
    out: Optional[str] = None
    potential: Optional[str] = None
    training: Dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, raw: Any) -> PipsRunConfig:
        """From the YAML mapping; unknown keys, at the top or in ``training``, are refused by name."""
        config = config_section(cls, {} if raw is None else raw, "top level")
        if config.training is None:  # an empty ``training:``
            config.training = {}
        if not isinstance(config.training, dict):
            raise ValueError(f"config section {TRAINING_SECTION!r} must be a mapping")
        config.training = dict(config.training)
        config.train_config()  # checks the system and the training keys
        return config

    def set(self, assignment: str) -> str:
        """Apply ``training.key=value`` (value parsed as YAML; a bare ``key=value`` is the same) and
        return the key. Raises ``ValueError`` for another section or a key the system's runs do not have."""
        dotted, value = parse_assignment(assignment, "training.key=value, e.g. --set training.lam=1e-4")
        section, _, key = dotted.rpartition(".")
        if section not in ("", TRAINING_SECTION):
            raise ValueError(f"override {assignment!r}: unknown section {section!r}; known: ['{TRAINING_SECTION}'] "
                             f"(system, out and potential have their own options)")
        self._check_training_keys([key])
        self.training[key] = value
        return key

    def _check_training_keys(self, keys) -> None:
        known = training_keys(self.system)
        unknown = sorted(set(keys) - set(known))
        if unknown:
            top = [key for key in unknown if key in TOP_LEVEL_SETTINGS]
            where = f"; {', '.join(top)} belong(s) at the top level of the config" if top else ""
            raise ValueError(f"unknown PIPS setting(s) {', '.join(unknown)} in section '{TRAINING_SECTION}' for "
                             f"{self.system}{where}; known: {', '.join(sorted(known))}")

    def train_config(self):
        """The run's ToyTrainConfig / MolecularTrainConfig: the system's defaults, then ``training``.

        Raises:
            ValueError: an unknown system or setting, or a potential for a toy system.
        """
        self._check_training_keys(self.training)
        self.training = _numbers_as_numbers(train_config_type(self.system), self.training)
        if system_kind(self.system) == "toy":
            if self.potential is not None:
                raise ValueError("potential (--potential) applies to molecular systems, not to the 2D toys")
            config = config_section(ToyTrainConfig, {**self.training, "system": self.system}, TRAINING_SECTION)
            config.validate()
            return config
        from mlpot.pips.molecular.peptides import peptide_transition
        from mlpot.pips.molecular.trainer import MolecularTrainConfig

        values = {**peptide_transition(self.system).run_defaults, **self.training}  # the system's, then the caller's
        if self.potential is not None:  # a learned potential's own minima, not the force field's (endpoints.py)
            values.setdefault("endpoints", "minimised")
        config = config_section(MolecularTrainConfig, {**values, "system": self.system, "potential": self.potential},
                                TRAINING_SECTION)
        config.validate()
        return config

    def resolved(self) -> PipsRunConfig:
        """The same run with every training setting written out, defaults included (``--print-config``)."""
        settings = self.train_config().to_dict()
        return PipsRunConfig(self.system, self.out, self.potential,
                             {key: value for key, value in settings.items() if key not in TOP_LEVEL_SETTINGS})


def _numbers_as_numbers(config_type: type, settings: Dict[str, Any]) -> Dict[str, Any]:
    """``settings`` with text given for a float field read as a number: YAML 1.1 reads ``1e-4`` (no
    dot) as a string. Raises ``ValueError`` naming the key when the text is not a number."""
    floats = {f.name for f in dataclasses.fields(config_type) if "float" in str(f.type)}
    result = dict(settings)
    for key, value in settings.items():
        if key in floats and isinstance(value, str):
            try:
                result[key] = float(value)
            except ValueError:
                raise ValueError(f"training.{key} must be a number, got {value!r}") from None
    return result


def load_run_config(path: str | Path) -> PipsRunConfig:
    """The :class:`PipsRunConfig` in a YAML file; errors name the file."""
    return read_yaml_config(path, PipsRunConfig.from_dict)


def start_run(config: PipsRunConfig) -> PiceTrainer:
    """A fresh trainer for ``config``, writing to ``config.out`` (None: no checkpoints).

    Raises:
        FileExistsError: ``out`` already holds a run (continue it with :func:`resume_run`).
        ValueError: an unknown setting or system, or a count that is not a positive integer.
    """
    train_config = config.train_config()
    out = None if config.out is None else Path(config.out)
    if system_kind(config.system) == "toy":
        return ToyTrainer(train_config, out=out)
    from mlpot.pips.molecular.trainer import MolecularTrainer

    return MolecularTrainer(train_config, out=out)


def new_run(system: str, out: Optional[Path], potential: Optional[str] = None, **settings) -> PiceTrainer:
    """A fresh trainer for ``system`` writing to ``out``; ``settings`` (training keys; None values
    ignored) override the system's defaults; ``potential`` (mlpot model file) only for molecules.
    The same as :func:`start_run` of a :class:`PipsRunConfig`."""
    training = {key: value for key, value in settings.items() if value is not None}
    return start_run(PipsRunConfig(system, None if out is None else str(out), potential, training))


def load_run(out: Path, purpose: str = "PIPS run", system: Optional[str] = None,
             exported: bool = True) -> PiceTrainer:
    """The run in ``out`` as its checkpoint left it, toy or molecular as it was started, for sampling
    and reports; ``purpose`` (the option or command reading it) starts error messages.

    ``system``: refuse the run unless it is of this system (a user who names the system they expect).
    ``exported``: accept an exported policy (:meth:`~mlpot.pips.trainer.PiceTrainer.export`).

    Raises:
        FileNotFoundError: no checkpoint in ``out``.
        UnsafeCheckpointError: the checkpoint holds Python objects beyond tensors and plain types (not loaded).
        ValueError: not a readable PIPS checkpoint of this format, of another system than ``system`` or
            the policy of another system; an exported one when ``exported`` is False
            (:class:`~mlpot.pips.trainer.ExportedRunError`).
    """
    path = Path(out) / CHECKPOINT_NAME
    state = read_checkpoint(path, CHECKPOINT_VERSION, CHECKPOINT_KIND, purpose)
    config = state.get("config")
    saved = config.get("system") if isinstance(config, dict) else None
    if saved is None:
        raise ValueError(f"{purpose}: {path} names no PIPS system in its configuration")
    if system is not None and system != saved:
        raise ValueError(f"{purpose}: {out} holds a policy of {saved}, not of {system}")
    if not exported:
        refuse_exported(state, path, purpose)
    if system_kind(saved) == "toy":
        return ToyTrainer.resume(out, state, purpose)
    from mlpot.pips.molecular.peptides import peptide_transition
    from mlpot.pips.molecular.trainer import MolecularTrainer

    try:
        peptide_transition(saved)
    except KeyError as error:
        raise ValueError(f"{purpose}: {path}: {error.args[0]}") from None
    return MolecularTrainer.resume(out, state, purpose)


def resume_run(out: Path, purpose: str = "PIPS run", system: Optional[str] = None) -> PiceTrainer:
    """The run in ``out`` continued from its checkpoint, to train further: :func:`load_run` that
    refuses an exported policy (:class:`~mlpot.pips.trainer.ExportedRunError`), whose optimiser
    state, generator and replay buffer are gone."""
    return load_run(out, purpose, system, exported=False)


def export_run(run: Path, out: Path) -> Path:
    """Write the policy of the run in ``run`` to ``out``/checkpoint.pt without optimiser state,
    generator or replay buffer (:meth:`~mlpot.pips.trainer.PiceTrainer.export`); returns the file.
    ``out`` must not hold a checkpoint yet."""
    if Path(out).resolve() == Path(run).resolve():
        raise ValueError(f"export: {out} is the run itself; export into another folder")
    if (Path(out) / CHECKPOINT_NAME).exists():  # before loading the run: nothing is overwritten
        raise FileExistsError(f"export: {out} already holds a PIPS run ({CHECKPOINT_NAME}); export into another folder")
    return load_run(run, "export").export(Path(out))
