"""Write ``ethanol.pdb``: the GFN2-xTB minimum of ethanol that ``generate.py`` starts its dynamics from.

The registered system ``ethanol`` (``mlpot md --system ethanol``, ``make demo``) uses it. Atom names
are unique (C1, C2, O1, H1..H6) so OpenMM's PDB reader keeps every atom. Run from the repository
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
from mlpot.systems import topology_from_atoms  # noqa: E402


def main() -> None:
    atoms = relaxed_ethanol()
    topology = topology_from_atoms(atoms, residue_name="ETH")
    with open(HERE / "ethanol.pdb", "w") as handle:
        app.PDBFile.writeFile(topology, atoms.positions * 0.1 * unit.nanometer, handle)
    print(f"wrote {HERE / 'ethanol.pdb'}: {len(atoms)} atoms")


if __name__ == "__main__":
    main()
