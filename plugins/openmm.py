"""OpenMM adapter: an mlpot model file as an ``openmmtorch.TorchForce``.

    from mlpot.plugins.openmm import create_force
    force = create_force("model.pt", topology)              # whole system
    force = create_force("model.pt", topology, atoms=ml)    # ML/MM: only these atom indices
    system.addForce(force)

OpenMM hands the force positions and box vectors in nm and expects energies in kJ/mol and
forces in kJ/mol/nm. The model works in Å and eV. :class:`OpenMMForceModule` converts once, with
the factors from :mod:`mlpot.units`, and is compiled to TorchScript so that the C++ TorchForce runs
it with no Python in the MD loop. Forces come from the model's own ``compute`` (autograd inside the
compiled graph), returned to OpenMM with ``setOutputsForces(True)``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterable, List, Optional, Sequence, Tuple, Union

import torch

from mlpot.deploy import DeployedModel, load_model
from mlpot.neighbors import perpendicular_widths
from mlpot.units import ANGSTROM_PER_NM, KJ_PER_MOL_PER_EV


class OpenMMForceModule(torch.nn.Module):
    """``forward(positions nm, box nm) -> (energy kJ/mol, forces kJ/mol/nm)`` for TorchForce.

    Args:
        potential: the compiled model (``DeployedModel.module``).
        atomic_numbers: of the atoms the model acts on, in the order of ``indices``.
        indices: OpenMM particle indices the model acts on (all particles when ``None``).
        periodic: use the box OpenMM passes (all three axes periodic).
    """

    def __init__(
        self,
        potential: torch.jit.ScriptModule,
        atomic_numbers: Sequence[int],
        indices: Optional[Sequence[int]],
        periodic: bool,
    ):
        super().__init__()
        self.potential = potential
        self.register_buffer("atomic_numbers", torch.tensor(list(atomic_numbers), dtype=torch.long))
        if indices is None:
            indices = range(len(atomic_numbers))
        self.register_buffer("indices", torch.tensor(list(indices), dtype=torch.long))
        self.periodic = periodic
        self.angstrom_per_nm = ANGSTROM_PER_NM
        self.kj_per_mol_per_ev = KJ_PER_MOL_PER_EV

    def forward(
        self, positions: torch.Tensor, boxvectors: Optional[torch.Tensor] = None
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        positions_A = positions.index_select(0, self.indices) * self.angstrom_per_nm
        if self.periodic and boxvectors is not None:
            cell_A = boxvectors * self.angstrom_per_nm
            pbc = torch.ones(3, dtype=torch.bool, device=positions.device)
        else:
            cell_A = torch.zeros(3, 3, dtype=positions.dtype, device=positions.device)
            pbc = torch.zeros(3, dtype=torch.bool, device=positions.device)
        results = self.potential.compute(positions_A, self.atomic_numbers, cell_A, pbc, True, False, False)
        energy_kj = results["energy"].to(positions.dtype) * self.kj_per_mol_per_ev
        forces_model = results["forces"].to(positions.dtype) * (self.kj_per_mol_per_ev * self.angstrom_per_nm)
        forces_kj_nm = torch.zeros_like(positions).index_copy(0, self.indices, forces_model)
        return energy_kj, forces_kj_nm


class _DropSimtkNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "simtk.openmm" not in record.getMessage()


def _import_openmmtorch():
    """Import openmmtorch (after torch, which puts the CUDA libraries it links on the loader path),
    without the deprecation notice its own ``import simtk.openmm`` logs on every run."""
    root = logging.getLogger()
    notice_filter = _DropSimtkNotice()
    root.addFilter(notice_filter)
    try:
        import openmmtorch
    finally:
        root.removeFilter(notice_filter)
    return openmmtorch


def _atomic_numbers(topology) -> List[int]:
    numbers = []
    for atom in topology.atoms():
        if atom.element is None:
            raise ValueError(
                f"atom {atom.index} ({atom.name} in residue {atom.residue.name}) has no element; "
                "an mlpot model needs the element of every atom it acts on"
            )
        numbers.append(atom.element.atomic_number)
    return numbers


def check_box(model: DeployedModel, box_vectors_nm) -> None:
    """Raise ``ValueError`` if a periodic box is narrower than twice the model's cutoff."""
    import numpy as np
    from openmm import unit

    if unit.is_quantity(box_vectors_nm):
        box_vectors_nm = box_vectors_nm.value_in_unit(unit.nanometer)
    cell_A = torch.tensor(np.array([[v[0], v[1], v[2]] for v in box_vectors_nm]), dtype=torch.float64) * ANGSTROM_PER_NM
    widths = perpendicular_widths(cell_A)
    if float(widths.min()) < 2.0 * model.cutoff:
        raise ValueError(
            f"periodic box too small for the cutoff: its narrowest width is {float(widths.min()):.3f} Å but model "
            f"{model.path.name} needs at least 2 x cutoff = {2.0 * model.cutoff:.3f} Å"
        )


def create_force(
    model: Union[str, Path, DeployedModel],
    topology=None,
    atoms: Optional[Iterable[int]] = None,
    atomic_numbers: Optional[Sequence[int]] = None,
    periodic: Optional[bool] = None,
):
    """An ``openmmtorch.TorchForce`` computing the model's energy and forces.

    Args:
        model: model file path (or a loaded :class:`DeployedModel`).
        topology: ``openmm.app.Topology`` giving every particle's element (and the box, if periodic).
        atoms: particle indices the model acts on (ML/MM); ``None`` means all particles.
        atomic_numbers: instead of ``topology``: the atomic number of every particle in the System.
        periodic: use periodic boundary conditions; default: whether ``topology`` has a box.
    """
    openmmtorch = _import_openmmtorch()
    deployed = model if isinstance(model, DeployedModel) else load_model(model)
    if topology is None and atomic_numbers is None:
        raise TypeError("create_force needs the topology (or the atomic_numbers of all particles)")
    all_numbers = list(atomic_numbers) if atomic_numbers is not None else _atomic_numbers(topology)
    indices = None if atoms is None else [int(i) for i in atoms]
    if indices is not None:
        out_of_range = [i for i in indices if not 0 <= i < len(all_numbers)]
        if out_of_range:
            raise ValueError(f"atom indices {out_of_range[:5]} out of range for a system of {len(all_numbers)} particles")
        if len(set(indices)) != len(indices):
            raise ValueError("atom indices for the ML subset contain duplicates")
    numbers = all_numbers if indices is None else [all_numbers[i] for i in indices]
    deployed.check_elements(numbers)
    if periodic is None:
        periodic = topology is not None and topology.getPeriodicBoxVectors() is not None
    if periodic and topology is not None and topology.getPeriodicBoxVectors() is not None:
        check_box(deployed, topology.getPeriodicBoxVectors())
    module = OpenMMForceModule(deployed.module, numbers, indices, periodic)
    try:
        compiled = torch.jit.script(module)
    except Exception as error:
        raise RuntimeError(f"mlpot: could not compile the OpenMM wrapper for {deployed.path}: {error}") from error
    force = openmmtorch.TorchForce(compiled)
    force.setOutputsForces(True)
    force.setUsesPeriodicBoundaryConditions(bool(periodic))
    force.__deepcopy__ = refuse_copy  # copy.deepcopy looks the method up on the instance
    return force


def refuse_copy(memo):
    """openmm-torch 1.5 from PyPI crashes the process (segmentation fault) when a TorchForce is copied
    (copy.deepcopy, XmlSerializer.deserialize) or nested in a CustomCVForce; refuse with a message instead."""
    raise RuntimeError(
        "an mlpot TorchForce cannot be copied: openmm-torch 1.5 (PyPI build) crashes when a TorchForce is "
        "copied, deserialized or placed in a CustomCVForce. openmm-ml's createMixedSystem(interpolate=True) "
        "needs that and is not available with this build; create the force again with create_force instead"
    )


def create_system(model: Union[str, Path, DeployedModel], topology, remove_cm_motion: bool = True):
    """An ``openmm.System`` whose only interaction is the model (masses from the topology's elements)."""
    import openmm

    system = openmm.System()
    if topology.getPeriodicBoxVectors() is not None:
        system.setDefaultPeriodicBoxVectors(*topology.getPeriodicBoxVectors())
    for atom in topology.atoms():
        system.addParticle(atom.element.mass if atom.element is not None else 0.0)
    system.addForce(create_force(model, topology))
    if remove_cm_motion:
        system.addForce(openmm.CMMotionRemover())
    return system
