"""``mlpot pips train``'s config: YAML file, ``--set training.key=value``, ``--print-config`` round trip,
refusals; ``import mlpot.pips`` stays light; one result type from every trainer's ``evaluate()``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "docs" / "pips_alanine.yaml"


def printed_config(capsys, *arguments) -> str:
    from mlpot.cli import main

    assert main(["pips", "train", *arguments, "--print-config"]) == 0
    return capsys.readouterr().out


def test_importing_mlpot_pips_loads_neither_e3nn_nor_openmm_nor_the_models():
    code = ("import sys, mlpot.pips; print('e3nn' in sys.modules, 'openmm' in sys.modules, "
            "any(m.startswith('mlpot.models') for m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                            env={"OMP_NUM_THREADS": "1", "PATH": ""}, check=True)
    assert result.stdout.split() == ["False", "False", "False"]


def test_the_example_config_prints_with_every_default_and_reads_back_unchanged(capsys, tmp_path):
    printed = printed_config(capsys, str(EXAMPLE))
    config = yaml.safe_load(printed)
    assert config["system"] == "alanine-dipeptide" and config["out"] == "runs/pips-alanine"
    assert config["training"]["lam"] == 1e-6 and config["training"]["replica_layout"] == "one-context"
    assert "system" not in config["training"] and "potential" not in config["training"]
    again = tmp_path / "printed.yaml"
    again.write_text(printed)
    assert printed_config(capsys, str(again)) == printed


def test_flags_override_the_file_and_set_overrides_both(capsys, tmp_path):
    printed = printed_config(capsys, str(EXAMPLE), "--out", str(tmp_path / "run"), "--paths", "4",
                             "--set", "training.lam=1e-4", "--set", "n_steps=20")  # (the bare key: an older spelling)
    config = yaml.safe_load(printed)
    assert config["out"] == str(tmp_path / "run")
    assert (config["training"]["n_paths"], config["training"]["lam"], config["training"]["n_steps"]) == (4, 1e-4, 20)


def test_a_toy_config_without_a_file_has_the_toy_settings(capsys):
    config = yaml.safe_load(printed_config(capsys, "--system", "double-well", "--set", "training.symmetric=true"))
    assert config["system"] == "double-well" and config["potential"] is None
    assert config["training"]["symmetric"] is True and config["training"]["n_paths"] == 64


@pytest.mark.parametrize("arguments, message", [
    (["--set", "model.lam=1"], "unknown section 'model'; known: ['training']"),
    (["--set", "training.lambda=1"], "unknown PIPS setting(s) lambda in section 'training'"),
    (["--set", "training.system=polyproline"], "system belong(s) at the top level"),
    (["--set", "training.symmetric=true"], "unknown PIPS setting(s) symmetric"),  # a toy's key, not a molecule's
])
def test_unknown_sections_and_keys_are_refused_in_one_line(capsys, arguments, message):
    from mlpot.cli import main

    assert main(["pips", "train", str(EXAMPLE), *arguments, "--print-config"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1 and message in captured.err
    assert captured.err.startswith("mlpot pips: error: ")


@pytest.mark.parametrize("text, message", [
    ("system: double-well\ntrainig:\n  lam: 1\n", "unknown key(s) ['trainig']"),
    ("system: double-well\ntraining:\n  lr: 1\n  dt: 2\n", "unknown PIPS setting(s) dt"),
    ("system: double-well\ntraining: [1, 2]\n", "config section 'training' must be a mapping"),
    ("system: double-well\npotential: model.pt\n", "applies to molecular systems"),
])
def test_a_config_file_with_an_unknown_key_is_refused_naming_the_file(capsys, tmp_path, text, message):
    from mlpot.cli import main

    path = tmp_path / "bad.yaml"
    path.write_text(text)
    assert main(["pips", "train", str(path), "--print-config"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(path) in err and message in err


def test_a_toy_run_from_a_config_file_trains_and_resumes_with_the_same_file(capsys, tmp_path, one_thread):
    from mlpot.cli import main

    path = tmp_path / "dw.yaml"
    path.write_text(f"system: double-well\nout: {tmp_path / 'dw'}\ntraining:\n  iterations: 1\n  n_paths: 4\n"
                    "  hidden: [8]\n")
    assert main(["pips", "train", str(path), "--quiet", "--eval-paths", "4"]) == 0
    state = torch.load(tmp_path / "dw" / "checkpoint.pt", weights_only=True)
    assert state["config"]["hidden"] == [8] and state["iteration"] == 1
    assert main(["pips", "train", str(path), "--resume", "--quiet", "--eval-paths", "4"]) == 0
    capsys.readouterr()
    path.write_text(path.read_text().replace("n_paths: 4", "n_paths: 8"))
    assert main(["pips", "train", str(path), "--resume", "--quiet"]) == 2
    assert "n_paths" in capsys.readouterr().err


def test_both_trainers_evaluate_to_one_result_type(one_thread):
    from mlpot.pips.molecular.trainer import MolecularTrainConfig, MolecularTrainer
    from mlpot.pips.toy.trainer import ToyTrainConfig, ToyTrainer
    from mlpot.pips.trainer import PathEvaluation

    toy = ToyTrainer(ToyTrainConfig(n_paths=4, hidden=[8])).evaluate(4, seed=1)
    molecular = MolecularTrainer(MolecularTrainConfig(n_paths=2, n_steps=5, hidden=[8]),
                                 platform="Reference").evaluate(2, seed=1)
    for evaluation, n_steps in ((toy, 500), (molecular, 5)):
        assert type(evaluation) is PathEvaluation
        assert evaluation.thp == evaluation.metrics["thp"] and 0.0 <= evaluation.thp <= 1.0
        assert evaluation.rollout.n_paths == len(evaluation.rollout.positions) and evaluation.rollout.n_steps == n_steps
    assert {"upper", "lower"} <= set(toy.metrics) and "rmsd_A" in molecular.metrics


@pytest.mark.parametrize("value", ["0", "1.5", "two"])
def test_a_bad_slow_force_interval_is_refused_in_one_line_before_any_file_is_written(value, tmp_path, capsys):
    from mlpot.cli import main

    out = tmp_path / "run"
    assert main(["pips", "train", "--system", "chignolin", "--out", str(out), "--set",
                 f"training.slow_force_interval={value}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "slow_force_interval" in err and not out.exists()
    assert main(["pips", "train", "--system", "chignolin", "--set", "training.slow_force_interval=2",
                 "--print-config"]) == 0
    assert "slow_force_interval: 2" in capsys.readouterr().out


def test_an_unknown_network_dtype_is_refused_in_one_line_before_any_file_is_written(tmp_path, capsys):
    from mlpot.cli import main

    out = tmp_path / "run"
    assert main(["pips", "train", "--system", "chignolin", "--out", str(out), "--set",
                 "training.network_dtype=float16"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "network_dtype must be one of float64, float32, got 'float16'" in err
    assert not out.exists()
    assert main(["pips", "train", "--system", "chignolin", "--print-config"]) == 0
    assert "network_dtype: float32" in capsys.readouterr().out
