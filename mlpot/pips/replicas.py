"""N non-interacting copies of one molecule in a single OpenMM System: the batch of PIPS replicas.

Copy k sits at ``k · spacing_nm`` along x. The copies must not feel each other:

- **amber14 (vacuum)**: the System is built by ``ForceField.createSystem`` on the N-copy topology
  with ``NoCutoff``; every pair of atoms in different copies is then made an exception of the
  ``NonbondedForce`` with zero charge product and zero ε, so the copies are exactly independent
  (and each copy's energy is its own vacuum energy). Systems with forces other than bonded terms
  and one ``NonbondedForce`` (e.g. implicit solvent) are refused (NotImplementedError).
- **an mlpot model file** (``mlpot.plugins.openmm.create_system``): the model's cutoff is far
  below the spacing, so no pair across copies is ever within it (checked).

No ``CMMotionRemover`` is added: over N copies it would couple them (it removes the *total*
centre-of-mass velocity). Units: nm, amu (OpenMM's).
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
class ReplicaSystem:
    """``system`` holding ``n_copies`` copies of a molecule of ``n_atoms`` atoms; ``offsets_nm``
    (n_copies, 1, 3) is where copy k's frame is moved to (add to a copy's positions, subtract
    from the context's); ``single_system`` is one copy alone (for unbiased energies);
    ``masses_amu`` (n_atoms,)."""

    system: openmm.System
    single_system: openmm.System
    topology: app.Topology
    n_copies: int
    n_atoms: int
    offsets_nm: np.ndarray
    masses_amu: np.ndarray

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
    if topology.getPeriodicBoxVectors() is not None:
        raise NotImplementedError("PIPS replicas are built for non-periodic (vacuum) systems only")
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
        system, single = _forcefield_system(forcefield_files, merged), _forcefield_system(forcefield_files, topology)
        for force in system.getForces():
            if isinstance(force, openmm.NonbondedForce):
                _exclude_across_copies(force, n_copies, n_atoms)
            elif not isinstance(force, _BONDED_FORCES):
                raise NotImplementedError(f"replicas with a {type(force).__name__} (e.g. implicit solvent) are not "
                                          "supported yet: only bonded terms and a vacuum NonbondedForce")
    masses = np.array([single.getParticleMass(i).value_in_unit(openmm.unit.dalton) for i in range(n_atoms)])
    offsets = np.zeros((n_copies, 1, 3))
    offsets[:, 0, 0] = np.arange(n_copies) * spacing_nm
    return ReplicaSystem(system=system, single_system=single, topology=topology, n_copies=n_copies,
                         n_atoms=n_atoms, offsets_nm=offsets, masses_amu=masses)


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
