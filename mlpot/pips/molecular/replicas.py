"""N non-interacting copies of one molecule: the batch of PIPS replicas, in one of two layouts.

**All copies in one OpenMM System** (:class:`ReplicaSystem`, :func:`build_replica_system`; layout
``"one-context"``, the default): copy k sits at ``k · spacing_nm`` along x, and the copies must not
feel each other:

- **a vacuum force field** (amber14): the System is built by ``ForceField.createSystem`` on the
  N-copy topology with ``NoCutoff``; every pair of atoms in different copies is then made an
  exception of the ``NonbondedForce`` with zero charge product and zero ε, so the copies are
  exactly independent (and each copy's energy is its own vacuum energy).
- **implicit solvent** (amber14 + GBn2: a ``CustomGBForce``, which couples every pair of atoms
  through the Born radii, so no exception can switch it off): both the N-copy System and the
  single-copy reference (:attr:`ReplicaSystem.copy_system`) are built with ``CutoffNonPeriodic``
  and the same cutoff (default :data:`DEFAULT_IMPLICIT_CUTOFF_NM`), reaction field off (dielectric
  1, as OpenMM sets it with GB), and the copies are spaced by more than cutoff + the molecule's
  x-extent. No pair across copies is then ever within the cutoff, so every replica is exactly the
  single copy with that cutoff. A replica that leaves its slot (drifts closer than the cutoff to a
  neighbour's) is dropped like a blown-up one (:meth:`ReplicaSystem.left_slot`).
- **an mlpot model file** (``mlpot.plugins.openmm.create_system``): the model's cutoff is far
  below the spacing, so no pair across copies is ever within it (checked, and slots watched).

**The cutoff against NoCutoff.** While every pair of atoms *within* one copy is closer than the
cutoff (checked on the start structure: its farthest pair must lie below the cutoff), the cutoff
changes the energy by a constant and the forces not at all: the Born radii sum over every pair
either way, the GB pair term is shifted by −138.935485 (1 − 1/ε_solvent) q_i q_j / r_c and the
Coulomb term (reaction field off) by −138.935485 q_i q_j / r_c, both independent of the
positions. Measured on the shipped structures (amber14 + GBn2, CPU platform), E(cutoff) −
E(NoCutoff) with the 4.0 nm default: polyproline PPII +4.11, PPI +4.11; chignolin extended
−23.78, folded −23.78 kJ/mol (the shift scales as 1/r_c: +8.21 and −47.6 at 2.0 nm); largest force
difference 5e-4 kJ/mol/nm (single-precision noise). A pair stretched beyond the cutoff is cut:
chignolin's extended start spans 3.12 nm, so at 2.0 nm its forces differ by up to 0.22 kJ/mol/nm
(hence the 4.0 nm default); the replicas are then still exactly the single copy with the
cutoff, but no longer the NoCutoff molecule. :attr:`Replicas.single_system` is always the
NoCutoff copy, so path energies and their metrics do not depend on the layout.

**The single-copy System** (:class:`SeparateReplicas`, layout ``"single-copy"``): every replica is the NoCutoff
single-copy System, stepped in turn through one Context (:class:`~mlpot.pips.molecular.rollout.SingleCopyRunner`),
for whoever needs implicit solvent without any cutoff; N times the per-step Python and OpenMM call overhead. The
layout was called ``"context-per-replica"`` while it held one Context per replica (the same trajectories); runs saved
under that name load as ``"single-copy"`` (:data:`RENAMED_LAYOUTS`). :func:`build_replicas` builds the layout asked
for.

No ``CMMotionRemover`` is added in either layout: over N copies it would couple them (it removes
the *total* centre-of-mass velocity), and the single-copy layout must be the same dynamics.
Units: nm, amu (OpenMM's).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import openmm
from openmm import app

from mlpot import units
from mlpot.pips.molecular.implicit_solvent import use_native_obc2
from mlpot.pips.molecular.integrator import BONDED_FORCES
from mlpot.pips.molecular.one_core import on_one_core

DEFAULT_SPACING_NM = 10.0  # copies of a vacuum force field or an mlpot model
DEFAULT_IMPLICIT_CUTOFF_NM = 4.0  # above chignolin's 3.12 nm extent, the largest shipped molecule
SLOT_MARGIN_NM = 1.0  # default room on each side of a copy's slot (drift, unfolding) under a cutoff
REPLICA_LAYOUTS = ("one-context", "single-copy")
RENAMED_LAYOUTS = {"context-per-replica": "single-copy"}  # older names of a layout (runs saved under them load)
AUTO_PLATFORMS = ("CUDA", "OpenCL", "CPU", "Reference")  # what ``platform="auto"`` times (choose_platform)


@dataclass
class Replicas:
    """What every layout has: ``n_copies`` copies of a molecule of ``n_atoms`` atoms (``topology``);
    ``single_system`` is one copy alone with no cutoff (also the System of unbiased energies);
    ``masses_amu`` (n_atoms,)."""

    single_system: openmm.System
    topology: app.Topology
    n_copies: int
    n_atoms: int
    masses_amu: np.ndarray


@dataclass
class SeparateReplicas(Replicas):
    """Every copy runs in its own Context over ``single_system``."""


@dataclass
class ReplicaSystem(Replicas):
    """All copies in one System: ``system`` holds the ``n_copies`` copies; ``offsets_nm``
    (n_copies, 1, 3) is where copy k's frame is moved to (add to a copy's positions, subtract
    from the context's).

    ``copy_system``: one copy with exactly the nonbonded settings of ``system`` (the cutoff when
    there is one): the reference every replica reproduces; ``single_system`` itself when there is
    no cutoff. ``interaction_cutoff_nm``: the range (nm) beyond which copies do not feel each
    other (the force field's or the model's cutoff; None when exclusions separate them whatever
    their distance); ``slot_x_nm`` (low, high): the x range, in a copy's own frame, that keeps it
    farther than that cutoff from its neighbours (:meth:`left_slot`)."""

    system: openmm.System
    offsets_nm: np.ndarray
    copy_system: Optional[openmm.System] = None
    interaction_cutoff_nm: Optional[float] = None
    slot_x_nm: Optional[tuple[float, float]] = None

    def stacked_positions(self, positions_nm: np.ndarray) -> np.ndarray:
        """Per-copy positions (n_copies, n_atoms, 3) nm → the context's (n_copies · n_atoms, 3)."""
        return (positions_nm + self.offsets_nm).reshape(-1, 3)

    def per_copy(self, stacked_nm: np.ndarray) -> np.ndarray:
        """The context's positions (n_copies · n_atoms, 3) nm → per-copy frames (n_copies, n_atoms, 3)."""
        return stacked_nm.reshape(self.n_copies, self.n_atoms, 3) - self.offsets_nm

    def left_slot(self, positions_nm: np.ndarray) -> np.ndarray:
        """bool (n_copies,): the copy (per-copy frames (n_copies, n_atoms, 3) nm) has an atom outside
        its slot, so it could come within the cutoff of a neighbouring copy (always False when
        exclusions keep the copies apart)."""
        if self.slot_x_nm is None:
            return np.zeros(len(positions_nm), dtype=bool)
        low, high = self.slot_x_nm
        x = positions_nm[..., 0]
        return (x.min(axis=1, initial=np.inf) < low) | (x.max(axis=1, initial=-np.inf) > high)


def replicated_topology(topology: app.Topology, positions_nm: np.ndarray, n_copies: int,
                        spacing_nm: float) -> app.Topology:
    """A topology with ``n_copies`` chains' worth of ``topology`` (bonds kept)."""
    modeller = app.Modeller(topology, positions_nm * openmm.unit.nanometer)
    for copy in range(1, n_copies):
        shifted = positions_nm + np.array([copy * spacing_nm, 0.0, 0.0])
        modeller.add(topology, shifted * openmm.unit.nanometer)
    return modeller.topology


def _exclude_across_copies(nonbonded: openmm.NonbondedForce, n_copies: int, n_atoms: int) -> None:
    for first_copy in range(n_copies):
        for second_copy in range(first_copy + 1, n_copies):
            for i in range(first_copy * n_atoms, (first_copy + 1) * n_atoms):
                for j in range(second_copy * n_atoms, (second_copy + 1) * n_atoms):
                    nonbonded.addException(i, j, 0.0, 1.0, 0.0)


def _forcefield_system(forcefield_files, topology: app.Topology, cutoff_nm: Optional[float] = None) -> openmm.System:
    """The force field's System, no constraints, no CMMotionRemover; ``NoCutoff``, or
    ``CutoffNonPeriodic`` at ``cutoff_nm`` with the reaction field off (dielectric 1). OBC2
    (``implicit/obc2.xml``) runs as OpenMM's native ``GBSAOBCForce`` (same energy, several times
    faster; :mod:`mlpot.pips.molecular.implicit_solvent`)."""
    forcefield = app.ForceField(*forcefield_files)
    if cutoff_nm is None:
        system = forcefield.createSystem(topology, nonbondedMethod=app.NoCutoff, constraints=None,
                                         removeCMMotion=False)
        use_native_obc2(system)
        return system
    system = forcefield.createSystem(topology, nonbondedMethod=app.CutoffNonPeriodic,
                                     nonbondedCutoff=cutoff_nm * openmm.unit.nanometer, constraints=None,
                                     removeCMMotion=False)
    use_native_obc2(system)
    for force in system.getForces():
        if isinstance(force, openmm.NonbondedForce):
            force.setReactionFieldDielectric(1.0)
    uncut = [type(force).__name__ for force in system.getForces()
             if not isinstance(force, BONDED_FORCES) and _nonbonded_method(force) != 1]
    if uncut:
        raise NotImplementedError(f"{', '.join(uncut)} of {', '.join(forcefield_files)} did not take the "
                                  "CutoffNonPeriodic cutoff, so copies in one System would feel each other: use "
                                  "layout='single-copy'")
    return system


def _nonbonded_method(force: openmm.Force) -> Optional[int]:
    """The force's nonbonded method (1 is CutoffNonPeriodic for every OpenMM nonbonded force), or None."""
    return force.getNonbondedMethod() if hasattr(force, "getNonbondedMethod") else None


def couples_every_pair(system: openmm.System) -> list[str]:
    """Names of the forces of ``system`` that copies in one System could not be shielded from each
    other by nonbonded exceptions (anything but bonded terms and ``NonbondedForce``); empty for a
    vacuum force field."""
    return [type(force).__name__ for force in system.getForces()
            if not isinstance(force, BONDED_FORCES + (openmm.NonbondedForce,))]


def _require_non_periodic(topology: app.Topology) -> None:
    if topology.getPeriodicBoxVectors() is not None:
        raise NotImplementedError("PIPS replicas are built for non-periodic systems (vacuum or implicit solvent) only")


def _masses_amu(system: openmm.System) -> np.ndarray:
    return np.array([system.getParticleMass(i).value_in_unit(openmm.unit.dalton)
                     for i in range(system.getNumParticles())])


def _load_potential(model: Path):
    """The model file, loaded: a .pt2 file as it is, a TorchScript file as its compiled twin (mlpot.compile_cache;
    a PythonForce, 2.1x faster per PIPS iteration on alanine dipeptide than the TorchForce)."""
    import torch  # noqa: F401  (openmmtorch needs torch imported first)

    from mlpot.compile_cache import load_for_inference

    return load_for_inference(model)


def _model_system(potential, topology: app.Topology) -> openmm.System:
    """A System of ``topology`` whose only force is the loaded ``potential``: a TorchScript model as a
    TorchForce, a compiled one as a PythonForce (mlpot.plugins.openmm)."""
    from mlpot.plugins.openmm import create_system

    return create_system(potential, topology, remove_cm_motion=False)


def _slot_x_nm(positions_nm: np.ndarray, spacing_nm: float, cutoff_nm: float) -> tuple[float, float]:
    """The x range around the molecule's centre (nm, own frame) within which copies ``spacing_nm``
    apart stay farther than ``cutoff_nm`` from each other."""
    centre = 0.5 * (positions_nm[:, 0].min() + positions_nm[:, 0].max())
    half_width = 0.5 * (spacing_nm - cutoff_nm)
    return centre - half_width, centre + half_width


def check_spacing(positions_nm: np.ndarray, spacing_nm: float, cutoff_nm: float) -> None:
    """Copies ``spacing_nm`` apart along x must be farther than ``cutoff_nm`` from each other:
    spacing > cutoff + the molecule's x-extent (``positions_nm`` (n_atoms, 3)); ValueError otherwise."""
    extent_x = float(np.ptp(positions_nm[:, 0]))
    if not spacing_nm > cutoff_nm + extent_x:
        raise ValueError(f"replica spacing {spacing_nm:g} nm is too small for the {cutoff_nm:g} nm cutoff: the "
                         f"molecule spans {extent_x:.2f} nm along x, so copies would interact; use a spacing above "
                         f"{cutoff_nm + extent_x:.2f} nm")


def _check_cutoff_spans_molecule(positions_nm: np.ndarray, cutoff_nm: float) -> None:
    """Every pair of atoms of one copy must lie within the cutoff (then it only shifts the energy)."""
    farthest = float(np.linalg.norm(positions_nm[:, None] - positions_nm[None], axis=-1).max())
    if not farthest < cutoff_nm:
        raise ValueError(f"a cutoff of {cutoff_nm:g} nm would cut pairs inside one molecule (its farthest atoms are "
                         f"{farthest:.2f} nm apart); use a larger cutoff_nm")


def build_replica_system(topology: app.Topology, positions_nm: np.ndarray, n_copies: int,
                         forcefield_files=("amber14-all.xml",), model: Optional[Path] = None,
                         spacing_nm: Optional[float] = None, cutoff_nm: Optional[float] = None) -> ReplicaSystem:
    """``n_copies`` independent copies of the (non-periodic) molecule ``topology`` in one System.

    The physical potential is the force field ``forcefield_files`` (no constraints: 1 fs steps do
    not need them, and constraints would project the recorded noise) or, when ``model`` is given,
    that mlpot model file. A force field runs with ``NoCutoff`` and exclusions across copies when
    ``cutoff_nm`` is None (vacuum only), else with ``CutoffNonPeriodic`` at ``cutoff_nm`` (implicit
    solvent too; module docstring). ``positions_nm`` (n_atoms, 3) sizes the molecule and its slots.
    ``spacing_nm`` between copies: default :data:`DEFAULT_SPACING_NM` without a cutoff, cutoff +
    x-extent + 2 × :data:`SLOT_MARGIN_NM` with one."""
    _require_non_periodic(topology)
    if n_copies < 1:
        raise ValueError(f"need at least one replica, got n_copies={n_copies}")
    positions_nm = np.asarray(positions_nm, dtype=float)
    n_atoms = topology.getNumAtoms()
    if model is not None:
        return _model_replicas(topology, positions_nm, n_copies, Path(model), spacing_nm or DEFAULT_SPACING_NM)
    if cutoff_nm is not None:
        return _cutoff_replicas(topology, positions_nm, n_copies, forcefield_files, spacing_nm, cutoff_nm)
    spacing_nm = spacing_nm or DEFAULT_SPACING_NM
    extent = float(np.ptp(positions_nm, axis=0).max())
    if extent > 0.3 * spacing_nm:
        raise ValueError(f"the molecule spans {extent:.2f} nm; copies {spacing_nm} nm apart could interact")
    single = _forcefield_system(forcefield_files, topology)
    coupling = couples_every_pair(single)
    if coupling:
        raise NotImplementedError(f"copies in one System cannot be kept apart with a {', '.join(coupling)} "
                                  f"({', '.join(forcefield_files)}, e.g. implicit solvent) without a cutoff: give "
                                  "cutoff_nm, or run the single-copy layout (build_replicas)")
    system = _forcefield_system(forcefield_files, replicated_topology(topology, positions_nm, n_copies, spacing_nm))
    for force in system.getForces():
        if isinstance(force, openmm.NonbondedForce):
            _exclude_across_copies(force, n_copies, n_atoms)
    return ReplicaSystem(system=system, single_system=single, topology=topology, n_copies=n_copies, n_atoms=n_atoms,
                         offsets_nm=_offsets(n_copies, spacing_nm), masses_amu=_masses_amu(single), copy_system=single)


def _offsets(n_copies: int, spacing_nm: float) -> np.ndarray:
    offsets = np.zeros((n_copies, 1, 3))
    offsets[:, 0, 0] = np.arange(n_copies) * spacing_nm
    return offsets


def _model_replicas(topology: app.Topology, positions_nm: np.ndarray, n_copies: int, model: Path,
                    spacing_nm: float) -> ReplicaSystem:
    extent = float(np.ptp(positions_nm, axis=0).max())
    if extent > 0.3 * spacing_nm:
        raise ValueError(f"the molecule spans {extent:.2f} nm; copies {spacing_nm} nm apart could interact")
    potential = _load_potential(model)  # once, for the N-copy System and the single copy
    cutoff_nm = potential.cutoff * units.NM_PER_ANGSTROM
    if cutoff_nm > spacing_nm - extent:
        raise ValueError(f"model cutoff {cutoff_nm} nm reaches across copies {spacing_nm} nm apart")
    merged = replicated_topology(topology, positions_nm, n_copies, spacing_nm)
    system, single = _model_system(potential, merged), _model_system(potential, topology)
    return ReplicaSystem(system=system, single_system=single, topology=topology, n_copies=n_copies,
                         n_atoms=topology.getNumAtoms(), offsets_nm=_offsets(n_copies, spacing_nm),
                         masses_amu=_masses_amu(single), copy_system=single, interaction_cutoff_nm=cutoff_nm,
                         slot_x_nm=_slot_x_nm(positions_nm, spacing_nm, cutoff_nm))


def _cutoff_replicas(topology: app.Topology, positions_nm: np.ndarray, n_copies: int, forcefield_files,
                     spacing_nm: Optional[float], cutoff_nm: float) -> ReplicaSystem:
    if not cutoff_nm > 0:
        raise ValueError(f"the nonbonded cutoff must be a positive length in nm, got {cutoff_nm!r}")
    if spacing_nm is None:
        spacing_nm = cutoff_nm + float(np.ptp(positions_nm[:, 0])) + 2 * SLOT_MARGIN_NM
    check_spacing(positions_nm, spacing_nm, cutoff_nm)
    _check_cutoff_spans_molecule(positions_nm, cutoff_nm)
    copy_system = _forcefield_system(forcefield_files, topology, cutoff_nm)
    merged = replicated_topology(topology, positions_nm, n_copies, spacing_nm)
    single = _forcefield_system(forcefield_files, topology)
    return ReplicaSystem(system=_forcefield_system(forcefield_files, merged, cutoff_nm), single_system=single,
                         topology=topology, n_copies=n_copies, n_atoms=topology.getNumAtoms(),
                         offsets_nm=_offsets(n_copies, spacing_nm), masses_amu=_masses_amu(single),
                         copy_system=copy_system, interaction_cutoff_nm=cutoff_nm,
                         slot_x_nm=_slot_x_nm(positions_nm, spacing_nm, cutoff_nm))


def build_replicas(topology: app.Topology, positions_nm: np.ndarray, n_copies: int,
                   forcefield_files=("amber14-all.xml",), model: Optional[Path] = None,
                   spacing_nm: Optional[float] = None, layout: str = "one-context",
                   cutoff_nm: float = DEFAULT_IMPLICIT_CUTOFF_NM) -> Replicas:
    """``n_copies`` independent copies of ``topology`` in ``layout`` (:data:`REPLICA_LAYOUTS`):

    - ``"one-context"`` (default): one System (:func:`build_replica_system`); an mlpot ``model``
      or a vacuum force field exactly as they are, a force field that couples every pair
      (implicit solvent) with ``CutoffNonPeriodic`` at ``cutoff_nm`` (module docstring);
    - ``"single-copy"`` (also under its older name, :data:`RENAMED_LAYOUTS`): :class:`SeparateReplicas` over the
      single copy without any cutoff."""
    layout = replica_layout(layout)
    if n_copies < 1:
        raise ValueError(f"need at least one replica, got n_copies={n_copies}")
    _require_non_periodic(topology)
    if layout == "single-copy":
        if model is None:
            single = _forcefield_system(forcefield_files, topology)
        else:
            single = _model_system(_load_potential(Path(model)), topology)
        return SeparateReplicas(single_system=single, topology=topology, n_copies=n_copies,
                                n_atoms=topology.getNumAtoms(), masses_amu=_masses_amu(single))
    if model is None and couples_every_pair(_forcefield_system(forcefield_files, topology)):
        return build_replica_system(topology, positions_nm, n_copies, forcefield_files, None, spacing_nm, cutoff_nm)
    return build_replica_system(topology, positions_nm, n_copies, forcefield_files, model, spacing_nm)


def replica_layout(name: str) -> str:
    """The layout ``name`` stands for (its current name if it was renamed); ValueError in one line if unknown."""
    layout = RENAMED_LAYOUTS.get(name, name)
    if layout not in REPLICA_LAYOUTS:
        raise ValueError(f"unknown replica layout {name!r}; known: {', '.join(REPLICA_LAYOUTS)}")
    return layout


def openmm_platform(name: str = "CPU", threads: int = 1) -> tuple[openmm.Platform, dict]:
    """The platform and its properties (CPU: ``Threads``); a one-line error names the platforms OpenMM has here."""
    from mlpot.plugins.openmm import checked_platform_name

    platform = openmm.Platform.getPlatformByName(checked_platform_name(name, " (or 'auto')"))
    properties = {"Threads": str(threads)} if name == "CPU" else {}
    return platform, properties


@dataclass(frozen=True)
class PlatformChoice:
    """The OpenMM platform a runner uses, and the ms per step measured for each candidate (empty when the
    user named the platform)."""

    name: str
    ms_per_step: dict

    def describe(self) -> str:
        if not self.ms_per_step:
            return f"OpenMM platform {self.name} (as asked)"
        timed = ", ".join(f"{name} {ms:.3f}" for name, ms in sorted(self.ms_per_step.items(), key=lambda kv: kv[1]))
        return f"OpenMM platform {self.name}, the fastest here (ms per step: {timed})"


def choose_platform(system: openmm.System, positions_nm: np.ndarray, name: str = "auto", threads: int = 1,
                    trial_steps: int = 40, integrator: Optional[Callable[[], openmm.Integrator]] = None
                    ) -> PlatformChoice:
    """``name``, checked, or for ``"auto"`` the fastest platform for this System here: on each platform OpenMM
    has among :data:`AUTO_PLATFORMS`, ``integrator()`` (default: Verlet, 0.5 fs) runs ``trial_steps`` steps from
    ``positions_nm`` twice, interleaved, and the best time counts. Platforms whose Context cannot be created
    here (no GPU, no kernel for a force) are skipped.

    Why measure: for a peptide the per-step overhead decides, and it depends on the machine's state. The CPU
    platform hands every force evaluation to a worker thread even with ``Threads`` = 1; on an idle machine
    that thread sleeps between steps and waking it dominates. Measured on the 2-core machine (2026-12-05,
    polyproline in OBC2, the controlled integrator, ms per step): idle, CPU ~0.9 and Reference 0.26; with
    two busy jobs beside it, CPU 0.20 and Reference 0.26. With ``threads`` = 1 the trial runs on one core, as
    the rollouts do, which removes most of the waking (:mod:`mlpot.pips.molecular.one_core`). Larger Systems and
    GPUs favour CPU, CUDA or OpenCL. The choice is made once, when the runner is built."""
    if name != "auto":
        openmm_platform(name, threads)
        return PlatformChoice(name, {})
    contexts = {}
    for candidate in AUTO_PLATFORMS:
        try:
            platform, properties = openmm_platform(candidate, threads)
            context = openmm.Context(system, integrator() if integrator else openmm.VerletIntegrator(0.0005),
                                     platform, properties)
            context.setPositions(positions_nm)
            context.getIntegrator().step(2)
        except Exception:  # noqa: BLE001 - not on this machine, or no kernel for one of the forces
            continue
        contexts[candidate] = context
    if not contexts:
        raise RuntimeError(f"no OpenMM platform among {', '.join(AUTO_PLATFORMS)} can run this System here")
    best = {candidate: float("inf") for candidate in contexts}
    with on_one_core(threads == 1):  # as a single-threaded rollout runs (mlpot.pips.molecular.one_core)
        for _ in range(2):
            for candidate, context in contexts.items():
                context.setPositions(positions_nm)
                clock = time.perf_counter()
                context.getIntegrator().step(trial_steps)
                best[candidate] = min(best[candidate], (time.perf_counter() - clock) / trial_steps * 1e3)
    return PlatformChoice(min(best, key=best.get), best)


def potential_energies_kj_mol(system: openmm.System, frames_nm: np.ndarray, platform: str = "CPU",
                              threads: int = 1) -> np.ndarray:
    """Potential energy (kJ/mol) of ``system`` (one copy, no bias) at every frame (..., n_atoms, 3) nm → (...)."""
    chosen, properties = openmm_platform(platform, threads)
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), chosen, properties)
    flat = frames_nm.reshape(-1, *frames_nm.shape[-2:])
    energies = np.empty(len(flat))
    for index, frame in enumerate(flat):
        context.setPositions(frame)
        energies[index] = context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(
            openmm.unit.kilojoule_per_mole)
    return energies.reshape(frames_nm.shape[:-2])
