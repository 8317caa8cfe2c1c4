"""Starting and continuing PIPS training runs by system name: toy systems train in torch
(:class:`~mlpot.pips.trainer.ToyTrainer`), molecules in OpenMM
(:class:`~mlpot.pips.molecular_trainer.MolecularTrainer`)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

from mlpot.pips.toy import TOY_SYSTEMS
from mlpot.pips.trainer import (
    CHECKPOINT_KIND, CHECKPOINT_NAME, CHECKPOINT_VERSION, PiceTrainer, ToyTrainConfig, ToyTrainer,
)
from mlpot.runs import read_checkpoint


def new_run(system: str, out: Optional[Path], potential: Optional[str] = None, **settings) -> PiceTrainer:
    """A fresh trainer for ``system`` writing to ``out``; ``settings`` (None values ignored) override
    the system's defaults (a molecule's ``run_defaults`` in :mod:`mlpot.pips.peptides`) and the
    configuration's; ``potential`` (mlpot model file) only for molecules.

    Raises:
        FileExistsError: ``out`` already holds a run (continue it with :func:`resume_run`).
        ValueError: an unknown setting or system, or a count that is not a positive integer.
    """
    settings = {key: value for key, value in settings.items() if value is not None}
    config_type = ToyTrainConfig if system in TOY_SYSTEMS else None
    if config_type is None:
        from mlpot.pips.molecular_trainer import MolecularTrainConfig as config_type
    known = {field.name for field in dataclasses.fields(config_type)}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise ValueError(f"unknown PIPS setting(s) {', '.join(unknown)} for {system}; known: {', '.join(sorted(known))}")
    if system in TOY_SYSTEMS:
        if potential is not None:
            raise ValueError("--potential applies to molecular systems, not to the 2D toys")
        return ToyTrainer(ToyTrainConfig(system=system, **settings), out=out)
    from mlpot.pips.molecular_trainer import MolecularTrainConfig, MolecularTrainer
    from mlpot.pips.peptides import peptide_transition

    settings = {**peptide_transition(system).run_defaults, **settings}  # the system's defaults, then the caller's
    return MolecularTrainer(MolecularTrainConfig(system=system, potential=potential, **settings), out=out)


def parse_setting(assignment: str) -> tuple[str, object]:
    """``KEY=VALUE`` of ``mlpot pips train --set`` → (key, value parsed as YAML); unknown keys are
    refused by :func:`new_run`."""
    from mlpot.config import parse_assignment

    return parse_assignment(assignment, "KEY=VALUE, e.g. --set lam=1e-4")


def resume_run(out: Path, purpose: str = "PIPS run") -> PiceTrainer:
    """The run in ``out`` continued from its checkpoint, toy or molecular as it was started; ``purpose``
    (the option or command reading it) starts error messages.

    Raises:
        FileNotFoundError: no checkpoint in ``out``.
        UnsafeCheckpointError: the checkpoint holds Python objects beyond tensors and plain types (not loaded).
        ValueError: not a readable PIPS checkpoint.
    """
    state = read_checkpoint(Path(out) / CHECKPOINT_NAME, CHECKPOINT_VERSION, CHECKPOINT_KIND, purpose)
    config = state.get("config")
    system = config.get("system") if isinstance(config, dict) else None
    if system is None:
        raise ValueError(f"{purpose}: {Path(out) / CHECKPOINT_NAME} names no PIPS system in its configuration")
    if system in TOY_SYSTEMS:
        return ToyTrainer.resume(out, state, purpose)
    from mlpot.pips.molecular_trainer import MolecularTrainer

    return MolecularTrainer.resume(out, state, purpose)
