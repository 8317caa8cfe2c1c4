"""The unit check recognises Hartree read as eV on every shipped dataset, and flags none of them as they are."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import ase.io
import numpy as np
import pytest

from mlpot import cli
from mlpot.data import DataError, read_frames, validate_frames
from mlpot.data.validate import check_energy_scale
from mlpot.units import ANGSTROM_PER_BOHR, EV_PER_HARTREE, energy_factor

SYSTEMS = Path(__file__).resolve().parent.parent / "systems"
# every labelled dataset shipped in systems/ (the xTB set thinned for speed: its frames are alike)
DATASETS = {
    "ethanol B3LYP": (SYSTEMS / "ethanol" / "dft.extxyz", ":"),
    "alanine dipeptide B3LYP": (SYSTEMS / "alanine-dipeptide" / "dft.extxyz", ":"),
    "alanine dipeptide GFN2-xTB": (SYSTEMS / "alanine-dipeptide" / "xtb.extxyz.gz", "::10"),
}
HARTREE_PER_BOHR_IN_EV_PER_A = EV_PER_HARTREE / ANGSTROM_PER_BOHR


def _frames(name):
    path, index = DATASETS[name]
    frames = read_frames(path)
    return frames[_slice(index)]


def _slice(index: str) -> slice:
    return slice(None, None, int(index[2:])) if index.startswith("::") else slice(None)


def _relabelled(frames, energy_divisor: float, force_divisor: float):
    """The frames with energies and forces divided as if they had been stored in another unit."""
    return [dataclasses.replace(f, energy=f.energy / energy_divisor, forces=f.forces / force_divisor) for f in frames]


def test_energy_scale_check_is_part_of_validation_and_the_shipped_datasets_pass_it():
    for name in DATASETS:
        validate_frames(_frames(name))  # raises if any check flags them


@pytest.mark.parametrize("name", list(DATASETS))
@pytest.mark.parametrize("force_divisor", [EV_PER_HARTREE, HARTREE_PER_BOHR_IN_EV_PER_A], ids=["Ha/A", "Ha/Bohr"])
def test_shipped_dataset_in_hartree_read_as_ev_is_refused_naming_hartree(name, force_divisor):
    frames = _relabelled(_frames(name), EV_PER_HARTREE, force_divisor)
    with pytest.raises(DataError) as error:
        validate_frames(frames)
    message = str(error.value)
    assert "\n" not in message
    assert "energies look like Hartree, not eV" in message
    assert "forces are then likely Hartree/Bohr or Hartree/Å" in message
    assert "data.energy_unit: Hartree" in message and "--no-unit-check" in message
    validate_frames(frames, check_units=False)  # the override lets them through


def test_kcal_per_mol_energies_read_as_ev_are_named_as_such():
    frames = _frames("ethanol B3LYP")[:50]
    frames = _relabelled(frames, energy_factor("kcal/mol"), 1.0)
    with pytest.raises(DataError, match="energies look like kcal/mol, not eV"):
        check_energy_scale(frames)


def test_relative_and_foreign_energies_are_not_flagged():
    """Energies that match no known absolute scale (relative, EMT, other elements) pass: the check only
    speaks when it recognises a unit."""
    frames = _frames("ethanol B3LYP")[:50]
    mean = np.mean([f.energy for f in frames])
    check_energy_scale([dataclasses.replace(f, energy=f.energy - mean) for f in frames])
    check_energy_scale([dataclasses.replace(f, energy=f.energy / 1000.0) for f in frames])
    copper = [dataclasses.replace(f, numbers=np.full(f.n_atoms, 29)) for f in _relabelled(frames, EV_PER_HARTREE, 1.0)]
    check_energy_scale(copper)


@pytest.fixture(scope="module")
def hartree_file(tmp_path_factory):
    """The first 40 ethanol frames written with energies in Hartree and forces in Hartree/Bohr."""
    path = tmp_path_factory.mktemp("hartree") / "ethanol-hartree.extxyz"
    images = ase.io.read(DATASETS["ethanol B3LYP"][0], index=":40")
    for atoms in images:
        atoms.calc.results["energy"] /= EV_PER_HARTREE
        atoms.calc.results["forces"] = atoms.calc.results["forces"] / HARTREE_PER_BOHR_IN_EV_PER_A
    ase.io.write(path, images)
    return path


def test_data_inspect_reports_hartree_energies_as_a_problem(hartree_file, capsys):
    assert cli.main(["data", "inspect", str(hartree_file)]) == 1
    out = capsys.readouterr().out
    assert "energies look like Hartree, not eV" in out
    assert cli.main(["data", "inspect", str(hartree_file), "--energy-unit", "Hartree"]) in (0, 1)
    assert "energies look like Hartree" not in capsys.readouterr().out


def test_eval_refuses_hartree_energies_unless_told(hartree_file, model_files, tmp_path, capsys):
    model = model_files[("egnn", "float64")]
    code = cli.main(["eval", str(model), "--data", str(hartree_file), "--out", str(tmp_path / "eval")])
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "energies look like Hartree, not eV" in err
    code = cli.main(["eval", str(model), "--data", str(hartree_file), "--out", str(tmp_path / "eval"),
                     "--no-unit-check"])
    assert code == 0


def test_train_refuses_hartree_energies_before_writing_anything(hartree_file, tmp_path, capsys):
    out = tmp_path / "run"
    code = cli.main(["train", "--data", str(hartree_file), "--out", str(out), "--epochs", "1", "--quiet"])
    assert code == 2
    assert "energies look like Hartree, not eV" in capsys.readouterr().err
    assert not (out / "checkpoint.pt").exists()


def test_forces_in_hartree_per_bohr_are_caught_in_shuffled_frames_by_aligned_pairs():
    """No two consecutive frames are alike after shuffling; pairs of similar molecules after rotation still
    show the forces doing 1/51 of the work the energies say."""
    frames = _frames("ethanol B3LYP")
    shuffled = [frames[i] for i in np.random.default_rng(0).permutation(len(frames))]
    validate_frames(shuffled)
    with pytest.raises(DataError, match=r"inconsistent units: along \d+ pairs of similar molecules \(after alignment\) "
                                        r"the forces predict energy changes 0.0\d+ times the stored ones"):
        validate_frames(_relabelled(shuffled, 1.0, HARTREE_PER_BOHR_IN_EV_PER_A))
