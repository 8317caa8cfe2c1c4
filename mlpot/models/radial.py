"""Radial building blocks shared by the architectures: distance bases and smooth cutoffs.

Distances in Å. Every function is smooth (C^2 or better) at the cutoff, so energies and forces
go to zero continuously as a neighbour leaves the sphere (needed for energy conservation in MD).
"""

import math

import torch
from torch import nn


class PolynomialCutoff(nn.Module):
    """Envelope ``u(r/r_c)`` of Klicpera et al. (DimeNet), as used by NequIP.

    ``u(x) = 1 - (p+1)(p+2)/2 x^p + p(p+2) x^(p+1) - p(p+1)/2 x^(p+2)`` for ``x < 1``, else 0;
    u, u' and u'' vanish at ``x = 1``.
    """

    def __init__(self, cutoff: float, p: int = 6):
        super().__init__()
        self.cutoff = float(cutoff)
        self.p = float(p)

    def forward(self, distances: torch.Tensor) -> torch.Tensor:
        x = distances / self.cutoff
        p = self.p
        envelope = (
            1.0
            - (p + 1.0) * (p + 2.0) / 2.0 * torch.pow(x, p)
            + p * (p + 2.0) * torch.pow(x, p + 1.0)
            - p * (p + 1.0) / 2.0 * torch.pow(x, p + 2.0)
        )
        return envelope * (x < 1.0).to(distances.dtype)


class BesselBasis(nn.Module):
    """``sqrt(2/r_c) sin(n pi r / r_c) / r`` for n = 1..num_basis (trainable frequencies optional).

    Output shape ``(n_edges, num_basis)``.
    """

    def __init__(self, cutoff: float, num_basis: int = 8, trainable: bool = True):
        super().__init__()
        self.cutoff = float(cutoff)
        self.prefactor = math.sqrt(2.0 / cutoff)
        frequencies = torch.arange(1, num_basis + 1, dtype=torch.get_default_dtype()) * math.pi
        if trainable:
            self.frequencies = nn.Parameter(frequencies)
        else:
            self.register_buffer("frequencies", frequencies)

    def forward(self, distances: torch.Tensor) -> torch.Tensor:
        x = distances.unsqueeze(-1) / self.cutoff
        return self.prefactor * torch.sin(self.frequencies * x) / distances.unsqueeze(-1)
