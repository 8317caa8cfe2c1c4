"""The EMA of the weights: its warm-up, its saved state, and an exported model as good as the live one."""

from __future__ import annotations

import pytest
import torch

from mlpot.models import build_model
from mlpot.train.ema import ExponentialMovingAverage, warmed_up_decay
from mlpot.train.trainer import Trainer
from test_train import tiny_config


def scalar_module(value: float) -> torch.nn.Module:
    module = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        module.weight.fill_(value)
    return module


def test_decay_warms_up_as_one_plus_n_over_ten_plus_n_capped_at_the_configured_decay():
    assert warmed_up_decay(0.99, 0) == 0.0  # the first update copies
    assert warmed_up_decay(0.99, 1) == pytest.approx(2 / 11)
    assert warmed_up_decay(0.99, 10) == pytest.approx(11 / 20)
    assert warmed_up_decay(0.99, 890) == pytest.approx(0.99)  # (1 + n) / (10 + n) reaches 0.99 at n = 890
    assert warmed_up_decay(0.99, 5000) == 0.99
    assert warmed_up_decay(0.5, 3) == pytest.approx(4 / 13) and warmed_up_decay(0.5, 20) == 0.5


def test_updates_follow_the_warmed_up_recursion_from_a_copy_of_the_first_weights():
    ema = ExponentialMovingAverage(scalar_module(123.0), decay=0.9)
    weights = [1.0, 2.0, 4.0, 8.0, 3.0]
    expected = None
    for n, value in enumerate(weights):
        ema.update(scalar_module(value))
        decay = warmed_up_decay(0.9, n)
        expected = value if expected is None else decay * expected + (1 - decay) * value
        assert float(ema.module.weight) == pytest.approx(expected)
    assert ema.updates == len(weights)


def test_state_round_trips_and_an_old_state_without_warmup_keeps_a_constant_decay():
    ema = ExponentialMovingAverage(scalar_module(0.0), decay=0.9)
    for value in (1.0, 2.0, 3.0):
        ema.update(scalar_module(value))
    restored = ExponentialMovingAverage(scalar_module(0.0), decay=0.9)
    restored.load_state_dict(ema.state_dict())
    assert restored.updates == 3 and restored.current_decay() == pytest.approx(4 / 13)

    old = {"module": ema.module.state_dict(), "updates": 3, "decay": 0.9}  # saved before the warm-up existed
    resumed = ExponentialMovingAverage(scalar_module(0.0), decay=0.9)
    resumed.load_state_dict(old)
    assert resumed.current_decay() == 0.9


def test_exported_ema_weights_of_a_short_run_are_as_good_as_the_live_weights(tmp_path):
    """45 steps: without the warm-up the average still held most of the step-1 weights (F MAE 700 vs 380 meV/Å)."""
    trainer = Trainer(tiny_config(tmp_path / "run", epochs=15, lr=0.03), quiet=True)
    trainer.run()
    assert trainer.progress["step"] == 45
    live = trainer.evaluate("train", trainer.model)[1].result()["forces_mae"]
    averaged = trainer.evaluate("train", trainer.ema.module)[1].result()["forces_mae"]
    initial = build_model(trainer.description, seed=trainer.config.model.seed)
    untrained = trainer.evaluate("train", initial)[1].result()["forces_mae"]
    assert live < 0.7 * untrained  # the run learned something, so a lagging average would show
    assert averaged < 1.08 * live
