"""Importance weights of the paths and their effective sample size (ESS)."""

from __future__ import annotations

from dataclasses import dataclass

import torch


def importance_weights(cost: torch.Tensor) -> torch.Tensor:
    """w_n = exp(−S_n) / Σ_m exp(−S_m) by a numerically stable softmax: (n_paths,) → (n_paths,).

    Paths whose cost is not finite (a blown-up rollout gives NaN or ±inf) get weight 0; if no path
    has a finite cost a ValueError is raised.
    """
    finite = torch.isfinite(cost)
    if not bool(finite.any()):
        raise ValueError("no path has a finite cost: every rollout blew up")
    logits = torch.where(finite, -cost, torch.full_like(cost, -torch.inf))
    return torch.softmax(logits, dim=0)


@dataclass(frozen=True)
class EffectiveSampleSize:
    """ESS = 1 / Σ w²: ``count`` in [1, N] paths, ``fraction`` = count / N."""

    count: float
    fraction: float


def effective_sample_size(weights: torch.Tensor) -> EffectiveSampleSize:
    """ESS of normalised weights (n_paths,): N for equal weights, 1 when one path carries them all."""
    count = float(1.0 / (weights * weights).sum())
    return EffectiveSampleSize(count=count, fraction=count / weights.shape[0])


@dataclass(frozen=True)
class TemperedWeights:
    """Weights softmax(−S/τ) with the smallest temperature τ ≥ 1 whose ESS reaches a floor."""

    weights: torch.Tensor
    temperature: float


def tempered_weights(cost: torch.Tensor, min_ess_fraction: float, bisection_steps: int = 40) -> TemperedWeights:
    """Importance weights softmax(−S/τ), τ ≥ 1 the smallest temperature with ESS ≥ ``min_ess_fraction`` · N.

    τ = 1 (the exact PICE weights) whenever they already have that ESS; otherwise τ is found by
    bisection on log τ (the ESS of a softmax grows with its temperature). Tempering trades the
    bias of a flattened target for a gradient that averages over more than one or two paths, which
    keeps early iterations, when one lucky path would carry all the weight, from locking the policy
    onto that path's route. ``min_ess_fraction`` 0 switches it off.
    """
    n_paths = cost.shape[0]
    weights = importance_weights(cost)
    target = min_ess_fraction * n_paths
    if effective_sample_size(weights).count >= target:
        return TemperedWeights(weights, 1.0)
    low, high = 0.0, 1.0  # log τ bracket
    while effective_sample_size(importance_weights(cost / torch.exp(torch.tensor(high)))).count < target:
        low, high = high, 2 * high
        if high > 60:
            break
    for _ in range(bisection_steps):
        middle = 0.5 * (low + high)
        if effective_sample_size(importance_weights(cost / torch.exp(torch.tensor(middle)))).count < target:
            low = middle
        else:
            high = middle
    temperature = float(torch.exp(torch.tensor(high)))
    return TemperedWeights(importance_weights(cost / temperature), temperature)
