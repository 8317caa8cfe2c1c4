"""PICE training of a molecular control policy with rollouts in OpenMM (alanine dipeptide first).

The loop, checkpoints and exact resume are :class:`mlpot.pips.trainer.PiceTrainer`'s; this module
supplies the OpenMM rollouts (:mod:`mlpot.pips.openmm_rollout`, N replicas in one Context), the
terminal cost and the path metrics. Units are OpenMM's throughout (nm, ps, kJ/mol, kJ/mol/nm;
see :mod:`mlpot.pips.openmm_rollout`); λ is in nm², the unit of the terminal cost.

Terminal cost φ (``terminal_cost``), over the **heavy atoms** (``terminal_atoms="heavy"``, 10 of
22 for alanine dipeptide; ``"all"`` uses every atom, as the reference code does), both invariant
under rotation and translation:

- ``aligned-rmsd`` (default): the squared RMSD after Kabsch superposition (proper rotations only).
- ``pairwise-distance``: the mean squared pairwise-distance error, the reference method's choice.
  Distances are also invariant under *reflection*, so this cost cannot tell a conformation from
  its mirror image: the mirror image of C7ax (φ≈60°, ψ≈−40°) lies near C7eq (φ≈−80°, ψ≈70°),
  which is reachable without crossing the φ = 0 barrier. Measured on alanine dipeptide (16 paths ×
  500 fs, 300 K, friction 1/ps): pulling down the gradient of the heavy-atom pairwise cost lowers
  it 10× from its unbiased value but puts 0 of 16 paths into C7ax (they stop near C7eq), while the
  same pull on the aligned RMSD (k = 10⁴ kJ/mol/nm²) puts 15 of 16 there.

Metrics per iteration (training paths) and in :meth:`MolecularTrainer.evaluate`:
THP (final (φ, ψ) in the target basin, :mod:`mlpot.pips.peptides`), final heavy-atom RMSD to the
target after Kabsch alignment (Å), EPD (1000 × mean squared pairwise-distance error, nm², all
atoms); ETS (mean over hit paths of the maximum *unbiased* potential energy along the path,
kJ/mol) only in :meth:`~MolecularTrainer.evaluate`, since it needs one energy evaluation per frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch

from mlpot import units
from mlpot.pips.cost import TERMINAL_COSTS
from mlpot.pips.dynamics import Rollout, control_weight
from mlpot.pips.geometry import aligned_rmsd
from mlpot.pips.metrics import pairwise_distance_error_x1000, transition_state_energy
from mlpot.pips.molecular_policy import AlignedForcePolicy, DistanceEnergyPolicy
from mlpot.pips.openmm_integrator import langevin_settings
from mlpot.pips.openmm_rollout import ReplicaRunner
from mlpot.pips.peptides import peptide_transition
from mlpot.pips.replicas import build_replica_system, potential_energies_kj_mol
from mlpot.pips.trainer import PiceTrainConfig, PiceTrainer

MOLECULAR_POLICIES = ("distance-energy", "aligned-force")
PS_PER_FS = 1e-3


@dataclass
class MolecularTrainConfig(PiceTrainConfig):
    """Settings of a molecular PICE run (defaults: alanine dipeptide, 16 paths × 500 steps of 1 fs,
    300 K, friction 1/ps, amber14 vacuum).

    ``potential``: an mlpot model file as the physical potential (None: the system's force field).
    ``lam`` in nm². ``policy``: ``distance-energy`` or ``aligned-force``
    (:mod:`mlpot.pips.molecular_policy`); ``length_scale_nm`` and ``force_scale_kj_mol_nm`` set
    what one unit of the network's input and output means."""

    system: str = "alanine-dipeptide"
    potential: Optional[str] = None
    n_paths: int = 16
    n_steps: int = 500
    timestep_fs: float = 1.0
    temperature_K: float = 300.0
    friction_per_ps: float = 1.0
    lam: float = 5e-4
    policy: str = "distance-energy"
    hidden: List[int] = field(default_factory=lambda: [128, 128])
    length_scale_nm: float = 0.1
    force_scale_kj_mol_nm: float = 100.0
    terminal_cost: str = "aligned-rmsd"
    terminal_atoms: str = "heavy"
    lr: float = 1e-3
    final_lr: Optional[float] = 1e-4
    iterations: int = 300
    ema_decay: float = 0.9


def _heavy_atoms(topology) -> List[int]:
    return [atom.index for atom in topology.atoms() if atom.element is None or atom.element.symbol != "H"]


class MolecularTrainer(PiceTrainer):
    """Trains a molecular policy; ``out`` (optional) receives ``checkpoint.pt`` after every iteration.

    ``platform``/``threads`` choose the OpenMM platform (they do not change the results' meaning
    and are not part of the checkpointed configuration)."""

    config_type = MolecularTrainConfig

    def __init__(self, config: MolecularTrainConfig, out: Path | None = None, resume: bool = False,
                 platform: str = "CPU", threads: int = 1):
        if config.policy not in MOLECULAR_POLICIES:
            raise ValueError(f"unknown molecular policy {config.policy!r}; known: {', '.join(MOLECULAR_POLICIES)}")
        if config.terminal_cost not in ("aligned-rmsd", "pairwise-distance"):
            raise ValueError(f"terminal_cost must be 'aligned-rmsd' or 'pairwise-distance', got {config.terminal_cost!r}")
        if config.terminal_atoms not in ("heavy", "all"):
            raise ValueError(f"terminal_atoms must be 'heavy' or 'all', got {config.terminal_atoms!r}")
        self.transition = peptide_transition(config.system)
        self.topology, self.start_nm, target_nm = self.transition.load()
        self.target = torch.from_numpy(target_nm)
        self.heavy_atoms = _heavy_atoms(self.topology)
        self.terminal_atoms = self.heavy_atoms if config.terminal_atoms == "heavy" else list(range(len(target_nm)))
        self.settings = langevin_settings(config.timestep_fs * PS_PER_FS, config.friction_per_ps,
                                          config.temperature_K, config.controlled_noise_fraction)
        self.platform, self.threads = platform, threads
        self.potential = None if config.potential is None else Path(config.potential)
        self._runners: Dict[int, ReplicaRunner] = {}
        runner = self.runner(config.n_paths)
        self.control_weight = control_weight(self.settings, runner.mass, config.lam)  # (n_atoms, 1)
        with torch.random.fork_rng():
            torch.manual_seed(config.seed)
            self.policy = self._build_policy(config, target_nm).double()
        self._start_training(config, out, resume)

    def _build_policy(self, config: MolecularTrainConfig, target_nm: np.ndarray) -> torch.nn.Module:
        if config.policy == "distance-energy":
            return DistanceEnergyPolicy(len(target_nm), config.hidden, length_scale=config.length_scale_nm,
                                        force_scale=config.force_scale_kj_mol_nm)
        carbon_speed_nm_ps = float(np.sqrt(self.settings.kT / 12.0))
        return AlignedForcePolicy(torch.from_numpy(target_nm), config.hidden, use_velocities=True,
                                  length_scale=config.length_scale_nm, velocity_scale=carbon_speed_nm_ps,
                                  force_scale=config.force_scale_kj_mol_nm)

    def runner(self, n_paths: int) -> ReplicaRunner:
        """The OpenMM Context holding ``n_paths`` replicas (built once per batch size)."""
        if n_paths not in self._runners:
            replicas = build_replica_system(self.topology, self.start_nm, n_paths, model=self.potential)
            self._runners[n_paths] = ReplicaRunner(replicas, self.settings, self.platform, self.threads)
        return self._runners[n_paths]

    # ---- what the loop needs
    def rollout(self, n_paths: int | None = None, generator: torch.Generator | None = None,
                averaged: bool = False) -> Tuple[Rollout, Dict[str, float]]:
        """Controlled paths of the current (or averaged) policy in OpenMM, and where the time went."""
        policy = self.average.module if averaged else self.policy
        result = self.runner(n_paths or self.config.n_paths).run(policy, self.start_nm, self.config.n_steps,
                                                                  generator or self.generator)
        timings = result.timings
        return result.rollout, {"openmm_seconds": timings.openmm, "policy_seconds": timings.policy,
                                "python_seconds": timings.overhead, "blown_up": result.dropped}

    def terminal_cost(self, rollout: Rollout) -> torch.Tensor:
        atoms = self.terminal_atoms
        return TERMINAL_COSTS[self.config.terminal_cost](rollout.final_positions[:, atoms], self.target[atoms])

    def summarise(self, rollout: Rollout) -> Dict[str, float]:
        finite = rollout.finite_paths()
        final = rollout.final_positions[finite]
        heavy = self.heavy_atoms
        hits = self.transition.in_target_basin(final)
        rmsd_A = aligned_rmsd(final[:, heavy], self.target[heavy]) * units.ANGSTROM_PER_NM
        return {"thp": float(hits.double().sum()) / rollout.n_paths, "rmsd_A": float(rmsd_A.mean()),
                "epd": float(pairwise_distance_error_x1000(final, self.target).mean())}

    def evaluate(self, n_paths: int, seed: int, averaged: bool = True) -> Tuple[Dict[str, float], Rollout]:
        """Metrics of ``n_paths`` fresh paths of the averaged (or current) policy, with ETS (kJ/mol,
        unbiased potential) and the highest energy over all paths; their own generator, so training's
        random numbers are untouched. Returns (metrics, rollout)."""
        rollout, timings = self.rollout(n_paths, torch.Generator().manual_seed(seed), averaged)
        metrics = {**self.summarise(rollout), **timings}
        finite = rollout.finite_paths()
        paths = rollout.positions[finite]
        energies = torch.from_numpy(potential_energies_kj_mol(self.runner(n_paths).replicas.single_system,
                                                              paths.numpy(), self.platform, self.threads))
        hits = self.transition.in_target_basin(paths[:, -1])
        metrics["ets_kj_mol"] = transition_state_energy(energies, hits)
        metrics["mean_max_energy_kj_mol"] = float(energies.max(dim=1).values.mean())
        return metrics, rollout
