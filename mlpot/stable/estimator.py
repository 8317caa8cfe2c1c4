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

import math
from typing import Callable, Tuple

import torch

from mlpot.units import BOLTZMANN_EV_PER_K

ObservableLoss = Callable[[torch.Tensor], torch.Tensor]


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
    if not (math.isfinite(temperature_K) and temperature_K > 0):
        raise ValueError(f"temperature must be a positive number of K, got {temperature_K!r}")
    if energies_eV.dim() != 1 or weights.shape != energies_eV.shape:
        raise ValueError(f"energies and weights must both have shape (n_samples,); got "
                         f"{tuple(energies_eV.shape)} and {tuple(weights.shape)}")
    n_samples = energies_eV.shape[0]
    if n_samples < 2:
        raise ValueError("the Boltzmann estimator needs at least 2 samples")
    beta = 1.0 / (BOLTZMANN_EV_PER_K * temperature_K)
    centred = (weights - weights.mean()).detach().to(energies_eV)
    return -beta / (n_samples - 1) * (centred * energies_eV).sum()


def observable_loss_surrogate(energies_eV: torch.Tensor, observables: torch.Tensor, loss: ObservableLoss,
                              temperature_K: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(surrogate, loss value)``: call ``surrogate.backward()`` to get ∂L(⟨O⟩)/∂θ in the parameters' ``.grad``.

    ``energies_eV`` ``(S,)`` are the model's energies of the samples (with the graph to θ);
    ``observables`` ``(S,)`` or ``(S, K)`` their observable values; ``loss`` a function of the mean.
    """
    weights, value = loss_weights(observables, loss)
    return boltzmann_surrogate(energies_eV, weights, temperature_K), value
