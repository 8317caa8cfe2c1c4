"""The ``mlpot`` command line: the documented commands work and bad input gets a one-line error."""

from __future__ import annotations

import subprocess
import sys

import mdtraj
import pytest

from mlpot.cli import main
from mlpot.deploy import read_metadata


def test_console_script_prints_help_listing_the_subcommands():
    result = subprocess.run([sys.executable, "-m", "mlpot.cli", "--help"], capture_output=True, text=True, check=True)
    for command in ("new-model", "info", "rebuild", "md", "systems", "demo", "train", "eval", "data"):
        assert command in result.stdout


@pytest.mark.parametrize("arch", ["egnn", "nequip"])
def test_new_model_writes_a_file_whose_metadata_info_prints(arch, tmp_path, capsys):
    path = tmp_path / "model.pt"
    assert main(["new-model", "--arch", arch, "--species", "H,C,N,O", "--cutoff", "4.5", "--hp",
                 "num_layers=2", "-o", str(path)]) == 0
    metadata = read_metadata(path)
    assert metadata["arch"] == arch and metadata["cutoff"] == 4.5 and metadata["hyperparameters"]["num_layers"] == 2
    capsys.readouterr()
    assert main(["info", str(path)]) == 0
    printed = capsys.readouterr().out
    assert "species        H, C, N, O" in printed and "cutoff         4.5 Å" in printed
    assert metadata["content_hash"] in printed


def test_rebuild_writes_the_same_model_with_a_changed_speed_setting(model_files, water_box, tmp_path, capsys):
    from conftest import as_tensors
    from mlpot.deploy import load_model

    source = model_files[("egnn", "float64")]
    rebuilt = tmp_path / "chunked.pt"
    assert main(["rebuild", str(source), "--hp", "edge_chunk_size=500", "-o", str(rebuilt)]) == 0
    assert "edge_chunk_size=500" in capsys.readouterr().out
    metadata = read_metadata(rebuilt)
    assert metadata["hyperparameters"]["edge_chunk_size"] == 500
    assert metadata["provenance"]["rebuilt_from"]["changes"] == {"edge_chunk_size": 500}
    assert metadata["provenance"]["rebuilt_from"]["content_hash"] == read_metadata(source)["content_hash"]
    inputs = as_tensors(water_box)  # 192 atoms, ~10 000 edges: 21 chunks
    before, after = load_model(source).compute(*inputs), load_model(rebuilt).compute(*inputs)
    assert float(abs(after["energy"] - before["energy"])) < 1e-9 * max(float(abs(before["energy"])), 1.0)
    assert float((after["forces"] - before["forces"]).abs().max()) < 1e-10 * float(before["forces"].abs().max())


@pytest.mark.parametrize(
    "changes, message",
    [
        ([], "nothing to change"),
        (["--hp", "hidden=32"], "do not fit the model"),
        (["--hp", "no_such_setting=1"], "unknown hyperparameter 'no_such_setting'"),
    ],
)
def test_rebuild_refuses_changes_that_do_not_fit_the_weights(changes, message, model_files, tmp_path, capsys):
    out = tmp_path / "rebuilt.pt"
    assert main(["rebuild", str(model_files[("egnn", "float32")]), *changes, "-o", str(out)]) == 2
    error = capsys.readouterr().err
    assert message in error and "Traceback" not in error
    assert not out.exists()


def test_rebuild_refuses_to_write_over_its_source(model_files, tmp_path, capsys):
    source = tmp_path / "model.pt"
    source.write_bytes(model_files[("egnn", "float32")].read_bytes())
    assert main(["rebuild", str(source), "--hp", "edge_chunk_size=64", "-o", str(source)]) == 2
    error = capsys.readouterr().err
    assert "not over the one it is rebuilt from" in error and "Traceback" not in error
    assert read_metadata(source)["hyperparameters"]["edge_chunk_size"] == 0


@pytest.mark.parametrize("engine", ["openmm", "ase"])
def test_md_writes_a_trajectory_mdtraj_reads(engine, model_files, tmp_path, capsys):
    out = tmp_path / "traj.dcd"
    assert main(["md", "--model", str(model_files[("egnn", "float32")]), "--system", "alanine-dipeptide",
                 "--engine", engine, "--steps", "40", "--report-interval", "10", "--out", str(out), "--quiet"]) == 0
    trajectory = mdtraj.load(str(out), top=str(out.with_suffix(".pdb")))
    assert trajectory.n_frames == 4 and trajectory.n_atoms == 22
    assert "ns/day" in capsys.readouterr().out


def test_md_resume_continues_from_the_checkpoint_and_appends_frames(model_files, tmp_path):
    out = tmp_path / "traj.dcd"
    common = ["md", "--model", str(model_files[("egnn", "float32")]), "--report-interval", "10", "--temperature", "20",
              "--out", str(out), "--quiet"]
    assert main(common + ["--steps", "20"]) == 0
    assert main(common + ["--steps", "50", "--resume"]) == 0
    assert mdtraj.load(str(out), top=str(out.with_suffix(".pdb"))).n_frames == 5


def test_md_reports_a_blow_up_naming_the_step(tmp_path, capsys):
    violent = tmp_path / "violent.pt"
    main(["new-model", "--arch", "nequip", "--species", "H,C,N,O", "--energy-scale", "50", "-o", str(violent)])
    code = main(["md", "--model", str(violent), "--steps", "400", "--report-interval", "20",
                 "--out", str(tmp_path / "t.dcd"), "--quiet"])
    assert code == 2
    assert "simulation blew up at step" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["info", "missing.pt"], "does not exist"),
        (["new-model", "--arch", "egnn", "--species", "H,Xx", "-o", "m.pt"], "unknown element symbol 'Xx'"),
        (["md", "--model", "{model}", "--system", "no-such-system", "--steps", "10"], "no-such-system"),
    ],
)
def test_bad_input_gives_a_one_line_error_and_exit_code_2(argv, message, model_files, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = [a.format(model=model_files[("egnn", "float32")]) for a in argv]
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert message in error and "Traceback" not in error


def test_md_with_a_model_lacking_an_element_of_the_system_names_it(tmp_path, capsys):
    path = tmp_path / "hc.pt"
    main(["new-model", "--arch", "egnn", "--species", "H,C", "-o", str(path)])
    assert main(["md", "--model", str(path), "--steps", "10", "--out", str(tmp_path / "t.dcd")]) == 2
    assert "element(s) N, O not supported" in capsys.readouterr().err


ETHANOL = "systems/ethanol/dft.extxyz"


def test_train_from_flags_then_eval_and_inspect(tmp_path, capsys):
    """mlpot train --data ... --arch ... --out ...; mlpot eval MODEL --data ...; mlpot data inspect FILE."""
    run = tmp_path / "run"
    assert main(["train", "--data", ETHANOL, "--arch", "egnn", "--epochs", "1", "--out", str(run), "--quiet",
                 "--set", "data.index=':16'", "--set", "model.hyperparameters={hidden: 8, num_layers: 1}",
                 "--set", "training.batch_size=4", "--set", "data.val_fraction=0.25"]) == 0
    printed = capsys.readouterr().out
    assert "stopped after 1 epochs" in printed and "forces" in printed and (run / "model.pt").exists()
    assert read_metadata(run / "model.pt")["hyperparameters"]["hidden"] == 8

    assert main(["eval", str(run / "model.pt"), "--data", ETHANOL, "--index", ":5", "--out", str(tmp_path / "ev")]) == 0
    printed = capsys.readouterr().out
    assert "(5 frames)" in printed and "meV/Å" in printed
    assert (tmp_path / "ev" / "parity.png").stat().st_size > 0 and (tmp_path / "ev" / "metrics.json").exists()

    assert main(["data", "inspect", ETHANOL, "--index", ":10"]) == 0
    assert "elements            C 20, H 60, O 10" in capsys.readouterr().out


def test_train_errors_are_one_line(tmp_path, capsys):
    assert main(["train", "--data", str(tmp_path / "missing.extxyz"), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mlpot train: error:") and "missing.extxyz: file not found" in err \
        and len(err.splitlines()) == 1
    config = tmp_path / "bad.yaml"
    config.write_text("training:\n  learning_rate: 0.1\n")
    assert main(["train", str(config)]) == 2
    assert "unknown key(s) ['learning_rate'] in config section 'training'" in capsys.readouterr().err
    assert main(["train", "--data", ETHANOL, "--set", "training.lr"]) == 2
    assert "must look like section.key=value" in capsys.readouterr().err


def test_data_inspect_exits_nonzero_and_lists_problems(tmp_path, capsys):
    import ase.io

    frames = ase.io.read(ETHANOL, index=":6")
    frames[2].calc.results.pop("forces")
    ase.io.write(tmp_path / "bad.extxyz", frames)
    assert main(["data", "inspect", str(tmp_path / "bad.extxyz")]) == 1
    assert "frame 2: no forces label" in capsys.readouterr().out


# ---------------------------------------------------------------- one vocabulary: new spellings, hidden old ones
def help_text(capsys, *command) -> str:
    with pytest.raises(SystemExit) as stop:
        main([*command, "--help"])
    assert stop.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("command, shown, hidden", [
    (["new-model"], "-o OUT, --out OUT", "--output"),
    (["rebuild"], "-o OUT, --out OUT", "--output"),
    (["train"], "--max-minutes", "--max-time"),
    (["demo"], "--max-minutes", "--minutes "),
    (["stable", "evaluate"], "--duration", "--time "),
    (["stability"], "--duration", "--time "),
])
def test_help_shows_the_one_spelling_and_hides_the_old_alias(command, shown, hidden, capsys):
    text = help_text(capsys, *command)
    assert shown in text and hidden not in text


def test_help_shows_defaults_once_and_hides_the_stability_alias(capsys):
    text = help_text(capsys, "md")
    assert "K (default: 300.0)" in text and "(default 300)" not in text and "(default: 0)" in text  # --seed 0
    top = help_text(capsys)
    assert "stable" in top and "stability" not in top
    assert "train" in help_text(capsys, "stable") and "evaluate" in help_text(capsys, "stable")


def test_new_model_and_rebuild_still_take_the_old_output_flag(model_files, tmp_path, capsys):
    assert main(["new-model", "--arch", "egnn", "--species", "H,O", "--output", str(tmp_path / "a.pt")]) == 0
    assert read_metadata(tmp_path / "a.pt")["species"] == ["H", "O"]
    assert main(["rebuild", str(model_files[("egnn", "float64")]), "--hp", "edge_chunk_size=500",
                 "--output", str(tmp_path / "b.pt")]) == 0
    assert read_metadata(tmp_path / "b.pt")["hyperparameters"]["edge_chunk_size"] == 500
    with pytest.raises(SystemExit):  # neither spelling: the required option is named
        main(["new-model", "--arch", "egnn", "--species", "H"])
    assert "required: -o/--out" in capsys.readouterr().err


def printed_config(capsys, *command):
    import yaml

    assert main([*command, "--print-config"]) == 0
    return yaml.safe_load(capsys.readouterr().out)


def test_train_print_config_reads_back_as_the_same_config_and_runs_nothing(tmp_path, capsys):
    from mlpot.cli import build_parser
    from mlpot.cli.train import train_config_from_args
    from mlpot.train import TrainConfig

    config_file = tmp_path / "train.yaml"
    config_file.write_text("data:\n  files: [a.extxyz]\ntraining:\n  max_time_minutes: 9\n")  # the old key name
    command = ["train", str(config_file), "--epochs", "7", "--max-minutes", "4", "--set", "training.lr=0.02",
               "--out", str(tmp_path / "run")]
    printed = printed_config(capsys, *command)
    assert printed["training"]["max_minutes"] == 4.0 and printed["training"]["epochs"] == 7
    assert printed["training"]["lr"] == 0.02 and printed["model"]["cutoff"] == 5.0  # a default, printed too
    expected = train_config_from_args(build_parser().parse_args(command))
    assert TrainConfig.from_dict(printed) == expected
    assert not (tmp_path / "run").exists()
    old = printed_config(capsys, "train", str(config_file), "--max-time", "2.5")  # the old flag
    assert old["training"]["max_minutes"] == 2.5
    assert printed_config(capsys, "train", str(config_file))["training"]["max_minutes"] == 9.0  # the old key


def test_stable_print_config_reads_back_as_the_same_config(tmp_path, capsys):
    from mlpot.cli import build_parser
    from mlpot.cli.stable import stable_config_from_args
    from mlpot.stable.config import StableConfig

    config_file = tmp_path / "stable.yaml"
    config_file.write_text("parent: p.pt\nrun:\n  max_time_minutes: 3\n")  # the old key name
    command = ["stable", "train", str(config_file), "--set", "learning.lr=0.002", "--out", str(tmp_path / "run")]
    printed = printed_config(capsys, *command)
    assert printed["run"]["max_minutes"] == 3 and printed["learning"]["lr"] == 0.002
    assert printed["simulation"]["replicas"] == StableConfig().simulation.replicas  # a default, printed too
    assert StableConfig.from_dict(printed) == stable_config_from_args(build_parser().parse_args(command))
    old_form = printed_config(capsys, "stable", str(config_file), "--max-minutes", "8")  # mlpot stable CONFIG
    assert old_form["run"]["max_minutes"] == 8.0 and not (tmp_path / "run").exists()


@pytest.mark.parametrize("command", [["stable", "train"], ["stable"], ["stable", "--quiet"]])
def test_stable_train_and_the_old_stable_config_form_both_reach_the_trainer(command, tmp_path, monkeypatch, capsys):
    import mlpot.stable.trainer

    config_file = tmp_path / "stable.yaml"
    config_file.write_text("parent: p.pt\n")
    reached = []

    def fake_stable_train(config, resume=False, quiet=False):
        reached.append((config.parent, resume))
        raise ValueError("stopped by the test")

    monkeypatch.setattr(mlpot.stable.trainer, "stable_train", fake_stable_train)
    argv = [*command, str(config_file), "--resume"] if command[-1] != "--quiet" else [*command, str(config_file)]
    assert main(argv) == 2
    assert reached == [("p.pt", command[-1] != "--quiet")]
    assert "mlpot stable: error: stopped by the test" in capsys.readouterr().err


@pytest.mark.parametrize("command", [["stable", "evaluate", "M.pt", "--duration", "300fs"],
                                     ["stability", "M.pt", "--time", "300fs"],
                                     ["--threads", "1", "stable", "evaluate", "M.pt", "--time", "0.3ps"]])
def test_stable_evaluate_and_the_old_stability_command_take_the_same_settings(command, monkeypatch, capsys):
    import mlpot.stable.evaluation

    seen = []

    def fake_measure(model, system, settings, reference_path=None, progress=None):
        seen.append((model, system, settings.time_ps))
        raise ValueError("stopped by the test")

    monkeypatch.setattr(mlpot.stable.evaluation, "measure_model_file_stability", fake_measure)
    assert main(command) == 2
    assert seen == [("M.pt", "ethanol", pytest.approx(0.3))]


def test_demo_takes_max_minutes_and_the_old_minutes_flag(tmp_path, monkeypatch, capsys):
    import mlpot.train

    limits = []

    def fake_train(config, resume=False):
        limits.append(config.training.max_minutes)
        raise ValueError("stopped by the test")

    monkeypatch.setattr(mlpot.train, "train", fake_train)
    assert main(["demo", "--out", str(tmp_path), "--max-minutes", "0.5"]) == 2
    assert main(["demo", "--out", str(tmp_path), "--minutes", "0.25"]) == 2
    assert limits == [0.5, 0.25]
