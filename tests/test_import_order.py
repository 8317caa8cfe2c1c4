"""Any import order works: ``import openmm`` (or openmmml) before torch used to leave openmm-torch's
plugins unloaded (libnvrtc not yet on the loader path), and every Context then failed with "No Platform
supports all the requested kernels". Each check runs in a fresh subprocess that imports openmm first."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ETHANOL_PDB = Path(__file__).resolve().parents[1] / "systems" / "ethanol" / "ethanol.pdb"

ENERGY = """
energies = []
for platform in ("Reference", "CPU"):
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName(platform))
    context.setPositions(pdb.positions)
    energies.append(context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(openmm.unit.kilojoule_per_mole))
print("energies", *energies)
"""

SCRIPTS = {
    "openmm-first-create_force": """
        import openmm, openmm.app as app
        assert "torch" not in sys.modules
        pdb = app.PDBFile(PDB_PATH)
        system = openmm.System()
        for atom in pdb.topology.atoms():
            system.addParticle(atom.element.mass)
        from mlpot.plugins.openmm import create_force
        system.addForce(create_force(MODEL_PATH, pdb.topology))
    """,
    "openmm-first-create_system": """
        import openmm, openmm.app as app
        assert "torch" not in sys.modules
        pdb = app.PDBFile(PDB_PATH)
        from mlpot.plugins.openmm import create_system
        system = create_system(MODEL_PATH, pdb.topology)
    """,
    "openmmml-first": """
        import openmmml, openmm, openmm.app as app
        pdb = app.PDBFile(PDB_PATH)
        system = openmmml.MLPotential("mlpot", modelPath=MODEL_PATH).createSystem(pdb.topology)
    """,
    "torch-first": """
        import torch, openmm, openmm.app as app
        pdb = app.PDBFile(PDB_PATH)
        from mlpot.plugins.openmm import create_system
        system = create_system(MODEL_PATH, pdb.topology)
    """,
}


def _energies(script: str, model: Path):
    code = ("import sys\n" + textwrap.dedent(script) + ENERGY).replace("PDB_PATH", repr(str(ETHANOL_PDB))).replace(
        "MODEL_PATH", repr(str(model)))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    line = [line for line in result.stdout.splitlines() if line.startswith("energies")][-1]
    return [float(value) for value in line.split()[1:]]


@pytest.fixture(scope="module")
def torch_first_energy(model_files):
    """kJ/mol on the Reference platform with torch imported first (the order that always worked)."""
    return _energies(SCRIPTS["torch-first"], model_files[("egnn", "float32")])[0]


@pytest.mark.parametrize("order", sorted(SCRIPTS))
def test_any_import_order_gives_the_same_energy_on_reference_and_cpu(order, model_files, torch_first_energy):
    reference_energy = torch_first_energy
    reference, cpu = _energies(SCRIPTS[order], model_files[("egnn", "float32")])
    assert reference == pytest.approx(reference_energy, rel=1e-5, abs=1e-4)
    assert cpu == pytest.approx(reference_energy, rel=1e-4, abs=1e-3)
