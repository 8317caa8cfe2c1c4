"""Exponential moving average of model weights, used for validation and export.

After every optimiser step ``ema = d_n * ema + (1 - d_n) * weights`` with a warm-up of the decay,

    d_n = min(decay, (1 + n) / (10 + n)),    n = the number of updates made before this one,

and the first update (n = 0) a plain copy. Without the warm-up a decay of 0.99 keeps the first
few hundred steps' (bad) weights in the average for most of a short run: an 11-epoch ethanol run
exported a model with 5x the force error its progress bar showed for the live weights.
(``torch.optim.swa_utils.AveragedModel`` would deep-copy the model, which e3nn's scripted
functions do not allow; here the averaged copy is a second model built from the same description.)
"""

from __future__ import annotations

from typing import Dict

import torch


def warmed_up_decay(decay: float, updates_so_far: int) -> float:
    """The decay used for update number ``updates_so_far`` (0-based): 0 for the first, then the warm-up above."""
    if updates_so_far <= 0:
        return 0.0
    return min(decay, (1.0 + updates_so_far) / (10.0 + updates_so_far))


class ExponentialMovingAverage:
    """Keeps ``module`` (a separate model of the same architecture) as the EMA of a training model."""

    def __init__(self, module: torch.nn.Module, decay: float):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {decay}")
        self.module = module
        self.decay = decay
        self.updates = 0
        self.warmup = True  # False only for a state saved before the warm-up existed (constant decay)
        for parameter in self.module.parameters():
            parameter.requires_grad_(False)

    def current_decay(self) -> float:
        """The decay the next :meth:`update` will use."""
        if self.updates <= 0:
            return 0.0
        return warmed_up_decay(self.decay, self.updates) if self.warmup else self.decay

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        decay = self.current_decay()
        for averaged, current in zip(self.module.state_dict().values(), model.state_dict().values()):
            if averaged.is_floating_point():
                averaged.mul_(decay).add_(current.detach(), alpha=1.0 - decay)
            else:
                averaged.copy_(current)
        self.updates += 1

    def state_dict(self) -> Dict:
        return {"module": self.module.state_dict(), "updates": self.updates, "decay": self.decay, "warmup": self.warmup}

    def load_state_dict(self, state: Dict) -> None:
        """Restore a state; one saved before the warm-up existed (no ``warmup`` key) keeps a constant decay."""
        self.module.load_state_dict(state["module"])
        self.updates = int(state.get("updates", 1))
        self.warmup = bool(state.get("warmup", False))
