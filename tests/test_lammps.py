"""pair_style mlpot in LAMMPS (plugins/lammps/) against the ASE calculator: energies, per-atom energies, forces and
stress of a periodic water box on 1 and 2 MPI ranks, energy conservation in NVE, and the error for an element the
model lacks. Skipped when the plugin is not built (`make lammps`)."""

from __future__ import annotations

import numpy as np
import pytest

from mlpot.plugins.ase import MLPotCalculator
from mlpot.plugins.lammps import error_message, lammps_executable, plugin_path, run_lammps, write_data
from mlpot.units import BAR_PER_EV_PER_A3

try:
    PLUGIN = plugin_path()
    lammps_executable()
    NOT_BUILT = ""
except FileNotFoundError as error:
    PLUGIN, NOT_BUILT = None, str(error)

pytestmark = pytest.mark.skipif(bool(NOT_BUILT), reason=f"LAMMPS route not built: {NOT_BUILT}")

ELEMENTS = ["H", "O"]
# compute pressure gives xx yy zz xy xz yz; ASE's Voigt order is xx yy zz yz xz xy
VIRIAL_IN_VOIGT_ORDER = " ".join(f"$(c_virial[{k}]:%.17g)" for k in (1, 2, 3, 6, 5, 4))


def single_point_input(model, data: str = "water.data", elements=ELEMENTS, options: str = "") -> str:
    """Energy, per-atom energies, forces and the virial pressure (bar) at the data file's positions."""
    return f"""
units metal
atom_style atomic
boundary p p p
read_data {data}
plugin load {PLUGIN}
pair_style mlpot {model} {options}
pair_coeff * * {' '.join(elements)}
compute pe_atom all pe/atom
compute virial all pressure NULL virial
thermo_style custom step pe c_virial[*]
dump forces all custom 1 forces.dump id fx fy fz c_pe_atom
dump_modify forces sort id format float %.17g
run 0
print "energy_eV $(pe:%.17g)"
print "virial_bar {VIRIAL_IN_VOIGT_ORDER}"
"""


def lammps_single_point(model, atoms, workdir, ranks: int, options: str = "") -> dict:
    write_data(atoms, workdir / "water.data", ELEMENTS)
    process = run_lammps(single_point_input(model, options=options), workdir, ranks=ranks, timeout_s=600)
    assert process.returncode == 0, error_message(workdir, process)
    log = (workdir / "log.lammps").read_text()
    results = {"log": log}
    for line in log.splitlines():
        if line.startswith(("energy_eV", "virial_bar")):
            key, *values = line.split()
            results[key] = np.array([float(v) for v in values])
    dump = np.loadtxt(workdir / "forces.dump", skiprows=9)
    results["forces"] = dump[:, 1:4]
    results["energies"] = dump[:, 4]
    return results


def ase_single_point(model, atoms) -> dict:
    atoms = atoms.copy()
    atoms.calc = MLPotCalculator(model)
    return {"energy": atoms.get_potential_energy(), "energies": atoms.get_potential_energies(),
            "forces": atoms.get_forces(), "stress": atoms.get_stress(voigt=True)}


@pytest.mark.parametrize("options", ["", "chunk off"])  # the default (chunks of 4096 on a CPU) and the whole graph
@pytest.mark.parametrize("ranks", [1, 2])
@pytest.mark.parametrize("arch", ["nequip", "egnn"])
def test_water_box_energy_forces_stress_equal_ase_on_one_and_two_ranks(arch, ranks, options, model_files, water_box,
                                                                       tmp_path):
    model = model_files[(arch, "float64")]
    expected = ase_single_point(model, water_box)
    got = lammps_single_point(model, water_box, tmp_path, ranks, options=options)
    assert got["energy_eV"][0] == pytest.approx(expected["energy"], abs=1e-8)
    np.testing.assert_allclose(got["energies"], expected["energies"], atol=1e-9)
    np.testing.assert_allclose(got["forces"], expected["forces"], atol=1e-9)
    # LAMMPS's pressure is positive under compression, ASE's stress under tension
    np.testing.assert_allclose(-got["virial_bar"] / BAR_PER_EV_PER_A3, expected["stress"], atol=1e-9)
    # one cutoff of ghosts either way: on one rank every ghost images a local atom and shares its node; on two the
    # ghosts' node states come from their owners after each layer
    assert "= 1 layer(s) x 5 Å cutoff" in got["log"]
    assert ("exchange the ghosts' node states after each of the 2 layers" in got["log"]) == (ranks == 2)
    assert ("each layer runs 4096 centre atoms at a time" in got["log"]) == (options == "")


@pytest.mark.parametrize("ranks", [1, 2])
@pytest.mark.parametrize("arch", ["nequip", "egnn"])
def test_chunked_layers_give_the_same_energies_forces_and_stress(arch, ranks, model_files, water_box, tmp_path):
    # `chunk 7`: each layer on 7 centre atoms' subgraph at a time, run again in the backward pass (many chunks and
    # a short last one, on either rank count)
    model = model_files[(arch, "float64")]
    expected = ase_single_point(model, water_box)
    got = lammps_single_point(model, water_box, tmp_path, ranks, options="chunk 7")
    assert got["energy_eV"][0] == pytest.approx(expected["energy"], abs=1e-8)
    np.testing.assert_allclose(got["energies"], expected["energies"], atol=1e-9)
    np.testing.assert_allclose(got["forces"], expected["forces"], atol=1e-9)
    np.testing.assert_allclose(-got["virial_bar"] / BAR_PER_EV_PER_A3, expected["stress"], atol=1e-9)


@pytest.mark.parametrize("options, message", [
    ("chunk 0", "chunk must be a positive number of atoms or off, got 0"),
    ("chunk many", "chunk must be a positive number of atoms or off, got many"),
    ("device", "expected pair_style mlpot MODEL_FILE [device cpu|cuda] [chunk N|off]"),
    ("speed fast", "Illegal pair_style mlpot keyword speed"),
])
def test_bad_pair_style_options_are_errors_naming_them(options, message, model_files, water_box, tmp_path):
    write_data(water_box, tmp_path / "water.data", ELEMENTS)
    model = model_files[("nequip", "float64")]
    process = run_lammps(single_point_input(model, options=options), tmp_path, timeout_s=600)
    assert process.returncode != 0
    assert message in error_message(tmp_path, process)


def test_chunk_with_a_model_file_without_layer_entry_points_is_an_error_saying_how_to_update_it(water_box, tmp_path):
    from pathlib import Path

    legacy = Path(__file__).resolve().parent / "fixtures" / "legacy" / "stable" / "parent.pt"
    write_data(water_box, tmp_path / "water.data", ELEMENTS)
    process = run_lammps(single_point_input(legacy, options="chunk 64"), tmp_path, timeout_s=600)
    assert process.returncode != 0
    message = error_message(tmp_path, process)
    assert "chunk needs a model file with layer-by-layer entry points" in message
    assert "`mlpot rebuild` adds them" in message


@pytest.mark.filterwarnings("ignore:.*without a seal:UserWarning")  # the legacy file is format 1 (unsealed)
def test_a_model_file_without_layer_entry_points_runs_on_two_ranks_with_a_deep_ghost_shell(water_box, tmp_path):
    from pathlib import Path

    legacy = Path(__file__).resolve().parent / "fixtures" / "legacy" / "stable" / "parent.pt"  # H, C, O; older format
    expected = ase_single_point(legacy, water_box)
    got = lammps_single_point(legacy, water_box, tmp_path, ranks=2)
    assert "has no layer-by-layer entry points" in got["log"]
    assert got["energy_eV"][0] == pytest.approx(expected["energy"], rel=1e-6)
    np.testing.assert_allclose(got["forces"], expected["forces"], atol=1e-4)


def test_float32_model_agrees_with_ase_on_two_ranks(model_files, water_box, tmp_path):
    model = model_files[("nequip", "float32")]
    expected = ase_single_point(model, water_box)
    got = lammps_single_point(model, water_box, tmp_path, ranks=2)
    assert got["energy_eV"][0] == pytest.approx(expected["energy"], rel=1e-6)
    np.testing.assert_allclose(got["forces"], expected["forces"], atol=1e-4)


def test_short_nve_run_conserves_energy(model_files, dilute_water_box, tmp_path):
    write_data(dilute_water_box, tmp_path / "water.data", ELEMENTS)
    text = single_point_input(model_files[("nequip", "float64")]).split("compute pe_atom")[0] + """
velocity all create 300.0 12345 mom yes rot no dist gaussian
timestep 0.0002
fix nve all nve
thermo_style custom step pe ke etotal
thermo_modify format float %.12g
thermo 10
run 100
"""
    process = run_lammps(text, tmp_path, ranks=2, timeout_s=600)
    assert process.returncode == 0, error_message(tmp_path, process)
    rows = []
    lines = (tmp_path / "log.lammps").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:2] == ["Step", "PotEng"])
    for line in lines[start + 1:]:
        if line.startswith("Loop time"):
            break
        rows.append([float(v) for v in line.split()])
    step, potential, kinetic, total = np.array(rows).T
    assert step[-1] == 100
    assert np.ptp(kinetic) > 1e-3  # the atoms move: energy flows between kinetic and potential
    assert np.ptp(total) < 0.01 * np.ptp(kinetic)


def test_element_the_model_lacks_is_an_error_naming_it(model_files, water_box, tmp_path):
    write_data(water_box, tmp_path / "water.data", ELEMENTS)
    model = model_files[("nequip", "float64")]
    process = run_lammps(single_point_input(model, elements=["H", "Fe"]), tmp_path, timeout_s=600)
    assert process.returncode != 0
    message = error_message(tmp_path, process)
    assert "element Fe (atom type 2) is not in model" in message
    assert "which knows only H, C, N, O" in message
