"""``mlpot train``: from a config to a deployed model file, with checkpoints and exact resume.

The run, in order (every step is a small function below):

1. read and validate the data (:mod:`mlpot.data`), split it (saved as ``split.json``);
2. statistics of the training split → per-species reference energies (``energy_shift``), force
   RMS (``energy_scale``) and the average neighbour count, written into the model description;
3. build the model (:func:`mlpot.models.build_model`) and precompute every frame's neighbour graph;
4. epochs of Adam/AdamW steps on the weighted energy/force/stress loss (:mod:`mlpot.train.loss`),
   with linear learning-rate warm-up, gradient clipping and an exponential moving average (EMA) of
   the weights; after each epoch the EMA weights are validated, ReduceLROnPlateau and early stopping
   look at the validation loss, a CSV row is written and ``checkpoint.pt`` is saved;
5. the best EMA weights are evaluated on the test split and exported with
   :func:`mlpot.deploy.save_model` (training provenance in the metadata), with ``metrics.json``,
   ``log.csv``, ``learning_curve.png`` and ``parity_test.png``.

Exact resume: the batch order of epoch k is a function of (seed, k) only, and the checkpoint
holds the model, optimiser, scheduler, EMA, RNG states and the position inside the epoch, so a run
stopped and resumed with ``--resume`` takes exactly the steps an uninterrupted run would have. Ctrl-C
and SIGTERM only ask for a stop (:class:`mlpot.runs.StopRequests`): the loop finishes the batch in
progress and its bookkeeping, saves the checkpoint and stops; a second Ctrl-C stops at once, and the
checkpoint of the last finished epoch is kept. The checkpoint holds only tensors and plain types
(it loads with ``weights_only=True``), and the run holds :class:`mlpot.runs.RunLock` on ``out``.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np
import torch

from mlpot import runtime
from mlpot.data import (
    Frame,
    check_split,
    collate,
    compute_statistics,
    frames_to_graphs,
    random_split,
    read_index_file,
    read_many,
    save_split,
    validate_frames,
)
from mlpot.data.graphs import Graph
from mlpot.data.statistics import DatasetStatistics
from mlpot.data.validate import require_species_in_training
from mlpot.models import DTYPES, atomic_numbers_of, build_model, describe
from mlpot.runs import (
    RunLock,
    StopRequests,
    atomic_save,
    file_digest,
    read_checkpoint,
    refuse_changed_settings,
    restore_rng_state,
    rng_state,
    write_csv,
)
from mlpot.train import distributed, finetune
from mlpot.train.config import ModelConfig, TrainConfig, save_config
from mlpot.train.ema import ExponentialMovingAverage
from mlpot.train.loss import LossWeights, combine, loss_terms
from mlpot.train.metrics import ErrorAccumulator
from mlpot.train.predict import predict_batch
from mlpot.train.report import plot_learning_curve, plot_parity

CHECKPOINT_NAME = "checkpoint.pt"
MODEL_NAME = "model.pt"
CHECKPOINT_VERSION = 1
CHECKPOINT_KIND = "training"
# settings that may change when a run is resumed (in any section); any other change would not continue the same run
RESUMABLE_CHANGES = ("epochs", "max_minutes", "max_time_minutes", "early_stopping_patience", "device", "threads")
COMPARED_SECTIONS = ("data", "model", "training")


class TrainingInterrupted(Exception):
    """Training stopped by Ctrl-C / SIGTERM; its checkpoint is on disk."""


class _StopRequested(Exception):
    """Raised by the loop at a consistent point once a stop was requested."""


@dataclass
class TrainResult:
    out: Path
    model_path: Path | None
    epochs_done: int
    stopped_because: str
    metrics: Dict[str, Dict[str, float]]


# ----------------------------------------------------------------------------------------- data
def stress_weight_for(config: TrainConfig, frames: Sequence[Frame], quiet: bool = False) -> float:
    """The stress loss weight: ``training.stress_weight`` when set. When not set (None) and periodic frames carry
    stress labels, stress is weighted as the virial per atom (σ·V/N, eV/atom) would be next to the per-atom
    energy: ``energy_weight × mean((V/N)²)`` over those frames, V/N in Å³ per atom; else 0. Stress labels that
    an explicit weight of 0 leaves unused are announced on stderr."""
    labelled = [frame for frame in frames if frame.stress is not None and bool(np.all(frame.pbc))]
    weight = config.training.stress_weight
    if weight is None:
        volumes_per_atom = [abs(float(np.linalg.det(frame.cell))) / len(frame.numbers) for frame in labelled]
        weight = config.training.energy_weight * float(np.mean(np.square(volumes_per_atom))) if labelled else 0.0
        if labelled and not quiet:
            print(f"training.stress_weight not set: {len(labelled)} periodic frames carry stress labels, so stress "
                  f"is trained with weight {weight:.4g} (the virial per atom weighted as the energy per atom)",
                  file=sys.stderr)
    elif weight == 0 and labelled:
        print(f"warning: {len(labelled)} periodic frames carry stress labels, but training.stress_weight is 0, so "
              "stress is not trained (leave the key unset or give it a positive weight)", file=sys.stderr)
    return float(weight)


def load_frames(config: TrainConfig, stress_weight: float | None = None,
                quiet: bool = False) -> tuple[List[Frame], List[int], float]:
    """All frames of ``config.data.files`` validated, the model's atomic numbers, and the stress loss weight
    (``stress_weight`` if given, else :func:`stress_weight_for`); periodic frames need stress labels when it
    is positive."""
    data = config.data
    if not data.files:
        raise ValueError("no training data: set data.files in the config or pass --data FILE")
    frames = read_many(data.files, data.spec())
    if config.model.species:
        numbers = atomic_numbers_of(config.model.species)
    else:
        numbers = sorted({int(z) for frame in frames for z in frame.numbers if 1 <= z <= 118})
    if stress_weight is None:
        stress_weight = stress_weight_for(config, frames, quiet)
    validate_frames(frames, numbers, need_stress=stress_weight > 0, check_units=data.check_units)
    return frames, numbers, stress_weight


def make_split(config: TrainConfig, n_frames: int) -> Dict[str, List[int]]:
    data = config.data
    files = {"train": data.train_indices, "val": data.val_indices, "test": data.test_indices}
    if any(files.values()):
        if not files["train"]:
            raise ValueError("explicit index files need at least data.train_indices")
        split = {name: read_index_file(path) if path else [] for name, path in files.items()}
    else:
        split = random_split(n_frames, data.val_fraction, data.test_fraction, data.split_seed)
    check_split(split, n_frames)
    return split


# ------------------------------------------------------------------------------------ the trainer
class Trainer:
    """One training run in ``config.out``. ``resume=True`` continues from its ``checkpoint.pt``."""

    def __init__(self, config: TrainConfig, resume: bool = False, quiet: bool = False):
        self.config = config
        self.resume = resume
        self.quiet = quiet
        self.out = Path(config.out)
        self.device = distributed.local_device(config.training.device)
        self.group = distributed.init_process_group(self.device)
        if config.training.threads:
            torch.set_num_threads(config.training.threads)
        self.stops = StopRequests()  # Ctrl-C / SIGTERM (or code: ``trainer.stops.request()``) ask for a stop
        self.time_is_up = False  # set within one optimiser step of max_minutes (final evaluation included)
        self._evaluation_s_per_frame: float | None = None
        self.graphs: Dict[str, List[Graph]] = {}

    # ---- setup
    def _checkpoint_path(self) -> Path:
        return self.out / CHECKPOINT_NAME

    def _prepare_directory(self) -> Dict | None:
        checkpoint_path = self._checkpoint_path()
        if self.resume:
            state = read_checkpoint(checkpoint_path, CHECKPOINT_VERSION, CHECKPOINT_KIND)
            self._check_resumable(state["config"])
            return state
        if checkpoint_path.exists():
            raise FileExistsError(
                f"{self.out} already holds a training run ({CHECKPOINT_NAME}); continue it with --resume "
                "or choose another output directory"
            )
        return None

    def _initial_model(self, numbers: Sequence[int]) -> finetune.InitialModel:
        """The model file ``model.init_from`` names, checked against this run (arch and cutoff count only where
        the config sets them to other than their defaults)."""
        defaults = ModelConfig()
        model = self.config.model
        return finetune.load_initial_model(
            model.init_from, None if model.arch == defaults.arch else model.arch,
            None if model.cutoff == defaults.cutoff else model.cutoff, numbers)

    def _check_resumable(self, saved: Dict) -> None:
        """The data, model and optimiser settings must match the checkpoint (every difference is listed);
        epochs, time and the device may change. Settings newer than the checkpoint are not compared."""
        now = self.config.to_dict()
        saved = {section: saved.get(section) or {} for section in COMPARED_SECTIONS}
        if now["training"].get("stress_weight") is None:  # unset: the run goes on with the weight it started with
            now["training"]["stress_weight"] = saved["training"].get("stress_weight")
        now = {section: {key: now[section].get(key) for key in saved[section]} for section in COMPARED_SECTIONS}
        refuse_changed_settings(saved, now, f"the training run in {self.out}", ignore=RESUMABLE_CHANGES)

    def _build(self, state: Dict | None) -> None:
        config = self.config
        runtime.configure()  # the thread policy, also for library users of Trainer
        initial = None  # the model file a fine-tuning run starts from
        # a resumed run keeps the stress weight it started with
        saved_weight = None if state is None else float(state["config"]["training"].get("stress_weight") or 0.0)
        frames, numbers, stress_weight = load_frames(config, saved_weight, quiet=self.quiet)
        config.training.stress_weight = stress_weight  # recorded in config.yaml and the checkpoint as used
        self.weights = LossWeights(
            energy=config.training.energy_weight, forces=config.training.forces_weight, stress=stress_weight,
            kind=config.training.loss, huber_delta=config.training.huber_delta,
        )
        if state is not None:
            self.split = state["split"]
            check_split(self.split, len(frames))
            self.statistics = DatasetStatistics(**state["statistics"])
            self.description = state["description"]
        else:
            self.split = make_split(config, len(frames))
            require_species_in_training(frames, self.split["train"], numbers)
            train_frames = [frames[i] for i in self.split["train"]]
            if config.model.init_from:
                initial = self._initial_model(numbers)
                self.description = initial.description
                config.model.arch, config.model.cutoff = initial.description["arch"], initial.description["cutoff"]
            self.statistics = compute_statistics(train_frames, numbers, config.model.cutoff)
            if not config.model.init_from:
                hyperparameters = dict(config.model.hyperparameters)
                hyperparameters.setdefault("avg_num_neighbors", self.statistics.avg_num_neighbors)
                self.description = describe(
                    config.model.arch, numbers, config.model.cutoff, dtype=config.model.dtype,
                    size=config.model.size, hyperparameters=hyperparameters,
                    energy_shift=self.statistics.energy_references, energy_scale=self.statistics.force_rms,
                )
        self.frames = frames
        self.dtype = DTYPES[self.description["dtype"]]
        self.model = build_model(self.description, seed=config.model.seed).to(self.device)
        if initial is not None:
            self.model.load_state_dict(initial.model.state_dict())
        distributed.broadcast_parameters(self.model, self.group)
        self.graphs: Dict[str, List[Graph]] = {
            name: frames_to_graphs([frames[i] for i in indices], config.model.cutoff)
            for name, indices in self.split.items()
        }
        training = config.training
        optimizers = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}
        if training.optimizer not in optimizers:
            raise ValueError(f"unknown optimizer {training.optimizer!r}; choose one of {sorted(optimizers)}")
        self.optimizer = optimizers[training.optimizer](
            self.model.parameters(), lr=training.lr, weight_decay=training.weight_decay, amsgrad=training.amsgrad
        )
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.optimizer, mode="min", factor=training.plateau_factor, patience=training.plateau_patience,
            min_lr=training.min_lr,
        )
        self.ema = ExponentialMovingAverage(build_model(self.description).to(self.device), training.ema_decay)
        self.progress = {
            "epoch": 0, "batch_in_epoch": 0, "step": 0, "elapsed_s": 0.0, "best_val_loss": math.inf,
            "best_epoch": -1, "bad_epochs": 0, "rows": [], "train_sums": None, "train_loss_sum": 0.0,
            "train_batches": 0,
        }
        self.best_ema_state = None
        if initial is not None:
            reference_fit = finetune.refit_references(
                self.model, [frames[i] for i in self.split["train"]], self.graphs["train"],
                config.model.refit_references, self.dtype, self.device, quiet=self.quiet)
            self.description["energy_shift"] = [float(x) for x in self.model.energy_shift.tolist()]
            self.ema.module.load_state_dict(self.model.state_dict())  # the average starts from the source too
            self.progress["init_from"] = {**initial.record, "energy_references": reference_fit}
        if state is not None:
            self._load_state(state)
        elif self.group.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            save_split(self.split, self.out / "split.json")
            save_config(config, self.out / "config.yaml")

    # ---- checkpoints
    def _state(self) -> Dict:
        return {
            "checkpoint_version": CHECKPOINT_VERSION,
            "kind": CHECKPOINT_KIND,
            "config": self.config.to_dict(),
            "description": self.description,
            "statistics": self.statistics.to_dict(),
            "split": self.split,
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict(),
            "best_ema": self.best_ema_state,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "progress": self.progress,
            "rng": rng_state(),
        }

    def _load_state(self, state: Dict) -> None:
        self.model.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.best_ema_state = state["best_ema"]
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.progress = state["progress"]
        restore_rng_state(state["rng"])

    def save_checkpoint(self) -> None:
        if self.group.is_main:
            atomic_save(self._state(), self._checkpoint_path())  # a crash mid-write never destroys the previous one

    # ---- steps
    def _epoch_batches(self, epoch: int) -> List[List[int]]:
        """Global batches of epoch ``epoch`` (indices into the training graphs); depends on (seed, epoch) only."""
        order = np.random.default_rng([self.config.training.seed, epoch]).permutation(len(self.graphs["train"]))
        size = self.config.training.batch_size
        return [order[k:k + size].tolist() for k in range(0, len(order), size)]

    def _local_slice(self, indices: Sequence[int]) -> List[int]:
        return list(indices[self.group.rank::self.group.world_size])

    def _collate(self, graphs: Sequence[Graph]):
        return collate(graphs, self.model.species_table, self.dtype, self.device)

    def _global_counts(self, terms: Dict[str, torch.Tensor]) -> Dict[str, float]:
        keys = sorted(terms)
        counts = torch.stack([terms[k][1].detach().double().cpu() for k in keys])
        counts = distributed.all_reduce_sum(counts, self.group)
        return {k: float(c) for k, c in zip(keys, counts)}

    def _set_warmup_lr(self) -> None:
        warmup = self.config.training.warmup_steps
        if self.progress["step"] < warmup:
            factor = (self.progress["step"] + 1) / warmup
            for group in self.optimizer.param_groups:
                group["lr"] = self.config.training.lr * factor

    def train_step(self, indices: Sequence[int], accumulator: ErrorAccumulator) -> float:
        """One optimiser step on a global batch; returns its loss (summed over processes)."""
        self.model.train()
        self._set_warmup_lr()
        local = self._local_slice(indices)
        graphs = [self.graphs["train"][i] for i in local]
        compute_stress = self.weights.stress > 0
        self.optimizer.zero_grad(set_to_none=True)
        if graphs:
            batch = self._collate(graphs)
            predicted = predict_batch(self.model, batch, compute_stress=compute_stress, create_graph=True)
            terms = loss_terms(predicted, batch, self.weights)
        else:  # more processes than frames in this (last) batch
            terms = {k: torch.zeros(2, dtype=self.dtype, device=self.device) for k in ("energy", "forces")}
            predicted, batch = None, None
        counts = self._global_counts(terms)
        loss = combine(terms, counts, self.weights)
        if graphs:
            loss.backward()
        distributed.all_reduce_gradients(self.model.parameters(), self.group)
        clip = self.config.training.grad_clip
        if clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
        self.optimizer.step()
        self.ema.update(self.model)
        if predicted is not None:
            accumulator.add({k: v.detach() for k, v in predicted.items()}, batch)
        total = distributed.all_reduce_sum(loss.detach().double().cpu().reshape(1), self.group)
        self.progress["step"] += 1
        return float(total)

    def evaluate(self, name: str, model: torch.nn.Module, keep: bool = False) -> tuple[float, ErrorAccumulator]:
        """Loss and errors of ``model`` on split ``name`` (summed over processes)."""
        model.eval()
        accumulator = ErrorAccumulator(keep=keep)
        graphs = self.graphs[name]
        indices = self._local_slice(list(range(len(graphs))))
        sums: Dict[str, torch.Tensor] = {}
        size = max(self.config.training.batch_size, 8)
        for k in range(0, len(indices), size):
            batch = self._collate([graphs[i] for i in indices[k:k + size]])
            predicted = predict_batch(model, batch, compute_stress=self.weights.stress > 0, create_graph=False)
            accumulator.add(predicted, batch)
            for key, term in loss_terms(predicted, batch, self.weights).items():
                sums[key] = sums.get(key, torch.zeros(2, dtype=torch.float64)) + term.double().cpu()
        for key in ("energy", "forces", "stress"):
            sums.setdefault(key, torch.zeros(2, dtype=torch.float64))
        keys = sorted(sums)
        stacked = distributed.all_reduce_sum(torch.stack([sums[k] for k in keys]), self.group)
        sums = dict(zip(keys, stacked))
        counts = {k: float(v[1]) for k, v in sums.items()}
        loss = float(combine(sums, counts, self.weights)) if counts["forces"] > 0 else math.nan
        distributed.all_reduce_sum(accumulator.sums, self.group)
        return loss, accumulator

    # ---- the loop
    def run(self) -> TrainResult:
        """Train (holding the lock on ``out``), then export; see the module docstring.

        Raises:
            RunLockedError: another process writes into ``out``.
            TrainingInterrupted: Ctrl-C / SIGTERM (or ``stops.request()``) stopped the run; the checkpoint
                holds the last finished batch (or, after a second Ctrl-C, the last finished epoch).
        """
        lock = RunLock(self.out) if self.group.is_main else contextlib.nullcontext()
        with lock:
            state = self._prepare_directory()
            self._build(state)
            del state
            stopped_because = self._train_epochs()
            return self._finish(stopped_because)

    def _train_epochs(self) -> str:
        """Epochs until the configured end; returns why they stopped (``epochs``, ``max_time_minutes``,
        ``early_stopping``)."""
        training = self.config.training
        with self.stops:
            try:
                while self.progress["epoch"] < training.epochs:
                    if self._out_of_time():
                        return "max_time_minutes"
                    self._run_epoch()
                    if self.time_is_up:
                        return "max_time_minutes"
                    if self._early_stop():
                        return "early_stopping"
                    self._stop_if_requested()
            except _StopRequested:
                self.save_checkpoint()
                raise TrainingInterrupted(
                    f"training stopped ({self.stops.requested}) at epoch {self.progress['epoch']}, step "
                    f"{self.progress['step']}; checkpoint saved in {self._checkpoint_path()}; continue with --resume"
                ) from None
            except KeyboardInterrupt:  # a second Ctrl-C: stop at once, without saving a half-updated state
                raise TrainingInterrupted(
                    f"training stopped at once (second Ctrl-C); {self._checkpoint_path()} holds the last finished "
                    "epoch; continue with --resume"
                ) from None
        return "epochs"

    def _stop_if_requested(self) -> None:
        """Called only where the state is consistent (after a step and its bookkeeping, or an epoch's end)."""
        if self.stops.requested is not None:
            raise _StopRequested

    def _out_of_time(self, running_s: float = 0.0) -> bool:
        """Whether the time limit leaves no room for more training: the time trained so far (plus
        ``running_s`` of the epoch in progress) and the final evaluation's estimate reach it."""
        limit = self.config.training.max_minutes
        if limit is None:
            return False
        used_s = self.progress["elapsed_s"] + running_s
        return used_s + self._final_evaluation_estimate_s(running_s) >= 60.0 * limit

    def _final_evaluation_estimate_s(self, running_s: float = 0.0) -> float:
        """Seconds the final evaluation (every split, once) will take: from the last validation's time per
        frame, or before any validation from half the training time per frame (a forward pass without the
        double backward)."""
        frames = sum(len(graphs) for graphs in self.graphs.values())
        per_frame = self._evaluation_s_per_frame
        if per_frame is None and self.progress["step"] > 0:
            trained_frames = self.progress["step"] * self.config.training.batch_size
            per_frame = 0.5 * (self.progress["elapsed_s"] + running_s) / trained_frames
        return frames * (per_frame or 0.0)

    def _early_stop(self) -> bool:
        patience = self.config.training.early_stopping_patience
        return patience is not None and self.progress["bad_epochs"] >= patience

    def _run_epoch(self) -> None:
        progress = self.progress
        epoch = progress["epoch"]
        batches = self._epoch_batches(epoch)
        sums = progress["train_sums"]
        accumulator = ErrorAccumulator(sums) if sums is not None else ErrorAccumulator()
        bar = None
        if self.group.is_main and not self.quiet:
            from tqdm import tqdm

            bar = tqdm(total=len(batches), initial=progress["batch_in_epoch"], desc=f"epoch {epoch + 1}", leave=False)
        started = time.perf_counter()
        try:
            while progress["batch_in_epoch"] < len(batches):
                loss = self.train_step(batches[progress["batch_in_epoch"]], accumulator)
                if not math.isfinite(loss):
                    raise FloatingPointError(
                        f"training loss became {loss} at epoch {epoch + 1}, step {progress['step']}; lower training.lr "
                        "or check the data (the last good checkpoint is kept)"
                    )
                progress["train_loss_sum"] += loss
                progress["train_batches"] += 1
                progress["batch_in_epoch"] += 1
                progress["train_sums"] = accumulator.sums
                if bar is not None:
                    live = accumulator.result()
                    bar.set_postfix_str(
                        f"F MAE {live.get('forces_mae', math.nan):.1f} meV/Å, "
                        f"E MAE {live.get('energy_per_atom_mae', math.nan):.2f} meV/atom"
                    )
                    bar.update(1)
                self._stop_if_requested()
                if self._out_of_time(time.perf_counter() - started):
                    self.time_is_up = True  # stop within one step of the limit; the checkpoint holds this batch
                    break
        finally:
            progress["elapsed_s"] += time.perf_counter() - started
            if bar is not None:
                bar.close()
        if self.time_is_up and progress["batch_in_epoch"] < len(batches):
            self.save_checkpoint()  # mid-epoch: --resume with a longer limit continues from this batch
            return
        self._end_epoch(accumulator)

    def _end_epoch(self, accumulator: ErrorAccumulator) -> None:
        progress = self.progress
        train_loss = progress["train_loss_sum"] / max(progress["train_batches"], 1)
        train_metrics = ErrorAccumulator(distributed.all_reduce_sum(accumulator.sums.clone(), self.group)).result()
        started = time.perf_counter()
        if self.graphs["val"]:
            val_loss, val_accumulator = self.evaluate("val", self.ema.module)
            val_metrics = val_accumulator.result()
            self._evaluation_s_per_frame = (time.perf_counter() - started) / len(self.graphs["val"])
        else:
            val_loss, val_metrics = train_loss, {}
        progress["elapsed_s"] += time.perf_counter() - started
        lr = self.optimizer.param_groups[0]["lr"]
        if progress["step"] >= self.config.training.warmup_steps:
            self.scheduler.step(val_loss)
        if val_loss < progress["best_val_loss"]:
            progress["best_val_loss"] = val_loss
            progress["best_epoch"] = progress["epoch"] + 1
            progress["bad_epochs"] = 0
            self.best_ema_state = {k: v.detach().clone().cpu() for k, v in self.ema.module.state_dict().items()}
        else:
            progress["bad_epochs"] += 1
        row = {"epoch": progress["epoch"] + 1, "step": progress["step"], "time_s": round(progress["elapsed_s"], 2),
               "lr": lr, "train_loss": train_loss, "val_loss": val_loss}
        row.update({f"train_{k}": v for k, v in train_metrics.items()})
        row.update({f"val_{k}": v for k, v in val_metrics.items()})
        progress["rows"].append(row)
        progress["epoch"] += 1
        progress["batch_in_epoch"] = 0
        progress["train_sums"] = None
        progress["train_loss_sum"] = 0.0
        progress["train_batches"] = 0
        self.save_checkpoint()
        if self.group.is_main:
            write_csv(progress["rows"], self.out / "log.csv")
            if not self.quiet:
                print(
                    f"epoch {row['epoch']:4d}  lr {lr:.2e}  "
                    f"train F {row.get('train_forces_mae', math.nan):7.1f} meV/Å  "
                    f"val F {row.get('val_forces_mae', math.nan):7.1f} meV/Å  "
                    f"val E {row.get('val_energy_per_atom_mae', math.nan):6.2f} meV/atom  "
                    f"({row['time_s']:.0f} s)",
                    flush=True,
                )

    # ---- the end: test, export, reports
    def _finish(self, stopped_because: str) -> TrainResult:
        if self.group.is_main and not self.quiet:
            frames = sum(len(graphs) for graphs in self.graphs.values())
            print(f"training stopped ({stopped_because}) after {self.progress['step']} steps; evaluating the final "
                  f"model on all {frames} frames (about {self._final_evaluation_estimate_s():.0f} s), then writing "
                  "the model file", flush=True)
        final = build_model(self.description).to(self.device)
        if self.best_ema_state is not None:
            final.load_state_dict(self.best_ema_state)
        else:
            final.load_state_dict(self.ema.module.state_dict())
        metrics: Dict[str, Dict[str, float]] = {}
        parity = None
        for name in ("train", "val", "test"):
            if self.graphs[name]:
                loss, accumulator = self.evaluate(name, final, keep=(name == "test"))
                metrics[name] = {"loss": loss, "frames": len(self.graphs[name]), **accumulator.result()}
                if name == "test":
                    parity = accumulator.pairs
        model_path = None
        if self.group.is_main:
            model_path = self.out / MODEL_NAME
            provenance = self._provenance(metrics, stopped_because)
            from mlpot.deploy import save_model

            save_model(final.cpu(), self.description, model_path, provenance=provenance)
            summary = {"stopped_because": stopped_because, "epochs": self.progress["epoch"],
                       "best_epoch": self.progress["best_epoch"], "steps": self.progress["step"],
                       "training_time_s": self.progress["elapsed_s"], "model": str(model_path),
                       "statistics": self.statistics.to_dict(), "metrics": metrics,
                       "units": {"energy_per_atom": "meV/atom", "energy": "meV", "forces": "meV/Å",
                                 "stress": "meV/Å^3"}}
            (self.out / "metrics.json").write_text(json.dumps(summary, indent=1))
            if self.progress["rows"]:
                plot_learning_curve(self.progress["rows"], self.out / "learning_curve.png")
            if parity is not None:
                plot_parity(parity, metrics["test"], self.out / "parity_test.png",
                            title=f"{self.description['arch']} on the test split ({metrics['test']['frames']} frames)")
        distributed.barrier(self.group)
        return TrainResult(self.out, model_path, self.progress["epoch"], stopped_because, metrics)

    def _provenance(self, metrics: Dict, stopped_because: str) -> Dict:
        return {
            "training": {
                "data_files": [{"path": p, "sha256": file_digest(p)} for p in self.config.data.files],
                "split_sizes": {k: len(v) for k, v in self.split.items()},
                "config": self.config.to_dict(),
                "statistics": self.statistics.to_dict(),
                "epochs": self.progress["epoch"],
                "best_epoch": self.progress["best_epoch"],
                "steps": self.progress["step"],
                "training_time_s": round(self.progress["elapsed_s"], 1),
                "stopped_because": stopped_because,
                "processes": self.group.world_size,
                "init_from": self.progress.get("init_from"),
                "metrics": metrics,
            }
        }


def train(config: TrainConfig, resume: bool = False, quiet: bool = False) -> TrainResult:
    """Run (or resume) the training ``config`` describes; see the module docstring."""
    trainer = Trainer(config, resume=resume, quiet=quiet)
    try:
        return trainer.run()
    finally:
        distributed.shutdown(trainer.group)
