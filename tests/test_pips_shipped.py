"""Exported (shipped) policies and the run-directory refusals: an exported policy samples and
reports but does not resume; a run of another system, an unknown system or a newer format is
refused in one line, with no file changed."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mlpot.cli import main


@pytest.fixture(scope="module")
def alanine_run(tmp_path_factory):
    """A one-iteration alanine-dipeptide run (2 paths × 20 steps) and its export."""
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("shipped")
    run, shipped = folder / "run", folder / "shipped"
    assert main(["pips", "train", "--system", "alanine-dipeptide", "--out", str(run), "--iterations", "1",
                 "--paths", "2", "--set", "training.n_steps=20", "--quiet"]) == 0
    assert main(["pips", "export", str(run), str(shipped)]) == 0
    return run, shipped


def one_line_error(capsys) -> str:
    error = capsys.readouterr().err
    assert error.count("\n") == 1, error
    return error


def test_an_exported_policy_samples_without_optimiser_state_and_is_smaller(alanine_run, capsys):
    import mdtraj

    run, shipped = alanine_run
    state = torch.load(shipped / "checkpoint.pt", weights_only=True)
    assert state["exported"] is True and not {"optimizer", "generator", "replay"} & set(state)
    assert state["atoms"][:2] == ["ACE:H1", "ACE:CH3"] and len(state["atoms"]) == 22
    assert (shipped / "checkpoint.pt").stat().st_size < (run / "checkpoint.pt").stat().st_size
    capsys.readouterr()
    assert main(["pips", "sample", str(shipped), "--paths", "2", "--system", "alanine-dipeptide"]) == 0
    assert '"thp_literature"' in capsys.readouterr().out
    paths = mdtraj.load(str(shipped / "paths.dcd"), top=str(shipped / "paths.pdb"))
    assert paths.n_frames == 2 * 21 and paths.n_atoms == 22
    sampled = {}
    for folder in (run, shipped):  # the same averaged policy, the same seed: the same paths
        from mlpot.pips.runs import load_run

        sampled[folder] = load_run(folder).evaluate(2, seed=5).rollout.positions
    torch.testing.assert_close(sampled[run], sampled[shipped], rtol=0, atol=0)


def test_an_exported_policy_refuses_resume_and_export_never_overwrites(alanine_run, capsys, tmp_path):
    run, shipped = alanine_run
    before = (shipped / "checkpoint.pt").read_bytes()
    capsys.readouterr()
    assert main(["pips", "train", "--out", str(shipped), "--resume", "--quiet"]) == 2
    error = one_line_error(capsys)
    assert "is an exported policy (no optimiser state, generator or replay buffer)" in error
    assert "continue the run it was exported from" in error
    assert main(["pips", "export", str(run), str(shipped)]) == 2
    assert f"{shipped} already holds a PIPS run (checkpoint.pt)" in one_line_error(capsys)
    assert main(["pips", "export", str(run), str(run)]) == 2
    assert "is the run itself" in one_line_error(capsys)
    assert (shipped / "checkpoint.pt").read_bytes() == before


def test_a_run_of_another_system_than_the_one_named_is_refused(alanine_run, capsys):
    run, shipped = alanine_run
    capsys.readouterr()
    for command in (["pips", "sample", str(shipped), "--paths", "2"], ["pips", "report", str(shipped)],
                    ["pips", "train", "--out", str(run), "--resume"]):
        assert main([*command, "--system", "polyproline"]) == 2
        assert "holds a policy of alanine-dipeptide, not of polyproline" in one_line_error(capsys), command


def test_a_policy_for_other_atoms_than_the_system_named_in_its_checkpoint_is_refused(alanine_run, capsys, tmp_path):
    _, shipped = alanine_run
    state = torch.load(shipped / "checkpoint.pt", weights_only=True)
    state["atoms"] = state["atoms"][:-1] + ["NME:HX"]  # the system was re-registered with other atoms
    edited = tmp_path / "edited"
    edited.mkdir()
    torch.save(state, edited / "checkpoint.pt")
    capsys.readouterr()
    assert main(["pips", "sample", str(edited), "--paths", "2"]) == 2
    assert "holds a policy for 22 particles (ACE:H1, ACE:CH3, ACE:H2, ACE:H3, …), not for alanine-dipeptide as " \
           "registered now (22: ACE:H1" in one_line_error(capsys)
    state = torch.load(shipped / "checkpoint.pt", weights_only=True)
    del state["atoms"]  # as an older run: the policy's shapes still give it away
    state["policy"] = {name: torch.cat([value, value]) if value.dim() else value
                       for name, value in state["policy"].items()}
    torch.save(state, edited / "checkpoint.pt")
    assert main(["pips", "sample", str(edited), "--paths", "2"]) == 2
    assert "holds a policy that does not fit alanine-dipeptide (size mismatch for" in one_line_error(capsys)


def test_unknown_systems_and_newer_formats_are_refused_in_one_line(alanine_run, capsys, tmp_path):
    _, shipped = alanine_run
    state = torch.load(shipped / "checkpoint.pt", weights_only=True)
    for name, change, message in [
        ("unknown", {"config": {**state["config"], "system": "trp-cage"}},
         "no PIPS transition defined for 'trp-cage'; known: alanine-dipeptide"),
        ("newer", {"checkpoint_version": 2},
         "was written by a newer mlpot (checkpoint version 2; this mlpot reads version 1): upgrade mlpot"),
    ]:
        folder = tmp_path / name
        folder.mkdir()
        torch.save({**state, **change}, folder / "checkpoint.pt")
        before = (folder / "checkpoint.pt").read_bytes()
        capsys.readouterr()
        for command in (["pips", "sample", str(folder), "--paths", "2"], ["pips", "report", str(folder)],
                        ["pips", "export", str(folder), str(tmp_path / f"{name}-export")]):
            assert main(command) == 2, command
            assert message in one_line_error(capsys), command
        assert (folder / "checkpoint.pt").read_bytes() == before and not (tmp_path / f"{name}-export").exists()
    capsys.readouterr()
    assert main(["pips", "sample", str(tmp_path), "--system", "trp-cage"]) == 2  # no run there at all
    assert "no checkpoint at" in one_line_error(capsys)


SHIPPED_ALANINE = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "pips_alanine_dipeptide"


SHIPPED_POLICIES = [  # folder, system, atoms, steps per path, another system the policy must refuse
    ("pips_alanine_dipeptide", "alanine-dipeptide", 22, 1000, "polyproline"),
    ("pips_polyproline", "polyproline", 54, 1000, "alanine-dipeptide"),
    ("pips_chignolin", "chignolin", 138, 1000, "polyproline"),
]


@pytest.mark.parametrize("folder, system, n_atoms, n_steps, other", SHIPPED_POLICIES)
def test_a_shipped_policy_samples_and_refuses_another_system(folder, system, n_atoms, n_steps, other, tmp_path,
                                                             capsys):
    """Each policy in benchmarks/results/pips_* draws paths without training; another system is refused."""
    import mdtraj

    shipped = SHIPPED_ALANINE.parent / folder
    out = tmp_path / "paths.dcd"
    assert main(["pips", "sample", str(shipped), "--paths", "2", "--out", str(out), "--system", system]) == 0
    frames = mdtraj.load(str(out), top=str(out.with_suffix(".pdb")))
    assert frames.n_atoms == n_atoms and frames.n_frames == 2 * (n_steps + 1)
    capsys.readouterr()
    assert main(["pips", "sample", str(shipped), "--paths", "2", "--system", other]) == 2
    assert system in one_line_error(capsys)


@pytest.mark.slow
def test_the_shipped_alanine_policy_hits_c7ax_more_often_than_steered_md_by_the_literature_test():
    from mlpot.pips.molecular.baselines import steered_md
    from mlpot.pips.runs import load_run

    trainer = load_run(SHIPPED_ALANINE, system="alanine-dipeptide")
    policy = trainer.evaluate(32, seed=7).metrics
    steered = steered_md(trainer, 32, seed=7, spring_kj_mol_nm2=1e4).metrics
    assert policy["thp_literature"] >= 0.5 and policy["thp_literature"] > steered["thp_literature"]
    assert policy["ets_literature_kj_mol"] < steered["ets_literature_kj_mol"]


SHIPPED_POLYPROLINE = SHIPPED_ALANINE.parent / "pips_polyproline"


@pytest.mark.slow
def test_the_shipped_polyproline_policy_reaches_ppi_more_often_than_steered_md_below_its_barrier():
    from mlpot.pips.molecular.baselines import steered_md
    from mlpot.pips.runs import load_run

    trainer = load_run(SHIPPED_POLYPROLINE, system="polyproline")
    policy = trainer.evaluate(16, seed=7).metrics
    steered = steered_md(trainer, 16, seed=7, spring_kj_mol_nm2=3e4).metrics
    assert policy["thp"] >= 0.75 and policy["thp"] > steered["thp"]
    assert policy["ets_relative_kj_mol"] < steered["ets_relative_kj_mol"]


def test_a_run_saved_before_a_setting_existed_keeps_its_old_dynamics_while_new_runs_take_the_new_default():
    """slow_force_interval and network_dtype came after the shipped polyproline policy was trained: loading it must
    keep every force every step and a float64 network (what it was trained with), while new chignolin and
    polyproline runs default to r-RESPA with 2 and a float32 network."""
    from mlpot.pips.molecular.integrator import SLOW_STEP
    from mlpot.pips.runs import PipsRunConfig, load_run

    shipped = load_run(SHIPPED_ALANINE.parent / "pips_polyproline", purpose="test")
    saved = torch.load(SHIPPED_ALANINE.parent / "pips_polyproline" / "checkpoint.pt", weights_only=True)["config"]
    assert "slow_force_interval" not in saved and "network_dtype" not in saved
    integrator = shipped.runner(2).integrator
    counters = [integrator.getGlobalVariableName(i) for i in range(integrator.getNumGlobalVariables())]
    assert shipped.config.slow_force_interval == 1 and SLOW_STEP not in counters
    assert shipped.config.network_dtype == "float64"
    assert shipped.policy.residual.network[0].weight.dtype == torch.float64
    for system in ("chignolin", "polyproline"):
        config = PipsRunConfig(system, None, None, {}).train_config()
        assert config.slow_force_interval == 2 and config.network_dtype == "float32"
    alanine = PipsRunConfig("alanine-dipeptide", None, None, {}).train_config()
    assert alanine.slow_force_interval == 1 and alanine.network_dtype == "float64"
