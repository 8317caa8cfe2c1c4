"""Path metrics comparable with the literature: the 0.75-rad dihedral hit test (angles wrapped), the
barrier relative to the minimised start, and their place in the report."""

import math

import numpy as np
import pytest
import torch


def two_dihedral_frame(first_deg: float, second_deg: float) -> torch.Tensor:
    """8 atoms whose dihedrals (0, 1, 2, 3) and (4, 5, 6, 7) are the given angles (degrees), nm."""
    def quadruple(angle_deg, shift):
        angle = math.radians(angle_deg)
        return [[0.0, 0.1, shift], [0.0, 0.0, shift], [0.15, 0.0, shift],
                [0.15, 0.1 * math.cos(angle), shift + 0.1 * math.sin(angle)]]
    return torch.tensor(quadruple(first_deg, 0.0) + quadruple(second_deg, 1.0), dtype=torch.float64)


QUADRUPLES = ((0, 1, 2, 3), (4, 5, 6, 7))


def test_hand_made_frames_have_the_dihedrals_they_were_built_with():
    from mlpot.pips.geometry import dihedral_degrees

    frame = two_dihedral_frame(179.0, -60.0)
    angles = [float(dihedral_degrees(frame, quadruple)) for quadruple in QUADRUPLES]
    assert angles == pytest.approx([179.0, -60.0], abs=1e-9)


def test_wrapped_angle_difference_goes_the_short_way_round_the_circle():
    from mlpot.pips.geometry import wrapped_angle_difference_rad

    first = torch.tensor([179.0, -179.0, 0.0, 90.0, 10.0], dtype=torch.float64)
    second = torch.tensor([-179.0, 179.0, 360.0, -90.0, -20.0], dtype=torch.float64)
    expected = np.radians([2.0, 2.0, 0.0, 180.0, 30.0])
    np.testing.assert_allclose(wrapped_angle_difference_rad(first, second).numpy(), expected, atol=1e-12)


@pytest.mark.parametrize("frame_deg, hit", [
    ((-179.0, 0.0), True),      # φ = −179° against the target's 179°: 2° apart across the wrap
    ((150.0, 10.0), True),      # √(29² + 10²) = 30.7° = 0.535 rad
    ((137.5, 0.0), True),       # 41.5° = 0.724 rad, just inside 0.75 rad (42.97°)
    ((135.0, 0.0), False),      # 44° = 0.768 rad, just outside
    ((-150.0, 30.0), False),    # each within 0.75 rad of the target across the wrap (31°, 30°), the norm not: 43.1°
    ((0.0, 0.0), False),        # the far side of the circle
])
def test_literature_hit_is_a_075_rad_norm_of_wrapped_dihedral_differences(frame_deg, hit):
    from mlpot.pips.molecular.peptides import DihedralDistance

    target = two_dihedral_frame(179.0, 0.0)
    frames = two_dihedral_frame(*frame_deg)[None]
    assert DihedralDistance(dihedrals=QUADRUPLES).contains(frames, target).tolist() == [hit]


def test_literature_hit_of_alanine_uses_phi_psi_and_ignores_rotation_and_translation():
    from mlpot.pips.molecular.peptides import peptide_transition

    transition = peptide_transition("alanine-dipeptide")
    _, start_nm, target_nm = transition.load()
    assert transition.literature_basin.dihedrals == (transition.phi, transition.psi)
    assert transition.literature_circle_rad == 0.75
    rotation = torch.linalg.matrix_exp(torch.tensor([[0.0, -1.0, 0.3], [1.0, 0.0, -0.2], [-0.3, 0.2, 0.0]],
                                                    dtype=torch.float64))
    moved_target = torch.from_numpy(target_nm) @ rotation.T + torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    frames = torch.stack([torch.from_numpy(start_nm), moved_target])
    assert transition.in_literature_basin(frames).tolist() == [False, True]


@pytest.mark.parametrize("system", ["alanine-dipeptide", "alanine-dipeptide-c7eq", "polyproline", "chignolin"])
def test_every_transition_names_its_literature_test_and_it_separates_start_from_target(system):
    from mlpot.pips.molecular.peptides import peptide_transition

    transition = peptide_transition(system)
    _, start_nm, target_nm = transition.load()
    assert "0.75 rad" in transition.literature_criterion
    assert ("stand-in" in transition.literature_criterion) == (system in ("polyproline", "chignolin"))
    hits = transition.in_literature_basin(torch.from_numpy(np.stack([start_nm, target_nm])))
    assert hits.tolist() == [False, True]



def test_evaluated_paths_report_literature_thp_and_barriers_relative_to_the_minimised_start(one_thread):
    from mlpot.pips.molecular.trainer import MolecularTrainConfig, MolecularTrainer

    trainer = MolecularTrainer(MolecularTrainConfig(n_paths=2, n_steps=10, hidden=[8], iterations=1),
                               platform="Reference")
    evaluated = trainer.evaluate_control(lambda x, v, t: torch.zeros_like(x), 3, seed=2)
    metrics = evaluated.metrics
    # systems/README: the C5 minimum (PDB rounding)
    assert metrics["start_energy_kj_mol"] == pytest.approx(-87.00, abs=0.05)
    assert metrics["thp_literature"] == 0.0 and metrics["thp"] == 0.0  # 10 fs of unbiased MD stay in C5
    assert metrics["ets_literature_kj_mol"] != metrics["ets_literature_kj_mol"]  # NaN: no hit
    assert metrics["rmsd_std_A"] >= 0.0
    # make the first path "hit" by hand and recompute what evaluate does with it
    from mlpot.pips.metrics import transition_state_energy

    literature_hits = torch.tensor([True, False, False])
    ets = transition_state_energy(evaluated.energies_kj_mol, literature_hits)
    assert ets == pytest.approx(float(evaluated.energies_kj_mol[0].max()))
    assert ets - evaluated.start_energy_kj_mol > 0.0  # thermal paths climb above the minimum


def test_report_table_and_plots_carry_the_literature_columns(tmp_path):
    from mlpot.pips.molecular.report import PipsReport
    from mlpot.pips.molecular.report_plots import plot_dihedral_paths, plot_energy_profiles, plot_training_curves

    metrics = {"thp": 0.5, "thp_literature": 0.25, "rmsd_A": 1.0, "epd": 2.0, "ets_kj_mol": 10.0,
               "ets_relative_kj_mol": 97.0, "ets_literature_relative_kj_mol": float("nan")}
    table = PipsReport(metrics={"pips": metrics}, training={}, settings={}).table()
    assert "| method | THP | RMSD Å | THP lit. |" in table and "ETS − E₀ kJ/mol" in table
    assert "| PIPS | 0.50 | 1.00 | 0.25 | 2.00 | 10.0 | 97.0 | – |" in table
    angles = np.linspace(-170.0, 170.0, 12).reshape(2, 6)
    out = plot_dihedral_paths({"A": (angles, angles[::-1])}, (-150.0, 160.0), (175.0, -40.0), None,
                              tmp_path / "plane.png", target_circle_rad=0.75)
    assert out.read_bytes()[:4] == b"\x89PNG"
    energies, hits = np.array([[0.0, 5.0, 1.0], [0.0, 9.0, 2.0]]), np.array([True, True])
    out = plot_energy_profiles({"A": (energies, hits)}, 0.001, tmp_path / "energy.png", start_energy_kj_mol=-1.0)
    assert out.read_bytes()[:4] == b"\x89PNG"
    log = [{"iteration": 1, "ess": 2.0, "mean_cost": 1.0, "loss": 0.5, "thp": 0.5, "thp_literature": 0.25},
           {"iteration": 2, "ess": 3.0, "mean_cost": 0.8, "loss": 0.4, "thp": 0.75}]  # an older row without it
    assert plot_training_curves(log, 4, tmp_path / "training.png").read_bytes()[:4] == b"\x89PNG"
