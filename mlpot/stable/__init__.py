"""Stability-aware training (StABlE): find the states where a potential's simulations go unphysical and
fix them with the Boltzmann estimator (:mod:`mlpot.stable.estimator`)."""
