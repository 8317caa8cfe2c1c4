"""Registry of the named molecular systems shipped in the repository's ``systems/`` folder.

Every system is one PDB file (coordinates in Angstrom, as PDB files are); periodic systems
carry their box in a CRYST1 record. The scripts that made the files sit beside them
(``systems/<folder>/build.py``); ``systems/README.md`` lists what each one is.

Two loaders hand a system to an engine, each in that engine's units:

* :func:`load_openmm` -> OpenMM ``Topology`` and positions in **nm**;
* :func:`load_atoms` -> ``ase.Atoms`` with positions in **Angstrom**.

Anywhere a system name is accepted, a path to a ``.pdb`` file works too. OpenMM and ASE are
imported only inside the loaders, so importing this module is cheap.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Union

if TYPE_CHECKING:
    import ase
    import openmm.app
    import openmm.unit

__all__ = [
    "SYSTEMS_DIR",
    "SystemSpec",
    "UnknownSystemError",
    "get_system",
    "list_systems",
    "load_atoms",
    "load_openmm",
    "reference_data_file",
]

def _systems_dir() -> Path:
    if os.environ.get("MLPOT_SYSTEMS_DIR"):
        return Path(os.environ["MLPOT_SYSTEMS_DIR"])
    checkout = Path(__file__).resolve().parent.parent / "systems"
    if checkout.is_dir():
        return checkout
    return Path(__file__).resolve().parent / "systems_data"  # an installed wheel carries systems/ here


SYSTEMS_DIR: Path = _systems_dir()
"""The folder holding the system files: ``$MLPOT_SYSTEMS_DIR`` if set, else the checkout's ``systems/``,
else the copy installed with the package."""

NameOrPath = Union[str, "os.PathLike[str]"]


@dataclass(frozen=True)
class SystemSpec:
    """A named molecular system and the PDB file that holds it.

    Attributes:
        name: canonical name, e.g. ``"alanine-dipeptide"``.
        pdb_path: absolute path of the PDB file (coordinates in Angstrom).
        periodic: True if the system is a periodic box (CRYST1 record in the file).
        description: one line: what it is and how it was made.
        aliases: other names :func:`get_system` accepts for it.
        forcefield_files: OpenMM ``ForceField`` files the structure was built and relaxed with
            (an MM reference for the same topology); empty for a user-supplied file.
        reference_data: labelled frames of the molecule (energies eV, forces eV/Å; extxyz), the
            reference observables of stability measurements and StABlE; None if none is shipped.
    """

    name: str
    pdb_path: Path
    periodic: bool
    description: str
    aliases: tuple[str, ...] = ()
    forcefield_files: tuple[str, ...] = ()
    reference_data: Path | None = None


class UnknownSystemError(KeyError, ValueError):
    """A system name that is neither registered nor a path to a ``.pdb`` file."""

    def __str__(self) -> str:  # KeyError would show the message's repr
        return str(self.args[0]) if self.args else ""


_AMBER14 = ("amber14-all.xml",)
_AMBER14_TIP3P = ("amber14-all.xml", "amber14/tip3p.xml")
_AMBER14_GBN2 = ("amber14-all.xml", "implicit/gbn2.xml")

_ALANINE_DIPEPTIDE_DFT = "alanine-dipeptide/dft.extxyz"

# name, file relative to SYSTEMS_DIR, periodic, description, aliases, force-field files,
# labelled reference frames (DFT) relative to SYSTEMS_DIR or None
_REGISTRY: tuple[tuple[str, str, bool, str, tuple[str, ...], tuple[str, ...], str | None], ...] = (
    (
        "alanine-dipeptide",
        "alanine-dipeptide/alanine-dipeptide.pdb",
        False,
        "ACE-ALA-NME, 22 atoms, vacuum; C5 (extended) minimum of amber14",
        ("ala2", "alanine-dipeptide-c5"),
        _AMBER14,
        _ALANINE_DIPEPTIDE_DFT,
    ),
    (
        "alanine-dipeptide-c7eq",
        "alanine-dipeptide/c7eq.pdb",
        False,
        "ACE-ALA-NME, 22 atoms, vacuum; C7eq minimum of amber14",
        (),
        _AMBER14,
        _ALANINE_DIPEPTIDE_DFT,
    ),
    (
        "alanine-dipeptide-c7ax",
        "alanine-dipeptide/c7ax.pdb",
        False,
        "ACE-ALA-NME, 22 atoms, vacuum; C7ax minimum of amber14",
        (),
        _AMBER14,
        _ALANINE_DIPEPTIDE_DFT,
    ),
    (
        "polyproline",
        "polyproline/ppii.pdb",
        False,
        "ACE-(PRO)3-NME, 54 atoms, implicit solvent; polyproline II helix (all X-Pro bonds trans), "
        "amber14 + GBn2 minimum",
        ("polyproline-ppii", "pro3"),
        _AMBER14_GBN2,
        None,
    ),
    (
        "polyproline-ppi",
        "polyproline/ppi.pdb",
        False,
        "ACE-(PRO)3-NME, 54 atoms, implicit solvent; polyproline I helix (all X-Pro bonds cis), amber14 + GBn2 minimum",
        (),
        _AMBER14_GBN2,
        None,
    ),
    (
        "chignolin",
        "chignolin/unfolded.pdb",
        False,
        "GYDPETGTWG, 138 atoms, zwitterion, implicit solvent; extended (PPII angles), amber14 + GBn2 minimum",
        ("chignolin-unfolded",),
        _AMBER14_GBN2,
        None,
    ),
    (
        "chignolin-folded",
        "chignolin/folded.pdb",
        False,
        "GYDPETGTWG, 138 atoms, zwitterion, implicit solvent; beta-hairpin from 1UAO backbone angles, "
        "amber14 + GBn2 minimum",
        (),
        _AMBER14_GBN2,
        None,
    ),
    (
        "ethanol",
        "ethanol/ethanol.pdb",
        False,
        "C2H5OH, 9 atoms, vacuum; GFN2-xTB minimum (the molecule of the shipped B3LYP dataset)",
        (),
        (),
        "ethanol/dft.extxyz",
    ),
    (
        "water-192",
        "water/water-192.pdb",
        True,
        "64 water molecules, cubic box 12.42 A, 1.0 g/cm^3; flexible TIP3P, minimised + 2 ps NVT 300 K",
        (),
        _AMBER14_TIP3P,
        None,
    ),
    (
        "water-1536",
        "water/water-1536.pdb",
        True,
        "512 water molecules, cubic box 24.83 A, 1.0 g/cm^3; flexible TIP3P, minimised + 2 ps NVT 300 K",
        (),
        _AMBER14_TIP3P,
        None,
    ),
)


def list_systems() -> list[SystemSpec]:
    """All registered systems, in registry order, with paths under :data:`SYSTEMS_DIR`."""
    return [
        SystemSpec(name, SYSTEMS_DIR / relative, periodic, description, aliases, forcefield_files,
                   None if reference is None else SYSTEMS_DIR / reference)
        for name, relative, periodic, description, aliases, forcefield_files, reference in _REGISTRY
    ]


def reference_data_file(name_or_path: NameOrPath) -> Path:
    """The labelled reference frames of a shipped system (``ethanol`` → ``systems/ethanol/dft.extxyz``).

    Raises:
        ValueError: for a system without shipped reference data, naming those that have some.
        UnknownSystemError: for an unknown name.
    """
    spec = get_system(name_or_path)
    if spec.reference_data is None:
        having = [s.name for s in list_systems() if s.reference_data is not None]
        raise ValueError(f"system {spec.name!r} has no shipped reference data; systems with some: {having} "
                         "(or pass a file of labelled frames)")
    return spec.reference_data


def get_system(name_or_path: NameOrPath) -> SystemSpec:
    """Look up a system by name or alias (case-insensitive), or describe a ``.pdb`` file.

    A path to an existing ``.pdb`` file gives a spec named after the file's stem, periodic if
    and only if the file has a CRYST1 box.

    Raises:
        UnknownSystemError: (a ``KeyError`` and a ``ValueError``) for an unknown name; the
            message lists the known names.
        FileNotFoundError: for a ``.pdb`` path that does not exist.
    """
    if isinstance(name_or_path, str):
        key = name_or_path.strip().lower()
        for spec in list_systems():
            if key == spec.name or key in spec.aliases:
                return spec

    path = Path(name_or_path).expanduser()
    if path.suffix.lower() == ".pdb":
        if not path.is_file():
            raise FileNotFoundError(f"no such PDB file: {path}")
        return SystemSpec(
            name=path.stem,
            pdb_path=path.resolve(),
            periodic=_pdb_box_lengths_A(path) is not None,
            description=f"user-supplied PDB file {path}",
        )

    known = ", ".join(
        spec.name + (f" (aliases: {', '.join(spec.aliases)})" if spec.aliases else "")
        for spec in list_systems()
    )
    raise UnknownSystemError(
        f"unknown system {str(name_or_path)!r}; known systems: {known}; or give a path to a .pdb file"
    )


def load_openmm(
    name_or_path: NameOrPath,
) -> tuple[openmm.app.Topology, openmm.unit.Quantity]:
    """Load a system for OpenMM.

    Returns:
        ``(topology, positions)``: the Topology (with periodic box vectors set for periodic
        systems and ``None`` otherwise) and a Quantity wrapping a numpy array of shape
        (n_atoms, 3) in nm.
    """
    from openmm import app

    spec = get_system(name_or_path)
    pdb = app.PDBFile(str(spec.pdb_path))
    topology = pdb.topology
    if not spec.periodic:
        topology.setPeriodicBoxVectors(None)  # drop a placeholder CRYST1, if any
    elif topology.getPeriodicBoxVectors() is None:
        raise ValueError(f"system {spec.name!r} is registered as periodic but {spec.pdb_path} has no CRYST1 box")
    return topology, pdb.getPositions(asNumpy=True)


def topology_from_atoms(atoms: ase.Atoms, residue_name: str = "MOL") -> openmm.app.Topology:
    """An OpenMM Topology for ``ase.Atoms``: one chain, one residue, atoms named by element + count
    (C1, C2, H1, ...); the periodic box is set when all three axes are periodic. No bonds (a
    learned potential does not need them)."""
    from collections import Counter

    from openmm import app, unit

    from mlpot.units import NM_PER_ANGSTROM

    topology = app.Topology()
    residue = topology.addResidue(residue_name, topology.addChain())
    seen: Counter = Counter()
    for symbol in atoms.get_chemical_symbols():
        seen[symbol] += 1
        topology.addAtom(f"{symbol}{seen[symbol]}", app.Element.getBySymbol(symbol), residue)
    if atoms.pbc.all():
        topology.setPeriodicBoxVectors(atoms.cell.array * NM_PER_ANGSTROM * unit.nanometer)
    return topology


def load_atoms(name_or_path: NameOrPath) -> ase.Atoms:
    """Load a system as ``ase.Atoms``: positions in Angstrom; cell from CRYST1 and
    ``pbc=True`` for periodic systems; no cell and ``pbc=False`` otherwise."""
    import ase.io

    spec = get_system(name_or_path)
    atoms = ase.io.read(spec.pdb_path, index=0, format="proteindatabank")
    if spec.periodic:
        if atoms.cell.rank != 3:
            raise ValueError(f"system {spec.name!r} is registered as periodic but {spec.pdb_path} has no CRYST1 box")
        atoms.pbc = True
    else:
        atoms.set_cell(None)
        atoms.pbc = False
    return atoms


def _pdb_box_lengths_A(path: Path) -> tuple[float, float, float] | None:
    """Box edges a, b, c (Angstrom) from the file's CRYST1 record, or None if it has none.

    The PDB format uses ``CRYST1 1.000 1.000 1.000`` as a placeholder for "no unit cell"
    (NMR and other non-crystal structures), so edges all <= 1 Angstrom count as no box.
    """
    with open(path) as handle:
        for line in handle:
            if line.startswith("CRYST1"):
                lengths = (float(line[6:15]), float(line[15:24]), float(line[24:33]))
                return lengths if max(lengths) > 1.0 else None
            if line.startswith(("ATOM", "HETATM", "MODEL")):
                return None
    return None
