"""Build the chignolin (GYDPETGTWG, 138 atoms) structures shipped in this folder.

How to run (from the repository root; about 1 min on one CPU core, most of it minimising the
clashes of PeptideBuilder's default side-chain rotamers)::

    pip install PeptideBuilder          # build-time only (the `build-systems` extra)
    python systems/chignolin/build.py

Offline; no input file is read. The recipe (PeptideBuilder backbone, OpenMM hydrogens,
minimisation) is ``systems/peptide_build.py``'s; the force field is amber14 (``amber14-all.xml``)
with the GBn2 implicit solvent of the openmm wheel (``implicit/gbn2.xml``), NoCutoff, no
constraints. Free termini, zwitterionic at pH 7 (NH3+ ... COO-, Asp and Glu charged: net -2).

Files written here:

* ``unfolded.pdb`` -- start: every residue at the polyproline II angles (φ, ψ) = (-75°, 145°),
  all peptide bonds trans; an extended chain.
* ``folded.pdb`` -- target: the β-hairpin, built from the backbone (φ, ψ) of model 1 of the NMR
  structure 1UAO (residues 2-10 φ, 1-9 ψ; measured with mdtraj; ``docs/peptides.md``),
  all peptide bonds trans.
* ``build_info.json`` -- minimised angles (degrees), energies (kJ/mol), CA RMSDs (Å), versions.

Both files have the same atoms in the same order (checked).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # systems/, for peptide_build
import peptide_build  # noqa: E402

FORCEFIELD_FILES = ("amber14-all.xml", "implicit/gbn2.xml")
SEQUENCE = "GYDPETGTWG"

# 1UAO model 1, residues 1-10 (degrees). The φ of residue 1 and ψ of residue 10 are not defined
# (free termini); PeptideBuilder does not use them and the values here are placeholders.
FOLDED_PHI_DEG = (-75.0, -84.8, -71.7, -76.0, -60.3, -107.0, 90.8, -160.7, -69.2, -49.5)
FOLDED_PSI_DEG = (-176.7, 97.9, 115.2, -12.8, -39.4, -22.5, 34.1, 165.4, 107.1, 145.0)
UNFOLDED_PHI_PSI_DEG = (-75.0, 145.0)

# cross-strand CA pairs of the hairpin (1-based residue numbers) whose distances build_info.json reports
CROSS_STRAND_PAIRS = ((2, 9), (3, 8), (1, 10))


def conformers() -> dict[str, tuple[str, peptide_build.BackboneAngles]]:
    """name -> (file, backbone angles)."""
    n = len(SEQUENCE)
    return {
        "unfolded": ("unfolded.pdb", peptide_build.BackboneAngles.uniform(SEQUENCE, *UNFOLDED_PHI_PSI_DEG, 180.0)),
        "folded": ("folded.pdb", peptide_build.BackboneAngles(SEQUENCE, FOLDED_PHI_DEG, FOLDED_PSI_DEG, [180.0] * n)),
    }


def main(argv: list[str] | None = None) -> None:
    import numpy as np

    out_dir = peptide_build.output_folder(argv, __doc__.splitlines()[0], HERE)

    info: dict = {
        "molecule": "chignolin GYDPETGTWG, 138 atoms, free zwitterionic termini, net charge -2",
        **peptide_build.recipe_info(FORCEFIELD_FILES),
        "folded_target_phi_deg": list(FOLDED_PHI_DEG[1:]), "folded_target_psi_deg": list(FOLDED_PSI_DEG[:-1]),
        "conformers": {},
    }
    built = {}
    for name, (filename, angles) in conformers().items():
        built[name] = peptide_build.build_peptide(angles, capped=False, forcefield_files=FORCEFIELD_FILES)
        described = peptide_build.describe(built[name], out_dir / filename, FORCEFIELD_FILES)
        cas = peptide_build.ca_atoms(built[name].topology)
        positions = built[name].positions_nm
        described["cross_strand_ca_distances_A"] = {
            f"{a}-{b}": round(float(np.linalg.norm(positions[cas[a - 1]] - positions[cas[b - 1]])) * 10.0, 2)
            for a, b in CROSS_STRAND_PAIRS}
        info["conformers"][name] = {"file": filename, **described}
        print(name, json.dumps(info["conformers"][name]))
    if not peptide_build.same_atoms(built["unfolded"].topology, built["folded"].topology):
        raise RuntimeError("the two conformers do not have the same atoms in the same order")
    cas = peptide_build.ca_atoms(built["folded"].topology)
    info["ca_rmsd_unfolded_to_folded_A"] = round(
        peptide_build.ca_rmsd_A(built["unfolded"].positions_nm, built["folded"].positions_nm, cas), 3)
    print("CA RMSD unfolded -> folded", info["ca_rmsd_unfolded_to_folded_A"], "A")
    (out_dir / "build_info.json").write_text(json.dumps(info, indent=1) + "\n")


if __name__ == "__main__":
    main()
