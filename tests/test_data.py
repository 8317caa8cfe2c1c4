"""Reading, validating, splitting and summarising reference data: every bad case gets its named error."""

from __future__ import annotations

import dataclasses

import ase
import ase.build
import ase.io
import numpy as np
import pytest
import torch
from ase.calculators.singlepoint import SinglePointCalculator

from mlpot.data import (
    DataError,
    DataSpec,
    Frame,
    check_split,
    collate,
    compute_statistics,
    frames_to_graphs,
    random_split,
    read_frames,
    read_index_file,
    validate_frames,
)
from mlpot.data.inspect import inspect_frames
from mlpot.data.statistics import fit_energy_references
from mlpot.data.validate import energy_force_slope, require_species_in_training, similar_pairs, validate_frame
from mlpot.units import ANGSTROM_PER_BOHR, EV_PER_HARTREE, KCAL_PER_MOL_PER_EV

ETHANOL = "systems/ethanol/dft.extxyz"


@pytest.fixture(scope="module")
def ethanol_frames():
    return read_frames(ETHANOL, DataSpec(index=":40"))


def write_extxyz(path, frames, **skip):
    """Write Frames back out (``skip`` drops a label from chosen frame numbers, e.g. forces=[3])."""
    images = []
    for k, frame in enumerate(frames):
        atoms = frame.to_atoms()
        results = dict(atoms.calc.results)
        for label, indices in skip.items():
            if k in indices:
                results.pop(label, None)
        atoms.calc = SinglePointCalculator(atoms, **results)
        images.append(atoms)
    ase.io.write(path, images)
    return path


def test_extxyz_frames_carry_energy_forces_and_info(ethanol_frames):
    frame = ethanol_frames[0]
    assert len(ethanol_frames) == 40 and frame.n_atoms == 9
    assert frame.positions.shape == (9, 3) and frame.forces.shape == (9, 3)
    assert -4300 < frame.energy < -4100  # total B3LYP energy of ethanol, eV
    assert frame.info["level_of_theory"].startswith("B3LYP")
    assert frame.source.endswith("dft.extxyz") and ethanol_frames[7].index == 7


def test_units_are_converted_once_on_reading(tmp_path, ethanol_frames):
    """The same data stored in kcal/mol and in Hartree/Bohr reads back to the same eV/Å numbers."""
    images = [f.to_atoms() for f in ethanol_frames[:5]]
    kcal = []
    for atoms in images:
        copy = atoms.copy()
        copy.calc = SinglePointCalculator(copy, energy=atoms.get_potential_energy() * KCAL_PER_MOL_PER_EV,
                                          forces=atoms.get_forces() * KCAL_PER_MOL_PER_EV)
        kcal.append(copy)
    ase.io.write(tmp_path / "kcal.extxyz", kcal)
    back = read_frames(tmp_path / "kcal.extxyz", DataSpec(energy_unit="kcal/mol"))
    hartree = []
    for atoms in images:
        copy = atoms.copy()
        copy.positions = atoms.positions / ANGSTROM_PER_BOHR
        copy.calc = SinglePointCalculator(copy, energy=atoms.get_potential_energy() / EV_PER_HARTREE,
                                          forces=atoms.get_forces() / EV_PER_HARTREE * ANGSTROM_PER_BOHR)
        hartree.append(copy)
    ase.io.write(tmp_path / "au.extxyz", hartree)
    atomic = read_frames(tmp_path / "au.extxyz", DataSpec(energy_unit="Hartree", length_unit="Bohr"))
    for original, a, b in zip(ethanol_frames, back, atomic):
        assert a.energy == pytest.approx(original.energy, abs=1e-6)
        assert b.energy == pytest.approx(original.energy, abs=1e-6)
        np.testing.assert_allclose(a.forces, original.forces, atol=1e-6)
        np.testing.assert_allclose(b.forces, original.forces, atol=1e-6)
        np.testing.assert_allclose(b.positions, original.positions, atol=1e-6)


def test_md17_npz_layout_reads_with_kcal_per_mol(tmp_path, ethanol_frames):
    frames = ethanol_frames[:6]
    np.savez(tmp_path / "md17.npz", R=np.stack([f.positions for f in frames]), z=frames[0].numbers,
             E=np.array([[f.energy * KCAL_PER_MOL_PER_EV] for f in frames]),
             F=np.stack([f.forces * KCAL_PER_MOL_PER_EV for f in frames]))
    back = read_frames(tmp_path / "md17.npz", DataSpec(energy_unit="kcal/mol", index="1:4"))
    assert [f.index for f in back] == [1, 2, 3]
    assert back[0].energy == pytest.approx(frames[1].energy, abs=1e-6)
    np.testing.assert_allclose(back[2].forces, frames[3].forces, atol=1e-8)


def test_custom_keys_and_stress_from_periodic_frames(tmp_path):
    """REF_energy / REF_forces in info/arrays, and a virial turned into stress with the volume."""
    atoms = ase.build.bulk("Si", "diamond", 5.43, cubic=True)
    atoms.info["REF_energy"] = -43.0
    atoms.arrays["REF_forces"] = np.full((len(atoms), 3), 0.1)
    virial = np.diag([1.0, 2.0, 3.0])
    atoms.info["REF_virial"] = " ".join(map(str, virial.reshape(-1)))
    ase.io.write(tmp_path / "si.extxyz", atoms)
    (frame,) = read_frames(tmp_path / "si.extxyz", DataSpec(energy_key="REF_energy", forces_key="REF_forces",
                                                              stress_key="REF_virial"))
    assert frame.energy == -43.0 and frame.pbc.all()
    np.testing.assert_allclose(frame.forces, 0.1)
    np.testing.assert_allclose(frame.stress, -virial / atoms.get_volume())


def test_ase_database_is_read(tmp_path, ethanol_frames):
    from ase.db import connect

    with connect(tmp_path / "data.db") as db:
        for frame in ethanol_frames[:3]:
            db.write(frame.to_atoms())
    frames = read_frames(tmp_path / "data.db")
    assert len(frames) == 3 and frames[2].energy == pytest.approx(ethanol_frames[2].energy)


@pytest.mark.parametrize(
    "label, index, message",
    [("forces", 3, "frame 3: no forces label"), ("energy", 5, "frame 5: no energy label")],
)
def test_a_frame_without_a_label_is_named(tmp_path, ethanol_frames, label, index, message):
    path = write_extxyz(tmp_path / "bad.extxyz", ethanol_frames[:8], **{label: [index]})
    with pytest.raises(DataError, match=message) as caught:
        validate_frames(read_frames(path))
    assert "bad.extxyz" in str(caught.value)


def test_nan_positions_and_forces_name_frame_and_atom(ethanol_frames):
    frames = [f for f in read_frames(ETHANOL, DataSpec(index=":4"))]
    frames[2].forces[4, 1] = np.nan
    with pytest.raises(DataError, match=r"frame 2: forces contain NaN .*atom index 4"):
        validate_frames(frames)
    frames[2].forces[4, 1] = 0.0
    frames[1].positions[6, 0] = np.inf
    with pytest.raises(DataError, match=r"frame 1: positions contain NaN .*atom index 6"):
        validate_frames(frames)


def test_wrong_force_shape_in_npz_is_named(tmp_path, ethanol_frames):
    frames = ethanol_frames[:3]
    np.savez(tmp_path / "bad.npz", R=np.stack([f.positions for f in frames]), z=frames[0].numbers,
             E=np.array([f.energy for f in frames]), F=np.stack([f.forces[:8] for f in frames]))
    with pytest.raises(DataError, match=r"bad.npz: forces have shape \(3, 8, 3\); expected \(3, 9, 3\)"):
        read_frames(tmp_path / "bad.npz")


def test_unknown_element_names_element_and_model_species(ethanol_frames):
    message = r"frame 0: element\(s\) \['O'\] not known to the model \(species \['H', 'C'\]\)"
    with pytest.raises(DataError, match=message):
        validate_frames(ethanol_frames, atomic_numbers=[1, 6])


@pytest.mark.parametrize(
    "energy_factor, force_factor, hint",
    [
        (KCAL_PER_MOL_PER_EV, KCAL_PER_MOL_PER_EV, "23x too large"),  # kcal/mol data declared as eV
        (1e-3, 1e-3, "51x too small"),  # eV data declared as meV... read as 1000x too small
        (1.0, ANGSTROM_PER_BOHR / EV_PER_HARTREE, "inconsistent units"),  # forces in Hartree/Bohr, energies in eV
    ],
)
def test_labels_in_the_wrong_unit_are_caught(energy_factor, force_factor, hint):
    scaled = read_frames(ETHANOL)
    for frame in scaled:
        frame.forces = frame.forces * force_factor
        frame.energy = frame.energy * energy_factor
    with pytest.raises(DataError, match=hint):
        validate_frames(scaled)


def test_energies_in_another_unit_than_forces_are_caught():
    """Energies in Hartree while forces are in eV/Å: the work of the forces disagrees with ΔE by ~27x."""
    frames = read_frames(ETHANOL)
    pairs = similar_pairs(frames)
    assert len(pairs) >= 8
    assert 0.5 < energy_force_slope(frames, pairs) < 2.0  # consistent data: slope ~1
    for frame in frames:
        frame.energy = frame.energy / EV_PER_HARTREE
    with pytest.raises(DataError, match="inconsistent units"):
        validate_frames(frames)
    validate_frames(frames, check_units=False)  # the user can say the data really is like that


def test_missing_file_and_unreadable_file(tmp_path):
    with pytest.raises(DataError, match="nothere.extxyz: file not found"):
        read_frames(tmp_path / "nothere.extxyz")
    (tmp_path / "junk.extxyz").write_text("this is not\nan xyz file\n")
    with pytest.raises(DataError, match="junk.extxyz: ASE cannot read this file"):
        read_frames(tmp_path / "junk.extxyz")


def test_random_split_is_seeded_disjoint_and_complete():
    a = random_split(100, 0.1, 0.2, seed=3)
    assert a == random_split(100, 0.1, 0.2, seed=3) and a != random_split(100, 0.1, 0.2, seed=4)
    assert (len(a["train"]), len(a["val"]), len(a["test"])) == (70, 10, 20)
    assert sorted(a["train"] + a["val"] + a["test"]) == list(range(100))
    check_split(a, 100)
    with pytest.raises(ValueError, match="frame 5 is in both"):
        check_split({"train": [1, 5], "val": [5], "test": []}, 10)
    with pytest.raises(ValueError, match="outside 0..9"):
        check_split({"train": [12], "val": [], "test": []}, 10)


def test_index_files(tmp_path):
    (tmp_path / "train.txt").write_text("0 1, 2\n7\n")
    np.save(tmp_path / "val.npy", np.array([3, 4]))
    assert read_index_file(tmp_path / "train.txt") == [0, 1, 2, 7]
    assert read_index_file(tmp_path / "val.npy") == [3, 4]
    (tmp_path / "bad.txt").write_text("1 two 3")
    with pytest.raises(DataError, match="must hold integers"):
        read_index_file(tmp_path / "bad.txt")


def test_reference_energies_use_isolated_atoms_and_least_squares():
    """Synthetic energies E = sum n_s e_s + noise: least squares recovers e_s; isolated atoms fix theirs exactly."""
    rng = np.random.default_rng(0)
    truth = {1: -13.6, 6: -1030.0, 8: -2040.0}
    frames = []
    for k in range(30):
        numbers = rng.choice([1, 6, 8], size=rng.integers(3, 9))
        atoms = ase.Atoms(numbers=numbers, positions=rng.normal(size=(len(numbers), 3)) * 3)
        energy = sum(truth[int(z)] for z in numbers) + rng.normal(scale=1e-3)
        frames.append(read_frames_from_atoms(atoms, energy))
    isolated = read_frames_from_atoms(ase.Atoms("H", positions=[[0, 0, 0]]), -13.5)
    references, fixed = fit_energy_references(frames + [isolated], [1, 6, 8])
    assert fixed == [1] and references[0] == pytest.approx(-13.5)
    references, fixed = fit_energy_references(frames, [1, 6, 8])
    assert fixed == [] and references == pytest.approx([-13.6, -1030.0, -2040.0], abs=2e-3)


def read_frames_from_atoms(atoms, energy):
    from mlpot.data.frames import Frame

    return Frame(positions=atoms.positions.copy(), numbers=atoms.numbers.astype(np.int64), cell=np.zeros((3, 3)),
                 pbc=np.zeros(3, dtype=bool), energy=energy, forces=np.zeros((len(atoms), 3)))


def test_statistics_and_batches_of_the_ethanol_set(ethanol_frames):
    statistics = compute_statistics(ethanol_frames, [1, 6, 8], cutoff=5.0)
    assert statistics.avg_num_neighbors == pytest.approx(8.0)  # every atom of ethanol sees the other 8 within 5 Å
    assert 0.5 < statistics.force_rms < 2.0
    counts = np.array([6, 2, 1])
    mean_energy = np.mean([f.energy for f in ethanol_frames])
    assert counts @ np.array(statistics.energy_references) == pytest.approx(mean_energy, abs=1e-6)
    graphs = frames_to_graphs(ethanol_frames[:3], cutoff=5.0)
    table = torch.full((119,), -1, dtype=torch.long)
    table[torch.tensor([1, 6, 8])] = torch.arange(3)
    batch = collate(graphs, table, torch.float32, "cpu")
    assert batch.positions.shape == (27, 3) and batch.edge_index.shape == (2, 3 * 72)
    second = batch.edge_index[:, batch.edge_frame == 1]
    assert second.shape[1] == 72 and second.min() == 9 and second.max() == 17
    assert batch.atom_frame.tolist() == [0] * 9 + [1] * 9 + [2] * 9
    assert batch.positions.dtype == torch.float32 and batch.species.max() == 2


def test_inspect_reports_statistics_and_problems(ethanol_frames):
    frames = read_frames(ETHANOL, DataSpec(index=":20"))
    report = inspect_frames(frames)
    assert report["frames"] == 20 and report["elements"] == {"C": 40, "H": 120, "O": 20} and not report["problems"]
    frames[4].forces = None
    frames[9].energy = float("nan")
    report = inspect_frames(frames)
    assert report["frames_without_problems"] == 18
    assert any("frame 4: no forces" in p for p in report["problems"])
    assert any("frame 9: energy is nan" in p for p in report["problems"])


def test_gzipped_extxyz_reads_like_the_plain_file(tmp_path, ethanol_frames):
    import gzip

    plain = write_extxyz(tmp_path / "data.extxyz", ethanol_frames[:5])
    with open(plain, "rb") as source, gzip.open(tmp_path / "data.extxyz.gz", "wb") as target:
        target.write(source.read())
    frames = read_frames(tmp_path / "data.extxyz.gz", DataSpec(index="1:4"))
    assert [f.index for f in frames] == [1, 2, 3] and frames[0].energy == pytest.approx(ethanol_frames[1].energy)
    np.testing.assert_allclose(frames[2].forces, ethanol_frames[3].forces, atol=1e-7)


def _periodic_frame(edge_A: float) -> Frame:
    atoms = ase.build.bulk("Cu", "fcc", 3.6, cubic=True).repeat((2, 2, 2))
    atoms.set_cell(np.eye(3) * edge_A, scale_atoms=True)
    return Frame(positions=atoms.positions, numbers=atoms.numbers, cell=np.asarray(atoms.cell), pbc=np.ones(3, bool),
                 energy=-30.0, forces=np.zeros((len(atoms), 3)), source="box.extxyz", index=2)


def test_inspect_flags_cells_narrower_than_twice_the_cutoff():
    frame = _periodic_frame(9.0)
    report = inspect_frames([frame])
    assert report["cutoff_A"] == 5.0 and report["frames_without_problems"] == 0
    assert report["problems"] == [
        "box.extxyz, frame 2: periodic box too small for the cutoff: the width along axis 0 is 9.0 Å but must be at "
        "least 2 x cutoff = 10.0 Å (replicate the cell, e.g. ase.Atoms.repeat, or use a smaller cutoff); training "
        "with cutoff 5.0 Å refuses this frame (--cutoff sets it)"]
    assert not any("too small" in p for p in inspect_frames([frame], cutoff=4.0)["problems"])
    with pytest.raises(ValueError, match="cutoff must be a positive number of Å, got -1"):
        inspect_frames([frame], cutoff=-1)


def test_data_inspect_command_takes_the_cutoff(tmp_path, capsys):
    from mlpot import cli

    path = write_extxyz(tmp_path / "box.extxyz", [_periodic_frame(9.0)])
    assert cli.main(["data", "inspect", str(path)]) == 1
    assert "width along axis 0 is 9.0 Å but must be at least 2 x cutoff = 10.0 Å" in capsys.readouterr().out
    cli.main(["data", "inspect", str(path), "--cutoff", "4.5"])
    assert "too small" not in capsys.readouterr().out


def test_periodic_frame_with_a_zero_cell_is_named():
    frame = _periodic_frame(9.0)
    frame.cell = np.zeros((3, 3))
    with pytest.raises(DataError, match=r"box.extxyz, frame 2: periodic along axes \[0, 1, 2\] but the cell is zero"):
        validate_frame(frame)


def test_frame_without_atoms_is_named():
    frame = Frame(positions=np.zeros((0, 3)), numbers=np.zeros(0, np.int64), cell=np.zeros((3, 3)),
                  pbc=np.zeros(3, bool), energy=0.0, forces=np.zeros((0, 3)), source="empty.extxyz", index=0)
    with pytest.raises(DataError, match="empty.extxyz, frame 0: the frame has no atoms"):
        validate_frame(frame)


def test_element_only_in_test_frames_is_refused_by_name(ethanol_frames):
    frames = list(ethanol_frames[:10])
    water = Frame(positions=np.array([[0.0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]]), numbers=np.array([8, 1, 1]),
                  cell=np.zeros((3, 3)), pbc=np.zeros(3, bool), energy=-2080.0, forces=np.zeros((3, 3)),
                  source="extra.extxyz", index=7)
    sulfur = dataclasses.replace(water, numbers=np.array([16, 1, 1]), index=8)
    frames += [water, sulfur]
    require_species_in_training(frames, list(range(11)), [1, 6, 8])
    with pytest.raises(ValueError, match=r"^element\(s\) S \(first in extra.extxyz, frame 8\) occur in no training "
                                         r"frame"):
        require_species_in_training(frames, list(range(11)), [1, 6, 8, 16])
    with pytest.raises(ValueError, match=r"element\(s\) N \(in no frame\)"):
        require_species_in_training(frames, list(range(12)), [1, 7])
