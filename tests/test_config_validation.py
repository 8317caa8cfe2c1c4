"""Config values of the wrong type or out of range are refused by name, however they arrive."""

from __future__ import annotations

import pytest

from mlpot.stable.config import StableConfig
from mlpot.train.config import TrainConfig, apply_override, load_config


@pytest.mark.parametrize("assignment, message", [
    ("training.batch_size=-4", "training.batch_size must be an integer >= 1, got -4"),
    ("training.batch_size='8'", "training.batch_size must be an integer >= 1, got '8'"),
    ("training.epochs=0", "training.epochs must be an integer >= 1, got 0"),
    ("training.epochs=2.5", "training.epochs must be an integer >= 1, got 2.5"),
    ("training.lr=true", "training.lr must be a number > 0, got True"),
    ("training.lr=0", "training.lr must be a number > 0, got 0"),
    ("training.lr=.nan", "training.lr must be a number > 0, got nan"),
    ("training.lr=fast", "training.lr must be a number > 0, got 'fast'"),
    ("training.ema_decay=1", r"training.ema_decay must be a number in \[0, 1\), got 1"),
    ("training.plateau_factor=0", r"training.plateau_factor must be a number in \(0, 1\), got 0"),
    ("training.forces_weight=-1", "training.forces_weight must be a number >= 0, got -1"),
    ("training.grad_clip=0", "training.grad_clip must be a number > 0 or null, got 0"),
    ("training.threads=0", "training.threads must be an integer >= 1 or null, got 0"),
    ("training.amsgrad=1", "training.amsgrad must be true or false, got 1"),
    ("model.cutoff='5'", "model.cutoff must be a number > 0, got '5'"),
    ("model.species=H", "model.species must be a list of strings or null, got 'H'"),
    ("data.val_fraction=1", r"data.val_fraction must be a number in \[0, 1\), got 1"),
    ("data.check_units=no-thanks", "data.check_units must be true or false, got 'no-thanks'"),
    ("data.files=3", "data.files must be a list of strings, got 3"),
])
def test_bad_training_setting_from_set_is_refused_naming_key_value_and_expectation(assignment, message):
    config = TrainConfig()
    with pytest.raises(ValueError, match=f"^{message}$"):
        apply_override(config, assignment)


def test_bad_training_setting_in_yaml_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("training:\n  lr: true\n  epochs: 3\n")
    with pytest.raises(ValueError, match=r"config.yaml: training.lr must be a number > 0, got True$"):
        load_config(path)
    path.write_text("training:\n  batch_size: -4\n")
    with pytest.raises(ValueError, match=r"config.yaml: training.batch_size must be an integer >= 1, got -4$"):
        load_config(path)


def test_assignment_in_python_is_checked_too():
    config = TrainConfig()
    with pytest.raises(ValueError, match="training.epochs must be an integer >= 1, got 0"):
        config.training.epochs = 0
    assert config.training.epochs == 100  # unchanged


def test_good_values_are_kept_and_integers_for_numbers_become_floats():
    config = TrainConfig.from_dict({"data": {"files": "a.extxyz"}, "training": {"lr": 1, "grad_clip": None},
                                    "model": {"species": ["H", "O"]}})
    assert config.data.files == ["a.extxyz"]
    assert config.training.lr == 1.0 and isinstance(config.training.lr, float)
    assert config.training.grad_clip is None and config.model.species == ["H", "O"]
    assert TrainConfig.from_dict(config.to_dict()) == config


def test_cli_train_with_bad_setting_is_one_line_exit_2(tmp_path, capsys):
    from mlpot import cli

    code = cli.main(["train", "--data", "x.extxyz", "--out", str(tmp_path / "run"), "--set", "training.batch_size=-4"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.strip() == "mlpot train: error: training.batch_size must be an integer >= 1, got -4"
    assert cli.main(["train", "--data", "x.extxyz", "--out", str(tmp_path / "run"), "--epochs", "0"]) == 2
    assert "training.epochs must be an integer >= 1, got 0" in capsys.readouterr().err


@pytest.mark.parametrize("assignment, message", [
    ("data.val_fraction=true", r"data.val_fraction must be a number in \[0, 1\), got True"),
    ("data.split_seed='1'", "data.split_seed must be an integer, got '1'"),
    ("run.threads=0", "run.threads must be an integer >= 1 or null, got 0"),
    ("run.device=3", "run.device must be a string, got 3"),
    ("learning.qm_frames_per_step=true", "learning.qm_frames_per_step must be an integer or null, got True"),
])
def test_stable_settings_of_the_wrong_type_are_refused_by_validate(assignment, message):
    config = StableConfig.from_dict({"parent": "model.pt"})
    apply_override(config, assignment)
    with pytest.raises(ValueError, match=f"^{message}$"):
        config.validate()
