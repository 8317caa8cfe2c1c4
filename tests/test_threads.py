"""The thread policy: as many torch threads as free cores, a warning when others keep cores busy, and the user's
choice kept."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from mlpot import runtime
from mlpot.cli import main
from mlpot.runtime import ThreadDecision, decide_threads


def test_an_idle_machine_gets_one_thread_per_available_core_without_a_warning():
    assert decide_threads(4, 0.2, {}, torch_threads=4, torch_default_threads=4) == ThreadDecision(4)
    assert decide_threads(4, None, {}, torch_threads=4, torch_default_threads=4) == ThreadDecision(4)


def test_affinity_narrower_than_the_machine_caps_the_threads():
    assert decide_threads(2, 0.0, {}, torch_threads=16, torch_default_threads=16) == ThreadDecision(2)


def test_a_busy_core_on_a_two_core_machine_leaves_one_thread_and_says_how_to_override():
    decision = decide_threads(2, 1.0, {}, torch_threads=2, torch_default_threads=2)
    assert decision.threads == 1
    assert "other processes keep 1.0 of the 2 cores" in decision.warning
    assert "using 1 torch thread instead of 2" in decision.warning
    assert all(name in decision.warning for name in ("MLPOT_NUM_THREADS", "OMP_NUM_THREADS", "--threads"))


def test_a_partly_loaded_large_machine_uses_the_free_cores():
    decision = decide_threads(16, 4.2, {}, torch_threads=16, torch_default_threads=16)
    assert decision.threads == 12 and "using 12 torch threads instead of 16" in decision.warning


def test_a_fully_loaded_machine_still_gets_one_thread():
    decision = decide_threads(2, 3.5, {}, torch_threads=2, torch_default_threads=2)
    assert decision.threads == 1 and "keep 2.0 of the 2 cores" in decision.warning


@pytest.mark.parametrize("env", [{"OMP_NUM_THREADS": "2"}, {"MKL_NUM_THREADS": "3"}])
def test_an_explicit_openmp_or_mkl_thread_count_is_left_alone(env):
    assert decide_threads(2, 1.5, env, torch_threads=2, torch_default_threads=2) == ThreadDecision(None)


def test_an_earlier_torch_set_num_threads_is_left_alone():
    assert decide_threads(8, 6.0, {}, torch_threads=3, torch_default_threads=8) == ThreadDecision(None)


def test_mlpot_num_threads_wins_even_on_a_busy_machine():
    env = {"MLPOT_NUM_THREADS": "2", "OMP_NUM_THREADS": "1"}
    assert decide_threads(2, 1.9, env, torch_threads=1, torch_default_threads=2) == ThreadDecision(2)


@pytest.mark.parametrize("value", ["0", "-1", "two"])
def test_a_bad_mlpot_num_threads_is_named(value):
    message = rf"MLPOT_NUM_THREADS \(mlpot --threads\) must be a positive integer, got '{value}'"
    with pytest.raises(ValueError, match=message):
        decide_threads(2, 0.0, {"MLPOT_NUM_THREADS": value}, torch_threads=2, torch_default_threads=2)


def test_configure_threads_applies_mlpot_num_threads_once(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.setattr(runtime, "_threads_configured", False)
    try:
        assert runtime.configure_threads({"MLPOT_NUM_THREADS": "1"}).threads == 1
        assert torch.get_num_threads() == 1
        assert runtime.configure_threads({"MLPOT_NUM_THREADS": "2"}) == ThreadDecision(None)  # once per process
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_the_measured_busy_cores_are_a_fraction_of_the_available_ones():
    busy = runtime.busy_cores_of_other_processes(sample_seconds=0.05)
    assert busy is None or 0.0 <= busy <= runtime.available_cores() + 0.5
    assert 1 <= runtime.available_cores() <= (os.cpu_count() or 1)


def test_cli_threads_zero_is_a_one_line_error(capsys, monkeypatch):
    monkeypatch.setattr(runtime, "_threads_configured", False)
    monkeypatch.delenv("MLPOT_NUM_THREADS", raising=False)
    try:
        assert main(["--threads", "0", "eval", "missing.pt", "--data", "missing.extxyz"]) == 2
    finally:
        os.environ.pop("MLPOT_NUM_THREADS", None)
    message = "mlpot eval: error: MLPOT_NUM_THREADS (mlpot --threads) must be a positive integer, got '0'"
    assert message in capsys.readouterr().err


def _wait_policy_after_importing_mlpot(**env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "MLPOT_PASSIVE_WAIT")}
    clean.update(env)
    code = "import os, mlpot; print(os.environ.get('OMP_WAIT_POLICY', 'unset'))"
    done = subprocess.run([sys.executable, "-c", code], env=clean, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def test_openmp_threads_wait_passively_only_when_asked():
    assert _wait_policy_after_importing_mlpot() == "unset"
    assert _wait_policy_after_importing_mlpot(MLPOT_PASSIVE_WAIT="1") == "PASSIVE"
    assert _wait_policy_after_importing_mlpot(MLPOT_PASSIVE_WAIT="1", OMP_WAIT_POLICY="ACTIVE") == "ACTIVE"
