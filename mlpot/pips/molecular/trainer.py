"""PICE training of a molecular control policy with rollouts in OpenMM (alanine dipeptide,
polyproline, chignolin: :mod:`mlpot.pips.molecular.peptides`).

The loop, checkpoints and exact resume are :class:`mlpot.pips.trainer.PiceTrainer`'s; this module
supplies the OpenMM rollouts (:mod:`mlpot.pips.molecular.rollout`: N replicas in one Context, in implicit
solvent under a non-periodic cutoff, or the single-copy System stepped replica by replica with
``replica_layout``), the terminal cost and the path metrics. Units are OpenMM's throughout (nm, ps, kJ/mol, kJ/mol/nm;
see :mod:`mlpot.pips.molecular.rollout`); λ is in nm², the unit of the terminal cost.

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

Metrics (:mod:`mlpot.pips.molecular.path_metrics`) per iteration (training paths: THP, final heavy-atom
RMSD to the target after Kabsch alignment (Å), EPD) and in :meth:`MolecularTrainer.evaluate`
(also ETS and the maximum *unbiased* energy along the paths, kJ/mol, which need one energy
evaluation per frame, and the work done by the control). :meth:`~MolecularTrainer.evaluate_control`
runs any control, e.g. the baselines of :mod:`mlpot.pips.molecular.baselines`, the same way.
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
from mlpot.pips.molecular.endpoints import ENDPOINTS, Endpoints, transition_endpoints
from mlpot.pips.molecular.implicit_solvent import solvent_forcefield_files
from mlpot.pips.molecular.integrator import check_slow_force_interval, langevin_settings
from mlpot.pips.molecular.path_metrics import EvaluatedPaths, MolecularPathMetrics
from mlpot.pips.molecular.peptides import peptide_transition
from mlpot.pips.molecular.policy import (
    AlignedForcePolicy,
    DistanceEnergyPolicy,
    TargetGuidedPolicy,
    with_network_dtype,
)
from mlpot.pips.molecular.replicas import build_replicas
from mlpot.pips.molecular.rollout import ControlFunction, ReplicaRunner, concatenated, replica_runner
from mlpot.pips.trainer import (
    CHECKPOINT_KIND,
    CHECKPOINT_NAME,
    CHECKPOINT_VERSION,
    PathEvaluation,
    PiceTrainConfig,
    PiceTrainer,
)
from mlpot.runs import read_checkpoint

MOLECULAR_POLICIES = ("distance-energy", "aligned-force")
NETWORK_DTYPES = {"float64": torch.float64, "float32": torch.float32}
MAX_PATHS_PER_RUNNER = 64  # evaluations of more paths run in batches of this many (evaluate_control)
PS_PER_FS = 1e-3


@dataclass
class MolecularTrainConfig(PiceTrainConfig):
    """Settings of a molecular PICE run (defaults: alanine dipeptide, 16 paths × 500 steps of 1 fs,
    300 K, friction 1/ps, amber14 vacuum).

    ``potential``: an mlpot model file as the physical potential (None: the system's force field).
    ``lam`` in nm². ``policy``: ``distance-energy`` or ``aligned-force``
    (:mod:`mlpot.pips.molecular.policy`); ``length_scale_nm`` and ``force_scale_kj_mol_nm`` set
    what one unit of the network's input and output means. ``guide_strength_kj_mol_nm2``: wrap the
    policy in :class:`~mlpot.pips.molecular.policy.TargetGuidedPolicy` with this initial pull
    strength (None: no pull, the policy starts at zero control).

    Why these defaults (alanine dipeptide, measured on 2 CPU cores): with R = λ/ν the control
    cost ½uᵀRu dt/λ does not depend on λ, only the terminal cost φ/λ does. Steered MD that reaches
    C7ax costs ~1800 (friction 1/ps) in those units while hitting instead of missing lowers φ/λ by
    only ~0.02 nm²/λ, so λ must be ~10⁻⁵ nm² for the hits to be worth their control (λ = 10⁻⁴ let
    PICE trade the hits away: THP 0.86 → 0.62 in 130 iterations as the control cost fell 1870 →
    680). The importance weights are then degenerate (ESS ≈ 1; the Girsanov noise term alone has
    a standard deviation of √(2 × control cost)), so the weights are tempered to an ESS of at least
    ``min_ess_fraction`` × N = 4 paths. The aligned-force residual is 2.5× cheaper per iteration
    than the distance-energy one (no second derivatives)."""

    system: str = "alanine-dipeptide"
    potential: Optional[str] = None
    n_paths: int = 16
    n_steps: int = 500
    timestep_fs: float = 1.0
    temperature_K: float = 300.0
    friction_per_ps: float = 1.0
    lam: float = 2e-5
    policy: str = "aligned-force"
    hidden: List[int] = field(default_factory=lambda: [128, 128])
    length_scale_nm: float = units.NM_PER_ANGSTROM  # 1 Å: one unit of the network's position input
    force_scale_kj_mol_nm: float = 100.0
    guide_strength_kj_mol_nm2: Optional[float] = 1e4
    guide_knots: int = 11
    terminal_cost: str = "aligned-rmsd"
    terminal_atoms: str = "heavy"
    lr: float = 1e-3
    final_lr: Optional[float] = 1e-4
    iterations: int = 1000
    ema_decay: float = 0.9
    min_ess_fraction: float = 0.25
    # implicit-solvent replicas: "one-context" (all copies in one Context, 4 nm non-periodic cutoff) or
    # "single-copy" (no cutoff; "context-per-replica" in older runs); see mlpot.pips.molecular.replicas
    replica_layout: str = "one-context"
    # the system's implicit solvent (None), or "gbn2", "obc2" (native GBSAOBCForce), "vacuum"; see
    # mlpot.pips.molecular.implicit_solvent
    implicit_solvent: Optional[str] = None
    # start and target: "as-shipped" (minima of the shipped force field) or "minimised" on the run's physics, the
    # default of runs with a learned potential (mlpot.pips.runs); see mlpot.pips.molecular.endpoints
    endpoints: str = "as-shipped"
    # the non-bonded forces (and implicit solvent, or the model) act every n-th step, bonded terms every step
    # (impulse r-RESPA; 1: every force every step); see mlpot.pips.molecular.integrator
    slow_force_interval: int = 1
    # the dtype of the policy network's weights and arithmetic: "float64" or "float32" (half the memory and
    # matrix-product time; geometry, forces, kicks and path weights stay float64); see mlpot.pips.molecular.policy
    network_dtype: str = "float64"

    def validate(self) -> None:
        super().validate()
        check_slow_force_interval(self.slow_force_interval)
        if self.network_dtype not in NETWORK_DTYPES:
            raise ValueError(f"network_dtype must be one of {', '.join(NETWORK_DTYPES)}, got {self.network_dtype!r}")


def resolve_potential(potential: str) -> Path:
    """The model file of a run's ``potential``: the path as given (absolute, or relative to the working directory),
    else relative to this repository (where shipped potentials live, e.g. ``systems/alanine-dipeptide/model_xtb.pt``,
    so that a shipped run samples from any directory). FileNotFoundError in one line when neither exists."""
    from mlpot.systems import SYSTEMS_DIR

    repository = SYSTEMS_DIR.parent
    path = Path(potential)
    if path.exists() or path.is_absolute():
        if not path.exists():
            raise FileNotFoundError(f"the run's potential {potential} does not exist")
        return path
    shipped = repository / path
    if shipped.exists():
        return shipped
    raise FileNotFoundError(f"the run's potential {potential} exists neither in the working directory nor in the "
                            f"repository ({repository})")


def _content_hash(model_file: Path) -> str:
    from mlpot.deploy import read_metadata

    return str(read_metadata(model_file)["content_hash"])


def _heavy_atoms(topology) -> List[int]:
    return [atom.index for atom in topology.atoms() if atom.element is None or atom.element.symbol != "H"]


class MolecularTrainer(PiceTrainer):
    """Trains a molecular policy; ``out`` (optional) receives ``checkpoint.pt`` after every iteration.

    ``platform``/``threads`` choose the OpenMM platform (they do not change the results' meaning
    and are not part of the checkpointed configuration); ``"auto"`` times the platforms OpenMM has here on the
    replicas and takes the fastest (:func:`~mlpot.pips.molecular.replicas.choose_platform`)."""

    config_type = MolecularTrainConfig

    def __init__(self, config: MolecularTrainConfig, out: Path | None = None, resume: bool = False,
                 platform: str = "auto", threads: int = 1):
        config.validate()
        if config.policy not in MOLECULAR_POLICIES:
            raise ValueError(f"unknown molecular policy {config.policy!r}; known: {', '.join(MOLECULAR_POLICIES)}")
        if config.terminal_cost not in ("aligned-rmsd", "pairwise-distance"):
            raise ValueError(f"terminal_cost must be 'aligned-rmsd' or 'pairwise-distance', "
                             f"got {config.terminal_cost!r}")
        if config.terminal_atoms not in ("heavy", "all"):
            raise ValueError(f"terminal_atoms must be 'heavy' or 'all', got {config.terminal_atoms!r}")
        self.transition = peptide_transition(config.system)
        self.forcefield_files = solvent_forcefield_files(self.transition.forcefield_files, config.implicit_solvent)
        self.potential = None if config.potential is None else resolve_potential(config.potential)
        # read once: every checkpoint records it, and reading a model file's metadata checks its whole seal
        self.potential_content_hash = None if self.potential is None else _content_hash(self.potential)
        self.topology = self.transition.load()[0]
        self.endpoints = self._endpoints(config)
        self.start_nm, target_nm = self.endpoints.start_nm, self.endpoints.target_nm
        self.target = torch.from_numpy(target_nm)
        self.heavy_atoms = _heavy_atoms(self.topology)
        self.terminal_atoms = self.heavy_atoms if config.terminal_atoms == "heavy" else list(range(len(target_nm)))
        self.settings = langevin_settings(config.timestep_fs * PS_PER_FS, config.friction_per_ps,
                                          config.temperature_K, config.controlled_noise_fraction)
        self.platform, self.threads, self.replica_layout = platform, threads, config.replica_layout
        self.slow_force_interval = config.slow_force_interval
        self._runners: Dict[int, ReplicaRunner] = {}
        runner = self.runner(config.n_paths)
        self.control_weight = control_weight(self.settings, runner.mass, config.lam)  # (n_atoms, 1)
        self.path_metrics = MolecularPathMetrics(self.transition, self.target, self.heavy_atoms,
                                                 runner.replicas.single_system, runner.platform_choice.name, threads,
                                                 start_nm=self.start_nm)
        with torch.random.fork_rng():
            torch.manual_seed(config.seed)
            self.policy = with_network_dtype(self._build_policy(config, target_nm).double(),
                                             NETWORK_DTYPES[config.network_dtype])
        self._start_training(config, out, resume)

    def _endpoints(self, config: MolecularTrainConfig) -> Endpoints:
        """Start and target as shipped, or relaxed on the run's physics (one copy of the molecule)."""
        if config.endpoints not in ENDPOINTS:
            raise ValueError(f"endpoints must be one of {', '.join(ENDPOINTS)}, got {config.endpoints!r}")
        system = None
        if config.endpoints == "minimised":
            shipped_start = self.transition.start_positions_nm
            system = build_replicas(self.topology, shipped_start, 1, self.forcefield_files, self.potential,
                                    layout="single-copy").single_system
        return transition_endpoints(self.transition, system, config.endpoints)

    def _build_policy(self, config: MolecularTrainConfig, target_nm: np.ndarray) -> torch.nn.Module:
        if config.policy == "distance-energy":
            policy = DistanceEnergyPolicy(len(target_nm), config.hidden, length_scale=config.length_scale_nm,
                                          force_scale=config.force_scale_kj_mol_nm)
        else:
            carbon_speed_nm_ps = float(np.sqrt(self.settings.kT / 12.0))
            policy = AlignedForcePolicy(torch.from_numpy(target_nm), config.hidden, use_velocities=True,
                                        length_scale=config.length_scale_nm, velocity_scale=carbon_speed_nm_ps,
                                        force_scale=config.force_scale_kj_mol_nm)
        if config.guide_strength_kj_mol_nm2 is None:
            return policy
        return TargetGuidedPolicy(torch.from_numpy(target_nm), self.terminal_atoms, policy,
                                  config.guide_strength_kj_mol_nm2, config.guide_knots)

    def state(self) -> Dict:
        """The checkpoint (:meth:`PiceTrainer.state`), with the content hash of the run's potential, if any."""
        state = super().state()
        if self.potential_content_hash is not None:
            state["potential_content_hash"] = self.potential_content_hash
        return state

    @classmethod
    def resume(cls, out: Path, state: Dict | None = None, purpose: str = "--resume"):
        """:meth:`PiceTrainer.resume`, after checking that the run's potential file (if any) is still the model the
        policy was trained with (before anything is built on it)."""
        if state is None:
            state = read_checkpoint(Path(out) / CHECKPOINT_NAME, CHECKPOINT_VERSION, CHECKPOINT_KIND, purpose)
        saved, potential = state.get("potential_content_hash"), state.get("config", {}).get("potential")
        if saved is not None and potential is not None:
            path = resolve_potential(potential)
            found = _content_hash(path)
            if found != saved:
                raise ValueError(f"{purpose}: the potential {path} is not the model this policy was trained with "
                                 f"(its parameters differ: content hash {found[:12]}, trained with {str(saved)[:12]})")
        return super().resume(out, state, purpose)

    def system_atoms(self) -> List[str]:
        """``residue:atom`` names of the molecule, in order (checkpoints record them)."""
        return [f"{atom.residue.name}:{atom.name}" for atom in self.topology.atoms()]

    def runner(self, n_paths: int) -> ReplicaRunner:
        """The OpenMM Context holding ``n_paths`` replicas (built once per batch size)."""
        if n_paths not in self._runners:
            self._runners[n_paths] = replica_runner(self.topology, self.start_nm, n_paths, self.settings,
                                                    self.forcefield_files, self.potential,
                                                    self.platform, self.threads, layout=self.replica_layout,
                                                    slow_force_interval=self.slow_force_interval)
        return self._runners[n_paths]

    # ---- what the loop needs
    def rollout(self, n_paths: int | None = None, generator: torch.Generator | None = None,
                averaged: bool = False) -> Tuple[Rollout, Dict[str, float]]:
        """Controlled paths of the current (or averaged) policy in OpenMM, and where the time went. The current
        policy's paths carry its recorded inputs for the PICE loss (:attr:`Rollout.policy_inputs`)."""
        policy = self.average.module if averaged else self.policy
        record_inputs = not averaged and self.config.objective == "pice"
        result = self.runner(n_paths or self.config.n_paths).run(policy, self.start_nm, self.config.n_steps,
                                                                  generator or self.generator, record_inputs)
        return result.rollout, result.bookkeeping()

    def terminal_cost(self, rollout: Rollout) -> torch.Tensor:
        atoms = self.terminal_atoms
        return TERMINAL_COSTS[self.config.terminal_cost](rollout.final_positions[:, atoms], self.target[atoms])

    def summarise(self, rollout: Rollout) -> Dict[str, float]:
        return self.path_metrics.final_frames(rollout)

    def evaluate(self, n_paths: int, seed: int, averaged: bool = True) -> PathEvaluation:
        """Metrics (:mod:`mlpot.pips.molecular.path_metrics`: THP, RMSD, EPD, ETS, energies in kJ/mol, bias work,
        wall time) of ``n_paths`` fresh paths of the averaged (or current) policy, with the paths; their
        own generator, so training's random numbers are untouched."""
        evaluated = self.evaluate_control(self.average.module if averaged else self.policy, n_paths, seed)
        return PathEvaluation(thp=evaluated.metrics["thp"], metrics=evaluated.metrics, rollout=evaluated.rollout)

    def evaluate_control(self, control: ControlFunction, n_paths: int, seed: int) -> EvaluatedPaths:
        """``n_paths`` paths of any control u(x, v, t/T) (kJ/mol/nm; a policy or a baseline of
        :mod:`mlpot.pips.molecular.baselines`) from the training start with the training integrator and
        ``n_steps``, random numbers from ``seed`` (the same seed gives every control the same start
        velocities and kicks), with their metrics. More than :data:`MAX_PATHS_PER_RUNNER` paths run in
        batches of that many, one after the other (one Context of N vacuum copies holds N² cross-copy exclusions)."""
        if isinstance(n_paths, bool) or not isinstance(n_paths, int) or n_paths < 1:
            raise ValueError(f"the number of paths must be a positive integer, got {n_paths!r}")
        generator = torch.Generator().manual_seed(seed)
        batches = [MAX_PATHS_PER_RUNNER] * (n_paths // MAX_PATHS_PER_RUNNER) + [n_paths % MAX_PATHS_PER_RUNNER]
        results = [self.runner(size).run(control, self.start_nm, self.config.n_steps, generator)
                   for size in batches if size > 0]
        return self.path_metrics.evaluate(results[0] if len(results) == 1 else concatenated(results))
