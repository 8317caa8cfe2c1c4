"""PICE training of a control policy, with a checkpoint every iteration: the loop every system shares.

:class:`PiceTrainer` is the loop every system shares; one iteration:

1. ``n_paths`` controlled rollouts with recorded noise (the subclass's :meth:`~PiceTrainer.rollout`:
   torch dynamics for the toys, :mod:`mlpot.pips.toy.trainer`; OpenMM for molecules,
   :mod:`mlpot.pips.molecular.trainer`);
2. path costs S with the subclass's terminal cost φ (:mod:`mlpot.pips.cost`);
3. importance weights and the effective sample size (:mod:`mlpot.pips.weights`); blown-up paths
   (non-finite) get weight 0 and are counted; the weights used for the gradient are tempered
   only when their ESS falls below ``min_ess_fraction`` · N (the logged ESS is the exact one);
4. the PICE surrogate loss (:mod:`mlpot.pips.loss`, with the zero-mean baseline) and one Adam
   step with an exponentially decaying learning rate; an exponential moving average (EMA) of
   the policy weights is updated and is what evaluation samples with;
5. a log row (ESS, the subclass's path summary such as THP, costs, seconds) and ``checkpoint.pt``.

Exact resume: all random numbers of the rollouts come from one ``torch.Generator`` whose state is
checkpointed with the policy, its EMA, the optimiser, the iteration and the log, and the learning
rate is a function of the iteration, so a resumed run takes exactly the iterations an
uninterrupted one would have. The checkpoint holds only tensors and plain types (it loads with
``weights_only=True``). :meth:`PiceTrainer.run` holds :class:`mlpot.runs.RunLock` on the output folder
and lets Ctrl-C / SIGTERM stop it only between iterations (:class:`mlpot.runs.StopRequests`).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import torch

from mlpot.pips.cost import path_cost
from mlpot.pips.dynamics import Rollout
from mlpot.pips.loss import pice_surrogate_loss, policy_controls
from mlpot.pips.weights import effective_sample_size, importance_weights, tempered_weights
from mlpot.runs import RunLock, StopRequests, atomic_save, read_checkpoint, refuse_changed_settings

CHECKPOINT_NAME = "checkpoint.pt"
CHECKPOINT_VERSION = 1
CHECKPOINT_KIND = "PIPS"
NEGLIGIBLE_WEIGHT = 1e-12  # paths below this importance weight are left out of the loss (their share is < N·1e-12)


def parameter_groups(policy: torch.nn.Module) -> List[Dict]:
    """Adam parameter groups of ``policy``, each with an ``lr_scale`` (a multiple of the run's
    learning rate): the policy's own ``parameter_groups()`` when it has one (e.g. a few
    schedule parameters that must move faster than network weights), else one group at scale 1."""
    if hasattr(policy, "parameter_groups"):
        return policy.parameter_groups()
    return [{"params": list(policy.parameters()), "lr_scale": 1.0}]


@dataclass
class PiceTrainConfig:
    """Settings every PICE run has: batch, λ (unit of φ), optimiser, EMA, weight tempering, seed.

    ``min_ess_fraction`` and ``baseline`` are explained in :func:`mlpot.pips.weights.tempered_weights`
    and :func:`mlpot.pips.loss.pice_surrogate_loss`."""

    n_paths: int = 64
    lam: float = 0.01
    hidden: List[int] = field(default_factory=lambda: [64, 64])
    lr: float = 1e-2
    final_lr: Optional[float] = 1e-3  # the learning rate decays exponentially to it over `iterations` (None: constant)
    iterations: int = 300
    seed: int = 0
    controlled_noise_fraction: float = 1.0
    ema_decay: float = 0.95          # the moving average of the policy weights is what samples after training
    min_ess_fraction: float = 0.1    # temper the weights so that their ESS is at least this fraction of n_paths
    baseline: bool = True            # subtract the uniform weights 1/N in the loss (same expected gradient)

    def to_dict(self) -> Dict:
        return dataclasses.asdict(self)

    def validate(self) -> None:
        """Raise ``ValueError`` naming a count that cannot make a run (a run of 0 iterations writes no checkpoint)."""
        for name in ("iterations", "n_paths"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")


@dataclass
class PathEvaluation:
    """What :meth:`PiceTrainer.evaluate` returns for every system: the transition hit probability
    ``thp`` of fresh paths, all their metrics (``metrics``, a flat name → number mapping that
    includes ``thp``; a toy's channel usage, a molecule's RMSD, EPD, ETS, energies in kJ/mol, ...)
    and the paths themselves (``rollout``)."""

    thp: float
    metrics: Dict[str, float]
    rollout: Optional[Rollout] = None


class PipsInterrupted(Exception):
    """A PIPS run stopped by Ctrl-C / SIGTERM between iterations; its checkpoint holds every finished one."""


class PiceTrainer:
    """The PICE loop, checkpoints and resume; subclasses supply :meth:`rollout`, :meth:`terminal_cost`
    and :meth:`summarise`, call ``config.validate()`` first and set ``self.policy`` and
    ``self.control_weight`` before calling :meth:`_start_training` at the end of their ``__init__``."""

    config_type = PiceTrainConfig
    policy: torch.nn.Module
    control_weight: torch.Tensor

    def _start_training(self, config: PiceTrainConfig, out: Path | None, resume: bool) -> None:
        """Optimiser, EMA, generator; the checkpoint's state if ``resume``.

        Raises:
            FileExistsError: ``out`` already holds a run and ``resume`` is False (it is never overwritten).
        """
        self.config = config
        self.out = Path(out) if out is not None else None
        if not resume and self.out is not None and (self.out / CHECKPOINT_NAME).exists():
            raise FileExistsError(f"{self.out} already holds a PIPS run ({CHECKPOINT_NAME}); continue it with "
                                  "--resume or choose another --out")
        from mlpot.train.ema import ExponentialMovingAverage  # here: importing mlpot.train loads the models (e3nn)

        self.optimizer = torch.optim.Adam(parameter_groups(self.policy), lr=config.lr)
        self.average = ExponentialMovingAverage(copy.deepcopy(self.policy), config.ema_decay)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.iteration = 0
        self.log: List[Dict[str, float]] = []
        self.stops = StopRequests()  # Ctrl-C / SIGTERM (or code: ``trainer.stops.request()``) ask for a stop
        if resume:
            self._load_state(read_checkpoint(self._checkpoint_path(), CHECKPOINT_VERSION, CHECKPOINT_KIND))

    @classmethod
    def resume(cls, out: Path, state: Dict | None = None, purpose: str = "--resume"):
        """The run in ``out``, continued from its checkpoint (``state``, when the caller has read it
        already) with the configuration it was started with; ``purpose`` starts error messages."""
        if state is None:
            state = read_checkpoint(Path(out) / CHECKPOINT_NAME, CHECKPOINT_VERSION, CHECKPOINT_KIND, purpose)
        known = {field.name for field in dataclasses.fields(cls.config_type)}
        unknown = sorted(set(state["config"]) - known)
        if unknown:
            raise ValueError(f"{purpose}: {Path(out) / CHECKPOINT_NAME} has setting(s) {', '.join(unknown)} that this "
                             f"mlpot's {cls.config_type.__name__} does not know")
        trainer = cls(cls.config_type(**state["config"]))  # no folder yet: it holds a run, which is not refused here
        trainer.out = Path(out)
        trainer._load_state(state)
        return trainer

    # ---- what a system supplies
    def rollout(self, n_paths: int | None = None, generator: torch.Generator | None = None,
                averaged: bool = False) -> Tuple[Rollout, Dict[str, float]]:
        """Controlled paths and timing/bookkeeping entries for the log."""
        raise NotImplementedError

    def terminal_cost(self, rollout: Rollout) -> torch.Tensor:
        """φ(x_T) (n_paths,) in the unit of λ."""
        raise NotImplementedError

    def summarise(self, rollout: Rollout) -> Dict[str, float]:
        """How good the paths are (THP and the like), for the log."""
        raise NotImplementedError

    def evaluate(self, n_paths: int, seed: int, averaged: bool = True) -> PathEvaluation:
        """THP and metrics of ``n_paths`` fresh paths of the averaged (or current) policy, drawn with
        their own generator from ``seed`` (training's random numbers are untouched)."""
        raise NotImplementedError

    # ---- checkpoints
    def _checkpoint_path(self) -> Path:
        if self.out is None:
            raise ValueError("this trainer has no output folder, so it has no checkpoint")
        return self.out / CHECKPOINT_NAME

    def state(self) -> Dict:
        return {
            "checkpoint_version": CHECKPOINT_VERSION,
            "kind": CHECKPOINT_KIND,
            "config": self.config.to_dict(),
            "policy": self.policy.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "average": self.average.state_dict(),
            "generator": self.generator.get_state(),
            "iteration": self.iteration,
            "log": self.log,
        }

    def _load_state(self, state: Dict) -> None:
        now = {key: value for key, value in self.config.to_dict().items() if key in state["config"]}  # (older runs)
        refuse_changed_settings(state["config"], now, f"the PIPS run in {self.out}")
        self.policy.load_state_dict(state["policy"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.average.load_state_dict(state["average"])
        self.generator.set_state(state["generator"])
        self.iteration = state["iteration"]
        self.log = list(state["log"])

    def save_checkpoint(self) -> None:
        atomic_save(self.state(), self._checkpoint_path())  # a crash mid-write never destroys the previous one

    # ---- steps
    def learning_rate(self, iteration: int) -> float:
        """Adam's step size at (0-based) ``iteration``: ``lr``, decaying exponentially to ``final_lr``."""
        if self.config.final_lr is None:
            return self.config.lr
        progress = min(iteration / max(self.config.iterations - 1, 1), 1.0)
        return self.config.lr * (self.config.final_lr / self.config.lr) ** progress

    def step(self) -> Dict[str, float]:
        """One training iteration; returns (and logs) its row."""
        started = time.perf_counter()
        rollout, rollout_entries = self.rollout()
        rollout_seconds = time.perf_counter() - started
        cost = path_cost(self.terminal_cost(rollout), rollout.controls, rollout.noises, rollout.timestep,
                         self.control_weight, self.config.lam)
        finite = rollout.finite_paths() & torch.isfinite(cost.total)
        if not bool(finite.any()):
            return self._skip_iteration(started, rollout_seconds, rollout_entries, rollout.n_paths)
        ess = effective_sample_size(importance_weights(torch.where(finite, cost.total, torch.inf)))
        tempered = tempered_weights(torch.where(finite, cost.total, torch.inf), self.config.min_ess_fraction)
        # the loss needs every finite path for the baseline, else only those whose weight is not negligible
        in_loss = finite if self.config.baseline else tempered.weights > NEGLIGIBLE_WEIGHT
        kept = rollout.subset(in_loss)
        for group in self.optimizer.param_groups:
            group["lr"] = self.learning_rate(self.iteration) * group.get("lr_scale", 1.0)  # (older checkpoints lack it)
        self.optimizer.zero_grad()
        loss = pice_surrogate_loss(policy_controls(self.policy, kept), kept.noises, tempered.weights[in_loss],
                                   self.control_weight, self.config.lam, baseline=self.config.baseline)
        loss.backward()
        self.optimizer.step()
        self.average.update(self.policy)
        self.iteration += 1
        row = {
            "iteration": self.iteration, "seconds": time.perf_counter() - started, "rollout_seconds": rollout_seconds,
            **rollout_entries,
            "ess": ess.count, "ess_fraction": ess.fraction, "temperature": tempered.temperature,
            **self.summarise(rollout),
            "mean_cost": float(cost.total[finite].mean()), "min_cost": float(cost.total[finite].min()),
            "mean_terminal_cost": float(cost.terminal[finite].mean()),
            "mean_control_cost": float(cost.control[finite].mean()), "loss": float(loss.detach()),
            "paths_in_loss": int(in_loss.sum()), "dropped_paths": int((~finite).sum()),
        }
        return self._record(row)

    def _record(self, row: Dict[str, float]) -> Dict[str, float]:
        """Append a finished iteration's row to the log and checkpoint (when there is an output folder)."""
        self.log.append(row)
        if self.out is not None:
            self.save_checkpoint()
        return row

    def _skip_iteration(self, started: float, rollout_seconds: float, rollout_entries: Dict[str, float],
                        n_paths: int) -> Dict[str, float]:
        """Every path of this iteration blew up: no update (there is nothing to weight), a warning,
        and a log row that counts it; the random numbers moved on, so the next iteration differs."""
        warnings.warn(f"PIPS iteration {self.iteration + 1}: all {n_paths} paths blew up; the policy was not "
                      "updated (if this repeats, lower lr or the force scale)", RuntimeWarning)
        self.iteration += 1
        row = {"iteration": self.iteration, "seconds": time.perf_counter() - started,
               "rollout_seconds": rollout_seconds, **rollout_entries, "ess": 0.0, "ess_fraction": 0.0,
               "thp": 0.0, "mean_cost": float("nan"), "loss": float("nan"), "dropped_paths": n_paths, "skipped": 1}
        return self._record(row)

    def run(self, max_seconds: float | None = None, stop_at_thp: float | None = None, window: int = 5,
            on_iteration: Callable[[Dict[str, float]], None] | None = None) -> List[Dict[str, float]]:
        """Iterate up to ``config.iterations`` (counting resumed ones), ``max_seconds`` of wall time
        (at least one iteration), or until the training paths' THP averaged over the last ``window``
        iterations reaches ``stop_at_thp`` (single iterations fluctuate: one lucky batch is no
        evidence). ``on_iteration`` gets each new log row. With an output folder, holds its lock.

        Raises:
            RunLockedError: another process writes into the output folder.
            PipsInterrupted: Ctrl-C / SIGTERM (or ``stops.request()``); every finished iteration is checkpointed.
        """
        if max_seconds is not None and not max_seconds > 0:
            raise ValueError(f"the time limit must be positive, got {max_seconds} s")
        started = time.perf_counter()
        self.stops.requested = None  # a stop that ended an earlier call does not end this one
        with RunLock(self.out) if self.out is not None else contextlib.nullcontext(), self.stops:
            try:
                while self.iteration < self.config.iterations:
                    row = self.step()
                    if on_iteration is not None:
                        on_iteration(row)
                    if self.stops.requested is not None:  # the iteration is finished and checkpointed
                        raise KeyboardInterrupt
                    recent = [row["thp"] for row in self.log[-window:]]
                    if stop_at_thp is not None and len(recent) == window and sum(recent) / window >= stop_at_thp:
                        break
                    if max_seconds is not None and time.perf_counter() - started > max_seconds:
                        break
            except KeyboardInterrupt:  # the requested stop, or a second Ctrl-C mid-iteration (that one is lost)
                where = f"; {self._checkpoint_path()} holds every finished iteration" if self.out is not None else ""
                raise PipsInterrupted(f"PIPS training stopped{where}") from None
        return self.log
