"""PIPS on two-dimensional toy systems, pure torch: ``systems`` (double well, Müller–Brown),
``dynamics`` (batched controlled Langevin rollouts), ``policy``, ``metrics`` (THP, channel usage)
and ``trainer``."""

from mlpot.pips.toy.dynamics import controlled_langevin_rollout
from mlpot.pips.toy.systems import TOY_SYSTEMS, ToySystem, toy_system
from mlpot.pips.toy.trainer import ToyTrainConfig, ToyTrainer

__all__ = ["TOY_SYSTEMS", "ToySystem", "ToyTrainConfig", "ToyTrainer", "controlled_langevin_rollout", "toy_system"]
