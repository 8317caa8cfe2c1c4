"""``mlpot pips report RUN``: the trained policy against unbiased and steered MD, as files in RUN.

For a molecular run directory (``checkpoint.pt`` of :class:`~mlpot.pips.molecular.trainer.MolecularTrainer`)
it draws ``n_paths`` paths with the averaged policy, with unbiased MD and with steered MD
(:mod:`mlpot.pips.molecular.baselines`), all with the run's integrator, start, number of steps and the same
seed (so every method starts from the same velocities), and writes:

- ``report.json``: the metrics of each method (:mod:`mlpot.pips.molecular.path_metrics`), the training
  summary (iterations, training wall seconds summed over the log, final ESS and training THP) and
  the report's settings; NaN (e.g. ETS when no path hit) is written as null;
- ``report.md``: the table method | THP | RMSD Å | THP lit. | EPD | ETS kJ/mol | ETS − E₀ | ETS lit. − E₀ |
  max E kJ/mol | bias work kJ/mol | wall s (max E: the mean over paths of the highest unbiased energy
  along the path; "lit.": by the published codes' hit test, :mod:`mlpot.pips.molecular.peptides`; E₀: the
  energy of the minimised start), and which literature test the system uses;
- ``ramachandran.png`` (the paths over the plane of the transition's two dihedrals, start, target and,
  where the basin is a box in that plane, the target basin; where the literature test is a distance
  in that plane, its 0.75-rad circle), ``energy_profile.png`` (unbiased energy along the 3
  lowest-barrier successful paths of each method, the minimised start's energy dashed),
  ``training.png`` (ESS, mean path cost, loss, THP against the iteration);
- ``report_paths.dcd`` + ``report_paths.pdb``: the policy's paths
  (:func:`mlpot.pips.molecular.trajectories.write_paths`).

Toy runs are refused (ValueError): their paths are 2D and `mlpot pips train` already reports
their THP and channel usage.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Sequence

import torch

from mlpot.pips.molecular.baselines import DEFAULT_SPRING_KJ_MOL_NM2, steered_md, unbiased_md
from mlpot.pips.molecular.path_metrics import EvaluatedPaths
from mlpot.pips.molecular.report_plots import plot_dihedral_paths, plot_energy_profiles, plot_training_curves
from mlpot.pips.molecular.trajectories import write_paths
from mlpot.pips.trainer import CHECKPOINT_NAME

METHODS = {"pips": "PIPS", "md": "unbiased MD", "smd": "steered MD"}
TABLE_COLUMNS = (  # metric key, column heading, format
    ("thp", "THP", "{:.2f}"), ("rmsd_A", "RMSD Å", "{:.2f}"), ("thp_literature", "THP lit.", "{:.2f}"),
    ("epd", "EPD", "{:.2f}"), ("ets_kj_mol", "ETS kJ/mol", "{:.1f}"),
    ("ets_relative_kj_mol", "ETS − E₀ kJ/mol", "{:.1f}"),
    ("ets_literature_relative_kj_mol", "ETS lit. − E₀ kJ/mol", "{:.1f}"),
    ("mean_max_energy_kj_mol", "max E kJ/mol", "{:.1f}"),
    ("bias_work_kj_mol", "bias work kJ/mol", "{:.1f}"), ("wall_seconds", "wall s", "{:.1f}"),
)
PROFILED_PATHS = 3


@dataclass
class PipsReport:
    """What ``mlpot pips report`` found: ``metrics`` per method key of :data:`METHODS`, the
    ``training`` summary, the report's ``settings`` and the ``files`` written."""

    metrics: Dict[str, Dict[str, float]]
    training: Dict[str, float]
    settings: Dict[str, object]
    files: List[Path] = field(default_factory=list)

    def table(self) -> str:
        """The metrics as a markdown table, one row per method (missing values as –)."""
        lines = ["| method | " + " | ".join(heading for _, heading, _ in TABLE_COLUMNS) + " |",
                 "|---" * (len(TABLE_COLUMNS) + 1) + "|"]
        for method, metrics in self.metrics.items():
            cells = [_formatted(metrics.get(key), form) for key, _, form in TABLE_COLUMNS]
            lines.append(f"| {METHODS[method]} | " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def to_json(self) -> str:
        """The report as strict JSON (NaN → null)."""
        return json.dumps(_without_nan({"settings": self.settings, "training": self.training,
                                        "metrics": self.metrics}), indent=1)


def _formatted(value, form: str) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else form.format(value)


def _without_nan(value):
    if isinstance(value, dict):
        return {key: _without_nan(item) for key, item in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def training_summary(log: Sequence[Dict[str, float]], paths_per_iteration: int) -> Dict[str, float]:
    """Iterations, paths per iteration, training wall seconds (summed over the log rows), final ESS
    (count and fraction) and the final iteration's training-path THP (NaN when the log is empty)."""
    last = log[-1] if log else {}
    return {"iterations": len(log), "paths_per_iteration": paths_per_iteration,
            "training_wall_seconds": float(sum(row["seconds"] for row in log)),
            "final_ess": float(last.get("ess", math.nan)),
            "final_ess_fraction": float(last.get("ess_fraction", math.nan)),
            "final_training_thp": float(last.get("thp", math.nan))}


def _load_molecular_run(run_dir: Path, system: str | None = None):
    from mlpot.pips.molecular.trainer import MolecularTrainer
    from mlpot.pips.runs import load_run

    if not (run_dir / CHECKPOINT_NAME).is_file():
        raise FileNotFoundError(f"{run_dir} is not a PIPS run directory (no {CHECKPOINT_NAME})")
    trainer = load_run(run_dir, "pips report", system)  # a training run or an exported policy
    if not isinstance(trainer, MolecularTrainer):
        raise ValueError(f"report is for molecular runs; {run_dir} is a 2D toy run ({trainer.config.system}), "
                         "whose THP and channels `mlpot pips train` prints")
    return trainer


def sample_methods(trainer, n_paths: int, seed: int, spring_kj_mol_nm2: float = DEFAULT_SPRING_KJ_MOL_NM2,
                   ramp: bool = False) -> Dict[str, EvaluatedPaths]:
    """``n_paths`` paths of the averaged policy, unbiased MD and steered MD, same seed, with metrics."""
    return {"pips": trainer.evaluate_control(trainer.average.module, n_paths, seed),
            "md": unbiased_md(trainer, n_paths, seed),
            "smd": steered_md(trainer, n_paths, seed, spring_kj_mol_nm2, ramp)}


def write_report(run_dir: Path, n_paths: int = 16, seed: int = 1,
                 spring_kj_mol_nm2: float = DEFAULT_SPRING_KJ_MOL_NM2, ramp: bool = False,
                 system: str | None = None) -> PipsReport:
    """Sample, measure and write the report files (module docstring) into ``run_dir`` (a training run
    or an exported policy; ``system``: refuse it unless it is of this system)."""
    if isinstance(n_paths, bool) or not isinstance(n_paths, int) or n_paths < 1:
        raise ValueError(f"the number of paths must be a positive integer, got {n_paths!r}")
    run_dir = Path(run_dir)
    trainer = _load_molecular_run(run_dir, system)
    sampled = sample_methods(trainer, n_paths, seed, spring_kj_mol_nm2, ramp)
    config = trainer.config
    report = PipsReport(
        metrics={method: evaluated.metrics for method, evaluated in sampled.items()},
        training=training_summary(trainer.log, config.n_paths),
        settings={"system": config.system, "n_paths": n_paths, "seed": seed, "n_steps": config.n_steps,
                  "timestep_fs": config.timestep_fs, "temperature_K": config.temperature_K,
                  "smd_spring_kj_mol_nm2": spring_kj_mol_nm2, "smd_ramp": ramp,
                  "literature_thp_criterion": trainer.transition.literature_criterion,
                  "start_energy_kj_mol": sampled["pips"].start_energy_kj_mol},
    )
    report.files = _write_files(run_dir, trainer, sampled, report)
    return report


def _write_files(run_dir: Path, trainer, sampled: Dict[str, EvaluatedPaths], report: PipsReport) -> List[Path]:
    names = ("report.json", "report.md", "ramachandran.png", "energy_profile.png", "training.png", "report_paths.dcd")
    files = {name: run_dir / name for name in names}
    files["report.json"].write_text(report.to_json() + "\n")
    files["report.md"].write_text(_markdown(report) + "\n")
    transition = trainer.transition
    start_deg, target_deg = (tuple(float(angle) for angle in transition.dihedrals_deg(torch.as_tensor(positions)))
                             for positions in (trainer.start_nm, trainer.target))
    paths_deg = {METHODS[method]: tuple(angles.numpy()
                                        for angles in transition.dihedrals_deg(evaluated.finite_positions_nm))
                 for method, evaluated in sampled.items()}
    box_deg = None if transition.phi_range_deg is None else (transition.phi_range_deg, transition.psi_range_deg)
    plot_dihedral_paths(paths_deg, start_deg, target_deg, box_deg, files["ramachandran.png"],
                        target_circle_rad=transition.literature_circle_rad)
    profiles = {METHODS[method]: (evaluated.energies_kj_mol.numpy(), evaluated.hits.numpy())
                for method, evaluated in sampled.items()}
    plot_energy_profiles(profiles, sampled["pips"].rollout.timestep, files["energy_profile.png"], PROFILED_PATHS,
                         start_energy_kj_mol=sampled["pips"].start_energy_kj_mol)
    plot_training_curves(trainer.log, trainer.config.n_paths, files["training.png"])
    pdb = write_paths(sampled["pips"].finite_positions_nm, trainer.topology, files["report_paths.dcd"])
    return [*files.values(), pdb]


def _markdown(report: PipsReport) -> str:
    settings, training = report.settings, report.training
    smd_spring = "ramped linearly from 0 to" if settings["smd_ramp"] else "constant"
    return "\n".join([
        f"# PIPS report: {settings['system']}", "",
        f"{settings['n_paths']} paths per method × {settings['n_steps']} steps of {settings['timestep_fs']} fs "
        f"at {settings['temperature_K']} K, seed {settings['seed']} (every method starts from the same velocities). "
        f"Steered MD: spring {smd_spring} k = {settings['smd_spring_kj_mol_nm2']:g} kJ/mol/nm² on the heavy-atom "
        "aligned RMSD² to the target.", "",
        f"Training: {training['iterations']} iterations of {training['paths_per_iteration']} paths, "
        f"{training['training_wall_seconds']:.0f} s; final ESS {_formatted(training['final_ess'], '{:.1f}')}, "
        f"final training-path THP {_formatted(training['final_training_thp'], '{:.2f}')}.", "",
        report.table(), "",
        "THP: fraction of paths ending in the target basin. RMSD: final heavy-atom RMSD to the target after "
        "superposition. THP lit.: the same fraction by the published codes' hit test, here "
        f"{settings['literature_thp_criterion'] or 'none defined'}. EPD: 1000 × mean squared pairwise-distance error "
        "at the final frame (nm²). ETS: mean over successful paths of the highest unbiased potential energy along the "
        f"path; ETS − E₀: the same minus the minimised start's energy E₀ = "
        f"{_formatted(settings['start_energy_kj_mol'], '{:.1f}')} kJ/mol; ETS lit. − E₀: over the paths that hit by "
        "the literature test. max E: the highest energy averaged over all paths. "
        "Bias work: Σ u·Δx of the control force. wall s: wall time of the rollout.",
    ])
