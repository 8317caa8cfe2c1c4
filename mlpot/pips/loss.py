"""The PICE surrogate loss: one backward pass gives the path-integral cross-entropy gradient.

The gradient of KL(p* ‖ p_θ) with respect to the policy parameters θ, estimated from N weighted
rollouts, is (PICE, Kappen & Ruiz 2016)

    ∇_θ = −(1/λ) Σ_n w_n Σ_s (∂u_θ(x_{n,s}) / ∂θ)ᵀ R dW_{n,s}.

Because the states, weights and noises are data (no gradient flows through the dynamics), this is
the gradient of the scalar surrogate

    L(θ) = −(1/λ) Σ_n w_n Σ_s u_θ(x_{n,s}) · R dW_{n,s}

evaluated with the weights detached: one batched forward pass of the policy over all n × s
recorded states and one backward pass replace n × s vector–Jacobian products.
"""

from __future__ import annotations

import torch

from mlpot.pips.dynamics import Rollout


def policy_controls(policy: torch.nn.Module, rollout: Rollout) -> torch.Tensor:
    """u_θ at every recorded state of ``rollout``, with a graph to θ: (n_paths, n_steps, *dof)."""
    n_paths, n_steps = rollout.n_paths, rollout.n_steps
    dof = rollout.control_positions.shape[2:]
    time_fraction = (rollout.control_times / rollout.duration).repeat(n_paths)
    controls = policy(rollout.control_positions.reshape(n_paths * n_steps, *dof),
                      rollout.control_velocities.reshape(n_paths * n_steps, *dof), time_fraction)
    return controls.reshape(n_paths, n_steps, *dof)


def pice_surrogate_loss(controls: torch.Tensor, noises: torch.Tensor, weights: torch.Tensor,
                        control_weight: torch.Tensor | float, lam: float, baseline: bool = False) -> torch.Tensor:
    """L = −(1/λ) Σ_n w_n Σ_s u_{n,s} · R dW_{n,s}, a scalar whose θ-gradient is the PICE gradient.

    ``controls`` (n_paths, n_steps, *dof) from :func:`policy_controls` (with graph); ``noises``
    the recorded kicks, same shape; ``weights`` (n_paths,) importance weights (detached here);
    ``control_weight`` R broadcasts against (*dof); ``lam`` λ.

    ``baseline``: use w_n − 1/N instead of w_n. The subtracted term, (1/N) Σ_n Σ_s ∂u/∂θ · R dW, has
    expectation zero under the sampling dynamics (each kick is independent of the state the
    control was evaluated at), so the expected gradient is unchanged while the part of the noise
    that carries no information about the target — all of it when the weights are uniform — goes.
    """
    weights = weights.detach()
    if baseline:
        weights = weights - 1.0 / weights.shape[0]
    per_path = (controls * control_weight * noises).flatten(start_dim=1).sum(dim=1)
    return -(weights * per_path).sum() / lam
