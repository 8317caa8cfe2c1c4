"""Exponential moving average of model weights, used for validation and export.

``ema = decay * ema + (1 - decay) * weights`` after every optimiser step, with the first update a
plain copy. (``torch.optim.swa_utils.AveragedModel`` does the same but deep-copies the model,
which e3nn's scripted functions do not allow; here the averaged copy is a second model built
from the same description.)
"""

from __future__ import annotations

from typing import Dict

import torch


class ExponentialMovingAverage:
    """Keeps ``module`` (a separate model of the same architecture) as the EMA of a training model."""

    def __init__(self, module: torch.nn.Module, decay: float):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {decay}")
        self.module = module
        self.decay = decay
        self.updates = 0
        for parameter in self.module.parameters():
            parameter.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        decay = self.decay if self.updates > 0 else 0.0
        for averaged, current in zip(self.module.state_dict().values(), model.state_dict().values()):
            if averaged.is_floating_point():
                averaged.mul_(decay).add_(current.detach(), alpha=1.0 - decay)
            else:
                averaged.copy_(current)
        self.updates += 1

    def state_dict(self) -> Dict:
        return {"module": self.module.state_dict(), "updates": self.updates, "decay": self.decay}

    def load_state_dict(self, state: Dict) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])
