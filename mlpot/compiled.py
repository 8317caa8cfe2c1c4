"""Compiled model files (``.pt2``): a model file's network exported with ``torch.export`` and compiled ahead of
time by AOTInductor into native code, with the model file's metadata and a seal inside.

    mlpot compile model.pt -o model.pt2            (or compile_model_file("model.pt", "model.pt2"))
    MLPotCalculator("model.pt2")                    (ASE; same properties as with model.pt)

Lengths in Å, energies in eV, as in every mlpot model. What is compiled is one function of

    positions      (n_atoms, 3)  Å, the model's dtype, first atom at the origin
    species        (n_atoms,)    int64 species indices (not atomic numbers)
    pairs          (2, n_pairs)  int64, each neighbour pair (i, j) once, i.e. the first half of
                                 :func:`mlpot.neighbors.neighbor_pairs`' edges
    pair_offsets   (n_pairs, 3)  Å, the periodic-image offset of each pair (``cell_shifts @ cell``; zero in a molecule)

returning per-atom energies ``(n_atoms,)`` eV, forces ``(n_atoms, 3)`` eV/Å = -dE/dpositions and the virial
``(3, 3)`` eV = -dE/d(strain), the forces and virial by autograd traced into the same graph. The atom and pair
counts are dynamic (one file serves every system size), and the periodic cell enters through the offsets.

**The neighbour list stays outside the compiled graph**, in :meth:`CompiledModel.compute` (vesin-torch, as in
the TorchScript file): its output size depends on the positions' values, which ``torch.export`` can only trace
as an unbacked size that breaks shape reasoning downstream, and vesin's search is already native code that
compiling cannot speed up. Inside the graph every edge is a pair and its reverse, so the network computes what
depends only on the distance once per pair (NequIP-style models), as the TorchScript file does.

The input checks of the TorchScript file (no atoms, NaN or huge coordinates, a box too small for the cutoff,
unknown elements, two atoms closer than 0.01 Å) run in :meth:`CompiledModel.compute` with the same messages.

The numbers equal the TorchScript file's to float rounding, not bit for bit; and with more than one thread the
compiled sums onto atoms run in parallel, so two calls on the same input may differ in the last digits.

The file is a PT2 archive (what ``torch._inductor.aoti_compile_and_package`` writes) with the model file's
metadata (``mlpot_metadata.json``) plus a ``compiled`` section (torch version, device, source file) and the
same seal as a model file (:mod:`mlpot.deploy`) in ``extra/``: ``mlpot info model.pt2`` shows it, and an edited
archive is refused. A file compiled by another torch version or for another device is refused with one line
that says to compile it again: AOTInductor's native code is tied to both.
"""

from __future__ import annotations

import contextlib
import json
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple, Union

import torch
from torch import nn

from mlpot import runtime
from mlpot.deploy import (
    COMPILED_KEY,
    METADATA_ENTRY,
    SEAL_ENTRY,
    DeployedModel,
    ModelFileError,
    _seal_of,
    _user_message,
    load_model,
    read_metadata,
    rebuild_model,
)
from mlpot.models import Potential
from mlpot.models.nequip import NequIP
from mlpot.neighbors import centred_positions, neighbor_pairs, number_text

BACKEND = "aotinductor"
INPUTS = ("positions", "species", "pairs", "pair_offsets")
OUTPUTS = ("energies", "forces", "virial")
# relative tolerance of the check after compiling: compiled and eager energies and forces agree to float rounding
_CHECK_TOLERANCE = {"float32": 1e-4, "float64": 1e-9}


class EnergyForcesVirial(nn.Module):
    """The function a compiled file holds (see the module docstring): per-atom energies, forces and virial of a
    :class:`Potential` from positions, species indices, neighbour pairs and their periodic offsets."""

    def __init__(self, potential: Potential):
        super().__init__()
        self.potential = potential

    def forward(
        self, positions: torch.Tensor, species: torch.Tensor, pairs: torch.Tensor, pair_offsets: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        positions = positions.detach().requires_grad_(True)
        # a symmetric strain on every edge vector: d energy / d strain is the virial (as Potential.compute)
        strain = torch.zeros(3, 3, dtype=positions.dtype, device=positions.device).requires_grad_(True)
        symmetric = 0.5 * (strain + strain.transpose(0, 1))
        vectors = positions.index_select(0, pairs[1]) - positions.index_select(0, pairs[0]) + pair_offsets
        vectors = torch.cat([vectors, -vectors])
        vectors = vectors + vectors @ symmetric
        edge_index = torch.cat([pairs, pairs.flip(0)], dim=1)
        representation = self.potential.representation
        if isinstance(representation, NequIP):
            scalars = representation.atom_scalars(species, edge_index, vectors, True)
        else:
            scalars = representation(species, edge_index, vectors)
        energies = self.potential.energy_scale * scalars + self.potential.energy_shift[species]
        gradients = torch.autograd.grad([energies.sum()], [positions, strain])
        return energies, -gradients[0], -gradients[1]


@contextlib.contextmanager
def _traceable_e3nn() -> Iterator[None]:
    """e3nn builds its modules as plain Python (not TorchScript) inside, so that they can be traced."""
    from e3nn import get_optimization_defaults, set_optimization_defaults

    before = get_optimization_defaults()["jit_script_fx"]
    set_optimization_defaults(jit_script_fx=False)
    try:
        yield
    finally:
        set_optimization_defaults(jit_script_fx=before)


def _example_structure(atomic_numbers: List[int], num_atoms: int = 17, spacing_A: float = 1.4) -> Tuple[
        torch.Tensor, torch.Tensor]:
    """A molecule-like structure to trace with: ``num_atoms`` atoms on a jittered grid, cycling through the model's
    elements (positions ``(n, 3)`` Å float64, atomic numbers ``(n,)``)."""
    generator = torch.Generator().manual_seed(0)
    grid = torch.stack(torch.meshgrid(torch.arange(3), torch.arange(3), torch.arange(2), indexing="ij"), dim=-1)
    positions = grid.reshape(-1, 3)[:num_atoms].to(torch.float64) * spacing_A
    positions = positions + 0.2 * torch.rand(positions.shape, generator=generator, dtype=torch.float64)
    numbers = torch.tensor([atomic_numbers[k % len(atomic_numbers)] for k in range(num_atoms)], dtype=torch.long)
    return positions, numbers


def compile_model_file(
    model_file: Union[str, Path], out: Union[str, Path], device: Union[str, torch.device] = "cpu"
) -> Dict[str, Any]:
    """Compile the model file ``model_file`` (TorchScript, :mod:`mlpot.deploy`) for ``device`` into the ``.pt2``
    file ``out``; returns the metadata written (with ``compiled.compile_time_s`` and ``seal``).

    Raises ``RuntimeError`` naming the step (tracing, export, AOTInductor) when the model cannot be compiled, and
    when the compiled file's energies and forces differ from the model's on a test structure.
    """
    from torch.export import Dim
    from torch.export.pt2_archive._package import package_pt2
    from torch.fx.experimental import _config as fx_config
    from torch.fx.experimental.proxy_tensor import make_fx

    started = time.perf_counter()
    out = Path(out)
    if out.suffix != ".pt2":
        raise ValueError(f"a compiled model file is named *.pt2 (torch's package format), not {out.name}")
    device = torch.device(device)
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"mlpot compiles for cpu or cuda, not {device.type}")
    deployed = load_model(model_file, device="cpu")
    with _traceable_e3nn():
        # EGNN's edge chunks are a loop over a data-dependent count; the compiled kernels keep the work in cache
        changes = {"edge_chunk_size": 0} if deployed.metadata["arch"] == "egnn" else {}
        model, _ = rebuild_model(deployed, changes)
    model = model.to(device).eval().requires_grad_(False)
    function = EnergyForcesVirial(model)
    positions, numbers = _example_structure(deployed.atomic_numbers)
    example = _graph_inputs(positions, numbers, torch.zeros(3, 3), torch.zeros(3, dtype=torch.bool),
                            model.species_table.cpu(), model.cutoff, model.energy_shift.dtype, device)
    try:
        # make_fx runs the autograd of the forces and writes it into the graph as ordinary operations; sizes stay
        # symbolic (duck shaping off: an atom count equal to a layer width must not tie the two together)
        previous_duck_shape = fx_config.use_duck_shape
        fx_config.use_duck_shape = False
        try:
            from torch._decomp import core_aten_decompositions

            graph = make_fx(function, decomposition_table=core_aten_decompositions(), tracing_mode="symbolic",
                            _allow_non_fake_inputs=True, _error_on_data_dependent_ops=True)(*example)
        finally:
            fx_config.use_duck_shape = previous_duck_shape
    except Exception as error:  # re-raised with context: the model cannot be compiled
        raise RuntimeError(f"mlpot: the model could not be traced for compilation: {error}") from error
    atoms, pairs = Dim("num_atoms", min=2), Dim("num_pairs", min=2)
    try:
        exported = torch.export.export(graph, example, dynamic_shapes=({0: atoms}, {0: atoms}, {1: pairs}, {0: pairs}))
    except Exception as error:
        raise RuntimeError(f"mlpot: torch.export could not export the model: {error}") from error
    try:
        args, kwargs = exported.example_inputs
        files = torch._inductor.aot_compile(exported.module(), args, kwargs, options={"aot_inductor.package": True})
    except Exception as error:
        raise RuntimeError(f"mlpot: AOTInductor could not compile the model: {error}") from error

    source = read_metadata(model_file)
    metadata = {key: value for key, value in source.items() if key != "seal"}
    metadata[COMPILED_KEY] = {
        "backend": BACKEND,
        "device": device.type,
        "torch": torch.__version__,
        "inputs": list(INPUTS),
        "outputs": list(OUTPUTS),
        "neighbor_list": "outside the compiled graph (vesin-torch, run by mlpot before each call)",
        "source": {"file": Path(model_file).name, "seal": source.get("seal"), "content_hash": source["content_hash"]},
        "compile_time_s": round(time.perf_counter() - started, 1),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    temporary = out.with_name(out.stem + ".partial.pt2")
    extra = {METADATA_ENTRY: json.dumps(metadata, indent=1)}
    package_pt2(str(temporary), aoti_files=files, extra_files=extra)
    with zipfile.ZipFile(temporary) as archive:
        seal = _seal_of(archive, metadata)
    package_pt2(str(temporary), aoti_files=files, extra_files={**extra, SEAL_ENTRY: json.dumps({"sha256": seal})})
    try:
        compiled = load_compiled(temporary, device=device)
        _check_against(compiled, deployed, positions, numbers)
    except Exception:
        temporary.unlink()
        raise
    temporary.replace(out)  # never leave a half-written file under the final name
    return {**metadata, "seal": seal}


def _check_against(compiled: CompiledModel, deployed: DeployedModel, positions: torch.Tensor,
                   numbers: torch.Tensor) -> None:
    """Raise ``RuntimeError`` when the compiled file's energies or forces differ from the model file's beyond
    float rounding, on the structure it was traced with and on a smaller one (a size the trace did not see)."""
    tolerance = _CHECK_TOLERANCE[deployed.metadata["dtype"]]
    for count in (positions.shape[0], 5):
        cell, pbc = torch.zeros(3, 3, dtype=torch.float64), torch.zeros(3, dtype=torch.bool)
        expected = deployed.compute(positions[:count], numbers[:count], cell, pbc)
        got = compiled.compute(positions[:count].to(compiled.device), numbers[:count].to(compiled.device),
                               cell.to(compiled.device), pbc.to(compiled.device))
        for key in ("energies", "forces"):
            scale = float(expected[key].abs().max()) + 1e-3
            error = float((got[key].cpu().to(expected[key].dtype) - expected[key]).abs().max())
            if not error <= tolerance * scale:
                raise RuntimeError(f"mlpot: the compiled model's {key} differ from the model file's by {error:.3g} "
                                   f"(largest value {scale:.3g}) on {count} atoms: the compilation is wrong")


def _graph_inputs(
    positions: torch.Tensor, atomic_numbers: torch.Tensor, cell: torch.Tensor, pbc: torch.Tensor,
    species_table: torch.Tensor, cutoff: float, dtype: torch.dtype, device: torch.device,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The compiled function's inputs (see the module docstring) for one structure, after the TorchScript file's
    checks ("mlpot: ..." ``ValueError``): positions ``(n, 3)`` and cell ``(3, 3)`` Å in any float dtype,
    atomic numbers ``(n,)``, pbc ``(3,)`` bool."""
    positions = centred_positions(positions).to(device=device, dtype=dtype)
    cell = cell.to(device=device, dtype=dtype)
    species = _species_indices(atomic_numbers, species_table)
    edge_index, cell_shifts = neighbor_pairs(positions, cell, pbc.to(device), cutoff)
    half = edge_index.shape[1] // 2
    pairs = edge_index[:, :half]
    offsets = cell_shifts[:half] @ cell
    if half > 0:
        lengths = torch.linalg.norm(positions[pairs[1]] - positions[pairs[0]] + offsets, dim=1)
        closest = int(torch.argmin(lengths))
        if float(lengths[closest]) < 0.01:
            raise ValueError(
                f"mlpot: atoms {int(pairs[0, closest])} and {int(pairs[1, closest])} are "
                f"{number_text(float(lengths[closest]))} Å apart (closer than 0.01 Å): the structure is broken, e.g. "
                "an atom listed twice or a collapsed simulation"
            )
    return positions, species.to(device), pairs.contiguous(), offsets.contiguous()


def _species_indices(atomic_numbers: torch.Tensor, species_table: torch.Tensor) -> torch.Tensor:
    """Species indices ``(n,)`` of atomic numbers ``(n,)`` (``species_table`` on the CPU: atomic number -> index or
    -1); ``ValueError`` ("mlpot: ...", as the TorchScript file) for numbers outside 0..118 or unknown to the model."""
    numbers = atomic_numbers.to(species_table.device)
    if bool(((numbers < 0) | (numbers >= species_table.shape[0])).any()):
        raise ValueError("mlpot: atomic numbers must lie in 0..118")
    species = species_table[numbers]
    if bool((species < 0).any()):
        unknown = torch.unique(numbers[species < 0]).tolist()
        known = torch.nonzero(species_table >= 0).flatten().tolist()
        raise ValueError(f"mlpot: atomic number(s) {unknown} not in this model's species {known}")
    return species


def _padded(positions: torch.Tensor, species: torch.Tensor, pairs: torch.Tensor, offsets: torch.Tensor,
            cutoff: float) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The inputs with at least 2 atoms and 2 pairs, which the compiled graph needs (torch.export treats sizes 0
    and 1 as special): an extra atom far away, and pairs of atom 0 with its own image 2 cutoffs away. Every
    message carries the cutoff envelope, so a pair beyond the cutoff adds exactly nothing, and the extra atom
    (last; the caller drops its rows) touches no real one."""
    if positions.shape[0] < 2:
        positions = torch.cat([positions, positions.new_full((1, 3), 4.0 * cutoff)])
        species = torch.cat([species, species[:1]])
    missing = 2 - pairs.shape[1]
    if missing > 0:
        pairs = torch.cat([pairs, pairs.new_zeros(2, missing)], dim=1)
        far = offsets.new_zeros(missing, 3)
        far[:, 0] = 2.0 * cutoff
        offsets = torch.cat([offsets, far])
    return positions, species, pairs, offsets


@dataclass
class CompiledModel(DeployedModel):
    """A loaded compiled file: the AOTInductor runner (``module``) and the model file's metadata.

    The same interface as :class:`DeployedModel` (``compute``, ``cutoff``, ``species``, ``dtype``, ...).
    """

    device: torch.device = torch.device("cpu")
    species_table: torch.Tensor = None  # type: ignore[assignment]  # atomic number -> species index, -1 unknown

    def compute(
        self,
        positions: torch.Tensor,
        atomic_numbers: torch.Tensor,
        cell: torch.Tensor,
        pbc: torch.Tensor,
        forces: bool = True,
        stress: bool = False,
    ) -> Dict[str, torch.Tensor]:
        """Energy (eV), per-atom ``energies`` ``(n_atoms,)`` eV, ``forces`` ``(n_atoms, 3)`` eV/Å and, with
        ``stress``, ``stress`` ``(3, 3)`` eV/Å^3 (ASE's sign) and ``virial`` ``(3, 3)`` eV: the values and keys of
        :meth:`DeployedModel.compute`. Forces are always computed (they come from the same compiled call).

        Inputs: positions ``(n_atoms, 3)`` Å, atomic numbers ``(n_atoms,)``, cell ``(3, 3)`` Å (rows), pbc ``(3,)``.
        Raises ``ValueError`` with the TorchScript file's message for an input it refuses.
        """
        if stress and not bool(pbc.all()):
            raise ValueError("stress needs a cell that is periodic along all three axes")
        try:
            inputs = _graph_inputs(positions, atomic_numbers, cell, pbc, self.species_table, self.cutoff, self.dtype,
                                   self.device)
        except ValueError as error:
            message = _user_message(error)
            raise ValueError(message if message is not None else str(error)) from None
        energies, atom_forces, virial = self.run_graph(*inputs)
        results = {"energy": energies.sum(), "energies": energies, "forces": atom_forces}
        if stress:
            volume = torch.abs(torch.linalg.det(cell.to(device=self.device, dtype=self.dtype)))
            results["virial"] = virial
            results["stress"] = -virial / volume
        return results


    def run_graph(self, positions: torch.Tensor, species: torch.Tensor, pairs: torch.Tensor,
                  pair_offsets: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The compiled function on prepared inputs (see the module docstring; no checks): per-atom energies
        ``(n_atoms,)`` eV, forces ``(n_atoms, 3)`` eV/Å, virial ``(3, 3)`` eV. The graph may hold several
        disconnected structures (replicas), each pair listed once."""
        num_atoms = positions.shape[0]
        energies, forces, virial = self.module.loader.boxed_run(
            list(_padded(positions, species, pairs, pair_offsets, self.cutoff)))
        return energies[:num_atoms], forces[:num_atoms], virial

    def species_of(self, atomic_numbers: torch.Tensor) -> torch.Tensor:
        """Species indices ``(n,)`` on the model's device; ``ValueError`` names atomic numbers the model lacks."""
        try:
            return _species_indices(atomic_numbers, self.species_table).to(self.device)
        except ValueError as error:
            raise ValueError(_user_message(error)) from None


def is_compiled_file(path: Union[str, Path]) -> bool:
    """Whether ``path`` is a compiled (``.pt2``) model file rather than a TorchScript one (by its metadata)."""
    return COMPILED_KEY in read_metadata(path)


def load_compiled(path: Union[str, Path], device: Union[str, torch.device] = "cpu") -> CompiledModel:
    """Load a compiled file onto ``device`` after checking its metadata and seal, the torch version and the device
    it was compiled for; :class:`ModelFileError` (one line) otherwise."""
    path = Path(path)
    device = torch.device(device)
    metadata = read_metadata(path)
    compiled = metadata.get(COMPILED_KEY)
    if compiled is None:
        raise ModelFileError(f"{path} is a TorchScript model file, not a compiled one: compile it with "
                             f"`mlpot compile {path} -o {path.with_suffix('.pt2').name}`, or load it with "
                             "mlpot.deploy.load_model")
    source = compiled.get("source", {}).get("file", "MODEL.pt")
    if compiled.get("backend") != BACKEND or compiled.get("inputs") != list(INPUTS):
        raise ModelFileError(f"{path} was compiled by another mlpot ({compiled.get('backend')}, inputs "
                             f"{compiled.get('inputs')}): compile it again with "
                             f"`mlpot compile {source} -o {path.name}`")
    if compiled.get("torch") != torch.__version__:
        raise ModelFileError(f"{path} was compiled with torch {compiled.get('torch')}, and its native code runs only "
                             f"there; this is torch {torch.__version__}: compile it again with "
                             f"`mlpot compile {source} -o {path.name}`")
    if compiled.get("device") != device.type:
        raise ModelFileError(f"{path} was compiled for {compiled.get('device')}, not {device.type}: compile it for "
                             f"{device.type} with `mlpot compile {source} --device {device.type} -o NEW.pt2`")
    runtime.configure()
    try:
        runner = torch._inductor.aoti_load_package(str(path), device_index=-1 if device.index is None else device.index)
    except Exception as error:
        raise ModelFileError(f"{path} could not be loaded as a compiled model ({_first_line(error)})") from None
    table = torch.full((119,), -1, dtype=torch.long)
    for index, number in enumerate(metadata["atomic_numbers"]):
        table[number] = index
    return CompiledModel(module=runner, metadata=metadata, path=path, device=device, species_table=table)


def _first_line(error: BaseException) -> str:
    lines = [line for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__
