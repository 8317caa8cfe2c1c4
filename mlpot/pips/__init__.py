"""PIPS: collective-variable-free transition path sampling by path-integral stochastic optimal control.

A policy adds a force u_θ(x, v, t) to underdamped Langevin dynamics; it is trained by the
path-integral cross-entropy (PICE) method so that controlled paths go from a start to a target
state (Holdijk et al., NeurIPS 2023).

Shared by every system (this package's top level):

- :mod:`~mlpot.pips.dynamics` — the controlled Langevin scheme, its settings, the control-cost weight, :class:`Rollout`;
- :mod:`~mlpot.pips.geometry` — pairwise distances, Kabsch superposition, RMSD, dihedrals;
- :mod:`~mlpot.pips.cost` — terminal costs φ and the path cost S;
- :mod:`~mlpot.pips.weights` — importance weights and effective sample size;
- :mod:`~mlpot.pips.loss` — the PICE surrogate loss;
- :mod:`~mlpot.pips.gradients`, :mod:`~mlpot.pips.policy` — forces from energies, the network every policy uses;
- :mod:`~mlpot.pips.metrics` — EPD, ETS, work of the control;
- :mod:`~mlpot.pips.trainer` — the PICE training loop with checkpoints and exact resume; :class:`PathEvaluation`;
- :mod:`~mlpot.pips.runs` — starting and continuing runs by system name.

The 2D toys in torch, :mod:`mlpot.pips.toy`: ``systems`` (double well, Müller–Brown), ``dynamics``
(batched torch rollouts), ``policy``, ``metrics`` (THP, channel usage), ``trainer``.

Molecules in OpenMM, :mod:`mlpot.pips.molecular`: ``integrator`` (the controlled Langevin
integrator), ``replicas`` (N non-interacting copies in one System, or one per copy), ``rollout``
(batched controlled rollouts, recorded as a Rollout), ``peptides`` (alanine dipeptide,
polyproline, chignolin: start, target, target basin, φ/ψ), ``policy``, ``trainer``,
``path_metrics`` (THP, RMSD, EPD, ETS, bias work), ``baselines`` (unbiased and steered MD),
``report`` and ``report_plots`` (``mlpot pips report``), ``trajectories`` (DCD + PDB).

Importing this package loads torch but neither OpenMM nor the potentials' models (e3nn).
"""

from mlpot.pips.cost import TERMINAL_COSTS, PathCost, path_cost
from mlpot.pips.dynamics import LangevinSettings, Rollout, control_weight
from mlpot.pips.loss import pice_surrogate_loss, policy_controls
from mlpot.pips.trainer import PathEvaluation, PiceTrainConfig, PiceTrainer
from mlpot.pips.weights import EffectiveSampleSize, effective_sample_size, importance_weights, tempered_weights

__all__ = [
    "EffectiveSampleSize", "LangevinSettings", "PathCost", "PathEvaluation", "PiceTrainConfig", "PiceTrainer",
    "Rollout", "TERMINAL_COSTS", "control_weight", "effective_sample_size", "importance_weights", "path_cost",
    "pice_surrogate_loss", "policy_controls", "tempered_weights",
]
