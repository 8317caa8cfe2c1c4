"""The replay buffer of the log-variance objective: the most recent finite paths, re-scored under
the current policy at every update (Seong et al., "Transition Path Sampling with Improved
Off-Policy Training of Diffusion Path Samplers", ICLR 2025).

A stored path is what its path cost under *any* policy needs (:func:`mlpot.pips.loss.log_variance_loss`):
the policy's inputs at every step (``control_positions``, ``control_velocities``; the times are
the same for every path), the total controlled kick of every step, u dt + dW_c (fixed by the path,
whatever policy is asked how likely it was), and the terminal cost φ(x_T). Paths are kept first in,
first out, at most ``capacity`` of them.

The per-step tensors are held in **float32**, in memory as in the checkpoint, so a resumed run
re-scores exactly the numbers an uninterrupted one would (float32 rounding of positions in nm and
kicks changes a path cost by ~1e-7 of its spread; the loss upcasts to the policy's dtype). Size:
``capacity`` × n_steps × n_dof × 12 bytes (alanine dipeptide, 64 paths × 500 steps × 66: 25 MB).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict

import torch

from mlpot.pips.dynamics import Rollout

STORED_DTYPE = torch.float32
PER_STEP = ("control_positions", "control_velocities", "kicks")


@dataclass
class ReplayBatch:
    """Paths drawn from the buffer, in the policy's dtype: ``control_positions``, ``control_velocities``
    and ``kicks`` (n, s, *dof), ``control_times`` (s,), ``terminal_cost`` φ (n,), ``timestep``."""

    control_positions: torch.Tensor
    control_velocities: torch.Tensor
    kicks: torch.Tensor
    control_times: torch.Tensor
    terminal_cost: torch.Tensor
    timestep: float

    @property
    def n_paths(self) -> int:
        return self.kicks.shape[0]

    @property
    def n_steps(self) -> int:
        return self.kicks.shape[1]

    @property
    def duration(self) -> float:
        return self.n_steps * self.timestep


class ReplayBuffer:
    """First in, first out store of at most ``capacity`` paths (:mod:`module docstring <mlpot.pips.replay>`)."""

    def __init__(self, capacity: int):
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise ValueError(f"replay_paths must be a positive integer, got {capacity!r}")
        self.capacity = capacity
        self.tensors: Dict[str, torch.Tensor] = {}
        self.control_times: torch.Tensor | None = None
        self.timestep: float | None = None

    def __len__(self) -> int:
        return 0 if not self.tensors else int(self.tensors["terminal_cost"].shape[0])

    def add(self, rollout: Rollout, terminal_cost: torch.Tensor) -> None:
        """Append the paths of ``rollout`` (finite ones only: the caller selects them) with their
        terminal costs φ (n_paths,), dropping the oldest beyond the capacity."""
        new = {"control_positions": rollout.control_positions, "control_velocities": rollout.control_velocities,
               "kicks": rollout.controls * rollout.timestep + rollout.noises}
        new = {name: value.detach().to(STORED_DTYPE) for name, value in new.items()}
        new["terminal_cost"] = terminal_cost.detach().to(torch.float64)
        if self.tensors:
            if new["kicks"].shape[1:] != self.tensors["kicks"].shape[1:]:
                raise ValueError(f"paths of shape {tuple(new['kicks'].shape[1:])} cannot join a replay buffer of "
                                 f"{tuple(self.tensors['kicks'].shape[1:])} (steps, *dof)")
            new = {name: torch.cat([self.tensors[name], value]) for name, value in new.items()}
        self.tensors = {name: value[-self.capacity:].clone() for name, value in new.items()}
        self.control_times = rollout.control_times.detach().to(torch.float64).clone()
        self.timestep = float(rollout.timestep)

    def sample(self, n_paths: int, generator: torch.Generator, dtype: torch.dtype) -> ReplayBatch:
        """``n_paths`` distinct stored paths (all of them when fewer are stored), drawn uniformly
        with ``generator``, as a :class:`ReplayBatch` of ``dtype``."""
        if not self.tensors:
            raise ValueError("the replay buffer is empty")
        chosen = torch.randperm(len(self), generator=generator)[:n_paths]
        per_step = {name: self.tensors[name][chosen].to(dtype) for name in PER_STEP}
        return ReplayBatch(**per_step, control_times=self.control_times.to(dtype),
                           terminal_cost=self.tensors["terminal_cost"][chosen].to(dtype), timestep=self.timestep)

    def state_dict(self) -> Dict:
        """Tensors and plain types (a ``weights_only`` checkpoint entry)."""
        return {"capacity": self.capacity, "tensors": dict(self.tensors), "control_times": self.control_times,
                "timestep": self.timestep}

    def load_state_dict(self, state: Dict) -> None:
        self.capacity = int(state["capacity"])
        self.tensors = dict(state["tensors"])
        self.control_times, self.timestep = state["control_times"], state["timestep"]
