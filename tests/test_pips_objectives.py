"""The log-variance objective and its replay buffer: the loss and its gradient, re-scoring stored
paths, exact resume with the buffer in the checkpoint, and the objective setting's refusals."""

from __future__ import annotations

import pytest
import torch

from mlpot.pips.cost import path_cost, squared_distance_to_target
from mlpot.pips.dynamics import control_weight
from mlpot.pips.loss import log_variance_loss, policy_controls, rescored_path_cost
from mlpot.pips.replay import ReplayBuffer
from mlpot.pips.toy.policy import ToyEnergyPolicy, ToyForcePolicy
from mlpot.pips.toy.systems import toy_system
from mlpot.pips.toy.trainer import ToyTrainConfig, ToyTrainer
from test_pips import randomised
from test_pips import small_rollout as toy_rollout


def small_rollout(policy, n_paths=4, n_steps=5, seed=0):
    """A double-well rollout of ``policy``, its Langevin settings and terminal costs φ (n_paths,)."""
    rollout, settings = toy_rollout(policy, n_paths, n_steps, seed)
    target = toy_system("double-well").target_tensor()
    return rollout, settings, squared_distance_to_target(rollout.final_positions, target)


def test_rescoring_a_path_under_the_policy_that_drew_it_gives_its_recorded_cost():
    policy = randomised(ToyForcePolicy(hidden=(6,)).double(), seed=2)
    rollout, settings, terminal = small_rollout(policy)
    weight_R = control_weight(settings, torch.tensor(1.0, dtype=torch.float64), 0.3)
    recorded = path_cost(terminal, rollout.controls, rollout.noises, rollout.timestep, weight_R, 0.3).total
    kicks = rollout.controls * rollout.timestep + rollout.noises
    with torch.no_grad():
        controls = policy_controls(policy, rollout)
        rescored = rescored_path_cost(controls, kicks, terminal, rollout.timestep, weight_R, 0.3)
    torch.testing.assert_close(rescored, recorded)


def gradient(scalar: torch.Tensor, parameters) -> list:
    """∂scalar/∂parameters, zeros for a parameter it does not depend on (an energy policy's last bias)."""
    found = torch.autograd.grad(scalar, parameters, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(parameters, found)]


@pytest.mark.parametrize("policy_type", [ToyForcePolicy, ToyEnergyPolicy])
def test_log_variance_gradient_equals_per_sample_formula(policy_type):
    """∇ Var_n S_n = (2/N) Σ_n (S_n − S̄) ∇S_n, with ∇S_n = Σ_s (∂u_{n,s}/∂θ)ᵀ R (k_{n,s} − u_{n,s} dt) / λ
    taken path by path; the paths were drawn by another policy (off-policy, as from a buffer)."""
    sampler = randomised(policy_type(hidden=(6,)).double(), seed=1)
    rollout, settings, terminal = small_rollout(sampler)
    policy = randomised(policy_type(hidden=(6,)).double(), seed=7)
    lam = 0.7
    weight_R = control_weight(settings, torch.tensor(1.0, dtype=torch.float64), lam)
    kicks = rollout.controls * rollout.timestep + rollout.noises
    parameters = list(policy.parameters())

    loss = log_variance_loss(policy_controls(policy, rollout), kicks, terminal, rollout.timestep, weight_R, lam)
    implemented = gradient(loss, parameters)

    n_paths, dt = rollout.n_paths, rollout.timestep
    with torch.no_grad():
        costs = rescored_path_cost(policy_controls(policy, rollout), kicks, terminal, dt, weight_R, lam)
    expected = [torch.zeros_like(parameter) for parameter in parameters]
    for n in range(n_paths):
        u = policy_controls(policy, rollout.subset([n]))
        gradient_of_u_dot = (u * weight_R * (kicks[n:n + 1] - u.detach() * dt)).sum() / lam  # ∂/∂θ through u only
        per_path = gradient(gradient_of_u_dot, parameters)
        for total, part in zip(expected, per_path):
            total += 2.0 / n_paths * (costs[n] - costs.mean()) * part
    for a, b in zip(implemented, expected):
        torch.testing.assert_close(a, b)
    assert float(loss.detach()) == pytest.approx(float(costs.var(unbiased=False)))


def test_replay_buffer_keeps_the_newest_finite_paths_in_float32_up_to_its_capacity():
    policy = randomised(ToyForcePolicy(hidden=(6,)).double(), seed=3)
    buffer = ReplayBuffer(capacity=6)
    for seed in range(3):
        rollout, _, terminal = small_rollout(policy, seed=seed)
        buffer.add(rollout, terminal)
    assert len(buffer) == 6
    assert all(buffer.tensors[name].dtype == torch.float32 for name in ("control_positions", "kicks"))
    newest, _, _ = small_rollout(policy, seed=2)
    torch.testing.assert_close(buffer.tensors["kicks"][-4:],
                               (newest.controls * newest.timestep + newest.noises).float())
    batch = buffer.sample(10, torch.Generator().manual_seed(0), torch.float64)
    assert batch.n_paths == 6 and batch.kicks.dtype == torch.float64  # all of them, each once
    assert len({float(cost) for cost in batch.terminal_cost}) == 6
    with pytest.raises(ValueError, match="replay_paths must be a positive integer, got 0"):
        ReplayBuffer(0)


def tiny_config(**changes) -> ToyTrainConfig:
    settings = dict(n_paths=8, n_steps=30, hidden=[16], lam=0.01, seed=3, iterations=4, symmetric=True,
                    objective="log-variance", replay_iterations=2, replay_updates=2, replay_batch=6)
    settings.update(changes)
    return ToyTrainConfig(**settings)


def test_log_variance_resume_with_the_replay_buffer_takes_the_same_next_iterations(tmp_path):
    uninterrupted = ToyTrainer(tiny_config())
    for _ in range(4):
        uninterrupted.step()
    first = ToyTrainer(tiny_config(), out=tmp_path)
    first.step()
    first.step()
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert state["replay"]["tensors"]["kicks"].shape == (16, 30, 2)  # 2 iterations × 8 paths
    assert state["replay"]["tensors"]["kicks"].dtype == torch.float32
    resumed = ToyTrainer(tiny_config(), out=tmp_path, resume=True)
    assert len(resumed.replay) == 16 and resumed.iteration == 2
    rows = [resumed.step(), resumed.step()]
    assert rows[-1]["replay_paths"] == 16  # capped: the oldest iteration's paths left
    for row, expected in zip(rows, uninterrupted.log[2:]):
        for key in row:
            if "seconds" not in key:
                assert row[key] == pytest.approx(expected[key], rel=1e-12, abs=1e-12, nan_ok=True), key
    for a, b in zip(resumed.policy.parameters(), uninterrupted.policy.parameters()):
        assert torch.equal(a, b)
    for name, tensor in resumed.replay.tensors.items():
        assert torch.equal(tensor, uninterrupted.replay.tensors[name]), name


def test_log_variance_changes_the_policy_and_pice_runs_keep_no_buffer(tmp_path):
    trainer = ToyTrainer(tiny_config(iterations=2))
    before = [parameter.detach().clone() for parameter in trainer.policy.parameters()]
    row = trainer.step()
    assert row["loss"] > 0 and row["gradient_norm"] > 0 and row["paths_in_loss"] == 6
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.policy.parameters()))
    pice = ToyTrainer(tiny_config(objective="pice"), out=tmp_path)
    pice.step()
    assert pice.replay is None and "replay" not in torch.load(tmp_path / "checkpoint.pt", weights_only=True)


@pytest.mark.parametrize("system", ["double-well", "alanine-dipeptide"])
def test_an_unknown_objective_is_refused_in_one_line_naming_the_allowed_ones(system, tmp_path, capsys):
    from mlpot.cli import main

    out = tmp_path / "run"
    for extra in (["--print-config"], []):
        assert main(["pips", "train", "--system", system, "--out", str(out), "--set", "training.objective=nonsense",
                     *extra]) == 2
        captured = capsys.readouterr()
        assert captured.err == ("mlpot pips: error: objective must be one of pice, log-variance, got 'nonsense'\n")
        assert not out.exists()
    assert main(["pips", "train", "--system", system, "--set", "training.objective=log-variance",
                 "--print-config"]) == 0
    assert "objective: log-variance" in capsys.readouterr().out
