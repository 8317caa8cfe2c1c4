"""PICE training on the 2D toy systems (:mod:`mlpot.pips.toy.systems`): rollouts in torch
(:mod:`mlpot.pips.toy.dynamics`), the squared distance to the target minimum as terminal cost, THP
and channel usage as the paths' summary. The loop, checkpoints and resume are
:class:`mlpot.pips.trainer.PiceTrainer`'s."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Tuple

import torch

from mlpot.pips.cost import squared_distance_to_target
from mlpot.pips.dynamics import LangevinSettings, Rollout, control_weight
from mlpot.pips.toy.dynamics import controlled_langevin_rollout, maxwell_boltzmann_velocities
from mlpot.pips.toy.metrics import channel_fractions, hits_target
from mlpot.pips.toy.policy import toy_policy
from mlpot.pips.toy.systems import ToySystem, toy_system
from mlpot.pips.trainer import PathEvaluation, PiceTrainConfig, PiceTrainer


@dataclass
class ToyTrainConfig(PiceTrainConfig):
    """Settings of a toy PICE run; the defaults train the double well to THP ≥ 0.9 in ~200 iterations.

    ``lam`` λ is in the unit of φ (squared length): 0.01 asks for paths that end within ~0.1 of the
    target (softer targets let paths arrive late and stop short). ``n_steps`` and ``friction``
    default to the system's. ``symmetric`` is explained in :class:`mlpot.pips.toy.policy.MirrorSymmetrizedPolicy`.
    """

    system: str = "double-well"
    n_steps: Optional[int] = None
    friction: Optional[float] = None
    policy: str = "force"
    use_velocities: bool = True
    symmetric: bool = False          # symmetrise the policy under the system's mirror (double well: y -> -y)


@dataclass
class SampleSummary:
    """THP and channel usage of a batch of paths."""

    thp: float
    upper: float
    lower: float


def summarise_paths(system: ToySystem, rollout: Rollout) -> SampleSummary:
    """Fraction of paths ending in the target basin and, among those, the channel fractions."""
    hits = hits_target(rollout.final_positions, system.target_tensor(rollout.positions.dtype), system.target_radius)
    fractions = {"upper": float("nan"), "lower": float("nan")}
    if system.channel is not None:
        fractions = channel_fractions(system.channel(rollout.positions), hits)
    return SampleSummary(thp=float(hits.double().mean()), **fractions)


class ToyTrainer(PiceTrainer):
    """Trains a toy policy; ``out`` (optional) receives ``checkpoint.pt`` after every iteration."""

    config_type = ToyTrainConfig

    def __init__(self, config: ToyTrainConfig, out: Path | None = None, resume: bool = False):
        config.validate()
        self.system = toy_system(config.system)
        self.n_steps = config.n_steps or self.system.n_steps
        self.settings = LangevinSettings(self.system.timestep, config.friction or self.system.friction,
                                         self.system.kT, config.controlled_noise_fraction)
        self.mass = torch.tensor(self.system.mass, dtype=torch.float64)
        self.control_weight = control_weight(self.settings, self.mass, config.lam)
        with torch.random.fork_rng():
            torch.manual_seed(config.seed)
            mirror = self.system.mirror if config.symmetric else None
            if config.symmetric and mirror is None:
                raise ValueError(f"toy system {config.system!r} has no mirror symmetry to build into the policy")
            self.policy = toy_policy(config.policy, 2, config.hidden, config.use_velocities, mirror).double()
        self._start_training(config, out, resume)

    def rollout(self, n_paths: int | None = None, generator: torch.Generator | None = None,
                averaged: bool = False) -> Tuple[Rollout, Dict[str, float]]:
        """Controlled paths with the current policy, or its moving average if ``averaged``
        (``n_paths`` defaults to the training batch, ``generator`` to the training one)."""
        n_paths = n_paths or self.config.n_paths
        generator = generator or self.generator
        policy = self.average.module if averaged else self.policy
        start = self.system.start_tensor().expand(n_paths, 2).clone()
        velocities = maxwell_boltzmann_velocities(n_paths, torch.Size([2]), self.mass, self.system.kT, generator)
        return controlled_langevin_rollout(self.system.forces, policy, start, velocities, self.settings,
                                           self.n_steps, generator, self.mass), {}

    def terminal_cost(self, rollout: Rollout) -> torch.Tensor:
        return squared_distance_to_target(rollout.final_positions, self.system.target_tensor())

    def summarise(self, rollout: Rollout) -> Dict[str, float]:
        return dataclasses.asdict(summarise_paths(self.system, rollout))

    def evaluate(self, n_paths: int, seed: int, averaged: bool = True) -> PathEvaluation:
        """THP and channel usage (``metrics["upper"]``, ``metrics["lower"]``) of ``n_paths`` fresh
        controlled paths of the averaged (or current) policy, with the paths; they use their own
        generator, so training's random numbers are untouched."""
        rollout, _ = self.rollout(n_paths, torch.Generator().manual_seed(seed), averaged)
        summary = summarise_paths(self.system, rollout)
        return PathEvaluation(thp=summary.thp, metrics=dataclasses.asdict(summary), rollout=rollout)
