"""How good a set of sampled paths is: transition hit fraction (THP), channel usage, pairwise-distance
error (EPD), transition-state energy (ETS) and the work done by the control."""

from __future__ import annotations

from typing import Dict

import torch


def hits_target(final_positions: torch.Tensor, target: torch.Tensor, radius: float) -> torch.Tensor:
    """(n_paths,) bool: the path ended within ``radius`` of ``target`` (toys: a disc around the minimum).

    ``final_positions`` (n_paths, *dof), ``target`` (*dof); Euclidean distance over all coordinates."""
    distance = torch.linalg.vector_norm((final_positions - target).flatten(start_dim=1), dim=1)
    return distance < radius


def channel_fractions(channels: torch.Tensor, hits: torch.Tensor) -> Dict[str, float]:
    """Fraction of the successful paths that used the upper (+1) and lower (−1) channel.

    ``channels`` (n_paths,) as from :func:`mlpot.pips.toy.double_well_channel`, ``hits`` (n_paths,)
    bool. Both fractions are NaN when no path hit the target."""
    n_hits = int(hits.sum())
    if n_hits == 0:
        return {"upper": float("nan"), "lower": float("nan")}
    return {"upper": int(((channels == 1) & hits).sum()) / n_hits,
            "lower": int(((channels == -1) & hits).sum()) / n_hits}


def pairwise_distance_error_x1000(final_positions_nm: torch.Tensor, target_nm: torch.Tensor) -> torch.Tensor:
    """EPD: 1000 · mean_{i<j} (|r_i − r_j| − |r*_i − r*_j|)² in nm² over all atoms, (n_paths,)
    (the definition used by public evaluation code derived from PIPS; see docs/pips.md)."""
    from mlpot.pips.cost import pairwise_distance_error

    return 1000.0 * pairwise_distance_error(final_positions_nm, target_nm)


def transition_state_energy(path_energies: torch.Tensor, hits: torch.Tensor) -> float:
    """ETS: mean over the successful paths of the maximum potential energy along the path.

    ``path_energies`` (n_paths, n_frames) of the *unbiased* potential, ``hits`` (n_paths,) bool;
    NaN when no path hit."""
    if not bool(hits.any()):
        return float("nan")
    return float(path_energies[hits].max(dim=1).values.mean())


def control_work(positions: torch.Tensor, controls: torch.Tensor) -> torch.Tensor:
    """Work done by the control force along each path, Σ_s u_s · (x_{s+1} − x_s): (n_paths,).

    ``positions`` (n_paths, n_steps + 1, *dof), ``controls`` (n_paths, n_steps, *dof), the force u_s
    applied during step s (the thermal kicks are not part of it). Units: force × length of the
    caller (kJ/mol/nm × nm = kJ/mol for OpenMM rollouts)."""
    displacements = positions[:, 1:] - positions[:, :-1]
    return (controls * displacements).flatten(start_dim=1).sum(dim=1)
