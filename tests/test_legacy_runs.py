"""Run folders written before checkpoints were restricted to tensors and plain types (tests/fixtures/legacy,
made by commit e8ecd89) still load with ``weights_only=True`` and continue; what they write next is in the
new format."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest
import torch

from mlpot.runs import read_checkpoint

LEGACY = Path(__file__).resolve().parent / "fixtures" / "legacy"


@pytest.fixture
def legacy(tmp_path, monkeypatch) -> Path:
    """A copy of the legacy folders as the working directory (their checkpoints hold relative paths)."""
    copy = tmp_path / "legacy"
    shutil.copytree(LEGACY, copy)
    monkeypatch.chdir(copy)
    return copy



def log_rows(path: Path):
    with open(path) as handle:
        return list(csv.DictReader(handle))


def test_legacy_checkpoints_need_more_than_plain_weights_only_and_still_load_safely():
    """The training checkpoint's numpy RNG state is a pickled ndarray: plain ``weights_only=True`` refuses it,
    :func:`mlpot.runs.read_checkpoint` allows exactly that (no code runs to rebuild an array)."""
    with pytest.raises(Exception, match="Weights only load failed"):
        torch.load(LEGACY / "train" / "checkpoint.pt", weights_only=True)
    for folder, kind in (("train", "training"), ("stable", "StABlE"), ("pips_toy", "PIPS"), ("pips_alanine", "PIPS")):
        state = read_checkpoint(LEGACY / folder / "checkpoint.pt", 1, kind)
        assert "kind" not in state and state["checkpoint_version"] == 1, folder
    with pytest.raises(ValueError, match="is a PIPS checkpoint, not a training one"):  # the kind is recognised
        read_checkpoint(LEGACY / "pips_toy" / "checkpoint.pt", 1, "training")


def test_a_legacy_training_run_resumes_and_its_next_checkpoint_is_plain(legacy, one_thread):
    from mlpot.train import TrainConfig, train

    saved = read_checkpoint(Path("train/checkpoint.pt"), 1, "training")
    config = TrainConfig.from_dict(saved["config"])
    config.training.epochs = 2
    result = train(config, resume=True, quiet=True)
    assert result.epochs_done == 2
    rows = log_rows(legacy / "train" / "log.csv")
    assert [row["epoch"] for row in rows] == ["1", "2"]
    assert rows[0] == log_rows(LEGACY / "train" / "log.csv")[0]  # the legacy epoch is kept as it was
    state = torch.load(legacy / "train" / "checkpoint.pt", weights_only=True)
    assert state["kind"] == "training" and state["progress"]["step"] == 4


def test_a_legacy_training_checkpoint_is_a_stable_parent(legacy):
    from mlpot.stable.parent import load_parent

    parent = load_parent("train/checkpoint.pt")
    best = read_checkpoint(Path("train/checkpoint.pt"), 1, "training")["best_ema"]
    assert all(torch.equal(parent.model.state_dict()[k], best[k]) for k in best)
    assert parent.split_file == "train/data.extxyz" and len(parent.split["train"]) == 6


@pytest.mark.filterwarnings("ignore:.*without a seal:UserWarning")  # its parent is a format-1 (unsealed) file
def test_a_legacy_stable_run_resumes_for_another_cycle(legacy, one_thread):
    from mlpot.stable.config import StableConfig
    from mlpot.stable.trainer import stable_train

    config = StableConfig.from_dict(read_checkpoint(Path("stable/checkpoint.pt"), 1, "StABlE")["config"])
    config.run.cycles = 2
    result = stable_train(config, resume=True, quiet=True)
    assert result.cycles_done == 2
    rows = log_rows(legacy / "stable" / "log.csv")
    assert rows[:4] == log_rows(LEGACY / "stable" / "log.csv")  # kept as they were
    assert {row["cycle"] for row in rows[4:]} == {"1", "2"}  # the new cycle and the last measurement
    assert torch.load(legacy / "stable" / "checkpoint.pt", weights_only=True)["kind"] == "StABlE"


def test_a_legacy_toy_pips_run_resumes_where_it_stopped(legacy, one_thread):
    from mlpot.pips.runs import resume_run

    trainer = resume_run(Path("pips_toy"))
    assert trainer.iteration == 2 and len(trainer.log) == 2
    trainer.run()
    assert trainer.iteration == 3
    state = torch.load(legacy / "pips_toy" / "checkpoint.pt", weights_only=True)
    assert state["kind"] == "PIPS" and [row["iteration"] for row in state["log"]] == [1, 2, 3]


def test_a_legacy_alanine_pips_run_samples_and_resumes_from_the_command_line(legacy, capsys, one_thread):
    from mlpot.cli import main

    assert main(["pips", "sample", "pips_alanine", "--paths", "2"]) == 0
    assert (legacy / "pips_alanine" / "paths.dcd").stat().st_size > 0
    assert main(["pips", "train", "--out", "pips_alanine", "--resume", "--quiet"]) == 0
    assert "3 iterations" in capsys.readouterr().out
    assert torch.load(legacy / "pips_alanine" / "checkpoint.pt", weights_only=True)["iteration"] == 3
