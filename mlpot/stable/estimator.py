"""The Boltzmann estimator: the gradient of an observable loss with respect to the model parameters.

For samples x_i (i = 1..S) from the Boltzmann distribution of the model's energy U_θ at temperature T,
an ensemble average ⟨O⟩ = ∫ O e^{−βU_θ} / Z has the gradient

    ∂⟨O⟩/∂θ = −β Cov(O, ∂U_θ/∂θ),                                   β = 1 / k_B T.

For a loss L(⟨O⟩) of the average, with v = ∂L/∂⟨O⟩ (a vector over the observable's components),

    ∂L/∂θ = −β Cov(w, ∂U_θ/∂θ),   w_i = v · O(x_i),

and since Σ (w_i − w̄) = 0 this is exactly the gradient of the scalar surrogate

    S(θ) = −β / (S − 1) · Σ_i (w_i − w̄) U_θ(x_i)                   (w treated as constants),

so ONE backward pass of a weighted sum of the sample energies gives the whole estimator — no
per-sample parameter gradients. The surrogate's value is meaningless; only its gradient is.
Other losses (e.g. λ times an energy/force loss) can be added to it before ``backward()``.

Units: energies eV, temperature K. The samples are treated as independent (correlated MD frames
make the estimate noisier, not biased beyond the usual O(1/S)).
"""

from __future__ import annotations

from typing import Callable, Optional, Tuple

import torch

from mlpot.units import BOLTZMANN_EV_PER_K
from mlpot.validation import positive_number

ObservableLoss = Callable[[torch.Tensor], torch.Tensor]


def _positive_temperature(temperature_K: float) -> float:
    return positive_number("temperature", temperature_K, "K")


def squared_error_loss(target: torch.Tensor) -> ObservableLoss:
    """L(⟨O⟩) = Σ_k (⟨O⟩_k − target_k)²: StABlE's loss on h(r) (with v = 2(⟨O⟩ − target))."""
    target = torch.as_tensor(target)

    def loss(mean: torch.Tensor) -> torch.Tensor:
        if mean.shape != target.shape:
            raise ValueError(f"the observable has shape {tuple(mean.shape)} but the target {tuple(target.shape)}")
        return ((mean - target.to(mean)) ** 2).sum()

    return loss


def loss_weights(observables: torch.Tensor, loss: ObservableLoss) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-sample weights w_i = v · O_i with v = ∂L/∂⟨O⟩ at the sample mean, and the loss value.

    Args:
        observables: ``(S,)`` or ``(S, K)`` per-sample observable values O(x_i) (need not be differentiable).
        loss: maps the sample mean ``(K,)`` (or a scalar) to the scalar loss L; must be differentiable.

    Returns:
        ``(weights (S,), loss value ())``, both detached.
    """
    if observables.dim() not in (1, 2) or observables.shape[0] < 2:
        raise ValueError(f"observables must have shape (n_samples, ...) with at least 2 samples, "
                         f"got {tuple(observables.shape)}")
    samples = observables.detach()
    if not bool(torch.isfinite(samples).all()):
        raise ValueError("the observable samples contain NaN or infinite values (drop unstable frames first)")
    with torch.enable_grad():
        mean = samples.mean(dim=0).requires_grad_(True)
        value = loss(mean)
        if value.dim() != 0:
            raise ValueError("the observable loss must return a scalar")
        (direction,) = torch.autograd.grad(value, [mean])
    weights = samples * direction if samples.dim() == 1 else samples @ direction
    return weights, value.detach()


def boltzmann_surrogate(energies_eV: torch.Tensor, weights: torch.Tensor, temperature_K: float) -> torch.Tensor:
    """The scalar whose gradient in θ is −β Cov(w, ∂U/∂θ): ``−β/(S−1) Σ (w_i − w̄) U_θ(x_i)``.

    Args:
        energies_eV: ``(S,)`` U_θ(x_i), eV, carrying the graph to the parameters.
        weights: ``(S,)`` per-sample loss weights (:func:`loss_weights`); detached here.
        temperature_K: the temperature the samples were drawn at, K.
    """
    _positive_temperature(temperature_K)
    if energies_eV.dim() != 1 or weights.shape != energies_eV.shape:
        raise ValueError(f"energies and weights must both have shape (n_samples,); got "
                         f"{tuple(energies_eV.shape)} and {tuple(weights.shape)}")
    n_samples = energies_eV.shape[0]
    if n_samples < 2:
        raise ValueError("the Boltzmann estimator needs at least 2 samples")
    beta = 1.0 / (BOLTZMANN_EV_PER_K * temperature_K)
    return _weighted_energy_sum(energies_eV, (weights - weights.mean()).detach(), beta, n_samples)


def _weighted_energy_sum(energies_eV: torch.Tensor, centred_weights: torch.Tensor, beta: float,
                         n_samples: int) -> torch.Tensor:
    """−β/(S−1) Σ (w_i − w̄) U_i for (part of) S samples whose weights are already centred over all S."""
    return -beta / (n_samples - 1) * (centred_weights.to(energies_eV) * energies_eV).sum()


def observable_loss_surrogate(energies_eV: torch.Tensor, observables: torch.Tensor, loss: ObservableLoss,
                              temperature_K: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(surrogate, loss value)``: call ``surrogate.backward()`` to get ∂L(⟨O⟩)/∂θ in the parameters' ``.grad``.

    ``energies_eV`` ``(S,)`` are the model's energies of the samples (with the graph to θ);
    ``observables`` ``(S,)`` or ``(S, K)`` their observable values; ``loss`` a function of the mean.
    """
    weights, value = loss_weights(observables, loss)
    return boltzmann_surrogate(energies_eV, weights, temperature_K), value


def backward_boltzmann_gradient(energies_of: Callable[[torch.Tensor], torch.Tensor], samples: torch.Tensor,
                                weights: torch.Tensor, temperature_K: float,
                                chunk_size: Optional[int] = None) -> None:
    """Accumulate −β Cov(w, ∂U/∂θ) into the parameters' ``.grad`` (adds to what is there).

    ``energies_of`` maps a chunk of samples (e.g. positions ``(s, n_atoms, 3)`` Å) to their energies
    ``(s,)`` eV with the graph to θ (e.g. ``ReplicaPotential.energies``). The weights are centred over
    all S samples first, so backpropagating the surrogate chunk by chunk (``chunk_size`` samples at a
    time, to bound memory) gives exactly the gradient of one backward pass over all of them
    (``chunk_size=None``, the default).
    """
    n_samples = samples.shape[0]
    if n_samples < 2:
        raise ValueError("the Boltzmann estimator needs at least 2 samples")
    beta = 1.0 / (BOLTZMANN_EV_PER_K * _positive_temperature(temperature_K))
    if weights.shape != (n_samples,):
        raise ValueError(f"need one weight per sample: {tuple(weights.shape)} weights for {n_samples} samples")
    if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError(f"chunk_size must be a positive integer or None, got {chunk_size!r}")
    centred = (weights - weights.mean()).detach()
    size = n_samples if chunk_size is None else chunk_size
    for start in range(0, n_samples, size):
        chunk = slice(start, start + size)
        _weighted_energy_sum(energies_of(samples[chunk]), centred[chunk], beta, n_samples).backward()
