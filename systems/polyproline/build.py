"""Build the polyproline (ACE-(PRO)3-NME, 54 atoms) structures shipped in this folder.

How to run (from the repository root; about 5 s on one CPU core)::

    pip install PeptideBuilder          # build-time only (the `build-systems` extra)
    python systems/polyproline/build.py

Offline; no input file is read. The recipe (PeptideBuilder backbone with ACE/NME caps, OpenMM
hydrogens, minimisation) is ``systems/peptide_build.py``'s; the force field is amber14
(``amber14-all.xml``) with the GBn2 implicit solvent of the openmm wheel (``implicit/gbn2.xml``),
NoCutoff, no constraints.

Files written here:

* ``ppii.pdb`` -- start: polyproline II helix, all three X-Pro peptide bonds trans, built at
  (φ, ψ, ω) = (-75°, 145°, 180°).
* ``ppi.pdb`` -- target: polyproline I helix, all three X-Pro peptide bonds cis, built at
  (-75°, 160°, 0°). The Pro3-NME bond is trans in both.
* ``build_info.json`` -- built and minimised angles (degrees), energies (kJ/mol), versions.

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
SEQUENCE = "PPP"

# name -> (file, φ, ψ, ω of every X-Pro bond) in degrees
CONFORMERS: dict[str, tuple[str, float, float, float]] = {
    "ppii": ("ppii.pdb", -75.0, 145.0, 180.0),
    "ppi": ("ppi.pdb", -75.0, 160.0, 0.0),
}


def main(argv: list[str] | None = None) -> None:
    out_dir = peptide_build.output_folder(argv, __doc__.splitlines()[0], HERE)

    info: dict = {
        "molecule": "ACE-(PRO)3-NME, 54 atoms, neutral",
        **peptide_build.recipe_info(FORCEFIELD_FILES),
        "conformers": {},
    }
    topologies = []
    for name, (filename, phi, psi, omega) in CONFORMERS.items():
        built = peptide_build.build_peptide(peptide_build.BackboneAngles.uniform(SEQUENCE, phi, psi, omega),
                                            capped=True, forcefield_files=FORCEFIELD_FILES)
        path = out_dir / filename
        info["conformers"][name] = {
            "file": filename, "built_phi_psi_omega_deg": [phi, psi, omega],
            **peptide_build.describe(built, path, FORCEFIELD_FILES),
        }
        topologies.append(built.topology)
        print(name, json.dumps(info["conformers"][name]))
    if not peptide_build.same_atoms(*topologies):
        raise RuntimeError("the two conformers do not have the same atoms in the same order")
    (out_dir / "build_info.json").write_text(json.dumps(info, indent=1) + "\n")


if __name__ == "__main__":
    main()
