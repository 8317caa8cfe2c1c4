"""``mlpot stable train``: fine-tune a trained model so that its simulations stay physical (StABlE).

A run alternates two phases, starting from a parent model (:mod:`mlpot.stable.parent`):

1. **Simulation.** R Nosé–Hoover replicas at the training temperature, started from random frames of
   the DFT training split, run segment by segment (:func:`mlpot.md.stability.run_checked_segment`);
   a replica whose bonds leave the band (0.25 Å by default) is put back to the start of the segment.
   Once 75 % of the replicas have been flagged (or after ``max_simulation_ps``), learning starts.
2. **Learning.** All replicas are rewound to the start of the last segment. Each learning step
   re-simulates that segment with the current model; its frames with bonds within
   ``sample_max_deviation_A`` are the samples of the Boltzmann estimator (:mod:`mlpot.stable.estimator`)
   of the h(r) loss against the DFT reference; λ × the energy/force loss on random DFT training frames
   (:mod:`mlpot.stable.energy_force`) is added; the gradient is clipped and one Adam step taken; the
   per-species reference energies are then re-fitted to those frames' DFT energies (a constant energy
   offset changes no force, so the observable gradient leaves it free to drift). The phase ends once
   the re-simulation has at most ``stop_unstable_fraction`` unstable replicas, or after
   ``max_steps_per_cycle`` steps. The replicas then continue from the rewound states (next cycle).

After ``cycles`` cycles, a last simulation phase measures the fine-tuned model the same way. Every
simulation phase scores the model it ran with: simulated time until learning started (longer is better),
then the fraction flagged (lower is better). ``model.pt`` is the best-scoring model of the run (the
published method also evaluates chosen checkpoints, e.g. the end of the first cycle), ``model_last.pt``
the last one; both carry the parent's provenance plus a ``stable`` record (settings, parent sha256,
selected cycle, scores, errors). Also in ``out``: ``log.csv`` (one row per segment or learning step),
``metrics.json`` and three PNGs.

Exact resume: a checkpoint is written after every segment and learning step; it holds the model,
optimiser, both replica states and the progress (tensors and plain types only: it loads with
``weights_only=True``), and every random choice is a function of (seed, cycle, step), so ``--resume``
takes exactly the steps an uninterrupted run would. Ctrl-C and SIGTERM ask for a stop
(:class:`mlpot.runs.StopRequests`): the unit in progress finishes and is checkpointed, then the run
stops; a second Ctrl-C stops at once and loses only that unit. The run holds
:class:`mlpot.runs.RunLock` on ``out``.

Units: Å, eV, fs (ps in the log), K.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import numpy as np
import torch

from mlpot.data import frames_to_graphs, random_split
from mlpot.data.graphs import Graph
from mlpot.data.readers import read_frames
from mlpot.md.integrators import NoseHooverChain
from mlpot.md.observables import DistanceBins, distance_histogram
from mlpot.md.potential import ReplicaPotential
from mlpot.md.reference import frame_positions, molecule_reference
from mlpot.md.simulator import ReplicaSimulator
from mlpot.md.stability import BondLengthCriterion, molecule_criterion, run_checked_segment
from mlpot.md.state import ReplicaState
from mlpot.runs import (
    RunLock,
    StopRequests,
    atomic_save,
    file_digest,
    read_checkpoint,
    refuse_changed_settings,
    write_csv,
)
from mlpot.stable.config import StableConfig, save_stable_config
from mlpot.stable.energy_force import backward_energy_force_loss, force_errors, refit_energy_references
from mlpot.stable.estimator import ObservableLoss, backward_boltzmann_gradient, loss_weights, squared_error_loss
from mlpot.stable.evaluation import training_split
from mlpot.stable.parent import ParentModel, load_parent
from mlpot.train.loss import LossWeights
from mlpot.units import FS_PER_PS

CHECKPOINT_NAME = "checkpoint.pt"
MODEL_NAME = "model.pt"
LAST_MODEL_NAME = "model_last.pt"
CHECKPOINT_VERSION = 1
CHECKPOINT_KIND = "StABlE"
# settings that may change when a run is resumed; any other change would not continue the same run
RESUMABLE_CHANGES = ("run.cycles", "run.max_minutes", "run.max_time_minutes", "run.threads", "run.device")
WALL_CLOCK_COLUMNS = ("wall_s",)  # the only log columns that differ between a resumed and an uninterrupted run


class StableInterrupted(Exception):
    """A StABlE run stopped by Ctrl-C / SIGTERM; its last checkpoint is kept."""


@dataclass
class StableResult:
    out: Path
    model_path: Path
    cycles_done: int
    learning_steps: int
    stopped_because: str
    metrics: Dict[str, Any]


def observable_loss(kind: str, reference: torch.Tensor, bins: DistanceBins):
    """L(⟨h⟩): ``mse`` Σ_bins (⟨h⟩ − h_ref)² (StABlE's), or ``mae`` ∫|⟨h⟩ − h_ref| dr (the h(r) MAE)."""
    if kind == "mse":
        return squared_error_loss(reference)

    def mae(mean: torch.Tensor) -> torch.Tensor:
        return (mean - reference.to(mean)).abs().sum() * bins.bin_width_A

    return mae


def backward_observable_loss(potential: ReplicaPotential, samples: torch.Tensor,
                             observable: Callable[[torch.Tensor], torch.Tensor], loss: ObservableLoss,
                             temperature_K: float, chunk_size: int = 512) -> float:
    """Accumulate the Boltzmann-estimator gradient of ``loss(⟨observable⟩)`` into the model's ``.grad``.

    ``samples`` ``(S, n_atoms, 3)`` Å are frames simulated with the model at ``temperature_K``;
    ``observable`` maps them to ``(S,)`` or ``(S, K)`` values. Returns the loss of the sample mean.
    """
    weights, value = loss_weights(observable(samples), loss)
    backward_boltzmann_gradient(potential.energies, samples, weights.to(samples.device), temperature_K,
                                chunk_size=chunk_size)
    return float(value)


def _state_dict_of(state: ReplicaState) -> Dict[str, Any]:
    return {f.name: getattr(state, f.name) for f in fields(state)}


class StableTrainer:
    """One StABlE run in ``config.out``; ``resume=True`` continues from its checkpoint."""

    def __init__(self, config: StableConfig, resume: bool = False, quiet: bool = False):
        config.validate()
        self.config = config
        self.resume = resume
        self.quiet = quiet
        self.out = Path(config.out)
        self.device = torch.device(config.run.device)
        if config.run.threads:
            torch.set_num_threads(config.run.threads)
        simulation = config.simulation
        self.steps_per_segment = max(1, int(round(simulation.segment_fs / simulation.timestep_fs)))
        self.record_every = max(1, int(round(simulation.record_every_fs / simulation.timestep_fs)))
        if self.steps_per_segment % self.record_every:
            raise ValueError(f"simulation.segment_fs ({simulation.segment_fs}) must be a multiple of "
                             f"simulation.record_every_fs ({simulation.record_every_fs})")
        self.stops = StopRequests()  # Ctrl-C / SIGTERM (or code: ``trainer.stops.request()``) ask for a stop

    # ------------------------------------------------------------------------------------ setup
    def _data_path(self) -> Path:
        from mlpot.systems import reference_data_file

        return Path(self.config.data.file) if self.config.data.file else reference_data_file(self.config.data.system)

    def _observable_frames(self, frames: list, test: set) -> list:
        """The frames whose h(r) is the reference: ``data.observable_file``'s, else the non-test frames."""
        path = self.config.data.observable_file
        if path is None:
            return [f for k, f in enumerate(frames) if k not in test] or frames
        if not Path(path).is_file():
            raise FileNotFoundError(f"data.observable_file {path} not found")
        reference_frames = read_frames(path)
        if [int(z) for z in reference_frames[0].numbers] != [int(z) for z in frames[0].numbers]:
            raise ValueError(f"data.observable_file {path} holds another molecule than {self.data_path} (its atoms "
                             "differ in number, element or order)")
        return reference_frames

    def _split(self, parent: ParentModel, data_path: Path, n_frames: int) -> tuple[Dict[str, List[int]], str]:
        if parent.split is not None and parent.split_file and Path(parent.split_file).is_file() \
                and file_digest(parent.split_file) == file_digest(str(data_path)):
            return parent.split, "the parent's training checkpoint"
        split = training_split({"provenance": parent.provenance}, data_path, n_frames)
        if split is not None:
            return split, "the parent model's training provenance"
        data = self.config.data
        return random_split(n_frames, data.val_fraction, data.test_fraction, data.split_seed), "a random split"

    def _build(self, state: Optional[Dict[str, Any]]) -> None:
        config = self.config
        self.parent = load_parent(config.parent)
        self.data_path = self._data_path()
        frames = read_frames(self.data_path)
        positions, numbers = frame_positions(frames)
        unknown = sorted(set(numbers.tolist()) - set(self.parent.description["atomic_numbers"]))
        if unknown:
            raise ValueError(f"the parent model does not know the element(s) {unknown} (atomic numbers) of "
                             f"{self.data_path}")
        self.split, self.split_origin = self._split(self.parent, self.data_path, len(frames))
        if not self.split["train"]:
            raise ValueError(f"the split of {self.data_path} has no training frames")
        test = set(self.split["test"])
        learning = config.learning
        self.bins = DistanceBins(learning.r_max_A, learning.bin_width_A, learning.sigma_A)
        self.reference = molecule_reference(self._observable_frames(frames, test), self.bins)
        cutoff = self.parent.description["cutoff"]
        self.train_graphs = frames_to_graphs([frames[k] for k in self.split["train"]], cutoff)
        self.test_graphs = frames_to_graphs([frames[k] for k in self.split["test"]], cutoff)
        self.model = self.parent.model.to(self.device)
        self.potential = ReplicaPotential(self.model, numbers, device=self.device)
        simulation = config.simulation
        integrator = NoseHooverChain(simulation.timestep_fs, simulation.temperature_K,
                                     time_constant_fs=simulation.thermostat_time_constant_fs)
        starts = np.random.default_rng(config.run.seed).choice(
            self.split["train"], size=simulation.replicas, replace=simulation.replicas > len(self.split["train"]))
        self.simulator = ReplicaSimulator.from_positions(self.potential, positions[starts.tolist()], integrator,
                                                         simulation.temperature_K, seed=config.run.seed)
        bonds, lengths = self.reference.bonds.to(self.device), self.reference.bond_lengths_A.to(self.device)
        self.bond_criterion = BondLengthCriterion(bonds, lengths, simulation.threshold_A)
        self.criterion = molecule_criterion(self.potential.n_atoms, bonds, lengths, simulation.threshold_A,
                                            simulation.contact_A)
        self.observable_loss = observable_loss(learning.observable_loss, self.reference.distance_histogram, self.bins)
        self.loss_weights = self._energy_force_weights()
        optimizers = {"adam": torch.optim.Adam, "sgd": torch.optim.SGD}
        self.optimizer = optimizers[learning.optimizer](self.model.parameters(), lr=learning.lr)
        self.learn_start: Optional[ReplicaState] = None
        if state is not None:
            self._load_state(state)
            return
        self.progress: Dict[str, Any] = {
            "cycle": 0, "phase": "simulate", "cycle_time_fs": 0.0, "learn_step": 0, "learning_steps": 0,
            "flagged": [False] * simulation.replicas, "rows": [], "histogram_sum": None, "histogram_frames": 0,
            "cycle_histograms": {}, "elapsed_s": 0.0, "start_frames": starts.tolist(), "scores": {},
            "best_cycle": None, "best_model": None,
            "errors_before": force_errors(self.model, self.test_graphs).result() if self.test_graphs else {},
        }
        self.out.mkdir(parents=True, exist_ok=True)
        save_stable_config(config, self.out / "config.yaml")

    def _energy_force_weights(self) -> LossWeights:
        """The parent's own energy/force/loss settings when its training configuration is known, else the defaults."""
        training = ((self.parent.provenance.get("training") or {}).get("config") or {}).get("training") or {}
        defaults = LossWeights()
        return LossWeights(energy=training.get("energy_weight", defaults.energy),
                           forces=training.get("forces_weight", defaults.forces),
                           kind=training.get("loss", defaults.kind),
                           huber_delta=training.get("huber_delta", defaults.huber_delta))

    # ------------------------------------------------------------------------------- checkpoints
    def _checkpoint_path(self) -> Path:
        return self.out / CHECKPOINT_NAME

    def _read_checkpoint(self) -> Optional[Dict[str, Any]]:
        path = self._checkpoint_path()
        if not self.resume:
            if path.exists():
                raise FileExistsError(f"{self.out} already holds a StABlE run ({CHECKPOINT_NAME}); continue it with "
                                      "--resume or choose another output directory")
            return None
        state = read_checkpoint(path, CHECKPOINT_VERSION, CHECKPOINT_KIND)
        self._check_resumable(state["config"])
        return state

    def _check_resumable(self, saved: Dict[str, Any]) -> None:
        """Every setting but those in ``RESUMABLE_CHANGES`` must match the checkpoint (all differences are
        listed); settings newer than the checkpoint are not compared."""
        def same_keys(now: Any, reference: Any) -> Any:
            if isinstance(now, dict) and isinstance(reference, dict):
                return {key: same_keys(now.get(key), value) for key, value in reference.items()}
            return now

        refuse_changed_settings(saved, same_keys(self.config.to_dict(), saved), f"the StABlE run in {self.out}",
                                ignore=RESUMABLE_CHANGES)

    def _state(self) -> Dict[str, Any]:
        return {
            "checkpoint_version": CHECKPOINT_VERSION,
            "kind": CHECKPOINT_KIND,
            "config": self.config.to_dict(),
            "parent_sha256": self.parent.sha256,
            "model": {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "replicas": _state_dict_of(self.simulator.state),
            "learn_start": None if self.learn_start is None else _state_dict_of(self.learn_start),
            "progress": self.progress,
        }

    def _load_state(self, state: Dict[str, Any]) -> None:
        if state["parent_sha256"] != self.parent.sha256:
            raise ValueError(f"--resume: the parent {self.config.parent} is not the file the run started from "
                             "(sha256 differs)")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.progress = state["progress"]
        to_device = lambda saved: ReplicaState(**{  # noqa: E731
            name: ({k: v.to(self.device) for k, v in value.items()} if isinstance(value, dict)
                   else value.to(self.device))
            for name, value in saved.items()})
        self.simulator.restart_from(to_device(state["replicas"]))
        self.learn_start = None if state["learn_start"] is None else to_device(state["learn_start"])

    def save_checkpoint(self) -> None:
        atomic_save(self._state(), self._checkpoint_path())  # a crash mid-write never destroys the previous one

    # ------------------------------------------------------------------------------------- units
    def _log(self, row: Dict[str, Any]) -> None:
        self.progress["rows"].append(row)
        write_csv(self.progress["rows"], self.out / "log.csv")
        if not self.quiet:
            text = "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items())
            print(text, flush=True)

    def _simulation_segment(self) -> None:
        """One checked segment; flags replicas; hands over to learning at the trigger or the time limit."""
        progress, simulation = self.progress, self.config.simulation
        start = self.simulator.state.clone()
        trajectory, unstable = run_checked_segment(self.simulator, self.steps_per_segment, self.record_every,
                                                   self.criterion)
        flagged = torch.tensor(progress["flagged"]) | unstable.cpu()
        progress["flagged"] = flagged.tolist()
        stable_frames = trajectory.positions[:, ~unstable].reshape(-1, self.potential.n_atoms, 3).cpu()
        if stable_frames.shape[0]:
            histogram = distance_histogram(stable_frames, self.bins).sum(dim=0)
            previous = progress["histogram_sum"]
            progress["histogram_sum"] = histogram if previous is None else previous + histogram
            progress["histogram_frames"] += int(stable_frames.shape[0])
        progress["cycle_time_fs"] += self.steps_per_segment * simulation.timestep_fs
        fraction = float(flagged.double().mean())
        self._log({"cycle": progress["cycle"], "phase": "simulate", "step": progress["learn_step"],
                   "time_ps": progress["cycle_time_fs"] / FS_PER_PS,
                   "unstable_fraction": float(unstable.double().mean()), "unstable_fraction_so_far": fraction,
                   "wall_s": round(progress["elapsed_s"], 2)})
        if fraction >= simulation.unstable_fraction_to_learn or \
                progress["cycle_time_fs"] >= simulation.max_simulation_ps * FS_PER_PS - 1e-6:
            self._end_simulation_phase(start)

    def _end_simulation_phase(self, segment_start: ReplicaState) -> None:
        progress = self.progress
        score = (progress["cycle_time_fs"] / FS_PER_PS, -float(np.mean(progress["flagged"])))
        progress["scores"][progress["cycle"]] = list(score)
        best = progress["best_cycle"]
        if best is None or score >= tuple(progress["scores"][best]):  # ties go to the later (more trained) model
            progress["best_cycle"] = progress["cycle"]
            progress["best_model"] = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}
            progress["best_learning_steps"] = progress["learning_steps"]  # the steps that made the selected model
        if progress["histogram_frames"]:
            mean = progress["histogram_sum"] / progress["histogram_frames"]
            progress["cycle_histograms"][progress["cycle"]] = mean.tolist()
        progress.update(phase="learn", learn_step=0, histogram_sum=None, histogram_frames=0)
        self.learn_start = segment_start

    def _learning_step(self) -> None:
        """Re-simulate the rewound segment, take one clipped optimiser step on the combined gradient."""
        progress, config = self.progress, self.config
        self.simulator.restart_from(self.learn_start.clone())
        trajectory = self.simulator.run(self.steps_per_segment, self.record_every)
        frames = trajectory.positions  # (F, R, n_atoms, 3) Å
        n_frames, n_replicas = frames.shape[:2]
        deviation = self.bond_criterion.max_deviation_A(frames.reshape(1, -1, *frames.shape[2:]))
        deviation = deviation.reshape(n_frames, n_replicas)
        unstable = self.criterion.unstable(torch.cat([frames, self.simulator.state.positions[None]]))
        samples = frames.reshape(-1, *frames.shape[2:])[
            (deviation <= config.learning.sample_max_deviation_A).reshape(-1)]
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        observable_value = math.nan
        if samples.shape[0] >= 2:
            observable_value = backward_observable_loss(
                self.potential, samples, lambda frames: distance_histogram(frames, self.bins).to(frames.device),
                self.observable_loss, config.simulation.temperature_K)
        qm_frames = self._qm_frames()
        qm_value = self._energy_force_gradient(qm_frames)
        clip = config.learning.grad_clip
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip if clip else math.inf)
        if not bool(torch.isfinite(norm)):
            raise FloatingPointError(f"the StABlE gradient became {float(norm)} at cycle {progress['cycle']}, learning "
                                     f"step {progress['learn_step']}; lower learning.lr (the last checkpoint is kept)")
        self.optimizer.step()
        self.model.eval()
        offset = math.nan
        if config.learning.refit_energy_references:
            offset = 1e3 * refit_energy_references(self.model, qm_frames, config.learning.qm_batch_size)
        fraction = float(unstable.double().mean())
        progress["learn_step"] += 1
        progress["learning_steps"] += 1
        self._log({"cycle": progress["cycle"], "phase": "learn", "step": progress["learn_step"],
                   "time_ps": progress["cycle_time_fs"] / FS_PER_PS, "unstable_fraction": fraction,
                   "samples": int(samples.shape[0]), "observable_loss": observable_value, "energy_force_loss": qm_value,
                   "energy_offset_meV_per_atom": offset, "gradient_norm": float(norm),
                   "wall_s": round(progress["elapsed_s"], 2)})
        if (fraction <= config.learning.stop_unstable_fraction
                or progress["learn_step"] >= config.learning.max_steps_per_cycle):
            self._end_cycle()

    def _qm_frames(self) -> List[Graph]:
        """This learning step's DFT training frames: ``qm_frames_per_step`` random ones, a function of
        (seed, cycle, step), or all."""
        learning, progress, graphs = self.config.learning, self.progress, self.train_graphs
        if learning.qm_frames_per_step is not None and learning.qm_frames_per_step < len(graphs):
            rng = np.random.default_rng([self.config.run.seed, progress["cycle"], progress["learn_step"]])
            graphs = [graphs[k] for k in rng.choice(len(graphs), learning.qm_frames_per_step, replace=False)]
        return graphs

    def _energy_force_gradient(self, graphs: List[Graph]) -> float:
        learning = self.config.learning
        if learning.energy_force_weight == 0:
            return math.nan
        return backward_energy_force_loss(self.model, graphs, self.loss_weights, learning.energy_force_weight,
                                          learning.qm_batch_size)

    def _end_cycle(self) -> None:
        """Back to simulation from the rewound states, with the new model's forces."""
        self.progress.update(cycle=self.progress["cycle"] + 1, phase="simulate", cycle_time_fs=0.0, learn_step=0,
                             flagged=[False] * self.config.simulation.replicas)
        self.simulator.restart_from(self.learn_start)
        self.learn_start = None

    # -------------------------------------------------------------------------------------- loop
    def _finished(self) -> bool:
        return self.progress["phase"] == "learn" and self.progress["cycle"] >= self.config.run.cycles

    def _out_of_time(self) -> bool:
        limit = self.config.run.max_minutes
        return limit is not None and self.progress["elapsed_s"] >= 60.0 * limit

    def run(self) -> StableResult:
        """The whole run, holding the lock on ``out``.

        Raises:
            RunLockedError: another process writes into ``out``.
            StableInterrupted: Ctrl-C / SIGTERM (or ``stops.request()``) stopped it; the checkpoint holds the
                last finished segment or learning step.
        """
        with RunLock(self.out):
            state = self._read_checkpoint()
            self._build(state)
            del state
            return self._finish(self._run_units())

    def _run_units(self) -> str:
        """Segments and learning steps, each checkpointed, until the end; returns why they stopped."""
        with self.stops:
            try:
                while not self._finished():
                    if self._out_of_time():
                        return "max_time_minutes"
                    started = time.perf_counter()
                    if self.progress["phase"] == "simulate":
                        self._simulation_segment()
                    else:
                        self._learning_step()
                    self.progress["elapsed_s"] += time.perf_counter() - started
                    self.save_checkpoint()
                    if self.stops.requested is not None:  # only here, where the checkpoint is the whole state
                        raise KeyboardInterrupt
            except KeyboardInterrupt:  # the requested stop, or a second Ctrl-C mid-unit (that unit is lost)
                raise StableInterrupted(
                    f"StABlE stopped in cycle {self.progress['cycle']} ({self.progress['phase']} phase); the "
                    f"checkpoint {self._checkpoint_path()} holds the last finished step; continue with --resume"
                ) from None
        return "cycles"

    # ----------------------------------------------------------------------------------- the end
    def _finish(self, stopped_because: str) -> StableResult:
        from mlpot.deploy import save_model
        from mlpot.stable.report import plot_distance_histograms, plot_force_errors, plot_unstable_fraction

        progress = self.progress
        self.model.eval()
        last = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}
        selected = progress["best_cycle"] if progress["best_model"] is not None else progress["cycle"]
        if progress["best_model"] is not None:
            self.model.load_state_dict(progress["best_model"])
        after = force_errors(self.model, self.test_graphs, keep=True) if self.test_graphs else None
        histograms = progress["cycle_histograms"]
        reference = self.reference.distance_histogram.numpy()
        metrics = {
            "stopped_because": stopped_because, "cycles": progress["cycle"],
            "learning_steps": progress["learning_steps"],
            "wall_s": round(progress["elapsed_s"], 1), "split_from": self.split_origin,
            "split_sizes": {k: len(v) for k, v in self.split.items()}, "selected_cycle": selected,
            "selected_learning_steps": (progress.get("best_learning_steps", progress["learning_steps"])
                                        if progress["best_model"] is not None else progress["learning_steps"]),
            "scores": {int(c): {"time_to_learning_ps": t, "unstable_fraction": -f}
                       for c, (t, f) in progress["scores"].items()},
            "test_errors_before": progress["errors_before"], "test_errors_after": after.result() if after else {},
            "distance_histogram_mae": {int(c): float(np.abs(np.asarray(h) - reference).sum() * self.bins.bin_width_A)
                                       for c, h in histograms.items()},
            "units": {"errors": "meV/Å, meV/atom", "time": "ps"},
        }
        record = {"parent": str(self.parent.path), "parent_sha256": self.parent.sha256,
                  "data_file": {"path": str(self.data_path), "sha256": file_digest(str(self.data_path))},
                  **({"observable_file": {"path": self.config.data.observable_file,
                                          "sha256": file_digest(self.config.data.observable_file)}}
                     if self.config.data.observable_file else {}),
                  "config": self.config.to_dict(), "start_frames": progress["start_frames"], **metrics}
        model_path = self.out / MODEL_NAME
        save_model(self.model.cpu(), self.parent.description, model_path,
                   provenance={**self.parent.provenance, "stable": {**record, "exported_cycle": selected}})
        self.model.load_state_dict(last)
        save_model(self.model, self.parent.description, self.out / LAST_MODEL_NAME,
                   provenance={**self.parent.provenance, "stable": {**record, "exported_cycle": progress["cycle"]}})
        self.model.to(self.device)
        (self.out / "metrics.json").write_text(json.dumps(metrics, indent=1))
        if progress["rows"]:
            plot_unstable_fraction(progress["rows"], self.out / "unstable_fraction.png", selected)
        before_histogram = histograms.get(0)
        after_histogram = histograms.get(selected) if selected != 0 else None
        plot_distance_histograms(self.bins.centres().numpy(), reference,
                                 None if before_histogram is None else np.asarray(before_histogram),
                                 None if after_histogram is None else np.asarray(after_histogram),
                                 self.out / "distance_histogram.png")
        if after is not None:
            before = force_errors(self.parent_model_copy(), self.test_graphs, keep=True)
            plot_force_errors(before.pairs, after.pairs, progress["errors_before"].get("forces_mae", math.nan),
                              metrics["test_errors_after"].get("forces_mae", math.nan), self.out / "force_errors.png")
        return StableResult(self.out, model_path, progress["cycle"], progress["learning_steps"], stopped_because,
                            metrics)

    def parent_model_copy(self) -> torch.nn.Module:
        """A fresh copy of the parent model (its weights as read from the parent file)."""
        return load_parent(self.config.parent).model.to(self.device)


def stable_train(config: StableConfig, resume: bool = False, quiet: bool = False) -> StableResult:
    """Run (or resume) the StABlE fine-tuning ``config`` describes; see the module docstring."""
    return StableTrainer(config, resume=resume, quiet=quiet).run()
