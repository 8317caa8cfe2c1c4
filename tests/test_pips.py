"""PIPS core: Girsanov weights, PICE surrogate gradient, weights/ESS, invariant terminal costs and
policies, toy systems, the toy trainer (short training, channel usage, exact resume)."""

from __future__ import annotations

import math
import re
import signal

import numpy as np
import openmm
import pytest
import torch

from mlpot.pips.cost import aligned_squared_deviation, pairwise_distance_error, path_cost
from mlpot.pips.dynamics import LangevinSettings, control_weight
from mlpot.pips.geometry import aligned_rmsd
from mlpot.pips.gradients import negative_gradient
from mlpot.pips.loss import pice_surrogate_loss, pice_surrogate_of_work, policy_controls, policy_work
from mlpot.pips.molecular.policy import AlignedForcePolicy, DistanceEnergyPolicy, TargetGuidedPolicy
from mlpot.pips.toy.dynamics import controlled_langevin_rollout, maxwell_boltzmann_velocities
from mlpot.pips.toy.policy import MirrorSymmetrizedPolicy, ToyEnergyPolicy, ToyForcePolicy
from mlpot.pips.toy.systems import TOY_SYSTEMS, double_well_channel, toy_system
from mlpot.pips.toy.trainer import ToyTrainConfig, ToyTrainer
from mlpot.pips.weights import effective_sample_size, importance_weights, tempered_weights


def random_rotation(generator: torch.Generator) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=generator, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))
    return q if torch.linalg.det(q) > 0 else -q


def randomised(policy: torch.nn.Module, seed: int) -> torch.nn.Module:
    """The policy with every parameter redrawn (its last layer starts at zero, which hides errors)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in policy.parameters():
            parameter.copy_(0.5 * torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype))
    return policy


def small_rollout(policy, n_paths=3, n_steps=4, seed=0):
    system = toy_system("double-well")
    settings = LangevinSettings(system.timestep, system.friction, system.kT)
    generator = torch.Generator().manual_seed(seed)
    start = system.start_tensor().expand(n_paths, 2).clone()
    velocities = maxwell_boltzmann_velocities(n_paths, torch.Size([2]), torch.tensor(1.0), system.kT, generator)
    return controlled_langevin_rollout(system.forces, policy, start, velocities, settings, n_steps, generator), settings


# ---------------------------------------------------------------------------------- the estimator
@pytest.mark.parametrize("policy_type", [ToyForcePolicy, ToyEnergyPolicy])
def test_surrogate_gradient_equals_per_sample_formula(policy_type):
    torch.manual_seed(0)
    policy = randomised(policy_type(hidden=(6,)).double(), seed=1)
    rollout, settings = small_rollout(policy)
    weights = torch.softmax(torch.tensor([0.3, -1.2, 0.5], dtype=torch.float64), dim=0)
    lam = 0.7
    weight_R = control_weight(settings, torch.tensor(1.0, dtype=torch.float64), lam)

    policy.zero_grad()
    pice_surrogate_loss(policy_controls(policy, rollout), rollout.noises, weights, weight_R, lam).backward()
    # (an energy policy's last bias does not change u = −∂E/∂x: no gradient reaches it)
    surrogate = [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in policy.parameters()]

    # the PICE formula: Σ_n w_n Σ_s (∂u_θ(x_{n,s}, t_s)/∂θ)ᵀ (−R dW_{n,s} / λ), one vector–Jacobian product each
    per_sample = [torch.zeros_like(p) for p in policy.parameters()]
    for n in range(rollout.n_paths):
        for s in range(rollout.n_steps):
            with torch.enable_grad():
                u = policy(rollout.control_positions[n, s][None], rollout.control_velocities[n, s][None],
                           (rollout.control_times[s] / rollout.duration)[None])
                grads = torch.autograd.grad(u, list(policy.parameters()),
                                            grad_outputs=(-weights[n] * weight_R * rollout.noises[n, s] / lam)[None],
                                            allow_unused=True)
            for total, grad in zip(per_sample, grads):
                if grad is not None:
                    total += grad
    for a, b in zip(surrogate, per_sample):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-13)


def test_recomputed_controls_equal_the_applied_ones():
    policy = randomised(ToyForcePolicy(hidden=(8,)).double(), seed=2)
    rollout, _ = small_rollout(policy, n_paths=4, n_steps=10)
    torch.testing.assert_close(policy_controls(policy, rollout).detach(), rollout.controls, rtol=0, atol=1e-14)


def test_baseline_subtracts_the_uniform_weights():
    policy = randomised(ToyForcePolicy(hidden=(6,)).double(), seed=3)
    rollout, _ = small_rollout(policy)
    weights = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    controls = policy_controls(policy, rollout)
    with_baseline = pice_surrogate_loss(controls, rollout.noises, weights, 2.0, 0.5, baseline=True)
    by_hand = pice_surrogate_loss(controls, rollout.noises, weights - 1 / 3, 2.0, 0.5)
    torch.testing.assert_close(with_baseline, by_hand)


def test_girsanov_weights_recover_the_uncontrolled_average():
    """Free particle pushed by a constant control: exp(−S) (φ = 0) reweights the controlled paths to
    the uncontrolled ones, so the weighted mean displacement is the uncontrolled one (zero)."""
    n_paths, n_steps = 20000, 50
    settings = LangevinSettings(timestep=0.01, friction=1.0, kT=1.0, controlled_noise_fraction=0.7)
    mass = torch.tensor(2.0, dtype=torch.float64)
    generator = torch.Generator().manual_seed(4)
    start = torch.zeros(n_paths, 1, dtype=torch.float64)
    velocities = maxwell_boltzmann_velocities(n_paths, torch.Size([1]), mass, settings.kT, generator)
    rollout = controlled_langevin_rollout(torch.zeros_like, lambda x, v, t: torch.full_like(x, 3.0), start, velocities,
                                          settings, n_steps, generator, mass)
    lam = 0.37  # cancels: R = λ/ν
    cost = path_cost(torch.zeros(n_paths, dtype=torch.float64), rollout.controls, rollout.noises, rollout.timestep,
                     control_weight(settings, mass, lam), lam)
    weights = importance_weights(cost.total)
    displacement = rollout.final_positions[:, 0]
    spread = float(displacement.std()) / math.sqrt(effective_sample_size(weights).count)
    assert float(displacement.mean()) > 10 * spread  # the control really moved the paths
    assert abs(float((weights * displacement).sum())) < 4 * spread


def test_noise_term_of_the_path_cost_is_signed():
    controls = torch.ones(2, 3, 1, dtype=torch.float64)
    noises = torch.tensor([0.1, -0.2, 0.3], dtype=torch.float64).reshape(1, 3, 1).repeat(2, 1, 1)
    noises[1] *= -1
    cost = path_cost(torch.zeros(2, dtype=torch.float64), controls, noises, 0.5, 2.0, 4.0)
    torch.testing.assert_close(cost.noise, torch.tensor([0.1, -0.1], dtype=torch.float64))
    torch.testing.assert_close(cost.control, torch.full((2,), 0.5 * 0.5 * 2.0 * 3 / 4.0, dtype=torch.float64))


def test_uncontrolled_dynamics_keeps_the_temperature_whatever_the_noise_split():
    """BAOAB in a harmonic well: ⟨m v²⟩ = kT and ⟨k x²⟩ = kT with the noise split between the channels."""
    for fraction in (1.0, 0.4):
        settings = LangevinSettings(timestep=0.05, friction=2.0, kT=0.5, controlled_noise_fraction=fraction)
        generator = torch.Generator().manual_seed(5)
        start = torch.zeros(4000, 1, dtype=torch.float64)
        rollout = controlled_langevin_rollout(lambda x: -3.0 * x, lambda x, v, t: torch.zeros_like(x), start,
                                              torch.zeros_like(start), settings, 400, generator, 1.5)
        assert abs(float((1.5 * rollout.final_velocities ** 2).mean()) / 0.5 - 1) < 0.08
        assert abs(float((3.0 * rollout.final_positions ** 2).mean()) / 0.5 - 1) < 0.08


# ---------------------------------------------------------------------------------- weights and ESS
def test_equal_costs_give_equal_weights_and_full_ess():
    weights = importance_weights(torch.full((16,), 123.4, dtype=torch.float64))
    torch.testing.assert_close(weights.sum(), torch.tensor(1.0, dtype=torch.float64))
    torch.testing.assert_close(weights, torch.full((16,), 1 / 16, dtype=torch.float64))
    ess = effective_sample_size(weights)
    assert ess.count == pytest.approx(16) and ess.fraction == pytest.approx(1.0)


def test_one_dominant_path_gives_ess_one():
    cost = torch.tensor([1000.0, 1200.0, 1500.0, 1e5], dtype=torch.float64)  # would overflow a naive exp(−S)
    weights = importance_weights(cost)
    assert torch.isfinite(weights).all() and float(weights.sum()) == pytest.approx(1.0)
    assert effective_sample_size(weights).count == pytest.approx(1.0)
    gap = torch.tensor([0.0, 2.0, 4.0], dtype=torch.float64)
    counts = [effective_sample_size(importance_weights(gap * scale)).count for scale in (0.0, 1.0, 3.0, 10.0)]
    assert counts[0] == pytest.approx(3.0) and all(a > b for a, b in zip(counts, counts[1:]))
    assert counts[-1] == pytest.approx(1.0, abs=1e-6)


def test_blown_up_paths_get_zero_weight():
    weights = importance_weights(torch.tensor([1.0, float("nan"), 2.0, float("inf")], dtype=torch.float64))
    assert weights[1] == 0 and weights[3] == 0 and float(weights.sum()) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="every rollout blew up"):
        importance_weights(torch.tensor([float("nan")] * 3))


def test_finite_paths_drops_a_path_with_nan_or_inf_anywhere_and_subset_of_all_is_the_rollout():
    from mlpot.pips.dynamics import Rollout

    n_paths, n_steps, dof = 4, 3, (2, 3)
    generator = torch.Generator().manual_seed(0)
    field = lambda *shape: torch.randn(*shape, generator=generator, dtype=torch.float64)  # noqa: E731
    rollout = Rollout(positions=field(n_paths, n_steps + 1, *dof), control_positions=field(n_paths, n_steps, *dof),
                      control_velocities=field(n_paths, n_steps, *dof), control_times=torch.arange(n_steps) * 0.1,
                      controls=field(n_paths, n_steps, *dof), noises=field(n_paths, n_steps, *dof),
                      final_velocities=field(n_paths, *dof), timestep=0.1)
    rollout.controls[1, 2, 0, 1] = float("nan")
    rollout.positions[2, 0, 1, 2] = float("inf")
    rollout.noises[3, 1, 1, 0] = -float("inf")
    assert rollout.finite_paths().tolist() == [True, False, False, False]
    assert rollout.subset(torch.ones(n_paths, dtype=torch.bool)) is rollout
    kept = rollout.subset(torch.tensor([True, False, True, False]))
    assert kept.n_paths == 2 and torch.equal(kept.controls[1], rollout.controls[2])


def test_tempering_reaches_the_ess_floor_and_leaves_good_weights_alone():
    cost = torch.tensor([0.0, 5.0, 9.0, 20.0, 30.0, 31.0, 50.0, 80.0], dtype=torch.float64)
    tempered = tempered_weights(cost, 0.5)
    assert tempered.temperature > 1 and effective_sample_size(tempered.weights).count == pytest.approx(4.0, rel=1e-6)
    untouched = tempered_weights(torch.zeros(8, dtype=torch.float64), 0.5)
    assert untouched.temperature == 1.0


# ---------------------------------------------------------------------------------- invariance
def test_terminal_costs_invariant_under_rotation_and_translation():
    generator = torch.Generator().manual_seed(6)
    target = torch.randn(10, 3, generator=generator, dtype=torch.float64) * 3
    final = target + 0.3 * torch.randn(5, 10, 3, generator=generator, dtype=torch.float64)
    moved = torch.stack([frame @ random_rotation(generator).T
                         + torch.randn(3, generator=generator, dtype=torch.float64) * 10 for frame in final])
    for terminal_cost in (pairwise_distance_error, aligned_squared_deviation):
        torch.testing.assert_close(terminal_cost(moved, target), terminal_cost(final, target), rtol=1e-9, atol=1e-12)
        assert (terminal_cost(final, target) > 0).all()
        moved_target = (target @ random_rotation(generator).T + 4.0)[None]
        assert float(terminal_cost(moved_target, target)[0]) < 1e-20


def test_aligned_rmsd_of_a_displaced_copy_is_the_displacement():
    generator = torch.Generator().manual_seed(7)
    reference = torch.randn(12, 3, generator=generator, dtype=torch.float64)
    shifted = reference.clone()
    shifted[0, 0] += 1.0  # one atom moved by 1: the RMSD after superposition is below 1/sqrt(12)
    moved = shifted @ random_rotation(generator).T - 2.0
    rmsd = float(aligned_rmsd(moved, reference))
    assert 0 < rmsd < 1 / math.sqrt(12) + 1e-12


@pytest.mark.parametrize("make_policy", [
    lambda reference: DistanceEnergyPolicy(8, hidden=(16,)),
    lambda reference: AlignedForcePolicy(reference, hidden=(16,)),
    lambda reference: TargetGuidedPolicy(reference, [0, 2, 3, 5, 7], AlignedForcePolicy(reference, hidden=(16,)),
                                         strength=50.0, n_knots=3),
])
def test_molecular_policies_are_equivariant_with_no_net_force(make_policy):
    generator = torch.Generator().manual_seed(8)
    reference = torch.randn(8, 3, generator=generator, dtype=torch.float64) * 2
    policy = randomised(make_policy(reference).double(), seed=9)
    positions = reference + 0.3 * torch.randn(3, 8, 3, generator=generator, dtype=torch.float64)
    velocities = torch.randn(3, 8, 3, generator=generator, dtype=torch.float64)
    time_fraction = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    rotation = random_rotation(generator)
    force = policy(positions, velocities, time_fraction)
    force_moved = policy(positions @ rotation.T + 5.0, velocities @ rotation.T, time_fraction)
    torch.testing.assert_close(force_moved, force @ rotation.T, rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(force.sum(dim=1), torch.zeros(3, 3, dtype=torch.float64), rtol=0, atol=1e-10)
    assert float(force.detach().abs().max()) > 1e-3


def test_untrained_guided_policy_is_steered_md_down_the_aligned_rmsd():
    generator = torch.Generator().manual_seed(12)
    target = torch.randn(6, 3, generator=generator, dtype=torch.float64) * 2
    heavy = [0, 1, 3, 4]
    policy = TargetGuidedPolicy(target, heavy, DistanceEnergyPolicy(6, hidden=(8,)).double(), strength=30.0, n_knots=4)
    positions = (target + 0.4 * torch.randn(2, 6, 3, generator=generator, dtype=torch.float64)).requires_grad_(True)
    (gradient,) = torch.autograd.grad((aligned_rmsd(positions[:, heavy], target[heavy]) ** 2).sum(), positions)
    force = policy(positions.detach(), torch.zeros_like(positions), torch.tensor([0.1, 0.8], dtype=torch.float64))
    torch.testing.assert_close(force, -30.0 * gradient)
    assert float(force[:, [2, 5]].detach().abs().max()) == 0.0  # only the guided atoms are pulled
    torque = torch.linalg.cross(positions.detach() - positions.detach().mean(dim=1, keepdim=True), force).sum(dim=1)
    torch.testing.assert_close(torque, torch.zeros(2, 3, dtype=torch.float64), rtol=0, atol=1e-10)
    # the strength is interpolated linearly between its knots (here: 0 at t/T = 1/3, softplus-scaled)
    with torch.no_grad():
        policy.log_strength_knots[1] = 2.0
    expected = 30.0 * torch.nn.functional.softplus(torch.tensor([1.0, 2.0, 0.0])) / math.log(2.0)
    torch.testing.assert_close(policy.pull_strength(torch.tensor([1 / 6, 1 / 3, 1.0], dtype=torch.float64)),
                               expected.double())


def test_distance_energy_policy_exerts_no_net_torque():
    generator = torch.Generator().manual_seed(10)
    policy = randomised(DistanceEnergyPolicy(6, hidden=(16,)).double(), seed=11)
    positions = torch.randn(2, 6, 3, generator=generator, dtype=torch.float64) * 2
    force = policy(positions, torch.zeros_like(positions), torch.tensor([0.2, 0.9], dtype=torch.float64))
    torque = torch.linalg.cross(positions - positions.mean(dim=1, keepdim=True), force).sum(dim=1)
    torch.testing.assert_close(torque, torch.zeros(2, 3, dtype=torch.float64), rtol=0, atol=1e-10)


def test_mirror_symmetrised_policy_is_equivariant():
    policy = MirrorSymmetrizedPolicy(randomised(ToyForcePolicy(hidden=(8,)).double(), seed=12), (1.0, -1.0))
    generator = torch.Generator().manual_seed(13)
    x = torch.randn(5, 2, generator=generator, dtype=torch.float64)
    v = torch.randn(5, 2, generator=generator, dtype=torch.float64)
    t = torch.rand(5, generator=generator, dtype=torch.float64)
    mirror = torch.tensor([1.0, -1.0], dtype=torch.float64)
    torch.testing.assert_close(policy(x * mirror, v * mirror, t), policy(x, v, t) * mirror)


# ---------------------------------------------------------------------------------- toy systems
@pytest.mark.parametrize("name", sorted(TOY_SYSTEMS))
def test_toy_gradients_match_autograd_and_vanish_at_the_end_states(name):
    system = toy_system(name)
    points = torch.randn(50, 2, generator=torch.Generator().manual_seed(14), dtype=torch.float64)
    torch.testing.assert_close(system.forces(points), negative_gradient(system.potential, points).detach(),
                               rtol=1e-9, atol=1e-9)
    for state in (system.start_tensor(), system.target_tensor()):
        assert float(system.forces(state).norm()) < 2e-3 * float(system.forces(points).norm(dim=1).mean())


def test_double_well_end_states_and_saddles():
    system = toy_system("double-well")
    points = torch.tensor([system.start, system.target, (0.0, 1.0), (0.0, -1.0)], dtype=torch.float64)
    energies = system.potential(points)
    torch.testing.assert_close(energies, torch.tensor([-1 / 12, -1 / 12, 1.0, 1.0], dtype=torch.float64))


def test_double_well_channel_is_the_side_of_the_last_crossing():
    up = torch.tensor([[-1.0, 0.0], [-0.1, 0.9], [0.1, 0.9], [1.0, 0.0]])
    fell_back_then_down = torch.tensor([[-1.0, 0.0], [0.1, 0.9], [-0.1, 0.0], [0.1, -0.9]])
    stayed = torch.tensor([[-1.0, 0.0], [-0.5, 0.5], [-0.9, 0.0], [-1.0, 0.1]])
    channels = double_well_channel(torch.stack([up, fell_back_then_down, stayed]))
    assert channels.tolist() == [1, -1, 0]


# ---------------------------------------------------------------------------------- trainer
def tiny_config(**changes) -> ToyTrainConfig:
    settings = dict(n_paths=8, n_steps=30, hidden=[16], lam=0.01, seed=3, iterations=3, min_ess_fraction=0.2,
                    symmetric=True)
    settings.update(changes)
    return ToyTrainConfig(**settings)


def test_resume_takes_the_same_next_iteration(tmp_path):
    uninterrupted = ToyTrainer(tiny_config())
    for _ in range(3):
        uninterrupted.step()
    first = ToyTrainer(tiny_config(), out=tmp_path)
    first.step()
    first.step()
    resumed = ToyTrainer(tiny_config(), out=tmp_path, resume=True)
    assert resumed.iteration == 2 and len(resumed.log) == 2
    row = resumed.step()
    expected = uninterrupted.log[-1]
    for key in row:
        if "seconds" not in key:
            assert row[key] == pytest.approx(expected[key], rel=1e-12, abs=1e-12, nan_ok=True), key
    for a, b in zip(resumed.policy.parameters(), uninterrupted.policy.parameters()):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match=r"made with other settings, so it cannot be continued: lam: was 0.01, "
                                         r"now 0.5; n_paths: was 8, now 4$"):
        ToyTrainer(tiny_config(lam=0.5, n_paths=4), out=tmp_path, resume=True)
    with pytest.raises(FileExistsError,
                       match=f"{tmp_path} already holds a PIPS run .*--resume or choose another --out"):
        ToyTrainer(tiny_config(), out=tmp_path)  # never overwritten


def test_a_stop_requested_during_an_iteration_ends_the_run_after_it_and_resume_is_exact(tmp_path):
    from mlpot.pips.trainer import PipsInterrupted

    uninterrupted = ToyTrainer(tiny_config())
    uninterrupted.run()
    stopped = ToyTrainer(tiny_config(), out=tmp_path)
    real_step = stopped.step

    def step_with_stop_request():
        stopped.stops.request()  # as a SIGTERM during the rollout would
        return real_step()

    stopped.step = step_with_stop_request
    with pytest.raises(PipsInterrupted, match="holds every finished iteration"):
        stopped.run()
    assert stopped.iteration == 1
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)  # tensors and plain types only
    assert state["kind"] == "PIPS" and state["iteration"] == 1
    resumed = ToyTrainer(tiny_config(), out=tmp_path, resume=True)
    resumed.run()
    for a, b in zip(resumed.policy.parameters(), uninterrupted.policy.parameters()):
        assert torch.equal(a, b)


def test_iteration_where_every_path_blew_up_is_skipped_not_fatal(tmp_path):
    trainer = ToyTrainer(tiny_config(iterations=3), out=tmp_path)
    real_rollout = trainer.rollout

    def exploded(*args, **kwargs):
        rollout, entries = real_rollout(*args, **kwargs)
        rollout.positions[:, -1] = torch.nan
        return rollout, entries

    before = [p.detach().clone() for p in trainer.policy.parameters()]
    trainer.rollout = exploded
    with pytest.warns(RuntimeWarning, match="all 8 paths blew up"):
        row = trainer.step()
    assert row["skipped"] == 1 and row["dropped_paths"] == 8 and row["thp"] == 0.0
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.policy.parameters()))
    del trainer.rollout  # back to the real one: training goes on from the saved checkpoint
    resumed = ToyTrainer(tiny_config(iterations=3), out=tmp_path, resume=True)
    assert resumed.iteration == 1
    assert "skipped" not in resumed.step()


def test_trainer_logs_ess_every_iteration(tmp_path):
    trainer = ToyTrainer(tiny_config(iterations=2), out=tmp_path)
    log = trainer.run()
    assert [row["iteration"] for row in log] == [1, 2]
    for row in log:
        assert 1.0 <= row["ess"] <= 8.0 and row["ess_fraction"] == pytest.approx(row["ess"] / 8)
        assert row["dropped_paths"] == 0
    assert (tmp_path / "checkpoint.pt").exists()



def test_short_double_well_training_starts_crossing_through_both_channels(one_thread):
    trainer = ToyTrainer(ToyTrainConfig(iterations=50, seed=0))
    trainer.run()
    summary = trainer.evaluate(256, seed=1, averaged=False)
    assert summary.thp >= 0.4
    assert min(summary.metrics["upper"], summary.metrics["lower"]) >= 0.2


@pytest.mark.slow
def test_trained_double_well_policy_reaches_thp_90_percent_through_both_channels(one_thread):
    trainer = ToyTrainer(ToyTrainConfig(iterations=250, seed=0))
    log = trainer.run()
    summary = trainer.evaluate(512, seed=1)
    upper, lower = summary.metrics["upper"], summary.metrics["lower"]
    print(f"double well after {trainer.iteration} iterations ({sum(r['seconds'] for r in log):.0f} s): "
          f"THP {summary.thp:.3f}, upper {upper:.2f}, lower {lower:.2f}, "
          f"ESS of the last 25 iterations {sum(r['ess'] for r in log[-25:]) / 25:.1f} / {trainer.config.n_paths}")
    assert summary.thp >= 0.9
    assert min(upper, lower) >= 0.25


def test_cli_settings_override_the_configuration_and_unknown_ones_are_refused(tmp_path, capsys, one_thread):
    from mlpot.cli import main

    sigterm_handler = signal.getsignal(signal.SIGTERM)
    out = tmp_path / "dw"
    assert main(["pips", "train", "--out", str(out), "--iterations", "1", "--paths", "4", "--eval-paths", "4",
                 "--quiet", "--set", "lam=0.02", "--set", "hidden=[8, 8]"]) == 0
    config = torch.load(out / "checkpoint.pt", weights_only=True)["config"]
    assert config["lam"] == 0.02 and config["hidden"] == [8, 8]
    capsys.readouterr()
    assert main(["pips", "train", "--out", str(tmp_path / "x"), "--set", "lambda=0.02"]) == 2
    assert "unknown PIPS setting(s) lambda" in capsys.readouterr().err
    assert main(["pips", "train", "--out", str(tmp_path / "x"), "--set", "lam"]) == 2
    assert "must look like training.key=value" in capsys.readouterr().err
    assert main(["pips", "train", "--out", str(out), "--resume", "--set", "lam=1"]) == 2
    assert "--set is not allowed" in capsys.readouterr().err
    assert main(["pips", "train", "--out", str(tmp_path / "x"), "--iterations", "2", "--set", "iterations=3"]) == 2
    assert "training.iterations is given by --iterations too" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGTERM) == sigterm_handler  # the command leaves no handler behind


def test_cli_trains_a_toy_resumes_it_and_refuses_unknown_systems(tmp_path, capsys, one_thread):
    from mlpot.cli import main

    out = str(tmp_path / "dw")
    assert main(["pips", "train", "--out", out, "--iterations", "2", "--paths", "4", "--eval-paths", "4",
                 "--quiet"]) == 0
    assert "THP" in capsys.readouterr().out
    assert main(["pips", "train", "--out", out, "--resume", "--quiet", "--eval-paths", "4"]) == 0
    assert main(["pips", "train", "--system", "trp-cage", "--out", str(tmp_path / "trp")]) == 2
    assert "no PIPS transition defined for 'trp-cage'" in capsys.readouterr().err


# ---------------------------------------------------------------------------------- OpenMM side
def free_particles_context(masses_amu, settings, harmonic_k=None, constraints=True):
    from mlpot.pips.molecular.integrator import controlled_langevin_integrator

    system = openmm.System()
    for mass in masses_amu:
        system.addParticle(mass)
    if harmonic_k is not None:
        well = openmm.CustomExternalForce(f"0.5*{harmonic_k}*(x*x + y*y + z*z)")
        for index in range(len(masses_amu)):
            well.addParticle(index, [])
        system.addForce(well)
    integrator = controlled_langevin_integrator(settings, constraints=constraints)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(np.zeros((len(masses_amu), 3)))
    return context, integrator


@pytest.mark.parametrize("constraints", [True, False])
def test_openmm_control_force_pushes_along_its_sign_in_kj_per_mol_per_nm(constraints):
    """Two free particles, no friction to speak of: n steps of a constant control force F give
    x = F dt² n² / (2m) (the impulse lands mid-step), so both the sign and the unit (kJ/mol/nm, amu, ps) show;
    with the constraint steps, and without them (the two-pass step)."""
    from mlpot.pips.molecular.integrator import langevin_settings, set_control_forces

    settings = langevin_settings(timestep_ps=0.001, friction_per_ps=1e-12, temperature_K=300.0)  # f = 1: no own noise
    context, integrator = free_particles_context([12.0, 1.008], settings, constraints=constraints)
    force = np.array([[150.0, -40.0, 0.0], [0.0, 0.0, -7.5]])
    set_control_forces(integrator, force)
    n = 10
    integrator.step(n)
    positions = context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(openmm.unit.nanometer)
    expected = force * 0.001 ** 2 * n * n / 2 / np.array([[12.0], [1.008]])
    np.testing.assert_allclose(positions, expected, rtol=1e-9, atol=1e-15)


def test_the_two_pass_step_drifts_by_the_mean_of_the_velocities_around_its_o_step_thermal_noise_included():
    """Free particles, the integrator's own noise on (f = 0.4), no constraints: over each step x moves by
    ½ dt (v before + v after), so the thermal kick the velocity received also reached the position."""
    from mlpot.pips.molecular.integrator import langevin_settings, set_control_forces

    settings = langevin_settings(timestep_ps=0.002, friction_per_ps=5.0, temperature_K=300.0,
                                 controlled_noise_fraction=0.4)
    masses = np.array([12.0, 1.008, 16.0])
    context, integrator = free_particles_context(masses, settings, constraints=False)
    integrator.setRandomNumberSeed(3)
    context.setVelocitiesToTemperature(300.0, 5)
    set_control_forces(integrator, np.array([[50.0, 0.0, -20.0], [0.0, 3.0, 0.0], [0.0, 0.0, 0.0]]))
    for _ in range(5):
        before = context.getState(getPositions=True, getVelocities=True)
        integrator.step(1)
        after = context.getState(getPositions=True, getVelocities=True)
        x0, x1 = (state.getPositions(asNumpy=True)._value for state in (before, after))
        v0, v1 = (state.getVelocities(asNumpy=True)._value for state in (before, after))
        assert np.abs(v1 - settings.velocity_damping * v0).max() > 1e-3  # the noise and the push moved v
        np.testing.assert_allclose(x1 - x0, 0.5 * settings.timestep * (v0 + v1), rtol=1e-9, atol=1e-15)


@pytest.mark.parametrize("constraints", [True, False])
@pytest.mark.parametrize("interval", [1, 2, 3])
def test_slow_forces_act_every_nth_step_with_n_times_the_impulse_and_restart_rewinds(interval, constraints):
    """A bond (fast, group 0) and a constant pull (slow, group 1) on two atoms, friction, no noise:
    the integrator's positions follow the r-RESPA scheme written out in numpy, over two rollouts
    (the second after :func:`restart`), to round-off; with or without its constraint steps (the System has
    no constraints, so leaving them out changes nothing)."""
    from mlpot.pips.molecular.integrator import (
        controlled_langevin_integrator,
        langevin_settings,
        restart,
        set_control_forces,
        split_force_groups,
    )

    settings = langevin_settings(timestep_ps=0.002, friction_per_ps=5.0, temperature_K=300.0)  # f = 1: no own noise
    masses = np.array([[12.0], [16.0]])
    system = openmm.System()
    for mass in masses[:, 0]:
        system.addParticle(mass)
    bond = openmm.HarmonicBondForce()
    bond.addBond(0, 1, 0.12, 4.0e5)
    pull = openmm.CustomExternalForce("-300*x + 100*z")
    for index in range(2):
        pull.addParticle(index, [])
    system.addForce(bond)
    system.addForce(pull)
    split_force_groups(system)
    assert (bond.getForceGroup(), pull.getForceGroup()) == (0, 1)
    integrator = controlled_langevin_integrator(settings, slow_force_interval=interval, constraints=constraints)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("Reference"))
    set_control_forces(integrator, np.zeros((2, 3)))
    start = np.array([[0.0, 0.0, 0.0], [0.13, 0.01, 0.0]])
    slow_force = np.array([[300.0, 0.0, -100.0]] * 2)
    dt, damping = settings.timestep, settings.velocity_damping

    def bond_force(x):
        separation = x[1] - x[0]
        distance = np.linalg.norm(separation)
        on_second = -4.0e5 * (distance - 0.12) * separation / distance
        return np.array([-on_second, on_second])

    for rollout in range(2):
        restart(integrator)
        context.setPositions(start)
        context.setVelocities(np.zeros((2, 3)))
        x, v = start.copy(), np.zeros((2, 3))
        for step in range(7):
            v = v + dt * bond_force(x) / masses
            if step % interval == 0:
                v = v + interval * dt * slow_force / masses
            x = x + 0.5 * dt * v
            v = damping * v
            x = x + 0.5 * dt * v
            integrator.step(1)
        found = context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(openmm.unit.nanometer)
        np.testing.assert_allclose(found, x, rtol=0, atol=1e-12)
        integrator.step(1)  # leaves the step counter mid-cycle: the next rollout's restart must rewind it
    with pytest.raises(ValueError, match="slow_force_interval must be a positive integer, got 0"):
        controlled_langevin_integrator(settings, slow_force_interval=0)


@pytest.mark.parametrize("constraints", [True, False])
def test_openmm_controlled_integrator_keeps_the_temperature_with_recorded_noise(one_thread, constraints):
    """Harmonic wells, no control: the recorded kicks (fraction f of the noise, supplied every step
    through the control force) plus the integrator's own rest give ⟨m v²⟩ = kT; with the constraint steps, and
    without them (the two-pass step, whose thermal noise must reach position and velocity alike)."""
    from mlpot.pips.molecular.integrator import langevin_settings, set_control_forces

    settings = langevin_settings(timestep_ps=0.002, friction_per_ps=5.0, temperature_K=300.0,
                                 controlled_noise_fraction=0.6)
    masses = np.array([12.0, 16.0, 1.008, 14.0] * 64)
    context, integrator = free_particles_context(masses, settings, harmonic_k=500.0, constraints=constraints)
    integrator.setRandomNumberSeed(1)
    context.reinitialize(preserveState=True)
    controlled_var, _ = settings.kick_variances(torch.tensor(masses)[:, None].double())
    kick_std = np.sqrt(controlled_var.numpy()) * np.ones((len(masses), 3))
    rng = np.random.default_rng(0)
    kinetic = []
    for step in range(3000):  # ~27 velocity correlation times of 256 × 3 degrees of freedom: 1% standard error
        set_control_forces(integrator, kick_std * rng.standard_normal((len(masses), 3)) / settings.timestep)
        integrator.step(1)
        if step >= 300:
            velocities = context.getState(getVelocities=True).getVelocities(asNumpy=True)._value
            kinetic.append((masses[:, None] * velocities ** 2).mean())
    assert np.mean(kinetic) / settings.kT == pytest.approx(1.0, abs=0.05)  # 5 standard errors


# ---------------------------------------------------------------------------------- OpenMM rollouts
@pytest.fixture(scope="module")
def alanine_replicas():
    from mlpot.pips.molecular.integrator import langevin_settings
    from mlpot.pips.molecular.peptides import peptide_transition
    from mlpot.pips.molecular.replicas import build_replica_system

    topology, start_nm, target_nm = peptide_transition("alanine-dipeptide").load()
    settings = langevin_settings(timestep_ps=0.001, friction_per_ps=1.0, temperature_K=300.0)
    return build_replica_system(topology, start_nm, 4), settings, start_nm, target_nm


RUNNER_LAYOUTS = ("one-context", "single-copy")


def replica_runner(alanine_replicas, layout="one-context"):
    """Alanine dipeptide's 4 replicas in one Context, or (the implicit-solvent layout, which works
    for a vacuum System too) in one Context each."""
    from mlpot.pips.molecular.replicas import SeparateReplicas
    from mlpot.pips.molecular.rollout import OneContextRunner, SingleCopyRunner

    replicas, settings, start_nm, _ = alanine_replicas
    if layout == "one-context":
        return OneContextRunner(replicas, settings, platform="Reference"), start_nm
    separate = SeparateReplicas(single_system=replicas.single_system, topology=replicas.topology,
                                n_copies=replicas.n_copies, n_atoms=replicas.n_atoms, masses_amu=replicas.masses_amu)
    return SingleCopyRunner(separate, settings, platform="Reference"), start_nm


def no_control(positions, velocities, time_fraction):
    return torch.zeros_like(positions)


def test_replica_copies_have_the_single_molecule_energy(alanine_replicas):
    from mlpot.pips.molecular.replicas import potential_energies_kj_mol

    replicas, _, start_nm, _ = alanine_replicas
    single = potential_energies_kj_mol(replicas.single_system, start_nm[None], platform="Reference")[0]
    stacked = replicas.stacked_positions(np.broadcast_to(start_nm, (4, *start_nm.shape)))
    context = openmm.Context(replicas.system, openmm.VerletIntegrator(0.001),
                             openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(stacked)
    total = context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(openmm.unit.kilojoule_per_mole)
    assert total == pytest.approx(4 * single, rel=1e-10)


def test_replicas_of_an_mlpot_model_potential_do_not_feel_each_other(model_files, alanine_replicas):
    import openmmtorch  # noqa: F401  (after torch)

    from mlpot.pips.molecular.replicas import build_replica_system, potential_energies_kj_mol

    replicas, _, start_nm, _ = alanine_replicas
    model = build_replica_system(replicas.topology, start_nm, 3, model=model_files[("egnn", "float64")])
    single = potential_energies_kj_mol(model.single_system, start_nm[None])[0]
    stacked = model.stacked_positions(np.broadcast_to(start_nm, (3, *start_nm.shape)))
    context = openmm.Context(model.system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("CPU"))
    context.setPositions(stacked)
    total = context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(openmm.unit.kilojoule_per_mole)
    assert total == pytest.approx(3 * single, rel=1e-8)


@pytest.mark.parametrize("layout", RUNNER_LAYOUTS)
def test_openmm_rollout_records_every_step_with_kicks_of_the_controlled_variance(alanine_replicas, layout):
    runner, start_nm = replica_runner(alanine_replicas, layout)
    result = runner.run(no_control, start_nm, 30, torch.Generator().manual_seed(0))
    rollout = result.rollout
    assert rollout.positions.shape == (4, 31, 22, 3) and rollout.noises.shape == (4, 30, 22, 3)
    assert rollout.control_positions.shape == rollout.controls.shape == rollout.control_velocities.shape
    assert rollout.timestep == pytest.approx(0.001) and rollout.n_steps == 30 and result.dropped == 0
    assert bool(rollout.finite_paths().all())
    torch.testing.assert_close(rollout.positions[:, 0], torch.from_numpy(start_nm).expand(4, 22, 3))
    torch.testing.assert_close(rollout.control_positions[:, 1:], rollout.positions[:, 1:-1])  # state at step start
    variance = runner.settings.kick_variances(runner.mass)[0]  # (22, 1), amu² nm²/ps²
    normalised = rollout.noises / torch.sqrt(variance)
    assert float(normalised.mean()) == pytest.approx(0.0, abs=0.05)  # 7920 draws: standard error 0.011
    assert float(normalised.var()) == pytest.approx(1.0, abs=0.06)
    kinetic = (runner.mass * rollout.control_velocities[:, 0] ** 2).mean() / runner.settings.kT
    assert 0.6 < float(kinetic) < 1.4  # thermalised start velocities, not 0 K


@pytest.mark.parametrize("layout", RUNNER_LAYOUTS)
def test_openmm_rollout_bias_pushes_only_its_replica_along_its_sign_in_kj_per_mol_per_nm(alanine_replicas, layout):
    """A control force on the alpha carbon of replica 1 only: with the same random numbers, replica 1's
    carbon moves by F dt² n² / (2m) relative to the uncontrolled run, every other replica not at all."""
    runner, start_nm = replica_runner(alanine_replicas, layout)
    force = torch.tensor([800.0, -300.0, 0.0], dtype=torch.float64)  # kJ/mol/nm
    carbon, n = 8, 3

    def push(positions, velocities, time_fraction):
        u = torch.zeros_like(positions)
        u[1, carbon] = force
        return u

    free = runner.run(no_control, start_nm, n, torch.Generator().manual_seed(3)).rollout
    pushed = runner.run(push, start_nm, n, torch.Generator().manual_seed(3)).rollout
    difference = pushed.final_positions - free.final_positions
    mass = float(runner.mass[carbon])
    expected = force * 0.001 ** 2 * n * n / (2 * mass)  # nm
    torch.testing.assert_close(difference[1, carbon], expected, rtol=0.05, atol=2e-6)
    for other in (0, 2, 3):
        assert float(difference[other].abs().max()) == 0.0


@pytest.mark.parametrize("layout", RUNNER_LAYOUTS)
def test_blown_up_replica_is_dropped_with_a_warning_and_counted(alanine_replicas, layout):
    runner, start_nm = replica_runner(alanine_replicas, layout)

    def explode_replica_2(positions, velocities, time_fraction):
        u = torch.zeros_like(positions)
        u[2] = 1e9
        return u

    with pytest.warns(RuntimeWarning, match=r"replica\(s\) \[2\] blew up"):
        result = runner.run(explode_replica_2, start_nm, 10, torch.Generator().manual_seed(0))
    assert result.dropped == 1
    assert result.rollout.finite_paths().tolist() == [True, True, False, True]
    healthy = runner.run(no_control, start_nm, 5, torch.Generator().manual_seed(0))  # the context recovered
    assert healthy.dropped == 0 and bool(healthy.rollout.finite_paths().all())


def test_a_replica_blowing_up_during_training_drops_its_path_and_the_iteration_goes_on(one_thread):
    """A blown-up (NaN) path has a NaN terminal cost, not an SVD error that ends the run; the path gets no weight."""
    from mlpot.pips.molecular.trainer import MolecularTrainer

    trainer = MolecularTrainer(tiny_molecular_config(n_paths=3, force_scale_kj_mol_nm=1e4), platform="Reference")
    policy = trainer.policy

    def explode_replica_1_in_rollouts(positions, velocities, time_fraction):
        u = policy(positions, velocities, time_fraction)
        if not torch.is_grad_enabled():  # the rollout (the loss recomputes the policy itself)
            u = u.clone()
            u[1] += 1e9
        return u

    trainer.policy = explode_replica_1_in_rollouts
    with pytest.warns(RuntimeWarning, match=r"replica\(s\) \[1\] blew up"):
        rollout, _ = trainer.rollout()
    terminal = trainer.terminal_cost(rollout)
    assert bool(terminal[1].isnan()) and bool(terminal[[0, 2]].isfinite().all())
    trainer.rollout = lambda *args, **kwargs: (rollout, {})
    trainer.policy = policy
    row = trainer.step()
    assert row["dropped_paths"] == 1 and math.isfinite(row["loss"]) and math.isfinite(row["mean_cost"])


@pytest.mark.parametrize("network_dtype", ["float64", "float32"])
def test_recorded_policy_inputs_give_the_loss_the_controls_and_gradients_of_the_recorded_states(one_thread,
                                                                                                 network_dtype):
    """A training rollout records the policy's θ-independent inputs (superposition, pull direction); recording
    changes no path, and the loss's controls and PICE gradient from them equal those computed from the states.
    A replica that blew up has NaN inputs from then on, and a subset keeps the inputs of its paths."""
    from mlpot.pips.molecular.trainer import MolecularTrainer

    trainer = MolecularTrainer(tiny_molecular_config(n_paths=3, n_steps=12, network_dtype=network_dtype,
                                                     force_scale_kj_mol_nm=2.0), platform="Reference")
    randomised(trainer.policy.residual, seed=4)
    runner = trainer.runner(3)
    recorded = runner.run(trainer.policy, trainer.start_nm, 12, torch.Generator().manual_seed(2), True).rollout
    plain = runner.run(trainer.policy, trainer.start_nm, 12, torch.Generator().manual_seed(2)).rollout
    assert plain.policy_inputs is None
    assert set(recorded.policy_inputs) == {"network_input", "rotation", "pull_gradient", "time_fraction"}
    for name in ("positions", "controls", "noises", "final_velocities"):
        assert torch.equal(getattr(recorded, name), getattr(plain, name)), name
    assert float(recorded.controls.abs().max()) > 1.0
    from_inputs, from_states = policy_controls(trainer.policy, recorded), policy_controls(trainer.policy, plain)
    torch.testing.assert_close(from_inputs, from_states, rtol=0, atol=1e-9)
    round_off = (1e-12 if network_dtype == "float64" else 1e-6) * float(recorded.controls.abs().max())
    torch.testing.assert_close(from_inputs.detach(), recorded.controls, rtol=0, atol=round_off)  # batch 36, not 3
    weights = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    precision = 1e-10 if network_dtype == "float64" else 1e-5
    directions = recorded.noises * trainer.control_weight
    works = [policy_work(trainer.policy, rollout, directions) for rollout in (recorded, plain)]  # u·d unformed, formed
    torch.testing.assert_close(works[0], works[1], rtol=precision, atol=0)
    losses = (pice_surrogate_of_work(works[0], weights, trainer.config.lam),
              pice_surrogate_loss(policy_controls(trainer.policy, plain), plain.noises, weights, trainer.control_weight,
                                  trainer.config.lam))
    parameters = list(trainer.policy.parameters())
    from_inputs, from_states = (torch.autograd.grad(loss, parameters) for loss in losses)
    for found, expected in zip(from_inputs, from_states):
        torch.testing.assert_close(found, expected, rtol=precision, atol=precision * float(expected.abs().max()))
    kept = recorded.subset(torch.tensor([True, False, True]))
    assert torch.equal(kept.policy_inputs["rotation"], recorded.policy_inputs["rotation"][[0, 2]])

    class Exploding(torch.nn.Module):  # splits like the policy, and blows replica 1 up
        def splits_inputs(self):
            return True

        def invariant_inputs(self, positions, velocities, time_fraction):
            return trainer.policy.invariant_inputs(positions, velocities, time_fraction)

        def controls_from_inputs(self, inputs):
            u = trainer.policy.controls_from_inputs(inputs).clone()
            u[1] += 1e9
            return u

    with pytest.warns(RuntimeWarning, match=r"replica\(s\) \[1\] blew up at step (\d+)") as caught:
        blown = runner.run(Exploding(), trainer.start_nm, 12, torch.Generator().manual_seed(2), True).rollout
    step = int(re.search(r"at step (\d+)", str(caught[0].message)).group(1))  # the first step after the blow-up
    inputs = blown.policy_inputs["network_input"]
    assert bool(inputs[1, step:].isnan().all()) and bool(inputs[1, :step].isfinite().all())
    assert bool(inputs[[0, 2]].isfinite().all())


def test_kabsch_gives_a_nan_rotation_to_a_non_finite_structure_only():
    from mlpot.pips.geometry import centred, kabsch_rotation

    generator = torch.Generator().manual_seed(2)
    reference = centred(torch.randn(6, 3, generator=generator, dtype=torch.float64))
    rotation = random_rotation(generator)
    mobile = torch.stack([reference @ rotation.T, reference.clone(), reference @ rotation.T])
    mobile[1, 4, 0] = float("nan")
    found = kabsch_rotation(mobile, reference)
    assert bool(found[1].isnan().all())
    for index in (0, 2):
        torch.testing.assert_close(mobile[index] @ found[index], reference, rtol=0, atol=1e-12)


def test_alanine_target_basin_holds_c7ax_not_c5(alanine_replicas):
    from mlpot.pips.molecular.peptides import peptide_transition

    _, _, start_nm, target_nm = alanine_replicas
    transition = peptide_transition("alanine-dipeptide")
    hits = transition.in_target_basin(torch.from_numpy(np.stack([start_nm, target_nm])))
    assert hits.tolist() == [False, True]


# ---------------------------------------------------------------------------------- implicit-solvent peptides
def lone_context_energy_and_forces(system_name, positions_nm):
    """Energy (kJ/mol) and forces (kJ/mol/nm) of one molecule in a Context of its own, with a System
    made here from the registry's force field files (not by the code under test)."""
    from openmm import app

    from mlpot.systems import get_system, load_openmm

    topology, _ = load_openmm(system_name)
    system = app.ForceField(*get_system(system_name).forcefield_files).createSystem(
        topology, nonbondedMethod=app.NoCutoff, constraints=None)
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(positions_nm)
    state = context.getState(getEnergy=True, getForces=True)
    return (state.getPotentialEnergy().value_in_unit(openmm.unit.kilojoule_per_mole),
            state.getForces(asNumpy=True).value_in_unit(openmm.unit.kilojoule_per_mole / openmm.unit.nanometer))


@pytest.mark.parametrize("system", ["polyproline", "chignolin"])
def test_the_single_copy_layout_gives_every_replica_the_energy_and_forces_of_a_lone_molecule(system):
    from mlpot.pips.molecular.integrator import langevin_settings
    from mlpot.pips.molecular.peptides import peptide_transition
    from mlpot.pips.molecular.replicas import potential_energies_kj_mol
    from mlpot.pips.molecular.rollout import SingleCopyRunner, replica_runner

    transition = peptide_transition(system)
    topology, start_nm, target_nm = transition.load()
    settings = langevin_settings(timestep_ps=0.001, friction_per_ps=1.0, temperature_K=300.0)
    runner = replica_runner(topology, start_nm, 3, settings, transition.forcefield_files, platform="Reference",
                            layout="single-copy")  # the NoCutoff option beside the default one Context
    assert isinstance(runner, SingleCopyRunner)
    forces = [type(force).__name__ for force in runner.replicas.single_system.getForces()]
    assert "CustomGBForce" in forces and "CMMotionRemover" not in forces
    generator = np.random.default_rng(0)
    frames = np.stack([start_nm, target_nm, start_nm + 0.01 * generator.standard_normal(start_nm.shape)])
    runner._start(frames, 300.0, seed=1)
    lone = [lone_context_energy_and_forces(transition.start, frame) for frame in frames]
    for copy, (energy, forces) in enumerate(lone):
        runner.context.setPositions(runner._state()[0][copy])  # the state the replica's next step starts from
        state = runner.context.getState(getEnergy=True, getForces=True)
        energy_kj_mol = state.getPotentialEnergy().value_in_unit(openmm.unit.kilojoule_per_mole)
        assert energy_kj_mol == pytest.approx(energy, rel=1e-12)
        np.testing.assert_allclose(state.getForces(asNumpy=True)._value, forces, rtol=1e-10, atol=1e-8)
    energies = potential_energies_kj_mol(runner.replicas.single_system, frames, platform="Reference")
    np.testing.assert_allclose(energies, [energy for energy, _ in lone], rtol=1e-12)


def test_copies_in_one_system_refuse_implicit_solvent_by_name():
    from mlpot.pips.molecular.peptides import peptide_transition
    from mlpot.pips.molecular.replicas import build_replica_system

    transition = peptide_transition("polyproline")
    topology, start_nm, _ = transition.load()
    with pytest.raises(NotImplementedError, match="CustomGBForce.*the single-copy layout"):
        build_replica_system(topology, start_nm, 2, transition.forcefield_files)


@pytest.mark.parametrize("system", ["alanine-dipeptide", "alanine-dipeptide-c7eq", "polyproline", "chignolin"])
def test_start_is_outside_and_target_inside_the_target_basin(system):
    from mlpot.pips.molecular.peptides import peptide_transition

    _, start_nm, target_nm = peptide_transition(system).load()
    hits = peptide_transition(system).in_target_basin(torch.from_numpy(np.stack([start_nm, target_nm])))
    assert hits.tolist() == [False, True]


def test_basin_and_plot_atoms_are_the_named_backbone_atoms():
    from mlpot.pips.molecular.peptides import peptide_transition

    def names(system, indices):
        atoms = list(peptide_transition(system).load()[0].atoms())
        return [f"{atoms[i].residue.name}{atoms[i].residue.index + 1}:{atoms[i].name}" for i in indices]

    polyproline, chignolin = peptide_transition("polyproline"), peptide_transition("chignolin")
    omegas = [names("polyproline", omega) for omega in polyproline.basin.omegas]
    assert omegas == [["ACE1:CH3", "ACE1:C", "PRO2:N", "PRO2:CA"], ["PRO2:CA", "PRO2:C", "PRO3:N", "PRO3:CA"],
                      ["PRO3:CA", "PRO3:C", "PRO4:N", "PRO4:CA"]]
    assert names("polyproline", polyproline.phi) == ["PRO2:C", "PRO3:N", "PRO3:CA", "PRO3:C"]
    assert names("polyproline", polyproline.psi) == ["PRO3:N", "PRO3:CA", "PRO3:C", "PRO4:N"]
    cas = names("chignolin", chignolin.basin.atoms)
    assert [name.split(":")[1] for name in cas] == ["CA"] * 10
    assert "".join(name[:3] for name in cas) == "GLYTYRASPPROGLUTHRGLYTHRTRPGLY"
    assert names("chignolin", chignolin.phi) == ["THR6:C", "GLY7:N", "GLY7:CA", "GLY7:C"]
    assert names("chignolin", chignolin.psi) == ["GLY7:N", "GLY7:CA", "GLY7:C", "THR8:N"]


def test_polyproline_basin_needs_every_x_pro_bond_cis():
    from mlpot.pips.molecular.peptides import peptide_transition

    transition = peptide_transition("polyproline")
    _, _, target_nm = transition.load()
    target = torch.from_numpy(target_nm)
    assert bool(transition.in_target_basin(target))
    for omega in transition.basin.omegas:  # flip one bond to trans: rotate the C-side half about C–N
        c_atom, n_atom = omega[1], omega[2]
        axis = (target[n_atom] - target[c_atom]) / torch.linalg.vector_norm(target[n_atom] - target[c_atom])
        flipped = target.clone()
        moving = torch.arange(n_atom, len(target))
        relative = target[moving] - target[n_atom]
        flipped[moving] = target[n_atom] - relative + 2 * (relative @ axis)[:, None] * axis  # 180° about the axis
        assert not bool(transition.in_target_basin(flipped))


def test_polyproline_two_step_rollout_runs_in_the_trainer(one_thread):
    from mlpot.pips.molecular.rollout import OneContextRunner
    from mlpot.pips.molecular.trainer import MolecularTrainer

    trainer = MolecularTrainer(tiny_molecular_config(system="polyproline", n_paths=2, n_steps=2), platform="Reference")
    assert isinstance(trainer.runner(2), OneContextRunner)  # implicit solvent: all replicas in one Context
    row = trainer.step()
    assert row["iteration"] == 1 and row["dropped_paths"] == 0
    rollout, _ = trainer.rollout(2, torch.Generator().manual_seed(1))
    assert rollout.positions.shape == (2, 3, 54, 3) and bool(rollout.finite_paths().all())


def tiny_molecular_config(**overrides):
    from mlpot.pips.molecular.trainer import MolecularTrainConfig

    settings = dict(n_paths=2, n_steps=10, hidden=[8], iterations=5)
    settings.update(overrides)
    return MolecularTrainConfig(**settings)


@pytest.mark.parametrize("policy, objective, network_dtype", [
    ("distance-energy", "pice", "float64"), ("aligned-force", "pice", "float64"),
    ("aligned-force", "log-variance", "float64"), ("aligned-force", "pice", "float32")])
def test_molecular_resume_takes_the_same_next_iteration(tmp_path, one_thread, policy, objective, network_dtype):
    from mlpot.pips.molecular.trainer import MolecularTrainer

    config = tiny_molecular_config(policy=policy, force_scale_kj_mol_nm=1e4,  # controls large enough to matter
                                   objective=objective, replay_iterations=2, network_dtype=network_dtype)
    uninterrupted = MolecularTrainer(config, platform="Reference")
    for _ in range(3):
        uninterrupted.step()
    first = MolecularTrainer(config, out=tmp_path, platform="Reference")
    first.step()
    first.step()
    resumed = MolecularTrainer(config, out=tmp_path, resume=True, platform="Reference")
    row = resumed.step()
    expected = uninterrupted.log[-1]
    assert expected["mean_control_cost"] > 0
    for key in row:
        if "seconds" not in key:
            assert row[key] == pytest.approx(expected[key], rel=1e-12, abs=1e-12, nan_ok=True), key
    for a, b in zip(resumed.policy.parameters(), uninterrupted.policy.parameters()):
        assert torch.equal(a, b)
    network = resumed.policy.residual.network
    assert {parameter.dtype for parameter in network.parameters()} == {getattr(torch, network_dtype)}
    assert resumed.policy.log_strength_knots.dtype == torch.float64


@pytest.mark.parametrize("make_policy", [
    lambda reference: DistanceEnergyPolicy(8, hidden=(16,)),
    lambda reference: TargetGuidedPolicy(reference, [0, 2, 3, 5, 7], AlignedForcePolicy(reference, hidden=(16,)),
                                         strength=50.0, n_knots=3),
])
def test_a_float32_network_gives_the_float64_policys_forces_to_float32_precision_in_float64(make_policy):
    """Only the MLP runs in float32: the same weights give the same forces to float32 round-off, returned in float64,
    and their gradient reaches the float32 weights."""
    import copy

    from mlpot.pips.molecular.policy import with_network_dtype

    generator = torch.Generator().manual_seed(5)
    reference = torch.randn(8, 3, generator=generator, dtype=torch.float64)
    policy64 = randomised(make_policy(reference).double(), seed=3)
    policy32 = with_network_dtype(copy.deepcopy(policy64), torch.float32)
    positions = reference + 0.3 * torch.randn(4, 8, 3, generator=generator, dtype=torch.float64)
    velocities = torch.randn(4, 8, 3, generator=generator, dtype=torch.float64)
    times = torch.tensor([0.0, 0.3, 0.7, 1.0], dtype=torch.float64)
    expected, found = policy64(positions, velocities, times), policy32(positions, velocities, times)
    assert found.dtype == torch.float64 and float(expected.detach().abs().max()) > 1.0
    torch.testing.assert_close(found, expected, rtol=1e-5, atol=1e-5 * float(expected.detach().abs().max()))
    found.square().sum().backward()
    network = policy32.residual.network if isinstance(policy32, TargetGuidedPolicy) else policy32.network
    gradients = [p.grad for p in network.parameters() if p.grad is not None]  # (an energy's last bias has none)
    assert network[0].weight.grad is not None and float(network[0].weight.grad.abs().max()) > 0
    assert all(g.dtype == torch.float32 and bool(g.isfinite().all()) for g in gradients)


def test_cli_trains_alanine_dipeptide_and_samples_paths_to_dcd(tmp_path, capsys, one_thread):
    import mdtraj

    from mlpot.cli import main

    out = tmp_path / "ad"
    assert main(["pips", "train", "--system", "alanine-dipeptide", "--out", str(out), "--iterations", "1",
                 "--paths", "2", "--quiet"]) == 0
    assert main(["pips", "train", "--out", str(out), "--resume", "--quiet"]) == 0  # nothing left to do
    assert main(["pips", "sample", str(out), "--paths", "2"]) == 0
    printed = capsys.readouterr().out
    assert '"thp"' in printed and '"ets_kj_mol"' in printed
    paths = mdtraj.load(str(out / "paths.dcd"), top=str(out / "paths.pdb"))
    # 2 paths of alanine's default 1000 steps (peptides.py run_defaults), start frame included
    assert paths.n_frames == 2 * 1001 and paths.n_atoms == 22


def test_aligned_squared_deviation_gradient_matches_autograd():
    from mlpot.pips.geometry import aligned_rmsd, aligned_squared_deviation_gradient

    generator = torch.Generator().manual_seed(3)
    positions = torch.randn(4, 10, 3, dtype=torch.float64, generator=generator)
    reference = torch.randn(10, 3, dtype=torch.float64, generator=generator)
    tracked = positions.clone().requires_grad_(True)
    (expected,) = torch.autograd.grad((aligned_rmsd(tracked, reference) ** 2).sum(), tracked)
    torch.testing.assert_close(aligned_squared_deviation_gradient(positions, reference), expected)


# ---------------------------------------------------------------------------------- baselines and report
def test_steered_pull_points_down_the_heavy_atom_rmsd_gradient_with_no_net_force():
    from mlpot.pips.molecular.baselines import SteeredPull

    generator = torch.Generator().manual_seed(5)
    positions = torch.randn(3, 10, 3, dtype=torch.float64, generator=generator)
    target = torch.randn(10, 3, dtype=torch.float64, generator=generator)
    heavy = [0, 2, 3, 5, 7, 8]
    pull = SteeredPull(target, heavy, spring_kj_mol_nm2=2e3)
    u = pull(positions, torch.zeros_like(positions), torch.full((3,), 0.3, dtype=torch.float64))
    tracked = positions.clone().requires_grad_(True)
    (gradient,) = torch.autograd.grad((aligned_rmsd(tracked[:, heavy], target[heavy]) ** 2).sum(), tracked)
    torch.testing.assert_close(u, -2e3 * gradient)
    assert float(u[:, [1, 4, 6, 9]].abs().max()) == 0.0  # hydrogens (here: the other atoms) feel nothing
    torch.testing.assert_close(u.sum(dim=1), torch.zeros(3, 3, dtype=torch.float64))  # no net force
    moved = positions + 1e-6 * u
    assert bool((aligned_rmsd(moved[:, heavy], target[heavy]) < aligned_rmsd(positions[:, heavy], target[heavy])).all())
    ramped = SteeredPull(target, heavy, spring_kj_mol_nm2=2e3, ramp=True)
    assert ramped.spring_at(torch.tensor([0.0, 0.5])).tolist() == [0.0, 1e3]
    with pytest.raises(ValueError, match="spring constant must be positive"):
        SteeredPull(target, heavy, spring_kj_mol_nm2=-1.0)


def test_control_work_of_a_constant_force_is_force_times_displacement():
    from mlpot.pips.metrics import control_work

    positions = torch.tensor([[[0.0, 0.0], [1.0, 0.0], [1.0, 2.0]]])  # one path, two steps
    controls = torch.tensor([[[3.0, 1.0], [3.0, 1.0]]])
    assert control_work(positions, controls).tolist() == [3.0 * 1.0 + 1.0 * 2.0]


def test_baselines_share_the_policy_start_velocities_and_unbiased_md_applies_no_control(tmp_path, one_thread):
    from mlpot.pips.molecular.baselines import steered_md, unbiased_md
    from mlpot.pips.molecular.trainer import MolecularTrainer

    trainer = MolecularTrainer(tiny_molecular_config(n_steps=20), platform="Reference")
    md, smd = unbiased_md(trainer, 2, seed=4), steered_md(trainer, 2, seed=4)
    evaluation = trainer.evaluate(2, seed=4)
    policy_metrics, policy_rollout = evaluation.metrics, evaluation.rollout
    assert float(md.rollout.controls.abs().max()) == 0.0 and md.metrics["bias_work_kj_mol"] == 0.0
    assert float(smd.rollout.controls.abs().max()) > 0.0
    for other in (smd.rollout, policy_rollout):  # same seed: same start, same thermalised start velocities
        torch.testing.assert_close(other.control_velocities[:, 0], md.rollout.control_velocities[:, 0])
    assert float(md.rollout.control_velocities[:, 0].abs().max()) > 0.0
    assert set(policy_metrics) == set(md.metrics) == set(smd.metrics)
    assert md.energies_kj_mol.shape == (2, 21) and md.hits.shape == (2,)
    assert md.metrics["mean_max_energy_kj_mol"] == pytest.approx(float(md.energies_kj_mol.max(dim=1).values.mean()))


def test_report_on_a_tiny_run_writes_consistent_table_json_plots_and_paths(tmp_path, capsys, one_thread):
    import json

    import mdtraj

    from mlpot.cli import main
    from mlpot.pips.molecular.trainer import MolecularTrainer

    trainer = MolecularTrainer(tiny_molecular_config(n_steps=20, iterations=1), out=tmp_path)
    trainer.step()
    assert main(["pips", "report", str(tmp_path), "--paths", "2", "--seed", "3"]) == 0
    printed = capsys.readouterr().out
    assert "| method | THP | RMSD Å |" in printed and "| steered MD |" in printed
    report = json.loads((tmp_path / "report.json").read_text())
    assert set(report["metrics"]) == {"pips", "md", "smd"}
    assert report["training"]["iterations"] == 1 and report["settings"]["n_paths"] == 2
    assert 1.0 <= report["training"]["final_ess"] <= 2.0
    for method, metrics in report["metrics"].items():
        assert 0.0 <= metrics["thp"] <= 1.0 and metrics["rmsd_A"] > 0 and metrics["epd"] > 0, method
        assert metrics["wall_seconds"] > 0 and metrics["blown_up"] == 0, method
        assert (metrics["ets_kj_mol"] is None) == (metrics["thp"] == 0.0), method  # ETS only over hits
    assert report["metrics"]["md"]["bias_work_kj_mol"] == 0.0
    table = (tmp_path / "report.md").read_text()
    assert all(f"| {name} |" in table for name in ("PIPS", "unbiased MD", "steered MD"))
    for name in ("ramachandran.png", "energy_profile.png", "training.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    paths = mdtraj.load(str(tmp_path / "report_paths.dcd"), top=str(tmp_path / "report_paths.pdb"))
    assert paths.n_frames == 2 * 21 and paths.n_atoms == 22


def test_dihedral_plot_draws_paths_with_or_without_a_target_box(tmp_path):
    from mlpot.pips.molecular.report_plots import plot_dihedral_paths

    angles = np.linspace(-170.0, 170.0, 12).reshape(2, 6)  # wraps nowhere; (2 paths, 6 frames)
    paths = {"A": (angles, angles[::-1]), "B": (angles[:0], angles[:0])}  # B: every path blew up
    for box in (((0.0, 120.0), (-180.0, 0.0)), None):
        out = plot_dihedral_paths(paths, (-150.0, 160.0), (60.0, -40.0), box, tmp_path / "plane.png")
        assert out.read_bytes()[:4] == b"\x89PNG"


def test_cli_report_refuses_missing_runs_toy_runs_and_bad_path_counts_in_one_line(tmp_path, capsys, one_thread):
    from mlpot.cli import main

    assert main(["pips", "report", str(tmp_path / "missing")]) == 2
    error = capsys.readouterr().err
    assert "is not a PIPS run directory (no checkpoint.pt)" in error and error.count("\n") == 1
    toy = tmp_path / "dw"
    ToyTrainer(ToyTrainConfig(iterations=1, n_paths=4), out=toy).step()
    assert main(["pips", "report", str(toy)]) == 2
    error = capsys.readouterr().err
    assert "report is for molecular runs" in error and error.count("\n") == 1
    assert main(["pips", "report", str(toy), "--paths", "0"]) == 2
    assert "number of paths must be a positive integer" in capsys.readouterr().err


def test_molecular_training_runs_on_an_mlpot_model_potential(model_files, tmp_path, one_thread):
    import openmmtorch  # noqa: F401  (after torch)

    from mlpot.pips.runs import new_run

    model = model_files[("egnn", "float64")]
    trainer = new_run("alanine-dipeptide", tmp_path, potential=str(model), n_paths=2, n_steps=5, iterations=1)
    row = trainer.step()
    assert row["dropped_paths"] == 0 and math.isfinite(row["mean_cost"])
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["config"]["potential"] == str(model)
    assert math.isfinite(trainer.evaluate(2, seed=1).metrics["mean_max_energy_kj_mol"])


def test_a_policy_is_refused_with_a_potential_other_than_the_one_it_was_trained_with(model_files, tmp_path,
                                                                                    one_thread):
    import shutil

    import openmmtorch  # noqa: F401  (after torch)

    from mlpot.pips.runs import load_run, new_run

    potential = tmp_path / "potential.pt"
    shutil.copyfile(model_files[("egnn", "float64")], potential)
    new_run("alanine-dipeptide", tmp_path / "run", potential=str(potential), n_paths=2, n_steps=3, iterations=1).step()
    assert load_run(tmp_path / "run").potential == potential
    shutil.copyfile(model_files[("nequip", "float64")], potential)  # same path, another model
    with pytest.raises(ValueError, match="is not the model this policy was trained with") as error:
        load_run(tmp_path / "run", purpose="pips sample")
    assert "\n" not in str(error.value)


def test_a_runs_potential_is_found_in_the_repository_from_any_directory(tmp_path, monkeypatch):
    from mlpot.pips.molecular.trainer import resolve_potential
    from mlpot.systems import SYSTEMS_DIR

    monkeypatch.chdir(tmp_path)
    assert resolve_potential("systems/alanine-dipeptide/model_xtb.pt") == SYSTEMS_DIR / "alanine-dipeptide" / \
        "model_xtb.pt"
    with pytest.raises(FileNotFoundError, match="potential missing.pt exists neither in the working directory nor"):
        resolve_potential("missing.pt")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_potential(str(tmp_path / "absent.pt"))


def test_resuming_a_missing_corrupt_or_foreign_checkpoint_names_the_problem(tmp_path, capsys):
    from mlpot.cli import main

    assert main(["pips", "train", "--out", str(tmp_path / "none"), "--resume"]) == 2
    assert "no checkpoint at" in capsys.readouterr().err
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "checkpoint.pt").write_bytes(b"not a torch file")
    assert main(["pips", "train", "--out", str(corrupt), "--resume"]) == 2
    assert "is not a readable checkpoint" in capsys.readouterr().err
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    torch.save({"checkpoint_version": 99, "config": {}}, foreign / "checkpoint.pt")
    assert main(["pips", "train", "--out", str(foreign), "--resume"]) == 2
    assert "was written by a newer mlpot (checkpoint version 99" in capsys.readouterr().err
    torch.save({"checkpoint_version": 1, "kind": "training", "config": {}}, foreign / "checkpoint.pt")
    assert main(["pips", "train", "--out", str(foreign), "--resume"]) == 2
    assert "is a training checkpoint, not a PIPS one (a run folder of another command)" in capsys.readouterr().err


def test_cli_refuses_overwriting_a_run_zero_iterations_and_a_non_positive_time_limit(tmp_path, capsys, one_thread):
    from mlpot.cli import main

    out = tmp_path / "dw"
    assert main(["pips", "train", "--out", str(out), "--iterations", "1", "--paths", "4", "--eval-paths", "4",
                 "--quiet"]) == 0
    before = (out / "checkpoint.pt").read_bytes()
    capsys.readouterr()
    for arguments, message in [
        (["--out", str(out)], f"{out} already holds a PIPS run (checkpoint.pt); continue it with --resume or choose "
                              "another --out"),
        (["--out", str(tmp_path / "new"), "--iterations", "0"], "iterations must be a positive integer, got 0"),
        (["--out", str(tmp_path / "new"), "--paths", "-2"], "n_paths must be a positive integer, got -2"),
        (["--out", str(tmp_path / "new"), "--max-minutes", "-1"], "--max-minutes must be a positive number of "
                                                                   "minutes, got -1.0"),
    ]:
        assert main(["pips", "train", *arguments]) == 2
        captured = capsys.readouterr()
        assert captured.err == f"mlpot pips: error: {message}\n" and "checkpoint" not in captured.out, arguments
    assert (out / "checkpoint.pt").read_bytes() == before and not (tmp_path / "new" / "checkpoint.pt").exists()


def test_cli_sigterm_stops_after_the_iteration_in_progress_and_resume_finishes_the_same_run(tmp_path, capsys,
                                                                                             monkeypatch, one_thread):
    import os

    from mlpot.cli import main
    from mlpot.runs import RunLock

    arguments = ["--iterations", "3", "--paths", "4", "--eval-paths", "4", "--quiet"]
    assert main(["pips", "train", "--out", str(tmp_path / "straight"), *arguments]) == 0
    real_step = ToyTrainer.step

    def step_then_sigterm(self):
        row = real_step(self)
        if self.iteration == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # after the optimiser step, before the loop looks again
        return row

    monkeypatch.setattr(ToyTrainer, "step", step_then_sigterm)
    stopped = str(tmp_path / "stopped")
    capsys.readouterr()
    assert main(["pips", "train", "--out", stopped, *arguments]) == 130
    assert "holds every finished iteration; `mlpot pips train --out" in capsys.readouterr().err
    monkeypatch.setattr(ToyTrainer, "step", real_step)
    assert torch.load(tmp_path / "stopped" / "checkpoint.pt", weights_only=True)["iteration"] == 2
    with RunLock(stopped):  # a second process on the same run is refused
        assert main(["pips", "train", "--out", stopped, "--resume", "--quiet"]) == 2
    assert "is in use by pid" in capsys.readouterr().err
    assert main(["pips", "train", "--out", stopped, "--resume", "--quiet", "--eval-paths", "4"]) == 0
    a = torch.load(tmp_path / "straight" / "checkpoint.pt", weights_only=True)["policy"]
    b = torch.load(tmp_path / "stopped" / "checkpoint.pt", weights_only=True)["policy"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_determinant_3x3_and_kabsch_rotation_are_proper_even_for_a_mirrored_copy():
    from mlpot.pips.geometry import centred, determinant_3x3, kabsch_rotation

    generator = torch.Generator().manual_seed(3)
    matrices = torch.randn(5, 3, 3, generator=generator, dtype=torch.float64)
    assert torch.allclose(determinant_3x3(matrices), torch.linalg.det(matrices), atol=1e-12)
    reference = centred(torch.randn(9, 3, generator=generator, dtype=torch.float64))
    mirrored = reference * torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64)  # no proper rotation maps it back
    rotation = kabsch_rotation(torch.stack([reference @ random_rotation(generator).T, mirrored]), reference)
    assert torch.allclose(torch.linalg.det(rotation), torch.ones(2, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(rotation @ rotation.transpose(-1, -2), torch.eye(3, dtype=torch.float64).expand(2, 3, 3),
                          atol=1e-12)
