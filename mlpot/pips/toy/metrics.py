"""How good a set of toy paths is: the transition hit fraction (THP, a disc around the target
minimum) and, for the double well, which channel the successful paths used."""

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

    ``channels`` (n_paths,) as from :func:`mlpot.pips.toy.systems.double_well_channel`, ``hits`` (n_paths,)
    bool. Both fractions are NaN when no path hit the target."""
    n_hits = int(hits.sum())
    if n_hits == 0:
        return {"upper": float("nan"), "lower": float("nan")}
    return {"upper": int(((channels == 1) & hits).sum()) / n_hits,
            "lower": int(((channels == -1) & hits).sum()) / n_hits}
