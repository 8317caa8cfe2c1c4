"""Build the alanine dipeptide (ACE-ALA-NME, 22 atoms) structures shipped in this folder.

How to run (from the repository root; takes a few seconds on one CPU core)::

    pip install PeptideBuilder          # build-time only, not a runtime dependency of mlpot
    python systems/alanine-dipeptide/build.py

Needs: PeptideBuilder (>= 1.1, pulls in Biopython), OpenMM (amber14-all.xml ships with it),
mdtraj and numpy. Everything is offline; no input file is read.

What it does, for each conformer below:

1. Builds the heavy-atom backbone from target (phi, psi) with PeptideBuilder. PeptideBuilder
   has no ACE/NME caps, so it builds Ala-Ala-Ala and the two outer alanines become the caps:
   the first keeps CA, C, O (renamed ACE; OpenMM reads its CA as the methyl carbon CH3) and
   the last keeps N, CA (renamed NME; CA is read as the methyl carbon).
2. Adds all hydrogens, caps included, with ``openmm.app.Modeller.addHydrogens`` (amber14).
3. Minimises in vacuum with amber14-all.xml: NoCutoff, no constraints, flexible bonds,
   ``LocalEnergyMinimizer`` to a force tolerance of 0.1 kJ/mol/nm, Reference platform.
4. Writes a PDB with atoms in the usual tleap order and names (the layout of the widely used
   ``alanine-dipeptide.pdb``; phi = atoms 4-6-8-14, psi = 6-8-14-16, 0-based)::

       ACE: HH31 CH3 HH32 HH33 C O
       ALA: N H CA HA CB HB1 HB2 HB3 C O
       NME: N H CH3 HH31 HH32 HH33

Files written here:

* ``alanine-dipeptide.pdb`` -- the default structure, the C5 (extended, beta) minimum.
* ``c7eq.pdb``, ``c7ax.pdb`` -- the two C7 minima (intramolecular H-bond ring).
* ``build_info.json`` -- target and minimised phi/psi (degrees, mdtraj, phi = C(ACE)-N-CA-C,
  psi = N-CA-C-N(NME)), amber14 vacuum energies (kJ/mol) and the software versions used.

The minimised angles are where amber14 puts the minima, not the targets; the C7ax start in
particular relaxes a long way (see build_info.json).
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import random
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent

FORCEFIELD_FILES = ("amber14-all.xml",)
MINIMISER_TOLERANCE_KJ_PER_MOL_PER_NM = 0.1

# name -> (target phi, target psi) in degrees, and the file it is written to.
CONFORMERS: dict[str, tuple[float, float, str]] = {
    "c5": (-150.0, 155.0, "alanine-dipeptide.pdb"),
    "c7eq": (-80.0, 80.0, "c7eq.pdb"),
    "c7ax": (70.0, -70.0, "c7ax.pdb"),
}

# Atom order and PDB names written, per residue, keyed by the names OpenMM gives the atoms
# after addHydrogens (OpenMM's internal names: ACE methyl C is CH3 with H1-3, NME methyl C is C).
ATOM_ORDER: dict[str, list[tuple[str, str]]] = {
    "ACE": [("H1", "HH31"), ("CH3", "CH3"), ("H2", "HH32"), ("H3", "HH33"), ("C", "C"), ("O", "O")],
    "ALA": [
        ("N", "N"), ("H", "H"), ("CA", "CA"), ("HA", "HA"), ("CB", "CB"),
        ("HB1", "HB1"), ("HB2", "HB2"), ("HB3", "HB3"), ("C", "C"), ("O", "O"),
    ],
    "NME": [("N", "N"), ("H", "H"), ("C", "CH3"), ("H1", "HH31"), ("H2", "HH32"), ("H3", "HH33")],
}


def build_heavy_atoms_pdb(phi_deg: float, psi_deg: float) -> str:
    """Return PDB text of the 10 heavy atoms of ACE-ALA-NME with backbone (phi, psi) in degrees.

    Omega angles are trans (180 degrees), PeptideBuilder's default.
    """
    from Bio.PDB import PDBIO
    from PeptideBuilder import Geometry, PeptideBuilder

    geos = [Geometry.geometry("A") for _ in range(3)]
    geos[1].phi = phi_deg        # phi of the central residue: C(0)-N(1)-CA(1)-C(1)
    geos[2].psi_im1 = psi_deg    # psi of residue i-1 is set on residue i: N(1)-CA(1)-C(1)-N(2)
    structure = PeptideBuilder.make_structure_from_geos(geos)

    first, _, last = list(structure[0]["A"])
    for residue, keep, new_name in ((first, {"CA", "C", "O"}, "ACE"), (last, {"N", "CA"}, "NME")):
        for atom in [a for a in residue if a.get_id() not in keep]:
            residue.detach_child(atom.get_id())
        residue.resname = new_name

    out = io.StringIO()
    writer = PDBIO()
    writer.set_structure(structure)
    writer.save(out)
    return out.getvalue()


def make_system(topology):
    """amber14 vacuum system: NoCutoff, no constraints, flexible water (none here)."""
    from openmm import app

    forcefield = app.ForceField(*FORCEFIELD_FILES)
    return forcefield.createSystem(
        topology, nonbondedMethod=app.NoCutoff, constraints=None, rigidWater=False
    )


def reorder_atoms(topology, positions_nm: np.ndarray):
    """Return (topology, positions_nm) with atoms in ATOM_ORDER and renamed to its PDB names."""
    from openmm import app

    new_topology = app.Topology()
    new_positions = []
    old_to_new = {}
    for chain in topology.chains():
        new_chain = new_topology.addChain(chain.id)
        for residue in chain.residues():
            new_residue = new_topology.addResidue(residue.name, new_chain, residue.id)
            by_name = {atom.name: atom for atom in residue.atoms()}
            order = ATOM_ORDER[residue.name]
            if sorted(by_name) != sorted(old for old, _ in order):
                raise RuntimeError(f"unexpected atoms in {residue.name}: {sorted(by_name)}")
            for old_name, pdb_name in order:
                atom = by_name[old_name]
                old_to_new[atom.index] = new_topology.addAtom(pdb_name, atom.element, new_residue)
                new_positions.append(positions_nm[atom.index])
    for a, b in topology.bonds():
        new_topology.addBond(old_to_new[a.index], old_to_new[b.index])
    return new_topology, np.array(new_positions)


def reference_context(system, positions):
    """An OpenMM Context on the Reference platform (double precision, deterministic)."""
    import openmm

    context = openmm.Context(
        system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference")
    )
    context.setPositions(positions)
    return context


def potential_kj_per_mol(context) -> float:
    """Potential energy of the context's current positions, kJ/mol."""
    from openmm import unit

    return context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)


def build_conformer(phi_deg: float, psi_deg: float):
    """Build, protonate and minimise one conformer.

    Returns (topology, positions_nm (22, 3), energy of the built structure, energy after
    minimisation), energies in kJ/mol.
    """
    import openmm
    from openmm import app, unit

    pdb = app.PDBFile(io.StringIO(build_heavy_atoms_pdb(phi_deg, psi_deg)))
    modeller = app.Modeller(pdb.topology, pdb.positions)
    random.seed(0)  # addHydrogens starts new hydrogens from random offsets (Python's random module)
    modeller.addHydrogens(app.ForceField(*FORCEFIELD_FILES), pH=7.0)

    context = reference_context(make_system(modeller.topology), modeller.positions)
    e_built = potential_kj_per_mol(context)
    openmm.LocalEnergyMinimizer.minimize(context, MINIMISER_TOLERANCE_KJ_PER_MOL_PER_NM, 0)
    e_min = potential_kj_per_mol(context)
    positions_nm = context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)

    topology, positions_nm = reorder_atoms(modeller.topology, positions_nm)
    return topology, positions_nm, e_built, e_min


def phi_psi_deg(pdb_path: Path) -> tuple[float, float]:
    """Backbone (phi, psi) of a dipeptide PDB in degrees, computed with mdtraj."""
    import mdtraj

    traj = mdtraj.load(str(pdb_path))
    _, phi = mdtraj.compute_phi(traj)
    _, psi = mdtraj.compute_psi(traj)
    return float(np.degrees(phi[0, 0])), float(np.degrees(psi[0, 0]))


def software_versions() -> dict[str, str]:
    """Versions of the packages that determine the output."""
    from importlib.metadata import version

    import Bio
    import mdtraj
    import openmm

    return {
        "python": platform.python_version(),
        "openmm": openmm.__version__,
        "PeptideBuilder": version("PeptideBuilder"),
        "biopython": Bio.__version__,
        "mdtraj": mdtraj.__version__,
        "numpy": np.__version__,
    }


def main(argv: list[str] | None = None) -> None:
    from openmm import app, unit

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=HERE, help="where to write (default: this folder)")
    args = parser.parse_args(argv)
    args.out_dir.mkdir(parents=True, exist_ok=True)

    info: dict = {
        "molecule": "ACE-ALA-NME (alanine dipeptide), 22 atoms, neutral, vacuum",
        "forcefield": list(FORCEFIELD_FILES),
        "nonbonded": "NoCutoff",
        "constraints": None,
        "minimiser": "openmm.LocalEnergyMinimizer",
        "minimiser_tolerance_kj_per_mol_per_nm": MINIMISER_TOLERANCE_KJ_PER_MOL_PER_NM,
        "platform": "Reference",
        "angle_convention": "mdtraj: phi = C(ACE)-N-CA-C, psi = N-CA-C-N(NME), degrees",
        "conformers": {},
        "versions": software_versions(),
    }
    for name, (phi_target, psi_target, filename) in CONFORMERS.items():
        topology, positions_nm, e_built, e_min = build_conformer(phi_target, psi_target)
        path = args.out_dir / filename
        with open(path, "w") as handle:
            app.PDBFile.writeFile(topology, positions_nm * unit.nanometer, handle)

        # Re-read what was written: coordinates are rounded to 0.001 Angstrom in the PDB,
        # so record the energy of the file as well as the minimised one.
        written = app.PDBFile(str(path))
        e_file = potential_kj_per_mol(reference_context(make_system(written.topology), written.positions))
        phi, psi = phi_psi_deg(path)
        info["conformers"][name] = {
            "file": filename,
            "n_atoms": topology.getNumAtoms(),
            "target_phi_psi_deg": [phi_target, psi_target],
            "minimised_phi_psi_deg": [round(phi, 2), round(psi, 2)],
            "energy_built_kj_per_mol": round(e_built, 3),
            "energy_minimised_kj_per_mol": round(e_min, 4),
            "energy_of_pdb_file_kj_per_mol": round(e_file, 4),
        }
        print(
            f"{name:5s} -> {filename:22s} target ({phi_target:7.1f}, {psi_target:7.1f})  "
            f"minimised ({phi:7.1f}, {psi:7.1f})  E_min {e_min:9.3f} kJ/mol  E_file {e_file:9.3f} kJ/mol"
        )

    with open(args.out_dir / "build_info.json", "w") as handle:
        json.dump(info, handle, indent=2)
        handle.write("\n")


if __name__ == "__main__":
    main()
