"""Time to instability: how long a model's replicas stay physical (StABlE's evaluation protocol).

R replicas of a molecule start from reference frames (the model's own test split when its provenance
says which frames those were, else evenly spaced frames of the reference data), run Langevin
dynamics at a temperature, and are checked every ``check_every_fs`` with the bond-length criterion
(0.5 Å by default) and a contact check (two atoms closer than 0.7 Å; StABlE checks bonds only, which
misses hydrogens merging with each other). A replica's time to instability is the time of the first check that fails
(capped at the run length for replicas that never fail); after that the segment runner puts it back
to the start of the failed segment and it keeps running (so it cannot wander off to coordinates the
neighbour list would choke on), but it is no longer counted: the h(r) of the frames of the replicas
that have never failed is compared with the reference h(r) (∫|Δh| dr).

Units: fs and ps as named, K, Å.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from mlpot.data.frames import Frame
from mlpot.md.integrators import LangevinBAOAB
from mlpot.md.observables import distance_histogram, histogram_mae
from mlpot.md.potential import ReplicaPotential
from mlpot.md.reference import MoleculeReference, frame_positions
from mlpot.md.simulator import ReplicaSimulator
from mlpot.md.stability import (
    EVALUATION_BOND_THRESHOLD_A,
    MINIMUM_CONTACT_DISTANCE_A,
    molecule_criterion,
    run_checked_segment,
)
from mlpot.units import FS_PER_PS
from mlpot.validation import optional_positive_number, positive_number

ProgressCallback = Callable[[float, float], None]  # (time_ps, unstable_fraction) after every check

@dataclass(frozen=True)
class StabilitySettings:
    """How a stability measurement runs.

    Attributes:
        replicas: number of independent replicas R.
        time_ps: simulated time per replica, ps.
        temperature_K: Langevin temperature, K.
        timestep_fs: fs.
        friction_per_ps: Langevin friction γ, 1/ps.
        check_every_fs: spacing of the stability checks (and of the h(r) frames), fs.
        threshold_A: bond-length deviation that counts as unstable, Å.
        contact_A: two atoms closer than this count as unstable, Å (None: bonds only, as StABlE).
        seed: initial velocities and Langevin noise.
        device: where the model and the replicas run.
    """

    replicas: int = 32
    time_ps: float = 10.0
    temperature_K: float = 500.0
    timestep_fs: float = 0.5
    friction_per_ps: float = 1.0
    check_every_fs: float = 50.0
    threshold_A: float = EVALUATION_BOND_THRESHOLD_A
    contact_A: Optional[float] = MINIMUM_CONTACT_DISTANCE_A
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self):
        if not isinstance(self.replicas, int) or self.replicas < 1:
            raise ValueError(f"replicas must be a positive integer, got {self.replicas!r}")
        for name in ("time_ps", "temperature_K", "timestep_fs", "friction_per_ps", "check_every_fs", "threshold_A"):
            positive_number(name, getattr(self, name))
        optional_positive_number("contact_A", self.contact_A, "Å")
        if self.check_every_fs < self.timestep_fs:
            raise ValueError(f"check_every_fs ({self.check_every_fs}) must be at least one timestep "
                             f"({self.timestep_fs} fs)")
        if self.time_ps * FS_PER_PS < self.check_every_fs:
            raise ValueError(f"time_ps ({self.time_ps} ps) must cover at least one check ({self.check_every_fs} fs)")

    @property
    def steps_per_check(self) -> int:
        return max(1, int(round(self.check_every_fs / self.timestep_fs)))

    @property
    def n_checks(self) -> int:
        return int(math.floor(self.time_ps * FS_PER_PS / (self.steps_per_check * self.timestep_fs) + 1e-9))


@dataclass
class StabilityResult:
    """Per-replica times to instability (ps, capped at the run length) and summary statistics."""

    settings: Dict[str, Any]
    start_frames: List[int]
    start_frames_from: str
    times_to_instability_ps: List[float]
    became_unstable: List[bool]
    check_times_ps: List[float]
    unstable_fraction: List[float]
    distance_histogram_mae: Optional[float]
    simulated_ps: float
    seconds: float
    seconds_per_step: float
    extra: Dict[str, Any] = field(default_factory=dict)

    @property
    def mean_ps(self) -> float:
        return float(np.mean(self.times_to_instability_ps))

    @property
    def std_ps(self) -> float:
        return float(np.std(self.times_to_instability_ps))

    def to_dict(self) -> Dict[str, Any]:
        result = asdict(self)
        result.update({"mean_ps": self.mean_ps, "std_ps": self.std_ps,
                       "stable_fraction": 1.0 - float(np.mean(self.became_unstable))})
        return result


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def training_split(metadata: Dict[str, Any], reference_path: Path, n_frames: int) -> Optional[Dict[str, List[int]]]:
    """The model's train/val/test split of ``reference_path``'s frames, rebuilt from the training configuration
    in its provenance, if it was trained on exactly that file (same sha256, one data file); else None."""
    from mlpot.train.config import TrainConfig
    from mlpot.train.trainer import make_split

    training = (metadata.get("provenance") or {}).get("training") or {}
    data_files = training.get("data_files") or []
    if len(data_files) == 1 and data_files[0].get("sha256") == _sha256(reference_path) and "config" in training:
        return make_split(TrainConfig.from_dict(training["config"]), n_frames)
    return None


def start_frame_indices(metadata: Dict[str, Any], reference_path: Path, n_frames: int,
                        n_replicas: int) -> Tuple[List[int], str]:
    """Indices of the start frames and where they come from.

    If the model's test split of ``reference_path`` is known (:func:`training_split`), its first
    ``n_replicas`` test frames are used (cycling if there are fewer); otherwise ``n_replicas`` evenly
    spaced frames.
    """
    split = training_split(metadata, reference_path, n_frames)
    if split is not None:
        test = split["test"]
        if test:
            return [test[k % len(test)] for k in range(n_replicas)], "the model's test split"
    spaced = np.linspace(0, n_frames - 1, n_replicas).round().astype(int).tolist()
    return spaced, "evenly spaced reference frames"


def measure_stability(model: torch.nn.Module, frames: Sequence[Frame], reference: MoleculeReference,
                      start_frames: Sequence[int], settings: StabilitySettings = StabilitySettings(),
                      progress: Optional[ProgressCallback] = None,
                      start_frames_from: str = "given by the caller") -> StabilityResult:
    """Run the replicas and time their first instability.

    Args:
        model: a ``Potential`` or the compiled module of a model file, on ``settings.device``.
        frames: reference frames (the start structures are taken from them).
        reference: bonds, bond lengths and h(r) of the reference data (:func:`mlpot.md.reference.molecule_reference`).
        start_frames: one frame index per replica; ``start_frames_from`` says how they were chosen.
        progress: optional callable ``(time_ps, unstable_fraction)`` called after every check.
    """
    if len(start_frames) != settings.replicas:
        raise ValueError(f"need one start frame per replica: {len(start_frames)} for {settings.replicas} replicas")
    positions, numbers = frame_positions(frames)
    if not torch.equal(numbers, reference.atomic_numbers):
        raise ValueError("the reference observables were computed for other atoms than these frames")
    device = torch.device(settings.device)
    potential = ReplicaPotential(model, numbers, device=device)
    # the start velocities are drawn from ``seed``; the Langevin noise from its own stream
    generator = torch.Generator(device=device).manual_seed(settings.seed + 1)
    integrator = LangevinBAOAB(settings.timestep_fs, settings.temperature_K,
                               friction_per_fs=settings.friction_per_ps / FS_PER_PS, generator=generator)
    simulator = ReplicaSimulator.from_positions(potential, positions[list(start_frames)], integrator,
                                                settings.temperature_K, seed=settings.seed)
    criterion = molecule_criterion(potential.n_atoms, reference.bonds.to(device), reference.bond_lengths_A.to(device),
                                   settings.threshold_A, settings.contact_A)
    run_length_ps = settings.n_checks * settings.steps_per_check * settings.timestep_fs / FS_PER_PS
    times = torch.full((settings.replicas,), run_length_ps, dtype=torch.float64)
    unstable_so_far = torch.zeros(settings.replicas, dtype=torch.bool)
    histogram_sum = torch.zeros_like(reference.distance_histogram)
    n_stable_frames = 0
    check_times, fractions = [], []
    started = time.perf_counter()
    steps = 0
    for check in range(1, settings.n_checks + 1):
        trajectory, unstable = run_checked_segment(simulator, settings.steps_per_check, settings.steps_per_check,
                                                   criterion)
        steps += settings.steps_per_check
        now_ps = check * settings.steps_per_check * settings.timestep_fs / FS_PER_PS
        unstable = unstable.cpu()
        times[unstable & ~unstable_so_far] = now_ps
        unstable_so_far |= unstable
        stable_frames = trajectory.positions[-1][~unstable_so_far.to(device)].cpu()
        if stable_frames.shape[0]:
            histogram_sum += distance_histogram(stable_frames, reference.bins).sum(dim=0)
            n_stable_frames += stable_frames.shape[0]
        check_times.append(now_ps)
        fractions.append(float(unstable_so_far.double().mean()))
        if progress is not None:
            progress(now_ps, fractions[-1])
        if bool(unstable_so_far.all()):
            break
    seconds = time.perf_counter() - started
    mae = (float(histogram_mae(histogram_sum / n_stable_frames, reference.distance_histogram, reference.bins))
           if n_stable_frames else None)
    return StabilityResult(
        settings=asdict(settings), start_frames=[int(k) for k in start_frames], start_frames_from=start_frames_from,
        times_to_instability_ps=times.tolist(), became_unstable=unstable_so_far.tolist(),
        check_times_ps=check_times, unstable_fraction=fractions, distance_histogram_mae=mae,
        simulated_ps=steps * settings.timestep_fs / FS_PER_PS, seconds=seconds,
        seconds_per_step=seconds / max(steps, 1),
    )


def measure_model_file_stability(model_path: str | Path, system: str = "ethanol",
                                 settings: StabilitySettings = StabilitySettings(),
                                 reference_path: str | Path | None = None,
                                 progress: Optional[ProgressCallback] = None) -> StabilityResult:
    """:func:`measure_stability` of a model file on a shipped system (or on ``reference_path``'s frames)."""
    from mlpot.compile_cache import load_for_inference
    from mlpot.compiled import CompiledModel
    from mlpot.data.readers import read_frames
    from mlpot.md.reference import molecule_reference
    from mlpot.systems import reference_data_file

    deployed = load_for_inference(model_path, device=settings.device)  # the compiled twin (mlpot.compile_cache)
    path = Path(reference_path) if reference_path is not None else reference_data_file(system)
    frames = read_frames(path)
    deployed.check_elements(frames[0].numbers.tolist())
    reference = molecule_reference(frames)
    indices, origin = start_frame_indices(deployed.metadata, path, len(frames), settings.replicas)
    model = deployed if isinstance(deployed, CompiledModel) else deployed.module
    result = measure_stability(model, frames, reference, indices, settings, progress, origin)
    result.extra = {"model": str(model_path), "reference": str(path), "reference_frames": len(frames)}
    return result
