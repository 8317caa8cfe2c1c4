"""``mlpot md`` (mlpot.simulate): blow-ups are caught from positions, runs are never replaced or resumed
with anything else than what they were, and bad input gets one line."""

from __future__ import annotations

import json
import shutil
import struct
import warnings

import mdtraj
import numpy as np
import pytest

from mlpot.cli import main
from mlpot.runs import RunLock, RunLockedError
from mlpot.simulate import (
    BlowUpCheck,
    RunFiles,
    SimulationUnstableError,
    Snapshot,
    TimestepWarning,
    dcd_layout,
    max_sane_timestep_fs,
    run_md,
)
from mlpot.systems import get_system, load_atoms

# The tiny test models (conftest) barely hold atoms (forces ~1e-4 eV/Å): at 300 K their atoms fly apart within
# ~40 fs, which the blow-up check rightly reports. The runs here are at 20 K, where the same free flight stays
# far inside every limit for the few steps a test takes.
MODEL = ("egnn", "float32")
COLD_K = 20.0


def _run(model_files, out, **settings):
    options = dict(system="ethanol", engine="openmm", steps=30, report_interval=10, out=out, progress=False,
                   platform="CPU", temperature_K=COLD_K)
    options.update(settings)
    if options["engine"] == "ase":
        options.pop("platform")
    return run_md(model_files[MODEL], **options)


def _frames_A(out):
    return mdtraj.load(str(out), top=str(out.with_suffix(".pdb"))).xyz * 10.0


# ------------------------------------------------------------------------------------------ blow-ups
@pytest.mark.parametrize("engine", ["openmm", "ase"])
def test_a_100_fs_time_step_is_stopped_as_a_blow_up_however_hot_the_limit(engine, model_files, tmp_path):
    """The probe's case: atoms hundreds of Å apart at a thermostatted 300 K. The temperature limit is set out of
    reach here, so only the checks on positions can stop it."""
    out = tmp_path / "blow.dcd"
    with pytest.warns(TimestepWarning, match="100 fs is longer than 1 fs"):
        with pytest.raises(SimulationUnstableError) as caught:
            _run(model_files, out, engine=engine, steps=200, timestep_fs=100.0, report_interval=50,
                 max_temperature_K=1e9)
    message = str(caught.value)
    assert message.startswith("simulation blew up at step 10 (t = 1 ps): the bond between atoms")
    assert "the molecule came apart" in message and "unstable" in message and "now 100 fs" in message


def test_a_blow_up_keeps_the_frames_written_before_it(model_files, tmp_path):
    out = tmp_path / "blow.dcd"
    with pytest.warns(TimestepWarning), pytest.raises(SimulationUnstableError) as caught:
        _run(model_files, out, steps=400, timestep_fs=4.0, report_interval=5)
    kept = int(str(caught.value).split("keeps the ")[1].split(" frame")[0])
    assert kept >= 1
    frames = _frames_A(out)
    assert frames.shape == (kept, 9, 3) and np.isfinite(frames).all()


@pytest.mark.parametrize("engine", ["openmm", "ase"])
def test_a_normal_short_run_is_not_stopped_and_its_record_counts_its_frames(engine, model_files, tmp_path):
    out = tmp_path / "ok.dcd"
    with warnings.catch_warnings():
        warnings.simplefilter("error", TimestepWarning)
        result = _run(model_files, out, engine=engine, steps=40)
    assert result.steps == 40 and _frames_A(out).shape == (4, 9, 3)
    record = json.loads(RunFiles(out).record.read_text())
    assert record["steps_done"] == 40 and record["frames"] == 4
    assert record["settings"]["engine"] == engine and record["settings"]["timestep_fs"] == 0.5
    assert (record["checkpoint"] is not None) == (engine == "openmm")


def _check(system="ethanol", timestep_fs=0.5, max_temperature_K=3000.0):
    atoms = load_atoms(system)
    return atoms, BlowUpCheck(atoms, timestep_fs, max_temperature_K)


def test_the_check_names_a_broken_bond_collapsed_atoms_a_runaway_atom_and_non_finite_positions():
    atoms, check = _check()
    start = atoms.positions.copy()
    carbon, hydrogen = 0, 7  # a C-H bond of the start structure
    assert np.linalg.norm(start[hydrogen] - start[carbon]) < 1.2

    stretched = start.copy()
    stretched[hydrogen] = start[carbon] + 2.5 * (start[hydrogen] - start[carbon])
    assert "the bond between atoms 0 (C) and 7 (H)" in check.problem_in_positions(10, stretched)

    other = [j for j in range(9) if j != hydrogen and atoms.numbers[j] == 1
             and np.linalg.norm(start[j] - start[carbon]) < 1.2][0]  # a second H on the same carbon
    merged = start.copy()  # rotated onto the first H around the carbon: every bond keeps its length
    length = np.linalg.norm(start[other] - start[carbon])
    merged[other] = start[carbon] + (start[hydrogen] - start[carbon]) * length / np.linalg.norm(
        start[hydrogen] - start[carbon])
    _, check = _check()
    assert check.problem_in_positions(100_000, merged) is None  # (slowly enough for the speed check)
    problem = check.problem_at_report(100_000, Snapshot(0.0, 300.0, merged, None))
    assert f"atoms {min(hydrogen, other)} (H) and {max(hydrogen, other)} (H) are" in problem
    assert "collapsed onto each other" in problem

    _, check = _check()
    shifted = start + np.array([50.0, 0.0, 0.0])  # the whole molecule, bonds intact, 50 Å in 5 fs
    assert "moved 50" in check.problem_in_positions(10, shifted) and "Å/fs" in check.problem_in_positions(10, shifted)
    assert check.problem_in_positions(100_000, shifted) is None  # the same move over 50 ps is a slow drift

    broken = start.copy()
    broken[3] = np.nan
    assert "no longer finite (atoms 3 (H))" in check.problem_in_positions(10, broken)
    assert "temperature reached 5000 K" in check.problem_at_report(10, Snapshot(0.0, 5000.0, start, None))
    assert "energy is no longer finite" in check.problem_at_report(10, Snapshot(float("nan"), 300.0, start, None))


def test_contacts_are_found_across_the_box_edge_with_the_neighbour_list():
    import torch

    from mlpot.md.stability import MinimumDistanceCriterion

    positions = torch.tensor([[0.1, 5.0, 5.0], [3.0, 5.0, 5.0], [9.8, 5.0, 5.0], [6.0, 5.0, 5.0]], dtype=torch.float64)
    box = torch.diag(torch.tensor([10.0, 10.0, 10.0], dtype=torch.float64))
    contact = MinimumDistanceCriterion(torch.arange(4), threshold_A=0.5, cell=box).closest_contact(positions)
    assert contact[:2] == (0, 2) and contact[2] == pytest.approx(0.3)
    assert MinimumDistanceCriterion(torch.arange(4), threshold_A=0.5).closest_contact(positions) is None
    assert MinimumDistanceCriterion(torch.tensor([0, 1, 0, 1]), threshold_A=0.5, cell=box).closest_contact(
        positions) is None  # same molecule: not a contact


@pytest.mark.parametrize("system, reference", [("ethanol", "systems/ethanol/dft.extxyz"),
                                               ("alanine-dipeptide", "systems/alanine-dipeptide/dft.extxyz")])
def test_no_thermal_dft_frame_looks_like_a_blow_up(system, reference):
    """The shipped DFT frames (dynamics at 300-600 K) against the shipped start structures: bonds and contacts."""
    import ase.io

    frames = ase.io.read(reference, ":")
    atoms, check = _check(system)
    assert [a.symbol for a in frames[0]] == atoms.get_chemical_symbols()
    for frame in frames:
        check.start_from(0, frame.positions)  # independent samples: no displacement between them
        assert check.problem_at_report(0, Snapshot(0.0, 300.0, frame.positions, None)) is None


def _amber_positions_A(system: str, steps: int, every: int):
    """Positions ``(steps // every, n_atoms, 3)`` Å of 300 K Langevin MD (0.5 fs, no constraints) with the
    system's amber14 force field: physical dynamics to hold the checks against."""
    import openmm
    from openmm import app, unit

    spec = get_system(system)
    pdb = app.PDBFile(str(spec.pdb_path))
    forcefield = app.ForceField(*spec.forcefield_files)
    if spec.periodic:
        omm_system = forcefield.createSystem(pdb.topology, nonbondedMethod=app.PME,
                                             nonbondedCutoff=0.55 * unit.nanometer,
                                             constraints=None, rigidWater=False)
    else:
        omm_system = forcefield.createSystem(pdb.topology, nonbondedMethod=app.NoCutoff, constraints=None)
    integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond, 0.5 * unit.femtosecond)
    integrator.setRandomNumberSeed(1)
    context = openmm.Context(omm_system, integrator, openmm.Platform.getPlatformByName("CPU"))
    context.setPositions(pdb.positions)
    context.setVelocitiesToTemperature(300 * unit.kelvin, 1)
    frames = []
    for _ in range(steps // every):
        integrator.step(every)
        frames.append(context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.angstrom))
    return np.array(frames)


@pytest.mark.parametrize("system", ["alanine-dipeptide", "water-192"])
def test_physical_300_K_dynamics_of_the_shipped_systems_passes_every_check(system):
    every = 10
    frames = _amber_positions_A(system, 600, every)
    atoms, check = _check(system)
    cell = np.asarray(atoms.cell) if atoms.pbc.all() else None
    for k, positions in enumerate(frames, start=1):
        step = k * every
        if k % 5:
            assert check.problem_in_positions(step, positions) is None, step
        else:
            assert check.problem_at_report(step, Snapshot(0.0, 300.0, positions, cell)) is None, step


def test_the_time_step_warning_bound_is_1_fs_with_hydrogen_and_at_most_4_fs():
    assert max_sane_timestep_fs(np.array([1.008, 12.011])) == pytest.approx(1.0)
    assert max_sane_timestep_fs(np.array([12.011, 15.999])) == pytest.approx(3.45, abs=0.01)
    assert max_sane_timestep_fs(np.array([39.95])) == 4.0


# ------------------------------------------------------------------------------------------- resume
def test_resume_lists_every_changed_setting(model_files, tmp_path):
    out = tmp_path / "run.dcd"
    _run(model_files, out, steps=20)
    with pytest.raises(ValueError) as caught:
        run_md(model_files[("egnn", "float64")], "ethanol", steps=40, report_interval=10, out=out, platform="CPU",
               timestep_fs=0.25, temperature_K=400.0, friction_per_ps=1.0, resume=True, progress=False)
    message = str(caught.value)
    assert message.startswith(f"--resume: the run of {out} was made with other settings")
    for setting in ("model_sha256: was", "temperature_K: was 20.0, now 400.0", "timestep_fs: was 0.5, now 0.25"):
        assert setting in message
    assert "friction" not in message and "seed" not in message


def test_resume_refuses_a_truncated_or_empty_checkpoint(model_files, tmp_path):
    out = tmp_path / "run.dcd"
    _run(model_files, out, steps=20)
    checkpoint = RunFiles(out).checkpoint
    whole = checkpoint.read_bytes()
    checkpoint.write_bytes(whole[:300])
    with pytest.raises(ValueError, match=r"run.dcd.chk \(300 bytes\) is truncated or corrupt"):
        _run(model_files, out, steps=40, resume=True)
    checkpoint.write_bytes(b"")
    with pytest.raises(ValueError, match="is empty"):
        _run(model_files, out, steps=40, resume=True)
    checkpoint.write_bytes(whole)
    assert _run(model_files, out, steps=40, resume=True).steps == 20


def _append_junk_frames(out, n_atoms, whole_frames, extra_bytes):
    """What a crash leaves: frames after the last checkpoint, and a partial frame the header already counts."""
    header_bytes, frame_bytes = dcd_layout(out, n_atoms)
    with open(out, "r+b") as handle:
        (count,) = struct.unpack("<i", handle.read(12)[8:12])
        handle.seek(0, 2)
        handle.write(np.random.default_rng(0).bytes(whole_frames * frame_bytes + extra_bytes))
        handle.seek(8)
        handle.write(struct.pack("<i", count + whole_frames + 1))


def test_resume_cuts_frames_after_the_checkpoint_and_a_partial_frame_and_continues_exactly(model_files, tmp_path):
    straight = tmp_path / "straight.dcd"
    _run(model_files, straight, steps=60)
    out = tmp_path / "run.dcd"
    _run(model_files, out, steps=30)
    _append_junk_frames(out, 9, whole_frames=1, extra_bytes=77)
    _run(model_files, out, steps=60, resume=True)
    frames = _frames_A(out)
    assert frames.shape == (6, 9, 3)  # 60 steps / 10
    np.testing.assert_allclose(frames, _frames_A(straight), atol=1e-4)


def test_resume_after_a_kill_between_record_and_checkpoint_continues_from_the_previous_checkpoint(
        model_files, tmp_path):
    out = tmp_path / "run.dcd"
    files = RunFiles(out)
    _run(model_files, out, steps=30)
    older = files.checkpoint.read_bytes()
    _run(model_files, out, steps=40, resume=True)
    files.checkpoint.write_bytes(older)  # the record names the step-40 checkpoint, the disk holds step 30's
    _run(model_files, out, steps=60, resume=True)
    assert _frames_A(out).shape == (6, 9, 3)
    assert json.loads(files.record.read_text())["checkpoint"]["step"] == 60


def test_resume_refuses_a_finished_run_a_run_without_record_and_the_ase_engine(model_files, tmp_path):
    out = tmp_path / "run.dcd"
    _run(model_files, out, steps=20)
    with pytest.raises(ValueError, match="already at step 20; ask for more than 20 --steps"):
        _run(model_files, out, steps=20, resume=True)
    with pytest.raises(NotImplementedError, match="--resume needs --engine openmm"):
        _run(model_files, out, steps=40, resume=True, engine="ase")
    RunFiles(out).record.unlink()
    with pytest.raises(FileNotFoundError, match="no run record"):
        _run(model_files, out, steps=40, resume=True)


def test_ctrl_c_stops_after_the_next_saved_report_and_the_run_resumes_from_it(model_files, tmp_path, monkeypatch):
    import os
    import signal

    from mlpot import simulate

    original = simulate._OpenMMEngine.step
    steps_taken = []

    def step_then_ctrl_c(self, n):
        original(self, n)
        steps_taken.append(n)
        if len(steps_taken) == 2:  # after step 20, mid-way through the second report interval of 30 steps
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(simulate._OpenMMEngine, "step", step_then_ctrl_c)
    out = tmp_path / "run.dcd"
    with pytest.raises(KeyboardInterrupt, match="stopped at step 30"):
        _run(model_files, out, steps=90, report_interval=30)
    record = json.loads(RunFiles(out).record.read_text())
    assert record["checkpoint"]["step"] == 30 and _frames_A(out).shape == (1, 9, 3)
    monkeypatch.setattr(simulate._OpenMMEngine, "step", original)
    _run(model_files, out, steps=90, report_interval=30, resume=True)
    assert _frames_A(out).shape == (3, 9, 3)


# ------------------------------------------------------------------------------------ overwrite, lock
def test_a_new_run_refuses_to_replace_an_earlier_one_unless_told_to(model_files, tmp_path):
    out = tmp_path / "run.dcd"
    _run(model_files, out, steps=20)
    before = out.read_bytes()
    with pytest.raises(FileExistsError) as caught:
        _run(model_files, out, steps=20, engine="ase")
    message = str(caught.value)
    assert str(out) in message and "--resume" in message and "--overwrite" in message
    assert out.read_bytes() == before
    _run(model_files, out, steps=20, engine="ase", overwrite=True)
    assert not RunFiles(out).checkpoint.exists()  # no stale OpenMM checkpoint left for a later --resume
    assert json.loads(RunFiles(out).record.read_text())["settings"]["engine"] == "ase"


def test_an_overwrite_whose_model_fails_to_load_leaves_the_earlier_run_alone(model_files, tmp_path):
    from mlpot.cli import new_model

    out = tmp_path / "run.dcd"
    _run(model_files, out, steps=20)
    before = {path: path.read_bytes() for path in RunFiles(out).existing()}
    no_oxygen = tmp_path / "hc.pt"
    new_model("egnn", ["H", "C"], 4.0, no_oxygen)
    with pytest.raises(ValueError, match="not supported"):
        run_md(no_oxygen, "ethanol", steps=20, report_interval=10, out=out, platform="CPU", overwrite=True,
               progress=False)
    assert {path: path.read_bytes() for path in RunFiles(out).existing()} == before


def test_a_run_refuses_to_write_its_topology_over_the_system_file(model_files, tmp_path):
    pdb = tmp_path / "mol.pdb"
    shutil.copy(get_system("ethanol").pdb_path, pdb)
    with pytest.raises(ValueError, match="would write the topology over the system's own file"):
        run_md(model_files[MODEL], str(pdb), steps=10, out=tmp_path / "mol.dcd", progress=False)


def test_a_trajectory_being_written_is_locked_but_its_neighbours_are_not(model_files, tmp_path):
    out = tmp_path / "run.dcd"
    with RunLock(tmp_path, RunFiles(out).lock_name):
        with pytest.raises(RunLockedError, match=r"\.run\.dcd\.lock is in use by pid"):
            _run(model_files, out, steps=10)
        assert _run(model_files, tmp_path / "other.dcd", steps=10).steps == 10
    assert not out.exists()


# --------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "extra, message",
    [
        (["--temperature", "-5"], "the temperature must be a positive number of K, got -5.0"),
        (["--temperature", "0"], "the temperature must be a positive number of K, got 0.0"),
        (["--timestep", "-1"], "the time step must be a positive number of fs, got -1.0"),
        (["--friction", "-1"], "the friction must be a positive number of 1/ps, got -1.0"),
        (["--steps", "0"], "steps must be a positive integer, got 0"),
        (["--report-interval", "0"], "report_interval must be a positive integer, got 0"),
        (["--seed", "-1"], "the seed must be an integer >= 0, got -1"),
        (["--platform", "Quantum"], "unknown OpenMM platform 'Quantum'; available here: Reference"),
        (["--system", "no-such-system"], "unknown system 'no-such-system'"),
        (["--model", "{tmp}/missing.pt"], "missing.pt does not exist"),
        (["--out", "{tmp}/t.pdb"], "t.pdb is where the topology (.pdb) goes; name the trajectory .dcd"),
    ],
)
def test_bad_md_input_gives_one_line_and_exit_code_2(extra, message, model_files, tmp_path, capsys):
    argv = ["md", "--model", str(model_files[MODEL]), "--system", "ethanol", "--steps", "10", "--out",
            str(tmp_path / "t.dcd"), "--quiet"] + [a.format(tmp=tmp_path) for a in extra]
    assert main(argv) == 2
    error = capsys.readouterr().err.strip()
    assert message in error and "Traceback" not in error and len(error.splitlines()) == 1
    assert not (tmp_path / "t.dcd").exists()


def test_an_empty_checkpoint_given_to_the_cli_gets_one_line(model_files, tmp_path, capsys):
    out = tmp_path / "run.dcd"
    common = ["md", "--model", str(model_files[MODEL]), "--system", "ethanol", "--report-interval", "10",
              "--platform", "CPU", "--out", str(out), "--quiet"]
    assert main(common + ["--steps", "10"]) == 0
    RunFiles(out).checkpoint.write_bytes(b"")
    capsys.readouterr()
    assert main(common + ["--steps", "20", "--resume"]) == 2
    error = capsys.readouterr().err.strip()
    assert error == (f"mlpot md: error: --resume: the checkpoint {out}.chk is empty "
                     "(a run killed before its first report?)")


def test_the_time_step_warning_is_one_line_on_the_command_line(model_files, tmp_path, capsys):
    code = main(["md", "--model", str(model_files[MODEL]), "--system", "ethanol", "--steps", "20", "--timestep", "100",
                 "--report-interval", "10", "--out", str(tmp_path / "t.dcd"), "--quiet"])
    assert code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0].startswith("mlpot md: warning: a time step of 100 fs is longer than 1 fs")
    assert lines[1].startswith("mlpot md: error: simulation blew up at step 10") and len(lines) == 2
