"""A checkpoint someone hands you cannot run code: every command that reads one refuses a file whose pickle
would call a function, with exit code 2 and one line, and the function never runs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mlpot.cli import main
from mlpot.systems import SYSTEMS_DIR

ETHANOL = str(SYSTEMS_DIR / "ethanol" / "dft.extxyz")
LEGACY_PARENT = Path(__file__).resolve().parent / "fixtures" / "legacy" / "stable" / "parent.pt"
REFUSAL = "holds Python objects besides tensors and plain data"


class CreatesMarker:
    """Unpickling this calls ``open(marker, "w")``: a stand-in for any code an attacker would run."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def write_hostile_checkpoint(path: Path, kind: str, marker: Path) -> Path:
    """A ``checkpoint.pt`` that looks like a ``kind`` checkpoint and holds one code-running object."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"checkpoint_version": 1, "kind": kind, "config": {"system": "alanine-dipeptide"},
                "payload": CreatesMarker(marker)}, path)
    return path


def assert_refused_in_one_line(arguments, marker: Path, capsys) -> None:
    assert main(arguments) == 2, arguments
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and REFUSAL in error and "It was not loaded" in error, error
    assert "it would call io.open" in error and "add_safe_globals" not in error, error  # never advise allowing it
    assert error.startswith(f"mlpot {arguments[0]}: error: "), error
    assert not marker.exists(), arguments


def test_the_hostile_file_really_runs_code_when_unpickled_without_weights_only(tmp_path):
    marker = tmp_path / "marker"
    path = write_hostile_checkpoint(tmp_path / "checkpoint.pt", "training", marker)
    torch.load(path, weights_only=False)  # what mlpot used to do
    assert marker.exists()


def test_train_resume_refuses_a_hostile_checkpoint(tmp_path, capsys):
    marker = tmp_path / "marker"
    write_hostile_checkpoint(tmp_path / "run" / "checkpoint.pt", "training", marker)
    assert_refused_in_one_line(["train", "--data", ETHANOL, "--arch", "egnn", "--out", str(tmp_path / "run"),
                                "--resume", "--quiet"], marker, capsys)


def test_demo_continuing_a_hostile_run_refuses_it(tmp_path, capsys):
    marker = tmp_path / "marker"
    write_hostile_checkpoint(tmp_path / "demo" / "train" / "checkpoint.pt", "training", marker)
    assert main(["demo", "--out", str(tmp_path / "demo"), "--minutes", "0.01"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and REFUSAL in error and not marker.exists()


def _stable_config(tmp_path: Path, parent: Path) -> Path:
    from mlpot.stable.config import StableConfig, save_stable_config

    config = StableConfig.from_dict({"parent": str(parent), "out": str(tmp_path / "run"),
                                     "simulation": {"replicas": 2}, "run": {"cycles": 1}})
    save_stable_config(config, tmp_path / "stable.yaml")
    return tmp_path / "stable.yaml"


def test_stable_refuses_a_hostile_parent_checkpoint(tmp_path, capsys):
    marker = tmp_path / "marker"
    parent = write_hostile_checkpoint(tmp_path / "parent" / "checkpoint.pt", "training", marker)
    assert_refused_in_one_line(["stable", str(_stable_config(tmp_path, parent))], marker, capsys)


def test_stable_resume_refuses_a_hostile_checkpoint(tmp_path, capsys):
    marker = tmp_path / "marker"
    write_hostile_checkpoint(tmp_path / "run" / "checkpoint.pt", "StABlE", marker)
    assert_refused_in_one_line(["stable", str(_stable_config(tmp_path, LEGACY_PARENT)), "--resume", "--quiet"],
                               marker, capsys)


@pytest.mark.parametrize("command", [["pips", "train", "--resume", "--out"], ["pips", "sample"], ["pips", "report"]])
def test_pips_commands_refuse_a_hostile_checkpoint(command, tmp_path, capsys):
    marker = tmp_path / "marker"
    write_hostile_checkpoint(tmp_path / "run" / "checkpoint.pt", "PIPS", marker)
    assert_refused_in_one_line([*command, str(tmp_path / "run")], marker, capsys)
