"""Forces from energies by autograd, usable both inside rollouts (no graph) and in losses (graph kept)."""

from __future__ import annotations

from typing import Callable

import torch


def negative_gradient(energy: Callable[[torch.Tensor], torch.Tensor], positions: torch.Tensor) -> torch.Tensor:
    """−∂(Σ energy(positions))/∂positions, same shape as ``positions``.

    When gradients are enabled by the caller the result keeps its graph (``create_graph``), so a
    loss built from it can be differentiated with respect to the parameters of ``energy``;
    otherwise (e.g. under ``torch.no_grad`` in a rollout) it is a plain tensor.
    """
    keep_graph = torch.is_grad_enabled()
    with torch.enable_grad():
        leaf = positions.detach().requires_grad_(True)
        (gradient,) = torch.autograd.grad(energy(leaf).sum(), leaf, create_graph=keep_graph)
    return -gradient
