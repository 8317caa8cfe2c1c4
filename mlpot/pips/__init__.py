"""PIPS: collective-variable-free transition path sampling by path-integral stochastic optimal control.

A policy adds a force u_θ(x, v, t) to underdamped Langevin dynamics; it is trained by the
path-integral cross-entropy (PICE) method so that controlled paths go from a start to a target
state (Holdijk et al., NeurIPS 2023). Modules, each with one job:

- :mod:`~mlpot.pips.toy` — 2D toy systems (two-channel double well, Müller–Brown);
- :mod:`~mlpot.pips.dynamics` — controlled Langevin rollouts with recorded noise (torch, batched);
- :mod:`~mlpot.pips.geometry` — pairwise distances, Kabsch superposition, RMSD;
- :mod:`~mlpot.pips.cost` — terminal costs φ and the path cost S;
- :mod:`~mlpot.pips.weights` — importance weights and effective sample size;
- :mod:`~mlpot.pips.loss` — the PICE surrogate loss;
- :mod:`~mlpot.pips.policy`, :mod:`~mlpot.pips.molecular_policy` — force and energy policies;
- :mod:`~mlpot.pips.metrics` — THP, channel usage, EPD, ETS, work of the control;
- :mod:`~mlpot.pips.trainer` — the PICE training loop with checkpoints and exact resume, and the toy trainer;
- :mod:`~mlpot.pips.openmm_integrator` — the controlled Langevin integrator for OpenMM rollouts;
- :mod:`~mlpot.pips.replicas` — N non-interacting copies of a molecule: one OpenMM System, or one per copy (implicit solvent);
- :mod:`~mlpot.pips.openmm_rollout` — batched controlled rollouts in OpenMM (one Context, or one per replica), recorded as a Rollout;
- :mod:`~mlpot.pips.peptides` — molecular transitions (alanine dipeptide, polyproline, chignolin: start, target, target basin, φ/ψ);
- :mod:`~mlpot.pips.path_metrics` — the metrics of a set of molecular paths (THP, RMSD, EPD, ETS, bias work);
- :mod:`~mlpot.pips.molecular_trainer` — PICE training of a molecular policy (alanine dipeptide);
- :mod:`~mlpot.pips.baselines` — unbiased and steered MD, run like the policy's paths;
- :mod:`~mlpot.pips.report`, :mod:`~mlpot.pips.report_plots` — ``mlpot pips report``: policy vs baselines, table and PNGs.
"""

from mlpot.pips.cost import TERMINAL_COSTS, PathCost, path_cost
from mlpot.pips.dynamics import LangevinSettings, Rollout, control_weight, controlled_langevin_rollout
from mlpot.pips.loss import pice_surrogate_loss, policy_controls
from mlpot.pips.toy import TOY_SYSTEMS, ToySystem, toy_system
from mlpot.pips.trainer import ToyTrainConfig, ToyTrainer
from mlpot.pips.weights import EffectiveSampleSize, effective_sample_size, importance_weights, tempered_weights

__all__ = [
    "EffectiveSampleSize", "LangevinSettings", "PathCost", "Rollout", "TERMINAL_COSTS", "TOY_SYSTEMS", "ToySystem",
    "ToyTrainConfig", "ToyTrainer", "control_weight", "controlled_langevin_rollout", "effective_sample_size",
    "importance_weights", "path_cost", "pice_surrogate_loss", "policy_controls", "tempered_weights", "toy_system",
]
