"""Training: end to end into ASE and OpenMM, exact resume, interrupts, refusals, and data-parallel equality."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import ase.io
import numpy as np
import pytest
import torch

from conftest import TEST_HYPERPARAMETERS
from mlpot.deploy import load_model, read_metadata
from mlpot.runs import RunLock, RunLockedError
from mlpot.train import TrainConfig, TrainingInterrupted, train
from mlpot.train.trainer import Trainer
from mlpot.units import KJ_PER_MOL_PER_EV

ETHANOL = str(Path(__file__).resolve().parents[1] / "systems" / "ethanol" / "dft.extxyz")
TINY = {
    "egnn": {"hidden": 8, "num_layers": 2},
    "nequip": {"num_features": 4, "lmax": 1, "num_layers": 2, "radial_width": 8},
}


def tiny_config(out, arch="egnn", frames=":24", epochs=2, dtype="float64", **training) -> TrainConfig:
    settings = {"epochs": epochs, "batch_size": 4, "warmup_steps": 3, "lr": 0.01, "device": "cpu"}
    settings.update(training)
    return TrainConfig.from_dict({
        "data": {"files": [ETHANOL], "index": frames, "val_fraction": 0.25, "test_fraction": 0.25},
        "model": {"arch": arch, "dtype": dtype, "hyperparameters": TINY[arch]},
        "training": settings,
        "out": str(out),
    })


def log_rows(run: Path):
    with open(run / "log.csv") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize("arch", ["egnn", "nequip"])
def test_train_deploy_and_run_in_ase_and_openmm(arch, tmp_path):
    """A few dozen frames → model file whose ASE and OpenMM energies equal the training code's prediction."""
    import openmm
    from openmm import unit

    from mlpot.plugins.ase import MLPotCalculator
    from mlpot.plugins.openmm import create_system
    from mlpot.systems import topology_from_atoms

    run = tmp_path / "run"
    result = train(tiny_config(run, arch=arch, epochs=3), quiet=True)
    assert result.stopped_because == "epochs" and result.epochs_done == 3
    for name in ("model.pt", "log.csv", "metrics.json", "split.json", "config.yaml", "learning_curve.png",
                 "parity_test.png", "checkpoint.pt"):
        assert (run / name).stat().st_size > 0, name
    rows = log_rows(run)
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])  # it learns something

    metadata = read_metadata(run / "model.pt")
    training = metadata["provenance"]["training"]
    assert metadata["species"] == ["H", "C", "O"] and metadata["units"]["energy"] == "eV"
    assert training["split_sizes"] == {"train": 12, "val": 6, "test": 6} and training["epochs"] == 3
    assert len(training["data_files"][0]["sha256"]) == 64
    assert metadata["hyperparameters"]["avg_num_neighbors"] == pytest.approx(8.0)
    assert metadata["energy_scale"] == pytest.approx(training["statistics"]["force_rms"])

    # the deployed file reproduces the test metrics the trainer computed with its batched code
    metrics = json.loads((run / "metrics.json").read_text())["metrics"]["test"]
    split = json.loads((run / "split.json").read_text())
    frames = ase.io.read(ETHANOL, index=":24")
    errors = []
    for index in split["test"]:
        atoms = frames[index].copy()
        reference = frames[index].get_potential_energy()
        atoms.calc = MLPotCalculator(run / "model.pt")
        errors.append(abs(atoms.get_potential_energy() - reference) / len(atoms))
    assert 1000 * np.mean(errors) == pytest.approx(metrics["energy_per_atom_mae"], rel=1e-6)

    atoms = frames[split["test"][0]].copy()
    atoms.calc = MLPotCalculator(run / "model.pt")
    context = openmm.Context(create_system(run / "model.pt", topology_from_atoms(atoms)),
                             openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(atoms.positions * 0.1)  # nm
    energy = context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    assert energy == pytest.approx(atoms.get_potential_energy() * KJ_PER_MOL_PER_EV, rel=1e-9)


def test_resume_takes_exactly_the_steps_of_an_uninterrupted_run(tmp_path):
    straight = tmp_path / "straight"
    train(tiny_config(straight, epochs=3, dtype="float32"), quiet=True)
    stopped = tmp_path / "stopped"
    train(tiny_config(stopped, epochs=2, dtype="float32"), quiet=True)  # a run that "ended" after 2 epochs
    train(tiny_config(stopped, epochs=3, dtype="float32"), resume=True, quiet=True)
    a, b = log_rows(straight), log_rows(stopped)
    assert len(a) == len(b) == 3
    for key in ("train_loss", "val_loss", "val_forces_mae", "lr"):
        assert b[2][key] == a[2][key], key  # identical, not merely close
    sa = torch.load(straight / "checkpoint.pt", weights_only=True)["model"]
    sb = torch.load(stopped / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_interrupt_mid_epoch_saves_and_resume_continues_exactly(tmp_path, monkeypatch):
    straight = tmp_path / "straight"
    train(tiny_config(straight, epochs=2), quiet=True)

    interrupted = tmp_path / "interrupted"
    original = Trainer.train_step
    calls = {"n": 0}

    def ctrl_c_during_step(self, indices, accumulator):
        if calls["n"] == 4:  # second epoch, second batch (3 batches per epoch): a real SIGINT as the step starts
            os.kill(os.getpid(), signal.SIGINT)
        calls["n"] += 1
        return original(self, indices, accumulator)

    monkeypatch.setattr(Trainer, "train_step", ctrl_c_during_step)
    with pytest.raises(TrainingInterrupted, match=r"stopped \(SIGINT\).*checkpoint saved .* continue with --resume"):
        train(tiny_config(interrupted, epochs=2), quiet=True)
    state = torch.load(interrupted / "checkpoint.pt", weights_only=True)
    # the batch in progress was finished and booked, then the run stopped
    assert (state["progress"]["epoch"], state["progress"]["batch_in_epoch"], state["progress"]["step"]) == (1, 2, 5)
    monkeypatch.setattr(Trainer, "train_step", original)
    train(tiny_config(interrupted, epochs=2), resume=True, quiet=True)
    resumed, expected = log_rows(interrupted)[1], log_rows(straight)[1]
    resumed.pop("time_s"), expected.pop("time_s")
    assert resumed == expected


def test_sigterm_right_after_an_optimiser_step_resumes_to_exactly_the_uninterrupted_weights(tmp_path, monkeypatch):
    """The old handler raised mid-bookkeeping here, so the resumed run took that batch twice."""
    straight = tmp_path / "straight"
    train(tiny_config(straight, epochs=2), quiet=True)

    stopped = tmp_path / "stopped"
    original_build = Trainer._build
    steps = {"n": 0}

    def sigterm_after_step(optimizer, args, kwargs):
        steps["n"] += 1
        if steps["n"] == 4:  # second epoch, first batch
            os.kill(os.getpid(), signal.SIGTERM)

    def build_with_hook(self, state):
        original_build(self, state)
        self.optimizer.register_step_post_hook(sigterm_after_step)

    monkeypatch.setattr(Trainer, "_build", build_with_hook)
    handler = signal.getsignal(signal.SIGTERM)
    with pytest.raises(TrainingInterrupted, match=r"stopped \(SIGTERM\) at epoch 1, step 4"):
        train(tiny_config(stopped, epochs=2), quiet=True)
    assert signal.getsignal(signal.SIGTERM) == handler  # the run leaves no handler behind
    monkeypatch.setattr(Trainer, "_build", original_build)
    assert torch.load(stopped / "checkpoint.pt", weights_only=True)["progress"]["batch_in_epoch"] == 1
    train(tiny_config(stopped, epochs=2), resume=True, quiet=True)
    expected = torch.load(straight / "checkpoint.pt", weights_only=True)
    resumed = torch.load(stopped / "checkpoint.pt", weights_only=True)
    assert resumed["progress"]["step"] == expected["progress"]["step"] == 6
    for part in ("model", "best_ema"):
        assert all(torch.equal(resumed[part][k], expected[part][k]) for k in expected[part]), part


def test_a_checkpoint_holds_only_tensors_and_plain_types(tmp_path):
    """It loads with plain ``weights_only=True`` (no extra allowed globals), RNG states included."""
    run = tmp_path / "run"
    train(tiny_config(run, epochs=1), quiet=True)
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    assert state["kind"] == "training" and isinstance(state["rng"]["numpy"]["key"], torch.Tensor)


def test_a_second_trainer_on_a_locked_folder_is_refused_by_name(tmp_path):
    run = tmp_path / "run"
    with RunLock(run):  # as if another `mlpot train` were writing there
        with pytest.raises(RunLockedError, match=r"run is in use by pid \d+ .*two runs must not write into one folder"):
            train(tiny_config(run, epochs=1), quiet=True)
    assert not (run / "config.yaml").exists()


def test_an_existing_run_is_never_overwritten_and_resume_refuses_changed_settings(tmp_path):
    run = tmp_path / "run"
    train(tiny_config(run, epochs=1), quiet=True)
    with pytest.raises(FileExistsError, match="already holds a training run.*--resume"):
        train(tiny_config(run, epochs=1), quiet=True)
    with pytest.raises(ValueError, match=r"made with other settings.*: training.batch_size: was 4, now 2; "
                                         r"training.lr: was 0.01, now 0.02$"):
        train(tiny_config(run, epochs=2, lr=0.02, batch_size=2), resume=True, quiet=True)  # both named, epochs may grow
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        train(tiny_config(tmp_path / "empty", epochs=1), resume=True, quiet=True)


def test_bad_data_stops_training_before_it_starts_with_the_frame_named(tmp_path):
    frames = ase.io.read(ETHANOL, index=":12")
    frames[7].calc.results.pop("forces")
    ase.io.write(tmp_path / "bad.extxyz", frames)
    config = tiny_config(tmp_path / "run")
    config.data.files = [str(tmp_path / "bad.extxyz")]
    config.data.index = ":"
    with pytest.raises(ValueError, match=r"bad.extxyz, frame 7: no forces label"):
        train(config, quiet=True)
    config.data.files = [ETHANOL]
    config.model.species = ["H", "C"]
    with pytest.raises(ValueError, match=r"element\(s\) \['O'\] not known to the model"):
        train(config, quiet=True)
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_stress_is_trained_on_periodic_frames_mixed_with_molecules(tmp_path):
    """Periodic frames with stress labels and molecules without in one dataset; the stress term is used."""
    import ase.build
    from ase.calculators.emt import EMT

    rng = np.random.default_rng(0)
    images = []
    for k in range(10):
        atoms = ase.build.bulk("Cu", "fcc", 3.6, cubic=True).repeat((3, 3, 3))
        atoms.rattle(0.05, seed=k)
        atoms.set_cell(atoms.cell * (1 + 0.01 * rng.normal()), scale_atoms=True)
        atoms.calc = EMT()
        atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()
        images.append(atoms)
    images += ase.io.read(ETHANOL, index=":6")  # molecules (no cell, no stress) in the same batches
    ase.io.write(tmp_path / "mixed.extxyz", images)
    config = tiny_config(tmp_path / "run", arch="egnn", stress_weight=1.0, epochs=1)
    config.data.files = [str(tmp_path / "mixed.extxyz")]
    config.data.index = ":"
    config.model.cutoff = 4.0
    result = train(config, quiet=True)
    assert read_metadata(result.model_path)["species"] == ["H", "C", "O", "Cu"]
    assert "stress_mae" in result.metrics["train"] and result.metrics["train"]["stress_mae"] > 0


@pytest.mark.slow
def test_loss_decreases_over_a_short_training(tmp_path):
    run = tmp_path / "run"
    config = tiny_config(run, arch="nequip", frames=":200", epochs=6, dtype="float32")
    config.model.hyperparameters = {}  # the default size: the tiny test models are too small to learn much
    train(config, quiet=True)
    rows = log_rows(run)
    assert float(rows[-1]["val_forces_mae"]) < 0.8 * float(rows[0]["val_forces_mae"])


def test_two_process_data_parallel_training_equals_single_process(tmp_path):
    """torchrun with 2 CPU processes (gloo) takes the same optimiser steps as one process on the same global batch."""
    single, parallel = tmp_path / "single", tmp_path / "parallel"
    base = tiny_config(single, epochs=1).to_dict()
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "mlpot.cli", "train", "--quiet"]
    for out in (single, parallel):
        config = dict(base, out=str(out))
        path = tmp_path / f"{out.name}.yaml"
        import yaml

        path.write_text(yaml.safe_dump(config))
        prefix = [] if out is single else [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                           "--nproc_per_node", "2", "-m", "mlpot.cli"]
        args = (command + [str(path)]) if out is single else (prefix + ["train", "--quiet", str(path)])
        finished = subprocess.run(args, env=environment, capture_output=True, text=True, timeout=300)
        assert finished.returncode == 0, finished.stderr[-3000:]
    a = torch.load(single / "checkpoint.pt", weights_only=True)
    b = torch.load(parallel / "checkpoint.pt", weights_only=True)
    assert a["progress"]["step"] == b["progress"]["step"] == 3
    for key in a["model"]:
        torch.testing.assert_close(b["model"][key], a["model"][key], rtol=1e-10, atol=1e-12)
    assert float(log_rows(parallel)[0]["val_loss"]) == pytest.approx(float(log_rows(single)[0]["val_loss"]), rel=1e-10)


def test_loss_terms_mse_and_huber_per_atom_energy_forces_and_stress():
    from mlpot.data.graphs import Batch
    from mlpot.train.loss import LossWeights, combine, loss_terms

    batch = Batch(
        positions=torch.zeros(3, 3), species=torch.zeros(3, dtype=torch.long),
        edge_index=torch.zeros(2, 0, dtype=torch.long),
        cell_shifts=torch.zeros(0, 3), cell=torch.zeros(2, 3, 3), atom_frame=torch.tensor([0, 0, 1]),
        edge_frame=torch.zeros(0, dtype=torch.long), n_atoms=torch.tensor([2, 1]), energy=torch.tensor([1.0, 2.0]),
        forces=torch.zeros(3, 3), stress=torch.zeros(2, 3, 3), has_stress=torch.tensor([False, True]),
    )
    predicted = {"energy": torch.tensor([1.2, 2.5]), "forces": torch.full((3, 3), 0.1),
                 "stress": torch.full((2, 3, 3), 0.02)}
    mse = LossWeights(energy=2.0, forces=3.0, stress=5.0)
    terms = loss_terms(predicted, batch, mse)
    counts = {k: float(v[1]) for k, v in terms.items()}
    assert counts == {"energy": 2.0, "forces": 9.0, "stress": 9.0}  # stress only for the frame that has it
    expected = 2.0 * (0.1**2 + 0.5**2) / 2 + 3.0 * 0.1**2 + 5.0 * 0.02**2
    assert float(combine(terms, counts, mse)) == pytest.approx(expected, rel=1e-6)
    huber = LossWeights(energy=1.0, forces=1.0, kind="huber", huber_delta=0.2)
    terms = loss_terms(predicted, batch, huber)
    # per-atom energy errors 0.1 (quadratic zone) and 0.5 (linear zone: delta * (|x| - delta / 2))
    expected = (0.5 * 0.1**2 + 0.2 * (0.5 - 0.1)) / 2 + 0.5 * 0.1**2
    assert float(combine(terms, {k: float(v[1]) for k, v in terms.items()}, huber)) == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="unknown loss 'l1'"):
        LossWeights(kind="l1")


@pytest.mark.parametrize("arch", ["egnn", "nequip"])
def test_batched_training_prediction_equals_the_deployed_compute(arch):
    """predict_batch (training) and Potential.compute (deployment): same energies, forces and stress."""
    import ase.build

    from mlpot.data import collate, frames_to_graphs, read_frames
    from mlpot.data.frames import Frame
    from mlpot.models import build_model, describe
    from mlpot.train.predict import predict_batch

    model = build_model(describe(arch, ["H", "C", "O", "Si"], 4.0, dtype="float64",
                                 hyperparameters=TEST_HYPERPARAMETERS[arch]), seed=3)
    crystal = ase.build.bulk("Si", "diamond", 5.43, cubic=True).repeat((2, 2, 2))
    crystal.rattle(0.05, seed=1)
    crystal.set_cell(crystal.cell * 1.01, scale_atoms=True)
    frames = read_frames(ETHANOL)[:2]
    frames.append(Frame(crystal.positions, crystal.numbers.astype(np.int64), crystal.cell.array.copy(),
                        crystal.pbc.copy(), 0.0, np.zeros((len(crystal), 3))))
    batch = collate(frames_to_graphs(frames, 4.0), model.species_table, torch.float64, "cpu")
    batched = predict_batch(model, batch, compute_stress=True, create_graph=False)
    for k, frame in enumerate(frames):
        periodic = bool(frame.pbc.all())
        single = model.compute(torch.from_numpy(frame.positions), torch.from_numpy(frame.numbers),
                               torch.from_numpy(frame.cell), torch.from_numpy(frame.pbc), True, periodic)
        assert float(batched["energy"][k]) == pytest.approx(float(single["energy"]), rel=1e-12)
        torch.testing.assert_close(batched["forces"][batch.atom_frame == k], single["forces"], rtol=1e-10, atol=1e-12)
        if periodic:
            torch.testing.assert_close(batched["stress"][k], single["stress"], rtol=1e-9, atol=1e-12)


def test_unknown_optimizer_and_a_corrupt_checkpoint_are_named(tmp_path):
    with pytest.raises(ValueError, match="unknown optimizer 'sgd'"):
        train(tiny_config(tmp_path / "a", epochs=1, optimizer="sgd"), quiet=True)
    run = tmp_path / "b"
    run.mkdir()
    (run / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="checkpoint.pt is not a readable checkpoint"):
        train(tiny_config(run, epochs=1), resume=True, quiet=True)


def _copper_frames(count: int, seed: int = 0):
    """Rattled, slightly strained 32-atom fcc Cu cells with EMT energies, forces and stress."""
    import ase.build
    from ase.calculators.emt import EMT

    rng = np.random.default_rng(seed)
    images = []
    for k in range(count):
        atoms = ase.build.bulk("Cu", "fcc", 3.6, cubic=True).repeat((2, 2, 2))
        atoms.rattle(0.05, seed=k)
        atoms.set_cell(atoms.cell * (1 + 0.02 * rng.normal()), scale_atoms=True)
        atoms.calc = EMT()
        atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()
        images.append(atoms)
    return images


def _copper_config(tmp_path, name, **training):
    path = tmp_path / "copper.extxyz"
    if not path.exists():
        ase.io.write(path, _copper_frames(16))
    config = tiny_config(tmp_path / name, arch="egnn", **training)
    config.data.files, config.data.index, config.model.cutoff = [str(path)], ":", 3.2
    return config


def test_unset_stress_weight_trains_stress_when_the_data_has_stress_labels(tmp_path, capsys):
    with_stress = train(_copper_config(tmp_path, "auto", epochs=40), quiet=False)
    assert "16 periodic frames carry stress labels, so stress is trained" in capsys.readouterr().err
    volume_per_atom = 3.6 ** 3 / 4  # fcc Cu, Å³ per atom (strained by about 2 %)
    used = read_metadata(with_stress.model_path)["provenance"]["training"]["config"]["training"]["stress_weight"]
    assert 0.8 * volume_per_atom ** 2 < used < 1.2 * volume_per_atom ** 2
    without = train(_copper_config(tmp_path, "zero", epochs=40, stress_weight=0.0), quiet=True)
    assert "but training.stress_weight is 0, so stress is not trained" in capsys.readouterr().err
    from mlpot.evaluate import evaluate_model_file

    errors = [evaluate_model_file(run.model_path, [str(tmp_path / "copper.extxyz")])[0]["stress_mae"]
              for run in (with_stress, without)]
    assert errors[0] < 0.5 * errors[1], errors  # the stress error falls when stress is trained


def test_an_element_found_only_outside_the_training_split_is_refused(tmp_path):
    images = ase.io.read(ETHANOL, index=":8") + _copper_frames(2)
    ase.io.write(tmp_path / "mixed.extxyz", images)
    (tmp_path / "train.txt").write_text("\n".join(str(i) for i in range(6)))
    (tmp_path / "test.txt").write_text("6\n7\n8\n9")
    config = tiny_config(tmp_path / "run", epochs=1)
    config.data.files, config.data.index, config.model.cutoff = [str(tmp_path / "mixed.extxyz")], ":", 4.0
    config.data.train_indices, config.data.test_indices = str(tmp_path / "train.txt"), str(tmp_path / "test.txt")
    with pytest.raises(ValueError, match=r"Cu .*no training frame"):
        train(config, quiet=True)
    assert not (tmp_path / "run" / "model.pt").exists()


def test_time_limit_stops_within_a_step_and_resume_continues_mid_epoch(tmp_path):
    """A limit far shorter than one epoch: the run stops mid-epoch, before the limit plus one step, with a
    checkpoint at that batch; resuming with a longer limit continues from it."""
    config = tiny_config(tmp_path / "run", frames=":120", epochs=1, batch_size=1, max_time_minutes=0.01)
    result = train(config, quiet=True)
    assert result.stopped_because == "max_time_minutes" and result.epochs_done == 0
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    stopped_at = state["progress"]["batch_in_epoch"]
    assert 0 < stopped_at < 60
    seconds_per_step = state["progress"]["elapsed_s"] / stopped_at
    assert state["progress"]["elapsed_s"] <= 0.6 + 2 * seconds_per_step
    config.training.max_time_minutes = None
    resumed = train(config, resume=True, quiet=True)
    assert resumed.stopped_because == "epochs" and resumed.epochs_done == 1
    assert log_rows(tmp_path / "run")[-1]["step"] == "60"


def _trained_source(tmp_path):
    source = tmp_path / "source"
    if not (source / "model.pt").exists():
        train(tiny_config(source, epochs=1), quiet=True)
    return source / "model.pt"


def test_fine_tuning_starts_from_the_model_files_weights_and_records_it(tmp_path):
    from mlpot.deploy import rebuild_model

    source = _trained_source(tmp_path)
    config = tiny_config(tmp_path / "tuned", frames="24:48", epochs=1)
    config.model.init_from, config.model.refit_references = str(source), False
    trainer = Trainer(config, quiet=True)
    trainer._build(trainer._prepare_directory())
    expected, _ = rebuild_model(load_model(source))
    for name, tensor in expected.state_dict().items():
        assert torch.equal(trainer.model.state_dict()[name], tensor), name
    assert trainer.progress["init_from"]["energy_references"]["refitted"] is False
    config2 = tiny_config(tmp_path / "tuned2", frames="24:48", epochs=1)
    config2.model.init_from = str(source)
    result = train(config2, quiet=True)
    record = read_metadata(result.model_path)["provenance"]["training"]["init_from"]
    from mlpot.runs import file_digest

    assert record["sha256"] == file_digest(str(source)) and record["path"] == str(source)


def test_fine_tuning_on_another_level_of_theory_refits_the_reference_energies(tmp_path, capsys):
    source = _trained_source(tmp_path)
    images = ase.io.read(ETHANOL, index="24:48")
    offsets = {"H": -3.0, "C": 500.0, "O": 800.0}  # eV per atom: another method's free-atom energies
    for atoms in images:
        atoms.calc.results["energy"] += sum(offsets[s] for s in atoms.get_chemical_symbols())
    ase.io.write(tmp_path / "other_theory.extxyz", images)
    config = tiny_config(tmp_path / "tuned", epochs=1)
    config.data.files, config.data.index, config.model.init_from = (
        [str(tmp_path / "other_theory.extxyz")], ":", str(source))
    trainer = Trainer(config, quiet=False)
    trainer._build(trainer._prepare_directory())
    assert "reference energies were refitted" in capsys.readouterr().err
    fit = trainer.progress["init_from"]["energy_references"]
    assert fit["refitted"] and fit["mean_abs_residual_eV_per_atom"] > 1.0
    # one molecule's composition fixes only the total: 6 H + 2 C + 1 O offsets
    total = 6 * fit["shift_change_eV"]["1"] + 2 * fit["shift_change_eV"]["6"] + fit["shift_change_eV"]["8"]
    assert abs(total - (6 * -3.0 + 2 * 500.0 + 800.0)) < 5.0  # the rest is the source model's own error


def test_fine_tuning_refuses_another_architecture_or_cutoff(tmp_path):
    source = tmp_path / "nequip-source"
    train(tiny_config(source, arch="nequip", epochs=1), quiet=True)
    config = tiny_config(tmp_path / "tuned", arch="egnn", epochs=1)
    config.model.init_from = str(source / "model.pt")
    with pytest.raises(ValueError,
                       match="holds a network of architecture nequip but model.arch is .egnn.; set model.arch: nequip"):
        train(config, quiet=True)
    config = tiny_config(tmp_path / "tuned", arch="nequip", epochs=1)
    config.model.init_from, config.model.cutoff = str(source / "model.pt"), 4.0
    with pytest.raises(ValueError, match="a network cannot change its cutoff"):
        train(config, quiet=True)


def test_fine_tuning_takes_the_network_from_the_file_when_the_config_keeps_the_defaults(tmp_path):
    source = _trained_source(tmp_path)  # an EGNN; the config's arch is the default (nequip)
    config = TrainConfig.from_dict({"data": {"files": [ETHANOL], "index": "24:40"},
                                    "training": {"epochs": 1, "batch_size": 4, "device": "cpu"},
                                    "model": {"init_from": str(source)}, "out": str(tmp_path / "tuned")})
    result = train(config, quiet=True)
    assert read_metadata(result.model_path)["arch"] == "egnn"
    assert read_metadata(result.model_path)["hyperparameters"] == read_metadata(source)["hyperparameters"]


def test_fine_tuning_refuses_data_with_an_element_the_model_lacks(tmp_path):
    source = _trained_source(tmp_path)
    ase.io.write(tmp_path / "copper.extxyz", _copper_frames(4))
    config = tiny_config(tmp_path / "tuned", epochs=1)
    config.data.files, config.data.index, config.model.init_from = [str(tmp_path / "copper.extxyz")], ":", str(source)
    with pytest.raises(ValueError, match="knows only H, C, O, but the data contain Cu; fine-tuning cannot add"):
        train(config, quiet=True)
