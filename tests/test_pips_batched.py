"""PIPS replicas of implicit-solvent peptides in one Context: every copy is exactly the single copy
with the same cutoff, the copies never feel each other, and the layout/cutoff inputs are checked."""

import numpy as np
import openmm
import pytest

KJ_MOL_NM = openmm.unit.kilojoule_per_mole / openmm.unit.nanometer


def transition_and_frames(system):
    """The transition and three different frames (start, target, jiggled start), (3, n_atoms, 3) nm."""
    from mlpot.pips.molecular.peptides import peptide_transition

    transition = peptide_transition(system)
    topology, start_nm, target_nm = transition.load()
    jiggled = start_nm + 0.01 * np.random.default_rng(0).standard_normal(start_nm.shape)
    return transition, topology, start_nm, np.stack([start_nm, target_nm, jiggled])


def energy_and_forces(system, positions_nm, platform="Reference"):
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName(platform))
    context.setPositions(positions_nm)
    state = context.getState(getEnergy=True, getForces=True)
    return (state.getPotentialEnergy().value_in_unit(openmm.unit.kilojoule_per_mole),
            state.getForces(asNumpy=True).value_in_unit(KJ_MOL_NM))


@pytest.mark.parametrize("system", ["polyproline", "chignolin"])
def test_copies_in_one_context_have_the_energies_and_forces_of_single_copies_with_the_same_cutoff(system):
    from mlpot.pips.molecular.replicas import ReplicaSystem, build_replicas

    transition, topology, start_nm, frames = transition_and_frames(system)
    replicas = build_replicas(topology, start_nm, 3, transition.forcefield_files)
    assert isinstance(replicas, ReplicaSystem) and replicas.interaction_cutoff_nm == pytest.approx(4.0)
    gb = [force for force in replicas.system.getForces() if isinstance(force, openmm.CustomGBForce)]
    assert len(gb) == 1 and gb[0].getNonbondedMethod() == openmm.CustomGBForce.CutoffNonPeriodic
    total, stacked_forces = energy_and_forces(replicas.system, replicas.stacked_positions(frames))
    singles = [energy_and_forces(replicas.copy_system, frame) for frame in frames]
    assert total == pytest.approx(sum(energy for energy, _ in singles), rel=1e-12, abs=1e-9)
    for copy_forces, (_, single_forces) in zip(stacked_forces.reshape(frames.shape), singles):
        np.testing.assert_allclose(copy_forces, single_forces, rtol=1e-10, atol=1e-8)


def test_moving_one_copy_changes_no_other_copys_forces_and_only_its_own_energy():
    from mlpot.pips.molecular.replicas import build_replicas

    transition, topology, start_nm, frames = transition_and_frames("polyproline")
    replicas = build_replicas(topology, start_nm, 3, transition.forcefield_files)
    before_energy, before = energy_and_forces(replicas.system, replicas.stacked_positions(frames))
    moved = frames.copy()
    moved[1] = frames[1] + 0.02 * np.random.default_rng(1).standard_normal(frames[1].shape)
    after_energy, after = energy_and_forces(replicas.system, replicas.stacked_positions(moved))
    before, after = before.reshape(frames.shape), after.reshape(frames.shape)
    np.testing.assert_array_equal(after[[0, 2]], before[[0, 2]])
    assert np.abs(after[1] - before[1]).max() > 1.0
    single_change = (energy_and_forces(replicas.copy_system, moved[1])[0]
                     - energy_and_forces(replicas.copy_system, frames[1])[0])
    assert after_energy - before_energy == pytest.approx(single_change, rel=1e-9, abs=1e-8)


@pytest.mark.parametrize("system", ["polyproline", "chignolin"])
def test_the_cutoff_shifts_the_energy_by_a_constant_and_leaves_the_forces_unchanged(system):
    from mlpot.pips.molecular.replicas import build_replicas

    transition, topology, start_nm, frames = transition_and_frames(system)
    replicas = build_replicas(topology, start_nm, 1, transition.forcefield_files)
    shifts = []
    for frame in frames:
        cut_energy, cut_forces = energy_and_forces(replicas.copy_system, frame)
        full_energy, full_forces = energy_and_forces(replicas.single_system, frame)
        np.testing.assert_allclose(cut_forces, full_forces, rtol=1e-9, atol=1e-7)
        shifts.append(cut_energy - full_energy)
    assert abs(shifts[0]) > 1.0  # the shift is real ...
    np.testing.assert_allclose(shifts, shifts[0], rtol=1e-9)  # ... and the same for every frame


def test_one_context_dynamics_follows_the_single_copy_dynamics_without_cutoff():
    from mlpot.pips.molecular.integrator import langevin_settings
    from mlpot.pips.molecular.rollout import OneContextRunner, SingleCopyRunner, replica_runner

    transition, topology, start_nm, frames = transition_and_frames("polyproline")
    settings = langevin_settings(timestep_ps=0.001, friction_per_ps=1.0, temperature_K=300.0)
    runners = [replica_runner(topology, start_nm, 3, settings, transition.forcefield_files, platform="Reference",
                              layout=layout) for layout in ("one-context", "single-copy")]
    assert [type(runner) for runner in runners] == [OneContextRunner, SingleCopyRunner]
    velocities = 0.3 * np.random.default_rng(2).standard_normal(frames.shape)
    pushes = 50.0 * np.random.default_rng(3).standard_normal(frames.shape)
    states = []
    for runner in runners:
        runner._start(frames, 300.0, seed=1)
        runner._reset(np.ones(3, dtype=bool), frames.copy(), velocities)
        for _ in range(5):
            runner._step(pushes)
        states.append(runner._state())
    np.testing.assert_allclose(states[0][0], states[1][0], rtol=0, atol=1e-9)
    np.testing.assert_allclose(states[0][1], states[1][1], rtol=0, atol=1e-7)


@pytest.mark.parametrize("platform", ["CPU", "Reference"])
def test_the_single_copy_runner_steps_every_replica_exactly_as_a_context_of_its_own_would(platform):
    """Replicas stepped in turn through one Context give the trajectories of one Context and integrator per replica,
    bit for bit: with r-RESPA (slow forces every 2nd step; an odd number of steps leaves the cycle mid-way) and
    after one replica is reset."""
    from mlpot.pips.molecular.integrator import integrator_for, langevin_settings, restart, set_control_forces
    from mlpot.pips.molecular.replicas import openmm_platform
    from mlpot.pips.molecular.rollout import SingleCopyRunner, positions_and_velocities, replica_runner

    transition, topology, start_nm, frames = transition_and_frames("polyproline")
    settings = langevin_settings(timestep_ps=0.001, friction_per_ps=1.0, temperature_K=300.0)
    runner = replica_runner(topology, start_nm, 3, settings, ("amber14-all.xml", "implicit/obc2.xml"),
                            platform=platform, layout="single-copy", slow_force_interval=2)
    assert isinstance(runner, SingleCopyRunner)
    single = runner.replicas.single_system  # its forces already split into the r-RESPA groups
    contexts = []
    for copy in range(3):  # the reference: a Context and an integrator of its own for every replica
        integrator = integrator_for(single, settings, 2)
        context = openmm.Context(single, integrator, *openmm_platform(platform, threads=1))
        restart(integrator)
        context.setPositions(frames[copy])
        context.setVelocitiesToTemperature(300.0, 7 + copy)
        contexts.append((context, integrator))
    runner._start(frames, 300.0, seed=7)
    pushes = 80.0 * np.random.default_rng(3).standard_normal((7, *frames.shape))

    def reference_state():
        shape = (3, *start_nm.shape)
        positions, velocities = np.empty(shape), np.empty(shape)
        for copy, (context, _) in enumerate(contexts):
            positions_and_velocities(context, len(start_nm), positions[copy], velocities[copy])
        return positions, velocities

    for step, push in enumerate(pushes):
        runner._step(push)
        for (context, integrator), forces in zip(contexts, push):
            set_control_forces(integrator, forces)
            integrator.step(1)
        if step == 3:  # replica 1 back to its start at rest, in both
            positions, velocities = runner._state()
            positions[1], velocities[1] = frames[1], 0.0
            runner._reset(np.array([False, True, False]), positions, velocities)
            contexts[1][0].setPositions(frames[1])
            contexts[1][0].setVelocities(np.zeros_like(frames[1]))
        for found, expected in zip(runner._state(), reference_state()):
            assert np.array_equal(found, expected), step
    assert np.abs(runner._state()[0] - frames).max() > 1e-4  # they moved


def test_a_copy_out_of_its_slot_counts_as_blown_up():
    from mlpot.pips.molecular.integrator import langevin_settings
    from mlpot.pips.molecular.rollout import replica_runner

    transition, topology, start_nm, _ = transition_and_frames("polyproline")
    settings = langevin_settings(timestep_ps=0.001, friction_per_ps=1.0, temperature_K=300.0)
    runner = replica_runner(topology, start_nm, 3, settings, transition.forcefield_files, platform="Reference")
    low, high = runner.replicas.slot_x_nm
    positions = np.stack([start_nm] * 3)
    assert not runner._blown_up(positions, np.zeros_like(positions)).any()
    positions[1, :, 0] += high - start_nm[:, 0].max() + 0.05  # one atom row past the slot's upper edge
    assert runner._blown_up(positions, np.zeros_like(positions)).tolist() == [False, True, False]
    # the slot keeps neighbours beyond the cutoff: the gap between slots is the cutoff
    assert runner.replicas.offsets_nm[1, 0, 0] + low - high == pytest.approx(runner.replicas.interaction_cutoff_nm)


def test_spacing_too_small_for_the_cutoff_is_refused_in_one_line():
    from mlpot.pips.molecular.replicas import build_replicas

    transition, topology, start_nm, _ = transition_and_frames("polyproline")
    with pytest.raises(ValueError, match=r"replica spacing 4.5 nm is too small for the 4 nm cutoff: the molecule "
                                         r"spans 1.19 nm along x, so copies would interact; use a spacing above "
                                         r"5.19 nm") as error:
        build_replicas(topology, start_nm, 2, transition.forcefield_files, spacing_nm=4.5)
    assert "\n" not in str(error.value)


def test_a_cutoff_shorter_than_the_molecule_is_refused_in_one_line():
    from mlpot.pips.molecular.replicas import build_replicas

    transition, topology, start_nm, _ = transition_and_frames("chignolin")
    with pytest.raises(ValueError, match=r"a cutoff of 2 nm would cut pairs inside one molecule \(its farthest atoms "
                                         r"are 3.12 nm apart\); use a larger cutoff_nm"):
        build_replicas(topology, start_nm, 2, transition.forcefield_files, cutoff_nm=2.0)


def test_unknown_replica_layout_is_refused_by_name():
    from mlpot.pips.molecular.replicas import build_replicas

    transition, topology, start_nm, _ = transition_and_frames("polyproline")
    with pytest.raises(ValueError, match="unknown replica layout 'one-box'; known: one-context, single-copy"):
        build_replicas(topology, start_nm, 2, transition.forcefield_files, layout="one-box")


@pytest.mark.parametrize("layout", ["single-copy", "context-per-replica"])  # and under its older name
def test_the_single_copy_layout_runs_without_any_cutoff(layout):
    from mlpot.pips.molecular.replicas import SeparateReplicas, build_replicas

    transition, topology, start_nm, _ = transition_and_frames("chignolin")
    replicas = build_replicas(topology, start_nm, 2, transition.forcefield_files, layout=layout)
    assert isinstance(replicas, SeparateReplicas)
    methods = {type(force).__name__: force.getNonbondedMethod() for force in replicas.single_system.getForces()
               if hasattr(force, "getNonbondedMethod")}
    assert methods == {"NonbondedForce": openmm.NonbondedForce.NoCutoff, "CustomGBForce": openmm.CustomGBForce.NoCutoff}


def test_auto_platform_times_the_platforms_here_and_takes_the_fastest():
    from mlpot.pips.molecular.integrator import langevin_settings
    from mlpot.pips.molecular.replicas import build_replicas, choose_platform
    from mlpot.pips.molecular.rollout import replica_runner

    _, topology, start_nm, _ = transition_and_frames("polyproline")
    replicas = build_replicas(topology, start_nm, 2, ("amber14-all.xml", "implicit/obc2.xml"),
                              layout="single-copy")
    choice = choose_platform(replicas.single_system, start_nm, "auto", trial_steps=5)
    assert {"CPU", "Reference"} <= set(choice.ms_per_step)
    assert choice.ms_per_step[choice.name] == min(choice.ms_per_step.values())
    assert all(ms > 0 for ms in choice.ms_per_step.values())
    assert choice.name in choice.describe() and "fastest" in choice.describe()
    named = choose_platform(replicas.single_system, start_nm, "Reference")
    assert named.name == "Reference" and named.ms_per_step == {}
    runner = replica_runner(topology, start_nm, 2, langevin_settings(0.001, 1.0, 300.0),
                            ("amber14-all.xml", "implicit/obc2.xml"), platform="Reference",
                            layout="single-copy")
    assert runner.platform_choice.name == "Reference"
    assert runner.context.getPlatform().getName() == "Reference"


@pytest.mark.parametrize("interval", [1, 2])
def test_the_platform_trial_times_the_integrator_the_rollouts_use(monkeypatch, interval):
    """``auto`` must time what the rollouts run: with r-RESPA the split force groups and the multiple-time-step
    integrator, and for a System without constraints no constraint steps."""
    from mlpot.pips.molecular import rollout
    from mlpot.pips.molecular.integrator import SLOW_STEP, langevin_settings
    from mlpot.pips.molecular.replicas import choose_platform

    timed = {}

    def recording_choice(system, positions_nm, name, threads, integrator):
        timed["integrator"], timed["groups"] = integrator(), {force.getForceGroup() for force in system.getForces()}
        return choose_platform(system, positions_nm, "Reference", threads)

    monkeypatch.setattr(rollout, "choose_platform", recording_choice)
    _, topology, start_nm, _ = transition_and_frames("chignolin")
    runner = rollout.replica_runner(topology, start_nm, 2, langevin_settings(0.001, 1.0, 300.0),
                                    ("amber14-all.xml", "implicit/obc2.xml"), layout="single-copy",
                                    slow_force_interval=interval)
    assert runner.replicas.single_system.getNumConstraints() == 0
    trial, run = timed["integrator"], runner.integrator
    for integrator in (trial, run):
        names = {integrator.getGlobalVariableName(i) for i in range(integrator.getNumGlobalVariables())}
        assert (SLOW_STEP in names) == (interval > 1)
        assert integrator.getNumPerDofVariables() == 1  # the control force; no constraint bookkeeping
    assert trial.getNumComputations() == run.getNumComputations()
    assert timed["groups"] == ({0, 1} if interval > 1 else {0})


def test_an_unknown_openmm_platform_is_refused_in_one_line_naming_those_here():
    from mlpot.pips.molecular.replicas import choose_platform

    _, topology, start_nm, _ = transition_and_frames("alanine-dipeptide")
    system = openmm.System()
    with pytest.raises(ValueError, match=r"unknown OpenMM platform 'Quantum'; available here: .*Reference") as error:
        choose_platform(system, start_nm, "Quantum")
    assert "\n" not in str(error.value)


def test_the_fast_state_read_equals_openmms_public_one_and_so_does_its_fallback(monkeypatch):
    from mlpot.pips.molecular.rollout import positions_and_velocities

    transition, topology, start_nm, _ = transition_and_frames("polyproline")
    system = openmm.app.ForceField(*transition.forcefield_files).createSystem(topology)
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(start_nm)
    context.setVelocitiesToTemperature(300.0, 1)
    positions_nm, velocities_nm_ps = positions_and_velocities(context, len(start_nm))
    state = context.getState(getPositions=True, getVelocities=True)
    np.testing.assert_array_equal(positions_nm, state.getPositions(asNumpy=True).value_in_unit(openmm.unit.nanometer))
    np.testing.assert_array_equal(velocities_nm_ps, state.getVelocities(asNumpy=True).value_in_unit(
        openmm.unit.nanometer / openmm.unit.picosecond))
    assert np.abs(velocities_nm_ps).max() > 0
    from mlpot.pips.molecular import rollout

    assert hasattr(state, rollout.STATE_ARRAY_COPY)  # the fast path above was the one taken; now without it:
    monkeypatch.setattr(rollout, "STATE_ARRAY_COPY", "_an_array_copy_this_openmm_lacks")
    into_positions, into_velocities = np.empty_like(positions_nm), np.empty_like(velocities_nm_ps)
    fallback = positions_and_velocities(context, len(start_nm), into_positions, into_velocities)
    assert fallback[0] is into_positions and fallback[1] is into_velocities
    np.testing.assert_array_equal(into_positions, positions_nm)
    np.testing.assert_array_equal(into_velocities, velocities_nm_ps)


def test_a_single_threaded_rollout_steps_on_one_core_and_gives_every_thread_its_cores_back():
    import os
    import threading

    from mlpot.pips.molecular.one_core import on_one_core

    allowed = os.sched_getaffinity(0)
    if len(allowed) < 2:
        pytest.skip("the process may use one core only: nothing to confine")
    release = threading.Event()
    worker = threading.Thread(target=release.wait)
    worker.start()
    try:
        with on_one_core() as cpu:
            assert cpu in allowed
            assert os.sched_getaffinity(0) == {cpu} == os.sched_getaffinity(worker.native_id)
        assert os.sched_getaffinity(0) == allowed == os.sched_getaffinity(worker.native_id)
        with on_one_core(enabled=False) as cpu:
            assert cpu is None and os.sched_getaffinity(0) == allowed
    finally:
        release.set()
        worker.join()


def test_an_evaluation_of_more_paths_than_one_runner_holds_runs_in_batches(monkeypatch):
    """Past MAX_PATHS_PER_RUNNER the paths run batch after batch from one generator: all of them come back,
    the first batch is the evaluation of that many paths alone, and the later ones are new paths."""
    import torch

    from mlpot.pips.molecular import trainer as molecular
    from mlpot.pips.molecular.baselines import unbiased_control

    monkeypatch.setattr(molecular, "MAX_PATHS_PER_RUNNER", 2)
    trainer = molecular.MolecularTrainer(molecular.MolecularTrainConfig(n_paths=2, n_steps=20), platform="Reference")
    five = trainer.evaluate_control(unbiased_control, 5, seed=3)
    two = trainer.evaluate_control(unbiased_control, 2, seed=3)
    assert five.rollout.positions.shape == (5, 21, 22, 3) and five.energies_kj_mol.shape == (5, 21)
    torch.testing.assert_close(five.rollout.positions[:2], two.rollout.positions, rtol=0, atol=0)
    assert not torch.allclose(five.rollout.positions[2], five.rollout.positions[0])
    with pytest.raises(ValueError, match="number of paths must be a positive integer, got 0"):
        trainer.evaluate_control(unbiased_control, 0, seed=3)
