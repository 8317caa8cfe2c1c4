"""openmm-torch 1.5 segfaults when a System holding a TorchForce is copied or deserialised; importing
mlpot.plugins.openmm turns each such path into a RuntimeError. Every check runs in a fresh
subprocess, so that a regression shows up as a killed child (negative return code), not a dead test run."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ETHANOL_PDB = Path(__file__).resolve().parents[1] / "systems" / "ethanol" / "ethanol.pdb"
MESSAGE = "openmm-torch 1.5 crashes the process when a System or Force holding a TorchForce is copied"

PRELUDE = """
import copy, pickle, sys
import openmm, openmm.app as app
from mlpot.plugins.openmm import create_force
pdb = app.PDBFile({pdb!r})
system = openmm.System()
for atom in pdb.topology.atoms():
    system.addParticle(atom.element.mass)
"""


def _run(body: str, model: Path) -> subprocess.CompletedProcess:
    code = textwrap.dedent(PRELUDE).format(pdb=str(ETHANOL_PDB)) + textwrap.dedent(body).replace("MODEL", str(model))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)


COPY_PATHS = {
    "deepcopy-system": "copy.deepcopy(system)",
    "copy-system": "copy.copy(system)",
    "pickle-system": "pickle.loads(pickle.dumps(system))",
    "deserialize-system": "openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(system))",
    "deserializeSystem": "openmm.XmlSerializer.deserializeSystem(openmm.XmlSerializer.serialize(system))",
    "clone-system": "openmm.XmlSerializer.clone(system)",
    "clone-force": "openmm.XmlSerializer.clone(system.getForce(0))",
    "deserialize-force": "openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(system.getForce(0)))",
    "deepcopy-force-from-system": "copy.deepcopy(system.getForce(0))",
}


@pytest.mark.parametrize("path", sorted(COPY_PATHS))
def test_copying_a_system_with_a_torch_force_raises_instead_of_crashing(path, model_files):
    result = _run(f"""
        system.addForce(create_force('MODEL', pdb.topology))
        try:
            {COPY_PATHS[path]}
        except RuntimeError as error:
            print("refused:", error)
            sys.exit(3)
        print("copied")
    """, model_files[("egnn", "float32")])
    assert result.returncode >= 0, f"killed by signal {-result.returncode}: {result.stderr[-2000:]}"
    assert result.returncode == 3, result.stdout + result.stderr[-2000:]
    assert MESSAGE in result.stdout
    assert "create_system / create_force" in result.stdout


def test_systems_without_a_torch_force_still_copy_and_round_trip(model_files):
    result = _run("""
        import mlpot.plugins.openmm as plugin, importlib
        importlib.reload(plugin)  # a second import must not wrap twice
        assert not hasattr(openmm.System.__copy__._mlpot_guarded, "_mlpot_guarded")
        force = openmm.HarmonicBondForce()
        force.addBond(0, 1, 0.15, 1000.0)
        system.addForce(force)
        for copied in (copy.deepcopy(system), copy.copy(system), pickle.loads(pickle.dumps(system)),
                       openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(system)),
                       openmm.XmlSerializer.clone(system)):
            assert copied.getNumParticles() == 9 and copied.getNumForces() == 1
            assert copied.getForce(0).getBondParameters(0)[0:2] == [0, 1]
        again = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(force))
        assert again.getNumBonds() == 1
        print("ok")
    """, model_files[("egnn", "float32")])
    assert result.returncode == 0, result.stdout + result.stderr[-2000:]
    assert result.stdout.strip().endswith("ok")
