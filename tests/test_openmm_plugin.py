"""OpenMM through openmm-torch's TorchForce and openmm-ml: same physics as the model, right units."""

from __future__ import annotations

import numpy as np
import openmm
import pytest
from openmm import app, unit

from conftest import as_tensors
from mlpot.plugins.openmm import create_force, create_system
from mlpot.systems import get_system, load_openmm
from mlpot.units import ANGSTROM_PER_NM, KJ_PER_MOL_PER_EV

KJ_PER_MOL_NM = unit.kilojoule_per_mole / unit.nanometer


def _energy_forces(system, positions, platform="Reference", groups=-1):
    """(energy eV, forces eV/Å) of an OpenMM System, converted back to model units."""
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName(platform))
    context.setPositions(positions)
    state = context.getState(getEnergy=True, getForces=True, groups=groups)
    energy = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole) / KJ_PER_MOL_PER_EV
    forces = state.getForces(asNumpy=True).value_in_unit(KJ_PER_MOL_NM) / (KJ_PER_MOL_PER_EV * ANGSTROM_PER_NM)
    return energy, forces


@pytest.mark.parametrize("arch", ["egnn", "nequip"])
@pytest.mark.parametrize("platform", ["Reference", "CPU"])
@pytest.mark.parametrize("system_name", ["alanine-dipeptide", "water-192"])
def test_openmm_energy_and_forces_equal_the_model_after_unit_conversion(
    arch, platform, system_name, model_files, eager_models
):
    from mlpot.systems import load_atoms

    topology, positions = load_openmm(system_name)
    atoms = load_atoms(system_name)
    if system_name == "water-192":  # keep the test fast: the dilute box (first 16 molecules)
        atoms = atoms[:48]
        topology = _first_atoms(topology, 48)
        positions = positions[:48]
    expected = eager_models[(arch, "float64")].compute(*as_tensors(atoms), True, False, False)
    energy, forces = _energy_forces(create_system(model_files[(arch, "float64")], topology), positions, platform)
    assert energy == pytest.approx(float(expected["energy"]), rel=1e-10)
    np.testing.assert_allclose(forces, expected["forces"].numpy(), atol=1e-8)


def _first_atoms(topology, count):
    """A copy of ``topology`` keeping its first ``count`` atoms (whole residues) and its box."""
    modeller = app.Modeller(topology, [openmm.Vec3(0, 0, 0)] * topology.getNumAtoms())
    modeller.delete([atom for atom in topology.atoms() if atom.index >= count])
    modeller.topology.setPeriodicBoxVectors(topology.getPeriodicBoxVectors())
    return modeller.topology


def test_energy_in_openmm_units_is_kj_per_mol(model_files, eager_models, alanine_dipeptide):
    topology, positions = load_openmm("alanine-dipeptide")
    context = openmm.Context(create_system(model_files[("egnn", "float64")], topology), openmm.VerletIntegrator(0.001),
                             openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(positions)
    energy_kj = context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    model = eager_models[("egnn", "float64")]
    energy_eV = float(model.compute(*as_tensors(alanine_dipeptide), True, False, False)["energy"])
    assert energy_kj == pytest.approx(energy_eV * 96.485332, rel=1e-6)


def test_openmm_ml_create_system_matches_the_plugin(model_files):
    from openmmml import MLPotential

    topology, positions = load_openmm("alanine-dipeptide")
    path = model_files[("nequip", "float64")]
    via_openmmml = MLPotential("mlpot", modelPath=str(path)).createSystem(topology)
    energy_a, forces_a = _energy_forces(via_openmmml, positions)
    energy_b, forces_b = _energy_forces(create_system(path, topology), positions)
    assert energy_a == pytest.approx(energy_b, rel=1e-12)
    np.testing.assert_allclose(forces_a, forces_b, atol=1e-10)


def test_openmm_ml_mixed_system_applies_the_model_to_the_ml_atoms_only(model_files, eager_models, alanine_dipeptide):
    """Alanine dipeptide (ML, periodic model) in TIP3P water (MM, PME): the ML force group acts on the
    peptide only and equals the model on the peptide alone (its images are beyond the cutoff)."""
    from openmmml import MLPotential

    topology, positions = load_openmm("alanine-dipeptide")
    forcefield = app.ForceField("amber14-all.xml", "amber14/tip3p.xml")
    modeller = app.Modeller(topology, positions)
    modeller.addSolvent(forcefield, boxSize=openmm.Vec3(2.2, 2.2, 2.2) * unit.nanometer)
    mm_system = forcefield.createSystem(
        modeller.topology, nonbondedMethod=app.PME, nonbondedCutoff=0.9 * unit.nanometer
    )
    ml_atoms = list(range(topology.getNumAtoms()))
    path = model_files[("nequip", "float64")]
    potential = MLPotential("mlpot", modelPath=str(path))
    mixed = potential.createMixedSystem(modeller.topology, mm_system, ml_atoms, forceGroup=1)
    assert mixed.getNumParticles() == mm_system.getNumParticles()
    energy, ml_forces = _energy_forces(mixed, modeller.positions, groups={1})
    peptide = alanine_dipeptide.copy()
    peptide.positions = np.array(modeller.positions.value_in_unit(unit.angstrom))[ml_atoms]
    expected = eager_models[("nequip", "float64")].compute(*as_tensors(peptide), True, False, False)
    assert energy == pytest.approx(float(expected["energy"]), rel=1e-10)
    np.testing.assert_allclose(ml_forces[ml_atoms], expected["forces"].numpy(), atol=1e-8)
    assert np.all(ml_forces[len(ml_atoms):] == 0.0)


def test_unknown_element_in_topology_is_refused_by_name(model_files):
    topology = app.Topology()
    residue = topology.addResidue("ION", topology.addChain())
    topology.addAtom("NA", app.element.sodium, residue)
    with pytest.raises(ValueError, match=r"element\(s\) Na not supported by model .* knows only H, C, N, O"):
        create_force(model_files[("egnn", "float32")], topology)


def test_box_too_small_for_the_cutoff_is_refused_when_the_force_is_made(model_files):
    topology, _ = load_openmm("water-192")
    box = [openmm.Vec3(0.9, 0, 0), openmm.Vec3(0, 0.9, 0), openmm.Vec3(0, 0, 0.9)]
    topology.setPeriodicBoxVectors(box * unit.nanometer)
    with pytest.raises(ValueError, match=r"periodic box too small for the cutoff: .* 9.000 Å .* 10.000 Å"):
        create_force(model_files[("egnn", "float32")], topology)


@pytest.mark.parametrize("atoms, message", [([0, 1, 99], r"atom indices \[99\] out of range for a system of 22"),
                                            ([-1, 0], r"atom indices \[-1\] out of range"),
                                            ([0, 1, 1], r"more than once: \[1\]"),
                                            ([], "atoms is empty"),
                                            ([0.0, 1.7, 2.2],
                                             r"atoms must be integer particle indices; got \[0.0, 1.7, 2.2\]")])
def test_bad_ml_subset_indices_are_refused(atoms, message, model_files):
    topology, _ = load_openmm("alanine-dipeptide")
    with pytest.raises(ValueError, match=message):
        create_force(model_files[("egnn", "float32")], topology, atoms=atoms)


def test_atomic_numbers_must_agree_with_the_topology(model_files):
    topology, _ = load_openmm("alanine-dipeptide")
    path = model_files[("egnn", "float32")]
    with pytest.raises(ValueError, match="atomic_numbers lists 3 particles but the topology has 22 atoms"):
        create_force(path, topology, atomic_numbers=[6, 6, 8])
    with pytest.raises(ValueError, match=r"atomic_numbers disagree with the topology's elements at .*atom 0: 8 vs 1"):
        create_force(path, topology, atomic_numbers=[8] * 22)
    with pytest.raises(ValueError, match="atomic_numbers must be integers"):
        create_force(path, atomic_numbers=[1.0, 6.5])
    with pytest.raises(ValueError, match="atomic_numbers is empty"):
        create_force(path, atomic_numbers=[])
    numbers = [atom.element.atomic_number for atom in topology.atoms()]
    create_force(path, topology, atomic_numbers=numbers)  # agreeing: accepted


def test_atomic_numbers_for_fewer_particles_than_the_system_are_refused_at_the_first_evaluation(model_files):
    topology, positions = load_openmm("alanine-dipeptide")
    system = openmm.System()
    for atom in topology.atoms():
        system.addParticle(atom.element.mass)
    system.addForce(create_force(model_files[("egnn", "float32")], atomic_numbers=[6, 6, 8]))
    with pytest.raises(openmm.OpenMMException, match="atomic_numbers for 3 particles but the System has 22 particles"):
        _energy_forces(system, positions)


def test_unknown_mlpotential_arguments_are_refused_by_name(model_files):
    from openmmml import MLPotential

    with pytest.raises(TypeError, match=r"unknown argument\(s\) lengthScale, modelpath; it knows only modelPath"):
        MLPotential("mlpot", modelPath=str(model_files[("egnn", "float32")]), modelpath="x", lengthScale=0.1)


def test_atom_without_element_is_refused_by_name(model_files):
    topology = app.Topology()
    residue = topology.addResidue("DUM", topology.addChain())
    topology.addAtom("X1", None, residue)
    with pytest.raises(ValueError, match=r"atom 0 \(X1 in residue DUM\) has no element"):
        create_force(model_files[("egnn", "float32")], topology)


def test_create_force_needs_a_topology_or_atomic_numbers(model_files):
    with pytest.raises(TypeError, match="needs the topology"):
        create_force(model_files[("egnn", "float32")])


def _nve_energies(model_path, system_name, reports, steps_per_report, seed):
    """Total and kinetic energies (kJ/mol) along Verlet NVE at 0.5 fs from 300 K velocities."""
    topology, positions = load_openmm(system_name)
    system = create_system(model_path, topology, remove_cm_motion=False)
    integrator = openmm.VerletIntegrator(0.5 * unit.femtosecond)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("CPU"))
    context.setPositions(positions)
    context.setVelocitiesToTemperature(300 * unit.kelvin, seed)
    totals, kinetic = [], []
    for _ in range(reports):
        integrator.step(steps_per_report)
        state = context.getState(getEnergy=True)
        k = state.getKineticEnergy().value_in_unit(unit.kilojoule_per_mole)
        totals.append(state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole) + k)
        kinetic.append(k)
    return np.array(totals), np.array(kinetic)


@pytest.mark.parametrize("arch", ["egnn", "nequip"])
def test_nve_with_verlet_conserves_total_energy(arch, model_files):
    """0.5 fs Verlet, float64 model, 2000 steps of alanine dipeptide from 300 K velocities."""
    totals, kinetic = _nve_energies(model_files[(arch, "float64")], "alanine-dipeptide", 40, 50, seed=1)
    drift = abs(totals[-1] - totals[0]) / kinetic.mean()
    fluctuation = totals.std() / kinetic.mean()
    print(f"NVE {arch}: drift {drift:.2e}, fluctuation {fluctuation:.2e} (relative to mean kinetic energy)")
    # stated bound: total energy moves by less than 0.1 % of the kinetic energy over 1 ps
    assert drift < 1e-3 and fluctuation < 1e-3, (drift, fluctuation)


def test_copying_the_force_is_refused_with_a_message_instead_of_crashing(model_files):
    """openmm-torch 1.5 (PyPI) segfaults when a TorchForce is deep-copied, which openmm-ml's
    createMixedSystem(interpolate=True) does; the plugin turns that into an error naming the cause."""
    import copy

    from openmmml import MLPotential

    topology, _ = load_openmm("alanine-dipeptide")
    with pytest.raises(RuntimeError, match="cannot be copied: openmm-torch 1.5"):
        copy.deepcopy(create_force(model_files[("egnn", "float32")], topology))
    mm_system = app.ForceField(*get_system("alanine-dipeptide").forcefield_files).createSystem(
        topology, nonbondedMethod=app.NoCutoff)
    potential = MLPotential("mlpot", modelPath=str(model_files[("egnn", "float32")]))
    with pytest.raises(RuntimeError, match="interpolate=True.* not available"):
        potential.createMixedSystem(topology, mm_system, list(range(22)), interpolate=True)


@pytest.mark.slow
def test_nve_in_a_periodic_water_box_conserves_total_energy(model_files):
    """0.5 fs Verlet, float64 EGNN, 1000 steps of the 192-atom water box (minimum image across the box)."""
    totals, kinetic = _nve_energies(model_files[("egnn", "float64")], "water-192", 20, 50, seed=2)
    drift = abs(totals[-1] - totals[0]) / kinetic.mean()
    print(f"NVE water-192: drift {drift:.2e} (relative to mean kinetic energy)")
    assert drift < 1e-3
