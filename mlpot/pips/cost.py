"""PICE path cost: terminal costs φ and the path cost S of each rollout.

    S = [ φ(x_T) + Σ_s ( ½ u_sᵀ R u_s dt + u_sᵀ R dW_s ) ] / λ

with the **signed** noise term (the public reference code takes its absolute value, which breaks
the Girsanov identity the weights rest on). u_s is the applied control force, dW_s the recorded
controlled-channel kick (:mod:`mlpot.pips.dynamics`), R the diagonal control weight; with
R = λ/ν (:func:`mlpot.pips.dynamics.control_weight`) exp(−S) is, up to a constant, the density
ratio between the target path measure p_0 · exp(−φ/λ) and the controlled one. φ and λ share the
energy-like unit of the terminal cost.

Terminal costs compare the last frame with the target without reference to orientation or place:
the squared distance for the 2D toys, and for molecules the mean squared pairwise-distance error
(the reference method's choice) or the Kabsch-aligned mean squared deviation. All take final
positions (n_paths, *dof) and return (n_paths,) in squared length units of the positions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from mlpot.pips.geometry import aligned_rmsd, pairwise_distances

TerminalCost = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def squared_distance_to_target(final_positions: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """|x_T − x*|² summed over all coordinates: (n_paths, *dof) and (*dof) → (n_paths,).

    For the 2D toys; not invariant under rotation, so not for molecules."""
    difference = (final_positions - target).flatten(start_dim=1)
    return (difference * difference).sum(dim=1)


def pairwise_distance_error(final_positions: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """mean_{i<j} (|r_i − r_j| − |r*_i − r*_j|)²: (n_paths, n_atoms, 3) and (n_atoms, 3) → (n_paths,)."""
    difference = pairwise_distances(final_positions) - pairwise_distances(target)
    return (difference * difference).mean(dim=-1)


def aligned_squared_deviation(final_positions: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """RMSD² after Kabsch superposition on the target: (n_paths, n_atoms, 3), (n_atoms, 3) → (n_paths,)."""
    return aligned_rmsd(final_positions, target) ** 2


TERMINAL_COSTS: dict[str, TerminalCost] = {
    "squared-distance": squared_distance_to_target,
    "pairwise-distance": pairwise_distance_error,
    "aligned-rmsd": aligned_squared_deviation,
}


@dataclass
class PathCost:
    """Per-path cost and its parts, each (n_paths,): ``total`` = S, ``terminal`` = φ(x_T)/λ,
    ``control`` = Σ ½uᵀRu dt / λ, ``noise`` = Σ uᵀR dW / λ (signed)."""

    total: torch.Tensor
    terminal: torch.Tensor
    control: torch.Tensor
    noise: torch.Tensor


def path_cost(terminal_cost: torch.Tensor, controls: torch.Tensor, noises: torch.Tensor, timestep: float,
              control_weight: torch.Tensor | float, lam: float) -> PathCost:
    """S for each path.

    ``terminal_cost`` φ(x_T) (n_paths,); ``controls`` u and ``noises`` dW (n_paths, n_steps, *dof);
    ``control_weight`` R broadcasts against one configuration (*dof) (diagonal R); ``timestep`` dt;
    ``lam`` λ > 0.
    """
    if lam <= 0:
        raise ValueError(f"lambda must be positive, got {lam}")
    weighted = controls * control_weight
    control = 0.5 * timestep * (weighted * controls).flatten(start_dim=1).sum(dim=1) / lam
    noise = (weighted * noises).flatten(start_dim=1).sum(dim=1) / lam
    terminal = terminal_cost / lam
    return PathCost(total=terminal + control + noise, terminal=terminal, control=control, noise=noise)
