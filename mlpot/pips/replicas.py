"""N non-interacting copies of one molecule: the batch of PIPS replicas, in one of two layouts.

**All copies in one OpenMM System** (:class:`ReplicaSystem`, :func:`build_replica_system`): copy k
sits at ``k · spacing_nm`` along x, and the copies must not feel each other:

- **a vacuum force field** (amber14): the System is built by ``ForceField.createSystem`` on the
  N-copy topology with ``NoCutoff``; every pair of atoms in different copies is then made an
  exception of the ``NonbondedForce`` with zero charge product and zero ε, so the copies are
  exactly independent (and each copy's energy is its own vacuum energy).
- **an mlpot model file** (``mlpot.plugins.openmm.create_system``): the model's cutoff is far
  below the spacing, so no pair across copies is ever within it (checked).

**One System per copy** (:class:`SeparateReplicas`): a force field with any force other than
bonded terms and one ``NonbondedForce`` — implicit solvent (``CustomGBForce``, ``GBSAOBCForce``)
couples every pair of atoms through the Born radii, which no exception can switch off — is run
as N Contexts over the single-copy System (:mod:`mlpot.pips.openmm_rollout`). :func:`build_replicas`
picks the layout.

No ``CMMotionRemover`` is added in either layout: over N copies it would couple them (it removes
the *total* centre-of-mass velocity), and the single-copy layout must be the same dynamics.
Units: nm, amu (OpenMM's).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import openmm
from openmm import app

from mlpot import units

DEFAULT_SPACING_NM = 10.0


@dataclass
class Replicas:
    """What every layout has: ``n_copies`` copies of a molecule of ``n_atoms`` atoms (``topology``);
    ``single_system`` is one copy alone (also the System of unbiased energies); ``masses_amu`` (n_atoms,)."""

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
    from the context's)."""

    system: openmm.System
    offsets_nm: np.ndarray

    def stacked_positions(self, positions_nm: np.ndarray) -> np.ndarray:
        """Per-copy positions (n_copies, n_atoms, 3) nm → the context's (n_copies · n_atoms, 3)."""
        return (positions_nm + self.offsets_nm).reshape(-1, 3)

    def per_copy(self, stacked_nm: np.ndarray) -> np.ndarray:
        """The context's positions (n_copies · n_atoms, 3) nm → per-copy frames (n_copies, n_atoms, 3)."""
        return stacked_nm.reshape(self.n_copies, self.n_atoms, 3) - self.offsets_nm


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


_BONDED_FORCES = (openmm.HarmonicBondForce, openmm.HarmonicAngleForce, openmm.PeriodicTorsionForce,
                  openmm.CMAPTorsionForce, openmm.RBTorsionForce)


def _forcefield_system(forcefield_files, topology: app.Topology) -> openmm.System:
    forcefield = app.ForceField(*forcefield_files)
    return forcefield.createSystem(topology, nonbondedMethod=app.NoCutoff, constraints=None,
                                   removeCMMotion=False)


def couples_every_pair(system: openmm.System) -> list[str]:
    """Names of the forces of ``system`` that copies in one System could not be shielded from each
    other by nonbonded exceptions (anything but bonded terms and ``NonbondedForce``); empty for a
    vacuum force field."""
    return [type(force).__name__ for force in system.getForces()
            if not isinstance(force, _BONDED_FORCES + (openmm.NonbondedForce,))]


def _require_non_periodic(topology: app.Topology) -> None:
    if topology.getPeriodicBoxVectors() is not None:
        raise NotImplementedError("PIPS replicas are built for non-periodic systems (vacuum or implicit solvent) only")


def _masses_amu(system: openmm.System) -> np.ndarray:
    return np.array([system.getParticleMass(i).value_in_unit(openmm.unit.dalton)
                     for i in range(system.getNumParticles())])


def _model_system(model: Path, topology: app.Topology) -> openmm.System:
    import torch  # noqa: F401  (openmmtorch needs torch imported first)
    from mlpot.deploy import load_model
    from mlpot.plugins.openmm import create_system

    return create_system(load_model(model), topology, remove_cm_motion=False)


def build_replica_system(topology: app.Topology, positions_nm: np.ndarray, n_copies: int,
                         forcefield_files=("amber14-all.xml",), model: Optional[Path] = None,
                         spacing_nm: float = DEFAULT_SPACING_NM) -> ReplicaSystem:
    """``n_copies`` independent copies of the (non-periodic) molecule ``topology``.

    The physical potential is the force field ``forcefield_files`` (vacuum, NoCutoff, no
    constraints: 1 fs steps do not need them, and constraints would project the recorded noise)
    or, when ``model`` is given, that mlpot model file. ``positions_nm`` (n_atoms, 3) only sizes
    the molecule (its extent must stay well below ``spacing_nm``)."""
    _require_non_periodic(topology)
    n_atoms = topology.getNumAtoms()
    extent = float(np.ptp(positions_nm, axis=0).max())
    if extent > 0.3 * spacing_nm:
        raise ValueError(f"the molecule spans {extent:.2f} nm; copies {spacing_nm} nm apart could interact")
    merged = replicated_topology(topology, positions_nm, n_copies, spacing_nm)
    if model is not None:
        from mlpot.deploy import load_model

        cutoff_nm = load_model(model).cutoff * units.NM_PER_ANGSTROM
        if cutoff_nm > spacing_nm - extent:
            raise ValueError(f"model cutoff {cutoff_nm} nm reaches across copies {spacing_nm} nm apart")
        system, single = _model_system(Path(model), merged), _model_system(Path(model), topology)
    else:
        single = _forcefield_system(forcefield_files, topology)
        coupling = couples_every_pair(single)
        if coupling:
            raise NotImplementedError(f"copies in one System cannot be kept apart with a {', '.join(coupling)} "
                                      f"({', '.join(forcefield_files)}, e.g. implicit solvent): use build_replicas, "
                                      "which runs such force fields as one Context per replica")
        system = _forcefield_system(forcefield_files, merged)
        for force in system.getForces():
            if isinstance(force, openmm.NonbondedForce):
                _exclude_across_copies(force, n_copies, n_atoms)
    offsets = np.zeros((n_copies, 1, 3))
    offsets[:, 0, 0] = np.arange(n_copies) * spacing_nm
    return ReplicaSystem(system=system, single_system=single, topology=topology, n_copies=n_copies,
                         n_atoms=n_atoms, offsets_nm=offsets, masses_amu=_masses_amu(single))


def build_replicas(topology: app.Topology, positions_nm: np.ndarray, n_copies: int,
                   forcefield_files=("amber14-all.xml",), model: Optional[Path] = None,
                   spacing_nm: float = DEFAULT_SPACING_NM) -> Replicas:
    """``n_copies`` independent copies of ``topology`` in the layout the potential allows: one
    System (:func:`build_replica_system`) for an mlpot ``model`` or a vacuum force field,
    :class:`SeparateReplicas` for a force field that couples every pair (implicit solvent)."""
    if n_copies < 1:
        raise ValueError(f"need at least one replica, got n_copies={n_copies}")
    _require_non_periodic(topology)
    if model is None:
        single = _forcefield_system(forcefield_files, topology)
        if couples_every_pair(single):
            return SeparateReplicas(single_system=single, topology=topology, n_copies=n_copies,
                                    n_atoms=topology.getNumAtoms(), masses_amu=_masses_amu(single))
    return build_replica_system(topology, positions_nm, n_copies, forcefield_files, model, spacing_nm)


def openmm_platform(name: str = "CPU", threads: int = 1) -> tuple[openmm.Platform, dict]:
    """The platform and its properties (CPU: ``Threads``)."""
    platform = openmm.Platform.getPlatformByName(name)
    properties = {"Threads": str(threads)} if name == "CPU" else {}
    return platform, properties


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
