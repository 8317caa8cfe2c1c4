"""Write ``ethanol.pdb``: the GFN2-xTB minimum of ethanol that ``generate.py`` starts its dynamics from.

The registered system ``ethanol`` (``mlpot md --system ethanol``, ``make demo``) uses it. Atom names
are unique (C1, C2, O1, H1..H6) so OpenMM's PDB reader keeps every atom. The 8 covalent bonds
are added to the topology, so the file carries CONECT records (OpenMM writes them for a non-standard
residue such as ETH) and mdtraj, OpenMM and viewers see the molecule's bonds. Run from the repository
root (needs tblite, like ``generate.py``)::

    python systems/ethanol/write_pdb.py
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from openmm import app, unit  # noqa: E402

from generate import relaxed_ethanol  # noqa: E402
from mlpot.md.observables import covalent_bonds  # noqa: E402
from mlpot.systems import topology_from_atoms  # noqa: E402


def write_pdb_with_bonds(atoms, path: Path) -> None:
    """Write ``atoms`` (Å) as a one-residue ETH PDB whose CONECT records hold its covalent bonds."""
    topology = topology_from_atoms(atoms, residue_name="ETH")
    topology_atoms = list(topology.atoms())
    for first, second in covalent_bonds(atoms.numbers, atoms.positions).tolist():
        topology.addBond(topology_atoms[first], topology_atoms[second])
    with open(path, "w") as handle:
        app.PDBFile.writeFile(topology, atoms.positions * 0.1 * unit.nanometer, handle)


def main() -> None:
    atoms = relaxed_ethanol()
    write_pdb_with_bonds(atoms, HERE / "ethanol.pdb")
    print(f"wrote {HERE / 'ethanol.pdb'}: {len(atoms)} atoms")


if __name__ == "__main__":
    main()
