"""Stability-aware training (StABlE): find the states where a potential's simulations go unphysical and
fix them with the Boltzmann estimator.

- :mod:`mlpot.stable.estimator` — −β·Cov(w, ∂U/∂θ) in one backward pass of a weighted energy sum
- :mod:`mlpot.stable.evaluation` — time to instability of a model's replicas (``mlpot stable evaluate``)
- :mod:`mlpot.stable.config` — the YAML configuration of a fine-tuning run
- :mod:`mlpot.stable.parent` — the model to fine-tune, from a model file or a training checkpoint
- :mod:`mlpot.stable.energy_force` — the λ-weighted DFT energy/force loss and test errors
- :mod:`mlpot.stable.trainer` — the simulate / learn / resume cycle (``mlpot stable train``)
- :mod:`mlpot.stable.report` — plots of a run
"""
