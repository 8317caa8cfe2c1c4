"""The compiled twin of a model file (mlpot.compile_cache): compiled once, cached, checked before use, and a clear
fallback or error when compiling fails. The suite runs with MLPOT_COMPILE=off; these tests set the mode themselves
and keep the cache in a temporary folder."""

from __future__ import annotations

import shutil
import warnings

import numpy as np
import pytest

import mlpot.compiled
from mlpot.compile_cache import (
    CompileFallbackWarning,
    cached_compiled_path,
    compile_mode,
    load_for_inference,
)
from mlpot.compiled import CompiledModel
from mlpot.deploy import DeployedModel, ModelFileError
from mlpot.plugins.ase import MLPotCalculator


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("MLPOT_CACHE_DIR", str(folder))
    monkeypatch.setenv("MLPOT_COMPILE", "auto")
    return folder


@pytest.fixture
def counted_compiles(monkeypatch, compiled_files):
    """compile_model_file replaced by a copy of the session's compiled file of the same model (counted)."""
    calls = []
    sources = {str(source): compiled for source, compiled in compiled_files.values()}

    def fake_compile(model_file, out, device="cpu"):
        calls.append((str(model_file), str(out)))
        shutil.copyfile(sources[str(model_file)], out)

    monkeypatch.setattr(mlpot.compiled, "compile_model_file", fake_compile)
    return calls


def _energy_forces(calculator, atoms):
    atoms = atoms.copy()
    atoms.calc = calculator
    return atoms.get_potential_energy(), atoms.get_forces()


def test_the_default_compiles_once_caches_and_gives_the_torchscript_numbers(cache, compiled_files, alanine_dipeptide,
                                                                          capfd):
    source, _ = compiled_files["egnn"]
    first = MLPotCalculator(source)  # a real compile, into the empty cache
    assert isinstance(first.model, CompiledModel)
    assert "compiling" in capfd.readouterr().err
    entry = cached_compiled_path(source)
    assert entry.parent == cache and entry.is_file()
    assert sorted(path.suffix for path in cache.iterdir()) == [".lock", ".pt2"]  # no half-written file left

    second = MLPotCalculator(source)
    assert isinstance(second.model, CompiledModel) and "compiling" not in capfd.readouterr().err
    energy, forces = _energy_forces(second, alanine_dipeptide)
    scripted_energy, scripted_forces = _energy_forces(MLPotCalculator(source, compile="off"), alanine_dipeptide)
    assert energy == pytest.approx(scripted_energy, rel=1e-5)
    np.testing.assert_allclose(forces, scripted_forces, atol=2e-5 * np.abs(scripted_forces).max())


def test_a_cached_twin_is_loaded_without_compiling_and_a_damaged_one_is_compiled_again(cache, counted_compiles,
                                                                                     compiled_files):
    source, _ = compiled_files["nequip"]
    assert isinstance(load_for_inference(source), CompiledModel) and len(counted_compiles) == 1
    assert isinstance(load_for_inference(source), CompiledModel) and len(counted_compiles) == 1
    entry = cached_compiled_path(source)
    data = bytearray(entry.read_bytes())
    data[len(data) // 2] ^= 0x01  # the seal no longer matches
    entry.write_bytes(bytes(data))
    assert isinstance(load_for_inference(source), CompiledModel) and len(counted_compiles) == 2


def test_a_twin_of_another_model_in_the_entry_is_not_used(cache, counted_compiles, compiled_files):
    egnn, nequip = compiled_files["egnn"], compiled_files["nequip"]
    entry = cached_compiled_path(egnn[0])
    entry.parent.mkdir(parents=True)
    shutil.copyfile(nequip[1], entry)  # sealed and valid, but compiled from another model
    model = load_for_inference(egnn[0])
    assert len(counted_compiles) == 1 and model.metadata["arch"] == "egnn"


def test_each_model_device_and_torch_has_its_own_entry(cache, compiled_files):
    egnn, nequip = compiled_files["egnn"][0], compiled_files["nequip"][0]
    assert cached_compiled_path(egnn) != cached_compiled_path(nequip)
    assert cached_compiled_path(egnn, "cpu") != cached_compiled_path(egnn, "cuda")
    assert "torch" in cached_compiled_path(egnn).name


def _failing_compile(model_file, out, device="cpu"):
    raise RuntimeError("mlpot: AOTInductor could not compile the model: no C++ compiler\nlong details")


def test_a_failed_compile_falls_back_to_torchscript_with_a_one_line_warning(cache, monkeypatch, compiled_files):
    monkeypatch.setattr(mlpot.compiled, "compile_model_file", _failing_compile)
    source, _ = compiled_files["egnn"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = load_for_inference(source)
    assert isinstance(model, DeployedModel) and not isinstance(model, CompiledModel)
    messages = [str(w.message) for w in caught if issubclass(w.category, CompileFallbackWarning)]
    assert len(messages) == 1 and "no C++ compiler" in messages[0] and "\n" not in messages[0]
    assert not list(cache.glob("*.pt2"))


def test_compile_on_makes_a_failed_compile_an_error_in_one_line(cache, monkeypatch, compiled_files):
    monkeypatch.setattr(mlpot.compiled, "compile_model_file", _failing_compile)
    source, _ = compiled_files["egnn"]
    with pytest.raises(ModelFileError, match="could not be compiled.*no C\\+\\+ compiler") as error:
        MLPotCalculator(source, compile="on")
    assert "\n" not in str(error.value)


def test_off_never_compiles_and_a_pt2_file_loads_as_it_is(cache, counted_compiles, compiled_files):
    source, compiled = compiled_files["egnn"]
    assert not isinstance(load_for_inference(source, compile="off"), CompiledModel)
    assert isinstance(load_for_inference(compiled, compile="off"), CompiledModel)
    assert counted_compiles == [] and not cache.exists()


def test_unknown_compile_modes_are_refused_by_name(monkeypatch):
    with pytest.raises(ValueError, match="compile='fast' is not a compile mode; use one of auto, on, off"):
        compile_mode("fast")
    monkeypatch.setenv("MLPOT_COMPILE", "yes")
    with pytest.raises(ValueError, match=r"\$MLPOT_COMPILE='yes' is not a compile mode"):
        compile_mode()
    assert compile_mode("OFF") == "off"


def test_openmm_md_on_the_cpu_runs_the_compiled_twin_in_a_python_force(cache, counted_compiles, compiled_files,
                                                                      tmp_path):
    import openmm

    from mlpot.simulate import _OpenMMEngine

    source, _ = compiled_files["nequip"]
    engine = _OpenMMEngine(source, "alanine-dipeptide", 300.0, 0.5, 1.0, 0, "CPU")
    forces = [type(force).__name__ for force in engine.simulation.system.getForces()]
    assert "PythonForce" in forces and len(counted_compiles) == 1
    scripted = _OpenMMEngine(source, "alanine-dipeptide", 300.0, 0.5, 1.0, 0, "CPU", compile="off")
    assert "PythonForce" not in [type(force).__name__ for force in scripted.simulation.system.getForces()]
    energies = []
    for run in (engine, scripted):
        run.start()
        state = run.simulation.context.getState(getEnergy=True)
        energies.append(state.getPotentialEnergy().value_in_unit(openmm.unit.kilojoule_per_mole))
    assert energies[0] == pytest.approx(energies[1], rel=1e-5)
