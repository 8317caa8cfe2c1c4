"""Compiled model files (mlpot.compiled, ``mlpot compile``): the TorchScript file's numbers, equivariance, one file
for every size, and refusals of edited, foreign-version and wrong-device files.

Each architecture is compiled once per session (the ``compiled_files`` fixture of conftest.py; tens of seconds each
on 2 cores; torch's inductor cache makes a second run faster).
"""

from __future__ import annotations

import json
import pickle
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import molecule

from mlpot.compiled import CompiledModel, load_compiled
from mlpot.deploy import METADATA_ENTRY, SEAL_ENTRY, ModelFileError, _seal_of, load_model
from mlpot.plugins.ase import MLPotCalculator

ARCHITECTURES = ["egnn", "nequip"]


def _results(calculator, atoms, properties=("energy", "forces")):
    atoms = atoms.copy()
    atoms.calc = calculator
    calculator.calculate(atoms, list(properties))
    return dict(calculator.results)


def _assert_close(got, expected, relative=2e-5):
    """Equal to float32 rounding, relative to the largest magnitude."""
    scale = np.abs(expected).max() + 1e-6
    np.testing.assert_allclose(got, expected, rtol=0, atol=relative * scale)


@pytest.mark.parametrize("arch", ARCHITECTURES)
@pytest.mark.parametrize("system", ["alanine_dipeptide", "water_box"])
def test_compiled_file_gives_the_torchscript_files_energies_forces_and_stress(compiled_files, arch, system, request):
    atoms = request.getfixturevalue(system)
    source, compiled = compiled_files[arch]
    properties = ["energy", "energies", "forces"] + (["stress"] if atoms.pbc.all() else [])
    expected = _results(MLPotCalculator(source), atoms, properties)
    got = _results(MLPotCalculator(compiled), atoms, properties)
    for key in properties:
        _assert_close(got[key], expected[key])


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_rotating_the_structure_rotates_the_compiled_forces(compiled_files, arch, alanine_dipeptide):
    calculator = MLPotCalculator(compiled_files[arch][1])
    rotation = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64))[0]
    rotation = rotation.numpy()
    rotated = alanine_dipeptide.copy()
    rotated.positions = alanine_dipeptide.positions @ rotation.T
    before = _results(calculator, alanine_dipeptide)
    after = _results(calculator, rotated)
    assert abs(after["energy"] - before["energy"]) <= 2e-5 * abs(before["energy"]) + 1e-5
    _assert_close(after["forces"], before["forces"] @ rotation.T, relative=1e-4)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_one_compiled_file_serves_every_atom_and_pair_count(compiled_files, arch, alanine_dipeptide):
    source, compiled = compiled_files[arch]
    reference, calculator = MLPotCalculator(source), MLPotCalculator(compiled)
    far_apart = Atoms("HO", positions=[[0.0, 0.0, 0.0], [0.0, 0.0, 9.0]])  # two atoms, no pair within the cutoff
    for atoms in (molecule("CH3CH2OH"), alanine_dipeptide, Atoms("O"), far_apart, molecule("H2O")):
        expected = _results(reference, atoms, ["energy", "energies", "forces"])
        got = _results(calculator, atoms, ["energy", "energies", "forces"])
        assert got["forces"].shape == (len(atoms), 3)
        _assert_close(got["energies"], expected["energies"])
        _assert_close(got["forces"], expected["forces"])


def test_compiled_calculator_refuses_what_the_torchscript_one_refuses(compiled_files):
    calculator = MLPotCalculator(compiled_files["nequip"][1])
    with pytest.raises(ValueError, match="Si"):
        _results(calculator, Atoms("Si2", positions=[[0, 0, 0], [0, 0, 2.0]]))
    with pytest.raises(ValueError, match="closer than 0.01"):
        _results(calculator, Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.001]]))


def test_compiled_calculator_pickles_by_file_name(compiled_files, alanine_dipeptide):
    calculator = MLPotCalculator(compiled_files["egnn"][1])
    copy = pickle.loads(pickle.dumps(calculator))
    assert isinstance(copy.model, CompiledModel)
    # equal to rounding, not bit for bit: with several threads the compiled sums onto atoms run in parallel
    _assert_close(_results(copy, alanine_dipeptide)["forces"], _results(calculator, alanine_dipeptide)["forces"])


def test_mlpot_info_shows_the_compiled_files_metadata_and_seal(compiled_files, capsys):
    from mlpot.cli import main

    assert main(["info", str(compiled_files["egnn"][1])]) == 0
    text = capsys.readouterr().out
    assert "compiled       aotinductor for cpu" in text and "seal           intact" in text


def _rewritten(path: Path, out: Path, edit_metadata=None, edit_entry=None, reseal: bool = False) -> Path:
    """A copy of the compiled file ``path`` with its metadata and/or one other entry edited (re-sealed when
    ``reseal``: an edit the seal cannot see, so that the check after it is what refuses the file)."""
    with zipfile.ZipFile(path) as archive:
        entries = {info.filename: archive.read(info.filename) for info in archive.infolist()}
    metadata_name = next(name for name in entries if name.endswith("/extra/" + METADATA_ENTRY))
    metadata = json.loads(entries[metadata_name])
    if edit_metadata is not None:
        edit_metadata(metadata)
        entries[metadata_name] = json.dumps(metadata).encode()
    if edit_entry is not None:
        name = next(name for name in entries if name.endswith(".so"))
        entries[name] = edit_entry(entries[name])
    with zipfile.ZipFile(out, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    if reseal:
        seal_name = next(name for name in entries if name.endswith("/extra/" + SEAL_ENTRY))
        with zipfile.ZipFile(out) as archive:
            entries[seal_name] = json.dumps({"sha256": _seal_of(archive, metadata)}).encode()
        with zipfile.ZipFile(out, "w") as archive:
            for name, data in entries.items():
                archive.writestr(name, data)
    return out


def _one_bit_flipped(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 1]) + data[middle + 1:]


def test_edited_compiled_file_is_refused(compiled_files, tmp_path):
    compiled = compiled_files["egnn"][1]

    def larger_cutoff(metadata):
        metadata["cutoff"] = 6.0

    with pytest.raises(ModelFileError, match="has been modified"):
        load_compiled(_rewritten(compiled, tmp_path / "cutoff.pt2", edit_metadata=larger_cutoff))
    with pytest.raises(ModelFileError, match="has been modified"):
        load_compiled(_rewritten(compiled, tmp_path / "code.pt2", edit_entry=_one_bit_flipped))


def test_file_compiled_with_another_torch_version_is_refused_in_one_line(compiled_files, tmp_path):
    def older_torch(metadata):
        metadata["compiled"]["torch"] = "2.6.0"

    edited = _rewritten(compiled_files["egnn"][1], tmp_path / "old.pt2", edit_metadata=older_torch, reseal=True)
    with pytest.raises(ModelFileError, match="compiled with torch 2.6.0") as error:
        load_compiled(edited)
    assert "\n" not in str(error.value) and "mlpot compile" in str(error.value)


def test_file_compiled_for_the_cpu_is_refused_on_another_device(compiled_files):
    with pytest.raises(ModelFileError, match="compiled for cpu, not cuda"):
        load_compiled(compiled_files["egnn"][1], device="cuda")


def test_torchscript_and_compiled_loaders_refuse_each_others_files(compiled_files, tmp_path):
    source, compiled = compiled_files["egnn"]
    with pytest.raises(ModelFileError, match="compiled model file"):
        load_model(compiled)
    with pytest.raises(ModelFileError, match="not a compiled one"):
        load_compiled(source)
    misnamed = shutil.copy(compiled, tmp_path / "model.pt")  # what the file holds decides, not its name
    assert isinstance(MLPotCalculator(misnamed).model, CompiledModel)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_replica_engine_gives_the_same_forces_with_the_compiled_file(compiled_files, arch, alanine_dipeptide):
    from mlpot.md.potential import ReplicaPotential

    source, compiled = compiled_files[arch]
    numbers = alanine_dipeptide.numbers
    start = torch.tensor(alanine_dipeptide.positions, dtype=torch.float64)
    noise = 0.05 * torch.randn(3, *start.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    positions = start + noise
    positions[2, 5, 0] = float("nan")  # a blown-up replica: no edges, zero forces, and no harm to the others
    expected = ReplicaPotential(load_model(source).module, numbers).energies_and_forces(positions)
    got = ReplicaPotential(load_compiled(compiled), numbers).energies_and_forces(positions)
    _assert_close(got[0].numpy(), expected[0].numpy())
    _assert_close(got[1].numpy(), expected[1].numpy())
    with pytest.raises(TypeError, match="compiled"):
        ReplicaPotential(load_compiled(compiled), numbers).energies(positions)


def _openmm_energy_forces(system, positions):
    import openmm
    from openmm import unit

    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(positions)
    state = context.getState(getEnergy=True, getForces=True)
    return (state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole),
            state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer))


@pytest.mark.parametrize("system", ["alanine-dipeptide", "water-192"])
def test_compiled_file_in_openmm_is_a_python_force_with_the_torch_forces_numbers(compiled_files, system):
    import openmm

    from mlpot.plugins.openmm import create_system
    from mlpot.systems import load_openmm

    source, compiled = compiled_files["nequip"]
    topology, positions = load_openmm(system)
    python_system = create_system(compiled, topology)
    assert any(isinstance(force, openmm.PythonForce) for force in python_system.getForces())
    energy, forces = _openmm_energy_forces(python_system, positions)
    expected_energy, expected_forces = _openmm_energy_forces(create_system(source, topology), positions)
    assert energy == pytest.approx(expected_energy, rel=2e-5, abs=1e-3)
    _assert_close(forces, expected_forces)


def test_compiled_file_in_openmm_acts_on_the_ml_atoms_only(compiled_files):
    import openmm

    from mlpot.plugins.openmm import create_force
    from mlpot.systems import load_openmm

    source, compiled = compiled_files["egnn"]
    topology, positions = load_openmm("alanine-dipeptide")
    ml_atoms = list(range(6, 16))
    results = []
    for model in (source, compiled):
        system = openmm.System()
        for atom in topology.atoms():
            system.addParticle(atom.element.mass)
        system.addForce(create_force(model, topology, atoms=ml_atoms))
        results.append(_openmm_energy_forces(system, positions))
    (expected_energy, expected_forces), (energy, forces) = results
    assert energy == pytest.approx(expected_energy, rel=2e-5, abs=1e-3)
    _assert_close(forces, expected_forces)
    outside = [i for i in range(topology.getNumAtoms()) if i not in ml_atoms]
    assert np.all(forces[outside] == 0.0)
    with pytest.raises(ValueError, match="Si"):
        create_force(compiled, atomic_numbers=[14, 14], topology=None)
    wrong_size = openmm.System()  # the force was made for alanine dipeptide's 22 particles
    for _ in range(3):
        wrong_size.addParticle(1.0)
    wrong_size.addForce(create_force(compiled, atomic_numbers=[1, 6, 8] + [1] * 19))
    context = openmm.Context(wrong_size, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(np.zeros((3, 3)))
    with pytest.raises(Exception, match="the force was created for 22 particles but the System has 3"):
        context.getState(getEnergy=True)


@pytest.mark.parametrize("route", ["torchscript", "compiled"])
def test_pips_replicas_of_a_model_potential_each_get_the_single_copys_energy_and_forces(compiled_files, route):
    """16 copies in one Context (TorchForce for a .pt file, PythonForce for a .pt2 file) act as independent copies."""
    from mlpot.pips.molecular.peptides import peptide_transition
    from mlpot.pips.molecular.replicas import build_replica_system

    source, compiled = compiled_files["nequip"]
    topology, start_nm, target_nm = peptide_transition("alanine-dipeptide").load()
    jiggled = start_nm + 0.005 * np.random.default_rng(0).standard_normal(start_nm.shape)
    frames = np.stack([start_nm, target_nm, jiggled])
    replicas = build_replica_system(topology, start_nm, 3, model=source if route == "torchscript" else compiled)
    total, stacked_forces = _openmm_energy_forces(replicas.system, replicas.stacked_positions(frames))
    singles = [_openmm_energy_forces(replicas.single_system, frame) for frame in frames]
    assert total == pytest.approx(sum(energy for energy, _ in singles), rel=1e-5)
    for copy_forces, (_, single_forces) in zip(np.asarray(stacked_forces).reshape(frames.shape), singles):
        # float32 model: a batched graph sums in another order than a single copy (measured: 2e-5 of the largest
        # force); a neighbour copy within reach would change the forces by O(1)
        _assert_close(copy_forces, single_forces, relative=1e-4)
