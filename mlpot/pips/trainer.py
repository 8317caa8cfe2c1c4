"""PICE training of a control policy, with a checkpoint every iteration: the loop every system shares.

:class:`PiceTrainer` is the loop every system shares; one iteration:

1. ``n_paths`` controlled rollouts with recorded noise (the subclass's :meth:`~PiceTrainer.rollout`:
   torch dynamics for the toys, :mod:`mlpot.pips.toy.trainer`; OpenMM for molecules,
   :mod:`mlpot.pips.molecular.trainer`);
2. path costs S with the subclass's terminal cost φ (:mod:`mlpot.pips.cost`);
3. importance weights and the effective sample size (:mod:`mlpot.pips.weights`); blown-up paths
   (non-finite) get weight 0 and are counted; the weights used for the gradient are tempered
   only when their ESS falls below ``min_ess_fraction`` · N (the logged ESS is the exact one);
4. the objective (``objective``):

   - ``pice`` (default): the PICE surrogate loss (:mod:`mlpot.pips.loss`, with the zero-mean
     baseline) of this iteration's paths and one Adam step;
   - ``log-variance``: the finite paths join a replay buffer (:mod:`mlpot.pips.replay`, the last
     ``replay_iterations`` iterations' paths) and ``replay_updates`` Adam steps each take the
     log-variance loss of ``replay_batch`` paths drawn from it, re-scored under the current policy;

   the learning rate decays exponentially; an exponential moving average (EMA) of the policy
   weights is updated once per iteration and is what evaluation samples with;
5. a log row (ESS, the subclass's path summary such as THP, costs, gradient norm, seconds) and
   ``checkpoint.pt``.

Exact resume: all random numbers of the rollouts come from one ``torch.Generator`` whose state is
checkpointed with the policy, its EMA, the optimiser, the replay buffer (log-variance), the
iteration and the log, and the learning rate is a function of the iteration, so a resumed run
takes exactly the iterations an uninterrupted one would have.

An **exported** checkpoint (:meth:`PiceTrainer.export`, ``mlpot pips export``) keeps the policy,
its EMA, the configuration, the log and the system's atoms, but no optimiser, generator or replay
buffer: it samples and reports, and ``--resume`` refuses it (a resumed run would not be the
run it came from). The checkpoint holds only tensors and plain types (it loads with
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
from mlpot.pips.loss import log_variance_loss, pice_surrogate_of_work, policy_controls, policy_work
from mlpot.pips.replay import ReplayBatch, ReplayBuffer
from mlpot.pips.weights import effective_sample_size, importance_weights, tempered_weights
from mlpot.runs import RunLock, StopRequests, atomic_save, read_checkpoint, refuse_changed_settings

CHECKPOINT_NAME = "checkpoint.pt"
CHECKPOINT_VERSION = 1
CHECKPOINT_KIND = "PIPS"
OBJECTIVES = ("pice", "log-variance")
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
    """Settings every PICE run has: batch, λ (unit of φ), optimiser, EMA, weight tempering, seed,
    objective.

    ``min_ess_fraction`` and ``baseline`` (PICE only) are explained in
    :func:`mlpot.pips.weights.tempered_weights` and :func:`mlpot.pips.loss.pice_surrogate_loss`;
    ``objective`` and the ``replay_*`` settings (log-variance only) in this module's docstring."""

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
    objective: str = "pice"          # "pice" or "log-variance" (mlpot.pips.loss)
    replay_iterations: int = 4       # log-variance: the buffer holds the finite paths of the last this many iterations
    replay_batch: Optional[int] = None  # log-variance: paths per update drawn from the buffer (None: n_paths)
    replay_updates: int = 1          # log-variance: Adam steps per iteration, each on its own draw

    def to_dict(self) -> Dict:
        return dataclasses.asdict(self)

    def validate(self) -> None:
        """Raise ``ValueError`` naming a count that cannot make a run (a run of 0 iterations writes no
        checkpoint) or an unknown objective."""
        for name in ("iterations", "n_paths", "replay_iterations", "replay_updates", "replay_batch"):
            value = getattr(self, name)
            if name == "replay_batch" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {', '.join(OBJECTIVES)}, got {self.objective!r}")


@dataclass
class PathEvaluation:
    """What :meth:`PiceTrainer.evaluate` returns for every system: the transition hit probability
    ``thp`` of fresh paths, all their metrics (``metrics``, a flat name → number mapping that
    includes ``thp``; a toy's channel usage, a molecule's RMSD, EPD, ETS, energies in kJ/mol, ...)
    and the paths themselves (``rollout``)."""

    thp: float
    metrics: Dict[str, float]
    rollout: Optional[Rollout] = None


class ExportedRunError(ValueError):
    """A training command was given an exported checkpoint (no optimiser, generator or replay buffer)."""


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
        self.replay = ReplayBuffer(config.replay_iterations * config.n_paths) if config.objective == "log-variance" \
            else None
        self.iteration = 0
        self.log: List[Dict[str, float]] = []
        self.exported = False
        self.stops = StopRequests()  # Ctrl-C / SIGTERM (or code: ``trainer.stops.request()``) ask for a stop
        if resume:
            state = read_checkpoint(self._checkpoint_path(), CHECKPOINT_VERSION, CHECKPOINT_KIND)
            refuse_exported(state, self._checkpoint_path(), "--resume")
            self._load_state(state)

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
        trainer._load_state(state, purpose)
        return trainer

    def system_atoms(self) -> Optional[List[str]]:
        """Labels of the system's particles that a checkpoint records, so that a policy is never loaded
        into another system (molecules: ``residue:atom`` names); None where the name says it all (toys)."""
        return None

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
        state = {
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
        if self.replay is not None:
            state["replay"] = self.replay.state_dict()
        if self.system_atoms() is not None:
            state["atoms"] = self.system_atoms()
        return state

    def exported_state(self) -> Dict:
        """The checkpoint of an exported policy: :meth:`state` without optimiser, generator and replay
        buffer, marked ``exported`` (module docstring)."""
        state = self.state()
        for key in ("optimizer", "generator", "replay"):
            state.pop(key, None)
        state["exported"] = True
        return state

    def export(self, out: Path) -> Path:
        """Write :meth:`exported_state` to ``out``/checkpoint.pt and return its path; ``out`` may exist
        but must not hold a checkpoint (nothing is overwritten)."""
        path = Path(out) / CHECKPOINT_NAME
        if path.exists():
            raise FileExistsError(f"{out} already holds a PIPS run ({CHECKPOINT_NAME}); export into another folder")
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_save(self.exported_state(), path)
        return path

    def _load_state(self, state: Dict, purpose: str = "--resume") -> None:
        where = f"{purpose}: {self.out / CHECKPOINT_NAME if self.out is not None else 'the checkpoint'}"
        now = {key: value for key, value in self.config.to_dict().items() if key in state["config"]}  # (older runs)
        refuse_changed_settings(state["config"], now, f"the PIPS run in {self.out}")
        saved_atoms, atoms = state.get("atoms"), self.system_atoms()
        if saved_atoms is not None and atoms is not None and list(saved_atoms) != atoms:
            raise ValueError(f"{where} holds a policy for {len(saved_atoms)} particles ({_sample(saved_atoms)}), "
                             f"not for {self.config.system} as registered now ({len(atoms)}: {_sample(atoms)})")
        try:
            self.policy.load_state_dict(state["policy"])
            self.average.load_state_dict(state["average"])
        except RuntimeError as error:  # shapes of another system's policy
            lines = [line.strip() for line in str(error).splitlines() if line.strip()]
            detail = lines[1] if len(lines) > 1 else lines[0] if lines else "other parameters"
            raise ValueError(f"{where} holds a policy that does not fit {self.config.system} ({detail[:160]}); "
                             "it was trained on another system") from None
        self.exported = bool(state.get("exported", False))
        if not self.exported:
            self.optimizer.load_state_dict(state["optimizer"])
            self.generator.set_state(state["generator"])
            if self.replay is not None:
                self.replay.load_state_dict(state["replay"])
        self.iteration = state["iteration"]
        self.log = list(state["log"])

    def save_checkpoint(self) -> None:
        if self.exported:
            raise ExportedRunError(f"{self.out} holds an exported policy; it is not trained further")
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
        if self.exported:
            raise ExportedRunError(f"{self.out} holds an exported policy (no optimiser state); it is not trained "
                                   "further")
        started = time.perf_counter()
        rollout, rollout_entries = self.rollout()
        rollout_seconds = time.perf_counter() - started
        terminal = self.terminal_cost(rollout)
        cost = path_cost(terminal, rollout.controls, rollout.noises, rollout.timestep, self.control_weight,
                         self.config.lam)
        finite = rollout.finite_paths() & torch.isfinite(cost.total)
        if not bool(finite.any()):
            return self._skip_iteration(started, rollout_seconds, rollout_entries, rollout.n_paths)
        ess = effective_sample_size(importance_weights(torch.where(finite, cost.total, torch.inf)))
        for group in self.optimizer.param_groups:
            group["lr"] = self.learning_rate(self.iteration) * group.get("lr_scale", 1.0)  # (older checkpoints lack it)
        if self.config.objective == "pice":
            loss, entries = self.pice_loss(rollout, cost.total, finite)
            gradient_norm = self._descend(loss)
        else:
            self.replay.add(rollout.subset(finite), terminal[finite])
            losses, norms = [], []
            for _ in range(self.config.replay_updates):
                batch = self.replay.sample(self.config.replay_batch or self.config.n_paths, self.generator,
                                           rollout.positions.dtype)
                losses.append(self.log_variance_loss(batch))
                norms.append(self._descend(losses[-1]))
            loss, gradient_norm = sum(losses) / len(losses), sum(norms) / len(norms)
            entries = {"temperature": 1.0, "paths_in_loss": batch.n_paths, "replay_paths": len(self.replay)}
        self.average.update(self.policy)
        self.iteration += 1
        row = {
            "iteration": self.iteration, "seconds": time.perf_counter() - started, "rollout_seconds": rollout_seconds,
            **rollout_entries,
            "ess": ess.count, "ess_fraction": ess.fraction, "temperature": entries.pop("temperature"),
            **self.summarise(rollout),
            "mean_cost": float(cost.total[finite].mean()), "min_cost": float(cost.total[finite].min()),
            "mean_terminal_cost": float(cost.terminal[finite].mean()),
            "mean_control_cost": float(cost.control[finite].mean()), "loss": float(loss.detach()),
            "gradient_norm": gradient_norm, **entries, "dropped_paths": int((~finite).sum()),
        }
        return self._record(row)

    def pice_loss(self, rollout: Rollout, cost: torch.Tensor, finite: torch.Tensor) -> Tuple[torch.Tensor, Dict]:
        """The PICE surrogate loss of ``rollout`` (path costs ``cost``, ``finite`` paths) with graph to the
        policy, and the log entries ``temperature`` and ``paths_in_loss``."""
        tempered = tempered_weights(torch.where(finite, cost, torch.inf), self.config.min_ess_fraction)
        # the loss needs every finite path for the baseline, else only those whose weight is not negligible
        in_loss = finite if self.config.baseline else tempered.weights > NEGLIGIBLE_WEIGHT
        kept = rollout.subset(in_loss)
        work = policy_work(self.policy, kept, kept.noises * self.control_weight)
        loss = pice_surrogate_of_work(work, tempered.weights[in_loss], self.config.lam, baseline=self.config.baseline)
        return loss, {"temperature": tempered.temperature, "paths_in_loss": int(in_loss.sum())}

    def log_variance_loss(self, batch: ReplayBatch | Rollout,
                          terminal_cost: torch.Tensor | None = None) -> torch.Tensor:
        """The log-variance loss of ``batch`` under the current policy, with graph: stored paths (a
        :class:`~mlpot.pips.replay.ReplayBatch`) or fresh ones (a Rollout and its ``terminal_cost`` φ)."""
        if isinstance(batch, Rollout):
            kicks, terminal = batch.controls * batch.timestep + batch.noises, terminal_cost
        else:
            kicks, terminal = batch.kicks, batch.terminal_cost
        return log_variance_loss(policy_controls(self.policy, batch), kicks, terminal, batch.timestep,
                                 self.control_weight, self.config.lam)

    def objective_gradient(self, rollout: Rollout) -> torch.Tensor:
        """The gradient (flattened over the policy's parameters) of this run's objective on the fresh
        paths of ``rollout`` alone (log-variance: no buffer), without changing the policy: for
        measuring the estimator's variance across batches."""
        terminal = self.terminal_cost(rollout)
        cost = path_cost(terminal, rollout.controls, rollout.noises, rollout.timestep, self.control_weight,
                         self.config.lam)
        finite = rollout.finite_paths() & torch.isfinite(cost.total)
        parameters = [parameter for parameter in self.policy.parameters() if parameter.requires_grad]
        if self.config.objective == "pice":
            loss = self.pice_loss(rollout, cost.total, finite)[0]
        else:
            loss = self.log_variance_loss(rollout.subset(finite), terminal[finite])
        gradients = torch.autograd.grad(loss, parameters, allow_unused=True)
        return torch.cat([(torch.zeros_like(p) if g is None else g).flatten() for p, g in zip(parameters, gradients)])

    def _descend(self, loss: torch.Tensor) -> float:
        """One Adam step down ``loss``; returns the gradient's norm over all parameters."""
        self.optimizer.zero_grad()
        loss.backward()
        norms = [parameter.grad.detach().norm() for parameter in self.policy.parameters() if parameter.grad is not None]
        self.optimizer.step()
        return float(torch.stack(norms).norm()) if norms else 0.0

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


def _sample(labels: List[str], shown: int = 4) -> str:
    """The first few of ``labels``, for an error message."""
    return ", ".join(labels[:shown]) + (", …" if len(labels) > shown else "")


def refuse_exported(state: Dict, path: Path, purpose: str) -> None:
    """Raise :class:`ExportedRunError` when ``state`` is an exported checkpoint: it cannot be trained further."""
    if state.get("exported"):
        raise ExportedRunError(f"{purpose}: {path} is an exported policy (no optimiser state, generator or replay "
                               "buffer), for `mlpot pips sample` and `report`; continue the run it was exported "
                               "from, or start a new one")
