"""OpenMM adapter: an mlpot model file as an ``openmmtorch.TorchForce`` (a compiled ``.pt2`` file: an
``openmm.PythonForce``).

    from mlpot.plugins.openmm import create_force
    force = create_force("model.pt", topology)              # whole system
    force = create_force("model.pt", topology, atoms=ml)    # ML/MM: only these atom indices
    force = create_force("model.pt2", topology)             # `mlpot compile` output: faster on small molecules
    system.addForce(force)

**Which route.** A TorchScript file (``model.pt``) runs in openmm-torch's ``TorchForce``; a compiled file
(``mlpot compile model.pt -o model.pt2``, AOTInductor) runs in OpenMM 8.6's ``PythonForce``, which calls
:meth:`mlpot.compiled.CompiledModel.compute` once per step (positions copied out of OpenMM and forces
back in, in nm and kJ/mol through :mod:`mlpot.units`). Measured with ``benchmarks/compiled_speed.py
--openmm`` on alanine dipeptide (NequIP-style nequip-matched, 1 thread, CPU platform): 3.7 ms per
Langevin step through PythonForce + compiled file against 9.1 ms through TorchForce
(``benchmarks/results/compiled_speed.json``). So the compiled file is the faster route wherever one has
been made; a ``.pt`` file stays on TorchForce, because compiling takes about a minute and is a step
the user chooses (``mlpot compile``). A ``PythonForce`` cannot be serialised to XML.

OpenMM hands the force positions and box vectors in nm and expects energies in kJ/mol and
forces in kJ/mol/nm. The model works in Å and eV. :class:`OpenMMForceModule` converts once, with
the factors from :mod:`mlpot.units`, and is compiled to TorchScript so that the C++ TorchForce runs
it with no Python in the MD loop. Forces come from the model's own ``compute`` (autograd inside the
compiled graph), returned to OpenMM with ``setOutputsForces(True)``.

Importing this module also (1) loads again openmm-torch's plugin libraries when ``import openmm``
came before ``import torch`` (they fail then, for want of libnvrtc), so any import order works, and
(2) makes copying or deserialising a System or Force holding a TorchForce raise ``RuntimeError``:
openmm-torch 1.5 segfaults there. See :func:`reload_torch_plugins` and :func:`install_copy_guards`.
"""

from __future__ import annotations

import logging
import numbers as _numbers
import re
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
        num_particles: particles the System must have (-1: not checked).
    """

    def __init__(
        self,
        potential: torch.jit.ScriptModule,
        atomic_numbers: Sequence[int],
        indices: Optional[Sequence[int]],
        periodic: bool,
        num_particles: int = -1,
    ):
        super().__init__()
        self.potential = potential
        self.register_buffer("atomic_numbers", torch.tensor(list(atomic_numbers), dtype=torch.long))
        if indices is None:
            indices = range(len(atomic_numbers))
        self.register_buffer("indices", torch.tensor(list(indices), dtype=torch.long))
        self.num_particles = int(num_particles)
        self.periodic = periodic
        self.angstrom_per_nm = ANGSTROM_PER_NM
        self.kj_per_mol_per_ev = KJ_PER_MOL_PER_EV

    def forward(
        self, positions: torch.Tensor, boxvectors: Optional[torch.Tensor] = None
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        if self.num_particles >= 0 and positions.size(0) != self.num_particles:
            raise RuntimeError(
                "mlpot: the force was created with atomic_numbers for " + str(self.num_particles)
                + " particles but the System has " + str(positions.size(0))
                + " particles; give create_force the atomic_numbers of every particle"
            )
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


def _integers(values, empty_message: str, not_integer_message: str) -> List[int]:
    """``values`` as a non-empty list of ints (bools refused); ``ValueError`` with the given messages otherwise."""
    given = list(values)
    if not given:
        raise ValueError(empty_message)
    bad = [v for v in given if isinstance(v, bool) or not isinstance(v, _numbers.Integral)]
    if bad:
        raise ValueError(f"{not_integer_message}; got {bad[:5]}")
    return [int(v) for v in given]


def _checked_atomic_numbers(topology, atomic_numbers) -> List[int]:
    """The atomic number of every particle: from ``atomic_numbers`` (checked against ``topology``
    when both are given) or else from the topology's elements. Raises ``ValueError`` on a mismatch."""
    if atomic_numbers is None:
        return _atomic_numbers(topology)
    given = _integers(atomic_numbers, "atomic_numbers is empty: give the atomic number of every particle in the System",
                      "atomic_numbers must be integers")
    if topology is None:
        return given
    if len(given) != topology.getNumAtoms():
        raise ValueError(
            f"atomic_numbers lists {len(given)} particles but the topology has {topology.getNumAtoms()} atoms"
        )
    from_topology = _atomic_numbers(topology)
    mismatches = [(i, z, t) for i, (z, t) in enumerate(zip(given, from_topology)) if z != t]
    if mismatches:
        shown = ", ".join(f"atom {i}: {z} vs {t}" for i, z, t in mismatches[:5])
        raise ValueError(
            f"atomic_numbers disagree with the topology's elements at {len(mismatches)} atoms "
            f"(atomic_numbers vs topology: {shown}); give one or the other, or make them agree"
        )
    return given


def _checked_atom_indices(atoms, num_particles: int) -> List[int]:
    """``atoms`` as a list of distinct particle indices in ``[0, num_particles)``; ``ValueError`` otherwise."""
    indices = _integers(atoms, "atoms is empty: give the indices of the particles the model acts on (or None for all)",
                        "atoms must be integer particle indices")
    out_of_range = [i for i in indices if not 0 <= i < num_particles]
    if out_of_range:
        raise ValueError(f"atom indices {out_of_range[:5]} out of range for a system of {num_particles} particles")
    seen, duplicates = set(), []
    for i in indices:
        if i in seen and i not in duplicates:
            duplicates.append(i)
        seen.add(i)
    if duplicates:
        raise ValueError(f"atoms lists particle indices more than once: {duplicates[:5]}")
    return indices


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


def _checked_selection(model: DeployedModel, topology, atoms, atomic_numbers, periodic):
    """The checked inputs of :func:`create_force` for a loaded model (TorchScript or compiled): the atomic numbers
    of every particle, the ML atom indices (None: all), the atomic numbers the model acts on, and whether the
    force is periodic (default: whether ``topology`` has a box, which must then fit the cutoff)."""
    if topology is None and atomic_numbers is None:
        raise TypeError("create_force needs the topology (or the atomic_numbers of all particles)")
    all_numbers = _checked_atomic_numbers(topology, atomic_numbers)
    indices = None if atoms is None else _checked_atom_indices(atoms, len(all_numbers))
    numbers = all_numbers if indices is None else [all_numbers[i] for i in indices]
    model.check_elements(numbers)
    box = None if topology is None else topology.getPeriodicBoxVectors()
    if periodic is None:
        periodic = box is not None
    if periodic and box is not None:
        check_box(model, box)
    return all_numbers, indices, numbers, periodic


def create_force(
    model: Union[str, Path, DeployedModel],
    topology=None,
    atoms: Optional[Iterable[int]] = None,
    atomic_numbers: Optional[Sequence[int]] = None,
    periodic: Optional[bool] = None,
):
    """An ``openmmtorch.TorchForce`` computing the model's energy and forces (for a compiled ``.pt2`` file an
    ``openmm.PythonForce``; module docstring).

    Args:
        model: model file path (or a loaded :class:`DeployedModel` or :class:`mlpot.compiled.CompiledModel`).
        topology: ``openmm.app.Topology`` giving every particle's element (and the box, if periodic).
        atoms: distinct integer particle indices the model acts on (ML/MM); ``None`` means all particles.
            Empty, duplicated, non-integer or out-of-range indices raise ``ValueError``.
        atomic_numbers: instead of ``topology``: the atomic number of every particle in the System. With
            a topology too, they must agree with its elements (``ValueError``); without one, a System
            of another size fails at its first evaluation (an ``OpenMMException`` saying so).
        periodic: use periodic boundary conditions; default: whether ``topology`` has a box.
    """
    if _is_compiled(model):
        return _create_python_force(model, topology, atoms, atomic_numbers, periodic)
    openmmtorch = _import_openmmtorch()
    deployed = model if isinstance(model, DeployedModel) else load_model(model)
    all_numbers, indices, numbers, periodic = _checked_selection(deployed, topology, atoms, atomic_numbers, periodic)
    # Without a topology the particle count is only known when OpenMM first calls the force.
    num_particles = len(all_numbers) if topology is None else -1
    module = OpenMMForceModule(deployed.module, numbers, indices, periodic, num_particles)
    try:
        compiled = torch.jit.script(module)
    except Exception as error:
        raise RuntimeError(f"mlpot: could not compile the OpenMM wrapper for {deployed.path}: {error}") from error
    force = openmmtorch.TorchForce(compiled)
    force.setOutputsForces(True)
    force.setUsesPeriodicBoundaryConditions(bool(periodic))
    force.__deepcopy__ = refuse_copy  # copy.deepcopy looks the method up on the instance
    return force


class CompiledForceComputation:
    """The ``openmm.PythonForce`` callback of a compiled model: ``(state) -> (energy kJ/mol, forces kJ/mol/nm)``.

    Args:
        model: the loaded compiled file (:class:`mlpot.compiled.CompiledModel`).
        atomic_numbers: of the atoms the model acts on, in the order of ``indices``.
        indices: OpenMM particle indices the model acts on (all particles when ``None``).
        periodic: use OpenMM's box (all three axes periodic).
        num_particles: particles the System must have.
    """

    def __init__(self, model, atomic_numbers: Sequence[int], indices: Optional[Sequence[int]], periodic: bool,
                 num_particles: int):
        import numpy as np

        self.model = model
        self.atomic_numbers = torch.tensor(list(atomic_numbers), dtype=torch.long)
        self.indices = None if indices is None else np.asarray(list(indices), dtype=np.int64)
        self.periodic = periodic
        self.pbc = torch.tensor([periodic] * 3)
        self.zero_cell_A = torch.zeros(3, 3, dtype=torch.float64)
        self.num_particles = num_particles

    def __call__(self, state):
        import numpy as np
        from openmm import unit

        positions_nm = np.asarray(state.getPositions(asNumpy=True).value_in_unit(unit.nanometer))
        if len(positions_nm) != self.num_particles:
            raise ValueError(f"mlpot: the force was created for {self.num_particles} particles but the System has "
                             f"{len(positions_nm)}; give create_force the atomic_numbers of every particle")
        selected_nm = positions_nm if self.indices is None else positions_nm[self.indices]
        cell_A = self.zero_cell_A
        if self.periodic:
            box_nm = np.asarray(state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer))
            cell_A = torch.from_numpy(box_nm) * ANGSTROM_PER_NM
        results = self.model.compute(torch.from_numpy(selected_nm) * ANGSTROM_PER_NM, self.atomic_numbers, cell_A,
                                     self.pbc)
        model_forces = results["forces"].detach().double().cpu().numpy() * (KJ_PER_MOL_PER_EV * ANGSTROM_PER_NM)
        if self.indices is None:
            forces_kj_nm = model_forces
        else:
            forces_kj_nm = np.zeros_like(positions_nm)
            forces_kj_nm[self.indices] = model_forces
        return float(results["energy"]) * KJ_PER_MOL_PER_EV, forces_kj_nm


def _is_compiled(model) -> bool:
    from mlpot.compiled import CompiledModel, is_compiled_file

    if isinstance(model, CompiledModel):
        return True
    return not isinstance(model, DeployedModel) and Path(model).is_file() and is_compiled_file(model)


def _create_python_force(model, topology, atoms, atomic_numbers, periodic):
    """:func:`create_force` for a compiled file: an ``openmm.PythonForce`` (module docstring)."""
    import openmm

    from mlpot.compiled import CompiledModel, load_compiled

    compiled = model if isinstance(model, CompiledModel) else load_compiled(model)
    all_numbers, indices, numbers, periodic = _checked_selection(compiled, topology, atoms, atomic_numbers, periodic)
    force = openmm.PythonForce(CompiledForceComputation(compiled, numbers, indices, bool(periodic), len(all_numbers)))
    force.setUsesPeriodicBoundaryConditions(bool(periodic))
    return force


def platform_names() -> List[str]:
    """The OpenMM platforms this machine has (e.g. Reference, CPU, CUDA)."""
    import openmm

    return [openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())]


def checked_platform_name(name: str, other_choices: str = "") -> str:
    """``name`` if OpenMM has that platform here, else ValueError in one line listing those it has (then
    ``other_choices``, e.g. ``" (or 'auto')"``)."""
    names = platform_names()
    if name not in names:
        raise ValueError(f"unknown OpenMM platform {name!r}; available here: {', '.join(names)}{other_choices}")
    return name


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


# --- loading order and crash guards, applied once when this module is imported -------------------

_FAILED_LIBRARY = re.compile(r"Error loading library (.+?): ")
_MISSING_TORCH_DEPENDENCY = ("libnv", "libtorch", "libc10", "libcu")


def reload_torch_plugins() -> List[str]:
    """Load again the openmm-torch plugin libraries that failed because ``import openmm`` ran before
    ``import torch`` (then libnvrtc/libtorch/libc10 were not yet on the loader path). Returns the
    libraries loaded now; one that fails again (e.g. no GPU driver) is left as it was."""
    import openmm

    loaded = []
    for failure in openmm.Platform.getPluginLoadFailures():
        match = _FAILED_LIBRARY.match(failure)
        if match is None:
            continue
        library = match.group(1)
        reason = failure[match.end():]
        if "Torch" not in Path(library).name or not any(name in reason for name in _MISSING_TORCH_DEPENDENCY):
            continue
        if library in _reloaded_libraries:
            continue
        _reloaded_libraries.add(library)
        try:
            openmm.Platform.loadPluginLibrary(library)
        except Exception:  # noqa: BLE001 - e.g. the CUDA plugin without a driver: it stays unavailable
            continue
        loaded.append(library)
    return loaded


_reloaded_libraries: set = set()

TORCH_FORCE_COPY_MESSAGE = (
    "openmm-torch 1.5 crashes the process when a System or Force holding a TorchForce is copied or "
    "deserialised (copy.deepcopy, pickle, XmlSerializer.deserialize/clone); build the System again with "
    "mlpot.plugins.openmm.create_system / create_force instead"
)
_TORCH_FORCE_XML = re.compile(r'<Force\b[^>]*\btype="TorchForce"')


def _is_torch_force(force) -> bool:
    return type(force).__name__ == "TorchForce" or force.getName() == "TorchForce"


def _holds_torch_force(obj) -> bool:
    import openmm

    if isinstance(obj, openmm.System):
        return any(_is_torch_force(force) for force in obj.getForces())
    if isinstance(obj, openmm.Force):
        return _is_torch_force(obj)
    return False


def _guard_object(function):
    """Wrap ``function(obj, ...)`` to raise ``RuntimeError`` instead of crashing on a TorchForce."""

    def guarded(obj, *args, **kwargs):
        if _holds_torch_force(obj):
            raise RuntimeError(TORCH_FORCE_COPY_MESSAGE)
        return function(obj, *args, **kwargs)

    guarded._mlpot_guarded = function
    guarded.__doc__ = function.__doc__
    return guarded


def _guard_text(function):
    """Wrap ``function(xml_text, ...)`` to raise ``RuntimeError`` instead of crashing on a TorchForce."""

    def guarded(text, *args, **kwargs):
        if isinstance(text, str) and _TORCH_FORCE_XML.search(text):
            raise RuntimeError(TORCH_FORCE_COPY_MESSAGE)
        return function(text, *args, **kwargs)

    guarded._mlpot_guarded = function
    guarded.__doc__ = function.__doc__
    return guarded


def install_copy_guards() -> None:
    """Make copying or deserialising a System/Force with a TorchForce raise instead of crash.

    Idempotent. Systems and forces without a TorchForce behave as before. ``System.__deepcopy__``
    and ``__setstate__`` (pickle) go through the guarded ``__copy__`` and ``deserializeSystem``."""
    import openmm

    def wrap(owner, name, guard, static):
        current = owner.__dict__.get(name)
        if current is None:
            return
        function = current.__func__ if isinstance(current, staticmethod) else current
        if hasattr(function, "_mlpot_guarded"):
            return
        wrapped = guard(function)
        setattr(owner, name, staticmethod(wrapped) if static else wrapped)

    wrap(openmm.System, "__copy__", _guard_object, static=False)
    wrap(openmm.Force, "__copy__", _guard_object, static=False)
    wrap(openmm.XmlSerializer, "_cloneSystem", _guard_object, static=True)
    wrap(openmm.XmlSerializer, "_cloneForce", _guard_object, static=True)
    wrap(openmm.XmlSerializer, "deserializeSystem", _guard_text, static=True)
    wrap(openmm.XmlSerializer, "_deserializeForce", _guard_text, static=True)


reload_torch_plugins()
install_copy_guards()
