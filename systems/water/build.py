"""Build periodic boxes of liquid water (n^3 molecules at 1.0 g/cm^3) with OpenMM.

How to run (from the repository root)::

    python systems/water/build.py                              # the shipped water-192.pdb, water-1536.pdb
    python systems/water/build.py --per-side 12 -o water-5184.pdb   # any other n^3 box

Needs: OpenMM (amber14 force-field files ship with it) and numpy. Offline; no input file.
The two shipped boxes take about half a minute (one CPU thread).

Recipe, the same for every size:

1. A cubic box of edge L holding n^3 molecules at the requested density (default 1.0 g/cm^3,
   molar mass from OpenMM's element masses). Oxygens sit on an n x n x n grid of spacing L/n;
   each molecule gets an independent uniformly random orientation (numpy Generator, seeded),
   TIP3P geometry (O-H 0.9572 Angstrom, H-O-H 104.52 degrees).
2. amber14 TIP3P (``amber14-all.xml`` + ``amber14/tip3p.xml``), *flexible* (rigidWater=False,
   no constraints), PME with a cutoff of min(1.0 nm, 0.45 L).
3. Energy minimisation, then a short NVT Langevin run (default 2 ps, 0.5 fs steps, 300 K,
   friction 5/ps, strong so that it thermalises quickly) with the box held fixed, so the
   density stays exactly as set.
4. A PDB with CRYST1 (the box), molecules wrapped into the box whole (by molecule).

The result is a relaxed, liquid-like starting structure, not an equilibrated sample of the
TIP3P liquid; run your own equilibration with the potential you will use. Placement and
Langevin noise are seeded and the CPU platform runs on one thread with DeterministicForces, so
a rebuild with the same OpenMM version on the same kind of machine gives the same file.

Files written here by the default run: ``water-192.pdb`` (64 molecules, L = 12.42 Angstrom),
``water-1536.pdb`` (512 molecules, L = 24.83 Angstrom), and ``build_info.json`` (seed, box,
density, energies, software versions).
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent

FORCEFIELD_FILES = ("amber14-all.xml", "amber14/tip3p.xml")
AVOGADRO_PER_MOL = 6.02214076e23
OH_LENGTH_A = 0.9572
HOH_ANGLE_DEG = 104.52

# The boxes shipped in this folder: file name -> molecules per box edge.
SHIPPED = {"water-192.pdb": 4, "water-1536.pdb": 8}


def water_molar_mass_g_per_mol() -> float:
    """Molar mass of H2O from OpenMM's element masses, g/mol."""
    from openmm.app import element

    return element.oxygen.mass._value + 2 * element.hydrogen.mass._value


def box_edge_A(n_molecules: int, density_g_per_cm3: float = 1.0) -> float:
    """Edge of the cubic box (Angstrom) that holds ``n_molecules`` waters at the given density."""
    volume_cm3 = n_molecules * water_molar_mass_g_per_mol() / (AVOGADRO_PER_MOL * density_g_per_cm3)
    return (volume_cm3 * 1e24) ** (1.0 / 3.0)


def random_rotations(n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` uniformly distributed random rotation matrices, shape (n, 3, 3).

    A normalised 4-vector of independent normal deviates is a uniform random unit quaternion.
    """
    q = rng.normal(size=(n, 4))
    w, x, y, z = (q / np.linalg.norm(q, axis=1, keepdims=True)).T
    return np.stack(
        [
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], axis=-1),
            np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], axis=-1),
            np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], axis=-1),
        ],
        axis=1,
    )


def grid_water_positions_A(n_per_side: int, edge_A: float, rng: np.random.Generator) -> np.ndarray:
    """Positions (Angstrom), shape (3 n^3, 3), order O H H per molecule, O on a cubic grid."""
    half_angle = np.radians(HOH_ANGLE_DEG) / 2
    local = np.array(
        [
            [0.0, 0.0, 0.0],
            [OH_LENGTH_A * np.sin(half_angle), 0.0, OH_LENGTH_A * np.cos(half_angle)],
            [-OH_LENGTH_A * np.sin(half_angle), 0.0, OH_LENGTH_A * np.cos(half_angle)],
        ]
    )
    spacing = edge_A / n_per_side
    idx = np.arange(n_per_side)
    centres = (np.stack(np.meshgrid(idx, idx, idx, indexing="ij"), axis=-1).reshape(-1, 3) + 0.5) * spacing
    rotations = random_rotations(len(centres), rng)
    molecules = centres[:, None, :] + np.einsum("mij,aj->mai", rotations, local)
    return molecules.reshape(-1, 3)


def water_topology(n_molecules: int, edge_A: float):
    """OpenMM Topology of ``n_molecules`` HOH residues (O, H1, H2) in a cubic box."""
    from openmm import Vec3, app, unit

    topology = app.Topology()
    chain = topology.addChain()
    for i in range(n_molecules):
        residue = topology.addResidue("HOH", chain, str(i + 1))
        o = topology.addAtom("O", app.element.oxygen, residue)
        h1 = topology.addAtom("H1", app.element.hydrogen, residue)
        h2 = topology.addAtom("H2", app.element.hydrogen, residue)
        topology.addBond(o, h1)
        topology.addBond(o, h2)
    edge_nm = edge_A / 10.0
    topology.setPeriodicBoxVectors(
        (Vec3(edge_nm, 0, 0), Vec3(0, edge_nm, 0), Vec3(0, 0, edge_nm)) * unit.nanometer
    )
    return topology


def build_water_box(
    n_per_side: int,
    seed: int = 0,
    density_g_per_cm3: float = 1.0,
    temperature_K: float = 300.0,
    equilibration_ps: float = 2.0,
    timestep_fs: float = 0.5,
    friction_per_ps: float = 5.0,
    platform_name: str = "CPU",
):
    """Build and relax a cubic box of ``n_per_side**3`` flexible TIP3P waters.

    Returns ``(topology, positions_nm, info)``: an OpenMM Topology with the periodic box set,
    positions in nm of shape (3 n^3, 3) wrapped into the box by molecule, and a dict with the
    box edge (Angstrom), density (g/cm^3) and energies (kJ/mol) for the record.
    """
    import openmm
    from openmm import app, unit

    if n_per_side < 1:
        raise ValueError(f"n_per_side must be >= 1, got {n_per_side}")
    n_molecules = n_per_side**3
    edge_A = box_edge_A(n_molecules, density_g_per_cm3)
    rng = np.random.default_rng(seed)
    positions_nm = grid_water_positions_A(n_per_side, edge_A, rng) / 10.0
    topology = water_topology(n_molecules, edge_A)

    cutoff_nm = min(1.0, 0.45 * edge_A / 10.0)
    system = app.ForceField(*FORCEFIELD_FILES).createSystem(
        topology,
        nonbondedMethod=app.PME,
        nonbondedCutoff=cutoff_nm * unit.nanometer,
        constraints=None,
        rigidWater=False,
    )
    integrator = openmm.LangevinMiddleIntegrator(
        temperature_K * unit.kelvin, friction_per_ps / unit.picosecond, timestep_fs * unit.femtosecond
    )
    integrator.setRandomNumberSeed(seed + 1)  # 0 would mean "pick a seed at random"
    # One thread and fixed-order force sums: a rebuild reproduces the file (multi-threaded
    # minimisation on the CPU platform does not, even with DeterministicForces).
    properties = {"DeterministicForces": "true", "Threads": "1"} if platform_name == "CPU" else {}
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName(platform_name), properties)
    context.setPositions(positions_nm * unit.nanometer)

    def potential_kj_per_mol() -> float:
        return context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)

    e_grid = potential_kj_per_mol()
    openmm.LocalEnergyMinimizer.minimize(context, 10.0, 0)
    e_min = potential_kj_per_mol()
    context.setVelocitiesToTemperature(temperature_K * unit.kelvin, seed + 1)
    n_steps = int(round(equilibration_ps * 1000.0 / timestep_fs))
    integrator.step(n_steps)

    state = context.getState(getEnergy=True, getPositions=True, enforcePeriodicBox=True)
    n_dof = 3 * system.getNumParticles() - 3  # flexible water, no constraints; COM motion removed
    kinetic = state.getKineticEnergy().value_in_unit(unit.kilojoule_per_mole)
    gas_constant = unit.MOLAR_GAS_CONSTANT_R.value_in_unit(unit.kilojoule_per_mole / unit.kelvin)
    temperature_end = 2 * kinetic / (n_dof * gas_constant)
    positions_nm = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)

    mass_g = n_molecules * water_molar_mass_g_per_mol() / AVOGADRO_PER_MOL
    info = {
        "n_molecules": n_molecules,
        "n_atoms": 3 * n_molecules,
        "seed": seed,
        "box_edge_A": round(edge_A, 5),
        "density_g_per_cm3": round(mass_g / (edge_A**3 * 1e-24), 6),
        "forcefield": list(FORCEFIELD_FILES),
        "rigid_water": False,
        "nonbonded": f"PME, cutoff {cutoff_nm:.4f} nm",
        "nvt": {
            "integrator": "LangevinMiddleIntegrator",
            "temperature_K": temperature_K,
            "friction_per_ps": friction_per_ps,
            "timestep_fs": timestep_fs,
            "steps": n_steps,
            "length_ps": n_steps * timestep_fs / 1000.0,
        },
        "energy_grid_kj_per_mol": round(e_grid, 2),
        "energy_minimised_kj_per_mol": round(e_min, 2),
        "energy_final_kj_per_mol": round(state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole), 2),
        "instantaneous_temperature_final_K": round(temperature_end, 1),
        "platform": context.getPlatform().getName(),
    }
    return topology, positions_nm, info


def write_pdb(path: Path, topology, positions_nm: np.ndarray) -> None:
    """Write a PDB; OpenMM writes the topology's periodic box as CRYST1 (Angstrom)."""
    from openmm import app, unit

    with open(path, "w") as handle:
        app.PDBFile.writeFile(topology, positions_nm * unit.nanometer, handle)


def software_versions() -> dict[str, str]:
    """Versions of the packages that determine the output."""
    import openmm

    return {"python": platform.python_version(), "openmm": openmm.__version__, "numpy": np.__version__}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--per-side", type=int, help="molecules per box edge (box holds n^3); default: the shipped boxes"
    )
    parser.add_argument("-o", "--output", type=Path, help="PDB to write (with --per-side)")
    parser.add_argument("--seed", type=int, default=0, help="orientations and Langevin noise (default 0)")
    parser.add_argument("--density", type=float, default=1.0, help="g/cm^3 (default 1.0)")
    parser.add_argument("--temperature", type=float, default=300.0, help="K (default 300)")
    parser.add_argument("--ps", type=float, default=2.0, help="NVT relaxation length in ps (default 2)")
    parser.add_argument("--friction", type=float, default=5.0, help="Langevin friction in 1/ps (default 5)")
    parser.add_argument("--platform", default="CPU", help="OpenMM platform name (default CPU)")
    args = parser.parse_args(argv)

    if args.per_side is None:
        if args.output is not None:
            parser.error("-o needs --per-side")
        jobs = [(HERE / name, n) for name, n in SHIPPED.items()]
    else:
        n_atoms = 3 * args.per_side**3
        jobs = [(args.output or Path(f"water-{n_atoms}.pdb"), args.per_side)]

    record = {}
    for path, n_per_side in jobs:
        topology, positions_nm, info = build_water_box(
            n_per_side,
            args.seed,
            args.density,
            args.temperature,
            args.ps,
            friction_per_ps=args.friction,
            platform_name=args.platform,
        )
        write_pdb(path, topology, positions_nm)
        record[path.name] = info
        print(
            f"{path}: {info['n_atoms']} atoms, L = {info['box_edge_A']:.3f} A, "
            f"rho = {info['density_g_per_cm3']:.4f} g/cm3, E_min = {info['energy_minimised_kj_per_mol']:.1f}, "
            f"E_final = {info['energy_final_kj_per_mol']:.1f} kJ/mol, "
            f"T_final = {info['instantaneous_temperature_final_K']} K"
        )

    if args.per_side is None:
        with open(HERE / "build_info.json", "w") as handle:
            json.dump({"boxes": record, "versions": software_versions()}, handle, indent=2)
            handle.write("\n")


if __name__ == "__main__":
    main()
