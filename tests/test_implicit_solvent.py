"""Implicit solvent of the PIPS peptides: OBC2 as the native GBSAOBCForce has the energy and forces
of OpenMM's implicit/obc2.xml CustomGBForce, batched copies stay exact, and the solvent choice is checked."""

import numpy as np
import openmm
import pytest
from openmm import app

from tests.test_pips_batched import energy_and_forces, transition_and_frames


def custom_and_native_systems(topology, cutoff_nm=None):
    from mlpot.pips.molecular.implicit_solvent import use_native_obc2

    forcefield = app.ForceField("amber14-all.xml", "implicit/obc2.xml")
    kwargs = ({"nonbondedMethod": app.NoCutoff} if cutoff_nm is None else
              {"nonbondedMethod": app.CutoffNonPeriodic, "nonbondedCutoff": cutoff_nm * openmm.unit.nanometer})
    custom = forcefield.createSystem(topology, constraints=None, **kwargs)
    native = forcefield.createSystem(topology, constraints=None, **kwargs)
    assert use_native_obc2(native)
    return custom, native


@pytest.mark.parametrize("cutoff_nm", [None, 4.0])
@pytest.mark.parametrize("system", ["polyproline", "chignolin"])
def test_native_obc2_has_the_energy_and_forces_of_the_obc2_file(system, cutoff_nm):
    _, topology, _, frames = transition_and_frames(system)
    custom, native = custom_and_native_systems(topology, cutoff_nm)
    assert not any(isinstance(force, openmm.CustomGBForce) for force in native.getForces())
    [gb] = [force for force in native.getForces() if isinstance(force, openmm.GBSAOBCForce)]
    expected_method = openmm.GBSAOBCForce.NoCutoff if cutoff_nm is None else openmm.GBSAOBCForce.CutoffNonPeriodic
    assert gb.getNonbondedMethod() == expected_method
    for frame in frames:
        custom_energy, custom_forces = energy_and_forces(custom, frame)
        native_energy, native_forces = energy_and_forces(native, frame)
        # the solvation energy is ~ -1500 kJ/mol: agreement to 1e-6 relative is the same functional
        assert native_energy == pytest.approx(custom_energy, rel=1e-6, abs=1e-3)
        np.testing.assert_allclose(native_forces, custom_forces, rtol=1e-5, atol=1e-3)


def test_gbn2_and_salty_obc2_are_left_as_custom_forces():
    from mlpot.pips.molecular.implicit_solvent import use_native_obc2

    _, topology, _, _ = transition_and_frames("polyproline")
    gbn2 = app.ForceField("amber14-all.xml", "implicit/gbn2.xml").createSystem(topology, constraints=None)
    assert not use_native_obc2(gbn2)
    salty = app.ForceField("amber14-all.xml", "implicit/obc2.xml").createSystem(
        topology, constraints=None, implicitSolventKappa=1.0 / openmm.unit.nanometer)
    assert not use_native_obc2(salty)  # GBSAOBCForce has no salt screening
    assert any(isinstance(force, openmm.CustomGBForce) for force in salty.getForces())


def test_obc2_copies_in_one_context_are_each_the_single_copy():
    from mlpot.pips.molecular.implicit_solvent import solvent_forcefield_files
    from mlpot.pips.molecular.replicas import ReplicaSystem, build_replicas

    transition, topology, start_nm, frames = transition_and_frames("chignolin")
    files = solvent_forcefield_files(transition.forcefield_files, "obc2")
    assert files == ("amber14-all.xml", "implicit/obc2.xml")
    replicas = build_replicas(topology, start_nm, 3, files)
    assert isinstance(replicas, ReplicaSystem)
    assert any(isinstance(force, openmm.GBSAOBCForce) for force in replicas.system.getForces())
    total, stacked_forces = energy_and_forces(replicas.system, replicas.stacked_positions(frames))
    singles = [energy_and_forces(replicas.copy_system, frame) for frame in frames]
    assert total == pytest.approx(sum(energy for energy, _ in singles), rel=1e-10)
    for copy_forces, (_, single_forces) in zip(stacked_forces.reshape(frames.shape), singles):
        np.testing.assert_allclose(copy_forces, single_forces, rtol=1e-8, atol=1e-6)


def test_solvent_choice_swaps_only_the_implicit_file_and_refuses_unknown_names():
    from mlpot.pips.molecular.implicit_solvent import solvent_forcefield_files

    gbn2 = ("amber14-all.xml", "implicit/gbn2.xml")
    assert solvent_forcefield_files(gbn2, None) == gbn2
    assert solvent_forcefield_files(gbn2, "vacuum") == ("amber14-all.xml",)
    assert solvent_forcefield_files(("amber14-all.xml",), "gbn2") == gbn2
    with pytest.raises(ValueError, match=r"^unknown implicit solvent 'obc9'; known: gbn2, obc2, vacuum$"):
        solvent_forcefield_files(gbn2, "obc9")


def test_a_pips_run_with_an_unknown_solvent_is_refused_before_writing(tmp_path):
    from mlpot.pips.molecular.trainer import MolecularTrainConfig, MolecularTrainer

    out = tmp_path / "run"
    with pytest.raises(ValueError, match="unknown implicit solvent 'water'"):
        MolecularTrainer(MolecularTrainConfig(system="polyproline", implicit_solvent="water", iterations=1), out=out)
    assert not out.exists()
