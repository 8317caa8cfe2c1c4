"""Training: config, batched prediction, loss, metrics, the trainer and data-parallel helpers."""

from mlpot.train.config import TrainConfig, apply_override, load_config
from mlpot.train.trainer import Trainer, TrainingInterrupted, TrainResult, train

__all__ = ["TrainConfig", "TrainResult", "Trainer", "TrainingInterrupted", "apply_override", "load_config", "train"]
