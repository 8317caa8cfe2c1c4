"""The reference-data generator library (mlpot.datagen) and the pure parts of the alanine-dipeptide generator.

No quantum chemistry runs here: levels of theory are replaced by small Python stand-ins (a harmonic
energy), so what is pinned is the file handling (append-only extxyz, merging worker parts), the
resumable sampling loop, the finite-difference bookkeeping and the ``data`` extra's import errors.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
from pathlib import Path

import ase.io
import numpy as np
import pytest
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from mlpot import datagen
from mlpot.datagen import INDEX_KEY, TRAJECTORY_KEY

GENERATE_DATA = Path(__file__).resolve().parents[1] / "systems" / "alanine-dipeptide" / "generate_data.py"


def _frame(index: int, shift: float = 0.0, energy: float | None = None) -> Atoms:
    atoms = Atoms("OH2", positions=[[0.0, 0.0, 0.0], [0.96 + shift, 0.0, 0.0], [-0.24, 0.93, 0.0]])
    atoms.info[INDEX_KEY] = index
    if energy is not None:
        atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=np.zeros((3, 3)))
    return atoms


def _extxyz_bytes(frames: list[Atoms], tmp_path: Path) -> bytes:
    path = tmp_path / "scratch.extxyz"
    ase.io.write(path, frames, format="extxyz")
    return path.read_bytes()


class HarmonicLevel:
    """A stand-in level of theory: E = k/2 |x - x0|^2 (eV, Angstrom), labels every frame but those listed."""

    name = "harmonic"
    software = ("numpy",)

    def __init__(self, k: float = 2.0, fail_on: tuple[int, ...] = ()):
        self.k, self.fail_on, self.calls = k, fail_on, 0

    def energy(self, positions_A: np.ndarray) -> float:
        return 0.5 * self.k * float(np.sum(np.asarray(positions_A) ** 2))

    def label(self, symbols, positions_A):
        self.calls += 1
        if self.calls in self.fail_on:
            return None
        return datagen.Label(self.energy(positions_A), -self.k * np.asarray(positions_A), "")

    def settings(self) -> dict:
        return {"k": self.k}

    def fd_check_frame(self, symbols, positions_A, components, step_A):
        forces = -self.k * np.asarray(positions_A)
        rows = datagen.finite_difference_rows(symbols, positions_A, components, step_A, self.energy, {"": forces})
        return rows, forces


# --------------------------------------------------------------------------------------------
# append-only extxyz files


def test_complete_frames_splits_whole_frames_and_leaves_the_half_written_tail(tmp_path):
    data = _extxyz_bytes([_frame(0), _frame(1)], tmp_path)
    first_frame_end = data.index(b"\n3\n") + 1
    truncated = data[: len(data) - 10]

    frames, n_complete = datagen._complete_frames(data)
    assert len(frames) == 2 and n_complete == len(data) and frames[0] == data[:first_frame_end]
    frames, n_complete = datagen._complete_frames(truncated)
    assert len(frames) == 1 and n_complete == first_frame_end


def test_read_frames_of_a_missing_file_is_empty(tmp_path):
    assert datagen.read_frames(tmp_path / "absent.extxyz") == []


def test_read_frames_ignores_an_incomplete_last_frame(tmp_path):
    path = tmp_path / "candidates.extxyz"
    path.write_bytes(_extxyz_bytes([_frame(0), _frame(1)], tmp_path)[:-10])
    frames = datagen.read_frames(path)
    assert [a.info[INDEX_KEY] for a in frames] == [0]


@pytest.mark.parametrize("name", ["set.extxyz", "set.extxyz.gz"])
def test_write_frames_atomically_round_trips_positions_labels_and_info(tmp_path, name):
    path = tmp_path / name
    written = [_frame(i, shift=0.01 * i, energy=-10.0 - i) for i in range(3)]
    datagen.write_frames_atomically(path, written)
    read = datagen.read_frames(path)
    assert [a.info[INDEX_KEY] for a in read] == [0, 1, 2]
    assert np.allclose([a.positions for a in read], [a.positions for a in written])
    assert [a.get_potential_energy() for a in read] == [-10.0, -11.0, -12.0]
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]  # no temporary file left behind


def test_gzipped_dataset_bytes_do_not_depend_on_when_it_was_written(tmp_path):
    frames = [_frame(i, energy=-1.0) for i in range(2)]
    first, second = tmp_path / "a.extxyz.gz", tmp_path / "b.extxyz.gz"
    datagen.write_frames_atomically(first, frames)
    datagen.write_frames_atomically(second, frames)
    assert first.read_bytes() == second.read_bytes()


def test_append_only_file_cuts_off_a_half_written_frame_on_open(tmp_path):
    path = tmp_path / "candidates.extxyz"
    path.write_bytes(_extxyz_bytes([_frame(0), _frame(1)], tmp_path)[:-10])
    with datagen.AppendOnlyExtxyz(path) as out:
        out.append(_frame(2))
    assert [a.info[INDEX_KEY] for a in ase.io.read(path, index=":")] == [0, 2]


def test_append_only_file_refuses_to_cut_more_than_a_frame_of_unreadable_bytes(tmp_path):
    path = tmp_path / "candidates.extxyz"
    data = _extxyz_bytes([_frame(0)], tmp_path) + b"not a frame\n" * 10
    path.write_bytes(data)
    with pytest.raises(SystemExit, match="unreadable bytes"):
        with datagen.AppendOnlyExtxyz(path):
            pass
    assert path.read_bytes() == data


def test_second_writer_of_the_same_file_is_refused(tmp_path):
    path = tmp_path / "part.extxyz"
    with datagen.AppendOnlyExtxyz(path):
        with pytest.raises(SystemExit, match="locked"):
            with datagen.AppendOnlyExtxyz(path):
                pass


# --------------------------------------------------------------------------------------------
# labelled sets: worker parts merged by candidate index


def _labelled_set(tmp_path: Path, suffix: str = ".extxyz") -> datagen.LabelledSet:
    return datagen.LabelledSet(path=tmp_path / f"dft{suffix}", parts_dir=tmp_path / "parts", name="dft")


@pytest.mark.parametrize("suffix", [".extxyz", ".extxyz.gz"])
def test_merge_orders_frames_by_candidate_index_and_the_dataset_file_wins_over_parts(tmp_path, suffix):
    dataset = _labelled_set(tmp_path, suffix)
    datagen.write_frames_atomically(dataset.path, [_frame(3, energy=-3.0), _frame(1, energy=-1.0)])
    with datagen.AppendOnlyExtxyz(dataset.part_path(1)) as out:
        for index, energy in ((4, -4.0), (1, 99.0), (0, 0.0)):
            out.append(_frame(index, energy=energy))
    with datagen.AppendOnlyExtxyz(dataset.part_path(0)) as out:
        out.append(_frame(2, energy=-2.0))
    dataset.merge()
    merged = datagen.read_frames(dataset.path)
    assert [a.info[INDEX_KEY] for a in merged] == [0, 1, 2, 3, 4]
    assert [a.get_potential_energy() for a in merged] == [0.0, -1.0, -2.0, -3.0, -4.0]
    assert dataset.part_path(1).exists()  # parts are left as they are


def test_merge_with_nothing_labelled_writes_no_file(tmp_path):
    dataset = _labelled_set(tmp_path)
    dataset.merge()
    assert not dataset.path.exists()


def test_label_skips_labelled_candidates_and_unconverged_frames_then_merges(tmp_path):
    dataset = _labelled_set(tmp_path)
    datagen.write_frames_atomically(dataset.path, [_frame(0, energy=7.0)])
    share = [_frame(i, shift=0.01 * i) for i in range(4)]
    level = HarmonicLevel(fail_on=(2,))  # the second frame it is asked for (candidate 2) does not converge
    dataset.label(share, level, worker=0, workers=1, extra_info={"level_of_theory": level.name}, describe=str)
    labelled = datagen.read_frames(dataset.path)
    assert [a.info[INDEX_KEY] for a in labelled] == [0, 1, 3]
    assert labelled[0].get_potential_energy() == 7.0  # candidate 0 was not labelled again
    assert labelled[1].info["level_of_theory"] == "harmonic"
    assert np.allclose(labelled[2].get_forces(), -2.0 * share[3].positions)


def test_label_rejects_a_worker_number_outside_the_workers(tmp_path):
    with pytest.raises(SystemExit, match="worker 2 of 2"):
        _labelled_set(tmp_path).label([], HarmonicLevel(), worker=2, workers=2, extra_info={}, describe=str)


# --------------------------------------------------------------------------------------------
# resumable sampling


def _sample(path: Path, n_frames: int, seed: int = 0, offset: float = 0.0) -> int:
    def run(trajectory):
        for frame in range(n_frames):
            yield frame, np.full((2, 3), trajectory * 10.0 + frame + offset)

    return datagen.append_trajectories(
        path,
        ["H", "H"],
        n_trajectories=2,
        frames_per_trajectory=lambda trajectory: n_frames,
        expected_info=lambda trajectory, frame: {"seed": seed, "step": frame},
        run=run,
        describe=lambda trajectory: f"run {trajectory}",
        measure=lambda positions_A: {"x0": float(positions_A[0, 0])},
    )


def test_sampling_resumes_a_partly_written_trajectory_without_duplicating_frames(tmp_path):
    path = tmp_path / "candidates.extxyz"
    assert _sample(path, n_frames=2) == 4
    data = path.read_bytes()
    path.write_bytes(data[: data.index(b"\n2\n", len(data) // 2) + 1])  # trajectory 1 lost its last frame
    assert len(datagen.read_frames(path)) == 3
    assert _sample(path, n_frames=2) == 4
    frames = datagen.read_frames(path)
    assert [(a.info[TRAJECTORY_KEY], a.info["step"]) for a in frames] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert [a.info[INDEX_KEY] for a in frames] == [0, 1, 2, 3]
    assert [a.info["x0"] for a in frames] == [0.0, 1.0, 10.0, 11.0]


def test_sampling_refuses_a_file_made_with_other_options(tmp_path):
    path = tmp_path / "candidates.extxyz"
    _sample(path, n_frames=1, seed=0)
    with pytest.raises(SystemExit, match="other sampling options"):
        _sample(path, n_frames=1, seed=1)


# --------------------------------------------------------------------------------------------
# finite-difference checks


def test_finite_differences_of_a_harmonic_energy_match_its_forces():
    level = HarmonicLevel(k=3.0)
    positions_A = np.array([[0.1, -0.2, 0.3], [1.0, 0.5, -0.4]])
    rows, forces = level.fd_check_frame(["H", "O"], positions_A, [5, 0], step_A=1e-3)
    assert [(row["atom"], row["element"], row["axis"]) for row in rows] == [(0, "H", "x"), (1, "O", "z")]
    assert rows[1]["analytic_force_eV_per_A"] == pytest.approx(forces[1, 2])
    assert max(abs(row["error_eV_per_A"]) for row in rows) < 1e-9


def test_fd_check_writes_the_largest_error_of_every_analytic_force(tmp_path):
    frames = [
        {"components": [{"error_eV_per_A": 1e-4, "error_no_grid_eV_per_A": -3e-3}]},
        {"components": [{"error_eV_per_A": -2e-4, "error_no_grid_eV_per_A": 1e-3}]},
    ]
    result = datagen.write_fd_check(tmp_path / "fd.json", HarmonicLevel(), 1e-3, frames)
    assert result["max_abs_error_eV_per_A"] == 2e-4
    assert result["max_abs_error_no_grid_eV_per_A"] == 3e-3
    assert result["software"].startswith("numpy ")
    assert (tmp_path / "fd.json").read_text().startswith("{")


def test_fd_check_options_come_from_the_shared_command_line_arguments():
    parser = argparse.ArgumentParser()
    datagen.add_fd_check_arguments(parser)
    assert datagen.FDCheckOptions.from_args(parser.parse_args([])) == datagen.FDCheckOptions()
    options = datagen.FDCheckOptions.from_args(parser.parse_args(["--components", "2", "--step", "0.01"]))
    assert (options.components_per_frame, options.step_A) == (2, 0.01)


# --------------------------------------------------------------------------------------------
# the data extra


def test_module_imports_without_pyscf_and_tblite():
    code = "import sys; sys.modules['pyscf'] = sys.modules['tblite'] = None; import mlpot.datagen"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_missing_data_extra_is_an_import_error_that_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyscf", None)
    monkeypatch.setitem(sys.modules, "tblite", None)
    with pytest.raises(ImportError, match=r"pip install mlpot\[data\]"):
        datagen.PySCFLevel("B3LYP", "b3lyp", "6-31g*", "cc-pvdz-jkfit").label(["H", "H"], np.eye(2, 3))
    with pytest.raises(ImportError, match=r"tblite is needed .* pip install mlpot\[data\]"):
        datagen.GFN2xTB().label(["H", "H"], np.eye(2, 3))  # not swallowed as a failed frame


def test_software_versions_of_a_missing_package_names_the_data_extra():
    assert datagen.software_versions("numpy") == f"numpy {np.__version__}"
    with pytest.raises(ImportError, match=r"not-a-package is needed .* mlpot\[data\]"):
        datagen.software_versions("numpy", "not-a-package")


# --------------------------------------------------------------------------------------------
# the alanine-dipeptide generator's pure parts: (phi, psi), regions, the DFT order


@pytest.fixture(scope="module")
def generate_data():
    spec = importlib.util.spec_from_file_location("alanine_dipeptide_generate_data", GENERATE_DATA)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[spec.name]


def test_dihedral_has_the_iupac_sign(generate_data):
    positions = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 1.0, 1.0]])
    assert generate_data.dihedral_deg(positions, (0, 1, 2, 3)) == pytest.approx(-90.0)
    assert generate_data.dihedral_deg(positions * [1, 1, -1], (0, 1, 2, 3)) == pytest.approx(90.0)


@pytest.mark.parametrize(
    ("phi", "psi", "name"),
    [(-150.0, 150.0, "C5"), (-150.0, -170.0, "C5"), (-80.0, 70.0, "C7eq"), (-70.0, -40.0, "alphaR"),
     (70.0, -60.0, "C7ax"), (60.0, 40.0, "alphaL"), (0.0, 0.0, "barrier/other"), (150.0, 150.0, "barrier/other")],
)
def test_ramachandran_regions_of_phi_psi(generate_data, phi, psi, name):
    assert generate_data.region(phi, psi) == name


def test_farthest_point_order_starts_at_row_zero_and_measures_angles_periodically(generate_data):
    phi_psi = np.array([[170.0, 0.0], [-170.0, 0.0], [0.0, 0.0], [10.0, 0.0]])
    # row 1 is only 20 degrees from row 0 (across +-180), so row 2 (170 degrees away) comes first
    assert generate_data.farthest_point_order(phi_psi, 4) == [0, 2, 1, 3]
    assert generate_data.farthest_point_order(phi_psi, 2) == [0, 2]
    assert generate_data.farthest_point_order(phi_psi, 10) == [0, 2, 1, 3]


def test_dft_order_is_prefix_stable_and_interleaves_samplers_by_size(generate_data):
    rng = np.random.default_rng(0)
    frames = []
    for index, sampler in enumerate(["metad"] * 12 + ["xtb"] * 4):
        atoms = Atoms("H")
        phi, psi = rng.uniform(-180.0, 180.0, size=2)
        atoms.info.update({INDEX_KEY: index, "sampler": sampler, "phi_deg": phi, "psi_deg": psi})
        frames.append(atoms)
    order = [a.info[INDEX_KEY] for a in generate_data.dft_order(frames, 8)]
    assert order[:4] == [a.info[INDEX_KEY] for a in generate_data.dft_order(frames, 4)]
    assert sum(frames[i].info["sampler"] == "xtb" for i in order) == 2  # 8 frames, a quarter from the smaller sampler
    assert len(set(order)) == 8
