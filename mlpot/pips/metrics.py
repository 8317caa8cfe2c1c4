"""How good a set of sampled paths is: pairwise-distance error (EPD), transition-state energy (ETS)
and the work done by the control. The toys' hit test and channel usage are in
:mod:`mlpot.pips.toy.metrics`, the molecular paths' metrics in :mod:`mlpot.pips.molecular.path_metrics`."""

from __future__ import annotations

import torch


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
