"""Shared machinery of the peptide build scripts (``systems/polyproline/build.py``,
``systems/chignolin/build.py``): a peptide from backbone angles, protonated and minimised in an
OpenMM force field, written as a PDB, and measured.

Recipe (offline, no input file):

1. **Heavy atoms** from per-residue (φ, ψ, ω) with PeptideBuilder (ideal bond lengths and angles,
   its default side-chain rotamers). PeptideBuilder has no ACE/NME caps, so for a capped peptide
   it builds an alanine before and after the sequence and keeps CA, C, O of the first (renamed
   ACE; OpenMM's ``pdbNames.xml`` reads its CA as the methyl carbon CH3) and N, CA of the last
   (renamed NME; CA read as its methyl C). An uncapped peptide gets a C-terminal OXT and free
   (zwitterionic at pH 7) termini.
2. **Hydrogens** with ``openmm.app.Modeller.addHydrogens`` (pH 7, the force field's templates),
   Python's ``random`` seeded first so that rebuilds are identical.
3. **Minimisation** with ``openmm.LocalEnergyMinimizer`` (tolerance 0.1 kJ/mol/nm) on the
   Reference platform: NoCutoff, no constraints, no CMMotionRemover, the force field files given
   (e.g. amber14 + implicit GBn2).

Angle conventions (degrees, as mdtraj computes them): φ_i = C_{i-1}–N_i–CA_i–C_i,
ψ_i = N_i–CA_i–C_i–N_{i+1}, ω_i = CA_{i-1}–C_{i-1}–N_i–CA_i (the peptide bond *into* residue i;
ACE's CH3 stands for CA_{i-1}), measured with :mod:`mlpot.pips.geometry`. Positions in nm,
energies in kJ/mol.

The scripts import this module after putting ``systems/`` on ``sys.path`` (``systems/`` is a
data folder, not an importable package, in a checkout).
"""

from __future__ import annotations

import argparse
import io
import platform
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from mlpot.pips.geometry import aligned_rmsd, dihedral_degrees
from mlpot.units import ANGSTROM_PER_NM

MINIMISER_TOLERANCE_KJ_PER_MOL_PER_NM = 0.1
HYDROGEN_PLACEMENT_SEED = 0


@dataclass(frozen=True)
class BackboneAngles:
    """Per-residue backbone dihedrals in degrees for a sequence of ``n`` residues (one-letter
    codes). ``phi_deg[0]`` is used only with an N-terminal cap, ``psi_deg[-1]`` only with a
    C-terminal cap; ``omega_deg[i]`` is the peptide bond into residue i (``omega_deg[0]``: from
    the ACE cap). ``omega_nme_deg`` is the bond from the last residue into the NME cap."""

    sequence: str
    phi_deg: Sequence[float]
    psi_deg: Sequence[float]
    omega_deg: Sequence[float]
    omega_nme_deg: float = 180.0

    def __post_init__(self):
        n = len(self.sequence)
        for name in ("phi_deg", "psi_deg", "omega_deg"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name} has {len(getattr(self, name))} angles for {n} residues ({self.sequence})")

    @classmethod
    def uniform(cls, sequence: str, phi_deg: float, psi_deg: float, omega_deg: float) -> BackboneAngles:
        """Every residue at the same (φ, ψ, ω), the NME bond trans."""
        n = len(sequence)
        return cls(sequence, [phi_deg] * n, [psi_deg] * n, [omega_deg] * n)


def heavy_atoms_pdb(angles: BackboneAngles, capped: bool) -> str:
    """PDB text of the heavy atoms of the peptide ``angles`` describes: ACE-…-NME if ``capped``,
    else free termini with a C-terminal OXT."""
    from Bio.PDB import PDBIO
    from PeptideBuilder import Geometry, PeptideBuilder

    sequence = "A" + angles.sequence + "A" if capped else angles.sequence
    geos = [Geometry.geometry(code) for code in sequence]
    first = 1 if capped else 0
    for index in range(len(angles.sequence)):
        geo = geos[first + index]
        geo.phi = angles.phi_deg[index]
        geo.omega = angles.omega_deg[index]
        if first + index + 1 < len(geos):
            geos[first + index + 1].psi_im1 = angles.psi_deg[index]
    if capped:
        geos[-1].omega = angles.omega_nme_deg
    structure = PeptideBuilder.make_structure_from_geos(geos)
    if capped:
        residues = list(structure[0]["A"])
        for residue, keep, cap in ((residues[0], {"CA", "C", "O"}, "ACE"), (residues[-1], {"N", "CA"}, "NME")):
            for atom in [a for a in residue if a.get_id() not in keep]:
                residue.detach_child(atom.get_id())
            residue.resname = cap
    else:
        PeptideBuilder.add_terminal_OXT(structure)
    out = io.StringIO()
    writer = PDBIO()
    writer.set_structure(structure)
    writer.save(out)
    return out.getvalue()


def forcefield_system(topology, forcefield_files: Sequence[str]):
    """The System of ``topology`` in ``forcefield_files``: NoCutoff, no constraints, no CMMotionRemover."""
    from openmm import app

    return app.ForceField(*forcefield_files).createSystem(topology, nonbondedMethod=app.NoCutoff, constraints=None,
                                                          rigidWater=False, removeCMMotion=False)


def reference_context(system, positions_nm: np.ndarray):
    """A Context on the Reference platform (double precision, deterministic) at ``positions_nm``."""
    import openmm

    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(positions_nm)
    return context


def potential_kj_per_mol(context) -> float:
    """Potential energy of the context's positions, kJ/mol."""
    from openmm import unit

    return context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)


@dataclass
class BuiltPeptide:
    """A protonated, minimised peptide: topology, ``built_nm`` (n_atoms, 3) before and
    ``positions_nm`` after minimisation, and the two energies (kJ/mol)."""

    topology: object
    built_nm: np.ndarray
    positions_nm: np.ndarray
    energy_built_kj_per_mol: float
    energy_minimised_kj_per_mol: float


def build_peptide(angles: BackboneAngles, capped: bool, forcefield_files: Sequence[str]) -> BuiltPeptide:
    """Steps 1–3 of the module docstring."""
    import openmm
    from openmm import app, unit

    pdb = app.PDBFile(io.StringIO(heavy_atoms_pdb(angles, capped)))
    modeller = app.Modeller(pdb.topology, pdb.positions)
    random.seed(HYDROGEN_PLACEMENT_SEED)  # addHydrogens starts new hydrogens from random offsets
    modeller.addHydrogens(app.ForceField(*forcefield_files), pH=7.0)
    built_nm = np.asarray(modeller.getPositions().value_in_unit(unit.nanometer))
    context = reference_context(forcefield_system(modeller.topology, forcefield_files), built_nm)
    energy_built = potential_kj_per_mol(context)
    openmm.LocalEnergyMinimizer.minimize(context, MINIMISER_TOLERANCE_KJ_PER_MOL_PER_NM, 0)
    positions_nm = context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    return BuiltPeptide(modeller.topology, built_nm, np.asarray(positions_nm), energy_built,
                        potential_kj_per_mol(context))


def write_pdb(topology, positions_nm: np.ndarray, path: Path, forcefield_files: Sequence[str]) -> float:
    """Write the PDB and return the energy (kJ/mol) of what was written (coordinates are rounded
    to 0.001 Å in a PDB file)."""
    from openmm import app, unit

    with open(path, "w") as handle:
        app.PDBFile.writeFile(topology, positions_nm * unit.nanometer, handle)
    return single_point_kj_per_mol(path, forcefield_files)


# the atom standing for CA in each cap (OpenMM's names: ACE methyl CH3, NME methyl C)
_CAP_METHYL = {"ACE": "CH3", "NME": "C"}


def omega_quadruples(topology) -> list[tuple[int, int, int, int]]:
    """0-based (CA_{i-1}, C_{i-1}, N_i, CA_i) of every peptide bond in chain order, caps included
    (their methyl carbons stand for CA)."""
    residues = list(topology.residues())
    quadruples = []
    for previous, current in zip(residues, residues[1:]):
        atoms_before = {atom.name: atom.index for atom in previous.atoms()}
        atoms_after = {atom.name: atom.index for atom in current.atoms()}
        quadruples.append((atoms_before[_CAP_METHYL.get(previous.name, "CA")], atoms_before["C"],
                           atoms_after["N"], atoms_after[_CAP_METHYL.get(current.name, "CA")]))
    return quadruples


def backbone_dihedrals_deg(path: Path) -> dict[str, list[float]]:
    """φ and ψ (mdtraj) and the ω of every peptide bond, caps included (:func:`omega_quadruples`),
    of a PDB file, in chain order, degrees rounded to 0.1°."""
    import mdtraj
    from openmm import app, unit

    traj = mdtraj.load(str(path))
    angles = {name: [round(float(np.degrees(value)), 1) for value in compute(traj)[1][0]]
              for name, compute in (("phi", mdtraj.compute_phi), ("psi", mdtraj.compute_psi))}
    pdb = app.PDBFile(str(path))
    positions = np.asarray(pdb.getPositions().value_in_unit(unit.nanometer))
    angles["omega"] = [round(float(dihedral_degrees(torch.from_numpy(positions), q)), 1)
                       for q in omega_quadruples(pdb.topology)]
    return angles


def ca_rmsd_A(first_nm: np.ndarray, second_nm: np.ndarray, ca_atoms: Sequence[int]) -> float:
    """CA RMSD in Å after optimal superposition (Kabsch, proper rotations) of two conformations."""
    atoms = list(ca_atoms)
    rmsd_nm = aligned_rmsd(
        torch.from_numpy(np.asarray(first_nm)[atoms]), torch.from_numpy(np.asarray(second_nm)[atoms])
    )
    return float(rmsd_nm) * ANGSTROM_PER_NM


def ca_atoms(topology) -> list[int]:
    """0-based indices of the alpha carbons (caps excluded: their CA-named atoms are methyls)."""
    return [atom.index for atom in topology.atoms() if atom.name == "CA" and atom.residue.name not in ("ACE", "NME")]


def same_atoms(first_topology, second_topology) -> bool:
    """True when both topologies list the same atoms (residue, name) in the same order."""
    def listing(topology):
        return [(atom.residue.name, atom.name) for atom in topology.atoms()]

    return listing(first_topology) == listing(second_topology)


def software_versions() -> dict[str, str]:
    """Versions of the packages that determine the output."""
    from importlib.metadata import version

    import Bio
    import mdtraj
    import openmm

    return {"python": platform.python_version(), "openmm": openmm.__version__,
            "PeptideBuilder": version("PeptideBuilder"), "biopython": Bio.__version__,
            "mdtraj": mdtraj.__version__, "numpy": np.__version__}


def single_point_kj_per_mol(path: Path, forcefield_files: Sequence[str]) -> float:
    """Potential energy (kJ/mol) of a PDB file in ``forcefield_files`` (Reference platform)."""
    from openmm import app, unit

    pdb = app.PDBFile(str(path))
    positions = np.asarray(pdb.getPositions().value_in_unit(unit.nanometer))
    return potential_kj_per_mol(reference_context(forcefield_system(pdb.topology, forcefield_files), positions))


def recipe_info(forcefield_files: Sequence[str]) -> dict:
    """The build settings every ``build_info.json`` records."""
    return {"forcefield": list(forcefield_files), "nonbonded": "NoCutoff", "constraints": None,
            "minimiser": "openmm.LocalEnergyMinimizer",
            "minimiser_tolerance_kj_per_mol_per_nm": MINIMISER_TOLERANCE_KJ_PER_MOL_PER_NM, "platform": "Reference",
            "angle_convention": "phi/psi: mdtraj; omega: CA(i-1)-C(i-1)-N(i)-CA(i) of every peptide bond, "
                                "cap methyls standing for CA; degrees",
            "versions": software_versions()}


def describe(built: BuiltPeptide, path: Path, forcefield_files: Sequence[str]) -> dict:
    """Write ``built`` to ``path`` and return what ``build_info.json`` records of it: atom count,
    minimised φ/ψ/ω (degrees), energies built / minimised / of the written file (kJ/mol) and the CA
    RMSD (Å) the minimisation moved the built structure."""
    energy_file = write_pdb(built.topology, built.positions_nm, path, forcefield_files)
    cas = ca_atoms(built.topology)
    return {"n_atoms": built.topology.getNumAtoms(), "minimised_dihedrals_deg": backbone_dihedrals_deg(path),
            "energy_built_kj_per_mol": round(built.energy_built_kj_per_mol, 3),
            "energy_minimised_kj_per_mol": round(built.energy_minimised_kj_per_mol, 4),
            "energy_of_pdb_file_kj_per_mol": round(energy_file, 4),
            "ca_rmsd_built_to_minimised_A": round(ca_rmsd_A(built.built_nm, built.positions_nm, cas), 3)}


def output_folder(argv: list[str] | None, description: str, default: Path) -> Path:
    """The ``--out-dir`` of a build script's command line (created), ``default`` if not given."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out-dir", type=Path, default=default, help="where to write (default: the script's folder)")
    out_dir = parser.parse_args(argv).out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    return out_dir
