"""The training objectives: the PICE surrogate loss (one backward pass gives the path-integral
cross-entropy gradient) and the log-variance loss.

The gradient of KL(p* ‖ p_θ) with respect to the policy parameters θ, estimated from N weighted
rollouts, is (PICE, Kappen & Ruiz 2016)

    ∇_θ = −(1/λ) Σ_n w_n Σ_s (∂u_θ(x_{n,s}) / ∂θ)ᵀ R dW_{n,s}.

Because the states, weights and noises are data (no gradient flows through the dynamics), this is
the gradient of the scalar surrogate

    L(θ) = −(1/λ) Σ_n w_n Σ_s u_θ(x_{n,s}) · R dW_{n,s}

evaluated with the weights detached: one batched forward pass of the policy over all n × s
recorded states and one backward pass replace n × s vector–Jacobian products.

The **log-variance** objective (Seong et al., ICLR 2025; ``objective: log-variance``) is the
variance over a batch of paths of the log density ratio log p*(path) − log q_θ(path), which is
−S_θ up to a constant: the PICE path cost (:mod:`mlpot.pips.cost`) with the policy's control
evaluated now. A stored path fixes the controlled kick k = u dt + dW_c of every step; under the
policy θ the same path has control u_θ and noise k − u_θ dt, so

    S_θ = φ(x_T)/λ + Σ_s [ u_θᵀ R k − ½ u_θᵀ R u_θ dt ] / λ,

and the loss Var_n S_θ(path_n) is zero exactly when every path has the same weight, i.e. the
policy samples the target path measure. The paths need not come from the current policy (they
come from a replay buffer, :mod:`mlpot.pips.replay`), and the gradient flows through u_θ in both
terms; no importance weights appear, so a batch with ESS ≈ 1 still gives every path a say.
"""

from __future__ import annotations

import torch

from mlpot.pips.cost import path_cost
from mlpot.pips.dynamics import Rollout
from mlpot.pips.policy import PolicyInputs, splits_inputs


def policy_controls(policy: torch.nn.Module, rollout: Rollout) -> torch.Tensor:
    """u_θ at every recorded state of ``rollout``, with a graph to θ: (n_paths, n_steps, *dof).

    ``rollout`` is a :class:`~mlpot.pips.dynamics.Rollout` or anything with its ``control_positions``,
    ``control_velocities``, ``control_times``, ``n_paths``, ``n_steps`` and ``duration``
    (a :class:`~mlpot.pips.replay.ReplayBatch`). Where the rollout recorded the policy's θ-independent inputs
    (``policy_inputs``, :func:`mlpot.pips.policy.splits_inputs`), the policy is evaluated from them, which gives
    the same controls without computing those inputs again."""
    n_paths, n_steps = rollout.n_paths, rollout.n_steps
    dof = rollout.control_positions.shape[2:]
    inputs = recorded_inputs(policy, rollout)
    if inputs is not None:
        return policy.controls_from_inputs(inputs).reshape(n_paths, n_steps, *dof)
    time_fraction = (rollout.control_times / rollout.duration).repeat(n_paths)
    controls = policy(rollout.control_positions.reshape(n_paths * n_steps, *dof),
                      rollout.control_velocities.reshape(n_paths * n_steps, *dof), time_fraction)
    return controls.reshape(n_paths, n_steps, *dof)


def recorded_inputs(policy: torch.nn.Module, rollout: Rollout) -> PolicyInputs | None:
    """The policy inputs ``rollout`` recorded, flattened over paths and steps (n_paths × n_steps, ...), if it recorded
    any and ``policy`` :func:`~mlpot.pips.policy.splits_inputs`; else None (a ReplayBatch records none)."""
    recorded = getattr(rollout, "policy_inputs", None)
    if recorded is None or not splits_inputs(policy):
        return None
    return {name: value.flatten(0, 1) for name, value in recorded.items()}


def policy_work(policy: torch.nn.Module, rollout: Rollout, directions: torch.Tensor) -> torch.Tensor:
    """Σ_s u_θ(x_{n,s}) · d_{n,s} per path (n_paths,), with a graph to θ; ``directions`` d (n_paths, n_steps,
    *dof) carry none (for PICE, d = R dW).

    From recorded inputs (:func:`policy_controls`) a policy with ``controls_dot`` computes the products itself,
    without forming u (:meth:`mlpot.pips.molecular.policy.AlignedForcePolicy.controls_dot` turns d into the
    network's frame instead of its output into the lab's, so the backward pass runs through the network and one
    product): 0.3 s less per 16 × 1000-step chignolin iteration. Otherwise u from :func:`policy_controls` times d."""
    inputs = recorded_inputs(policy, rollout)
    if inputs is not None and hasattr(policy, "controls_dot"):
        return policy.controls_dot(inputs, directions.flatten(0, 1)).reshape(rollout.n_paths, -1).sum(dim=1)
    return (policy_controls(policy, rollout) * directions).flatten(start_dim=1).sum(dim=1)


def pice_surrogate_loss(controls: torch.Tensor, noises: torch.Tensor, weights: torch.Tensor,
                        control_weight: torch.Tensor | float, lam: float, baseline: bool = False) -> torch.Tensor:
    """L = −(1/λ) Σ_n w_n Σ_s u_{n,s} · R dW_{n,s}, a scalar whose θ-gradient is the PICE gradient.

    ``controls`` (n_paths, n_steps, *dof) from :func:`policy_controls` (with graph); ``noises``
    the recorded kicks, same shape; ``weights`` (n_paths,) importance weights (detached here);
    ``control_weight`` R broadcasts against (*dof); ``lam`` λ; ``baseline``: :func:`pice_surrogate_of_work`.
    """
    work = (controls * control_weight * noises).flatten(start_dim=1).sum(dim=1)
    return pice_surrogate_of_work(work, weights, lam, baseline)


def pice_surrogate_of_work(work: torch.Tensor, weights: torch.Tensor, lam: float,
                           baseline: bool = False) -> torch.Tensor:
    """L = −(1/λ) Σ_n w_n work_n with work_n = Σ_s u_{n,s} · R dW_{n,s} (n_paths,) (:func:`policy_work`, with graph)
    and ``weights`` w (n_paths,) (detached here): :func:`pice_surrogate_loss` from the per-path products.

    ``baseline``: use w_n − 1/N instead of w_n. The subtracted term, (1/N) Σ_n Σ_s ∂u/∂θ · R dW, has
    expectation zero under the sampling dynamics (each kick is independent of the state the
    control was evaluated at), so the expected gradient is unchanged while the part of the noise
    that carries no information about the target — all of it when the weights are uniform — goes.
    """
    weights = weights.detach()
    if baseline:
        weights = weights - 1.0 / weights.shape[0]
    return -(weights * work).sum() / lam


def rescored_path_cost(controls: torch.Tensor, kicks: torch.Tensor, terminal_cost: torch.Tensor, timestep: float,
                       control_weight: torch.Tensor | float, lam: float) -> torch.Tensor:
    """S_θ (n_paths,) of paths whose controlled kicks k = u dt + dW_c (n_paths, n_steps, *dof) are
    fixed, under the controls ``controls`` u_θ (same shape, with graph) of the policy asked now;
    ``terminal_cost`` φ (n_paths,). The :func:`~mlpot.pips.cost.path_cost` of u_θ and dW = k − u_θ dt."""
    return path_cost(terminal_cost, controls, kicks - controls * timestep, timestep, control_weight, lam).total


def log_variance_loss(controls: torch.Tensor, kicks: torch.Tensor, terminal_cost: torch.Tensor, timestep: float,
                      control_weight: torch.Tensor | float, lam: float) -> torch.Tensor:
    """Var_n S_θ = mean_n (S_θ,n − mean_m S_θ,m)²: the log-variance loss (module docstring) of the
    paths whose kicks and terminal costs are given, arguments as :func:`rescored_path_cost`."""
    cost = rescored_path_cost(controls, kicks, terminal_cost, timestep, control_weight, lam)
    centred = cost - cost.mean()
    return (centred * centred).mean()
