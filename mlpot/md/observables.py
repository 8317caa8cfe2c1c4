"""Observables of replica trajectories and of reference data (not differentiable; plain torch).

Shapes: positions ``(..., n_atoms, 3)`` Å — any leading dimensions (frames, replicas) are kept.
Lengths in Å, velocities in Å/fs.

* :func:`distance_histogram` — h(r), the distribution of all interatomic distances of a frame
  (no shell-volume normalisation), smoothed with Gaussians, normalised to ∫h dr = 1 (1/Å). The
  StABlE training observable; reference from DFT frames with the same smoothing.
* :func:`covalent_bonds`, :func:`bond_lengths` — the bond graph of a reference structure and the
  bond lengths of any frame; instability criteria use their deviation (:mod:`mlpot.md.stability`).
* :func:`radial_distribution` — g(r) of a periodic system (minimum image through the one neighbour list).
* :func:`velocity_autocorrelation` — normalised VACF per replica.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from mlpot.neighbors import edge_vectors, neighbor_pairs
from mlpot.validation import positive_number


@dataclass(frozen=True)
class DistanceBins:
    """Bin centres ``linspace(0, r_max, n)`` Å with spacing ``bin_width_A`` and Gaussian width ``sigma_A``.

    StABlE's settings (aspirin): r_max 10 Å, bin width 0.02 Å, σ 0.01 Å.
    """

    r_max_A: float = 10.0
    bin_width_A: float = 0.02
    sigma_A: float = 0.01

    def __post_init__(self):
        for name in ("r_max_A", "bin_width_A", "sigma_A"):
            positive_number(name, getattr(self, name), "Å")
        if self.bin_width_A >= self.r_max_A:
            raise ValueError(f"bin_width_A ({self.bin_width_A}) must be smaller than r_max_A ({self.r_max_A})")

    def centres(self, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """Bin centres ``(n_bins,)`` Å."""
        n_bins = int(round(self.r_max_A / self.bin_width_A)) + 1
        return torch.linspace(0.0, self.r_max_A, n_bins, dtype=dtype, device=device)


def _check_positions(positions: torch.Tensor) -> None:
    if positions.dim() < 2 or positions.shape[-1] != 3:
        raise ValueError(f"positions must have shape (..., n_atoms, 3) Å, got {tuple(positions.shape)}")


def pair_distances(positions: torch.Tensor) -> torch.Tensor:
    """Distances of all pairs i < j, ``(..., n_atoms (n_atoms − 1) / 2)`` Å (no periodic images)."""
    _check_positions(positions)
    n_atoms = positions.shape[-2]
    first, second = torch.triu_indices(n_atoms, n_atoms, offset=1, device=positions.device)
    return torch.linalg.norm(positions[..., second, :] - positions[..., first, :], dim=-1)


def distance_histogram(positions: torch.Tensor, bins: DistanceBins = DistanceBins(),
                       chunk_size: int = 256) -> torch.Tensor:
    """Gaussian-smoothed distribution of all pair distances per frame, ``(..., n_bins)`` in 1/Å.

    Each pair distance d contributes ``N(r; d, σ²)``; each frame's h is normalised to ∫h dr = 1
    (sum · bin width). Frames are processed ``chunk_size`` at a time to bound memory. A frame with
    non-finite positions gives NaN.
    """
    distances = pair_distances(positions)
    leading = distances.shape[:-1]
    flat = distances.reshape(-1, distances.shape[-1])
    centres = bins.centres(positions.device, positions.dtype)
    pieces = []
    for start in range(0, flat.shape[0], chunk_size):
        chunk = flat[start:start + chunk_size]
        weights = torch.exp(-0.5 * ((centres[None, None, :] - chunk[..., None]) / bins.sigma_A) ** 2).sum(dim=1)
        pieces.append(weights / (weights.sum(dim=-1, keepdim=True) * bins.bin_width_A))
    return torch.cat(pieces).reshape(*leading, centres.shape[0])


def histogram_mae(histogram: torch.Tensor, reference: torch.Tensor, bins: DistanceBins) -> torch.Tensor:
    """∫|h − h_ref| dr (dimensionless, 0..2) over the last axis; StABlE's h(r) MAE."""
    if histogram.shape[-1] != reference.shape[-1]:
        raise ValueError(f"histograms have {histogram.shape[-1]} and {reference.shape[-1]} bins")
    return (histogram - reference).abs().sum(dim=-1) * bins.bin_width_A


def covalent_bonds(atomic_numbers, positions: torch.Tensor, tolerance: float = 1.2) -> torch.Tensor:
    """Bonds ``(n_bonds, 2)`` (i < j) of one reference structure ``(n_atoms, 3)`` Å: pairs closer than
    ``tolerance`` × the sum of their covalent radii (ASE's table)."""
    from ase.data import covalent_radii

    positions = torch.as_tensor(positions, dtype=torch.float64)
    if positions.dim() != 2 or positions.shape[-1] != 3:
        raise ValueError(f"the reference structure must have shape (n_atoms, 3) Å, got {tuple(positions.shape)}")
    numbers = torch.as_tensor(atomic_numbers, dtype=torch.long).cpu()
    if numbers.shape != (positions.shape[0],):
        raise ValueError(f"need one atomic number per atom: {numbers.numel()} numbers for {positions.shape[0]} atoms")
    if not tolerance > 0:
        raise ValueError(f"the bond tolerance must be positive, got {tolerance}")
    radii = torch.as_tensor(covalent_radii[numbers.numpy()], dtype=torch.float64, device=positions.device)
    first, second = torch.triu_indices(len(numbers), len(numbers), offset=1, device=positions.device)
    distances = torch.linalg.norm(positions[second] - positions[first], dim=-1)
    bonded = distances < tolerance * (radii[first] + radii[second])
    bonds = torch.stack([first[bonded], second[bonded]], dim=1)
    if bonds.shape[0] == 0:
        raise ValueError("the reference structure has no covalent bonds (are its positions in Å?)")
    return bonds


def bond_lengths(positions: torch.Tensor, bonds: torch.Tensor) -> torch.Tensor:
    """Lengths ``(..., n_bonds)`` Å of ``bonds`` ``(n_bonds, 2)`` in ``positions`` ``(..., n_atoms, 3)`` Å."""
    _check_positions(positions)
    bonds = bonds.to(positions.device)
    if bonds.dim() != 2 or bonds.shape[1] != 2 or int(bonds.max()) >= positions.shape[-2]:
        raise ValueError(f"bonds must be (n_bonds, 2) atom indices below {positions.shape[-2]}")
    return torch.linalg.norm(positions[..., bonds[:, 1], :] - positions[..., bonds[:, 0], :], dim=-1)


def radial_distribution(positions: torch.Tensor, cell: torch.Tensor, bins: DistanceBins,
                        first_atoms: torch.Tensor | None = None,
                        second_atoms: torch.Tensor | None = None) -> torch.Tensor:
    """Radial distribution function g(r) ``(n_bins,)`` of a periodic system, averaged over frames.

    Args:
        positions: ``(n_frames, n_atoms, 3)`` Å (or ``(n_atoms, 3)``).
        cell: ``(3, 3)`` Å, periodic along all axes; ``bins.r_max_A`` must not exceed half its width.
        first_atoms, second_atoms: bool masks ``(n_atoms,)`` of the two species (default: all atoms),
            e.g. O–O or O–H.

    Pairs are found with the one neighbour list and histogrammed with Gaussian smoothing σ; each bin
    is divided by the ideal-gas count ρ_second · 4πr² dr per first atom.
    """
    if positions.dim() == 2:
        positions = positions[None]
    _check_positions(positions)
    n_atoms = positions.shape[-2]
    cell = torch.as_tensor(cell, dtype=positions.dtype, device=positions.device)
    pbc = torch.ones(3, dtype=torch.bool)
    all_atoms = torch.ones(n_atoms, dtype=torch.bool, device=positions.device)
    first = all_atoms if first_atoms is None else first_atoms.to(positions.device)
    second = all_atoms if second_atoms is None else second_atoms.to(positions.device)
    centres = bins.centres(positions.device, positions.dtype)
    counts = torch.zeros_like(centres)
    for frame in positions:
        edge_index, shifts = neighbor_pairs(frame, cell, pbc, bins.r_max_A)
        keep = first[edge_index[0]] & second[edge_index[1]]
        distances = torch.linalg.norm(edge_vectors(frame, cell, edge_index[:, keep], shifts[keep]), dim=-1)
        gaussians = torch.exp(-0.5 * ((centres[None, :] - distances[:, None]) / bins.sigma_A) ** 2)
        counts = counts + gaussians.sum(dim=0) / (math.sqrt(2 * math.pi) * bins.sigma_A)
    volume = torch.abs(torch.linalg.det(cell))
    density_second = second.sum() / volume
    shell = 4.0 * math.pi * centres.clamp_min(bins.bin_width_A / 2) ** 2
    return counts / (positions.shape[0] * first.sum() * density_second * shell)


def velocity_autocorrelation(velocities: torch.Tensor, max_lag: int) -> torch.Tensor:
    """Normalised velocity autocorrelation ``(..., max_lag + 1)`` of velocities ``(n_frames, ..., n_atoms, 3)``.

    C(τ) = ⟨v(t)·v(t+τ)⟩ / ⟨v(t)·v(t)⟩, averaged over atoms and time origins t, separately for every
    leading index after the frame axis (e.g. per replica). Lags are in frames.
    """
    if velocities.dim() < 3 or velocities.shape[-1] != 3:
        raise ValueError(f"velocities must have shape (n_frames, ..., n_atoms, 3), got {tuple(velocities.shape)}")
    n_frames = velocities.shape[0]
    if not isinstance(max_lag, int) or not 0 <= max_lag < n_frames:
        raise ValueError(f"max_lag must be an integer in 0..{n_frames - 1} frames, got {max_lag!r}")
    correlations = []
    for lag in range(max_lag + 1):
        products = (velocities[: n_frames - lag] * velocities[lag:]).sum(dim=-1)  # (n_frames - lag, ..., n_atoms)
        correlations.append(products.mean(dim=(0, -1)))
    vacf = torch.stack(correlations, dim=-1)
    return vacf / vacf[..., :1]
