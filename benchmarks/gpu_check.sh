#!/usr/bin/env bash
# One command that checks mlpot on a GPU machine (< 8 min on one GPU): model energies/forces on CUDA vs
# CPU (float32 and float64, both architectures), the ASE calculator on CUDA, vesin on CUDA, a training
# step, OpenMM on CUDA + benchmarks/md_speed.py when openmm-torch imports, and LAMMPS's pair_style mlpot with
# device cuda when `make lammps` was run there (each else SKIPPED with why).
# It prints a table and writes gpu_check.json to $OUT if set, else to benchmarks/results/.
#
#   bash benchmarks/gpu_check.sh              # on the GPU machine
#   bash benchmarks/gpu_check.sh --dry-run    # here: says what it would install, then runs the checks on the CPU
#
# The GPU machines bring their own python 3.12, torch (CUDA), e3nn, numpy, scipy and pytest, and can
# download nothing. What mlpot needs beyond that comes from wheels in benchmarks/gpu_wheels/ (git-ignored,
# ~32 MB; carry it to the machine), fetched once on a machine with the package index:
#
#   pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#       -d benchmarks/gpu_wheels vesin-torch==0.6.2 ase pyyaml tqdm matplotlib contourpy cycler fonttools \
#       kiwisolver pillow pyparsing python-dateutil six packaging setuptools wheel
#
# vesin-torch 0.6.2 is one wheel for torch >=2.3,<2.15 (it ships a library per torch minor version,
# torch-2.11 included). They go into a virtual environment that sees the machine's own packages
# (--system-site-packages), so pip installs only what is missing; mlpot itself is installed editable
# without dependencies (its pins are for the CPU stack: torch 2.9 + OpenMM).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
WHEELS="$ROOT/benchmarks/gpu_wheels"
PYTHON="${PYTHON:-python3}"
NEEDED="vesin-torch ase pyyaml tqdm matplotlib"
DRY_RUN=0
[[ "${1:-}" == "--dry-run" ]] && DRY_RUN=1

wheel_count=$(ls "$WHEELS"/*.whl 2>/dev/null | wc -l)
echo "wheels in $WHEELS: $wheel_count ($(du -sh "$WHEELS" 2>/dev/null | cut -f1))"
"$PYTHON" - <<'PY'
import importlib.util
for module in ("torch", "e3nn", "numpy", "scipy", "vesin_torch", "ase", "yaml", "tqdm", "matplotlib", "openmm", "openmmtorch"):
    print(f"  {module:<12} {'present' if importlib.util.find_spec(module) else 'missing'}")
PY

if [[ $DRY_RUN == 1 ]]; then
  echo "dry run: would create a --system-site-packages venv and run"
  echo "  pip install --no-index --find-links $WHEELS $NEEDED"
  echo "  pip install --no-index --find-links $WHEELS --no-deps -e $ROOT"
  echo "dry run: the checks on the CPU (--device cpu --quick)"
  out="$(mktemp -d)"
  timeout 900 "$PYTHON" benchmarks/gpu_check.py --device cpu --quick --out "$out/gpu_check_cpu.json"
  exit $?
fi

if [[ $wheel_count == 0 ]]; then
  echo "no wheels in $WHEELS: fetch them with the pip download command at the top of this script" >&2
  exit 2
fi
VENV="$(mktemp -d)/venv"
if "$PYTHON" -m venv --system-site-packages "$VENV" 2>/dev/null; then
  PIP=("$VENV/bin/python" -m pip)
else  # no ensurepip on this machine: a venv without pip, filled by the machine's own pip
  "$PYTHON" -m venv --without-pip --system-site-packages "$VENV"
  PIP=("$PYTHON" -m pip --python "$VENV/bin/python")
fi
"${PIP[@]}" install --quiet --no-index --find-links "$WHEELS" $NEEDED
if ! "${PIP[@]}" install --quiet --no-index --find-links "$WHEELS" --no-deps -e "$ROOT"; then
  echo "mlpot could not be installed editable: using it from $ROOT (gpu_check.py maps plugins/ itself)" >&2
  export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
fi
timeout 480 "$VENV/bin/python" benchmarks/gpu_check.py --device cuda
